"""aibom: the runtime AI-BOM of the node or of one agent (table fitted to the terminal, wide
table, JSON/YAML or CycloneDX)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .client import EXIT_OK, Client, agent_path
from .render import Output, _cell, table


def cmd_aibom(args: argparse.Namespace, client: Client, out: Output) -> int:
    cyclonedx = args.output == "cyclonedx"
    path = agent_path(args.name, "aibom") if args.name else "/v1/aibom"
    data = client.request("GET", path + ("?format=cyclonedx" if cyclonedx else ""))
    if cyclonedx:
        print(json.dumps(data, indent=2, ensure_ascii=False), file=out.stream, flush=True)
    elif args.name:
        out.emit(data, lambda d: render_aibom_agent(d, out.width))
    else:
        out.emit(data, lambda d: render_aibom_node(d, out.width))
    return EXIT_OK


def _versioned(items: list[dict[str, Any]]) -> str:
    names = sorted(
        {f"{i['name']} {i['version']}" if i.get("version") else str(i["name"]) for i in items}
    )
    return ", ".join(names) or "-"


def render_aibom_node(data: dict[str, Any], width: int | None = None) -> str:
    """The node's agents, one row each; width: fit that many characters (render.table)."""
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
    return "\n".join([summary, "", table(headers, rows, width, keep=1)])  # agent names whole


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
        [("NAME", "name"), ("VERSION", "version"), ("WHERE", "where"), ("COMMANDS", "launched")],
    ),
    (
        "models",
        "MODELS",
        [("NAME", "name"), ("FORMAT", "format"), ("REVISION", "revision"), ("PATH", "path")],
    ),
    (
        "endpoints",
        "ENDPOINTS",
        [
            ("ENDPOINT", "object"),
            ("KIND", "kind"),
            ("WHY", "kind_evidence"),
            ("HOSTNAMES", "hostnames"),
        ],
    ),
    ("executables", "EXECUTABLES", [("KIND", "kind"), ("NAME", "name"), ("EXE", "exe")]),
)


def _where(item: dict[str, Any]) -> Any:
    """Where an item is: an MCP server's package locations (its executables when no package
    was seen: the command lines name them too), else the item's one location."""
    if "locations" in item:
        return item["locations"] or item.get("exes")
    return item.get("location") or item.get("exe")


def _launched(item: dict[str, Any]) -> str:
    """An MCP server's launch command lines, "; " between them."""
    return "; ".join(" ".join(c) for c in item.get("commands") or []) or "-"


def render_aibom_agent(data: dict[str, Any], width: int | None = None) -> str:
    """One agent's AI-BOM, a table per section; width: fit that many characters."""
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
            item = {**item, "where": _where(item), "launched": _launched(item)}
            evidence = ",".join(item.get("evidence", [])) + (
                " (denied)" if item.get("denied") else ""
            )
            rows.append(
                [_cell("", item.get(f)) for _, f in cols]
                + [evidence, _cell("last_seen", item.get("last_seen"))]
            )
        fit = None if width is None else width - 2
        lines += ["  " + ln for ln in table(headers, rows, fit, keep=1).splitlines()]
    if data.get("truncated"):
        lines += ["", f"truncated (tables full): {_cell('', data['truncated'])}"]
    return "\n".join(lines)
