"""Per-agent baselines: what an agent was seen doing, in the form the kernel allow-lists take.

A baseline holds, per dimension, the objects an agent used while it was learning (plus entries
an operator accepted or imported), each with first/last seen, hits and source. It is shaped
like the kernel's LPM tries so that ``kernel_entries()`` is a plain copy, and ``contains()``
answers exactly what the kernel would answer.

Paths (exec, open)
    An entry is EXACT (the path) or a DIRECTORY PREFIX ("dir/" covers everything beneath it,
    but not "dir" itself nor the sibling "dir-other"). No globs. ``normalise_path`` applies the
    kernel's one rewrite: "/proc/<1-11 digits>" as the first component after /proc becomes
    "/proc/*" (events already arrive that way; imports and accepts are passed through it too).
    "/proc/self/..." stays. Nothing else is changed: the fallback backends look up the path as
    the process gave it, so "//usr/bin/x" must stay "//usr/bin/x" to match there. Events
    flagged "relative" are stored as given.

    Unenforceable: a path longer than CORRAL_PATH_MAX - 1 (251) bytes, a prefix longer than
    252 bytes, and events flagged "toolong" or "unresolved" cannot be put in the kernel, which
    always fails closed on them. They are kept in a separate ``unenforceable`` list for display
    and never reach ``kernel_entries``; ``contains`` is False for them.

Directory collapse (open only)
    When a directory D has more than ``collapse_threshold`` distinct direct children in the
    baseline (a child is the first component after D of any entry beneath D: a file, or a
    subdirectory holding entries or a prefix rule), every entry beneath D is replaced by one
    prefix rule "D/" carrying the aggregate first/last seen and hits; later paths under D are
    hits of the rule. The shallowest eligible ancestor of the new path wins.

    Default threshold 20. Kubescape uses 50, which rarely fires for an agent's working set
    (a Python package dir with 30 modules stays 30 separate entries, and a cache dir of random
    file names keeps producing novel events in alert/enforce). KubeArmor's discovery uses 3,
    which widens a policy from a handful of observations (three config files in a dir allows
    the whole dir). 20 collapses real fan-out (site-packages, caches, temp dirs, /proc/*/fd)
    after a learning run while leaving small config dirs as exact files.

    Never collapsed: directories with fewer than ``collapse_min_depth`` components (default
    3: never "/etc/", "/usr/lib/" or "/home/x/"), relative paths (their base is unknown), and
    any directory equal to or above one of ``sensitive_prefixes`` (default /etc/, /root/,
    /home/, /var/run/secrets/, /run/secrets/, /proc/, /sys/). A directory below a sensitive
    one ("/etc/ssl/certs/") may collapse unless it is itself listed.

Networks (connect)
    An entry is (network, port); port 0 means every port (the kernel looks up the port, then 0).
    v4-mapped IPv6 (::ffff:a.b.c.d) is stored as IPv4, like the kernel does. Aggregation: when
    more than ``net_collapse_threshold`` (default 16) distinct entries inside one IPv4 /24 (IPv6
    /64) share a port, they become "a.b.c.0/24" with that port. 16 of 256 addresses is the
    point where a pool (a CDN, a service's endpoints) rather than a few fixed peers is likely;
    aggregation stops at /24 and /64, never wider. Loopback is not special. A connect event to
    port 0 is unenforceable: recording it would allow every port.

Hits count the events that reached user space: the kernel suppresses repeats within its
window and does not report what is already in the kernel allow-list.

Provenance: every entry has a ``source``: learned (observe mode), accepted (``corralctl
accept``) or imported (``corralctl baseline import``, see document.py). An imported entry also
keeps, as ``origin``, the source the imported document declared for it (an entry learned on a
staging node and imported here is source "imported", origin "learned"); exports write the
origin back, so a document survives export -> import -> export byte for byte. A baseline keeps
the last ``IMPORTS_MAX`` imports (time, digest, strategy, counts) and free-form
``annotations`` from the document's metadata.

The store (``BaselineStore``) writes one msgpack file per agent, schema-versioned and
checksummed, with temp file + fsync + rename + directory fsync. Schema 2 added ``origin`` to
each entry and ``imports``/``annotations`` to the payload; schema 1 files are read (entries
without origin, no imports) and rewritten as schema 2 on the next save.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import io
import ipaddress
import os
import re
import secrets
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeAlias, overload

import msgpack
import structlog

from corral.kernel.events import Event

log = structlog.get_logger("corral.baseline")

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
IMPORTS_MAX = 20
MAGIC = "corral-baseline"
DIMENSIONS: tuple[str, ...] = ("exec", "open", "connect")
PATH_DIMENSIONS: tuple[str, ...] = ("exec", "open")
# zlib level of resting baselines: 6 keeps 10,000 entries in ~12 % fewer bytes than 1 for ~3 ms
# more per freeze (bench/footprint: 30.4 against 34.5 KB)
REST_COMPRESSION = 6
SOURCES: tuple[str, ...] = ("learned", "accepted", "imported")
Source: TypeAlias = Literal["learned", "accepted", "imported"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
NetKey: TypeAlias = tuple[Network, int]

DEFAULT_COLLAPSE_THRESHOLD = 20
DEFAULT_COLLAPSE_MIN_DEPTH = 3
DEFAULT_NET_COLLAPSE_THRESHOLD = 16
DEFAULT_SENSITIVE_PREFIXES: tuple[str, ...] = (
    "/etc/",
    "/root/",
    "/home/",
    "/var/run/secrets/",
    "/run/secrets/",
    "/proc/",
    "/sys/",
)
NET_GROUP_PREFIX = {4: 24, 6: 64}
UNENFORCEABLE_FLAGS: tuple[str, ...] = ("toolong", "unresolved")

_V4MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_PROC_PID = re.compile(r"/proc/[0-9]{1,11}(?=/|\Z)")


@cache
def path_max() -> int:
    """The kernel path buffer, NUL included (CORRAL_PATH_MAX from corral.h)."""
    from corral.kernel.layout import C

    return C.CORRAL_PATH_MAX


# ---- pure rules ---------------------------------------------------------------------------------


def normalise_path(path: str) -> str:
    """The kernel's rewrite: "/proc/<pid>/..." -> "/proc/*/..." (first component after /proc,
    1-11 digits, followed by "/" or the end). Everything else is returned unchanged."""
    m = _PROC_PID.match(path)
    if m is None:
        return path
    return "/proc/*" + path[m.end() :]


def path_bytes(path: str) -> int:
    """Length of the path as the kernel sees it (UTF-8, undecodable bytes kept as they were)."""
    return len(path.encode("utf-8", "surrogateescape"))


def path_fits(path: str, *, prefix: bool) -> bool:
    """True if the kernel can store it: exact paths need room for their NUL, prefixes do not."""
    limit = path_max() if prefix else path_max() - 1
    return 0 < path_bytes(path) <= limit


def parent_dirs(path: str) -> list[tuple[str, str]]:
    """(directory, child) for each proper ancestor directory of path, shallowest first.
    "/a/b/c" -> ("/", "a"), ("/a/", "b"), ("/a/b/", "c"); a prefix "/a/b/" -> ("/", "a"),
    ("/a/", "b"). Everything before the first "/" is not a directory of it."""
    first = path.find("/")
    if first < 0:
        return []
    parts = path[first + 1 :].split("/")
    if parts[-1] == "":
        parts.pop()  # a trailing "/" names no child
    out: list[tuple[str, str]] = []
    d = path[: first + 1]
    for c in parts:
        out.append((d, c))
        d = f"{d}{c}/"
    return out


def dir_depth(directory: str) -> int:
    """Number of components: "/" -> 0, "/etc/" -> 1, "/home/x/" -> 2."""
    return len([c for c in directory.split("/") if c])


def collapse_allowed(directory: str, rules: BaselineRules) -> bool:
    """May "directory" (ending in "/") become a prefix rule? Absolute, at least min depth, and
    not equal to or above a sensitive prefix. Remembered per rules (BaselineRules.may_collapse):
    learning asks it for every novel path beneath a directory with many children."""
    known = rules.collapsible.get(directory)
    if known is None:
        if len(rules.collapsible) >= _COLLAPSIBLE_MAX:
            rules.collapsible.clear()
        known = rules.collapsible[directory] = _collapse_allowed(directory, rules)
    return known


_COLLAPSIBLE_MAX = 4096


def _collapse_allowed(directory: str, rules: BaselineRules) -> bool:
    if not directory.startswith("/") or not directory.endswith("/"):
        return False
    if dir_depth(directory) < rules.collapse_min_depth:
        return False
    return not any(s.startswith(directory) for s in rules.sensitive_prefixes)


def collapse_paths(paths: Iterable[str], rules: BaselineRules) -> tuple[set[str], set[str]]:
    """Batch form of the directory collapse: (exact, prefixes) for a set of exact paths.
    The incremental collapse in Baseline reaches the same result whatever the order."""
    children: dict[str, set[str]] = {}
    unique = set(paths)
    for p in unique:
        if p.startswith("/"):
            for d, c in parent_dirs(p):
                children.setdefault(d, set()).add(c)
    chosen = {
        d
        for d, cs in children.items()
        if len(cs) > rules.collapse_threshold and collapse_allowed(d, rules)
    }
    # keep only the shallowest: drop a chosen dir that has a chosen ancestor
    prefixes = {d for d in chosen if not any(a in chosen for a, _ in parent_dirs(d))}
    exact = {p for p in unique if not any(a in prefixes for a, _ in parent_dirs(p))}
    return exact, prefixes


def normalise_network(
    network: str | Network | ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> Network:
    """An address or CIDR as a network (host bits dropped); v4-mapped IPv6 becomes IPv4."""
    if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
        net: Network = network
    else:
        net = ipaddress.ip_network(network, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_V4MAPPED):
        v4 = int(net.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


def net_group(network: Network) -> Network | None:
    """The aggregation group (/24 or /64) strictly containing network, None if it is as wide."""
    plen = NET_GROUP_PREFIX[network.version]
    if network.prefixlen <= plen:
        return None
    return _truncate(network, plen)


def aggregate_networks(entries: Iterable[NetKey], threshold: int) -> set[NetKey]:
    """Batch form of the network aggregation: more than threshold entries inside one /24 (/64)
    with the same port become the /24 (/64)."""
    unique = set(entries)
    groups: dict[NetKey, set[Network]] = {}
    for net, port in unique:
        g = net_group(net)
        if g is not None:
            groups.setdefault((g, port), set()).add(net)
    out = set(unique)
    for (g, port), members in groups.items():
        if len(members) > threshold:
            out -= {(m, port) for m in members}
            out.add((g, port))
    return out


def format_net(network: Network, port: int) -> str:
    """Like Event.object: "1.2.3.4:443", "[::1]:443", "10.0.0.0/24:443"; port 0 shows as "*"."""
    host = network.prefixlen == network.max_prefixlen
    addr = str(network.network_address) if host else str(network)
    p = "*" if port == 0 else str(port)
    return f"[{addr}]:{p}" if network.version == 6 else f"{addr}:{p}"


def parse_net(obj: str | tuple[str, int] | NetKey) -> NetKey:
    """(address or CIDR, port) or the display string ("1.2.3.4:443", "[::1]:*") -> (net, port)."""
    if isinstance(obj, tuple):
        addr, port = obj
    else:
        text = obj.strip()
        addr, sep, port_s = text.rpartition(":")
        if not sep or not addr:
            raise ValueError(f"{obj!r} is not address:port")
        if addr.startswith("[") and addr.endswith("]"):
            addr = addr[1:-1]
        port = 0 if port_s == "*" else int(port_s)
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return normalise_network(addr), int(port)


def _truncate(net: Network, plen: int) -> Network:
    """net widened to prefix length plen (plen <= net.prefixlen)."""
    shift = net.max_prefixlen - plen
    base = int(net.network_address) >> shift << shift
    if net.version == 4:
        return ipaddress.IPv4Network((base, plen))
    return ipaddress.IPv6Network((base, plen))


def net_sort_key(key: NetKey) -> tuple[int, int, int, int]:
    net, port = key
    return net.version, int(net.network_address), net.prefixlen, port


# ---- entries and rules --------------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    first_seen: float
    last_seen: float
    hits: int = 1
    source: Source = "learned"
    # for imported entries: the source the imported document declared (None: hand-written)
    origin: Source | None = None

    def hit(self, when: float, n: int = 1) -> None:
        self.hits += n
        self.first_seen = min(self.first_seen, when)
        self.last_seen = max(self.last_seen, when)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "hits": self.hits,
            "source": self.source,
        }
        if self.origin is not None:
            out["origin"] = self.origin
        return out

    @property
    def declared_source(self) -> Source:
        """The source an export writes: an imported entry's origin when it has one."""
        return self.origin if self.source == "imported" and self.origin else self.source

    @classmethod
    def merged(cls, entries: Iterable[Entry]) -> Entry:
        """Aggregate of several entries; the source is kept when they all agree, else learned."""
        es = list(entries)
        sources = {e.source for e in es}
        origins = {e.origin for e in es}
        agree = len(sources) == 1
        return cls(
            first_seen=min(e.first_seen for e in es),
            last_seen=max(e.last_seen for e in es),
            hits=sum(e.hits for e in es),
            source=next(iter(sources)) if agree else "learned",
            origin=next(iter(origins)) if agree and len(origins) == 1 else None,
        )


@dataclass(slots=True)
class Unenforceable:
    """An object the kernel cannot hold (too long, unresolved, port 0): shown, never enforced."""

    dimension: str
    object: str
    reason: str
    entry: Entry


@dataclass(frozen=True)
class BaselineRules:
    collapse_threshold: int = DEFAULT_COLLAPSE_THRESHOLD
    collapse_min_depth: int = DEFAULT_COLLAPSE_MIN_DEPTH
    sensitive_prefixes: tuple[str, ...] = DEFAULT_SENSITIVE_PREFIXES
    net_collapse_threshold: int = DEFAULT_NET_COLLAPSE_THRESHOLD
    # collapse_allowed's answers by directory (derived from the fields above)
    collapsible: dict[str, bool] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.collapse_threshold < 1 or self.net_collapse_threshold < 1:
            raise ValueError("collapse thresholds must be at least 1")
        if self.collapse_min_depth < 1:
            raise ValueError("collapse_min_depth must be at least 1 (never collapse '/')")
        fixed = tuple(p if p.endswith("/") else p + "/" for p in self.sensitive_prefixes)
        object.__setattr__(self, "sensitive_prefixes", fixed)


# ---- per-dimension sets -------------------------------------------------------------------------


@dataclass
class _PathSet:
    """Exact paths and directory prefixes of one dimension, with a child index for collapse."""

    exact: dict[str, Entry] = field(default_factory=dict)
    prefixes: dict[str, Entry] = field(default_factory=dict)
    # directory -> child component -> number of entries beneath directory through that child;
    # built on first use (only the open collapse reads it), kept up to date from then on: a
    # baseline loaded to be read, pushed or put to rest never pays for it
    _children: dict[str, dict[str, int]] | None = field(default=None, repr=False, compare=False)

    @property
    def children(self) -> dict[str, dict[str, int]]:
        if self._children is None:
            self._children = {}
            for table in (self.exact, self.prefixes):
                for key in table:
                    self._index(key, 1)
        return self._children

    def __len__(self) -> int:
        return len(self.exact) + len(self.prefixes)

    def match(self, path: str) -> Entry | None:
        """Kernel LPM semantics: the exact entry, else the longest prefix the path starts with."""
        e = self.exact.get(path)
        if e is not None:
            return e
        rule = self.match_prefix(path)
        return None if rule is None else self.prefixes[rule]

    def match_prefix(self, path: str) -> str | None:
        """The longest "dir/" prefix entry path starts with, if any."""
        if not self.prefixes:
            return None
        i = len(path)
        while (i := path.rfind("/", 0, i)) >= 0:
            if path[: i + 1] in self.prefixes:
                return path[: i + 1]
        return None

    def _index(self, key: str, delta: int, pairs: list[tuple[str, str]] | None = None) -> None:
        children = self._children
        if children is None or not key.startswith("/"):
            return  # not built yet: built whole on first use
        for d, c in parent_dirs(key) if pairs is None else pairs:
            counts = children.setdefault(d, {})
            n = counts.get(c, 0) + delta
            if n > 0:
                counts[c] = n
            else:
                counts.pop(c, None)
                if not counts:
                    del children[d]

    def put(
        self,
        key: str,
        entry: Entry,
        *,
        prefix: bool,
        pairs: list[tuple[str, str]] | None = None,
    ) -> None:
        """Stores key; pairs: parent_dirs(key) when the caller has them."""
        (self.prefixes if prefix else self.exact)[key] = entry
        self._index(key, 1, pairs)

    def pop_beneath(self, directory: str) -> list[Entry]:
        """Removes every entry strictly beneath directory (a prefix equal to it included)."""
        out: list[Entry] = []
        for table in (self.exact, self.prefixes):
            for key in [k for k in table if k.startswith(directory)]:
                out.append(table.pop(key))
                self._index(key, -1)
        return out

    def collapse_target(
        self, path: str, rules: BaselineRules, pairs: list[tuple[str, str]] | None = None
    ) -> str | None:
        """The shallowest ancestor of path that has too many children and may collapse."""
        children = self.children
        for d, _ in parent_dirs(path) if pairs is None else pairs:
            counts = children.get(d)
            if counts and len(counts) > rules.collapse_threshold and collapse_allowed(d, rules):
                return d
        return None


@dataclass
class _NetSet:
    entries: dict[NetKey, Entry] = field(default_factory=dict)
    # (version, port) -> {prefixlen: count}: which prefix lengths to try in match()
    plens: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    # (group network, port) -> members strictly inside the group
    groups: dict[NetKey, set[Network]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def _lookup(self, addr: Network, port: int) -> NetKey | None:
        counts = self.plens.get((addr.version, port))
        if not counts:
            return None
        for plen in sorted(counts, reverse=True):
            if plen > addr.prefixlen:
                continue
            key = (_truncate(addr, plen), port)
            if key in self.entries:
                return key
        return None

    def match_key(self, net: Network, port: int) -> NetKey | None:
        """Kernel semantics: the port, then port 0 (any port), each longest prefix first."""
        return self._lookup(net, port) or (self._lookup(net, 0) if port else None)

    def match(self, net: Network, port: int) -> Entry | None:
        key = self.match_key(net, port)
        return None if key is None else self.entries[key]

    def put(self, key: NetKey, entry: Entry) -> None:
        net, port = key
        self.entries[key] = entry
        counts = self.plens.setdefault((net.version, port), {})
        counts[net.prefixlen] = counts.get(net.prefixlen, 0) + 1
        g = net_group(net)
        if g is not None:
            self.groups.setdefault((g, port), set()).add(net)

    def pop(self, key: NetKey) -> Entry:
        net, port = key
        entry = self.entries.pop(key)
        counts = self.plens[(net.version, port)]
        counts[net.prefixlen] -= 1
        if not counts[net.prefixlen]:
            del counts[net.prefixlen]
        g = net_group(net)
        if g is not None:
            members = self.groups[(g, port)]
            members.discard(net)
            if not members:
                del self.groups[(g, port)]
        return entry

    def pop_covered(self, net: Network, port: int) -> list[Entry]:
        """Removes entries the new (net, port) covers: inside net, same port (any if port 0)."""
        if port and net.prefixlen == net.max_prefixlen:
            return []  # a host with a port covers only itself, which match() ruled out
        doomed = [
            k
            for k in self.entries
            if k[0].version == net.version
            and k[0].subnet_of(net)  # type: ignore[arg-type]
            and (port == 0 or k[1] == port)
        ]
        return [self.pop(k) for k in doomed]


# ---- the baseline -------------------------------------------------------------------------------


@dataclass
class _EntrySets:
    paths: dict[str, _PathSet] = field(
        default_factory=lambda: {d: _PathSet() for d in PATH_DIMENSIONS}
    )
    net: _NetSet = field(default_factory=_NetSet)
    unenforceable: dict[tuple[str, str], Unenforceable] = field(default_factory=dict)


class Baseline:
    """What one agent does: exec and open paths, connect destinations, unenforceable objects."""

    def __init__(
        self,
        agent: str,
        *,
        rules: BaselineRules | None = None,
        learning_since: float | None = None,
    ) -> None:
        self.agent = agent
        self.rules = rules or BaselineRules()
        self.version = SCHEMA_VERSION
        self.learning_since: float = time.time() if learning_since is None else learning_since
        self.last_novel: float | None = None
        self.partial_reasons: set[str] = set()
        # bumped whenever the entry set (what kernel_entries returns) changes
        self.revision = 0
        self._sets: _EntrySets | None = _EntrySets()
        # at rest (see freeze): the entries compressed, and the counts summary() reports
        self._frozen: tuple[bytes, dict[str, Any]] | None = None
        # provenance of imports (newest last, at most IMPORTS_MAX) and the document's metadata
        self.imports: list[dict[str, Any]] = []
        self.annotations: dict[str, str] = {}

    @classmethod
    def new(
        cls,
        agent: str,
        *,
        collapse_threshold: int = DEFAULT_COLLAPSE_THRESHOLD,
        collapse_min_depth: int = DEFAULT_COLLAPSE_MIN_DEPTH,
        net_collapse_threshold: int = DEFAULT_NET_COLLAPSE_THRESHOLD,
        sensitive_prefixes: Iterable[str] = DEFAULT_SENSITIVE_PREFIXES,
        learning_since: float | None = None,
    ) -> Baseline:
        """An empty baseline with the rules given field by field (as the config has them)."""
        rules = BaselineRules(
            collapse_threshold=collapse_threshold,
            collapse_min_depth=collapse_min_depth,
            sensitive_prefixes=tuple(sensitive_prefixes),
            net_collapse_threshold=net_collapse_threshold,
        )
        return cls(agent, rules=rules, learning_since=learning_since)

    # ---- at rest --------------------------------------------------------------------------------
    # The baseline of an agent that is not learning (it alerts or enforces: the kernel lists
    # hold its entries and judge every event) can rest: its entries then live as one compressed
    # msgpack blob, about 30x smaller than the Python objects, and come back on first use.

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def freeze(self) -> None:
        """Puts the entries at rest (idempotent). Anything that reads them thaws them."""
        if self._frozen is not None:
            return
        counts = self._entry_counts()
        blob = _compress_entries(self)
        self._frozen = (blob, counts)
        self._sets = None

    def _thaw(self) -> _EntrySets:
        assert self._frozen is not None
        blob, _ = self._frozen
        self._sets = _EntrySets()
        self._frozen = None
        try:
            _decode_entries(self, msgpack.unpackb(zlib.decompress(blob), raw=False))
        except BaseException:
            self._sets, self._frozen = None, (blob, _)
            raise
        assert self._sets is not None
        return self._sets

    @property
    def _live(self) -> _EntrySets:
        return self._sets if self._sets is not None else self._thaw()

    @property
    def _paths(self) -> dict[str, _PathSet]:
        return self._live.paths

    @property
    def _net(self) -> _NetSet:
        return self._live.net

    @property
    def _unenforceable(self) -> dict[tuple[str, str], Unenforceable]:
        return self._live.unenforceable

    # ---- state ----------------------------------------------------------------------------------

    @property
    def partial(self) -> bool:
        return bool(self.partial_reasons)

    def mark_partial(self, reason: str) -> None:
        """The baseline may miss behaviour (events dropped, learning began late, ...)."""
        self.partial_reasons.add(reason)

    def __len__(self) -> int:
        return sum(self._entry_counts()["counts"].values())

    @property
    def unenforceable(self) -> list[Unenforceable]:
        return [self._unenforceable[k] for k in sorted(self._unenforceable)]

    # ---- learning -------------------------------------------------------------------------------

    def observe(self, event: Event) -> bool:
        """Learns one event. True if it added a new entry (novel), False if it was a hit."""
        when = event.ts_ns / 1e9
        if event.dimension == "connect":
            return self._observe_net(event, when)
        if event.dimension not in PATH_DIMENSIONS:
            log.debug("event of an unknown dimension ignored", dimension=event.dimension)
            return False
        flags = event.flags
        flagged = next((f for f in UNENFORCEABLE_FLAGS if f in flags), None) if flags else None
        path = event.path or ""
        if flagged is None and not path:
            flagged = "unresolved"
        if flagged is None and "\0" in path:
            flagged = "NUL in path"  # cannot come from the kernel's C strings; never raise
        if flagged is not None:
            return self._note_unenforceable(event.dimension, path, flagged, when, "learned")
        if "relative" not in flags:
            path = normalise_path(path)
        return self._add_path(event.dimension, path, when, "learned", prefix=False)

    def _observe_net(self, event: Event, when: float) -> bool:
        obj = event.object
        try:
            net, port = parse_net((event.address or "", event.port or 0))
        except ValueError:
            return self._note_unenforceable("connect", obj, "unparsable address", when, "learned")
        if port == 0:
            return self._note_unenforceable(
                "connect", obj, "port 0 (would allow every port)", when, "learned"
            )
        return self._add_net(net, port, when, "learned")

    def add(
        self,
        dimension: str,
        obj: str | tuple[str, int] | NetKey,
        source: Source = "accepted",
        when: float | None = None,
        *,
        prefix: bool = False,
    ) -> bool:
        """Merges one object (accept, import). Paths: exact, or a "dir/" rule with prefix=True.
        Connect: (address or CIDR, port) or "addr:port" as Event.object shows it; port 0 = any.
        Returns True if it added a new entry."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
        t = time.time() if when is None else when
        if dimension == "connect":
            net, port = parse_net(obj)  # type: ignore[arg-type]
            return self._add_net(net, port, t, source)
        if dimension not in PATH_DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}: expected exec, open or connect")
        if not isinstance(obj, str):
            raise ValueError(f"a {dimension} entry is a path, not {obj!r}")
        path = normalise_path(obj)
        if prefix and not path.endswith("/"):
            path += "/"
        return self._add_path(dimension, path, t, source, prefix=prefix)

    def _note_unenforceable(
        self, dimension: str, obj: str, reason: str, when: float, source: Source
    ) -> bool:
        key = (dimension, obj)
        known = self._unenforceable.get(key)
        if known is not None:
            known.entry.hit(when)
            return False
        self._unenforceable[key] = Unenforceable(
            dimension, obj, reason, Entry(when, when, 1, source)
        )
        self._novel(when)
        return True

    def _novel(self, when: float) -> None:
        self.last_novel = when if self.last_novel is None else max(self.last_novel, when)

    def _add_path(self, dim: str, path: str, when: float, source: Source, *, prefix: bool) -> bool:
        if "\0" in path:
            raise ValueError("path contains a NUL byte")
        if not path_fits(path, prefix=prefix):
            return self._note_unenforceable(dim, path, "toolong", when, source)
        ps = self._paths[dim]
        covering = ps.match(path)
        if covering is not None:
            covering.hit(when)
            return False
        entry = Entry(when, when, 1, source)
        if prefix:
            beneath = ps.pop_beneath(path)
            if beneath:
                entry = Entry.merged([entry, *beneath])
                entry.source, entry.origin = source, None
        pairs = parent_dirs(path)
        ps.put(path, entry, prefix=prefix, pairs=pairs)
        if dim == "open":
            self._collapse(ps, path, pairs)
        self.revision += 1
        self._novel(when)
        return True

    def _collapse(self, ps: _PathSet, path: str, pairs: list[tuple[str, str]]) -> None:
        target = ps.collapse_target(path, self.rules, pairs)
        if target is None:
            return
        merged = Entry.merged(ps.pop_beneath(target))
        ps.put(target, merged, prefix=True)
        log.debug("directory collapsed", agent=self.agent, prefix=target, hits=merged.hits)

    def _add_net(self, net: Network, port: int, when: float, source: Source) -> bool:
        covering = self._net.match(net, port)
        if covering is not None:
            covering.hit(when)
            return False
        entry = Entry(when, when, 1, source)
        covered = self._net.pop_covered(net, port)
        if covered:
            entry = Entry.merged([entry, *covered])
            entry.source, entry.origin = source, None
        self._net.put((net, port), entry)
        self._aggregate(net, port)
        self.revision += 1
        self._novel(when)
        return True

    def _aggregate(self, net: Network, port: int) -> None:
        group = net_group(net)
        if group is None:
            return
        members = self._net.groups.get((group, port))
        if members is None or len(members) <= self.rules.net_collapse_threshold:
            return
        merged = Entry.merged([self._net.pop((m, port)) for m in list(members)])
        self._net.put((group, port), merged)
        log.debug("networks aggregated", agent=self.agent, network=str(group), port=port)

    # ---- verbatim edits (import) -----------------------------------------------------------------

    def insert(
        self, dimension: str, key: str | NetKey, entry: Entry, *, prefix: bool = False
    ) -> None:
        """Puts one entry exactly as given: no normalisation, no collapse or aggregation, no
        covering check (an import is the reviewed policy and must come back out unchanged).
        The caller has validated key (document.py)."""
        if dimension == "connect":
            assert isinstance(key, tuple)
            self._net.put(key, entry)
        else:
            assert isinstance(key, str)
            self._paths[dimension].put(key, entry, prefix=prefix)
        self.revision += 1

    def entry(self, dimension: str, key: str | NetKey, *, prefix: bool = False) -> Entry | None:
        """The entry stored under exactly this key (not a covering one), or None."""
        if dimension == "connect":
            return self._net.entries.get(key)  # type: ignore[call-overload]
        ps = self._paths[dimension]
        return (ps.prefixes if prefix else ps.exact).get(key)  # type: ignore[call-overload]

    def keys(self) -> set[tuple[str, Any, bool]]:
        """Every entry's identity: (dimension, path or (network, port), is_prefix)."""
        out: set[tuple[str, Any, bool]] = set()
        for d in PATH_DIMENSIONS:
            ps = self._paths[d]
            out.update((d, p, False) for p in ps.exact)
            out.update((d, p, True) for p in ps.prefixes)
        out.update(("connect", k, False) for k in self._net.entries)
        return out

    def record_import(self, record: dict[str, Any]) -> None:
        self.imports.append(record)
        del self.imports[:-IMPORTS_MAX]

    def copy(self) -> Baseline:
        """An independent copy (through the store's encoding, so nothing is shared)."""
        return decode_payload(encode_payload(self), self.rules)

    # ---- queries --------------------------------------------------------------------------------

    def contains(self, dimension: str, obj: str | tuple[str, int] | NetKey) -> bool:
        """Would the kernel allow obj with this baseline loaded? (Exact or prefix for paths,
        after the /proc rewrite; port then port 0 and longest prefix for connect.)"""
        return self.lookup(dimension, obj) is not None

    def lookup(self, dimension: str, obj: str | tuple[str, int] | NetKey) -> Entry | None:
        """The entry that covers obj, or None."""
        if dimension == "connect":
            try:
                net, port = parse_net(obj)  # type: ignore[arg-type]
            except ValueError:
                return None
            return self._net.match(net, port)
        if dimension not in PATH_DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}")
        if not isinstance(obj, str):
            return None
        path = normalise_path(obj)
        if not path_fits(path, prefix=False):
            return None
        return self._paths[dimension].match(path)

    def kernel_rule(self, dimension: str, obj: str | tuple[str, int]) -> tuple[str, Any] | None:
        """The entry that covers obj, in the form the kernel lists take: (path, is_prefix) for
        exec/open, (cidr, port) for connect; None when nothing covers it. What corrald writes
        into the kernel right after learning obj (the exact path, or the prefix it collapsed
        into; the host, or the network it was aggregated into)."""
        if dimension == "connect":
            try:
                net, port = parse_net(obj)  # type: ignore[arg-type]
            except ValueError:
                return None
            key = self._net.match_key(net, port)
            return None if key is None else (str(key[0]), key[1])
        if not isinstance(obj, str) or dimension not in PATH_DIMENSIONS:
            return None
        path = normalise_path(obj)
        ps = self._paths[dimension]
        if path in ps.exact:
            return path, False
        prefix = ps.match_prefix(path)
        return None if prefix is None else (prefix, True)

    @overload
    def kernel_entries(self, dimension: Literal["exec", "open"]) -> tuple[list[str], list[str]]: ...
    @overload
    def kernel_entries(self, dimension: Literal["connect"]) -> list[tuple[str, int]]: ...
    @overload
    def kernel_entries(
        self, dimension: str
    ) -> tuple[list[str], list[str]] | list[tuple[str, int]]: ...

    def kernel_entries(self, dimension: str) -> tuple[list[str], list[str]] | list[tuple[str, int]]:
        """exec/open: (exact, prefixes) for Kernel.allow_paths; connect: [(cidr, port)] for
        Kernel.allow_net. Sorted; unenforceable objects are never included. A resting
        baseline reads them from its blob and stays at rest."""
        if dimension not in (*PATH_DIMENSIONS, "connect"):
            raise ValueError(f"unknown dimension {dimension!r}")
        if dimension == "connect":
            if self._frozen is not None:
                return [(c, p) for c, p, *_ in _blob_rows(self._frozen[0], "connect")]
            return [(str(n), p) for n, p in sorted(self._net.entries, key=net_sort_key)]
        return list(self.kernel_paths(dimension)), list(self.kernel_paths(dimension, prefix=True))

    def kernel_paths(self, dimension: str, *, prefix: bool = False) -> Iterator[str]:
        """The exact paths (or the "dir/" prefixes) of kernel_entries, one at a time: a
        resting baseline streams them from its blob and stays at rest."""
        if self._frozen is not None:
            rows = _blob_rows(self._frozen[0], dimension)
            return (_ps(raw) for raw, pre, *_ in rows if bool(pre) is prefix)
        ps = self._paths[dimension]
        return iter(sorted(ps.prefixes if prefix else ps.exact))

    def path_entries(self, dimension: str) -> list[tuple[str, bool, Entry]]:
        """(path, is_prefix, entry), sorted by path."""
        return list(self.iter_path_entries(dimension))

    def iter_path_entries(self, dimension: str) -> Iterator[tuple[str, bool, Entry]]:
        """path_entries one at a time; a resting baseline streams them from its blob (and
        stays at rest)."""
        if self._frozen is not None:
            return map(_path_of, _blob_rows(self._frozen[0], dimension))
        ps = self._paths[dimension]
        out = [(p, False, e) for p, e in ps.exact.items()]
        out += [(p, True, e) for p, e in ps.prefixes.items()]
        out.sort(key=itemgetter(0, 1))
        return iter(out)

    def net_entries(self) -> list[tuple[Network, int, Entry]]:
        return list(self.iter_net_entries())

    def iter_net_entries(self) -> Iterator[tuple[Network, int, Entry]]:
        """net_entries one at a time (streamed from the blob at rest, as iter_path_entries)."""
        if self._frozen is not None:
            return map(_net_of, _blob_rows(self._frozen[0], "connect"))
        keys = sorted(self._net.entries, key=net_sort_key)
        return ((n, p, self._net.entries[(n, p)]) for n, p in keys)

    def summary(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            **self._entry_counts(),
            "partial": self.partial,
            "partial_reasons": sorted(self.partial_reasons),
            "learning_since": self.learning_since,
            "last_novel": self.last_novel,
            "revision": self.revision,
        }

    def _entry_counts(self) -> dict[str, Any]:
        """The summary's parts that depend on the entries (kept while at rest)."""
        if self._frozen is not None:
            return copy.deepcopy(self._frozen[1])
        counts = {d: len(self._paths[d]) for d in PATH_DIMENSIONS}
        counts["connect"] = len(self._net)
        return {
            "counts": counts,
            "prefixes": {d: len(self._paths[d].prefixes) for d in PATH_DIMENSIONS},
            "unenforceable": len(self._unenforceable),
            "imported": sum(1 for e in self._entries() if e.source == "imported"),
        }

    def _entries(self) -> Iterator[Entry]:
        """Every entry, unsorted (cheap: for counts)."""
        for ps in self._paths.values():
            yield from ps.exact.values()
            yield from ps.prefixes.values()
        yield from self._net.entries.values()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, sorted for diff-friendly output."""
        out: dict[str, Any] = {
            "agent": self.agent,
            "version": self.version,
            "learning_since": self.learning_since,
            "last_novel": self.last_novel,
            "partial": self.partial,
            "partial_reasons": sorted(self.partial_reasons),
        }
        for d in PATH_DIMENSIONS:
            out[d] = [
                {"object": p, "kind": "prefix" if pre else "exact", **e.to_dict()}
                for p, pre, e in self.path_entries(d)
            ]
        out["connect"] = [
            {
                "object": format_net(n, p),
                "kind": "host" if n.prefixlen == n.max_prefixlen else "network",
                "network": str(n),
                "port": p,
                **e.to_dict(),
            }
            for n, p, e in self.net_entries()
        ]
        out["unenforceable"] = [
            {"dimension": u.dimension, "object": u.object, "reason": u.reason, **u.entry.to_dict()}
            for u in self.unenforceable
        ]
        out["annotations"] = dict(sorted(self.annotations.items()))
        out["imports"] = [dict(r) for r in self.imports]
        return out


# ---- encoding -----------------------------------------------------------------------------------


class CorruptBaseline(ValueError):
    """The stored bytes are not a readable baseline; the message says what is wrong."""


def _pb(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _ps(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _entry_row(e: Entry) -> list[Any]:
    return [e.first_seen, e.last_seen, e.hits, e.source, e.origin]


def _entry_of(row: list[Any]) -> Entry:
    """A stored entry: schema 2 rows end with the origin, schema 1 rows have none."""
    if len(row) == 4:
        row = [*row, None]
    first, last, hits, source, origin = row
    if source not in SOURCES or (origin is not None and origin not in SOURCES):
        raise ValueError(f"unknown source {source!r} / origin {origin!r}")
    if not isinstance(hits, int) or not isinstance(first, float | int):
        raise ValueError("bad entry fields")
    return Entry(float(first), float(last), hits, source, origin)


_ENTRY_TABLES = (*PATH_DIMENSIONS, "connect", "unenforceable")


# One stored row per table, written and read by these alone: (path, is prefix, entry), (network,
# port, entry), (dimension, object, reason, entry); the entry's fields follow.


def _path_row(path: str, prefix: bool, e: Entry) -> list[Any]:
    return [_pb(path), prefix, *_entry_row(e)]


def _net_row(net: Network, port: int, e: Entry) -> list[Any]:
    return [str(net), port, *_entry_row(e)]


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
    rows = data[table]
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
    b = Baseline(data["agent"], rules=rules, learning_since=float(data["learning_since"]))
    last = data["last_novel"]
    b.last_novel = None if last is None else float(last)
    b.partial_reasons = {str(r) for r in data["partial_reasons"]}
    b.revision = int(data["revision"])
    # schema 2; absent in schema 1 payloads
    b.annotations = {str(k): str(v) for k, v in data.get("annotations", {}).items()}
    b.imports = [dict(r) for r in data.get("imports", [])][-IMPORTS_MAX:]
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
    u = _unenforceable_of(row)
    return (u.dimension, u.object), _unenforceable_row(u), u.entry


class _Tally:
    """The counts Baseline._entry_counts gives, kept while rows stream by."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.rows = dict.fromkeys(_ENTRY_TABLES, 0)
        self.prefixes = dict.fromkeys(PATH_DIMENSIONS, 0)
        self.imported = 0

    def add(self, table: str, row: list[Any], entry: Entry) -> None:
        self.rows[table] += 1
        if table == "unenforceable":
            return
        if table in PATH_DIMENSIONS and row[1]:
            self.prefixes[table] += 1
        if entry.source == "imported":
            self.imported += 1

    def counts(self) -> dict[str, Any]:
        return {
            "counts": {d: self.rows[d] for d in (*PATH_DIMENSIONS, "connect")},
            "prefixes": dict(self.prefixes),
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


# ---- the store ----------------------------------------------------------------------------------

SUFFIX = ".baseline"
_NAME_MAX = 200  # encoded names longer than this are stored under their hash


def file_name(agent: str) -> str:
    """Reversible file name: percent-encoding ("/" -> %2F; "~" and a leading "." too), or
    "~<sha256>.baseline" when that would be too long for a file name (the agent is in the
    header)."""
    if not agent or "\0" in agent:
        raise ValueError(f"invalid agent name {agent!r}")
    enc = urllib.parse.quote(agent, safe="").replace("~", "%7E")
    if enc.startswith("."):
        enc = "%2E" + enc[1:]
    if len(enc) > _NAME_MAX:
        enc = "~" + hashlib.sha256(agent.encode()).hexdigest()
    return enc + SUFFIX


def agent_of_file(name: str) -> str | None:
    """The agent a percent-encoded file name stands for; None for other files or hashed names."""
    if not name.endswith(SUFFIX) or name.startswith((".", "~")):
        return None
    try:
        agent = urllib.parse.unquote(name[: -len(SUFFIX)], errors="strict")
        return agent if agent and file_name(agent) == name else None
    except (UnicodeError, ValueError):
        return None


class BaselineStore:
    """One file per agent under <state_dir>/baselines/; crash-safe writes, corrupt files moved
    aside. Not thread-safe for concurrent saves of the same agent."""

    def __init__(self, state_dir: str | os.PathLike[str], rules: BaselineRules | None = None):
        self.dir = Path(state_dir) / "baselines"
        self.rules = rules
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale_temps()

    def path(self, agent: str) -> Path:
        return self.dir / file_name(agent)

    def _remove_stale_temps(self) -> None:
        """Temp files left by a crash mid-save (the live files were never touched)."""
        for p in self.dir.glob(".*.tmp-*"):
            with contextlib.suppress(OSError):
                p.unlink()
                log.info("removed temporary baseline file left by a crash", file=str(p))

    # ---- names ----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        out: list[str] = []
        for p in self.dir.iterdir():
            if p.name.startswith("~") and p.name.endswith(SUFFIX):
                agent = self._agent_from_header(p)
            else:
                agent = agent_of_file(p.name)
            if agent is not None:
                out.append(agent)
        return sorted(out)

    def _agent_from_header(self, p: Path) -> str | None:
        try:
            with open(p, "rb") as f:
                header, _ = read_header(f.read(4096))
        except (OSError, CorruptBaseline):
            return None
        agent = header.get("agent")
        if isinstance(agent, str) and file_name(agent) == p.name:
            return agent
        return None

    # ---- load -----------------------------------------------------------------------------------

    def load(self, agent: str, *, rest: bool = False) -> Baseline | None:
        """The stored baseline, or None if there is none or it is unreadable (then it is moved
        aside to <file>.corrupt-<time> and the agent relearns). Never raises for bad content.
        rest: returned at rest (see decode_payload)."""
        path = self.path(agent)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._quarantine(agent, path, f"unreadable: {e.strerror or e}")
            return None
        try:
            b = decode_file(raw, self.rules, rest=rest)
        except CorruptBaseline as e:
            self._quarantine(agent, path, str(e))
            return None
        if b.agent != agent:
            self._quarantine(agent, path, f"belongs to agent {b.agent!r}")
            return None
        self._migrate(b, read_header(raw)[0].get("schema"))
        return b

    def _migrate(self, b: Baseline, schema: Any) -> None:
        """Rewrites an older schema's file in the current one (content unchanged). A failed
        write is logged and retried by the daemon's next save; the old file stays readable."""
        if schema == SCHEMA_VERSION:
            return
        try:
            self.save(b)
        except OSError as e:
            log.warning("could not migrate baseline file", agent=b.agent, error=str(e))
            return
        log.info(
            "baseline file migrated", agent=b.agent, schema_from=schema, schema_to=SCHEMA_VERSION
        )

    def load_all(self) -> dict[str, Baseline]:
        out: dict[str, Baseline] = {}
        for agent in self.names():
            b = self.load(agent)
            if b is not None:
                out[agent] = b
        return out

    def _quarantine(self, agent: str, path: Path, problem: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.rename(path, target)
        except OSError as e:
            log.error(
                "baseline file is corrupt and could not be moved aside; the agent relearns",
                agent=agent,
                file=str(path),
                problem=problem,
                error=str(e),
            )
            return
        _fsync_dir(self.dir)
        log.error(
            "baseline file is corrupt; moved aside, the agent relearns its baseline from scratch",
            agent=agent,
            file=str(path),
            problem=problem,
            moved_to=str(target),
        )

    # ---- save / delete --------------------------------------------------------------------------

    def save(self, baseline: Baseline) -> Path:
        """Writes the baseline atomically. Raises OSError (with the agent, file and cause) if the
        write fails, e.g. ENOSPC; the previous file, if any, is then unchanged."""
        return self.save_encoded(baseline.agent, encode_file(baseline))

    def save_encoded(self, agent: str, data: bytes) -> Path:
        """Writes bytes from encode_file(): lets a caller encode on the event loop (consistent
        snapshot) and write in a thread."""
        path = self.path(agent)
        try:
            atomic_write(path, data)
        except OSError as e:
            why = f"cannot save the baseline of agent {agent!r}: {e.strerror}"
            raise OSError(e.errno, why) from e
        return path

    def delete(self, agent: str) -> bool:
        """Removes the stored baseline; False if there was none."""
        try:
            self.path(agent).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.dir)
        return True


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Crash-safe replace of path with data: a temp file in the same directory, written and
    fsynced, renamed over path, then the directory fsynced. A crash leaves the old or the new
    file, never a mix. Raises OSError (errno kept) saying what failed and whether the previous
    file is intact."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        _write_durably(tmp, data)
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(
            e.errno, f"writing {target} failed: {_why(e)}; the previous version is unchanged"
        ) from e
    try:
        _fsync_dir(target.parent)
    except OSError as e:
        raise OSError(
            e.errno,
            f"{target} was written but syncing its directory failed: {_why(e)}; "
            "after a power loss the previous version may come back",
        ) from e


def _why(e: OSError) -> str:
    return e.strerror or (os.strerror(e.errno) if e.errno else str(e))


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
