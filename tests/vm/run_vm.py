#!/usr/bin/env python3
"""Runs the kernel suite inside QEMU (virtme-ng) on each Debian kernel, booted twice.

- `lsm=active`: booted with `lsm=lockdown,capability,bpf`: the BPF LSM backend.
- `lsm=inactive`: booted with `lsm=lockdown,capability`, Debian's and Ubuntu's default: BPF LSM
  is compiled in, its programs load and attach, and never run. The probe must not report it
  (tests marked `lsm_inactive`); the fmod_ret backend is chosen, and the enforcement tests
  (marked `deny`) run on it.

One pytest session per boot, one boot at a time (`--jobs`). tests/kernel runs in every boot;
corrald end to end (tests/daemon/test_e2e.py; the demo too on BPF LSM) in one boot per deny
family (e2e_boot): the newest kernel's BPF LSM boot and the oldest kernel's fmod_ret boot. The
guest prints `vm-suite kernel=<uname -r> lsm=<active|inactive> passed=<n> failed=<n>
skipped=<n>`; this script collects those lines and fails unless every boot ran with failed=0
and skipped=0.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"vm-suite kernel=(\S+) lsm=(\S+) passed=(\d+) failed=(\d+) skipped=(\d+)")
DEFAULT_KERNELS = ("6.1", "6.12")
LSM_APPEND = "lsm=lockdown,capability,bpf"
# A boot per LSM state: the kernel command line, what pytest runs there in every boot, and what
# it adds in the boots that run corrald end to end (E2E_BOOTS).
BOOTS = {
    "active": (
        LSM_APPEND,
        "tests/kernel",
        "not fallback and not lsm_inactive and not host_only",
        "tests/daemon/test_e2e.py tests/daemon/test_names_e2e.py tests/ship/test_demo.py",
    ),
    "inactive": (
        "lsm=lockdown,capability",
        "tests/kernel",
        "not fallback and not lsm_active and not host_only",
        "tests/daemon/test_e2e.py tests/daemon/test_names_e2e.py",
    ),
}


def e2e_boot(series: str, boot: str, kernels: list[str]) -> bool:
    """corrald end to end (a real daemon per test: minutes each under TCG) runs once per deny
    family: BPF LSM on the newest kernel, fmod_ret on the oldest. tests/kernel, which proves
    each backend on each kernel, runs in every boot."""
    return (boot == "active" and series == kernels[-1]) or (
        boot == "inactive" and series == kernels[0]
    )


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
    e2e: bool = True,
) -> str:
    """userspace: also the tests marked so (corrald's own defences, the same on every backend:
    they run in one boot, the newest kernel's BPF LSM one, and on the host). e2e: also corrald
    end to end (e2e_boot)."""
    _, paths, marks, extra = BOOTS[boot]
    if e2e:
        paths += " " + extra
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
    e2e: bool = True,
) -> tuple[bool, str]:
    append = BOOTS[boot][0]
    guest = guest_command(python, pytest_args, boot, userspace, corpus, e2e)
    # 4G: the guest's /tmp (where every test's corrald, agents and logs live) is in its RAM.
    # One vCPU: with two, 6.12 guests panicked now and then ("Oops: int3" in bpf_lsm_file_open
    # while corrald attached or detached its trampolines: a CPU ran the breakpoint of a text
    # poke that multi-threaded TCG had not made visible to it; .vm-results logs of 2026-12-07).
    cmd, env = vng(python, kernel, guest, cpus=1, append=append, verbose=True, memory="4G")
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
    with --verbose, the other on stderr. On timeout the whole process group goes: killing vng
    alone left its QEMU running (and slowing every later boot) for as long as the guest ran."""
    with subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            return out, err
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return _text(out) + f"\nTIMEOUT after {timeout}s", _text(err)


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
        default=3000,
        help="seconds per VM (the 6.12 BPF LSM boot, the one with corrald end to end and the "
        "userspace tests, took 36 min on a 2-CPU host with four more e2e tests than now)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="VMs at once (1: on a 2-CPU host two TCG guests each ran ~1.8x slower, gaining "
        "almost nothing, and CI's per-VM timeout then ran out)",
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
    runs: list[tuple[str, str, bool, bool]] = []
    for series in kernels:
        kernel = find_kernel(series)
        if not kernel:
            results.append(
                (False, f"kernel series {series}: no /boot/vmlinuz-{series}* — run `make vm-deps`")
            )
            continue
        for boot in a.boots.split(","):
            userspace = boot == "active" and series == kernels[-1]
            runs.append((kernel, boot, userspace, e2e_boot(series, boot, kernels)))
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results += pool.map(
            lambda r: run_one(
                r[0], r[1], a.python, a.pytest_args, a.timeout, logdir, r[2], a.corpus, r[3]
            ),
            runs,
        )
    print("\n== VM suite summary")
    for ok, line in results:
        print(("ok   " if ok else "FAIL ") + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
