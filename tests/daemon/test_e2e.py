"""Issue acceptance, end to end on this kernel: a real corrald process, real corralctl commands,
real agents in real cgroups. Learn -> enforce -> kill -9 -> restart."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.kernel.loader import remove_pins
from tests.daemon.unix_http import BASE_URL, unix_session

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups")


@dataclass
class Daemon:
    state: Path
    sock: Path
    pins: Path
    proc: subprocess.Popen[str] | None = None
    extra_config: str = ""  # YAML lines appended to the test configuration

    def start(self) -> None:
        cfg = self.state.parent / "corral.yaml"
        cfg.write_text(
            textwrap.dedent("""
            learning: {save_interval: 0.2}
            promotion: {check_interval: 0.2}
            kernel: {suppress_window: 1s}
            log_format: json
        """)
            + self.extra_config
        )
        self.log = open(self.state.parent / "corrald.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(BIN / "corrald"),
                "--config",
                str(cfg),
                "--state-dir",
                str(self.state),
                "--socket",
                str(self.sock),
                "--pin-dir",
                str(self.pins),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 180  # generous: the VM suite runs under TCG emulation
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"corrald exited: {self.logs()[-3000:]}")
            if self.sock.exists() and ctl(self, "status").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"corrald did not come up: {self.logs()[-3000:]}")

    def logs(self) -> str:
        return (self.state.parent / "corrald.log").read_text()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


def ctl(d: Daemon, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "corralctl"), "--socket", str(d.sock), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ctl_json(d: Daemon, *args: str) -> object:
    r = ctl(d, "-o", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@contextlib.contextmanager
def running_daemon(tmp_path: Path, extra_config: str = "") -> Iterator[Daemon]:
    """A started corrald with its own state, socket and pins; stopped and unpinned after."""
    tag = uuid.uuid4().hex[:8]
    d = Daemon(
        state=tmp_path / "state",
        sock=tmp_path / "corral.sock",
        pins=Path("/sys/fs/bpf") / f"corral-e2e-{tag}",
        extra_config=extra_config,
    )
    d.start()
    try:
        yield d
    finally:
        d.stop()
        if d.pins.exists():
            for fp in list(d.pins.iterdir()):
                remove_pins(fp)
            d.pins.rmdir()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path) as d:
        yield d


AGENT_PY = textwrap.dedent("""
    import socket, sys
    port, path = int(sys.argv[1]), sys.argv[2]
    try:
        with open(path) as f:
            f.read()
        print("open:ok", end=" ")
    except PermissionError:
        print("open:EPERM", end=" ")
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        print("connect:ok")
    except ConnectionRefusedError:
        print("connect:refused")
    except PermissionError:
        print("connect:EPERM")
    if sys.argv[3:] == ["--sleep"]:
        import time
        time.sleep(600)
""")


def test_learn_enforce_kill9_restart(daemon: Daemon, tmp_path: Path) -> None:
    # open is denied where a backend denies it (BPF LSM, fmod_ret), reported elsewhere
    lsm = ctl_json(daemon, "status")["capabilities"]["open"]["mode"] == "enforce"
    agent_py = tmp_path / "agent.py"
    agent_py.write_text(AGENT_PY)
    data = tmp_path / "data.txt"
    data.write_text("hello")
    novel_file = tmp_path / "secret.txt"
    novel_file.write_text("secret")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]

        def run_agent(*argv: str) -> subprocess.CompletedProcess[str]:
            return ctl(daemon, "run", "--agent", "demo", "--", *argv)

        # observe: learn the agent's normal behaviour
        for _ in range(3):
            r = run_agent(sys.executable, str(agent_py), str(port), str(data))
            assert r.stdout.strip() == "open:ok connect:ok", r.stderr
        time.sleep(1.0)
        base = ctl_json(daemon, "baseline", "demo")
        text = json.dumps(base)
        assert "127.0.0.1" in text and str(port) in text
        assert str(data) in text

        # enforce all dimensions
        assert ctl(daemon, "mode", "demo", "enforce").returncode == 0
        r = run_agent(sys.executable, str(agent_py), str(port), str(data))
        assert r.stdout.strip() == "open:ok connect:ok", "baselined behaviour keeps working"

        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            novel_port = other.getsockname()[1]
        r = run_agent(sys.executable, str(agent_py), str(novel_port), str(novel_file))
        opened, connected = r.stdout.split()
        assert connected == "connect:EPERM", "novel connect denied in the kernel"
        assert opened == ("open:EPERM" if lsm else "open:ok"), "open denied where it can be"

        true = shutil.which("true") or "/bin/true"
        r = run_agent(true)
        assert r.returncode in (128 + signal.SIGKILL, 126), "novel exec killed (or EPERM on LSM)"
        verb = "killed" if r.returncode == 128 + signal.SIGKILL else "denied"
        assert f"corralctl: corral {verb} exec " in r.stderr, "run says what corral stopped"

        time.sleep(1.0)
        evs = ctl_json(daemon, "events", "--agent", "demo", "--limit", "1000")
        assert isinstance(evs, list)
        objects = {(e["dimension"], e["verdict"], e["object"]) for e in evs}
        assert ("connect", "denied", f"127.0.0.1:{novel_port}") in objects
        # On LSM the kernel opens the binary (file_open) before bprm_check: the open dimension may
        # be the one that denies it.
        assert any(
            d in ("exec", "open") and v in ("killed", "denied") and o.endswith("/true")
            for d, v, o in objects
        )
        assert any(d == "open" and o == str(novel_file) for d, v, o in objects)
        assert all(e["agent"] == "demo" for e in evs)

        # a long-lived agent process (python is baselined) keeps its run cgroup alive
        sleeper = subprocess.Popen(
            [
                str(BIN / "corralctl"),
                "--socket",
                str(daemon.sock),
                "run",
                "--agent",
                "demo",
                "--",
                sys.executable,
                str(agent_py),
                str(port),
                str(data),
                "--sleep",
            ]
        )
        cg = _cgroup_of_child(sleeper.pid)
        before = ctl_json(daemon, "agent", "demo")

        # kill -9 the daemon: the kernel keeps denying
        daemon.kill9()
        try:
            r = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    textwrap.dedent(f"""
                    import os, socket
                    from pathlib import Path
                    (Path({str(cg)!r}) / "cgroup.procs").write_text(str(os.getpid()))
                    s = socket.socket()
                    try:
                        s.connect(("127.0.0.1", {novel_port}))
                        print("connected")
                    except ConnectionRefusedError:
                        print("refused")
                    except PermissionError:
                        print("EPERM")
                """),
                ],
                capture_output=True,
                text=True,
            )
            assert r.stdout.strip() == "EPERM", f"denial must hold with corrald dead: {r.stderr}"

            # restart: same modes, same baseline
            daemon.start()
            after = ctl_json(daemon, "agent", "demo")
            assert (
                after["modes"]
                == before["modes"]
                == dict.fromkeys(("exec", "open", "connect"), "enforce")
            )
            assert after["baseline"] == before["baseline"]
            assert ctl_json(daemon, "status")["kernel_state"]["adopted"] is True
            assert any(w["cgroup"] == str(cg) for w in after["workloads"]), "run cgroup adopted"
        finally:
            # corralctl run is like `systemd-run --scope`: the agent outlives a killed corralctl
            (cg / "cgroup.kill").write_text("1")
            sleeper.kill()
            sleeper.wait()


def test_a_lost_registry_never_demotes_an_enforced_agent(tmp_path: Path) -> None:
    """Issue 16, state that never fails open: corrald is killed, its agent registry
    (agents.json) is garbage when it comes back. The kernel kept each agent's id, modes and
    list ids and the cgroups registered to it: the agent whose `run` cgroup is still alive gets
    all of that back (a new run of it is denied what it never did, as before), never a new
    agent in observe; one whose cgroups are all gone stays enforced in the kernel and is listed
    as unclaimed. Killed as the attacker wants it: right after an agent was put in enforce."""
    agent_py = tmp_path / "agent.py"
    agent_py.write_text(AGENT_PY)
    data = tmp_path / "data.txt"
    data.write_text("hello")
    with running_daemon(tmp_path) as d, socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            novel_port = other.getsockname()[1]

        def run(agent: str, *argv: str) -> subprocess.CompletedProcess[str]:
            return ctl(d, "run", "--agent", agent, "--", *argv)

        for agent in ("keeper", "gone"):  # learn, then enforce
            for _ in range(2):
                r = run(agent, sys.executable, str(agent_py), str(port), str(data))
                assert r.stdout.strip() == "open:ok connect:ok", r.stderr
        time.sleep(1.0)
        for agent in ("keeper", "gone"):
            assert ctl(d, "mode", agent, "enforce").returncode == 0
        keeper, gone = ctl_json(d, "agent", "keeper"), ctl_json(d, "agent", "gone")
        enforce = dict.fromkeys(("exec", "open", "connect"), "enforce")
        assert keeper["modes"] == gone["modes"] == enforce

        # keeper runs on (python and the connect are baselined); gone's cgroups are swept
        sleeper = subprocess.Popen(
            [str(BIN / "corralctl"), "--socket", str(d.sock), "run", "--agent", "keeper", "--",
             sys.executable, str(agent_py), str(port), str(data), "--sleep"]
        )  # fmt: skip
        cg = _cgroup_of_child(sleeper.pid)
        try:
            _wait(lambda: not ctl_json(d, "agent", "gone")["workloads"])
            d.kill9()
            registry = d.state / "agents.json"
            assert json.loads(registry.read_text())["agents"], "the modes were saved"
            registry.write_text('{"schema": 2, "agents": [{"name": "keeper", "id": 1, ')

            d.start()
            assert list(d.state.glob("agents.corrupt-*")), "the garbage is kept for inspection"
            after = ctl_json(d, "agent", "keeper")
            assert after["id"] == keeper["id"] and after["modes"] == enforce
            assert after["history"][-1]["by"] == "recovery"
            assert any(w["cgroup"] == str(cg) for w in after["workloads"])

            # a new run of keeper: enforced as before the registry was lost
            r = run("keeper", sys.executable, str(agent_py), str(port), str(data))
            assert r.stdout.strip() == "open:ok connect:ok", "its baseline still holds"
            r = run("keeper", sys.executable, str(agent_py), str(novel_port), str(data))
            assert r.stdout.split()[-1] == "connect:EPERM", "a novel connect is denied"
            r = run("keeper", shutil.which("true") or "/bin/true")
            assert r.returncode in (128 + signal.SIGKILL, 126), "a novel exec is killed"

            status = ctl_json(d, "status")
            assert status["kernel_state"]["adopted"] is True
            (unclaimed,) = status["unclaimed_kernel_agents"]
            assert unclaimed["id"] == gone["id"] and unclaimed["modes"] == enforce
            assert "gone" not in [a["name"] for a in ctl_json(d, "agents")]
            lines = [json.loads(ln) for ln in d.logs().splitlines() if ln.startswith("{")]
            (line,) = [ln for ln in lines if ln.get("event") == (
                "agent recovered from the kernel after the registry was lost")]  # fmt: skip
            assert (line["agent"], line["id"], line["modes"]) == ("keeper", keeper["id"], enforce)
            assert not any("rediscovered" in ln.get("event", "") for ln in lines)
        finally:
            (cg / "cgroup.kill").write_text("1")
            sleeper.kill()
            sleeper.wait()


def _cgroup_of_child(parent: int, timeout: float = 30) -> Path:
    """The cgroup v2 directory of parent's child (read from outside: the agent may not open)."""
    from corral.kernel.loader import cgroup2_root

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if kids:
            rel = Path(f"/proc/{kids[0]}/cgroup").read_text().strip().split("::", 1)[1]
            if "corral.run" in rel:
                return cgroup2_root() / rel.lstrip("/")
        time.sleep(0.1)
    raise AssertionError("the agent process did not start in a corral.run cgroup")


def test_rechecks_prove_the_backends_again_and_keep_what_acts(tmp_path: Path) -> None:
    """corrald re-runs the probe by effect every kernel.recheck_interval: the backends it
    enforces with are proven again (status counts the checks) and stay as they were."""
    extra = "kernel: {suppress_window: 1s, recheck_interval: 1s}\n"
    with running_daemon(tmp_path, extra_config=extra) as d:
        first = ctl_json(d, "status")
        assert isinstance(first, dict)
        deadline = time.monotonic() + 180  # a probe takes seconds under TCG
        while True:
            status = ctl_json(d, "status")
            assert isinstance(status, dict)
            if status["rechecks"]["done"] >= 2:
                break
            assert time.monotonic() < deadline, status["rechecks"]
            time.sleep(0.5)
        assert status["rechecks"]["interval_seconds"] == 1.0
        assert status["capabilities"] == first["capabilities"]
        assert all(c["mode"] != "lost" for c in status["capabilities"].values())
        assert "enforcement lost" not in d.logs()


@pytest.mark.userspace
def test_a_confined_agent_cannot_use_the_admin_api(daemon: Daemon) -> None:
    """Attack: an agent started as root with `corralctl run` switches its own enforcement off
    through the admin socket (it can open the socket: same uid). Any backend: corrald refuses
    every caller whose cgroup is an agent's (or below one) with 403, and logs an audit line."""
    r = ctl(daemon, "run", "--agent", "attacker", "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert ctl(daemon, "mode", "attacker", "alert").returncode == 0
    inner = [str(BIN / "corralctl"), "--socket", str(daemon.sock)]
    raw_put = textwrap.dedent(f"""
        import socket
        body = b'{{"mode": "off"}}'
        s = socket.socket(socket.AF_UNIX)
        s.connect({str(daemon.sock)!r})
        s.sendall(b"PUT /v1/agents/attacker/mode HTTP/1.1\\r\\nHost: x\\r\\n"
                  b"Content-Type: application/json\\r\\nContent-Length: "
                  + str(len(body)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n" + body)
        print(s.recv(4096).split(b"\\r\\n")[0].decode())
    """)
    for attack in (
        [*inner, "mode", "attacker", "off"],
        [*inner, "reset", "attacker", "--yes"],
        [*inner, "run", "--agent", "other", "--", "true"],
        [sys.executable, "-c", raw_put],
    ):
        r = ctl(daemon, "run", "--agent", "attacker", "--", *attack)
        assert "403" in r.stdout or "does not take requests from confined agents" in r.stderr, (
            attack,
            r.stdout,
            r.stderr,
        )
    agent = ctl_json(daemon, "agent", "attacker")
    assert isinstance(agent, dict)
    assert agent["modes"] == dict.fromkeys(("exec", "open", "connect"), "alert")
    assert "other" not in {a["name"] for a in ctl_json(daemon, "agents")}  # type: ignore[union-attr]
    assert "admin API refused a confined agent" in daemon.logs()  # at most 1/s per agent
    assert ctl(daemon, "status").returncode == 0  # the node's operator is still served


@pytest.mark.host_only
def test_a_mode_change_that_cannot_be_saved_changes_nothing(tmp_path: Path) -> None:
    """Attack on state: with the state directory full (ENOSPC), `mode X enforce` used to answer
    0 and enforce until the next restart, which brought the agent back in observe. Now the
    change is acknowledged only once saved: 503, and the agent stays in alert, in the kernel
    too (a novel connect still goes through: on this host's fallback a connect in ENFORCE
    would be EPERM)."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)], check=True)
    try:
        with running_daemon(tmp_path) as d:
            r = ctl(d, "run", "--agent", "durable", "--", sys.executable, "-c", "pass")
            assert r.returncode == 0, r.stderr
            assert ctl(d, "mode", "durable", "alert").returncode == 0
            filler = state / "filler"
            with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
            r = ctl(d, "mode", "durable", "enforce")
            assert r.returncode != 0
            assert "were not changed" in r.stderr and "Nothing changed" in r.stderr, r.stderr
            agent = ctl_json(d, "agent", "durable")
            assert isinstance(agent, dict)
            assert set(agent["modes"].values()) == {"alert"}
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            port = srv.getsockname()[1]
            probe = f"import socket; socket.create_connection(('127.0.0.1', {port})); print('ok')"
            r = ctl(d, "run", "--agent", "durable", "--", sys.executable, "-c", probe)
            srv.close()
            assert r.returncode == 0 and "ok" in r.stdout, r.stderr  # the kernel: still alert
            filler.unlink()
            assert ctl(d, "mode", "durable", "enforce").returncode == 0
            d.kill9()
            d.start()
            agent = ctl_json(d, "agent", "durable")
            assert isinstance(agent, dict)
            assert set(agent["modes"].values()) == {"enforce"}  # what was acknowledged
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def _pins_of(d: Daemon) -> Path:
    (fp,) = [p for p in d.pins.iterdir() if p.is_dir()]
    return fp


def _wait(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("not within the time")


def _tamper_counts(d: Daemon) -> dict[str, int]:
    status = ctl_json(d, "status")
    assert isinstance(status, dict)
    return dict(status["kernel_verification"]["tamper_detected"])


def test_corrald_puts_back_what_an_escaped_agent_changed_in_its_kernel_state(
    tmp_path: Path,
) -> None:
    """Attacks on corral's own BPF state, as a root process that reached bpffs would make them
    (from outside every agent: agents in ENFORCE are kept from bpf() and bpffs by the tamper
    guard, tests/kernel/test_guard.py; this is the detection that backs it). Any backend:
    the agent's modes written to observe and every tamper kind allowed in the pinned agent_cfg
    map, a link pin removed, a cgroup link detached
    (BPF_LINK_DETACH). corrald reads back its state every kernel.verify_interval: each is put
    back, logged `tamper detected` and counted in status and metrics; enforcement holds again.
    Then kill -9, detach a link, restart: the damaged pins are not adopted but replaced."""
    from bpfkit import Link, Map
    from corral.kernel import layout

    with running_daemon(tmp_path, "kernel: {verify_interval: 1s}\n") as d:
        r = ctl(d, "run", "--agent", "victim", "--", sys.executable, "-c", "pass")
        assert r.returncode == 0, r.stderr
        assert ctl(d, "mode", "victim", "enforce").returncode == 0
        agent = ctl_json(d, "agent", "victim")
        assert isinstance(agent, dict)
        pins = _pins_of(d)

        cfg = Map.open_pinned(pins / "maps" / "agent_cfg")
        key = agent["id"].to_bytes(4, "little")
        v = layout.from_bytes("struct corral_agent_cfg", cfg.lookup(key) or b"")
        for i in range(3):
            v.mode[i] = layout.mode_index("observe")
        v.tamper_allow = layout.tamper_bits(set(layout.TAMPER_KINDS))  # every kind let through
        cfg.update(key, layout.to_bytes(v))

        def modes_back() -> bool:
            now = layout.from_bytes("struct corral_agent_cfg", cfg.lookup(key) or b"")
            modes = all(now.mode[i] == layout.mode_index("enforce") for i in range(3))
            return modes and now.tamper_allow == 0

        _wait(modes_back)
        cfg.close()
        _wait(lambda: _tamper_counts(d).get("agent_cfg", 0) >= 1)

        pin = pins / "links" / "corral_cg_sendmsg4"
        pin.unlink()
        _wait(pin.exists)
        _wait(lambda: _tamper_counts(d).get("pin_missing", 0) >= 1)

        link = Link.open_pinned(pin)
        link.detach()
        link.destroy()

        def attached_again() -> bool:
            with contextlib.closing(Link.open_pinned(pin)) as now:
                return not now.info().detached

        _wait(attached_again)
        _wait(lambda: _tamper_counts(d).get("link_detached", 0) >= 1)
        status = ctl_json(d, "status")
        assert isinstance(status, dict)
        assert status["capabilities"]["connect"]["mode"] != "lost"  # re-attached: enforced
        assert d.logs().count("tamper detected") >= 3

        d.kill9()
        link = Link.open_pinned(pin)
        link.detach()
        link.destroy()
        d.start()
        assert "pinned bpf state was tampered with: not adopted" in d.logs()
        new_pin = _pins_of(d) / "links" / "corral_cg_sendmsg4"
        with contextlib.closing(Link.open_pinned(new_pin)) as now:
            assert not now.info().detached
        agent = ctl_json(d, "agent", "victim")
        assert isinstance(agent, dict)
        assert set(agent["modes"].values()) == {"enforce"}


@pytest.mark.host_only
def test_run_says_when_corral_stopped_the_command(daemon: Daemon) -> None:
    """`corralctl run` used to exit 137 (or 126) without a word when corral killed (or denied)
    the command's exec: it now says what corral stopped, why and where to look. On the
    fallback backend the exec is killed (137), on BPF LSM and fmod_ret denied (126)."""
    r = ctl(daemon, "run", "--agent", "runner", "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert ctl(daemon, "mode", "runner", "enforce").returncode == 0
    ls = shutil.which("ls")
    assert ls is not None
    r = ctl(daemon, "run", "--agent", "runner", "--", ls, "/")
    assert r.returncode in (126, 137), (r.returncode, r.stderr)
    verb = "killed" if r.returncode == 137 else "denied"
    assert f"corralctl: corral {verb} exec " in r.stderr, r.stderr
    assert "/ls " in r.stderr and "not in the baseline of agent runner" in r.stderr, r.stderr
    assert "enforce mode" in r.stderr and "corralctl diff runner" in r.stderr, r.stderr
    assert daemon.logs().count("listening") == 1  # one line says the API is up (was two)


RAW_SOCKET_PY = """
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    print("ok")
except PermissionError:
    print("EPERM")
"""


def test_an_allowed_tamper_kind_passes_the_guard_for_that_agent_only(daemon: Daemon) -> None:
    """The tamper guard denies an agent in ENFORCE (here: connect only) a raw inet socket
    (EPERM on every backend: cgroup/sock_create on the fallback); `diff` shows the attempt as
    a tamper row that says how to allow it. `corralctl tamper NAME --allow raw-socket` lets
    the same command through, for that agent only, kept across a restart of corrald;
    `--deny` takes it back."""
    d = daemon
    raw = [sys.executable, "-c", RAW_SOCKET_PY]
    for name in ("sandbox", "other"):
        assert ctl(d, "run", "--agent", name, "--", sys.executable, "-c", "pass").returncode == 0
        assert ctl(d, "mode", name, "--connect", "enforce").returncode == 0
    status = ctl_json(d, "status")
    assert isinstance(status, dict)
    guard = status["tamper_guard"]["kinds"]["raw-socket"]
    if "EPERM" not in guard:
        pytest.skip(f"the tamper guard does not deny raw sockets here: {guard}")

    def attempt(name: str) -> str:
        r = ctl(d, "run", "--agent", name, "--", *raw)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert attempt("sandbox") == "EPERM"

    def tamper_rows() -> list[dict[str, Any]]:
        diff = ctl_json(d, "diff", "sandbox")
        assert isinstance(diff, dict)
        return [r for r in diff["rows"] if r["dimension"] == "tamper"]

    _wait(tamper_rows)
    (row,) = tamper_rows()
    assert row["verdicts"] == ["denied"], row
    assert "corralctl tamper NAME --allow KIND" in row["note"], row
    assert "tamper" in ctl(d, "diff", "sandbox").stdout

    r = ctl(d, "tamper", "sandbox", "--allow", "raw-socket")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "sandbox: tamper kinds allowed: raw-socket\n"
    assert attempt("sandbox") == "ok"
    assert attempt("other") == "EPERM"  # for that agent only
    agent = ctl_json(d, "agent", "sandbox")
    assert isinstance(agent, dict) and agent["tamper_allow"] == ["raw-socket"]
    logged = [json.loads(line) for line in d.logs().splitlines() if "tamper kinds allowed" in line]
    assert [(e["agent"], e["allowed"], e["by"]) for e in logged] == [
        ("sandbox", ["raw-socket"], "api")
    ]

    d.stop()
    d.start()
    agent = ctl_json(d, "agent", "sandbox")
    assert isinstance(agent, dict) and agent["tamper_allow"] == ["raw-socket"]
    assert attempt("sandbox") == "ok"

    r = ctl(d, "tamper", "sandbox", "--deny", "raw-socket")
    assert r.returncode == 0 and "no tamper kind allowed" in r.stdout, r
    assert attempt("sandbox") == "EPERM"
    bad = ctl(d, "tamper", "sandbox", "--allow", "raw")
    assert bad.returncode == 2 and "expected a tamper kind, one of bpf, mount" in bad.stderr, bad


PROMOTION_FAST = """
defaults: {auto_promote: true}
promotion: {check_interval: 0.2, min_learning: 1s, quiet_period: 1s, alert_period: 2s,
            min_runs: 2, burst_denials: 3, burst_window: 1h}
"""


@pytest.mark.host_only
def test_auto_promotion_waits_for_evidence_and_reports_denials_after(tmp_path: Path) -> None:
    """Safe promotion with a real corrald (gates shortened): one run is not enough evidence
    (`agent` says it waits for 2 runs); the agent's own gate, set through the API (`corralctl
    promotion --min-runs 3`), holds it after the second run too, until it is unset again: then
    every dimension moves to alert, then to enforce after alert_period without deviations;
    denials piling up after that are reported once (log, an event of kind denial-burst in
    `events`, status, metric), and corral does not step back by itself; the operator's step
    back (`mode NAME --connect alert`) holds until the denials are reviewed."""
    with running_daemon(tmp_path, PROMOTION_FAST) as d:

        def agent() -> dict[str, Any]:
            a = ctl_json(d, "agent", "promoted")
            assert isinstance(a, dict)
            return a

        # learns what the probe below needs besides its connects (on BPF LSM opens are
        # enforced too: an import not learned would be denied)
        one_run = ["run", "--agent", "promoted", "--", sys.executable, "-c", "import socket"]
        assert ctl(d, *one_run).returncode == 0
        time.sleep(2)
        a = agent()
        assert set(a["modes"].values()) == {"observe"}
        assert "1 of 2 runs (cgroups) seen while learning" in a["promotion"]["exec"]["waiting_for"]
        assert a["promotion"]["gates"]["min_runs"] == {"value": 2, "text": "2", "source": "config"}

        # the agent's own gate (the operator's) wins over the config's
        r = ctl(d, "promotion", "promoted", "--min-runs", "3")
        assert r.returncode == 0 and "min_runs:      3 (operator)" in r.stdout, r
        assert ctl(d, *one_run).returncode == 0
        time.sleep(2)
        a = agent()
        assert set(a["modes"].values()) == {"observe"}
        assert "2 of 3 runs (cgroups) seen while learning" in a["promotion"]["exec"]["waiting_for"]
        r = ctl(d, "agent", "promoted")  # says why, for people
        assert "min_runs:      3 (operator)" in r.stdout, r.stdout
        assert "      - 2 of 3 runs (cgroups) seen while learning" in r.stdout, r.stdout
        bad = ctl(d, "promotion", "promoted", "--min-runs", "0")
        assert bad.returncode == 2 and "whole number from 1" in bad.stderr, bad
        bad = ctl(d, "promotion", "promoted", "--quiet", "400d")  # refused by corrald: 400
        assert bad.returncode == 1 and "is not a duration from 0s to 365d" in bad.stderr, bad

        assert ctl(d, "promotion", "promoted", "--unset", "min-runs").returncode == 0
        _wait(lambda: set(agent()["modes"].values()) == {"enforce"}, timeout=30)
        steps = [(h["to"], h["by"]) for h in agent()["history"] if h["dimension"] == "connect"]
        assert steps[-2:] == [("alert", "auto-promotion"), ("enforce", "auto-promotion")]

        probe = textwrap.dedent("""
            import socket
            for port in range(1, 6):
                s = socket.socket()
                try:
                    s.connect(("127.0.0.1", port))
                except OSError as e:
                    print(e.errno)
        """)
        r = ctl(d, "run", "--agent", "promoted", "--", sys.executable, "-c", probe)
        assert r.stdout.split() == ["1"] * 5, r  # EPERM: enforced
        _wait(lambda: "denials after auto-promotion" in d.logs())
        status = ctl_json(d, "status")
        assert isinstance(status, dict) and status["promotion"]["denial_bursts"] == 1
        assert set(agent()["modes"].values()) == {"enforce"}  # never stepped back
        events = ctl_json(d, "events", "--agent", "promoted")
        assert isinstance(events, list)
        bursts = [e for e in events if e["kind"] == "denial-burst"]
        assert len(bursts) == 1, events
        assert bursts[0]["dimension"] == "connect" and bursts[0]["denials"] >= 3
        assert "corralctl mode promoted --connect alert" in bursts[0]["what_to_do"]
        assert {e["kind"] for e in events} == {"kernel", "denial-burst"}
        table = ctl(d, "events", "--agent", "promoted").stdout
        assert "connect denials in" in table and "after the auto-promotion to enforce" in table
        logged = [json.loads(line) for line in d.logs().splitlines() if '"denial-burst"' in line]
        assert any(e.get("event") == "event" and e["kind"] == "denial-burst" for e in logged)
        with unix_session(str(d.sock)) as session:
            metrics = session.get(f"{BASE_URL}/metrics", timeout=5).text
        assert "\ncorral_promotion_denial_bursts_total 1.0\n" in metrics

        # one step back, and it sticks: auto-promotion waits for the denials to be reviewed
        assert ctl(d, "mode", "promoted", "--connect", "alert").returncode == 0
        time.sleep(3)  # alert_period is 2s
        a = agent()
        assert a["modes"]["connect"] == "alert" and not a["promotion"]["connect"]["ready"]
        assert "waiting for review: corralctl diff promoted" in a["promotion"]["connect"]["reason"]


@pytest.mark.userspace
def test_a_forged_cgroup_line_does_not_pass_for_the_caller(daemon: Daemon, tmp_path: Path) -> None:
    """Attack found by the red team: a root agent puts itself into a cgroup v1 (named)
    hierarchy under a cgroup named "rt\\r0::". /proc/PID/cgroup then holds a line that a text
    reading split at "\\r" took for the v2 line: "0::" (the root cgroup, not confined), and
    `mode evil off` went through. corrald now splits at "\\n" only and wants exactly one v2
    line: 403, modes unchanged. User space: the same on every backend."""
    r = ctl(daemon, "run", "--agent", "forger", "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert ctl(daemon, "mode", "forger", "alert").returncode == 0
    mnt = tmp_path / "v1"
    mnt.mkdir()
    attack = (
        f"mount -t cgroup -o none,name=corralforge cgroup {mnt} || {{ echo NOMOUNT; exit 0; }}; "
        f'n="{mnt}/$(printf "rt\\r0::")"; mkdir -p "$n"; echo $$ > "$n/cgroup.procs"; '
        f"exec {BIN / 'corralctl'} --socket {daemon.sock} mode forger off"
    )
    try:
        r = ctl(daemon, "run", "--agent", "forger", "--", "sh", "-c", attack)
        if "NOMOUNT" in r.stdout:
            pytest.skip("this kernel cannot mount a cgroup v1 named hierarchy: no v1 forgery")
        assert r.returncode != 0 and "confined agents" in r.stderr, (r.stdout, r.stderr)
        agent = ctl_json(daemon, "agent", "forger")
        assert isinstance(agent, dict) and set(agent["modes"].values()) == {"alert"}
    finally:  # the agent mounted the hierarchy where the test runs: remove what it made
        if os.path.ismount(mnt):
            for child in mnt.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            subprocess.run(["umount", str(mnt)], check=False)


SCRATCH_PY = textwrap.dedent("""
    import sys, tempfile, time
    workdir, extra = sys.argv[1], sys.argv[2:]
    with tempfile.NamedTemporaryFile(prefix="agent-scratch-", suffix=".json", dir=workdir) as f:
        f.write(b"{}")
    stamp = time.strftime("%Y-%m-%dT%H_%M_%S", time.gmtime()) + f"_{time.time_ns() % 1000:03d}Z"
    with open(f"{workdir}/{stamp}-debug-0.log", "w") as log:
        log.write("run")
    for path in extra:
        try:
            with open(path, "rb"):
                print("open:ok", end=" ")
        except PermissionError:
            print("open:EPERM", end=" ")
    print("done")
""")


@pytest.mark.userspace
def test_random_temp_names_and_timestamped_logs_hold_in_enforce(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Python's tempfile names and timestamped log names are learned as patterns confined to
    their varying characters, put in the kernel, and hold in alert and enforce; a name of
    another shape in the same directory is still a deviation (EPERM where open is enforced)."""
    enforced = ctl_json(daemon, "status")["capabilities"]["open"]["mode"] == "enforce"
    work = tmp_path / "work"
    work.mkdir()
    agent_py = tmp_path / "scratch.py"
    agent_py.write_text(SCRATCH_PY)

    def run(*extra: str) -> str:
        r = ctl(daemon, "run", "--agent", "scratch", "--", sys.executable, str(agent_py),
                str(work), *extra)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    for _ in range(4):
        run()
    time.sleep(1.0)
    base = ctl_json(daemon, "baseline", "scratch")
    patterns = {e["object"] for e in base["open"] if e["kind"] == "pattern"}
    assert f"{work}/agent-scratch-????????.json" in patterns, patterns
    assert f"{work}/????-??-??T??_??_??_???Z-debug-0.log" in patterns, patterns
    assert not [
        e for e in base["open"] if e["kind"] == "exact" and e["object"].startswith(str(work))
    ]

    assert ctl(daemon, "mode", "scratch", "alert", "--open", "enforce").returncode == 0
    other = work / "agent-scratch-evil.json.bak"
    other.write_text("x")
    for _ in range(3):
        assert run() == "done"
    out = run(str(other))
    assert out == ("open:EPERM done" if enforced else "open:ok done")
    time.sleep(1.0)
    diff = ctl_json(daemon, "diff", "scratch")
    objects = [r["object"] for r in diff["rows"]]
    assert [o for o in objects if o.startswith(str(work))] == [str(other)], objects


@pytest.mark.host_only
def test_diff_counts_every_repeat_and_names_each_executable(daemon: Daemon, tmp_path: Path) -> None:
    """Repeats inside the kernel's suppression window are counted (in the kernel, added by
    diff), and a repeat by another executable is reported on its own: diff's count is the
    kernel's, and it names both executables."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    cat = shutil.which("cat")
    assert cat is not None
    r = ctl(daemon, "run", "--agent", "counts", "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert ctl(daemon, "mode", "counts", "alert").returncode == 0
    before = ctl_json(daemon, "agent", "counts")["counters"]["open"]
    script = (
        "import subprocess, sys\n"
        f"for _ in range(5): open({str(secret)!r}).close()\n"
        f"for _ in range(3): subprocess.run([{cat!r}, {str(secret)!r}], stdout=-3)\n"
    )
    r = ctl(daemon, "run", "--agent", "counts", "--", sys.executable, "-c", script)
    assert r.returncode == 0, r.stderr

    def counts() -> tuple[int, int, int, list[dict[str, Any]], list[dict[str, Any]]]:
        after = ctl_json(daemon, "agent", "counts")["counters"]["open"]
        kernel = after["would_deny"] - before["would_deny"]
        diff = ctl_json(daemon, "diff", "counts", "--flat")["rows"]
        evs = ctl_json(daemon, "events", "--agent", "counts", "--limit", "1000")
        # every open the kernel counted, except those whose name the fallback's report-only
        # hook could not read (no deviation: nothing could be allowed or denied by that name;
        # their repeats still waiting in the kernel are in no event either)
        unnamed = sum(
            1 + e["repeats"]
            for e in evs
            if e["dimension"] == "open" and not e["object"] and e["verdict"] == "would-deny"
        )
        named = sum(r["count"] for r in diff if r["dimension"] == "open")
        return named, unnamed, kernel, diff, evs

    deadline = time.monotonic() + 30  # corrald reads the ring behind the kernel, more so when busy
    while True:
        named, unnamed, kernel, diff, evs = counts()
        agree = named + unnamed == kernel if not unnamed else named + unnamed <= kernel
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert agree, (named, unnamed, kernel)
    rows = [r for r in diff if r["object"] == str(secret)]
    assert len(rows) == 1, rows
    assert rows[0]["count"] == 8, rows
    exes = {Path(e).name for e in rows[0]["exes"]}
    assert Path(os.path.realpath(cat)).name in exes and len(exes) == 2, rows[0]
    evs = ctl_json(daemon, "events", "--agent", "counts", "--limit", "100")
    reports = [e for e in evs if e["object"] == str(secret)]
    assert len(reports) == 2  # one per executable; the repeats ride on them or wait in the kernel
