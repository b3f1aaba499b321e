"""The DNS names corrald knows: the host names of the endpoint rules, resolved now and then
(``resolve``, in a thread), and which addresses they resolved to (``HostNames``), so that an
endpoint seen by address can be named."""

from __future__ import annotations

import contextlib
import socket

from corral.policy.rules import normalise_network

ADDRESSES_MAX = 20000


class HostNames:
    """Which rule host names resolved to which addresses (the only DNS names corrald knows)."""

    def __init__(self) -> None:
        self.by_address: dict[str, dict[str, float]] = {}
        self.version = 0  # moves whenever of() may answer differently

    def record(self, host: str, addresses: set[str], when: float) -> None:
        for a in addresses:
            hosts = self.by_address.setdefault(a, {})
            if host not in hosts:
                self.version += 1
            hosts[host] = when
        if len(self.by_address) > ADDRESSES_MAX:
            oldest = sorted(self.by_address, key=lambda a: max(self.by_address[a].values()))
            for a in oldest[: len(self.by_address) - ADDRESSES_MAX]:
                del self.by_address[a]
            self.version += 1

    def of(self, address: str) -> list[str]:
        return sorted(self.by_address.get(address, {}))


def resolve(host: str) -> set[str]:
    """The addresses host resolves to (blocks: call it from a thread)."""
    out: set[str] = set()
    for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        with contextlib.suppress(ValueError):  # e.g. a scoped fe80::1%eth0
            out.add(str(normalise_network(str(info[4][0])).network_address))
    return out
