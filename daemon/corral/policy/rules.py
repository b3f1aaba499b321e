"""The pure learning rules of baselines (path and network normalisation, directory collapse,
network aggregation) and the records they work on: Entry, Unenforceable, BaselineRules.

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
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeAlias

IMPORTS_MAX = 20
DIMENSIONS: tuple[str, ...] = ("exec", "open", "connect")
PATH_DIMENSIONS: tuple[str, ...] = ("exec", "open")
SOURCES: tuple[str, ...] = ("learned", "accepted", "imported")
Source: TypeAlias = Literal["learned", "accepted", "imported"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
NetKey: TypeAlias = tuple[Network, int]
HostKey: TypeAlias = tuple[str, int]  # (name or "*.parent" wildcard, port)

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


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"(\*\.)?({_LABEL}\.)*{_LABEL}")
HOST_MAX = 253


def is_address(text: str) -> bool:
    """Is text an address or CIDR (else it may be a name)?"""
    try:
        ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        return False
    return True


def check_host(name: str) -> str:
    """A connect entry's name as the kernel holds it: lower case, no final dot, letters,
    digits, "-" and "_" in labels of 1-63, at most 253 bytes, and at most one wildcard, a whole
    first label ("*.s3.amazonaws.com"). The name rules proper (IDNA, registrable domains,
    which wildcards are too wide) are corral.names': callers apply them first."""
    n = name.strip().rstrip(".").lower()
    if (
        not n
        or len(n) > HOST_MAX
        or not _HOST.fullmatch(n)
        or n.count(".") < (2 if n.startswith("*.") else 0)
    ):
        raise ValueError(
            f"{name!r} is not a name the kernel can hold (labels of letters, digits, '-' "
            "and '_', at most 253 bytes; a wildcard only as a whole first label: *.example.com)"
        )
    return n


def parse_host(obj: str | tuple[str, int]) -> HostKey:
    """("api.openai.com", 443) or "api.openai.com:443" ("*" or 0: any port) -> (name, port)."""
    if isinstance(obj, tuple):
        name, port = obj
    else:
        name, sep, port_s = obj.strip().rpartition(":")
        if not sep or not name:
            raise ValueError(f"{obj!r} is not name:port")
        port = 0 if port_s == "*" else int(port_s)
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return check_host(name), int(port)


def is_host_object(obj: object) -> bool:
    """A connect object that names a host ("api.openai.com:443"), not an address."""
    if isinstance(obj, tuple):
        return isinstance(obj[0], str) and not is_address(obj[0])
    if not isinstance(obj, str):
        return False
    host = obj.strip().rpartition(":")[0]
    return bool(host) and not host.startswith("[") and not is_address(host)


def host_covers(entry: HostKey, key: HostKey) -> bool:
    """Does a name entry allow key? The same name, or a name one label under a "*.parent"
    wildcard (never two, never the parent itself); its port, or any port when it has 0."""
    (ename, eport), (name, port) = entry, key
    if eport not in (0, port):
        return False
    if ename.startswith("*."):
        return not name.startswith("*.") and name.split(".", 1)[-1] == ename[2:] and "." in name
    return name == ename


def format_host(name: str, port: int) -> str:
    return f"{name}:{'*' if port == 0 else port}"


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
    # exec lineage: the callers the program is allowed for; None = any caller (lineage.py)
    callers: set[str] | None = None

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
        if self.callers is not None:
            out["callers"] = sorted(self.callers)
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
        any_caller = any(e.callers is None for e in es)
        return cls(
            first_seen=min(e.first_seen for e in es),
            last_seen=max(e.last_seen for e in es),
            hits=sum(e.hits for e in es),
            source=next(iter(sources)) if agree else "learned",
            origin=next(iter(origins)) if agree and len(origins) == 1 else None,
            callers=None if any_caller else set().union(*(e.callers or () for e in es)),
        )

    def allows_caller(self, caller: str | None) -> bool:
        """Exec lineage: may this caller run it? (None or "": the caller is not known, and
        only an entry for any caller allows it.)"""
        return self.callers is None or (bool(caller) and caller in self.callers)


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
