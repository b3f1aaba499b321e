"""Agents: name <-> kernel id, per-dimension modes and their history, allow-list ids, the
deviations seen beyond the baseline, and the auto-promotion rule.

Persisted as one JSON document (state_dir/agents.json, written crash-safe): small, and readable
by an operator in an emergency. Baselines live beside it, one file per agent (baseline.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .baseline import atomic_write
from .layout import DIMS, MODES, C
from .service import Conflict

log = structlog.get_logger("corral.agents")

SCHEMA = 1
HISTORY_MAX = 200
DEVIATIONS_MAX = 2000


def check_mode(dim: str, mode: str) -> None:
    """Raises ValueError saying what is accepted when dim or mode is unknown."""
    if dim not in DIMS:
        raise ValueError(f"unknown dimension {dim!r}: expected one of {', '.join(DIMS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")


class AgentLimitReached(Conflict):
    """Every agent id the kernel has room for (CORRAL_MAX_AGENTS - 1) is taken."""


@dataclass(slots=True)
class Deviation:
    """An object seen in ALERT (would-deny) or ENFORCE (denied) that the baseline lacks."""

    dimension: str
    object: str
    count: int
    first_seen: float
    last_seen: float
    verdict: str
    comm: str = ""  # the command that did it last (absent in registries written before)

    @property
    def key(self) -> str:
        return deviation_key(self.dimension, self.object)


def deviation_key(dimension: str, obj: str) -> str:
    return f"{dimension}\0{obj}"


@dataclass
class Agent:
    name: str
    id: int
    modes: dict[str, str]
    lists: dict[str, int]
    auto_promote: bool = False
    source: str = "local"  # kubernetes | local | run
    mode_since: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    deviations: dict[str, Deviation] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def set_mode(
        self, dim: str, mode: str, *, reason: str, by: str, now: float | None = None
    ) -> bool:
        """Records a transition; False when the mode is already that."""
        check_mode(dim, mode)
        old = self.modes.get(dim, "off")
        if old == mode:
            return False
        now = time.time() if now is None else now
        self.modes[dim] = mode
        self.mode_since[dim] = now
        self.history.append(
            {"ts": now, "dimension": dim, "from": old, "to": mode, "reason": reason, "by": by}
        )
        del self.history[:-HISTORY_MAX]
        log.info(
            "mode changed",
            agent=self.name,
            dimension=dim,
            mode_from=old,
            mode_to=mode,
            reason=reason,
            by=by,
        )
        return True

    def record_deviation(
        self, dim: str, obj: str, verdict: str, now: float, comm: str = ""
    ) -> None:
        """Counts one deviation. `deviations` is kept least recently seen first (a hit moves
        its entry to the end), so the one dropped beyond DEVIATIONS_MAX is the first: O(1)
        per event instead of a scan of all of them."""
        key = deviation_key(dim, obj)
        d = self.deviations.pop(key, None)
        if d:
            d.count += 1
            d.last_seen = max(d.last_seen, now)
            d.verdict = verdict
            d.comm = comm or d.comm
            self.deviations[key] = d
            return
        if len(self.deviations) >= DEVIATIONS_MAX:
            del self.deviations[next(iter(self.deviations))]
        self.deviations[key] = Deviation(dim, obj, 1, now, now, verdict, comm)

    def deviations_since(self, dim: str, since: float) -> int:
        return sum(
            1 for d in self.deviations.values() if d.dimension == dim and d.last_seen >= since
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["deviations"] = [asdict(v) for v in self.deviations.values()]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Agent:
        devs = sorted((Deviation(**v) for v in d.pop("deviations", [])), key=lambda v: v.last_seen)
        a = cls(**d)
        a.deviations = {v.key: v for v in devs}
        return a


def promotion_due(
    agent: Agent,
    dim: str,
    *,
    learning_since: float,
    last_novel: float | None,
    min_learning: float,
    quiet_period: float,
    alert_period: float,
    now: float,
) -> tuple[str, str] | None:
    """The next mode for one dimension under auto-promotion, with the reason; None to stay."""
    mode = agent.modes.get(dim)
    if mode == "observe":
        learned = now - learning_since
        quiet = now - (last_novel if last_novel is not None else learning_since)
        if learned >= min_learning and quiet >= quiet_period:
            return "alert", (
                f"learned for {learned / 3600:.1f}h, nothing new for "
                f"{quiet / 3600:.1f}h (thresholds {min_learning / 3600:.1f}h, "
                f"{quiet_period / 3600:.1f}h)"
            )
    elif mode == "alert":
        since = agent.mode_since.get(dim, now)
        if now - since >= alert_period and agent.deviations_since(dim, since) == 0:
            return "enforce", (
                f"{(now - since) / 3600:.1f}h in alert with zero deviations "
                f"(threshold {alert_period / 3600:.1f}h)"
            )
    return None


class Registry:
    """All agents of this node, persisted in state_dir/agents.json."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agents.json"
        self.agents: dict[str, Agent] = {}
        self._next_list = 1
        self.dirty = False

    def load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("schema") != SCHEMA:
                raise ValueError(f"unknown schema {doc.get('schema')!r}")
            self._next_list = int(doc["next_list"])
            self.agents = {a["name"]: Agent.from_json(a) for a in doc["agents"]}
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as e:
            aside = self.path.with_suffix(f".corrupt-{int(time.time())}")
            self.path.rename(aside)
            log.error(
                "agent registry unreadable; moved aside, agents will be rediscovered",
                path=str(self.path),
                moved_to=str(aside),
                error=str(e),
            )
            self.agents = {}

    def save(self) -> None:
        self.write(self.snapshot())

    def snapshot(self) -> bytes:
        """The registry file's bytes as of now; clears dirty. Take it where the agents change
        (corrald's event loop) and write it elsewhere: to_json reads live tables."""
        doc = {
            "schema": SCHEMA,
            "next_list": self._next_list,
            "agents": [a.to_json() for a in sorted(self.agents.values(), key=lambda a: a.id)],
        }
        self.dirty = False
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    def write(self, data: bytes) -> None:
        """Writes a snapshot crash-safe (the caller marks dirty again if this raises)."""
        atomic_write(self.path, data)

    def get(self, name: str) -> Agent | None:
        return self.agents.get(name)

    def by_id(self, agent_id: int) -> Agent | None:
        for a in self.agents.values():
            if a.id == agent_id:
                return a
        return None

    def new_list_id(self) -> int:
        lid = self._next_list
        self._next_list += 1
        self.dirty = True
        return lid

    def create(self, name: str, *, mode: str, auto_promote: bool, source: str) -> Agent:
        used = {a.id for a in self.agents.values()}
        free = next((i for i in range(1, C.CORRAL_MAX_AGENTS) if i not in used), None)
        if free is None:
            raise AgentLimitReached(
                f"agent limit reached ({C.CORRAL_MAX_AGENTS - 1}); remove agents you no longer need"
            )
        now = time.time()
        agent = Agent(
            name=name,
            id=free,
            modes=dict.fromkeys(DIMS, "off"),
            lists={d: self.new_list_id() for d in DIMS},
            auto_promote=auto_promote,
            source=source,
            created=now,
        )
        for dim in DIMS:
            agent.set_mode(dim, mode, reason="new agent", by="default", now=now)
        self.agents[name] = agent
        self.dirty = True
        return agent
