"""The argument parser: every command's options, help texts and examples."""

from __future__ import annotations

import argparse
import os
import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

from .agents import (
    GATE_COUNTS,
    GATE_OPTIONS,
    TAMPER_KINDS,
    cmd_agent,
    cmd_agents,
    cmd_mode,
    cmd_promotion,
    cmd_reset,
    cmd_status,
    cmd_tamper,
    count,
    duration,
    gate_option,
    tamper_kind,
)
from .aibom import cmd_aibom
from .baselines import (
    cmd_accept,
    cmd_baseline,
    cmd_baseline_export,
    cmd_baseline_import,
    cmd_diff,
)
from .client import DEFAULT_SOCKET, DIMENSIONS, ENV_SOCKET, MAX_LIMIT, MODES, PROG
from .events import cmd_events
from .run import cmd_run

MODES_HELP = """\
modes (set per agent and per dimension: exec, open, connect):
  observe   learn: every exec/open/connect is allowed and added to the baseline
  alert     allow everything, but report what deviates from the baseline
  enforce   deny deviations in the kernel (the operation fails, e.g. EPERM)
  off       do not watch this dimension at all"""

EXIT_HELP = """\
exit codes:
  0    success
  1    the request failed (the daemon's message is printed as `corralctl: <message>`)
  2    usage error (bad command line)
  3    corrald is unreachable (no socket, connection refused or permission denied)
  run  exits with the command's own exit code (128+N when killed by signal N)"""

SEE_MAIN = f"modes, exit codes and the environment: see `{PROG} --help`"

MAIN_EPILOG = f"""\
{MODES_HELP}

examples:
  corralctl status
  corralctl agents -o json
  corralctl agent prod/Deployment/chatbot/agent
  corralctl baseline demo -o yaml > demo-baseline.yaml
  corralctl baseline export demo > demo.yaml     # reviewable document (docs/baselines.md)
  corralctl baseline import demo demo.yaml --replace
  corralctl mode demo alert                  # every dimension
  corralctl mode demo --exec enforce --connect alert
  corralctl promotion demo --auto on --min-runs 5 --quiet 30m
  corralctl tamper demo --allow mount        # let the kernel guard pass mounts for demo
  corralctl diff demo                        # what the agent did beyond its baseline
  corralctl accept demo --index 2 --connect 10.0.0.7:443
  corralctl reset demo --yes
  corralctl events -f --agent demo
  corralctl run --agent demo -- python3 agent.py
  corralctl aibom demo -o cyclonedx

environment:
  {ENV_SOCKET}   the admin socket (default {DEFAULT_SOCKET}); --socket wins

{EXIT_HELP}
"""


def _dim_object(value: str) -> dict[str, str]:
    dim, sep, obj = value.partition(":")
    if not sep or dim not in DIMENSIONS or not obj:
        raise argparse.ArgumentTypeError(
            f"expected DIMENSION:OBJECT with DIMENSION one of {', '.join(DIMENSIONS)}, "
            f"e.g. open:/etc/hosts or connect:10.0.0.1:443; got {value!r}"
        )
    return {"dimension": dim, "object": obj}


def _index_list(value: str) -> list[int]:
    """ "3", "1,3", "2-5" -> row numbers."""
    out: list[int] = []
    try:
        for part in value.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 1 or last < first or last - first > 10_000:
                raise ValueError
            out += range(first, last + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected row numbers from `diff` like 3, 1,4 or 2-5; got {value!r}"
        ) from None
    return out


def _add_baseline(subs: Any) -> None:
    p = _sub(
        subs,
        "baseline",
        "show, export or import an agent's baseline",
        "Show the baseline (`corralctl baseline NAME` is short for `baseline show NAME`), "
        "export it as a reviewable document, or import one (see docs/baselines.md).",
        "  corralctl baseline demo\n"
        "  corralctl baseline export demo > demo.yaml\n"
        "  corralctl baseline import demo demo.yaml --replace",
    )
    actions = p.add_subparsers(dest="baseline_action", metavar="ACTION", required=True)
    s = _sub(
        actions,
        "show",
        "show the baseline with hits and first/last seen",
        "Show the baseline: the programs the agent executes, the files it opens and the "
        "addresses it connects to, with their source (learned in observe mode, accepted, or "
        "imported), hits and first/last seen. -o yaml is diff-friendly: sorted, one line "
        "per entry, times in UTC to the second.",
        "  corralctl baseline show demo\n  corralctl baseline demo -o yaml > demo-detail.yaml",
    )
    s.add_argument("name", metavar="NAME", help="agent name")
    s.set_defaults(func=cmd_baseline)
    e = _sub(
        actions,
        "export",
        "write the baseline as a document for review (YAML; -o json for JSON)",
        "Write the baseline as a schema-versioned document (apiVersion corral.io/v2, kind "
        "Baseline) with the agent's modes: entries sorted, one per line, no timestamps or "
        "hit counts, so that a git diff shows exactly what changed. Importing it and "
        "exporting again gives the same bytes.",
        "  corralctl baseline export demo > baselines/demo.yaml\n"
        "  corralctl baseline export demo -o json",
    )
    e.add_argument("name", metavar="NAME", help="agent name")
    e.set_defaults(func=cmd_baseline_export)
    i = _sub(
        actions,
        "import",
        "load a baseline document (merge or replace); pre-seeds unknown agents",
        "Load a document made by `baseline export` (or written by hand) into the agent's "
        "baseline. --merge (the default) adds its entries; --replace makes the baseline "
        "exactly the document's. The document's modes (spec.modes) are applied unless "
        "--keep-modes. If the agent does not exist yet it is created with this baseline and "
        "these modes, and uses them when it first runs (GitOps pre-seeding). The whole "
        "document is validated first; errors name the entry (spec.exec[3]: ...) and nothing "
        "changes. In enforce, new allow-lists are filled completely before they replace the "
        "old ones in one step.",
        "  corralctl baseline import demo demo.yaml\n"
        "  corralctl baseline import demo demo.yaml --replace --dry-run\n"
        "  corralctl baseline import prod/Deployment/bot/agent staging.yaml --rename\n"
        "  corralctl baseline export a | corralctl baseline import b - --rename",
    )
    i.add_argument("name", metavar="NAME", help="agent name")
    i.add_argument("file", metavar="FILE", help="the document (YAML or JSON); - for stdin")
    how = i.add_mutually_exclusive_group()
    how.add_argument("--merge", action="store_true", help="add the entries (default)")
    how.add_argument("--replace", action="store_true", help="the baseline becomes the document")
    i.add_argument(
        "--keep-modes",
        action="store_true",
        help="ignore spec.modes/autoPromote/promotion/tamperAllow",
    )
    i.add_argument("--dry-run", action="store_true", help="validate and report, change nothing")
    i.add_argument(
        "--rename", action="store_true", help="import a document whose metadata.name differs"
    )
    i.set_defaults(func=cmd_baseline_import)


def _add_diff(subs: Any) -> None:
    p = _sub(
        subs,
        "diff",
        "show what an agent did beyond its baseline",
        "Show the deviations: what the agent executed, opened or connected to in alert "
        "(would-deny) or enforce (denied/killed) mode that its baseline does not allow, with "
        "counts, first/last seen, verdicts and commands. Five or more in one directory, to "
        "one address or in one /24 on one port are grouped into one row (--flat: one row "
        "each). Rows are numbered for `corralctl accept NAME --index N --view VIEW`.",
        "  corralctl diff demo\n  corralctl diff demo --flat -o json",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument("--flat", action="store_true", help="one row per object (no groups)")
    p.set_defaults(func=cmd_diff)


GATE_HELP = {
    "min_learning": "learn at least this long before observe -> alert (config: min_learning)",
    "quiet_period": "nothing new for this long before observe -> alert (quiet_period)",
    "min_runs": "runs (cgroups) seen while learning before observe -> alert (min_runs)",
    "alert_period": "this long in alert without a deviation before alert -> enforce (alert_period)",
    "burst_denials": "this many denials after an auto-promotion to enforce are reported "
    "(burst_denials)",
    "burst_window": "... within this long after it (burst_window)",
}


def _add_promotion(subs: Any) -> None:
    p = _sub(
        subs,
        "promotion",
        "show or set an agent's auto-promotion: on/off and its own gates",
        "Without options: the agent's auto-promotion, its gates with where each comes from "
        "(operator: set here; annotation: the pod's corral.io/promotion; config: the "
        "config's promotion section; default) and per dimension what it waits for. With "
        "options: set them for this agent; what is set here wins over the annotation and "
        "the config, and is kept with the agent (and in `baseline export`). --unset GATE "
        "forgets one, --reset all of them. Durations are a number and s, m, h or d. corral "
        "never steps back by itself: after a burst of denials, `corralctl mode NAME alert`.",
        "  corralctl promotion demo\n"
        "  corralctl promotion demo --auto on\n"
        "  corralctl promotion demo --min-runs 5 --min-learning 2h --quiet 30m --alert 12h\n"
        "  corralctl promotion demo --unset quiet\n"
        "  corralctl promotion demo --reset",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    for field, opt in GATE_OPTIONS:
        is_count = field in GATE_COUNTS
        p.add_argument(
            opt,
            dest=field,
            metavar="N" if is_count else "DURATION",
            type=count if is_count else duration,
            help=GATE_HELP[field],
        )
    p.add_argument(
        "--unset",
        metavar="GATE",
        action="append",
        type=gate_option,
        default=[],
        help="forget the gate set here (e.g. quiet, min-runs): the annotation, the config or "
        "the default holds again (repeatable)",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="forget every gate set here (before the ones given with this command)",
    )
    p.add_argument(
        "--auto",
        choices=("on", "off"),
        help="auto-promotion for this agent on or off",
    )
    p.set_defaults(func=cmd_promotion)


def _add_tamper(subs: Any) -> None:
    kinds = "\n".join(f"  {k:<11} {what}" for k, what in TAMPER_KINDS.items())
    p = _sub(
        subs,
        "tamper",
        "show or change the tamper-guard kinds an agent may use",
        "corral's kernel tamper guard stops what an agent could do to switch corral off or "
        "to step outside its hooks (the kinds below). An agent in enforce in any dimension is "
        "denied it (EPERM; where this node's backend only sees the call at its syscall "
        "tracepoint, the process is killed: `corralctl status` says what happens per kind, "
        "tamper_guard); in observe and alert it is reported as would-deny. Either way it "
        "shows in `corralctl diff NAME` as dimension tamper, and it is never learned nor "
        "accepted into a baseline.\n\n"
        "By default no kind is allowed. A kind allowed here passes the kernel guard for this "
        "agent only (every other agent stays guarded); it is never learned either. It is "
        "written into the kernel at once, kept with the agent and exported with `baseline "
        "export` (spec.tamperAllow). --deny takes a kind back. Without options: show the "
        "kinds the agent is allowed.",
        "  corralctl tamper demo\n"
        "  corralctl tamper demo --allow mount        # e.g. a browser sandbox that mounts\n"
        "  corralctl tamper demo --allow raw-socket --allow ptrace\n"
        "  corralctl tamper demo --deny mount",
        extra=f"tamper kinds:\n{kinds}",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument(
        "--allow",
        metavar="KIND",
        action="append",
        type=tamper_kind,
        default=[],
        help="let the kernel guard pass this kind for the agent (repeatable)",
    )
    p.add_argument(
        "--deny",
        metavar="KIND",
        action="append",
        type=tamper_kind,
        default=[],
        help="take the kind back: the guard applies to it again (repeatable)",
    )
    p.set_defaults(func=cmd_tamper)


def _limit(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}")
    return n


OUTPUTS = ("table", "json", "yaml")


def _add_common(
    parser: argparse.ArgumentParser, *, top: bool, outputs: Sequence[str] = OUTPUTS
) -> None:
    """--socket/-o/-v, accepted before or after the command (the later one wins)."""
    default = argparse.SUPPRESS
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=os.environ.get(ENV_SOCKET, DEFAULT_SOCKET) if top else default,
        help=f"corrald's admin socket (default: ${ENV_SOCKET} or {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=outputs,
        default="table" if top else default,
        help="output format: table (for people), json or yaml (stable, sorted keys; for "
        "scripts and diffs)"
        + (", wide (the table with every cell in full)" if "wide" in outputs else "")
        + (", cyclonedx (CycloneDX 1.6 JSON)" if "cyclonedx" in outputs else "")
        + ". Default: table",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else default,
        help="say more (e.g. what `run` registered)",
    )


def _prose(text: str) -> str:
    """Wrap each paragraph to the terminal; RawDescriptionHelpFormatter keeps it as is."""
    width = min(shutil.get_terminal_size().columns, 100) - 2
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def _sub(
    subs: Any,
    name: str,
    summary: str,
    prose: str,
    examples: str,
    outputs: Sequence[str] = OUTPUTS,
    *,
    modes: bool = False,
    extra: str = "",
) -> argparse.ArgumentParser:
    """A subcommand. Its help says what it does and shows examples; the modes and the exit
    codes are said once, in the main --help, which it points to (modes: it takes a MODE, and
    lists them too). extra: text after the prose, as it is (not wrapped)."""
    description = _prose(prose) + (f"\n\n{MODES_HELP}" if modes else "")
    description += f"\n\n{extra}" if extra else ""
    parser: argparse.ArgumentParser = subs.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"examples:\n{examples}\n\n{SEE_MAIN}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, top=False, outputs=outputs)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_prose(
            "Drive corrald, the node-local daemon that fences AI agents in the kernel "
            "with BPF. Each agent moves per dimension (exec, open, connect) from observe to alert "
            "to enforce."
        ),
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, top=True)
    subs = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    p = _sub(
        subs,
        "status",
        "show the daemon's status",
        "Show corrald's status: kernel probe results (which backends are in use), node, "
        "agents per mode, kubelet health, ring-buffer drops and version.",
        "  corralctl status\n  corralctl status -o json",
    )
    p.set_defaults(func=cmd_status)

    p = _sub(
        subs,
        "agents",
        "list the agents",
        "List every agent with its mode per dimension, baseline sizes (exec/open/connect), "
        "counters, deviations and CGROUPS: its cgroups that hold a process now (a finished "
        "`run` no longer counts; `corralctl agent NAME` lists every registered one).",
        "  corralctl agents\n  corralctl agents -o yaml",
    )
    p.set_defaults(func=cmd_agents)

    p = _sub(
        subs,
        "agent",
        "show one agent in detail",
        "Show one agent: modes, counters, baseline summary, promotion (its gates, where "
        "each comes from, and per dimension whether it is ready to move on and what it "
        "waits for), history of mode changes and workloads.",
        "  corralctl agent demo\n  corralctl agent prod/Deployment/chatbot/agent -o json",
    )
    p.add_argument(
        "name", metavar="NAME", help="agent name, e.g. demo or ns/Kind/workload/container"
    )
    p.set_defaults(func=cmd_agent)

    _add_baseline(subs)
    _add_diff(subs)

    p = _sub(
        subs,
        "mode",
        "set an agent's mode (all dimensions or per dimension)",
        "Set the mode of an agent: the positional MODE applies to every dimension; "
        "--exec/--open/--connect set one dimension each (and win over MODE). Give at "
        "least one.",
        "  corralctl mode demo alert\n"
        "  corralctl mode demo enforce --connect alert\n"
        "  corralctl mode demo --exec enforce",
        modes=True,
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument(
        "mode",
        metavar="MODE",
        nargs="?",
        choices=MODES,
        help="mode for every dimension: observe, alert, enforce or off",
    )
    for dim in DIMENSIONS:
        p.add_argument(
            f"--{dim}", metavar="MODE", choices=MODES, help=f"mode for the {dim} dimension"
        )
    p.set_defaults(func=cmd_mode)

    _add_promotion(subs)
    _add_tamper(subs)

    p = _sub(
        subs,
        "accept",
        "accept deviations into an agent's baseline",
        "Accept what the agent did outside its baseline (the deviations `corralctl diff` "
        "shows: reported in alert mode, denied in enforce mode) so that it becomes allowed. "
        "Pick rows of `diff` by number (--index; a group row accepts each of its objects; "
        "give --view as diff printed it to refuse if the rows changed meanwhile), or name "
        "entries: --exec/--open take a path, a directory ending in / that allows "
        "everything beneath, or a pattern (quote it) where ? is one character and * any run "
        "of characters, neither matching / (the output says how much a directory or a "
        "pattern allows); --connect takes ADDR:PORT, CIDR:PORT, ADDR:* (every port), "
        "NAME:PORT (the addresses the agent's own DNS answers give for the name, whatever "
        "they rotate to) or '*.DOMAIN:PORT' (every name one label under DOMAIN). "
        "A named entry must cover at least one deviation and clears all it covers. Without "
        "any of these every pending deviation is accepted as it is. Entries are added to "
        "the kernel's allow-lists at once; nothing is removed.",
        "  corralctl accept demo                                 # everything pending\n"
        "  corralctl accept demo --index 1,3-4 --view 3fa2c1d0\n"
        "  corralctl accept demo --exec /usr/bin/curl --connect 10.0.0.1:443 --open /etc/x\n"
        "  corralctl accept demo --connect api.openai.com:443     # by name\n"
        "  corralctl accept demo --open /home/app/.cache/        # the whole directory\n"
        "  corralctl accept demo --open '/tmp/agent-*.json'      # one shape of name\n"
        "  corralctl accept demo --entry open:/etc/hosts --entry exec:/usr/bin/git",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    for dim, what in (("exec", "PATH"), ("open", "PATH"), ("connect", "HOST:PORT")):
        p.add_argument(
            f"--{dim}",
            dest=f"accept_{dim}",
            metavar=what,
            action="append",
            default=[],
            help=f"a {dim} entry to add (repeatable)",
        )
    p.add_argument(
        "--index",
        metavar="N[,M|N-M]",
        action="append",
        type=_index_list,
        default=[],
        help="rows of `corralctl diff NAME` (repeatable)",
    )
    p.add_argument(
        "--caller",
        metavar="PATH",
        help="with --exec: allow the program only when this executable runs it (exec "
        "lineage; the CALLER column of `diff`). Without it an --exec entry allows any caller",
    )
    p.add_argument("--view", metavar="VIEW", help="the view `diff` printed: refuse if changed")
    p.add_argument("--flat", action="store_true", help="--index counts rows of `diff --flat`")
    p.add_argument(
        "--entry",
        dest="entries",
        metavar="DIM:OBJECT",
        action="append",
        type=_dim_object,
        default=[],
        help="an entry as DIMENSION:OBJECT, e.g. open:/etc/hosts (repeatable)",
    )
    p.set_defaults(func=cmd_accept)

    p = _sub(
        subs,
        "reset",
        "forget an agent's baseline and relearn",
        "Forget everything learned for the agent; every dimension goes back to observe "
        "(learn & allow). Asks for confirmation on a terminal unless --yes.",
        "  corralctl reset demo\n  corralctl reset demo --yes",
    )
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_reset)

    p = _sub(
        subs,
        "events",
        "show recent events, or follow them live",
        "Show events: what agents executed, opened or connected to and the verdict "
        "(allowed, would-deny in alert mode, denied in enforce mode). Without --follow "
        "the newest events (default 100); with --follow live events until Ctrl-C "
        "(preceded by the --limit newest when --limit is given). With -o json, "
        "--follow prints one JSON object per line (NDJSON).",
        "  corralctl events\n"
        "  corralctl events --agent demo --limit 20\n"
        "  corralctl events -f\n"
        "  corralctl events -f -o json | jq .object",
    )
    p.add_argument("-f", "--follow", action="store_true", help="stream events as they happen")
    p.add_argument("--agent", metavar="NAME", help="only this agent's events")
    p.add_argument(
        "--limit", metavar="N", type=_limit, help=f"how many of the newest events (1-{MAX_LIMIT})"
    )
    p.set_defaults(func=cmd_events)

    p = _sub(
        subs,
        "aibom",
        "show what agents are made of (AI-BOM): frameworks, models, endpoints, MCP servers",
        "Show the runtime AI-BOM of the node (every agent) or of agent NAME: the AI "
        "frameworks and SDKs it loaded (with versions), the model files it opened, the "
        "endpoints it contacted (LLM APIs named when corrald resolved them), the MCP servers "
        "it ran and the shells, interpreters and tools it executed. Derived from the events "
        "and baselines corral already has. The table fits the terminal (long cells end in …; "
        "-o wide prints them in full); -o cyclonedx prints a CycloneDX 1.6 document.",
        "  corralctl aibom\n"
        "  corralctl aibom demo\n"
        "  corralctl aibom demo -o wide\n"
        "  corralctl aibom demo -o cyclonedx > demo.cdx.json\n"
        "  corralctl aibom -o json | jq '.agents[] | select(.ai_agent) | .agent'",
        outputs=(*OUTPUTS, "wide", "cyclonedx"),
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="agent name (default: every agent)")
    p.set_defaults(func=cmd_aibom)

    p = _sub(
        subs,
        "run",
        "run a command as a fenced agent",
        "Run CMD as agent NAME: corralctl starts the command held, asks corrald to put it "
        "into a fresh cgroup registered as the agent (created in observe mode if new), then "
        "lets it run with this terminal's stdin/stdout/stderr. It exits with the command's "
        "exit code (128+N if killed by signal N) and prints nothing of its own, unless -v or "
        "corral stopped the command (its exec killed or denied): then one line on stderr says "
        "what, why and where to look. If corrald refuses, the command never starts.",
        "  corralctl run --agent demo -- python3 agent.py --task summarize\n"
        "  corralctl run --agent team/research -- sh -c 'curl -s example.com'",
    )
    p.usage = "%(prog)s [-h] [--socket PATH] [-o {table,json,yaml}] [-v] --agent NAME -- CMD ..."
    p.add_argument("--agent", metavar="NAME", required=True, help="agent name")
    p.add_argument(
        "command",
        metavar="CMD",
        nargs=argparse.REMAINDER,
        help="the command and its arguments, after --",
    )
    p.set_defaults(func=cmd_run)
    return parser
