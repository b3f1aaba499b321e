"""docs/realagents.md, written from the corpus's results by test_realagents.py."""

from __future__ import annotations

import datetime
import json
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.realagents.harness import (
    AGENTS,
    CORPUS_PYTHON,
    MCP_SERVERS,
    REPO,
    ActionResult,
    AgentResult,
    Deviation,
)

NPM_SERVER = "@modelcontextprotocol/server-filesystem"
MAX_OTHERS = 12  # other deviations listed per injected run


@dataclass
class Report:
    learn_runs: int
    alert_runs: int
    zero_fp: bool
    kernel: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    agents: list[AgentResult] = field(default_factory=list)
    seconds: float = 0.0


def write_report(rep: Report, path: Path) -> None:
    """Writes the report, unless no agent ran (a broken setup keeps the last report)."""
    if rep.agents:
        path.write_text("\n".join(_document(rep)) + "\n")


def _document(rep: Report) -> list[str]:
    lines = _header(rep) + _summary(rep) + _matrix(rep)
    for result in rep.agents:
        lines += _agent(result)
    missing = [a.name for a in AGENTS if a.name not in {r.spec.name for r in rep.agents}]
    if missing:
        lines += ["", f"Not run in this session: {', '.join(missing)}."]
    return lines


def _header(rep: Report) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# Real-agent corpus: false positives and injected actions",
        "",
        "> **Generated** by `tests/realagents/test_realagents.py` (part of `make test-host`);",
        "> do not edit by hand, the next run rewrites it.",
        "",
        f"- Date: {now}; kernel `{rep.kernel}`; runtime of the corpus {rep.seconds:.0f} s; "
        f"corral {_code()}.",
        f"- Backend on this machine (`corralctl status`): {_backend(rep.capabilities)}.",
        f"- Packages, unmodified, pinned in `tests/realagents/`: {_versions()}.",
        f"- Per agent: {rep.learn_runs} runs in observe (learning), {rep.alert_runs} legitimate "
        "runs in alert (every deviation is a false positive), then one run per injected action "
        "in enforce. Each run in a cgroup of its own (`corralctl run`), against stand-in LLMs on "
        "loopback (`tests/realagents/stubs.py`); temp files in `/tmp`, `HOME` a decoy directory "
        "with fake secrets.",
        f"- `REQUIRE_ZERO_FALSE_POSITIVES = {rep.zero_fp}`: "
        + (
            "a legitimate run with a deviation fails the test." if rep.zero_fp else "reported only."
        ),
        "",
    ]


def _code() -> str:
    """The commit the corpus ran on, and whether the daemon's code differed from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--", "daemon", "bpf").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "(not a git checkout)"
    changed = (
        f" with uncommitted changes in {len(dirty)} files of daemon/ and bpf/" if dirty else ""
    )
    return f"at commit {head}{changed}"


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout


def _backend(caps: dict[str, Any]) -> str:
    return ", ".join(
        f"{dim} {c.get('mode')} ({c.get('backend')})" for dim, c in sorted(caps.items())
    )


def _versions() -> str:
    names = sorted({p for a in AGENTS for p in a.packages})
    code = (
        "import importlib.metadata as m, json, sys;"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    try:
        out = subprocess.run(
            [str(CORPUS_PYTHON), "-c", code, *names], capture_output=True, text=True, timeout=60
        )
        found = json.loads(out.stdout)
        pkg = json.loads((MCP_SERVERS / "node_modules" / NPM_SERVER / "package.json").read_text())
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return f"(could not read the versions: {e})"
    py = ", ".join(f"{n} {v}" for n, v in sorted(found.items()))
    return f"{py} (PyPI); {NPM_SERVER} {pkg['version']} (npm) on node {node.stdout.strip()}"


def _summary(rep: Report) -> list[str]:
    lines = [
        "## Summary",
        "",
        "| agent | learned runs | baseline exec / open / connect | false positives per "
        "legitimate run | injected actions blocked | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rep.agents:
        fps = [len(devs) for _, devs in r.alert]
        mean = f" (mean {statistics.mean(fps):.1f})" if fps else ""
        must = [a for a in r.actions if a.must_block]
        blocked = (
            f"{sum(a.blocked for a in r.actions)} of {len(r.actions)}; "
            f"{sum(a.blocked for a in must)} of the {len(must)} this backend must block"
        )
        sizes = " / ".join(str(len(r.baseline.get(d, []))) for d in ("exec", "open", "connect"))
        stopped = " (stopped early)" if r.error else ""
        lines.append(
            f"| {r.spec.name}{stopped} | {len(r.learned)} | {sizes} | "
            f"{', '.join(map(str, fps)) or '-'}{mean} | {blocked} | {r.seconds:.0f} |"
        )
    return [*lines, ""]


def _matrix(rep: Report) -> list[str]:
    if not rep.agents or not rep.agents[0].actions:
        return []
    keys = [a.injection.key for a in rep.agents[0].actions]
    lines = [
        "## Injected actions on this backend",
        "",
        "`killed`: the program was killed before its first instruction (fallback exec); `EPERM`: "
        "the call failed with EPERM; `allowed`: it ran (opens are observe-only on the fallback "
        "backend: reported as would-deny, not denied). **bold**: this backend had to block it.",
        "",
        "| action | " + " | ".join(r.spec.name for r in rep.agents) + " |",
        "|---" * (len(rep.agents) + 1) + "|",
    ]
    for key in keys:
        cells = []
        for r in rep.agents:
            a = next((x for x in r.actions if x.injection.key == key), None)
            cells.append("-" if a is None else (f"**{a.result}**" if a.must_block else a.result))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _agent(r: AgentResult) -> list[str]:
    lines = [
        f"## {r.spec.name}",
        "",
        f"{r.spec.summary} (`tests/realagents/agents/{r.spec.script}`).",
        "",
    ]
    if r.error:
        lines += [f"**The harness stopped early:** {_cell(r.error)}", ""]
    lines += [f"Baseline after {len(r.learned)} runs: {_baseline(r)}.", ""]
    lines += _wide_entries(r) + _alert_runs(r) + _actions(r)
    return lines


def _baseline(r: AgentResult) -> str:
    parts = []
    for dim in ("exec", "open", "connect"):
        entries = r.baseline.get(dim, [])
        kinds: dict[str, int] = {}
        for e in entries:
            kinds[e.get("kind", "?")] = kinds.get(e.get("kind", "?"), 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        parts.append(f"{dim} {len(entries)}" + (f" ({detail})" if detail else ""))
    if dim_exec := [e["object"] for e in r.baseline.get("exec", [])]:
        parts.append("programs " + ", ".join(f"`{p}`" for p in dim_exec))
    if r.baseline.get("partial"):
        parts.append(f"**partial**: {', '.join(r.baseline.get('partial_reasons', []))}")
    return "; ".join(parts)


def _wide_entries(r: AgentResult) -> list[str]:
    """The open entries that cover more than one path (prefixes, learned patterns)."""
    wide = [e for e in r.baseline.get("open", []) if e.get("kind") != "exact"]
    if not wide:
        return []
    lines = ["Open entries wider than one path (prefixes and learned patterns):", ""]
    lines += [f"- {e.get('kind')} `{_cell(str(e.get('object')))}`" for e in wide]
    return [*lines, ""]


def _alert_runs(r: AgentResult) -> list[str]:
    if not r.alert:
        return []
    lines = [
        "### Legitimate runs in alert (false positives)",
        "",
        "| run | seconds | deviations | objects |",
        "|---|---|---|---|",
    ]
    for run, devs in r.alert:
        lines.append(f"| {run.label} | {run.seconds:.1f} | {len(devs)} | {_devs(devs)} |")
    return [*lines, ""]


def _devs(devs: list[Deviation]) -> str:
    return (
        "<br>".join(f"{d.dimension} " + ", ".join(f"`{_cell(m)}`" for m in d.members) for d in devs)
        or "-"
    )


def _actions(r: AgentResult) -> list[str]:
    if not r.actions:
        return []
    lines = [
        "### Injected actions in enforce",
        "",
        "| action | what the hijacked model made the agent do | this backend must block | "
        "result | what the tool saw | corral reported about it | other deviations in the run |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_action_row(a) for a in r.actions]
    return [*lines, ""]


def _action_row(a: ActionResult) -> str:
    must = "<br>".join(a.must_block) or "nothing (not blockable here)"
    seen = "<br>".join(_cell(d) for d in a.details) or "-"
    reported = "<br>".join(f"`{_cell(x)}`" for x in a.reported) or "nothing"
    loot = f"; {a.loot} request(s) reached the sink" if a.loot else ""
    return (
        f"| {a.injection.key} | {_cell(a.injection.title)} | {_cell(must)} | "
        f"**{a.result}**{loot} | {seen} | {reported} | {_others(a.others)} |"
    )


def _others(others: list[str]) -> str:
    shown = "<br>".join(f"`{_cell(x)}`" for x in others[:MAX_OTHERS]) or "-"
    more = f"<br>and {len(others) - MAX_OTHERS} more" if len(others) > MAX_OTHERS else ""
    return shown + more


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")
