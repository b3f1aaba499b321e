"""The admin socket under abuse, decided per connection as it is accepted.

- The caller is identified at accept: SO_PEERCRED names the process that connected, and where
  the kernel has SO_PEERPIDFD (6.5+) a pidfd pins that very process, so a pid that was reused
  by the time its cgroup is read is noticed (the caller exited: refused). A caller confined as
  an agent gets one 403 and the connection is closed: it holds no slot, and its refusals are
  logged at most once a second per agent (`corral.audit`).
- At most `max_connections` at once; the next get a 503 and are closed. Refused connections
  linger at most a second to let the answer through, and never more of them than
  max_connections (beyond, they are reset at once).
- `request_timeout`: a request's head must arrive within it (else the connection is closed),
  its body too (408, see requests.raw_body), and an answer the client does not read may block
  for at most that long (pipelined requests whose answers are never read held a slot forever).
- Errors of the accept loop are logged at most once a second with a count.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import structlog

from corral.contract import Forbidden
from corral.memory import release_memory

log = structlog.get_logger("corral.api")
audit = structlog.get_logger("corral.audit")

# a burst that went this high gives its memory back once the connections are gone
_RELEASE_AFTER = 64
_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}, kernel ABI
# include/uapi/asm-generic/socket.h (x86, arm64, riscv...); Linux 6.5+, else ENOPROTOOPT
SO_PEERPIDFD = 77
_REFUSED_LINGER = 1.0


def _answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    return (head + "\r\n").encode() + body


# classify(pid) -> the agent the process runs as, None if it is not confined; raises
# contract.Forbidden when that cannot be told
Classify = Callable[[int], "str | None"]


class ConnectionGuard:
    def __init__(self, limit: int, timeout: float, classify: Classify | None = None) -> None:
        self.limit = limit
        self.timeout = timeout
        self.classify = classify
        self.active = 0
        self.peak = 0
        self.refused = 0  # beyond max_connections
        self.refused_agents = 0
        self.timed_out = 0
        self._lingering: set[Any] = set()  # refused connections letting their answer through
        self._busy = _answer(
            503,
            "Service Unavailable",
            f"corrald is serving its limit of {limit} connections (max_connections): try again",
        )
        self._deadlines: dict[Any, asyncio.TimerHandle] = {}  # transport -> its deadline
        # transport -> the agent its caller runs as (None: not confined), decided at accept
        self.callers: dict[Any, str | None] = {}
        self._audit_at: dict[str, float] = {}
        self._audit_skipped: dict[str, int] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(inner(), self)

    # ---- deadlines ------------------------------------------------------------------------

    def request_started(self, transport: Any) -> None:
        """The request's head arrived (the middleware saw it): no deadline while it is served
        (the body has its own, in requests.raw_body); between requests on a kept-alive
        connection, aiohttp's keep-alive timeout (set to the same value) closes it."""
        self._disarm(transport)

    def _disarm(self, transport: Any) -> None:
        handle = self._deadlines.pop(transport, None)
        if handle is not None:
            handle.cancel()

    def arm(self, transport: Any) -> None:
        self._disarm(transport)
        if transport is not None and not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._deadlines[transport] = loop.call_later(self.timeout, self._expire, transport)

    def _expire(self, transport: Any) -> None:
        self._deadlines.pop(transport, None)
        if not transport.is_closing():
            self.timed_out += 1
            transport.abort()

    # ---- accept ---------------------------------------------------------------------------

    def opened(self, transport: Any) -> bool:
        if self.active >= self.limit:
            self.refused += 1
            self._refuse(transport, self._busy)
            return False
        refusal = self._identify(transport)
        if refusal is not None:
            self._refuse(transport, refusal)
            return False
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.arm(transport)
        return True

    def _refuse(self, transport: Any, answer: bytes) -> None:
        """The answer, then the end of our side; what the client sent is read and dropped
        until it closes or a second passes (closing on unread data resets the connection, and
        a unix socket's reset can reach the client before the answer does)."""
        if len(self._lingering) >= self.limit:
            transport.abort()
            return
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._lingering.add(transport)
        asyncio.get_running_loop().call_later(_REFUSED_LINGER, transport.close)

    def refused_closed(self, transport: Any) -> None:
        self._lingering.discard(transport)

    def _identify(self, transport: Any) -> bytes | None:
        """None to serve the connection, else the answer that refuses it."""
        sock = transport.get_extra_info("socket")
        if self.classify is None or sock is None or sock.family != socket.AF_UNIX:
            return None
        peer = peer_of(sock)
        if peer is None:
            return _answer(403, "Forbidden", "corrald cannot tell who is calling (SO_PEERCRED)")
        pid, uid, gid = peer
        pidfd = _peer_pidfd(sock)
        try:
            agent = self.classify(pid)
            if pidfd is not None and not _alive(pidfd):
                raise Forbidden(
                    f"the calling process {pid} exited before corrald could tell who it was"
                )
        except Forbidden as e:
            return _answer(403, "Forbidden", str(e))
        finally:
            if pidfd is not None:
                os.close(pidfd)
        self.callers[transport] = agent
        if agent is None:
            return None
        self.refused_agents += 1
        self._audit(agent, pid, uid, gid)
        return _answer(403, "Forbidden", confined_message(pid, agent))

    def _audit(self, agent: str, pid: int, uid: int, gid: int) -> None:
        now = time.monotonic()
        if now - self._audit_at.get(agent, -1e9) < 1.0:
            self._audit_skipped[agent] = self._audit_skipped.get(agent, 0) + 1
            return
        self._audit_at[agent] = now
        audit.warning(
            "admin API refused a confined agent",
            agent=agent,
            pid=pid,
            uid=uid,
            gid=gid,
            refusals_not_logged=self._audit_skipped.pop(agent, 0),
        )

    def closed(self, transport: Any) -> None:
        self._disarm(transport)
        self.callers.pop(transport, None)
        self.active -= 1
        if self.active == 0 and self.peak >= _RELEASE_AFTER:
            self.peak = 0
            release_memory()


def confined_message(pid: int, agent: str) -> str:
    return (
        f"corrald does not take requests from confined agents: process {pid} runs as agent "
        f"{agent!r}. Run corralctl from the node, outside every agent's cgroup"
    )


def peer_of(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process that connected to this unix socket."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def _peer_pidfd(sock: socket.socket) -> int | None:
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError:
        return None  # before Linux 6.5: the pid is read at accept, as early as it can be


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM and the like: it exists
    return True


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol behind the guard: it sees only the connections the guard admits."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.admitted = False
        self.transport: Any = None
        self._write_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.admitted = self.guard.opened(transport)
        if self.admitted:
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_write_deadline()
        if self.admitted:
            self.guard.closed(self.transport)
            self.inner.connection_lost(exc)
        else:
            self.guard.refused_closed(self.transport)

    def pause_writing(self) -> None:
        """The client does not read its answers: it has request_timeout to start again."""
        if self.admitted:
            loop = asyncio.get_running_loop()
            self._write_deadline = loop.call_later(self.guard.timeout, self._stalled)
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._cancel_write_deadline()
        if self.admitted:
            self.inner.resume_writing()

    def _cancel_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _stalled(self) -> None:
        self._write_deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.guard.timed_out += 1
            self.transport.abort()


class RateLimitedErrors:
    """The event loop's exception handler: one log line per second and kind, with a count of
    what was left out."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        kind = f"{message}|{type(exc).__name__ if exc else ''}"
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self.interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        log.error(message, error=str(exc) if exc else None, same_errors_not_logged=skipped)
