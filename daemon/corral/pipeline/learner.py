"""Consumer: learning (OBSERVE). Novel objects go into the agent's baseline, and the entry that
now covers each (the exact path or host, or the prefix or network it collapsed into) into its
kernel list at the end of the batch, one batched write per list, so the kernel stops reporting
it. A connect to an address the agent's own DNS answer named (Event.host, pipeline/names.py) is
learned by name: the name goes into the list's dns_names, and the addresses its answers gave
into dns_addrs until they expire."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from corral.kernel import dnsmaps, events
from corral.names.generalise import parent_wildcard
from corral.policy.agents import Agent
from corral.policy.baseline import PATTERN, Baseline
from corral.policy.patterns import kernel_groups

from .batch import Batch
from .names import NameBook

log = structlog.get_logger("corral.pipeline")

# the AI-BOM hears of each learned object: agent, baseline, its revision before, dimension, rule
OnLearned = Callable[[str, Baseline, int, str, "tuple[str, Any] | None"], None]


class ListWriter(Protocol):
    """The kernel allow-lists as the learner writes them (kernel.loader.Kernel)."""

    def allow_paths(
        self, dim: str, list_id: int, exact: Iterable[str], prefixes: Iterable[str] = ()
    ) -> Any: ...

    def allow_net(self, list_id: int, entries: Iterable[Any]) -> Any: ...

    def set_patterns(self, dim: str, list_id: int, groups: dict[str, list[str]]) -> Any: ...

    def map(self, name: str) -> Any: ...


class Learner:
    def __init__(
        self,
        baselines: Mapping[str, Baseline],
        writer: Callable[[], ListWriter | None],
        *,
        changed: Callable[[str], None],
        write_failed: Callable[[set[str]], None],
        on_learned: OnLearned | None = None,
        push_exec: Callable[[Agent], None] | None = None,
        names: NameBook | None = None,
        name_collapse_threshold: int = 8,
    ) -> None:
        self.baselines = baselines
        self.writer = writer  # the kernel once it is loaded
        self.changed = changed  # the agent's baseline has to be saved
        self.write_failed = write_failed  # these agents' lists need a whole push
        self.on_learned = on_learned
        # exec entries go in whole per agent (lineage.py: a program per caller's list)
        self.push_exec = push_exec
        self.names = names  # the agents' DNS answers (the decoder's)
        self.name_collapse_threshold = name_collapse_threshold
        self.execs: dict[str, Agent] = {}
        # learned entries waiting for the end of the batch (one write per list)
        self.paths: dict[tuple[str, int], tuple[set[str], set[str]]] = {}
        self.nets: dict[int, set[tuple[str, int]]] = {}
        # lists whose patterns changed: rewritten whole from the baseline at the end of the batch
        self.patterns: dict[tuple[str, int], Baseline] = {}
        self.learned_by: set[str] = set()
        # names learned: (agent id, list) -> baseline, names (written with all their ports)
        self.hosts: dict[tuple[int, int], tuple[Baseline, set[str]]] = {}

    def on_batch(self, batch: Batch) -> None:
        try:
            for agent, ev in batch.observed:
                self.learn(agent, ev)
        finally:
            self.flush()

    def learn(self, agent: Agent, ev: events.Event) -> None:
        b = self.baselines[agent.name]
        revision = b.revision
        if ev.dimension == "connect" and ev.host:
            novel = b.observe_host(ev.host, ev.port or 0, ev.ts_ns / 1e9)
        else:
            novel = b.observe(ev)
        if not novel:
            return
        self.changed(agent.name)
        if b.revision == revision:
            return  # recorded as unenforceable (too long, unresolved, port 0): never allowed
        rule: tuple[str, Any] | None = None
        if ev.dimension == "connect" and ev.host:
            key = (agent.id, agent.lists["connect"])
            learned = self.hosts.setdefault(key, (b, set()))[1]
            learned.add(self._collapse_name(b, ev.host, ev.port or 0))
            # no rule: the AI-BOM derives names from the baseline
        elif ev.dimension == "connect":
            rule = b.kernel_rule("connect", (ev.address or "", ev.port or 0))
            if rule is not None:
                self.nets.setdefault(agent.lists["connect"], set()).add(rule)
        elif ev.path and ev.dimension == "exec" and self.push_exec is not None:
            rule = b.kernel_rule("exec", ev.path)
            self.execs[agent.name] = agent
        elif ev.path:
            rule = b.kernel_rule(ev.dimension, ev.path)
            if rule is not None and rule[1] == PATTERN:
                self.patterns[(ev.dimension, agent.lists[ev.dimension])] = b
            elif rule is not None:
                key = (ev.dimension, agent.lists[ev.dimension])
                queued = self.paths.get(key)
                if queued is None:
                    queued = self.paths[key] = (set(), set())
                queued[1 if rule[1] else 0].add(rule[0])
        self.learned_by.add(agent.name)
        if self.on_learned is not None:
            try:
                self.on_learned(agent.name, b, revision, ev.dimension, rule)
            except Exception as e:  # the inventory must never disturb learning or enforcement
                log.error("AI-BOM update failed", agent=agent.name, error=str(e))

    def _collapse_name(self, b: Baseline, name: str, port: int) -> str:
        """The name as the baseline now holds it: "*.parent" once more than the threshold of
        names one label under parent were learned on this port (names.parent_wildcard says
        where a wildcard may go), else the name."""
        wildcard = parent_wildcard(name)
        if wildcard is None:
            return name
        if len(b.hosts_under(wildcard[2:], port)) <= self.name_collapse_threshold:
            return name
        b.collapse_hosts(wildcard, port)
        log.info("names collapsed into a wildcard", agent=b.agent, wildcard=wildcard, port=port)
        return wildcard

    def flush(self) -> None:
        """Writes the queued learned entries into the kernel lists. A failure (a full map) is
        logged and the agents are left to the periodic whole-list push: the consumer goes on."""
        if not self.learned_by:
            return
        writer = self.writer()
        assert writer is not None
        paths, nets, agents = self.paths, self.nets, self.learned_by
        patterns, execs, hosts = self.patterns, self.execs, self.hosts
        self.paths, self.nets, self.learned_by, self.patterns, self.execs = {}, {}, set(), {}, {}
        self.hosts = {}
        try:
            for agent in execs.values():
                assert self.push_exec is not None
                self.push_exec(agent)
            for (dim, list_id), (exact, prefixes) in paths.items():
                writer.allow_paths(dim, list_id, exact, prefixes)
            for (dim, list_id), b in patterns.items():
                writer.set_patterns(dim, list_id, kernel_groups(b.kernel_patterns(dim)))
            for list_id, entries in nets.items():
                writer.allow_net(list_id, entries)
            for (agent_id, list_id), (b, names) in hosts.items():
                self._write_names(writer, agent_id, list_id, b, names)
        except Exception as e:
            log.error("adding learned entries to the kernel failed", error=str(e))
            self.write_failed(agents)

    def _write_names(
        self, writer: ListWriter, agent_id: int, list_id: int, b: Baseline, names: set[str]
    ) -> None:
        """The names into dns_names with every port the baseline has for them; the addresses
        the agent's answers already gave into dns_addrs (the next answer would, too late for
        the connects in between)."""
        ports = b.kernel_names()
        dnsmaps.allow_names(writer, list_id, {n: ports[n] for n in names if n in ports})
        if self.names is None:
            return
        for name in names:
            if name not in ports:
                continue
            held = self.names.addresses(agent_id, name)
            dnsmaps.allow_addresses(writer, list_id, held, ports[name])
