"""Reading an admin API request: the app's state, the caller's credentials, the agent name in
the path, bodies (with their size limits) and query parameters, validated. Every refusal is a
BadRequest (400) or a 413 whose message tells the caller what to send instead."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from corral.config import GATES, MODES, gate_from_json
from corral.contract import BadRequest, ServiceError, Services, validate_agent_name
from corral.policy.document import DIMS, TAMPER_KINDS

from .guard import ConnectionGuard, peer_of

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
AIBOM_FORMATS = ("json", "cyclonedx")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass
class ApiState:
    services: Services
    max_body: int
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    max_import: int = 16 << 20
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    guard: ConnectionGuard | None = None  # set by start_api (not for an app served otherwise)
    request_timeout: float = 10.0  # for a request's body


STATE = web.AppKey("corral_state", ApiState)


def state(request: web.Request) -> ApiState:
    return request.app[STATE]


def services(request: web.Request) -> Services:
    return request.app[STATE].services


def peer_credentials(request: web.Request) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of the unix socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    return peer_of(sock)


def caller_pid(request: web.Request) -> int | None:
    peer = peer_credentials(request)
    return peer[0] if peer else None


def agent_name(request: web.Request) -> str:
    # aiohttp matches on the still-encoded path and decodes the segment (%2F -> "/").
    return validate_agent_name(request.match_info["name"])


class RequestTimeout(ServiceError):
    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within {seconds:g}s (request_timeout): "
            "send the whole body, as long as Content-Length says"
        )


class TooLarge(ServiceError):
    status = 413

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(f"request body too large: the limit is {limit} bytes ({what})")


async def raw_body(request: web.Request, limit: int, what: str = "max_request_bytes") -> bytes:
    """The body, refused with 413 beyond limit (declared or, for chunked bodies, read)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit, what)
    try:
        async with asyncio.timeout(state(request).request_timeout):
            raw = await request.read()  # stops at client_max_size (the largest route limit)
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(limit, what) from None
    except TimeoutError:
        raise RequestTimeout(state(request).request_timeout) from None
    if len(raw) > limit:
        raise TooLarge(limit, what)
    return raw


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body; an empty body is {}."""
    raw = await raw_body(request, state(request).max_body)
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


def parse_promotion(
    body: dict[str, Any],
) -> tuple[dict[str, float | int | None], bool, bool | None]:
    """(gates, reset, auto) of a promotion request: {"min_runs": 5, "quiet_period": "30m",
    "alert_period": null, "reset": true, "auto": true}; null forgets a gate."""
    _reject_unknown(body, {*GATES, "reset", "auto"}, "promotion request")
    if not body:
        raise BadRequest(
            "give at least one of " + ", ".join(f'"{g}"' for g in (*GATES, "reset", "auto"))
        )
    gates: dict[str, float | int | None] = {}
    for g in GATES:
        if g in body:
            try:
                gates[g] = None if body[g] is None else gate_from_json(g, body[g])
            except ValueError as e:
                raise BadRequest(f"{g!r}: {e} (null forgets it)") from None
    reset, auto = body.get("reset", False), body.get("auto")
    if not isinstance(reset, bool):
        raise BadRequest(f'"reset" must be true or false; got {reset!r}')
    if auto is not None and not isinstance(auto, bool):
        raise BadRequest(f'"auto" must be true or false; got {auto!r}')
    return gates, reset, auto


def parse_tamper(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(allow, deny) of a tamper request: {"allow": ["mount"], "deny": ["bpf"]}, either may be
    absent; deny takes a kind back."""
    _reject_unknown(body, {"allow", "deny"}, "tamper request")
    if not body:
        raise BadRequest('give "allow" and/or "deny": lists of tamper kinds')
    out: dict[str, list[str]] = {}
    for key in ("allow", "deny"):
        kinds = body.get(key, [])
        if not isinstance(kinds, list):
            raise BadRequest(f'"{key}" must be a list of tamper kinds; got {kinds!r}')
        unknown = [k for k in kinds if not isinstance(k, str) or k not in TAMPER_KINDS]
        if unknown:
            raise BadRequest(
                f'"{key}": unknown tamper kind(s) {", ".join(map(repr, unknown))}; the kinds '
                f"are {', '.join(TAMPER_KINDS)}"
            )
        out[key] = kinds
    both = sorted(set(out["allow"]) & set(out["deny"]))
    if both:
        raise BadRequest(f'{", ".join(both)} both in "allow" and "deny": give each kind once')
    return out["allow"], out["deny"]


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


def parse_pid(body: dict[str, Any]) -> int:
    _reject_unknown(body, {"pid"}, "run request")
    pid = body.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise BadRequest(f'"pid" must be a positive integer; got {pid!r}')
    return pid


def query(request: web.Request, allowed: set[str]) -> Any:
    params = request.rel_url.query
    unknown = sorted(set(params) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; expected: {expected}")
    return params


def choice(raw: str | None, name: str, choices: tuple[str, ...]) -> str:
    """raw, one of choices; absent means the first."""
    value = choices[0] if raw is None else raw
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return value


def parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be an integer; got {raw!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}; got {limit}")
    return limit


def parse_flag(raw: str | None, name: str) -> bool:
    value = (raw or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name} must be 1 or 0; got {raw!r}")


def aibom_format(request: web.Request) -> str:
    params = request.rel_url.query
    unknown = sorted(set(params) - {"format"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; expected: format")
    fmt = params.get("format", "json")
    if fmt not in AIBOM_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(AIBOM_FORMATS)}; got {fmt[:40]!r}")
    return fmt
