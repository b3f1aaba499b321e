"""Backend families side by side, inside QEMU (virtme-ng, TCG), on Debian's 6.1 and 6.12 kernels.

Each kernel is booted twice:
- with `bpf` in lsm= (BPF LSM active): the LSM backend and the fmod_ret backend, measured in
  the same boot, so their programs' cost per call (kernel.bpf_stats_enabled: run_time_ns /
  run_cnt) can be compared;
- without it (Debian's default): the fmod_ret backend and the fallback backends (syscall
  tracepoints for open), so the open overhead of fmod_ret can be compared with the hook it
  replaces there.

Each family is measured by bench.syscalls (the same C loop, lists of 10,000 entries, states
none / off / enforce interleaved round by round). Timings under TCG are emulated: only ratios
and per-call costs measured in the same boot are compared.

    python -m bench.families             both kernels, both boots (~10 min on 2 CPUs)
    python -m bench.families --guest F   inside a guest: families F (comma separated)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from corral.kernel.loader import Backends
from tests.vm.run_vm import BOOTS, find_kernel

from . import env, syscalls, vm

KERNELS = ("6.1", "6.12")
FAMILIES_OF_BOOT = {"active": ("lsm", "fmod_ret"), "inactive": ("fmod_ret", "fallback")}
MARKER = "CORRAL-FAMILIES-JSON "


def guest(families: list[str], rounds: int, target_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for family in families:
        backends = Backends.choose(None if family == "fallback" else family)
        env.log(f"families: measuring {family} {backends.__dict__}")
        out[family] = syscalls.measure(rounds, target_s, seed=1, backends=backends, profile=False)
    return out


def guest_command(python: str, families: tuple[str, ...], rounds: int, target_s: float) -> str:
    return (
        f"cd {shlex.quote(str(env.REPO))} && PYTHONDONTWRITEBYTECODE=1 {shlex.quote(python)} "
        f"-m bench.families --guest {','.join(families)} --rounds {rounds} "
        f"--target-seconds {target_s}"
    )


def run_boot(
    series: str, boot: str, python: str, rounds: int, target_s: float, timeout: int
) -> dict[str, Any]:
    kernel = find_kernel(series)
    if kernel is None:
        return {"series": series, "boot": boot, "error": f"no /boot/vmlinuz-{series}*"}
    families = FAMILIES_OF_BOOT[boot]
    env.log(f"families: booting {kernel} ({boot}: {', '.join(families)})")
    log = env.BUILD / "families" / f"{Path(kernel).name}-{boot}.log"
    command = guest_command(python, families, rounds, target_s)
    text, seconds = vm.boot(python, kernel, command, 1, BOOTS[boot][0], timeout, log)
    res = vm.marked(text, MARKER)
    if res is None:
        return {"series": series, "boot": boot, "error": f"no result:\n{vm.tail(text)}"}
    return {
        "series": series,
        "kernel_image": Path(kernel).name,
        "boot": boot,
        "lsm_append": BOOTS[boot][0],
        "seconds": seconds,
        "families": res,
    }


def measure(rounds: int = 3, target_s: float = 0.3, timeout: int = 1800) -> dict[str, Any]:
    env.build_helpers()
    return {
        "host": env.machine(),
        "boots": [
            run_boot(k, boot, sys.executable, rounds, target_s, timeout)
            for k in KERNELS
            for boot in FAMILIES_OF_BOOT
        ],
    }


def table(res: dict[str, Any]) -> list[str]:
    """Markdown rows: per boot and family, each program's ns per call and the open overhead."""
    rows = [
        "| kernel | boot | backend | exec ns/call | open ns/call | connect ns/call "
        "| open enforce vs none | exec | connect |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in res.get("boots", []):
        if "error" in b:
            rows.append(f"| {b['series']} | {b['boot']} | error: {b['error'][:80]} |||||||")
            continue
        for family, r in b["families"].items():
            costs = r.get("bpf_prog_ns", {})
            summ = r.get("summary", {})
            cells = [_prog_cost(costs, op) for op in ("exec", "open", "connect")]
            over = [_overhead(summ, op) for op in ("open", "exec", "connect")]
            rows.append(
                f"| {b['kernel_image']} | {b['boot']} | {family} | "
                + " | ".join(cells + over)
                + " |"
            )
    return rows


def _prog_cost(costs: dict[str, Any], op: str) -> str:
    """The programs that ran for each operation of the loop (not those the harness's own few
    execs and opens ran), ns per call."""
    progs = costs.get(op, {})
    if not progs:
        return "-"
    most = max(v["runs"] for v in progs.values())
    per_op = {n: v for n, v in progs.items() if v["runs"] * 2 >= most}
    return ", ".join(f"{name} {v['ns_per_run']:.0f}" for name, v in sorted(per_op.items()))


def _overhead(summ: dict[str, Any], op: str) -> str:
    """ENFORCE against no corral at all, CPU time per op: median of the rounds (min … max)."""
    d = summ.get(op, {}).get("enforce")
    if not d or d.get("ratio") is None:
        return "-"
    pct = [(d[k] - 1) * 100 for k in ("ratio", "ratio_min", "ratio_max")]
    return f"{pct[0]:+.0f} % ({pct[1]:+.0f} … {pct[2]:+.0f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guest", help="inside a guest: the families to measure, comma separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--target-seconds", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=env.BUILD / "results" / "families.json")
    a = ap.parse_args(argv)
    env.quiet()
    if a.guest:
        print(MARKER + json.dumps(guest(a.guest.split(","), a.rounds, a.target_seconds)))
        return 0
    res = measure(a.rounds, a.target_seconds)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print("\n".join(table(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
