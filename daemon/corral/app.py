"""The composition root: builds corrald's parts and wires them; nothing else imports it.

    kernel ring ─► pipeline.Ingest ─► Learner ─► AibomFeed ─► DeviationTracker ─► EventFeed
                                         │           │               │               │
                                 policy (NodeState) + AI-BOM tracker          ring, subscribers
                                         │
                        node.KernelSync ─► kernel maps          node services ─► api (Services)

Threading model: everything runs in one asyncio loop. The ring buffer is drained through its
epoll fd (bpfkit.RingReader.run), identity polls are awaited, file writes of baselines go
through asyncio.to_thread. docs/architecture.md is the map.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from pathlib import Path

import structlog

from corral.aibom.inventory import AibomTracker
from corral.aibom.rulefile import load_rules
from corral.api.metrics import NodeMetrics
from corral.config import Config
from corral.contract import Services
from corral.kernel import dnsmaps
from corral.kernel.loader import Kernel, cgroup2_root
from corral.kernel.probe import ProbeResult, run_probe
from corral.kernel.recheck import Capabilities, Rechecker
from corral.memory import freeze_startup_objects, release_memory
from corral.node.agents import AgentService
from corral.node.aibom import AibomService
from corral.node.baselines import BaselineService
from corral.node.cgroups import Cgroups
from corral.node.maintenance import Maintenance
from corral.node.recovery import KernelRecovery
from corral.node.state import NodeState
from corral.node.status import StatusView
from corral.node.sync import KernelSync
from corral.node.verify import KernelVerifier
from corral.pipeline.aibom import AibomFeed
from corral.pipeline.batch import Decoder, Stats
from corral.pipeline.deviations import DeviationTracker
from corral.pipeline.feed import EventFeed
from corral.pipeline.ingest import Ingest
from corral.pipeline.learner import Learner
from corral.pipeline.names import NameBook

log = structlog.get_logger("corral.node")


class Node:
    """corrald on one node: the parts, wired; start() loads the kernel side and runs the loops."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.state = state = NodeState(cfg)
        self.sync = sync = KernelSync(state)
        self.stats = Stats()
        self.metrics = NodeMetrics(lambda: self.status.metrics_sample())
        self.recovery = KernelRecovery(state, sync)
        self.cgroups = Cgroups(
            state, sync, self.recovery, on_kubelet_request=self.metrics.kubelet_polled
        )
        ac = cfg.aibom
        self.tracker = AibomTracker(
            load_rules(ac.rule_files),
            state.state_dir,
            cfg.node,
            baselines=lambda: state.baselines,
            cgroups_of=state.cgroups_of,
            read_proc=ac.read_proc,
            resolve_hosts=ac.resolve_hosts,
            dns_refresh=ac.dns_refresh,
            save_interval=cfg.learning.save_interval,
        )
        self.aibom = AibomService(state, self.tracker)
        self.status = StatusView(state, sync, self.cgroups, self.stats, self.aibom.ai_agents)
        self.cgroups.started = self.status.started
        self.agents = AgentService(state, sync, self.cgroups, self.status)
        self.baselines = BaselineService(state, sync)
        self.maintenance = Maintenance(state, sync, self.cgroups)
        self.verifier = KernelVerifier(state, sync, mark_lost=self._mark_lost)
        self.agents.verify = self.verifier.check
        self.status.verifier = self.verifier
        self.status.recovery = self.recovery
        self.status.maintenance = self.maintenance
        # the event path: one decoder, then each consumer takes its share of every batch
        self.names = NameBook(grace=cfg.kernel.dns_grace)
        decoder = Decoder(state.by_id, state.bindings, self.stats, self.names)
        self.deviations = DeviationTracker(state.registry_changed)
        self.learner = Learner(
            state.baselines,
            lambda: sync.kernel,
            changed=state.changed,
            write_failed=sync.writes_failed,
            on_learned=self.tracker.learned,
            push_exec=sync.push_exec,
            names=self.names,
            name_collapse_threshold=cfg.learning.name_collapse_threshold,
        )
        self.events = EventFeed(cfg=cfg, decoder=decoder, stats=self.stats, check_agent=state.agent)
        self.maintenance.notify = self.events.notice  # denial bursts into the event stream
        self.ingest = Ingest(
            decoder,
            [
                self.learner,
                AibomFeed(self.tracker, decoder),
                self.deviations,
                self.events,
            ],
        )
        self.services = Services(
            status=self.status,
            agents=self.agents,
            baselines=self.baselines,
            events=self.events,
            aibom=self.aibom,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        cfg, k = self.cfg, self.cfg.kernel
        self.state.state_dir.mkdir(parents=True, exist_ok=True)
        probe = await asyncio.to_thread(run_probe, k.fallback_open)
        self.status.probe = probe
        _say_what_is_enforced(probe)
        root = Path(cfg.cgroup_root) if cfg.cgroup_root else cgroup2_root()
        backends = probe.backends()
        if k.dns == "on":
            backends = dataclasses.replace(backends, dns="cgroup_skb")
        kernel = await asyncio.to_thread(
            Kernel,
            backends,
            cgroup_root=root,
            pin_dir=Path(cfg.pin_dir),
            suppress_ns=int(k.suppress_window * 1e9),
            map_sizes={
                "exec_allow": k.exec_allow_entries,
                "open_allow": k.open_allow_entries,
                "net_allow": k.net_allow_entries,
                "events": k.ring_buffer_mib << 20,
            },
        )
        self.sync.kernel = kernel
        dnsmaps.set_grace(kernel, k.dns_grace)
        self.deviations.skip_unresolved_opens = kernel.backends.enforcement("open") != "deny"
        self.state.load_registry()
        self.recovery.scan()  # before any list id is handed out (the swaps of _bring_up)
        await self.tracker.start()
        await self._bring_up()
        kernel.activate()
        self.status.rechecker = rechecker = self._rechecker(probe, kernel)
        self.cgroups.adopt_run_cgroups()
        self.cgroups.source = self.cgroups.make_source()
        release_memory()
        freeze_startup_objects()
        stopping = self._stopping
        self._tasks = [
            asyncio.create_task(self.ingest.run(kernel), name="events"),
            asyncio.create_task(self.cgroups.identity_loop(stopping), name="identity"),
            asyncio.create_task(self.maintenance.loop(stopping), name="maintenance"),
            asyncio.create_task(self.sync.push_stale_loop(stopping), name="kernel-flush"),
            asyncio.create_task(rechecker.run(stopping), name="recheck"),
            asyncio.create_task(self.verifier.run(k.verify_interval, stopping), name="verify"),
            asyncio.create_task(
                self.recovery.report_after_grace(
                    cfg.identity.kubelet.poll_interval, self.cgroups.source_answered, stopping
                ),
                name="unclaimed",
            ),
        ]
        log.info(
            "corrald started",
            node=cfg.node,
            agents=len(self.state.registry.agents),
            identity=cfg.identity_source(),
            adopted_kernel_state=kernel.adopted,
            unclaimed_kernel_agents=len(self.recovery.unclaimed),
        )

    async def _bring_up(self) -> None:
        """One baseline at a time: load, fill the kernel lists, derive its AI-BOM, put it to
        rest (the peak is one baseline's objects, not every agent's)."""
        state, kernel = self.state, self.sync.k
        stale: dict[str, set[int]] = {}  # adopted lists swapped out (see KernelSync.sync_agent)
        for name in await asyncio.to_thread(state.store.names):
            # an agent learning in no dimension loads at rest: its entries never become objects
            load = functools.partial(state.store.load, name, rest=state.may_rest(name))
            b = await asyncio.to_thread(load)
            if b is not None:
                state.baselines[name] = b
                self._bring_up_agent(name, stale)
        for agent in state.registry.agents.values():
            if agent.name not in state.baselines:
                self._bring_up_agent(agent.name, stale)
        for dim, ids in stale.items():  # what they held beyond the baselines: one sweep
            kernel.clear_lists(dim, ids)

    def _bring_up_agent(self, name: str, stale: dict[str, set[int]]) -> None:
        """An agent's kernel lists and modes from its baseline, then the baseline to rest if
        the agent is not learning."""
        agent = self.state.registry.get(name)
        if agent is not None:
            self.state.ensure_baseline(name)
            self.sync.sync_agent(agent, swap=self.sync.k.adopted, stale=stale)
        self.tracker.sync_baselines()
        self.state.rest(name)
        b = self.state.baselines.get(name)
        if b is not None and b.frozen:
            self.tracker.rest(name, quiet=0)  # its AI-BOM records rest with it

    def _rechecker(self, probe: ProbeResult, kernel: Kernel) -> Rechecker:
        def apply(caps: Capabilities) -> None:
            probe.capabilities = caps
            for dim, why in self.verifier.lost.items():  # a re-check cannot undo tamper
                self._mark_lost(dim, why)

        return Rechecker(
            self.cfg.kernel.recheck_interval,
            functools.partial(run_probe, self.cfg.kernel.fallback_open),
            lambda: kernel.backends,
            lambda: probe.capabilities,
            apply,
        )

    async def stop(self) -> None:
        """Stops learning and serving; the kernel keeps enforcing through the pins."""
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.events.close()
        await self.state.save_all()
        await self.tracker.stop()
        await self.cgroups.close()
        if self.sync.kernel is not None:
            self.sync.kernel.close()
        log.info("corrald stopped; pinned programs keep enforcing", pins=self.cfg.pin_dir)

    def _mark_lost(self, dim: str, why: str) -> None:
        probe = self.status.probe
        if probe is not None:
            backend = probe.capabilities[dim]["backend"]
            probe.capabilities[dim] = {"mode": "lost", "backend": backend, "how": why}

    def reload_aibom_rules(self, rule_files: list[str]) -> None:
        self.aibom.reload_rules(rule_files)


def _say_what_is_enforced(probe: ProbeResult) -> None:
    for dim, cap in probe.capabilities.items():
        level = log.info if cap["mode"] == "enforce" else log.warning
        level(
            "capability",
            dimension=dim,
            enforcement=cap["mode"],
            backend=cap["backend"],
            how=cap["how"],
        )
