"""Baseline review: what an agent did beyond its baseline (`corralctl diff`) and how an operator
picks what to accept (`corralctl accept`).

Deviations (agents.Deviation: one per dimension and object seen in ALERT as would-deny or in
ENFORCE as denied/killed, with count, first/last seen, last verdict and command) become diff
rows, in dimension order (exec, open, connect), sorted by object:

- exact rows: one deviation each;
- group rows (unless flat): GROUP_MIN or more deviations in the same directory ("/tmp/"),
  to the same address on different ports ("127.0.0.1:*"), or to the same port inside one
  /24 or /64 ("10.0.0.0/24:443"). A group is a way of showing, not a rule: accepting a group
  row by index accepts its members one by one (the baseline's own collapse rules then apply
  as in learning). To allow a whole directory or network, accept it by name (a selector).

Rows are numbered from 1. ``view`` is a short digest of the rows and their members: passing it
back with `accept --index` makes the accept refuse (409) if the rows changed in between.

Selectors name a baseline entry to add: an exact path, a directory prefix ("dir/"), a path
pattern ("/tmp/agent-*.json": patterns.py; a path holding * or ?), or "address:port" /
"cidr:port" / "address:*". ``widens`` says in words how much a prefix or pattern allows.
A selector is accepted only if it covers at least one pending deviation (accept is for what
the agent did; `baseline import --merge` adds anything else), and it clears every deviation it
covers.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.kernel.layout import TAMPER_EVENT

from . import patterns as pat
from .agents import Deviation
from .baseline import Baseline
from .rules import (
    PATH_DIMENSIONS,
    HostKey,
    NetKey,
    Network,
    format_host,
    format_net,
    host_covers,
    is_host_object,
    net_group,
    net_sort_key,
    normalise_path,
    parse_host,
    parse_net,
    path_fits,
)

GROUP_MIN = 5
DIM_ORDER = {"exec": 0, "open": 1, "connect": 2}
COMMS_MAX = 5


@dataclass
class Row:
    dimension: str
    object: str
    kind: str  # exact | group
    deviations: list[Deviation] = field(default_factory=list)
    sort_key: Any = None
    note: str = ""

    @property
    def members(self) -> list[str]:
        return [d.object for d in self.deviations]

    def to_dict(self, index: int) -> dict[str, Any]:
        ds = self.deviations
        return {
            "index": index,
            "dimension": self.dimension,
            "object": self.object,
            "kind": self.kind,
            "objects": len(ds),
            "members": self.members,
            "count": sum(d.count for d in ds),
            "first_seen": min(d.first_seen for d in ds),
            "last_seen": max(d.last_seen for d in ds),
            "verdicts": sorted({d.verdict for d in ds}),
            "comms": sorted({d.comm for d in ds if d.comm})[:COMMS_MAX],
            # exec lineage: the executables that ran it (accepting the row allows it for them)
            "callers": sorted({d.caller for d in ds if d.caller}),
            # the executables that did it (/proc/PID/exe), at most EXES_MAX
            "exes": sorted({e for d in ds for e in d.exes})[:COMMS_MAX],
            "note": self.note,
        }


# the tamper guard's reports (kernel/events.py): shown, never an entry of a baseline
TAMPER = TAMPER_EVENT
TAMPER_NOTE = (
    "tampering with corral or stepping outside its hooks: never learned, never accepted into a "
    "baseline; if this agent needs it, allow the kind: corralctl tamper NAME --allow KIND"
)


def pending(deviations: Iterable[Deviation], baseline: Baseline) -> list[Deviation]:
    """The deviations the baseline does not cover (an accept or import may have covered some)."""
    return [d for d in deviations if not _covered(baseline, d)]


def _covered(baseline: Baseline, d: Deviation) -> bool:
    try:
        return baseline.contains(d.dimension, d.object, d.caller or None)
    except ValueError:
        return False


def rows(deviations: Iterable[Deviation], *, flat: bool = False) -> list[Row]:
    by_dim: dict[str, list[Deviation]] = defaultdict(list)
    for d in deviations:
        by_dim[d.dimension].append(d)
    out: list[Row] = []
    for dim in sorted(by_dim, key=lambda x: (DIM_ORDER.get(x, 9), x)):
        devs = sorted(by_dim[dim], key=lambda d: d.object)
        if dim == TAMPER:
            made = [Row(dim, d.object, "exact", [d], (d.object,), TAMPER_NOTE) for d in devs]
        elif dim == "connect":
            made = _net_rows(devs, flat)
        else:
            made = _path_rows(dim, devs, flat)
        out += sorted(made, key=lambda r: r.sort_key)
    return out


def view(rs: Sequence[Row]) -> str:
    h = hashlib.sha256()
    for r in rs:
        callers = [d.caller for d in r.deviations]
        h.update("\t".join([r.dimension, r.object, r.kind, *r.members, *callers]).encode(
            errors="replace"))  # fmt: skip
        h.update(b"\n")
    return h.hexdigest()[:8]


def _exact_row(d: Deviation, sort_key: Any) -> Row:
    note = ""
    if d.dimension in PATH_DIMENSIONS and d.object == "":
        note = (
            "the kernel could not produce a path (unresolved: e.g. a deleted or anonymous "
            "file, or a name the hook could not read): cannot be allowed by path, fails closed "
            "in ENFORCE"
        )
    elif d.dimension in PATH_DIMENSIONS and not path_fits(d.object, prefix=False):
        note = "longer than the kernel's path limit: can never be allowed"
    elif d.dimension == "connect":
        note = encrypted_dns_note(d.object)
    return Row(d.dimension, d.object, "exact", [d], sort_key, note)


# Public resolvers that answer DNS over HTTPS on 443 (and over TLS on 853): answers corral
# cannot read, so names resolved through them are never learned as names
DOH_RESOLVERS = frozenset({
    "1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9", "149.112.112.112",
    "208.67.222.222", "208.67.220.220", "94.140.14.14", "94.140.15.15",
    "2606:4700:4700::1111", "2606:4700:4700::1001", "2001:4860:4860::8888",
    "2001:4860:4860::8844", "2620:fe::fe", "2620:fe::9",
})  # fmt: skip


def encrypted_dns_note(obj: str) -> str:
    """A note for a connect that looks like DNS over TLS (port 853) or over HTTPS (a public
    resolver's 443): its answers are encrypted, corral cannot learn names from them."""
    try:
        net, port = parse_net(obj)
    except ValueError:
        return ""
    address = str(net.network_address)
    if port == 853 or (port == 443 and address in DOH_RESOLVERS):
        kind = "TLS" if port == 853 else "HTTPS"
        return (
            f"DNS over {kind}: corral cannot read these answers, so names the agent resolves "
            "this way stay addresses (connect by name needs plain DNS to its resolver)"
        )
    return ""


def _path_rows(dim: str, devs: list[Deviation], flat: bool) -> list[Row]:
    if flat:
        return [_exact_row(d, (d.object,)) for d in devs]
    by_dir: dict[str, list[Deviation]] = defaultdict(list)
    for d in devs:
        cut = d.object.rfind("/")
        by_dir[d.object[: cut + 1] if cut >= 0 else ""].append(d)
    out: list[Row] = []
    for parent, ds in by_dir.items():
        if parent and len(ds) >= GROUP_MIN:
            out.append(Row(dim, parent, "group", ds, (parent,)))
        else:
            out += [_exact_row(d, (d.object,)) for d in ds]
    return out


def _net_rows(devs: list[Deviation], flat: bool) -> list[Row]:
    parsed: list[tuple[Deviation, NetKey]] = []
    out: list[Row] = []
    for d in devs:
        try:
            parsed.append((d, parse_net(d.object)))
        except ValueError:
            out.append(_exact_row(d, (9, 0, 0, 0, d.object)))
    if flat:
        return out + [_exact_row(d, (*net_sort_key(k), "")) for d, k in parsed]
    by_host: dict[Network, list[tuple[Deviation, NetKey]]] = defaultdict(list)
    for d, k in parsed:
        by_host[k[0]].append((d, k))
    rest: list[tuple[Deviation, NetKey]] = []
    for host, items in by_host.items():
        if len({k[1] for _, k in items}) >= GROUP_MIN:
            key = (*net_sort_key((host, 0)), "")
            out.append(Row("connect", format_net(host, 0), "group", [d for d, _ in items], key))
        else:
            rest += items
    by_net: dict[NetKey, list[tuple[Deviation, NetKey]]] = defaultdict(list)
    for d, (net, port) in rest:
        by_net[(net_group(net) or net, port)].append((d, (net, port)))
    for (group, port), items in by_net.items():
        if len(items) >= GROUP_MIN:
            key = (*net_sort_key((group, port)), "")
            out.append(Row("connect", format_net(group, port), "group", [d for d, _ in items], key))
        else:
            out += [_exact_row(d, (*net_sort_key(k), "")) for d, k in items]
    return out


# ---- selectors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """One baseline entry to add: a path (exact or "dir/" prefix) or a (network, port)."""

    dimension: str
    path: str = ""
    prefix: bool = False
    net: NetKey | None = None
    pattern: bool = False
    caller: str | None = None  # exec: allow for this caller only (None: any caller)
    host: HostKey | None = None  # connect by name: (name or "*.parent", port)

    @property
    def key(self) -> str | NetKey | HostKey:
        if self.host is not None:
            return self.host
        return self.net if self.net is not None else self.path

    @property
    def object(self) -> str:
        if self.host is not None:
            return format_host(*self.host)
        return format_net(*self.net) if self.net is not None else self.path

    @property
    def kind(self) -> str:
        if self.host is not None:
            return "wildcard" if self.host[0].startswith("*.") else "name"
        if self.net is not None:
            return "host" if self.net[0].prefixlen == self.net[0].max_prefixlen else "network"
        if self.pattern:
            return "pattern"
        return "prefix" if self.prefix else "exact"

    @property
    def widens(self) -> str:
        """How much the entry allows beyond what was seen, in words ("" for an exact one)."""
        anyone = (
            " (for any caller: give --caller to allow it only for the executable that ran it)"
            if self.dimension == "exec" and self.caller is None
            else ""
        )
        return self._widens() + anyone

    def _widens(self) -> str:
        if self.host is not None:
            name, port = self.host
            wide = (
                f"allows every name one label under {name[2:]} (a.{name[2:]}, not a.b.{name[2:]})"
                if name.startswith("*.")
                else ""
            )
            ports = f"every port of {name}" if port == 0 else ""
            return "; ".join(x for x in (wide, ports and f"allows {ports}") if x)
        if self.pattern:
            return pat.widening(self.path)
        if self.prefix:
            return (
                f"allows every path under {self.path} at any depth: all files and "
                "subdirectories there now and any created later (a pattern such as "
                f"{self.path}name-*.ext allows one shape of name instead)"
            )
        if self.net is not None and self.net[1] == 0:
            return f"allows every port of {format_net(self.net[0], 0)}"
        if self.net is not None and self.kind == "network":
            return f"allows {self.net[0].num_addresses} addresses"
        return ""

    def covers(self, d: Deviation) -> bool:
        if d.dimension != self.dimension:
            return False
        if self.host is not None:
            return _host_covers(self.host, d.object)
        if self.net is not None:
            try:
                net, port = parse_net(d.object)
            except ValueError:
                return False
            snet, sport = self.net
            same_family = net.version == snet.version
            return same_family and net.subnet_of(snet) and sport in (0, port)  # type: ignore[arg-type]
        path = normalise_path(d.object) if d.object.startswith("/") else d.object
        if self.caller is not None and d.caller != self.caller:
            return False
        if self.pattern:
            return pat.matches(self.path, path)
        return path.startswith(self.path) if self.prefix else path == self.path


def selector(dimension: str, obj: str, caller: str | None = None) -> Selector:
    """What an operator typed: a path ("dir/" = everything beneath, or a pattern) or
    address:port; caller: an exec's caller (exec lineage), None for any."""
    if caller is not None and dimension != "exec":
        raise ValueError("a caller goes with exec entries only")
    if caller is not None and (not caller.startswith("/") or "\0" in caller):
        raise ValueError(f"a caller is the absolute path of an executable, not {caller!r}")
    if dimension == "connect" and is_host_object(obj):
        return Selector("connect", host=parse_host(obj))
    if dimension == "connect":
        return Selector("connect", net=parse_net(obj))
    if dimension not in PATH_DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}: expected exec, open or connect")
    if not obj or "\0" in obj:
        raise ValueError("a path must be non-empty and contain no NUL byte")
    path = normalise_path(obj) if obj.startswith("/") else obj
    if pat.is_pattern(path) and not _proc_star_only(path):
        return Selector(dimension, path=pat.check_pattern(path), pattern=True, caller=caller)
    prefix = path.endswith("/")
    if prefix and not path.startswith("/"):
        raise ValueError(f"a directory prefix must be absolute, not {obj!r}")
    return Selector(dimension, path=path, prefix=prefix, caller=caller)


def _proc_star_only(path: str) -> bool:
    """The kernel's own /proc/*/ rewrite is a plain path, not a pattern."""
    return path.startswith("/proc/*/") and not pat.is_pattern(path[len("/proc/*/") :])


def exact(d: Deviation) -> Selector | None:
    """The deviation's own object as an exact entry; None when it cannot be one (an
    unparsable address, or port 0, which would allow every port)."""
    if d.dimension == TAMPER:
        return None
    if d.dimension != "connect":
        path = normalise_path(d.object) if d.object.startswith("/") else d.object
        return Selector(d.dimension, path=path, caller=d.caller or None)
    if is_host_object(d.object):
        try:
            name, port = parse_host(d.object)
        except ValueError:
            return None
        return Selector("connect", host=(name, port)) if port else None
    try:
        net, port = parse_net(d.object)
    except ValueError:
        return None
    return Selector("connect", net=(net, port)) if port else None


def _host_covers(host: HostKey, obj: str) -> bool:
    """Does the name entry cover a deviation's object ("name:port")?"""
    if not is_host_object(obj):
        return False
    try:
        return host_covers(host, parse_host(obj))
    except ValueError:
        return False
