"""The admin API: HTTP/1.1 + JSON over a local unix socket, driven by `corralctl`.

Routes (agent names contain "/": clients send the name percent-encoded as ONE path segment,
`urllib.parse.quote(name, safe="")`, e.g. /v1/agents/prod%2FDeployment%2Fchatbot%2Fagent):

    GET    /v1/status
    GET    /v1/agents
    GET    /v1/agents/{name}
    GET    /v1/agents/{name}/baseline          ?format=detail (default) | export; an export
                                               is YAML with `Accept: application/yaml`
    PUT    /v1/agents/{name}/baseline          body: a baseline document (YAML, or JSON with
                                               Content-Type application/json);
                                               ?strategy=merge|replace&keep_modes=1&dry_run=1
                                               &rename=1; creates the agent if it is unknown
    DELETE /v1/agents/{name}/baseline          forget the baseline and relearn
    GET    /v1/agents/{name}/diff              ?flat=1: deviations beyond the baseline, as rows
    PUT    /v1/agents/{name}/mode              {"mode": M} and/or {"exec"|"open"|"connect": M}
    POST   /v1/agents/{name}/accept            {} (everything) or {"entries": [{dimension,
                                               object}], "index": [n], "view": v, "flat": b}
    POST   /v1/agents/{name}/run               {"pid": N}: move pid (a child of the caller)
    GET    /v1/events?agent=NAME&limit=N&follow=1
    GET    /v1/openapi.json                     this API's OpenAPI 3 document (openapi.yaml)
    GET    /metrics                             Prometheus exposition (metrics.py)
    GET    /v1/aibom?format=json|cyclonedx     the node's AI-BOM (every agent)
    GET    /v1/agents/{name}/aibom?format=json|cyclonedx

Bodies are limited to max_request_bytes, baseline documents to max_import_bytes (413).
Every error is `{"error": {"status": n, "message": "..."}}`. Access is controlled by the
socket's permissions (0600, or 0660 for a group); each request is logged with the caller's
uid/gid/pid from SO_PEERCRED.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from corral.contract import BadRequest, Controller, ServiceError, validate_agent_name
from corral.kernel.layout import DIMS, MODES
from corral.policy import document

from . import metrics as metrics_mod

log = structlog.get_logger("corral.api")

DEFAULT_SOCKET = "/run/corral/corral.sock"
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
AIBOM_FORMATS = ("json", "cyclonedx")
# How often an idle event stream checks that its client is still there.
STREAM_POLL_SECONDS = 0.5
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}, kernel ABI
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiStartError(RuntimeError):
    """The API could not take its socket (another daemon, a non-socket file, a bad group)."""


@dataclass
class _State:
    controller: Controller
    max_body: int
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    max_import: int = 16 << 20
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


_STATE = web.AppKey("corral_state", _State)


# ---------------------------------------------------------------------------------------------
# errors and responses


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": message}}, status=status, headers=headers
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a path that is not UTF-8 (held as surrogate escapes): \udcXX escapes, which are
        # valid JSON, where raw surrogates could not be sent as UTF-8 at all
        return json.dumps(data)
    return text


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
        limit = request.app[_STATE].max_body
        return f"request body too large: the limit is {limit} bytes"
    return exc.reason or "request failed"


def _peer_credentials(request: web.Request) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of the unix socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def caller_pid(request: web.Request) -> int | None:
    peer = _peer_credentials(request)
    return peer[0] if peer else None


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for everything, one log line per request, never let a request kill us."""
    start = time.monotonic()
    peer = _peer_credentials(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = _error(exc.status, _http_error_message(request, exc), headers)
    except ServiceError as exc:
        response = _error(exc.status, str(exc) or type(exc).__name__)
    except Exception:
        log.exception("request failed", method=request.method, path=request.rel_url.raw_path)
        response = _error(500, "internal error in corrald (see the daemon's log for details)")
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


# ---------------------------------------------------------------------------------------------
# request parsing


def _controller(request: web.Request) -> Controller:
    return request.app[_STATE].controller


def _agent(request: web.Request) -> str:
    # aiohttp matches on the still-encoded path and decodes the segment (%2F -> "/").
    return validate_agent_name(request.match_info["name"])


class _TooLarge(ServiceError):
    status = 413

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(f"request body too large: the limit is {limit} bytes ({what})")


async def _raw_body(request: web.Request, limit: int, what: str = "max_request_bytes") -> bytes:
    """The body, refused with 413 beyond limit (declared or, for chunked bodies, read)."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge(limit, what)
    try:
        raw = await request.read()  # stops at client_max_size (the largest route limit)
    except web.HTTPRequestEntityTooLarge:
        raise _TooLarge(limit, what) from None
    if len(raw) > limit:
        raise _TooLarge(limit, what)
    return raw


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body; an empty body is {}."""
    raw = await _raw_body(request, request.app[_STATE].max_body)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(data).__name__}")
    return data


def _reject_unknown(body: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown field(s) in {what}: {', '.join(map(repr, unknown))}; "
            f"expected: {', '.join(sorted(allowed))}"
        )


def _check_mode(value: Any, key: str) -> str:
    if not isinstance(value, str) or value not in MODES:
        raise BadRequest(f"{key!r} must be one of {', '.join(MODES)}; got {value!r}")
    return value


def parse_modes(body: dict[str, Any]) -> dict[str, str]:
    """{"mode": M} sets every dimension; "exec"/"open"/"connect" override one each."""
    _reject_unknown(body, {"mode", *DIMS}, "mode request")
    modes: dict[str, str] = {}
    if "mode" in body:
        mode = _check_mode(body["mode"], "mode")
        modes = dict.fromkeys(DIMS, mode)
    for dim in DIMS:
        if dim in body:
            modes[dim] = _check_mode(body[dim], dim)
    if not modes:
        raise BadRequest(
            'give "mode" (every dimension) and/or a mode per dimension: '
            + ", ".join(f'"{d}"' for d in DIMS)
        )
    return modes


def _parse_entry(i: int, entry: Any) -> dict[str, str]:
    where = f"entries[{i}]"
    if not isinstance(entry, dict):
        raise BadRequest(f'{where} must be an object {{"dimension": ..., "object": ...}}')
    _reject_unknown(entry, {"dimension", "object"}, where)
    dim, obj = entry.get("dimension"), entry.get("object")
    if dim not in DIMS:
        raise BadRequest(f"{where}.dimension must be one of {', '.join(DIMS)}; got {dim!r}")
    if not isinstance(obj, str) or not obj:
        raise BadRequest(f"{where}.object must be a non-empty string")
    return {"dimension": dim, "object": obj}


def parse_accept(body: dict[str, Any]) -> list[dict[str, str]] | None:
    """None = accept every deviation (unless "index" is given); else the listed entries."""
    _reject_unknown(body, {"entries", "index", "view", "flat"}, "accept request")
    if "entries" not in body:
        return None
    entries = body["entries"]
    if not isinstance(entries, list) or not entries:
        raise BadRequest('"entries" must be a non-empty list; send {} to accept everything')
    return [_parse_entry(i, e) for i, e in enumerate(entries)]


def parse_accept_rows(body: dict[str, Any]) -> tuple[list[int] | None, str | None, bool]:
    """(index, view, flat): rows of `diff` to accept, numbered from 1."""
    index = body.get("index")
    if index is not None and (
        not isinstance(index, list)
        or not index
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in index)
    ):
        raise BadRequest('"index" must be a non-empty list of row numbers (1, 2, ...) from diff')
    view = body.get("view")
    if view is not None and (
        not isinstance(view, str) or not (view.isascii() and view.isalnum()) or len(view) > 64
    ):
        raise BadRequest('"view" must be the view string `diff` printed, e.g. "3fa2c1d0"')
    flat = body.get("flat", False)
    if not isinstance(flat, bool):
        raise BadRequest('"flat" must be true or false')
    if index is None and (view is not None or "flat" in body):
        raise BadRequest('"view" and "flat" only go with "index"')
    return index, view, flat


def _query(request: web.Request, allowed: set[str]) -> Any:
    query = request.rel_url.query
    unknown = sorted(set(query) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; expected: {expected}")
    return query


def _choice(raw: str | None, name: str, choices: tuple[str, ...]) -> str:
    """raw, one of choices; absent means the first."""
    value = choices[0] if raw is None else raw
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return value


def parse_pid(body: dict[str, Any]) -> int:
    _reject_unknown(body, {"pid"}, "run request")
    pid = body.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise BadRequest(f'"pid" must be a positive integer; got {pid!r}')
    return pid


def _parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be an integer; got {raw!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}; got {limit}")
    return limit


def _parse_flag(raw: str | None, name: str) -> bool:
    value = (raw or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name} must be 1 or 0; got {raw!r}")


# ---------------------------------------------------------------------------------------------
# handlers


async def _status(request: web.Request) -> web.Response:
    return _json(_controller(request).status())


async def _list_agents(request: web.Request) -> web.Response:
    return _json(_controller(request).list_agents())


async def _get_agent(request: web.Request) -> web.Response:
    return _json(_controller(request).get_agent(_agent(request)))


async def _get_baseline(request: web.Request) -> web.Response:
    query = _query(request, {"format"})
    name = _agent(request)
    if _choice(query.get("format"), "format", ("detail", "export")) == "detail":
        return _json(_controller(request).get_baseline(name))
    doc = _controller(request).export_baseline(name)
    if any(t in request.headers.get("Accept", "") for t in _YAML_TYPES):
        text = await asyncio.to_thread(document.dump_yaml, doc)
        return web.Response(text=text, content_type="application/yaml", charset="utf-8")
    text = await asyncio.to_thread(document.dump_json, doc)
    return web.Response(text=text, content_type="application/json", charset="utf-8")


async def _put_baseline(request: web.Request) -> web.Response:
    """Import a baseline document (merge or replace); creates the agent when unknown."""
    query = _query(request, {"strategy", "keep_modes", "dry_run", "rename"})
    name = _agent(request)
    strategy = _choice(query.get("strategy"), "strategy", document.STRATEGIES)
    keep_modes = _parse_flag(query.get("keep_modes"), "keep_modes")
    dry_run = _parse_flag(query.get("dry_run"), "dry_run")
    rename = _parse_flag(query.get("rename"), "rename")
    raw = await _raw_body(request, request.app[_STATE].max_import, "max_import_bytes")
    if not raw.strip():
        raise BadRequest(
            "empty body: send a baseline document (`corralctl baseline export NAME` shows one)"
        )
    fmt = "json" if request.content_type == "application/json" else "yaml"
    doc = await asyncio.to_thread(document.parse, raw, fmt)
    if doc.name != name and not rename:
        raise BadRequest(
            f"the document is the baseline of {doc.name!r} (metadata.name), not of {name!r}: "
            f"fix metadata.name, or import it as {name!r} with rename=1 (corralctl: --rename)"
        )
    result = await _controller(request).import_baseline(
        name,
        doc,
        strategy=strategy,
        keep_modes=keep_modes,
        dry_run=dry_run,  # type: ignore[arg-type]
    )
    return _json(result, status=201 if result.get("created") and not dry_run else 200)


async def _diff(request: web.Request) -> web.Response:
    query = _query(request, {"flat"})
    name = _agent(request)
    flat = _parse_flag(query.get("flat"), "flat")
    return _json(_controller(request).diff(name, flat))


async def _reset(request: web.Request) -> web.Response:
    return _json(await _controller(request).reset(_agent(request)))


async def _set_mode(request: web.Request) -> web.Response:
    name = _agent(request)
    modes = parse_modes(await _body(request))
    return _json(await _controller(request).set_mode(name, modes))


async def _accept(request: web.Request) -> web.Response:
    name = _agent(request)
    body = await _body(request)
    entries = parse_accept(body)
    index, view, flat = parse_accept_rows(body)
    controller = _controller(request)
    if index is None:
        return _json(await controller.accept(name, entries))
    return _json(await controller.accept(name, entries, index=index, view=view, flat=flat))


async def _run(request: web.Request) -> web.Response:
    name = _agent(request)
    pid = parse_pid(await _body(request))
    return _json(await _controller(request).run_agent(name, pid, caller_pid(request)))


async def _events(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    unknown = sorted(set(query) - {"agent", "limit", "follow"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}")
    agent = validate_agent_name(query["agent"]) if "agent" in query else None
    limit = _parse_limit(query.get("limit"))
    if _parse_flag(query.get("follow"), "follow"):
        return await _stream_events(request, agent, limit)
    return _json(_controller(request).recent_events(agent, limit or DEFAULT_LIMIT))


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 document of this API (daemon/corral/openapi.yaml, package data)."""
    text = resources.files("corral.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


async def _openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def _metrics(request: web.Request) -> web.Response:
    return metrics_mod.response(request.app[_STATE].metrics, request)


def _aibom_format(request: web.Request) -> str:
    query = request.rel_url.query
    unknown = sorted(set(query) - {"format"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; expected: format")
    fmt = query.get("format", "json")
    if fmt not in AIBOM_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(AIBOM_FORMATS)}; got {fmt[:40]!r}")
    return fmt


async def _aibom_node(request: web.Request) -> web.Response:
    fmt = _aibom_format(request)
    return _json(await _controller(request).aibom(None, fmt))


async def _aibom_agent(request: web.Request) -> web.Response:
    name = _agent(request)
    fmt = _aibom_format(request)
    return _json(await _controller(request).aibom(name, fmt))


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _live(
    request: web.Request, events: AsyncIterator[dict[str, Any]], pending: asyncio.Future[Any]
) -> AsyncIterator[dict[str, Any]]:
    """Events from the subscription until it ends, the client leaves or the daemon stops.
    pending: the subscription's first anext(), already started."""
    stopping = request.app[_STATE].stopping
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while not stopping.is_set():
            await asyncio.wait(
                {pending, stop}, timeout=STREAM_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if pending.done():
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                yield event
                pending = asyncio.ensure_future(anext(events))
            elif _client_gone(request):
                return
    finally:
        stop.cancel()
        await _cancel(pending)


async def _cancel(pending: asyncio.Future[Any]) -> None:
    """Cancel a pending anext() and let the generator run its cleanup."""
    if not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def _subscribe(
    controller: Controller, agent: str | None
) -> tuple[AsyncIterator[dict[str, Any]], asyncio.Future[Any]]:
    """Start the subscription; one that refuses (e.g. an unknown agent) does so at once, which
    still lets the error be a proper HTTP status instead of a line in the stream."""
    events = controller.subscribe(agent)
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    if first.done() and not first.cancelled():
        exc = first.exception()
        if exc is not None and not isinstance(exc, StopAsyncIteration):
            await _close(events)
            raise exc
    return events, first


async def _stream_events(
    request: web.Request, agent: str | None, limit: int | None
) -> web.StreamResponse:
    """NDJSON: the `limit` newest events first (only when limit is given), then live ones."""
    controller = _controller(request)
    events, first = await _subscribe(controller, agent)
    try:
        history = controller.recent_events(agent, limit) if limit else []
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
    except BaseException:
        await _cancel(first)
        await _close(events)
        raise
    try:
        for event in history:
            await response.write(_dumps(event).encode() + b"\n")
        async for event in _live(request, events, first):
            await response.write(_dumps(event).encode() + b"\n")
    except (ConnectionResetError, BrokenPipeError):
        pass  # the client went away
    except ServiceError as exc:
        await _stream_error(response, exc.status, str(exc))
    except Exception:
        log.exception("event stream failed", path=request.rel_url.raw_path)
        await _stream_error(response, 500, "internal error in corrald (see the daemon's log)")
    finally:
        await _close(events)
    return response


async def _stream_error(response: web.StreamResponse, status: int, message: str) -> None:
    """Headers are gone already: the error becomes the stream's last line."""
    line = _dumps({"error": {"status": status, "message": message}}).encode() + b"\n"
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await response.write(line)


def make_app(
    controller: Controller,
    *,
    max_body: int = 64 * 1024,
    max_import: int = 16 << 20,
    metrics: CollectorRegistry | None = None,
) -> web.Application:
    """metrics: what GET /metrics exposes (corrald passes node.metrics.registry); None serves
    an empty exposition."""
    limit = max(max_body, max_import)
    app = web.Application(middlewares=[_middleware], client_max_size=limit)
    app[_STATE] = _State(controller=controller, max_body=max_body, max_import=max_import)
    if metrics is not None:
        app[_STATE].metrics = metrics
    agent = "/v1/agents/{name}"
    app.router.add_get("/v1/status", _status, allow_head=False)
    app.router.add_get("/v1/agents", _list_agents, allow_head=False)
    app.router.add_get(agent, _get_agent, allow_head=False)
    app.router.add_get(f"{agent}/baseline", _get_baseline, allow_head=False)
    app.router.add_put(f"{agent}/baseline", _put_baseline)
    app.router.add_delete(f"{agent}/baseline", _reset)
    app.router.add_get(f"{agent}/diff", _diff, allow_head=False)
    app.router.add_put(f"{agent}/mode", _set_mode)
    app.router.add_post(f"{agent}/accept", _accept)
    app.router.add_post(f"{agent}/run", _run)
    app.router.add_get("/v1/events", _events, allow_head=False)
    app.router.add_get("/v1/openapi.json", _openapi, allow_head=False)
    app.router.add_get("/metrics", _metrics, allow_head=False)
    app.router.add_get("/v1/aibom", _aibom_node, allow_head=False)
    app.router.add_get(f"{agent}/aibom", _aibom_agent, allow_head=False)
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

    def __init__(self, runner: web.AppRunner, state: _State, path: Path, inode: int) -> None:
        self._runner = runner
        self._state = state
        self.path = path
        self._inode = inode

    async def close(self) -> None:
        self._state.stopping.set()
        await self._runner.cleanup()
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self._inode:
                self.path.unlink()
        log.info("api stopped", socket=str(self.path))


async def start_api(
    controller: Controller,
    socket_path: str | os.PathLike[str],
    *,
    group: str | None = None,
    max_body: int = 64 * 1024,
    metrics: CollectorRegistry | None = None,
    max_import: int = 16 << 20,
) -> ApiServer:
    path = Path(socket_path)
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ApiStartError(f"socket path too long for AF_UNIX (max {_SUN_PATH_MAX}): {path}")
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o755)
        os.chmod(path.parent, 0o755)  # mkdir's mode is subject to the umask
    await _claim_path(path)
    app = make_app(controller, max_body=max_body, max_import=max_import, metrics=metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        sock = _bind(path, group)
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("api listening", socket=str(path), group=group, max_body=max_body)
    return ApiServer(runner, app[_STATE], path, path.lstat().st_ino)
