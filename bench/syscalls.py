"""Syscall overhead: open()+close(), execve of a static binary and a loopback TCP connect, timed
by a C loop in the agent's cgroup, in three states interleaved round by round:

    none     no corral program loaded (the cgroup exists, nothing is attached)
    off      corral loaded and attached, the cgroup registered as an agent whose modes are OFF
    enforce  the agent in ENFORCE on all three dimensions with 10,000 allow-list entries per
             dimension, the checked object allowed, worst-case lookup (see `worst_case_lists`)

Each round runs the states in a fresh random order (corral is loaded or unloaded as the state
needs), and each op in a random order within the state; overhead is the per-round ratio
state / none, reported as the median over rounds with its min-max. The same module runs on the
host (fallback backends) and inside the VM (BPF LSM): `python -m bench.syscalls --json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.kernel import events, probe
from corral.kernel.loader import AgentConfig, Backends, Kernel, cgroup_id

from . import env
from .profile import perf_symbols
from .stats import median, spread

OPS = ("open", "exec", "connect")
STATES = ("none", "off", "enforce")
ENTRIES = 10_000
AGENT = 7
LISTS = {"exec": 701, "open": 702, "connect": 703}
PATH_LEN = 240  # bytes of each allow-list path: near CORRAL_PATH_MAX (252), long shared prefix
VM_MARKER = "CORRAL-BENCH-JSON "


@dataclass
class Fixture:
    """Files on a private tmpfs, named so that all allow-list entries share a long prefix."""

    data: Path  # the file open()ed
    binary: Path  # the static binary exec'd
    siblings: list[Path]  # 10,000 names in the same directory (data and binary among them)
    port: int

    @classmethod
    def make(cls, root: Path, exit0: Path) -> Fixture:
        name_len = len("entry-00000")
        room = PATH_LEN - len(str(root)) - 2 - name_len
        long_dir = root / ("d" * min(room, 200))
        long_dir.mkdir()
        siblings = [long_dir / f"entry-{i:05d}" for i in range(ENTRIES)]
        data, binary = siblings[ENTRIES // 2], siblings[ENTRIES // 2 + 1]
        data.write_bytes(b"corral bench\n")
        shutil.copy2(exit0, binary)
        binary.chmod(0o755)
        return cls(data=data, binary=binary, siblings=siblings, port=free_port())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worst_case_lists(fx: Fixture, seen: dict[str, str]) -> dict[str, Any]:
    """10,000 entries per dimension, the checked object allowed, the lookup as slow as we can
    make it: paths of ~240 bytes differing only in their last 5 bytes (every trie node on the
    way compares the whole shared prefix), and for connect 9,999 hosts on the measured port
    that all miss, so the kernel's second lookup (port 0 = any port) is the one that allows."""
    base = seen["open"].rsplit("/", 1)[0]
    paths = [f"{base}/{p.name}" for p in fx.siblings]
    assert seen["open"] in paths and seen["exec"] in paths, (seen, base)
    hosts = [f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(2, ENTRIES + 1)]
    net = [(h, fx.port) for h in hosts] + [("127.0.0.1", 0)]
    return {"exec": paths, "open": paths, "connect": net}


# Fallback only, two more ENFORCE states with another open hook: none at all (kernel.fallback_open:
# off; what exec and connect cost without it isolates the open hook's share, which every syscall
# pays once a syscall tracepoint is attached), and tp_btf/sys_enter (the hook used where syscall
# tracepoints are missing: it runs for every syscall).
NO_OPEN_HOOK = "enforce-no-open-hook"
SYS_ENTER_OPEN = "enforce-sys-enter-open"
OPEN_HOOK_OF_STATE = {NO_OPEN_HOOK: "none", SYS_ENTER_OPEN: "sys_enter"}


class Corral:
    """corral's kernel side in one of the states."""

    def __init__(self, backends: Backends, cg: Path) -> None:
        self.backends = backends
        self.cg = cg
        self.kern: Kernel | None = None
        self.lists: dict[str, Any] | None = None
        self.load_seconds: list[float] = []

    def set(self, state: str) -> None:
        if state == "none":
            self.unload()
            return
        backends = self.backends
        if state in OPEN_HOOK_OF_STATE:
            backends = dataclasses.replace(backends, open=OPEN_HOOK_OF_STATE[state])
        if self.kern is not None and self.kern.backends != backends:
            self.unload()
        if self.kern is None:
            self.load(backends)
        self.modes("off" if state == "off" else "enforce")

    def load(self, backends: Backends | None = None) -> None:
        t0 = time.perf_counter()
        k = Kernel(backends or self.backends, suppress_ns=60 * 1_000_000_000)
        k.register_cgroup(cgroup_id(self.cg), AGENT)
        if self.lists:
            k.allow_paths("exec", LISTS["exec"], self.lists["exec"])
            k.allow_paths("open", LISTS["open"], self.lists["open"])
            k.allow_net(LISTS["connect"], self.lists["connect"])
        self.kern = k
        self.modes("off")
        k.activate()
        self.load_seconds.append(time.perf_counter() - t0)

    def modes(self, mode: str, **per_dim: str) -> None:
        assert self.kern is not None
        modes = {d: per_dim.get(d, mode) for d in OPS}
        self.kern.set_agent(AGENT, AgentConfig(modes=modes, lists=dict(LISTS), rate_limit=1000))

    def unload(self) -> None:
        if self.kern is not None:
            self.kern.close()
            self.kern = None

    @property
    def nprogs(self) -> int:
        return len(self.kern.programs) if self.kern else 0


def run_loop(loop: Path, cg: Path, op: str, n: int, arg: str) -> float:
    """Wall ns per iteration (see run_loop_both)."""
    return run_loop_both(loop, cg, op, n, arg)[0]


def run_loop_both(loop: Path, cg: Path, op: str, n: int, arg: str) -> tuple[float, float]:
    """(wall ns, CPU ns) per iteration of the C loop in cgroup cg."""
    rows = env.run_json([str(loop), "-c", str(cg), op, str(n), arg])
    row = rows[-1]
    if row["failed"]:
        raise RuntimeError(f"{op}: {row['failed']} of {n} iterations failed in the C loop")
    return float(row["ns_per_op"]), float(row["cpu_ns_per_op"])


def op_arg(fx: Fixture, op: str) -> str:
    return {"open": str(fx.data), "exec": str(fx.binary), "connect": str(fx.port)}[op]


def kernel_paths(c: Corral, fx: Fixture, loop: Path) -> dict[str, str]:
    """The form in which this kernel reports our two files (bpf_d_path on LSM, the string as
    passed on the fallback): learned by observing one open and one exec."""
    assert c.kern is not None
    got: list[events.Event] = []
    rb = c.kern.ring_buffer(lambda data: got.append(events.decode(data)))
    try:
        c.modes("off", exec="observe", open="observe")
        run_loop(loop, c.cg, "open", 1, str(fx.data))
        run_loop(loop, c.cg, "exec", 1, str(fx.binary))
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 2:
            rb.poll(100)
            for e in got:
                if e.dimension == "open" and e.path and e.path.endswith(fx.data.name):
                    seen["open"] = e.path
                if e.dimension == "exec" and e.path and e.path.endswith(fx.binary.name):
                    seen["exec"] = e.path
    finally:
        rb.close()
        c.modes("off")
    if len(seen) < 2:
        raise RuntimeError(f"no open/exec event for the bench files; saw {got}")
    return seen


def calibrate(loop: Path, cg: Path, fx: Fixture, target_s: float) -> dict[str, int]:
    probe_n = {"open": 20000, "exec": 200, "connect": 2000}
    floor = {"open": 2000, "exec": 30, "connect": 200}
    out = {}
    for op in OPS:
        n = probe_n[op]
        while True:
            ns = run_loop(loop, cg, op, n, op_arg(fx, op))
            if ns * n > 0.05e9 or n >= 10**7:
                break
            n *= 4
        out[op] = max(floor[op], int(target_s * 1e9 / ns))
    return out


def bpf_prog_costs(c: Corral, loop: Path, fx: Fixture, iters: dict[str, int]) -> dict[str, Any]:
    """ns per program invocation (kernel.bpf_stats_enabled run_time_ns / run_cnt) in ENFORCE,
    one op at a time: a separate pass, because the stats themselves cost time."""
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    try:
        old = stats_path.read_text().strip()
        stats_path.write_text("1")
    except OSError as e:
        return {"error": f"kernel.bpf_stats_enabled unavailable: {e}"}
    out: dict[str, Any] = {}
    try:
        c.set("enforce")
        for op in OPS:
            before = _prog_stats()
            run_loop(loop, c.cg, op, iters[op], op_arg(fx, op))
            after = _prog_stats()
            out[op] = {
                name: {
                    "runs": after[name][1] - before.get(name, (0, 0))[1],
                    "ns_per_run": (after[name][0] - before.get(name, (0, 0))[0])
                    / max(1, after[name][1] - before.get(name, (0, 0))[1]),
                }
                for name in after
                if after[name][1] - before.get(name, (0, 0))[1] > 0
            }
    finally:
        stats_path.write_text(old)
    return out


def _prog_stats() -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for p in env.corral_programs():
        name = str(p["name"])
        rt, cnt = int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0))
        prev = out.get(name, (0, 0))
        out[name] = (prev[0] + rt, prev[1] + cnt)
    return out


def measure(
    rounds: int,
    target_s: float,
    seed: int,
    backends: Backends | None = None,
    profile: bool = True,
) -> dict[str, Any]:
    """backends: the ones to measure (default: what the probe proves here, by effect)."""
    tools = env.helpers()
    backends = backends or probe.run_probe().backends()
    result: dict[str, Any] = {
        "machine": env.machine(),
        "backends": backends.__dict__,
        "rounds": rounds,
        "entries_per_dimension": ENTRIES,
        "load_start": env.load(),
        "samples": [],
    }
    with env.tmpfs() as root, env.cgroup() as cg:
        fx = Fixture.make(root, tools["exit0"])
        c = Corral(backends, cg)
        try:
            c.load()
            seen = kernel_paths(c, fx, tools["loop"])
            c.lists = worst_case_lists(fx, seen)
            c.unload()
            result["checked"] = {**seen, "connect": f"127.0.0.1:{fx.port}"}
            result["path_bytes"] = len(seen["open"])
            iters = calibrate(tools["loop"], cg, fx, target_s)
            result["iterations"] = iters
            env.log(f"syscalls: backends {backends.__dict__}, iterations {iters}")
            rng = random.Random(seed)
            states = list(STATES)
            if backends.open == "tracepoint":
                states += list(OPEN_HOOK_OF_STATE)
            result["states"] = states
            for r in range(rounds):
                order = list(states)
                rng.shuffle(order)
                for state in order:
                    c.set(state)
                    ops = list(OPS)
                    rng.shuffle(ops)
                    for op in ops:
                        waited = env.wait_alone(c.nprogs)
                        ns, cpu = run_loop_both(tools["loop"], cg, op, iters[op], op_arg(fx, op))
                        result["samples"].append(
                            {
                                "round": r,
                                "state": state,
                                "op": op,
                                "ns_per_op": ns,
                                "cpu_ns_per_op": cpu,
                                "load1": env.load()["load1"],
                                "foreign_programs": env.foreign_corral_programs(c.nprogs),
                                "waited_s": round(waited, 1),
                            }
                        )
                env.log(f"syscalls: round {r + 1}/{rounds} done ({' '.join(order)})")
            result["bpf_prog_ns"] = bpf_prog_costs(c, tools["loop"], fx, iters)
            if profile:
                c.set("enforce")
                loop_cmd = [str(tools["loop"]), "-c", str(cg), "open", str(iters["open"] * 3)]
                result["perf_open_enforce"] = perf_symbols([*loop_cmd, op_arg(fx, "open")])
            result["load_seconds"] = c.load_seconds
        finally:
            c.unload()
    result["load_end"] = env.load()
    result["summary"] = summarize(result["samples"], result.get("states", STATES))
    return result


def summarize(samples: list[dict[str, Any]], states: Any = STATES) -> dict[str, Any]:
    """Per op and state: median ns, and the per-round ratio to `none` (median, min, max).
    `ratio*` are from CPU time (what the hooks cost the caller, robust to other load on the
    machine), `wall_ratio*` from wall time."""
    rounds = sorted({s["round"] for s in samples})
    out: dict[str, Any] = {}
    for op in OPS:
        out[op] = {}
        for state in states:
            row: dict[str, Any] = {}
            for metric, key, prefix in (
                ("cpu_ns_per_op", "median_cpu_ns", ""),
                ("ns_per_op", "median_ns", "wall_"),
            ):
                by = {(s["op"], s["state"], s["round"]): s[metric] for s in samples}
                ns = [by[(op, state, r)] for r in rounds if (op, state, r) in by]
                ratios = [
                    by[(op, state, r)] / by[(op, "none", r)]
                    for r in rounds
                    if (op, state, r) in by and (op, "none", r) in by
                ]
                lo, hi = spread(ratios)
                row.update(
                    {
                        key: median(ns),
                        f"{prefix}ratio": median(ratios),
                        f"{prefix}ratio_min": lo,
                        f"{prefix}ratio_max": hi,
                    }
                )
                row["rounds"] = len(ratios)
            out[op][state] = row
    contaminated = sum(1 for s in samples if s["foreign_programs"])
    out["contaminated_samples"] = contaminated
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--target-seconds", type=float, default=0.3, help="per sample")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    ap.add_argument("--vm", action="store_true", help=f"print the result as {VM_MARKER.strip()}")
    a = ap.parse_args(argv)
    env.quiet()
    res = measure(a.rounds, a.target_seconds, a.seed)
    text = json.dumps(res)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1))
    if a.vm:
        print(VM_MARKER + text, flush=True)
    elif not a.out:
        print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
