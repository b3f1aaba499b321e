"""Fixtures for the bpfkit tests. Everything runs against the real kernel (root needed)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

BINDINGS = Path(__file__).resolve().parent.parent
PROGS = Path(__file__).resolve().parent / "progs"
BPFFS = Path("/sys/fs/bpf")

if str(BINDINGS) not in sys.path:
    sys.path.insert(0, str(BINDINGS))

import bpfkit  # noqa: E402

_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="!!! bpfkit tests load real BPF programs: run them as root !!!")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


def _compile(src: Path, out_dir: Path) -> Path:
    clang = shutil.which("clang") or ("/usr/bin/clang" if Path("/usr/bin/clang").exists() else None)
    if clang is None:
        pytest.skip(
            "!!! clang NOT FOUND: cannot compile the test BPF programs; "
            "install clang to run the bpfkit tests !!!"
        )
    out = out_dir / (src.name.removesuffix(".c") + ".o")
    cmd = [clang, "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch and Path(f"/usr/include/{multiarch}").is_dir():
        cmd[1:1] = [f"-I/usr/include/{multiarch}"]  # <asm/types.h> on Debian/Ubuntu
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"compiling {src.name} failed:\n{res.stderr}")
    return out


@pytest.fixture(scope="session")
def bpf_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bpfkit-progs")


@pytest.fixture(scope="session")
def testprog_path(bpf_build_dir: Path) -> Path:
    return _compile(PROGS / "testprog.bpf.c", bpf_build_dir)


@pytest.fixture(scope="session")
def bad_prog_path(bpf_build_dir: Path) -> Path:
    return _compile(PROGS / "bad.bpf.c", bpf_build_dir)


@pytest.fixture
def obj(testprog_path: Path) -> Iterator[bpfkit.BpfObject]:
    """The test object, opened and loaded."""
    with bpfkit.BpfObject.open_file(testprog_path) as o:
        o.load()
        yield o


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A fresh directory on bpffs (mounted if needed); pins left inside are removed."""
    if not os.path.ismount(BPFFS):
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
    d = BPFFS / f"bpfkit-test-{os.getpid()}-{next(_counter)}"
    d.mkdir()
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def cgroup2_mount() -> Path | None:
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A fresh cgroup v2 directory; processes left in it are moved to the root on teardown."""
    root = cgroup2_mount()
    if root is None:
        pytest.skip("!!! no cgroup2 mount found in /proc/mounts !!!")
    cg = root / f"bpfkit-test-{os.getpid()}-{next(_counter)}"
    cg.mkdir()
    try:
        yield cg
    finally:
        for pid in (cg / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # already exited
                (root / "cgroup.procs").write_text(pid)
        cg.rmdir()
