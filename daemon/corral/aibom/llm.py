"""Which endpoints are LLM endpoints, and on what evidence (views.py asks, per endpoint).

From the strongest evidence to the weakest:

1. a rule names the endpoint by host name or CIDR (``rule:openai``);
2. an LLM server's process (vllm, ollama, llama-server, litellm, ...: executables of kind
   ``llm-server``) was seen on the node, and the endpoint is a loopback address on the port of
   the port-only endpoint rule of the same name (``server-process:ollama``);
3. the agent has an LLM client SDK loaded (openai, anthropic, litellm, langchain-openai,
   ollama, ...) and nothing else names the endpoint (``client-sdk:openai``); never for ports
   of well-known non-HTTP services (DNS, databases, ...);
4. a port-only endpoint rule (11434 ollama, 8000 vllm, ...) is a weak hint
   (``port-hint:11434``): it is shown, but alone it leaves the kind ``other`` and never makes
   an agent an AI agent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .rules import EndpointRule

# Frameworks (rule names) and packages that are clients of an LLM API
LLM_CLIENT_FRAMEWORKS = frozenset(
    {"openai", "anthropic", "google-genai", "litellm", "ollama", "mistral", "cohere", "groq"}
)
LLM_CLIENT_PACKAGES = frozenset(
    {
        "langchain-openai",
        "langchain-anthropic",
        "langchain-ollama",
        "langchain-google-genai",
        "langchain-mistralai",
        "langchain-groq",
        "@langchain/openai",
        "@langchain/anthropic",
        "@langchain/ollama",
        "@langchain/google-genai",
        "@langchain/mistralai",
        "@langchain/groq",
        "llama-index-llms-openai",
        "llama-index-llms-ollama",
    }
)
# Ports of services an LLM client does not talk to: its DNS lookups, databases, caches
NOT_LLM_PORTS = frozenset(
    {22, 25, 53, 123, 389, 636, 2181, 3306, 5353, 5432, 6379, 9042, 9092, 11211, 27017}
)
MAX_SDKS = 3  # client-sdk evidence named per endpoint


@dataclass(frozen=True)
class Kind:
    """An endpoint's kind, the rule that gave it (None: none), and the evidence for it."""

    kind: str
    rule: str | None
    evidence: tuple[str, ...]


def is_hint(rule: EndpointRule) -> bool:
    """A rule that matches on ports alone: a weak hint, not a classification."""
    return not rule.hosts and not rule.cidrs


def client_sdks(packages: Iterable[dict[str, Any]]) -> list[str]:
    """The LLM client SDKs among an agent's package records (names, sorted)."""
    return sorted(
        {
            p["name"]
            for p in packages
            if p["framework"] in LLM_CLIENT_FRAMEWORKS or p["name"] in LLM_CLIENT_PACKAGES
        }
    )


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_network(address, strict=False).is_loopback
    except ValueError:
        return False


def classify(
    rec: dict[str, Any], rule: EndpointRule | None, sdks: list[str], servers: frozenset[str]
) -> Kind:
    """The kind of an endpoint record: rule is the endpoint rule it matches, sdks the LLM
    client SDKs its agent loaded, servers the LLM servers whose process runs on the node."""
    if rule is not None and not is_hint(rule):
        return Kind(rule.kind, rule.name, (f"rule:{rule.name}",))
    port = int(rec["port"] or 0)
    evidence: list[str] = []
    kind = "other"
    if rule is not None and rule.name in servers and _loopback(rec["address"]):
        evidence.append(f"server-process:{rule.name}")
        kind = rule.kind
    elif sdks and port not in NOT_LLM_PORTS:
        evidence += [f"client-sdk:{s}" for s in sdks[:MAX_SDKS]]
        kind = "llm"
    if rule is not None:
        evidence.append(f"port-hint:{port}")
    named = rule.name if rule is not None and kind != "other" else None
    return Kind(kind, named, tuple(evidence))
