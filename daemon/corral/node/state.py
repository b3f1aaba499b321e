"""The node's agents and their baselines in memory, and their saving to the state directory.

Everything else reads these tables; the pipeline's consumers and the services change them and
mark what has to be saved (dirty). Nothing here touches the kernel (node/sync.py does).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from corral.config import Config
from corral.contract import UnknownAgent, validate_agent_name
from corral.identity.bindings import Binding
from corral.identity.sandbox import Sandbox
from corral.memory import release_memory
from corral.policy.agents import Agent, Registry
from corral.policy.baseline import Baseline
from corral.policy.rules import BaselineRules
from corral.policy.store import BaselineStore

log = structlog.get_logger("corral.node")


class NodeState:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.registry = Registry(self.state_dir)
        lc = cfg.learning
        self.rules = BaselineRules(
            collapse_threshold=lc.collapse_threshold,
            collapse_min_depth=lc.collapse_min_depth,
            net_collapse_threshold=lc.net_collapse_threshold,
        )
        self.store = BaselineStore(self.state_dir, rules=self.rules)
        self.baselines: dict[str, Baseline] = {}
        # the live tables the pipeline reads per record: changed in place, never replaced
        self.by_id: dict[int, Agent] = {}
        self.bindings: dict[int, Binding] = {}
        self.dirty: set[str] = set()  # baselines to save
        # agents whose pods run where host BPF does not see (node/coverage.py), per the last
        # identity poll: not saved, the kubelet says it again after a restart
        self.uncovered: dict[str, Sandbox] = {}

    def load_registry(self) -> None:
        self.registry.load()
        self.by_id.clear()
        self.by_id.update((a.id, a) for a in self.registry.agents.values())

    def agent(self, name: str) -> Agent:
        """The agent of an API call (contract.UnknownAgent if there is none)."""
        validate_agent_name(name)
        agent = self.registry.get(name)
        if agent is None:
            raise UnknownAgent(name)
        return agent

    def cgroups_of(self, agent: str) -> list[str]:
        return [b.path for b in self.bindings.values() if b.agent == agent and b.path]

    def changed(self, name: str) -> None:
        self.dirty.add(name)

    def registry_changed(self) -> None:
        self.registry.dirty = True

    # ---- baselines ------------------------------------------------------------------------

    def new_baseline(self, name: str) -> Baseline:
        lc = self.cfg.learning
        return Baseline.new(
            name,
            collapse_threshold=lc.collapse_threshold,
            collapse_min_depth=lc.collapse_min_depth,
            net_collapse_threshold=lc.net_collapse_threshold,
        )

    def ensure_baseline(self, name: str) -> Baseline:
        b = self.baselines.get(name)
        if b is None:
            b = self.new_baseline(name)
            self.baselines[name] = b
            self.dirty.add(name)
        return b

    def may_rest(self, name: str) -> bool:
        """An agent learning in no dimension (or none at all: a stale file): the kernel lists
        hold its baseline and judge its events, so it may rest compressed until read."""
        agent = self.registry.get(name)
        return agent is None or "observe" not in agent.modes.values()

    def rest(self, name: str) -> bool:
        b = self.baselines.get(name)
        if b is None or b.frozen or not self.may_rest(name):
            return False
        b.freeze()
        return True

    def rest_baselines(self) -> None:
        """Freezes the baselines an API call or a mode change thawed (maintenance tick)."""
        if sum(self.rest(name) for name in list(self.baselines)):
            release_memory()

    # ---- saving ---------------------------------------------------------------------------

    async def save_all(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for name in dirty:
            b = self.baselines.get(name)
            if b is None:
                continue
            try:
                await asyncio.to_thread(self.store.save, b)
            except OSError as e:
                self.dirty.add(name)
                log.error(
                    "saving baseline failed; will retry, the previous file is intact",
                    agent=name,
                    error=str(e),
                )
        if self.registry.dirty:
            await self.save_registry()

    async def save_registry(self, *, durable: bool = False) -> None:
        """Agent by agent in the loop (where events change their tables: each one copied and
        encoded in a few ms, the event consumer running in between), the file written in a
        thread. An agent changed meanwhile marks the registry dirty again: the next save.
        A failed write is logged and retried later; with durable it raises OSError (a change
        that must not be acknowledged before it is on disk)."""
        reg = self.registry
        reg.dirty = False
        next_list, lines = reg.next_list, []
        for agent in sorted(reg.agents.values(), key=lambda a: a.id):
            if reg.agents.get(agent.name) is agent:  # not removed meanwhile
                lines.append(reg.encode_agent(agent.snapshot()))
            await asyncio.sleep(0)
        try:
            await asyncio.to_thread(reg.write_bytes, reg.document(next_list, lines))
        except OSError as e:
            reg.dirty = True
            if durable:
                raise
            log.error("saving the agent registry failed; will retry", error=str(e))
