"""The AI-BOM as CycloneDX 1.6 JSON, built with cyclonedx-python-lib (the CycloneDX project's
own library: it models every 1.6 type we need, including machine-learning-model components,
services and lifecycles, computes purls, and serialises to the schema; its validator is used
in the tests).

Mapping (input: inventory.AibomTracker.agent_view / node_view):

* the agent: metadata.component (type application) for one agent; for the node, the node is
  metadata.component (type platform) and each agent an application component with its own
  parts nested in it;
* frameworks: library components with a purl (pkg:pypi/NAME@VERSION,
  pkg:npm/%40scope/NAME@VERSION);
* MCP servers: one application component each (servers.py merged its package and launch
  records), with a purl when its package is known; every location, executable and launch
  command line is a property of its own (corral:location, corral:exe, corral:command);
* shells, interpreters and tools: application components;
* model files: machine-learning-model components (the revision of a Hugging Face snapshot is
  the version);
* endpoints: services, with tcp://HOST:PORT endpoints (each known DNS name and the address);
* dependencies: agent -> everything it uses; lifecycle phase "operations" (observed at run
  time). corral-specific facts are properties named corral:*.
"""

from __future__ import annotations

import json
from typing import Any

from cyclonedx.model import Property, XsUri
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.lifecycle import LifecyclePhase, PredefinedLifecycle
from cyclonedx.model.service import Service
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from corral import __version__

from .rules import canonical


def agent_bom(view: dict[str, Any]) -> dict[str, Any]:
    """One agent's AI-BOM (agent_view) as a CycloneDX 1.6 document."""
    bom = _bom()
    agent = _agent_component(view, "")
    bom.metadata.component = agent
    parts, services = _parts(view, "")
    for c in parts:
        bom.components.add(c)
    for s in services:
        bom.services.add(s)
    bom.register_dependency(agent, [*parts, *services])
    return _serialise(bom)


def node_bom(view: dict[str, Any]) -> dict[str, Any]:
    """The node's AI-BOM (node_view): one application component per agent."""
    bom = _bom()
    node = Component(
        type=ComponentType.PLATFORM,
        name=view["node"],
        bom_ref=f"node:{view['node']}",
        properties=[Property(name="corral:ai-agents", value=str(view["ai_agents"]))],
    )
    bom.metadata.component = node
    agents = []
    for av in view["agents"]:
        prefix = f"{av['agent']}/"
        agent = _agent_component(av, prefix)
        parts, services = _parts(av, prefix)
        for c in parts:
            agent.components.add(c)
        for s in services:
            bom.services.add(s)
        bom.components.add(agent)
        bom.register_dependency(agent, [*parts, *services])
        agents.append(agent)
    bom.register_dependency(node, agents)
    return _serialise(bom)


def _bom() -> Bom:
    bom = Bom()
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="corral", version=__version__)
    )
    bom.metadata.lifecycles = [PredefinedLifecycle(LifecyclePhase.OPERATIONS)]
    return bom


def _serialise(bom: Bom) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    return data


def _props(**values: Any) -> list[Property]:
    out = []
    for k, v in values.items():
        if v is None or v == "" or v == []:
            continue
        text = (
            ",".join(map(str, v))
            if isinstance(v, list)
            else str(v).lower()
            if isinstance(v, bool)
            else str(v)
        )
        out.append(Property(name=f"corral:{k.replace('_', '-')}", value=text))
    return out


def _agent_component(view: dict[str, Any], prefix: str) -> Component:
    caps = view["capabilities"]
    return Component(
        type=ComponentType.APPLICATION,
        name=view["agent"],
        bom_ref=f"{prefix}agent:{view['agent']}",
        properties=_props(
            ai_agent=view["ai_agent"],
            ai_agent_reasons=view["reasons"],
            node=view["node"],
            capability_shell=caps["shell"],
            capability_interpreter=caps["interpreter"],
            capability_tools=caps["tools"],
        ),
    )


def _parts(view: dict[str, Any], prefix: str) -> tuple[list[Component], list[Service]]:
    components: list[Component] = []
    for p in view["frameworks"]:
        components.append(_package(p, prefix, "framework"))
    components += [_mcp_server(m, prefix) for m in view["mcp_servers"]]
    components += [_model(m, prefix) for m in view["models"]]
    components += [_process(e, prefix) for e in view["executables"]]
    services = [_service(e, prefix) for e in view["endpoints"]]
    return components, services


def _purl(ecosystem: str, name: str, version: str | None) -> tuple[str, str | None, PackageURL]:
    """(component name, group, purl) of a package."""
    if ecosystem == "npm":
        scope, _, base = name.rpartition("/")
        purl = PackageURL(type="npm", namespace=scope or None, name=base, version=version)
        return base, scope or None, purl
    base = canonical(name)
    return base, None, PackageURL(type="pypi", name=base, version=version)


def _package(p: dict[str, Any], prefix: str, category: str) -> Component:
    name, group, purl = _purl(p["ecosystem"], p["name"], p["version"])
    return Component(
        type=ComponentType.LIBRARY,
        name=name,
        group=group,
        version=p["version"],
        purl=purl,
        bom_ref=f"{prefix}pkg:{p['ecosystem']}:{p['location']}",
        properties=_props(
            category=category,
            framework=p["framework"],
            location=p["location"],
            version_source=p["version_source"],
            evidence=p["evidence"],
        ),
    )


def _mcp_server(m: dict[str, Any], prefix: str) -> Component:
    name, group, purl = m["name"], None, None
    if m["ecosystem"] in ("npm", "pypi"):
        name, group, purl = _purl(m["ecosystem"], m["name"], m["version"])
    props = _props(
        category="mcp-server",
        rule=m["rule"],
        version_source=m["version_source"],
        versions=m["versions"] if len(m["versions"]) > 1 else None,
        launcher=m["launchers"],
        evidence=m["evidence"],
        denied=m["denied"] or None,
    )
    props += _each("location", m["locations"]) + _each("exe", m["exes"])
    props += _each("command", [" ".join(c) for c in m["commands"]])
    return Component(
        type=ComponentType.APPLICATION,
        name=name,
        group=group,
        version=m["version"],
        purl=purl,
        bom_ref=f"{prefix}mcp:{m['name']}",
        properties=props,
    )


def _each(name: str, values: list[str]) -> list[Property]:
    """One corral:NAME property per value (command lines hold commas)."""
    return [Property(name=f"corral:{name}", value=v) for v in values]


def _process(e: dict[str, Any], prefix: str) -> Component:
    return Component(
        type=ComponentType.APPLICATION,
        name=e["name"],
        version=e["version"],
        bom_ref=f"{prefix}exec:{e['kind']}:{e['name']}:{e['exe']}",
        properties=_props(
            category=e["kind"],
            exe=e["exe"],
            launcher=e["launcher"],
            command=" ".join(e["command"]),
            evidence=e["evidence"],
            denied=e["denied"] or None,
        ),
    )


def _model(m: dict[str, Any], prefix: str) -> Component:
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=m["name"],
        version=m["revision"],
        bom_ref=f"{prefix}model:{m['path']}",
        properties=_props(format=m["format"], path=m["path"], evidence=m["evidence"]),
    )


def _service(e: dict[str, Any], prefix: str) -> Service:
    port = e["port"]
    endpoints: list[XsUri] = []
    if not e["network"]:
        # cyclonedx-python-lib percent-encodes "[" and "]", which breaks IPv6 literals in
        # URIs: an IPv6 address stays in the corral:address property only.
        hosts = [*e["hostnames"], *([] if ":" in e["address"] else [e["address"]])]
        endpoints = [XsUri(f"tcp://{h}:{port}" if port else f"tcp://{h}") for h in hosts]
    name = e["rule"] or (e["hostnames"][0] if e["hostnames"] else e["object"])
    return Service(
        name=name,
        bom_ref=f"{prefix}service:{e['object']}",
        endpoints=endpoints or None,
        properties=_props(
            endpoint_kind=e["kind"],
            kind_evidence=e.get("kind_evidence"),
            address=e["address"],
            port=port or "*",
            network=e["network"] or None,
            hostnames=e["hostnames"],
            evidence=e["evidence"],
            denied=e["denied"] or None,
        ),
    )
