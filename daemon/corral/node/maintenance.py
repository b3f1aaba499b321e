"""The periodic tick: finished `run` cgroups swept, kernel drops noted, auto-promotion, saving,
and resting the baselines nobody is reading."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from corral.kernel.layout import DIMS
from corral.policy.agents import promotion_due

from .cgroups import Cgroups
from .state import NodeState
from .sync import KernelSync

log = structlog.get_logger("corral.node")


class Maintenance:
    def __init__(self, state: NodeState, sync: KernelSync, cgroups: Cgroups) -> None:
        self.state = state
        self.sync = sync
        self.cgroups = cgroups

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
            if not agent.auto_promote:
                continue
            b = self.state.baselines[agent.name]
            changed = False
            for dim in DIMS:
                step = promotion_due(
                    agent,
                    dim,
                    learning_since=b.learning_since,
                    last_novel=b.last_novel,
                    min_learning=p.min_learning,
                    quiet_period=p.quiet_period,
                    alert_period=p.alert_period,
                    now=now,
                )
                if step:
                    changed |= agent.set_mode(dim, step[0], reason=step[1], by="auto-promotion")
            if changed:
                self.sync.sync_agent(agent)
                self.state.registry.dirty = True
