"""What the node is and does right now: `corralctl status`, /metrics, and what a mode means on
this node's backend (the API's StatusService)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from corral import __version__
from corral.contract import AgentSample, Sample
from corral.kernel import dnsmaps, guard
from corral.kernel.layout import DIMS
from corral.kernel.probe import ProbeResult
from corral.kernel.recheck import Rechecker
from corral.pipeline.batch import Stats

from .cgroups import Cgroups
from .maintenance import Maintenance
from .recovery import KernelRecovery
from .state import NodeState
from .sync import KernelSync
from .verify import KernelVerifier


class StatusView:
    def __init__(
        self,
        state: NodeState,
        sync: KernelSync,
        cgroups: Cgroups,
        stats: Stats,
        ai_agents: Callable[[], int],
    ) -> None:
        self.state = state
        self.sync = sync
        self.cgroups = cgroups
        self.stats = stats
        self.ai_agents = ai_agents
        self.started = time.time()
        self.probe: ProbeResult | None = None  # set at start, before the API serves
        self.rechecker: Rechecker | None = None
        self.verifier: KernelVerifier | None = None
        self.maintenance: Maintenance | None = None
        self.recovery: KernelRecovery | None = None

    @property
    def capabilities(self) -> dict[str, dict[str, str]]:
        assert self.probe is not None
        return self.probe.capabilities

    def effective(self, dim: str, mode: str) -> str:
        """What the mode does on this node's backend (enforce on an observe-only backend)."""
        cap = self.capabilities[dim]["mode"]
        if cap in ("unwatched", "unavailable") and mode != "off":
            return f"{mode} (not watched here)"
        if cap == "lost" and mode != "off":
            return f"{mode} (NOT enforced: hook lost)"
        if mode != "enforce":
            return mode
        return {"enforce": "enforce", "kill": "enforce (kill)"}.get(
            cap, "alert (backend cannot deny)"
        )

    def status(self) -> dict[str, Any]:
        assert self.probe is not None
        cfg, kern, reg = self.state.cfg, self.sync.k, self.state.registry
        by_mode: dict[str, dict[str, int]] = {d: {} for d in DIMS}
        dropped = 0
        for a in reg.agents.values():
            for d in DIMS:
                by_mode[d][a.modes[d]] = by_mode[d].get(a.modes[d], 0) + 1
            dropped += sum(c["dropped"] for c in kern.counters(a.id).values())
        health = self.cgroups.health
        return {
            "version": __version__,
            "node": cfg.node,
            "kernel": self.probe.kernel,
            "uptime_seconds": round(time.time() - self.started, 1),
            "capabilities": self.probe.capabilities,
            "exec_lineage": self._lineage(),
            "tamper_guard": self._guard(),
            "connect_by_name": self._names(),
            "rechecks": self.rechecker.summary() if self.rechecker else None,
            "kernel_verification": self.verifier.summary() if self.verifier else None,
            "promotion": self._promotion(),
            "identity": {
                "source": cfg.identity_source(),
                "kubelet": health.to_dict() if health is not None else None,
            },
            "agents": {
                "total": len(reg.agents),
                "by_mode": by_mode,
                # agents whose syscalls host BPF does not see (node/coverage.py), and why
                "not_covered": {n: s.why for n, s in sorted(self.state.uncovered.items())},
            },
            "cgroups_registered": len(self.state.bindings),
            # agents the kernel enforces that the registry lost and nothing claimed yet
            "unclaimed_kernel_agents": self.recovery.view() if self.recovery else [],
            "events": {
                "received": self.stats.received,
                "dropped_in_kernel": dropped,
                "lost_in_daemon": self.stats.lost,
            },
            "kernel_state": {
                "pinned_at": str(cfg.pin_dir),
                "adopted": kern.adopted,
                "programs": sorted(kern.programs),
            },
        }

    def _lineage(self) -> dict[str, Any]:
        """Whether exec entries are enforced per caller here (policy/lineage.py)."""
        if self.sync.lineage:
            return {"enforced": True, "backend": self.sync.k.backends.exec}
        return {
            "enforced": False,
            "backend": self.sync.k.backends.exec,
            "why": "the fallback exec hook runs after the exec replaced the caller: every "
            "program in an agent's baseline is allowed for any of its callers",
        }

    def _names(self) -> dict[str, Any]:
        """Whether connect baselines can allow names here, and the DNS reader's counters."""
        k = self.sync.k
        if k.backends.dns != "cgroup_skb":
            return {
                "enforced": False,
                "why": "kernel.dns is off: connect entries by name allow nothing, connects "
                "are learned as addresses",
            }
        out: dict[str, Any] = {"enforced": True, "reader": "cgroup_skb/ingress"}
        try:
            out["answers"] = dnsmaps.stats(k)
        except Exception as e:  # counters are a view: status must answer without them
            out["answers_error"] = str(e)
        return out

    def _guard(self) -> dict[str, Any]:
        """What an agent (in ENFORCE in any dimension) suffers here when it tampers."""
        k = self.sync.k
        out: dict[str, Any] = {
            "backend": k.backends.guard,
            "kinds": guard.enforcement(k.backends.guard, k.guard_unattached, k.guard_error),
        }
        if k.guard_error:
            out["error"] = k.guard_error
        return out

    def _promotion(self) -> dict[str, Any]:
        m = self.maintenance
        return {
            "denial_bursts": m.bursts if m else 0,
            "last_burst": m.last_burst if m else None,
            "watching": [f"{a}/{d}" for a, d in m.watched] if m else [],
        }

    def metrics_sample(self) -> Sample:
        """What /metrics reports, read now: the kernel's per-CPU counters are summed here, at
        scrape time, never on the event path."""
        assert self.probe is not None
        kern = self.sync.k
        agents = [
            AgentSample(
                name=a.name,
                modes=dict(a.modes),
                baseline=self.state.baselines[a.name].summary()["counts"],
                counters=kern.counters(a.id),
                deviations=len(a.deviations),
                tamper=kern.tamper_counters(a.id),
                covered=a.name not in self.state.uncovered,
            )
            for a in sorted(self.state.registry.agents.values(), key=lambda a: a.name)
        ]
        health = self.cgroups.health
        return Sample(
            agents=agents,
            events_consumed=self.stats.received,
            events_lost=self.stats.lost,
            cgroups=len(self.state.bindings),
            ai_agents=self.ai_agents(),
            kubelet_last_success=health.last_success if health is not None else None,
            capabilities=self.probe.capabilities,
            kernel=self.probe.kernel,
            tamper=dict(self.verifier.counts) if self.verifier else {},
            promotion_bursts=self.maintenance.bursts if self.maintenance else 0,
        )
