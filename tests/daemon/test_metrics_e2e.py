"""Prometheus metrics from a REAL corrald: scraped over the admin socket (requests and the
documented curl command) and over TCP, parsed with prometheus_client's parsers, and seen to
move after real kernel events (learnt, denied and would-deny connects of a real agent)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.daemons import corrald
from tests.daemon.test_e2e import Daemon, ctl
from tests.daemon.unix_http import BASE_URL, unix_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

CONNECT_PY = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
        print("ok")
    except PermissionError:
        print("EPERM")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value}, through prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def daemon_with_metrics() -> Iterator[tuple[Daemon, int]]:
    port = _free_port()
    with corrald("metrics", f'metrics: {{listen: "127.0.0.1:{port}"}}\n') as d:
        yield d, port


def _wait_for(scrape: Callable[[], Samples], ok: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + 15
    while True:
        samples = scrape()
        if ok(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_metrics_move_with_kernel_events(
    daemon_with_metrics: tuple[Daemon, int], tmp_path: Path
) -> None:
    d, tcp_port = daemon_with_metrics
    session = unix_session(str(d.sock))

    def scrape() -> Samples:
        r = session.get(f"{BASE_URL}/metrics", timeout=5)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(r.text)

    before = scrape()
    assert value(before, "corral_build_info", version="0.1.0", kernel=os.uname().release) == 1
    assert value(before, "corral_ai_agents") == 0
    assert value(before, "corral_enforcement_info", dimension="connect", backend="cgroup",
                 enforcement="enforce") == 1  # fmt: skip
    consumed = value(before, "corral_ringbuf_events_total")

    agent, script = f"metrics-{uuid.uuid4().hex[:6]}", tmp_path / "connect.py"
    script.write_text(CONNECT_PY)
    with socket.socket() as srv, socket.socket() as other:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port, novel = srv.getsockname()[1], other.getsockname()[1]

        def run(p: int) -> str:
            r = ctl(d, "run", "--agent", agent, "--", sys.executable, str(script), str(p))
            return r.stdout.strip()

        # observe: the connect is novel, allowed and learnt
        assert run(port) == "ok"
        learnt = _wait_for(
            scrape,
            lambda s: s.get(("corral_agent_baseline_entries",
                             (("agent", agent), ("dimension", "connect")))) == 1,
        )  # fmt: skip
        assert value(learnt, "corral_agent_mode", agent=agent, dimension="connect",
                     mode="observe") == 1  # fmt: skip
        assert value(learnt, "corral_agent_mode", agent=agent, dimension="connect",
                     mode="enforce") == 0  # fmt: skip
        assert value(learnt, "corral_agent_decisions_total", agent=agent, dimension="connect",
                     verdict="novel") >= 1  # fmt: skip
        assert value(learnt, "corral_agents", dimension="connect", mode="observe") == 1
        assert value(learnt, "corral_cgroups") >= 0  # present; the run cgroup is swept once empty
        assert value(learnt, "corral_ringbuf_events_total") > consumed

        # alert: a novel port is allowed and counted as would_deny
        assert ctl(d, "mode", agent, "--connect", "alert").returncode == 0
        assert run(novel) == "ok"
        # enforce: the same novel port is denied with EPERM, the baselined one still allowed
        assert ctl(d, "mode", agent, "--connect", "enforce").returncode == 0
        assert run(novel) == "EPERM"
        assert run(port) == "ok"

    def key(verdict: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        labels = (("agent", agent), ("dimension", "connect"), ("verdict", verdict))
        return ("corral_agent_decisions_total", labels)

    after = _wait_for(scrape, lambda s: s.get(key("denied"), 0) >= 1)
    assert after[key("would_deny")] >= 1
    assert after[key("denied")] >= 1
    assert after[key("allowed")] >= 1
    assert value(after, "corral_agent_mode", agent=agent, dimension="connect", mode="enforce") == 1
    assert value(after, "corral_agents", dimension="connect", mode="enforce") == 1
    assert value(after, "corral_agent_events_dropped_total", agent=agent, dimension="connect") == 0
    assert value(after, "corral_agent_deviations", agent=agent) >= 1
    consumed = value(learnt, "corral_ringbuf_events_total")
    assert value(after, "corral_ringbuf_events_total") > consumed

    # the same registry over TCP, and only /metrics there: the admin API is never on TCP
    tcp = requests.get(f"http://127.0.0.1:{tcp_port}/metrics", timeout=5)
    assert tcp.status_code == 200
    assert value(parse(tcp.text), "corral_agent_mode", agent=agent, dimension="connect",
                 mode="enforce") == 1  # fmt: skip
    assert requests.get(f"http://127.0.0.1:{tcp_port}/v1/status", timeout=5).status_code == 404

    # OpenMetrics when asked for
    om = session.get(
        f"{BASE_URL}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5
    )
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(om.text)}
    assert {"corral_agent_decisions", "corral_ringbuf_events", "corral_agent_mode"} <= names

    # the command docs/metrics.md gives
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sf", "--unix-socket", str(d.sock), "http://localhost/metrics"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert value(parse(out.stdout), "corral_agent_baseline_entries", agent=agent,
                     dimension="connect") == 1  # fmt: skip


def test_busy_metrics_port_stops_corrald_with_a_clear_message() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = f'metrics: {{listen: "127.0.0.1:{port}"}}\n'
        with corrald("busy", config, start=False) as d:
            with contextlib.suppress(AssertionError):  # "corrald exited" (or up for an instant)
                d.start()
            assert d.proc is not None and d.proc.wait(15) == 1
            assert f"metrics.listen 127.0.0.1:{port}: cannot listen" in d.logs()
            assert not d.sock.exists(), "the admin socket is closed again"


class _Kubelet(http.server.BaseHTTPRequestHandler):
    """GET /pods: an empty PodList, or 500 for every request after the first two."""

    hits = 0

    def do_GET(self) -> None:  # http.server's name for it
        type(self).hits += 1
        status, body = (200, {"kind": "PodList", "items": []}) if self.hits <= 2 else (500, {})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_kubelet_poll_latency_and_errors() -> None:
    """A daemon in kubernetes mode against a local kubelet stand-in that answers twice, then
    fails: poll latencies, errors and the last success are exported."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Kubelet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pods"
    config = textwrap.dedent(f"""
        identity:
          source: kubernetes
          kubelet: {{url: "{url}", token_file: "", insecure_skip_tls_verify: true,
                     poll_interval: 0.1s}}
    """)
    try:
        with corrald("kubelet", config) as d:
            session = unix_session(str(d.sock))

            def scrape() -> Samples:
                return parse(session.get(f"{BASE_URL}/metrics", timeout=5).text)

            s = _wait_for(scrape, lambda s: s.get(("corral_kubelet_poll_errors_total", ())))
            assert value(s, "corral_kubelet_poll_errors_total") >= 1
            count = value(s, "corral_kubelet_poll_duration_seconds_count")
            assert count >= 3  # two good answers and at least one failure
            assert value(s, "corral_kubelet_poll_duration_seconds_bucket", le="+Inf") == count
            assert value(s, "corral_kubelet_poll_duration_seconds_sum") > 0
            last = value(s, "corral_kubelet_last_success_timestamp_seconds")
            assert time.time() - 60 < last <= time.time()
    finally:
        server.shutdown()
        server.server_close()
