"""main(): parse the command line, run the command, print errors as `corralctl: <message>` and
map them to exit codes. (Not called main.py: `corral.cli.main` is this function.)"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from .client import EXIT_OK, EXIT_USAGE, PROG, Client, CliError, _UsageError
from .parser import build_parser
from .render import Output


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


_BASELINE_ACTIONS = ("show", "export", "import")
_VALUED_OPTIONS = ("--socket", "-o", "--output")


def _default_baseline_action(argv: Sequence[str]) -> list[str]:
    """`baseline NAME` means `baseline show NAME` (an agent may be called "export": use
    `baseline show export`)."""
    args = list(argv)
    i, seen_command = 0, False
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a in _VALUED_OPTIONS:
            i += 2
            continue
        if not a.startswith("-"):
            if seen_command:
                if a not in _BASELINE_ACTIONS:
                    args.insert(i, "show")
                break
            if a != "baseline":
                break
            seen_command = True
        i += 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _default_baseline_action(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command_name == "mode" and not (args.mode or args.exec or args.open or args.connect):
        _error("mode: give a MODE for every dimension or at least one of --exec/--open/--connect")
        return EXIT_USAGE
    client = Client(args.socket)
    out = Output(args.output)
    try:
        return int(args.func(args, client, out))
    except _UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except CliError as exc:
        _error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:  # e.g. `corralctl events | head`
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
