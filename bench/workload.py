"""A realistic workload: the example agent (examples/agent.py: hundreds of imports, subprocess
tools, loopback HTTP), wall time and CPU, without corral / with corral observing / enforcing.

The agent is learned first (LEARN_RUNS runs in OBSERVE). Then each round runs the three states
in a fresh random order: `none` stops corrald and removes its pins (no corral program is
loaded) and runs the agent in a plain cgroup; `observe` and `enforce` start corrald on the same
state directory, set the agent's mode through the API and start the agent the way
`corralctl run` does. Wall time is fork to reap; CPU is the agent's user+system time including
its children (wait4); corrald's CPU over the run is read from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import env
from .daemon import Corrald, wait4
from .stats import median, spread

AGENT = "bench/example-agent"
LEARN_RUNS = 3
STATES = ("none", "observe", "enforce")


EXAMPLE = env.REPO / "examples" / "agent.py"
RUNS_PER_SAMPLE = 5  # one agent run is short: a sample is this many runs back to back


def default_command(port: int) -> list[str] | None:
    """The example agent's normal run (ticket triage) against the fake LLM on `port`."""
    if not EXAMPLE.exists():
        return None
    workspace = str(EXAMPLE.parent / "workspace")
    return [
        sys.executable,
        str(EXAMPLE),
        "--llm",
        f"http://127.0.0.1:{port}",
        "--workspace",
        workspace,
    ]


@contextlib.contextmanager
def world(port: int) -> Iterator[None]:
    """`agent.py serve`: the fake LLM, ticket API and sink, outside any agent cgroup."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "serve", "-q", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait()


def free_base_port() -> int:
    """A port P with P, P+1 and P+2 free on loopback (LLM, API, sink)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base < 65000 and all(_free(base + i) for i in (1, 2)):
            return base
    raise RuntimeError("no three consecutive free loopback ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_plain(cg: Path, argv: list[str]) -> tuple[int, float, float]:
    """(status, wall s, cpu s) of argv run in cgroup cg, no corral."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            (cg / "cgroup.procs").write_text(str(os.getpid()))
            _quiet_stdio()
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    status, cpu = wait4(pid)
    return status, time.monotonic() - t0, cpu


def repeat(run: Any, n: int) -> tuple[int, float, float]:
    """n runs back to back: (worst status, total wall s, total cpu s)."""
    worst, wall, cpu = 0, 0.0, 0.0
    for _ in range(n):
        status, w, c = run()
        worst, wall, cpu = worst or status, wall + w, cpu + c
    return worst, wall, cpu


def _quiet_stdio() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def run_fenced(d: Corrald, argv: list[str]) -> tuple[int, float, float]:
    devnull = os.open(os.devnull, os.O_WRONLY)
    t0 = time.monotonic()
    pid = d.spawn(AGENT, argv, stdout=devnull)
    os.close(devnull)
    status, cpu = wait4(pid)
    return status, time.monotonic() - t0, cpu


def measure(rounds: int = 7, seed: int = 1) -> dict[str, Any]:
    port = free_base_port()
    argv = default_command(port)
    if argv is None:
        return {"skipped": "examples/agent.py is not in this tree"}
    with world(port):
        return _measure(argv, rounds, seed)


def _measure(argv: list[str], rounds: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": env.machine(),
        "load_start": env.load(),
        "command": ["python3", "examples/agent.py", "--llm", "http://127.0.0.1:<port>"],
        "rounds": rounds,
        "runs_per_sample": RUNS_PER_SAMPLE,
        "samples": [],
    }
    work = Path(tempfile.mkdtemp(prefix="corral-bench-wl-"))
    d = Corrald(work, {"learning": {"save_interval": "0.5s"}})
    rng = random.Random(seed)
    try:
        with env.cgroup("corral-bench-plain") as plain:
            d.start()
            for _ in range(LEARN_RUNS):
                status, _, _ = run_fenced(d, argv)
                if status != 0:
                    raise RuntimeError(f"the example agent failed while learning: {status}")
            time.sleep(1.5)  # learned entries and collapsed prefixes reach the kernel
            base = d.api("GET", d.agent_path(AGENT))["baseline"]
            out["baseline"] = base["counts"]
            d.stop()
            d.cleanup_pins()
            for r in range(rounds):
                order = list(STATES)
                rng.shuffle(order)
                for state in order:
                    out["samples"].append(_one(d, plain, argv, state, r))
                env.log(f"workload: round {r + 1}/{rounds} done ({' '.join(order)})")
            d.start()
            agent = d.api("GET", d.agent_path(AGENT))
            out["deviations"] = agent["deviations"]
            out["counters"] = agent["counters"]
    finally:
        d.stop()
        d.cleanup_pins()
        shutil.rmtree(work, ignore_errors=True)
    out["summary"] = summarize(out["samples"])
    out["load_end"] = env.load()
    return out


def _one(d: Corrald, plain: Path, argv: list[str], state: str, r: int) -> dict[str, Any]:
    if state == "none":
        d.stop()
        d.cleanup_pins()
        status, wall, cpu = repeat(lambda: run_plain(plain, argv), RUNS_PER_SAMPLE)
        daemon_cpu, ours = 0.0, 0
    else:
        if d.proc is None:
            d.start()
        d.set_mode(AGENT, state)
        cpu0 = d.cpu_seconds()
        status, wall, cpu = repeat(lambda: run_fenced(d, argv), RUNS_PER_SAMPLE)
        daemon_cpu = d.cpu_seconds() - cpu0
        ours = len(d.api("GET", "/v1/status")["kernel_state"]["programs"])
    return {
        "round": r,
        "state": state,
        "status": status,
        "wall_s": wall,
        "cpu_s": cpu,
        "daemon_cpu_s": daemon_cpu,
        "load1": env.load()["load1"],
        "foreign_programs": env.foreign_corral_programs(ours),
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = sorted({s["round"] for s in samples})
    by = {(s["state"], s["round"]): s for s in samples}
    out: dict[str, Any] = {}
    for state in STATES:
        rows = [by[(state, r)] for r in rounds if (state, r) in by]
        wall_ratio = [by[(state, r)]["wall_s"] / by[("none", r)]["wall_s"] for r in rounds]
        cpu_ratio = [by[(state, r)]["cpu_s"] / by[("none", r)]["cpu_s"] for r in rounds]
        out[state] = {
            "wall_s": median([s["wall_s"] for s in rows]),
            "cpu_s": median([s["cpu_s"] for s in rows]),
            "daemon_cpu_s": median([s["daemon_cpu_s"] for s in rows]),
            "wall_ratio": median(wall_ratio),
            "wall_ratio_spread": spread(wall_ratio),
            "cpu_ratio": median(cpu_ratio),
            "cpu_ratio_spread": spread(cpu_ratio),
            "failures": sum(1 for s in rows if s["status"] != 0),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    def args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--rounds", type=int, default=7)

    return env.part_main(argv, __doc__, args, lambda a: measure(a.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
