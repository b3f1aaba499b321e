"""corralctl: drive corrald over its local admin socket."""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO
from urllib.parse import quote, urlencode

import yaml

DEFAULT_SOCKET = "/run/corral/corral.sock"
ENV_SOCKET = "CORRAL_SOCKET"
DIMENSIONS = ("exec", "open", "connect")
MODES = ("observe", "alert", "enforce", "off")
REQUEST_TIMEOUT = 30.0
MAX_LIMIT = 10_000

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

PROG = "corralctl"

MODES_HELP = """\
modes (set per agent and per dimension: exec, open, connect):
  observe   learn: every exec/open/connect is allowed and added to the baseline
  alert     allow everything, but report what deviates from the baseline
  enforce   deny deviations in the kernel (the operation fails, e.g. EPERM)
  off       do not watch this dimension at all"""

EXIT_HELP = """\
exit codes:
  0    success
  1    the request failed (the daemon's message is printed as `corralctl: <message>`)
  2    usage error (bad command line)
  3    corrald is unreachable (no socket, connection refused or permission denied)
  run  exits with the command's own exit code (128+N when killed by signal N)"""

MAIN_EPILOG = f"""\
{MODES_HELP}

examples:
  corralctl status
  corralctl agents -o json
  corralctl agent prod/Deployment/chatbot/agent
  corralctl baseline demo -o yaml > demo-baseline.yaml
  corralctl baseline export demo > demo.yaml     # reviewable document (docs/baselines.md)
  corralctl baseline import demo demo.yaml --replace
  corralctl mode demo alert                  # every dimension
  corralctl mode demo --exec enforce --connect alert
  corralctl diff demo                        # what the agent did beyond its baseline
  corralctl accept demo --index 2 --connect 10.0.0.7:443
  corralctl reset demo --yes
  corralctl events -f --agent demo
  corralctl run --agent demo -- python3 agent.py
  corralctl aibom demo -o cyclonedx

environment:
  {ENV_SOCKET}   the admin socket (default {DEFAULT_SOCKET}); --socket wins

{EXIT_HELP}
"""


# ---------------------------------------------------------------------------------------------
# errors


class CliError(Exception):
    """Printed as `corralctl: <message>`; the process exits with .code."""

    code = EXIT_FAILED


class RequestFailed(CliError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(CliError):
    code = EXIT_UNREACHABLE


def _unreachable(path: str, reason: str) -> Unreachable:
    return Unreachable(
        f"cannot reach corrald ({reason}): is corrald running? start it with `make run` or "
        f"`systemctl start corrald`; socket: {path}"
    )


# ---------------------------------------------------------------------------------------------
# the client


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def agent_path(name: str, *rest: str) -> str:
    """/v1/agents/<name percent-encoded as one segment>[/rest...]"""
    return "/".join(["/v1/agents", quote(name, safe=""), *rest])


class Client:
    """A short-lived HTTP/1.1 client over the daemon's unix socket."""

    def __init__(self, socket_path: str, timeout: float | None = REQUEST_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        """body: sent as JSON; data: sent as is with content_type."""
        conn = _UnixConnection(self.socket_path, timeout)
        headers = {"Accept": accept}
        payload = data
        if body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except FileNotFoundError:
            conn.close()
            raise _unreachable(self.socket_path, "no socket") from None
        except ConnectionRefusedError:
            conn.close()
            raise _unreachable(self.socket_path, "connection refused") from None
        except PermissionError:
            conn.close()
            raise Unreachable(
                f"permission denied on {self.socket_path}: run as root or as a member of the "
                "socket's group"
            ) from None
        except TimeoutError:
            conn.close()
            raise Unreachable(
                f"corrald did not answer within {timeout:g}s; socket: {self.socket_path}"
            ) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            conn.close()
            raise _unreachable(self.socket_path, str(exc) or type(exc).__name__) from None

    def request(self, method: str, path: str, body: Any = None, **send: Any) -> Any:
        """A JSON answer. send: data/content_type for a body that is not JSON."""
        raw = self.request_raw(method, path, body, **send)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise RequestFailed(
                f"corrald sent a response that is not JSON: {raw[:200]!r}"
            ) from None

    def request_raw(self, method: str, path: str, body: Any = None, **send: Any) -> bytes:
        """The answer's bytes, as the daemon sent them (errors raised as for request)."""
        conn, resp = self._send(method, path, body, self.timeout, **send)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.socket_path, f"connection lost: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise _failure(resp.status, raw)
        return raw

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """NDJSON lines until the daemon ends the stream."""
        conn, resp = self._send("GET", path, None, self.timeout)
        try:
            if resp.status >= 400:
                raise _failure(resp.status, resp.read())
            if conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet stream is not a dead daemon
            while line := resp.readline():
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and set(item) == {"error"}:
                    raise _failure(item["error"].get("status", 500), line)
                yield item
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.socket_path, f"connection lost: {exc}") from None
        finally:
            conn.close()


def _failure(status: int, raw: bytes) -> RequestFailed:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode(errors="replace").strip()[:500] or "no details"
    return RequestFailed(str(message), status)


# ---------------------------------------------------------------------------------------------
# output


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def _yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)


def _is_time_key(key: str) -> bool:
    k = key.lower()
    return (
        k in ("ts", "time", "timestamp", "seen", "since")
        or k.startswith("last_")
        or k.endswith(("_ts", "_ns", "_time", "_at", "_seen", "_since"))
    )


def _epoch_seconds(key: str, value: Any, *, force: bool = False) -> float | None:
    """A timestamp as seconds since the epoch, when the field looks like one."""
    if not (force or _is_time_key(key)) or isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if value > 10**17:  # nanoseconds
            return value / 1e9
        return float(value) if value > 10**8 else None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def ago(epoch: float, now: float | None = None) -> str:
    """2m ago, 3h ago, in 5s ..."""
    delta = (time.time() if now is None else now) - epoch
    future, delta = delta < 0, abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            text = f"{int(delta // size)}{unit}"
            break
    else:
        text = f"{int(delta)}s"
    return f"in {text}" if future else f"{text} ago"


def _cell(key: str, value: Any, *, times: bool = False) -> str:
    epoch = _epoch_seconds(key, value, force=times)
    if epoch is not None:
        return ago(epoch)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_cell("", v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(k, v, times=times)}" for k, v in value.items()) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _is_table(value: Any) -> bool:
    return bool(value) and isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _dict_table(items: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for item in items:
        keys += [k for k in item if k not in keys]
    rows = [[_cell(k, item.get(k)) for k in keys] for item in items]
    return table([k.upper().replace("_", " ") for k in keys], rows)


def render_mapping(data: dict[str, Any], indent: int = 0, *, times: bool = False) -> list[str]:
    """Nested key: value lines; lists of objects become small tables. times: the values are
    timestamps (a parent like mode_since)."""
    pad = " " * indent
    width = max((len(str(k)) for k in data), default=0) + 1
    lines: list[str] = []
    for key, value in data.items():
        label = f"{key}:"
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{label}")
            lines += render_mapping(value, indent + 2, times=times or _is_time_key(str(key)))
        elif _is_table(value):
            lines.append(f"{pad}{label}")
            lines += [f"{pad}  {ln}" for ln in _dict_table(value).splitlines()]
        else:
            lines.append(f"{pad}{label.ljust(width)} {_cell(str(key), value, times=times)}")
    return lines


def _modes_of(agent: dict[str, Any]) -> dict[str, Any]:
    modes = agent.get("modes")
    if isinstance(modes, dict):
        return modes
    return {d: agent.get(d) for d in DIMENSIONS}


def _mode_cell(agent: dict[str, Any], dim: str) -> str:
    """The mode, starred when this node cannot apply it as set (see `effective`)."""
    mode = _cell("", _modes_of(agent).get(dim))
    effective = agent.get("effective")
    if isinstance(effective, dict) and effective.get(dim) not in (None, mode):
        return f"{mode}*"
    return mode


def _baseline_sizes(agent: dict[str, Any]) -> str:
    baseline = agent.get("baseline", agent.get("baseline_sizes"))
    if isinstance(baseline, dict) and isinstance(baseline.get("counts"), dict):
        baseline = baseline["counts"]
    if isinstance(baseline, dict):
        return "/".join(_cell("", baseline.get(d, 0)) for d in DIMENSIONS)
    return _cell("", baseline)


def _counter_totals(agent: dict[str, Any]) -> dict[str, Any]:
    """Counters summed over dimensions when they are kept per dimension."""
    counters = agent.get("counters")
    if not isinstance(counters, dict):
        return {}
    if not all(isinstance(v, dict) for v in counters.values()):
        return counters
    totals: dict[str, int] = {}
    for per_dim in counters.values():
        for k, v in per_dim.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return totals


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list | dict) else _cell("", value)


def render_agents(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return "no agents yet (start one with `corralctl run --agent NAME -- CMD`)"
    totals = [_counter_totals(a) for a in agents]
    counter_keys: list[str] = []
    for t in totals:
        counter_keys += [k for k in t if k not in counter_keys]
    extra = [k for k in ("deviations", "cgroups") if any(k in a for a in agents)]
    headers = ["NAME", "EXEC", "OPEN", "CONNECT", "BASELINE (E/O/C)"]
    headers += [k.upper().replace("_", "-") for k in [*counter_keys, *extra]]
    rows = []
    for a, t in zip(agents, totals, strict=True):
        row = [str(a.get("name", "?")), *(_mode_cell(a, d) for d in DIMENSIONS)]
        row.append(_baseline_sizes(a))
        row += [_cell("", t.get(k)) for k in counter_keys]
        row += [_count(a.get(k)) for k in extra]
        rows.append(row)
    text = table(headers, rows)
    if any(r[i].endswith("*") for r in rows for i in (1, 2, 3)):
        text += "\n* this node cannot apply the mode as set; see `corralctl agent NAME` (effective)"
    return text


def _baseline_entries(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
    """(dimension, entry) pairs, whether entries are grouped per dimension or flat."""
    source = data.get("entries", data)
    pairs: list[tuple[str, dict[str, Any]]] = []
    if isinstance(source, list):
        for e in source:
            if not isinstance(e, dict):
                return None
            pairs.append((str(e.get("dimension", "?")), e))
        return pairs
    if isinstance(source, dict) and any(d in source for d in DIMENSIONS):
        for dim in DIMENSIONS:
            group = source.get(dim) or []
            if not isinstance(group, list):
                return None
            for e in group:
                entry = e if isinstance(e, dict) else {"object": e}
                pairs.append((dim, entry))
        return pairs
    return None


_BASELINE_HEADER_SKIP = frozenset({"entries", *DIMENSIONS})


def render_baseline(data: dict[str, Any]) -> str:
    pairs = _baseline_entries(data)
    if pairs is None:
        return "\n".join(render_mapping(data))
    header = {k: v for k, v in data.items() if k not in _BASELINE_HEADER_SKIP}
    lines = render_mapping(header) + ([""] if header else [])
    if not pairs:
        return "\n".join([*lines, "the baseline is empty (still learning, or just reset)"])
    optional = [k for k in ("kind", "source") if any(k in e for _, e in pairs)]
    rows = [
        [
            dim,
            str(e.get("object", e.get("path", "?"))),
            *(_source_cell(e) if k == "source" else _cell(k, e.get(k)) for k in optional),
            _cell("hits", e.get("hits")),
            _cell("first_seen", e.get("first_seen")),
            _cell("last_seen", e.get("last_seen")),
        ]
        for dim, e in pairs
    ]
    headers = ["DIMENSION", "OBJECT", *(k.upper() for k in optional), "HITS", "FIRST SEEN",
               "LAST SEEN"]  # fmt: skip
    return "\n".join([*lines, table(headers, rows)])


def _source_cell(entry: dict[str, Any]) -> str:
    """learned / accepted / imported; "imported (learned)" when the document said learned."""
    source = _cell("source", entry.get("source"))
    origin = entry.get("origin")
    return f"{source} ({origin})" if origin else source


class _FlowMap(dict):  # type: ignore[type-arg]
    """Written on one line in YAML."""


class _ReviewDumper(yaml.SafeDumper):
    pass


_ReviewDumper.add_representer(
    _FlowMap,
    lambda d, m: d.represent_mapping("tag:yaml.org,2002:map", m.items(), flow_style=True),
)
_ENTRY_ORDER = ("index", "dimension", "object", "kind", "reason", "network", "port", "source",
                "origin", "hits", "count", "objects", "first_seen", "last_seen", "time",
                "verdicts", "comms", "note")  # fmt: skip
_TIME_FIELDS = frozenset({"first_seen", "last_seen", "learning_since", "last_novel", "time"})


def _utc(key: str, value: Any) -> Any:
    """Epoch seconds as UTC to the second (sub-second churn is noise in a diff)."""
    if key in _TIME_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _review_item(item: dict[str, Any]) -> _FlowMap:
    keys = [k for k in _ENTRY_ORDER if k in item] + sorted(set(item) - set(_ENTRY_ORDER))
    return _FlowMap((k, _utc(k, item[k])) for k in keys)


def review_yaml(data: dict[str, Any]) -> str:
    """`baseline NAME -o yaml` and `diff NAME -o yaml`: keys sorted, one line per entry or row
    with the object first, times in UTC to the second, so two dumps diff line by line."""
    out: dict[str, Any] = {}
    for key in sorted(data):
        value = data[key]
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            value = [_review_item(v) for v in value]
        out[key] = _utc(key, value)
    return yaml.dump(out, Dumper=_ReviewDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 30)  # fmt: skip


DIFF_HEADERS = ["#", "DIMENSION", "OBJECT", "KIND", "COUNT", "FIRST SEEN", "LAST SEEN",
                "VERDICT", "COMM"]  # fmt: skip


def _modes_text(modes: Any) -> str:
    if not isinstance(modes, dict):
        return ""
    return " ".join(f"{d}={modes.get(d, '?')}" for d in DIMENSIONS)


def render_diff(data: dict[str, Any]) -> str:
    agent, rows = data.get("agent", "?"), data.get("rows") or []
    modes = _modes_text(data.get("modes"))
    if not rows:
        return f"{agent}: nothing beyond the baseline ({modes})"
    n = data.get("deviations", len(rows))
    view = data.get("view", "?")
    head = f"{agent}: {n} deviation(s) beyond the baseline in {len(rows)} row(s), view {view}"
    table_rows = []
    for r in rows:
        kind = r.get("kind", "exact")
        if kind == "group":
            kind = f"group of {r.get('objects', '?')}"
        table_rows.append([
            str(r.get("index", "?")), _cell("", r.get("dimension")), str(r.get("object", "?")),
            kind, _cell("", r.get("count")), _cell("first_seen", r.get("first_seen")),
            _cell("last_seen", r.get("last_seen")), _cell("", r.get("verdicts")),
            _cell("", r.get("comms")),
        ])  # fmt: skip
    lines = [f"{head} ({modes})", "", table(DIFF_HEADERS, table_rows)]
    notes = [f"  #{r.get('index')}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    flat = " --flat" if data.get("flat") else ""
    lines += [
        "",
        f"accept rows:    corralctl accept {agent} --index N[,M...] --view {view}{flat}",
        f"accept entries: corralctl accept {agent} --exec PATH --open PATH|DIR/ "
        "--connect ADDR:PORT|CIDR:PORT",
    ]
    return "\n".join(lines)


def render_accept(name: str, data: Any) -> str:
    if not isinstance(data, dict):
        return _cell("", data)
    n = data.get("accepted", "?")
    noun = "deviation" if n == 1 else "deviations"
    lines = [f"accepted {n} {noun} into the baseline of {name}"]
    entries = data.get("entries")
    if isinstance(entries, list):
        lines[0] += f": {len(entries)} {'entry' if len(entries) == 1 else 'entries'} added"
        lines += [f"  + {e.get('dimension')} {e.get('object')} ({e.get('kind')})" for e in entries]
    for obj in data.get("skipped") or []:
        lines.append(f"  not added (cannot be an allow-list entry): {obj}")
    if "remaining" in data:
        lines.append(f"{data['remaining']} deviation(s) remain (corralctl diff {name})")
    return "\n".join(lines)


def render_import(name: str, label: str, data: Any) -> str:
    if not isinstance(data, dict):
        return _cell("", data)
    dry = data.get("dry_run")
    verb = "dry run, nothing changed: would import" if dry else "imported"
    counts = ", ".join(f"{data.get(k, '?')} {k}" for k in ("added", "removed", "kept"))
    lines = [
        f"{name}: {verb} {label} ({data.get('strategy')}, {data.get('digest')}): {counts}; "
        f"{data.get('entries', '?')} entries",
        f"modes: {_modes_text(data.get('modes'))}",
    ]
    if data.get("created"):
        lines.append(
            "the agent did not exist: it "
            + ("would be" if dry else "was")
            + " created, and uses this baseline and these modes when it first runs"
        )
    return "\n".join(lines)


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
    return [
        when,
        _cell("", agent),
        _cell("", event.get("verdict")),
        _cell("", event.get("dimension")),
        _cell("", event.get("object", event.get("path"))),
        _cell("", event.get("pid")),
        _cell("", event.get("comm")),
    ]


def render_events(events: list[dict[str, Any]]) -> str:
    if not events:
        return "no events"
    return table(EVENT_HEADERS, [event_row(e) for e in events])


class Output:
    """Prints results in the chosen format."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stdout

    def write_bytes(self, raw: bytes) -> None:
        """Bytes exactly as the daemon sent them (exports: byte-for-byte round trips)."""
        buffer = getattr(self.stream, "buffer", None)
        self.stream.flush()
        if buffer is None:
            self.stream.write(raw.decode("utf-8"))
        else:
            buffer.write(raw)
            buffer.flush()

    def emit(
        self,
        data: Any,
        render: Callable[[Any], str],
        yaml_render: Callable[[Any], str] | None = None,
    ) -> None:
        """yaml_render: a command's own YAML layout (review_yaml) instead of the generic one."""
        if self.fmt == "json":
            text = _json_text(data)
        elif self.fmt == "yaml":
            dump = yaml_render if yaml_render is not None and isinstance(data, dict) else _yaml_text
            text = dump(data).rstrip("\n")
        else:
            text = render(data)
        print(text, file=self.stream, flush=True)


# ---------------------------------------------------------------------------------------------
# commands


def _render_mapping_text(data: Any) -> str:
    if isinstance(data, dict):
        return "\n".join(render_mapping(data))
    if _is_table(data):
        return _dict_table(data)
    return _cell("", data)


def cmd_status(args: argparse.Namespace, client: Client, out: Output) -> int:
    out.emit(client.request("GET", "/v1/status"), _render_mapping_text)
    return EXIT_OK


def cmd_agents(args: argparse.Namespace, client: Client, out: Output) -> int:
    out.emit(client.request("GET", "/v1/agents"), render_agents)
    return EXIT_OK


def cmd_agent(args: argparse.Namespace, client: Client, out: Output) -> int:
    out.emit(client.request("GET", agent_path(args.name)), _render_mapping_text)
    return EXIT_OK


def cmd_baseline(args: argparse.Namespace, client: Client, out: Output) -> int:
    data = client.request("GET", agent_path(args.name, "baseline"))
    out.emit(data, lambda d: render_baseline(d) if isinstance(d, dict) else _cell("", d),
             review_yaml)  # fmt: skip
    return EXIT_OK


def cmd_baseline_export(args: argparse.Namespace, client: Client, out: Output) -> int:
    accept = "application/json" if out.fmt == "json" else "application/yaml"
    path = agent_path(args.name, "baseline") + "?format=export"
    out.write_bytes(client.request_raw("GET", path, accept=accept))
    return EXIT_OK


MAX_DOCUMENT_BYTES = 256 << 20  # what corralctl reads at most; corrald's limit is its own


def _read_document(file: str) -> bytes:
    try:
        if file == "-":
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        else:
            with open(file, "rb") as f:
                data = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CliError(f"{file} is larger than {MAX_DOCUMENT_BYTES} bytes")
    return data


def cmd_baseline_import(args: argparse.Namespace, client: Client, out: Output) -> int:
    data = _read_document(args.file)
    label = "stdin" if args.file == "-" else args.file
    query: dict[str, Any] = {"strategy": "replace" if args.replace else "merge"}
    for flag in ("keep_modes", "dry_run", "rename"):
        if getattr(args, flag):
            query[flag] = 1
    json_doc = args.file.endswith(".json")  # anything else is read as YAML (JSON is YAML too)
    try:
        result = client.request(
            "PUT",
            agent_path(args.name, "baseline") + "?" + urlencode(query),
            data=data,
            content_type="application/json" if json_doc else "application/yaml",
        )
    except RequestFailed as exc:
        if exc.status in (400, 413):
            raise RequestFailed(f"{label}: {exc}", exc.status) from None
        raise
    out.emit(result, lambda r: render_import(args.name, label, r))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, client: Client, out: Output) -> int:
    path = agent_path(args.name, "diff") + ("?flat=1" if args.flat else "")
    out.emit(client.request("GET", path), render_diff, review_yaml)
    return EXIT_OK


def _modes_line(name: str, agent: Any) -> str:
    modes = _modes_of(agent) if isinstance(agent, dict) else {}
    text = " ".join(f"{d}={modes.get(d) or '?'}" for d in DIMENSIONS)
    return f"{name}: {text}"


def cmd_mode(args: argparse.Namespace, client: Client, out: Output) -> int:
    body: dict[str, str] = {}
    if args.mode:
        body["mode"] = args.mode
    for dim in DIMENSIONS:
        if getattr(args, dim):
            body[dim] = getattr(args, dim)
    data = client.request("PUT", agent_path(args.name, "mode"), body)
    out.emit(data, lambda d: _modes_line(args.name, d))
    return EXIT_OK


def cmd_accept(args: argparse.Namespace, client: Client, out: Output) -> int:
    entries = list(args.entries)
    for dim in DIMENSIONS:
        entries += [{"dimension": dim, "object": o} for o in getattr(args, f"accept_{dim}")]
    index = list(dict.fromkeys(n for group in args.index for n in group))
    if (args.view or args.flat) and not index:
        raise _usage_error("accept: --view and --flat go with --index (rows of `diff`)")
    body: dict[str, Any] = {"entries": entries} if entries else {}
    if index:
        body["index"] = index
        if args.view:
            body["view"] = args.view
        if args.flat:
            body["flat"] = True
    data = client.request("POST", agent_path(args.name, "accept"), body)
    out.emit(data, lambda d: render_accept(args.name, d))
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_reset(args: argparse.Namespace, client: Client, out: Output) -> int:
    if not args.yes and sys.stdin.isatty():
        question = (
            f"forget the baseline of {args.name} and relearn from scratch "
            "(every dimension goes back to observe)?"
        )
        if not _confirm(question):
            raise CliError("reset cancelled (nothing changed)")
    data = client.request("DELETE", agent_path(args.name, "baseline"))
    out.emit(data, lambda d: f"baseline of {args.name} reset: every dimension observes again")
    return EXIT_OK


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
                line = json.dumps(event, sort_keys=True, ensure_ascii=False)
            elif out.fmt == "yaml":
                line = "---\n" + _yaml_text(event).rstrip("\n")
            else:
                row = event_row(event, live=True)
                header = EVENT_HEADERS if first else None
                line = _fixed(row, widths, header)
            first = False
            print(line, file=out.stream, flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    raise Unreachable("the event stream ended: corrald stopped")


def _fixed(row: list[str], widths: list[int], header: list[str] | None) -> str:
    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]])

    return (line(header) + "\n" if header else "") + line(row)


def cmd_aibom(args: argparse.Namespace, client: Client, out: Output) -> int:
    cyclonedx = args.output == "cyclonedx"
    path = agent_path(args.name, "aibom") if args.name else "/v1/aibom"
    data = client.request("GET", path + ("?format=cyclonedx" if cyclonedx else ""))
    if cyclonedx:
        print(json.dumps(data, indent=2, ensure_ascii=False), file=out.stream, flush=True)
    elif args.name:
        out.emit(data, render_aibom_agent)
    else:
        out.emit(data, render_aibom_node)
    return EXIT_OK


def _versioned(items: list[dict[str, Any]]) -> str:
    names = sorted(
        {f"{i['name']} {i['version']}" if i.get("version") else str(i["name"]) for i in items}
    )
    return ", ".join(names) or "-"


def render_aibom_node(data: dict[str, Any]) -> str:
    agents = data.get("agents") or []
    if not agents:
        return "no agents yet (start one with `corralctl run --agent NAME -- CMD`)"
    rows = []
    for a in agents:
        llm = sum(1 for e in a["endpoints"] if e["kind"] == "llm")
        kinds = sorted({e["kind"] for e in a["executables"]})
        rows.append(
            [
                a["agent"],
                "yes" if a["ai_agent"] else "no",
                _versioned(a["frameworks"]),
                _versioned(a["mcp_servers"]),
                str(len(a["models"])),
                f"{llm}/{len(a['endpoints'])}",
                ",".join(kinds) or "-",
            ]
        )
    headers = [
        "AGENT",
        "AI",
        "FRAMEWORKS",
        "MCP SERVERS",
        "MODELS",
        "ENDPOINTS (LLM/ALL)",
        "EXECUTES",
    ]
    summary = f"node {data.get('node', '?')}: {data.get('ai_agents', 0)} AI agent(s)"
    return "\n".join([summary, "", table(headers, rows)])


_AIBOM_SECTIONS: tuple[tuple[str, str, list[tuple[str, str]]], ...] = (
    (
        "frameworks",
        "FRAMEWORKS",
        [
            ("NAME", "name"),
            ("VERSION", "version"),
            ("FRAMEWORK", "framework"),
            ("ECOSYSTEM", "ecosystem"),
            ("LOCATION", "location"),
        ],
    ),
    (
        "mcp_servers",
        "MCP SERVERS",
        [("NAME", "name"), ("VERSION", "version"), ("KIND", "kind"), ("WHERE", "where")],
    ),
    (
        "models",
        "MODELS",
        [("NAME", "name"), ("FORMAT", "format"), ("REVISION", "revision"), ("PATH", "path")],
    ),
    (
        "endpoints",
        "ENDPOINTS",
        [("ENDPOINT", "object"), ("KIND", "kind"), ("RULE", "rule"), ("HOSTNAMES", "hostnames")],
    ),
    ("executables", "EXECUTABLES", [("KIND", "kind"), ("NAME", "name"), ("EXE", "exe")]),
)


def render_aibom_agent(data: dict[str, Any]) -> str:
    why = f" ({', '.join(data['reasons'])})" if data.get("reasons") else ""
    caps = data.get("capabilities", {})
    lines = [
        f"agent:        {data['agent']}",
        f"node:         {data.get('node', '?')}",
        f"ai agent:     {'yes' if data.get('ai_agent') else 'no'}{why}",
        "executes:     "
        + (", ".join(k for k in ("shell", "interpreter", "tools") if caps.get(k)) or "-"),
    ]
    for key, title, cols in _AIBOM_SECTIONS:
        items = data.get(key) or []
        lines.append("")
        if not items:
            lines.append(f"{title}: none seen")
            continue
        lines.append(title)
        headers = [h for h, _ in cols] + ["EVIDENCE", "LAST SEEN"]
        rows = []
        for item in items:
            item = {**item, "where": item.get("location") or item.get("exe")}
            evidence = ",".join(item.get("evidence", [])) + (
                " (denied)" if item.get("denied") else ""
            )
            rows.append(
                [_cell("", item.get(f)) for _, f in cols]
                + [evidence, _cell("last_seen", item.get("last_seen"))]
            )
        lines += ["  " + ln for ln in table(headers, rows).splitlines()]
    if data.get("truncated"):
        lines += ["", f"truncated (tables full): {_cell('', data['truncated'])}"]
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace, client: Client, out: Output) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise _usage_error("run: give the command to run after --, e.g. run --agent demo -- ls")
    return run_fenced(client, args.agent, command, verbose=args.verbose)


def run_fenced(client: Client, agent: str, command: list[str], *, verbose: bool = False) -> int:
    """Fork a child held on a pipe, register it with corrald, then let it exec the command."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; exercised through exit codes
        os.close(write_fd)
        _child(read_fd, command)
    os.close(read_fd)
    try:
        result = client.request("POST", agent_path(agent, "run"), {"pid": pid})
    except BaseException:
        os.close(write_fd)  # EOF: the child exits without running the command
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if verbose:
        cgroup = result.get("cgroup", "?") if isinstance(result, dict) else "?"
        print(
            f"{PROG}: running {command[0]} (pid {pid}) as agent {agent} in {cgroup}",
            file=sys.stderr,
            flush=True,
        )
    with _forward_signals(pid):
        with contextlib.suppress(BrokenPipeError):  # the child was killed meanwhile
            os.write(write_fd, b"go")
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _child(read_fd: int, command: list[str]) -> NoReturn:  # pragma: no cover
    code = 1
    try:
        if os.read(read_fd, 2) != b"go":  # corralctl failed or died: never run unfenced
            os._exit(1)
        os.close(read_fd)
        _default_signals()
        os.execvp(command[0], command)
    except OSError as exc:
        code = 127 if exc.errno == errno.ENOENT else 126
        with contextlib.suppress(OSError):
            os.write(2, f"{PROG}: cannot run {command[0]}: {exc.strerror}\n".encode())
    finally:
        os._exit(code)


def _default_signals() -> None:  # pragma: no cover - runs in the child
    """Python ignores SIGPIPE/SIGXFSZ; an exec'd command must not inherit that."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def _forward_signals(pid: int) -> Iterator[None]:
    """Like a shell: ignore ^C/^\\ (the terminal sends them to the child), pass TERM/HUP on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    saved = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGQUIT: signal.signal(signal.SIGQUIT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------
# the parser


class _UsageError(Exception):
    pass


def _usage_error(message: str) -> _UsageError:
    return _UsageError(message)


def _dim_object(value: str) -> dict[str, str]:
    dim, sep, obj = value.partition(":")
    if not sep or dim not in DIMENSIONS or not obj:
        raise argparse.ArgumentTypeError(
            f"expected DIMENSION:OBJECT with DIMENSION one of {', '.join(DIMENSIONS)}, "
            f"e.g. open:/etc/hosts or connect:10.0.0.1:443; got {value!r}"
        )
    return {"dimension": dim, "object": obj}


def _index_list(value: str) -> list[int]:
    """ "3", "1,3", "2-5" -> row numbers."""
    out: list[int] = []
    try:
        for part in value.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 1 or last < first or last - first > 10_000:
                raise ValueError
            out += range(first, last + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected row numbers from `diff` like 3, 1,4 or 2-5; got {value!r}"
        ) from None
    return out


def _add_baseline(subs: Any) -> None:
    p = _sub(
        subs,
        "baseline",
        "show, export or import an agent's baseline",
        "Show the baseline (`corralctl baseline NAME` is short for `baseline show NAME`), "
        "export it as a reviewable document, or import one (see docs/baselines.md).",
        "  corralctl baseline demo\n"
        "  corralctl baseline export demo > demo.yaml\n"
        "  corralctl baseline import demo demo.yaml --replace",
    )
    actions = p.add_subparsers(dest="baseline_action", metavar="ACTION", required=True)
    s = _sub(
        actions,
        "show",
        "show the baseline with hits and first/last seen",
        "Show the baseline: the programs the agent executes, the files it opens and the "
        "addresses it connects to, with their source (learned in observe mode, accepted, or "
        "imported), hits and first/last seen. -o yaml is diff-friendly: sorted, one line "
        "per entry, times in UTC to the second.",
        "  corralctl baseline show demo\n  corralctl baseline demo -o yaml > demo-detail.yaml",
    )
    s.add_argument("name", metavar="NAME", help="agent name")
    s.set_defaults(func=cmd_baseline)
    e = _sub(
        actions,
        "export",
        "write the baseline as a document for review (YAML; -o json for JSON)",
        "Write the baseline as a schema-versioned document (apiVersion corral.io/v1, kind "
        "Baseline) with the agent's modes: entries sorted, one per line, no timestamps or "
        "hit counts, so that a git diff shows exactly what changed. Importing it and "
        "exporting again gives the same bytes.",
        "  corralctl baseline export demo > baselines/demo.yaml\n"
        "  corralctl baseline export demo -o json",
    )
    e.add_argument("name", metavar="NAME", help="agent name")
    e.set_defaults(func=cmd_baseline_export)
    i = _sub(
        actions,
        "import",
        "load a baseline document (merge or replace); pre-seeds unknown agents",
        "Load a document made by `baseline export` (or written by hand) into the agent's "
        "baseline. --merge (the default) adds its entries; --replace makes the baseline "
        "exactly the document's. The document's modes (spec.modes) are applied unless "
        "--keep-modes. If the agent does not exist yet it is created with this baseline and "
        "these modes, and uses them when it first runs (GitOps pre-seeding). The whole "
        "document is validated first; errors name the entry (spec.exec[3]: ...) and nothing "
        "changes. In enforce, new allow-lists are filled completely before they replace the "
        "old ones in one step.",
        "  corralctl baseline import demo demo.yaml\n"
        "  corralctl baseline import demo demo.yaml --replace --dry-run\n"
        "  corralctl baseline import prod/Deployment/bot/agent staging.yaml --rename\n"
        "  corralctl baseline export a | corralctl baseline import b - --rename",
    )
    i.add_argument("name", metavar="NAME", help="agent name")
    i.add_argument("file", metavar="FILE", help="the document (YAML or JSON); - for stdin")
    how = i.add_mutually_exclusive_group()
    how.add_argument("--merge", action="store_true", help="add the entries (default)")
    how.add_argument("--replace", action="store_true", help="the baseline becomes the document")
    i.add_argument("--keep-modes", action="store_true", help="ignore spec.modes/autoPromote")
    i.add_argument("--dry-run", action="store_true", help="validate and report, change nothing")
    i.add_argument(
        "--rename", action="store_true", help="import a document whose metadata.name differs"
    )
    i.set_defaults(func=cmd_baseline_import)


def _add_diff(subs: Any) -> None:
    p = _sub(
        subs,
        "diff",
        "show what an agent did beyond its baseline",
        "Show the deviations: what the agent executed, opened or connected to in alert "
        "(would-deny) or enforce (denied/killed) mode that its baseline does not allow, with "
        "counts, first/last seen, verdicts and commands. Five or more in one directory, to "
        "one address or in one /24 on one port are grouped into one row (--flat: one row "
        "each). Rows are numbered for `corralctl accept NAME --index N --view VIEW`.",
        "  corralctl diff demo\n  corralctl diff demo --flat -o json",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument("--flat", action="store_true", help="one row per object (no groups)")
    p.set_defaults(func=cmd_diff)


def _limit(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}")
    return n


OUTPUTS = ("table", "json", "yaml")


def _add_common(
    parser: argparse.ArgumentParser, *, top: bool, outputs: Sequence[str] = OUTPUTS
) -> None:
    """--socket/-o/-v, accepted before or after the command (the later one wins)."""
    default = argparse.SUPPRESS
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=os.environ.get(ENV_SOCKET, DEFAULT_SOCKET) if top else default,
        help=f"corrald's admin socket (default: ${ENV_SOCKET} or {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=outputs,
        default="table" if top else default,
        help="output format: table (for people), json or yaml (stable, sorted keys; for "
        "scripts and diffs)"
        + (", cyclonedx (CycloneDX 1.6 JSON)" if "cyclonedx" in outputs else "")
        + ". Default: table",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else default,
        help="say more (e.g. what `run` registered)",
    )


def _prose(text: str) -> str:
    """Wrap each paragraph to the terminal; RawDescriptionHelpFormatter keeps it as is."""
    width = min(shutil.get_terminal_size().columns, 100) - 2
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def _sub(
    subs: Any,
    name: str,
    summary: str,
    prose: str,
    examples: str,
    outputs: Sequence[str] = OUTPUTS,
) -> argparse.ArgumentParser:
    description = f"{_prose(prose)}\n\n{MODES_HELP}"
    parser: argparse.ArgumentParser = subs.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"examples:\n{examples}\n\n{EXIT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, top=False, outputs=outputs)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_prose(
            "Drive corrald, the node-local daemon that fences AI agents in the kernel "
            "with BPF. Each agent moves per dimension (exec, open, connect) from observe to alert "
            "to enforce."
        ),
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, top=True)
    subs = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    p = _sub(
        subs,
        "status",
        "show the daemon's status",
        "Show corrald's status: kernel probe results (which backends are in use), node, "
        "agents per mode, kubelet health, ring-buffer drops and version.",
        "  corralctl status\n  corralctl status -o json",
    )
    p.set_defaults(func=cmd_status)

    p = _sub(
        subs,
        "agents",
        "list the agents",
        "List every agent with its mode per dimension, baseline sizes (exec/open/connect) "
        "and counters.",
        "  corralctl agents\n  corralctl agents -o yaml",
    )
    p.set_defaults(func=cmd_agents)

    p = _sub(
        subs,
        "agent",
        "show one agent in detail",
        "Show one agent: modes, counters, baseline summary, history of mode changes and workloads.",
        "  corralctl agent demo\n  corralctl agent prod/Deployment/chatbot/agent -o json",
    )
    p.add_argument(
        "name", metavar="NAME", help="agent name, e.g. demo or ns/Kind/workload/container"
    )
    p.set_defaults(func=cmd_agent)

    _add_baseline(subs)
    _add_diff(subs)

    p = _sub(
        subs,
        "mode",
        "set an agent's mode (all dimensions or per dimension)",
        "Set the mode of an agent: the positional MODE applies to every dimension; "
        "--exec/--open/--connect set one dimension each (and win over MODE). Give at "
        "least one.",
        "  corralctl mode demo alert\n"
        "  corralctl mode demo enforce --connect alert\n"
        "  corralctl mode demo --exec enforce",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument(
        "mode",
        metavar="MODE",
        nargs="?",
        choices=MODES,
        help="mode for every dimension: observe, alert, enforce or off",
    )
    for dim in DIMENSIONS:
        p.add_argument(
            f"--{dim}", metavar="MODE", choices=MODES, help=f"mode for the {dim} dimension"
        )
    p.set_defaults(func=cmd_mode)

    p = _sub(
        subs,
        "accept",
        "accept deviations into an agent's baseline",
        "Accept what the agent did outside its baseline (the deviations `corralctl diff` "
        "shows: reported in alert mode, denied in enforce mode) so that it becomes allowed. "
        "Pick rows of `diff` by number (--index; a group row accepts each of its objects; "
        "give --view as diff printed it to refuse if the rows changed meanwhile), or name "
        "entries: --exec/--open take a path, or a directory ending in / that allows "
        "everything beneath; --connect takes ADDR:PORT, CIDR:PORT or ADDR:* (every port). "
        "A named entry must cover at least one deviation and clears all it covers. Without "
        "any of these every pending deviation is accepted as it is. Entries are added to "
        "the kernel's allow-lists at once; nothing is removed.",
        "  corralctl accept demo                                 # everything pending\n"
        "  corralctl accept demo --index 1,3-4 --view 3fa2c1d0\n"
        "  corralctl accept demo --exec /usr/bin/curl --connect 10.0.0.1:443 --open /etc/x\n"
        "  corralctl accept demo --open /home/app/.cache/        # the whole directory\n"
        "  corralctl accept demo --entry open:/etc/hosts --entry exec:/usr/bin/git",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    for dim, what in (("exec", "PATH"), ("open", "PATH"), ("connect", "ADDR:PORT")):
        p.add_argument(
            f"--{dim}",
            dest=f"accept_{dim}",
            metavar=what,
            action="append",
            default=[],
            help=f"a {dim} entry to add (repeatable)",
        )
    p.add_argument(
        "--index",
        metavar="N[,M|N-M]",
        action="append",
        type=_index_list,
        default=[],
        help="rows of `corralctl diff NAME` (repeatable)",
    )
    p.add_argument("--view", metavar="VIEW", help="the view `diff` printed: refuse if changed")
    p.add_argument("--flat", action="store_true", help="--index counts rows of `diff --flat`")
    p.add_argument(
        "--entry",
        dest="entries",
        metavar="DIM:OBJECT",
        action="append",
        type=_dim_object,
        default=[],
        help="an entry as DIMENSION:OBJECT, e.g. open:/etc/hosts (repeatable)",
    )
    p.set_defaults(func=cmd_accept)

    p = _sub(
        subs,
        "reset",
        "forget an agent's baseline and relearn",
        "Forget everything learned for the agent; every dimension goes back to observe "
        "(learn & allow). Asks for confirmation on a terminal unless --yes.",
        "  corralctl reset demo\n  corralctl reset demo --yes",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_reset)

    p = _sub(
        subs,
        "events",
        "show recent events, or follow them live",
        "Show events: what agents executed, opened or connected to and the verdict "
        "(allowed, would-deny in alert mode, denied in enforce mode). Without --follow "
        "the newest events (default 100); with --follow live events until Ctrl-C "
        "(preceded by the --limit newest when --limit is given). With -o json, "
        "--follow prints one JSON object per line (NDJSON).",
        "  corralctl events\n"
        "  corralctl events --agent demo --limit 20\n"
        "  corralctl events -f\n"
        "  corralctl events -f -o json | jq .object",
    )
    p.add_argument("-f", "--follow", action="store_true", help="stream events as they happen")
    p.add_argument("--agent", metavar="NAME", help="only this agent's events")
    p.add_argument(
        "--limit", metavar="N", type=_limit, help=f"how many of the newest events (1-{MAX_LIMIT})"
    )
    p.set_defaults(func=cmd_events)

    p = _sub(
        subs,
        "aibom",
        "show what agents are made of (AI-BOM): frameworks, models, endpoints, MCP servers",
        "Show the runtime AI-BOM of the node (every agent) or of agent NAME: the AI "
        "frameworks and SDKs it loaded (with versions), the model files it opened, the "
        "endpoints it contacted (LLM APIs named when corrald resolved them), the MCP servers "
        "it ran and the shells, interpreters and tools it executed. Derived from the events "
        "and baselines corral already has. -o cyclonedx prints a CycloneDX 1.6 document.",
        "  corralctl aibom\n"
        "  corralctl aibom demo\n"
        "  corralctl aibom demo -o cyclonedx > demo.cdx.json\n"
        "  corralctl aibom -o json | jq '.agents[] | select(.ai_agent) | .agent'",
        outputs=(*OUTPUTS, "cyclonedx"),
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="agent name (default: every agent)")
    p.set_defaults(func=cmd_aibom)

    p = _sub(
        subs,
        "run",
        "run a command as a fenced agent",
        "Run CMD as agent NAME: corralctl starts the command held, asks corrald to put it "
        "into a fresh cgroup registered as the agent (created in observe mode if new), then "
        "lets it run with this terminal's stdin/stdout/stderr. It prints nothing of its own "
        "(unless -v) and exits with the command's exit code (128+N if killed by signal N). "
        "If corrald refuses, the command never starts.",
        "  corralctl run --agent demo -- python3 agent.py --task summarize\n"
        "  corralctl run --agent team/research -- sh -c 'curl -s example.com'",
    )
    p.add_argument("--agent", metavar="NAME", required=True, help="agent name")
    p.add_argument(
        "command",
        metavar="CMD",
        nargs=argparse.REMAINDER,
        help="the command and its arguments, after --",
    )
    p.set_defaults(func=cmd_run)
    return parser


# ---------------------------------------------------------------------------------------------
# main


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


_BASELINE_ACTIONS = ("show", "export", "import")
_VALUED_OPTIONS = ("--socket", "-o", "--output")


def _default_baseline_action(argv: Sequence[str]) -> list[str]:
    """`baseline NAME` means `baseline show NAME` (an agent may be called "export": use
    `baseline show export`)."""
    args = list(argv)
    i, seen_command = 0, False
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a in _VALUED_OPTIONS:
            i += 2
            continue
        if not a.startswith("-"):
            if seen_command:
                if a not in _BASELINE_ACTIONS:
                    args.insert(i, "show")
                break
            if a != "baseline":
                break
            seen_command = True
        i += 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _default_baseline_action(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command_name == "mode" and not (args.mode or args.exec or args.open or args.connect):
        _error("mode: give a MODE for every dimension or at least one of --exec/--open/--connect")
        return EXIT_USAGE
    client = Client(args.socket)
    out = Output(args.output)
    try:
        return int(args.func(args, client, out))
    except _UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except CliError as exc:
        _error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:  # e.g. `corralctl events | head`
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK

