"""The real-agent corpus: agents built from real, unmodified third-party packages (the OpenAI and
Anthropic SDKs, the official MCP Python SDK with the npm MCP filesystem server through npx,
LangGraph/LangChain), run under a real corrald in real cgroups against stand-in LLMs on
loopback. Per agent: learn LEARN_RUNS runs (observe), ALERT_RUNS legitimate runs (alert: their
deviations are false positives), then each injected action (enforce). Writes
docs/realagents.md. `make realagents-deps` installs the packages (make test-host does).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_api_fakes import short_tmpdir
from tests.realagents.harness import (
    AGENTS,
    AgentResult,
    AgentSpec,
    Harness,
    corpus_ready,
    corpus_world,
)
from tests.realagents.report import Report, write_report

# The target is no false positive at all: a legitimate run whose temp files, logs and caches
# are named anew each time must not deviate (what the learned path patterns of the baseline
# model are for). This switch is the one place that says whether that is required (True) or
# only reported in docs/realagents.md (False).
REQUIRE_ZERO_FALSE_POSITIVES = True
LEARN_RUNS = 4
ALERT_RUNS = 4
# CORRAL_REALAGENTS_REPORT=PATH writes the report elsewhere (e.g. a run against other code)
REPORT = Path(
    os.environ.get("CORRAL_REALAGENTS_REPORT")
    or ("/tmp/realagents.md" if os.environ.get("CORRAL_VM_SUITE") else "")
    or Path(__file__).resolve().parents[2] / "docs" / "realagents.md"
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups"),
    pytest.mark.skipif(bool(corpus_ready()), reason=corpus_ready() or "ready"),
]


@pytest.fixture(scope="module")
def report() -> Iterator[Report]:
    rep = Report(learn_runs=LEARN_RUNS, alert_runs=ALERT_RUNS, zero_fp=REQUIRE_ZERO_FALSE_POSITIVES)
    t0 = time.monotonic()
    yield rep
    rep.seconds = time.monotonic() - t0
    write_report(rep, REPORT)
    if os.environ.get("CORRAL_VM_SUITE") and REPORT.exists():  # the guest's files are gone
        print(f"\n=== BEGIN realagents-report {platform.release()}\n{REPORT.read_text()}"
              f"=== END realagents-report", flush=True)  # fmt: skip


@pytest.fixture(scope="module")
def harness(report: Report) -> Iterator[Harness]:
    with short_tmpdir() as base, corpus_world(base) as h:
        report.kernel = platform.release()
        report.capabilities = h.corral.json("status")["capabilities"]
        yield h


# The VM suite (BPF LSM, QEMU without KVM: ~10x slower) runs one agent, in the newest kernel's
# BPF LSM boot (make test-vm-corpus): the OpenAI SDK agent, the lightest (the MCP one, node and npx
# under TCG, did not answer its first run within 180 s).
VM_AGENT = "openai-triage"


def _marks(spec: AgentSpec) -> list[pytest.MarkDecorator]:
    return [pytest.mark.userspace] if spec.name == VM_AGENT else [pytest.mark.host_only]


@pytest.mark.parametrize("spec", [pytest.param(a, id=a.name, marks=_marks(a)) for a in AGENTS])
def test_real_agent(harness: Harness, report: Report, spec: AgentSpec) -> None:
    result = harness.exercise(spec, LEARN_RUNS, ALERT_RUNS)
    report.agents.append(result)
    problems = failures(result)
    assert not problems, f"{spec.name}:\n  " + "\n  ".join(problems)


def failures(result: AgentResult) -> list[str]:
    """Everything that should have held for one agent, each saying which run or action."""
    if result.error:
        return [f"stopped early: {result.error}"]
    out = []
    for a in result.actions:
        what = f"injected action {a.injection.key} ({a.injection.title})"
        if a.must_block and not a.blocked:
            out.append(f"{what}: {a.result}, but this backend must block {a.must_block}")
        if a.blocked and a.loot:
            out.append(f"{what}: reported {a.result}, yet {a.loot} request(s) reached the sink")
        if not a.reported:
            out.append(f"{what}: corral reported none of its objects ({a.details})")
    if REQUIRE_ZERO_FALSE_POSITIVES:
        for run, devs in result.alert:
            if devs:
                objs = "; ".join(f"{d.dimension} {', '.join(d.members)}" for d in devs)
                out.append(f"legitimate run {run.label}: {len(devs)} deviation(s): {objs}")
    return out
