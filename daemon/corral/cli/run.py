"""run: start a command held, have corrald register it as an agent, then let it run (signals
forwarded like a shell does, the command's exit code passed on)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, NoReturn
from urllib.parse import urlencode

from .client import PROG, Client, CliError, _usage_error, agent_path
from .render import Output, visible


def cmd_run(args: argparse.Namespace, client: Client, out: Output) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise _usage_error("run: give the command to run after --, e.g. run --agent demo -- ls")
    return run_fenced(client, args.agent, command, verbose=args.verbose)


def run_fenced(client: Client, agent: str, command: list[str], *, verbose: bool = False) -> int:
    """Fork a child held on a pipe, register it with corrald, then let it exec the command."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; exercised through exit codes
        os.close(write_fd)
        _child(read_fd, command)
    os.close(read_fd)
    try:
        result = client.request("POST", agent_path(agent, "run"), {"pid": pid})
    except BaseException:
        os.close(write_fd)  # EOF: the child exits without running the command
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if verbose:
        cgroup = result.get("cgroup", "?") if isinstance(result, dict) else "?"
        print(
            f"{PROG}: running {command[0]} (pid {pid}) as agent {agent} in {cgroup}",
            file=sys.stderr,
            flush=True,
        )
    with _forward_signals(pid):
        with contextlib.suppress(BrokenPipeError):  # the child was killed meanwhile
            os.write(write_fd, b"go")
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL or code == 126:
        _explain(client, agent, command, result, killed=code < 0)
    return 128 - code if code < 0 else code


def _explain(client: Client, agent: str, command: list[str], result: Any, *, killed: bool) -> None:
    """The command was killed (or could not be executed): if corral did it, say what, why and
    where to look, from corrald's events of this run's cgroup."""
    cgid = result.get("cgroup_id") if isinstance(result, dict) else None
    event = None
    for _ in range(10):  # the event reaches corrald a moment after the kernel decided
        event = _blocking_event(client, agent, cgid)
        if event is not None or not killed:
            break
        time.sleep(0.1)
    if event is None:
        if killed:
            print(f"{PROG}: {command[0]} was killed by SIGKILL", file=sys.stderr, flush=True)
        return
    what = "killed" if event.get("verdict") == "killed" else "denied"
    line = (
        f"{PROG}: corral {what} {event.get('dimension')} {visible(str(event.get('object')))} "
        f"(pid {event.get('pid')}, {event.get('comm')}): not in the baseline of agent {agent}, "
        f"which is in {event.get('mode')} mode; see `{PROG} diff {agent}`"
    )
    print(line, file=sys.stderr, flush=True)


def _blocking_event(client: Client, agent: str, cgid: Any) -> dict[str, Any] | None:
    """The newest exec this run's cgroup was denied or killed for."""
    query = urlencode({"agent": agent, "limit": 200})
    try:
        events = client.request("GET", f"/v1/events?{query}")
    except CliError:
        return None
    for ev in reversed(events if isinstance(events, list) else []):
        if (
            ev.get("cgroup_id") == cgid
            and ev.get("dimension") == "exec"
            and ev.get("verdict") in ("killed", "denied")
        ):
            return ev  # type: ignore[no-any-return]
    return None


def _child(read_fd: int, command: list[str]) -> NoReturn:  # pragma: no cover
    code = 1
    try:
        if os.read(read_fd, 2) != b"go":  # corralctl failed or died: never run unfenced
            os._exit(1)
        os.close(read_fd)
        _default_signals()
        os.execvp(command[0], command)
    except OSError as exc:
        code = 127 if exc.errno == errno.ENOENT else 126
        with contextlib.suppress(OSError):
            os.write(2, f"{PROG}: cannot run {command[0]}: {exc.strerror}\n".encode())
    finally:
        os._exit(code)


def _default_signals() -> None:  # pragma: no cover - runs in the child
    """Python ignores SIGPIPE/SIGXFSZ; an exec'd command must not inherit that."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def _forward_signals(pid: int) -> Iterator[None]:
    """Like a shell: ignore ^C/^\\ (the terminal sends them to the child), pass TERM/HUP on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    saved = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGQUIT: signal.signal(signal.SIGQUIT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
