"""Published figures of comparable tools, with where they come from. `source` is None where the
figure, as the issue states it, could not be traced to a public source: the report says so."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    tool: str
    metric: str
    figure: str
    source: str | None
    note: str = ""


ANCHORS: tuple[Anchor, ...] = (
    Anchor(
        "ARMO (CADR / Kubescape runtime)",
        "CPU / memory overhead",
        "1-2.5 % CPU, 1 % memory",
        "https://www.armosec.io/blog/best-ebpf-security-solutions-runtime-protection/",
        "vendor claim; no method or workload published with it",
    ),
    Anchor(
        "KubeArmor (BPF-LSM enforcer)",
        "workload overhead",
        "1-8 % (AppArmor enforcer: 3-12 %)",
        "https://github.com/kubearmor/KubeArmor/issues/1639",
        "maintainer's answer; depends on policies and workload",
    ),
    Anchor(
        "Falco (modern eBPF probe)",
        "cost per traced syscall",
        "62-349 ns",
        None,
        "figure from the issue; not found in a public source we could read",
    ),
    Anchor(
        "Falco (modern eBPF probe)",
        "syscalls/s before drops",
        "150k-320k/s",
        None,
        "figure from the issue; not found in a public source. A Falco maintainer writes that "
        "rates below 60-70k/s should see no drops and ~1M/s is possible with acceptable drop "
        "rates: https://github.com/falcosecurity/libs/issues/1557",
    ),
    Anchor(
        "Kubescape node-agent",
        "memory at ~20 containers",
        "400-500 MB",
        "https://github.com/kubescape/node-agent/issues/98",
        "OOM-killed at a 700 MB limit with 30 containers, same report",
    ),
    Anchor(
        "Tetragon",
        "memory",
        "OOM-killed at 400 MB",
        None,
        "the 400 MB limit is from the issue; public reports of Tetragon OOM kills and unbounded "
        "growth: https://github.com/cilium/tetragon/issues/1485, "
        "https://github.com/cilium/tetragon/issues/2892",
    ),
)
