"""The API's AgentService: agents, their modes, `reset` and `run`."""

from __future__ import annotations

from typing import Any

from corral.contract import BadRequest
from corral.kernel.layout import DIMS
from corral.policy.agents import Agent, check_mode

from .cgroups import Cgroups
from .state import NodeState
from .status import StatusView
from .sync import KernelSync


class AgentService:
    def __init__(
        self, state: NodeState, sync: KernelSync, cgroups: Cgroups, status: StatusView
    ) -> None:
        self.state = state
        self.sync = sync
        self.cgroups = cgroups
        self.view = status

    def summary(self, agent: Agent) -> dict[str, Any]:
        return {
            "name": agent.name,
            "id": agent.id,
            "source": agent.source,
            "modes": dict(agent.modes),
            "effective": {d: self.view.effective(d, agent.modes[d]) for d in DIMS},
            "auto_promote": agent.auto_promote,
            "baseline": self.state.baselines[agent.name].summary(),
            "counters": self.sync.k.counters(agent.id),
            "deviations": len(agent.deviations),
            "cgroups": len(self.cgroups.of(agent.name)),
        }

    def list_agents(self) -> list[dict[str, Any]]:
        agents = sorted(self.state.registry.agents.values(), key=lambda a: a.name)
        return [self.summary(a) for a in agents]

    def get_agent(self, name: str) -> dict[str, Any]:
        agent = self.state.agent(name)
        out = self.summary(agent)
        out["mode_since"] = dict(agent.mode_since)
        out["history"] = list(agent.history)
        out["deviation_list"] = sorted(
            (
                {
                    "dimension": d.dimension,
                    "object": d.object,
                    "count": d.count,
                    "first_seen": d.first_seen,
                    "last_seen": d.last_seen,
                    "verdict": d.verdict,
                    "comm": d.comm,
                }
                for d in agent.deviations.values()
            ),
            key=lambda d: (d["dimension"], d["object"]),
        )
        out["workloads"] = [
            {
                "cgroup_id": b.cgid,
                "cgroup": b.path,
                "inherit": b.inherit,
                "source": b.source,
                "namespace": b.namespace,
                "pod": b.pod,
                "container": b.container,
            }
            for b in self.cgroups.of(agent.name)
        ]
        return out

    async def set_mode(self, name: str, modes: dict[str, str]) -> dict[str, Any]:
        agent = self.state.agent(name)
        if not modes:
            raise BadRequest('no mode given: send {"mode": M} or per dimension {"exec": M}')
        try:
            for dim, mode in modes.items():
                check_mode(dim, mode)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        wanted = {**agent.modes, **modes}
        if wanted != agent.modes:
            # The kernel first (a flip is one map write), then history, logs and the disk.
            self.sync.write_modes(agent, wanted)
            for dim, mode in modes.items():
                agent.set_mode(dim, mode, reason="requested through the API", by="api")
            self.state.registry.dirty = True
            await self.state.save_all()
        return self.get_agent(name)

    async def reset(self, name: str) -> dict[str, Any]:
        agent = self.state.agent(name)
        self.state.baselines[name] = self.state.new_baseline(name)
        agent.deviations.clear()
        for dim in DIMS:
            agent.set_mode(dim, "observe", reason="baseline reset", by="api")
        self.sync.sync_agent(agent, swap=True)
        self.state.dirty.add(name)
        await self.state.save_all()
        return self.get_agent(name)

    async def run_agent(self, name: str, pid: int, caller_pid: int | None) -> dict[str, Any]:
        agent, cg, cgid = self.cgroups.run(name, pid, caller_pid)
        await self.state.save_all()
        return {"agent": name, "cgroup": str(cg), "cgroup_id": cgid, "modes": dict(agent.modes)}
