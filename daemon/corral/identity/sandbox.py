"""Pods whose syscalls host BPF cannot see: gVisor (runsc) runs them in its own user-space
kernel, Kata in a VM's kernel. corral's programs on the host see only the runtime's own
host processes there, never the agent's execs, opens and connects, so such an agent is
reported "not covered" instead of showing an empty baseline that looks like a quiet agent.

Evidence, first match wins: the pod's `spec.runtimeClassName` against the operator's globs
(identity.gvisor_runtime_classes, identity.kata_runtime_classes: RuntimeClass names are the
cluster's own), else the runtime's processes in the pod's cgroup (`runsc-sandbox`,
`runsc-gofer`, `containerd-shim-kata-v2`, a hypervisor started from a Kata directory). The
process look-up reads /proc, so it runs in a thread, once per pod: a pod's runtime does not
change while it lives.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog

from .cgroupfs import CgroupIndex, normalize_uid
from .pods import TERMINAL_PHASES, PodInfo

log = structlog.get_logger("corral.identity")

GVISOR, KATA = "gvisor", "kata"
WHERE = {
    GVISOR: "syscalls run in the gVisor sandbox, which host BPF does not see",
    KATA: "syscalls run in the Kata VM's own kernel, which host BPF does not see",
}
# argv[0] (its last component) of the runtime's host processes that sit in the pod's cgroup
GVISOR_PROCESSES = frozenset({"runsc", "runsc-sandbox", "runsc-gofer", "containerd-shim-runsc-v1"})
KATA_PROCESSES = frozenset({"containerd-shim-kata-v2"})
KATA_HYPERVISORS = ("qemu-system-", "qemu-kvm", "cloud-hypervisor", "firecracker")
MAX_PIDS = 256  # processes looked at per pod (the runtime's are among the first)


@dataclass(frozen=True)
class Sandbox:
    """Why a pod's syscalls are out of host BPF's sight."""

    runtime: str  # gvisor | kata
    evidence: str  # runtimeClassName | process
    detail: str  # the runtime class, or "runsc-sandbox (pid 4242)"
    pod: str  # namespace/name

    @property
    def why(self) -> str:
        if self.evidence == "runtimeClassName":
            return f"runtimeClassName {self.detail}: {WHERE[self.runtime]}"
        return f"process {self.detail} in the cgroup of pod {self.pod}: {WHERE[self.runtime]}"

    def to_dict(self) -> dict[str, str]:
        return {
            "runtime": self.runtime,
            "evidence": self.evidence,
            "detail": self.detail,
            "pod": self.pod,
            "why": self.why,
        }


def by_runtime_class(pod: PodInfo, gvisor: Sequence[str], kata: Sequence[str]) -> Sandbox | None:
    """The pod's runtimeClassName matched against each runtime's globs."""
    name = pod.runtime_class
    if not name:
        return None
    for runtime, globs in ((GVISOR, gvisor), (KATA, kata)):
        if any(fnmatch.fnmatchcase(name, g) for g in globs):
            return Sandbox(runtime, "runtimeClassName", name, f"{pod.namespace}/{pod.name}")
    return None


def runtime_of(argv0: str) -> str | None:
    """gvisor or kata when argv0 is one of that runtime's host processes."""
    base = os.path.basename(argv0)
    if base in GVISOR_PROCESSES:
        return GVISOR
    if base in KATA_PROCESSES:
        return KATA
    if base.startswith(KATA_HYPERVISORS) and "kata" in argv0:
        return KATA
    return None


def _pids(cgroup: str) -> Iterable[int]:
    """The processes in cgroup and below it (cgroup.procs), at most MAX_PIDS."""
    n = 0
    for dirpath, _dirs, _files in os.walk(cgroup):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.split():
            if n >= MAX_PIDS:
                return
            n += 1
            yield int(line)


def _argv0(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return ""
    return os.fsdecode(raw.split(b"\0", 1)[0])


def by_processes(pod: PodInfo, cgroup: str) -> tuple[Sandbox | None, bool]:
    """(the runtime's process found in the pod's cgroup, whether any process was there)."""
    seen = False
    for pid in _pids(cgroup):
        seen = True
        argv0 = _argv0(pid)
        runtime = runtime_of(argv0)
        if runtime is not None:
            detail = f"{os.path.basename(argv0)} (pid {pid})"
            return Sandbox(runtime, "process", detail, f"{pod.namespace}/{pod.name}"), True
    return None, seen


class SandboxDetector:
    """detect(): pod uid -> Sandbox for this node's sandboxed pods. Blocking (reads /proc for
    the pods not decided yet): run it in a thread."""

    def __init__(self, gvisor: Sequence[str] = (), kata: Sequence[str] = ()) -> None:
        self.gvisor = tuple(gvisor)
        self.kata = tuple(kata)
        self._decided: dict[str, Sandbox | None] = {}  # pod uid -> seen with processes

    def detect(self, pods: Sequence[PodInfo], index: CgroupIndex) -> dict[str, Sandbox]:
        out: dict[str, Sandbox] = {}
        live = {p.uid for p in pods}
        for uid in list(self._decided):
            if uid not in live:
                del self._decided[uid]
        for pod in pods:
            if pod.phase in TERMINAL_PHASES:
                continue
            found = by_runtime_class(pod, self.gvisor, self.kata) or self._by_processes(pod, index)
            if found is not None:
                out[pod.uid] = found
        return out

    def _by_processes(self, pod: PodInfo, index: CgroupIndex) -> Sandbox | None:
        if pod.uid in self._decided:
            return self._decided[pod.uid]
        ref = index.pods.get(normalize_uid(pod.cgroup_uid))
        if ref is None:
            return None
        found, seen = by_processes(pod, ref.path)
        if seen:  # no process yet: look again at the next poll
            self._decided[pod.uid] = found
            if found is not None:
                log.info("sandboxed pod: not covered", pod=found.pod, why=found.why)
        return found
