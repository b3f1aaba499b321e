"""`pip install .` from a fresh checkout (no BPF objects built) gives a working corral: setup.py
runs `make bpf`, the wheel carries the objects and corral.h, the entry points work. And
`make clean` removes build outputs only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def checkout(dst: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files not ignored): no build outputs."""
    files = (
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "ls-files",
                "--cached",
                "--others",
                "--exclude-standard",
                "-z",
            ],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    assert not list(dst.glob("daemon/corral/bpf/*.o")), "a fresh checkout has no objects"
    return dst


def test_pip_install_dot_builds_and_ships_the_bpf_objects(tmp_path: Path) -> None:
    src = checkout(tmp_path / "src")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    r = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = list((venv / "lib").glob("python3*/site-packages/corral/bpf"))
    assert data, "corral/bpf installed"
    assert {p.name for p in data[0].iterdir()} >= {"corral.bpf.o", "probe.bpf.o", "corral.h"}
    for tool in ("corrald", "corralctl"):
        h = subprocess.run([str(venv / "bin" / tool), "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and tool in h.stdout
    if os.geteuid() == 0:
        p = subprocess.run([str(venv / "bin/corrald"), "probe", "-o", "json"],
                           capture_output=True, text=True)  # fmt: skip
        assert p.returncode in (0, 3), p.stderr
        assert json.loads(p.stdout)["checks"]["btf"]["ok"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_removes_build_outputs_only(tmp_path: Path) -> None:
    src = checkout(tmp_path / "src")
    out = src / "daemon/corral/bpf"
    out.mkdir(parents=True, exist_ok=True)
    for built in ("corral.bpf.o", "probe.bpf.o", "corral.h"):
        (out / built).write_text("x")
    (src / "build").mkdir()
    (src / "dist").mkdir()
    (src / "dist/corral-0.1.0-py3-none-any.whl").write_text("a wheel someone will ship")
    (src / ".venv/bin").mkdir(parents=True)
    r = subprocess.run(["make", "-C", str(src), "clean"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not list(out.glob("*.o")) and not (out / "corral.h").exists()
    assert not (src / "build").exists()
    kept = ["bpf/vmlinux.h", "bpf/corral.h", "config/corral.yaml", "dist", ".venv", "examples"]
    for path in kept:
        assert (src / path).exists(), f"make clean removed {path}"
