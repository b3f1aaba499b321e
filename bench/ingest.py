"""Event ingest: the highest sustained rate of novel events a real corrald consumes with zero
drops, and its CPU per 1,000 events/s.

A C generator in an agent's cgroup (started through POST /run, like `corralctl run`) opens a
new, nonexistent path at a fixed rate: on the tracepoint backend every one of those opens is a
novel event (the kernel's suppression and rate limit are configured out of the way). Each step
uses a fresh agent; the rate doubles until the kernel reports drops (ring buffer full) or the
daemon has not consumed every event within a short drain. The consumer path measured is the
daemon's own: bpfkit.RingReader -> pipeline.Ingest (learning in OBSERVE, deviations in ALERT).

The same search is then run with a test BPF program as the generator (measure_synthetic): it
writes the records straight into corrald's ring, so the consumer is measured without a process
paying an open() per event beside it on this 2-CPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bpfkit import BpfObject, Map, record_span
from corral import config
from corral.kernel import layout

from . import env
from .daemon import Corrald, corrald, wait4
from .profile import pyspy_collect, pyspy_start

DAEMON_CONFIG: dict[str, Any] = {
    # per agent per CPU per second: out of the way, so drops mean "ring buffer full"
    "kernel": {
        "rate_limit": 100_000_000,
        "suppress_window": "60s",
        # one OBSERVE step learns up to ~1M paths; each step's agent is reset afterwards
        "open_allow_entries": 1 << 21,
    },
    "promotion": {"check_interval": "1s"},
}
STEP_SECONDS = 5.0
_COUNTERS = ("allowed", "novel", "would_deny", "denied", "suppressed", "dropped")
DRAIN_SECONDS = 3.0


def _counters(d: Corrald, agent: str) -> dict[str, int]:
    c = d.api("GET", d.agent_path(agent))["counters"]["open"]
    return {k: int(v) for k, v in c.items()}


def step(
    d: Corrald, loop: Path, mode: str, rate: int, seconds: float, tag: str, profile: bool = False
) -> dict[str, Any]:
    agent = f"ingest-{mode}-{tag}-{rate}"
    received0 = d.api("GET", "/v1/status")["events"]["received"]
    cpu0, t0 = d.cpu_seconds(), time.monotonic()
    argv = [str(loop), "gen-open", str(rate), str(seconds), f"/corral-bench-novel/{tag}{rate}"]
    # The agent is created in OBSERVE; ALERT is set before the generator runs (it waits on go).
    if mode != "observe":
        wait4(d.spawn(agent, [str(loop), "gen-open", "1", "0", "/corral-bench-novel/x"]))
        d.set_mode(agent, mode)
        received0 = d.api("GET", "/v1/status")["events"]["received"]
        cpu0, t0 = d.cpu_seconds(), time.monotonic()
    before = _counters(d, agent) if mode != "observe" else dict.fromkeys(_COUNTERS, 0)
    spy = pyspy_start(d.pid, max(1, int(seconds))) if profile else None
    r_fd, w_fd = os.pipe()
    pid = d.spawn(agent, argv, stdout=w_fd)
    os.close(w_fd)
    wait4(pid)
    gen = json.loads(_read_all(r_fd).splitlines()[-1])
    t_gen = time.monotonic()
    # drain: until the daemon's count stops moving (or DRAIN_SECONDS)
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - t_gen < DRAIN_SECONDS:
        got = d.api("GET", "/v1/status")["events"]["received"] - received0
        if got != last:
            last, stable_since = got, time.monotonic()
        elif time.monotonic() - stable_since > 0.3:
            break
        time.sleep(0.05)
    t_end = time.monotonic()
    cpu = d.cpu_seconds() - cpu0
    after = _counters(d, agent)
    c = {k: after[k] - before[k] for k in _COUNTERS}
    reported = c["novel"] + c["would_deny"] + c["denied"] - c["suppressed"] - c["dropped"]
    received = last
    ok = c["dropped"] == 0 and received >= gen["events"] and received >= reported
    wall = t_end - t0
    out: dict[str, Any] = {
        "mode": mode,
        "rate_asked": rate,
        "generated": gen["events"],
        "rate_generated": gen["rate"],
        "gen_seconds": gen["seconds"],
        "received": received,
        "kernel_counters": c,
        "dropped": c["dropped"],
        "zero_drops": ok,
        **_daemon_side(d, cpu, wall, received),
    }
    if spy is not None:
        out["profile"] = pyspy_collect(*spy)
    if mode == "observe":
        # forget what was learned: frees the kernel allow-list entries for the next step
        d.api("DELETE", d.agent_path(agent, "baseline"))
    return out


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def search(
    run: Callable[[int], dict[str, Any]],
    label: str,
    start_rate: int,
    max_rate: int,
    refinements: int = 2,
) -> tuple[float, list[dict[str, Any]], int]:
    """The highest zero-drop rate: doubling from start_rate until a step drops, then halving
    the bracket between the best zero-drop rate and the lowest dropping one `refinements`
    times. Returns (best generated rate, the steps, the last rate asked)."""
    steps: list[dict[str, Any]] = []
    lo, hi = 0, 0  # the highest zero-drop rate asked, the lowest dropping one (0: none yet)
    best, rate, refined = 0.0, start_rate, 0
    while rate <= max_rate:
        s = run(rate)
        steps.append(s)
        env.log(
            f"{label}: asked {rate}/s generated {s['rate_generated']:.0f}/s "
            f"received {s['received']}/{s['generated']} dropped {s['dropped']} "
            f"cpu {s['cpu_fraction']:.2f}"
        )
        if s["zero_drops"]:
            best = max(best, s["rate_generated"])
            if s["rate_generated"] < 0.9 * rate:
                break  # the generator is the limit
            lo = max(lo, rate)
        else:
            hi = min(hi, rate) if hi else rate
        if not hi:
            rate *= 2
            continue
        if not lo or refined == refinements:
            break  # drops from the first step, or bracketed closely enough
        refined += 1
        rate = (lo + hi) // 2
    return best, steps, min(rate, max_rate)


def measure_synthetic(
    d: Corrald, modes: tuple[str, ...], seconds: float, tag: str, start_rate: int, max_rate: int
) -> dict[str, Any]:
    """The consumer alone: records written into corrald's ring by a test BPF program
    (bench/csrc/ingest_gen.bpf.c, run with BPF_PROG_TEST_RUN from this process), so no
    process pays an open() per event on the same CPUs. Each record is a novel open, as the
    tracepoint hook writes it."""
    obj = BpfObject.open_file(env.helpers()["ingest_gen"])
    ring = Map.open_pinned(next(d.pins.glob("*/maps/events")))
    try:
        obj.maps["events"].reuse_fd(ring.fd)
        obj.load()
        prog = obj.programs["ingest_gen"]
        out: dict[str, Any] = {"batch": GEN_BATCH, "steps": [], "max_zero_drop_rate": {}}
        for mode in modes:

            def one(rate: int, mode: str = mode) -> dict[str, Any]:
                return synthetic_step(d, prog, mode, rate, seconds, tag)

            best, steps, last = search(one, f"ingest {mode} (bpf generator)", start_rate, max_rate)
            out["steps"] += steps
            out["max_zero_drop_rate"][mode] = best
            # the consumer alone at its limit: where does an event's time go?
            s = synthetic_step(d, prog, mode, last, seconds, tag, profile=True)
            out.setdefault("profile", {})[mode] = {
                "rate": s["rate_generated"],
                "cpu_fraction": s["cpu_fraction"],
                **s.get("profile", {}),
            }
        return out
    finally:
        obj.close()
        ring.close()


GEN_BATCH = 256  # records per BPF_PROG_TEST_RUN call


def synthetic_step(
    d: Corrald, prog: Any, mode: str, rate: int, seconds: float, tag: str, profile: bool = False
) -> dict[str, Any]:
    agent = f"ingest-bpf-{mode}-{tag}-{rate}{'p' if profile else ''}"
    wait4(d.spawn(agent, ["/bin/true"]))
    info = d.api("GET", d.agent_path(agent))
    if mode != "observe":
        d.set_mode(agent, mode)
    verdict = 0 if mode == "observe" else 1  # allowed (learned) / would-deny
    received0 = d.api("GET", "/v1/status")["events"]["received"]
    spy = pyspy_start(d.pid, max(1, int(seconds))) if profile else None
    cpu0, t0 = d.cpu_seconds(), time.monotonic()
    sent = written = 0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate) - sent
        if due < GEN_BATCH:
            time.sleep((GEN_BATCH - due) / rate)
            continue
        args = (info["id"], verdict, layout.mode_index(mode), int(tag))
        written += prog.test_run(struct.pack("<6Q", *args, sent, GEN_BATCH))
        sent += GEN_BATCH
    gen_seconds = time.monotonic() - t0
    received = _drain(d, received0, written)
    wall = time.monotonic() - t0
    cpu = d.cpu_seconds() - cpu0
    if mode == "observe":
        d.api("DELETE", d.agent_path(agent, "baseline"))
    out: dict[str, Any] = {"profile": pyspy_collect(*spy)} if spy is not None else {}
    return out | {
        "mode": mode,
        "generator": "bpf",
        "rate_asked": rate,
        "generated": sent,
        "rate_generated": sent / gen_seconds,
        "gen_seconds": gen_seconds,
        "received": received,
        "dropped": sent - written,
        "zero_drops": written == sent and received >= sent,
        **_daemon_side(d, cpu, wall, received),
    }


def _daemon_side(d: Corrald, cpu: float, wall: float, received: int) -> dict[str, Any]:
    return {
        "daemon_cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_fraction": cpu / wall,
        # % of one core that 1,000 events/s cost: CPU-seconds per event x 1,000 x 100
        "cpu_pct_per_1k": 100 * 1000 * cpu / received if received else 0.0,
        "rss_mib": d.memory().get("VmRSS", 0.0),
        "load1": env.load()["load1"],
    }


def _drain(d: Corrald, received0: int, want: int) -> int:
    """corrald's received count once it stops moving (or has want, or DRAIN_SECONDS)."""
    t_gen = time.monotonic()
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - t_gen < DRAIN_SECONDS:
        got = d.api("GET", "/v1/status")["events"]["received"] - received0
        if got >= want:
            return got
        if got != last:
            last, stable_since = got, time.monotonic()
        elif time.monotonic() - stable_since > 0.3:
            break
        time.sleep(0.05)
    return last


def measure(
    modes: tuple[str, ...] = ("observe", "alert"),
    start_rate: int = 5000,
    max_rate: int = 640_000,
    seconds: float = STEP_SECONDS,
    log_events: bool = False,
    profile: bool = True,
    synthetic: bool = True,
) -> dict[str, Any]:
    tools = env.helpers()
    cfg = {**DAEMON_CONFIG, "events": {"log_events": log_events}}
    out: dict[str, Any] = {
        "machine": env.machine(),
        "load_start": env.load(),
        "step_seconds": seconds,
        "log_events": log_events,
        "steps": [],
    }
    tag = str(int(time.time()) % 100000)
    with corrald(cfg) as d:
        out["daemon_startup_seconds"] = d.startup_seconds
        for mode in modes:

            def open_step(rate: int, mode: str = mode) -> dict[str, Any]:
                return step(d, tools["loop"], mode, rate, seconds, tag)

            best, steps, last = search(open_step, f"ingest {mode}", start_rate, max_rate)
            out["steps"] += steps
            out.setdefault("max_zero_drop_rate", {})[mode] = best
            if profile:
                # the consumer at (or just past) its limit: where does a event's time go?
                s = step(d, tools["loop"], mode, max(last, 5000), seconds, tag + "p", True)
                out.setdefault("profile", {})[mode] = {
                    "rate": s["rate_generated"],
                    "cpu_fraction": s["cpu_fraction"],
                    **s.get("profile", {}),
                }
        if synthetic:
            out["synthetic"] = measure_synthetic(d, modes, seconds, tag, start_rate, max_rate)
    out["in_process"] = {mode: measure_in_process(mode) for mode in modes}
    out["ring_buffer_mib"] = config.KernelConfig().ring_buffer_mib  # the default: not set here
    out["ring_records"] = (out["ring_buffer_mib"] << 20) // record_span(
        layout.sizeof("struct corral_event")
    )
    out["load_end"] = env.load()
    return out


class _ListWrites:
    """Stands in for the kernel's allow-list writes in measure_in_process (counts the keys)."""

    def __init__(self) -> None:
        self.keys = 0

    def allow_paths(self, dim: str, list_id: int, exact: Any, prefixes: Any = ()) -> int:
        n = len(exact) + len(prefixes)
        self.keys += n
        return n

    def allow_net(self, list_id: int, entries: Any) -> int:
        self.keys += len(entries)
        return len(entries)


def measure_in_process(
    mode: str, records: int = 100_000, reps: int = 5, batch: int = 256
) -> dict[str, Any]:
    """corrald's consumer code alone: pipeline.Ingest.on_batch over records built in memory
    (the open generator's: a new path each, one agent, one process), in batches of `batch`, timed
    `reps` times (a table of at most 2,000 deviations: each pass is novel again). No ring,
    no event loop, no other process; in OBSERVE the kernel list writes are left out (counted,
    not made): what the Python per record costs, without this shared machine's noise."""
    import tempfile

    from corral.app import Node

    with tempfile.TemporaryDirectory(prefix="corral-bench-inproc-") as tmp:
        cfg = config.from_dict({"state_dir": tmp, "events": {"log_events": False}})
        c = Node(cfg)
        state = c.state
        agent = state.registry.create("inproc", mode=mode, auto_promote=False, source="local")
        state.by_id[agent.id] = agent
        state.baselines[agent.name] = state.new_baseline(agent.name)
        writes = _ListWrites()
        c.sync.kernel = writes  # type: ignore[assignment]
        verdict = "allowed" if mode == "observe" else "would-deny"
        recs = [_record(agent.id, i, verdict, mode) for i in range(records)]
        times = []
        for _ in range(reps):
            if mode == "observe":  # learning again from an empty baseline
                state.baselines[agent.name] = state.new_baseline(agent.name)
            t0 = time.perf_counter()
            for i in range(0, records, batch):
                c.ingest.on_batch(recs[i : i + batch])
            times.append(time.perf_counter() - t0)
    per = sorted(t / records * 1e6 for t in times)
    return {
        "records": records,
        "reps": reps,
        "batch": batch,
        "us_per_record_min": per[0],
        "us_per_record_median": per[len(per) // 2],
        "kernel_keys_queued": writes.keys,
    }


def _record(agent_id: int, i: int, verdict: str, mode: str) -> bytes:
    e = layout.new("struct corral_event")
    e.ts_ns = 10**12 + i
    e.cgroup_id = 4242
    e.agent = agent_id
    e.pid = e.tid = 2**22 + 7  # no such process
    e.ppid = 1
    e.dim = layout.dim_index("open")
    e.verdict = layout.VERDICTS.index(verdict)
    e.mode = layout.mode_index(mode)
    e.backend = layout.C.CORRAL_BACKEND_TRACEPOINT
    path = f"/tmp/corral-bench-inproc/{i:08x}".encode()
    layout.ffi().memmove(e.path, path, len(path))
    layout.ffi().memmove(e.comm, b"loop", 4)
    return layout.to_bytes(e)


def main(argv: list[str] | None = None) -> int:
    def args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--seconds", type=float, default=STEP_SECONDS)
        ap.add_argument("--start-rate", type=int, default=5000)
        ap.add_argument("--max-rate", type=int, default=640_000)
        ap.add_argument("--modes", default="observe,alert")
        ap.add_argument("--log-events", action="store_true")

    def run(a: argparse.Namespace) -> dict[str, Any]:
        modes = tuple(a.modes.split(","))
        return measure(modes, a.start_rate, a.max_rate, a.seconds, a.log_events)

    return env.part_main(argv, __doc__, args, run)


if __name__ == "__main__":
    raise SystemExit(main())
