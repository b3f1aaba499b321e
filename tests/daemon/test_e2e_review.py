"""Baseline review as code, end to end on this host: a real corrald, real corralctl, real
cgroups and BPF. Pre-seed an agent by import (GitOps) -> it runs with the imported baseline and
modes -> enforce -> diff shows the denied connect -> accept makes it pass -> export/import
round trip -> replace removes it again through a whole-list swap.

Marked `fallback`: it checks connect EPERM from the cgroup programs and leaves open in alert
(the tracepoint backend reports opens, it cannot deny them)."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.daemons import corrald
from tests.daemon.test_e2e import Daemon, ctl, ctl_json
from tests.daemon.test_e2e import daemon as daemon  # fixture
from tests.daemon.unix_http import BASE_URL, unix_session

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups"),
    pytest.mark.fallback,
]

AGENT = "team/seeded"

CONNECTS = textwrap.dedent("""
    import socket, sys
    out = []
    for port in map(int, sys.argv[1:]):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            out.append("ok")
        except PermissionError:
            out.append("EPERM")
        except ConnectionRefusedError:
            out.append("refused")
        finally:
            s.close()
    print(" ".join(out))
""")


def seed_document(known_port: int) -> str:
    """What a reviewer committed: the interpreter (as execve sees it, and resolved), the
    known peer, and the modes the agent must start in."""
    exes = sorted({sys.executable, os.path.realpath(sys.executable)})
    execs = "\n".join(f"  - {{path: {p}, source: learned}}" for p in exes)
    return (
        "apiVersion: corral.io/v1\n"
        "kind: Baseline\n"
        "metadata:\n"
        f"  name: {AGENT}\n"
        "  annotations: {reviewed-by: alice}\n"
        "spec:\n"
        "  modes: {exec: enforce, open: alert, connect: alert}\n"
        "  exec:\n"
        f"{execs}\n"
        "  connect:\n"
        f"  - {{address: 127.0.0.1, port: {known_port}}}\n"
    )


def wait_diff(d: Daemon, predicate: Any, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        diff = ctl_json(d, "diff", AGENT, "--flat")
        assert isinstance(diff, dict)
        if predicate(diff) or time.monotonic() > deadline:
            return diff
        time.sleep(0.2)


def connect_row(diff: dict[str, Any], port: int) -> dict[str, Any] | None:
    obj = f"127.0.0.1:{port}"
    return next((r for r in diff["rows"] if r["object"] == obj), None)


def test_preseed_enforce_diff_accept_round_trip(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "connects.py"
    script.write_text(CONNECTS)
    with socket.socket() as known, socket.socket() as novel:
        for s in (known, novel):
            s.bind(("127.0.0.1", 0))
            s.listen(16)
        kport, nport = known.getsockname()[1], novel.getsockname()[1]

        def run() -> str:
            r = ctl(daemon, "run", "--agent", AGENT, "--", sys.executable, str(script),
                    str(kport), str(nport))  # fmt: skip
            assert r.returncode == 0, f"the agent must run (its exec is imported): {r.stderr}"
            return r.stdout.strip()

        # 1. pre-seed: the agent does not exist yet; import creates it with baseline and modes
        seed = tmp_path / "seed.yaml"
        seed.write_text(seed_document(kport))
        bad = tmp_path / "bad.yaml"
        bad.write_text(seed.read_text().replace(f"port: {kport}", "port: 0"))
        r = ctl(daemon, "baseline", "import", AGENT, str(bad))
        assert r.returncode == 1 and "spec.connect[0]: port 0 is out of range" in r.stderr
        assert ctl(daemon, "agent", AGENT).returncode == 1, "a bad document changes nothing"
        r = ctl(daemon, "baseline", "import", AGENT, str(seed))
        assert r.returncode == 0, r.stderr
        assert "was created" in r.stdout
        agent = ctl_json(daemon, "agent", AGENT)
        assert agent["modes"] == {"exec": "enforce", "open": "alert", "connect": "alert"}
        assert agent["source"] == "import" and agent["cgroups"] == 0

        # 2. first run: exec=enforce would kill an unknown interpreter; the imported one runs.
        # connect=alert: the novel port works and is reported.
        assert run() == "ok ok"
        agent = ctl_json(daemon, "agent", AGENT)
        assert agent["source"] == "run", "the pre-seeded agent is the one that ran"
        diff = wait_diff(daemon, lambda d: connect_row(d, nport) is not None)
        row = connect_row(diff, nport)
        assert row is not None and row["verdicts"] == ["would-deny"], diff
        assert connect_row(diff, kport) is None, "the imported peer is no deviation"

        # 3. enforce: the imported peer is allowed, the novel one denied in the kernel
        assert ctl(daemon, "mode", AGENT, "enforce").returncode == 0
        time.sleep(1.1)  # the kernel's repeat suppression window (1s in this config)
        assert run() == "ok EPERM"
        diff = wait_diff(daemon, lambda d: (connect_row(d, nport) or {}).get("count", 0) >= 2)
        row = connect_row(diff, nport)
        assert row is not None and row["verdicts"] == ["denied"] and row["count"] >= 2, diff
        table = ctl(daemon, "diff", AGENT)
        assert table.returncode == 0 and f"127.0.0.1:{nport}" in table.stdout
        assert "denied" in table.stdout and f"view {ctl_json(daemon, 'diff', AGENT)['view']}" in (
            table.stdout
        )

        # 4. accept exactly that connect: it passes, and the deviation is gone
        r = ctl(daemon, "accept", AGENT, "--connect", f"127.0.0.1:{nport}")
        assert r.returncode == 0, r.stderr
        assert f"+ connect 127.0.0.1:{nport} (host)" in r.stdout
        assert run() == "ok ok"
        assert connect_row(ctl_json(daemon, "diff", AGENT, "--flat"), nport) is None
        r = ctl(daemon, "accept", AGENT, "--connect", "127.0.0.1:9")
        assert r.returncode == 1 and "no pending deviation" in r.stderr

        # 5. provenance: imported entries are marked, the accepted one too
        base = ctl_json(daemon, "baseline", AGENT)
        conns = {c["port"]: c for c in base["connect"]}
        assert conns[kport]["source"] == "imported" and "origin" not in conns[kport]
        assert conns[nport]["source"] == "accepted"
        assert {e["source"] for e in base["exec"]} == {"imported"}
        assert {e["origin"] for e in base["exec"]} == {"learned"}
        assert base["annotations"] == {"reviewed-by": "alice"}
        assert base["imports"][0]["strategy"] == "merge"

        # 6. export -> import -> export: the same bytes
        first = ctl(daemon, "baseline", "export", AGENT)
        assert first.returncode == 0
        lines = first.stdout.splitlines()
        assert f"  - {{address: 127.0.0.1, port: {kport}, source: imported}}" in lines
        assert f"  - {{address: 127.0.0.1, port: {nport}, source: accepted}}" in lines
        assert "  modes: {exec: enforce, open: enforce, connect: enforce}" in lines
        exported = tmp_path / "exported.yaml"
        exported.write_text(first.stdout)
        r = ctl(daemon, "baseline", "import", AGENT, str(exported), "--replace")
        assert r.returncode == 0 and "0 added, 0 removed" in r.stdout, r.stdout + r.stderr
        second = ctl(daemon, "baseline", "export", AGENT)
        assert second.stdout == first.stdout
        js = ctl(daemon, "-o", "json", "baseline", "export", AGENT)
        ports = [c["port"] for c in json.loads(js.stdout)["spec"]["connect"]]
        assert ports == sorted([kport, nport])  # canonical: sorted (the ports are random)

        # 7. replace without the accepted peer, in enforce: the kernel lists are swapped whole,
        # the peer is denied again and the rest still works
        reviewed = tmp_path / "reviewed.yaml"
        reviewed.write_text("".join(ln + "\n" for ln in lines if f"port: {nport}," not in ln))
        r = ctl(daemon, "baseline", "import", AGENT, str(reviewed), "--replace")
        assert r.returncode == 0 and "0 added, 1 removed" in r.stdout, r.stdout + r.stderr
        time.sleep(1.1)
        assert run() == "ok EPERM"
        assert ctl(daemon, "baseline", "export", AGENT).stdout == reviewed.read_text()

        # 8. the daemon keeps all of it across a restart (registry + schema-2 baseline files)
        daemon.stop()
        daemon.start()
        assert ctl(daemon, "baseline", "export", AGENT).stdout == reviewed.read_text()
        assert ctl_json(daemon, "baseline", AGENT)["imports"][-1]["strategy"] == "replace"


def test_a_full_allow_list_map_is_a_conflict_and_changes_nothing() -> None:
    """The connect allow-list map holds 8 entries on this node, shared by all agents. An
    import that does not fit (a swap needs room for the old and the new lists) is a 409 that
    leaves the agent as it was and nothing behind in the map; it was a 500."""

    def document(name: str, first: int, n: int) -> str:
        hosts = range(first, first + n)
        peers = "".join(f"  - {{address: 10.0.0.{i}, port: 443}}\n" for i in hosts)
        return (f"apiVersion: corral.io/v1\nkind: Baseline\nmetadata: {{name: {name}}}\n"
                f"spec:\n  connect:\n{peers}")  # fmt: skip

    config = "kernel: {suppress_window: 1s, net_allow_entries: 8}\n"
    with corrald("full", config) as d, unix_session(str(d.sock)) as s:

        def put(name: str, first: int, n: int) -> Any:
            url = f"{BASE_URL}/v1/agents/{name}/baseline"
            return s.put(url, data=document(name, first, n), timeout=10)

        assert put("a", 1, 6).status_code == 201
        before = s.get(f"{BASE_URL}/v1/agents/a/baseline?format=export", timeout=10).text
        for name, first, n in (("a", 7, 2), ("b", 20, 3)):
            r = put(name, first, n)
            assert r.status_code == 409, r.text
            message = r.json()["error"]["message"]
            assert f"nothing imported into {name}" in message and "net_allow_entries=8" in message
        assert s.get(f"{BASE_URL}/v1/agents/a/baseline?format=export", timeout=10).text == before
        assert s.get(f"{BASE_URL}/v1/agents/b", timeout=10).status_code == 404
        assert put("b", 20, 2).status_code == 201, "the failed imports left entries in the map"
        assert d.proc is not None and d.proc.poll() is None
