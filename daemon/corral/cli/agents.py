"""status, agents, agent, mode, promotion, tamper and reset."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from .client import DIMENSIONS, EXIT_OK, Client, CliError, _usage_error, agent_path
from .render import Lines, Output, _cell, _render_mapping_text, render_mapping, table

# the promotion gates an agent may set for itself: (API field, option), in the daemon's order
GATE_OPTIONS = (
    ("min_learning", "--min-learning"),
    ("quiet_period", "--quiet"),
    ("min_runs", "--min-runs"),
    ("alert_period", "--alert"),
    ("burst_denials", "--burst-denials"),
    ("burst_window", "--burst-window"),
)
GATE_COUNTS = ("min_runs", "burst_denials")
DURATION_HINT = "a number and s, m, h or d, e.g. 90s, 30m, 2h, 7d (at most 365d)"
_DURATION = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?[smhd]")

# the tamper guard's kinds (bpf/corral.h enum corral_tamper, in its order) and what each is
TAMPER_KINDS = {
    "bpf": "bpf(2), any command: reach corral's maps and links (agents do not load BPF)",
    "mount": "mount, move_mount, umount, pivot_root (e.g. bind a file over an allowed program)",
    "chroot": "chroot(2)",
    "ptrace": "ptrace attach, pidfd_getfd, process_vm_* on a process outside the agent",
    "raw-socket": "SOCK_RAW and AF_PACKET sockets: packets no connect hook sees",
    "cgroup": "opening a cgroupfs file for writing (cgroup.procs: leaving the agent's cgroup)",
    "bpffs": "unlink or rename on a bpf filesystem (corral's pins)",
    "signal": "a signal to corrald",
    "prctl": "prctl(PR_SET_MM): replacing the executable that exec lineage reads",
    "dns-server": "binding port 53: answering its own DNS queries, which connect by name trusts",
}


def _modes_of(agent: dict[str, Any]) -> dict[str, Any]:
    modes = agent.get("modes")
    if isinstance(modes, dict):
        return modes
    return {d: agent.get(d) for d in DIMENSIONS}


def _mode_cell(agent: dict[str, Any], dim: str) -> str:
    """The mode, starred when this node cannot apply it as set (see `effective`)."""
    mode = _cell("", _modes_of(agent).get(dim))
    effective = agent.get("effective")
    if isinstance(effective, dict) and effective.get(dim) not in (None, mode):
        return f"{mode}*"
    return mode


def _baseline_sizes(agent: dict[str, Any]) -> str:
    baseline = agent.get("baseline", agent.get("baseline_sizes"))
    if isinstance(baseline, dict) and isinstance(baseline.get("counts"), dict):
        baseline = baseline["counts"]
    if isinstance(baseline, dict):
        return "/".join(_cell("", baseline.get(d, 0)) for d in DIMENSIONS)
    return _cell("", baseline)


def _counter_totals(agent: dict[str, Any]) -> dict[str, Any]:
    """Counters summed over dimensions when they are kept per dimension."""
    counters = agent.get("counters")
    if not isinstance(counters, dict):
        return {}
    if not all(isinstance(v, dict) for v in counters.values()):
        return counters
    totals: dict[str, int] = {}
    for per_dim in counters.values():
        for k, v in per_dim.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return totals


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list | dict) else _cell("", value)


def render_agents(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return "no agents yet (start one with `corralctl run --agent NAME -- CMD`)"
    totals = [_counter_totals(a) for a in agents]
    counter_keys: list[str] = []
    for t in totals:
        counter_keys += [k for k in t if k not in counter_keys]
    extra = [k for k in ("deviations", "cgroups") if any(k in a for a in agents)]
    headers = ["NAME", "EXEC", "OPEN", "CONNECT", "BASELINE (E/O/C)"]
    headers += [k.upper().replace("_", "-") for k in [*counter_keys, *extra]]
    rows = []
    for a, t in zip(agents, totals, strict=True):
        row = [str(a.get("name", "?")), *(_mode_cell(a, d) for d in DIMENSIONS)]
        row.append(_baseline_sizes(a))
        row += [_cell("", t.get(k)) for k in counter_keys]
        row += [_count(a.get(k)) for k in extra]
        rows.append(row)
    text = table(headers, rows)
    if any(r[i].endswith("*") for r in rows for i in (1, 2, 3)):
        text += "\n* this node cannot apply the mode as set; see `corralctl agent NAME` (effective)"
    for a in agents:
        if not _covered(a):
            text += f"\n{_cell('', a.get('name'))}: {_coverage_text(a)}"
    return text


def _covered(agent: dict[str, Any]) -> bool:
    cov = agent.get("coverage")
    return not isinstance(cov, dict) or cov.get("covered") is not False


def _coverage_text(agent: dict[str, Any]) -> str:
    """'covered', or 'not covered: <why>' (its pods run in gVisor or Kata)."""
    if _covered(agent):
        return "covered"
    return f"not covered: {_cell('', agent['coverage'].get('why'))}"


def cmd_status(args: argparse.Namespace, client: Client, out: Output) -> int:
    out.emit(client.request("GET", "/v1/status"), _render_mapping_text)
    return EXIT_OK


def cmd_agents(args: argparse.Namespace, client: Client, out: Output) -> int:
    out.emit(client.request("GET", "/v1/agents"), render_agents)
    return EXIT_OK


def _promotion_for_people(promotion: dict[str, Any]) -> dict[str, Any]:
    """An agent's promotion as `agent` and `promotion` print it: each gate "2h (annotation)";
    per dimension what it waits for, one per line (its reason is the first of them)."""
    view: dict[str, Any] = {}
    for key, value in promotion.items():
        if key == "gates" and isinstance(value, dict):
            view[key] = {
                g: f"{v.get('text', v.get('value'))} ({v.get('source')})"
                if isinstance(v, dict)
                else v
                for g, v in value.items()
            }
        elif isinstance(value, dict) and value.get("waiting_for"):
            view[key] = {k: v for k, v in value.items() if k not in ("reason", "waiting_for")}
            view[key]["waiting_for"] = Lines(value["waiting_for"])
        else:
            view[key] = value
    return view


def _render_agent(agent: Any) -> str:
    if not isinstance(agent, dict) or not isinstance(agent.get("promotion"), dict):
        return _render_mapping_text(agent)
    agent = {**agent, "promotion": _promotion_for_people(agent["promotion"])}
    if isinstance(agent.get("coverage"), dict):
        agent["coverage"] = _coverage_text(agent)
    return "\n".join(render_mapping(agent))


def cmd_agent(args: argparse.Namespace, client: Client, out: Output) -> int:
    out.emit(client.request("GET", agent_path(args.name)), _render_agent)
    return EXIT_OK


def duration(value: str) -> str:
    """A gate duration on the command line, checked here (usage error, exit 2) and sent as
    given."""
    if not _DURATION.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected {DURATION_HINT}; got {value!r}")
    return value


def count(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100000; got {value!r}")
    return int(value)


def gate_option(value: str) -> str:
    """--unset GATE: the option's name without dashes (min-runs) or the API field."""
    names = {opt.lstrip("-"): field for field, opt in GATE_OPTIONS}
    names.update({field: field for field, _ in GATE_OPTIONS})
    if value.lstrip("-") not in names:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(opt.lstrip('-') for _, opt in GATE_OPTIONS)}; "
            f"got {value!r}"
        )
    return names[value.lstrip("-")]


def cmd_promotion(args: argparse.Namespace, client: Client, out: Output) -> int:
    body: dict[str, Any] = {}
    for field, _ in GATE_OPTIONS:
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    for field in args.unset:
        if field in body:
            raise _usage_error(f"promotion: --unset {field} and a value for it: give one")
        body[field] = None
    if args.reset:
        body["reset"] = True
    if args.auto is not None:
        body["auto"] = args.auto == "on"
    if body:
        agent = client.request("PUT", agent_path(args.name, "promotion"), body)
    else:
        agent = client.request("GET", agent_path(args.name))
    promotion = agent.get("promotion") if isinstance(agent, dict) else None
    data = {"agent": args.name, "promotion": promotion}
    out.emit(data, _render_agent)
    return EXIT_OK


def tamper_kind(value: str) -> str:
    """--allow/--deny KIND, checked here (usage error, exit 2)."""
    if value not in TAMPER_KINDS:
        raise argparse.ArgumentTypeError(
            f"expected a tamper kind, one of {', '.join(TAMPER_KINDS)}; got {value!r}"
        )
    return value


def _tamper_line(data: Any) -> str:
    name = data.get("agent") if isinstance(data, dict) else "?"
    kinds = data.get("tamper_allow") if isinstance(data, dict) else None
    if kinds is None:
        return f"{name}: corrald did not say which tamper kinds it allows (an older corrald?)"
    if not kinds:
        return f"{name}: no tamper kind allowed (the default): the kernel guard applies to each"
    return f"{name}: tamper kinds allowed: {', '.join(_cell('', k) for k in kinds)}"


def cmd_tamper(args: argparse.Namespace, client: Client, out: Output) -> int:
    both = sorted(set(args.allow) & set(args.deny))
    if both:
        raise _usage_error(f"tamper: {', '.join(both)} both with --allow and --deny: give one")
    body: dict[str, list[str]] = {}
    if args.allow:
        body["allow"] = list(dict.fromkeys(args.allow))
    if args.deny:
        body["deny"] = list(dict.fromkeys(args.deny))
    if body:
        agent = client.request("PUT", agent_path(args.name, "tamper"), body)
    else:
        agent = client.request("GET", agent_path(args.name))
    kinds = agent.get("tamper_allow") if isinstance(agent, dict) else None
    out.emit({"agent": args.name, "tamper_allow": kinds}, _tamper_line)
    return EXIT_OK


def _modes_line(name: str, agent: Any) -> str:
    modes = _modes_of(agent) if isinstance(agent, dict) else {}
    text = " ".join(f"{d}={modes.get(d) or '?'}" for d in DIMENSIONS)
    return f"{name}: {text}"


def cmd_mode(args: argparse.Namespace, client: Client, out: Output) -> int:
    body: dict[str, str] = {}
    if args.mode:
        body["mode"] = args.mode
    for dim in DIMENSIONS:
        if getattr(args, dim):
            body[dim] = getattr(args, dim)
    data = client.request("PUT", agent_path(args.name, "mode"), body)
    out.emit(data, lambda d: _modes_line(args.name, d))
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_reset(args: argparse.Namespace, client: Client, out: Output) -> int:
    if not args.yes and sys.stdin.isatty():
        question = (
            f"forget the baseline of {args.name} and relearn from scratch "
            "(every dimension goes back to observe)?"
        )
        if not _confirm(question):
            raise CliError("reset cancelled (nothing changed)")
    data = client.request("DELETE", agent_path(args.name, "baseline"))
    out.emit(data, lambda d: f"baseline of {args.name} reset: every dimension observes again")
    return EXIT_OK
