"""Sandboxed runtimes against a REAL corrald in kubernetes mode: a kubelet stand-in serves the
identity fixture's PodList (the sandbox/scratch-agent pod has `runtimeClassName: gvisor`), and
one more pod has no runtime class but a process named runsc-sandbox in its real cgroup, as
gVisor's sandbox process is. Both agents are listed as "not covered" with the evidence in
`agents`, `agent`, `-o json`, `status` and /metrics, and ENFORCE is refused for them; an agent of
a plain pod is covered."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.identity.cgroupfs import cgroup2_mount
from tests.daemon.daemons import corrald
from tests.daemon.test_e2e import Daemon, ctl, ctl_json
from tests.daemon.test_identity import load
from tests.daemon.test_metrics_e2e import parse, value
from tests.daemon.unix_http import BASE_URL, unix_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups")

GVISOR_AGENT = "sandbox/Pod/scratch-agent/main"  # runtimeClassName: gvisor in the fixture
PROCESS_AGENT = "agents/CronJob/nightly-eval/eval"  # a runsc-sandbox process in its cgroup
COVERED_AGENT = "agents/Deployment/agent-api/agent"
WHY_GVISOR = "syscalls run in the gVisor sandbox, which host BPF does not see"


@contextlib.contextmanager
def kubelet(doc: dict[str, Any]) -> Iterator[str]:
    """GET /pods answers doc (a PodList) over plain HTTP; yields the URL."""
    body = json.dumps(doc).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name for it
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pods"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def runsc_pod(uid: str) -> Iterator[int]:
    """A real pod cgroup (cgroupfs driver layout) holding a process whose argv[0] is
    runsc-sandbox; yields its pid."""
    top = cgroup2_mount() / f"corral-test-{uuid.uuid4().hex[:10]}"
    pod = top / "kubepods" / "besteffort" / f"pod{uid}"
    pod.mkdir(parents=True)
    proc = subprocess.Popen(["runsc-sandbox", "120"], executable="/bin/sleep")
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"runsc-sandbox"):
        time.sleep(0.01)  # until the child has exec'd
    try:
        (pod / "cgroup.procs").write_text(str(proc.pid))
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        for d in (pod, pod.parent, pod.parent.parent, top):
            for _ in range(50):  # the kernel lets go of a dead process's cgroup soon after
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _podlist(uid: str) -> dict[str, Any]:
    doc = load()
    item = next(i for i in doc["items"] if i["metadata"]["name"].startswith("nightly-eval-"))
    item["metadata"]["uid"] = uid
    return doc


def _wait_agents(d: Daemon, names: set[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        agents = ctl_json(d, "agents")
        assert isinstance(agents, list)
        found = {a["name"]: a for a in agents}
        uncovered = {n for n, a in found.items() if not a["coverage"]["covered"]}
        if names <= uncovered or time.monotonic() > deadline:
            return agents
        time.sleep(0.2)


def test_sandboxed_pods_are_not_covered(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    with runsc_pod(uid) as pid, kubelet(_podlist(uid)) as url:
        config = textwrap.dedent(f"""
            identity:
              source: kubernetes
              kubelet: {{url: "{url}", token_file: "", insecure_skip_tls_verify: true,
                         poll_interval: 0.2s}}
        """)
        with corrald("sandbox", config) as d:
            agents = {a["name"]: a for a in _wait_agents(d, {GVISOR_AGENT, PROCESS_AGENT})}

            # -o json: the coverage and which evidence said so
            gvisor = agents[GVISOR_AGENT]["coverage"]
            assert gvisor == {
                "covered": False,
                "runtime": "gvisor",
                "evidence": "runtimeClassName",
                "detail": "gvisor",
                "pod": "sandbox/scratch-agent",
                "why": f"runtimeClassName gvisor: {WHY_GVISOR}",
            }
            by_process = agents[PROCESS_AGENT]["coverage"]
            assert by_process["evidence"] == "process" and by_process["runtime"] == "gvisor"
            assert by_process["detail"] == f"runsc-sandbox (pid {pid})"
            assert agents[COVERED_AGENT]["coverage"] == {"covered": True}
            assert (
                agents[GVISOR_AGENT]["effective"]["exec"] == "observe (not covered: gvisor sandbox)"
            )

            # the table: one line per agent that is not covered, saying why
            table = ctl(d, "agents")
            assert table.returncode == 0, table.stderr
            lines = table.stdout.splitlines()
            assert f"{GVISOR_AGENT}: not covered: runtimeClassName gvisor: {WHY_GVISOR}" in lines
            assert any(ln.startswith(f"{PROCESS_AGENT}: not covered: process runsc-sandbox")
                       for ln in lines)  # fmt: skip
            assert not any(ln.startswith(f"{COVERED_AGENT}:") for ln in lines)

            one = ctl(d, "agent", GVISOR_AGENT)
            assert one.returncode == 0, one.stderr
            line = next(ln for ln in one.stdout.splitlines() if ln.startswith("coverage:"))
            assert line.split(None, 1)[1] == f"not covered: runtimeClassName gvisor: {WHY_GVISOR}"

            status = ctl_json(d, "status")
            assert isinstance(status, dict)
            not_covered = status["agents"]["not_covered"]
            assert not_covered[GVISOR_AGENT] == f"runtimeClassName gvisor: {WHY_GVISOR}"
            assert PROCESS_AGENT in not_covered and COVERED_AGENT not in not_covered

            metrics = parse(unix_session(str(d.sock)).get(f"{BASE_URL}/metrics", timeout=5).text)
            assert value(metrics, "corral_agent_covered", agent=GVISOR_AGENT) == 0
            assert value(metrics, "corral_agent_covered", agent=PROCESS_AGENT) == 0
            assert value(metrics, "corral_agent_covered", agent=COVERED_AGENT) == 1

            # ENFORCE would deny nothing the agent does: refused, nothing changed
            refused = ctl(d, "mode", GVISOR_AGENT, "enforce")
            assert refused.returncode == 1
            assert f"{GVISOR_AGENT} is not covered: runtimeClassName gvisor" in refused.stderr
            assert "corrald refuses it; nothing changed" in refused.stderr
            again = ctl_json(d, "agent", GVISOR_AGENT)
            assert isinstance(again, dict) and set(again["modes"].values()) == {"observe"}
            alert = ctl(d, "mode", GVISOR_AGENT, "--exec", "alert")
            assert alert.returncode == 0, alert.stderr
