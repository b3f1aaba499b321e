"""State that never fails open (issue 16): agents the adopted kernel enforces that the registry
does not know — agents.json was unreadable or missing, or corrald died before it saved a new
agent.

What survives a lost registry is in the pinned maps: agent_cfg per agent id (modes, list ids,
allowed tamper kinds), cgroup_agents (cgroup id -> agent id) and the allow-lists; baselines are
stored by agent name. At start (`scan`) corrald reads agent_cfg: no list id the kernel uses is
handed out again (Registry.keep_lists_above) and the ids of active agents it does not know are
reserved (Registry.reserved). When a workload (the kubelet, local globs) or a `corralctl run`
cgroup left from before the restart comes back and one of its cgroups is registered to such an
id, its agent takes that id, its modes, list ids and tamper kinds from the kernel (`claim`), its
baseline from the store by name: never demoted, never relearning what it does next.

An id that nothing claims stays as it is: the kernel keeps enforcing it (corrald never clears
what it does not know), `corralctl status` lists it (unclaimed_kernel_agents), and after a grace
period a log line says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from corral.kernel.layout import C
from corral.kernel.loader import AgentConfig

from .state import NodeState
from .sync import KernelSync

log = structlog.get_logger("corral.node")

RECOVERED = "agent recovered from the kernel after the registry was lost"
UNCLAIMED = "agent in the kernel that no workload claims: the kernel keeps enforcing it"
WHAT_TO_DO = (
    "corralctl run and the kubelet re-attach it by cgroup when its workload comes back; "
    "`corrald cleanup` removes everything corral pinned (enforcement stops)"
)
# how long a kernel agent may stay unclaimed before a log line says so: at least GRACE_MIN
# seconds and GRACE_POLLS identity polls, and not before the identity source first answered
GRACE_MIN = 30.0
GRACE_POLLS = 5


class KernelRecovery:
    def __init__(self, state: NodeState, sync: KernelSync) -> None:
        self.state = state
        self.sync = sync
        # active agent ids in the kernel that no known agent has: id -> its config then
        self.unclaimed: dict[int, AgentConfig] = {}
        self.reported = False

    def scan(self) -> None:
        """At start: after the registry is loaded, before any list id is handed out."""
        k, reg = self.sync.k, self.state.registry
        if not k.adopted:
            if reg.lost:
                log.warning(
                    "agent registry lost and no pinned kernel state to recover it from: agents "
                    "come back as new agents in the default mode, with their stored baselines",
                    path=str(reg.path),
                )
            return
        cfgs = {i: k.get_agent(i) for i in range(1, C.CORRAL_MAX_AGENTS)}
        reg.keep_lists_above(lid for cfg in cfgs.values() for lid in cfg.lists.values())
        known = {a.id for a in reg.agents.values()}
        self.unclaimed = {i: cfg for i, cfg in cfgs.items() if cfg.active and i not in known}
        reg.reserved = set(self.unclaimed)
        if self.unclaimed:
            log.warning(
                "agents in the kernel that the registry does not know: kept as they are, "
                "recovered by cgroup as their workloads come back",
                ids=sorted(self.unclaimed),
                registry_lost=reg.lost or None,
            )

    def claim(self, cgroup_ids: Iterable[int]) -> tuple[int, AgentConfig] | None:
        """The unclaimed kernel agent one of these cgroups is registered to, if any."""
        if not self.unclaimed:
            return None
        ids = list(cgroup_ids)
        if not ids:
            return None
        owners = self.sync.k.registered_cgroups()
        for cgid in ids:
            agent_id = owners.get(cgid, (0, False))[0]
            if agent_id in self.unclaimed:
                return agent_id, self.unclaimed[agent_id]
        return None

    def claimed(self, agent_id: int) -> None:
        self.unclaimed.pop(agent_id, None)
        self.state.registry.reserved.discard(agent_id)

    def view(self) -> list[dict[str, Any]]:
        """`corralctl status`: each unclaimed kernel agent, what it enforces, on how many
        cgroups the kernel still registers to it."""
        if not self.unclaimed:
            return []
        per_agent: dict[int, int] = {}
        for agent_id, _ in self.sync.k.registered_cgroups().values():
            per_agent[agent_id] = per_agent.get(agent_id, 0) + 1
        return [
            {
                "id": i,
                "modes": dict(cfg.modes),
                "tamper_allow": sorted(cfg.tamper_allow),
                "cgroups": per_agent.get(i, 0),
            }
            for i, cfg in sorted(self.unclaimed.items())
        ]

    def report(self) -> None:
        """One warning per kernel agent still unclaimed (once)."""
        self.reported = True
        for row in self.view():
            log.warning(UNCLAIMED, **row, what_to_do=WHAT_TO_DO)

    async def report_after_grace(
        self, poll_interval: float, answered: Callable[[], bool], stopping: asyncio.Event
    ) -> None:
        """Waits the grace period (and for an identity source that has answered), then says
        which kernel agents are still unclaimed."""
        if not self.unclaimed:
            return
        grace = max(GRACE_MIN, GRACE_POLLS * poll_interval)
        deadline = time.monotonic() + grace
        while not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 and answered():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(left, 1.0))
        if not stopping.is_set() and self.unclaimed:
            self.report()
