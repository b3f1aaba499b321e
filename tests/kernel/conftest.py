"""Real-kernel fixtures: the corral object loaded into this kernel, fresh cgroup v2 directories,
and processes forked into them. Nothing here is mocked.

Backend selection follows the probe (by effect): where BPF LSM runs (the VM booted with `bpf` in
lsm=) the LSM backend is tested, where it is compiled in but inactive (the VM booted without)
fmod_ret, elsewhere the cgroup/tracepoint fallback. Tests for the denying backends carry the
marker `deny`, those for the fallback `fallback`; the runner deselects the other set (`-m "not
deny"` on the host).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import pickle
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.kernel import events, probe
from corral.kernel import loader as kernel
from corral.kernel.loader import AgentConfig, Backends, Kernel

SUPPRESS_NS = 3_000_000_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError(
            "the kernel suite needs root (it loads BPF programs and makes cgroups)"
        )


@pytest.fixture(scope="session")
def deny_family() -> str | None:
    """The family proven by effect to deny here ("lsm", "fmod_ret"), or None (a load proves
    nothing: see corral.effect)."""
    return probe.run_probe().deny


@pytest.fixture(scope="session")
def backends(deny_family: str | None) -> Backends:
    return Backends.choose(deny_family)


@dataclass
class Collector:
    """Events from the ring buffer, polled on demand."""

    kern: Kernel
    got: list[events.Event]

    def __post_init__(self) -> None:
        self._rb = self.kern.ring_buffer(lambda data: self.got.append(events.decode(data)))

    def wait(self, pred: Callable[[events.Event], bool], timeout: float = 10.0) -> events.Event:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.got:
                if pred(e):
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event in {timeout}s; saw {len(self.got)} events")
            self._rb.poll(50)

    def drain(self, settle: float = 0.3) -> list[events.Event]:
        end = time.monotonic() + settle
        while time.monotonic() < end:
            self._rb.poll(50)
        return list(self.got)

    def close(self) -> None:
        self._rb.close()


@pytest.fixture(scope="session")
def kern(backends: Backends) -> Iterator[Kernel]:
    k = Kernel(backends, suppress_ns=SUPPRESS_NS)
    k.activate()
    yield k
    k.close()


@pytest.fixture(scope="session")
def collector(kern: Kernel) -> Iterator[Collector]:
    c = Collector(kern, [])
    yield c
    c.close()


_ids = itertools.count(1)


@dataclass
class Agent:
    """One agent under test: an id, a fresh cgroup, and unique allow-list ids."""

    kern: Kernel
    id: int
    cgroup: Path
    cgid: int
    lists: dict[str, int]

    def configure(self, rate_limit: int = 0, **modes: str) -> None:
        cfg = AgentConfig(
            modes={d: modes.get(d, "off") for d in ("exec", "open", "connect")},
            lists=dict(self.lists),
            rate_limit=rate_limit,
        )
        self.kern.set_agent(self.id, cfg)

    def run(self, fn: Callable[[], Any], cgroup: Path | None = None) -> Outcome:
        return run_in_cgroup(cgroup or self.cgroup, fn)


def _cleanup_cgroup(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
        if child.is_dir():
            _rmdir(child)
    _rmdir(path)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            time.sleep(0.05)


@contextlib.contextmanager
def make_agent(kern: Kernel) -> Iterator[Agent]:
    """A registered agent (all dimensions OFF) in a fresh cgroup of kern; removed afterwards."""
    aid = next(_ids)
    cg = kern.cgroup_root / f"corral-test-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    a = Agent(
        kern,
        aid,
        cg,
        kernel.cgroup_id(cg),
        {d: aid * 10 + i + 1 for i, d in enumerate(("exec", "open", "connect"))},
    )
    kern.register_cgroup(a.cgid, aid)
    a.configure()
    try:
        yield a
    finally:
        kern.unregister_cgroup(a.cgid)
        kern.clear_agent(aid)
        for dim, lst in a.lists.items():
            kern.clear_list(dim, lst)
        _cleanup_cgroup(cg)


@pytest.fixture
def agent(kern: Kernel) -> Iterator[Agent]:
    with make_agent(kern) as a:
        yield a


@dataclass
class Outcome:
    pid: int
    value: Any = None  # what fn returned
    error: int | None = None  # errno of an OSError raised by fn
    signal: int | None = None  # the signal that killed the child
    exit_code: int | None = None


def run_in_cgroup(
    cgroup: Path,
    fn: Callable[[], Any],
    timeout: float = 60.0,
    setup: Callable[[], Any] | None = None,
) -> Outcome:
    """Forks; the child joins the cgroup, runs fn, and sends back its result or errno. setup
    runs in the child BEFORE it joins (as a container runtime's init would: a private mount
    namespace, bind mounts, a volume)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            if setup is not None:
                setup()
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
            result: tuple[str, Any] = ("ok", fn())
        except OSError as e:
            result = ("err", e.errno)
        except BaseException as e:
            result = ("exc", repr(e))
            code = 1
        os.write(w, pickle.dumps(result))
        os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = _wait(pid, timeout)
    out = Outcome(pid=pid)
    if os.WIFSIGNALED(status):
        out.signal = os.WTERMSIG(status)
    else:
        out.exit_code = os.WEXITSTATUS(status)
    if data:
        kind, val = pickle.loads(data)
        if kind == "exc":
            raise AssertionError(f"child failed: {val}")
        if kind == "err":
            out.error = val
        else:
            out.value = val
    return out


def _wait(pid: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return wpid, status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)


def exec_child(path: str, *args: str) -> Callable[[], Any]:
    """A child body that execs path (the exec's own outcome is what tests look at)."""

    def body() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execv(path, [path, *args])

    return body


def connect_child(
    family: int, addr: str, port: int, proto: int = socket.SOCK_STREAM
) -> Callable[[], str]:
    def body() -> str:
        with socket.socket(family, proto) as s:
            s.settimeout(5)
            try:
                if proto == socket.SOCK_DGRAM:
                    s.sendto(b"x", (addr, port))
                else:
                    s.connect((addr, port))
            except ConnectionRefusedError:
                return "refused"
            return "connected" if proto == socket.SOCK_STREAM else "sent"

    return body


def open_child(path: str | Path) -> Callable[[], str]:
    def body() -> str:
        with open(path, "rb") as f:
            f.read(1)
        return "opened"

    return body


@pytest.fixture
def listener() -> Iterator[Callable[[int], tuple[str, int]]]:
    """Listening TCP sockets on loopback: listener(AF_INET) -> (addr, port)."""
    socks: list[socket.socket] = []

    def make(family: int = socket.AF_INET) -> tuple[str, int]:
        s = socket.socket(family, socket.SOCK_STREAM)
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        s.bind((host, 0))
        s.listen(16)
        socks.append(s)
        return host, s.getsockname()[1]

    yield make
    for s in socks:
        s.close()


def free_port(family: int = socket.AF_INET) -> int:
    """A loopback port with nothing listening (connect gets ECONNREFUSED when allowed)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A tmpfs directory (files opened under test live on a real mount)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    d = base / f"corral-test-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """In the VM, one machine-readable line per kernel for tests/vm/run_vm.py to collect."""
    if not os.environ.get("CORRAL_VM_SUITE"):
        return
    stats = terminalreporter.stats
    counts = {
        k: len([r for r in stats.get(k, []) if getattr(r, "when", "call") in ("call", "setup")])
        for k in ("passed", "failed", "skipped", "error")
    }
    failed = counts["failed"] + counts["error"]
    lsm = os.environ.get("CORRAL_VM_LSM", "active")
    terminalreporter.write_line(
        f"vm-suite kernel={os.uname().release} lsm={lsm} passed={counts['passed']} "
        f"failed={failed} skipped={counts['skipped']}"
    )
