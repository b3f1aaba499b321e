"""In-memory services (corral's own daemon logic, faked) and helpers for the API/CLI tests.

No tests here: test_api.py and test_cli.py import from this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from corral.aibom import cyclonedx
from corral.aibom.inventory import AibomTracker
from corral.aibom.rulefile import load_rules
from corral.contract import BadRequest, Conflict, ServiceError, UnknownAgent
from corral.kernel.events import Event
from corral.policy import document
from corral.policy.baseline import Baseline
from corral.policy.rules import BaselineRules

DIMS = ("exec", "open", "connect")
LONG_NAME = "prod/Deployment/chatbot/agent"
DIFF_VIEW = "3fa2c1d0"


GATE_DEFAULTS = {"min_learning": 86400.0, "quiet_period": 3600.0, "min_runs": 3,
                 "alert_period": 86400.0, "burst_denials": 10, "burst_window": 3600.0}  # fmt: skip
COUNTER_FIELDS = ("allowed", "novel", "would_deny", "denied", "suppressed", "dropped")


def _agent(name: str, mode: str = "observe") -> dict[str, Any]:
    """Shaped like the daemon's agent summary (node.Corral._summary)."""
    counters = {d: dict.fromkeys(COUNTER_FIELDS, 0) for d in DIMS}
    counters["open"].update(allowed=40, novel=2)
    return {
        "name": name,
        "id": 1,
        "source": "run",
        "modes": dict.fromkeys(DIMS, mode),
        "effective": dict.fromkeys(DIMS, mode),
        "auto_promote": False,
        "baseline": {"agent": name, "counts": {"exec": 3, "open": 12, "connect": 1}},
        "counters": counters,
        "deviations": 2,
        "cgroups": 1,
        "mode_since": dict.fromkeys(DIMS, time.time() - 300),
    }


def make_event(n: int, agent: str = "demo", verdict: str = "allowed") -> dict[str, Any]:
    return {
        "ts_ns": time.time_ns() - 120 * 10**9,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 120)),
        "agent": agent,
        "verdict": verdict,
        "dimension": "open",
        "object": f"/tmp/file{n}",
        "pid": 1000 + n,
        "comm": "python3",
        "flags": [],
    }


class FakeController:
    """Implements every service of corral.contract in memory (serve it as
    `Services.of(FakeController())`) and records what it was asked."""

    def __init__(self) -> None:
        self.agents: dict[str, dict[str, Any]] = {
            "demo": _agent("demo"),
            LONG_NAME: _agent(LONG_NAME, "alert"),
            "locked": _agent("locked", "enforce"),
        }
        self.events = [make_event(i) for i in range(5)] + [make_event(9, LONG_NAME, "denied")]
        self.calls: list[tuple[Any, ...]] = []
        self.subscribers: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.explode: BaseException | None = None
        self.parents: dict[int, int | None] = {}
        self.confined_pids: dict[int, str] = {}  # pid -> agent: the API refuses these callers
        # baselines for export/import (the real document module, in memory)
        self.baselines: dict[str, Baseline] = {}
        self.gates: dict[str, dict[str, float | int]] = {}  # the operator's, per agent
        self.tamper: dict[str, set[str]] = {}  # the tamper kinds allowed, per agent

    def _check(self, name: str) -> dict[str, Any]:
        if self.explode is not None:
            exc, self.explode = self.explode, None
            raise exc
        if name not in self.agents:
            raise UnknownAgent(name)
        return self.agents[name]

    def status(self) -> dict[str, Any]:
        if self.explode is not None:
            exc, self.explode = self.explode, None
            raise exc
        return {
            "version": "0.1.0",
            "node": "node-1",
            "agents": {"observe": 1, "alert": 1, "enforce": 1},
            "ringbuf_drops": 0,
            "probe": {"lsm": True, "fallback": False},
        }

    def list_agents(self) -> list[dict[str, Any]]:
        return list(self.agents.values())

    def get_agent(self, name: str) -> dict[str, Any]:
        agent = self._check(name)
        tamper = sorted(self.tamper.get(name, ()))
        return {**agent, "tamper_allow": tamper, "promotion": self._promotion(name)}

    def _promotion(self, name: str) -> dict[str, Any]:
        """Shaped like node.agents.AgentService.get_agent's promotion."""
        agent = self.agents[name]
        mine = self.gates.get(name, {})
        gates = {
            g: {
                "value": mine.get(g, v),
                "text": str(mine.get(g, v)),
                "source": "operator" if g in mine else "default",
            }
            for g, v in GATE_DEFAULTS.items()
        }
        runs = f"0 of {gates['min_runs']['value']} runs (cgroups) seen while learning"
        waiting = ["learning for 0s of 24.0h", runs]
        ready = {"mode": "observe", "next": "alert", "ready": False, "reason": waiting[0],
                 "waiting_for": waiting}  # fmt: skip
        return {"auto": agent["auto_promote"], "gates": gates, **dict.fromkeys(DIMS, ready)}

    async def set_promotion(
        self,
        name: str,
        gates: dict[str, float | int | None],
        *,
        reset: bool = False,
        auto: bool | None = None,
    ) -> dict[str, Any]:
        agent = self._check(name)
        self.calls.append(("set_promotion", name, gates, reset, auto))
        mine = {} if reset else self.gates.get(name, {})
        mine.update(gates)
        self.gates[name] = {g: v for g, v in mine.items() if v is not None}
        if auto is not None:
            agent["auto_promote"] = auto
        return self.get_agent(name)

    async def set_tamper(
        self,
        name: str,
        allow: list[str] | tuple[str, ...] = (),
        deny: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        self._check(name)
        self.calls.append(("set_tamper", name, list(allow), list(deny)))
        self.tamper[name] = (self.tamper.get(name, set()) | set(allow)) - set(deny)
        return self.get_agent(name)

    def get_baseline(self, name: str) -> dict[str, Any]:
        """Shaped like baseline.Baseline.to_dict()."""
        self._check(name)
        seen = time.time() - 3600

        def entry(obj: str, hits: int, last: float) -> dict[str, Any]:
            return {"object": obj, "kind": "exact", "first_seen": seen, "last_seen": last,
                    "hits": hits, "source": "learned"}  # fmt: skip

        return {
            "agent": name,
            "version": 1,
            "learning_since": seen,
            "partial": False,
            "exec": [entry("/usr/bin/python3", 4, seen + 3000)],
            "open": [entry("/etc/hosts", 9, seen)],
            "connect": [],
        }

    async def set_mode(self, name: str, modes: dict[str, str]) -> dict[str, Any]:
        agent = self._check(name)
        if name == "locked":
            raise Conflict("agent 'locked' is pinned by its policy; edit the policy instead")
        self.calls.append(("set_mode", name, modes))
        agent["modes"].update(modes)
        return agent

    async def accept(
        self,
        name: str,
        entries: list[dict[str, Any]] | None,
        *,
        index: list[int] | None = None,
        view: str | None = None,
        flat: bool = False,
    ) -> dict[str, Any]:
        self._check(name)
        if index is None:
            self.calls.append(("accept", name, entries))
        else:
            self.calls.append(("accept", name, entries, index, view, flat))
            if view is not None and view != DIFF_VIEW:
                raise Conflict(f"the deviations of {name} changed since view {view}")
        n = 2 if entries is None and index is None else len(entries or []) + len(index or [])
        return {"accepted": n, "agent": name}

    def diff(self, name: str, flat: bool = False) -> dict[str, Any]:
        """Shaped like node.Corral.diff."""
        agent = self._check(name)
        self.calls.append(("diff", name, flat))
        seen = time.time() - 600

        def row(i: int, dim: str, obj: str, kind: str, members: list[str]) -> dict[str, Any]:
            return {"index": i, "dimension": dim, "object": obj, "kind": kind,
                    "objects": len(members), "members": members, "count": 3 * len(members),
                    "first_seen": seen, "last_seen": seen + 540, "verdicts": ["would-deny"],
                    "comms": ["python3"], "note": ""}  # fmt: skip

        tmp = [f"/tmp/cache/f{i}" for i in range(6)]
        rows = [
            row(1, "exec", "/usr/bin/curl", "exact", ["/usr/bin/curl"]),
            row(2, "open", "/tmp/cache/", "group", tmp),
            row(3, "connect", "10.0.0.1:443", "exact", ["10.0.0.1:443"]),
        ]
        if flat:
            objects = [(r["dimension"], m) for r in rows for m in r["members"]]
            rows = [row(i, d, m, "exact", [m]) for i, (d, m) in enumerate(objects, 1)]
        return {"agent": name, "modes": agent["modes"], "view": DIFF_VIEW, "flat": flat,
                "deviations": 8, "rows": rows}  # fmt: skip

    def export_baseline(self, name: str) -> dict[str, Any]:
        agent = self._check(name)
        b = self.baselines.get(name) or Baseline(name)
        return document.export(b, modes=agent["modes"], auto_promote=agent["auto_promote"])

    async def import_baseline(
        self,
        name: str,
        doc: document.Document,
        *,
        strategy: document.Strategy = "merge",
        keep_modes: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if doc.count("open") > 1000:
            raise BadRequest("spec.open: 1001 entries; this node's open allow-list holds 1000")
        self.calls.append(("import", name, strategy, keep_modes, dry_run))
        created = name not in self.agents
        plan = document.plan(doc, self.baselines.get(name), agent=name, strategy=strategy,
                             rules=BaselineRules(), now=time.time())  # fmt: skip
        modes = {} if keep_modes else doc.modes
        if not dry_run:
            self.baselines[name] = plan.baseline
            agent = self.agents.setdefault(name, _agent(name))
            agent["modes"].update(modes)
            if doc.auto_promote is not None and not keep_modes:
                agent["auto_promote"] = doc.auto_promote
        return {"agent": name, "created": created, "strategy": strategy, "digest": doc.digest,
                "dry_run": dry_run, "added": plan.added, "removed": plan.removed,
                "kept": plan.kept, "entries": len(plan.baseline),
                "modes": self.agents.get(name, {}).get("modes", modes)}  # fmt: skip

    async def reset(self, name: str) -> dict[str, Any]:
        agent = self._check(name)
        self.calls.append(("reset", name))
        agent["modes"] = dict.fromkeys(DIMS, "observe")
        return agent

    def recent_events(self, agent: str | None, limit: int) -> list[dict[str, Any]]:
        self.calls.append(("recent_events", agent, limit))
        events = [e for e in self.events if agent is None or e["agent"] == agent]
        return events[-limit:]

    async def subscribe(self, agent: str | None) -> AsyncIterator[dict[str, Any]]:
        if agent is not None:
            self._check(agent)  # like the daemon: refuses an unknown agent on the first anext
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                if agent is None or event["agent"] == agent:
                    yield event
        finally:
            self.subscribers.remove(queue)

    def publish(self, event: dict[str, Any] | None) -> None:
        for queue in self.subscribers:
            queue.put_nowait(event)

    async def aibom(self, name: str | None, fmt: str) -> dict[str, Any]:
        """The real AI-BOM views and CycloneDX rendering over a few made-up events."""
        if name is not None:
            self._check(name)
        if fmt not in ("json", "cyclonedx"):
            raise BadRequest(f"format must be json or cyclonedx; got {fmt!r}")
        self.calls.append(("aibom", name, fmt))
        tracker = fake_tracker(list(self.agents))
        view = tracker.agent_view(name) if name else tracker.node_view()
        if fmt == "json":
            return view
        return (cyclonedx.agent_bom if name else cyclonedx.node_bom)(view)

    def confined(self, pid: int) -> str | None:
        return self.confined_pids.get(pid)

    async def run_agent(self, name: str, pid: int, caller_pid: int | None) -> dict[str, Any]:
        if name == "refuse":
            raise ServiceError("cannot create the cgroup: cgroup v2 is not mounted")
        self.calls.append(("run_agent", name, pid, caller_pid))
        self.parents[pid] = _ppid(pid)  # the daemon refuses a pid that is not the caller's child
        self.agents.setdefault(name, _agent(name))
        return {"agent": name, "cgroup": f"/sys/fs/cgroup/corral/{name}/1", "cgroup_id": 77}


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="corral-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


SITE = "/app/.venv/lib/python3.11/site-packages"


def fake_event(dimension: str, obj: str, port: int | None = None) -> Event:
    common: dict[str, Any] = dict(
        ts_ns=time.time_ns() - 60 * 10**9, cgroup_id=1, agent_id=1, pid=0, tid=0, ppid=0,
        uid=0, comm="python3", dimension=dimension, verdict="allowed", mode="observe",
        backend="tracepoint", flags=(), err=0,
    )  # fmt: skip
    if dimension == "connect":
        return Event(**common, family="inet", address=obj, port=port)
    return Event(**common, path=obj)


def fake_tracker(agents: list[str]) -> AibomTracker:
    """An AibomTracker (built-in rules, no /proc, no DNS) that saw a small agent as "demo"."""
    tracker = AibomTracker(
        load_rules(), "/nonexistent", "node-1", baselines=dict, cgroups_of=lambda _: [],
        read_proc=False, resolve_hosts=False,
    )  # fmt: skip
    for agent in agents:
        tracker._inv(agent)
    for ev in (
        fake_event("open", f"{SITE}/openai/__init__.py"),
        fake_event("open", f"{SITE}/openai-1.2.3.dist-info/METADATA"),
        fake_event("open", f"{SITE}/langchain_core/runnables/base.py"),
        fake_event("open", "/models/tiny.gguf"),
        fake_event("exec", "/usr/local/bin/mcp-server-fetch"),
        fake_event("exec", "/bin/bash"),
        fake_event("connect", "127.0.0.1", 11434),
    ):
        tracker.on_event("demo", ev)
    return tracker
