"""baseline show/export/import, diff and accept, with the review YAML layout
(`baseline NAME -o yaml`, `diff NAME -o yaml`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import yaml

from .client import DIMENSIONS, EXIT_OK, Client, CliError, RequestFailed, _usage_error, agent_path
from .render import Output, _cell, _encodable, render_mapping, table


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
    for unicode in (True, False):  # a path that was not UTF-8 is written as "\\uDCFF" escapes
        text = yaml.dump(out, Dumper=_ReviewDumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=unicode, width=1 << 30)  # fmt: skip
        if not unicode or _encodable(text):
            break
    return text


DIFF_HEADERS = ["#", "DIMENSION", "OBJECT", "KIND", "COUNT", "FIRST SEEN", "LAST SEEN",
                "VERDICT", "COMM", "EXECUTABLES"]  # fmt: skip


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
    lineage = any(r.get("callers") for r in rows)
    for r in rows:
        kind = r.get("kind", "exact")
        if kind == "group":
            kind = f"group of {r.get('objects', '?')}"
        table_rows.append([
            str(r.get("index", "?")), _cell("", r.get("dimension")), str(r.get("object", "?")),
            kind, _cell("", r.get("count")), _cell("first_seen", r.get("first_seen")),
            _cell("last_seen", r.get("last_seen")), _cell("", r.get("verdicts")),
            _cell("", r.get("comms")), _cell("", r.get("exes")),
        ] + ([_cell("", r.get("callers"))] if lineage else []))  # fmt: skip
    headers = DIFF_HEADERS + (["CALLER"] if lineage else [])
    lines = [f"{head} ({modes})", "", table(headers, table_rows)]
    notes = [f"  #{r.get('index')}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    flat = " --flat" if data.get("flat") else ""
    lines += [
        "",
        f"accept rows:    corralctl accept {agent} --index N[,M...] --view {view}{flat}",
        f"accept entries: corralctl accept {agent} --exec PATH --open PATH|DIR/|'GLOB' "
        "--connect ADDR:PORT|CIDR:PORT|NAME:PORT",
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
        for e in entries:
            by = f" for caller {e['caller']}" if e.get("caller") else ""
            lines.append(f"  + {e.get('dimension')} {e.get('object')} ({e.get('kind')}){by}")
            if e.get("widens"):
                lines.append(f"    note: {e['widens']}")
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


def cmd_accept(args: argparse.Namespace, client: Client, out: Output) -> int:
    entries = list(args.entries)
    for dim in DIMENSIONS:
        entries += [{"dimension": dim, "object": o} for o in getattr(args, f"accept_{dim}")]
    if args.caller is not None:
        if not args.accept_exec:
            raise _usage_error("accept: --caller goes with --exec (the program it may run)")
        for e in entries:
            if e["dimension"] == "exec":
                e["caller"] = args.caller
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
