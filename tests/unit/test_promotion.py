"""Auto-promotion gates (policy/promotion.py): a dimension moves only on complete evidence,
and `readiness` says what it still waits for. Per-agent gates: the annotation's and the API's
syntax, which source wins, the registry; in corrald (no kernel) the annotation and the
operator, and the event a burst of denials after an auto-promotion puts into the stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from corral import config
from corral.config import (
    PromotionConfig,
    format_duration,
    gate_from_json,
    gate_from_text,
    parse_gates,
)
from corral.identity import pods as identity_pods
from corral.identity.cgroupfs import CgroupIndex
from corral.identity.workloads import Workload, discover
from corral.policy.agents import Agent, Registry
from corral.policy.baseline import Baseline
from corral.policy.promotion import Gates, effective, gates_view, readiness, set_gates

T0 = 1_700_000_000.0
H = 3600.0
GATES = Gates(min_learning=24 * H, quiet_period=H, alert_period=24 * H, min_runs=3)


def agent(mode: str = "observe") -> Agent:
    a = Agent(name="a", id=1, modes=dict.fromkeys(("exec", "open", "connect"), mode), lists={})
    a.mode_since = dict.fromkeys(a.modes, T0)
    return a


def baseline(runs: int = 3) -> Baseline:
    b = Baseline("a", learning_since=T0)
    for cgid in range(runs):
        b.note_run(100 + cgid)
    return b


def test_observe_moves_on_complete_evidence_only() -> None:
    r = readiness(agent(), "exec", baseline(), GATES, T0 + 25 * H)
    assert r.ready and r.next == "alert" and "over 3 runs" in r.reason


def test_each_gate_holds_and_says_so() -> None:
    early = readiness(agent(), "exec", baseline(), GATES, T0 + 2 * H)
    assert not early.ready and early.waiting[0].startswith("learning for 2.0h of 24.0h")
    few = readiness(agent(), "exec", baseline(runs=1), GATES, T0 + 25 * H)
    assert not few.ready and few.waiting == ("1 of 3 runs (cgroups) seen while learning",)
    b = baseline()
    b.last_novel = T0 + 24.5 * H
    busy = readiness(agent(), "exec", b, GATES, T0 + 25 * H)
    assert not busy.ready and "needs 1.0h quiet" in busy.reason
    b = baseline()
    b.mark_partial("4 events dropped in the kernel")
    partial = readiness(agent(), "exec", b, GATES, T0 + 25 * H)
    assert not partial.ready and "partial: 4 events dropped" in partial.reason


def test_a_run_met_again_is_not_counted_twice() -> None:
    b = baseline(runs=0)
    assert b.note_run(7) and not b.note_run(7) and b.note_run(8)
    assert b.runs_seen == 2


def test_runs_survive_the_baseline_file() -> None:
    from corral.policy.blob import decode_payload, encode_payload

    b = baseline(runs=2)
    back = decode_payload(encode_payload(b))
    assert (back.runs_seen, back.recent_runs) == (2, [100, 101])
    rested = decode_payload(encode_payload(b), rest=True)
    assert rested.runs_seen == 2


def test_alert_moves_after_the_period_without_deviations() -> None:
    a = agent("alert")
    assert readiness(a, "open", baseline(), GATES, T0 + 25 * H).ready
    a.record_deviation("open", "/etc/shadow", "would-deny", T0 + H, "cat")
    r = readiness(a, "open", baseline(), GATES, T0 + 25 * H)
    assert not r.ready and "1 deviation(s) waiting for review: corralctl diff a" in r.reason
    assert readiness(a, "exec", baseline(), GATES, T0 + 25 * H).ready  # per dimension


def test_a_step_back_sticks_until_the_denials_are_reviewed() -> None:
    """Auto-promoted to enforce, denials, `corralctl mode a --connect alert`: the denials came
    before this alert period began, yet they hold it (they used to be ignored, and the
    dimension went back to enforce after alert_period)."""
    a = agent("enforce")
    a.record_deviation("connect", "10.0.0.7:443", "denied", T0 + H, "python3")
    a.set_mode("connect", "alert", reason="step back", by="api", now=T0 + 2 * H)
    r = readiness(a, "connect", baseline(), GATES, T0 + 48 * H)
    assert not r.ready and r.waiting == (
        "1 deviation(s) waiting for review: corralctl diff a, accept what is legitimate "
        "(while any waits, only corralctl mode sets connect to enforce)",
    )
    a.deviations.clear()  # accepted (or the baseline reset)
    assert readiness(a, "connect", baseline(), GATES, T0 + 48 * H).ready


def test_enforce_and_off_go_nowhere() -> None:
    for mode in ("enforce", "off"):
        r = readiness(agent(mode), "exec", baseline(), GATES, T0 + 100 * H)
        assert r.next is None and not r.ready


# ---- per-agent gates: the annotation, the operator, precedence --------------------------------


def test_the_annotation_syntax() -> None:
    gates, problems = parse_gates(" min-runs=5, min-learning=2h,quiet=30m , alert=12h,")
    assert problems == []
    assert gates == {"min_runs": 5, "min_learning": 7200.0, "quiet_period": 1800.0,
                     "alert_period": 43200.0}  # fmt: skip
    long_form, _ = parse_gates("quiet-period=90s,alert_period=1d,burst-denials=3,burst-window=7d")
    assert long_form == {"quiet_period": 90.0, "alert_period": 86400.0, "burst_denials": 3,
                         "burst_window": 7 * 86400.0}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("min-runs=0", "not a whole number from 1 to 100000"),
        ("min-runs=2.5", "not a whole number"),
        ("min-runs=-1", "not a whole number"),
        ("quiet=30", "not a duration from 0s to 365d"),  # a unit is required
        ("quiet=30ms", "not a duration"),
        ("quiet=1 h", "not a duration"),
        ("quiet=366d", "not a duration from 0s to 365d"),
        ("quiet=٣h", "not a duration"),  # ASCII digits only (so does the API's schema)
        ("quiet=-5m", "not a duration"),
        ("quiet", "is not key=value"),
        ("min_run=5", "unknown promotion gate 'min_run': expected one of min-learning"),
    ],
)
def test_invalid_annotation_entries_say_what_is_valid(text: str, problem: str) -> None:
    gates, problems = parse_gates(f"{text},min-runs=4")
    assert gates == {"min_runs": 4} or text.startswith("min-runs")
    assert len(problems) == 1 and problem in problems[0] and repr(text) in problems[0]


def test_json_values() -> None:
    assert gate_from_json("quiet_period", 90) == 90.0
    assert gate_from_json("quiet_period", "1.5h") == 5400.0
    assert gate_from_json("min_runs", 5) == 5
    for name, bad in [
        ("min_runs", 5.0),  # a count is a whole number, not a float
        ("min_runs", "5"),  # nor text in JSON
        ("min_runs", True),
        ("quiet_period", True),
        ("quiet_period", -1),
        ("quiet_period", float("nan")),
        ("quiet_period", 366 * 86400),
        ("quiet_period", None),
        ("quiet_period", [1]),
    ]:
        with pytest.raises(ValueError, match="is not"):
            gate_from_json(name, bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(7200, "2h"), (1800, "30m"), (90, "90s"), (0, "0s"), (86400, "24h"), (7 * 86400, "7d"),
     (5400, "90m"), (0.5, "0.5s"), (1234.25, "1234.25s")],
)  # fmt: skip
def test_durations_are_written_as_they_are_read(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert gate_from_text("quiet_period", text) == seconds


def _agent_with(**gates: dict[str, Any]) -> Agent:
    a = agent()
    a.gates = {src: dict(g) for src, g in gates.items()}
    return a


def test_operator_wins_over_annotation_wins_over_config_over_default() -> None:
    p = PromotionConfig(quiet_period=600.0)  # the config sets quiet_period
    a = _agent_with(annotation={"min_runs": 5, "min_learning": 7200.0}, operator={"min_runs": 2})
    gates, sources = effective(p, a)
    assert (gates.min_runs, sources["min_runs"]) == (2, "operator")
    assert (gates.min_learning, sources["min_learning"]) == (7200.0, "annotation")
    assert (gates.quiet_period, sources["quiet_period"]) == (600.0, "config")
    assert (gates.alert_period, sources["alert_period"]) == (24 * H, "default")
    view = gates_view(p, a)
    assert view["min_learning"] == {"value": 7200.0, "text": "2h", "source": "annotation"}
    assert view["quiet_period"]["text"] == "10m" and view["min_runs"]["text"] == "2"


def test_a_per_agent_gate_changes_readiness() -> None:
    b = baseline(runs=2)
    p = PromotionConfig(min_learning=H, quiet_period=0.0, min_runs=3)
    a = agent()
    assert not readiness(a, "exec", b, effective(p, a)[0], T0 + 2 * H).ready  # 2 of 3 runs
    set_gates(a, "annotation", {"min_runs": 2})
    assert readiness(a, "exec", b, effective(p, a)[0], T0 + 2 * H).ready
    set_gates(a, "operator", {"min_runs": 4, "min_learning": 3 * H})
    r = readiness(a, "exec", b, effective(p, a)[0], T0 + 2 * H)
    assert r.waiting == ("learning for 2.0h of 3.0h", "2 of 4 runs (cgroups) seen while learning")
    assert set_gates(a, "operator", {}) and "operator" not in a.gates
    assert not set_gates(a, "operator", {})  # unchanged


def test_old_registries_load_and_gates_persist(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create("old", mode="observe", auto_promote=True, source="local")
    doc = json.loads(Registry.encode(reg.snapshot()))
    del doc["agents"][0]["gates"]  # written before per-agent gates
    reg.path.write_text(json.dumps(doc))
    reg.load()
    assert reg.agents["old"].gates == {}
    set_gates(reg.agents["old"], "operator", {"min_runs": 5, "quiet_period": 1800.0})
    reg.save()
    again = Registry(tmp_path)
    again.load()
    assert again.agents["old"].gates == {"operator": {"min_runs": 5, "quiet_period": 1800.0}}
    assert again.agents["old"].to_json() == reg.agents["old"].to_json()


def test_an_edited_registry_cannot_smuggle_bad_gates(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create("x", mode="observe", auto_promote=True, source="local")
    doc = json.loads(Registry.encode(reg.snapshot()))
    doc["agents"][0]["gates"] = {
        "operator": {"min_runs": 0, "quiet_period": "30m", "bogus": 1},
        "someone": {"min_runs": 1},
    }
    reg.path.write_text(json.dumps(doc))
    reg.load()
    assert reg.agents["x"].gates == {"operator": {"quiet_period": 1800.0}}


# ---- the pod annotation ----------------------------------------------------------------------


def _pod(name: str, annotation: str | None, created: str) -> identity_pods.PodInfo:
    annotations = {} if annotation is None else {"corral.io/promotion": annotation}
    pod = identity_pods.parse_pod(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "creationTimestamp": created, "annotations": annotations,
                         "ownerReferences": [{"kind": "StatefulSet", "name": "s",
                                              "controller": True}]},
            "spec": {"containers": [{"name": "agent"}]},
            "status": {"phase": "Running"},
        }
    )  # fmt: skip
    assert pod is not None
    return pod


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    cap = structlog.testing.LogCapture()
    monkeypatch.setattr(identity_pods, "log", structlog.wrap_logger(None, processors=[cap]))
    return cap.entries


def test_the_annotation_reaches_the_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    logs = _captured(monkeypatch)
    pods = [
        _pod("new", "min-runs=5,quiet=30m,colour=blue", "2025-03-02T00:00:00Z"),
        _pod("old", "min-runs=9", "2025-03-01T00:00:00Z"),
    ]
    (w,) = discover(pods, CgroupIndex(root="/x"))
    assert w.promotion == {"min_runs": 5, "quiet_period": 1800.0}  # the newest pod's
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["pod"] == "ns/new" and warning["annotation"] == "corral.io/promotion"
    assert "'colour=blue': unknown promotion gate" in warning["error"]
    assert "min-runs=5,min-learning=2h" in warning["valid"] and "whole number" in warning["valid"]
    assert warning["kept"] == ["min_runs", "quiet_period"]
    discover(pods, CgroupIndex(root="/x"))  # the next poll: no second warning
    assert len(logs) == 1
    pods[0] = _pod("new", "min-runs=5,colour=red", "2025-03-02T00:00:00Z")  # a new value: again
    discover(pods, CgroupIndex(root="/x"))
    assert len(logs) == 2 and "'colour=red'" in logs[1]["error"]


def test_an_annotation_with_nothing_valid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    logs = _captured(monkeypatch)
    (w,) = discover([_pod("p", "min-runs=lots", "2025-03-01T00:00:00Z")], CgroupIndex(root="/x"))
    assert w.promotion is None
    assert [e["event"] for e in logs] == ["invalid annotation ignored"]
    (w,) = discover([_pod("p", None, "2025-03-01T00:00:00Z")], CgroupIndex(root="/x"))
    assert w.promotion is None


# ---- in corrald: the annotation, the operator's API, the burst event ---------------------------


class FakeKernel:
    """Counters to read; every write accepted."""

    def __init__(self) -> None:
        from corral.kernel.loader import Backends

        self.denied = 0
        self.backends = Backends.choose(False)

    def counters(self, agent_id: int) -> dict[str, dict[str, int]]:
        return {d: {"denied": self.denied, "dropped": 0} for d in ("exec", "open", "connect")}

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: 0


@pytest.fixture
def node(tmp_path: Path) -> Any:
    from corral.app import Node

    cfg = config.from_dict(
        {"state_dir": str(tmp_path), "promotion": {"min_learning": "1h", "burst_denials": 5}}
    )
    n = Node(cfg)
    n.sync.kernel = FakeKernel()  # type: ignore[assignment]
    n.status.effective = lambda dim, mode: mode  # no probe here
    return n


def test_annotation_then_operator_in_corrald(node: Any) -> None:
    name = "ns/Pod/p/agent"
    node.cgroups.reconcile([Workload(name, "kubernetes", promotion={"min_runs": 5})])
    gates = node.agents.get_agent(name)["promotion"]["gates"]
    assert gates["min_runs"] == {"value": 5, "text": "5", "source": "annotation"}
    assert gates["min_learning"]["source"] == "config" and gates["quiet_period"]["source"] == (
        "default"
    )
    asyncio.run(node.agents.set_promotion(name, {"min_runs": 2, "quiet_period": 60.0}, auto=True))
    a = node.agents.get_agent(name)
    assert a["promotion"]["auto"] is True and a["auto_promote"] is True
    assert a["promotion"]["gates"]["min_runs"]["source"] == "operator"
    # a rollout changes the annotation: it is kept, but the operator's gate still wins
    node.cgroups.reconcile([Workload(name, "kubernetes", promotion={"min_runs": 7})])
    agent = node.state.registry.get(name)
    assert agent.gates == {"annotation": {"min_runs": 7},
                           "operator": {"min_runs": 2, "quiet_period": 60.0}}  # fmt: skip
    asyncio.run(node.agents.set_promotion(name, {"quiet_period": None}))
    assert agent.gates["operator"] == {"min_runs": 2}
    asyncio.run(node.agents.set_promotion(name, {}, reset=True))
    assert node.agents.get_agent(name)["promotion"]["gates"]["min_runs"]["text"] == "7"
    # the annotation is gone from the pods: the config holds again; saved with the agent
    node.cgroups.reconcile([Workload(name, "kubernetes")])
    assert agent.gates == {} and node.state.registry.dirty


def test_the_api_refuses_bad_values_and_says_what_is_valid() -> None:
    from corral.api.requests import parse_promotion
    from corral.contract import BadRequest

    gates, reset, auto = parse_promotion({"min_runs": 5, "quiet_period": "30m",
                                          "alert_period": None, "reset": True})  # fmt: skip
    assert (gates, reset, auto) == ({"min_runs": 5, "quiet_period": 1800.0,
                                     "alert_period": None}, True, None)  # fmt: skip
    for body, message in [
        ({}, 'give at least one of "min_learning"'),
        ({"min_runs": 0}, "'min_runs': 0 is not a whole number from 1 to 100000"),
        ({"quiet_period": "soon"}, "'quiet_period': 'soon' is not a duration from 0s to 365d"),
        ({"quiet_period": -1}, "(or seconds as a number)"),
        ({"quiet": "30m"}, "unknown field(s) in promotion request: 'quiet'"),
        ({"reset": "yes"}, '"reset" must be true or false'),
        ({"auto": 1}, '"auto" must be true or false'),
    ]:
        with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_promotion(body)


def test_a_burst_after_auto_promotion_is_an_event(node: Any) -> None:
    name = "bursty"
    a = node.sync.create_agent(name, source="run", auto_promote=True)
    a.modes = dict.fromkeys(a.modes, "enforce")
    node.maintenance._watch(name, a.id, "connect", T0)
    set_gates(a, "operator", {"burst_denials": 3})  # the agent's own threshold, not the config's
    node.sync.k.denied = 3
    node.maintenance.watch_bursts(now=T0 + 90)
    (event,) = node.events.recent_events(name, 10)
    assert event["kind"] == "denial-burst" and event["agent"] == name
    assert (event["dimension"], event["verdict"], event["denials"]) == ("connect", "alert", 3)
    assert event["object"] == "3 connect denials in 90s after the auto-promotion to enforce"
    assert f"corralctl mode {name} --connect alert" in event["what_to_do"]
    assert node.maintenance.bursts == 1 and a.modes["connect"] == "enforce"  # no step back
    node.maintenance.watch_bursts(now=T0 + 100)
    assert len(node.events.recent_events(None, 10)) == 1  # reported once
