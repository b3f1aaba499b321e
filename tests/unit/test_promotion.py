"""Auto-promotion gates (policy/promotion.py): a dimension moves only on complete evidence,
and `readiness` says what it still waits for."""

from __future__ import annotations

from corral.policy.agents import Agent
from corral.policy.baseline import Baseline
from corral.policy.promotion import Gates, readiness

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
    assert not r.ready and "1 deviation(s) since alert began" in r.reason
    assert readiness(a, "exec", baseline(), GATES, T0 + 25 * H).ready  # per dimension


def test_enforce_and_off_go_nowhere() -> None:
    for mode in ("enforce", "off"):
        r = readiness(agent(mode), "exec", baseline(), GATES, T0 + 100 * H)
        assert r.next is None and not r.ready
