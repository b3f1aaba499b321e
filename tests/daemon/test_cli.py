"""corralctl end to end against a real API server on a unix socket (fake services)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from corral import cli
from corral.api.server import ApiServer, start_api
from corral.cli.client import DIMENSIONS, MODES, agent_path
from corral.cli.render import ago
from corral.contract import Services
from corral.kernel import layout
from tests.daemon.test_api_fakes import LONG_NAME, FakeController, make_event

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def quiet_daemon_logs() -> Any:
    """structlog's default logger prints to stdout, where the CLI's output is captured."""
    with capture_logs() as logs:
        yield logs


@pytest.fixture
async def server(ctl: FakeController, sock_dir: Path) -> AsyncIterator[ApiServer]:
    srv = await start_api(Services.of(ctl), sock_dir / "corral.sock")
    yield srv
    await srv.close()


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


async def ctl_main(capsys: pytest.CaptureFixture[str], server: ApiServer, *args: str) -> Result:
    """cli.main in a thread (the server needs this loop), output captured."""
    code = await asyncio.to_thread(cli.main, ["--socket", str(server.path), *args])
    out, err = capsys.readouterr()
    return Result(code, out, err)


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral.cli", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


async def ctl_proc(*args: str, env: dict[str, str] | None = None) -> Result:
    """corralctl as its own process: real exit codes, real fork/exec for `run`."""
    proc = await spawn(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


# --- output formats --------------------------------------------------------------------------


async def test_agents_table(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    r = await ctl_main(capsys, server, "agents")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "EXEC", "OPEN", "CONNECT"]
    assert "WOULD-DENY" in lines[0] and "DEVIATIONS" in lines[0]
    row = next(ln for ln in lines if ln.startswith(LONG_NAME))
    # modes, baseline sizes, counters summed over dimensions, deviations, cgroups
    assert row.split() == [LONG_NAME, "alert", "alert", "alert", "3/12/1", "40", "2", "0",
                           "0", "0", "0", "2", "1"]  # fmt: skip
    # aligned: every row's second column starts where the header's does
    col = lines[0].index("EXEC")
    assert all(ln[col - 2 : col] == "  " and ln[col] != " " for ln in lines[1:])


async def test_json_output_is_stable(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(capsys, server, "-o", "json", "agents")
    assert r.code == 0 and json.loads(r.out) == ctl.list_agents()
    assert r.out.startswith("[\n  {\n")  # pretty
    keys = list(json.loads(r.out)[0])
    assert keys == sorted(keys)
    again = await ctl_main(capsys, server, "agents", "-o", "json")  # -o after the command
    assert again.out == r.out


async def test_yaml_output(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    r = await ctl_main(capsys, server, "baseline", LONG_NAME, "-o", "yaml")
    assert r.code == 0, r.err
    data = yaml.safe_load(r.out)
    assert data["agent"] == LONG_NAME
    assert data["open"][0]["object"] == "/etc/hosts"
    assert r.out.index("agent:") < r.out.index("connect:") < r.out.index("exec:")  # sorted


async def test_status_and_agent_tables(
    capsys: pytest.CaptureFixture[str], server: ApiServer
) -> None:
    r = await ctl_main(capsys, server, "status")
    assert r.code == 0
    assert "version:" in r.out and "0.1.0" in r.out and "probe:" in r.out
    r = await ctl_main(capsys, server, "agent", LONG_NAME)
    assert r.code == 0 and LONG_NAME in r.out and "modes:" in r.out
    assert "mode_since:" in r.out and "exec:    5m ago" in r.out


async def test_baseline_table(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    r = await ctl_main(capsys, server, "baseline", "demo")
    assert r.code == 0
    lines = r.out.splitlines()
    assert "learning_since: 1h ago" in lines
    head = lines.index("") + 1
    assert lines[head].split() == ["DIMENSION", "OBJECT", "KIND", "SOURCE", "HITS", "FIRST",
                                   "SEEN", "LAST", "SEEN"]  # fmt: skip
    assert lines[head + 1].split()[:5] == ["exec", "/usr/bin/python3", "exact", "learned", "4"]
    assert "1h ago" in lines[head + 1] and "10m ago" in lines[head + 1]


async def test_events_table(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    r = await ctl_main(capsys, server, "events", "--limit", "2")
    assert r.code == 0
    header, *rows = r.out.splitlines()
    assert header.split() == ["TIME", "AGENT", "VERDICT", "DIMENSION", "OBJECT", "PID", "COMM"]
    assert len(rows) == 2
    assert rows[1].split() == ["2m", "ago", LONG_NAME, "denied", "open", "/tmp/file9", "1009",
                               "python3"]  # fmt: skip


async def test_an_event_of_corrald_has_no_pid_in_the_table(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    burst = {**make_event(0), "kind": "denial-burst", "verdict": "alert", "pid": 0,
             "comm": "corrald", "object": "5 connect denials in 6s"}  # fmt: skip
    ctl.events = [burst]
    r = await ctl_main(capsys, server, "events")
    assert r.code == 0
    row = r.out.splitlines()[1].split()
    assert row[2:5] == ["demo", "alert", "open"] and row[-2:] == ["-", "corrald"], row


# --- commands --------------------------------------------------------------------------------


async def test_mode(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(capsys, server, "mode", "demo", "enforce", "--connect", "alert")
    assert r.code == 0, r.err
    assert ctl.calls[-1] == ("set_mode", "demo", {"exec": "enforce", "open": "enforce",
                                                   "connect": "alert"})  # fmt: skip
    assert r.out.strip() == "demo: exec=enforce open=enforce connect=alert"
    r = await ctl_main(capsys, server, "mode", LONG_NAME, "--exec", "observe")
    assert r.code == 0 and ctl.calls[-1] == ("set_mode", LONG_NAME, {"exec": "observe"})


async def test_agent_says_why_it_is_not_ready(
    capsys: pytest.CaptureFixture[str], server: ApiServer
) -> None:
    """Each gate with where it comes from; what a dimension waits for, one per line."""
    r = await ctl_main(capsys, server, "agent", "demo")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    i = lines.index("promotion:")
    assert lines[i + 1 : i + 10] == [
        "  auto:    no",
        "  gates:",
        "    min_learning:  86400.0 (default)",
        "    quiet_period:  3600.0 (default)",
        "    min_runs:      3 (default)",
        "    alert_period:  86400.0 (default)",
        "    burst_denials: 10 (default)",
        "    burst_window:  3600.0 (default)",
        "  exec:",
    ]
    assert lines[i + 10 : i + 16] == [
        "    mode:        observe",
        "    next:        alert",
        "    ready:       no",
        "    waiting_for:",
        "      - learning for 0s of 24.0h",
        "      - 0 of 3 runs (cgroups) seen while learning",
    ]


async def test_promotion(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(
        capsys, server, "promotion", "demo", "--min-runs", "5", "--quiet", "30m", "--auto", "on"
    )
    assert r.code == 0, r.err
    assert ctl.calls[-1] == ("set_promotion", "demo", {"quiet_period": 1800.0, "min_runs": 5},
                             False, True)  # fmt: skip
    assert "agent:     demo" in r.out and "auto:    yes" in r.out
    assert "min_runs:      5 (operator)" in r.out and "quiet_period:  1800.0 (operator)" in r.out
    r = await ctl_main(capsys, server, "promotion", "demo", "--unset", "quiet", "--reset")
    assert r.code == 0, r.err
    assert ctl.calls[-1] == ("set_promotion", "demo", {"quiet_period": None}, True, None)
    calls = len(ctl.calls)
    r = await ctl_main(capsys, server, "-o", "json", "promotion", LONG_NAME)  # shows, sets nothing
    assert r.code == 0 and len(ctl.calls) == calls
    shown = json.loads(r.out)
    assert shown["agent"] == LONG_NAME and shown["promotion"]["gates"]["min_runs"]["value"] == 3


async def test_promotion_usage_errors(
    capsys: pytest.CaptureFixture[str], server: ApiServer
) -> None:
    for args, message in [
        (["--min-runs", "0"], "expected a whole number from 1 to 100000"),
        (["--min-runs", "five"], "expected a whole number"),
        (["--quiet", "30"], "expected a number and s, m, h or d"),
        (["--alert", "1 day"], "expected a number and s, m, h or d"),
        (["--unset", "colour"], "expected one of min-learning, quiet, min-runs"),
        (["--auto", "maybe"], "invalid choice"),
        (["--quiet", "5m", "--unset", "quiet"], "--unset quiet_period and a value for it"),
    ]:
        r = await ctl_main(capsys, server, "promotion", "demo", *args)
        assert r.code == 2 and message in r.err, (args, r.err)
    r = await ctl_main(capsys, server, "promotion", "demo", "--quiet", "400d")  # the daemon's
    assert r.code == 1 and "'quiet_period': '400d' is not a duration from 0s to 365d" in r.err


async def test_tamper(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(capsys, server, "tamper", "demo")  # shows, sets nothing
    assert r.code == 0, r.err
    assert r.out == "demo: no tamper kind allowed (the default): the kernel guard applies to each\n"
    assert not ctl.calls
    r = await ctl_main(capsys, server, "tamper", "demo", "--allow", "raw-socket", "--allow",
                       "mount", "--allow", "mount")  # fmt: skip
    assert r.code == 0, r.err
    assert ctl.calls[-1] == ("set_tamper", "demo", ["raw-socket", "mount"], [])
    assert r.out == "demo: tamper kinds allowed: mount, raw-socket\n"
    r = await ctl_main(capsys, server, "-o", "json", "tamper", "demo", "--deny", "mount")
    assert r.code == 0, r.err
    assert ctl.calls[-1] == ("set_tamper", "demo", [], ["mount"])
    assert json.loads(r.out) == {"agent": "demo", "tamper_allow": ["raw-socket"]}
    r = await ctl_main(capsys, server, "agent", "demo")  # `agent NAME` shows it too
    assert "tamper_allow: raw-socket" in r.out.splitlines()
    r = await ctl_main(capsys, server, "tamper", "nobody", "--allow", "bpf")
    assert r.code == 1 and "no agent named 'nobody'" in r.err


async def test_tamper_usage_errors(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    for args, message in [
        (["--allow", "mnt"], "expected a tamper kind, one of bpf, mount, chroot, ptrace, "
                             "raw-socket, cgroup, bpffs, signal, prctl, dns-server; got 'mnt'"),
        (["--deny", "all"], "expected a tamper kind"),
        (["--allow", "bpf", "--deny", "bpf"], "tamper: bpf both with --allow and --deny"),
        ([], "the following arguments are required: NAME"),
    ]:  # fmt: skip
        name = [] if not args else ["demo"]
        r = await ctl_main(capsys, server, "tamper", *name, *args)
        assert r.code == 2 and message in r.err, (args, r.err)


def test_tamper_help_says_what_each_kind_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tamper", "--help"]) == 0
    out = capsys.readouterr().out
    kinds = out[out.index("tamper kinds:\n") :].splitlines()[1 : 1 + len(layout.TAMPER_KINDS)]
    assert [line.split()[0] for line in kinds] == list(layout.TAMPER_KINDS)
    assert "  signal      a signal to corrald" in kinds
    prose = " ".join(out.split())
    for text in ("passes the kernel guard for this agent only", "never learned",
                 "By default no kind is allowed", "--deny takes a kind back",
                 "`corralctl diff NAME` as dimension tamper", "spec.tamperAllow"):  # fmt: skip
        assert text in prose, text


async def test_mode_usage_errors(capsys: pytest.CaptureFixture[str], server: ApiServer) -> None:
    r = await ctl_main(capsys, server, "mode", "demo")
    assert r.code == 2 and "at least one" in r.err
    r = await ctl_main(capsys, server, "mode", "demo", "strict")
    assert r.code == 2 and "invalid choice" in r.err


async def test_accept(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(capsys, server, "accept", "demo")
    assert r.code == 0 and ctl.calls[-1] == ("accept", "demo", None)
    assert "accepted 2 deviations" in r.out
    r = await ctl_main(
        capsys, server, "accept", "demo", "--entry", "open:/etc/hosts",
        "--entry", "connect:10.0.0.1:443",
    )  # fmt: skip
    assert r.code == 0
    assert ctl.calls[-1][2] == [
        {"dimension": "open", "object": "/etc/hosts"},
        {"dimension": "connect", "object": "10.0.0.1:443"},
    ]
    r = await ctl_main(capsys, server, "accept", "demo", "--entry", "read:/x")
    assert r.code == 2 and "DIMENSION:OBJECT" in r.err


async def test_reset(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(capsys, server, "reset", LONG_NAME, "--yes")
    assert r.code == 0 and ctl.calls[-1] == ("reset", LONG_NAME)
    assert "observes again" in r.out


async def test_reset_asks_on_a_tty(
    capsys: pytest.CaptureFixture[str],
    server: ApiServer,
    ctl: FakeController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    r = await ctl_main(capsys, server, "reset", "demo")
    assert r.code == 1 and "cancelled" in r.err
    assert not any(c[0] == "reset" for c in ctl.calls)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    r = await ctl_main(capsys, server, "reset", "demo")
    assert r.code == 0 and ctl.calls[-1] == ("reset", "demo")


# --- exit codes ------------------------------------------------------------------------------


async def test_request_failure_exits_1(
    capsys: pytest.CaptureFixture[str], server: ApiServer
) -> None:
    r = await ctl_main(capsys, server, "agent", "nobody")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("corralctl: no agent named 'nobody'")
    r = await ctl_main(capsys, server, "mode", "locked", "off")
    assert r.code == 1 and "pinned" in r.err


async def test_unreachable_exits_3(sock_dir: Path) -> None:
    missing = sock_dir / "nope.sock"
    r = await ctl_proc("status", env={"CORRAL_SOCKET": str(missing)})
    assert r.code == 3
    assert "is corrald running?" in r.err and "systemctl start corrald" in r.err
    assert str(missing) in r.err and r.err.startswith("corralctl: ")


async def test_usage_error_exits_2() -> None:
    r = await ctl_proc("frobnicate")
    assert r.code == 2 and "invalid choice" in r.err


async def test_help_documents_exit_codes_and_modes() -> None:
    r = await ctl_proc("--help")
    assert r.code == 0
    for text in ("exit codes:", "examples:", "observe", "enforce", "CORRAL_SOCKET"):
        assert text in r.out
    for command in ("status", "agents", "agent", "baseline", "mode", "promotion", "tamper",
                    "accept", "reset", "events", "run"):  # fmt: skip
        assert cli.main([command, "--help"]) == 0


def test_modes_and_exit_codes_are_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    """`corralctl --help` says the modes and exit codes; each command's --help points there
    instead of repeating them (`mode`, which takes a MODE, lists the modes too)."""
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.count("exit codes:") == 1 and out.count("deny deviations in the kernel") == 1
    for command in ("status", "agents", "agent", "diff", "accept", "reset", "events", "aibom",
                    "run", "baseline", "promotion", "tamper"):  # fmt: skip
        assert cli.main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "exit codes:" not in out and "deny deviations in the kernel" not in out, command
        assert "modes, exit codes and the environment: see `corralctl --help`" in out, command
    assert cli.main(["accept", "--help"]) == 0
    assert "corralctl accept demo --entry open:/etc/hosts" in capsys.readouterr().out
    assert cli.main(["mode", "--help"]) == 0
    out = capsys.readouterr().out
    assert "deny deviations in the kernel" in out and "exit codes:" not in out


# --- run -------------------------------------------------------------------------------------


async def test_run_exits_with_the_commands_code(server: ApiServer, ctl: FakeController) -> None:
    r = await ctl_proc(
        "--socket", str(server.path), "run", "--agent", "team/x", "--", "sh", "-c",
        "echo $$; exit 7",
    )  # fmt: skip
    assert r.code == 7, r.err
    assert r.err == ""  # nothing extra
    (call,) = [c for c in ctl.calls if c[0] == "run_agent"]
    _, name, pid, caller = call
    assert name == "team/x"
    assert int(r.out) == pid  # the command ran in the very process corrald was given
    assert caller not in (None, pid, os.getpid())  # SO_PEERCRED: corralctl itself
    assert ctl.parents[pid] == caller  # held, not yet exec'd, and corralctl's own child


async def test_run_killed_by_signal_is_128_plus(server: ApiServer) -> None:
    r = await ctl_proc("--socket", str(server.path), "run", "--agent", "demo", "--",
                       "sh", "-c", "kill -TERM $$")  # fmt: skip
    assert r.code == 128 + 15


async def test_run_refused_never_starts_the_command(server: ApiServer, sock_dir: Path) -> None:
    marker = sock_dir / "ran"
    r = await ctl_proc("--socket", str(server.path), "run", "--agent", "refuse", "--",
                       "touch", str(marker))  # fmt: skip
    assert r.code == 1 and "cgroup v2 is not mounted" in r.err
    await asyncio.sleep(0.1)
    assert not marker.exists()


async def test_run_unreachable_never_starts_the_command(sock_dir: Path) -> None:
    marker = sock_dir / "ran"
    r = await ctl_proc("--socket", str(sock_dir / "none.sock"), "run", "--agent", "demo",
                       "--", "touch", str(marker))  # fmt: skip
    assert r.code == 3
    assert not marker.exists()


async def test_run_missing_command(server: ApiServer) -> None:
    r = await ctl_proc("--socket", str(server.path), "run", "--agent", "demo", "--",
                       "/nonexistent/corral-test")  # fmt: skip
    assert r.code == 127 and "cannot run" in r.err
    r = await ctl_proc("--socket", str(server.path), "run", "--agent", "demo")
    assert r.code == 2


async def test_run_verbose(server: ApiServer) -> None:
    r = await ctl_proc("-v", "--socket", str(server.path), "run", "--agent", "demo", "--", "true")
    assert r.code == 0 and "as agent demo" in r.err


async def test_run_in_thread_returns_the_code(server: ApiServer, ctl: FakeController) -> None:
    args = ["--socket", str(server.path), "run", "--agent", "demo", "--", "sh", "-c", "exit 3"]
    assert await asyncio.to_thread(cli.main, args) == 3
    assert ctl.calls[-1][:2] == ("run_agent", "demo")


# --- follow ----------------------------------------------------------------------------------


async def test_events_follow_json_is_ndjson(server: ApiServer, ctl: FakeController) -> None:
    proc = await spawn("--socket", str(server.path), "events", "-f", "-o", "json")
    assert proc.stdout is not None and proc.stderr is not None
    while not ctl.subscribers:
        await asyncio.sleep(0.02)
    for i in range(3):
        ctl.publish(make_event(i))
    lines = [await asyncio.wait_for(proc.stdout.readline(), 5) for _ in range(3)]
    assert [json.loads(line)["object"] for line in lines] == ["/tmp/file0", "/tmp/file1",
                                                              "/tmp/file2"]  # fmt: skip
    await server.close()  # the daemon stops: the stream ends, corralctl says so
    assert await asyncio.wait_for(proc.wait(), 10) == 3
    assert "event stream ended" in (await proc.stderr.read()).decode()


async def test_events_follow_table(server: ApiServer, ctl: FakeController) -> None:
    proc = await spawn("--socket", str(server.path), "events", "--follow", "--agent", "demo")
    assert proc.stdout is not None
    while not ctl.subscribers:
        await asyncio.sleep(0.02)
    ctl.publish(make_event(5))
    header = await asyncio.wait_for(proc.stdout.readline(), 5)
    row = await asyncio.wait_for(proc.stdout.readline(), 5)
    assert header.split()[:3] == [b"TIME", b"AGENT", b"VERDICT"]
    assert row.split()[1:] == [b"demo", b"allowed", b"open", b"/tmp/file5", b"1005", b"python3"]
    proc.terminate()
    await proc.wait()


# --- helpers ---------------------------------------------------------------------------------


def test_ago() -> None:
    assert ago(1000, now=1005) == "5s ago"
    assert ago(1000, now=1000 + 150) == "2m ago"
    assert ago(1000, now=1000 + 7200) == "2h ago"
    assert ago(1000, now=1000 + 3 * 86400) == "3d ago"
    assert ago(1010, now=1000) == "in 10s"


def test_cli_vocabulary_matches_the_kernel_header() -> None:
    assert set(MODES) == set(layout.MODES)
    assert DIMENSIONS == layout.DIMS


def test_agent_path_encodes_slashes() -> None:
    assert agent_path(LONG_NAME, "mode") == "/v1/agents/prod%2FDeployment%2Fchatbot%2Fagent/mode"
    assert REPO.joinpath("daemon/corral/cli/__init__.py").is_file()


async def test_run_restores_sigpipe(server: ApiServer) -> None:
    # Python ignores SIGPIPE; the command must get the default (like a shell gives it).
    r = await ctl_proc("--socket", str(server.path), "run", "--agent", "demo", "--",
                       "sh", "-c", "grep SigIgn /proc/self/status")  # fmt: skip
    assert r.code == 0
    ignored = int(r.out.split()[1], 16)
    assert not ignored & (1 << (13 - 1))  # SIGPIPE


async def test_agents_table_marks_modes_the_node_cannot_apply(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    ctl.agents["locked"]["effective"]["connect"] = "alert (backend cannot deny)"
    r = await ctl_main(capsys, server, "agents")
    row = next(ln for ln in r.out.splitlines() if ln.startswith("locked"))
    assert row.split()[1:4] == ["enforce", "enforce", "enforce*"]
    assert r.out.splitlines()[-1].startswith("* this node cannot apply the mode")


HOSTILE = "/tmp/\x1b[2Jowned\nFAKE  ROW\u202egnp.exe\udcff\\x1b"


async def test_tables_show_hostile_paths_escaped_and_json_exact(
    capsys: pytest.CaptureFixture[str], server: ApiServer, ctl: FakeController
) -> None:
    """A path with ESC, a newline, a right-to-left override, a byte that was not UTF-8 and a
    literal backslash-x: the table cannot clear the screen or forge a row, and tells the
    literal `\\x1b` from the real ESC; -o json keeps every character."""
    ev = make_event(7)
    ev["object"] = HOSTILE
    ctl.events.append(ev)
    r = await ctl_main(capsys, server, "events", "--limit", "1")
    assert r.code == 0, r.err
    assert "\x1b" not in r.out and "\u202e" not in r.out and "\udcff" not in r.out
    assert "\\x1b[2Jowned\\nFAKE  ROW\\u202egnp.exe\\xff\\\\x1b" in r.out
    assert len(r.out.strip().splitlines()) == 2  # the header and one row
    r = await ctl_main(capsys, server, "-o", "json", "events", "--limit", "1")
    assert json.loads(r.out)[-1]["object"] == HOSTILE


def test_run_usage_shows_the_command_after_dashes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "corral.cli", "run", "--help"], capture_output=True, text=True
    ).stdout
    assert out.splitlines()[0].endswith("--agent NAME -- CMD ...")
    assert "corral stopped the command" in out
