"""One ring-buffer batch, decoded once for every consumer.

The hot path of corrald: per record one struct unpack, the path as a string and a few lookups.
An Event is built only where one is consumed (learning, connect, exec and AI-BOM candidates);
deviations are grouped per agent; the event ring keeps the record itself and builds its dict
only when it is read (feed.EventFeed.record). The consumers (pipeline/*.py) then take their
share of the batch, in the order the composition root registered them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from corral.identity.bindings import Binding
from corral.kernel import events
from corral.kernel.layout import DNS_EVENT, TAMPER_EVENT
from corral.policy.agents import Agent

from .names import NameBook

log = structlog.get_logger("corral.pipeline")

# (namespace, pod, container) of an event's cgroup when it was seen
Pod = tuple[str, str, str]
NO_POD: Pod = ("", "", "")
# an event as the ring keeps it: agent name, the record, its path (for connect: the name the
# agent's DNS answer gave the address, or None), /proc/<pid>/exe, its pod. Strings and bytes
# only: the garbage collector stops tracking such
# tuples, and the ring holds thousands of them.
Item = tuple[str, bytes, "str | None", str, Pod]
# an exec or connect for the AI-BOM: agent, record, path, comm, its Event if one was built
Candidate = tuple[Agent, bytes, "str | None", str, "events.Event | None"]
# one deviation as Agent.record_deviations takes it: dimension, object, verdict, time, comm,
# caller (an exec's; "" otherwise), times (1 + the repeats the kernel suppressed), executable
Seen = tuple[str, str, str, float, str, str, int, str]


@dataclass
class Stats:
    """Counts for status and metrics, shared by the decoder and the consumers."""

    received: int = 0  # decodable records read from the ring
    lost: int = 0  # undecodable records, or events dropped for a slow subscriber


@dataclass
class Batch:
    """What the decoder made of one batch; each consumer reads its share."""

    records: list[bytes]  # the decodable records, in order
    items: list[Item] = field(default_factory=list)  # every record of a known agent
    deviations: dict[int, tuple[Agent, list[Seen]]] = field(default_factory=dict)
    observed: list[tuple[Agent, events.Event]] = field(default_factory=list)  # to learn
    candidates: list[Candidate] = field(default_factory=list)  # execs and connects
    opens: list[str] = field(default_factory=list)  # the opens' paths (AI-BOM pre-filter)


class Decoder:
    """Turns raw records into a Batch. agents and bindings are the node's live tables (read
    per record, never copied)."""

    def __init__(
        self,
        agents: Mapping[int, Agent],
        bindings: Mapping[int, Binding],
        stats: Stats,
        names: NameBook | None = None,
    ) -> None:
        self.agents = agents
        self.bindings = bindings
        self.stats = stats
        # the agents' DNS answers, taken in ring order: a connect after its answer is named
        self.names = names or NameBook()
        self.boot_offset = events.boot_offset_ns()
        self.comms: dict[bytes, str] = {}
        self._exes: dict[tuple[int, str], str] = {}
        self._exes_at = 0.0

    def decode(self, records: list[bytes]) -> Batch:
        lay = events.layout()
        unpack, hot, size = lay.unpack, lay.hot_unpack, lay.size
        dims, verdicts = lay.dims, lay.verdicts
        by_id, bindings, offset = self.agents, self.bindings, self.boot_offset
        exes, comms = self._exe_cache_now(), self.comms
        if len(comms) > 4096:
            comms.clear()
        if records and min(map(len, records)) < size:
            records = self._decodable(records, size)
        batch = Batch(records)
        publish, observed = batch.items.append, batch.observed.append
        candidate, add_open = batch.candidates.append, batch.opens.append
        deviations = batch.deviations
        # consecutive records mostly share their agent, process and cgroup: the last ones
        # are kept at hand
        dev_agent: Agent | None = None
        dev_list: list[Seen] = []
        last_pid, last_comm, exe = -1, "", ""
        last_raw_comm, comm = b"", ""
        last_cgid, pod = -1, NO_POD
        allowed = verdicts.index("allowed")
        for rec in records:
            ts, cgid, agent_id, pid, d, vi, repeats, raw_comm, raw_exe, raw = hot(rec)
            agent = by_id.get(agent_id)
            if agent is None:
                continue
            dim = dims[d]
            ev: events.Event | None = None
            path: str | None = None
            caller = ""
            if raw_comm != last_raw_comm:
                last_raw_comm = raw_comm
                comm = comms.get(raw_comm)
                if comm is None:
                    comm = comms[raw_comm] = events.cstr(raw_comm)
            if dim == "connect":
                ev = events.from_fields(unpack(rec), offset, None, comm)
                obj = ev.object
                learning = agent.modes.get("connect") == "observe"
                host = self.names.name_of(agent_id, ev.address, learning)
                if host is not None:
                    ev = ev._replace(host=host)
                    obj = f"{host}:{ev.port}"  # deviations of a name group whatever its address
                    path = host
            elif dim == DNS_EVENT:  # rare: an answer, named before the connects that follow
                ev = events.decode(rec, offset)
                self.names.answer(ev)
                continue
            elif dim == TAMPER_EVENT:  # rare: the kind leads, what the kernel said of it follows
                ev = events.from_fields(unpack(rec), offset, None, comm)
                path = ev.path
                obj = f"{ev.tamper}: {path}"
            else:
                end = raw.find(b"\0")  # events.cstr, inline: a call per record costs
                obj = path = (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")
                if dim == "exec":
                    caller = events.caller_of(rec)
            if pid != last_pid or comm != last_comm:
                last_pid, last_comm = pid, comm
                exe = exes.get((pid, comm))
                if exe is None:
                    # gone already (a short-lived process): the name the kernel gave
                    exe = exes[(pid, comm)] = _exe(pid) or events.cstr(raw_exe)
            if vi != allowed:
                if agent is not dev_agent:
                    dev_agent, dev_list = deviations.setdefault(agent.id, (agent, []))
                when = (ts + offset) / 1e9
                dev_list.append((dim, obj, verdicts[vi], when, comm, caller, 1 + repeats, exe))
            elif agent.modes.get(dim) == "observe":
                ev = ev or events.from_fields(unpack(rec), offset, path, comm, caller)
                observed((agent, ev))
            if cgid != last_cgid:
                last_cgid = cgid
                b = bindings.get(cgid)
                pod = (b.namespace, b.pod, b.container) if b else NO_POD
            publish((agent.name, rec, path, exe, pod))
            if dim == "open" and path is not None:
                add_open(path)
            elif dim != TAMPER_EVENT:
                candidate((agent, rec, path, comm, ev))
        self.stats.received += len(records)
        return batch

    def _decodable(self, records: list[bytes], size: int) -> list[bytes]:
        """The records long enough to decode; each short one is counted lost and logged."""
        for rec in records:
            if len(rec) < size:
                self.stats.lost += 1
                log.error("undecodable ring-buffer record", size=len(rec), need=size)
        return [rec for rec in records if len(rec) >= size]

    def _exe_cache_now(self) -> dict[tuple[int, str], str]:
        """/proc/<pid>/exe by (pid, comm), remembered for up to a second: a busy agent's events
        would otherwise cost a readlink each (an exec changes the comm, and so the key; the
        value is as stale as one read at processing time could be anyway)."""
        now = time.monotonic()
        if now - self._exes_at > 1.0:
            self._exes.clear()
            self._exes_at = now
        return self._exes


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
