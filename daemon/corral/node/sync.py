"""Policy into the kernel: each agent's baseline into its allow-lists, its modes and the tamper
kinds allowed it into its config entry. Additions always land before a flip; an import or a
reset swaps whole lists."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from corral.kernel import dnsmaps
from corral.kernel.layout import DIMS
from corral.kernel.loader import AgentConfig, Kernel
from corral.policy.agents import Agent
from corral.policy.lineage import exec_lists
from corral.policy.patterns import kernel_groups

from .state import NodeState

log = structlog.get_logger("corral.node")


class KernelSync:
    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.kernel: Kernel | None = None  # set by the composition root once loaded
        self.stale: set[str] = set()  # agents whose lists need a whole push (a write failed)
        # agent -> (baseline object, revision) last pushed whole into its kernel lists
        self._pushed: dict[str, tuple[int, int]] = {}

    @property
    def k(self) -> Kernel:
        assert self.kernel is not None, "the kernel is not loaded yet"
        return self.kernel

    def agent_config(self, agent: Agent) -> AgentConfig:
        rate = self.state.cfg.kernel.rate_limit
        return AgentConfig(
            modes=dict(agent.modes),
            lists=dict(agent.lists),
            rate_limit=rate,
            tamper_allow=frozenset(agent.tamper_allow),
        )

    def create_agent(
        self,
        name: str,
        *,
        source: str,
        mode: str | None = None,
        auto_promote: bool | None = None,
        recovered: tuple[int, AgentConfig] | None = None,
    ) -> Agent:
        """A new agent; with recovered (node/recovery.py: an id the adopted kernel holds for an
        agent the lost registry knew, and its config there), the agent takes that id, its
        modes, list ids and allowed tamper kinds: the kernel never stopped enforcing them."""
        d = self.state.cfg.defaults
        auto = d.auto_promote if auto_promote is None else auto_promote
        if recovered is None:
            agent = self.state.registry.create(
                name, mode=mode or d.mode, auto_promote=auto, source=source
            )
        else:
            agent_id, cfg = recovered
            agent = self.state.registry.recover(
                name,
                agent_id,
                modes=cfg.modes,
                lists=cfg.lists,
                tamper_allow=cfg.tamper_allow,
                auto_promote=auto,
                source=source,
            )
        self.state.by_id[agent.id] = agent
        self.state.ensure_baseline(name)
        self.sync_agent(agent)
        if recovered is None:
            log.info("agent created", agent=name, id=agent.id, source=source, modes=agent.modes)
        else:
            log.warning(
                "agent recovered from the kernel after the registry was lost",
                agent=name,
                id=agent.id,
                source=source,
                modes=agent.modes,
                lists=agent.lists,
                tamper_allow=sorted(agent.tamper_allow),
            )
        return agent

    def forget_agent(self, name: str) -> None:
        """Removes an agent the kernel refused to take (a failed import that created it)."""
        gone = self.state.registry.agents.pop(name, None)
        if gone is None:
            return
        self.state.by_id.pop(gone.id, None)
        with contextlib.suppress(Exception):
            self.k.clear_agent(gone.id)
        for dim in DIMS:
            with contextlib.suppress(Exception):
                self.k.clear_list(dim, gone.lists[dim])

    def push_entries(self, agent: Agent, lists: dict[str, int] | None = None) -> None:
        """Adds every baseline entry to the agent's kernel lists (idempotent)."""
        b = self.state.baselines[agent.name]
        lists = lists or agent.lists
        # streamed: a resting baseline's paths never all exist
        exact, prefixes = b.kernel_paths("open"), b.kernel_paths("open", prefix=True)
        self.k.allow_paths("open", lists["open"], exact, prefixes)
        self.k.set_patterns("open", lists["open"], kernel_groups(b.kernel_patterns("open")))
        self.push_exec(agent, lists["exec"])
        self.k.allow_net(lists["connect"], b.kernel_entries("connect"))
        dnsmaps.allow_names(self.k, lists["connect"], b.kernel_names())
        self._pushed[agent.name] = (id(b), b.revision)

    @property
    def lineage(self) -> bool:
        """Does the exec backend know each exec's caller (lineage.py)? Not the fallback."""
        return self.k.backends.exec in ("lsm", "fmod_ret")

    def push_exec(self, agent: Agent, base: int | None = None) -> None:
        """The agent's exec entries into its exec list and its callers' lists (idempotent;
        learning calls it after each batch with a new exec)."""
        b = self.state.baselines[agent.name]
        base = agent.lists["exec"] if base is None else base
        el = exec_lists(b, base, lineage=self.lineage)
        for list_id, pl in el.lists.items():
            self.k.allow_paths("exec", list_id, pl.exact, pl.prefixes)
            self.k.set_patterns("exec", list_id, pl.groups)
        self.k.set_callers(base, el.callers)

    def lists_current(self, agent: Agent) -> bool:
        """True when the kernel lists already hold every entry of the agent's baseline: it was
        pushed whole and has not changed since (Baseline.revision moves with its entries)."""
        b = self.state.baselines[agent.name]
        return self._pushed.get(agent.name) == (id(b), b.revision)

    def sync_agent(
        self, agent: Agent, *, swap: bool = False, stale: dict[str, set[int]] | None = None
    ) -> None:
        """Kernel lists then modes: additions land before any flip. With swap, the lists are
        rebuilt under new ids and switched in one write, then the old ones are cleared. With
        stale (start-up on adopted maps), the old lists lose the baseline's entries at once
        and their ids go into stale, for one sweep of whatever else they held after every
        agent: a sweep reads the whole map, and one per agent made start-up quadratic."""
        if not swap:
            self.write_modes(agent, agent.modes)
            return
        old = dict(agent.lists)
        new = {d: self.state.registry.new_list_id() for d in DIMS}
        try:
            self.push_entries(agent, new)
        except Exception:
            for dim in DIMS:  # never referenced by the agent: drop what was written
                with contextlib.suppress(Exception):
                    self.k.clear_list(dim, new[dim])
            raise
        agent.lists = new
        self.k.set_agent(agent.id, self.agent_config(agent))
        if stale is not None:
            self._remove_entries(agent, old)
        for dim in DIMS:
            if stale is None:
                self.k.clear_list(dim, old[dim])
            else:
                stale.setdefault(dim, set()).add(old[dim])
        self.state.registry.dirty = True

    def _remove_entries(self, agent: Agent, lists: dict[str, int]) -> None:
        """Deletes the baseline's entries from lists no longer in use (frees their room)."""
        b = self.state.baselines[agent.name]
        exact, prefixes = b.kernel_entries("open")
        self.k.remove_paths("open", lists["open"], exact, prefixes)
        self.k.set_patterns("open", lists["open"], {})
        el = exec_lists(b, lists["exec"], lineage=self.lineage)
        for list_id, pl in el.lists.items():
            self.k.remove_paths("exec", list_id, pl.exact, pl.prefixes)
            self.k.set_patterns("exec", list_id, {})
        self.k.set_callers(lists["exec"], {})
        self.k.remove_net(lists["connect"], b.kernel_entries("connect"))
        dnsmaps.remove_names(self.k, lists["connect"], list(b.kernel_names()))

    def write_modes(self, agent: Agent, modes: dict[str, str]) -> None:
        """One map write switches the agent's modes. The lists are pushed first, and only when
        entries may be missing from them (re-pushing 10,000 entries took ~70 ms of every flip)."""
        if not self.lists_current(agent):
            self.push_entries(agent)
        cfg = self.agent_config(agent)
        cfg.modes = dict(modes)
        self.k.set_agent(agent.id, cfg)

    def writes_failed(self, agents: set[str]) -> None:
        """The learner could not add entries (a full map): push these agents whole later."""
        self.stale |= agents

    async def push_stale_loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.5)
            for name in list(self.stale):
                self.stale.discard(name)
                agent = self.state.registry.get(name)
                if agent is not None:
                    try:
                        self.push_entries(agent)
                    except Exception as e:
                        log.error(
                            "updating the kernel allow-lists failed", agent=name, error=str(e)
                        )
