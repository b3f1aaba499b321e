"""The stored form of a baseline: the msgpack payload (encode_payload/decode_payload), the
checksummed file around it (encode_file/decode_file), and the zlib-compressed blob a resting
baseline keeps its entries in (_BlobWriter, _blob_rows).

Files are schema-versioned. Schema 2 added ``origin`` to each entry and ``imports``/
``annotations`` to the payload; schema 3 the path pattern tables (``exec_patterns``,
``open_patterns``); schema 4 the connect entries by name (``hosts``). Older files are read
(entries without origin, no imports, no patterns, no names) and rewritten as the current
schema on the next save (BaselineStore, store.py); a corrald that reads only older schemas
refuses a newer file instead of dropping what it cannot hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from .rules import (
    IMPORTS_MAX,
    PATH_DIMENSIONS,
    SOURCES,
    BaselineRules,
    Entry,
    Network,
    Unenforceable,
    net_sort_key,
    normalise_network,
)

if TYPE_CHECKING:
    from .baseline import Baseline

SCHEMA_VERSION = 4
READABLE_SCHEMAS = (1, 2, 3, 4)
MAGIC = "corral-baseline"
# zlib level of resting baselines: 6 keeps 10,000 entries in ~12 % fewer bytes than 1 for ~3 ms
# more per freeze (bench/footprint: 30.4 against 34.5 KB)
REST_COMPRESSION = 6


class CorruptBaseline(ValueError):
    """The stored bytes are not a readable baseline; the message says what is wrong."""


def _pb(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _ps(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _entry_row(e: Entry) -> list[Any]:
    row = [e.first_seen, e.last_seen, e.hits, e.source, e.origin]
    if e.callers is not None:  # exec lineage (schema 3)
        row.append([_pb(c) for c in sorted(e.callers)])
    return row


def _entry_of(row: list[Any]) -> Entry:
    """A stored entry: schema 2 rows end with the origin, schema 1 rows have none, schema 3
    exec rows may add the callers."""
    if len(row) == 4:
        row = [*row, None]
    callers: set[str] | None = None
    if len(row) == 6:
        *row, raw = row
        if not isinstance(raw, list) or not all(isinstance(c, bytes) for c in raw):
            raise ValueError("bad callers")
        callers = {_ps(c) for c in raw}
    first, last, hits, source, origin = row
    if source not in SOURCES or (origin is not None and origin not in SOURCES):
        raise ValueError(f"unknown source {source!r} / origin {origin!r}")
    if not isinstance(hits, int) or not isinstance(first, float | int):
        raise ValueError("bad entry fields")
    return Entry(float(first), float(last), hits, source, origin, callers)


PATTERN_TABLES = {d: f"{d}_patterns" for d in PATH_DIMENSIONS}
_ENTRY_TABLES = (
    *PATH_DIMENSIONS,
    "connect",
    "unenforceable",
    *PATTERN_TABLES.values(),
    "hosts",
)
_LATER_TABLES = {*PATTERN_TABLES.values(), "hosts"}  # absent from older schemas
_PATTERN_DIMS = {t: d for d, t in PATTERN_TABLES.items()}


# One stored row per table, written and read by these alone: (path, is prefix, entry), (network,
# port, entry), (dimension, object, reason, entry); the entry's fields follow.


def _path_row(path: str, prefix: bool, e: Entry) -> list[Any]:
    return [_pb(path), prefix, *_entry_row(e)]


def _pattern_row(glob: str, e: Entry) -> list[Any]:
    return [_pb(glob), *_entry_row(e)]


def _pattern_of(row: list[Any]) -> tuple[str, Entry]:
    raw, *rest = row
    return _ps(raw), _entry_of(rest)


def _net_row(net: Network, port: int, e: Entry) -> list[Any]:
    return [str(net), port, *_entry_row(e)]


def _host_row(name: str, port: int, e: Entry) -> list[Any]:
    return [name, port, *_entry_row(e)]


def _host_of(row: list[Any]) -> tuple[str, int, Entry]:
    name, port, *rest = row
    if not isinstance(name, str) or not isinstance(port, int):
        raise ValueError("bad host row")
    return name, port, _entry_of(rest)


def _unenforceable_row(u: Unenforceable) -> list[Any]:
    return [u.dimension, _pb(u.object), u.reason, *_entry_row(u.entry)]


def _path_of(row: list[Any]) -> tuple[str, bool, Entry]:
    raw, pre, *rest = row
    return _ps(raw), bool(pre), _entry_of(rest)


def _net_of(row: list[Any]) -> tuple[Network, int, Entry]:
    cidr, port, *rest = row
    return normalise_network(cidr), int(port), _entry_of(rest)


def _unenforceable_of(row: list[Any]) -> Unenforceable:
    dim, raw, reason, *rest = row
    return Unenforceable(dim, _ps(raw), reason, _entry_of(rest))


def _entry_rows(b: Baseline, table: str) -> tuple[int, Iterator[list[Any]]]:
    """(row count, the rows) of one stored table, made one at a time."""
    if table in PATH_DIMENSIONS:
        paths = b.path_entries(table)
        return len(paths), (_path_row(*p) for p in paths)
    if table == "connect":
        nets = b.net_entries()
        return len(nets), (_net_row(*n) for n in nets)
    if table in _PATTERN_DIMS:
        pats = b.pattern_entries(_PATTERN_DIMS[table])
        return len(pats), (_pattern_row(*p) for p in pats)
    if table == "hosts":
        hosts = b.host_entries()
        return len(hosts), (_host_row(*h) for h in hosts)
    unenf = b.unenforceable
    return len(unenf), (_unenforceable_row(u) for u in unenf)


def _encode_entries(b: Baseline) -> dict[str, Any]:
    if b._frozen is not None:  # the blob holds exactly this: saving a resting baseline keeps it so
        return dict(msgpack.unpackb(zlib.decompress(b._frozen[0]), raw=False))
    return {t: list(_entry_rows(b, t)[1]) for t in _ENTRY_TABLES}


def _compress_entries(b: Baseline) -> bytes:
    """zlib(msgpack(_encode_entries(b))), the same bytes, packed and compressed row by row:
    the rows of 10,000 entries as Python lists (~3 MB of small objects, made while the entries
    are alive) left the allocator's arenas pinned by whatever else was allocated meanwhile."""
    w = _BlobWriter()
    for t in _ENTRY_TABLES:
        n, rows = _entry_rows(b, t)
        w.table(t, n)
        for r in rows:
            w.row(r)
    return w.finish()


class _BlobWriter:
    """A resting baseline's blob (zlib of the msgpack map of _ENTRY_TABLES), written table by
    table, row by row, compressed in chunks."""

    _CHUNK = 64 << 10

    def __init__(self) -> None:
        self._z = zlib.compressobj(REST_COMPRESSION)
        self._pk = msgpack.Packer(use_bin_type=True)
        self._out: list[bytes] = []
        self._buf: list[bytes] = [self._pk.pack_map_header(len(_ENTRY_TABLES))]
        self._size = 0

    def table(self, name: str, rows: int) -> None:
        self._put(self._pk.pack(name) + self._pk.pack_array_header(rows))

    def row(self, row: list[Any]) -> None:
        self._put(self._pk.pack(row))

    def _put(self, packed: bytes) -> None:
        self._buf.append(packed)
        self._size += len(packed)
        if self._size >= self._CHUNK:
            self._drain()

    def _drain(self) -> None:
        self._out.append(self._z.compress(b"".join(self._buf)))
        self._buf.clear()
        self._size = 0

    def finish(self) -> bytes:
        self._drain()
        self._out.append(self._z.flush())
        return b"".join(self._out)


class _Inflating:
    """A file-like read() over a zlib blob that inflates only what is asked for."""

    def __init__(self, blob: bytes) -> None:
        self._z = zlib.decompressobj()
        self._tail = blob

    def read(self, n: int) -> bytes:
        out = self._z.decompress(self._tail, n)
        self._tail = self._z.unconsumed_tail
        return out


def _blob_rows(blob: bytes, table: str) -> Iterator[list[Any]]:
    """The rows of one table of a resting baseline's blob, inflated and unpacked as read."""
    un = msgpack.Unpacker(_Inflating(blob), raw=False)
    for _ in range(un.read_map_header()):
        name = un.unpack()
        n = un.read_array_header()
        if name == table:
            for _ in range(n):
                yield un.unpack()
            return
        for _ in range(n):
            un.skip()


def _taken(data: dict[str, Any], table: str) -> Iterator[Any]:
    """The rows of data[table], each let go once taken: decoding never holds the decoded
    rows and the entries made from them at the same time."""
    rows = data.get(table, []) if table in _LATER_TABLES else data[table]
    data[table] = []
    rows.reverse()
    while rows:
        yield rows.pop()


def _decode_entries(b: Baseline, data: dict[str, Any]) -> None:
    """Fills b from data's tables, emptying them."""
    for d in PATH_DIMENSIONS:
        ps = b._paths[d]
        for row in _taken(data, d):
            path, pre, e = _path_of(row)
            ps.put(path, e, prefix=pre)
    for row in _taken(data, "connect"):
        net, port, e = _net_of(row)
        b._net.put((net, port), e)
    for row in _taken(data, "unenforceable"):
        u = _unenforceable_of(row)
        b._unenforceable[(u.dimension, u.object)] = u
    for table, d in _PATTERN_DIMS.items():
        ps = b._paths[d]
        for row in _taken(data, table):
            glob, e = _pattern_of(row)
            ps.put_pattern(glob, e, learned=e.source == "learned")
    for row in _taken(data, "hosts"):
        name, port, e = _host_of(row)
        b._hosts.entries[(name, port)] = e


def encode_payload(b: Baseline) -> bytes:
    """The baseline as msgpack (paths as bytes so undecodable names survive). Deterministic."""
    data: dict[str, Any] = {
        "agent": b.agent,
        "learning_since": b.learning_since,
        "last_novel": b.last_novel,
        "partial_reasons": sorted(b.partial_reasons),
        "revision": b.revision,
        **_encode_entries(b),
    }
    data["annotations"] = dict(sorted(b.annotations.items()))
    data["imports"] = b.imports
    data["runs_seen"] = b.runs_seen
    data["recent_runs"] = list(b.recent_runs)
    data["caller_ids"] = [[_pb(c), i] for c, i in sorted(b.caller_ids.items())]
    return msgpack.packb(data, use_bin_type=True)


def decode_payload(
    payload: bytes, rules: BaselineRules | None = None, *, rest: bool = False
) -> Baseline:
    """Inverse of encode_payload. Raises CorruptBaseline on anything malformed.

    rest: the baseline comes back at rest (as freeze() leaves it). A payload as corral writes
    it is then streamed row by row into the compressed blob without its entries ever being
    objects (a start-up that loads 100 resting baselines of 10,000 entries made and dropped
    ~6 MB of small objects per baseline, and what was allocated beside them kept the
    allocator's arenas); anything else takes the full decode, then freeze()."""
    if rest:
        with contextlib.suppress(Exception):  # the full decode says what is wrong, if anything
            resting = _decode_resting(payload, rules)
            if resting is not None:
                return resting
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        b = _baseline_of(data, rules)
        _decode_entries(b, data)
    except CorruptBaseline:
        raise
    except Exception as e:  # any shape error in checksummed data: report, never crash
        raise CorruptBaseline(f"malformed payload ({type(e).__name__}: {e})") from e
    if rest:
        b.freeze()
    return b


def _baseline_of(data: dict[str, Any], rules: BaselineRules | None) -> Baseline:
    """A baseline with no entries yet, from a payload's other fields."""
    # imported here: corral.policy.baseline imports this module (a resting baseline's entries
    # live in its blob), so this one cannot import it at the top
    from .baseline import Baseline

    b = Baseline(data["agent"], rules=rules, learning_since=float(data["learning_since"]))
    last = data["last_novel"]
    b.last_novel = None if last is None else float(last)
    b.partial_reasons = {str(r) for r in data["partial_reasons"]}
    b.revision = int(data["revision"])
    # schema 2; absent in schema 1 payloads
    b.annotations = {str(k): str(v) for k, v in data.get("annotations", {}).items()}
    b.imports = [dict(r) for r in data.get("imports", [])][-IMPORTS_MAX:]
    # absent in files written before promotion gates counted runs
    b.runs_seen = int(data.get("runs_seen", 0))
    b.recent_runs = [int(c) for c in data.get("recent_runs", [])]
    # schema 3: exec lineage's caller -> kernel list index
    b.caller_ids = {_ps(c): int(i) for c, i in data.get("caller_ids", [])}
    return b


def _decode_resting(payload: bytes, rules: BaselineRules | None) -> Baseline | None:
    """decode_payload(payload, rules) then freeze(), the same baseline, or None where the
    tables are not exactly what freeze() would write (order, duplicates, a field in another
    form). Each row is read and written back by the helpers the full decode and
    _compress_entries use."""
    un = msgpack.Unpacker(io.BytesIO(payload), raw=False, strict_map_key=True)
    w = _BlobWriter()
    fields: dict[str, Any] = {}
    tally = _Tally()
    for _ in range(un.read_map_header()):
        name = un.unpack()
        if name in fields or name in tally.seen:
            return None
        if name not in _ENTRY_TABLES:
            fields[name] = un.unpack()
            continue
        if len(tally.seen) != _ENTRY_TABLES.index(name):
            return None  # tables in another order: the blob's bytes would differ
        tally.seen.append(name)
        n = un.read_array_header()
        w.table(name, n)
        last: Any = None
        for _ in range(n):
            key, row, entry = _canonical_row(name, un.unpack())
            if last is not None and not last < key:
                return None
            last = key
            tally.add(name, row, entry)
            w.row(row)
    if len(tally.seen) != len(_ENTRY_TABLES):
        return None
    b = _baseline_of(fields, rules)
    b._sets = None
    b._frozen = (w.finish(), tally.counts())
    return b


def _canonical_row(table: str, row: list[Any]) -> tuple[Any, list[Any], Entry]:
    """(the sort key the baseline orders the table by, the row as _entry_rows writes it, the
    entry), through the readers _decode_entries uses."""
    if table in PATH_DIMENSIONS:
        path, pre, e = _path_of(row)
        return (path, pre), _path_row(path, pre, e), e
    if table == "connect":
        net, port, e = _net_of(row)
        return net_sort_key((net, port)), _net_row(net, port, e), e
    if table in _PATTERN_DIMS:
        glob, e = _pattern_of(row)
        return glob, _pattern_row(glob, e), e
    if table == "hosts":
        name, port, e = _host_of(row)
        return (name, port), _host_row(name, port, e), e
    u = _unenforceable_of(row)
    return (u.dimension, u.object), _unenforceable_row(u), u.entry


class _Tally:
    """The counts Baseline._entry_counts gives, kept while rows stream by."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.rows = dict.fromkeys(_ENTRY_TABLES, 0)
        self.prefixes = dict.fromkeys(PATH_DIMENSIONS, 0)
        self.patterns = dict.fromkeys(PATH_DIMENSIONS, 0)
        self.imported = 0

    def add(self, table: str, row: list[Any], entry: Entry) -> None:
        self.rows[table] += 1
        if table == "unenforceable":
            return
        if table in PATH_DIMENSIONS and row[1]:
            self.prefixes[table] += 1
        if table in _PATTERN_DIMS:
            self.patterns[_PATTERN_DIMS[table]] += 1
        if entry.source == "imported":
            self.imported += 1

    def counts(self) -> dict[str, Any]:
        counts = {d: self.rows[d] + self.patterns[d] for d in PATH_DIMENSIONS}
        counts["connect"] = self.rows["connect"] + self.rows["hosts"]
        return {
            "hosts": self.rows["hosts"],
            "counts": counts,
            "prefixes": dict(self.prefixes),
            "patterns": dict(self.patterns),
            "unenforceable": self.rows["unenforceable"],
            "imported": self.imported,
        }


def encode_file(b: Baseline) -> bytes:
    """Header map {magic, schema, agent, length, sha256} followed by the payload bytes."""
    payload = encode_payload(b)
    header = {
        "magic": MAGIC,
        "schema": SCHEMA_VERSION,
        "agent": b.agent,
        "length": len(payload),
        "sha256": hashlib.sha256(payload).digest(),
    }
    return msgpack.packb(header, use_bin_type=True) + payload


def read_header(raw: bytes) -> tuple[dict[str, Any], int]:
    """(header, payload offset). Raises CorruptBaseline."""
    if not raw:
        raise CorruptBaseline("empty file")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(raw), 1024))
    unpacker.feed(raw[:4096])
    try:
        header = unpacker.unpack()
    except msgpack.OutOfData:
        raise CorruptBaseline("truncated header") from None
    except Exception as e:
        raise CorruptBaseline(f"not a corral baseline (unreadable header: {e})") from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise CorruptBaseline("not a corral baseline (magic missing)")
    return header, unpacker.tell()


def decode_file(raw: bytes, rules: BaselineRules | None = None, *, rest: bool = False) -> Baseline:
    header, offset = read_header(raw)
    schema = header.get("schema")
    if schema not in READABLE_SCHEMAS:
        readable = ", ".join(map(str, READABLE_SCHEMAS))
        raise CorruptBaseline(
            f"schema {schema!r} is not supported (this corrald reads schemas {readable})"
        )
    payload = raw[offset:]
    length = header.get("length")
    if length != len(payload):
        raise CorruptBaseline(
            f"truncated or padded: payload is {len(payload)} bytes, header says {length}"
        )
    if hashlib.sha256(payload).digest() != header.get("sha256"):
        raise CorruptBaseline("checksum mismatch (sha256 of the payload differs from the header)")
    b = decode_payload(payload, rules, rest=rest)
    if b.agent != header.get("agent"):
        raise CorruptBaseline(f"header names agent {header.get('agent')!r}, payload {b.agent!r}")
    return b
