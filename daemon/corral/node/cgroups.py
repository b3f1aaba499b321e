"""Which cgroups are whose: the identity source's workloads (kubelet or local globs) and the
cgroups of `corralctl run`, registered in the kernel as they come and go."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from corral import identity
from corral.config import format_gate
from corral.contract import BadRequest, Conflict, Forbidden, validate_agent_name
from corral.identity.bindings import Binding
from corral.identity.sandbox import SandboxDetector
from corral.kernel.loader import cgroup_id
from corral.policy.agents import Agent
from corral.policy.promotion import set_gates

from .coverage import refuse_enforce
from .recovery import KernelRecovery
from .state import NodeState
from .sync import KernelSync

log = structlog.get_logger("corral.node")

RUN_DIR = "corral.run"  # cgroups made by `corralctl run`, under the cgroup v2 root
Source = identity.KubernetesSource | identity.LocalSource


class Cgroups:
    def __init__(
        self,
        state: NodeState,
        sync: KernelSync,
        recovery: KernelRecovery,
        *,
        on_kubelet_request: Callable[..., Any] | None = None,
    ) -> None:
        self.state = state
        self.sync = sync
        self.recovery = recovery
        self.bindings = state.bindings
        self.on_kubelet_request = on_kubelet_request
        self.source: Source | None = None
        self.started = time.time()
        self._run_seq = 0
        self._refused: dict[str, dict[str, str]] = {}  # agent -> annotation modes not applied

    # ---- registration ---------------------------------------------------------------------

    def bind(self, b: Binding) -> None:
        old = self.bindings.get(b.cgid)
        if old and (old.agent, old.inherit) == (b.agent, b.inherit):
            self.bindings[b.cgid] = b
            return
        agent = self.state.registry.get(b.agent)
        assert agent is not None
        self.sync.k.register_cgroup(b.cgid, agent.id, inherit=b.inherit)
        if agent.source == "import":  # pre-seeded by an import: now we know where it runs
            agent.source = b.source
            self.state.registry.dirty = True
        self.bindings[b.cgid] = b
        learning = "observe" in agent.modes.values()
        baseline = self.state.baselines.get(agent.name)
        if learning and baseline is not None and baseline.note_run(b.cgid):
            self.state.dirty.add(agent.name)  # evidence for promotion (policy/promotion.py)
        log.info(
            "cgroup registered",
            agent=b.agent,
            cgroup=b.path,
            cgroup_id=b.cgid,
            inherit=b.inherit,
            source=b.source,
        )

    def create(
        self,
        name: str,
        *,
        source: str,
        cgroups: list[int],
        auto_promote: bool | None = None,
    ) -> Agent:
        """A new agent for a workload (or a `run` cgroup) first seen on these cgroups: the
        agent the kernel still registers one of them to, if the registry lost it
        (node/recovery.py), else a new one."""
        found = self.recovery.claim(cgroups)
        agent = self.sync.create_agent(
            name, source=source, auto_promote=auto_promote, recovered=found
        )
        if found is not None:
            self.recovery.claimed(found[0])
        return agent

    def unbind(self, cgid: int) -> None:
        b = self.bindings.pop(cgid, None)
        self.sync.k.unregister_cgroup(cgid)
        if b:
            log.info("cgroup unregistered", agent=b.agent, cgroup=b.path, cgroup_id=cgid)

    def of(self, agent: str) -> list[Binding]:
        return [b for b in self.bindings.values() if b.agent == agent]

    def live(self, agent: str) -> list[Binding]:
        """agent's cgroups that hold a process now: a `run` that exited stays registered
        until the next sweep (promotion.check_interval), a pod's until the kubelet drops it."""
        return [b for b in self.of(agent) if populated(b)]

    def confining(self, pid: int) -> Binding | None:
        """The registered cgroup process pid runs in, or the nearest registered ancestor of its
        cgroup (whether or not the kernel lets that one's rules inherit): None if there is
        none. Raises Forbidden when the process's cgroup cannot be read (it may be gone, or
        not visible from here)."""
        try:
            raw = Path(f"/proc/{pid}/cgroup").read_bytes()
        except OSError as e:
            raise Forbidden(
                f"cannot read the cgroup of the calling process {pid} ({e.strerror}): corrald "
                "refuses callers it cannot tell from a confined agent"
            ) from None
        # bytes, split on "\n" only (the one character a cgroup name cannot hold: "\r" and
        # the other line breaks str.splitlines knows can, and a v1 cgroup named "x\r0::"
        # must not pass for the v2 line); exactly one v2 line
        v2 = [ln[3:] for ln in raw.split(b"\n") if ln.startswith(b"0::")]
        if len(v2) != 1:
            raise Forbidden(
                f"process {pid} is not in exactly one cgroup v2 hierarchy ({len(v2)} found): "
                "corrald refuses callers it cannot tell from a confined agent"
            )
        rel = os.fsdecode(v2[0])
        here = os.path.normpath(os.path.join(str(self.sync.k.cgroup_root), rel.lstrip("/")))
        by_path = {os.path.normpath(b.path): b for b in self.bindings.values() if b.path}
        while True:
            b = by_path.get(here)
            if b is not None:
                return b
            parent = os.path.dirname(here)
            if parent == here:
                return None
            here = parent

    # ---- `corralctl run` ------------------------------------------------------------------

    def run_root(self) -> Path:
        return self.sync.k.cgroup_root / RUN_DIR

    def adopt_run_cgroups(self) -> None:
        """Cgroups made by `corralctl run` before a restart: their names say whose they are.
        One the registry lost whose cgroup the kernel still registers to its agent gets that
        agent back (node/recovery.py)."""
        root = self.run_root()
        if not root.is_dir():
            return
        for d in sorted(root.iterdir()):
            if not d.is_dir():
                continue
            name = urllib.parse.unquote(d.name.rsplit(".", 1)[0])
            cgid = cgroup_id(d)
            if not self.state.registry.get(name):
                try:
                    validate_agent_name(name)
                except BadRequest:
                    continue
                if self.recovery.claim([cgid]) is None:
                    continue
                self.create(name, source="run", cgroups=[cgid])
            self.bind(Binding(cgid, name, True, "run", path=str(d)))

    def sweep_run_cgroups(self) -> None:
        """Removes `corralctl run` cgroups whose processes have all exited."""
        for cgid, b in list(self.bindings.items()):
            if b.source != "run":
                continue
            if not populated(b):
                self.unbind(cgid)
                with contextlib.suppress(OSError):
                    os.rmdir(b.path)

    def run(self, name: str, pid: int, caller_pid: int | None) -> tuple[Agent, Path, int]:
        """Moves process pid (a child of caller_pid) into a new cgroup of agent name."""
        validate_agent_name(name)
        if caller_pid is not None and _ppid(pid) != caller_pid:
            raise Conflict(f"process {pid} is not a child of the caller ({caller_pid})")
        agent = self.state.registry.get(name) or self.sync.create_agent(name, source="run")
        self._run_seq += 1
        cg = self.run_root() / f"{urllib.parse.quote(name, safe='')}.{os.getpid()}-{self._run_seq}"
        cg.mkdir(parents=True, exist_ok=True)
        cgid = cgroup_id(cg)
        self.bind(Binding(cgid, agent.name, True, "run", path=str(cg)))
        try:
            (cg / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            self.unbind(cgid)
            os.rmdir(cg)
            raise BadRequest(f"cannot move process {pid} into {cg}: {e.strerror}") from None
        return agent, cg, cgid

    # ---- the identity source --------------------------------------------------------------

    def make_source(self) -> Source:
        cfg, root = self.state.cfg, self.sync.k.cgroup_root
        ic = cfg.identity
        if cfg.identity_source() != "kubernetes":
            return identity.LocalSource(ic.local_globs, cgroup_root=root)
        kc = ic.kubelet
        client = identity.KubeletClient(
            url=cfg.kubelet_url(),
            token_file=kc.token_file,
            ca_file=kc.ca_file,
            insecure_skip_tls_verify=kc.insecure_skip_tls_verify,
            connect_timeout=kc.timeout,
            read_timeout=kc.timeout,
            on_request=self.on_kubelet_request,
        )
        selector = identity.PodSelector.from_config(
            {
                "namespaces": ic.namespaces,
                "exclude_namespaces": ic.exclude_namespaces,
                "label_selector": ic.label_selector,
            }
        )
        sandboxes = SandboxDetector(ic.gvisor_runtime_classes, ic.kata_runtime_classes)
        return identity.KubernetesSource(
            client,
            cgroup_root=root,
            selector=selector,
            started_at=self.started,
            sandboxes=sandboxes,
        )

    @property
    def health(self) -> Any:
        """The kubelet client's health (identity.KubeletHealth), None for local sources."""
        return getattr(self.source, "health", None)

    async def identity_loop(self, stopping: asyncio.Event) -> None:
        assert self.source is not None
        interval = self.state.cfg.identity.kubelet.poll_interval
        while not stopping.is_set():
            try:
                workloads = await self.source.poll()
                self.reconcile(workloads, complete=self.source_answered())
            except Exception as e:
                log.error("identity poll failed; keeping the last known cgroups", error=str(e))
            if isinstance(self.source, identity.KubernetesSource):
                await self.source.wait(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval)

    async def close(self) -> None:
        if isinstance(self.source, identity.KubernetesSource):
            await self.source.close()

    def source_answered(self) -> bool:
        """False while the kubelet has never answered: an empty list then means "unknown"."""
        health = self.health
        return health is None or health.last_success is not None

    def reconcile(self, workloads: list[identity.Workload], *, complete: bool = True) -> None:
        wanted: dict[int, Binding] = {}
        self._note_coverage(workloads, complete=complete)
        for w in workloads:
            agent = self.state.registry.get(w.agent)
            if agent is None:
                agent = self.create(
                    w.agent,
                    source=w.source,
                    cgroups=[c.id for c in (*w.pod_cgroups, *w.container_cgroups)],
                    auto_promote=w.auto_promote,
                )
                if w.partial:
                    self.state.baselines[w.agent].mark_partial(
                        "learning began on an already-running container"
                    )
            if w.mode:
                self._apply_annotation(agent, w.mode)
            if w.source == "kubernetes":
                self._apply_gate_annotation(agent, w.promotion or {})
            wanted.update(_bindings_of(w))
        for b in wanted.values():
            self.bind(b)
        if not complete:
            return
        for cgid, b in list(self.bindings.items()):
            if b.source != "run" and cgid not in wanted:
                self.unbind(cgid)

    def _note_coverage(self, workloads: list[identity.Workload], *, complete: bool) -> None:
        """Which agents run where host BPF does not see (node/coverage.py); an incomplete
        answer only adds to what is known."""
        found = {w.agent: w.sandbox for w in workloads if w.sandbox is not None}
        for name, sandbox in found.items():
            if self.state.uncovered.get(name) != sandbox:
                log.warning("agent not covered", agent=name, why=sandbox.why)
        if complete:
            self.state.uncovered.clear()
        self.state.uncovered.update(found)

    def _apply_gate_annotation(self, agent: Agent, gates: dict[str, float | int]) -> None:
        """The gates of corral.io/promotion (none: the pods have no valid one now). The
        operator's gates (`corralctl promotion`) win over them, gate by gate."""
        if set_gates(agent, "annotation", gates):
            self.state.registry.dirty = True
            log.info(
                "promotion gates from the pod annotation corral.io/promotion",
                agent=agent.name,
                gates={g: format_gate(g, v) for g, v in gates.items()},
            )

    def _apply_annotation(self, agent: Agent, modes: dict[str, str]) -> None:
        changed = False
        modes = self._coverable(agent.name, modes)
        for dim, mode in modes.items():
            last = next((h for h in reversed(agent.history) if h["dimension"] == dim), None)
            if last and last["by"] == "annotation" and last["to"] == mode:
                continue
            if last is None or last["by"] in ("default", "annotation"):
                changed |= agent.set_mode(
                    dim, mode, reason="pod annotation corral.io/mode", by="annotation"
                )
        if changed:
            self.sync.sync_agent(agent)
            self.state.registry.dirty = True

    def _coverable(self, name: str, modes: dict[str, str]) -> dict[str, str]:
        """modes without ENFORCE for an agent that is not covered (warned once per value)."""
        try:
            refuse_enforce(name, self.state.uncovered.get(name), modes)
        except Conflict as e:
            if self._refused.get(name) != modes:
                self._refused[name] = dict(modes)
                log.warning("annotation corral.io/mode=enforce ignored", agent=name, error=str(e))
            return {d: m for d, m in modes.items() if m != "enforce"}
        self._refused.pop(name, None)
        return modes


def _bindings_of(w: identity.Workload) -> dict[int, Binding]:
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


def populated(b: Binding) -> bool:
    """Does b's cgroup (or one below it) hold a process? No when the cgroup is gone; yes when
    the binding has no path to look at."""
    if not b.path:
        return True
    try:
        return "populated 1" in Path(b.path, "cgroup.events").read_text()
    except OSError:
        return False


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])
