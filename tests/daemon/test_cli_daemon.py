"""corralctl against a real corrald: what its tables say about real agents in real cgroups
(test_cli.py drives corralctl against fake services)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon.test_e2e import BIN, Daemon, ctl, ctl_json, running_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups")
SLOW_SWEEP = "promotion: {check_interval: 1h}\n"  # finished runs stay registered meanwhile


def cgroups_column(d: Daemon, agent: str) -> str:
    r = ctl(d, "agents")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[-1] == "CGROUPS", lines[0]
    return next(ln for ln in lines if ln.startswith(f"{agent} ")).split()[-1]


def test_agents_counts_the_cgroups_that_hold_a_process(tmp_path: Path) -> None:
    """`corralctl agents` counted the cgroup of every run until corrald swept the finished
    ones (every promotion.check_interval): a run that had exited still showed. It counts the
    live ones; `agent NAME` lists every registered cgroup, each saying whether it is live."""
    with running_daemon(tmp_path, SLOW_SWEEP) as d:
        r = ctl(d, "run", "--agent", "counted", "--", sys.executable, "-c", "pass")
        assert r.returncode == 0, r.stderr
        assert cgroups_column(d, "counted") == "0"

        hold = tmp_path / "hold"
        wait = f"while [ ! -e {hold} ]; do sleep 0.05; done"
        running = subprocess.Popen(
            [str(BIN / "corralctl"), "--socket", str(d.sock), "run", "--agent", "counted", "--",
             "sh", "-c", wait],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while cgroups_column(d, "counted") != "1" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert cgroups_column(d, "counted") == "1"
            agent = ctl_json(d, "agent", "counted")
            assert isinstance(agent, dict) and agent["cgroups"] == 1
            assert sorted(w["live"] for w in agent["workloads"]) == [False, True]
        finally:
            hold.touch()
            assert running.wait(30) == 0
        assert cgroups_column(d, "counted") == "0"
        agent = ctl_json(d, "agent", "counted")
        assert isinstance(agent, dict)
        for w in agent["workloads"]:  # not swept for an hour: removed here
            with contextlib.suppress(OSError):
                os.rmdir(w["cgroup"])
