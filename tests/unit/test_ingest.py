"""corrald's event pipeline (pipeline.Ingest: one decoder, then the consumers) against the plain
per-event reading of the same records: events.decode, then Agent.record_deviation or
Baseline.observe, one at a time.

The decoder is written for speed (one unpack per record, deviations grouped per batch, the
event ring holding the raw record); this checks it means the same. No kernel: the records are
built from the header with cffi, the learned entries are caught where the kernel write would
take them (a recorder in place of the kernel's allow-lists)."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import pytest

from corral import config
from corral.app import Node
from corral.kernel import events, layout
from corral.kernel.layout import C
from corral.kernel.loader import Backends
from corral.pipeline.aibom import AibomFeed
from corral.policy.agents import Agent
from corral.policy.baseline import Baseline

PATHS = [f"/opt/tool/{n}" for n in ("a", "b", "c")] + [
    "/etc/ssl/certs/ca.pem",
    "/proc/1234/status",
    "relative/file",
    "/" + "d" * 250,  # as long as the kernel buffer allows, unterminated
]
COMMS = [b"python3", b"curl", b"x" * 16]


def record(rng: random.Random, agent_id: int) -> bytes:
    e = layout.new("struct corral_event")
    e.ts_ns = rng.randrange(10**9, 10**12)
    e.cgroup_id = rng.choice([11, 12])
    e.agent = agent_id
    e.pid = rng.choice([2**22 + 1, 2**22 + 2])  # no such process: exe ""
    e.tid = e.pid
    e.ppid = 1
    e.dim = rng.randrange(3)
    e.verdict = rng.randrange(4)
    e.mode = rng.randrange(4)
    e.backend = C.CORRAL_BACKEND_LSM
    e.flags = rng.choice([0, C.CORRAL_EF_INHERITED])
    comm = rng.choice(COMMS)
    layout.ffi().memmove(e.comm, comm, len(comm))
    if e.dim == C.CORRAL_DIM_CONNECT:
        e.family = rng.choice([socket.AF_INET, socket.AF_INET6])
        e.port = rng.choice([443, 8080])
        e.proto = 6
        addr = (
            socket.inet_pton(socket.AF_INET, "10.0.0.7")
            if e.family == socket.AF_INET
            else (socket.inet_pton(socket.AF_INET6, "2001:db8::7"))
        )
        layout.ffi().memmove(e.addr, addr, len(addr))
    else:
        path = rng.choice(PATHS).encode()
        layout.ffi().memmove(e.path, path, min(len(path), C.CORRAL_PATH_MAX))
    return layout.to_bytes(e)


class ListWrites:
    """Stands in for the kernel's allow-lists: records what the learner writes."""

    backends = Backends.choose(False)  # the fallback: every exec in the agent's own list

    def __init__(self) -> None:
        self.paths: dict[tuple[str, int], set[str]] = {}

    def allow_paths(self, dim: str, list_id: int, exact: Any, prefixes: Any = ()) -> int:
        exact, prefixes = list(exact), list(prefixes)
        self.paths.setdefault((dim, list_id), set()).update(exact, prefixes)
        return len(exact) + len(prefixes)

    def set_patterns(self, dim: str, list_id: int, groups: dict[str, list[str]]) -> int:
        self.paths.setdefault((dim, list_id), set()).update(*groups.values())
        return len(groups)

    def set_callers(self, base: int, callers: dict[str, int]) -> int:
        return len(callers)

    def allow_net(self, list_id: int, entries: Any) -> int:
        return len(entries)


@pytest.fixture
def corral(tmp_path: Path) -> Node:
    cfg = config.from_dict({"state_dir": str(tmp_path), "events": {"log_events": False}})
    c = Node(cfg)
    c.sync.kernel = ListWrites()  # type: ignore[assignment]
    for name, mode in (("watched", "alert"), ("learner", "observe")):
        a = c.state.registry.create(name, mode=mode, auto_promote=False, source="local")
        c.state.by_id[a.id] = a
        c.state.baselines[name] = c.state.new_baseline(name)
    c.state.registry.agents["watched"].modes["exec"] = "enforce"
    return c


def reference(c: Node, records: list[bytes]) -> tuple[dict[str, Agent], dict[str, Baseline]]:
    """The per-event reading, on copies of the agents and fresh baselines."""
    agents = {
        n: Agent(name=a.name, id=a.id, modes=dict(a.modes), lists=dict(a.lists))
        for n, a in c.state.registry.agents.items()
    }
    by_id = {a.id: a for a in agents.values()}
    baselines = {n: c.state.new_baseline(n) for n in agents}
    for raw in records:
        try:
            ev = events.decode(raw, c.ingest.decoder.boot_offset)
        except ValueError:
            continue
        agent = by_id.get(ev.agent_id)
        if agent is None:
            continue
        if ev.verdict != "allowed":
            agent.record_deviation(ev.dimension, ev.object, ev.verdict, ev.ts_ns / 1e9, ev.comm)
        elif agent.modes.get(ev.dimension) == "observe":
            baselines[agent.name].observe(ev)
    return agents, baselines


@pytest.mark.parametrize("seed", range(5))
def test_batch_consumer_means_what_the_per_event_reading_means(corral: Node, seed: int) -> None:
    rng = random.Random(seed)
    ids = [a.id for a in corral.state.registry.agents.values()] + [C.CORRAL_MAX_AGENTS - 1]
    records = [record(rng, rng.choice(ids)) for _ in range(600)]
    records.insert(rng.randrange(len(records)), b"\0" * 12)  # short: counted lost, skipped
    want_agents, want_baselines = reference(corral, records)
    for start in range(0, len(records), 97):  # batches of various sizes
        corral.ingest.on_batch(records[start : start + 97])

    assert corral.stats.received == len(records) - 1
    assert corral.stats.lost == 1
    for name, want in want_agents.items():
        got = corral.state.registry.agents[name]
        assert list(got.deviations) == list(want.deviations)  # same order: least recent first
        assert list(got.deviations.values()) == list(want.deviations.values())
        assert corral.state.baselines[name].keys() == want_baselines[name].keys()
    ours = [r for r in records if len(r) >= layout.sizeof("struct corral_event")]
    known = {a.id: a.name for a in corral.state.registry.agents.values()}
    shown = corral.events.recent_events(None, 10_000)
    expected = [events.decode(r, corral.ingest.decoder.boot_offset) for r in ours]
    expected = [ev for ev in expected if ev.agent_id in known]
    assert len(shown) == len(expected)
    for rec, ev in zip(shown, expected, strict=True):
        assert {k: rec[k] for k in ev.to_dict()} == ev.to_dict()
        assert rec["agent"] == known[ev.agent_id] and rec["exe"] == ""
        assert rec["namespace"] == rec["pod"] == rec["container"] == ""


def test_learned_entries_wait_for_the_kernel_write(corral: Node) -> None:
    """OBSERVE: each novel object's entry goes to its kernel list at the end of the batch."""
    learner = corral.state.registry.agents["learner"]
    rng = random.Random(1)
    recs = []
    for _ in range(200):
        raw = bytearray(record(rng, learner.id))
        raw[layout.offsetof("struct corral_event", "verdict")] = 0  # allowed
        recs.append(bytes(raw))
    corral.ingest.on_batch(recs)
    entries = corral.state.baselines["learner"].keys()  # (dimension, key, is_prefix)
    for dim in ("exec", "open"):
        written = corral.sync.kernel.paths.get((dim, learner.lists[dim]), set())  # type: ignore[union-attr]
        want = {k for d, k, _ in entries if d == dim}
        assert written == want
    assert not corral.learner.learned_by  # written at the end of the batch


INTERESTING = [
    "/usr/lib/python3/site-packages/requests/__init__.py",
    "/models/llama.GGUF",
    "/app/node_modules/left-pad/index.js",
]


@pytest.mark.parametrize("seed", range(4))
def test_aibom_sees_execs_connects_and_candidate_opens_in_order(corral: Node, seed: int) -> None:
    """The AI-BOM pre-filter runs once per batch over the batch's open paths: batches without
    a candidate hand over only their execs and connects, batches with one are read again;
    either way the tracker gets what a per-event filter gives it, in record order."""
    rng = random.Random(seed)
    ids = [a.id for a in corral.state.registry.agents.values()]
    records = []
    for _ in range(400):
        raw = record(rng, rng.choice(ids))
        if raw[layout.offsetof("struct corral_event", "dim")] == C.CORRAL_DIM_OPEN and (
            rng.random() < 0.05
        ):
            e = layout.from_bytes("struct corral_event", raw)
            path = rng.choice(INTERESTING).encode()
            layout.ffi().memmove(e.path, path + b"\0", len(path) + 1)
            raw = layout.to_bytes(e)
        records.append(raw)
    rules = corral.tracker.rules
    want = []
    for raw in records:
        ev = events.decode(raw, corral.ingest.decoder.boot_offset)
        if ev.dimension != "open" or rules.maybe_interesting(ev.object):
            want.append(ev)
    got: list[events.Event] = []
    feed = next(c for c in corral.ingest.consumers if isinstance(c, AibomFeed))
    feed.event = lambda agent, ev: got.append(ev)  # type: ignore[method-assign]
    for start in range(0, len(records), 37):
        corral.ingest.on_batch(records[start : start + 37])
    assert [ev.to_dict() for ev in got] == [ev.to_dict() for ev in want]
    assert any(ev.dimension == "open" for ev in got)  # some batches had a candidate


def test_a_tamper_report_is_a_deviation_named_by_its_kind_and_never_learned(
    corral: Node,
) -> None:
    """Even in OBSERVE (the kernel reports tamper as would-deny there) nothing is learned and
    the AI-BOM is not fed; diff's object leads with the kind (what `corralctl tamper
    --allow` takes)."""
    learner = corral.state.registry.agents["learner"]
    e = layout.new("struct corral_event")
    e.agent, e.pid, e.ts_ns = learner.id, 2**22 + 1, 10**9
    e.dim, e.tamper = C.CORRAL_EVENT_TAMPER, C.CORRAL_TAMPER_BPF
    e.verdict, e.mode = C.CORRAL_VERDICT_WOULD_DENY, C.CORRAL_MODE_OBSERVE
    layout.ffi().memmove(e.path, b"bpf(cmd=0)", 10)
    before = corral.state.baselines["learner"].to_dict()
    corral.ingest.on_batch([layout.to_bytes(e)])
    assert [d.object for d in learner.deviations.values()] == ["bpf: bpf(cmd=0)"]
    assert corral.state.baselines["learner"].to_dict() == before
