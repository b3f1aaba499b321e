"""The API's AgentService: agents, their modes, promotion gates and allowed tamper kinds,
`reset` and `run`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from corral.contract import BadRequest, Unavailable
from corral.kernel.layout import DIMS
from corral.policy.agents import Agent, check_mode, check_tamper_kinds
from corral.policy.promotion import effective, gates_view, readiness, set_gates

from . import coverage
from .cgroups import Cgroups, populated
from .state import NodeState
from .status import StatusView
from .sync import KernelSync

log = structlog.get_logger("corral.node")


class AgentService:
    def __init__(
        self, state: NodeState, sync: KernelSync, cgroups: Cgroups, status: StatusView
    ) -> None:
        self.state = state
        self.sync = sync
        self.cgroups = cgroups
        self.view = status
        # reads back what a mode change wrote (node/verify.py), set by the composition root
        self.verify: Callable[[list[str]], int] | None = None

    def summary(self, agent: Agent) -> dict[str, Any]:
        sandbox = self.state.uncovered.get(agent.name)
        modes = agent.modes
        return {
            "name": agent.name,
            "id": agent.id,
            "source": agent.source,
            "modes": dict(modes),
            "effective": {
                d: coverage.effective(modes[d], sandbox, self.view.effective(d, modes[d]))
                for d in DIMS
            },
            "coverage": coverage.view(sandbox),
            "auto_promote": agent.auto_promote,
            "baseline": self.state.baselines[agent.name].summary(),
            "counters": self.sync.k.counters(agent.id),
            "deviations": len(agent.deviations),
            "cgroups": len(self.cgroups.live(agent.name)),  # registered ones holding a process
        }

    def list_agents(self) -> list[dict[str, Any]]:
        agents = sorted(self.state.registry.agents.values(), key=lambda a: a.name)
        return [self.summary(a) for a in agents]

    def get_agent(self, name: str) -> dict[str, Any]:
        agent = self.state.agent(name)
        out = self.summary(agent)
        out["mode_since"] = dict(agent.mode_since)
        out["tamper_allow"] = sorted(agent.tamper_allow)
        p, now, b = self.state.cfg.promotion, time.time(), self.state.baselines[name]
        gates, _ = effective(p, agent)
        out["promotion"] = {
            "auto": agent.auto_promote,
            "gates": gates_view(p, agent),
            **{d: readiness(agent, d, b, gates, now).to_dict() for d in DIMS},
        }
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
                "live": populated(b),
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
        coverage.refuse_enforce(name, self.state.uncovered.get(name), modes)
        wanted = {**agent.modes, **modes}
        if wanted != agent.modes:
            old = dict(agent.modes)
            self.sync.write_modes(agent, wanted)  # the kernel first: a flip is one map write
            await self._durably(agent, modes, old)
            if self.verify is not None:
                try:
                    self.verify([agent.name])
                except Exception as e:  # the change is made and saved: say so, do not fail it
                    log.error("verifying the kernel after a mode change failed", error=str(e))
        return self.get_agent(name)

    async def _durably(self, agent: Agent, modes: dict[str, str], old: dict[str, str]) -> None:
        """Acknowledged only once on disk: a restart never brings back a mode older than the
        last answer said. If the registry cannot be saved, the kernel gets the old modes back
        (it had the new ones for the save's few ms) and the caller a 503: nothing changed."""
        before = (dict(agent.modes), dict(agent.mode_since), list(agent.history))
        for dim, mode in modes.items():
            agent.set_mode(dim, mode, reason="requested through the API", by="api")
        self.state.registry.dirty = True
        try:
            await self.state.save_registry(durable=True)
        except OSError as e:
            agent.modes, agent.mode_since, agent.history = before
            self.sync.write_modes(agent, old)
            log.error(
                "mode change refused: the agent registry cannot be saved",
                agent=agent.name,
                modes=modes,
                error=str(e),
            )
            raise Unavailable(
                f"the modes of {agent.name} were not changed: corrald cannot save them "
                f"({e.strerror or e}) in {self.state.state_dir}. Nothing changed, in the kernel "
                "neither; free space there (or fix the file system) and try again"
            ) from None
        await self.state.save_all()  # baselines that wait for their periodic save

    async def set_promotion(
        self,
        name: str,
        gates: dict[str, float | int | None],
        *,
        reset: bool = False,
        auto: bool | None = None,
    ) -> dict[str, Any]:
        """The operator's promotion gates for the agent: reset forgets them all first; then a
        gate with a value is set, one with None forgotten (the annotation, the config or the
        default holds again). auto: auto-promotion on or off. Values are checked already
        (config.gate_from_json). Acknowledged only once on disk, like a mode change."""
        agent = self.state.agent(name)
        before = ({src: dict(g) for src, g in agent.gates.items()}, agent.auto_promote)
        mine = {} if reset else dict(agent.gates.get("operator", {}))
        for g, value in gates.items():
            if value is None:
                mine.pop(g, None)
            else:
                mine[g] = value
        changed = set_gates(agent, "operator", mine)
        if auto is not None and auto != agent.auto_promote:
            agent.auto_promote, changed = auto, True
        if not changed:
            return self.get_agent(name)
        self.state.registry.dirty = True
        try:
            await self.state.save_registry(durable=True)
        except OSError as e:
            agent.gates, agent.auto_promote = before
            log.error(
                "promotion change refused: the agent registry cannot be saved",
                agent=name,
                error=str(e),
            )
            raise Unavailable(
                f"the promotion of {name} was not changed: corrald cannot save it "
                f"({e.strerror or e}) in {self.state.state_dir}; free space there (or fix the "
                "file system) and try again"
            ) from None
        log.info(
            "promotion changed",
            agent=name,
            auto=agent.auto_promote,
            operator_gates=agent.gates.get("operator", {}),
            by="api",
        )
        return self.get_agent(name)

    async def set_tamper(
        self, name: str, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Adds the kinds in allow to the agent's allowed tamper kinds and removes those in
        deny; the kernel's guard lets the allowed ones pass for this agent only (one write of
        its agent_cfg entry, then read back). Acknowledged only once on disk, like a mode
        change: if the registry cannot be saved the kernel gets the old allowance back and
        the caller a 503."""
        agent = self.state.agent(name)
        try:
            allow, deny = check_tamper_kinds(allow), check_tamper_kinds(deny)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        if allow & deny:
            raise BadRequest(
                f"tamper kind(s) {', '.join(sorted(allow & deny))} both allowed and denied: "
                "give each kind once"
            )
        before = set(agent.tamper_allow)
        wanted = (before | allow) - deny
        if wanted == before:
            return self.get_agent(name)
        agent.tamper_allow = wanted
        try:
            self.sync.write_modes(agent, agent.modes)  # the kernel first: one map write
        except Exception:
            agent.tamper_allow = before
            raise
        self.state.registry.dirty = True
        try:
            await self.state.save_registry(durable=True)
        except OSError as e:
            agent.tamper_allow = before
            self.sync.write_modes(agent, agent.modes)
            log.error(
                "tamper allowance change refused: the agent registry cannot be saved",
                agent=name,
                error=str(e),
            )
            raise Unavailable(
                f"the tamper kinds allowed {name} were not changed: corrald cannot save them "
                f"({e.strerror or e}) in {self.state.state_dir}. Nothing changed, in the kernel "
                "neither; free space there (or fix the file system) and try again"
            ) from None
        log.info(
            "tamper kinds allowed",
            agent=name,
            allowed=sorted(wanted),
            added=sorted(wanted - before),
            removed=sorted(before - wanted),
            by="api",
        )
        if self.verify is not None:
            try:
                self.verify([agent.name])
            except Exception as e:  # the change is made and saved: say so, do not fail it
                log.error("verifying the kernel after a tamper change failed", error=str(e))
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

    def confined(self, pid: int) -> str | None:
        b = self.cgroups.confining(pid)
        return b.agent if b is not None else None

    async def run_agent(self, name: str, pid: int, caller_pid: int | None) -> dict[str, Any]:
        agent, cg, cgid = self.cgroups.run(name, pid, caller_pid)
        await self.state.save_all()
        return {"agent": name, "cgroup": str(cg), "cgroup_id": cgid, "modes": dict(agent.modes)}
