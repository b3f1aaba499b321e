"""Self-hosted LLM endpoints (issue 18, item 4): classified from the LLM server's process on
the node, the client SDK the connecting agent loaded, and, only as a weak hint, the port; the
evidence is in the JSON, the CycloneDX properties and the `aibom` table."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from corral.aibom import cyclonedx
from corral.aibom.inventory import AibomTracker
from corral.aibom.rulefile import load_rules
from corral.cli.aibom import render_aibom_agent
from corral.kernel.events import Event

SITE = "/home/dev/agent/.venv/lib/python3.12/site-packages"


def event(dimension: str, obj: str, port: int | None = None, pid: int = 4242) -> Event:
    common: dict[str, Any] = dict(
        ts_ns=time.time_ns(), cgroup_id=7, agent_id=3, pid=pid, tid=pid, ppid=1,
        uid=1000, comm="python3", dimension=dimension, verdict="allowed", mode="observe",
        backend="lsm", flags=(), err=0,
    )  # fmt: skip
    if dimension == "connect":
        return Event(**common, family="inet", address=obj, port=port)
    return Event(**common, path=obj)


@pytest.fixture
def tracker() -> AibomTracker:
    return AibomTracker(
        load_rules(), "/nonexistent", "node-1", baselines=dict, cgroups_of=lambda _: [],
        read_proc=False, resolve_hosts=False,
    )  # fmt: skip


def endpoints(t: AibomTracker, agent: str) -> dict[str, dict[str, Any]]:
    return {e["object"]: e for e in t.agent_view(agent)["endpoints"]}


def test_a_port_alone_is_a_hint_never_an_ai_agent(tracker: AibomTracker) -> None:
    # curl to 127.0.0.1:11434 with no ollama seen and no SDK: not an AI agent
    tracker.on_event("curl", event("exec", "/usr/bin/curl"))
    tracker.on_event("curl", event("connect", "127.0.0.1", 11434))
    e = endpoints(tracker, "curl")["127.0.0.1:11434"]
    assert (e["kind"], e["rule"], e["kind_evidence"]) == ("other", None, ["port-hint:11434"])
    assert tracker.agent_view("curl")["ai_agent"] is False
    assert tracker.ai_agents() == 0


def test_the_server_process_on_the_node_makes_it_llm(tracker: AibomTracker) -> None:
    tracker.on_event("curl", event("connect", "127.0.0.1", 11434))
    tracker.rest("curl", quiet=0)
    assert tracker.ai_agents() == 0
    # ollama runs on the node, as another agent; curl's endpoint is now the ollama server
    tracker.on_event("ollama", event("exec", "/usr/local/bin/ollama", pid=99))
    assert tracker.ai_agents() == 1  # the resting answer was made without the server
    e = endpoints(tracker, "curl")["127.0.0.1:11434"]
    assert (e["kind"], e["rule"]) == ("llm", "ollama")
    assert e["kind_evidence"] == ["server-process:ollama", "port-hint:11434"]
    view = tracker.agent_view("curl")
    assert view["ai_agent"] and view["reasons"] == ["llm endpoints"]
    # not from another host: the server seen here does not listen there
    tracker.on_event("curl", event("connect", "10.1.2.3", 11434))
    assert endpoints(tracker, "curl")["10.1.2.3:11434"]["kind"] == "other"
    exes = {x["name"]: x["kind"] for x in tracker.agent_view("ollama")["executables"]}
    assert exes == {"ollama": "llm-server"}


@pytest.mark.parametrize(
    "exe, port, rule",
    [
        ("/opt/vllm/.venv/bin/vllm", 8000, "vllm"),
        ("/usr/local/bin/llama-server", 8080, "llama.cpp"),
        ("/app/.venv/bin/litellm", 4000, "litellm"),
        ("/usr/local/bin/text-generation-launcher", 3000, "text-generation-inference"),
    ],
)
def test_servers_by_executable(tracker: AibomTracker, exe: str, port: int, rule: str) -> None:
    tracker.on_event("server", event("exec", exe, pid=50))
    tracker.on_event("client", event("connect", "127.0.0.1", port))
    e = endpoints(tracker, "client")[f"127.0.0.1:{port}"]
    assert (e["kind"], e["rule"], e["kind_evidence"][0]) == ("llm", rule, f"server-process:{rule}")


def test_a_client_sdk_makes_unknown_endpoints_llm(tracker: AibomTracker) -> None:
    for path in (
        f"{SITE}/openai/__init__.py",
        f"{SITE}/langchain_openai/chat_models/base.py",
        f"{SITE}/psycopg/__init__.py",
    ):
        tracker.on_event("rag", event("open", path))
    tracker.on_event("rag", event("connect", "10.0.5.17", 9000))  # a vLLM on another host
    tracker.on_event("rag", event("connect", "127.0.0.53", 53))  # its DNS lookups
    tracker.on_event("rag", event("connect", "10.0.5.20", 5432))  # its database
    tracker.on_event("rag", event("connect", "10.0.5.18", 8000))  # the vllm port, too
    eps = endpoints(tracker, "rag")
    sdks = ["client-sdk:langchain-openai", "client-sdk:openai"]
    assert (eps["10.0.5.17:9000"]["kind"], eps["10.0.5.17:9000"]["kind_evidence"]) == (
        "llm",
        sdks,
    )
    assert eps["10.0.5.18:8000"]["kind_evidence"] == [*sdks, "port-hint:8000"]
    assert eps["10.0.5.18:8000"]["rule"] == "vllm"
    assert eps["127.0.0.53:53"]["kind"] == eps["10.0.5.20:5432"]["kind"] == "other"
    assert eps["127.0.0.53:53"]["kind_evidence"] == []


def test_a_rule_by_host_or_cidr_wins(tracker: AibomTracker) -> None:
    tracker.on_event("a", event("open", f"{SITE}/anthropic/__init__.py"))
    tracker.names.record("api.openai.com", {"162.159.140.245"}, 0.0)
    tracker.on_event("a", event("connect", "162.159.140.245", 443))
    e = endpoints(tracker, "a")["162.159.140.245:443"]
    assert (e["kind"], e["rule"], e["kind_evidence"]) == ("llm", "openai", ["rule:openai"])


def test_the_evidence_is_in_cyclonedx_and_the_table(tracker: AibomTracker) -> None:
    tracker.on_event("ollama", event("exec", "/usr/bin/ollama", pid=99))
    tracker.on_event("curl", event("connect", "127.0.0.1", 11434))
    view = tracker.agent_view("curl")
    doc = cyclonedx.agent_bom(view)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(_json(doc)) is None
    (svc,) = doc["services"]
    props = {p["name"]: p["value"] for p in svc["properties"]}
    assert props["corral:endpoint-kind"] == "llm"
    assert props["corral:kind-evidence"] == "server-process:ollama,port-hint:11434"
    text = render_aibom_agent(view, 100)
    assert "server-process:ollama,port-hint:11434" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def _json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc)
