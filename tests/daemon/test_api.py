"""The admin API against a real server on a real unix socket, with in-memory services."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from yarl import URL

from corral.api import requests
from corral.api.server import ApiServer, ApiStartError, make_app, start_api
from corral.contract import AGENT_NAME_RE, Services
from tests.daemon.test_api_fakes import (
    LONG_NAME,
    FakeController,
    make_event,
    short_tmpdir,
    wait_for,
)

ENC = quote(LONG_NAME, safe="")


@pytest.fixture
async def server(ctl: FakeController, sock_dir: Path) -> AsyncIterator[ApiServer]:
    srv = await start_api(Services.of(ctl), sock_dir / "run" / "corral.sock", max_body=1024)
    yield srv
    await srv.close()


@pytest.fixture
async def session(server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.UnixConnector(path=str(server.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


def url(path: str) -> URL:
    return URL(f"http://localhost{path}", encoded=True)  # keep %2F as sent


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url(path), **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def assert_error(status: int, body: Any, expected: int, *words: str) -> str:
    assert status == expected, body
    assert set(body) == {"error"}
    assert body["error"]["status"] == expected
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message, message
    return message


# --- routes ----------------------------------------------------------------------------------


async def test_status_and_agents(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "GET", "/v1/status")
    assert status == 200 and body["version"] == "0.1.0"
    status, body = await call(session, "GET", "/v1/agents")
    assert status == 200
    assert [a["name"] for a in body] == ["demo", LONG_NAME, "locked"]


async def test_encoded_slashes_route_to_the_full_name(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "GET", f"/v1/agents/{ENC}")
    assert status == 200 and body["name"] == LONG_NAME
    status, body = await call(session, "GET", f"/v1/agents/{ENC}/baseline")
    assert status == 200 and body["agent"] == LONG_NAME
    status, body = await call(session, "PUT", f"/v1/agents/{ENC}/mode", json={"open": "enforce"})
    assert status == 200
    assert body["modes"] == {"exec": "alert", "open": "enforce", "connect": "alert"}


async def test_unencoded_slashes_get_a_hint(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "GET", f"/v1/agents/{LONG_NAME}")
    assert_error(status, body, 404, "%2F")


async def test_get_agent_unknown_and_invalid(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "GET", "/v1/agents/nobody")
    assert_error(status, body, 404, "nobody", "corralctl agents")
    status, body = await call(session, "GET", "/v1/agents/..%2Fetc")
    assert_error(status, body, 400, "invalid agent name")
    status, body = await call(session, "GET", "/v1/agents/a%2Fb%2Fc%2Fd%2Fe")
    assert_error(status, body, 400, "invalid agent name")


async def test_set_mode(session: aiohttp.ClientSession, ctl: FakeController) -> None:
    status, body = await call(session, "PUT", "/v1/agents/demo/mode", json={"mode": "enforce"})
    assert status == 200
    assert ctl.calls[-1] == (
        "set_mode",
        "demo",
        dict.fromkeys(("exec", "open", "connect"), "enforce"),
    )
    body = {"mode": "alert", "connect": "enforce"}
    status, _ = await call(session, "PUT", "/v1/agents/demo/mode", json=body)
    assert status == 200
    assert ctl.calls[-1][2] == {"exec": "alert", "open": "alert", "connect": "enforce"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ['"mode"']),
        ({"mode": "strict"}, ["'mode'", "observe"]),
        ({"exec": 3}, ["'exec'"]),
        ({"mode": "alert", "color": "red"}, ["'color'"]),
        ([1, 2], ["JSON object", "list"]),
    ],
)
async def test_set_mode_bad_bodies(
    session: aiohttp.ClientSession, body: Any, words: list[str]
) -> None:
    status, resp = await call(session, "PUT", "/v1/agents/demo/mode", json=body)
    assert_error(status, resp, 400, *words)


async def test_set_tamper(session: aiohttp.ClientSession, ctl: FakeController) -> None:
    path = f"/v1/agents/{ENC}/tamper"
    body = {"allow": ["raw-socket", "mount"]}
    status, agent = await call(session, "PUT", path, json=body)
    assert status == 200 and agent["tamper_allow"] == ["mount", "raw-socket"]
    assert ctl.calls[-1] == ("set_tamper", LONG_NAME, ["raw-socket", "mount"], [])
    status, agent = await call(session, "PUT", path, json={"deny": ["mount"]})
    assert status == 200 and agent["tamper_allow"] == ["raw-socket"]
    status, agent = await call(session, "GET", f"/v1/agents/{ENC}")
    assert status == 200 and agent["tamper_allow"] == ["raw-socket"]
    status, body = await call(session, "PUT", "/v1/agents/nobody/tamper", json={"allow": []})
    assert_error(status, body, 404, "nobody")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ['"allow" and/or "deny"']),
        ({"allow": ["mnt"]}, ["'mnt'", "bpf, mount, chroot, ptrace, raw-socket", "prctl"]),
        ({"deny": "bpf"}, ['"deny" must be a list']),
        ({"allow": ["bpf"], "kinds": ["x"]}, ["'kinds'", "expected: allow, deny"]),
        ({"allow": ["bpf"], "deny": ["bpf"]}, ['bpf both in "allow" and "deny"']),
    ],
)
async def test_set_tamper_bad_bodies(
    session: aiohttp.ClientSession, ctl: FakeController, body: Any, words: list[str]
) -> None:
    status, answer = await call(session, "PUT", "/v1/agents/demo/tamper", json=body)
    assert_error(status, answer, 400, *words)
    assert not [c for c in ctl.calls if c[0] == "set_tamper"]


async def test_non_json_body(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "PUT", "/v1/agents/demo/mode", data=b"{mode: enforce")
    assert_error(status, body, 400, "not valid JSON")


async def test_json_nested_deeper_than_the_parser_goes_is_400(
    session: aiohttp.ClientSession,
) -> None:
    """json.loads raises RecursionError (not ValueError) here: it was a 500."""
    deep = b"[" * 1020  # within max_body (1024); unclosed, but the parser recurses first
    for method, path in (("PUT", "mode"), ("POST", "accept"), ("POST", "run")):
        status, body = await call(session, method, f"/v1/agents/demo/{path}", data=deep)
        assert_error(status, body, 400, "not valid JSON", "recursion")


async def test_names_ending_in_a_newline_are_invalid(session: aiohttp.ClientSession) -> None:
    """A "$" in the name pattern also matches before a final newline."""
    status, body = await call(session, "GET", "/v1/agents/demo%0A")
    assert_error(status, body, 400, "invalid agent name")


async def test_paths_that_are_not_utf8_are_sent_as_json_escapes(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    """A path with bytes that are not UTF-8 is held with surrogate escapes (events.py); raw
    surrogates cannot be encoded as UTF-8, so such answers use \\udcXX escapes (was a 500)."""
    odd = b"/tmp/\xff".decode("utf-8", "surrogateescape")
    detail = ctl.get_baseline("demo")
    detail["open"][0]["object"] = odd
    ctl.get_baseline = lambda name: detail  # type: ignore[method-assign]
    async with session.get(url("/v1/agents/demo/baseline")) as r:
        assert r.status == 200
        raw = await r.read()
    assert b"\\udcff" in raw
    assert json.loads(raw)["open"][0]["object"].encode("utf-8", "surrogateescape") == b"/tmp/\xff"


async def test_conflict(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "PUT", "/v1/agents/locked/mode", json={"mode": "off"})
    assert_error(status, body, 409, "pinned")


async def test_accept(session: aiohttp.ClientSession, ctl: FakeController) -> None:
    status, body = await call(session, "POST", "/v1/agents/demo/accept", json={})
    assert status == 200 and body["accepted"] == 2
    assert ctl.calls[-1] == ("accept", "demo", None)
    status, body = await call(session, "POST", "/v1/agents/demo/accept")  # empty body = {}
    assert status == 200
    entries = [{"dimension": "open", "object": "/x"}, {"dimension": "connect", "object": "1:2"}]
    status, body = await call(session, "POST", "/v1/agents/demo/accept", json={"entries": entries})
    assert status == 200 and body["accepted"] == 2
    assert ctl.calls[-1] == ("accept", "demo", entries)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"entries": []}, ["non-empty", "{}"]),
        ({"entries": "all"}, ["non-empty list"]),
        ({"entries": [{"dimension": "read", "object": "/x"}]}, ["entries[0].dimension"]),
        ({"entries": [{"dimension": "open"}]}, ["entries[0].object"]),
        ({"entries": [{"dimension": "open", "object": "/x", "why": 1}]}, ["'why'"]),
        ({"entries": ["open:/x"]}, ["entries[0]"]),
    ],
)
async def test_accept_bad_bodies(
    session: aiohttp.ClientSession, body: Any, words: list[str]
) -> None:
    status, resp = await call(session, "POST", "/v1/agents/demo/accept", json=body)
    assert_error(status, resp, 400, *words)


async def test_reset(session: aiohttp.ClientSession, ctl: FakeController) -> None:
    status, body = await call(session, "DELETE", f"/v1/agents/{ENC}/baseline")
    assert status == 200 and body["modes"]["exec"] == "observe"
    assert ctl.calls[-1] == ("reset", LONG_NAME)


async def test_run_passes_the_callers_pid(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    status, body = await call(session, "POST", f"/v1/agents/{ENC}/run", json={"pid": 4242})
    assert status == 200 and body["cgroup_id"] == 77
    # SO_PEERCRED: the caller is this very process.
    assert ctl.calls[-1] == ("run_agent", LONG_NAME, 4242, os.getpid())


@pytest.mark.parametrize("pid", [0, -1, "12", True, None, 1.5])
async def test_run_bad_pid(session: aiohttp.ClientSession, pid: Any) -> None:
    status, body = await call(session, "POST", "/v1/agents/demo/run", json={"pid": pid})
    assert_error(status, body, 400, '"pid"')


async def test_events_list(session: aiohttp.ClientSession, ctl: FakeController) -> None:
    status, body = await call(session, "GET", "/v1/events")
    assert status == 200 and len(body) == 6
    assert ctl.calls[-1] == ("recent_events", None, requests.DEFAULT_LIMIT)
    status, body = await call(session, "GET", f"/v1/events?agent={ENC}&limit=10")
    assert status == 200 and [e["agent"] for e in body] == [LONG_NAME]
    status, body = await call(session, "GET", "/v1/events?limit=2")
    assert [e["object"] for e in body] == ["/tmp/file4", "/tmp/file9"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("limit=0", ["between 1 and 10000"]),
        ("limit=10001", ["between 1 and 10000"]),
        ("limit=ten", ["integer"]),
        ("follow=maybe", ["follow"]),
        ("agent=%2Fetc", ["invalid agent name"]),
        ("colour=red", ["colour"]),
    ],
)
async def test_events_bad_query(
    session: aiohttp.ClientSession, query: str, words: list[str]
) -> None:
    status, body = await call(session, "GET", f"/v1/events?{query}")
    assert_error(status, body, 400, *words)


# --- errors ----------------------------------------------------------------------------------


async def test_unknown_route_is_json_404(session: aiohttp.ClientSession) -> None:
    status, body = await call(session, "GET", "/v1/nothing")
    assert_error(status, body, 404, "GET /v1/nothing")
    status, body = await call(session, "GET", "/")
    assert_error(status, body, 404)


async def test_wrong_method_is_json_405(session: aiohttp.ClientSession) -> None:
    async with session.get(url("/v1/agents/demo/mode")) as resp:
        body = await resp.json()
        assert resp.headers["Allow"] == "PUT"
    assert_error(resp.status, body, 405, "GET", "PUT")
    status, body = await call(session, "POST", "/v1/status")
    assert_error(status, body, 405, "GET")


async def test_body_too_large_is_json_413(session: aiohttp.ClientSession) -> None:
    big = json.dumps({"mode": "alert", "pad": "x" * 4096}).encode()
    status, body = await call(session, "PUT", "/v1/agents/demo/mode", data=big)
    assert_error(status, body, 413, "1024 bytes")


async def test_chunked_body_too_large_is_json_413(session: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    status, body = await call(session, "PUT", "/v1/agents/demo/mode", data=chunks())
    assert_error(status, body, 413, "1024 bytes")


async def test_unexpected_exception_is_500_and_the_server_lives_on(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    ctl.explode = RuntimeError("database on fire: secret detail")
    with capture_logs() as logs:
        status, body = await call(session, "GET", "/v1/status")
    message = assert_error(status, body, 500, "internal error")
    assert "secret detail" not in message
    failures = [e for e in logs if e["event"] == "request failed"]
    assert failures and failures[0]["log_level"] == "error" and failures[0]["exc_info"]
    ctl.explode = KeyError("boom")
    status, body = await call(session, "GET", "/v1/agents/demo")
    assert_error(status, body, 500)
    status, body = await call(session, "GET", "/v1/status")
    assert status == 200


async def test_requests_are_logged_with_peer_credentials(session: aiohttp.ClientSession) -> None:
    with capture_logs() as logs:
        await call(session, "GET", f"/v1/agents/{ENC}")
        await call(session, "GET", "/v1/agents/nobody")
    requests = [e for e in logs if e["event"] == "request"]
    assert len(requests) == 2
    first, second = requests
    assert first["method"] == "GET" and first["path"] == f"/v1/agents/{ENC}"
    assert first["status"] == 200 and second["status"] == 404
    assert first["duration_ms"] >= 0
    assert (first["pid"], first["uid"], first["gid"]) == (os.getpid(), os.getuid(), os.getgid())


# --- the socket ------------------------------------------------------------------------------


async def test_socket_is_0600_in_a_0755_dir(server: ApiServer) -> None:
    assert stat.S_ISSOCK(server.path.lstat().st_mode)
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o755


async def test_group_socket_is_0660(ctl: FakeController, sock_dir: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    srv = await start_api(Services.of(ctl), sock_dir / "g.sock", group=group)
    try:
        st = srv.path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
    finally:
        await srv.close()
    with pytest.raises(ApiStartError, match="unknown group"):
        await start_api(Services.of(ctl), sock_dir / "g.sock", group="no-such-group-corral")


async def test_stale_socket_is_replaced(ctl: FakeController, sock_dir: Path) -> None:
    path = sock_dir / "corral.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a crashed daemon's leftover
    assert path.exists()
    srv = await start_api(Services.of(ctl), path)
    try:
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector) as s:
            status, _ = await call(s, "GET", "/v1/status")
        assert status == 200
    finally:
        await srv.close()
    assert not path.exists()  # close() removes its socket


async def test_live_socket_is_refused(server: ApiServer, ctl: FakeController) -> None:
    with pytest.raises(ApiStartError, match="another corrald is running on"):
        await start_api(Services.of(ctl), server.path)
    assert server.path.exists()  # untouched, still serving
    connector = aiohttp.UnixConnector(path=str(server.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        status, _ = await call(s, "GET", "/v1/status")
    assert status == 200


async def test_a_regular_file_is_not_removed(ctl: FakeController, sock_dir: Path) -> None:
    path = sock_dir / "corral.sock"
    path.write_text("precious")
    with pytest.raises(ApiStartError, match="not a socket"):
        await start_api(Services.of(ctl), path)
    assert path.read_text() == "precious"


# --- event streams ---------------------------------------------------------------------------


async def test_follow_streams_ndjson_until_the_client_leaves(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    resp = await session.get(url("/v1/events?follow=1"))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    await wait_for(lambda: len(ctl.subscribers) == 1)
    for i in range(3):
        ctl.publish(make_event(100 + i))
    lines = [await asyncio.wait_for(resp.content.readline(), 5) for _ in range(3)]
    assert [json.loads(line)["object"] for line in lines] == [
        f"/tmp/file{100 + i}" for i in range(3)
    ]
    assert all(line.endswith(b"\n") for line in lines)
    resp.close()  # disconnect: the server drops its subscription without any new event
    await wait_for(lambda: not ctl.subscribers)


async def test_follow_one_event_at_a_time(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    async with session.get(url(f"/v1/events?follow=1&agent={ENC}")) as resp:
        await wait_for(lambda: len(ctl.subscribers) == 1)
        ctl.publish(make_event(1))  # another agent: filtered out
        ctl.publish(make_event(2, LONG_NAME))
        line = await asyncio.wait_for(resp.content.readline(), 5)  # flushed on its own
        assert json.loads(line)["agent"] == LONG_NAME


async def test_follow_with_limit_starts_with_history(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    async with session.get(url("/v1/events?follow=true&limit=2")) as resp:
        first = [json.loads(await resp.content.readline()) for _ in range(2)]
        assert [e["object"] for e in first] == ["/tmp/file4", "/tmp/file9"]
        await wait_for(lambda: len(ctl.subscribers) == 1)
        ctl.publish(make_event(7))
        assert json.loads(await resp.content.readline())["object"] == "/tmp/file7"


async def test_follow_ends_when_the_subscription_ends(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    async with session.get(url("/v1/events?follow=1")) as resp:
        await wait_for(lambda: len(ctl.subscribers) == 1)
        ctl.publish(make_event(1))
        ctl.publish(None)  # the daemon's event source stops
        body = await asyncio.wait_for(resp.read(), 5)
    assert [json.loads(x)["object"] for x in body.splitlines()] == ["/tmp/file1"]


async def test_follow_ends_when_the_server_closes(ctl: FakeController, sock_dir: Path) -> None:
    srv = await start_api(Services.of(ctl), sock_dir / "c.sock")
    connector = aiohttp.UnixConnector(path=str(srv.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        resp = await s.get(url("/v1/events?follow=1"))
        await wait_for(lambda: len(ctl.subscribers) == 1)
        closing = asyncio.create_task(srv.close())
        body = await asyncio.wait_for(resp.read(), 5)
        await asyncio.wait_for(closing, 5)
    assert body == b""
    assert not ctl.subscribers


async def test_follow_error_after_headers_is_the_last_line(
    session: aiohttp.ClientSession, ctl: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(agent: str | None) -> AsyncIterator[dict[str, Any]]:
        yield make_event(1)
        raise RuntimeError("ring buffer gone")

    monkeypatch.setattr(ctl, "subscribe", broken)
    async with session.get(url("/v1/events?follow=1")) as resp:
        lines = (await asyncio.wait_for(resp.read(), 5)).splitlines()
    assert json.loads(lines[0])["object"] == "/tmp/file1"
    assert json.loads(lines[1])["error"]["status"] == 500
    status, _ = await call(session, "GET", "/v1/status")
    assert status == 200


class EchoController(FakeController):
    def get_agent(self, name: str) -> dict[str, Any]:
        return {"name": name}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.from_regex(AGENT_NAME_RE, fullmatch=True), min_size=1, max_size=5))
def test_any_valid_name_survives_the_round_trip(names: list[str]) -> None:
    async def check() -> None:
        with short_tmpdir() as d:
            srv = await start_api(Services.of(EchoController()), d / "h.sock")
            try:
                connector = aiohttp.UnixConnector(path=str(srv.path))
                async with aiohttp.ClientSession(connector=connector) as s:
                    for name in names:
                        status, body = await call(s, "GET", f"/v1/agents/{quote(name, safe='')}")
                        assert (status, body) == (200, {"name": name})
            finally:
                await srv.close()

    with capture_logs():
        asyncio.run(check())


async def test_follow_unknown_agent_is_a_plain_404(
    session: aiohttp.ClientSession, ctl: FakeController
) -> None:
    status, body = await call(session, "GET", "/v1/events?follow=1&agent=nobody")
    assert_error(status, body, 404, "nobody")
    assert not ctl.subscribers


async def test_a_confined_caller_is_refused_before_any_handler(
    ctl: FakeController, server: ApiServer
) -> None:
    """SO_PEERCRED names the caller; the agent service says it runs confined: refused when
    its connection is accepted (403, then closed: it holds no slot), whatever it sends, and
    nothing reaches the service (the real check: node.cgroups, test_e2e)."""
    ctl.confined_pids[os.getpid()] = "demo"
    connector = aiohttp.UnixConnector(path=str(server.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        for method, path in (("GET", "/v1/status"), ("PUT", "/v1/agents/demo/mode")):
            status, body = await call(s, method, path, json={"mode": "off"})
            assert_error(status, body, 403, "confined agents", str(os.getpid()), "'demo'")
        assert server.guard is not None and server.guard.refused_agents == 2
        assert server.guard.active == 0  # refused at accept: no slot taken
        ctl.confined_pids.clear()
        status, _ = await call(s, "GET", "/v1/status")
        assert status == 200
    assert not [c for c in ctl.calls if c[0] == "set_mode"]


def test_the_per_request_check_serves_an_app_without_the_guard() -> None:
    """make_app alone (no start_api, so no accept-time check): the middleware asks per
    request."""
    ctl = FakeController()
    ctl.confined_pids[os.getpid()] = "demo"

    async def check() -> None:
        with short_tmpdir() as d:
            runner = aiohttp.web.AppRunner(make_app(Services.of(ctl)))
            await runner.setup()
            site = aiohttp.web.UnixSite(runner, str(d / "p.sock"))
            await site.start()
            try:
                connector = aiohttp.UnixConnector(path=str(d / "p.sock"))
                async with aiohttp.ClientSession(connector=connector) as s:
                    status, body = await call(s, "GET", "/v1/status")
                assert_error(status, body, 403, "confined agents")
            finally:
                await runner.cleanup()

    asyncio.run(check())


async def _raw(path: Path, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_half_sent_requests_are_cut_and_the_connection_cap_answers_503(
    ctl: FakeController, sock_dir: Path
) -> None:
    """Attack: hold the admin socket with half-sent requests (a slowloris). Beyond
    max_connections the answer is 503 at once; the half-sent ones are closed after
    request_timeout; then the operator is served again."""
    srv = await start_api(
        Services.of(ctl), sock_dir / "s.sock", max_connections=20, request_timeout=0.5
    )
    try:
        held = [await _raw(srv.path, b"GET /v1/status HTTP/1.1\r\nHost: x") for _ in range(20)]
        await wait_for(lambda: srv.guard is not None and srv.guard.active == 20)
        reader, writer = await _raw(srv.path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"max_connections" in answer
        writer.close()
        for r, _ in held:  # closed by corrald within the deadline, never answered
            assert await asyncio.wait_for(r.read(), 5) == b""
        for _, w in held:
            w.close()
        assert srv.guard is not None
        await wait_for(lambda: srv.guard is not None and srv.guard.active == 0)
        assert srv.guard.timed_out == 20 and srv.guard.refused == 1
        connector = aiohttp.UnixConnector(path=str(srv.path))
        async with aiohttp.ClientSession(connector=connector) as s:
            status, _ = await call(s, "GET", "/v1/status")
        assert status == 200
    finally:
        await srv.close()


async def test_a_body_shorter_than_its_content_length_gets_408(
    ctl: FakeController, sock_dir: Path
) -> None:
    srv = await start_api(Services.of(ctl), sock_dir / "b.sock", request_timeout=0.5)
    try:
        head = (
            b"PUT /v1/agents/demo/mode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        reader, writer = await _raw(srv.path, head + b'{"mode":')
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 408 "), status_line
        rest = await asyncio.wait_for(reader.read(), 5)
        assert b"request_timeout" in rest
        writer.close()
        assert not [c for c in ctl.calls if c[0] == "set_mode"]
    finally:
        await srv.close()


async def test_answers_never_read_do_not_hold_a_connection(
    ctl: FakeController, sock_dir: Path
) -> None:
    """Attack: pipeline requests and never read the answers: corrald's writes block. The
    connection is closed after request_timeout (it used to stay forever, one slot each)."""
    srv = await start_api(Services.of(ctl), sock_dir / "w.sock", request_timeout=0.5)
    try:
        many = b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        _, writer = await _raw(srv.path, many)
        assert srv.guard is not None
        await wait_for(lambda: srv.guard is not None and srv.guard.timed_out >= 1, timeout=10)
        await wait_for(lambda: srv.guard is not None and srv.guard.active == 0, timeout=10)
        writer.close()
    finally:
        await srv.close()


async def test_refused_connections_linger_within_bounds(
    ctl: FakeController, sock_dir: Path
) -> None:
    """Beyond max_connections each refused connection keeps its descriptor for a second at
    most, and never more of them than max_connections: a flood of connects cannot exhaust
    corrald's file descriptors."""
    srv = await start_api(Services.of(ctl), sock_dir / "f.sock", max_connections=3)
    try:
        held = [await _raw(srv.path, b"GET /v1/status HTTP/1.1\r\nHost: x") for _ in range(3)]
        flood = [await _raw(srv.path, b"") for _ in range(40)]
        assert srv.guard is not None
        await wait_for(lambda: srv.guard is not None and srv.guard.refused >= 3)
        assert len(srv.guard._lingering) <= 3
        await wait_for(lambda: srv.guard is not None and not srv.guard._lingering, timeout=5)
        for _, w in held + flood:
            w.close()
    finally:
        await srv.close()
