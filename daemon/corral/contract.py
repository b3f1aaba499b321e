"""The contract between the admin API (corral/api) and the node (corral/node, corral/pipeline).

A base module: the API edge and the services that implement it both import it, neither
imports the other. The API only talks to the narrow services below (bundled as `Services`);
everything they return is JSON-ready (dicts, lists, str, int, float, bool, None). Errors are
the exceptions below, which the API maps to HTTP statuses.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from corral.policy.document import Document, Strategy

# An agent name: 1-4 segments joined by "/", e.g. "demo" or "prod/Deployment/chatbot/agent".
# Segments: letters, digits, ".", "_", "-"; at most 253 characters each, 512 in all.
AGENT_NAME_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}(/[A-Za-z0-9][A-Za-z0-9._-]{0,252}){0,3}$"
)
AGENT_NAME_MAX = 512


class ServiceError(Exception):
    """Base: the message is shown to the user as is."""

    status = 500


class BadRequest(ServiceError):
    status = 400


class UnknownAgent(ServiceError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no agent named {name!r} (list them with `corralctl agents`)")


class Forbidden(ServiceError):
    status = 403


class Conflict(ServiceError):
    status = 409


class Unavailable(ServiceError):
    """corrald cannot do it right now (e.g. its state cannot be saved); nothing was changed."""

    status = 503


def validate_agent_name(name: str) -> str:
    if len(name) > AGENT_NAME_MAX or not AGENT_NAME_RE.fullmatch(name):  # $ allows a final \n
        raise BadRequest(
            f"invalid agent name {name[:80]!r}: use 1-4 '/'-separated segments of letters, "
            "digits, '.', '_' or '-' (at most 512 characters)"
        )
    return name


class StatusService(Protocol):
    """The node as a whole (node/status.py)."""

    def status(self) -> dict[str, Any]:
        """Probe matrix, node, agents count by mode, kubelet health, ring-buffer drops, version."""


class AgentService(Protocol):
    """Agents, their modes and their cgroups (node/agents.py)."""

    def list_agents(self) -> list[dict[str, Any]]:
        """One summary per agent: name, modes per dimension, baseline sizes, counters, cgroups."""

    def get_agent(self, name: str) -> dict[str, Any]:
        """Full detail: modes, counters, baseline summary, history of transitions, workloads."""

    async def set_mode(self, name: str, modes: dict[str, str]) -> dict[str, Any]:
        """modes: {"exec"|"open"|"connect": "off"|"observe"|"alert"|"enforce"} -> the agent."""

    async def set_promotion(
        self,
        name: str,
        gates: dict[str, float | int | None],
        *,
        reset: bool = False,
        auto: bool | None = None,
    ) -> dict[str, Any]:
        """The operator's promotion gates of the agent (config.GATES fields, values checked;
        None forgets one), after forgetting them all when reset; auto turns auto-promotion on
        or off. Returns the agent (get_agent)."""

    async def set_tamper(
        self, name: str, allow: Sequence[str] = (), deny: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Allow the agent the tamper-guard kinds in allow (they pass the kernel's guard for
        this agent only; never learned) and take back those in deny. Returns the agent
        (get_agent, with its "tamper_allow")."""

    async def reset(self, name: str) -> dict[str, Any]:
        """Forget the baseline and relearn (modes go back to observe)."""

    def confined(self, pid: int) -> str | None:
        """The agent process pid is confined as (it runs in an agent's cgroup or a descendant),
        None if it is not. Raises Forbidden when its cgroup cannot be read: the admin API then
        refuses the caller rather than guess."""

    async def run_agent(self, name: str, pid: int, caller_pid: int | None) -> dict[str, Any]:
        """Move process pid (a child of caller_pid) into a fresh cgroup registered as agent name,
        creating the agent if needed. Returns {"agent": name, "cgroup": path, "cgroup_id": id}."""


class BaselineService(Protocol):
    """Baselines: read, review (diff, accept), export and import (node/baselines.py)."""

    def get_baseline(self, name: str) -> dict[str, Any]:
        """The stored baseline: entries per dimension with first/last seen and hits."""

    async def accept(
        self,
        name: str,
        entries: list[dict[str, Any]] | None,
        *,
        index: list[int] | None = None,
        view: str | None = None,
        flat: bool = False,
    ) -> dict[str, Any]:
        """Accept deviations into the baseline: all when neither entries nor index is given;
        else the listed selectors ({"dimension": ..., "object": path, "dir/" or addr:port},
        each must cover a pending deviation) and the rows of `diff` numbered in index (with
        the same flat; view, if given, must equal the diff's). Returns {"accepted": n,
        "entries": [{dimension, object, kind}], "skipped": [...], "remaining": m}."""

    def diff(self, name: str, flat: bool = False) -> dict[str, Any]:
        """Deviations beyond the baseline as numbered rows (review.py): {"agent", "modes",
        "view", "flat", "deviations", "rows": [{index, dimension, object, kind, objects,
        members, count, first_seen, last_seen, verdicts, comms, note}]}."""

    def export_baseline(self, name: str) -> dict[str, Any]:
        """The baseline as a canonical document (document.export)."""

    async def import_baseline(
        self,
        name: str,
        doc: Document,
        *,
        strategy: Strategy = "merge",
        keep_modes: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Merge or replace the baseline with a validated document, creating the agent if it
        is unknown. Returns {"agent", "created", "strategy", "digest", "dry_run", "added",
        "removed", "kept", "entries", "modes"}."""


class EventService(Protocol):
    """The events ring and live subscriptions (pipeline/feed.py)."""

    def recent_events(self, agent: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest events from the in-memory ring, oldest first."""

    def subscribe(self, agent: str | None) -> AsyncIterator[dict[str, Any]]:
        """Live events (for `events?follow=1`), ends when the daemon stops."""


class AibomService(Protocol):
    """The AI-BOM of an agent or of the node (node/aibom.py)."""

    async def aibom(self, name: str | None, fmt: str) -> dict[str, Any]:
        """The AI-BOM of agent name, or of the node when name is None; fmt "json" (corral's
        shape, see inventory.py) or "cyclonedx" (a CycloneDX 1.6 document)."""


@dataclass(frozen=True)
class Services:
    """What the admin API serves: one narrow service per concern, wired by the composition root
    (corral/app.py)."""

    status: StatusService
    agents: AgentService
    baselines: BaselineService
    events: EventService
    aibom: AibomService

    @classmethod
    def of(cls, impl: Any) -> Services:
        """One object that implements every service (test doubles of the whole daemon)."""
        return cls(status=impl, agents=impl, baselines=impl, events=impl, aibom=impl)


# ---- what /metrics reads at scrape time (api/metrics.py renders it, node/status.py builds it)


@dataclass(frozen=True)
class AgentSample:
    name: str
    modes: Mapping[str, str]  # dimension -> mode
    baseline: Mapping[str, int]  # dimension -> entries
    counters: Mapping[str, Mapping[str, int]]  # dimension -> struct corral_counters field -> n
    deviations: int  # distinct deviations waiting for review
    # the tamper guard's counters (struct corral_counters fields: would_deny, denied, ...)
    tamper: Mapping[str, int] = field(default_factory=dict)
    covered: bool = True  # False: its pods run where host BPF does not see (gVisor, Kata)


@dataclass(frozen=True)
class Sample:
    """The daemon's state at one scrape (node/status.py: StatusView.metrics_sample)."""

    agents: Sequence[AgentSample] = ()
    events_consumed: int = 0  # records read from the ring buffer
    events_lost: int = 0  # undecodable records, or dropped for a slow `events --follow` client
    cgroups: int = 0
    ai_agents: int = 0
    kubelet_last_success: float | None = None  # wall clock; None: no kubelet or never answered
    capabilities: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    kernel: str = ""
    tamper: Mapping[str, int] = field(default_factory=dict)  # kind -> drift found and reported
    promotion_bursts: int = 0  # denial bursts reported after auto-promotions to enforce
