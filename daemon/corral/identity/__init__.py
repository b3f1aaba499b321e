"""Who is an agent: maps Kubernetes workloads (via the kubelet) or local cgroup globs to the
cgroup v2 directories whose ids key corral's BPF maps.

Kubernetes: `KubeletClient` (kubelet.py) fetches the node's PodList from the kubelet's
authenticated port, parsed into `PodInfo` (pods.py); `scan_cgroups` (cgroupfs.py) walks
cgroupfs once per poll into a `CgroupIndex` (pod uid -> pod cgroup, container id -> container
cgroup); and `discover` (workloads.py) joins the two, filtered by a `PodSelector`
(selector.py), into one `Workload` per agent (`namespace/kind/name/container`).
`KubernetesSource` (sources.py) glues them together, with an optional inotify `CgroupWatcher`
(watch.py) so new pods and containers are seen before the next poll.

Local: `LocalSource` (sources.py) turns cgroups matched by globs (`system.slice/*.service`)
into agents named `local/<unit>`.

A cgroup's id is the inode of its directory (what bpf_get_current_cgroup_id() returns on
64-bit kernels). Pod and container cgroups are both meant to be registered with inherit, so a
container's first instruction (and any sub-cgroup a runtime creates, like CRI-O's
`container/`) is already covered by the deepest registered ancestor.

This module re-exports the API the rest of corral uses as `identity.X`; everything else is
imported from its module.
"""

from __future__ import annotations

from .cgroupfs import CgroupRef, ContainerCgroup
from .kubelet import KubeletClient, KubeletError, KubeletHealth
from .selector import PodSelector
from .sources import KubernetesSource, LocalSource
from .workloads import Workload

__all__ = [
    "CgroupRef",
    "ContainerCgroup",
    "KubeletClient",
    "KubeletError",
    "KubeletHealth",
    "KubernetesSource",
    "LocalSource",
    "PodSelector",
    "Workload",
]
