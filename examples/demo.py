#!/usr/bin/env python3
"""`make demo`: the README walkthrough, scripted, on this machine's kernel.

It starts its own corrald (temporary state directory, socket and bpffs pin directory, so it
neither needs nor disturbs a corrald started by `make run`), the fake LLM world of
examples/agent.py (outside any agent cgroup), then drives the agent with corralctl:

  1. observe  three normal runs; corral learns the agent's execs, opens and connects
  2. alert    a normal run (no deviation) and an injected run (every step reported as
              would-deny, nothing stopped)
  3. enforce  a normal run (still works) and an injected run: connect EPERM; exec EPERM (BPF LSM,
              fmod_ret) or killed by SIGKILL (fallback); credential open EPERM (BPF LSM,
              fmod_ret) or reported only (fallback) — which applies is read from corrald's
              probe, not assumed

Each check prints PASS or FAIL. Exit 0 when every check passed, 1 when one failed, 2 when the
demo could not run (not root, corrald did not start). Everything it made is removed at the end:
corrald stopped, pins removed (`corrald cleanup`), run cgroups and the temporary directory gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from agent import World  # noqa: E402 - examples/ is not a package

AGENT = "ticket-triage"
START_TIMEOUT = 300  # corrald answering on its socket: seconds on a real machine, minutes under TCG
FAKE_CREDENTIALS = """\
[default]
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
"""
CONFIG = """\
# corrald for `make demo`: learn and react fast; everything else is the default.
learning: {save_interval: 0.5}
promotion: {check_interval: 0.5}
kernel: {suppress_window: 1s}
log_format: json
"""


def tools_dir() -> Path:
    """Where corrald and corralctl are: beside this interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent
    if (here / "corralctl").exists():
        return here
    found = shutil.which("corralctl")
    if not found:
        raise SystemExit("demo: corralctl not found: run `make demo` (it builds the venv)")
    return Path(found).parent


# ---------------------------------------------------------------------------------------------
# output


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        mark = "PASS" if ok else "FAIL"
        print(f"  [{mark}] {what}" + (f" ({detail})" if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(cmd: list[str], out: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    print(textwrap.indent(out.rstrip("\n"), "  "), flush=True)


# ---------------------------------------------------------------------------------------------
# corrald, corralctl and the agent


@dataclass
class Demo:
    bin: Path
    work: Path
    world: World
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    daemon: subprocess.Popen[bytes] | None = None
    events_seen: int = 0

    @property
    def sock(self) -> Path:
        return self.work / "corral.sock"

    @property
    def pins(self) -> Path:
        return Path("/sys/fs/bpf") / f"corral-demo-{self.tag}"

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def creds(self) -> Path:
        """The decoy credential file the injected prompt asks for (in the agent's $HOME)."""
        return self.home / ".aws" / "credentials"

    @property
    def attacker(self) -> str:
        """host:port of the sink the injected prompt sends the credentials to."""
        return self.world.url("attacker").removeprefix("http://")

    @property
    def log(self) -> Path:
        return self.work / "corrald.log"

    def start_daemon(self) -> None:
        (self.work / "corral.yaml").write_text(CONFIG)
        cmd = [
            str(self.bin / "corrald"),
            "--config",
            str(self.work / "corral.yaml"),
            "--state-dir",
            str(self.work / "state"),
            "--socket",
            str(self.sock),
            "--pin-dir",
            str(self.pins),
        ]
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        # seconds on a real machine; minutes under QEMU's emulated CPU on a busy host
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"corrald exited with {self.daemon.returncode}")
            if self.sock.exists() and self.ctl("status").returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"corrald did not answer on its socket within {START_TIMEOUT}s")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "corralctl"), "--socket", str(self.sock), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ctl_json(self, *args: str) -> Any:
        r = self.ctl("-o", "json", *args)
        if r.returncode != 0:
            raise RuntimeError(f"corralctl {' '.join(args)} failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def ctl_show(self, *args: str) -> str:
        r = self.ctl(*args)
        show(["corralctl", *args], r.stdout + r.stderr)
        return r.stdout

    def events(self) -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = self.ctl_json("events", "--agent", AGENT, "--limit", "10000")
        return evs

    def settle(self) -> None:
        """Wait until corrald has taken in everything the kernel reported (no timing claims:
        just until the received-events counter stops moving)."""
        last, still = -1, 0
        while still < 3:
            time.sleep(0.3)
            now = self.ctl_json("status")["events"]["received"]
            still = still + 1 if now == last else 0
            last = now

    def run_agent(self, *, inject: bool, label: str) -> tuple[int, list[dict[str, Any]]]:
        """One agent run under corralctl run; (exit code, its JSON records). Prints the steps."""
        argv = [
            sys.executable,
            str(HERE / "agent.py"),
            "--json",
            "--llm",
            self.world.url("llm"),
            "--workspace",
            str(HERE / "workspace"),
        ] + (["--inject"] if inject else [])
        cmd = ["corralctl", "run", "--agent", AGENT, "--", "python3", "examples/agent.py"]
        print(f"$ {' '.join(cmd)}{' --inject' if inject else ''}    # {label}", flush=True)
        env = dict(os.environ, HOME=str(self.home))
        r = subprocess.run(
            [
                str(self.bin / "corralctl"),
                "--socket",
                str(self.sock),
                "run",
                "--agent",
                AGENT,
                "--",
                *argv,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        records = []
        for line in r.stdout.splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        for rec in records:
            if "tool" in rec:
                arg = next(iter(rec["args"].values()), "")
                arg = " ".join(arg) if isinstance(arg, list) else arg
                print(f"  {rec['tool']:<12} {arg:<46} -> {rec['outcome']}: {rec['detail']}")
            else:
                print(f"  answer: {rec['final']}")
        if r.returncode != 0 or r.stderr.strip():
            print(textwrap.indent(r.stderr.rstrip() or f"exit code {r.returncode}", "  ! "))
        self.settle()
        return r.returncode, records

    def new_events(self) -> list[dict[str, Any]]:
        evs = self.events()
        fresh, self.events_seen = evs[self.events_seen :], len(evs)
        return fresh

    def stop(self) -> None:
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()

    def cleanup(self, run_root: Path | None, run_root_existed: bool) -> None:
        """Leaves nothing behind: daemon, pins, run cgroups, temporary directory, servers."""
        self.stop()
        if self.pins.exists():
            subprocess.run(
                [str(self.bin / "corrald"), "--pin-dir", str(self.pins), "cleanup"],
                capture_output=True,
                text=True,
                check=False,
            )
        if run_root is not None and run_root.is_dir() and self.daemon is not None:
            prefix = f"{urllib.parse.quote(AGENT, safe='')}.{self.daemon.pid}-"
            for d in run_root.iterdir():
                if d.name.startswith(prefix):
                    with contextlib.suppress(OSError):
                        d.rmdir()
            if not run_root_existed:
                with contextlib.suppress(OSError):
                    run_root.rmdir()
        self.world.stop()
        shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the walkthrough


def brief(evs: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{e['verdict']} {e['dimension']} {e['object']!r} by {e['comm']} {','.join(e['flags'])}"
        for e in evs[:5]
    )


def deviations(evs: list[dict[str, Any]], lsm: bool) -> list[dict[str, Any]]:
    """Events that are real deviations. On the tracepoint open backend the kernel sometimes
    cannot read the path an open() was given (the string's page is not resident at syscall
    entry, and the tracepoint may not fault it in): such events carry the `unresolved` flag and
    an empty path. That backend never denies opens, so they are noise, not deviations: shown,
    not counted. On BPF LSM paths come from the kernel's own d_path and every event counts."""
    noise = [e for e in evs if not lsm and e["dimension"] == "open" and "unresolved" in e["flags"]]
    if noise:
        print(
            f"  note: {len(noise)} open(s) with an unreadable path (flag unresolved) reported "
            "by the tracepoint backend; it never denies opens, so they are not deviations"
        )
    return [e for e in evs if e not in noise]


def find(evs: list[dict[str, Any]], dim: str, match: Any) -> list[dict[str, Any]]:
    return [e for e in evs if e["dimension"] == dim and match(e["object"])]


def outcome(records: list[dict[str, Any]], tool: str, arg_has: str) -> str:
    for r in records:
        if r.get("tool") == tool and arg_has in json.dumps(r["args"]):
            return str(r["outcome"])
    return "missing"


def all_ok(records: list[dict[str, Any]]) -> bool:
    tools = [r for r in records if "tool" in r]
    return bool(tools) and all(r["outcome"] == "ok" for r in tools) and "final" in records[-1]


def is_creds(path: str) -> bool:
    """The decoy credential file, whichever form the backend reports: the string given to open
    (tracepoint) or the kernel's d_path, which is relative to the mount it lives on when that
    mount is not reachable from the process's root the usual way (seen in virtme VMs)."""
    return path.endswith("/home/.aws/credentials") and "corral-demo-" in path


def is_shell(path: str) -> bool:
    sh = shutil.which("sh") or "/bin/sh"
    return os.path.realpath(path) == os.path.realpath(sh)


def flip_and_run_normally(d: Demo, rep: Report, mode: str, lsm: bool) -> None:
    """Set the mode, then a normal run must complete and deviate in nothing."""
    d.ctl_show("mode", AGENT, mode)
    rc, recs = d.run_agent(inject=False, label="normal run")
    evs = deviations(d.new_events(), lsm)
    rep.check(rc == 0 and all_ok(recs), f"normal run completed in {mode} mode")
    rep.check(not evs, "normal run: no deviation reported", brief(evs))


def show_capabilities(d: Demo) -> bool:
    """Prints what this kernel enforces (from corrald's probe); True when exec, open and
    connect are denied with EPERM (BPF LSM, or fmod_ret where BPF LSM is not active)."""
    status = d.ctl_json("status")
    caps = status["capabilities"]
    lsm = bool(caps["open"]["mode"] == "enforce")
    heading(f"this kernel ({status['kernel']}): what corral can enforce here")
    for dim, cap in caps.items():
        print(f"  {dim:<8} {cap['mode']:<13} {cap['backend']:<11} {cap['how']}")
    print(
        f"  -> {caps['open']['backend']}: exec, open and connect are denied with EPERM"
        if lsm
        else "  -> fallback backends: connect denied (EPERM), exec killed (SIGKILL), open reported"
    )
    return lsm


def observe_phase(d: Demo, rep: Report) -> None:
    heading("1. observe: corral learns what the agent normally does (3 runs)")
    sizes = []
    for i in range(3):
        rc, recs = d.run_agent(inject=False, label=f"normal run {i + 1}")
        rep.check(rc == 0 and all_ok(recs), f"normal run {i + 1} completed")
        b = d.ctl_json("agent", AGENT)["baseline"]
        counts = b.get("counts", b) if isinstance(b, dict) else {}
        sizes.append(sum(int(counts.get(k, 0)) for k in ("exec", "open", "connect")))
    print(f"  baseline entries after each run: {sizes[0]}, {sizes[1]}, {sizes[2]}")
    rep.check(sizes[0] > 0 and sizes[2] == sizes[1], "the baseline converged (run 3 added nothing)")
    d.new_events()
    text = json.dumps(d.ctl_json("baseline", AGENT))
    rep.check(d.world.url("llm").removeprefix("http://") in text, "LLM endpoint learned")
    rep.check("/examples/workspace/notes.md" in text, "workspace file learned")
    d.ctl_show("agents")


def alert_phase(d: Demo, rep: Report, lsm: bool) -> None:
    heading("2. alert: deviations are reported as would-deny, nothing is stopped")
    flip_and_run_normally(d, rep, "alert", lsm)
    rc, recs = d.run_agent(inject=True, label="prompt-injected run")
    evs = d.new_events()
    rep.check(rc == 0 and all_ok(recs), "injected run: every step still ran (alert only reports)")
    wd = [e for e in evs if e["verdict"] == "would-deny"]
    creds, attacker = str(d.creds), d.attacker
    rep.check(bool(find(wd, "open", is_creds)), f"open {creds}: would-deny")
    rep.check(bool(find(wd, "exec", is_shell) or find(wd, "open", is_shell)), "exec sh: would-deny")
    rep.check(bool(find(wd, "connect", lambda o: o == attacker)), f"connect {attacker}: would-deny")
    rep.check(len(d.world.loot) == 1, "in alert mode the credentials did reach the attacker sink")
    d.ctl_show("events", "--agent", AGENT, "--limit", str(max(len(evs), 1)))


def enforce_phase(d: Demo, rep: Report, lsm: bool) -> None:
    heading("3. enforce: the kernel stops what the agent never did before")
    flip_and_run_normally(d, rep, "enforce", lsm)
    loot_before = len(d.world.loot)
    rc, recs = d.run_agent(inject=True, label="prompt-injected run")
    evs = d.new_events()
    rep.check(rc == 0, "the agent itself kept running (it saw errors from its tools)")
    check_connect_denied(rep, recs, evs, d.attacker)
    rep.check(len(d.world.loot) == loot_before, "nothing reached the attacker sink")
    check_shell_stopped(rep, recs, evs, lsm)
    check_credentials_open(rep, recs, evs, str(d.creds), lsm)
    d.ctl_show("events", "--agent", AGENT, "--limit", str(max(len(evs), 1)))
    d.ctl_show("agents")


Records = list[dict[str, Any]]


def check_connect_denied(rep: Report, recs: Records, evs: Records, attacker: str) -> None:
    seen = outcome(recs, "http_post", attacker)
    denied = [e for e in find(evs, "connect", lambda o: o == attacker) if e["verdict"] == "denied"]
    rep.check(seen == "denied" and bool(denied), f"connect {attacker}: EPERM", f"agent saw {seen}")


def check_shell_stopped(rep: Report, recs: Records, evs: Records, lsm: bool) -> None:
    seen = outcome(recs, "run_command", '"sh"')
    if lsm:  # the binary's open may be what the kernel refuses first
        hits = find(evs, "exec", is_shell) + find(evs, "open", is_shell)
        ok = seen == "denied" and any(e["verdict"] == "denied" for e in hits)
        rep.check(ok, "exec sh: EPERM (BPF LSM or fmod_ret)", f"agent saw {seen}")
        return
    killed = [e for e in find(evs, "exec", is_shell) if e["verdict"] == "killed"]
    rep.check(
        seen == "killed" and bool(killed),
        "exec sh: killed by SIGKILL before its first instruction (tracepoint backend)",
        f"agent saw {seen}",
    )


def check_credentials_open(rep: Report, recs: Records, evs: Records, creds: str, lsm: bool) -> None:
    seen = outcome(recs, "read_file", ".aws/credentials")
    hits = find(evs, "open", is_creds)
    if lsm:
        ok = seen == "denied" and any(e["verdict"] == "denied" for e in hits)
        rep.check(ok, f"open {creds}: EPERM (BPF LSM or fmod_ret)", f"agent saw {seen}")
        return
    reported = any(e["verdict"] == "would-deny" and "noenforce" in e["flags"] for e in hits)
    rep.check(
        reported,
        f"open {creds}: reported, not denied (no BPF LSM nor fmod_ret here)",
        f"agent saw {seen}",
    )


def walkthrough(d: Demo, rep: Report) -> None:
    lsm = show_capabilities(d)
    observe_phase(d, rep)
    alert_phase(d, rep, lsm)
    enforce_phase(d, rep, lsm)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="Run as root (it loads BPF programs and makes cgroups): `sudo make demo`.",
    ).parse_args(argv)
    if os.geteuid() != 0:
        print("demo: run as root: corrald loads BPF programs and makes cgroups", file=sys.stderr)
        return 2
    from corral.kernel.loader import cgroup2_root  # the venv's corral: after the root check

    work = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    (work / "home" / ".aws").mkdir(parents=True)
    (work / "home" / ".aws" / "credentials").write_text(FAKE_CREDENTIALS)
    world = World(0).start()
    d = Demo(bin=tools_dir(), work=work, world=world)
    run_root = cgroup2_root() / "corral.run"
    existed = run_root.exists()
    rep = Report()
    print(f"corral demo: corrald with state {work}/state, socket {d.sock}, pins {d.pins}")
    print(
        f"fake LLM {world.url('llm')}, ticket API {world.url('api')}, "
        f"attacker sink {world.url('attacker')} (outside the agent's cgroup)"
    )
    try:
        d.start_daemon()
        walkthrough(d, rep)
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
        print(f"\ndemo: could not finish: {e}", file=sys.stderr)
        with contextlib.suppress(OSError):
            print(
                "last corrald log lines:\n" + "\n".join(d.log.read_text().splitlines()[-25:]),
                file=sys.stderr,
            )
        rep.failed.append(str(e))
        d.cleanup(run_root, existed)
        return 2 if rep.passed == 0 else 1
    except KeyboardInterrupt:
        d.cleanup(run_root, existed)
        return 130
    d.cleanup(run_root, existed)
    heading(f"result: {rep.passed} checks passed, {len(rep.failed)} failed")
    for what in rep.failed:
        print(f"  failed: {what}")
    print("cleaned up: corrald stopped, pins removed, run cgroups and temporary files gone")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
