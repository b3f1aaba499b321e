"""Metric families from a daemon sample, exposition formats, naming conventions, metrics.listen."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from corral import config
from corral.api import metrics
from corral.config import ConfigError
from corral.contract import AgentSample, Sample
from corral.kernel.layout import DIMS, MODES
from corral.kernel.loader import COUNTER_FIELDS


def _counters(**by_dim: dict[str, int]) -> dict[str, dict[str, int]]:
    return {d: {**dict.fromkeys(COUNTER_FIELDS, 0), **by_dim.get(d, {})} for d in DIMS}


SAMPLE = Sample(
    agents=[
        AgentSample(
            name="prod/Deployment/chatbot/agent",
            modes={"exec": "enforce", "open": "alert", "connect": "observe"},
            baseline={"exec": 3, "open": 40, "connect": 2},
            counters=_counters(
                exec={"allowed": 10, "denied": 2, "suppressed": 7},
                connect={"novel": 5, "dropped": 1},
            ),
            deviations=4,
        ),
        AgentSample(
            name="demo",
            modes=dict.fromkeys(DIMS, "enforce"),
            baseline={"exec": 1, "open": 1, "connect": 0},
            counters=_counters(open={"would_deny": 9}),
            deviations=0,
        ),
    ],
    events_consumed=1234,
    events_lost=3,
    cgroups=5,
    ai_agents=1,
    kubelet_last_success=1_700_000_000.5,
    capabilities={"connect": {"mode": "enforce", "backend": "cgroup", "how": "EPERM"}},
    kernel="6.18.0",
)
# Label names a corral metric may carry: all bounded but `agent` (one per agent on the node).
# kind: metrics.TAMPER_KINDS, a fixed set
BOUNDED_LABELS = {
    "dimension",
    "mode",
    "verdict",
    "version",
    "kernel",
    "backend",
    "enforcement",
    "kind",
}


def scrape(sample: Sample = SAMPLE, accept: str = "") -> tuple[str, str]:
    node = metrics.NodeMetrics(lambda: sample)
    node.kubelet_polled(0.02, None)
    node.kubelet_polled(3.0, "kubelet unreachable")
    body, content_type = metrics.render(node.registry, accept)
    return body.decode(), content_type


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_values_come_from_the_sample() -> None:
    text, content_type = scrape()
    assert content_type.startswith("text/plain; version=0.0.4")
    s = samples(text)
    a = "prod/Deployment/chatbot/agent"

    def v(name: str, **labels: str) -> float:
        return s[(name, tuple(sorted(labels.items())))]

    assert v("corral_agent_mode", agent=a, dimension="exec", mode="enforce") == 1
    assert v("corral_agent_mode", agent=a, dimension="exec", mode="observe") == 0
    assert sum(v("corral_agent_mode", agent=a, dimension="open", mode=m) for m in MODES) == 1
    assert v("corral_agent_baseline_entries", agent=a, dimension="open") == 40
    assert v("corral_agent_decisions_total", agent=a, dimension="exec", verdict="allowed") == 10
    assert v("corral_agent_decisions_total", agent=a, dimension="exec", verdict="denied") == 2
    assert v("corral_agent_decisions_total", agent=a, dimension="connect", verdict="novel") == 5
    assert v("corral_agent_decisions_total", agent="demo", dimension="open",
             verdict="would_deny") == 9  # fmt: skip
    assert v("corral_agent_events_suppressed_total", agent=a, dimension="exec") == 7
    assert v("corral_agent_events_dropped_total", agent=a, dimension="connect") == 1
    assert v("corral_agent_deviations", agent=a) == 4
    assert v("corral_agents", dimension="exec", mode="enforce") == 2
    assert v("corral_agents", dimension="connect", mode="observe") == 1
    assert v("corral_agents", dimension="connect", mode="off") == 0
    assert v("corral_ringbuf_events_total") == 1234
    assert v("corral_events_lost_total") == 3
    assert v("corral_cgroups") == 5
    assert v("corral_ai_agents") == 1
    assert v("corral_kubelet_last_success_timestamp_seconds") == 1_700_000_000.5
    assert v("corral_kubelet_poll_duration_seconds_count") == 2
    assert v("corral_kubelet_poll_duration_seconds_bucket", le="0.025") == 1
    assert v("corral_kubelet_poll_errors_total") == 1
    assert v("corral_build_info", version="0.1.0", kernel="6.18.0") == 1
    assert v("corral_enforcement_info", dimension="connect", enforcement="enforce",
             backend="cgroup") == 1  # fmt: skip
    assert ("process_cpu_seconds_total", ()) in s  # the standard process metrics


def test_names_and_labels_follow_prometheus_conventions() -> None:
    text, _ = scrape()
    corral = [f for f in text_string_to_metric_families(text) if f.name.startswith("corral_")]
    assert corral
    for family in corral:
        assert family.documentation, family.name
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
            else:
                assert not s.name.endswith("_total"), s.name
            names = set(s.labels) - {"le"}
            if family.name.startswith("corral_agent_"):
                assert "agent" in names, s.name
                names.discard("agent")
            assert names <= BOUNDED_LABELS, (s.name, names)
    durations = [f.name for f in corral if "duration" in f.name or "latency" in f.name]
    assert durations == ["corral_kubelet_poll_duration_seconds"]  # base unit in the name


def test_no_agents_and_no_kubelet() -> None:
    text, _ = scrape(Sample())
    s = samples(text)
    assert not any(name.startswith("corral_agent_") for name, _ in s)
    assert not any(name == "corral_kubelet_last_success_timestamp_seconds" for name, _ in s)
    assert s[("corral_agents", (("dimension", "exec"), ("mode", "observe")))] == 0


def test_openmetrics_on_request() -> None:
    text, content_type = scrape(accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["corral_agent_decisions"].type == "counter"
    assert families["corral_kubelet_poll_duration_seconds"].type == "histogram"


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=abc",  # prometheus_client raises on these
        "text/plain; version=x.y",
        "*/*",
        "text/html,application/xhtml+xml",
    ],
)
def test_unparseable_accept_headers_get_the_text_format(accept: str) -> None:
    text, content_type = scrape(accept=accept)
    assert content_type.startswith("text/plain")
    assert samples(text)


@given(st.text(max_size=200))
def test_any_accept_header_renders(accept: str) -> None:
    node = metrics.NodeMetrics(Sample)
    body, content_type = metrics.render(node.registry, accept)
    assert body and content_type


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", None),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("", 9464)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses(raw: str, parsed: tuple[str, int] | None) -> None:
    assert config.parse_listen(raw, "metrics.listen") == parsed
    assert config.from_dict({"metrics": {"listen": raw}}).metrics.listen == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("9464", r"metrics\.listen: '9464' has no port"),
        ("127.0.0.1", r"has no port 1-65535 \(use HOST:PORT"),
        ("127.0.0.1:0", "has no port"),
        ("127.0.0.1:65536", "has no port"),
        ("::1:9464", r"'::1' is not a host name or address .*\[IPV6\]:PORT"),
        ("[nope]:9464", r"'\[nope\]' is not an IPv6 address"),
        ("a b:80", "is not a host name"),
        (9464, r"metrics\.listen: expected a string"),
    ],
)
def test_bad_listen_addresses_name_the_field_and_the_fix(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.from_dict({"metrics": {"listen": raw}})


def test_metrics_are_off_over_tcp_by_default() -> None:
    assert config.Config().metrics.listen == ""
