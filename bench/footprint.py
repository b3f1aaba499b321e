"""Footprint: corrald's RSS with 100 agents x 10,000 baseline entries, its start-up time, the
baseline store's save/load time, and the kernel memory of the allow-lists.

The state directory is written with corral's own Registry and BaselineStore, so corrald starts
exactly as it would on a node that had learned those baselines: it loads every baseline and
pushes every entry into the kernel's allow-lists before it answers its API.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from corral.policy.agents import Registry
from corral.policy.baseline import Baseline
from corral.policy.store import BaselineStore

from . import env
from .daemon import corrald

AGENTS = 100
PER_AGENT = {"exec": 500, "open": 9000, "connect": 500}  # 10,000 entries per agent


def make_baseline(name: str, n: int) -> Baseline:
    """10,000 entries shaped like an agent's working set, none of them collapsible (so the
    count stays 10,000): open paths fan out only below depth-2 directories."""
    b = Baseline(name, learning_since=time.time() - 86400)
    t = time.time()
    for i in range(PER_AGENT["exec"]):
        b.add("exec", f"/usr/local/lib/agent{n:03d}/bin/tool-{i:04d}", "learned", t)
    for i in range(PER_AGENT["open"]):
        b.add("open", f"/srv/agent{n:03d}-pkg{i // 20:04d}/module_{i:05d}_helpers.py", "learned", t)
    for i in range(PER_AGENT["connect"]):
        b.add("connect", (f"10.{n}.{i % 250}.{1 + i // 250}", 443), "learned", t)
    assert len(b) == sum(PER_AGENT.values()), len(b)
    return b


def write_state(state: Path, agents: int, mode: str) -> dict[str, Any]:
    """Registry + baselines on disk; returns save/load timings of the store."""
    state.mkdir(parents=True, exist_ok=True)
    reg = Registry(state)
    store = BaselineStore(state)
    save_s, load_s, sizes = [], [], []
    for n in range(agents):
        name = f"fp/agent-{n:03d}"
        reg.create(name, mode=mode, auto_promote=False, source="local")
        b = make_baseline(name, n)
        t0 = time.perf_counter()
        path = store.save(b)
        save_s.append(time.perf_counter() - t0)
        sizes.append(path.stat().st_size)
        if n < 10:
            t0 = time.perf_counter()
            assert store.load(name) is not None
            load_s.append(time.perf_counter() - t0)
    reg.save()
    gc.collect()
    t0 = time.perf_counter()
    loaded = store.load_all()
    load_all = time.perf_counter() - t0
    assert len(loaded) == agents
    return {
        "save_seconds_median": statistics.median(save_s),
        "save_seconds_max": max(save_s),
        "load_seconds_median": statistics.median(load_s),
        "load_seconds_max": max(load_s),
        "load_all_seconds": load_all,
        "file_bytes_median": statistics.median(sizes),
        "entries_per_baseline": sum(PER_AGENT.values()),
        "saves": len(save_s),
        "loads": len(load_s),
    }


def kernel_map_memory(pins: Path) -> dict[str, int]:
    """bytes_memlock of corral's pinned maps (what the kernel charges for them)."""
    out: dict[str, int] = {}
    for p in pins.glob("*/maps/*"):
        r = subprocess.run(
            ["bpftool", "-j", "map", "show", "pinned", str(p)], capture_output=True, text=True
        )
        if r.returncode == 0:
            out[p.name] = int(json.loads(r.stdout).get("bytes_memlock", 0))
    return out


def measure(agents: int = AGENTS, mode: str = "enforce", settle: float = 5.0) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": env.machine(),
        "load_start": env.load(),
        "agents": agents,
        "per_agent": PER_AGENT,
        "mode": mode,
    }
    with corrald() as idle:
        time.sleep(settle)
        out["idle_rss_mib"] = idle.memory().get("VmRSS")
    work = Path(tempfile.mkdtemp(prefix="corral-bench-fp-"))
    try:
        env.log(f"footprint: writing {agents} baselines of {sum(PER_AGENT.values())} entries")
        out["store"] = write_state(work / "state", agents, mode)
        total = agents * sum(PER_AGENT.values())
        cfg = {
            "kernel": {
                "exec_allow_entries": max(65536, 2 * agents * PER_AGENT["exec"]),
                "open_allow_entries": max(262144, 2 * agents * PER_AGENT["open"]),
                "net_allow_entries": max(65536, 2 * agents * PER_AGENT["connect"]),
            }
        }
        runs = []
        for attempt in range(2):  # the second start adopts the pins of the first
            with corrald(cfg, keep=work / "state") as d:
                started = d.startup_seconds
                status = d.api("GET", "/v1/status")
                assert status["agents"]["total"] == agents, status["agents"]
                time.sleep(settle)
                mem = d.memory()
                runs.append(
                    {
                        "startup_seconds": started,
                        "rss_mib": mem.get("VmRSS"),
                        "peak_rss_mib": mem.get("VmHWM"),
                        "pss_mib": mem.get("Pss"),
                        "kernel_map_bytes": kernel_map_memory(d.pins),
                    }
                )
                env.log(f"footprint: start {attempt}: {runs[-1]}")
        out["entries_total"] = total
        out["runs"] = runs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["load_end"] = env.load()
    return out


def main(argv: list[str] | None = None) -> int:
    def args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--agents", type=int, default=AGENTS)
        ap.add_argument("--mode", default="enforce")

    return env.part_main(argv, __doc__, args, lambda a: measure(a.agents, a.mode))


if __name__ == "__main__":
    raise SystemExit(main())
