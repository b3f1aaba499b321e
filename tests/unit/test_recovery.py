"""State that never fails open (issue 16), without a kernel: the registry's list-id allocator
never hands out a list id the kernel uses, a lost registry file is said to be lost, and corrald
gives an agent back its kernel id, modes, lists and tamper kinds when its cgroup comes back —
never a new agent in observe. The same story on a real kernel: tests/daemon/test_e2e.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from corral import config
from corral.identity import CgroupRef, Workload
from corral.kernel.layout import DIMS, C
from corral.kernel.loader import AgentConfig
from corral.policy.agents import RECOVERY, Registry

SHIFT = C.CORRAL_CALLER_SHIFT


def test_list_ids_are_recomputed_above_every_list_the_kernel_uses(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.next_list == 1
    # caller lists (list | index << 20) count by their base; 0 (an unused entry) counts not
    reg.keep_lists_above([5, 7 | 3 << SHIFT, 0, 2])
    assert reg.next_list == 8 and reg.dirty
    assert reg.new_list_id() == 8
    reg.keep_lists_above([3, 6 | 1 << SHIFT])  # below: nothing changes
    assert reg.next_list == 9
    reg.keep_lists_above([])
    assert reg.next_list == 9
    reg.keep_lists_above([(1 << SHIFT) - 1])  # the largest base there is
    assert reg.next_list == 1 << SHIFT


def test_a_new_agent_never_takes_an_id_the_kernel_holds_for_another(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.reserved = {1, 2}
    a = reg.create("new", mode="observe", auto_promote=False, source="run")
    assert a.id == 3


def test_a_recovered_agent_keeps_the_kernels_id_modes_lists_and_tamper_kinds(
    tmp_path: Path,
) -> None:
    reg = Registry(tmp_path)
    reg.reserved = {4}
    lists = {"exec": 10, "open": 11, "connect": 12}
    a = reg.recover(
        "demo",
        4,
        modes={"exec": "enforce", "open": "alert", "connect": "off"},
        lists=lists,
        tamper_allow=frozenset({"mount"}),
        auto_promote=False,
        source="run",
    )
    assert (a.id, a.lists, a.tamper_allow) == (4, lists, {"mount"})
    assert a.modes == {"exec": "enforce", "open": "alert", "connect": "off"}
    assert {h["by"] for h in a.history} == {RECOVERY}
    assert reg.reserved == set() and reg.next_list == 13
    with pytest.raises(ValueError, match="known already"):
        reg.recover("other", 4, modes=a.modes, lists=lists, tamper_allow=(), auto_promote=False,
                    source="run")  # fmt: skip
    reg.save()
    again = Registry(tmp_path)
    again.load()
    assert again.agents["demo"].to_json() == a.to_json() and again.lost == ""


def test_an_unreadable_registry_is_moved_aside_and_said_to_be_lost(tmp_path: Path) -> None:
    cap = structlog.testing.LogCapture()
    from corral.policy import agents as policy_agents

    old_log = policy_agents.log
    policy_agents.log = structlog.wrap_logger(None, processors=[cap])
    try:
        reg = Registry(tmp_path)
        reg.path.write_text("{garbage")
        reg.load()
    finally:
        policy_agents.log = old_log
    assert reg.lost and reg.agents == {}
    assert list(tmp_path.glob("agents.corrupt-*"))
    (line,) = cap.entries
    assert "moved aside" in line["event"] and "never demoted" in line["event"]
    assert "rediscovered" not in line["event"]


# ---- in corrald, with a fake adopted kernel ---------------------------------------------------


class AdoptedKernel:
    """agent_cfg and cgroup_agents as dicts, as a previous corrald left them."""

    adopted = True

    def __init__(self) -> None:
        from corral.kernel.loader import Backends

        self.backends = Backends.choose(False)
        self.cfg: dict[int, AgentConfig] = {}
        self.cgroups: dict[int, tuple[int, bool]] = {}
        self.cleared: list[int] = []

    def set_agent(self, agent: int, cfg: AgentConfig) -> None:
        self.cfg[agent] = replace(cfg, modes=dict(cfg.modes), lists=dict(cfg.lists))

    def get_agent(self, agent: int) -> AgentConfig:
        got = self.cfg.get(agent)
        if got is None:  # an array map: a zeroed entry
            return AgentConfig(modes=dict.fromkeys(DIMS, "off"), active=False)
        return replace(got, modes=dict(got.modes), lists=dict(got.lists))

    def clear_agent(self, agent: int) -> None:
        self.cleared.append(agent)
        self.cfg.pop(agent, None)

    def register_cgroup(self, cgid: int, agent: int, *, inherit: bool = False) -> None:
        self.cgroups[cgid] = (agent, inherit)

    def registered_cgroups(self) -> dict[int, tuple[int, bool]]:
        return dict(self.cgroups)

    def counters(self, agent_id: int) -> dict[str, dict[str, int]]:
        return {d: {"denied": 0, "dropped": 0} for d in DIMS}

    def damage(self) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: 0


ENFORCE = dict.fromkeys(DIMS, "enforce")


@pytest.fixture
def node(tmp_path: Path) -> Any:
    """A corrald whose registry file was garbage, on a kernel that enforces two agents: id 3
    (on cgroup 1003) and id 7 (on cgroup 1007, alert, tamper kind mount allowed)."""
    from corral.app import Node

    (tmp_path / "agents.json").write_text("not json")
    n = Node(config.from_dict({"state_dir": str(tmp_path)}))
    k = AdoptedKernel()
    k.cfg[3] = AgentConfig(modes=dict(ENFORCE), lists={"exec": 4, "open": 5, "connect": 6})
    k.cfg[7] = AgentConfig(
        modes=dict.fromkeys(DIMS, "alert"),
        lists={"exec": 20 | 2 << SHIFT, "open": 21, "connect": 22},
        tamper_allow=frozenset({"mount"}),
    )
    k.cgroups = {1003: (3, True), 1007: (7, True)}
    n.sync.kernel = k  # type: ignore[assignment]
    n.status.effective = lambda dim, mode: mode  # no probe here
    n.state.load_registry()
    n.recovery.scan()
    return n


def _workload(name: str, *cgids: int) -> Workload:
    return Workload(name, "local", pod_cgroups=[CgroupRef(f"/cg/{i}", i) for i in cgids])


def test_a_workload_whose_cgroup_the_kernel_registers_gets_its_agent_back(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = structlog.testing.LogCapture()
    monkeypatch.setattr("corral.node.sync.log", structlog.wrap_logger(None, processors=[cap]))
    k, reg = node.sync.kernel, node.state.registry
    assert reg.lost and reg.reserved == {3, 7} and reg.next_list == 23
    assert [row["id"] for row in node.recovery.view()] == [3, 7]

    node.cgroups.reconcile([_workload("demo", 999, 1003), _workload("fresh", 2000)])
    demo, fresh = reg.get("demo"), reg.get("fresh")
    assert (demo.id, demo.modes, demo.lists) == (3, ENFORCE, k.cfg[3].lists)
    assert k.cfg[3].modes == ENFORCE  # the kernel: as it was
    assert fresh.id not in (3, 7) and fresh.modes == dict.fromkeys(DIMS, "observe")
    assert min(fresh.lists.values()) >= 23  # no list id of the kernel's handed out
    assert node.state.by_id[3] is demo  # its events are decoded again
    (line,) = [e for e in cap.entries if e["event"].startswith("agent recovered")]
    assert line["event"] == "agent recovered from the kernel after the registry was lost"
    assert (line["agent"], line["id"], line["modes"]) == ("demo", 3, ENFORCE)

    # an annotation does not demote it (its modes are the kernel's, not a default)
    node.cgroups.reconcile([
        replace(_workload("demo", 1003), mode={"exec": "observe"}), _workload("fresh", 2000)
    ])  # fmt: skip
    assert demo.modes == ENFORCE and k.cfg[3].modes == ENFORCE

    (left,) = node.recovery.view()
    assert left == {"id": 7, "modes": dict.fromkeys(DIMS, "alert"), "tamper_allow": ["mount"],
                    "cgroups": 1}  # fmt: skip
    assert k.cleared == [] and 7 in k.cfg  # never cleared by corrald: it does not know it
    assert node.verifier.check() == 0 and k.cfg[7].modes == dict.fromkeys(DIMS, "alert")

    node.cgroups.reconcile([_workload("other", 1007)])  # a caller-list base is recovered too
    other = reg.get("other")
    assert (
        other.id == 7 and other.tamper_allow == {"mount"} and other.lists["exec"] == 20 | 2 << SHIFT
    )
    assert node.recovery.view() == []
    reg.save()
    assert json.loads(reg.path.read_text())["next_list"] == reg.next_list > 23


def test_an_unclaimed_kernel_agent_is_reported_once_with_what_to_do(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = structlog.testing.LogCapture()
    monkeypatch.setattr("corral.node.recovery.log", structlog.wrap_logger(None, processors=[cap]))
    node.recovery.report()
    assert [e["id"] for e in cap.entries] == [3, 7]
    assert all("corrald cleanup" in e["what_to_do"] for e in cap.entries)
    assert all(
        e["event"].startswith("agent in the kernel that no workload claims") for e in cap.entries
    )


def test_a_fresh_kernel_has_nothing_to_recover(tmp_path: Path) -> None:
    from corral.app import Node

    n = Node(config.from_dict({"state_dir": str(tmp_path)}))
    k = AdoptedKernel()
    k.adopted = False  # type: ignore[misc]
    n.sync.kernel = k  # type: ignore[assignment]
    n.state.load_registry()
    n.recovery.scan()
    assert n.recovery.unclaimed == {} and n.state.registry.reserved == set()
