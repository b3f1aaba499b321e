"""The runtime AI-BOM end to end on this kernel: a real corrald, a fake-but-real AI agent run
through `corralctl run` in a real cgroup, real BPF events (on this host: opens from the
sys_enter tracepoint, execs from tp_btf, connects from cgroup/connect4), real /proc reads.
Then persistence across a clean restart, and a rebuild from the baseline alone after a
kill -9 with the AI-BOM files gone."""

from __future__ import annotations

import contextlib
import json
import os
import pty
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


def wait_for_bom(
    d: Daemon, ok: Callable[[dict[str, Any]], bool], timeout: float = 30, agent: str = AGENT
) -> dict:
    deadline = time.monotonic() + timeout
    bom: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = ctl(d, "-o", "json", "aibom", agent)
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


def ctl_on_terminal(d: Daemon, columns: int, *args: str) -> str:
    """corralctl's output on a terminal (a pty) of $COLUMNS columns."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "corralctl"), "--socket", str(d.sock), *args],
        stdout=slave, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": str(columns)},
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    with contextlib.suppress(OSError):  # EIO once corralctl closed the terminal
        while data := os.read(master, 65536):
            chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def swept(d: Daemon, agent: str, timeout: float = 10) -> None:
    """Waits until corrald removed the agent's finished run cgroups (none left behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = ctl_json(d, "agent", agent)
        if isinstance(detail, dict) and not detail["workloads"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{agent}'s run cgroups not swept in {timeout}s")


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
        assert npx["exes"] == [str(root / "bin" / "npx")] and npx["launchers"] == ["npx"]
        assert npx["version_source"] == "command line"  # npx ...@2.0.1; no package.json read
        assert "not-a-real-key" not in json.dumps(bom), "secrets in argv are redacted"
        assert ["***" in c for c in npx["commands"]] == [True]
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

        # a rule with ports alone is a hint only: name the address too
        gw = f"{{name: gw, kind: llm, cidrs: [127.0.0.0/8], ports: [{port}]}}"
        rules.write_text(f"version: 1\nendpoints:\n  - {gw}\n")
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


FS_AGENT = "fs-agent"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_an_npx_mcp_server_is_one_component(daemon: Daemon, tmp_path: Path) -> None:
    """`npx -y @modelcontextprotocol/server-filesystem /data` runs `sh -c
    "mcp-server-filesystem /data"`, which runs node on node_modules/.bin/mcp-server-filesystem:
    four records (the package node opened, npx, node, the .bin script) used to be four MCP
    servers in every output. Now one, named and versioned by its package.json, with the launch
    command lines as evidence. Real node, a stand-in npx and npx cache, no network."""
    root = tmp_path / "agent"
    fake_ai_agent.build_npx(root)
    package, version = fake_ai_agent.MCP_FS_PACKAGE, fake_ai_agent.MCP_FS_VERSION
    npx = [str(root / "bin" / "npx"), "-y", package, "/data"]
    script = str(fake_ai_agent.npx_cache(root) / ".bin" / fake_ai_agent.MCP_FS_BIN)
    launches = [["node", *npx], ["node", script, "/data"]]
    hold = tmp_path / "release"
    agent = subprocess.Popen(
        [str(BIN / "corralctl"), "--socket", str(daemon.sock), "run", "--agent", FS_AGENT, "--",
         *npx],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "FAKE_MCP_HOLD": str(hold)},
    )  # fmt: skip

    def one_server(bom: dict[str, Any]) -> bool:
        servers = bom["mcp_servers"]
        return (
            [(m["name"], m["version"]) for m in servers] == [(package, version)]
            and all(c in servers[0]["commands"] for c in launches)
            and servers[0]["locations"] != []  # the package node opened
            and bom["capabilities"]["shell"]
        )

    try:
        bom = wait_for_bom(daemon, one_server, agent=FS_AGENT)
        (server,) = bom["mcp_servers"]
        assert server["ecosystem"] == "npm" and server["locations"] == [
            f"{fake_ai_agent.npx_cache(root)}/{package}"
        ]
        assert {npx[0], script} <= set(server["exes"])

        # the tables: one row, one name; on an 80-column terminal they fit it
        for args in (("aibom",), ("aibom", FS_AGENT)):
            lines = ctl_on_terminal(daemon, 80, *args).splitlines()
            assert max(map(len, lines)) <= 80 and any("…" in ln for ln in lines), lines
        r = ctl(daemon, "aibom", "-o", "wide")
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(FS_AGENT))
        assert f"  {package} {version}  " in row and "mcp-server-filesystem" not in row, row
        r = ctl(daemon, "aibom", FS_AGENT, "-o", "wide")
        section = r.stdout.split("MCP SERVERS\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert len(section) == 2 and section[1].split()[:2] == [package, version], section

        # CycloneDX: one component, the command lines as properties
        for args in (("aibom", FS_AGENT), ("aibom",)):
            doc = json.loads(ctl(daemon, *args, "-o", "cyclonedx").stdout)
            validate(doc)
            parts = doc["components"] if args[1:] else doc["components"][0]["components"]
            servers = [
                c
                for c in parts
                if {"name": "corral:category", "value": "mcp-server"} in c["properties"]
            ]
            assert len(servers) == 1, servers
            (c,) = servers
            assert c["purl"] == f"pkg:npm/%40modelcontextprotocol/server-filesystem@{version}"
            commands = {p["value"] for p in c["properties"] if p["name"] == "corral:command"}
            assert {" ".join(launch) for launch in launches} <= commands, commands
    finally:
        hold.touch()
        out, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, out
    swept(daemon, FS_AGENT)
