"""Prometheus metrics for corrald, collected when scraped.

Nothing here mirrors the daemon's state: at scrape time the collector asks the daemon for a
`Sample` (corral.contract: modes, baseline sizes, the kernel's per-CPU counters summed) and
turns it into metric families. Only what happens between scrapes and is gone afterwards is
recorded as it happens: the kubelet's request latencies and errors (`NodeMetrics.kubelet_polled`).

Served on the admin socket (`GET /metrics`, see routes.py) and, when `metrics.listen` is set, on
a TCP address that serves /metrics only. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from corral import __version__
from corral.config import MODES
from corral.contract import AgentSample, Sample
from corral.policy.document import DIMS

log = structlog.get_logger("corral.metrics")

# Kernel counter fields (struct corral_counters) exposed as corral_agent_decisions_total{verdict}.
# "novel": allowed while observing (not yet in the baseline); "denied" includes killed execs.
TAMPER_KINDS = ("agent_cfg", "cgroup_agents", "link_detached", "link_missing", "pin_missing")
VERDICTS = ("allowed", "novel", "would_deny", "denied")


class _Collector:
    """Reads a Sample at every scrape and yields corral's metric families."""

    def __init__(self, sample: Callable[[], Sample], node: NodeMetrics) -> None:
        self._sample = sample
        self._node = node

    def collect(self) -> Iterator[Metric]:
        s = self._sample()
        yield from agent_families(s.agents)
        yield from node_families(s)
        yield from self._node.kubelet_poll_seconds.collect()
        yield from self._node.kubelet_poll_errors.collect()


def agent_families(agents: Sequence[AgentSample]) -> Iterator[Metric]:
    mode = GaugeMetricFamily(
        "corral_agent_mode",
        "1 for the agent's current mode in the dimension, 0 for the other modes.",
        labels=["agent", "dimension", "mode"],
    )
    entries = GaugeMetricFamily(
        "corral_agent_baseline_entries",
        "Entries in the agent's baseline (exact paths, prefixes, host/network:port).",
        labels=["agent", "dimension"],
    )
    decisions = CounterMetricFamily(
        "corral_agent_decisions",
        "Kernel decisions by verdict: allowed (in the baseline), novel (allowed while "
        "observing), would_deny (alert), denied (enforce: EPERM, or SIGKILL for exec on the "
        "tracepoint backend). Summed over CPUs at scrape time.",
        labels=["agent", "dimension", "verdict"],
    )
    suppressed = CounterMetricFamily(
        "corral_agent_events_suppressed",
        "Reports the kernel skipped because the same object was reported within the "
        "suppress window (the decision was still made).",
        labels=["agent", "dimension"],
    )
    dropped = CounterMetricFamily(
        "corral_agent_events_dropped",
        "Reports the kernel lost to the per-agent rate limit or a full ring buffer (the "
        "decision was still made; a baseline learnt meanwhile is marked partial).",
        labels=["agent", "dimension"],
    )
    deviations = GaugeMetricFamily(
        "corral_agent_deviations",
        "Distinct objects seen beyond the baseline, waiting for `corralctl accept`.",
        labels=["agent"],
    )
    attempts = CounterMetricFamily(
        "corral_agent_tamper_attempts",
        "What the kernel's tamper guard caught the agent doing (bpf(), mounts, ptrace outside "
        "the agent, raw sockets, cgroupfs writes, ...): would_deny (observe, alert, or a "
        "backend that cannot deny), denied (EPERM, or SIGKILL on the fallback). Never learned.",
        labels=["agent", "verdict"],
    )
    covered = GaugeMetricFamily(
        "corral_agent_covered",
        "1 when host BPF sees the agent's execs, opens and connects; 0 when its pods run in "
        "gVisor or Kata (their syscalls never reach the host kernel: an empty baseline there "
        "is not a quiet agent). `corralctl agent NAME` says why.",
        labels=["agent"],
    )
    for a in agents:
        covered.add_metric([a.name], 1.0 if a.covered else 0.0)
        for verdict in ("would_deny", "denied"):
            attempts.add_metric([a.name, verdict], a.tamper.get(verdict, 0))
        for dim in DIMS:
            for m in MODES:
                mode.add_metric([a.name, dim, m], 1.0 if a.modes.get(dim) == m else 0.0)
            entries.add_metric([a.name, dim], a.baseline.get(dim, 0))
            c = a.counters.get(dim, {})
            for verdict in VERDICTS:
                decisions.add_metric([a.name, dim, verdict], c.get(verdict, 0))
            suppressed.add_metric([a.name, dim], c.get("suppressed", 0))
            dropped.add_metric([a.name, dim], c.get("dropped", 0))
        deviations.add_metric([a.name], a.deviations)
    yield from (mode, entries, decisions, suppressed, dropped, deviations, attempts, covered)


def node_families(s: Sample) -> Iterator[Metric]:
    build = InfoMetricFamily("corral_build", "corrald's version and the running kernel.")
    build.add_metric([], {"version": __version__, "kernel": s.kernel})
    yield build
    enforcement = InfoMetricFamily(
        "corral_enforcement",
        "What ENFORCE does per dimension on this node: enforce (EPERM), kill (SIGKILL), "
        "observe-only, unwatched, or lost (the backend in use no longer seen to act at the "
        "last re-check), and the backend that decides.",
        labels=["dimension"],
    )
    for dim, cap in sorted(s.capabilities.items()):
        enforcement.add_metric(
            [dim], {"enforcement": cap.get("mode", ""), "backend": cap.get("backend", "")}
        )
    yield enforcement
    by_mode = GaugeMetricFamily(
        "corral_agents", "Agents by mode, per dimension.", labels=["dimension", "mode"]
    )
    for dim in DIMS:
        for m in MODES:
            by_mode.add_metric([dim, m], sum(1 for a in s.agents if a.modes.get(dim) == m))
    yield by_mode
    yield GaugeMetricFamily(
        "corral_ai_agents", "Agents the AI-BOM recognises as AI agents.", value=s.ai_agents
    )
    yield GaugeMetricFamily(
        "corral_cgroups", "Cgroups registered in the kernel as agents'.", value=s.cgroups
    )
    yield CounterMetricFamily(
        "corral_ringbuf_events",
        "Event records consumed from the kernel's ring buffer (rate() gives events/s).",
        value=s.events_consumed,
    )
    yield CounterMetricFamily(
        "corral_events_lost",
        "Events lost in corrald: undecodable records, or not delivered to a slow "
        "`events --follow` client.",
        value=s.events_lost,
    )
    tamper = CounterMetricFamily(
        "corral_tamper_detected",
        "Drift corrald found between the kernel and what it wrote (node/verify.py), by kind: "
        "agent_cfg, cgroup_agents, link_detached, link_missing, pin_missing. Each was put back "
        "where it could be; nothing but corrald writes there.",
        labels=["kind"],
    )
    for kind in TAMPER_KINDS:
        tamper.add_metric([kind], s.tamper.get(kind, 0))
    yield tamper
    yield CounterMetricFamily(
        "corral_promotion_denial_bursts",
        "Bursts of denials (promotion.burst_denials within promotion.burst_window) after an "
        "auto-promotion to enforce: legitimate work may be denied (corral never steps back by "
        "itself).",
        value=s.promotion_bursts,
    )
    if s.kubelet_last_success is not None:
        yield GaugeMetricFamily(
            "corral_kubelet_last_success_timestamp_seconds",
            "When the kubelet last returned a pod list (Unix time).",
            value=s.kubelet_last_success,
        )


class NodeMetrics:
    """corrald's registry: corral's families read at scrape time, the kubelet's latencies as
    they happen, and the standard process_* and python_info metrics."""

    def __init__(self, sample: Callable[[], Sample]) -> None:
        # No *_created series: in the text format they are extra gauges nobody queries (the
        # switch is process-wide; corrald's only metrics are these).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.kubelet_poll_seconds = Histogram(
            "corral_kubelet_poll_duration_seconds",
            "Duration of each GET /pods request to the kubelet, failed ones included.",
            registry=None,
        )
        self.kubelet_poll_errors = Counter(
            "corral_kubelet_poll_errors",
            "Failed GET /pods requests to the kubelet (each retry counts).",
            registry=None,
        )
        self.registry.register(_Collector(sample, self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def kubelet_polled(self, seconds: float, error: str | None) -> None:
        self.kubelet_poll_seconds.observe(seconds)
        if error is not None:
            self.kubelet_poll_errors.inc()


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition in the format the Accept header asks for (OpenMetrics or text 0.0.4);
    an Accept header prometheus_client cannot parse gets the text format."""
    try:
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type
    except (TypeError, ValueError):
        return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def response(registry: CollectorRegistry, request: web.Request) -> web.Response:
    body, content_type = render(registry, request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


class MetricsStartError(RuntimeError):
    """metrics.listen could not be bound (address in use, not local, no permission)."""


class MetricsServer:
    """GET /metrics over TCP (metrics.listen). Nothing else is served there."""

    def __init__(self, runner: web.AppRunner, address: str) -> None:
        self._runner = runner
        self.address = address

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._runner.cleanup()
        log.info("metrics listener stopped", address=self.address)


async def start_tcp(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    async def metrics(request: web.Request) -> web.Response:
        start = time.monotonic()
        resp = response(registry, request)
        log.debug("scrape", peer=request.remote, ms=round((time.monotonic() - start) * 1e3, 3))
        return resp

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics, allow_head=False)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host or None, port, reuse_address=True)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise MetricsStartError(
            f"metrics.listen {address}: cannot listen: {e.strerror or e}; choose a free port "
            "on a local address, or leave metrics.listen empty (metrics stay on the socket)"
        ) from None
    log.info("metrics listening", address=address, path="/metrics")
    return MetricsServer(runner, address)
