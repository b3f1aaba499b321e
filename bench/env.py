"""What every benchmark needs: the machine it ran on, its load, cgroups, the C helpers, and a
check for BPF programs of other corral instances that would contaminate a measurement."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "bench"
CSRC = Path(__file__).resolve().parent / "csrc"
CC = os.environ.get("CC", "cc")

# A run is flagged noisy when the 1-minute load average exceeds this (the benchmark itself
# keeps about one CPU busy; the machine has `cores` of them).
NOISY_LOAD_PER_CORE = 0.75


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, virtualisation: printed with every figure."""
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    virt = ""
    if shutil.which("systemd-detect-virt"):
        r = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True)
        virt = r.stdout.strip()
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "virtualization": virt or "none",
        "python": platform.python_version(),
        "cc": compiler_version(),
    }


def compiler_version() -> str:
    try:
        r = subprocess.run([CC, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"
    return r.stdout.splitlines()[0].strip()


def load() -> dict[str, float]:
    """Load averages now; `noisy` when the 1-minute one says others were using the machine."""
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    return {
        "load1": round(one, 2),
        "load5": round(five, 2),
        "load15": round(fifteen, 2),
        "noisy": one > NOISY_LOAD_PER_CORE * cores,
        "at": round(time.time(), 1),
    }


# ---- C helpers --------------------------------------------------------------------------------


def build_helpers() -> dict[str, Path]:
    """Compiles bench/csrc with the system compiler (at bench time, every run)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    out = _helper_paths()
    bpf = [os.environ.get("CLANG", "clang"), "-g", "-O2", "-target", "bpf", "-Wall", "-Werror"]
    bpf += [f"-D__TARGET_ARCH_{_BPF_ARCH.get(platform.machine(), platform.machine())}"]
    cmds = [
        [CC, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out["loop"]), str(CSRC / "loop.c")],
        [CC, "-O2", "-static", "-nostdlib", "-o", str(out["exit0"]), str(CSRC / "exit0.c")],
        [
            *bpf,
            f"-I{REPO / 'bpf'}",
            "-c",
            str(CSRC / "ingest_gen.bpf.c"),
            "-o",
            str(out["ingest_gen"]),
        ],
    ]
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(
                f"building a benchmark helper failed ({' '.join(cmd)}):\n{r.stderr}\n"
                "install a C compiler, libc headers and clang (Debian: build-essential clang; "
                "`make deps` installs them)"
            )
    return out


PROD_VENV = BUILD / "venv"


def production_install() -> Path:
    """The bin directory of a virtualenv holding corral as users install it: `pip install .`
    of this tree, its runtime dependencies only (the Dockerfile installs the same). The
    development venv also holds the test extras, and some change corrald's footprint (rich,
    pulled in by schemathesis, is imported by structlog when present: ~4 MiB of RSS).
    Created on first use (the dependencies come from the package index), corral itself
    reinstalled from this tree on every run."""
    py = PROD_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PROD_VENV)], check=True)
        _pip(py, ["install", "--quiet", str(REPO)])
    else:
        _pip(py, ["install", "--quiet", "--no-deps", "--force-reinstall", str(REPO)])
    return py.parent


def _pip(py: Path, args: list[str]) -> None:
    r = subprocess.run(
        [str(py), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(
            f"installing corral into {PROD_VENV} failed:\n{r.stderr[-3000:]}\n"
            f"remove {PROD_VENV} and run again; pip needs the package index for the first run"
        )


_BPF_ARCH = {"x86_64": "x86", "aarch64": "arm64"}


def _helper_paths() -> dict[str, Path]:
    return {
        "loop": BUILD / "corral-bench-loop",
        "exit0": BUILD / "exit0",
        "ingest_gen": BUILD / "ingest_gen.bpf.o",
    }


def helpers() -> dict[str, Path]:
    """The helpers built by build_helpers() (inside the VM: built on the host, shared)."""
    out = _helper_paths()
    missing = [str(p) for p in out.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `make bench` (it builds them)")
    return out


def run_json(cmd: list[str], timeout: float = 600) -> list[dict[str, Any]]:
    """Runs a helper; returns its JSON lines, raising with its stderr when it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or any("error" in row for row in rows):
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {r.returncode}): {r.stdout}{r.stderr}")
    return rows


# ---- cgroups and mounts -----------------------------------------------------------------------


@contextlib.contextmanager
def cgroup(prefix: str = "corral-bench") -> Iterator[Path]:
    """A fresh cgroup v2 directory under the root; removed (after its processes) at the end."""
    from corral.kernel.loader import cgroup2_root

    cg = cgroup2_root() / f"{prefix}-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        yield cg
    finally:
        rmdir_cgroup(cg)


def rmdir_cgroup(cg: Path) -> None:
    for child in sorted(cg.rglob("*"), key=lambda p: -len(p.parts)):
        if child.is_dir():
            _rmdir_retry(child)
    _rmdir_retry(cg)


def _rmdir_retry(p: Path) -> None:
    for _ in range(100):
        try:
            p.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


@contextlib.contextmanager
def tmpfs(prefix: str = "/run/corral-bench") -> Iterator[Path]:
    """A private tmpfs mount (timed files never touch a disk or 9p); unmounted at the end."""
    d = Path(f"{prefix}-{uuid.uuid4().hex[:8]}")
    d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "corral-bench", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        with contextlib.suppress(OSError):
            d.rmdir()


# ---- other BPF programs -----------------------------------------------------------------------


def corral_programs() -> list[dict[str, Any]]:
    """corral programs loaded in this kernel right now (ours and anyone else's)."""
    if not shutil.which("bpftool"):
        return []
    r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    try:
        progs = json.loads(r.stdout or "[]")
    except ValueError:
        return []
    return [p for p in progs if str(p.get("name", "")).startswith("corral_")]


def foreign_corral_programs(ours: int) -> int:
    """How many corral programs besides our `ours` are loaded (another helper's test run, a
    leftover pin): they run for every process of the machine, so a measurement taken meanwhile
    is contaminated and is flagged."""
    return max(0, len(corral_programs()) - ours)


def wait_alone(ours: int, timeout: float = 120.0) -> float:
    """Waits (up to timeout) until no other corral programs are loaded; returns seconds waited.
    Another helper's test run loads corral programs that run for every process on the machine:
    a sample taken meanwhile measures them too."""
    t0 = time.monotonic()
    while foreign_corral_programs(ours) and time.monotonic() - t0 < timeout:
        time.sleep(1.0)
    return time.monotonic() - t0


def quiet() -> None:
    """corral's own structlog output at warning level (the benchmarks print their progress)."""
    from corral import logs

    logs.setup("warning", "console")


def part_main(
    argv: list[str] | None,
    doc: str | None,
    add_args: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], dict[str, Any]],
) -> int:
    """The command line every part has (`python -m bench.<part>`): its options, --out FILE."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    add_args(ap)
    ap.add_argument("--out", type=Path, help="write the JSON result here (default: stdout)")
    a = ap.parse_args(argv)
    quiet()
    text = json.dumps(run(a), indent=1)
    if a.out:
        a.out.write_text(text)
    else:
        print(text)
    return 0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
