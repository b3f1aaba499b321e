"""The tamper kinds an operator allows an agent (`corralctl tamper NAME --allow KIND`) above the
kernel: the agent model and its registry (old files, edited files), the kernel config corrald
writes and reads back (drift repaired), the API's parsing, and corrald's service without a
kernel: applied, saved before it is acknowledged, rolled back when it cannot be saved, exported
and imported with baseline documents."""

from __future__ import annotations

import asyncio
import errno
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from corral import config
from corral.contract import BadRequest, Unavailable
from corral.kernel.layout import TAMPER_KINDS
from corral.kernel.loader import AgentConfig
from corral.policy import agents as policy_agents
from corral.policy import document
from corral.policy.agents import Registry, check_tamper_kinds


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    cap = structlog.testing.LogCapture()
    monkeypatch.setattr(policy_agents, "log", structlog.wrap_logger(None, processors=[cap]))
    return cap.entries


# ---- the agent model and its registry ---------------------------------------------------------


def test_the_allowance_persists_and_old_registries_load_without_it(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create("old", mode="observe", auto_promote=False, source="local")
    doc = json.loads(Registry.encode(reg.snapshot()))
    assert doc["agents"][0]["tamper_allow"] == []
    del doc["agents"][0]["tamper_allow"]  # written before the allowance existed
    reg.path.write_text(json.dumps(doc))
    reg.load()
    assert reg.agents["old"].tamper_allow == set()
    reg.agents["old"].tamper_allow = {"raw-socket", "mount"}
    reg.save()
    assert '"tamper_allow": ["mount", "raw-socket"]' in reg.path.read_text()  # sorted
    again = Registry(tmp_path)
    again.load()
    assert again.agents["old"].tamper_allow == {"mount", "raw-socket"}
    assert again.agents["old"].to_json() == reg.agents["old"].to_json()


def test_unknown_kinds_in_an_edited_registry_are_dropped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = _captured(monkeypatch)
    reg = Registry(tmp_path)
    reg.create("x", mode="observe", auto_promote=False, source="local")
    reg.create("y", mode="observe", auto_promote=False, source="local")
    doc = json.loads(Registry.encode(reg.snapshot()))
    doc["agents"][0]["tamper_allow"] = ["mount", "teleport", 7]
    doc["agents"][1]["tamper_allow"] = None
    reg.path.write_text(json.dumps(doc))
    reg.load()  # no crash, nothing moved aside
    assert reg.agents["x"].tamper_allow == {"mount"} and reg.agents["y"].tamper_allow == set()
    assert not list(tmp_path.glob("*.corrupt-*"))
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["agent"], e["kind"]) for e in warned] == [("x", "teleport"), ("x", 7)]
    assert all(e["event"] == "tamper kind in the agent registry ignored" for e in warned)
    assert "expected one of bpf, mount, chroot" in warned[0]["error"]


def test_check_tamper_kinds_names_the_valid_ones() -> None:
    assert check_tamper_kinds(["mount", "mount", "bpf"]) == {"mount", "bpf"}
    with pytest.raises(ValueError, match="unknown tamper kind\\(s\\) 'mnt': expected one of bpf,"):
        check_tamper_kinds(["mount", "mnt"])


# ---- the API's parsing and its schema ----------------------------------------------------------


def test_the_api_parses_tamper_requests_and_says_what_is_valid() -> None:
    from corral.api.requests import parse_tamper

    assert parse_tamper({"allow": ["mount"], "deny": ["bpf"]}) == (["mount"], ["bpf"])
    assert parse_tamper({"deny": ["bpf"]}) == ([], ["bpf"])
    assert parse_tamper({"allow": []}) == ([], [])
    valid = "the kinds are bpf, mount, chroot, ptrace, raw-socket, cgroup, bpffs, signal, prctl"
    for body, message in [
        ({}, 'give "allow" and/or "deny"'),
        ({"allow": ["mnt"]}, f"\"allow\": unknown tamper kind(s) 'mnt'; {valid}"),
        ({"deny": ["bpf", 3]}, f'"deny": unknown tamper kind(s) 3; {valid}'),
        ({"allow": "mount"}, '"allow" must be a list of tamper kinds'),
        ({"allow": ["mount"], "kinds": []}, "unknown field(s) in tamper request: 'kinds'"),
        ({"allow": ["mount"], "deny": ["mount"]}, 'mount both in "allow" and "deny"'),
    ]:
        with pytest.raises(BadRequest) as info:
            parse_tamper(body)
        assert message in str(info.value), (body, str(info.value))


def test_the_openapi_kinds_are_the_kernels() -> None:
    from importlib import resources

    doc = yaml.safe_load(resources.files("corral.api").joinpath("openapi.yaml").read_text())
    assert tuple(doc["components"]["schemas"]["TamperKind"]["enum"]) == TAMPER_KINDS


def test_the_cli_kinds_are_the_kernels() -> None:
    from corral.cli.agents import TAMPER_KINDS as CLI_KINDS

    assert tuple(CLI_KINDS) == TAMPER_KINDS  # the CLI imports nothing of the daemon


# ---- in corrald, without a kernel ---------------------------------------------------------------


class FakeKernel:
    """agent_cfg as a dict of AgentConfig; every other write accepted."""

    def __init__(self) -> None:
        from corral.kernel.loader import Backends

        self.backends = Backends.choose(False)
        self.cfg: dict[int, AgentConfig] = {}
        self.writes: list[tuple[int, AgentConfig]] = []

    def set_agent(self, agent: int, cfg: AgentConfig) -> None:
        self.cfg[agent] = replace(cfg, modes=dict(cfg.modes), lists=dict(cfg.lists))
        self.writes.append((agent, self.cfg[agent]))

    def get_agent(self, agent: int) -> AgentConfig:
        return replace(self.cfg[agent])

    def counters(self, agent_id: int) -> dict[str, dict[str, int]]:
        return {d: {"denied": 0, "dropped": 0} for d in ("exec", "open", "connect")}

    def registered_cgroups(self) -> dict[int, Any]:
        return {}

    def damage(self) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: 0


@pytest.fixture
def node(tmp_path: Path) -> Any:
    from corral.app import Node

    n = Node(config.from_dict({"state_dir": str(tmp_path)}))
    n.sync.kernel = FakeKernel()  # type: ignore[assignment]
    n.status.effective = lambda dim, mode: mode  # no probe here
    return n


def test_allow_and_deny_reach_the_kernel_and_the_disk(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = structlog.testing.LogCapture()
    monkeypatch.setattr("corral.node.agents.log", structlog.wrap_logger(None, processors=[logs]))
    agent = node.sync.create_agent("sandbox", source="run")
    k = node.sync.kernel
    assert k.cfg[agent.id].tamper_allow == frozenset()  # the default: none
    assert node.agents.get_agent("sandbox")["tamper_allow"] == []

    out = asyncio.run(node.agents.set_tamper("sandbox", ["raw-socket", "mount"]))
    assert out["tamper_allow"] == ["mount", "raw-socket"]
    assert k.cfg[agent.id].tamper_allow == {"mount", "raw-socket"}
    assert k.cfg[agent.id].modes == agent.modes  # the same entry: modes unchanged
    on_disk = json.loads(node.state.registry.path.read_text())["agents"][0]
    assert on_disk["tamper_allow"] == ["mount", "raw-socket"]
    (line,) = [e for e in logs.entries if e["event"] == "tamper kinds allowed"]
    assert line["agent"] == "sandbox" and line["allowed"] == ["mount", "raw-socket"]
    assert line["by"] == "api" and line["added"] == ["mount", "raw-socket"]

    writes = len(k.writes)
    out = asyncio.run(node.agents.set_tamper("sandbox", ["mount"], []))  # nothing new
    assert out["tamper_allow"] == ["mount", "raw-socket"] and len(k.writes) == writes
    out = asyncio.run(node.agents.set_tamper("sandbox", [], ["mount", "bpf"]))
    assert out["tamper_allow"] == ["raw-socket"]
    assert k.cfg[agent.id].tamper_allow == {"raw-socket"}
    assert logs.entries[-1]["removed"] == ["mount"]
    # what the kernel's guard reads does not drift back on a mode change either
    asyncio.run(node.agents.set_mode("sandbox", {"connect": "enforce"}))
    assert k.cfg[agent.id].tamper_allow == {"raw-socket"}

    with pytest.raises(BadRequest, match="unknown tamper kind"):
        asyncio.run(node.agents.set_tamper("sandbox", ["nope"]))
    with pytest.raises(BadRequest, match="both allowed and denied"):
        asyncio.run(node.agents.set_tamper("sandbox", ["bpf"], ["bpf"]))


def test_a_change_that_cannot_be_saved_is_refused_and_undone(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = node.sync.create_agent("sandbox", source="run")
    asyncio.run(node.agents.set_tamper("sandbox", ["mount"]))

    def full(data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(node.state.registry, "write_bytes", full)
    with pytest.raises(Unavailable, match="were not changed: corrald cannot save them"):
        asyncio.run(node.agents.set_tamper("sandbox", ["bpf"], ["mount"]))
    assert agent.tamper_allow == {"mount"}
    assert node.sync.kernel.cfg[agent.id].tamper_allow == {"mount"}  # the kernel's back too


def test_drift_of_the_allowance_in_the_kernel_is_put_back(node: Any) -> None:
    """node/verify.py compares the whole agent_cfg entry: an allowance written into the
    kernel by someone else (or one taken away) is tamper, and repaired."""
    agent = node.sync.create_agent("victim", source="run")
    asyncio.run(node.agents.set_tamper("victim", ["mount"]))
    k = node.sync.kernel
    assert node.verifier.check() == 0
    k.cfg[agent.id] = replace(k.cfg[agent.id], tamper_allow=frozenset(TAMPER_KINDS))
    assert node.verifier.check() == 1
    assert k.cfg[agent.id].tamper_allow == {"mount"}
    last = node.verifier.summary()["last"]
    assert last["kind"] == "agent_cfg" and last["restored_tamper_allow"] == ["mount"]
    assert last["found_tamper_allow"] == sorted(TAMPER_KINDS)
    assert node.verifier.counts == {"agent_cfg": 1}


def test_the_allowance_goes_with_export_and_import(node: Any) -> None:
    node.sync.create_agent("a", source="run")
    asyncio.run(node.agents.set_tamper("a", ["ptrace", "mount"]))
    text = document.dump_yaml(node.baselines.export_baseline("a"))
    assert "  tamperAllow: [mount, ptrace]\n" in text

    b = node.sync.create_agent("b", source="run")
    k = node.sync.kernel
    doc = document.parse(text.replace("name: a", "name: b").encode())
    asyncio.run(node.baselines.import_baseline("b", doc, keep_modes=True))
    assert b.tamper_allow == set()  # keep_modes: the agent's own settings stay
    asyncio.run(node.baselines.import_baseline("b", doc))
    assert b.tamper_allow == {"mount", "ptrace"}
    assert k.cfg[b.id].tamper_allow == {"mount", "ptrace"}
    none = document.parse(
        text.replace("name: a", "name: b").replace("[mount, ptrace]", "[]").encode()
    )
    asyncio.run(node.baselines.import_baseline("b", none))
    assert b.tamper_allow == set() and k.cfg[b.id].tamper_allow == frozenset()
    absent = document.parse(
        text.replace("name: a", "name: b").replace("  tamperAllow: [mount, ptrace]\n", "").encode()
    )
    b.tamper_allow = {"bpf"}
    asyncio.run(node.baselines.import_baseline("b", absent))
    assert b.tamper_allow == {"bpf"}  # not given: kept

    created = document.parse(text.replace("name: a", "name: c").encode())
    asyncio.run(node.baselines.import_baseline("c", created))  # pre-seeded with it
    c = node.state.registry.get("c")
    assert c.tamper_allow == {"mount", "ptrace"} and k.cfg[c.id].tamper_allow == c.tamper_allow
