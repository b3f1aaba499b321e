"""Keys and values of corral's maps, built from the structs in bpf/corral.h (through layout):
the path keys of the exact hash maps and the LPM tries, the network keys, the allow value."""

from __future__ import annotations

import functools
import ipaddress
import socket

from . import layout
from .layout import C


def _stored(path: str | bytes, *, prefix: bool) -> bytes:
    """The bytes the kernel keeps for a path: an exact path with its NUL, a prefix "dir/"."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    if b"\0" in raw:
        raise ValueError("path contains a NUL byte")
    if prefix and not raw.endswith(b"/"):
        raw += b"/"
    stored = raw if prefix else raw + b"\0"
    if len(stored) > C.CORRAL_PATH_MAX:
        raise ValueError(
            f"path of {len(raw)} bytes does not fit the kernel buffer "
            f"({C.CORRAL_PATH_MAX - 1} bytes); such paths always fail closed under enforce"
        )
    return stored


def path_key(list_id: int, path: str | bytes, *, prefix: bool):
    """The LPM key of an exact path (its bytes and NUL) or a directory prefix ("dir/")."""
    stored = _stored(path, prefix=prefix)
    k = layout.new("struct corral_path_key")
    k.prefixlen = 8 * (4 + len(stored))
    k.list = list_id
    layout.ffi().memmove(k.path, stored, len(stored))
    return k


def exact_key(list_id: int, path: str | bytes):
    """The hash key of an exact path: the kernel's lookup key for it (full prefixlen, the path
    and its NUL, zero-padded), which the kernel compares whole."""
    k = path_key(list_id, path, prefix=False)
    k.prefixlen = 8 * (layout.sizeof("struct corral_path_key") - 4)
    return k


@functools.lru_cache(maxsize=1024)
def _exact_head(list_id: int) -> bytes:
    """exact_key's bytes before the path, per list (cut from a key cffi built)."""
    return layout.to_bytes(exact_key(list_id, b""))[
        : layout.offsetof("struct corral_path_key", "path")
    ]


def exact_key_bytes(list_id: int, path: str | bytes) -> bytes:
    """layout.to_bytes(exact_key(list_id, path)), without a cffi object per key (a whole
    baseline is pushed at start and after every swap)."""
    return (_exact_head(list_id) + _stored(path, prefix=False)).ljust(_path_key_size(), b"\0")


@functools.cache
def _path_key_size() -> int:
    return layout.sizeof("struct corral_path_key")


def net_key(list_id: int, network: str, port: int = 0):
    """The LPM key of an address or CIDR (IPv4 or IPv6) and a port (0 = any port)."""
    net = ipaddress.ip_network(network, strict=False)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    k = layout.new("struct corral_net_key")
    k.list = list_id
    k.family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    k.port = socket.htons(port)
    packed = net.network_address.packed
    layout.ffi().memmove(k.addr, packed, len(packed))
    k.prefixlen = 8 * 8 + net.prefixlen
    return k


def _allow_value() -> bytes:
    return layout.to_bytes(layout.new("struct corral_allow_val"))


def pattern_key(list_id: int, literal: str):
    """The LPM key of a pattern group: (list, the patterns' common literal prefix)."""
    raw = literal.encode("utf-8", "surrogateescape")
    k = layout.new("struct corral_path_key")
    k.prefixlen = 8 * (4 + len(raw))
    k.list = list_id
    layout.ffi().memmove(k.path, raw, len(raw))
    return k


def pattern_set_value(patterns: list[str]) -> bytes:
    """The value of one pattern group: each glob with where its literal prefix ends."""
    if len(patterns) > C.CORRAL_PATTERN_SET_MAX:
        raise ValueError(f"more than {C.CORRAL_PATTERN_SET_MAX} patterns in one kernel entry")
    v = layout.new("struct corral_pattern_set")
    v.count = len(patterns)
    for i, pat in enumerate(patterns):
        raw = pat.encode("utf-8", "surrogateescape")
        if len(raw) >= C.CORRAL_PATH_MAX:
            raise ValueError(f"pattern of {len(raw)} bytes does not fit the kernel buffer")
        start = next((j for j, b in enumerate(raw) if b in b"*?"), len(raw))
        v.pattern[i].start = start
        v.pattern[i].len = len(raw)
        layout.ffi().memmove(v.pattern[i].glob, raw, len(raw))
    return layout.to_bytes(v)
