"""Consumer: the events as users see them — the in-memory ring (`corralctl events`), live
subscribers (`events --follow`) and the event log (events.log_events). Also the API's
EventService (contract.py).

Every event has a `kind`: "kernel" for what the ring buffer brings (an exec, open or connect
and its verdict), else what corrald itself reports through `notice` (a "denial-burst" after an
auto-promotion, node/maintenance.py), with the same fields."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from corral.config import Config
from corral.kernel import events

from .batch import Batch, Decoder, Item, Stats

event_log = structlog.get_logger("corral.event")

# the fields of an event's log line (events.log_events)
LOGGED_FIELDS = (
    "kind",
    "agent",
    "dimension",
    "verdict",
    "mode",
    "object",
    "pid",
    "ppid",
    "comm",
    "exe",
    "cgroup_id",
    "namespace",
    "pod",
    "container",
    "node",
    "flags",
    "time",
)
SUBSCRIBER_QUEUE = 10000
KERNEL = "kernel"  # the kind of the ring buffer's events
# an event corrald reports itself (notice): its agent and its record, built once
Notice = tuple[str, dict[str, Any]]


class EventFeed:
    def __init__(
        self,
        *,
        cfg: Config,
        decoder: Decoder,
        stats: Stats,
        check_agent: Callable[[str], object],
    ) -> None:
        # events as seen (Item): the record dict is built only when someone reads it, not for
        # each of a burst of events
        self.ring: deque[Item | Notice] = deque(maxlen=cfg.events.buffer)
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.cfg = cfg  # events.log_events is read per batch: SIGHUP may change it
        self.node = cfg.node  # environment and hostname: read once, not per event
        self.decoder = decoder
        self.stats = stats
        self.check_agent = check_agent  # raises contract.UnknownAgent
        self._time_prefix: tuple[int, str] = (-1, "")

    def on_batch(self, batch: Batch) -> None:
        self.ring.extend(batch.items)
        if self.subscribers or self.cfg.events.log_events:
            self._publish(batch.items)

    def notice(
        self, agent: str, kind: str, dimension: str, obj: str, fields: dict[str, Any]
    ) -> None:
        """An event corrald reports itself (not the kernel): into the ring, to subscribers
        and, whatever events.log_events says, into the event log (a warning). Its verdict is
        "alert", its pid 0 and its comm "corrald"; fields adds to the record."""
        now = time.time_ns()
        rec: dict[str, Any] = {
            "kind": kind,
            "ts_ns": now,
            "time": self._iso_time(now),
            "node": self.node,
            "agent": agent,
            "dimension": dimension,
            "verdict": "alert",
            "object": obj,
            "pid": 0,
            "comm": "corrald",
            "flags": [],
            **fields,
        }
        self.ring.append((agent, rec))
        event_log.warning("event", **rec)
        for q in list(self.subscribers):
            try:
                q.put_nowait(rec)
            except asyncio.QueueFull:
                self.stats.lost += 1

    def close(self) -> None:
        """Ends every subscription (the daemon stops)."""
        for q in list(self.subscribers):
            q.put_nowait(None)

    # ---- EventService ---------------------------------------------------------------------

    def recent_events(self, agent: str | None, limit: int) -> list[dict[str, Any]]:
        if agent is not None:
            self.check_agent(agent)
        seen = [s for s in self.ring if agent is None or s[0] == agent]
        return [self.record(s) for s in seen[-limit:]] if limit > 0 else []

    async def subscribe(self, agent: str | None) -> AsyncIterator[dict[str, Any]]:
        if agent is not None:
            self.check_agent(agent)
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.subscribers.add(q)
        try:
            while (rec := await q.get()) is not None:
                if agent is None or rec["agent"] == agent:
                    yield rec
        finally:
            self.subscribers.discard(q)

    # ---- records --------------------------------------------------------------------------

    def record(self, item: Item | Notice) -> dict[str, Any]:
        """What the events API, the event log and subscribers see of one event."""
        if len(item) == 2:  # a notice
            return dict(item[1])
        name, raw, path, exe, (namespace, pod, container) = item
        ev = events.from_fields(events.layout().unpack(raw), self.decoder.boot_offset, path)
        if ev.dimension == "exec":
            ev = ev._replace(caller=events.caller_of(raw))
        elif ev.dimension == "connect" and path:
            ev = ev._replace(host=path)  # the name the agent's DNS answer gave the address
        rec = ev.to_dict()
        if ev.host:
            rec["object"] = f"{ev.object} ({ev.host})"
        rec.update(
            kind=KERNEL,
            time=self._iso_time(ev.ts_ns),
            node=self.node,
            agent=name,
            exe=exe,
            namespace=namespace,
            pod=pod,
            container=container,
        )
        return rec

    def _iso_time(self, ts_ns: int) -> str:
        """2026-01-02T03:04:05.123456Z; the part up to the second is formatted once a second."""
        sec = ts_ns // 1_000_000_000
        if self._time_prefix[0] != sec:
            self._time_prefix = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        return f"{self._time_prefix[1]}.{ts_ns % 1_000_000_000 // 1000:06d}Z"

    def _publish(self, items: list[Item]) -> None:
        """Logs (events.log_events) and hands to subscribers the events of one batch."""
        log_events = self.cfg.events.log_events
        for item in items:
            rec = self.record(item)
            if log_events:
                event_log.info("event", **{k: rec[k] for k in LOGGED_FIELDS})
            for q in list(self.subscribers):
                try:
                    q.put_nowait(rec)
                except asyncio.QueueFull:
                    self.stats.lost += 1
