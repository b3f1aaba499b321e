"""Sandboxed runtimes (identity/sandbox.py, node/coverage.py): which pods run where host BPF
does not see, by runtimeClassName or by the runtime's process in the pod's cgroup; and in
corrald (no kernel) what an agent that is not covered may not do: enforce (API, annotation,
import) and auto-promotion. tests/daemon/test_sandbox_e2e.py runs it in a real corrald."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral import config
from corral.contract import Conflict
from corral.identity.cgroupfs import CgroupIndex, CgroupRef
from corral.identity.pods import PodInfo, parse_pod, parse_pod_list
from corral.identity.sandbox import Sandbox, SandboxDetector, by_runtime_class, runtime_of
from corral.identity.workloads import Workload, discover
from tests.daemon.test_identity import DAEMON_START, load
from tests.unit.test_promotion import FakeKernel

CFG = config.IdentityConfig()
WHY = "syscalls run in the gVisor sandbox, which host BPF does not see"


def _pod(runtime_class: str | None, uid: str = "u-1") -> PodInfo:
    spec: dict[str, Any] = {"containers": [{"name": "agent"}]}
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    pod = parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": spec,
            "status": {"phase": "Running"},
        }
    )
    assert pod is not None
    return pod


def _by_class(name: str | None) -> Sandbox | None:
    return by_runtime_class(_pod(name), CFG.gvisor_runtime_classes, CFG.kata_runtime_classes)


def test_runtime_class_from_the_kubelet_decides() -> None:
    pods = {p.name: p for p in parse_pod_list(load())}
    assert pods["scratch-agent"].runtime_class == "gvisor"
    assert pods["memory-store-0"].runtime_class == ""
    found = _by_class("gvisor")
    assert found == Sandbox("gvisor", "runtimeClassName", "gvisor", "ns/p")
    assert found.why == f"runtimeClassName gvisor: {WHY}"
    assert _by_class("kata-qemu") is not None and _by_class("kata-qemu").runtime == "kata"  # type: ignore[union-attr]
    assert _by_class("kata-mshv-vm-isolation").runtime == "kata"  # type: ignore[union-attr]  # AKS
    assert _by_class("runsc-debug").runtime == "gvisor"  # type: ignore[union-attr]
    for plain in (None, "", "runc", "crun", "nvidia", "gvisorish"):
        assert _by_class(plain) is None, plain


def test_runtime_processes_are_recognised() -> None:
    assert runtime_of("runsc-sandbox") == runtime_of("/usr/local/bin/runsc-gofer") == "gvisor"
    assert runtime_of("runsc") == "gvisor"  # `runsc create` itself, before the sandbox starts
    assert runtime_of("/usr/bin/containerd-shim-kata-v2") == "kata"
    assert runtime_of("/opt/kata/bin/qemu-system-x86_64") == "kata"
    assert runtime_of("/usr/bin/qemu-system-x86_64") is None  # e.g. KubeVirt's, not Kata's
    assert runtime_of("python3") is runtime_of("") is None


@pytest.fixture
def runsc(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A directory shaped like a pod cgroup: cgroup.procs in it and in a child, naming a
    process whose argv[0] is runsc-sandbox (read from the real /proc)."""
    proc = subprocess.Popen(["runsc-sandbox", "60"], executable="/bin/sleep")
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"runsc-sandbox"):
        time.sleep(0.01)  # until the child has exec'd
    (tmp_path / "ctr").mkdir()
    (tmp_path / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (tmp_path / "ctr" / "cgroup.procs").write_text(f"{proc.pid}\n")
    try:
        yield tmp_path, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_process_evidence_once_per_pod(runsc: tuple[Path, int]) -> None:
    cgroup, pid = runsc
    index = CgroupIndex(root="/x", pods={"u-1": CgroupRef(str(cgroup), 1)})
    detector = SandboxDetector(CFG.gvisor_runtime_classes, CFG.kata_runtime_classes)
    pod = _pod("confidential")  # a class the operator did not name: the process tells
    found = detector.detect([pod], index)["u-1"]
    assert (found.runtime, found.evidence, found.detail) == (
        "gvisor",
        "process",
        f"runsc-sandbox (pid {pid})",
    )
    assert found.why == f"process runsc-sandbox (pid {pid}) in the cgroup of pod ns/p: {WHY}"
    (cgroup / "ctr" / "cgroup.procs").write_text("")
    assert detector.detect([pod], index)["u-1"] == found  # decided: /proc is not read again
    assert detector.detect([], index) == {} and not detector._decided  # the pod went


def test_an_empty_pod_cgroup_is_looked_at_again(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("")
    index = CgroupIndex(root="/x", pods={"u-1": CgroupRef(str(tmp_path), 1)})
    detector = SandboxDetector()
    assert detector.detect([_pod(None)], index) == {} and "u-1" not in detector._decided
    (tmp_path / "cgroup.procs").write_text(f"{os.getpid()}\n")  # a plain process: runc
    assert detector.detect([_pod(None)], index) == {} and detector._decided == {"u-1": None}


def test_discover_marks_the_agents_of_a_sandboxed_pod() -> None:
    pods = parse_pod_list(load())
    detector = SandboxDetector(CFG.gvisor_runtime_classes, CFG.kata_runtime_classes)
    index = CgroupIndex(root="/nonexistent")
    ws = discover(pods, index, started_at=DAEMON_START, sandboxes=detector.detect(pods, index))
    uncovered = {w.agent: w.sandbox.detail for w in ws if w.sandbox is not None}
    assert uncovered == {
        "sandbox/Pod/scratch-agent/helper": "gvisor",
        "sandbox/Pod/scratch-agent/main": "gvisor",
    }


@pytest.fixture
def node(tmp_path: Path) -> Any:
    from corral.app import Node

    cfg = config.from_dict({"state_dir": str(tmp_path), "promotion": {"min_learning": "0s",
                            "quiet_period": "0s", "min_runs": 1}})  # fmt: skip
    n = Node(cfg)
    n.sync.kernel = FakeKernel()  # type: ignore[assignment]
    n.status.effective = lambda dim, mode: mode  # no probe here
    return n


GVISOR = Sandbox("gvisor", "runtimeClassName", "gvisor", "ns/p")


def test_corrald_refuses_enforce_for_an_agent_it_does_not_cover(node: Any) -> None:
    name = "ns/Pod/p/agent"
    modes = {"exec": "enforce", "open": "alert"}
    node.cgroups.reconcile([Workload(name, "kubernetes", sandbox=GVISOR, mode=modes)])
    agent = node.state.registry.get(name)
    assert agent.modes == {"exec": "observe", "open": "alert", "connect": "observe"}
    view = node.agents.get_agent(name)
    assert view["coverage"]["covered"] is False and view["coverage"]["why"] == GVISOR.why
    assert view["effective"]["open"] == "alert (not covered: gvisor sandbox)"
    with pytest.raises(Conflict, match="not covered: runtimeClassName gvisor"):
        asyncio.run(node.agents.set_mode(name, {"connect": "enforce"}))
    assert agent.modes["connect"] == "observe"

    agent.auto_promote = True
    node.maintenance.auto_promote()
    assert agent.modes["exec"] == "observe", "a quiet baseline says nothing here"

    # the pod comes back on runc: covered again, the annotation applies
    node.cgroups.reconcile([Workload(name, "kubernetes", mode={"exec": "enforce"})])
    assert node.agents.get_agent(name)["coverage"] == {"covered": True}
    assert agent.modes["exec"] == "enforce"


def test_an_import_with_enforce_is_refused_for_an_agent_not_covered(node: Any) -> None:
    from corral.policy import document

    name = "ns/Pod/p/agent"
    node.cgroups.reconcile([Workload(name, "kubernetes", sandbox=GVISOR)])
    asyncio.run(node.agents.set_mode(name, {"exec": "alert"}))  # not enforce: accepted
    text = document.dump_yaml(node.baselines.export_baseline(name))
    enforce = document.parse(text.replace("exec: alert", "exec: enforce").encode())
    with pytest.raises(Conflict, match="ENFORCE \\(exec\\) would deny nothing"):
        asyncio.run(node.baselines.import_baseline(name, enforce))
    assert node.state.registry.get(name).modes["exec"] == "alert"
    asyncio.run(node.baselines.import_baseline(name, enforce, keep_modes=True))  # lists only
