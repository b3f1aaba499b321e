"""The API's AibomService: the AI-BOM of one agent or of the node, as corral's JSON or as
CycloneDX."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.aibom.inventory import AibomTracker
from corral.aibom.rulefile import load_rules
from corral.contract import BadRequest

from .state import NodeState


class AibomService:
    def __init__(self, state: NodeState, tracker: AibomTracker) -> None:
        self.state = state
        self.tracker = tracker

    async def aibom(self, name: str | None, fmt: str = "json") -> dict[str, Any]:
        if fmt not in ("json", "cyclonedx"):
            raise BadRequest(f"format must be json or cyclonedx; got {fmt!r}")
        if name is not None:
            self.state.agent(name)
        self.tracker.sync_baselines()  # entries accepted or imported a moment ago
        t = self.tracker
        view = t.agent_view(name) if name is not None else t.node_view()
        if fmt == "json":
            return view
        from corral.aibom import cyclonedx  # ~7 MB of CycloneDX model classes: only when asked

        render = cyclonedx.agent_bom if name is not None else cyclonedx.node_bom
        return await asyncio.to_thread(render, view)

    def ai_agents(self) -> int:
        """How many agents the AI-BOM recognises as AI agents (for metrics)."""
        return self.tracker.ai_agents()

    def reload_rules(self, rule_files: list[str]) -> None:
        """SIGHUP: read the rule files; a bad one raises ConfigError and nothing changes."""
        self.tracker.reload(load_rules(rule_files))
        self.state.cfg.aibom.rule_files = list(rule_files)
