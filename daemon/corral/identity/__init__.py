"""Who is an agent: maps Kubernetes workloads (via the kubelet) or local cgroup globs to the
cgroup v2 directories whose ids key corral's BPF maps.

Kubernetes: `KubeletClient` fetches the node's PodList from the kubelet's authenticated port,
`scan_cgroups` walks cgroupfs once per poll into a `CgroupIndex` (pod uid -> pod cgroup,
container id -> container cgroup), and `discover` joins the two into one `Workload` per agent
(`namespace/kind/name/container`). `KubernetesSource` glues them together, with an optional
inotify `CgroupWatcher` so new pods and containers are seen before the next poll.

Local: `LocalSource` turns cgroups matched by globs (`system.slice/*.service`) into agents
named `local/<unit>`.

A cgroup's id is the inode of its directory (what bpf_get_current_cgroup_id() returns on
64-bit kernels). Pod and container cgroups are both meant to be registered with inherit, so a
container's first instruction (and any sub-cgroup a runtime creates, like CRI-O's
`container/`) is already covered by the deepest registered ancestor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import json
import os
import random
import re
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from corral.kernel.layout import DIMS, MODES

log = structlog.get_logger("corral.identity")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOKEN_FILE = f"{SA_DIR}/token"
DEFAULT_CA_FILE = f"{SA_DIR}/ca.crt"
DEFAULT_MAX_DEPTH = 8

MODE_ANNOTATION = "corral.io/mode"
AUTO_PROMOTE_ANNOTATION = "corral.io/auto-promote"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CONFIG_HASH_ANNOTATION = "kubernetes.io/config.hash"
CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
TEMPLATE_HASH_LABEL = "pod-template-hash"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

# CronJob controller v2 names its Jobs <cronjob>-<scheduled time in minutes since the epoch>
# (8 digits since 1990; v1 used a hash of the time, also all digits).
_CRONJOB_JOB = re.compile(r"^(?P<name>.+)-(?P<ts>\d{8,})$")


# ---------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupRef:
    """One cgroup v2 directory: absolute path and id (= inode). inherit: register it so that
    descendant cgroups resolve to the same agent."""

    path: str
    id: int
    inherit: bool = True


@dataclass(frozen=True)
class ContainerCgroup:
    path: str
    id: int
    name: str  # container name in the pod spec
    container_id: str  # runtime id without the runtime:// prefix
    runtime: str  # containerd | cri-o | docker | ...
    kind: str = "container"  # container | init | ephemeral
    partial: bool = False  # already running before corral started: baseline misses its start
    inherit: bool = True


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str  # metadata.uid as the kubelet reports it
    cgroup_uid: str  # uid in the cgroup path (the config hash for static pods)


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
    partial: bool = False  # any container was already running before corral started

    def registrations(self) -> list[tuple[int, bool]]:
        """(cgroup id, inherit) pairs to write into the cgroup -> agent map."""
        out = [(c.id, c.inherit) for c in self.pod_cgroups]
        out += [(c.id, c.inherit) for c in self.container_cgroups]
        return out


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    kind: str  # container | init | ephemeral
    container_id: str  # "" while the runtime has not created it
    runtime: str
    running: bool
    started_at: datetime | None


@dataclass(frozen=True)
class PodInfo:
    """The parts of a Pod object identity needs, parsed defensively."""

    namespace: str
    name: str
    uid: str
    cgroup_uid: str
    phase: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_kind: str | None
    owner_name: str | None
    spec_containers: tuple[str, ...]
    containers: tuple[ContainerInfo, ...]
    created: datetime | None

    @property
    def is_static(self) -> bool:
        return self.cgroup_uid != self.uid


# ---------------------------------------------------------------------------------------------
# Pod parsing
# ---------------------------------------------------------------------------------------------


class PodListError(ValueError):
    """The kubelet's answer is not a PodList."""


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _str_map(v: Any) -> dict[str, str]:
    return {str(k): str(x) for k, x in _dict(v).items() if x is not None}


def parse_time(v: Any) -> datetime | None:
    """RFC 3339 as Kubernetes writes it ("2024-05-01T10:00:00Z")."""
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_container_id(raw: str) -> tuple[str, str]:
    """ "containerd://abc" -> ("containerd", "abc"); "" -> ("", "")."""
    runtime, sep, cid = (raw or "").partition("://")
    if not sep:
        return "", runtime.strip()
    return runtime, cid.strip()


def _containers(status: dict[str, Any]) -> tuple[ContainerInfo, ...]:
    out: list[ContainerInfo] = []
    for key, kind in (
        ("initContainerStatuses", "init"),
        ("containerStatuses", "container"),
        ("ephemeralContainerStatuses", "ephemeral"),
    ):
        for cs in _list(status.get(key)):
            cs = _dict(cs)
            if not cs.get("name"):
                continue
            runtime, cid = parse_container_id(str(cs.get("containerID") or ""))
            running = _dict(_dict(cs.get("state")).get("running"))
            out.append(
                ContainerInfo(
                    name=str(cs["name"]),
                    kind=kind,
                    container_id=cid,
                    runtime=runtime,
                    running="running" in _dict(cs.get("state")),
                    started_at=parse_time(running.get("startedAt")),
                )
            )
    return tuple(out)


def pod_cgroup_uid(meta: Mapping[str, Any]) -> str:
    """The uid the kubelet puts in the pod's cgroup name.

    For API pods that is metadata.uid. A static pod's uid inside the kubelet is its config
    hash (kubelet/config/common.go), which the kubelet's /pods shows as metadata.uid; its
    *mirror* pod in the API server has a uid of its own and carries the hash in the
    kubernetes.io/config.mirror (and config.hash) annotation. Either way the hash wins.
    """
    ann = _str_map(meta.get("annotations"))
    uid = str(meta.get("uid") or "")
    if ann.get(MIRROR_ANNOTATION):
        return ann.get(CONFIG_HASH_ANNOTATION) or ann[MIRROR_ANNOTATION]
    if ann.get(CONFIG_HASH_ANNOTATION) and ann.get(CONFIG_SOURCE_ANNOTATION, "api") != "api":
        return ann[CONFIG_HASH_ANNOTATION]
    return uid


def _controller(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    refs = [_dict(r) for r in _list(meta.get("ownerReferences"))]
    refs = [r for r in refs if r.get("kind") and r.get("name")]
    if not refs:
        return None, None
    ref = next((r for r in refs if r.get("controller")), refs[0])
    return str(ref["kind"]), str(ref["name"])


def parse_pod(obj: Any) -> PodInfo | None:
    """One PodList item -> PodInfo; None (with a warning) when it lacks name/namespace/uid."""
    meta = _dict(_dict(obj).get("metadata"))
    spec = _dict(_dict(obj).get("spec"))
    status = _dict(_dict(obj).get("status"))
    ns, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    if not (ns and name and uid):
        log.warning("pod without namespace/name/uid skipped", namespace=ns, name=name)
        return None
    kind, owner = _controller(meta)
    return PodInfo(
        namespace=str(ns),
        name=str(name),
        uid=str(uid),
        cgroup_uid=pod_cgroup_uid(meta),
        phase=str(status.get("phase") or ""),
        labels=_str_map(meta.get("labels")),
        annotations=_str_map(meta.get("annotations")),
        owner_kind=kind,
        owner_name=owner,
        spec_containers=tuple(
            str(c["name"]) for c in map(_dict, _list(spec.get("containers"))) if c.get("name")
        ),
        containers=_containers(status),
        created=parse_time(meta.get("creationTimestamp")),
    )


def parse_pod_list(doc: Any) -> list[PodInfo]:
    """A kubelet /pods answer -> pods. Raises PodListError when doc is not a PodList."""
    if not isinstance(doc, dict) or doc.get("kind", "PodList") != "PodList" or "items" not in doc:
        got = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise PodListError(f"expected a PodList, got {got!r}")
    items = doc["items"]
    if items is None:  # what Go's encoding/json writes for an empty nil slice
        return []
    if not isinstance(items, list):
        raise PodListError(f"PodList items is a {type(items).__name__}, not a list")
    pods = [parse_pod(i) for i in items]
    return [p for p in pods if p is not None]


def resolve_workload(pod: PodInfo) -> tuple[str, str]:
    """(kind, name) of the workload that owns the pod.

    ReplicaSet named <x>-<pod-template-hash> -> Deployment x. Job named <x>-<8+ digits> ->
    CronJob x (the pod only references the Job; the CronJob controller names Jobs after the
    scheduled time in minutes, so this is a naming rule, not an ownership lookup: a plain Job
    named like that is taken for a CronJob's). Pods of Jobs also carry the job-name label,
    used when the owner reference is missing. Other controllers name themselves; a pod
    without one (or a static pod, owned by its Node) is its own workload.
    """
    kind, name = pod.owner_kind, pod.owner_name
    if kind is None or name is None:
        job = next((pod.labels[k] for k in JOB_NAME_LABELS if pod.labels.get(k)), None)
        if job is None:
            return "Pod", pod.name
        kind, name = "Job", job
    if kind == "ReplicaSet":
        h = pod.labels.get(TEMPLATE_HASH_LABEL)
        if h and name.endswith(f"-{h}"):
            return "Deployment", name[: -len(h) - 1]
        return "ReplicaSet", name
    if kind == "Job":
        m = _CRONJOB_JOB.fullmatch(name)
        return ("CronJob", m["name"]) if m else ("Job", name)
    if kind == "Node":  # static pods' mirror: owned by the Node object
        return "Pod", pod.name
    return kind, name


def agent_name(pod: PodInfo, container: str) -> str:
    kind, name = resolve_workload(pod)
    return f"{pod.namespace}/{kind}/{name}/{container}"


# ---------------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------------


def parse_mode(value: str) -> dict[str, str]:
    """ "enforce" -> every dimension; "exec=enforce,connect=alert" -> those dimensions.
    Raises ValueError naming the valid values."""
    value = value.strip()
    if "=" not in value and "," not in value:
        if value not in MODES:
            raise ValueError(f"mode {value!r} is not one of {', '.join(MODES)}")
        return dict.fromkeys(DIMS, value)
    out: dict[str, str] = {}
    for part in value.split(","):
        dim, sep, mode = (s.strip() for s in part.partition("="))
        if not sep or dim not in DIMS or mode not in MODES:
            raise ValueError(
                f"{part.strip()!r} is not <dimension>=<mode> with dimension one of "
                f"{', '.join(DIMS)} and mode one of {', '.join(MODES)}"
            )
        out[dim] = mode
    return out


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "false"):
        return v == "true"
    raise ValueError(f"{value!r} is not true or false")


def pod_mode(pod: PodInfo) -> dict[str, str] | None:
    raw = pod.annotations.get(MODE_ANNOTATION)
    if raw is None:
        return None
    try:
        return parse_mode(raw)
    except ValueError as e:
        log.warning(
            "invalid annotation ignored",
            pod=f"{pod.namespace}/{pod.name}",
            annotation=MODE_ANNOTATION,
            value=raw,
            error=str(e),
            valid=f"one of {'|'.join(MODES)}, or dim=mode[,dim=mode] with dim in {'|'.join(DIMS)}",
        )
        return None


def pod_auto_promote(pod: PodInfo) -> bool | None:
    raw = pod.annotations.get(AUTO_PROMOTE_ANNOTATION)
    if raw is None:
        return None
    try:
        return parse_bool(raw)
    except ValueError as e:
        log.warning(
            "invalid annotation ignored",
            pod=f"{pod.namespace}/{pod.name}",
            annotation=AUTO_PROMOTE_ANNOTATION,
            value=raw,
            error=str(e),
            valid="true|false",
        )
        return None


# ---------------------------------------------------------------------------------------------
# Selector
# ---------------------------------------------------------------------------------------------

_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
_LABEL_KEY = re.compile(rf"^(?:{_DNS_SUBDOMAIN}/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=" | "!=" | "exists" | "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value  # "!=" matches a missing key, as in k8s


def _split_term(term: str) -> tuple[str, str, str]:
    for sep, op in (("!=", "!="), ("==", "="), ("=", "=")):
        if sep in term:
            key, _, value = term.partition(sep)
            return key.strip(), op, value.strip()
    if term.startswith("!"):
        return term[1:].strip(), "!exists", ""
    return term, "exists", ""


def _requirement(term: str) -> Requirement:
    key, op, value = _split_term(term)
    if not _LABEL_KEY.fullmatch(key):
        raise ValueError(f"{term!r}: {key!r} is not a valid label key")
    if not _LABEL_VALUE.fullmatch(value) or any(c in value for c in "=!"):
        raise ValueError(f"{term!r}: {value!r} is not a valid label value")
    return Requirement(key, op, value)


def parse_label_selector(selector: str) -> tuple[Requirement, ...]:
    """Equality-based selector: "k=v,k2!=v2,k3,!k4" (also "k==v"). "" selects everything.
    Set-based terms (k in (a,b)) are rejected with a ValueError."""
    if "(" in selector or re.search(r"\s(not)?in\s", selector):
        raise ValueError(f"{selector!r}: set-based selectors (in, notin) are not supported")
    terms = [t.strip() for t in selector.split(",")] if selector.strip() else []
    if any(not t for t in terms):
        raise ValueError(f"{selector!r}: empty term")
    return tuple(_requirement(t) for t in terms)


def _names(v: Any) -> tuple[str, ...]:
    """A config list of names; a "a,b" string is accepted too."""
    if isinstance(v, str):
        v = v.split(",")
    return tuple(str(x).strip() for x in (v or ()) if str(x).strip())


@dataclass(frozen=True)
class PodSelector:
    """Which pods are agents. namespaces empty = all."""

    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ("kube-system",)
    label_selector: str = ""
    _requirements: tuple[Requirement, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_requirements", parse_label_selector(self.label_selector))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> PodSelector:
        cfg = cfg or {}
        return cls(
            namespaces=_names(cfg.get("namespaces")),
            exclude_namespaces=_names(cfg.get("exclude_namespaces", ("kube-system",))),
            label_selector=str(cfg.get("label_selector") or ""),
        )

    def matches(self, pod: PodInfo) -> bool:
        if self.namespaces and pod.namespace not in self.namespaces:
            return False
        if pod.namespace in self.exclude_namespaces:
            return False
        return all(r.matches(pod.labels) for r in self._requirements)


# ---------------------------------------------------------------------------------------------
# cgroupfs scan
# ---------------------------------------------------------------------------------------------

_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_UID_OR_HASH = rf"(?:{_UID}|[0-9a-fA-F]{{32}})"  # static pods: 32-hex config hash
# systemd driver: [<prefix>-]kubepods[-<qos>]-pod<uid_>.slice; cgroupfs driver: pod<uid>
_POD_DIR = re.compile(
    rf"^(?:(?:.*-)?pod(?P<uid>{_UID_OR_HASH})\.slice|pod(?P<uid2>{_UID_OR_HASH}))$"
)
_CONTAINER_DIR = re.compile(
    r"^(?:(?:cri-containerd|crio|docker)-(?P<id>[0-9a-f]{64})\.scope"
    r"|(?:crio-)?(?P<id2>[0-9a-f]{64}))$"
)
_QOS_DIRS = frozenset({"burstable", "besteffort"})


def normalize_uid(uid: str) -> str:
    return uid.replace("_", "-").lower()


@dataclass
class CgroupIndex:
    """One scan of cgroupfs: where each pod and container lives."""

    root: str
    pods: dict[str, CgroupRef] = field(default_factory=dict)  # normalized pod uid ->
    containers: dict[str, CgroupRef] = field(default_factory=dict)  # container id ->
    watch_dirs: set[str] = field(default_factory=set)  # kubepods/QoS dirs and pod dirs

    def pod(self, uid: str) -> CgroupRef | None:
        return self.pods.get(normalize_uid(uid))


def cgroup2_mount(mounts: str = "/proc/self/mounts") -> Path:
    """The cgroup v2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    with open(mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1].replace("\\040", " "))
    raise RuntimeError("no cgroup v2 hierarchy is mounted: corral needs cgroup v2")


def _ref(entry: os.DirEntry[str]) -> CgroupRef:
    return CgroupRef(entry.path, entry.stat(follow_symlinks=False).st_ino)


def _subdirs(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:  # removed while we walked, or not readable
        return []


def _index_pod(index: CgroupIndex, entry: os.DirEntry[str], uid: str) -> None:
    try:
        index.pods[normalize_uid(uid)] = _ref(entry)
        index.watch_dirs.add(entry.path)
        for child in _subdirs(entry.path):
            m = _CONTAINER_DIR.fullmatch(child.name)
            if m:
                index.containers[m["id"] or m["id2"]] = _ref(child)
    except FileNotFoundError:
        pass


def scan_cgroups(root: str | os.PathLike[str], max_depth: int = DEFAULT_MAX_DEPTH) -> CgroupIndex:
    """Walk cgroupfs under root once, breadth-first, down to max_depth levels for pod
    directories (container directories are the pod's children), without following symlinks
    or descending into pods. Finds kubepods under any prefix (kind, k3s, kubelet.slice).
    Blocking: run it in a thread from the event loop (KubernetesSource does)."""
    index = CgroupIndex(root=os.fspath(root))
    level: list[tuple[str, bool]] = [(index.root, False)]  # (dir, inside a kubepods dir)
    for _depth in range(max_depth):
        nxt: list[tuple[str, bool]] = []
        for path, kube in level:
            for e in _subdirs(path):
                m = _POD_DIR.fullmatch(e.name)
                if m:
                    index.watch_dirs.add(path)
                    _index_pod(index, e, m["uid"] or m["uid2"])
                    continue
                is_kube = "kubepods" in e.name or (kube and e.name in _QOS_DIRS)
                if is_kube:
                    index.watch_dirs.add(e.path)
                nxt.append((e.path, is_kube))
        level = nxt
    return index


# ---------------------------------------------------------------------------------------------
# discover: pods + index -> workloads
# ---------------------------------------------------------------------------------------------


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
) -> list[Workload]:
    """Group this node's pods into agents (one per workload and container name).

    Annotations (mode, auto-promote) come from the newest pod that sets a valid value, so a
    rollout that changes them takes effect with its first new pod. started_at: the daemon's
    start; a container running since before it is `partial`."""
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
        _add_pod(out, pod, cgroup_index, started_at)
    return sorted(out.values(), key=lambda w: w.agent)


def _add_pod(
    out: dict[str, Workload], pod: PodInfo, index: CgroupIndex, started_at: datetime
) -> None:
    ref = PodRef(pod.namespace, pod.name, pod.uid, pod.cgroup_uid)
    mode, auto = pod_mode(pod), pod_auto_promote(pod)
    names = list(dict.fromkeys([*pod.spec_containers, *(c.name for c in pod.containers)]))
    for name in names:
        w = _get(out, agent_name(pod, name))
        if ref not in w.pods:
            w.pods.append(ref)
        w.mode = w.mode if w.mode is not None else mode
        w.auto_promote = w.auto_promote if w.auto_promote is not None else auto
    for c in pod.containers:
        cc = _container_cgroup(c, index, started_at)
        if cc is not None:
            w = _get(out, agent_name(pod, c.name))
            w.container_cgroups.append(cc)
            w.partial = w.partial or cc.partial
    primary, pod_cg = _primary_container(pod), index.pod(pod.cgroup_uid)
    if primary is not None and pod_cg is not None:
        _get(out, agent_name(pod, primary)).pod_cgroups.append(pod_cg)


# ---------------------------------------------------------------------------------------------
# Kubelet client
# ---------------------------------------------------------------------------------------------


_PARSE_INLINE_MAX = 256 * 1024


def _decode_pod_list(body: str) -> list[PodInfo]:
    return parse_pod_list(json.loads(body))


class KubeletError(RuntimeError):
    """A failed /pods fetch, with a message that says what to check."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class KubeletHealth:
    last_success: float | None = None  # wall clock
    last_error: str | None = None
    last_error_at: float | None = None
    failing_since: float | None = None  # first failure of the current outage
    consecutive_failures: int = 0
    pods: int = 0  # pods in the last good list

    @property
    def ok(self) -> bool:
        return self.consecutive_failures == 0 and self.last_success is not None

    def describe(self) -> str:
        def ts(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

        if self.ok:
            return f"kubelet ok, {self.pods} pods"
        if self.last_success is None:
            return f"kubelet unreachable, no pod list yet: {self.last_error}"
        since = ts(self.failing_since or self.last_error_at or time.time())
        return (
            f"kubelet unreachable since {since} ({self.consecutive_failures} failures: "
            f"{self.last_error}), using last good state from {ts(self.last_success)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "consecutive_failures": self.consecutive_failures,
            "pods": self.pods,
            "summary": self.describe(),
        }


def default_kubelet_url() -> str:
    """https://<node>:10250/pods with the node from the downward API env (NODE_IP/HOST_IP or
    NODE_NAME), else 127.0.0.1 (a hostNetwork daemonset pod reaches its kubelet there)."""
    host = os.environ.get("NODE_IP") or os.environ.get("HOST_IP") or os.environ.get("NODE_NAME")
    host = host or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:10250/pods"


class KubeletClient:
    """GET /pods from the kubelet, keeping the last good PodList through outages.

    get_pods() retries transient failures (connection, timeout, 5xx) within a call with
    exponential backoff and full jitter; after a failed call, later calls wait out a growing
    backoff (up to max_backoff) before hitting the kubelet again and return the last good
    state meanwhile. 401/403 and malformed answers are not retried within a call."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token_file: str | None = DEFAULT_TOKEN_FILE,
        ca_file: str | None = DEFAULT_CA_FILE,
        insecure_skip_tls_verify: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 30.0,
        on_request: Callable[[float, str | None], None] | None = None,
    ) -> None:
        """on_request(seconds, error or None) is called after every GET /pods attempt."""
        self.url = url or default_kubelet_url()
        self.on_request = on_request
        self.token_file = token_file
        self.ca_file = ca_file
        self.insecure = insecure_skip_tls_verify
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=connect_timeout,
            connect=connect_timeout,
            sock_read=read_timeout,
        )
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.health = KubeletHealth()
        self.last_good: list[PodInfo] | None = None
        self._next_try = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeletClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise KubeletError(
                f"cannot load kubelet CA {self.ca_file}: {e} (set ca_file, or "
                "insecure_skip_tls_verify for a self-signed kubelet serving cert)",
                retryable=False,
            ) from e

    def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(ssl=self._ssl(), limit=2)
            self._session = aiohttp.ClientSession(connector=conn, timeout=self.timeout)
        return self._session

    def _headers(self) -> dict[str, str]:
        if not self.token_file:
            return {"Accept": "application/json"}
        try:  # re-read every time: projected service-account tokens rotate
            token = Path(self.token_file).read_text().strip()
        except OSError as e:
            log.warning("service-account token unreadable", file=self.token_file, error=str(e))
            return {"Accept": "application/json"}
        return {"Accept": "application/json", "Authorization": f"Bearer {token}"}

    def _auth_error(self, status: int, body: str) -> KubeletError:
        detail = body.strip()[:300]
        if status == 401:
            msg = (
                f"kubelet {self.url} answered 401 Unauthorized: check the service-account token "
                f"({self.token_file or 'none configured'}) is mounted and current, and that the "
                "kubelet accepts bearer tokens (authentication.webhook.enabled)"
            )
        else:
            msg = (
                f"kubelet {self.url} answered 403 Forbidden: the service account needs RBAC "
                "'get' on nodes/pods (kubelet fine-grained authz) or nodes/proxy"
            )
        return KubeletError(f"{msg}: {detail}" if detail else msg, retryable=False)

    async def fetch_pods(self) -> list[PodInfo]:
        """One attempt. Raises KubeletError."""
        try:
            session = self._session_get()
            async with session.get(self.url, headers=self._headers()) as resp:
                body = await resp.text(errors="replace")
                if resp.status in (401, 403):
                    raise self._auth_error(resp.status, body)
                if resp.status != 200:
                    raise KubeletError(
                        f"kubelet {self.url} answered {resp.status}: {body.strip()[:200]}",
                        retryable=resp.status >= 500 or resp.status == 429,
                    )
        except aiohttp.ClientConnectorCertificateError as e:
            raise KubeletError(
                f"kubelet {self.url} TLS verification failed against {self.ca_file}: {e}. "
                "Kubelet serving certs are often self-signed (no serverTLSBootstrap): give "
                "their CA, or set insecure_skip_tls_verify",
                retryable=False,
            ) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise KubeletError(f"kubelet {self.url} unreachable: {type(e).__name__}: {e}") from e
        try:
            if len(body) < _PARSE_INLINE_MAX:
                return _decode_pod_list(body)
            return await asyncio.to_thread(_decode_pod_list, body)  # MBs on a full node
        except (ValueError, PodListError) as e:
            raise KubeletError(
                f"kubelet {self.url} sent no valid PodList: {e}", retryable=False
            ) from e

    def _delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    async def _fetch_with_retries(self) -> list[PodInfo]:
        for attempt in range(self.retries + 1):
            start = time.monotonic()
            try:
                pods = await self.fetch_pods()
            except KubeletError as e:
                self._observed(start, str(e))
                if not e.retryable or attempt == self.retries:
                    raise
                log.debug("kubelet fetch failed, retrying", error=str(e), attempt=attempt + 1)
                await asyncio.sleep(self._delay(attempt))
            else:
                self._observed(start, None)
                return pods
        raise AssertionError("unreachable")

    def _observed(self, start: float, error: str | None) -> None:
        if self.on_request is not None:
            self.on_request(time.monotonic() - start, error)

    async def get_pods(self) -> list[PodInfo]:
        """The current pod list, or the last good one while the kubelet fails (see health).
        Raises KubeletError only when there has never been a good list."""
        if time.monotonic() >= self._next_try:
            try:
                pods = await self._fetch_with_retries()
            except KubeletError as e:
                self._failed(e)
            else:
                self._succeeded(pods)
                return pods
        if self.last_good is None:
            raise KubeletError(self.health.last_error or "kubelet not reached yet")
        return self.last_good

    def _succeeded(self, pods: list[PodInfo]) -> None:
        if self.health.consecutive_failures:
            log.info("kubelet reachable again", after_failures=self.health.consecutive_failures)
        self.last_good = pods
        self.health.last_success = time.time()
        self.health.consecutive_failures = 0
        self.health.failing_since = None
        self.health.pods = len(pods)
        self._next_try = 0.0

    def _failed(self, e: KubeletError) -> None:
        h = self.health
        now = time.time()
        h.consecutive_failures += 1
        h.failing_since = h.failing_since or now
        h.last_error, h.last_error_at = str(e), now
        self._next_try = time.monotonic() + self._delay(h.consecutive_failures)
        log.warning(
            "kubelet fetch failed",
            error=str(e),
            failures=h.consecutive_failures,
            using_last_good=self.last_good is not None,
        )


# ---------------------------------------------------------------------------------------------
# inotify
# ---------------------------------------------------------------------------------------------

IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_libc: ctypes.CDLL | None = None


def _inotify_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


class CgroupWatcher:
    """inotify on the kubepods/QoS directories and pod directories: `changed` is set when a
    directory appears or disappears under any of them (a new pod or a new container). A new
    pod directory is watched at once, so its containers trigger too. The daemon waits on
    `changed` alongside its poll interval and clears it before each poll."""

    MASK = IN_CREATE | IN_DELETE | IN_ONLYDIR

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self._fd = -1
        self._wds: dict[int, str] = {}
        self._paths: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Call from the running loop."""
        if self._fd >= 0:
            return
        fd = _inotify_libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._wds.clear()
        self._paths.clear()

    @property
    def watched(self) -> set[str]:
        return set(self._paths)

    def add(self, path: str) -> bool:
        if self._fd < 0 or path in self._paths:
            return path in self._paths
        wd = _inotify_libc().inotify_add_watch(self._fd, os.fsencode(path), self.MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR):
                log.warning("inotify_add_watch failed", path=path, error=os.strerror(err))
            return False
        self._wds[wd], self._paths[path] = path, wd
        return True

    def remove(self, path: str) -> None:
        wd = self._paths.pop(path, None)
        if wd is not None:
            self._wds.pop(wd, None)
            _inotify_libc().inotify_rm_watch(self._fd, wd)  # EINVAL if already gone: fine

    def update(self, paths: Iterable[str]) -> None:
        """Watch exactly these directories (e.g. CgroupIndex.watch_dirs after a scan). Runs in
        the loop: one inotify_add_watch per new directory, cheap even for hundreds of pods."""
        want = set(paths)
        for p in self.watched - want:
            self.remove(p)
        for p in sorted(want):
            self.add(p)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError as e:
            log.warning("inotify read failed", error=str(e))
            return
        changed = False
        off = 0
        while off + _EVENT.size <= len(data):
            wd, mask, _cookie, n = _EVENT.unpack_from(data, off)
            name = data[off + _EVENT.size : off + _EVENT.size + n].rstrip(b"\0")
            off += _EVENT.size + n
            changed |= self._event(wd, mask, os.fsdecode(name))
        if changed:
            self.changed.set()

    def _event(self, wd: int, mask: int, name: str) -> bool:
        if mask & IN_Q_OVERFLOW:  # events were lost: rescan
            return True
        parent = self._wds.get(wd)
        if mask & IN_IGNORED:
            if parent is not None:
                self._paths.pop(parent, None)
                self._wds.pop(wd, None)
            return False
        if parent is None or not mask & (IN_CREATE | IN_DELETE) or not mask & IN_ISDIR:
            return False
        if mask & IN_CREATE and _POD_DIR.fullmatch(name):
            self.add(os.path.join(parent, name))
        return True


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


class KubernetesSource:
    """poll(): kubelet pods + one cgroupfs scan (in a thread) -> workloads."""

    def __init__(
        self,
        client: KubeletClient,
        *,
        cgroup_root: str | os.PathLike[str] | None = None,
        selector: PodSelector | None = None,
        started_at: float | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        watch: bool = True,
    ) -> None:
        self.client = client
        self.cgroup_root = os.fspath(cgroup_root or cgroup2_mount())
        self.selector = selector or PodSelector()
        self.started_at = time.time() if started_at is None else started_at
        self.max_depth = max_depth
        self.watcher: CgroupWatcher | None = CgroupWatcher() if watch else None
        self.index: CgroupIndex | None = None

    @property
    def health(self) -> KubeletHealth:
        return self.client.health

    @property
    def changed(self) -> asyncio.Event | None:
        return self.watcher.changed if self.watcher else None

    async def poll(self) -> list[Workload]:
        """[] while the kubelet has never answered (health says why)."""
        if self.watcher is not None:
            self.watcher.changed.clear()
        index_task = asyncio.create_task(
            asyncio.to_thread(scan_cgroups, self.cgroup_root, self.max_depth)
        )
        try:
            pods = await self.client.get_pods()
        except KubeletError:
            pods = []
        except BaseException:
            index_task.cancel()
            raise
        self.index = await index_task
        self._rewatch(self.index)
        return discover(pods, self.index, selector=self.selector, started_at=self.started_at)

    def _rewatch(self, index: CgroupIndex) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher.start()
        except OSError as e:
            log.warning("inotify unavailable, polling only", error=str(e))
            self.watcher = None
            return
        self.watcher.update(index.watch_dirs)

    async def wait(self, interval: float = 2.0) -> None:
        """Sleep until the next poll is due: interval elapsed or a cgroup change seen."""
        if self.watcher is None:
            await asyncio.sleep(interval)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.watcher.changed.wait(), interval)

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        await self.client.close()


def local_agent_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for suffix in (".service", ".scope"):
        base = base.removesuffix(suffix)
    return f"local/{base}"


def match_local(root: str | os.PathLike[str], globs: Sequence[str]) -> list[Workload]:
    """Cgroup directories matching globs (relative to root, fnmatch per path component)."""
    root = os.fspath(root)
    out: dict[str, Workload] = {}
    for pattern in globs:
        for path in _glob_dirs(root, pattern.strip("/")):
            try:
                cg = CgroupRef(path, os.stat(path).st_ino, inherit=True)
            except FileNotFoundError:
                continue
            agent = local_agent_name(path)
            w = out.setdefault(agent, Workload(agent=agent, source="local"))
            if cg not in w.pod_cgroups:
                w.pod_cgroups.append(cg)
    return sorted(out.values(), key=lambda w: w.agent)


def _glob_dirs(root: str, pattern: str) -> list[str]:
    paths = [root]
    for part in (p for p in pattern.split("/") if p):
        nxt: list[str] = []
        for base in paths:
            if not any(c in part for c in "*?["):
                cand = os.path.join(base, part)
                if os.path.isdir(cand) and not os.path.islink(cand):
                    nxt.append(cand)
                continue
            nxt += sorted(e.path for e in _subdirs(base) if fnmatch.fnmatchcase(e.name, part))
        paths = nxt
    return paths


class LocalSource:
    """Agents from cgroup globs, for nodes without a kubelet. Same Workload type: the matched
    cgroup sits in pod_cgroups, registered with inherit so child cgroups are covered."""

    def __init__(
        self, globs: Sequence[str], *, cgroup_root: str | os.PathLike[str] | None = None
    ) -> None:
        self.globs = list(globs)
        self.cgroup_root = os.fspath(cgroup_root or cgroup2_mount())

    async def poll(self) -> list[Workload]:
        return await asyncio.to_thread(match_local, self.cgroup_root, self.globs)
