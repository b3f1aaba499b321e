"""corrald checks the kernel against what it wrote: every `kernel.verify_interval`, and after
each mode or tamper-allowance change. The agents' modes, list ids and allowed tamper kinds
(agent_cfg), the cgroup registrations (cgroup_agents), corral's links (still attached?) and pins
(still there?) are read back; what drifted is put back and reported loudly — a log line
`tamper detected`, a count per kind in `corralctl status` and
`corral_tamper_detected_total{kind}` — because nothing but corrald should write there (an agent
that reaches corral's maps or links is switching its fence off). What cannot be put back (a
detached link corrald adopted at start) marks its dimension `lost`: `status` never says
`enforce` where the kernel does not."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from corral.kernel.loader import CGROUP_CONNECT, CGROUP_SENDMSG, DENY_PROGRAMS

from .state import NodeState
from .sync import KernelSync

log = structlog.get_logger("corral.node")

# which dimension a link's program enforces (for `lost` when it cannot be re-attached)
_DIM_OF: dict[str, str] = {name: "connect" for name in (*CGROUP_CONNECT, *CGROUP_SENDMSG)}
for _progs in DENY_PROGRAMS.values():
    _DIM_OF.update({name: dim for dim, name in _progs.items()})


class KernelVerifier:
    def __init__(
        self,
        state: NodeState,
        sync: KernelSync,
        mark_lost: Callable[[str, str], None],
    ) -> None:
        self.state = state
        self.sync = sync
        self.mark_lost = mark_lost  # (dimension, why): the dimension is not enforced now
        self.counts: dict[str, int] = {}
        self.last: dict[str, Any] | None = None
        self.checks = 0
        self.lost: dict[str, str] = {}  # dimension -> why: stays until corrald restarts

    def summary(self) -> dict[str, Any]:
        return {"checks": self.checks, "tamper_detected": dict(self.counts), "last": self.last}

    async def run(self, interval: float, stopping: asyncio.Event) -> None:
        if interval <= 0:
            return
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
            if stopping.is_set():
                return
            try:
                self.check()
            except Exception as e:
                log.error("kernel verification failed", error=str(e))

    def check(self, agents: list[str] | None = None) -> int:
        """One pass (agents: only these agents' entries; links and pins always). Returns how
        many things had drifted."""
        self.checks += 1
        found = self._agents(agents) + self._cgroups() + self._links()
        return len(found)

    def _report(self, kind: str, **what: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.last = {"time": time.time(), "kind": kind, **what}
        log.error("tamper detected", **{"kind": kind, "repaired": True, **what})

    def _agents(self, only: list[str] | None) -> list[str]:
        # the registry's agents only: an id the kernel holds for an agent corrald does not
        # know (a lost registry, node/recovery.py) is left as it is, enforcing
        k, found = self.sync.k, []
        for agent in self.state.registry.agents.values():
            if only is not None and agent.name not in only:
                continue
            want = self.sync.agent_config(agent)
            have = k.get_agent(agent.id)
            if have != want:  # every field: modes, list ids, rate limit, active, tamper_allow
                k.set_agent(agent.id, want)
                what: dict[str, Any] = {"found": have.modes, "restored": want.modes}
                if have.tamper_allow != want.tamper_allow:
                    what["found_tamper_allow"] = sorted(have.tamper_allow)
                    what["restored_tamper_allow"] = sorted(want.tamper_allow)
                self._report("agent_cfg", agent=agent.name, **what)
                found.append(agent.name)
        return found

    def _cgroups(self) -> list[int]:
        k, found = self.sync.k, []
        registered = k.registered_cgroups()
        for cgid, b in list(self.state.bindings.items()):
            agent = self.state.registry.get(b.agent)
            if agent is None:
                continue
            if registered.get(cgid) != (agent.id, b.inherit):
                k.register_cgroup(cgid, agent.id, inherit=b.inherit)
                self._report("cgroup_agents", agent=b.agent, cgroup=b.path, cgroup_id=cgid)
                found.append(cgid)
        return found

    def _links(self) -> list[str]:
        k = self.sync.k
        damage = k.damage()
        if not damage:
            return []
        left = k.repair(damage)
        for kind, what in damage:
            broken = (kind, what) in left
            self._report(kind, what=what, repaired=not broken)
            dim = _DIM_OF.get(what)
            if broken and dim is not None:
                self.lost[dim] = (
                    f"NOT ENFORCED: corral's {what} link was {kind.removeprefix('link_')} by "
                    "someone else (tamper); restart corrald to attach it again"
                )
                self.mark_lost(dim, self.lost[dim])
        return [what for _, what in damage]
