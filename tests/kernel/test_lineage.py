"""Exec lineage in the kernel (policy/lineage.py): a program allowed for one caller is denied
for another, and a script's interpreter is judged with the script as its caller. Runs where
execs are denied with EPERM (BPF LSM and fmod_ret, in the VM suite); the fallback kills after
the exec and cannot know the caller (it gets every program in the any-caller list)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import pytest

from corral.policy.lineage import caller_list

from .conftest import Agent, Collector, exec_child

pytestmark = pytest.mark.deny

PYTHON = os.path.realpath(sys.executable)  # the forked test child's own executable
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
TRUE = os.path.realpath(shutil.which("true") or "/bin/true")


def allow(agent: Agent, callers: dict[str, list[str]], anyone: list[str] = ()) -> None:
    """Exec entries per caller (caller path -> programs) and for any caller."""
    base = agent.lists["exec"]
    ids = {c: caller_list(base, i) for i, c in enumerate(sorted(callers), 1)}
    for caller, programs in callers.items():
        agent.kern.allow_paths("exec", ids[caller], programs)
    agent.kern.allow_paths("exec", base, list(anyone))
    agent.kern.set_callers(base, ids)
    agent.configure(exec="enforce")


def test_a_program_is_allowed_for_its_caller_only(agent: Agent) -> None:
    allow(agent, {PYTHON: [SH, TRUE]})
    assert agent.run(exec_child(TRUE)).exit_code == 0  # python -> true
    # python -> sh is allowed, sh -> true is not: sh reports the failed exec (126)
    res = agent.run(exec_child(SH, "-c", f"{TRUE}; exit $?"))
    assert res.exit_code == 126, res
    allow(agent, {PYTHON: [SH, TRUE], SH: [TRUE]})
    assert agent.run(exec_child(SH, "-c", f"{TRUE}; exit $?")).exit_code == 0


def test_any_caller_entries_still_allow_everyone(agent: Agent) -> None:
    allow(agent, {PYTHON: [SH]}, anyone=[TRUE])
    assert agent.run(exec_child(SH, "-c", f"{TRUE}; exit $?")).exit_code == 0


def test_a_scripts_interpreter_is_judged_with_the_script_as_caller(
    agent: Agent, workdir: Path
) -> None:
    script = workdir / "tool.sh"
    script.write_text(f"#!{SH}\nexit 7\n")
    script.chmod(0o755)
    # python may run the script and sh, but the script's own interpreter is not allowed for it
    allow(agent, {PYTHON: [str(script), SH]})
    res = agent.run(exec_child(str(script)))
    assert res.error == errno.EPERM, res
    allow(agent, {PYTHON: [str(script)], str(script): [SH]})
    assert agent.run(exec_child(str(script))).exit_code == 7


def test_exec_events_name_their_caller(agent: Agent, collector: Collector) -> None:
    allow(agent, {PYTHON: [SH]})
    agent.configure(exec="alert")
    res = agent.run(exec_child(SH, "-c", f"{TRUE}; exit $?"))
    assert res.exit_code == 0
    ev = collector.wait(
        lambda e: e.dimension == "exec" and e.path == TRUE and e.agent_id == agent.id
    )
    assert ev.caller == SH, ev
    assert "nocaller" not in ev.flags
