"""Ring-buffer records (struct corral_event in bpf/corral.h) decoded into Python values."""

from __future__ import annotations

import ipaddress
import socket
import time
from functools import cache
from typing import Any, NamedTuple

from . import layout
from .layout import BACKENDS, DIMS, EVENT_FLAGS, MODES, VERDICTS


def boot_offset_ns() -> int:
    """Wall-clock minus CLOCK_BOOTTIME, to turn bpf_ktime_get_boot_ns() into a timestamp."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Event(NamedTuple):
    """One decoded record. A named tuple: corrald builds one per event, and a tuple is built
    several times faster than a frozen dataclass."""

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
        """Every field plus "object"."""
        d = self._asdict()
        d["object"] = self.object
        return d


def _cstr(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")


def _names(values: tuple[str, ...], i: int) -> str:
    return values[i] if i < len(values) else str(i)


@cache
def _decoder() -> tuple[Any, dict[str, int], tuple[tuple[str, ...], ...], int]:
    """(unpacker, field index, flags tuple per flag byte, AF_INET), built once."""
    packer, names = layout.unpacker("struct corral_event")
    flags = tuple(
        tuple(name for bit, name in sorted(EVENT_FLAGS.items()) if value & bit)
        for value in range(256)
    )
    return packer, {n: i for i, n in enumerate(names)}, flags, socket.AF_INET


def decode(data: bytes, offset_ns: int | None = None) -> Event:
    """One ring-buffer record -> Event. Raises ValueError on a short record.

    One struct.unpack_from of the layout cffi derives from corral.h (layout.unpacker): no
    per-field cffi access, no copy of the record; this runs once per event in corrald."""
    packer, ix, flag_names, af_inet = _decoder()
    if len(data) < packer.size:
        raise ValueError(f"struct corral_event: need {packer.size} bytes, got {len(data)}")
    v = packer.unpack_from(data)
    d = v[ix["dim"]]
    dim = DIMS[d] if d < len(DIMS) else f"dim{d}"
    offset = boot_offset_ns() if offset_ns is None else offset_ns
    common = (
        v[ix["ts_ns"]] + offset,
        v[ix["cgroup_id"]],
        v[ix["agent"]],
        v[ix["pid"]],
        v[ix["tid"]],
        v[ix["ppid"]],
        v[ix["uid"]],
        _cstr(v[ix["comm"]]),
        dim,
        _names(VERDICTS, v[ix["verdict"]]),
        _names(MODES, v[ix["mode"]]),
        BACKENDS.get(v[ix["backend"]], str(v[ix["backend"]])),
        flag_names[v[ix["flags"]]],
        v[ix["err"]],
    )
    if dim != "connect":
        return Event(*common, _cstr(v[ix["path"]]))
    raw = v[ix["addr"]]
    if v[ix["family"]] == af_inet:
        family, addr = "inet", socket.inet_ntop(socket.AF_INET, raw[:4])
    else:
        family, addr = "inet6", str(ipaddress.IPv6Address(raw))
    return Event(*common, None, family, addr, v[ix["port"]], v[ix["proto"]])
