"""Pods as the kubelet reports them: the PodList parser (`PodInfo`, `ContainerInfo`), the
workload that owns a pod and its agent name (`namespace/kind/name/container`), and the
corral.io annotations on a pod (mode, auto-promote, promotion).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from corral.config import GATE_HINT, parse_gates
from corral.kernel.layout import DIMS, MODES

log = structlog.get_logger("corral.identity")

MODE_ANNOTATION = "corral.io/mode"
AUTO_PROMOTE_ANNOTATION = "corral.io/auto-promote"
PROMOTION_ANNOTATION = "corral.io/promotion"
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
class PodRef:
    namespace: str
    name: str
    uid: str  # metadata.uid as the kubelet reports it
    cgroup_uid: str  # uid in the cgroup path (the config hash for static pods)


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
    runtime_class: str = ""  # spec.runtimeClassName ("": the node's default runtime)

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
        runtime_class=str(spec.get("runtimeClassName") or ""),
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


# pod uid -> the corral.io/promotion value last warned about: one warning per pod and value,
# not one per poll (the kubelet is polled every 2 s)
_warned_promotion: dict[str, str] = {}
_WARNED_MAX = 4096


def pod_promotion(pod: PodInfo) -> dict[str, float | int] | None:
    """The agent's own promotion gates from corral.io/promotion ("min-runs=5,quiet=30m"):
    each valid entry counts; invalid ones are ignored with one warning naming them (once per
    pod and value). None when the pod has no such annotation or no valid entry in it."""
    raw = pod.annotations.get(PROMOTION_ANNOTATION)
    if raw is None:
        return None
    gates, problems = parse_gates(raw)
    if (problems or not gates) and _warned_promotion.get(pod.uid) != raw:
        if len(_warned_promotion) >= _WARNED_MAX:
            _warned_promotion.clear()
        _warned_promotion[pod.uid] = raw
        log.warning(
            "invalid annotation ignored" if not gates else "invalid annotation entries ignored",
            pod=f"{pod.namespace}/{pod.name}",
            annotation=PROMOTION_ANNOTATION,
            value=raw,
            error="; ".join(problems) or "no gate in it",
            kept=sorted(gates),
            valid=f"gate=value[,gate=value]: {GATE_HINT}, e.g. min-runs=5,min-learning=2h,"
            "quiet=30m,alert=12h",
        )
    return gates or None
