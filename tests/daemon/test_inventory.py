"""The AI-BOM tracker and its /proc reads on real files and real processes: versions read
through /proc/<pid>/root, symlinks kept inside the process's root, argv of a live process,
derivation from a baseline (a collapsed site-packages/ prefix included), persistence,
corrupt files, and CycloneDX output of every kind of record."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from corral.aibom import cyclonedx, procfs
from corral.aibom.inventory import AibomTracker
from corral.aibom.records import Sight
from corral.aibom.rulefile import load_rules
from corral.kernel.loader import cgroup2_root
from corral.policy.baseline import Baseline
from tests.daemon import fake_ai_agent
from tests.daemon.test_api_fakes import fake_event


def make_site(root: Path, packages: dict[str, str]) -> Path:
    sp = root / "lib" / "python3.11" / "site-packages"
    for name, version in packages.items():
        (sp / name).mkdir(parents=True, exist_ok=True)
        (sp / name / "__init__.py").write_text("")
        info = sp / f"{name}-{version}.dist-info"
        info.mkdir()
        dist = name.replace("_", "-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    return sp


@pytest.fixture
def agent_cgroup() -> Iterator[list[str]]:
    """A cgroup of its own holding one process (a `sleep`) that shares this test's root: the
    tracker reads package versions through /proc/<pid>/root of an agent's processes. (This
    test's own cgroup may be the root cgroup, whose first processes can have another root,
    e.g. when the suite runs in a chroot.)"""
    cg = cgroup2_root() / f"corral-test-inv-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        (cg / "cgroup.procs").write_text(str(sleeper.pid))
        yield [str(cg)]
    finally:
        sleeper.kill()
        sleeper.wait()
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.05)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def tracker_factory(
    tmp_path: Path, agent_cgroup: list[str]
) -> AsyncIterator[Callable[..., Any]]:
    made: list[AibomTracker] = []

    async def make(baselines: dict[str, Baseline] | None = None, **kw: Any) -> AibomTracker:
        t = AibomTracker(
            load_rules(), tmp_path / "state", "node-1",
            baselines=lambda: baselines or {}, cgroups_of=lambda _: agent_cgroup,
            resolve_hosts=False, **kw,
        )  # fmt: skip
        await t.start()
        made.append(t)
        return t

    yield make
    for t in made:
        await t.stop()


# ---- procfs --------------------------------------------------------------------------------------


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("inside\n")
    pkg = root / "app" / "node_modules" / "evil"
    pkg.mkdir(parents=True)
    (pkg / "package.json").symlink_to("/etc/hostname")  # absolute: the container's /etc
    (pkg / "up").symlink_to("../../../../../../../etc/hostname")  # ".." stops at the root
    assert procfs.read_small(str(root), "/app/node_modules/evil/package.json") == b"inside\n"
    assert procfs.read_small(str(root), "/app/node_modules/evil/up") == b"inside\n"
    (root / "etc" / "hostname").unlink()
    with pytest.raises(FileNotFoundError):  # never the host's /etc/hostname
        procfs.read_small(str(root), "/app/node_modules/evil/package.json")
    loop = root / "loop"
    loop.symlink_to("loop")
    with pytest.raises(OSError, match="too many symbolic links"):
        procfs.resolve_in_root(str(root), "/loop")


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "METADATA")  # opening a FIFO must not block the reader
    with pytest.raises(OSError, match="not a regular file"):
        procfs.read_small(str(tmp_path), "/METADATA")


def test_package_versions(tmp_path: Path) -> None:
    sp = make_site(tmp_path, {"openai": "1.2.3", "google_genai": "1.0.0"})
    rel = "/" + str(sp.relative_to(tmp_path))
    root = str(tmp_path)
    got = procfs.package_version(root, "pypi", rel, "openai")
    assert got == ("openai", "1.2.3", f"{rel}/openai-1.2.3.dist-info/METADATA")
    assert procfs.package_version(root, "pypi", rel, "google/genai")[:2] == (
        "google-genai",
        "1.0.0",
    )
    # a distribution named otherwise: found through its top_level.txt
    info = sp / "pyautogen-0.2.35.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Name: pyautogen\nVersion: 0.2.35\n\nName: not-this\n")
    (info / "top_level.txt").write_text("autogen\n")
    assert procfs.package_version(root, "pypi", rel, "autogen")[:2] == ("pyautogen", "0.2.35")
    assert procfs.package_version(root, "pypi", rel, "langchain") is None
    nm = tmp_path / "srv" / "node_modules" / "@langchain" / "core"
    nm.mkdir(parents=True)
    (nm / "package.json").write_text(json.dumps({"name": "@langchain/core", "version": "0.3.1"}))
    got = procfs.package_version(root, "npm", "/srv/node_modules", "@langchain/core")
    assert got == ("@langchain/core", "0.3.1", "/srv/node_modules/@langchain/core/package.json")
    (nm / "package.json").write_text("{not json")
    assert procfs.package_version(root, "npm", "/srv/node_modules", "@langchain/core") is None


def test_the_package_of_a_script(tmp_path: Path) -> None:
    """node_modules/.bin/X is a symlink into its package: the nearest package.json with a name
    above the script's real path names it (never one above the node_modules holding it)."""
    fake_ai_agent.build_npx(tmp_path)
    root = str(tmp_path)
    rel = "/" + str(fake_ai_agent.npx_cache(tmp_path).relative_to(tmp_path))
    package = tmp_path / rel.lstrip("/") / fake_ai_agent.MCP_FS_PACKAGE
    (package / "dist" / "package.json").write_text('{"type": "module"}')  # no name: not it
    script = f"{rel}/.bin/{fake_ai_agent.MCP_FS_BIN}"
    assert procfs.script_package(root, script) == (
        fake_ai_agent.MCP_FS_PACKAGE,
        fake_ai_agent.MCP_FS_VERSION,
        f"{rel}/{fake_ai_agent.MCP_FS_PACKAGE}/package.json",
    )
    app = tmp_path / "app"
    (app / "node_modules" / ".bin").mkdir(parents=True)
    (app / "package.json").write_text('{"name": "the-app", "version": "1.0.0"}')
    (app / "node_modules" / ".bin" / "mcp-server-x").write_text("#!/bin/sh\n")
    assert procfs.script_package(root, "/app/node_modules/.bin/mcp-server-x") is None
    assert procfs.script_package(root, "/usr/local/bin/mcp-server-missing") is None
    with pytest.raises(OSError):
        procfs.script_package(str(tmp_path / "gone"), script)


def test_argv_of_a_live_process(tmp_path: Path) -> None:
    script = tmp_path / "npx"
    script.write_text("#!/bin/sh\nsleep 5\n")
    script.chmod(0o755)
    p = subprocess.Popen([str(script), "@modelcontextprotocol/server-x"])
    try:
        deadline = time.monotonic() + 5
        argv = None
        while argv is None and time.monotonic() < deadline:
            argv = procfs.matching_cmdline(p.pid, str(script))
        assert argv == ["/bin/sh", str(script), "@modelcontextprotocol/server-x"]
        assert procfs.matching_cmdline(p.pid, "/usr/bin/uvx") is None  # not what was exec'd
    finally:
        p.kill()
        p.wait()
    assert procfs.read_cmdline(p.pid) is None


# ---- the tracker ---------------------------------------------------------------------------------


async def test_events_versions_and_hints(tmp_path: Path, tracker_factory: Any) -> None:
    sp = make_site(tmp_path / "venv", {"openai": "1.2.3", "langchain": "0.3.7"})
    t = await tracker_factory()
    ev = fake_event("open", f"{sp}/langchain/__init__.py")
    t.on_event("a", ev._replace(pid=os.getpid()))
    t.on_event("a", fake_event("open", f"{sp}/openai/__init__.py"))  # pid 0: no process
    t.on_event("a", fake_event("open", f"{sp}/openai-1.2.3.dist-info/METADATA"))

    def fw() -> dict[str, Any]:
        return {f["name"]: f for f in t.agent_view("a")["frameworks"]}

    await until(lambda: fw()["langchain"]["version"] == "0.3.7")
    assert fw()["langchain"]["version_source"] == f"{sp}/langchain-0.3.7.dist-info/METADATA"
    assert fw()["openai"]["version"] == "1.2.3"
    # pid 0 is never readable; the agent's cgroup (its process shares our root) answers instead
    assert fw()["openai"]["version_source"] in (
        "dist-info directory name",
        f"{sp}/openai-1.2.3.dist-info/METADATA",
    )


async def test_an_npx_server_is_one_mcp_server(tmp_path: Path, tracker_factory: Any) -> None:
    """What corrald records of `npx -y @modelcontextprotocol/server-filesystem /data`: the
    launches (npx's and node's argv, as the cmdline jobs read them), the .bin script's exec
    and the package node opened. One server, named and versioned by the package.json found
    above the script, with both command lines; the same after a restart."""
    fake_ai_agent.build_npx(tmp_path)
    cache = fake_ai_agent.npx_cache(tmp_path)
    script = str(cache / ".bin" / fake_ai_agent.MCP_FS_BIN)
    package, version = fake_ai_agent.MCP_FS_PACKAGE, fake_ai_agent.MCP_FS_VERSION
    t = await tracker_factory()
    seen = Sight(time.time(), "event")
    npx = ["node", str(tmp_path / "bin" / "npx"), "-y", package, "/data"]
    node = ["node", script, "/data"]
    t._exec("a", "/usr/bin/npx", npx, seen)
    t.on_event("a", fake_event("exec", script)._replace(pid=os.getpid()))
    t._exec("a", "/usr/bin/node", node, seen)
    t.on_event("a", fake_event("open", f"{cache}/{package}/dist/index.js"))

    def servers() -> list[dict[str, Any]]:
        return list(t.agent_view("a")["mcp_servers"])

    await until(lambda: [(m["name"], m["version"]) for m in servers()] == [(package, version)])
    (server,) = servers()
    assert server["commands"] == [node, npx]
    assert server["exes"] == sorted(["/usr/bin/npx", "/usr/bin/node", script])
    assert server["locations"] == [f"{cache}/{package}"]
    doc = cyclonedx.agent_bom(t.agent_view("a"))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None
    (component,) = [c for c in doc["components"] if c["name"] == "server-filesystem"]
    assert component["purl"] == f"pkg:npm/%40modelcontextprotocol/server-filesystem@{version}"
    commands = [p["value"] for p in component["properties"] if p["name"] == "corral:command"]
    assert commands == [" ".join(node), " ".join(npx)]

    await t.save()
    again = await tracker_factory(read_proc=False)
    assert again.agent_view("a")["mcp_servers"] == servers()


async def test_derived_from_a_baseline_with_a_collapsed_prefix(
    tmp_path: Path, tracker_factory: Any
) -> None:
    sp = make_site(tmp_path / "venv", {"openai": "1.2.3", "langchain_core": "0.3.1"})
    b = Baseline("a")
    for i in range(25):  # > collapse_threshold children: site-packages/ becomes one prefix
        b.add("open", f"{sp}/pkg{i}/__init__.py", source="learned")
    b.add("open", "/models/llama.gguf", source="learned")
    b.add("exec", "/usr/local/bin/mcp-server-fetch", source="learned")
    b.add("connect", "127.0.0.1:11434", source="learned")
    assert [p for p, pre, _ in b.path_entries("open") if pre] == [f"{sp}/"]
    t = await tracker_factory({"a": b})

    await until(lambda: len(t.agent_view("a")["frameworks"]) == 2
                and all(f["version"] for f in t.agent_view("a")["frameworks"]))  # fmt: skip
    view = t.agent_view("a")
    assert {(f["name"], f["version"]) for f in view["frameworks"]} == {
        ("openai", "1.2.3"),
        ("langchain-core", "0.3.1"),
    }
    assert all(f["evidence"] == ["installed"] for f in view["frameworks"])
    assert [m["name"] for m in view["models"]] == ["llama.gguf"]
    assert [m["name"] for m in view["mcp_servers"]] == ["mcp-server-fetch"]
    assert [(e["object"], e["kind"]) for e in view["endpoints"]] == [("127.0.0.1:11434", "llm")]
    assert view["ai_agent"] and t.ai_agents() == 1

    # a new baseline entry shows up at the next sync, without any event
    b.add("open", "/models/other.safetensors", source="imported")
    t.sync_baselines()
    assert len(t.agent_view("a")["models"]) == 2


async def test_packages_dirs_listed_again_without_rederiving(
    tmp_path: Path, tracker_factory: Any, monkeypatch: Any
) -> None:
    """The periodic retry lists collapsed packages dirs again (a package installed later
    shows up) without reading every baseline again."""
    from corral.aibom import inventory

    sp = make_site(tmp_path / "venv", {"openai": "1.2.3"})
    b = Baseline("a")
    for i in range(25):
        b.add("open", f"{sp}/pkg{i}/__init__.py", source="learned")
    t = await tracker_factory({"a": b})
    await until(lambda: len(t.agent_view("a")["frameworks"]) == 1)

    make_site(tmp_path / "venv", {"anthropic": "0.40.0"})
    derived: list[str] = []
    monkeypatch.setattr(t, "_derive", lambda agent, _b: derived.append(agent))
    monkeypatch.setattr(inventory, "RETRY_SECONDS", 0.0)
    t._retry_versions()
    await until(lambda: len(t.agent_view("a")["frameworks"]) == 2)
    assert derived == []
    t.sync_baselines()
    assert derived == []  # the baseline did not change: nothing to derive

    b.add("open", "/models/llama.gguf", source="learned")
    t.sync_baselines()
    assert derived == ["a"]


async def test_learning_keeps_the_inventory_derived_without_rederiving(
    tmp_path: Path, tracker_factory: Any, monkeypatch: Any
) -> None:
    """corrald learns event by event and tells the tracker (learned): the baseline stays
    derived, so a learning agent is not read whole at every sync, and the directory its
    entries collapsed into is listed as a derivation would list it."""
    sp = make_site(tmp_path / "venv", {"openai": "1.2.3"})
    b = Baseline("a")
    t = await tracker_factory({"a": b})
    t.sync_baselines()
    derived: list[str] = []
    derive = t._derive
    monkeypatch.setattr(t, "_derive", lambda agent, bb: (derived.append(agent), derive(agent, bb)))
    for i in range(21):  # the 21st child collapses site-packages/ into a prefix
        ev = fake_event("open", f"{sp}/pkg{i}/__init__.py")
        before = b.revision
        assert b.observe(ev)
        t.on_event("a", ev)
        t.learned("a", b, before, "open", b.kernel_rule("open", ev.path or ""))
    assert [p for p, pre, _ in b.path_entries("open") if pre] == [f"{sp}/"]
    t.sync_baselines()
    assert derived == []
    await until(lambda: [f["name"] for f in t.agent_view("a")["frameworks"]] == ["openai"])

    b.add("open", "/models/llama.gguf", source="accepted")  # not learned: derived at the sync
    t.sync_baselines()
    assert derived == ["a"]
    assert [m["name"] for m in t.agent_view("a")["models"]] == ["llama.gguf"]


async def test_resting_inventories_answer_the_same(tmp_path: Path, tracker_factory: Any) -> None:
    """At rest an inventory saves the same bytes and counts as AI agent the same, without
    coming back; any read brings it back unchanged; DNS naming one of its addresses too."""
    t = await tracker_factory(read_proc=False)
    t.on_event("a", fake_event("exec", "/bin/bash"))
    t.on_event("a", fake_event("open", "/models/llama.gguf"))
    for i in range(50):
        t.on_event("a", fake_event("connect", f"10.0.{i}.1", 443))
    t.on_event("b", fake_event("connect", "10.9.9.9", 443))
    t.on_event("b", fake_event("connect", "10.8.0.0/16", 443))
    views = {a: t.agent_view(a) for a in ("a", "b")}
    dumps = {a: t.inventories[a].dump() for a in ("a", "b")}
    assert t.ai_agents() == 1

    assert t.rest() == 0  # just used: not quiet yet
    assert t.rest(quiet=0) == 2
    assert all(inv.resting for inv in t.inventories.values())
    assert {a: t.inventories[a].dump() for a in ("a", "b")} == dumps
    assert t.ai_agents() == 1
    t._name_endpoints()  # nothing named: nothing read
    assert all(inv.resting for inv in t.inventories.values())
    await t.save()  # dirty ones are written from the rest
    assert (tmp_path / "state" / "aibom" / "a.aibom.json").read_bytes() == dumps["a"]
    assert all(inv.resting for inv in t.inventories.values())

    assert t.agent_view("a") == views["a"]
    assert t.inventories["a"].resting is None and t.inventories["b"].resting is not None
    assert t.inventories["a"].dump() == dumps["a"]

    # DNS names b's host: b comes back, is named, and becomes an AI agent (an LLM endpoint)
    t.names.record("api.openai.com", {"10.9.9.9"}, time.time())
    assert t.ai_agents() == 2
    t._name_endpoints()
    assert t.inventories["b"].resting is None
    assert t.agent_view("b")["endpoints"][1]["hostnames"] == ["api.openai.com"]
    assert t.rest(quiet=0) == 1  # a; b has a named endpoint: the DNS pass reads it
    assert t.inventories["b"].resting is None


async def test_inventories_come_back_from_disk_at_rest(tracker_factory: Any) -> None:
    t = await tracker_factory(read_proc=False)
    for i in range(20):
        t.on_event("a", fake_event("connect", f"10.0.{i}.1", 443))
    view = t.agent_view("a")
    await t.save()
    again = await tracker_factory(read_proc=False)
    assert again.inventories["a"].resting is not None
    assert again.ai_agents() == 0 and again.inventories["a"].resting is not None
    assert again.agent_view("a") == view


async def test_inventory_waiting_for_a_version_does_not_rest(tracker_factory: Any) -> None:
    t = await tracker_factory(read_proc=False)
    t.on_event("a", fake_event("open", "/srv/app/node_modules/@anthropic-ai/sdk/index.js"))
    assert any(r["version"] is None for r in t.inventories["a"].packages.values())
    assert t.rest(quiet=0) == 0


async def test_persisted_across_restarts(tmp_path: Path, tracker_factory: Any) -> None:
    t = await tracker_factory(read_proc=False)
    t.on_event("team/a", fake_event("open", "/srv/node_modules/@anthropic-ai/sdk/index.js"))
    t.on_event("team/a", fake_event("exec", "/bin/bash"))
    before = t.agent_view("team/a")
    await t.save()
    files = list((tmp_path / "state" / "aibom").iterdir())
    assert [f.name for f in files] == ["team%2Fa.aibom.json"]
    again = await tracker_factory(read_proc=False)
    assert again.agent_view("team/a") == before

    files[0].write_text("{broken")
    third = await tracker_factory(read_proc=False)
    assert third.agent_view("team/a")["frameworks"] == []
    names = sorted(f.name for f in (tmp_path / "state" / "aibom").iterdir())
    assert names[0].startswith("team%2Fa.aibom.json.corrupt-")

    # well-formed JSON, but a record without its fields: also set aside, never a 500 later
    doc = {"schema": 1, "agent": "b", "models": {"/m.gguf": {"first_seen": 1, "last_seen": 1,
                                                             "via": ["event"]}}}  # fmt: skip
    (tmp_path / "state" / "aibom" / "b.aibom.json").write_text(json.dumps(doc))
    fourth = await tracker_factory(read_proc=False)
    assert "b" not in fourth.inventories
    assert any(f.name.startswith("b.aibom.json.corrupt-")
               for f in (tmp_path / "state" / "aibom").iterdir())  # fmt: skip


async def test_caps_count_what_was_left_out(tracker_factory: Any, monkeypatch: Any) -> None:
    from corral.aibom import records

    monkeypatch.setitem(records.CAPS, "endpoints", 2)
    t = await tracker_factory(read_proc=False)
    for port in (1, 2, 3, 4):
        t.on_event("a", fake_event("connect", "10.0.0.1", port))
    view = t.agent_view("a")
    assert len(view["endpoints"]) == 2 and view["truncated"] == {"endpoints": 2}


async def test_cyclonedx_of_every_kind_validates(tracker_factory: Any) -> None:
    t = await tracker_factory(read_proc=False)
    for ev in (
        fake_event("open", "/app/node_modules/@langchain/core/dist/index.js"),
        fake_event("open", "/usr/lib/python3/dist-packages/torch/__init__.py"),
        fake_event(
            "open", "/root/.cache/huggingface/hub/models--a--b/snapshots/r1/model.safetensors"
        ),
        fake_event("exec", "/usr/local/bin/mcp-server-git"),
        fake_event("exec", "/usr/bin/python3"),
        fake_event("connect", "::1", 11434),
        fake_event("connect", "10.1.2.3", 443),
    ):
        t.on_event("a", ev)
    b = Baseline("b")
    for i in range(20):
        b.add("connect", f"10.9.9.{i}:8000", source="learned")
    t.baselines = lambda: {"b": b}
    t.sync_baselines()
    assert any(e["network"] for e in t.agent_view("b")["endpoints"])
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    agent = cyclonedx.agent_bom(t.agent_view("a"))
    assert validator.validate_str(json.dumps(agent)) is None
    assert {c["type"] for c in agent["components"]} == {"library", "machine-learning-model",
                                                        "application"}  # fmt: skip
    purls = {c.get("purl") for c in agent["components"]}
    assert {"pkg:npm/%40langchain/core", "pkg:pypi/torch"} <= purls
    model = next(c for c in agent["components"] if c["type"] == "machine-learning-model")
    assert (model["name"], model["version"]) == ("a/b", "r1")
    node = cyclonedx.node_bom(t.node_view())
    assert validator.validate_str(json.dumps(node)) is None
    assert validator.validate_str(json.dumps({**node, "specVersion": "1.6", "version": "x"}))


def test_sys_executable_is_an_interpreter() -> None:
    hits = load_rules().classify_exec(sys.executable)
    assert [h.category for h in hits] == ["interpreter"]


async def test_an_endpoint_is_named_by_the_agents_own_dns_answer(tracker_factory: Any) -> None:
    """A connect corrald named from the agent's DNS answer (Event.host, pipeline/names.py)
    names the endpoint with no lookup of corral's own: an LLM endpoint by its answered name."""
    t = await tracker_factory(read_proc=False)
    ev = fake_event("connect", "203.0.113.7", 443)._replace(host="api.openai.com")
    t.on_event("a", ev)
    endpoint = t.agent_view("a")["endpoints"][0]
    assert endpoint["object"] == "203.0.113.7:443"
    assert endpoint["hostnames"] == ["api.openai.com"]
    assert endpoint["kind"] == "llm", endpoint
