"""Consumer: the AI-BOM's share of a batch — every exec and connect, and the opens that may be
a package or a model — handed to the tracker in record order."""

from __future__ import annotations

from typing import Protocol

import structlog

from corral.aibom.rules import Rules
from corral.kernel import events
from corral.policy.agents import Agent

from .batch import Batch, Decoder

log = structlog.get_logger("corral.pipeline")


class Tracker(Protocol):
    """What this consumer needs of aibom.inventory.AibomTracker."""

    rules: Rules

    def on_event(self, agent: str, ev: events.Event) -> None: ...


class AibomFeed:
    def __init__(self, tracker: Tracker, decoder: Decoder) -> None:
        self.tracker = tracker
        self.decoder = decoder  # its boot offset and comm cache

    def on_batch(self, batch: Batch) -> None:
        # the opens' paths go through the rules' pre-filter once per batch: most batches have
        # no candidate, and then only the execs and connects are handed over
        if batch.opens and self.tracker.rules.any_maybe_interesting(batch.opens):
            self._rescan(batch.records)  # in order, the opens among them filtered one by one
            return
        unpack, offset = events.layout().unpack, self.decoder.boot_offset
        for agent, rec, path, comm, ev in batch.candidates:
            self.event(agent, ev or events.from_fields(unpack(rec), offset, path, comm))

    def _rescan(self, records: list[bytes]) -> None:
        lay = events.layout()
        unpack, offset = lay.unpack, self.decoder.boot_offset
        by_id, comms = self.decoder.agents, self.decoder.comms
        interesting = self.tracker.rules.maybe_interesting
        for rec in records:  # decodable ones (the decoder dropped the short)
            _ts, _cg, agent_id, _pid, d, _vi, _rep, raw_comm, _exe, raw = lay.hot_unpack(rec)
            agent = by_id.get(agent_id)
            if agent is None:
                continue
            path = None
            if lay.dims[d] != "connect":
                path = events.cstr(raw)
                if lay.dims[d] == "open" and not interesting(path):
                    continue
            comm = comms.get(raw_comm) or events.cstr(raw_comm)
            self.event(agent, events.from_fields(unpack(rec), offset, path, comm))

    def event(self, agent: Agent, ev: events.Event) -> None:
        try:
            self.tracker.on_event(agent.name, ev)
        except Exception as e:  # the inventory must never disturb learning or enforcement
            log.error("AI-BOM update failed", agent=agent.name, error=str(e))
