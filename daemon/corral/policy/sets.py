"""The entry sets of a baseline, one per dimension, shaped like the kernel's LPM tries:
exact paths and directory prefixes with a child index for the collapse (_PathSet), (network,
port) entries with their prefix lengths and aggregation groups (_NetSet), and the sets of one
baseline together (_EntrySets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import patterns as pat
from .rules import (
    PATH_DIMENSIONS,
    BaselineRules,
    Entry,
    HostKey,
    NetKey,
    Network,
    Unenforceable,
    _truncate,
    collapse_allowed,
    net_group,
    parent_dirs,
)


@dataclass
class _PathSet:
    """Exact paths and directory prefixes of one dimension, with a child index for collapse."""

    exact: dict[str, Entry] = field(default_factory=dict)
    prefixes: dict[str, Entry] = field(default_factory=dict)
    # path patterns (patterns.py): learned from evidence, or accepted/imported globs
    patterns: dict[str, Entry] = field(default_factory=dict)
    # shape -> exact paths and learned patterns of that shape: where learning looks for the
    # evidence that makes a pattern (built on first use, like _children)
    _shapes: dict[tuple[object, ...], set[str]] | None = field(
        default=None, repr=False, compare=False
    )
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
        return len(self.exact) + len(self.prefixes) + len(self.patterns)

    def match(self, path: str) -> Entry | None:
        """Kernel semantics: the exact entry, else the longest prefix the path starts with,
        else a pattern that matches it."""
        e = self.exact.get(path)
        if e is not None:
            return e
        rule = self.match_prefix(path)
        if rule is not None:
            return self.prefixes[rule]
        glob = self.match_pattern(path)
        return None if glob is None else self.patterns[glob]

    def candidates(self, path: str) -> list[Entry]:
        """Every entry that covers path (exact, each prefix, each pattern): exec lineage keeps
        a program's entries per caller, and any of them may be the one for a caller."""
        out = [self.exact[path]] if path in self.exact else []
        out += [e for p, e in self.prefixes.items() if path.startswith(p)]
        out += [e for g, e in self.patterns.items() if pat.matches(g, path)]
        return out

    def match_pattern(self, path: str) -> str | None:
        """The first pattern (in sorted order) that matches path, if any."""
        for glob in sorted(self.patterns):
            if pat.matches(glob, path):
                return glob
        return None

    @property
    def shapes(self) -> dict[tuple[object, ...], set[str]]:
        if self._shapes is None:
            self._shapes = {}
            for key in (*self.exact, *self.patterns):
                self._shape_index(key, add=True)
        return self._shapes

    def _shape_index(self, key: str, *, add: bool) -> None:
        if self._shapes is None:
            return
        sh = pat.shape(key)
        if sh is None:
            return
        if add:
            self._shapes.setdefault(sh, set()).add(key)
            return
        bucket = self._shapes.get(sh)
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del self._shapes[sh]

    def put_pattern(self, glob: str, entry: Entry, *, learned: bool) -> None:
        """Stores a pattern; a learned one joins the shape index (it can widen further)."""
        self.patterns[glob] = entry
        if learned:
            self._shape_index(glob, add=True)

    def pop_pattern(self, glob: str) -> Entry:
        self._shape_index(glob, add=False)
        return self.patterns.pop(glob)

    def pop_exact(self, path: str) -> Entry:
        self._shape_index(path, add=False)
        self._index(path, -1)
        return self.exact.pop(path)

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
        if not prefix:
            self._shape_index(key, add=True)

    def pop_beneath(self, directory: str) -> list[Entry]:
        """Removes every entry strictly beneath directory (a prefix equal to it included)."""
        out: list[Entry] = []
        for table in (self.exact, self.prefixes):
            for key in [k for k in table if k.startswith(directory)]:
                out.append(table.pop(key))
                self._index(key, -1)
                self._shape_index(key, add=False)
        for glob in [g for g in self.patterns if g.startswith(directory)]:
            out.append(self.pop_pattern(glob))
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


@dataclass
class _HostSet:
    """Connect entries by name: (name, port) -> entry; port 0 = any port. A name is exact
    ("api.openai.com") or a wildcard ("*.s3.amazonaws.com": one label in place of the "*"),
    as the kernel's dns_names holds them."""

    entries: dict[HostKey, Entry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def match_key(self, name: str, port: int) -> HostKey | None:
        """The name, then its one-label wildcard; each on the port, then on any port."""
        wildcard = "*." + name.split(".", 1)[1] if "." in name else None
        for n in (name, wildcard):
            if n is None:
                continue
            for p in (port, 0) if port else (0,):
                if (n, p) in self.entries:
                    return (n, p)
        return None

    def match(self, name: str, port: int) -> Entry | None:
        key = self.match_key(name, port)
        return None if key is None else self.entries[key]

    def ports(self) -> dict[str, list[int]]:
        """name -> its ports, sorted (0: any port, and then the only one that matters)."""
        out: dict[str, list[int]] = {}
        for name, port in sorted(self.entries):
            out.setdefault(name, []).append(port)
        return {n: [0] if 0 in ps else ps for n, ps in out.items()}


@dataclass
class _EntrySets:
    paths: dict[str, _PathSet] = field(
        default_factory=lambda: {d: _PathSet() for d in PATH_DIMENSIONS}
    )
    net: _NetSet = field(default_factory=_NetSet)
    hosts: _HostSet = field(default_factory=_HostSet)
    unenforceable: dict[tuple[str, str], Unenforceable] = field(default_factory=dict)
