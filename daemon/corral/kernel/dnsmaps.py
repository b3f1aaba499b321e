"""The DNS program's maps (bpf/dns.bpf.c) as bytes: keys and values laid out by bpf/corral.h.

Names go in reversed ("api.openai.com" -> "moc.ianepo.ipa") so that the LPM trie's longest
prefix is the closest parent domain: an exact name is held with its NUL (only that name
matches), a wildcard "*.s3.amazonaws.com" as the prefix "moc.swanozama.3s." with the number of
labels a name must have (one label in place of the "*", never more).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from .layout import C, ffi

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
