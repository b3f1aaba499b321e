"""The tamper guard, attacked from inside a real agent cgroup on the real kernel.

Each test does what a confined root agent would do to switch corral off or slip past its hooks,
and states the result per backend: BPF LSM and fmod_ret deny with EPERM (the VM suite); the
fallback (this host) denies raw inet sockets (cgroup/sock_create), kills the process for the
syscalls it can see (the call itself completes first), and does not see the rest. Nothing is
mocked: the programs are loaded, the child is in a registered cgroup, the syscalls are real.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.kernel.loader import AgentConfig, Backends, Kernel

from .conftest import Agent, Collector, Outcome, run_in_cgroup

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_MM, PR_SET_MM_EXE_FILE, PR_SET_NAME = 35, 13, 15
SYS_PIDFD_GETFD = 438
SYS_BPF = 321
BPF_MAP_CREATE = 0
SYS_OPEN_TREE, SYS_FSOPEN, SYS_FSPICK, SYS_MOUNT_SETATTR = 428, 430, 433, 442
SYS_SETNS, SYS_SOCKET, SYS_PRCTL = 308, 41, 157
AF_PACKET = 17
AT_FDCWD = -100
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000


def _check(ret: int) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def _enforce(agent: Agent, **extra: Any) -> None:
    """Connect in ENFORCE (the guard takes the agent's highest mode), exec and open OFF."""
    agent.kern.set_agent(
        agent.id,
        AgentConfig(
            modes={"exec": "off", "open": "off", "connect": "enforce"},
            lists=dict(agent.lists),
            **extra,
        ),
    )


def _expect(backends: Backends, out: Outcome, *, fallback: str) -> None:
    """LSM and fmod_ret: EPERM. fallback: 'denied' (EPERM too), 'killed', or 'unseen' (the
    attack goes through: the host has no hook for it)."""
    if backends.guard in ("lsm", "fmod_ret") or fallback == "denied":
        assert out.error == errno.EPERM, out
    elif fallback == "killed":
        assert out.signal == signal.SIGKILL, out
    else:
        assert out.error is None and out.signal is None, out


def _bpf_map_create() -> str:
    attr = (ctypes.c_uint32 * 16)(1, 4, 4, 1)  # BPF_MAP_TYPE_HASH, key 4, value 4, 1 entry
    fd = _check(libc.syscall(SYS_BPF, BPF_MAP_CREATE, attr, ctypes.sizeof(attr)))
    os.close(fd)
    return "created"


def _mount_tmpfs() -> str:
    _check(libc.unshare(CLONE_NEWNS))
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
    _check(libc.mount(b"corral-test", b"/mnt", b"tmpfs", 0, None))
    return "mounted"


def _tamper_event(collector: Collector, pid: int, kind: str) -> Any:
    return collector.wait(lambda e: e.pid == pid and e.dimension == "tamper" and e.tamper == kind)


def test_bpf_syscall(agent: Agent, backends: Backends, collector: Collector) -> None:
    _enforce(agent)
    out = agent.run(_bpf_map_create)
    _expect(backends, out, fallback="killed")
    ev = _tamper_event(collector, out.pid, "bpf")
    assert ev.path.startswith("bpf(cmd=0")
    assert ev.verdict in ("denied", "killed")


def test_reported_not_denied_in_observe_and_never_a_dimension(
    agent: Agent, collector: Collector, kern: Kernel
) -> None:
    agent.configure(connect="observe", exec="observe")
    out = agent.run(_bpf_map_create)
    assert out.value == "created"
    ev = _tamper_event(collector, out.pid, "bpf")
    assert ev.verdict == "would-deny"
    assert kern.tamper_counters(agent.id)["would_deny"] >= 1
    assert all(c["would_deny"] == 0 for c in kern.counters(agent.id).values())


def test_an_accepted_kind_passes(agent: Agent) -> None:
    _enforce(agent, tamper_allow=frozenset({"bpf"}))
    assert agent.run(_bpf_map_create).value == "created"
    assert agent.kern.get_agent(agent.id).tamper_allow == frozenset({"bpf"})


def test_pr_set_mm_cannot_forge_the_executable(agent: Agent, backends: Backends) -> None:
    """Exec lineage reads mm->exe_file; PR_SET_MM_EXE_FILE would let the agent pick it."""
    _enforce(agent)

    def forge() -> str:
        fd = os.open(sys.executable, os.O_RDONLY)
        _check(libc.prctl(PR_SET_MM, PR_SET_MM_EXE_FILE, fd, 0, 0))
        return "forged"

    out = agent.run(forge)
    _expect(backends, out, fallback="killed")


@pytest.mark.parametrize("call", ["socket(AF_PACKET)", "prctl(PR_SET_MM)"])
def test_int_arguments_are_read_as_the_kernel_reads_them(
    agent: Agent, backends: Backends, call: str
) -> None:
    """The kernel reads an int argument from the low half of its register: bits above it must
    not hide the call from a syscall tracepoint (the red team's finding of 12-07)."""
    _enforce(agent)
    high = 1 << 32

    def attempt() -> str:
        if call.startswith("socket"):
            os.close(_check(libc.syscall(SYS_SOCKET, ctypes.c_long(AF_PACKET | high), 3, 0)))
        else:
            fd = os.open(sys.executable, os.O_RDONLY)
            _check(libc.syscall(SYS_PRCTL, ctypes.c_long(PR_SET_MM | high), PR_SET_MM_EXE_FILE, fd))
        return "done"

    _expect(backends, agent.run(attempt), fallback="killed")


def test_other_prctl_calls_still_work(agent: Agent) -> None:
    """The LSM hook's default for task_prctl is 'not mine': a 0 there would swallow them."""
    _enforce(agent)

    def rename() -> str:
        _check(libc.prctl(PR_SET_NAME, b"renamed", 0, 0, 0))
        return Path("/proc/self/comm").read_text().strip()

    assert agent.run(rename).value == "renamed"


def test_mount_in_a_private_namespace(agent: Agent, backends: Backends) -> None:
    """A bind mount over an allowed program (or any mount) in the agent's own namespace."""
    _enforce(agent)
    _expect(backends, agent.run(_mount_tmpfs), fallback="killed")


def _open_tree_clone(path: str) -> int:
    """A detached copy of the mount tree at path, as an fd (open_tree(OPEN_TREE_CLONE))."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
    return _check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), flags))


def _new_mount_api(call: str) -> str:
    if call == "fsopen":
        os.close(_check(libc.syscall(SYS_FSOPEN, b"tmpfs", 0)))
    elif call == "open_tree":
        os.close(_open_tree_clone("/tmp"))
    elif call == "fspick":
        os.close(_check(libc.syscall(SYS_FSPICK, AT_FDCWD, b"/", 0)))
    else:  # an empty struct mount_attr: changes nothing, but the call is made
        attr = (ctypes.c_uint64 * 4)()
        _check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", 0, attr, ctypes.sizeof(attr)))
    return "done"


@pytest.mark.parametrize("call", ["fsopen", "open_tree", "fspick", "mount_setattr"])
def test_the_new_mount_api(agent: Agent, kern: Kernel, call: str) -> None:
    """fsopen/fsmount build a mount no LSM hook sees, open_tree(OPEN_TREE_CLONE) a detached copy
    of one, mount_setattr changes one: every backend kills at the syscall tracepoint."""
    _enforce(agent)
    assert f"corral_tp_guard_{call}" in kern.programs
    out = agent.run(lambda: _new_mount_api(call))
    assert out.signal == signal.SIGKILL, out


@pytest.mark.parametrize("ns", ["mnt", "net", "mnt, nstype 1<<32"])
def test_setns(agent: Agent, kern: Kernel, ns: str) -> None:
    """Entering a mount namespace changes what every path names, as chroot does: killed on every
    backend (no LSM hook sees setns; nstype 0 may be any namespace). Naming another namespace
    (CLONE_NEWNET) is none of the guard's business."""
    _enforce(agent)
    assert "corral_tp_guard_setns" in kern.programs

    def enter() -> str:
        fd = os.open(f"/proc/self/ns/{ns[:3]}", os.O_RDONLY)
        # nstype is an int: the kernel drops the upper half of the register (red team, 12-07)
        nstype = {"mnt": 0, "net": 0x40000000}.get(ns, 1 << 32)
        _check(libc.syscall(SYS_SETNS, fd, ctypes.c_long(nstype)))
        return "entered"

    out = agent.run(enter)
    if ns.startswith("mnt"):
        assert out.signal == signal.SIGKILL, out
    else:
        assert out.value == "entered", out


def test_a_file_through_a_detached_mount(
    agent: Agent, backends: Backends, collector: Collector, tmp_path: Path
) -> None:
    """A detached tree's paths start at its own root: through a clone of tmp_path,
    "usr/bin/wc" is tmp_path's file under the path of a baselined program. An agent that kept
    such an fd (made before ENFORCE, or passed to it) is refused every open through it on the
    deny backends; the fallback does not see it (it judges the path text it was given)."""
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "wc").write_text("not wc\n")
    tree = _open_tree_clone(str(tmp_path))
    try:
        _enforce(agent)
        out = agent.run(lambda: Path(f"/proc/self/fd/{tree}/usr/bin/wc").read_text())
        out_at = agent.run(lambda: os.close(os.open("usr/bin/wc", os.O_RDONLY, dir_fd=tree)))
    finally:
        os.close(tree)
    _expect(backends, out, fallback="unseen")
    _expect(backends, out_at, fallback="unseen")
    if backends.guard in ("lsm", "fmod_ret"):
        ev = _tamper_event(collector, out.pid, "mount")
        assert ev.path == "open through a detached mount: /usr/bin/wc", ev


def test_what_is_not_a_detached_mount_still_opens(agent: Agent) -> None:
    """Pipes and memfds reopened through /proc/self/fd live on kernel-internal mounts; after
    unshare(CLONE_NEWNS), the new namespace's mounts are the agent's own and the old one's, which
    files opened before and /proc/self/exe still sit on, keep their names (the red team's false
    positive of 12-07): none of them is refused."""
    _enforce(agent)

    def reopen() -> str:
        r, w = os.pipe()
        fd = os.open(f"/proc/self/fd/{w}", os.O_WRONLY)
        os.write(fd, b"p")
        mem = os.memfd_create("corral-test")
        os.write(mem, b"m")
        again = os.open(f"/proc/self/fd/{mem}", os.O_RDONLY)
        here = os.open(os.path.dirname(sys.executable), os.O_RDONLY | os.O_DIRECTORY)
        _check(libc.unshare(CLONE_NEWNS))
        os.close(os.open("/proc/self/exe", os.O_RDONLY))
        os.close(os.open(os.path.basename(sys.executable), os.O_RDONLY, dir_fd=here))
        return (
            os.read(r, 1).decode()
            + os.read(again, 1).decode()
            + str(len(Path(sys.executable).read_bytes()) > 0)
        )

    assert agent.run(reopen).value == "pmTrue"


def test_chroot(agent: Agent, backends: Backends, kern: Kernel) -> None:
    _enforce(agent)
    out = agent.run(lambda: os.chroot("/tmp") or "chrooted")
    seen = "corral_tp_guard_chroot" in kern.programs
    _expect(backends, out, fallback="killed" if seen else "unseen")


def test_raw_inet_socket(agent: Agent, backends: Backends) -> None:
    _enforce(agent)

    def raw() -> str:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
        return "raw"

    _expect(backends, agent.run(raw), fallback="denied")


def test_packet_socket(agent: Agent, backends: Backends) -> None:
    _enforce(agent)

    def packet() -> str:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        return "packet"

    _expect(backends, agent.run(packet), fallback="killed")


def test_ordinary_sockets_still_work(agent: Agent) -> None:
    _enforce(agent)

    def udp() -> str:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
        return "ok"

    assert agent.run(udp).value == "ok"


def _bind(family: int, address: str, port: int) -> str:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((address, port))
    return "bound"


@pytest.mark.parametrize(
    ("family", "address"),
    [(socket.AF_INET, "127.0.0.199"), (socket.AF_INET6, "::1"), (socket.AF_INET, "0.0.0.0")],
)
def test_binding_port_53(agent: Agent, collector: Collector, family: int, address: str) -> None:
    """Connect by name trusts what comes from the resolver's address and port 53: an agent
    that may bind port 53 answers itself (beside the real resolver with SO_REUSEADDR, in a
    network namespace of its own, on the resolver's address with IP_TRANSPARENT: red team of
    2026-12-07). cgroup/bind denies it on every backend; other ports stay free."""
    _enforce(agent)
    out = agent.run(lambda: _bind(family, address, 53))
    assert out.error == errno.EPERM, out
    ev = _tamper_event(collector, out.pid, "dns-server")
    assert ev.verdict == "denied" and ev.path == f"bind(family={family}, port=53)"
    assert agent.run(lambda: _bind(family, address, 0)).value == "bound"


def test_binding_port_53_in_a_network_namespace_of_its_own(agent: Agent) -> None:
    """The red team's first route: unshare a network namespace, serve DNS on the resolver's
    address there. cgroup programs judge every namespace's binds."""
    _enforce(agent)

    def own_namespace() -> str:
        _check(libc.unshare(CLONE_NEWNET))
        return _bind(socket.AF_INET, "127.0.0.1", 53)

    assert agent.run(own_namespace).error == errno.EPERM


@pytest.fixture
def outsider() -> Iterator[int]:
    """A process outside every agent, holding a socket as fd 3 (what pidfd_getfd would steal)."""
    pid = os.fork()
    if pid == 0:
        s = socket.socket()
        os.dup2(s.fileno(), 3)
        time.sleep(60)
        os._exit(0)
    yield pid
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_pidfd_getfd_of_a_process_outside(agent: Agent, backends: Backends, outsider: int) -> None:
    _enforce(agent)

    def steal() -> str:
        pidfd = os.pidfd_open(outsider)
        fd = _check(libc.syscall(SYS_PIDFD_GETFD, pidfd, 3, 0))
        os.close(fd)
        return "stolen"

    _expect(backends, agent.run(steal), fallback="killed")


@pytest.mark.deny
def test_ptrace_class_inside_the_agent_is_left_alone(agent: Agent) -> None:
    """pidfd_getfd of the agent's own child: attach-class access, but not outside the agent."""
    _enforce(agent)

    def own() -> str:
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        try:
            fd = _check(libc.syscall(SYS_PIDFD_GETFD, os.pidfd_open(child), 0, 0))
            os.close(fd)
            return "got"
        finally:
            os.kill(child, signal.SIGKILL)

    assert agent.run(own).value == "got"


def test_leaving_the_cgroup(agent: Agent, backends: Backends, kern: Kernel) -> None:
    """Writing its pid into another cgroup's cgroup.procs: the agent would be unwatched."""
    _enforce(agent)
    other = kern.cgroup_root / f"corral-test-out-{uuid.uuid4().hex[:8]}"
    other.mkdir()
    try:
        out = agent.run(lambda: (other / "cgroup.procs").write_text(str(os.getpid())) and "left")
        _expect(backends, out, fallback="unseen")
    finally:
        other.rmdir()


def test_leaving_the_cgroup_through_a_kept_descriptor(
    agent: Agent, backends: Backends, collector: Collector, kern: Kernel
) -> None:
    """cgroup.procs opened for writing before the agent was in ENFORCE (or handed to it): the
    open was allowed then; the write is judged now."""
    other = kern.cgroup_root / f"corral-test-out-{uuid.uuid4().hex[:8]}"
    other.mkdir()
    kept = os.open(other / "cgroup.procs", os.O_WRONLY)
    try:
        _enforce(agent)
        out = agent.run(lambda: os.write(kept, str(os.getpid()).encode()) and "left")
        _expect(backends, out, fallback="unseen")
        if backends.guard in ("lsm", "fmod_ret"):
            ev = _tamper_event(collector, out.pid, "cgroup")
            assert ev.path.startswith("write through a kept cgroupfs descriptor: "), ev
            assert ev.path.endswith(f"/{other.name}/cgroup.procs"), ev
    finally:
        os.close(kept)
        other.rmdir()


def test_unlinking_a_pin(agent: Agent, backends: Backends, kern: Kernel) -> None:
    _enforce(agent)
    pin = Path("/sys/fs/bpf") / f"corral-test-{uuid.uuid4().hex[:8]}"
    kern.map("settings").pin(pin)
    try:
        out = agent.run(lambda: pin.unlink() or "unlinked")
        _expect(backends, out, fallback="unseen")
    finally:
        pin.unlink(missing_ok=True)


def test_signalling_corrald(agent: Agent, backends: Backends) -> None:
    """corrald is the process that loaded the programs: here, the test runner. SIGURG is
    ignored by default, so a signal that gets through harms nothing."""
    _enforce(agent)
    me = os.getpid()
    out = agent.run(lambda: os.kill(me, signal.SIGURG) or "sent")
    _expect(backends, out, fallback="killed")


@pytest.mark.parametrize("registered", ["before", "after the move"])
def test_a_runtime_init_is_exempt_until_it_execs(
    agent: Agent, backends: Backends, kern: Kernel, registered: str
) -> None:
    """runc init is moved into the container's cgroup by runc (outside every agent) and mounts
    there before it execs the agent: exempt until that exec, guarded after it. corrald may
    register a new pod's cgroup while the runtime is still at work: exempt all the same."""
    _enforce(agent)
    if registered != "before":
        kern.unregister_cgroup(agent.cgid)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # moved by the parent, from outside
        try:
            _mount_tmpfs()
        except OSError as e:
            os._exit(10 + e.errno)
        # the agent's own program: guarded from here on
        code = (
            "import ctypes, sys\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.mount(b'x', b'/mnt', b'tmpfs', 0, None)\n"
            "sys.exit(ctypes.get_errno() if r else 0)\n"
        )
        os.execv(sys.executable, [sys.executable, "-c", code])
    os.close(r)
    (agent.cgroup / "cgroup.procs").write_text(str(pid))
    if registered != "before":
        kern.register_cgroup(agent.cgid, agent.id)
    os.write(w, b"x")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    if backends.guard in ("lsm", "fmod_ret"):
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == errno.EPERM, status
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_a_process_outside_every_agent_is_left_alone(kern: Kernel, agent: Agent) -> None:
    _enforce(agent)
    assert run_in_cgroup(kern.cgroup_root, _bpf_map_create).value == "created"
    assert run_in_cgroup(kern.cgroup_root, _mount_tmpfs).value == "mounted"
