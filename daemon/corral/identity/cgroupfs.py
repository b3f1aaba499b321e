"""cgroup v2 on disk: the mount point, and `scan_cgroups`, one walk of cgroupfs into a
`CgroupIndex` (pod uid -> pod cgroup, container id -> container cgroup) for both kubelet
cgroup drivers (systemd and cgroupfs) and the containerd, CRI-O and docker runtimes.

A cgroup's id is the inode of its directory (what bpf_get_current_cgroup_id() returns on
64-bit kernels).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_DEPTH = 8


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


_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_UID_OR_HASH = rf"(?:{_UID}|[0-9a-fA-F]{{32}})"  # static pods: 32-hex config hash
# systemd driver: [<prefix>-]kubepods[-<qos>]-pod<uid_>.slice; cgroupfs driver: pod<uid>
POD_DIR = re.compile(
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


def subdirs(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:  # removed while we walked, or not readable
        return []


def _index_pod(index: CgroupIndex, entry: os.DirEntry[str], uid: str) -> None:
    try:
        index.pods[normalize_uid(uid)] = _ref(entry)
        index.watch_dirs.add(entry.path)
        for child in subdirs(entry.path):
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
            for e in subdirs(path):
                m = POD_DIR.fullmatch(e.name)
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
