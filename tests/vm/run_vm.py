#!/usr/bin/env python3
"""Runs the kernel suite inside QEMU (virtme-ng) on each Debian kernel, booted twice.

- `lsm=active`: booted with `lsm=lockdown,capability,bpf`: the BPF LSM backend, the daemon's
  end-to-end test and the demo.
- `lsm=inactive`: booted with `lsm=lockdown,capability`, Debian's and Ubuntu's default: BPF LSM
  is compiled in, its programs load and attach, and never run. The probe must not report it
  (tests marked `lsm_inactive`); the fmod_ret backend is chosen, and the enforcement tests
  (marked `deny`) run on it, with the daemon's end-to-end test.

One pytest session per boot, two boots at a time (`--jobs`). The guest prints `vm-suite
kernel=<uname -r> lsm=<active|inactive> passed=<n> failed=<n> skipped=<n>`; this script
collects those lines and fails unless every boot ran with failed=0 and skipped=0.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"vm-suite kernel=(\S+) lsm=(\S+) passed=(\d+) failed=(\d+) skipped=(\d+)")
DEFAULT_KERNELS = ("6.1", "6.12")
LSM_APPEND = "lsm=lockdown,capability,bpf"
# A boot per LSM state: the kernel command line and what pytest runs there.
BOOTS = {
    "active": (
        LSM_APPEND,
        "tests/kernel tests/daemon/test_e2e.py tests/ship/test_demo.py",
        "not fallback and not lsm_inactive and not host_only",
    ),
    "inactive": (
        "lsm=lockdown,capability",
        "tests/kernel tests/daemon/test_e2e.py",
        "not fallback and not lsm_active and not host_only",
    ),
}


def find_kernel(series: str) -> str | None:
    """The newest generic (not -cloud, not -rt) Debian kernel image of a series in /boot."""
    pattern = re.compile(rf"vmlinuz-{re.escape(series)}[.\-][\w.+\-]*amd64$")
    found = [p for p in glob.glob("/boot/vmlinuz-*") if pattern.search(p)]
    found = [p for p in found if "-cloud-" not in p and "-rt-" not in p]
    return sorted(found)[-1] if found else None


# `--corpus` (make test-vm-corpus): the real-agent corpus's VM agent instead, on BPF LSM. Not in
# make test: under TCG one run of the MCP agent takes minutes (its first did not answer within
# the host suite's 180 s), the whole corpus far longer than CI's budget.
CORPUS = ("tests/realagents", "not host_only")


def guest_command(
    python: str,
    pytest_args: list[str],
    boot: str = "active",
    userspace: bool = True,
    corpus: bool = False,
) -> str:
    """userspace: also the tests marked so (corrald's own defences, the same on every backend:
    they run in one boot, the newest kernel's BPF LSM one, and on the host)."""
    _, paths, marks = BOOTS[boot]
    if corpus:
        paths, marks = CORPUS
    if not userspace:
        marks += " and not userspace"
    args = " ".join(shlex.quote(a) for a in pytest_args)
    return (
        f"cd {shlex.quote(str(REPO))} && "
        f"CORRAL_VM_SUITE=1 CORRAL_VM_LSM={boot} PYTHONDONTWRITEBYTECODE=1 "
        + ("CORRAL_REALAGENTS_RUN_TIMEOUT=1500 " if corpus else "")
        + f"{shlex.quote(python)} -m pytest {paths} -m {shlex.quote(marks)} "
        f"-p no:cacheprovider -q -rs {args}; "
        # pytest's own status and, when it did not pass, the kernel's last words: a guest whose
        # pytest dies (OOM, a kill) or whose kernel oopses otherwise ends without a word.
        'rc=$?; echo "vm-guest: pytest exited with status $rc"; '
        'if [ "$rc" -ne 0 ]; then echo "== guest dmesg (last 80 lines)"; dmesg | tail -n 80; fi; '
        'exit "$rc"'
    )


def vng(
    python: str,
    kernel: str,
    command: str,
    cpus: int = 2,
    append: str = LSM_APPEND,
    verbose: bool = False,
    memory: str = "2G",
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) booting kernel under QEMU/TCG (with BPF LSM unless append says
    otherwise) and running command in the guest, with the venv of `python` first on PATH (also
    used by bench/vm.py). verbose: the kernel's console too (on stderr), for the log."""
    venv_bin = str(Path(python).parent)
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '')}")
    cmd = [f"{venv_bin}/vng", "--disable-kvm", "--memory", memory, "--cpus", str(cpus)]
    if verbose:
        cmd.append("--verbose")
    cmd += ["--run", kernel, "--append", append, "--", command]
    return cmd, env


def run_one(
    kernel: str,
    boot: str,
    python: str,
    pytest_args: list[str],
    timeout: int,
    logdir: Path,
    userspace: bool = True,
    corpus: bool = False,
) -> tuple[bool, str]:
    append = BOOTS[boot][0]
    guest = guest_command(python, pytest_args, boot, userspace, corpus)
    # 4G: the guest's /tmp (where every test's corrald, agents and logs live) is in its RAM
    cmd, env = vng(python, kernel, guest, append=append, verbose=True, memory="4G")
    log = logdir / f"{Path(kernel).name}-lsm-{boot}.log"
    started = time.monotonic()
    print(f"== booting {kernel} under QEMU (TCG), {append} ...", flush=True)
    out, console = _run_guest(cmd, env, timeout)
    log.write_text(out + "\n== guest console (vng --verbose)\n" + console)
    _save_reports(out, logdir)
    took = time.monotonic() - started
    m = SUMMARY.search(out)
    report = [
        f"== {Path(kernel).name}, {append}: done after {took:.0f}s",
        *out.strip().splitlines()[-60:],
    ]
    if not m or m.group(4) != "0" or m.group(5) != "0":
        report += ["== the guest's console, last 40 lines:", *console.strip().splitlines()[-40:]]
    print("\n".join(report), flush=True)  # one write: boots run side by side (--jobs)
    if not m:
        return (
            False,
            f"kernel {kernel}: no vm-suite line (boot or pytest failed; log {log}, {took:.0f}s)",
        )
    line = m.group(0)
    ok = int(m.group(4)) == 0 and int(m.group(5)) == 0 and int(m.group(3)) > 0
    return ok, f"{line}  ({took:.0f}s)"


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _run_guest(cmd: list[str], env: dict[str, str], timeout: int) -> tuple[str, str]:
    """(the guest command's output, the kernel's console): vng prints the one on stdout and,
    with --verbose, the other on stderr."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        return _text(e.stdout) + f"\nTIMEOUT after {timeout}s", _text(e.stderr)


REPORT_BLOCK = re.compile(
    r"=== BEGIN realagents-report (\S+)\n(.*?)=== END realagents-report", re.S
)


def _save_reports(out: str, logdir: Path) -> None:
    """The real-agent corpus's report, printed by the guest (its files are gone with it)."""
    for kernel, text in REPORT_BLOCK.findall(out):
        (logdir / f"realagents-{kernel}.md").write_text(text)
        print(f"   real-agent report of the VM run: {logdir / f'realagents-{kernel}.md'}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter of the venv to use in the guest"
    )
    ap.add_argument(
        "--kernels", default=",".join(DEFAULT_KERNELS), help="kernel series, comma separated"
    )
    ap.add_argument(
        "--boots",
        default=",".join(BOOTS),
        help="LSM states to boot each kernel in: active (lsm=...,bpf), inactive (without bpf)",
    )
    ap.add_argument(
        "--timeout",
        type=int,
        default=2400,
        help="seconds per VM (the 6.12 BPF LSM boot took ~25 min on a 2-CPU host)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="VMs at once (a TCG guest keeps ~1.2 host CPUs busy: two share a 2-CPU host well)",
    )
    ap.add_argument(
        "--corpus", action="store_true", help="run the real-agent corpus's VM agent instead"
    )
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()
    logdir = REPO / ".vm-results"
    logdir.mkdir(exist_ok=True)
    results: list[tuple[bool, str]] = []
    kernels = a.kernels.split(",")
    runs: list[tuple[str, str, bool]] = []
    for series in kernels:
        kernel = find_kernel(series)
        if not kernel:
            results.append(
                (False, f"kernel series {series}: no /boot/vmlinuz-{series}* — run `make vm-deps`")
            )
            continue
        for boot in a.boots.split(","):
            runs.append((kernel, boot, boot == "active" and series == kernels[-1]))
    runs.sort(key=lambda r: (not r[2], r[1] != "active"))  # the longest boots first
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results += pool.map(
            lambda r: run_one(
                r[0], r[1], a.python, a.pytest_args, a.timeout, logdir, r[2], a.corpus
            ),
            runs,
        )
    print("\n== VM suite summary")
    for ok, line in results:
        print(("ok   " if ok else "FAIL ") + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
