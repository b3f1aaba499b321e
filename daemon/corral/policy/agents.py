"""Agents: name <-> kernel id, per-dimension modes and their history, allow-list ids, the
deviations seen beyond the baseline, the auto-promotion rule and the tamper kinds the
operator allowed.

Persisted as one JSON document (state_dir/agents.json, written crash-safe): small, and readable
by an operator in an emergency. Baselines live beside it, one file per agent (baseline.py).
A registry that is lost (unreadable) is never a demotion where the kernel kept its state:
node/recovery.py gives each agent back its id, modes and allow-lists from the pinned maps
(`recover`), and the ids and list ids the kernel still uses are never handed out again
(`reserved`, `keep_lists_above`).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from corral.config import gate_from_json, gate_name
from corral.contract import Conflict
from corral.kernel.layout import DIMS, MODES, TAMPER_KINDS, C

from .store import atomic_write

log = structlog.get_logger("corral.agents")

# the list ids an agent owns: its base ids (agent_cfg); exec callers' lists are
# base | index << CORRAL_CALLER_SHIFT (policy/lineage.py), the base in the low bits
LIST_ID_MASK = (1 << C.CORRAL_CALLER_SHIFT) - 1
# the history's `by` of a mode the kernel kept when the registry was lost (node/recovery.py)
RECOVERY = "recovery"

# 2: deviations as arrays in Deviation's field order (1: as objects; still read)
SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
HISTORY_MAX = 200
# where an agent's own promotion gates come from, the stronger first (policy/promotion.py)
GATE_SOURCES = ("operator", "annotation")
DEVIATIONS_MAX = 2000


def check_mode(dim: str, mode: str) -> None:
    """Raises ValueError saying what is accepted when dim or mode is unknown."""
    if dim not in DIMS:
        raise ValueError(f"unknown dimension {dim!r}: expected one of {', '.join(DIMS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")


def check_tamper_kinds(kinds: Iterable[str]) -> set[str]:
    """The kinds as a set; ValueError naming the valid kinds when one is unknown."""
    out = set(kinds)
    unknown = sorted(out - set(TAMPER_KINDS))
    if unknown:
        raise ValueError(
            f"unknown tamper kind(s) {', '.join(map(repr, unknown))}: expected one of "
            f"{', '.join(TAMPER_KINDS)}"
        )
    return out


def _built(seen: Seen) -> Deviation:
    """The Deviation of a Seen tuple."""
    dim, obj, verdict, now, comm, caller, times, exe = seen
    return Deviation(dim, obj, times, now, now, verdict, comm, caller, [exe] if exe else [])


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
    # exec: the executable that called it (exec lineage); "" when unknown or not an exec
    caller: str = ""
    # the executables that did it (/proc/PID/exe when corrald read the event), newest last
    exes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return deviation_key(self.dimension, self.object, self.caller)

    def saw_exe(self, exe: str) -> None:
        if exe and (not self.exes or self.exes[-1] != exe):
            if exe in self.exes:
                self.exes.remove(exe)
            self.exes.append(exe)
            del self.exes[:-EXES_MAX]


EXES_MAX = 5
# what record_deviations is given per event: (dimension, object, verdict, time, comm, caller,
# times: 1 + the repeats the kernel suppressed since its last report, executable)
Seen = tuple[str, str, str, float, str, str, int, str]


def deviation_key(dimension: str, obj: str, caller: str = "") -> str:
    """One deviation per (dimension, object), and for an exec per caller too."""
    return f"{dimension}\0{obj}\0{caller}" if caller else f"{dimension}\0{obj}"


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
    created: float = field(default_factory=time.time)
    # its own promotion gates, per source (GATE_SOURCES: "operator", "annotation"):
    # {source: {PromotionConfig field: value}}; absent in registries written before
    gates: dict[str, dict[str, float | int]] = field(default_factory=dict)
    # the tamper-guard kinds (kernel.layout.TAMPER_KINDS) the operator allowed this agent
    # (`corralctl tamper NAME --allow KIND`): they pass the kernel's guard; never learned.
    # Absent in registries written before
    tamper_allow: set[str] = field(default_factory=set)
    # the deviations, least recently seen first: an OrderedDict drops its oldest in O(1) (a
    # plain dict finds its first key by scanning past the holes its earlier deletions left:
    # ~1 us at 2,000). A deviation seen once since the table was last read is kept as the
    # tuple record_deviations was given (most are novel objects seen once, at up to hundreds
    # of thousands a second: no object built for them); `deviations` builds the rest on read.
    _devs: OrderedDict[str, Deviation | Seen] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    _unbuilt: int = field(default=0, repr=False, compare=False)

    @property
    def deviations(self) -> OrderedDict[str, Deviation]:
        """The deviation table, least recently seen first (mutable: pop, clear, del)."""
        devs = self._devs
        if self._unbuilt:
            self._unbuilt = 0
            for key, v in [kv for kv in devs.items() if type(kv[1]) is tuple]:
                devs[key] = _built(v)  # type: ignore[arg-type]  # keeps its place
        return devs  # type: ignore[return-value]

    @deviations.setter
    def deviations(self, table: OrderedDict[str, Deviation]) -> None:
        self._devs = table  # type: ignore[assignment]
        self._unbuilt = 0

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
        self,
        dim: str,
        obj: str,
        verdict: str,
        now: float,
        comm: str = "",
        caller: str = "",
        times: int = 1,
        exe: str = "",
    ) -> None:
        """Counts one deviation (record_deviations with one)."""
        self.record_deviations(((dim, obj, verdict, now, comm, caller, times, exe),))

    def record_deviations(self, seen: Iterable[Seen]) -> None:
        """Counts each (dimension, object, verdict, time, comm, caller), in order: corrald
        calls it once per agent per ring-buffer batch. `deviations` stays least recently seen
        first (a hit moves its entry to the end), so the one dropped beyond DEVIATIONS_MAX is
        the first."""
        devs = self._devs
        to_end = devs.move_to_end
        unbuilt = 0
        for item in seen:
            dim, obj, verdict, now, comm, caller, times, exe = item
            key = f"{dim}\0{obj}\0{caller}" if caller else f"{dim}\0{obj}"
            d = devs.get(key)
            if d is None:
                if len(devs) >= DEVIATIONS_MAX:
                    devs.popitem(last=False)
                devs[key] = item
                unbuilt += 1
                continue
            if type(d) is tuple:  # seen a second time: now an object
                d = devs[key] = _built(d)
            d.count += times
            d.saw_exe(exe)
            if now > d.last_seen:
                d.last_seen = now
            d.verdict = verdict
            if comm:
                d.comm = comm
            to_end(key)
        self._unbuilt += unbuilt

    def to_json(self) -> dict[str, Any]:
        return _agent_json(self.snapshot())

    def snapshot(self) -> AgentSnapshot:
        """What to_json needs, copied cheaply (no JSON work): take it where the agent changes
        (corrald's event loop), turn it into JSON anywhere. Deviations become tuples."""
        fields = {
            "name": self.name,
            "id": self.id,
            "modes": dict(self.modes),
            "lists": dict(self.lists),
            "auto_promote": self.auto_promote,
            "source": self.source,
            "mode_since": dict(self.mode_since),
            "history": [dict(h) for h in self.history],
            "created": self.created,
            "gates": {src: dict(g) for src, g in self.gates.items()},
            "tamper_allow": sorted(self.tamper_allow),
        }
        devs = [
            (d[0], d[1], d[6], d[3], d[3], d[2], d[4], d[5], [d[7]] if d[7] else [])
            if type(d) is tuple  # seen once: a Seen tuple
            else (
                d.dimension,
                d.object,
                d.count,
                d.first_seen,
                d.last_seen,
                d.verdict,
                d.comm,
                d.caller,
                list(d.exes),
            )
            for d in self._devs.values()
        ]
        return fields, devs

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Agent:
        devs = sorted(
            (
                Deviation(**v) if isinstance(v, dict) else Deviation(*v)
                for v in d.pop("deviations", [])
            ),
            key=lambda v: v.last_seen,
        )
        gates = _checked_gates(d.pop("gates", {}), d.get("name"))
        tamper = _checked_tamper(d.pop("tamper_allow", []), d.get("name"))
        a = cls(**d)
        a.gates = gates
        a.tamper_allow = tamper
        a.deviations = OrderedDict((v.key, v) for v in devs)
        return a


def _checked_gates(raw: Any, agent: Any) -> dict[str, dict[str, float | int]]:
    """An agent's gates as the registry file has them, every value checked again (the file is
    readable JSON, an operator may edit it): what is not valid is left out, and logged."""
    out: dict[str, dict[str, float | int]] = {}
    for src, gates in raw.items() if isinstance(raw, dict) else ():
        for name, value in gates.items() if isinstance(gates, dict) else ():
            try:
                if src not in GATE_SOURCES:
                    raise ValueError(f"unknown source: expected {' or '.join(GATE_SOURCES)}")
                g = gate_name(name)
                out.setdefault(src, {})[g] = gate_from_json(g, value)
            except (ValueError, TypeError) as e:
                log.warning(
                    "promotion gate in the agent registry ignored",
                    agent=agent,
                    source=src,
                    gate=name,
                    error=str(e),
                )
    return {src: g for src, g in out.items() if g}


def _checked_tamper(raw: Any, agent: Any) -> set[str]:
    """An agent's allowed tamper kinds as the registry file has them: a kind this corrald does
    not know (an edited file, or one from a newer corrald) is left out, and logged."""
    out: set[str] = set()
    for kind in raw if isinstance(raw, list) else [] if raw is None else [raw]:
        if isinstance(kind, str) and kind in TAMPER_KINDS:
            out.add(kind)
        else:
            log.warning(
                "tamper kind in the agent registry ignored",
                agent=agent,
                kind=kind,
                error=f"unknown tamper kind: expected one of {', '.join(TAMPER_KINDS)}",
            )
    return out


# an agent's fields (containers copied) and its deviations as tuples (Deviation's field order)
AgentSnapshot = tuple[dict[str, Any], list[tuple[Any, ...]]]


def _agent_json(snapshot: AgentSnapshot) -> dict[str, Any]:
    """The registry's form of an agent: its deviations as arrays (no object per deviation
    to build, and json's C encoder writes tuples as they are)."""
    fields, devs = snapshot
    return {**fields, "deviations": devs}


# next list id and the agents' snapshots
RegistrySnapshot = tuple[int, list[AgentSnapshot]]


class Registry:
    """All agents of this node, persisted in state_dir/agents.json."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agents.json"
        self.agents: dict[str, Agent] = {}
        self._next_list = 1
        self.dirty = False
        # ids the kernel holds for agents this registry does not know (node/recovery.py):
        # never given to a new agent (that would hand it the other's cgroups and lists)
        self.reserved: set[int] = set()
        # why the file could not be read ("" when it was, or when there was none)
        self.lost = ""

    def load(self) -> None:
        self.lost = ""
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("schema") not in READABLE_SCHEMAS:
                raise ValueError(f"unknown schema {doc.get('schema')!r}")
            self._next_list = int(doc["next_list"])
            self.agents = {a["name"]: Agent.from_json(a) for a in doc["agents"]}
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as e:
            aside = self.path.with_suffix(f".corrupt-{int(time.time())}")
            self.path.rename(aside)
            log.error(
                "agent registry unreadable; moved aside: an agent the pinned kernel state "
                "still holds gets its id, modes and allow-lists back from it when its cgroup "
                "is seen again (never demoted); the others come back as new agents",
                path=str(self.path),
                moved_to=str(aside),
                error=str(e),
            )
            self.agents = {}
            self.lost = str(e)

    def save(self) -> None:
        self.write(self.snapshot())

    def snapshot(self) -> RegistrySnapshot:
        """The registry as of now, copied cheaply; clears dirty. Take it where the agents change
        (corrald's event loop) and hand it to write() in a worker thread: the JSON work (tens
        of milliseconds with thousands of deviations) then does not stall the event loop."""
        agents = [a.snapshot() for a in sorted(self.agents.values(), key=lambda a: a.id)]
        self.dirty = False
        return self._next_list, agents

    @staticmethod
    def encode_agent(snapshot: AgentSnapshot) -> str:
        """One agent's line of the registry file (json's C encoder: an indented document
        takes its pure-Python one, several times slower)."""
        return json.dumps(_agent_json(snapshot), sort_keys=True)

    @staticmethod
    def document(next_list: int, lines: list[str]) -> bytes:
        """The registry file from its agents' lines: one agent per line."""
        head = json.dumps({"next_list": next_list, "schema": SCHEMA})[:-1]
        body = ",\n".join(lines)
        return f'{head}, "agents": [\n{body}\n]}}\n'.encode()

    @classmethod
    def encode(cls, snapshot: RegistrySnapshot) -> bytes:
        next_list, agents = snapshot
        return cls.document(next_list, [cls.encode_agent(a) for a in agents])

    def write(self, snapshot: RegistrySnapshot) -> None:
        """Writes a snapshot crash-safe (the caller marks dirty again if this raises)."""
        self.write_bytes(self.encode(snapshot))

    def write_bytes(self, data: bytes) -> None:
        atomic_write(self.path, data)

    @property
    def next_list(self) -> int:
        return self._next_list

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

    def keep_lists_above(self, list_ids: Iterable[int]) -> None:
        """Never hands out a list id at or below these (the kernel's, read from agent_cfg: a
        lost or older registry file does not know them). Callers' exec lists
        (base | index << CORRAL_CALLER_SHIFT) count by their base."""
        top = max((lid & LIST_ID_MASK for lid in list_ids), default=0)
        if top >= self._next_list:
            self._next_list = top + 1
            self.dirty = True

    def recover(
        self,
        name: str,
        agent_id: int,
        *,
        modes: dict[str, str],
        lists: dict[str, int],
        tamper_allow: Iterable[str],
        auto_promote: bool,
        source: str,
    ) -> Agent:
        """An agent as the kernel still holds it (id, modes, list ids, allowed tamper kinds)
        after the registry was lost: its modes are recorded as set by `recovery`, so neither a
        default nor an annotation changes them (only the operator, or auto-promotion)."""
        if name in self.agents or self.by_id(agent_id) is not None:
            raise ValueError(f"agent {name!r} or id {agent_id} is known already")
        now = time.time()
        agent = Agent(
            name=name,
            id=agent_id,
            modes=dict.fromkeys(DIMS, "off"),
            lists={d: lists[d] for d in DIMS},
            auto_promote=auto_promote,
            source=source,
            created=now,
            tamper_allow=check_tamper_kinds(tamper_allow),
        )
        reason = "recovered from the kernel after the registry was lost"
        for dim in DIMS:
            agent.set_mode(dim, modes[dim], reason=reason, by=RECOVERY, now=now)
        self.reserved.discard(agent_id)
        self.keep_lists_above(agent.lists.values())
        self.agents[name] = agent
        self.dirty = True
        return agent

    def create(self, name: str, *, mode: str, auto_promote: bool, source: str) -> Agent:
        used = {a.id for a in self.agents.values()} | self.reserved
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
