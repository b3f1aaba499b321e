"""Per-agent baselines: what an agent was seen doing, in the form the kernel allow-lists take.

A baseline holds, per dimension, the objects an agent used while it was learning (plus entries
an operator accepted or imported), each with first/last seen, hits and source. It is shaped
like the kernel's LPM tries so that ``kernel_entries()`` is a plain copy, and ``contains()``
answers exactly what the kernel would answer.

The rules it learns by (paths, directory collapse, networks, provenance) are in rules.py, its
per-dimension entry sets in sets.py, its stored and resting form in blob.py, the crash-safe
store in store.py.
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any, Literal, overload

import msgpack
import structlog

from corral.kernel.events import Event

from . import patterns as pat
from .blob import (
    PATTERN_TABLES,
    SCHEMA_VERSION,
    _blob_rows,
    _compress_entries,
    _decode_entries,
    _host_of,
    _net_of,
    _path_of,
    _pattern_of,
    _ps,
    decode_payload,
    encode_payload,
)
from .rules import (
    DEFAULT_COLLAPSE_MIN_DEPTH,
    DEFAULT_COLLAPSE_THRESHOLD,
    DEFAULT_NET_COLLAPSE_THRESHOLD,
    DEFAULT_SENSITIVE_PREFIXES,
    IMPORTS_MAX,
    PATH_DIMENSIONS,
    SOURCES,
    UNENFORCEABLE_FLAGS,
    BaselineRules,
    Entry,
    HostKey,
    NetKey,
    Network,
    Source,
    Unenforceable,
    check_host,
    format_host,
    format_net,
    host_covers,
    is_host_object,
    net_group,
    net_sort_key,
    normalise_path,
    parent_dirs,
    parse_host,
    parse_net,
    path_fits,
)
from .sets import _EntrySets, _HostSet, _NetSet, _PathSet

log = structlog.get_logger("corral.baseline")

PATTERN = "pattern"  # kernel_rule's kind of a pattern entry (exact: False, prefix: True)

RUNS_KEPT = 64  # cgroup ids kept to recognise a run met again
_GENERALISE_TRIES = 16  # same-shaped entries a novel path is compared with


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
        # evidence for promotion: how many runs (cgroups: `corralctl run`s, containers) were
        # started while the agent learned, and the newest ids (a cgroup met again after a
        # restart of corrald is not counted twice)
        self.runs_seen = 0
        self.recent_runs: list[int] = []
        # exec lineage: each caller's index, which names its kernel list (lineage.py); never
        # reused, so incremental pushes and list swaps agree
        self.caller_ids: dict[str, int] = {}

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
    def _hosts(self) -> _HostSet:
        return self._live.hosts

    @property
    def _unenforceable(self) -> dict[tuple[str, str], Unenforceable]:
        return self._live.unenforceable

    # ---- state ----------------------------------------------------------------------------------

    @property
    def partial(self) -> bool:
        return bool(self.partial_reasons)

    def note_run(self, cgroup_id: int) -> bool:
        """A cgroup of this agent started while it learned; False if it was counted before."""
        if cgroup_id in self.recent_runs:
            return False
        self.runs_seen += 1
        self.recent_runs = [*self.recent_runs, cgroup_id][-RUNS_KEPT:]
        return True

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
        caller = (event.caller or None) if event.dimension == "exec" else None
        return self._add_path(event.dimension, path, when, "learned", prefix=False, caller=caller)

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
        pattern: bool = False,
        caller: str | None = None,
    ) -> bool:
        """Merges one object (accept, import). Paths: exact, a "dir/" rule with prefix=True, or
        a glob with pattern=True (patterns.py; PatternError when the kernel cannot hold it).
        exec: caller allows it for that caller only, None for any caller (lineage.py).
        Connect: (address or CIDR, port) or "addr:port" as Event.object shows it; port 0 = any.
        Returns True if it added a new entry."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
        t = time.time() if when is None else when
        if dimension == "connect" and is_host_object(obj):
            name, port = parse_host(obj)  # type: ignore[arg-type]
            return self._add_host(name, port, t, source)
        if dimension == "connect":
            net, port = parse_net(obj)  # type: ignore[arg-type]
            return self._add_net(net, port, t, source)
        if dimension not in PATH_DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}: expected exec, open or connect")
        if not isinstance(obj, str):
            raise ValueError(f"a {dimension} entry is a path, not {obj!r}")
        if dimension != "exec":
            caller = None
        if pattern:
            return self._add_pattern(dimension, pat.check_pattern(obj), t, source, caller)
        path = normalise_path(obj)
        if prefix and not path.endswith("/"):
            path += "/"
        return self._add_path(dimension, path, t, source, prefix=prefix, caller=caller)

    def _add_pattern(
        self, dim: str, glob: str, when: float, source: Source, caller: str | None = None
    ) -> bool:
        ps = self._paths[dim]
        known = ps.patterns.get(glob)
        if known is not None:
            return self._hit(known, when, caller)
        covered = [p for p in ps.exact if pat.matches(glob, p)]
        others = [g for g in ps.patterns if g != glob]
        pat.kernel_groups([*others, glob])  # raises PatternError when it cannot be held
        entry = self._new_entry(when, source, caller)
        if covered:
            entry = Entry.merged([entry, *(ps.pop_exact(p) for p in covered)])
            entry.source, entry.origin = source, None
        ps.put_pattern(glob, entry, learned=False)
        self.revision += 1
        self._novel(when)
        return True

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

    def _add_path(
        self,
        dim: str,
        path: str,
        when: float,
        source: Source,
        *,
        prefix: bool,
        caller: str | None = None,
    ) -> bool:
        if "\0" in path:
            raise ValueError("path contains a NUL byte")
        if not path_fits(path, prefix=prefix):
            return self._note_unenforceable(dim, path, "toolong", when, source)
        ps = self._paths[dim]
        covering = ps.match(path)
        if covering is not None:
            return self._hit(covering, when, caller)
        if not prefix and source == "learned" and self._generalise(ps, dim, path, when, caller):
            return True
        entry = self._new_entry(when, source, caller)
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

    def _hit(self, entry: Entry, when: float, caller: str | None) -> bool:
        """A hit of an entry that covers the object; True when it now allows a caller it did
        not (exec lineage: a new kernel entry)."""
        entry.hit(when)
        if entry.callers is None or caller in entry.callers:
            return False
        if caller is None:
            entry.callers = None  # accepted or imported for any caller
        else:
            self.caller_id(caller)
            entry.callers.add(caller)
        self.revision += 1
        self._novel(when)
        return True

    def _new_entry(self, when: float, source: Source, caller: str | None) -> Entry:
        if caller is None:
            return Entry(when, when, 1, source)
        self.caller_id(caller)
        return Entry(when, when, 1, source, callers={caller})

    def caller_id(self, caller: str) -> int:
        """The caller's index (lineage.py), assigned on first use."""
        known = self.caller_ids.get(caller)
        if known is None:
            known = self.caller_ids[caller] = len(self.caller_ids) + 1
        return known

    def _generalise(
        self, ps: _PathSet, dim: str, path: str, when: float, caller: str | None = None
    ) -> bool:
        """Learns path as part of a pattern when an entry of its shape and path are evidence
        of one (patterns.py); False (learn it exact) otherwise."""
        shape = pat.shape(path)
        if shape is None:
            return False
        bucket = ps.shapes.get(shape)
        if not bucket:
            return False
        # learned patterns first (they widen), then a bounded number of exact siblings: a
        # directory of many same-shaped names that never merge must not make learning O(n)
        tried = 0
        for known in sorted(bucket, key=lambda k: (not pat.is_pattern(k), k)):
            if tried >= _GENERALISE_TRIES:
                break
            tried += 1
            glob = pat.generalise(known, path, dimension=dim, known_pattern=known in ps.patterns)
            if glob is None or glob in ps.patterns:
                continue
            members = [known] if known in ps.patterns else []
            exact = [p for p in bucket if p in ps.exact and pat.matches(glob, p)]
            keep = [g for g in ps.patterns if g not in members]
            if not pat.fits_kernel([*keep, glob]):
                log.info(
                    "pattern not learned: the kernel entry is full",
                    agent=self.agent,
                    dimension=dim,
                    pattern=glob,
                )
                return False
            merged = [ps.pop_pattern(g) for g in members] + [ps.pop_exact(p) for p in exact]
            entry = Entry.merged([self._new_entry(when, "learned", caller), *merged])
            entry.source, entry.origin = "learned", None
            ps.put_pattern(glob, entry, learned=True)
            self.revision += 1
            self._novel(when)
            log.debug(
                "pattern learned",
                agent=self.agent,
                dimension=dim,
                pattern=glob,
                evidence=len(merged) + 1,
            )
            return True
        return False

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

    # ---- connect by name ------------------------------------------------------------------------

    def observe_host(self, name: str, port: int, when: float) -> bool:
        """Learns a connect to an address the agent's own DNS answer gave for name (the
        learner knows it from the answer): {name, port} instead of the address. A name the
        kernel cannot hold is kept as unenforceable."""
        try:
            name = check_host(name)
        except ValueError as e:
            return self._note_unenforceable(
                "connect", format_host(name, port), str(e), when, "learned"
            )
        if port == 0:
            why = "port 0 (would allow every port)"
            return self._note_unenforceable(
                "connect", format_host(name, port), why, when, "learned"
            )
        return self._add_host(name, port, when, "learned")

    def _add_host(self, name: str, port: int, when: float, source: Source) -> bool:
        covering = self._hosts.match(name, port)
        if covering is not None:
            covering.hit(when)
            return False
        entry = Entry(when, when, 1, source)
        new = (name, port)
        covered = [k for k in self._hosts.entries if k != new and host_covers(new, k)]
        if covered:
            entry = Entry.merged([entry, *(self._hosts.entries.pop(k) for k in covered)])
            entry.source, entry.origin = source, None
        self._hosts.entries[(name, port)] = entry
        self.revision += 1
        self._novel(when)
        return True

    def hosts_under(self, parent: str, port: int) -> list[str]:
        """The exact names one label under parent held on this port ("*.parent" collapse)."""
        return [
            n for n, p in self._hosts.entries if p == port and n.split(".", 1)[-1] == parent
            and not n.startswith("*.")
        ]  # fmt: skip

    def collapse_hosts(self, wildcard: str, port: int) -> bool:
        """Learning's collapse: the names one label under "*.parent" on port become that
        wildcard, one learned entry holding their hits and times (the caller checked, with the
        name rules, that the wildcard may be)."""
        parent = wildcard.removeprefix("*.")
        covered = [(n, port) for n in self.hosts_under(parent, port)]
        if not covered or (wildcard, port) in self._hosts.entries:
            return False
        merged = Entry.merged([self._hosts.entries.pop(k) for k in covered])
        merged.source, merged.origin = "learned", None
        self._hosts.entries[(wildcard, port)] = merged
        self.revision += 1
        return True

    def kernel_names(self) -> dict[str, list[int]]:
        """name (or "*.parent") -> its ports (0: any) for the kernel's dns_names."""
        out: dict[str, list[int]] = {}
        for name, port, _ in self.iter_host_entries():
            out.setdefault(name, []).append(port)
        return {n: [0] if 0 in ps else sorted(ps) for n, ps in out.items()}

    def host_entries(self) -> list[tuple[str, int, Entry]]:
        return list(self.iter_host_entries())

    def iter_host_entries(self) -> Iterator[tuple[str, int, Entry]]:
        """(name, port, entry) sorted by name and port; streamed from the blob at rest."""
        if self._frozen is not None:
            return map(_host_of, _blob_rows(self._frozen[0], "hosts"))
        hs = self._hosts.entries
        return ((n, p, hs[(n, p)]) for n, p in sorted(hs))

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
        self,
        dimension: str,
        key: str | NetKey,
        entry: Entry,
        *,
        prefix: bool = False,
        pattern: bool = False,
    ) -> None:
        """Puts one entry exactly as given: no normalisation, no collapse or aggregation, no
        covering check (an import is the reviewed policy and must come back out unchanged).
        The caller has validated key (document.py)."""
        for c in sorted(entry.callers or ()):
            self.caller_id(c)
        if dimension == "connect" and isinstance(key[0], str):
            self._hosts.entries[key] = entry  # type: ignore[index]
        elif dimension == "connect":
            assert isinstance(key, tuple)
            self._net.put(key, entry)  # type: ignore[arg-type]
        elif pattern:
            assert isinstance(key, str)
            self._paths[dimension].put_pattern(
                key, entry, learned=entry.declared_source == "learned"
            )
        else:
            assert isinstance(key, str)
            self._paths[dimension].put(key, entry, prefix=prefix)
        self.revision += 1

    def entry(
        self, dimension: str, key: str | NetKey | HostKey, *, prefix: bool = False
    ) -> Entry | None:
        """The entry stored under exactly this key (not a covering one), or None."""
        if dimension == "connect" and isinstance(key[0], str):
            return self._hosts.entries.get(key)  # type: ignore[arg-type]
        if dimension == "connect":
            return self._net.entries.get(key)  # type: ignore[call-overload]
        ps = self._paths[dimension]
        if isinstance(key, str) and key in ps.patterns and not prefix:
            return ps.patterns[key]
        return (ps.prefixes if prefix else ps.exact).get(key)  # type: ignore[call-overload]

    def keys(self) -> set[tuple[str, Any, bool]]:
        """Every entry's identity: (dimension, path or (network, port), is_prefix)."""
        out: set[tuple[str, Any, bool]] = set()
        for d in PATH_DIMENSIONS:
            ps = self._paths[d]
            out.update((d, p, False) for p in ps.exact)
            out.update((d, p, True) for p in ps.prefixes)
            out.update((d, p, "pattern") for p in ps.patterns)
        out.update(("connect", k, False) for k in self._net.entries)
        out.update(("connect", k, "host") for k in self._hosts.entries)
        return out

    def record_import(self, record: dict[str, Any]) -> None:
        self.imports.append(record)
        del self.imports[:-IMPORTS_MAX]

    def copy(self) -> Baseline:
        """An independent copy (through the store's encoding, so nothing is shared)."""
        return decode_payload(encode_payload(self), self.rules)

    # ---- queries --------------------------------------------------------------------------------

    def contains(
        self, dimension: str, obj: str | tuple[str, int] | NetKey, caller: str | None = None
    ) -> bool:
        """Would the kernel allow obj with this baseline loaded? (Exact, prefix or pattern for
        paths, after the /proc rewrite; port then port 0 and longest prefix for connect.)
        exec: for this caller ("": an unknown one); None asks about the program alone."""
        return self.lookup(dimension, obj, caller) is not None

    def lookup(
        self, dimension: str, obj: str | tuple[str, int] | NetKey, caller: str | None = None
    ) -> Entry | None:
        """The entry that covers obj (for caller, see contains), or None."""
        if dimension == "connect" and is_host_object(obj):
            try:
                name, port = parse_host(obj)  # type: ignore[arg-type]
            except ValueError:
                return None
            return self._hosts.match(name, port)
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
        ps = self._paths[dimension]
        if caller is None or dimension != "exec":
            return ps.match(path)
        return next((e for e in ps.candidates(path) if e.allows_caller(caller)), None)

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
        if prefix is not None:
            return prefix, True
        glob = ps.match_pattern(path)
        return None if glob is None else (glob, PATTERN)

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

    def kernel_patterns(self, dimension: str) -> list[str]:
        """The dimension's patterns, sorted (patterns.kernel_groups makes the kernel's form)."""
        return [g for g, _ in self.pattern_entries(dimension)]

    def pattern_entries(self, dimension: str) -> list[tuple[str, Entry]]:
        """(glob, entry), sorted by glob; read from the blob at rest (which stays at rest)."""
        if self._frozen is not None:
            rows = _blob_rows(self._frozen[0], PATTERN_TABLES[dimension])
            return [_pattern_of(r) for r in rows]
        ps = self._paths[dimension]
        return sorted(ps.patterns.items())

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
            "runs_seen": self.runs_seen,
            "revision": self.revision,
        }

    def _entry_counts(self) -> dict[str, Any]:
        """The summary's parts that depend on the entries (kept while at rest)."""
        if self._frozen is not None:
            return copy.deepcopy(self._frozen[1])
        counts = {d: len(self._paths[d]) for d in PATH_DIMENSIONS}
        counts["connect"] = len(self._net) + len(self._hosts)
        return {
            "hosts": len(self._hosts),
            "counts": counts,
            "prefixes": {d: len(self._paths[d].prefixes) for d in PATH_DIMENSIONS},
            "patterns": {d: len(self._paths[d].patterns) for d in PATH_DIMENSIONS},
            "unenforceable": len(self._unenforceable),
            "imported": sum(1 for e in self._entries() if e.source == "imported"),
        }

    def _entries(self) -> Iterator[Entry]:
        """Every entry, unsorted (cheap: for counts)."""
        for ps in self._paths.values():
            yield from ps.exact.values()
            yield from ps.prefixes.values()
            yield from ps.patterns.values()
        yield from self._net.entries.values()
        yield from self._hosts.entries.values()

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
            rows = [
                {"object": p, "kind": "prefix" if pre else "exact", **e.to_dict()}
                for p, pre, e in self.path_entries(d)
            ]
            rows += [
                {"object": g, "kind": "pattern", **e.to_dict()} for g, e in self.pattern_entries(d)
            ]
            out[d] = sorted(rows, key=lambda r: (r["object"], r["kind"]))
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
        out["connect"] += [
            {"object": format_host(n, p), "kind": "name", "host": n, "port": p, **e.to_dict()}
            for n, p, e in self.host_entries()
        ]
        out["unenforceable"] = [
            {"dimension": u.dimension, "object": u.object, "reason": u.reason, **u.entry.to_dict()}
            for u in self.unenforceable
        ]
        out["annotations"] = dict(sorted(self.annotations.items()))
        out["imports"] = [dict(r) for r in self.imports]
        return out
