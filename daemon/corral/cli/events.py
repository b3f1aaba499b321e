"""events, and events --follow (live, one line per event)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from .client import EXIT_OK, Client, Unreachable
from .render import (
    Output,
    _cell,
    _epoch_seconds,
    _fixed,
    _json_text,
    _yaml_text,
    ago,
    table,
    visible_data,
)

EVENT_HEADERS = ["TIME", "AGENT", "VERDICT", "DIMENSION", "OBJECT", "PID", "COMM"]


def _event_time(event: dict[str, Any]) -> float | None:
    for key in ("ts_ns", "time", "ts", "timestamp"):
        if key in event:
            epoch = _epoch_seconds(key, event[key])
            if epoch is not None:
                return epoch
    return None


def event_row(event: dict[str, Any], live: bool = False) -> list[str]:
    epoch = _event_time(event)
    if epoch is None:
        when = "-"
    elif live:
        when = datetime.fromtimestamp(epoch).strftime("%H:%M:%S")
    else:
        when = ago(epoch)
    agent = event.get("agent", event.get("agent_id"))
    # an event corrald reports itself (kind denial-burst, ...) has no process: pid 0
    pid = event.get("pid") if event.get("kind", "kernel") == "kernel" else event.get("pid") or None
    return [
        when,
        _cell("", agent),
        _cell("", event.get("verdict")),
        _cell("", event.get("dimension")),
        _cell("", event.get("object", event.get("path"))),
        _cell("", pid),
        _cell("", event.get("comm")),
    ]


def render_events(events: list[dict[str, Any]]) -> str:
    if not events:
        return "no events"
    return table(EVENT_HEADERS, [event_row(e) for e in events])


def cmd_events(args: argparse.Namespace, client: Client, out: Output) -> int:
    query: dict[str, Any] = {}
    if args.agent:
        query["agent"] = args.agent
    if args.limit:
        query["limit"] = args.limit
    if not args.follow:
        path = "/v1/events" + (f"?{urlencode(query)}" if query else "")
        out.emit(client.request("GET", path), render_events)
        return EXIT_OK
    query["follow"] = 1
    return _follow(client, out, f"/v1/events?{urlencode(query)}")


def _follow(client: Client, out: Output, path: str) -> int:
    widths = [8, 24, 10, 9, 40, 7]
    first = True
    try:
        for event in client.stream(path):
            if out.fmt == "json":
                line = _json_text(event, indent=None)
            elif out.fmt == "yaml":
                line = "---\n" + _yaml_text(event).rstrip("\n")
            else:
                row = event_row(visible_data(event), live=True)
                header = EVENT_HEADERS if first else None
                line = _fixed(row, widths, header)
            first = False
            print(line, file=out.stream, flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    raise Unreachable("the event stream ended: corrald stopped")
