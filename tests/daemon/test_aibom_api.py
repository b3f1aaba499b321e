"""GET /v1/aibom, GET /v1/agents/{name}/aibom and `corralctl aibom` against a real API server on
a unix socket (the services are the in-memory fake; the views and the CycloneDX rendering are
the real ones)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from corral import cli
from corral.api.server import ApiServer
from tests.daemon import test_cli
from tests.daemon.test_api_fakes import LONG_NAME, FakeController

# the CLI tests' fixtures: a real API server over the fake services, daemon logs captured
server = test_cli.server
quiet_daemon_logs = test_cli.quiet_daemon_logs


async def get(server: ApiServer, path: str) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(server.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        url = aiohttp.client.URL(f"http://localhost{path}", encoded=True)
        async with s.get(url) as resp:
            return resp.status, await resp.json()


def valid_cyclonedx(doc: Any) -> bool:
    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None


async def test_node_and_agent_routes(server: ApiServer, ctl: FakeController) -> None:
    status, node = await get(server, "/v1/aibom")
    assert status == 200
    assert node["node"] == "node-1" and node["ai_agents"] == 1
    assert {a["agent"] for a in node["agents"]} == set(ctl.agents)
    status, demo = await get(server, "/v1/agents/demo/aibom")
    assert status == 200 and demo["ai_agent"] is True
    assert {(f["name"], f["version"]) for f in demo["frameworks"]} == {
        ("openai", "1.2.3"),
        ("langchain-core", None),
    }
    status, other = await get(server, f"/v1/agents/{quote(LONG_NAME, safe='')}/aibom")
    assert status == 200 and other["agent"] == LONG_NAME and other["ai_agent"] is False


async def test_cyclonedx_routes_validate(server: ApiServer) -> None:
    for path in ("/v1/aibom?format=cyclonedx", "/v1/agents/demo/aibom?format=cyclonedx"):
        status, doc = await get(server, path)
        assert status == 200 and doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
        assert valid_cyclonedx(doc)


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/aibom?format=spdx", 400, ["format must be one of json, cyclonedx"]),
        ("/v1/aibom?fmt=json", 400, ["unknown query parameter", "fmt"]),
        ("/v1/agents/nobody/aibom", 404, ["no agent named 'nobody'"]),
        ("/v1/agents/bad%20name/aibom", 400, ["invalid agent name"]),
    ],
)
async def test_bad_requests(server: ApiServer, path: str, status: int, words: list[str]) -> None:
    got, body = await get(server, path)
    assert got == status, body
    for w in words:
        assert w in body["error"]["message"]


async def run_cli(capsys: pytest.CaptureFixture[str], server: ApiServer, *args: str
                  ) -> tuple[int, str, str]:  # fmt: skip
    code = await asyncio.to_thread(cli.main, ["--socket", str(server.path), *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_node_table(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    code, out, err = await run_cli(capsys, server, "aibom")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "node node-1: 1 AI agent(s)"
    assert lines[2].split()[:4] == ["AGENT", "AI", "FRAMEWORKS", "MCP"]
    demo = next(ln for ln in lines if ln.startswith("demo "))
    assert demo.split()[1] == "yes"
    assert "openai 1.2.3" in demo and "mcp-server-fetch" in demo and "1/1" in demo
    locked = next(ln for ln in lines if ln.startswith("locked "))
    assert locked.split()[1] == "no"


async def test_cli_agent_table(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    code, out, err = await run_cli(capsys, server, "aibom", "demo")
    assert code == 0, err
    assert "ai agent:     yes (frameworks, mcp servers, models, llm endpoints)" in out
    for section in ("FRAMEWORKS", "MCP SERVERS", "MODELS", "ENDPOINTS", "EXECUTABLES"):
        assert f"\n{section}\n" in out
    assert "127.0.0.1:11434  llm   client-sdk:openai,port-hint:11434" in out
    code, out, _ = await run_cli(capsys, server, "aibom", "locked")
    assert code == 0 and "FRAMEWORKS: none seen" in out


async def test_cli_tables_fit_the_terminal_and_wide_shows_all(
    capsys: pytest.CaptureFixture[str], server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal $COLUMNS wide the node's table and an agent's fit it (cells cut with "…",
    never the first column: the node's table is as wide as the 29 characters of
    prod/Deployment/chatbot/agent and the headers need); -o wide, and output to a pipe or a
    file, show every cell."""
    location = "/app/.venv/lib/python3.11/site-packages/langchain_core"

    async def fitted(columns: int, *args: str) -> str:
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)  # a terminal
        code, out, err = await run_cli(capsys, server, *args)
        assert code == 0, err
        assert [ln for ln in out.splitlines() if len(ln) > columns] == [], out
        return out

    out = await fitted(100, "aibom")
    assert "demo                           yes  langchain-c" in out and "…" in out
    assert "prod/Deployment/chatbot/agent  no" in out
    out = await fitted(80, "aibom", "demo")
    assert "  langchain-core  -" in out and "/app/.ven…" in out and location not in out
    code, out, _ = await run_cli(capsys, server, "aibom", "demo", "-o", "wide")
    assert code == 0 and "…" not in out and location in out
    assert max(map(len, out.splitlines())) > 80
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # a pipe or a file: nothing cut
    code, out, _ = await run_cli(capsys, server, "aibom", "demo")
    assert code == 0 and "…" not in out and location in out


async def test_cli_json_yaml_cyclonedx(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    code, out, _ = await run_cli(capsys, server, "aibom", "demo", "-o", "json")
    assert code == 0 and json.loads(out)["agent"] == "demo"
    code, out, _ = await run_cli(capsys, server, "aibom", "-o", "yaml")
    assert code == 0 and "ai_agents: 1" in out
    code, out, _ = await run_cli(capsys, server, "aibom", "demo", "-o", "cyclonedx")
    assert code == 0 and valid_cyclonedx(json.loads(out))
    assert ctl.calls[-1] == ("aibom", "demo", "cyclonedx")


async def test_cli_errors(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    code, _, err = await run_cli(capsys, server, "aibom", "nobody")
    assert code == 1 and "no agent named 'nobody'" in err
    code, _, err = await run_cli(capsys, server, "agents", "-o", "cyclonedx")
    assert code == 2 and "invalid choice: 'cyclonedx'" in err
