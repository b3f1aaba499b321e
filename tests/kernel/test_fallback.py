"""Fallback backends (no BPF LSM): this host's kernel. Exec is killed, open is observe-only."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.kernel import probe

from .conftest import Agent, Collector, exec_child, open_child

pytestmark = pytest.mark.fallback


def test_probe_matrix_on_a_kernel_without_bpf_lsm() -> None:
    caps = probe.run_probe().capabilities
    assert (caps["connect"]["mode"], caps["connect"]["backend"]) == ("enforce", "cgroup")
    assert (caps["exec"]["mode"], caps["exec"]["backend"]) == ("kill", "tracepoint")
    assert (caps["open"]["mode"], caps["open"]["backend"]) == ("observe-only", "tracepoint")


def test_exec_enforce_kills_before_the_image_runs(
    agent: Agent, workdir: Path, collector: Collector
) -> None:
    marker = workdir / "ran"
    script = workdir / "touch-marker"
    script.write_text(f"#!/bin/sh\necho ran > {marker}\n")
    script.chmod(0o755)
    agent.configure(exec="enforce")
    res = agent.run(exec_child(str(script)))
    assert res.signal == signal.SIGKILL
    assert not marker.exists(), "the killed program ran"
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "exec")
    assert ev.verdict == "killed" and ev.backend == "tracepoint"
    assert ev.path == str(script)


def test_open_enforce_is_reported_not_denied(
    agent: Agent, workdir: Path, collector: Collector
) -> None:
    f = workdir / "secret"
    f.write_text("s")
    agent.configure(open="enforce")
    res = agent.run(open_child(f))
    assert res.value == "opened"
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "open" and e.path == str(f))
    assert ev.verdict == "would-deny" and "noenforce" in ev.flags


def test_open_observe_reports_the_path(agent: Agent, workdir: Path, collector: Collector) -> None:
    f = workdir / "data.txt"
    f.write_text("d")
    agent.configure(open="observe")
    res = agent.run(open_child(f))
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "open" and e.path == str(f))
    assert ev.verdict == "allowed" and ev.agent_id == agent.id


def test_exec_baselined_survives_enforce(agent: Agent, workdir: Path) -> None:
    ok = workdir / "ok"
    shutil.copy(shutil.which("true") or "/bin/true", ok)
    agent.kern.allow_paths("exec", agent.lists["exec"], [str(ok)])
    agent.configure(exec="enforce")
    assert agent.run(exec_child(str(ok))).exit_code == 0


def test_a_relative_exec_is_judged_by_its_full_path(
    agent: Agent, workdir: Path, collector: Collector
) -> None:
    """`./tool` names one file: the one in the caller's directory. A baseline of that file does
    not allow a `./tool` elsewhere (the red team's relative-name finding of issue 15)."""
    ok, other = workdir / "ok", workdir / "other"
    for d in (ok, other):
        d.mkdir()
        shutil.copy(shutil.which("true") or "/bin/true", d / "tool")

    def relative(where: Path) -> Callable[[], Any]:
        def body() -> None:
            os.chdir(where)
            exec_child("./tool")()

        return body

    agent.configure(exec="observe")
    seen = agent.run(relative(ok))
    ev = collector.wait(lambda e: e.pid == seen.pid and e.dimension == "exec")
    assert ev.path == str(ok / "tool") and "relative" not in ev.flags, ev
    agent.kern.allow_paths("exec", agent.lists["exec"], [str(ok / "tool")])
    agent.configure(exec="enforce")
    assert agent.run(relative(ok)).exit_code == 0
    assert agent.run(relative(other)).signal == signal.SIGKILL
