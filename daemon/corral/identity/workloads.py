"""`discover`: this node's pods and a `CgroupIndex` -> one `Workload` per agent, with the
pod and container cgroups to register for it.

Pod and container cgroups are both meant to be registered with inherit, so a container's
first instruction (and any sub-cgroup a runtime creates, like CRI-O's `container/`) is
already covered by the deepest registered ancestor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .cgroupfs import CgroupIndex, CgroupRef, ContainerCgroup, normalize_uid
from .pods import (
    DEFAULT_CONTAINER_ANNOTATION,
    TERMINAL_PHASES,
    ContainerInfo,
    PodInfo,
    PodRef,
    agent_name,
    pod_auto_promote,
    pod_mode,
    pod_promotion,
)
from .sandbox import Sandbox
from .selector import PodSelector


@dataclass
class Workload:
    """One agent and everything on this node that belongs to it."""

    agent: str
    source: str  # "kubernetes" | "local"
    pods: list[PodRef] = field(default_factory=list)
    pod_cgroups: list[CgroupRef] = field(default_factory=list)
    container_cgroups: list[ContainerCgroup] = field(default_factory=list)
    mode: dict[str, str] | None = None  # from corral.io/mode; only the dimensions it names
    auto_promote: bool | None = None  # from corral.io/auto-promote
    promotion: dict[str, float | int] | None = None  # gates from corral.io/promotion
    partial: bool = False  # any container was already running before corral started
    sandbox: Sandbox | None = None  # a pod of it runs where host BPF does not see (sandbox.py)

    def registrations(self) -> list[tuple[int, bool]]:
        """(cgroup id, inherit) pairs to write into the cgroup -> agent map."""
        out = [(c.id, c.inherit) for c in self.pod_cgroups]
        out += [(c.id, c.inherit) for c in self.container_cgroups]
        return out


def _primary_container(pod: PodInfo) -> str | None:
    """The container whose agent the pod cgroup (and so a new container's first instant)
    belongs to: kubectl's default-container annotation, else the first spec container."""
    want = pod.annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    names = pod.spec_containers or tuple(c.name for c in pod.containers if c.kind == "container")
    if want and want in names:
        return want
    return names[0] if names else None


def _container_cgroup(
    c: ContainerInfo, index: CgroupIndex, started_at: datetime
) -> ContainerCgroup | None:
    ref = index.containers.get(c.container_id) if c.container_id else None
    if ref is None:
        return None
    partial = c.running and c.started_at is not None and c.started_at < started_at
    return ContainerCgroup(
        ref.path, ref.id, c.name, c.container_id, c.runtime, c.kind, partial=partial
    )


def _get(out: dict[str, Workload], agent: str) -> Workload:
    if agent not in out:
        out[agent] = Workload(agent=agent, source="kubernetes")
    return out[agent]


def _newest_first(pods: Iterable[PodInfo]) -> list[PodInfo]:
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(pods, key=lambda p: (p.created or epoch, p.name), reverse=True)


def discover(
    pods: Sequence[PodInfo],
    cgroup_index: CgroupIndex,
    *,
    selector: PodSelector | None = None,
    started_at: datetime | float | None = None,
    sandboxes: Mapping[str, Sandbox] | None = None,
) -> list[Workload]:
    """Group this node's pods into agents (one per workload and container name).

    Annotations (mode, auto-promote, promotion) come from the newest pod that sets a valid
    value, so a rollout that changes them takes effect with its first new pod. started_at:
    the daemon's start; a container running since before it is `partial`. sandboxes: pod
    uid -> Sandbox (SandboxDetector.detect); an agent with a pod among them is not covered."""
    selector = selector or PodSelector()
    if started_at is None:
        started_at = datetime.now(UTC)
    elif isinstance(started_at, (int, float)):
        started_at = datetime.fromtimestamp(started_at, UTC)
    out: dict[str, Workload] = {}
    seen: set[str] = set()
    for pod in _newest_first(pods):
        key = normalize_uid(pod.cgroup_uid)
        if pod.phase in TERMINAL_PHASES or key in seen or not selector.matches(pod):
            continue
        seen.add(key)  # a static pod and its mirror are one pod
        _add_pod(out, pod, cgroup_index, started_at, (sandboxes or {}).get(pod.uid))
    return sorted(out.values(), key=lambda w: w.agent)


def _add_pod(
    out: dict[str, Workload],
    pod: PodInfo,
    index: CgroupIndex,
    started_at: datetime,
    sandbox: Sandbox | None,
) -> None:
    ref = PodRef(pod.namespace, pod.name, pod.uid, pod.cgroup_uid)
    mode, auto, gates = pod_mode(pod), pod_auto_promote(pod), pod_promotion(pod)
    names = list(dict.fromkeys([*pod.spec_containers, *(c.name for c in pod.containers)]))
    for name in names:
        w = _get(out, agent_name(pod, name))
        if ref not in w.pods:
            w.pods.append(ref)
        w.mode = w.mode if w.mode is not None else mode
        w.auto_promote = w.auto_promote if w.auto_promote is not None else auto
        w.promotion = w.promotion if w.promotion is not None else gates
        w.sandbox = w.sandbox or sandbox
    for c in pod.containers:
        cc = _container_cgroup(c, index, started_at)
        if cc is not None:
            w = _get(out, agent_name(pod, c.name))
            w.container_cgroups.append(cc)
            w.partial = w.partial or cc.partial
    primary, pod_cg = _primary_container(pod), index.pod(pod.cgroup_uid)
    if primary is not None and pod_cg is not None:
        _get(out, agent_name(pod, primary)).pod_cgroups.append(pod_cg)
