"""corrald: the node daemon's command line."""

from __future__ import annotations

import argparse
import json
import sys

from . import logs

DESCRIPTION = """\
corrald fences AI agents in at the kernel level: it learns each agent's exec, file-open and
connect behaviour, then moves it from observe to alert to enforce, per agent and per dimension.

commands:
  probe      report what this kernel can enforce (BTF, cgroup v2, bpffs, BPF LSM, ...)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corrald",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    probe = sub.add_parser(
        "probe",
        help="report kernel features and which backend enforces each dimension",
        description="Probe the running kernel by loading tiny BPF programs, and print which "
        "backend decides exec, open and connect here: enforce (BPF LSM or cgroup), kill "
        "(tracepoint + SIGKILL) or observe only. Mounts bpffs and securityfs if missing.",
    )
    probe.add_argument("-o", "--output", choices=["table", "json"], default="table")
    return p


def cmd_probe(args: argparse.Namespace) -> int:
    from .probe import render_table, run_probe

    res = run_probe()
    if args.output == "json":
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(render_table(res))
    return 0 if all(c["mode"] != "unavailable" for c in res.capabilities.values()) else 3


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    if args.command == "probe":
        return cmd_probe(args)
    _parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
