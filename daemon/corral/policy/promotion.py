"""Auto-promotion: when an agent's dimension may move observe -> alert -> enforce on its own,
and why it may not yet. A dimension moves only on complete evidence: learned long enough,
nothing new for a while, enough separate runs (cgroups) seen while learning, and a baseline
that is not partial (learning began on a running container, or the kernel dropped events).
From alert it moves to enforce after alert_period with no deviation in that dimension.

corral never demotes by itself: an attacker who can make an agent misbehave could otherwise
switch its enforcement off. A burst of denials after an auto-promotion is reported instead
(node/maintenance.py), and `corralctl mode NAME alert` is the one step back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.config import PromotionConfig

from .agents import Agent
from .baseline import Baseline


@dataclass(frozen=True)
class Gates:
    min_learning: float  # seconds in observe
    quiet_period: float  # seconds without a novel object
    alert_period: float  # seconds in alert with no deviation
    min_runs: int  # runs (cgroups) started while learning

    @classmethod
    def of(cls, p: PromotionConfig) -> Gates:
        return cls(p.min_learning, p.quiet_period, p.alert_period, p.min_runs)


@dataclass(frozen=True)
class Readiness:
    mode: str
    next: str | None  # the mode it would move to
    ready: bool
    waiting: tuple[str, ...]  # every gate not met yet
    reason: str  # why it moves (ready), else the first thing it waits for

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "next": self.next,
            "ready": self.ready,
            "reason": self.reason,
            "waiting_for": list(self.waiting),
        }


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds >= 360 else f"{seconds:.0f}s"


def readiness(agent: Agent, dim: str, b: Baseline, gates: Gates, now: float) -> Readiness:
    mode = agent.modes.get(dim, "off")
    if mode == "observe":
        return _from_observe(b, gates, now)
    if mode == "alert":
        return _from_alert(agent, dim, gates, now)
    why = "enforcing: the last step" if mode == "enforce" else "off: not watched"
    return Readiness(mode, None, False, (), why)


def _from_observe(b: Baseline, gates: Gates, now: float) -> Readiness:
    learned = now - b.learning_since
    quiet = now - (b.last_novel if b.last_novel is not None else b.learning_since)
    waiting = []
    if learned < gates.min_learning:
        waiting.append(f"learning for {_h(learned)} of {_h(gates.min_learning)}")
    if quiet < gates.quiet_period:
        waiting.append(f"something new {_h(quiet)} ago; needs {_h(gates.quiet_period)} quiet")
    if b.runs_seen < gates.min_runs:
        waiting.append(f"{b.runs_seen} of {gates.min_runs} runs (cgroups) seen while learning")
    if b.partial:
        waiting.append("the baseline is partial: " + "; ".join(sorted(b.partial_reasons)))
    if waiting:
        return Readiness("observe", "alert", False, tuple(waiting), waiting[0])
    reason = (
        f"learned for {_h(learned)} over {b.runs_seen} runs, nothing new for {_h(quiet)} "
        f"(gates {_h(gates.min_learning)}, {gates.min_runs} runs, {_h(gates.quiet_period)})"
    )
    return Readiness("observe", "alert", True, (), reason)


def _from_alert(agent: Agent, dim: str, gates: Gates, now: float) -> Readiness:
    since = agent.mode_since.get(dim, now)
    waiting = []
    if now - since < gates.alert_period:
        waiting.append(f"in alert for {_h(now - since)} of {_h(gates.alert_period)}")
    n = agent.deviations_since(dim, since)
    if n:
        waiting.append(
            f"{n} deviation(s) since alert began: review them (corralctl diff {agent.name})"
        )
    if waiting:
        return Readiness("alert", "enforce", False, tuple(waiting), waiting[0])
    reason = f"{_h(now - since)} in alert with zero deviations (gate {_h(gates.alert_period)})"
    return Readiness("alert", "enforce", True, (), reason)
