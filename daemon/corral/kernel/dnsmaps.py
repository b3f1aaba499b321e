"""The DNS program's maps (bpf/dns.bpf.c) as bytes: keys and values laid out by bpf/corral.h.

Names go in reversed ("api.openai.com" -> "moc.ianepo.ipa") so that the LPM trie's longest
prefix is the closest parent domain: an exact name is held with its NUL (only that name
matches), a wildcard "*.s3.amazonaws.com" as the prefix "moc.swanozama.3s." with the number of
labels a name must have (one label in place of the "*", never more).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from .layout import C, ffi

log = structlog.get_logger("corral.kernel")

WILDCARD = "*."


class DnsKeyError(ValueError):
    """A name or address the kernel's maps cannot hold; the message says why."""


def name_key(list_id: int, name: str) -> bytes:
    """The dns_names key of a normalised name, or of a "*.parent" wildcard."""
    wildcard = name.startswith(WILDCARD)
    text = (name[len(WILDCARD) - 1 :] if wildcard else name)[::-1]
    raw = text.encode("ascii") + (b"" if wildcard else b"\0")
    if len(raw) > C.CORRAL_DNS_NAME_MAX:
        raise DnsKeyError(
            f"{name!r}: longer than the kernel's {C.CORRAL_DNS_NAME_MAX - 1}-byte name buffer"
        )
    k = ffi().new("struct corral_dns_key *")
    k.prefixlen = 32 + 8 * len(raw)
    k.list = list_id
    ffi().memmove(k.name, raw, len(raw))
    return bytes(ffi().buffer(k))


def name_value(name: str, ports: Sequence[int]) -> bytes:
    """The dns_names value: the ports (any port: 0) and, for a wildcard, its label count."""
    if not 1 <= len(ports) <= C.CORRAL_DNS_PORTS:
        raise DnsKeyError(f"{name!r}: 1 to {C.CORRAL_DNS_PORTS} ports per name, not {len(ports)}")
    v = ffi().new("struct corral_dns_name_val *")
    for i in range(C.CORRAL_DNS_PORTS):
        v.port[i] = socket.htons(ports[min(i, len(ports) - 1)])
    v.labels = name.count(".") + 1 if name.startswith(WILDCARD) else 0
    return bytes(ffi().buffer(v))


def addr_key(list_id: int, address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    k = ffi().new("struct corral_dns_addr_key *")
    k.list = list_id
    k.family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    ffi().memmove(k.addr, ip.packed, len(ip.packed))
    return bytes(ffi().buffer(k))


def addr_value(raw: bytes) -> tuple[int, tuple[int, ...]]:
    """(expires_ns on the boot clock, ports) of a dns_addrs value."""
    v = ffi().from_buffer("struct corral_dns_addr_val *", bytearray(raw))
    return int(v.expires_ns), tuple(socket.ntohs(p) for p in v.port)


def settings_value(grace_ns: int) -> bytes:
    v = ffi().new("struct corral_dns_settings *")
    v.grace_ns = grace_ns
    return bytes(ffi().buffer(v))


class _Maps(Protocol):
    def map(self, name: str) -> Any: ...


def allow_names(kernel: _Maps, list_id: int, names: Mapping[str, Sequence[int]]) -> int:
    """Puts names (name or "*.parent" -> ports, 0 = any) into the list's dns_names. A name the
    kernel cannot hold (too long, more ports than it has room for) is left out and logged:
    its connects stay denied (fails closed)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    for name, ports in names.items():
        if len(ports) > C.CORRAL_DNS_PORTS:
            log.error(
                "a name has more ports than the kernel holds: the others stay denied",
                name=name,
                ports=list(ports),
                held=list(ports)[: C.CORRAL_DNS_PORTS],
            )
            ports = list(ports)[: C.CORRAL_DNS_PORTS]
        try:
            key, value = name_key(list_id, name), name_value(name, list(ports))
        except DnsKeyError as e:
            log.error("a name cannot go into the kernel: its connects stay denied", error=str(e))
            continue
        keys.append(key)
        values.append(value)
    if keys:
        kernel.map("dns_names").update_batch(keys, values)
    return len(keys)


def remove_names(kernel: _Maps, list_id: int, names: Sequence[str]) -> int:
    keys = []
    for name in names:
        try:
            keys.append(name_key(list_id, name))
        except DnsKeyError:
            continue
    return int(kernel.map("dns_names").delete_batch(keys))


def set_grace(kernel: _Maps, grace_s: float) -> None:
    kernel.map("dns_settings").update(b"\0\0\0\0", settings_value(int(grace_s * 1e9)))


def stats(kernel: _Maps) -> dict[str, int]:
    """The reader's counters summed over CPUs: answers, allowed, addresses, unparsed, foreign,
    reported, dropped."""
    out: dict[str, int] = {}
    m = kernel.map("dns_stats")
    names = ("answers", "allowed", "addresses", "unparsed", "foreign", "reported", "dropped")
    for i, n in enumerate(names):
        per_cpu = m.lookup_percpu(i.to_bytes(4, "little")) or []
        out[n] = sum(int.from_bytes(v[:8], "little") for v in per_cpu)
    return out


def allow_addresses(
    kernel: _Maps, list_id: int, held: Sequence[tuple[str, float]], ports: Sequence[int]
) -> int:
    """(address, seconds left) into the list's dns_addrs on these ports, as the reader would
    have put them had the name been allowed when the answer came."""
    if not held:
        return 0
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    keys, values = [], []
    for address, left in held:
        v = ffi().new("struct corral_dns_addr_val *")
        v.expires_ns = now + int(max(left, 0.0) * 1e9)
        ps = list(ports)[: C.CORRAL_DNS_PORTS] or [0]
        for i in range(C.CORRAL_DNS_PORTS):
            v.port[i] = socket.htons(ps[min(i, len(ps) - 1)])
        keys.append(addr_key(list_id, address))
        values.append(bytes(ffi().buffer(v)))
    kernel.map("dns_addrs").update_batch(keys, values)
    return len(keys)
