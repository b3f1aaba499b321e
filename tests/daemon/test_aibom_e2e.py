"""The runtime AI-BOM end to end on this kernel: a real corrald, a fake-but-real AI agent run
through `corralctl run` in a real cgroup, real BPF events (on this host: opens from the
sys_enter tracepoint, execs from tp_btf, connects from cgroup/connect4), real /proc reads.
Then persistence across a clean restart, and a rebuild from the baseline alone after a
kill -9 with the AI-BOM files gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.daemon import fake_ai_agent
from tests.daemon.test_e2e import BIN, Daemon, ctl, ctl_json, running_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups")
AGENT = "fake-ai"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The loopback "LLM": accepts and forgets."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv


@pytest.fixture
def daemon(tmp_path: Path, listener: socket.socket) -> Iterator[Daemon]:
    port = listener.getsockname()[1]
    rules = tmp_path / "local-rules.yaml"
    rules.write_text(
        textwrap.dedent(f"""
        version: 1
        endpoints:
          - name: test-llm
            kind: llm
            hosts: [localhost]
            ports: [{port}]
    """)
    )
    with running_daemon(tmp_path, f"aibom: {{rule_files: [{rules}]}}\n") as d:
        yield d


def wait_for_bom(d: Daemon, ok: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    bom: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = ctl(d, "-o", "json", "aibom", AGENT)
        if r.returncode == 0:
            bom = json.loads(r.stdout)
            if ok(bom):
                return bom
        time.sleep(0.2)
    raise AssertionError(f"AI-BOM incomplete after {timeout}s: {json.dumps(bom, indent=1)}\n"
                         f"{d.logs()[-4000:]}")  # fmt: skip


def versions(bom: dict[str, Any]) -> dict[str, str | None]:
    return {f["name"]: f["version"] for f in bom["frameworks"]}


def complete(bom: dict[str, Any], port: int, *, with_npx: bool = True) -> bool:
    mcp = {m["name"]: m for m in bom["mcp_servers"]}
    endpoints = {e["object"]: e for e in bom["endpoints"]}
    llm = endpoints.get(f"127.0.0.1:{port}", {})
    npx = fake_ai_agent.NPX_PACKAGE
    return (
        versions(bom) == {"langchain": "0.3.7", "openai": "1.2.3"}
        and [m["format"] for m in bom["models"]] == ["gguf"]
        and llm.get("kind") == "llm"
        and llm.get("hostnames") == ["localhost"]
        and "mcp-server-demo" in mcp
        and (not with_npx or mcp.get(npx, {}).get("version") == "2.0.1")
        and "shell" in {e["kind"] for e in bom["executables"]}
    )


def validate(doc: Any) -> None:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    assert error is None, f"CycloneDX 1.6 schema: {error}"


def test_fake_ai_agent(daemon: Daemon, tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    root = tmp_path / "agent"
    fake_ai_agent.build(root)
    hold = tmp_path / "release"
    script = Path(fake_ai_agent.__file__)
    agent = subprocess.Popen(
        [str(BIN / "corralctl"), "--socket", str(daemon.sock), "run", "--agent", AGENT, "--",
         sys.executable, str(script), "run", str(root), str(port), "--hold", str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        bom = wait_for_bom(daemon, lambda b: complete(b, port))
        assert bom["ai_agent"] is True
        assert set(bom["reasons"]) == {"frameworks", "mcp servers", "models", "llm endpoints"}
        sp = str(fake_ai_agent.site_packages(root))
        fw = {f["name"]: f for f in bom["frameworks"]}
        assert fw["langchain"]["location"] == f"{sp}/langchain"
        assert fw["langchain"]["version_source"] == f"{sp}/langchain-0.3.7.dist-info/METADATA"
        assert fw["openai"]["framework"] == "openai" and "event" in fw["openai"]["evidence"]
        model = bom["models"][0]
        assert model["path"] == str(root / "models" / fake_ai_agent.MODEL)
        npx = next(m for m in bom["mcp_servers"] if m["name"] == fake_ai_agent.NPX_PACKAGE)
        assert npx["exe"] == str(root / "bin" / "npx")
        assert "not-a-real-key" not in json.dumps(bom), "secrets in argv are redacted"
        assert "***" in npx["command"]
        assert bom["capabilities"]["shell"] is True

        # the node view and the table
        node = ctl_json(daemon, "aibom")
        assert isinstance(node, dict) and node["ai_agents"] >= 1
        assert AGENT in {a["agent"] for a in node["agents"]}
        r = ctl(daemon, "aibom", "-o", "table")
        assert r.returncode == 0, r.stderr
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(AGENT))
        assert row.split()[1] == "yes" and "openai 1.2.3" in row and "langchain 0.3.7" in row
        r = ctl(daemon, "aibom", AGENT)
        assert r.returncode == 0 and "FRAMEWORKS" in r.stdout and "tiny-llama" in r.stdout

        # CycloneDX 1.6, validated against the official schema (bundled with the library)
        for args in (("aibom", AGENT), ("aibom",)):
            r = ctl(daemon, *args, "-o", "cyclonedx")
            assert r.returncode == 0, r.stderr
            doc = json.loads(r.stdout)
            validate(doc)
            text = json.dumps(doc)
            assert "pkg:pypi/openai@1.2.3" in text and "pkg:pypi/langchain@0.3.7" in text
            assert "machine-learning-model" in text
            assert f"tcp://localhost:{port}" in text
        doc = json.loads(ctl(daemon, "aibom", AGENT, "-o", "cyclonedx").stdout)
        assert doc["specVersion"] == "1.6"
        assert {c["type"] for c in doc["components"]} >= {"library", "machine-learning-model",
                                                          "application"}  # fmt: skip
        assert [s["name"] for s in doc["services"]] == ["test-llm"]
        assert doc["metadata"]["component"]["name"] == AGENT

        # a clean restart keeps it (persisted), argv-only facts included
        time.sleep(0.5)  # > save_interval: the baseline and the AI-BOM are on disk
        daemon.stop()
        daemon.start()
        again = ctl_json(daemon, "aibom", AGENT)
        assert isinstance(again, dict) and complete(again, port)

        # kill -9, and the AI-BOM files lost: rebuilt from the baseline alone; versions read
        # from the still-running agent's root (its run cgroup is adopted on restart)
        time.sleep(0.5)
        daemon.kill9()
        shutil.rmtree(daemon.state / "aibom")
        daemon.start()
        rebuilt = wait_for_bom(daemon, lambda b: complete(b, port, with_npx=False))
        assert all(f["evidence"] == ["baseline"] for f in rebuilt["frameworks"])
        assert rebuilt["ai_agent"] is True
    finally:
        hold.touch()
        out, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, out
    assert "fake agent done" in out


def test_sighup_reloads_rule_files(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    rules = tmp_path / "mine.yaml"
    rules.write_text("version: 1\n")
    with running_daemon(tmp_path, f"aibom: {{rule_files: [{rules}]}}\n") as d:
        assert d.proc is not None
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"
        r = ctl(d, "run", "--agent", "gw-user", "--", sys.executable, "-c", connect)
        assert r.returncode == 0, r.stderr

        def kind(bom: dict[str, Any]) -> str | None:
            return next((e["kind"] for e in bom["endpoints"] if e["port"] == port), None)

        def bom() -> dict[str, Any]:
            out = ctl_json(d, "aibom", "gw-user")
            assert isinstance(out, dict)
            return out

        deadline = time.monotonic() + 30
        while kind(bom()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kind(bom()) == "other" and bom()["ai_agent"] is False

        rules.write_text(f"version: 1\nendpoints:\n  - {{name: gw, kind: llm, ports: [{port}]}}\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while kind(bom()) != "llm" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kind(bom()) == "llm" and bom()["ai_agent"] is True

        rules.write_text("version: 1\nendpoints:\n  - {name: gw, kind: llm, ports: [0]}\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "AI-BOM rules not reloaded" not in d.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "mine.yaml: endpoints[0] (gw): ports" in d.logs()
        assert kind(bom()) == "llm", "a bad file keeps the running rules"
