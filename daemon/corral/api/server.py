"""The admin API: HTTP/1.1 + JSON over a local unix socket, driven by `corralctl`.

The routes are in routes.py, request parsing in requests.py; this module assembles the app and
serves it on the socket. Bodies are limited to max_request_bytes, baseline documents to
max_import_bytes (413). Every error is `{"error": {"status": n, "message": "..."}}`. Access is
controlled by the socket's permissions (0600, or 0660 for a group); each request is logged with
the caller's uid/gid/pid from SO_PEERCRED.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from corral.contract import Forbidden, ServiceError, Services

from .guard import ConnectionGuard, confined_message
from .requests import STATE, ApiState, peer_credentials, services
from .routes import add_routes, error

log = structlog.get_logger("corral.api")
audit = structlog.get_logger("corral.audit")

DEFAULT_SOCKET = "/run/corral/corral.sock"
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiStartError(RuntimeError):
    """The API could not take its socket (another daemon, a non-socket file, a bad group)."""


# ---------------------------------------------------------------------------------------------
# the app


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    path = request.rel_url.raw_path
    if exc.status == 404:
        hint = ""
        if path.startswith("/v1/agents/"):
            hint = " (percent-encode '/' in agent names as %2F)"
        return f"no route for {request.method} {path}{hint}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} not allowed on {path}; allowed: {allowed}"
    if exc.status == 413:
        limit = request.app[STATE].max_body
        return f"request body too large: the limit is {limit} bytes"
    return exc.reason or "request failed"


def _refuse_agents(request: web.Request, pid: int, uid: int, gid: int) -> None:
    """The admin API serves the node's operators, never the agents it confines: a caller in an
    agent's cgroup (or below it) is refused whatever its uid, and the refusal is logged as an
    audit line. The socket's file mode and group are the first gate; this is the second.
    A socket served by start_api decides this at accept (guard.py: the caller is refused
    before it holds a slot); this per-request check serves an app run otherwise."""
    guard = request.app[STATE].guard
    if guard is not None and request.transport in guard.callers:
        return  # admitted at accept: not confined
    agent = services(request).agents.confined(pid)
    if agent is None:
        return
    audit.warning(
        "admin API refused a confined agent",
        agent=agent,
        pid=pid,
        uid=uid,
        gid=gid,
        method=request.method,
        path=request.rel_url.raw_path,
    )
    raise Forbidden(confined_message(pid, agent))


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for everything, one log line per request, never let a request kill us."""
    start = time.monotonic()
    peer = peer_credentials(request)
    try:
        guard = request.app[STATE].guard
        if guard is not None:
            guard.request_started(request.transport)
        if peer is not None:
            _refuse_agents(request, *peer)
        response = await handler(request)
    except web.HTTPException as exc:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = error(exc.status, _http_error_message(request, exc), headers)
    except ServiceError as exc:
        response = error(exc.status, str(exc) or type(exc).__name__)
    except Exception:
        log.exception("request failed", method=request.method, path=request.rel_url.raw_path)
        response = error(500, "internal error in corrald (see the daemon's log for details)")
    if response.status == 408:
        response.force_close()  # the rest of that body is never read: the connection goes
    pid, uid, gid = peer if peer else (None, None, None)
    quiet = request.path == "/metrics" and response.status < 400  # every scrape, every 15s
    (log.debug if quiet else log.info)(
        "request",
        method=request.method,
        path=request.rel_url.raw_path,
        query=request.rel_url.raw_query_string or None,
        status=response.status,
        duration_ms=round((time.monotonic() - start) * 1000, 3),
        uid=uid,
        gid=gid,
        pid=pid,
    )
    return response


def make_app(
    services: Services,
    *,
    max_body: int = 64 * 1024,
    max_import: int = 16 << 20,
    metrics: CollectorRegistry | None = None,
) -> web.Application:
    """metrics: what GET /metrics exposes (corrald passes node.metrics.registry); None serves
    an empty exposition."""
    limit = max(max_body, max_import)
    app = web.Application(middlewares=[_middleware], client_max_size=limit)
    app[STATE] = ApiState(services=services, max_body=max_body, max_import=max_import)
    if metrics is not None:
        app[STATE].metrics = metrics
    add_routes(app.router)
    return app


# ---------------------------------------------------------------------------------------------
# the socket


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ApiStartError(f"unknown group {group!r} for the API socket") from None


async def _claim_path(path: Path) -> None:
    """Remove a stale socket at path; refuse if a live daemon answers or it is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ApiStartError(f"{path} exists and is not a socket: remove it or choose another path")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        log.info("removed stale socket", socket=str(path))
        return
    except TimeoutError:
        raise ApiStartError(
            f"another corrald is running on {path} (it accepts connections but does not answer)"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise ApiStartError(
        f"another corrald is running on {path}: stop it first (systemctl stop corrald)"
    )


def _bind(path: Path, group: str | None) -> socket.socket:
    """Bind, set the permissions, then listen: nobody can connect before chmod."""
    gid = _group_id(group) if group is not None else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o660 if gid is not None else 0o600)
        if gid is not None:
            os.chown(path, -1, gid)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return sock


class ApiServer:
    """A running API; `await close()` ends event streams, stops serving and removes the socket."""

    def __init__(
        self,
        runner: web.AppRunner,
        server: asyncio.AbstractServer,
        state: ApiState,
        path: Path,
        inode: int,
    ) -> None:
        self._runner = runner
        self._server = server
        self._state = state
        self.path = path
        self._inode = inode

    @property
    def guard(self) -> ConnectionGuard | None:
        return self._state.guard

    async def close(self) -> None:
        self._state.stopping.set()
        self._server.close()  # no new connections
        await self._runner.cleanup()
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self._inode:
                self.path.unlink()
        log.info("api stopped", socket=str(self.path))


async def start_api(
    services: Services,
    socket_path: str | os.PathLike[str],
    *,
    group: str | None = None,
    max_body: int = 64 * 1024,
    metrics: CollectorRegistry | None = None,
    max_import: int = 16 << 20,
    max_connections: int = 256,
    request_timeout: float = 10.0,
) -> ApiServer:
    """Serves services on the unix socket at socket_path (see guard.py for max_connections and
    request_timeout)."""
    path = Path(socket_path)
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ApiStartError(f"socket path too long for AF_UNIX (max {_SUN_PATH_MAX}): {path}")
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o755)
        os.chmod(path.parent, 0o755)  # mkdir's mode is subject to the umask
    await _claim_path(path)
    app = make_app(services, max_body=max_body, max_import=max_import, metrics=metrics)
    state = app[STATE]
    state.request_timeout = request_timeout
    classify = services.agents.confined
    state.guard = guard = ConnectionGuard(max_connections, request_timeout, classify)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=5.0,
        keepalive_timeout=request_timeout,  # a kept-alive connection idles at most this long
        lingering_time=request_timeout,  # and the rest of an unread body is drained this long
    )
    await runner.setup()
    try:
        sock = _bind(path, group)
        loop = asyncio.get_running_loop()
        assert runner.server is not None
        server = await loop.create_unix_server(guard.factory(runner.server), sock=sock)
    except BaseException:
        await runner.cleanup()
        raise
    log.info(
        "api listening",
        socket=str(path),
        group=group,
        max_body=max_body,
        max_connections=max_connections,
        request_timeout=request_timeout,
    )
    return ApiServer(runner, server, state, path, path.lstat().st_ino)
