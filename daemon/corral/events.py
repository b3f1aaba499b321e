"""Ring-buffer records (struct corral_event in bpf/corral.h) decoded into Python values."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import layout
from .layout import BACKENDS, DIMS, EVENT_FLAGS, MODES, VERDICTS


def boot_offset_ns() -> int:
    """Wall-clock minus CLOCK_BOOTTIME, to turn bpf_ktime_get_boot_ns() into a timestamp."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Event:
    ts_ns: int
    cgroup_id: int
    agent_id: int
    pid: int
    tid: int
    ppid: int
    uid: int
    comm: str
    dimension: str
    verdict: str
    mode: str
    backend: str
    flags: tuple[str, ...]
    err: int
    path: str | None = None
    family: str | None = None
    address: str | None = None
    port: int | None = None
    protocol: int | None = None

    @property
    def object(self) -> str:
        """The path, or address:port ([v6]:port) for connect."""
        if self.dimension != "connect":
            return self.path or ""
        if self.family == "inet6":
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["object"] = self.object
        return d


def _cstr(buf: Any) -> str:
    return layout.ffi().string(buf).decode("utf-8", "surrogateescape")


def decode(data: bytes, offset_ns: int | None = None) -> Event:
    """One ring-buffer record -> Event. Raises ValueError on a short record."""
    e = layout.from_bytes("struct corral_event", data)
    dim = DIMS[e.dim] if e.dim < len(DIMS) else f"dim{e.dim}"
    flags = tuple(name for bit, name in sorted(EVENT_FLAGS.items()) if e.flags & bit)
    offset = boot_offset_ns() if offset_ns is None else offset_ns
    common: dict[str, Any] = {
        "ts_ns": int(e.ts_ns) + offset,
        "cgroup_id": int(e.cgroup_id),
        "agent_id": int(e.agent),
        "pid": int(e.pid),
        "tid": int(e.tid),
        "ppid": int(e.ppid),
        "uid": int(e.uid),
        "comm": _cstr(e.comm),
        "dimension": dim,
        "verdict": VERDICTS[e.verdict] if e.verdict < len(VERDICTS) else str(e.verdict),
        "mode": MODES[e.mode] if e.mode < len(MODES) else str(e.mode),
        "backend": BACKENDS.get(int(e.backend), str(e.backend)),
        "flags": flags,
        "err": int(e.err),
    }
    if dim != "connect":
        return Event(**common, path=_cstr(e.path))
    raw = bytes(layout.ffi().buffer(e.addr))
    if e.family == socket.AF_INET:
        family, addr = "inet", str(ipaddress.IPv4Address(raw[:4]))
    else:
        family, addr = "inet6", str(ipaddress.IPv6Address(raw))
    return Event(**common, family=family, address=addr, port=int(e.port), protocol=int(e.proto))
