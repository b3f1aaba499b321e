"""One MCP server, one entry. corral sees an MCP server through several records: the package
its interpreter opened (``node_modules/@modelcontextprotocol/server-filesystem/...``, with the
version from its package.json) and each exec that launched it, every one a process record with
its command line: ``npx -y @modelcontextprotocol/server-filesystem /data``, the
``sh -c mcp-server-filesystem /data`` npm runs, node running
``node_modules/.bin/mcp-server-filesystem`` (or that script itself). ``mcp_servers`` merges the
records of one server into one view: named by its package (the package record's name, or the
package.json found above a launched script, which also names the bin: a launch by bin name
alone joins it), the installed version, and every launch command line as evidence.

Pure: records in, JSON-ready views out (views.py calls it, cyclonedx.py renders its output).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .rules import canonical

Record = dict[str, Any]
COMMAND_LINE = "command line"  # version_source of a version only a launcher's argument gave


def mcp_servers(packages: Iterable[Record], processes: Iterable[Record]) -> list[Record]:
    """The MCP servers among an inventory's package and process records, one view each,
    sorted by name."""
    pkgs = [r for r in packages if r["category"] == "mcp-server"]
    procs = [r for r in processes if r["category"] == "mcp-server"]
    bins = {r["name"]: r["package"] for r in procs if r.get("package")}
    groups: dict[str, list[tuple[str, Record]]] = {}
    for r in pkgs:
        groups.setdefault(canonical(r["name"]), []).append((r["name"], r))
    for r in procs:
        name = r.get("package") or bins.get(r["name"]) or r["name"]
        groups.setdefault(canonical(name), []).append((name, r))
    views = [_server(members) for members in groups.values()]
    return sorted(views, key=lambda v: (v["name"], v["version"] or ""))


def _is_package(r: Record) -> bool:
    return "packages_dir" in r


def _installed(r: Record) -> str | None:
    """The version a record read from the installed package (METADATA, package.json, a
    dist-info name), not one a launcher asked for."""
    return r["version"] if _is_package(r) or r.get("version_source") else None


def _server(members: list[tuple[str, Record]]) -> Record:
    recs = [r for _, r in members]
    pkgs = [r for r in recs if _is_package(r)]
    procs = [r for r in recs if not _is_package(r)]
    name = next((n for n, r in members if _is_package(r)), members[0][0])
    version, source = _version(recs)
    return {
        "name": name,
        "version": version,
        "version_source": source,
        "versions": sorted({v for r in recs if (v := _installed(r))}),
        "ecosystem": _ecosystem(pkgs, procs),
        "rule": next((r["rule"] if "rule" in r else r["framework"] for r in recs), ""),
        "locations": sorted({f"{r['packages_dir']}/{r['module']}" for r in pkgs}),
        "exes": sorted({r["exe"] for r in procs}),
        "launchers": sorted({r["launcher"] for r in procs if r["launcher"]}),
        "commands": _commands(procs),
        **_evidence(recs),
    }


def _version(recs: list[Record]) -> tuple[str | None, str | None]:
    """(version, where it was read): the installed version when exactly one is known, else the
    one version launchers asked for (npx pkg@1.2), else none."""
    installed: dict[str, Record] = {}
    for r in recs:  # package records first: their source is named when both agree
        if v := _installed(r):
            installed.setdefault(v, r)
    if len(installed) == 1:
        version, r = next(iter(installed.items()))
        return version, r["version_source"]
    asked = {r["version"] for r in recs if r["version"] and not _installed(r)}
    if not installed and len(asked) == 1:
        return asked.pop(), COMMAND_LINE
    return None, None


def _ecosystem(pkgs: list[Record], procs: list[Record]) -> str | None:
    if pkgs:
        return str(pkgs[0]["ecosystem"])
    return "npm" if any(r.get("package") for r in procs) else None  # named by a package.json


def _commands(procs: list[Record]) -> list[list[str]]:
    seen: dict[tuple[str, ...], None] = {}
    for r in procs:
        for c in r.get("commands") or ([r["command"]] if r["command"] else []):
            seen.setdefault(tuple(c), None)
    return [list(c) for c in sorted(seen, key=" ".join)]


def _evidence(recs: list[Record]) -> Record:
    return {
        "first_seen": min(r["first_seen"] for r in recs),
        "last_seen": max(r["last_seen"] for r in recs),
        "events": sum(r["events"] for r in recs),
        "evidence": sorted({v for r in recs for v in r["via"]}),
        "denied": any(r["denied"] for r in recs),
    }
