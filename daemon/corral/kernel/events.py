"""Ring-buffer records (struct corral_event in bpf/corral.h) decoded into Python values. An
exec judged by the LSM or fmod_ret backend is a struct corral_exec_event: the event, then the
caller's path (exec lineage). A DNS answer to an agent's socket is a struct corral_dns_event:
the event (dimension "dns", the resolver's address and port), then the message as received
(parsed above the kernel layer, by corral.names.answers)."""

from __future__ import annotations

import ipaddress
import socket
import time
from functools import cache
from typing import Any, NamedTuple

from . import layout as layout_mod
from .layout import (
    BACKENDS,
    DIMS,
    DNS_EVENT,
    DNS_EVENT_FLAGS,
    EVENT_FLAGS,
    MODES,
    TAMPER_EVENT,
    TAMPER_KINDS,
    VERDICTS,
)


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
    # exec: the executable that called execve (a script, for its interpreter); "" when the
    # backend cannot know it (the fallback), None for other dimensions
    caller: str | None = None
    # the same object, list, executable and verdict suppressed since its last report
    repeats: int = 0
    exe_id: int = 0  # the executable's inode ^ device << 32 (0: not known)
    exe_name: str = ""  # the executable's file name, from the kernel ("" in cgroup programs)
    # dimension "tamper" (the tamper guard): its kind (bpf, mount, ptrace, ...); path holds
    # what the kernel said of the attempt
    tamper: str | None = None
    # dimension "dns": the answer as received (struct corral_dns_event.msg), flags say whether
    # the kernel took it ("taken"), whether it came from elsewhere than a resolver the agent
    # may reach ("foreign") and whether it was cut ("cut")
    message: bytes | None = None
    # connect: the name the agent's own DNS answer gave this address (corrald fills it in)
    host: str | None = None

    @property
    def object(self) -> str:
        """The path, or address:port ([v6]:port) for connect (dns: the resolver's)."""
        if self.dimension not in ("connect", DNS_EVENT):
            return self.path or ""
        if self.family == "inet6":
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        """Every field plus "object" (the message of a DNS record as hex)."""
        d = self._asdict()
        d["object"] = self.object
        if self.message is not None:
            d["message"] = self.message.hex()
        return d


def cstr(raw: bytes) -> str:
    """A NUL-padded C string from the kernel as text (undecodable bytes kept)."""
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")


class Layout(NamedTuple):
    """struct corral_event as the consumer reads it: one unpack, then fields by index."""

    unpack: Any  # struct.Struct.unpack_from of the record
    size: int
    index: dict[str, int]
    hot_unpack: Any  # only HOT_FIELDS, in this order (what corrald's consumer reads each time)
    dims: tuple[str, ...]  # by the dim byte (every value 0-255 has a name)
    verdicts: tuple[str, ...]
    modes: tuple[str, ...]
    flags: tuple[tuple[str, ...], ...]


def _byte_names(known: tuple[str, ...], unknown: str) -> tuple[str, ...]:
    return tuple(known[i] if i < len(known) else f"{unknown}{i}" for i in range(256))


# the fields corrald's consumer reads from every record, in the header's order
HOT_FIELDS = (
    "ts_ns", "cgroup_id", "agent", "pid", "dim", "verdict", "repeats", "comm", "exe_name", "path"
)  # fmt: skip


@cache
def layout() -> Layout:
    """Built once from the header (layout.unpacker): the decoders below and corrald's
    consumer share it."""
    packer, names = layout_mod.unpacker("struct corral_event")
    flags = tuple(
        tuple(name for bit, name in sorted(EVENT_FLAGS.items()) if value & bit)
        for value in range(256)
    )
    hot, hot_names = layout_mod.unpacker("struct corral_event", HOT_FIELDS)
    assert hot_names == HOT_FIELDS, hot_names
    return Layout(
        packer.unpack_from,
        packer.size,
        {n: i for i, n in enumerate(names)},
        hot.unpack_from,
        _byte_names((*DIMS, TAMPER_EVENT, DNS_EVENT), "dim"),
        _byte_names(VERDICTS, ""),
        _byte_names(MODES, ""),
        flags,
    )


@cache
def _exec_size() -> int:
    return layout_mod.sizeof("struct corral_exec_event")


@cache
def _dns_layout() -> tuple[int, int, int]:
    """(offset of len, offset of flags, offset of msg) in struct corral_dns_event."""
    f = layout_mod.ffi()
    return (
        f.offsetof("struct corral_dns_event", "len"),
        f.offsetof("struct corral_dns_event", "flags"),
        f.offsetof("struct corral_dns_event", "msg"),
    )


def dns_message(record: bytes) -> tuple[bytes, tuple[str, ...]]:
    """A DNS record's message (its len bytes) and flags; (b"", ()) for a short record."""
    at_len, at_flags, at_msg = _dns_layout()
    if len(record) < at_msg:
        return b"", ()
    n = int.from_bytes(record[at_len : at_len + 2], "little")
    bits = int.from_bytes(record[at_flags : at_flags + 2], "little")
    flags = tuple(name for bit, name in sorted(DNS_EVENT_FLAGS.items()) if bits & bit)
    return record[at_msg : at_msg + n], flags


def caller_of(record: bytes) -> str:
    """The caller of an exec record ("" when the record has none: the fallback backend)."""
    size = layout().size
    if len(record) < _exec_size():
        return ""
    return cstr(record[size : size + (_exec_size() - size)])


def decode(data: bytes, offset_ns: int | None = None) -> Event:
    """One ring-buffer record -> Event. Raises ValueError on a short record.

    One struct.unpack_from of the layout cffi derives from corral.h (layout.unpacker): no
    per-field cffi access, no copy of the record."""
    lay = layout()
    if len(data) < lay.size:
        raise ValueError(f"struct corral_event: need {lay.size} bytes, got {len(data)}")
    ev = from_fields(lay.unpack(data), boot_offset_ns() if offset_ns is None else offset_ns)
    if ev.dimension == DNS_EVENT:
        msg, flags = dns_message(data)
        return ev._replace(message=msg, flags=flags)
    return ev._replace(caller=caller_of(data)) if ev.dimension == "exec" else ev


def from_fields(
    v: tuple[Any, ...],
    offset_ns: int,
    path: str | None = None,
    comm: str | None = None,
    caller: str | None = None,
) -> Event:
    """The Event of an unpacked record (layout().unpack); path and comm when the caller has
    already decoded them; caller: an exec's (caller_of(record))."""
    lay = layout()
    ix = lay.index
    dim = lay.dims[v[ix["dim"]]]
    common = (
        v[ix["ts_ns"]] + offset_ns,
        v[ix["cgroup_id"]],
        v[ix["agent"]],
        v[ix["pid"]],
        v[ix["tid"]],
        v[ix["ppid"]],
        v[ix["uid"]],
        cstr(v[ix["comm"]]) if comm is None else comm,
        dim,
        lay.verdicts[v[ix["verdict"]]],
        lay.modes[v[ix["mode"]]],
        BACKENDS.get(v[ix["backend"]], str(v[ix["backend"]])),
        lay.flags[v[ix["flags"]]],
        v[ix["err"]],
    )
    more = {
        "repeats": v[ix["repeats"]],
        "exe_id": v[ix["exe"]],
        "exe_name": cstr(v[ix["exe_name"]]),
    }
    if dim == TAMPER_EVENT:
        k = v[ix["tamper"]]
        kind = TAMPER_KINDS[k - 1] if 0 < k <= len(TAMPER_KINDS) else f"kind{k}"
        p = cstr(v[ix["path"]]) if path is None else path
        return Event(*common, p, tamper=kind, **more)
    if dim not in ("connect", DNS_EVENT):
        p = cstr(v[ix["path"]]) if path is None else path
        return Event(*common, p, caller=(caller or "") if dim == "exec" else None, **more)
    raw = v[ix["addr"]]
    if v[ix["family"]] == socket.AF_INET:
        family, addr = "inet", socket.inet_ntop(socket.AF_INET, raw[:4])
    else:
        family, addr = "inet6", str(ipaddress.IPv6Address(raw))
    return Event(*common, None, family, addr, v[ix["port"]], v[ix["proto"]], **more)
