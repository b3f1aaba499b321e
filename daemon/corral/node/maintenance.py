"""The periodic tick: finished `run` cgroups swept, kernel drops noted, auto-promotion, saving,
and resting the baselines nobody is reading."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from corral.kernel.layout import DIMS
from corral.policy.promotion import effective, readiness

from .cgroups import Cgroups
from .state import NodeState
from .sync import KernelSync

log = structlog.get_logger("corral.node")


class Maintenance:
    def __init__(self, state: NodeState, sync: KernelSync, cgroups: Cgroups) -> None:
        self.state = state
        self.sync = sync
        self.cgroups = cgroups
        # (agent, dimension) auto-promoted to enforce -> (when, its denied counter then)
        self.watched: dict[tuple[str, str], tuple[float, int]] = {}
        self.bursts = 0
        self.last_burst: dict[str, object] | None = None
        # puts an event into the event stream (pipeline.EventFeed.notice), set by the
        # composition root: notify(agent, kind, dimension, object, fields)
        self.notify: Callable[[str, str, str, str, dict[str, Any]], None] | None = None

    async def loop(self, stopping: asyncio.Event) -> None:
        cfg = self.state.cfg
        last_save = time.monotonic()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), cfg.promotion.check_interval)
            try:
                self.cgroups.sweep_run_cgroups()
                self.note_drops()
                self.auto_promote()
                self.watch_bursts()
                if time.monotonic() - last_save >= cfg.learning.save_interval:
                    await self.state.save_all()
                    last_save = time.monotonic()
                self.state.rest_baselines()
            except Exception as e:
                log.error("maintenance step failed", error=str(e))

    def note_drops(self) -> None:
        """A learning agent whose events the kernel dropped has a partial baseline."""
        for agent in self.state.registry.agents.values():
            if "observe" not in agent.modes.values():
                continue
            dropped = sum(c["dropped"] for c in self.sync.k.counters(agent.id).values())
            b = self.state.baselines[agent.name]
            if dropped and not b.partial:
                b.mark_partial(f"{dropped} events dropped in the kernel (rate limit or full ring)")
                self.state.dirty.add(agent.name)

    def auto_promote(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        p = self.state.cfg.promotion
        for agent in self.state.registry.agents.values():
            if not agent.auto_promote or agent.name in self.state.uncovered:
                continue  # not covered: a quiet baseline says nothing (node/coverage.py)
            gates, _ = effective(p, agent)
            b = self.state.baselines[agent.name]
            changed = False
            for dim in DIMS:
                r = readiness(agent, dim, b, gates, now)
                if r.ready and r.next is not None:
                    changed |= agent.set_mode(dim, r.next, reason=r.reason, by="auto-promotion")
                    if r.next == "enforce":
                        self._watch(agent.name, agent.id, dim, now)
            if changed:
                self.sync.sync_agent(agent)
                self.state.registry.dirty = True

    # ---- after a promotion to enforce -----------------------------------------------------

    def _watch(self, name: str, agent_id: int, dim: str, now: float) -> None:
        denied = self.sync.k.counters(agent_id)[dim]["denied"]
        self.watched[(name, dim)] = (now, denied)

    def watch_bursts(self, now: float | None = None) -> None:
        """Denials piling up after an auto-promotion to enforce (the agent's burst_denials
        within its burst_window) are reported once: log line `denials after auto-promotion`,
        an event of kind denial-burst (`corralctl events`, the event log), status, metric.
        Legitimate work may be denied; corral does not step back by itself (an attacker could
        force that)."""
        now = time.time() if now is None else now
        p = self.state.cfg.promotion
        for (name, dim), (since, base) in list(self.watched.items()):
            agent = self.state.registry.get(name)
            if agent is None or agent.modes.get(dim) != "enforce":
                del self.watched[(name, dim)]
                continue
            gates, _ = effective(p, agent)
            if now - since > gates.burst_window:
                del self.watched[(name, dim)]
                continue
            denied = self.sync.k.counters(agent.id)[dim]["denied"] - base
            if denied >= gates.burst_denials:
                del self.watched[(name, dim)]
                self._burst(name, dim, denied, since, now)

    def _burst(self, name: str, dim: str, denied: int, since: float, now: float) -> None:
        self.bursts += 1
        self.last_burst = {"agent": name, "dimension": dim, "denials": denied,
                           "promoted": since, "time": now}  # fmt: skip
        what_to_do = (
            f"if legitimate work is denied: corralctl mode {name} --{dim} alert (one step "
            f"back), then corralctl diff {name}"
        )
        log.error(
            "denials after auto-promotion",
            agent=name,
            dimension=dim,
            denials=denied,
            since_seconds=round(now - since, 1),
            what_to_do=what_to_do,
        )
        if self.notify is not None:
            text = (
                f"{denied} {dim} denials in {_ago(now - since)} after the auto-promotion to enforce"
            )
            fields = {"denials": denied, "promoted": since, "what_to_do": what_to_do}
            try:
                self.notify(name, "denial-burst", dim, text, fields)
            except Exception as e:  # the log line, status and metric have it
                log.error("the denial-burst event could not be published", error=str(e))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"
