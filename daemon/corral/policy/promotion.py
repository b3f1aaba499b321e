"""Auto-promotion: when an agent's dimension may move observe -> alert -> enforce on its own,
and why it may not yet. A dimension moves only on complete evidence: learned long enough,
nothing new for a while, enough separate runs (cgroups) seen while learning, and a baseline
that is not partial (learning began on a running container, or the kernel dropped events).
From alert it moves to enforce after alert_period with no deviation in that dimension, and
none waiting for review in `corralctl diff` (so a step back from enforce sticks until the
denials that caused it are reviewed).

Each agent may set its own gates (`effective`): an operator's setting (`corralctl promotion`,
a baseline document) wins over the pod annotation corral.io/promotion, which wins over the
config's `promotion:`, whose fields default to PromotionConfig's.

corral never demotes by itself: an attacker who can make an agent misbehave could otherwise
switch its enforcement off. A burst of denials after an auto-promotion is reported instead
(node/maintenance.py), and `corralctl mode NAME alert` is the one step back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.config import GATES, PromotionConfig, format_gate

from .agents import GATE_SOURCES, Agent
from .baseline import Baseline


@dataclass(frozen=True)
class Gates:
    min_learning: float  # seconds in observe
    quiet_period: float  # seconds without a novel object
    alert_period: float  # seconds in alert with no deviation
    min_runs: int  # runs (cgroups) started while learning
    burst_denials: int = 10  # denials after an auto-promotion to enforce that are reported
    burst_window: float = 3600.0  # seconds after that promotion they are counted in

    @classmethod
    def of(cls, p: PromotionConfig) -> Gates:
        return cls(**{g: getattr(p, g) for g in GATES})


_DEFAULTS = PromotionConfig()


def effective(p: PromotionConfig, agent: Agent) -> tuple[Gates, dict[str, str]]:
    """The agent's gates and where each comes from: operator, annotation, config (the config
    file sets it) or default."""
    values: dict[str, float | int] = {}
    sources: dict[str, str] = {}
    for g in GATES:
        for src in GATE_SOURCES:  # the stronger first
            v = agent.gates.get(src, {}).get(g)
            if v is not None:
                values[g], sources[g] = v, src
                break
        else:
            values[g] = getattr(p, g)
            sources[g] = "default" if values[g] == getattr(_DEFAULTS, g) else "config"
    return Gates(**values), sources  # type: ignore[arg-type]


def gates_view(p: PromotionConfig, agent: Agent) -> dict[str, dict[str, Any]]:
    """What `corralctl agent NAME` shows: {gate: {value, text, source}}."""
    gates, sources = effective(p, agent)
    view: dict[str, dict[str, Any]] = {}
    for g in GATES:
        value = getattr(gates, g)
        view[g] = {"value": value, "text": format_gate(g, value), "source": sources[g]}
    return view


def set_gates(agent: Agent, source: str, gates: Mapping[str, float | int]) -> bool:
    """What source (GATE_SOURCES) sets for the agent becomes gates (nothing: {}); False when
    that is what it set already."""
    new = dict(gates)
    if agent.gates.get(source, {}) == new:
        return False
    if new:
        agent.gates[source] = new
    else:
        agent.gates.pop(source, None)
    return True


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
    # every deviation of the dimension still waiting in `diff`, also those from before this
    # alert period: after a step back from enforce (`corralctl mode NAME --DIM alert`) the
    # denials that caused it hold the dimension in alert until they are reviewed
    n = sum(1 for d in agent.deviations.values() if d.dimension == dim)
    if n:
        waiting.append(
            f"{n} deviation(s) waiting for review: corralctl diff {agent.name}, accept what is "
            f"legitimate (while any waits, only corralctl mode sets {dim} to enforce)"
        )
    if waiting:
        return Readiness("alert", "enforce", False, tuple(waiting), waiting[0])
    reason = f"{_h(now - since)} in alert with zero deviations (gate {_h(gates.alert_period)})"
    return Readiness("alert", "enforce", True, (), reason)
