"""The syscall benchmark inside QEMU (virtme-ng, TCG) on Debian's 6.1 and 6.12 kernels booted with
BPF LSM, so the LSM backend is measured. Timings under TCG are emulated: only the ratios between
states measured in the same boot are reported. The guest prints its result on one line that
starts with bench.syscalls.VM_MARKER.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.vm.run_vm import LSM_APPEND, find_kernel, vng

from . import env
from .syscalls import VM_MARKER

KERNELS = ("6.1", "6.12")


def guest_command(python: str, rounds: int, target_s: float) -> str:
    return (
        f"cd {shlex.quote(str(env.REPO))} && PYTHONDONTWRITEBYTECODE=1 {shlex.quote(python)} "
        f"-m bench.syscalls --vm --rounds {rounds} --target-seconds {target_s}"
    )


def boot(
    python: str, kernel: str, command: str, cpus: int, append: str, timeout: int, log: Path
) -> tuple[str, float]:
    """Boots kernel under QEMU running command; (everything printed, seconds). The text is kept
    in log as well."""
    cmd, envp = vng(python, kernel, command, cpus, append=append)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=envp, capture_output=True, text=True, timeout=timeout)
        text = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        text = str(e.stdout or "") + f"\nTIMEOUT after {timeout}s"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    return text, round(time.monotonic() - t0, 1)


def marked(text: str, marker: str) -> dict[str, Any] | None:
    """The JSON the guest printed on the line starting with marker."""
    for line in text.splitlines():
        if line.startswith(marker):
            out: dict[str, Any] = json.loads(line[len(marker) :])
            return out
    return None


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_kernel(
    series: str, python: str, rounds: int, target_s: float, cpus: int, timeout: int
) -> dict[str, Any]:
    kernel = find_kernel(series)
    if kernel is None:
        return {"series": series, "error": f"no /boot/vmlinuz-{series}*: run `make vm-deps`"}
    env.log(f"vm: booting {kernel} (TCG, {cpus} vCPU)")
    load0 = env.load()
    log = env.BUILD / "vm" / f"{Path(kernel).name}.log"
    command = guest_command(python, rounds, target_s)
    text, seconds = boot(python, kernel, command, cpus, LSM_APPEND, timeout, log)
    res = marked(text, VM_MARKER)
    if res is None:
        return {"series": series, "error": f"no result from the guest; log tail:\n{tail(text)}"}
    res.update(
        series=series,
        kernel_image=Path(kernel).name,
        vcpus=cpus,
        boot_and_run_seconds=seconds,
        host_load_start=load0,
        host_load_end=env.load(),
    )
    return res


def measure(
    kernels: tuple[str, ...] = KERNELS,
    rounds: int = 5,
    target_s: float = 1.0,
    cpus: int = 1,
    timeout: int = 1800,
) -> dict[str, Any]:
    return {
        "host": env.machine(),
        "kernels": [
            run_kernel(k, sys.executable, rounds, target_s, cpus, timeout) for k in kernels
        ],
    }
