"""Per-call cost of the tamper guard (bpf/guard.bpf.h), inside QEMU (virtme-ng, TCG) on
Debian's 6.1 and 6.12 kernels booted with BPF LSM active (one boot per kernel).

The guard adds programs and changes none: "without" is HEAD's corral.bpf.o loaded with the guard
left out (Backends.without_guard: the programs of the three dimensions only), "with" the same
object with it. Same rounds, workloads, lists and C loop as bench/progcost.py (whose helpers
this reuses): per round each state loads, fills its lists, measures every workload, unloads
(the order alternates). Reported per workload: each program's run_time_ns / run_cnt delta
(kernel.bpf_stats_enabled) over the loop, median of the rounds, and the sum over the programs
that ran once per operation: what corral's BPF costs that operation in each state. The agent's
own syscalls never reach a guarded call here: what is measured is the guard's cost to ordinary
work (its early outs), which every process on the node pays for open, write, fork and exec.

    python -m bench.guardcost [--write-doc]     both kernels (~15 min on 2 CPUs)
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from corral.kernel.loader import Backends
from tests.vm.run_vm import LSM_APPEND, find_kernel

from . import env, progcost, syscalls, vm
from .stats import median

MARKER = "CORRAL-GUARDCOST-JSON "
TITLE = "## Per-call cost of the tamper guard"
_WRITE = (
    "write",
    "pwrite of 1 byte to an allowed file opened once (file_permission: every read and write)",
    "write",
    "data",
    "enforce",
    False,
)
WORKLOADS = (
    *(w for w in progcost.WORKLOADS if w[0] in ("open-exact", "open-miss", "exec-any", "connect")),
    _WRITE,
)


def guest(obj: Path, families: list[str], rounds: int, target_s: float, seed: int) -> dict:
    tools = env.helpers()
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats_path.read_text().strip()
    stats_path.write_text("1")
    out: dict[str, Any] = {"machine": env.machine(), "families": {}}
    rng = random.Random(seed)
    try:
        with env.tmpfs() as root, env.cgroup() as cg:
            fx = syscalls.Fixture.make(root, tools["exit0"])
            files = progcost.make_files(root, fx)
            iters = syscalls.calibrate(tools["loop"], cg, fx, target_s)
            iters["write"] = iters["open"] * 4  # a pwrite costs a fraction of an open+close
            out["iterations"] = iters
            for family in families:
                guarded = Backends.choose(family)
                paths = progcost.observe_paths(obj, guarded, cg, tools["loop"], files, fx.binary)
                lists = syscalls.worst_case_lists(
                    fx, {"open": paths["data"], "exec": paths["binary"]}
                )
                samples = []
                for r in range(rounds):
                    order = [("without", guarded.without_guard()), ("with", guarded)]
                    if r % 2:
                        order.reverse()
                    for label, backends in order:
                        k = progcost.load(obj, True, backends, cg, lists, paths)
                        try:
                            wls = list(WORKLOADS)
                            rng.shuffle(wls)
                            for w in wls:
                                key = w[3]
                                arg = str(files[key]) if key else syscalls.op_arg(fx, w[2])
                                res = progcost.measure_one(
                                    k, True, w, tools["loop"], cg, arg, iters[w[2]],
                                    paths["caller"],
                                )  # fmt: skip
                                row = {"round": r, "state": label, "workload": w[0]}
                                samples.append({**row, **res})
                        finally:
                            k.close()
                    env.log(f"guardcost: {family} round {r + 1}/{rounds} done")
                out["families"][family] = {"samples": samples, "summary": summarize(samples)}
    finally:
        stats_path.write_text(old)
    return out


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """workload -> state -> {program: median ns/call, "total": median of the per-round sums}."""
    out: dict[str, Any] = {}
    for s in samples:
        per = out.setdefault(s["workload"], {}).setdefault(s["state"], {"_rounds": {}})
        total = 0.0
        for prog, p in s["programs"].items():
            per.setdefault(prog, []).append(p["ns_per_run"])
            total += p["ns_per_run"] * p["runs"] / s["n"]
        per["_rounds"].setdefault(s["round"], 0.0)
        per["_rounds"][s["round"]] += total
        per.setdefault("_ok", []).append(s["as_expected"])
    for states in out.values():
        for state, per in states.items():
            totals = list(per.pop("_rounds").values())
            ok = per.pop("_ok")
            states[state] = {p: median(v) for p, v in per.items()}
            states[state]["total"] = median(totals)
            states[state]["as_expected"] = all(ok)
    return out


def run_boot(series: str, objs: dict[str, Any], families: tuple[str, ...], rounds: int,
             target_s: float, timeout: int) -> dict[str, Any]:  # fmt: skip
    kernel = find_kernel(series)
    if kernel is None:
        return {"series": series, "error": f"no /boot/vmlinuz-{series}*"}
    snap = shlex.quote(objs["python_snapshot"])
    command = (
        f"cd {snap} && PYTHONPATH={snap}/daemon:{snap} PYTHONDONTWRITEBYTECODE=1 "
        f"{shlex.quote(sys.executable)} -m bench.guardcost --guest "
        f"--object {shlex.quote(objs['after']['path'])} --families {','.join(families)} "
        f"--rounds {rounds} --target-seconds {target_s}"
    )
    log = env.BUILD / "progcost" / f"guard-{Path(kernel).name}.log"
    text, seconds = vm.boot(sys.executable, kernel, command, 1, LSM_APPEND, timeout, log)
    res = vm.marked(text, MARKER)
    if res is None:
        return {"series": series, "error": f"no result:\n{vm.tail(text)}"}
    res.update(series=series, kernel_image=Path(kernel).name, seconds=seconds)
    return res


def section(res: dict[str, Any]) -> list[str]:
    lines = [
        TITLE,
        "",
        f"Measured {res['date']} (`python -m bench.guardcost`), object built from "
        f"{res['objects']['after']['commit']}. One boot per Debian kernel under QEMU/TCG with "
        f"`bpf` in `lsm=`; in the same boot, {res['rounds']} rounds per backend, each loading "
        "the object *without* the guard (the three dimensions' programs only) and *with* it "
        "(which goes first alternates), filling the lists of *Per-call cost before/after "
        "patterns and lineage* and running its workloads in the agent's cgroup. ns/call: "
        "`run_time_ns / run_cnt` over the loop, median of the rounds; *BPF per op*: the sum "
        "over the programs that ran once per operation. The guard changes none of the "
        "dimensions' programs; what it adds to ordinary work is its early outs (an open not "
        "for writing on cgroupfs and not through a detached mount, a write not on "
        "cgroupfs, a fork or exec outside an exempt runtime init). Where a loop is short "
        "(exec, connect), `guard_bpf` and part of `guard_open` are the harness's own bpf() "
        "calls and opens reading the statistics, counted because they ran at least once per "
        "two operations: the *with* sums overstate those rows. TCG emulates the CPU: compare "
        "only rows of the same boot.",
        "",
        "| kernel | backend | workload | BPF per op without | with | change "
        "| guard programs (ns/call) |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in res["boots"]:
        if "error" in b:
            lines.append(f"| {b['series']} | - | - | {b['error'].splitlines()[0]} | | | |")
            continue
        for fam, f in b["families"].items():
            for w, states in f["summary"].items():
                a, g = states.get("without", {}), states.get("with", {})
                ch = (g["total"] / a["total"] - 1) * 100 if a.get("total") else 0.0
                guards = ", ".join(
                    f"`{p}` {v:,.0f}"
                    for p, v in sorted(g.items())
                    if "guard" in p and isinstance(v, float)
                )
                lines.append(
                    f"| {b['kernel_image'].removeprefix('vmlinuz-')} | {fam} | {w} | "
                    f"{a.get('total', 0):,.0f} | {g.get('total', 0):,.0f} | {ch:+.1f} % | "
                    f"{guards or '-'} |"
                )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guest", action="store_true")
    ap.add_argument("--object", type=Path)
    ap.add_argument("--families", default="lsm,fmod_ret")
    ap.add_argument("--kernels", default="6.1,6.12")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--target-seconds", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--write-doc", action="store_true",
                    help="also put the section into docs/benchmarks.md (key guardcost in "
                    "docs/benchmarks/results.json)")  # fmt: skip
    a = ap.parse_args(argv)
    env.quiet()
    families = [f for f in a.families.split(",") if f]
    if a.guest:
        res = guest(a.object, families, a.rounds, a.target_seconds, a.seed)
        print(MARKER + json.dumps(res), flush=True)
        return 0
    env.build_helpers()
    objs = progcost.build_objects()
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "objects": objs,
        "rounds": a.rounds,
        "boots": [
            run_boot(k, objs, tuple(families), a.rounds, a.target_seconds, a.timeout)
            for k in a.kernels.split(",")
        ],
    }
    out = env.BUILD / "results" / "guardcost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print("\n".join(section(res)))
    if a.write_doc:
        from . import report

        report.save_part("guardcost", res, section(res), TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
