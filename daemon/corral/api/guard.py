"""The admin socket under abuse: at most `max_connections` at once (the next ones get a 503 and
are closed at once), a deadline for a request's head and for its body (`request_timeout`: a
client that sends half a request is disconnected, it does not hold a file descriptor forever), and
errors of the accept loop logged at most once a second with a count (a flood of
"Too many open files" once filled gigabytes of log)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import structlog

from corral.memory import release_memory

log = structlog.get_logger("corral.api")

# a burst that went this high gives its memory back once the connections are gone
_RELEASE_AFTER = 64


def _busy_response(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": {
                "status": 503,
                "message": f"corrald is serving its limit of {limit} connections "
                "(max_connections): try again",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.active = 0
        self.peak = 0
        self.refused = 0
        self.timed_out = 0
        self._busy = _busy_response(limit)
        self._deadlines: dict[Any, asyncio.TimerHandle] = {}  # transport -> its deadline
        # transport -> the agent its caller runs as (None: not confined), from its first request
        self.callers: dict[Any, str | None] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(inner(), self)

    def request_started(self, transport: Any) -> None:
        """The request's head arrived (the middleware saw it): no deadline while it is served
        (the body has its own, in requests.raw_body); between requests on a kept-alive
        connection, aiohttp's keep-alive timeout (set to the same value) closes it."""
        handle = self._deadlines.pop(transport, None)
        if handle is not None:
            handle.cancel()

    def _arm(self, transport: Any) -> None:
        handle = self._deadlines.pop(transport, None)
        if handle is not None:
            handle.cancel()
        if transport is not None and not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._deadlines[transport] = loop.call_later(self.timeout, self._expire, transport)

    def _expire(self, transport: Any) -> None:
        self._deadlines.pop(transport, None)
        if not transport.is_closing():
            self.timed_out += 1
            transport.close()

    def opened(self, transport: Any) -> bool:
        if self.active >= self.limit:
            # the answer, then the end of our side; the client's request is read and dropped
            # until it closes (closing on unread data would reset the connection, and a unix
            # socket's reset can reach the client before the answer does)
            self.refused += 1
            transport.write(self._busy)
            if transport.can_write_eof():
                transport.write_eof()
            asyncio.get_running_loop().call_later(self.timeout, transport.close)
            return False
        self.active += 1
        self.peak = max(self.peak, self.active)
        self._arm(transport)
        return True

    def closed(self, transport: Any) -> None:
        self.callers.pop(transport, None)
        handle = self._deadlines.pop(transport, None)
        if handle is not None:
            handle.cancel()
        self.active -= 1
        if self.active == 0 and self.peak >= _RELEASE_AFTER:
            self.peak = 0
            release_memory()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol behind the guard: it sees only the connections the guard admits."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.admitted = False
        self.transport: Any = None

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
        if self.admitted:
            self.guard.closed(self.transport)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


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
