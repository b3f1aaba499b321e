"""One MCP server, one entry (aibom/servers.py): the package its interpreter opened and every
exec that launched it, merged by the package's name, with each launch command line kept."""

from __future__ import annotations

from typing import Any

from corral.aibom.servers import COMMAND_LINE, mcp_servers

CACHE = "/root/.npm/_npx/9f1c2a7be03d4e51/node_modules"
PKG = "@modelcontextprotocol/server-filesystem"
BIN = f"{CACHE}/.bin/mcp-server-filesystem"
NPX = ["node", "/usr/bin/npx", "-y", PKG, "/data"]
SH = ["sh", "-c", "mcp-server-filesystem /data"]
NODE = ["node", BIN, "/data"]


def evidence(when: float, via: str = "event") -> dict[str, Any]:
    return {"first_seen": when, "last_seen": when, "events": 1, "via": [via], "denied": False}


def package(name: str = PKG, version: str | None = "2025.8.21", when: float = 5) -> dict[str, Any]:
    return {
        "ecosystem": "npm",
        "packages_dir": CACHE,
        "module": name,
        "framework": "mcp-server",
        "category": "mcp-server",
        "name": name,
        "version": version,
        "version_source": f"{CACHE}/{name}/package.json" if version else None,
        "paths": [],
        **evidence(when),
    }


def process(name: str, exe: str, command: list[str], **extra: Any) -> dict[str, Any]:
    launcher = extra.pop("launcher", exe.rsplit("/", 1)[-1])
    return {
        "category": "mcp-server",
        "name": name,
        "exe": exe,
        "rule": "mcp-server",
        "version": None,
        "command": command,
        "launcher": launcher,
        **evidence(extra.pop("when", 1)),
        **extra,
    }


def npx_tree() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records corrald keeps of `npx -y @modelcontextprotocol/server-filesystem /data`."""
    resolved = {"package": PKG, "version": "2025.8.21", "script": "",
                "version_source": f"{CACHE}/{PKG}/package.json"}  # fmt: skip
    procs = [
        process(PKG, "/usr/bin/npx", NPX),
        process(PKG, "/usr/bin/node", NPX, when=2),
        process("mcp-server-filesystem", "/usr/bin/sh", SH, when=3),
        process("mcp-server-filesystem", "/usr/bin/node", NODE, when=4, **resolved),
        process("mcp-server-filesystem", BIN, [], launcher="", commands=[NODE], **resolved),
    ]
    return [package()], procs


def test_one_server_one_entry_with_every_launch() -> None:
    (server,) = mcp_servers(*npx_tree())
    assert (server["name"], server["version"], server["ecosystem"]) == (PKG, "2025.8.21", "npm")
    assert server["version_source"] == f"{CACHE}/{PKG}/package.json"
    assert server["commands"] == [NODE, NPX, SH]
    assert server["exes"] == sorted({"/usr/bin/npx", "/usr/bin/node", "/usr/bin/sh", BIN})
    assert server["locations"] == [f"{CACHE}/{PKG}"]
    assert server["launchers"] == ["node", "npx", "sh"]
    assert (server["first_seen"], server["last_seen"], server["events"]) == (1, 5, 6)


def test_without_the_package_json_the_launches_stay_apart() -> None:
    """Nothing names the bin's package (its package.json was not readable): the bin is shown
    under its own name rather than guessed."""
    procs = [process(PKG, "/usr/bin/npx", NPX), process("mcp-server-filesystem", BIN, [])]
    names = [s["name"] for s in mcp_servers([], procs)]
    assert names == [PKG, "mcp-server-filesystem"]


def test_versions() -> None:
    asked = process(PKG, "/usr/bin/npx", [*NPX[:3], f"{PKG}@2.0.1"], version="2.0.1")
    (server,) = mcp_servers([], [asked])
    assert (server["version"], server["version_source"], server["ecosystem"]) == (
        "2.0.1", COMMAND_LINE, None)  # fmt: skip
    (server,) = mcp_servers([package(version="2.0.2")], [asked])  # installed wins
    assert (server["version"], server["versions"]) == ("2.0.2", ["2.0.2"])
    two = [package(version="1.0.0"), {**package(version="2.0.0"), "packages_dir": "/app/nm"}]
    (server,) = mcp_servers(two, [])
    assert (server["version"], server["versions"]) == (None, ["1.0.0", "2.0.0"])
    assert len(server["locations"]) == 2


def test_python_servers_merge_by_normalised_name() -> None:
    pkg = {**package("mcp-server-fetch", "1.2"), "ecosystem": "pypi", "module": "mcp_server_fetch"}
    uvx = process("mcp-server-fetch", "/usr/bin/uvx", ["uvx", "mcp-server-fetch"])
    (server,) = mcp_servers([pkg], [uvx])
    assert (server["name"], server["version"], server["ecosystem"]) == ("mcp-server-fetch", "1.2",
                                                                        "pypi")  # fmt: skip


def test_other_records_are_not_servers() -> None:
    fw = {**package("openai", "1.2.3"), "category": "framework"}
    shell = {**process("sh", "/bin/sh", []), "category": "shell"}
    assert mcp_servers([fw], [shell]) == []
