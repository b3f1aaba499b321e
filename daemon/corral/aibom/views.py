"""What the AI-BOM shows: an agent's records (an ``Inventory``) as the JSON-ready, sorted view
the API serves (``agent_view``; cyclonedx.py renders the same view as CycloneDX; servers.py
makes one entry of each MCP server's records), and whether they make the agent an AI agent
(``is_ai``). Endpoints are classified here, at view time, with the host names DNS gave their
addresses since they were recorded."""

from __future__ import annotations

from typing import Any

from corral.policy.rules import normalise_network

from .hostnames import HostNames
from .llm import Kind, classify, client_sdks
from .records import Inventory
from .rules import AI_ENDPOINT_KINDS, Rules
from .servers import mcp_servers


def agent_view(
    inv: Inventory,
    agent: str,
    node: str,
    rules: Rules,
    names: HostNames,
    servers: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The AI-BOM of one agent, JSON-ready, sorted; servers: the LLM servers whose process
    runs on the node (llm.classify)."""
    packages = sorted(
        inv.packages.values(), key=lambda r: (r["framework"], r["name"], r["packages_dir"])
    )
    frameworks = [_package_view(r) for r in packages if r["category"] == "framework"]
    procs = sorted(inv.processes.values(), key=lambda r: (r["category"], r["name"], r["exe"]))
    mcp = mcp_servers(packages, procs)
    executables = [_process_view(r) for r in procs if r["category"] != "mcp-server"]
    models = [_model_view(r) for r in sorted(inv.models.values(), key=lambda r: r["path"])]
    sdks = client_sdks(inv.packages.values())
    endpoints = [
        _endpoint_view(r, rules, names, sdks, servers)
        for r in sorted(inv.endpoints.values(), key=lambda r: (r["address"], r["port"]))
    ]
    reasons = [
        what
        for what, present in (
            ("frameworks", frameworks),
            ("mcp servers", mcp),
            ("models", models),
            ("llm endpoints", [e for e in endpoints if e["kind"] in AI_ENDPOINT_KINDS]),
        )
        if present
    ]
    kinds = {e["kind"] for e in executables}
    return {
        "agent": agent,
        "node": node,
        "ai_agent": bool(reasons),
        "reasons": reasons,
        "capabilities": {
            "shell": "shell" in kinds,
            "interpreter": "interpreter" in kinds,
            "tools": "tool" in kinds,
        },
        "frameworks": frameworks,
        "mcp_servers": mcp,
        "models": models,
        "endpoints": endpoints,
        "executables": executables,
        "truncated": dict(inv.truncated),
    }


def is_ai(
    inv: Inventory, rules: Rules, names: HostNames, servers: frozenset[str] = frozenset()
) -> bool:
    """Does inv make its agent an AI agent (what agent_view's "ai_agent" says, cheaper; a
    resting inventory answers from its rest)?"""
    rest = inv.resting
    fresh = rest is not None and rest.rules is rules and rest.servers == servers
    if rest is not None and fresh and not rest.may_name(names):
        return rest.ai
    if inv.packages or inv.models:
        return True
    if any(r["category"] == "mcp-server" for r in inv.processes.values()):
        return True
    # no packages, so no client SDK: only rules and LLM servers' processes count
    return any(
        _endpoint_kind(r, rules, names, [], servers)[1].kind in AI_ENDPOINT_KINDS
        for r in inv.endpoints.values()
    )


def _endpoint_kind(
    r: dict[str, Any], rules: Rules, names: HostNames, sdks: list[str], servers: frozenset[str]
) -> tuple[list[str], Kind]:
    """(host names, kind and its evidence) of an endpoint record."""
    hostnames = sorted({*r["hostnames"], *(names.of(r["address"]) if not r["network"] else [])})
    net = normalise_network(r["address"])
    rule = rules.classify_endpoint(net, r["port"], hostnames)
    return hostnames, classify(r, rule, sdks, servers)


def _endpoint_view(
    r: dict[str, Any], rules: Rules, names: HostNames, sdks: list[str], servers: frozenset[str]
) -> dict[str, Any]:
    hostnames, kind = _endpoint_kind(r, rules, names, sdks, servers)
    return _view(
        r,
        ("object", "address", "port", "network"),
        hostnames=hostnames,
        kind=kind.kind,
        rule=kind.rule,
        kind_evidence=list(kind.evidence),
    )


def _view(r: dict[str, Any], fields: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """A record's fields (lists copied), extra values, and its evidence."""
    out = {f: list(r[f]) if isinstance(r[f], list) else r[f] for f in fields}
    out.update(extra)
    out.update(
        first_seen=r["first_seen"],
        last_seen=r["last_seen"],
        events=r["events"],
        evidence=list(r["via"]),
        denied=r["denied"],
    )
    return out


def _package_view(r: dict[str, Any]) -> dict[str, Any]:
    fields = ("name", "version", "framework", "ecosystem", "module", "version_source", "paths")
    return _view(r, fields, location=f"{r['packages_dir']}/{r['module']}", kind="package")


def _process_view(r: dict[str, Any]) -> dict[str, Any]:
    fields = ("name", "version", "exe", "rule", "command", "launcher")
    return _view(r, fields, kind=r["category"])


def _model_view(r: dict[str, Any]) -> dict[str, Any]:
    return _view(r, ("name", "format", "revision", "path"))
