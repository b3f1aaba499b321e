"""fmod_ret resolves paths as BPF LSM does.

bpf_d_path is not allowed at security_bprm_check, so the fmod_ret exec check reads the path that
its security_file_open program resolved when execve opened the program (open_exec). Here both
backends watch the same operations in one boot (BPF LSM active, so both run) and must report
the same paths: through a symlink, a relative exec, a script and its interpreter, a /proc path.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from corral.kernel.loader import Backends, Kernel

from .conftest import Collector, exec_child, make_agent

pytestmark = pytest.mark.lsm_active

TRUE = shutil.which("true") or "/bin/true"


def _operations(workdir: Path) -> list:
    bindir = workdir / "bin"
    bindir.mkdir(exist_ok=True)
    shutil.copy(TRUE, bindir / "tool")
    (workdir / "link-to-tool").unlink(missing_ok=True)
    (workdir / "link-to-tool").symlink_to(bindir / "tool")
    script = bindir / "script"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    (data / "f.txt").write_text("x")
    (workdir / "data-link").unlink(missing_ok=True)
    (workdir / "data-link").symlink_to(data)

    def relative_exec() -> None:
        os.chdir(bindir)
        exec_child("./tool")()

    def opens() -> str:
        for p in (workdir / "data-link" / "f.txt", Path(f"/proc/{os.getpid()}/status")):
            with open(p, "rb") as f:
                f.read(1)
        return "opened"

    return [
        exec_child(str(workdir / "link-to-tool")),
        relative_exec,
        exec_child(str(script)),
        opens,
    ]


def _seen(family: str, workdir: Path) -> list[tuple[str, str, str]]:
    with Kernel(Backends.choose(family)) as k:
        k.activate()
        collector = Collector(k, [])
        try:
            with make_agent(k) as agent:
                agent.configure(exec="observe", open="observe")
                for op in _operations(workdir):
                    agent.run(op)
                time.sleep(0.2)
                evs = collector.drain()
        finally:
            collector.close()
    wanted = ("tool", "script", "/bin/sh", "/bin/dash", "f.txt", "/proc/")
    out = {
        (e.dimension, e.path, e.verdict) for e in evs if e.path and any(w in e.path for w in wanted)
    }
    return sorted(out)


def test_fmod_ret_paths_equal_lsm_paths(workdir: Path) -> None:
    lsm = _seen("lsm", workdir)
    fmod = _seen("fmod_ret", workdir)
    assert fmod == lsm
    paths = {p for _, p, _ in lsm}
    assert str(workdir / "bin" / "tool") in paths  # symlink and ./tool resolved
    assert str(workdir / "data" / "f.txt") in paths
    assert "/proc/*/status" in paths
