"""The DNS names corrald knows: the host names of the endpoint rules, resolved now and then
(``resolve``, in a thread), and which addresses they resolved to (``HostNames``), so that an
endpoint seen by address can be named."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from corral.policy.rules import normalise_network

ADDRESSES_MAX = 20000
RESOLVERS_MAX = 2  # lookups in flight at once; a hung resolver does not pile up threads


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


class Resolver:
    """getaddrinfo in daemon threads: a lookup the resolver never answers (no DNS on the node)
    neither blocks the event loop nor holds up corrald's exit, as a ThreadPoolExecutor's
    worker would (Python joins those at exit, for up to the resolver's own timeout)."""

    def __init__(self) -> None:
        self._slots = threading.BoundedSemaphore(RESOLVERS_MAX)

    def resolve(self, host: str) -> asyncio.Future[set[str]]:
        """A future of host's addresses; OSError at once when RESOLVERS_MAX are in flight."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[set[str]] = loop.create_future()
        if not self._slots.acquire(blocking=False):
            fut.set_exception(OSError(f"{RESOLVERS_MAX} DNS lookups still unanswered"))
            return fut
        threading.Thread(
            target=self._run, args=(loop, fut, host), name="corral-dns", daemon=True
        ).start()
        return fut

    def _run(
        self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[set[str]], host: str
    ) -> None:
        try:
            try:
                result: set[str] | BaseException = resolve(host)
            except Exception as e:  # handed to the awaiting coroutine
                result = e
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, fut, result)
        finally:
            self._slots.release()


def _settle(fut: asyncio.Future[set[str]], result: set[str] | BaseException) -> None:
    if fut.done():  # cancelled: the caller stopped waiting
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
