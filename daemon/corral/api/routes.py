"""The admin API's routes: one handler per route, each calling one narrow service
(corral.contract.Services), and the route table.

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
    PUT    /v1/agents/{name}/promotion         {"min_runs": 5, "quiet_period": "30m", ...,
                                               "reset": b, "auto": b}: the operator's gates
    PUT    /v1/agents/{name}/tamper            {"allow": [KIND], "deny": [KIND]}: the tamper
                                               kinds the kernel's guard lets the agent use
    POST   /v1/agents/{name}/accept            {} (everything) or {"entries": [{dimension,
                                               object}], "index": [n], "view": v, "flat": b}
    POST   /v1/agents/{name}/run               {"pid": N}: move pid (a child of the caller)
    GET    /v1/events?agent=NAME&limit=N&follow=1
    GET    /v1/openapi.json                     this API's OpenAPI 3 document (openapi.yaml)
    GET    /metrics                             Prometheus exposition (metrics.py)
    GET    /v1/aibom?format=json|cyclonedx     the node's AI-BOM (every agent)
    GET    /v1/agents/{name}/aibom?format=json|cyclonedx
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import Any

import structlog
import yaml
from aiohttp import web

from corral.contract import BadRequest, EventService, ServiceError, validate_agent_name
from corral.policy import document

from . import metrics as metrics_mod
from .requests import (
    DEFAULT_LIMIT,
    YAML_TYPES,
    agent_name,
    aibom_format,
    caller_pid,
    choice,
    json_body,
    parse_accept,
    parse_accept_rows,
    parse_flag,
    parse_limit,
    parse_modes,
    parse_pid,
    parse_promotion,
    parse_tamper,
    query,
    raw_body,
    services,
    state,
)

log = structlog.get_logger("corral.api")

# How often an idle event stream checks that its client is still there.
STREAM_POLL_SECONDS = 0.5


# ---------------------------------------------------------------------------------------------
# responses


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
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


# ---------------------------------------------------------------------------------------------
# handlers


async def _status(request: web.Request) -> web.Response:
    return _json(services(request).status.status())


async def _list_agents(request: web.Request) -> web.Response:
    return _json(services(request).agents.list_agents())


async def _get_agent(request: web.Request) -> web.Response:
    return _json(services(request).agents.get_agent(agent_name(request)))


async def _get_baseline(request: web.Request) -> web.Response:
    params = query(request, {"format"})
    name = agent_name(request)
    baselines = services(request).baselines
    if choice(params.get("format"), "format", ("detail", "export")) == "detail":
        return _json(baselines.get_baseline(name))
    doc = baselines.export_baseline(name)
    if any(t in request.headers.get("Accept", "") for t in YAML_TYPES):
        text = await asyncio.to_thread(document.dump_yaml, doc)
        return web.Response(text=text, content_type="application/yaml", charset="utf-8")
    text = await asyncio.to_thread(document.dump_json, doc)
    return web.Response(text=text, content_type="application/json", charset="utf-8")


async def _put_baseline(request: web.Request) -> web.Response:
    """Import a baseline document (merge or replace); creates the agent when unknown."""
    params = query(request, {"strategy", "keep_modes", "dry_run", "rename"})
    name = agent_name(request)
    strategy = choice(params.get("strategy"), "strategy", document.STRATEGIES)
    keep_modes = parse_flag(params.get("keep_modes"), "keep_modes")
    dry_run = parse_flag(params.get("dry_run"), "dry_run")
    rename = parse_flag(params.get("rename"), "rename")
    raw = await raw_body(request, state(request).max_import, "max_import_bytes")
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
    result = await services(request).baselines.import_baseline(
        name,
        doc,
        strategy=strategy,
        keep_modes=keep_modes,
        dry_run=dry_run,  # type: ignore[arg-type]
    )
    return _json(result, status=201 if result.get("created") and not dry_run else 200)


async def _diff(request: web.Request) -> web.Response:
    params = query(request, {"flat"})
    name = agent_name(request)
    flat = parse_flag(params.get("flat"), "flat")
    return _json(services(request).baselines.diff(name, flat))


async def _reset(request: web.Request) -> web.Response:
    return _json(await services(request).agents.reset(agent_name(request)))


async def _set_mode(request: web.Request) -> web.Response:
    name = agent_name(request)
    modes = parse_modes(await json_body(request))
    return _json(await services(request).agents.set_mode(name, modes))


async def _set_promotion(request: web.Request) -> web.Response:
    name = agent_name(request)
    gates, reset, auto = parse_promotion(await json_body(request))
    agents = services(request).agents
    return _json(await agents.set_promotion(name, gates, reset=reset, auto=auto))


async def _set_tamper(request: web.Request) -> web.Response:
    name = agent_name(request)
    allow, deny = parse_tamper(await json_body(request))
    return _json(await services(request).agents.set_tamper(name, allow, deny))


async def _accept(request: web.Request) -> web.Response:
    name = agent_name(request)
    body = await json_body(request)
    entries = parse_accept(body)
    index, view, flat = parse_accept_rows(body)
    baselines = services(request).baselines
    if index is None:
        return _json(await baselines.accept(name, entries))
    return _json(await baselines.accept(name, entries, index=index, view=view, flat=flat))


async def _run(request: web.Request) -> web.Response:
    name = agent_name(request)
    pid = parse_pid(await json_body(request))
    return _json(await services(request).agents.run_agent(name, pid, caller_pid(request)))


async def _events(request: web.Request) -> web.StreamResponse:
    params = request.rel_url.query
    unknown = sorted(set(params) - {"agent", "limit", "follow"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}")
    agent = validate_agent_name(params["agent"]) if "agent" in params else None
    limit = parse_limit(params.get("limit"))
    if parse_flag(params.get("follow"), "follow"):
        return await _stream_events(request, agent, limit)
    return _json(services(request).events.recent_events(agent, limit or DEFAULT_LIMIT))


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 document of this API (daemon/corral/api/openapi.yaml, package data)."""
    text = resources.files("corral.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


async def _openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def _metrics(request: web.Request) -> web.Response:
    return metrics_mod.response(state(request).metrics, request)


async def _aibom_node(request: web.Request) -> web.Response:
    fmt = aibom_format(request)
    return _json(await services(request).aibom.aibom(None, fmt))


async def _aibom_agent(request: web.Request) -> web.Response:
    name = agent_name(request)
    fmt = aibom_format(request)
    return _json(await services(request).aibom.aibom(name, fmt))


# ---------------------------------------------------------------------------------------------
# events?follow=1: an NDJSON stream


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _live(
    request: web.Request, events: AsyncIterator[dict[str, Any]], pending: asyncio.Future[Any]
) -> AsyncIterator[dict[str, Any]]:
    """Events from the subscription until it ends, the client leaves or the daemon stops.
    pending: the subscription's first anext(), already started."""
    stopping = state(request).stopping
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
    feed: EventService, agent: str | None
) -> tuple[AsyncIterator[dict[str, Any]], asyncio.Future[Any]]:
    """Start the subscription; one that refuses (e.g. an unknown agent) does so at once, which
    still lets the error be a proper HTTP status instead of a line in the stream."""
    events = feed.subscribe(agent)
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
    feed = services(request).events
    events, first = await _subscribe(feed, agent)
    try:
        history = feed.recent_events(agent, limit) if limit else []
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


# ---------------------------------------------------------------------------------------------
# the route table


def add_routes(router: web.UrlDispatcher) -> None:
    agent = "/v1/agents/{name}"
    router.add_get("/v1/status", _status, allow_head=False)
    router.add_get("/v1/agents", _list_agents, allow_head=False)
    router.add_get(agent, _get_agent, allow_head=False)
    router.add_get(f"{agent}/baseline", _get_baseline, allow_head=False)
    router.add_put(f"{agent}/baseline", _put_baseline)
    router.add_delete(f"{agent}/baseline", _reset)
    router.add_get(f"{agent}/diff", _diff, allow_head=False)
    router.add_put(f"{agent}/mode", _set_mode)
    router.add_put(f"{agent}/promotion", _set_promotion)
    router.add_put(f"{agent}/tamper", _set_tamper)
    router.add_post(f"{agent}/accept", _accept)
    router.add_post(f"{agent}/run", _run)
    router.add_get("/v1/events", _events, allow_head=False)
    router.add_get("/v1/openapi.json", _openapi, allow_head=False)
    router.add_get("/metrics", _metrics, allow_head=False)
    router.add_get("/v1/aibom", _aibom_node, allow_head=False)
    router.add_get(f"{agent}/aibom", _aibom_agent, allow_head=False)
