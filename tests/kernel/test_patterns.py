"""Learned path patterns in the kernel: the BPF glob matcher agrees with the reference matcher
(policy.patterns.matches) on real opens and execs by a process in a real cgroup. Runs on every
backend: on the host the open tracepoint reports and the exec tracepoint kills, in the VM the
LSM/fmod_ret programs deny."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.policy.patterns import kernel_groups, matches

from .conftest import Agent, Collector, exec_child

TRUE = shutil.which("true") or "/bin/true"
_lists = iter(range(900_000, 1_000_000))


def open_all(paths: list[str]) -> Callable[[], list[str]]:
    def body() -> list[str]:
        out = []
        for p in paths:
            try:
                with open(p, "rb"):
                    out.append("opened")
            except OSError as e:
                out.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
        return out

    return body


def reported(collector: Collector, pid: int, paths: list[str]) -> set[str]:
    """The paths of pid's open events (waits for the last expected one to settle)."""
    events = collector.drain(0.5)
    return {e.path or "" for e in events if e.pid == pid and e.path in paths}


def use_patterns(agent: Agent, dim: str, globs: list[str]) -> None:
    """A fresh list (so earlier reports are not suppressed) holding exactly these patterns."""
    old = agent.lists[dim]
    agent.lists[dim] = next(_lists)
    agent.kern.set_patterns(dim, agent.lists[dim], kernel_groups(globs))
    agent.kern.clear_list(dim, old)


def make_tree(root: Path, names: list[str]) -> list[str]:
    out = []
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        out.append(str(p))
    return out


CASES = [
    "tmpab12cd34",
    "tmpzz99yy00",
    "tmp_short",
    "agent-scratch-k2j9x1ab.json",
    "agent-scratch-k2j9x1ab.jsonx",
    "agent-scratch-.json",
    "2026-12-06T04_24_11_513Z-debug-0.log",
    "2027-01-31T23_59_59_000Z-debug-0.log",
    "2026-12-06T04_24_11_513Z-debug-1.log",
    "d1/f.txt",
    "d22/f.txt",
    "d22/sub/f.txt",
    "dx/f.txt",
    "star*lit",
    "q?lit",
]
GLOBS = [
    "tmp????????",
    "agent-scratch-????????.json",
    "????-??-??T??_??_??_???Z-debug-0.log",
    "d*/f.txt",
    "star*",
    "q?lit",
]


def test_learned_globs_match_like_the_reference(
    agent: Agent, collector: Collector, workdir: Path
) -> None:
    root = workdir / "p"
    paths = make_tree(root, CASES)
    globs = [f"{root}/{g}" for g in GLOBS]
    use_patterns(agent, "open", globs)
    agent.configure(open="alert")
    res = agent.run(open_all(paths))
    assert res.value == ["opened"] * len(paths)
    want = {p for p in paths if not any(matches(g, p) for g in globs)}
    assert reported(collector, res.pid, paths) == want
    # the reference itself, spelled out: what a learned pattern must and must not cover
    assert f"{root}/tmp_short" in want and f"{root}/d22/sub/f.txt" in want
    assert f"{root}/agent-scratch-k2j9x1ab.jsonx" in want
    assert f"{root}/2027-01-31T23_59_59_000Z-debug-0.log" not in want


def test_random_globs_agree_with_the_reference(
    agent: Agent, collector: Collector, workdir: Path
) -> None:
    rnd = random.Random(20261206)
    alphabet = "ab-1"
    names = sorted(
        {
            "/".join(
                "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 6)))
                for _ in range(rnd.randint(1, 2))
            )
            for _ in range(48)
        }
    )
    # a file and a directory cannot share a name: keep the leaves only
    names = [n for n in names if not any(m.startswith(n + "/") for m in names)]
    root = workdir / "r"
    paths = make_tree(root, names)
    for _ in range(10):
        base = rnd.choice(names)
        glob = "".join(c if c == "/" or rnd.random() < 0.5 else rnd.choice("*?*?a") for c in base)
        globs = [f"{root}/{glob}"]
        use_patterns(agent, "open", globs)
        agent.configure(open="alert")
        res = agent.run(open_all(paths))
        want = {p for p in paths if not matches(globs[0], p)}
        assert reported(collector, res.pid, paths) == want, globs[0]


def test_exec_by_pattern_runs_and_others_are_stopped(agent: Agent, workdir: Path) -> None:
    tools = workdir / "tools"
    tools.mkdir()
    ok, other = tools / "run-k2j9x1ab", tools / "run-k2j9x1ab-evil"
    for p in (ok, other):
        shutil.copy(TRUE, p)
        os.chmod(p, 0o755)
    use_patterns(agent, "exec", [f"{tools}/run-????????"])
    agent.configure(exec="enforce")
    assert agent.run(exec_child(str(ok))).exit_code == 0
    res = agent.run(exec_child(str(other)))
    assert res.error == errno.EPERM or res.signal == signal.SIGKILL, res


@pytest.mark.parametrize("length", [1, 120, 230])
def test_hostile_long_names_end_without_a_match(
    agent: Agent, collector: Collector, length: int
) -> None:
    """Star backtracking over long names is bounded and never matches what it should not, and
    a long name a pattern does cover is still found within the matcher's step bound."""
    root = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))  # short: room for 230-byte names
    try:
        target = root / ("a" * length)
        assert len(str(target)) <= 251
        target.write_text("x")
        globs = [f"{root}/*a*a*a*b", f"{root}/?*?*?*?*?*?*?*?*?c"]
        use_patterns(agent, "open", globs)
        agent.configure(open="alert")
        res = agent.run(open_all([str(target)]))
        assert reported(collector, res.pid, [str(target)]) == {str(target)}
        use_patterns(agent, "open", [f"{root}/*a*a*a"])
        agent.configure(open="alert")
        res = agent.run(open_all([str(target)]))
        want = set() if length >= 3 else {str(target)}
        assert reported(collector, res.pid, [str(target)]) == want
    finally:
        shutil.rmtree(root)
