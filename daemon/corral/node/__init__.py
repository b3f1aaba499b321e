"""The node daemon's core: one Corral per node ties the kernel, the agents, their baselines,
identity and events together, and implements the admin API's Controller.

Threading model: everything runs in one asyncio loop. The ring buffer is drained through its
epoll fd (bpfkit.RingBuffer.run), identity polls are awaited, file writes of baselines go
through asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bpfkit import RingReader
from corral import __version__, identity
from corral.aibom.inventory import AibomTracker
from corral.aibom.rules import load_rules
from corral.api import metrics
from corral.config import Config
from corral.contract import BadRequest, Conflict, UnknownAgent, validate_agent_name
from corral.kernel import events
from corral.kernel.layout import DIMS
from corral.kernel.loader import AgentConfig, AllowListFull, Kernel, cgroup2_root, cgroup_id
from corral.kernel.probe import ProbeResult, run_probe
from corral.kernel.recheck import Capabilities, Rechecker
from corral.memory import freeze_startup_objects, release_memory
from corral.policy import document, review
from corral.policy.agents import Agent, Deviation, Registry, check_mode, promotion_due
from corral.policy.baseline import Baseline, BaselineRules, BaselineStore

log = structlog.get_logger("corral.node")
event_log = structlog.get_logger("corral.event")

RUN_DIR = "corral.run"  # cgroups made by `corralctl run`, under the cgroup v2 root

# what accept adds (None: cannot be an allow-list entry) and the deviations it settles
_Choice = tuple[review.Selector | None, list[Deviation]]
# what a BPF map update fails with when the map has no room left
_MAP_FULL = frozenset({errno.ENOSPC, errno.E2BIG, errno.ENOMEM})


# (namespace, pod, container) of an event's cgroup when it was seen
_Pod = tuple[str, str, str]
_NO_POD: _Pod = ("", "", "")
# an event as the ring keeps it: agent name, the record, its path (None for connect),
# /proc/<pid>/exe, its pod. Strings and bytes only: the garbage collector stops tracking such
# tuples, and the ring holds thousands of them.
_Item = tuple[str, bytes, "str | None", str, _Pod]
# an exec or connect for the AI-BOM: agent, record, path, comm, its Event if one was built
_Candidate = tuple[Agent, bytes, "str | None", str, "events.Event | None"]
# after each ring-buffer batch, wait this long for more records before reading again: a busy
# ring is then read in batches of hundreds (bpfkit.RingReader.run); an event is processed at
# most this much later (enforcement is the kernel's and does not wait for it)
_EVENT_LINGER = 0.001
# the fields of an event's log line (events.log_events)
_LOGGED_FIELDS = (
    "agent",
    "dimension",
    "verdict",
    "mode",
    "object",
    "pid",
    "ppid",
    "comm",
    "exe",
    "cgroup_id",
    "namespace",
    "pod",
    "container",
    "node",
    "flags",
    "time",
)


@dataclass
class Binding:
    """A cgroup registered in the kernel: whose it is and where it came from."""

    cgid: int
    agent: str
    inherit: bool
    source: str  # kubernetes | local | run
    path: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""


class Corral:
    """The daemon. Implements service.Controller for the admin API."""

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
        self.bindings: dict[int, Binding] = {}
        self.by_id: dict[int, Agent] = {}
        # events as seen (_Item): the record dict (_record) is built only when someone reads
        # it, not for each of a burst of events
        self.ring: deque[_Item] = deque(maxlen=cfg.events.buffer)
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.kernel: Kernel | None = None
        self.probe: ProbeResult | None = None
        self.rechecker: Rechecker | None = None
        self.source: identity.KubernetesSource | identity.LocalSource | None = None
        self.started = time.time()
        self.events_total = 0
        self.events_lost_in_daemon = 0
        self._dirty: set[str] = set()
        self._kernel_dirty: set[str] = set()
        # agent -> (baseline object, revision) last pushed whole into its kernel lists
        self._pushed: dict[str, tuple[int, int]] = {}
        # learned entries waiting for the end of the ring-buffer batch (one write per list)
        self._learned_paths: dict[tuple[str, int], tuple[set[str], set[str]]] = {}
        self._learned_net: dict[int, set[tuple[str, int]]] = {}
        self._learned_by: set[str] = set()
        self._exe_cache: dict[tuple[int, str], str] = {}
        self._exe_cache_at = 0.0
        self._comm_cache: dict[bytes, str] = {}
        self._time_prefix: tuple[int, str] = (-1, "")
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._boot_offset = events.boot_offset_ns()
        self._run_seq = 0
        self.metrics = metrics.NodeMetrics(self.metrics_sample)
        ac = cfg.aibom
        self.aibom_tracker = AibomTracker(
            load_rules(ac.rule_files),
            self.state_dir,
            cfg.node,
            baselines=lambda: self.baselines,
            cgroups_of=self._cgroups_of,
            read_proc=ac.read_proc,
            resolve_hosts=ac.resolve_hosts,
            dns_refresh=ac.dns_refresh,
            save_interval=cfg.learning.save_interval,
        )

    # ---- start / stop -----------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.probe = await asyncio.to_thread(run_probe, self.cfg.kernel.fallback_open)
        self._say_what_is_enforced()
        root = Path(self.cfg.cgroup_root) if self.cfg.cgroup_root else cgroup2_root()
        k = self.cfg.kernel
        self.kernel = await asyncio.to_thread(
            Kernel,
            self.probe.backends(),
            cgroup_root=root,
            pin_dir=Path(self.cfg.pin_dir),
            suppress_ns=int(k.suppress_window * 1e9),
            map_sizes={
                "exec_allow": k.exec_allow_entries,
                "open_allow": k.open_allow_entries,
                "net_allow": k.net_allow_entries,
                "events": k.ring_buffer_mib << 20,
            },
        )
        self.registry.load()
        self.by_id = {a.id: a for a in self.registry.agents.values()}
        await self.aibom_tracker.start()
        # one baseline at a time: load, fill the kernel lists, derive its AI-BOM, put it to rest
        # (the peak is one baseline's objects, not every agent's)
        self.baselines = {}
        stale: dict[str, set[int]] = {}  # adopted lists swapped out (see _sync_agent)
        for name in await asyncio.to_thread(self.store.names):
            # an agent learning in no dimension loads at rest: its entries never become objects
            rest = self._may_rest(name)
            b = await asyncio.to_thread(functools.partial(self.store.load, name, rest=rest))
            if b is not None:
                self.baselines[name] = b
                self._bring_up(name, stale)
        for agent in self.registry.agents.values():
            if agent.name not in self.baselines:
                self._bring_up(agent.name, stale)
        for dim, ids in stale.items():  # what they held beyond the baselines: one sweep
            self.kernel.clear_lists(dim, ids)
        self.kernel.activate()
        self.rechecker = self._rechecker()
        self._adopt_run_cgroups()
        self.source = self._make_source()
        release_memory()
        freeze_startup_objects()
        self._tasks = [
            asyncio.create_task(self._consume_events(), name="events"),
            asyncio.create_task(self._identity_loop(), name="identity"),
            asyncio.create_task(self._maintenance_loop(), name="maintenance"),
            asyncio.create_task(self._kernel_flush_loop(), name="kernel-flush"),
            asyncio.create_task(self.rechecker.run(self._stopping), name="recheck"),
        ]
        log.info(
            "corrald started",
            node=self.cfg.node,
            agents=len(self.registry.agents),
            identity=self.cfg.identity_source(),
            adopted_kernel_state=self.kernel.adopted,
        )

    def _rechecker(self) -> Rechecker:
        assert self.kernel is not None and self.probe is not None
        kern, probe = self.kernel, self.probe

        def apply(caps: Capabilities) -> None:
            probe.capabilities = caps

        return Rechecker(
            self.cfg.kernel.recheck_interval,
            functools.partial(run_probe, self.cfg.kernel.fallback_open),
            lambda: kern.backends,
            lambda: probe.capabilities,
            apply,
        )

    def _say_what_is_enforced(self) -> None:
        assert self.probe is not None
        for dim, cap in self.probe.capabilities.items():
            level = log.info if cap["mode"] == "enforce" else log.warning
            level(
                "capability",
                dimension=dim,
                enforcement=cap["mode"],
                backend=cap["backend"],
                how=cap["how"],
            )

    async def stop(self) -> None:
        """Stops learning and serving; the kernel keeps enforcing through the pins."""
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for q in list(self.subscribers):
            q.put_nowait(None)
        await self._save_all()
        await self.aibom_tracker.stop()
        if isinstance(self.source, identity.KubernetesSource):
            await self.source.close()
        if self.kernel is not None:
            self.kernel.close()
        log.info("corrald stopped; pinned programs keep enforcing", pins=self.cfg.pin_dir)

    # ---- agents and the kernel --------------------------------------------------------------

    def _ensure_baseline(self, name: str) -> Baseline:
        b = self.baselines.get(name)
        if b is None:
            b = self._new_baseline(name)
            self.baselines[name] = b
            self._dirty.add(name)
        return b

    def _bring_up(self, name: str, stale: dict[str, set[int]]) -> None:
        """At start: an agent's kernel lists and modes from its baseline, then the baseline
        to rest if the agent is not learning."""
        assert self.kernel is not None
        agent = self.registry.get(name)
        if agent is not None:
            self._ensure_baseline(name)
            self._sync_agent(agent, swap=self.kernel.adopted, stale=stale)
        self.aibom_tracker.sync_baselines()
        self._rest(name)
        b = self.baselines.get(name)
        if b is not None and b.frozen:
            self.aibom_tracker.rest(name, quiet=0)  # its AI-BOM records rest with it

    def _may_rest(self, name: str) -> bool:
        """An agent learning in no dimension (or none at all: a stale file): the kernel lists
        hold its baseline and judge its events, so it may rest compressed until read."""
        agent = self.registry.get(name)
        return agent is None or "observe" not in agent.modes.values()

    def _rest(self, name: str) -> bool:
        b = self.baselines.get(name)
        if b is None or b.frozen or not self._may_rest(name):
            return False
        b.freeze()
        return True

    def _rest_baselines(self) -> None:
        """Freezes the baselines an API call or a mode change thawed (maintenance tick)."""
        if sum(self._rest(name) for name in list(self.baselines)):
            release_memory()

    def _new_baseline(self, name: str) -> Baseline:
        lc = self.cfg.learning
        return Baseline.new(
            name,
            collapse_threshold=lc.collapse_threshold,
            collapse_min_depth=lc.collapse_min_depth,
            net_collapse_threshold=lc.net_collapse_threshold,
        )

    def _agent_config(self, agent: Agent) -> AgentConfig:
        return AgentConfig(
            modes=dict(agent.modes), lists=dict(agent.lists), rate_limit=self.cfg.kernel.rate_limit
        )

    def _push_entries(self, agent: Agent, lists: dict[str, int] | None = None) -> None:
        """Adds every baseline entry to the agent's kernel lists (idempotent)."""
        assert self.kernel is not None
        b = self.baselines[agent.name]
        lists = lists or agent.lists
        for dim in ("exec", "open"):  # streamed: a resting baseline's paths never all exist
            exact, prefixes = b.kernel_paths(dim), b.kernel_paths(dim, prefix=True)
            self.kernel.allow_paths(dim, lists[dim], exact, prefixes)
        self.kernel.allow_net(lists["connect"], b.kernel_entries("connect"))
        self._pushed[agent.name] = (id(b), b.revision)

    def _kernel_lists_current(self, agent: Agent) -> bool:
        """True when the kernel lists already hold every entry of the agent's baseline: it was
        pushed whole and has not changed since (Baseline.revision moves with its entries)."""
        b = self.baselines[agent.name]
        return self._pushed.get(agent.name) == (id(b), b.revision)

    def _sync_agent(
        self, agent: Agent, *, swap: bool = False, stale: dict[str, set[int]] | None = None
    ) -> None:
        """Kernel lists then modes: additions land before any flip. With swap, the lists are
        rebuilt under new ids and switched in one write, then the old ones are cleared. With
        stale (start-up on adopted maps), the old lists lose the baseline's entries at once
        and their ids go into stale, for one sweep of whatever else they held after every
        agent: a sweep reads the whole map, and one per agent made start-up quadratic."""
        assert self.kernel is not None
        if not swap:
            self._write_kernel_modes(agent, agent.modes)
            return
        old = dict(agent.lists)
        new = {d: self.registry.new_list_id() for d in DIMS}
        try:
            self._push_entries(agent, new)
        except Exception:
            for dim in DIMS:  # never referenced by the agent: drop what was written
                with contextlib.suppress(Exception):
                    self.kernel.clear_list(dim, new[dim])
            raise
        agent.lists = new
        self.kernel.set_agent(agent.id, self._agent_config(agent))
        if stale is not None:
            self._remove_entries(agent, old)
        for dim in DIMS:
            if stale is None:
                self.kernel.clear_list(dim, old[dim])
            else:
                stale.setdefault(dim, set()).add(old[dim])
        self.registry.dirty = True

    def _remove_entries(self, agent: Agent, lists: dict[str, int]) -> None:
        """Deletes the baseline's entries from lists no longer in use (frees their room)."""
        assert self.kernel is not None
        b = self.baselines[agent.name]
        for dim in ("exec", "open"):
            exact, prefixes = b.kernel_entries(dim)
            self.kernel.remove_paths(dim, lists[dim], exact, prefixes)
        self.kernel.remove_net(lists["connect"], b.kernel_entries("connect"))

    def _write_kernel_modes(self, agent: Agent, modes: dict[str, str]) -> None:
        """One map write switches the agent's modes. The lists are pushed first, and only when
        entries may be missing from them (re-pushing 10,000 entries took ~70 ms of every flip)."""
        assert self.kernel is not None
        if not self._kernel_lists_current(agent):
            self._push_entries(agent)
        cfg = self._agent_config(agent)
        cfg.modes = dict(modes)
        self.kernel.set_agent(agent.id, cfg)

    def _create_agent(
        self, name: str, *, source: str, mode: str | None = None, auto_promote: bool | None = None
    ) -> Agent:
        agent = self.registry.create(
            name,
            mode=mode or self.cfg.defaults.mode,
            auto_promote=self.cfg.defaults.auto_promote if auto_promote is None else auto_promote,
            source=source,
        )
        self.by_id[agent.id] = agent
        self._ensure_baseline(name)
        self._sync_agent(agent)
        log.info("agent created", agent=name, id=agent.id, source=source, modes=agent.modes)
        return agent

    def _agent(self, name: str) -> Agent:
        validate_agent_name(name)
        agent = self.registry.get(name)
        if agent is None:
            raise UnknownAgent(name)
        return agent

    # ---- cgroups ----------------------------------------------------------------------------

    def _bind(self, b: Binding) -> None:
        assert self.kernel is not None
        old = self.bindings.get(b.cgid)
        if old and (old.agent, old.inherit) == (b.agent, b.inherit):
            self.bindings[b.cgid] = b
            return
        agent = self.registry.get(b.agent)
        assert agent is not None
        self.kernel.register_cgroup(b.cgid, agent.id, inherit=b.inherit)
        if agent.source == "import":  # pre-seeded by an import: now we know where it runs
            agent.source = b.source
            self.registry.dirty = True
        self.bindings[b.cgid] = b
        log.info(
            "cgroup registered",
            agent=b.agent,
            cgroup=b.path,
            cgroup_id=b.cgid,
            inherit=b.inherit,
            source=b.source,
        )

    def _cgroups_of(self, agent: str) -> list[str]:
        return [b.path for b in self.bindings.values() if b.agent == agent and b.path]

    def _unbind(self, cgid: int) -> None:
        assert self.kernel is not None
        b = self.bindings.pop(cgid, None)
        self.kernel.unregister_cgroup(cgid)
        if b:
            log.info("cgroup unregistered", agent=b.agent, cgroup=b.path, cgroup_id=cgid)

    def _run_root(self) -> Path:
        assert self.kernel is not None
        return self.kernel.cgroup_root / RUN_DIR

    def _adopt_run_cgroups(self) -> None:
        """Cgroups made by `corralctl run` before a restart: their names say whose they are."""
        root = self._run_root()
        if not root.is_dir():
            return
        for d in root.iterdir():
            name = urllib.parse.unquote(d.name.rsplit(".", 1)[0])
            if d.is_dir() and self.registry.get(name):
                self._bind(Binding(cgroup_id(d), name, True, "run", path=str(d)))

    def _sweep_run_cgroups(self) -> None:
        """Removes `corralctl run` cgroups whose processes have all exited."""
        for cgid, b in list(self.bindings.items()):
            if b.source != "run":
                continue
            try:
                populated = "populated 1" in Path(b.path, "cgroup.events").read_text()
            except OSError:
                populated = False
            if not populated:
                self._unbind(cgid)
                with contextlib.suppress(OSError):
                    os.rmdir(b.path)

    # ---- identity ---------------------------------------------------------------------------

    def _make_source(self) -> identity.KubernetesSource | identity.LocalSource:
        assert self.kernel is not None
        ic = self.cfg.identity
        if self.cfg.identity_source() == "kubernetes":
            kc = ic.kubelet
            client = identity.KubeletClient(
                url=self.cfg.kubelet_url(),
                token_file=kc.token_file,
                ca_file=kc.ca_file,
                insecure_skip_tls_verify=kc.insecure_skip_tls_verify,
                connect_timeout=kc.timeout,
                read_timeout=kc.timeout,
                on_request=self.metrics.kubelet_polled,
            )
            selector = identity.PodSelector.from_config(
                {
                    "namespaces": ic.namespaces,
                    "exclude_namespaces": ic.exclude_namespaces,
                    "label_selector": ic.label_selector,
                }
            )
            return identity.KubernetesSource(
                client,
                cgroup_root=self.kernel.cgroup_root,
                selector=selector,
                started_at=self.started,
            )
        return identity.LocalSource(ic.local_globs, cgroup_root=self.kernel.cgroup_root)

    async def _identity_loop(self) -> None:
        assert self.source is not None
        interval = self.cfg.identity.kubelet.poll_interval
        while not self._stopping.is_set():
            try:
                workloads = await self.source.poll()
                self._reconcile(workloads, complete=self._source_answered())
            except Exception as e:
                log.error("identity poll failed; keeping the last known cgroups", error=str(e))
            if isinstance(self.source, identity.KubernetesSource):
                await self.source.wait(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), interval)

    def _source_answered(self) -> bool:
        """False while the kubelet has never answered: an empty list then means "unknown"."""
        health = getattr(self.source, "health", None)
        return health is None or health.last_success is not None

    def _reconcile(self, workloads: list[identity.Workload], *, complete: bool = True) -> None:
        wanted: dict[int, Binding] = {}
        for w in workloads:
            agent = self.registry.get(w.agent)
            if agent is None:
                agent = self._create_agent(w.agent, source=w.source, auto_promote=w.auto_promote)
                if w.partial:
                    self.baselines[w.agent].mark_partial(
                        "learning began on an already-running container"
                    )
            if w.mode:
                self._apply_annotation(agent, w.mode)
            wanted.update(self._bindings_of(w))
        for b in wanted.values():
            self._bind(b)
        if not complete:
            return
        for cgid, b in list(self.bindings.items()):
            if b.source != "run" and cgid not in wanted:
                self._unbind(cgid)

    def _bindings_of(self, w: identity.Workload) -> dict[int, Binding]:
        pod = w.pods[0] if w.pods else None
        ns, pod_name = (pod.namespace, pod.name) if pod else ("", "")

        def bind(c: identity.CgroupRef | identity.ContainerCgroup, container: str = "") -> Binding:
            return Binding(
                c.id,
                w.agent,
                c.inherit,
                w.source,
                path=c.path,
                namespace=ns,
                pod=pod_name,
                container=container,
            )

        out = {c.id: bind(c) for c in w.pod_cgroups}
        for c in w.container_cgroups:
            out[c.id] = bind(c, c.name)
        return out

    def _apply_annotation(self, agent: Agent, modes: dict[str, str]) -> None:
        changed = False
        for dim, mode in modes.items():
            last = next((h for h in reversed(agent.history) if h["dimension"] == dim), None)
            if last and last["by"] == "annotation" and last["to"] == mode:
                continue
            if last is None or last["by"] in ("default", "annotation"):
                changed |= agent.set_mode(
                    dim, mode, reason="pod annotation corral.io/mode", by="annotation"
                )
        if changed:
            self._sync_agent(agent)
            self.registry.dirty = True

    # ---- events -----------------------------------------------------------------------------

    async def _consume_events(self) -> None:
        assert self.kernel is not None
        if RingReader.supported():
            reader = self.kernel.ring_reader()
            try:
                await reader.run(self._on_batch, linger=_EVENT_LINGER)
            finally:
                reader.close()
            return
        pending: list[bytes] = []  # libbpf's callback per record; processed per batch

        def after_batch(n: int) -> None:
            batch = pending.copy()
            pending.clear()
            self._on_batch(batch)

        rb = self.kernel.ring_buffer(pending.append)
        try:
            await rb.run(after_batch)
        finally:
            rb.close()

    def _on_batch(self, records: list[bytes]) -> None:
        """One ring-buffer batch (every record waiting at a wakeup); then the entries learned
        in it go to the kernel, one batched write per list, so the kernel stops reporting
        them."""
        try:
            self._ingest(records)
        finally:
            self._flush_learned()

    def _ingest(self, records: list[bytes]) -> None:
        """Decodes, attributes, learns (OBSERVE) and counts deviations (ALERT, ENFORCE).

        The hot path of corrald: per record one struct unpack, the path as a string and a few
        lookups. An Event is built only where one is consumed (learning, connect, exec and
        AI-BOM candidates); deviations are counted per agent per batch; the event ring keeps
        the record itself and builds its dict only when it is read (_record)."""
        lay = events.layout()
        unpack, hot, size = lay.unpack, lay.hot_unpack, lay.size
        dims, verdicts = lay.dims, lay.verdicts
        by_id, bindings, offset = self.by_id, self.bindings, self._boot_offset
        exes, comms = self._exe_cache_now(), self._comm_cache
        if len(comms) > 4096:
            comms.clear()
        published: list[_Item] = []
        publish = published.append
        # agent id -> (agent, its deviations in this batch); consecutive records mostly share
        # their agent, process and cgroup: the last ones are kept at hand
        deviations: dict[int, tuple[Agent, list[tuple[str, str, str, float, str]]]] = {}
        dev_agent: Agent | None = None
        dev_list: list[tuple[str, str, str, float, str]] = []
        last_pid, last_comm, exe = -1, "", ""
        last_raw_comm, comm = b"", ""
        last_cgid, pod = -1, _NO_POD
        allowed = verdicts.index("allowed")
        # AI-BOM candidates in order: every exec and connect here; the opens' paths are checked
        # after the loop, the whole batch's at once (most batches have none to take)
        aibom: list[_Candidate] = []
        opens: list[str] = []
        add_open = opens.append
        n = 0
        if records and min(map(len, records)) < size:
            records = self._decodable(records, size)
        for rec in records:
            n += 1
            ts, cgid, agent_id, pid, d, vi, raw_comm, raw = hot(rec)  # events.HOT_FIELDS
            agent = by_id.get(agent_id)
            if agent is None:
                continue
            dim = dims[d]
            ev: events.Event | None = None
            path: str | None = None
            if raw_comm != last_raw_comm:
                last_raw_comm = raw_comm
                comm = comms.get(raw_comm)
                if comm is None:
                    comm = comms[raw_comm] = events.cstr(raw_comm)
            if dim == "connect":
                ev = events.from_fields(unpack(rec), offset, None, comm)
                obj = ev.object
            else:
                end = raw.find(b"\0")  # events.cstr, inline: a call per record costs
                obj = path = (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")
            if vi != allowed:
                if agent is not dev_agent:
                    dev_agent, dev_list = deviations.setdefault(agent.id, (agent, []))
                dev_list.append((dim, obj, verdicts[vi], (ts + offset) / 1e9, comm))
            elif agent.modes.get(dim) == "observe":
                ev = ev or events.from_fields(unpack(rec), offset, path, comm)
                self._learn(agent, ev)
            if pid != last_pid or comm != last_comm:
                last_pid, last_comm = pid, comm
                exe = exes.get((pid, comm))
                if exe is None:
                    exe = exes[(pid, comm)] = _exe(pid)
            if cgid != last_cgid:
                last_cgid = cgid
                b = bindings.get(cgid)
                pod = (b.namespace, b.pod, b.container) if b else _NO_POD
            publish((agent.name, rec, path, exe, pod))
            if dim == "open" and path is not None:
                add_open(path)
            else:
                aibom.append((agent, rec, path, comm, ev))
        self.events_total += n
        if opens and self.aibom_tracker.rules.any_maybe_interesting(opens):
            self._aibom_rescan(records)  # in order, the opens among them filtered one by one
        else:
            for agent, rec, path, comm, ev in aibom:
                self._aibom_event(agent, ev or events.from_fields(unpack(rec), offset, path, comm))
        for agent, seen in deviations.values():
            agent.record_deviations(seen)
            self.registry.dirty = True
        self.ring.extend(published)
        if self.subscribers or self.cfg.events.log_events:
            self._publish(published)

    def _decodable(self, records: list[bytes], size: int) -> list[bytes]:
        """The records long enough to decode; each short one is counted lost and logged."""
        for rec in records:
            if len(rec) < size:
                self._undecodable(len(rec), size)
        return [rec for rec in records if len(rec) >= size]

    def _undecodable(self, got: int, need: int) -> None:
        self.events_lost_in_daemon += 1
        log.error("undecodable ring-buffer record", size=got, need=need)

    def _aibom_rescan(self, records: list[bytes]) -> None:
        """The AI-BOM's share of a batch in which some open may be a package or a model: every
        exec and connect, and the opens the rules' pre-filter lets through, in order."""
        lay = events.layout()
        unpack, offset, by_id, comms = lay.unpack, self._boot_offset, self.by_id, self._comm_cache
        interesting = self.aibom_tracker.rules.maybe_interesting
        for rec in records:  # decodable ones (_ingest dropped the short)
            _ts, _cg, agent_id, _pid, d, _vi, raw_comm, raw = lay.hot_unpack(rec)
            agent = by_id.get(agent_id)
            if agent is None:
                continue
            path = None
            if lay.dims[d] != "connect":
                path = events.cstr(raw)
                if lay.dims[d] == "open" and not interesting(path):
                    continue
            comm = comms.get(raw_comm) or events.cstr(raw_comm)
            self._aibom_event(agent, events.from_fields(unpack(rec), offset, path, comm))

    def _aibom_event(self, agent: Agent, ev: events.Event) -> None:
        try:
            self.aibom_tracker.on_event(agent.name, ev)
        except Exception as e:  # the inventory must never disturb learning or enforcement
            log.error("AI-BOM update failed", agent=agent.name, error=str(e))

    def _learn(self, agent: Agent, ev: events.Event) -> None:
        """Adds a novel object to the baseline and queues the entry that now covers it (the
        exact path or host, or the prefix or network it collapsed into) for the kernel list:
        written at the end of this ring-buffer batch, so the kernel stops reporting it."""
        b = self.baselines[agent.name]
        revision = b.revision
        if not b.observe(ev):
            return
        self._dirty.add(agent.name)
        if b.revision == revision:
            return  # recorded as unenforceable (too long, unresolved, port 0): never allowed
        if ev.dimension == "connect":
            rule = b.kernel_rule("connect", (ev.address or "", ev.port or 0))
            if rule is not None:
                self._learned_net.setdefault(agent.lists["connect"], set()).add(rule)
        elif ev.path:
            rule = b.kernel_rule(ev.dimension, ev.path)
            if rule is not None:
                key = (ev.dimension, agent.lists[ev.dimension])
                queued = self._learned_paths.get(key)
                if queued is None:
                    queued = self._learned_paths[key] = (set(), set())
                queued[1 if rule[1] else 0].add(rule[0])
        else:
            rule = None
        self._learned_by.add(agent.name)
        try:
            self.aibom_tracker.learned(agent.name, b, revision, ev.dimension, rule)
        except Exception as e:  # the inventory must never disturb learning or enforcement
            log.error("AI-BOM update failed", agent=agent.name, error=str(e))

    def _flush_learned(self) -> None:
        """Writes the queued learned entries into the kernel lists. A failure (a full map) is
        logged and the agents are left to the periodic whole-list push: the consumer goes on."""
        if not self._learned_by:
            return
        assert self.kernel is not None
        paths, nets, agents = self._learned_paths, self._learned_net, self._learned_by
        self._learned_paths, self._learned_net, self._learned_by = {}, {}, set()
        try:
            for (dim, list_id), (exact, prefixes) in paths.items():
                self.kernel.allow_paths(dim, list_id, exact, prefixes)
            for list_id, entries in nets.items():
                self.kernel.allow_net(list_id, entries)
        except Exception as e:
            log.error("adding learned entries to the kernel failed", error=str(e))
            self._kernel_dirty |= agents

    async def _kernel_flush_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.5)
            for name in list(self._kernel_dirty):
                self._kernel_dirty.discard(name)
                agent = self.registry.get(name)
                if agent is not None:
                    try:
                        self._push_entries(agent)
                    except Exception as e:
                        log.error(
                            "updating the kernel allow-lists failed", agent=name, error=str(e)
                        )

    def _record(self, item: _Item) -> dict[str, Any]:
        """What the events API, the event log and subscribers see of one event."""
        name, raw, path, exe, (namespace, pod, container) = item
        ev = events.from_fields(events.layout().unpack(raw), self._boot_offset, path)
        rec = ev.to_dict()
        rec.update(
            time=self._iso_time(ev.ts_ns),
            node=self._node_name,
            agent=name,
            exe=exe,
            namespace=namespace,
            pod=pod,
            container=container,
        )
        return rec

    @functools.cached_property
    def _node_name(self) -> str:
        return self.cfg.node  # environment and hostname: read once, not per event

    def _iso_time(self, ts_ns: int) -> str:
        """2026-01-02T03:04:05.123456Z; the part up to the second is formatted once a second."""
        sec = ts_ns // 1_000_000_000
        if self._time_prefix[0] != sec:
            self._time_prefix = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        return f"{self._time_prefix[1]}.{ts_ns % 1_000_000_000 // 1000:06d}Z"

    def _exe_cache_now(self) -> dict[tuple[int, str], str]:
        """/proc/<pid>/exe by (pid, comm), remembered for up to a second: a busy agent's events
        would otherwise cost a readlink each (an exec changes the comm, and so the key; the
        value is as stale as one read at processing time could be anyway)."""
        now = time.monotonic()
        if now - self._exe_cache_at > 1.0:
            self._exe_cache.clear()
            self._exe_cache_at = now
        return self._exe_cache

    def _publish(self, items: list[_Item]) -> None:
        """Logs (events.log_events) and hands to subscribers the events of one batch."""
        log_events = self.cfg.events.log_events
        for item in items:
            rec = self._record(item)
            if log_events:
                event_log.info("event", **{k: rec[k] for k in _LOGGED_FIELDS})
            for q in list(self.subscribers):
                try:
                    q.put_nowait(rec)
                except asyncio.QueueFull:
                    self.events_lost_in_daemon += 1

    # ---- maintenance ------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        last_save = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.cfg.promotion.check_interval)
            try:
                self._sweep_run_cgroups()
                self._note_drops()
                self._auto_promote()
                if time.monotonic() - last_save >= self.cfg.learning.save_interval:
                    await self._save_all()
                    last_save = time.monotonic()
                self._rest_baselines()
            except Exception as e:
                log.error("maintenance step failed", error=str(e))

    def _note_drops(self) -> None:
        assert self.kernel is not None
        for agent in self.registry.agents.values():
            if "observe" not in agent.modes.values():
                continue
            dropped = sum(c["dropped"] for c in self.kernel.counters(agent.id).values())
            b = self.baselines[agent.name]
            if dropped and not b.partial:
                b.mark_partial(f"{dropped} events dropped in the kernel (rate limit or full ring)")
                self._dirty.add(agent.name)

    def _auto_promote(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        p = self.cfg.promotion
        for agent in self.registry.agents.values():
            if not agent.auto_promote:
                continue
            b = self.baselines[agent.name]
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
                self._sync_agent(agent)
                self.registry.dirty = True

    async def _save_all(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            b = self.baselines.get(name)
            if b is None:
                continue
            try:
                await asyncio.to_thread(self.store.save, b)
            except OSError as e:
                self._dirty.add(name)
                log.error(
                    "saving baseline failed; will retry, the previous file is intact",
                    agent=name,
                    error=str(e),
                )
        if self.registry.dirty:
            await self._save_registry()

    async def _save_registry(self) -> None:
        """Agent by agent in the loop (where events change their tables: each one copied and
        encoded in a few ms, the event consumer running in between), the file written in a
        thread. An agent changed meanwhile marks the registry dirty again: the next save."""
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
            log.error("saving the agent registry failed; will retry", error=str(e))

    # ---- Controller -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.kernel is not None and self.probe is not None
        by_mode: dict[str, dict[str, int]] = {d: {} for d in DIMS}
        dropped = 0
        for a in self.registry.agents.values():
            for d in DIMS:
                by_mode[d][a.modes[d]] = by_mode[d].get(a.modes[d], 0) + 1
            dropped += sum(c["dropped"] for c in self.kernel.counters(a.id).values())
        health = getattr(self.source, "health", None)
        return {
            "version": __version__,
            "node": self.cfg.node,
            "kernel": self.probe.kernel,
            "uptime_seconds": round(time.time() - self.started, 1),
            "capabilities": self.probe.capabilities,
            "rechecks": self.rechecker.summary() if self.rechecker else None,
            "identity": {
                "source": self.cfg.identity_source(),
                "kubelet": health.to_dict() if health is not None else None,
            },
            "agents": {"total": len(self.registry.agents), "by_mode": by_mode},
            "cgroups_registered": len(self.bindings),
            "events": {
                "received": self.events_total,
                "dropped_in_kernel": dropped,
                "lost_in_daemon": self.events_lost_in_daemon,
            },
            "kernel_state": {
                "pinned_at": str(self.cfg.pin_dir),
                "adopted": self.kernel.adopted,
                "programs": sorted(self.kernel.programs),
            },
        }

    def metrics_sample(self) -> metrics.Sample:
        """What /metrics reports, read now: the kernel's per-CPU counters are summed here, at
        scrape time, never on the event path."""
        assert self.kernel is not None and self.probe is not None
        agents = [
            metrics.AgentSample(
                name=a.name,
                modes=dict(a.modes),
                baseline=self.baselines[a.name].summary()["counts"],
                counters=self.kernel.counters(a.id),
                deviations=len(a.deviations),
            )
            for a in sorted(self.registry.agents.values(), key=lambda a: a.name)
        ]
        health = getattr(self.source, "health", None)
        return metrics.Sample(
            agents=agents,
            events_consumed=self.events_total,
            events_lost=self.events_lost_in_daemon,
            cgroups=len(self.bindings),
            ai_agents=self.ai_agents(),
            kubelet_last_success=health.last_success if health is not None else None,
            capabilities=self.probe.capabilities,
            kernel=self.probe.kernel,
        )

    def _effective(self, dim: str, mode: str) -> str:
        """What the mode does on this node's backend (enforce on an observe-only backend)."""
        assert self.probe is not None
        cap = self.probe.capabilities[dim]["mode"]
        if cap in ("unwatched", "unavailable") and mode != "off":
            return f"{mode} (not watched here)"
        if cap == "lost" and mode != "off":
            return f"{mode} (NOT enforced: hook lost)"
        if mode != "enforce":
            return mode
        return {"enforce": "enforce", "kill": "enforce (kill)"}.get(
            cap, "alert (backend cannot deny)"
        )

    def _summary(self, agent: Agent) -> dict[str, Any]:
        assert self.kernel is not None
        counters = self.kernel.counters(agent.id)
        return {
            "name": agent.name,
            "id": agent.id,
            "source": agent.source,
            "modes": dict(agent.modes),
            "effective": {d: self._effective(d, agent.modes[d]) for d in DIMS},
            "auto_promote": agent.auto_promote,
            "baseline": self.baselines[agent.name].summary(),
            "counters": counters,
            "deviations": len(agent.deviations),
            "cgroups": sum(1 for b in self.bindings.values() if b.agent == agent.name),
        }

    def list_agents(self) -> list[dict[str, Any]]:
        return [
            self._summary(a) for a in sorted(self.registry.agents.values(), key=lambda a: a.name)
        ]

    def get_agent(self, name: str) -> dict[str, Any]:
        agent = self._agent(name)
        out = self._summary(agent)
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
            for b in self.bindings.values()
            if b.agent == agent.name
        ]
        return out

    def get_baseline(self, name: str) -> dict[str, Any]:
        self._agent(name)
        return self.baselines[name].to_dict()

    async def set_mode(self, name: str, modes: dict[str, str]) -> dict[str, Any]:
        agent = self._agent(name)
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
            self._write_kernel_modes(agent, wanted)
            for dim, mode in modes.items():
                agent.set_mode(dim, mode, reason="requested through the API", by="api")
            self.registry.dirty = True
            await self._save_all()
        return self.get_agent(name)

    async def accept(
        self,
        name: str,
        entries: list[dict[str, Any]] | None,
        *,
        index: list[int] | None = None,
        view: str | None = None,
        flat: bool = False,
    ) -> dict[str, Any]:
        """Adds what the operator picked to the baseline (additions only: no list swap)."""
        agent = self._agent(name)
        b = self.baselines[name]
        self._prune_deviations(agent)
        pending = list(agent.deviations.values())
        if entries is None and not index:
            chosen = [(review.exact(d), [d]) for d in pending]
        else:
            chosen = self._select(name, pending, entries or [])
            chosen += self._select_rows(name, pending, index or [], view, flat)
        added: list[review.Selector] = []
        skipped: list[str] = []
        taken: set[str] = set()
        for sel, devs in chosen:
            if sel is None:
                skipped += [d.object for d in devs]
            elif b.add(sel.dimension, sel.key, source="accepted", prefix=sel.prefix):
                added.append(sel)
            taken.update(d.key for d in devs)
        for key in taken:
            agent.deviations.pop(key, None)
        self._prune_deviations(agent)
        self._dirty.add(name)
        self.registry.dirty = True
        try:
            self._push_entries(agent)
        except AllowListFull as e:
            await self._save_all()  # the baseline keeps what was accepted: nothing is lost
            raise Conflict(
                f"the {len(added)} accepted entries are in {name}'s baseline, but not all "
                f"fit the kernel list: {e}"
            ) from None
        await self._save_all()
        log.info("deviations accepted", agent=name, deviations=len(taken), entries=len(added))
        return {
            "agent": name,
            "accepted": len(taken),
            "entries": [
                {"dimension": s.dimension, "object": s.object, "kind": s.kind} for s in added
            ],
            "skipped": skipped,
            "remaining": len(agent.deviations),
        }

    def _select(
        self, name: str, pending: list[Deviation], entries: list[dict[str, Any]]
    ) -> list[_Choice]:
        out: list[_Choice] = []
        for i, e in enumerate(entries):
            dim, obj = e.get("dimension"), e.get("object")
            try:
                sel = review.selector(str(dim), str(obj))
            except ValueError as err:
                raise BadRequest(f"entries[{i}] ({dim} {obj}): {err}") from None
            matched = [d for d in pending if sel.covers(d)]
            if not matched:
                raise BadRequest(
                    f"entries[{i}]: no pending deviation of {name} matches {dim} {obj} "
                    f"(see `corralctl diff {name}`; to allow something the agent has not "
                    "done, use `corralctl baseline import --merge`)"
                )
            out.append((sel, matched))
        return out

    def _select_rows(
        self, name: str, pending: list[Deviation], index: list[int], view: str | None, flat: bool
    ) -> list[_Choice]:
        if not index:
            return []
        rows = review.rows(pending, flat=flat)
        now = review.view(rows)
        if view is not None and view != now:
            raise Conflict(
                f"the deviations of {name} changed since view {view} (now {now}): "
                f"run `corralctl diff {name}` again"
            )
        out: list[_Choice] = []
        for n in index:
            if not 1 <= n <= len(rows):
                raise BadRequest(
                    f"index {n} is out of range: the diff of {name} has {len(rows)} rows"
                )
            out += [(review.exact(d), [d]) for d in rows[n - 1].deviations]
        return out

    def _prune_deviations(self, agent: Agent) -> None:
        """Forgets deviations the baseline now covers (after an accept or an import)."""
        b = self.baselines[agent.name]
        keep = {d.key for d in review.pending(agent.deviations.values(), b)}
        for key in [k for k in agent.deviations if k not in keep]:
            del agent.deviations[key]
            self.registry.dirty = True

    def diff(self, name: str, flat: bool = False) -> dict[str, Any]:
        agent = self._agent(name)
        pending = review.pending(agent.deviations.values(), self.baselines[name])
        rows = review.rows(pending, flat=flat)
        return {
            "agent": name,
            "modes": dict(agent.modes),
            "view": review.view(rows),
            "flat": flat,
            "deviations": len(pending),
            "rows": [r.to_dict(i) for i, r in enumerate(rows, 1)],
        }

    def export_baseline(self, name: str) -> dict[str, Any]:
        agent = self._agent(name)
        return document.export(
            self.baselines[name], modes=agent.modes, auto_promote=agent.auto_promote
        )

    async def import_baseline(
        self,
        name: str,
        doc: document.Document,
        *,
        strategy: document.Strategy = "merge",
        keep_modes: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Merges or replaces the baseline with a validated document; creates (pre-seeds) the
        agent when it is unknown. Kernel rule: the new allow-lists are filled completely under
        fresh ids and switched in with one write, then modes flip; nothing changes if any
        step fails."""
        validate_agent_name(name)
        self._check_capacity(doc)
        agent = self.registry.get(name)
        current = self.baselines.get(name)
        plan = document.plan(
            doc, current, agent=name, strategy=strategy, rules=self.rules, now=time.time()
        )
        modes = {} if keep_modes else dict(doc.modes)
        auto = None if keep_modes else doc.auto_promote
        result: dict[str, Any] = {
            "agent": name,
            "created": agent is None,
            "strategy": strategy,
            "digest": doc.digest,
            "dry_run": dry_run,
            "added": plan.added,
            "removed": plan.removed,
            "kept": plan.kept,
            "entries": len(plan.baseline),
        }
        if dry_run:
            before = agent.modes if agent else dict.fromkeys(DIMS, self.cfg.defaults.mode)
            result["modes"] = {**before, **modes}
            return result
        self.baselines[name] = plan.baseline
        try:
            if agent is None:
                agent = self._create_agent(name, source="import", auto_promote=auto)
            else:
                self._sync_agent(agent, swap=True)
        except Exception as e:
            self._undo_import(name, current, created=result["created"])
            if isinstance(e, AllowListFull) or (isinstance(e, OSError) and e.errno in _MAP_FULL):
                raise self._maps_full(name, e) from None
            raise
        self._apply_imported_modes(agent, modes, auto, doc.digest)
        self._prune_deviations(agent)
        self._dirty.add(name)
        self.registry.dirty = True
        await self._save_all()
        log.info("baseline imported", **{k: v for k, v in result.items() if k != "dry_run"})
        result["modes"] = dict(agent.modes)
        return result

    def _undo_import(self, name: str, previous: Baseline | None, *, created: bool) -> None:
        """The kernel refused the new lists: the agent keeps what it had (a new one goes)."""
        if previous is None:
            self.baselines.pop(name, None)
        else:
            self.baselines[name] = previous
        gone = self.registry.agents.pop(name, None) if created else None
        if gone is not None:
            self.by_id.pop(gone.id, None)
            assert self.kernel is not None
            with contextlib.suppress(Exception):
                self.kernel.clear_agent(gone.id)
            for dim in DIMS:
                with contextlib.suppress(Exception):
                    self.kernel.clear_list(dim, gone.lists[dim])

    def _maps_full(self, name: str, e: Exception) -> Conflict:
        k = self.cfg.kernel
        return Conflict(
            f"nothing imported into {name}: a kernel allow-list map of this node is full "
            f"({e}). The maps are shared by all agents (kernel.exec_allow_entries="
            f"{k.exec_allow_entries}, open_allow_entries={k.open_allow_entries}, "
            f"net_allow_entries={k.net_allow_entries}) and an import needs room for the old "
            "and the new lists while it swaps them: raise the limit or remove entries"
        )

    def _check_capacity(self, doc: document.Document) -> None:
        k = self.cfg.kernel
        sizes = {
            "exec": k.exec_allow_entries,
            "open": k.open_allow_entries,
            "connect": k.net_allow_entries,
        }
        for dim, size in sizes.items():
            n = doc.count(dim)
            if n > size:
                raise BadRequest(
                    f"spec.{dim}: {n} entries; this node's {dim} allow-list holds at most "
                    f"{size} across all agents (kernel.{'net' if dim == 'connect' else dim}"
                    "_allow_entries)"
                )

    def _apply_imported_modes(
        self, agent: Agent, modes: dict[str, str], auto: bool | None, digest: str
    ) -> None:
        """After the lists are in place: flip modes (one map write)."""
        assert self.kernel is not None
        changed = False
        for dim, mode in modes.items():
            changed |= agent.set_mode(dim, mode, reason=f"baseline import {digest}", by="import")
        if auto is not None:
            agent.auto_promote = auto
        if changed:
            self.kernel.set_agent(agent.id, self._agent_config(agent))

    async def reset(self, name: str) -> dict[str, Any]:
        agent = self._agent(name)
        self.baselines[name] = self._new_baseline(name)
        agent.deviations.clear()
        for dim in DIMS:
            agent.set_mode(dim, "observe", reason="baseline reset", by="api")
        self._sync_agent(agent, swap=True)
        self._dirty.add(name)
        await self._save_all()
        return self.get_agent(name)

    def recent_events(self, agent: str | None, limit: int) -> list[dict[str, Any]]:
        if agent is not None:
            self._agent(agent)
        seen = [s for s in self.ring if agent is None or s[0] == agent]
        return [self._record(s) for s in seen[-limit:]] if limit > 0 else []

    async def subscribe(self, agent: str | None) -> AsyncIterator[dict[str, Any]]:
        if agent is not None:
            self._agent(agent)
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=10000)
        self.subscribers.add(q)
        try:
            while (rec := await q.get()) is not None:
                if agent is None or rec["agent"] == agent:
                    yield rec
        finally:
            self.subscribers.discard(q)

    async def aibom(self, name: str | None, fmt: str = "json") -> dict[str, Any]:
        """The AI-BOM of one agent or (name None) of the node, as corral's JSON or CycloneDX."""
        if fmt not in ("json", "cyclonedx"):
            raise BadRequest(f"format must be json or cyclonedx; got {fmt!r}")
        if name is not None:
            self._agent(name)
        self.aibom_tracker.sync_baselines()  # entries accepted or imported a moment ago
        t = self.aibom_tracker
        view = t.agent_view(name) if name is not None else t.node_view()
        if fmt == "json":
            return view
        from corral.aibom import cyclonedx  # ~7 MB of CycloneDX model classes: only when asked for

        render = cyclonedx.agent_bom if name is not None else cyclonedx.node_bom
        return await asyncio.to_thread(render, view)

    def ai_agents(self) -> int:
        """How many agents the AI-BOM recognises as AI agents (for metrics)."""
        return self.aibom_tracker.ai_agents()

    def reload_aibom_rules(self, rule_files: list[str]) -> None:
        """SIGHUP: read the rule files; a bad one raises ConfigError and nothing changes."""
        self.aibom_tracker.reload(load_rules(rule_files))
        self.cfg.aibom.rule_files = list(rule_files)

    async def run_agent(self, name: str, pid: int, caller_pid: int | None) -> dict[str, Any]:
        validate_agent_name(name)
        if caller_pid is not None and _ppid(pid) != caller_pid:
            raise Conflict(f"process {pid} is not a child of the caller ({caller_pid})")
        agent = self.registry.get(name) or self._create_agent(name, source="run")
        self._run_seq += 1
        cg = self._run_root() / f"{urllib.parse.quote(name, safe='')}.{os.getpid()}-{self._run_seq}"
        cg.mkdir(parents=True, exist_ok=True)
        cgid = cgroup_id(cg)
        self._bind(Binding(cgid, agent.name, True, "run", path=str(cg)))
        try:
            (cg / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            self._unbind(cgid)
            os.rmdir(cg)
            raise BadRequest(f"cannot move process {pid} into {cg}: {e.strerror}") from None
        await self._save_all()
        return {"agent": name, "cgroup": str(cg), "cgroup_id": cgid, "modes": dict(agent.modes)}


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
