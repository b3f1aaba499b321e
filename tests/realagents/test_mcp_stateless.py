"""The AI-BOM recognises an MCP client and server on the stateless 2026-07-28 specification,
with the official Python SDK the corpus pins (mcp 2.x): no daemon, no BPF. The client
(stateless/client.py) starts the server (stateless/mcp_server_corral_probe) over stdio with the
SDK's default negotiation; the test reads the wire (server/discover first, the protocol
version in every request's `_meta`, no `initialize`) and feeds the AI-BOM tracker what corrald
would see of both processes: the server's exec with its argv, and the files of the modules
each loaded (each was opened). corral reads no MCP message: the test shows that holds."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from corral.aibom.inventory import AibomTracker
from corral.aibom.records import Sight
from corral.aibom.rulefile import load_rules
from tests.daemon.test_api_fakes import fake_event
from tests.realagents.harness import CORPUS_PYTHON

CLIENT = Path(__file__).resolve().parent / "stateless" / "client.py"
SPEC = "2026-07-28"
PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"

pytestmark = pytest.mark.skipif(
    not CORPUS_PYTHON.exists(), reason=f"no corpus venv at {CORPUS_PYTHON}: make realagents-deps"
)


def run_client(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The client's report and the messages each way (client -> server, server -> client)."""
    tap = str(tmp_path / "wire")
    out = subprocess.run(
        [str(CORPUS_PYTHON), str(CLIENT), tap],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    sent, answered = (
        [json.loads(line) for line in Path(f"{tap}.{end}").read_text().splitlines() if line]
        for end in ("in", "out")
    )
    return json.loads(out.stdout), sent, answered


def tracker_of(report: dict[str, Any]) -> AibomTracker:
    """An AI-BOM tracker (built-in rules, no /proc) that saw both processes as agent "a"."""
    t = AibomTracker(
        load_rules(), "/nonexistent", "node-1", baselines=dict, cgroups_of=lambda _: [],
        read_proc=False, resolve_hosts=False,
    )  # fmt: skip
    argv = report["server"]["argv"]
    t.on_event("a", fake_event("exec", argv[0]))
    t._exec("a", argv[0], argv, Sight(time.time(), "event"))
    for path in (*report["client_modules"], *report["server"]["modules"]):
        t.on_event("a", fake_event("open", path))
    return t


def test_a_stateless_client_and_server_are_in_the_aibom(tmp_path: Path) -> None:
    report, sent, answered = run_client(tmp_path)
    requests = [m for m in sent if "id" in m]
    assert requests[0]["method"] == "server/discover"
    assert all(m.get("method") != "initialize" for m in sent)
    assert all(m["params"]["_meta"][PROTOCOL_VERSION] == SPEC for m in requests)
    assert SPEC in answered[0]["result"]["supportedVersions"]

    view = tracker_of(report).agent_view("a")
    frameworks = {(f["name"], f["framework"]) for f in view["frameworks"]}
    assert {("mcp", "mcp"), ("mcp-types", "mcp")} <= frameworks
    servers = [(m["name"], m["commands"]) for m in view["mcp_servers"]]
    assert servers == [("mcp_server_corral_probe", [report["server"]["argv"]])]
    assert view["ai_agent"] is True
