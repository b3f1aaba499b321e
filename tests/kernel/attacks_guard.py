"""Red-team attacks on the tamper guard (bpf/guard.bpf.h), from inside a real agent cgroup.

Not collected by the normal suite (no test_ prefix): run by path, `-k attack`. Each test PASSES
when the attack is stopped as the README's tamper table claims (LSM / fmod_ret: EPERM; fallback:
killed or denied) and FAILS when it gets through. Every test name contains `attack`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.kernel.loader import Backends, Kernel

from .conftest import Agent, Outcome
from .test_guard import _bpf_map_create, _check, _enforce, _expect, libc, outsider  # noqa: F401

SYS_CLONE3 = 435
SYS_OPEN_TREE = 428
SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 430, 431, 432
SYS_MOUNT_SETATTR = 442
SYS_PIDFD_SEND_SIGNAL = 424
SYS_TKILL = 200
SYS_RT_SIGQUEUEINFO = 129
CLONE_INTO_CGROUP = 0x200000000
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
OPEN_TREE_CLONE, AT_RECURSIVE = 1, 0x8000
FSCONFIG_CMD_CREATE = 6
MS_PRIVATE, MS_REC = 1 << 18, 0x4000
F_SETOWN, F_SETSIG = 8, 10
O_ASYNC = 0o20000


def _clone3_into(cgroup_dir: Path) -> int:
    """clone3(CLONE_INTO_CGROUP): the child runs bpf(BPF_MAP_CREATE); its exit code is 0 when
    the map was created, else the errno (clone3's own errno raises in the parent)."""
    cgfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)  # read-only: file_open lets it be
    args = struct.pack("<11Q", CLONE_INTO_CGROUP, 0, 0, 0, signal.SIGCHLD, 0, 0, 0, 0, 0, cgfd)
    buf = ctypes.create_string_buffer(args, len(args))
    pid = _check(libc.syscall(SYS_CLONE3, buf, ctypes.c_size_t(len(args))))
    if pid == 0:
        try:
            _bpf_map_create()
            os._exit(0)
        except OSError as e:
            os._exit(e.errno or 99)
        os._exit(98)
    os.close(cgfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


@pytest.fixture
def outside_cgroup(kern: Kernel) -> Iterator[Path]:
    other = kern.cgroup_root / f"corral-test-out-{uuid.uuid4().hex[:8]}"
    other.mkdir()
    yield other
    for _ in range(50):
        try:
            other.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def test_attack_clone3_into_a_cgroup_outside(
    agent: Agent, backends: Backends, outside_cgroup: Path
) -> None:
    """clone3(CLONE_INTO_CGROUP, fd of a non-agent cgroup directory opened O_RDONLY): the child
    is born outside the agent and runs bpf() unguarded. No cgroupfs file is opened for writing
    (the kernel checks write permission on cgroup.procs by inode, no file_open). Expected if the
    guard held: EPERM (LSM/fmod_ret) or killed (fallback). Child exit 0 = bpf() went through."""
    _enforce(agent)
    out = agent.run(lambda: _clone3_into(outside_cgroup))
    assert out.error == errno.EPERM or out.signal == signal.SIGKILL or out.value != 0, (
        f"escaped: clone3(CLONE_INTO_CGROUP) child outside the agent ran bpf(): {out}"
    )


def test_attack_clone3_into_a_sub_cgroup_it_made(agent: Agent, backends: Backends) -> None:
    """mkdir of a sub-cgroup in its own cgroup (not guarded), then clone3(CLONE_INTO_CGROUP)
    into it. The `agent` fixture registers without inherit (corrald's CgroupRef defaults to
    inherit=True for pods and local cgroups, which closes this): the sub-cgroup is no agent's.
    Expected if held: EPERM / killed / bpf() denied in the child."""
    _enforce(agent)

    def go() -> int:
        sub = agent.cgroup / "escape"
        sub.mkdir()
        return _clone3_into(sub)

    out = agent.run(go)
    assert out.error == errno.EPERM or out.signal == signal.SIGKILL or out.value != 0, (
        f"escaped into a sub-cgroup: {out}"
    )


def test_attack_sub_cgroup_with_inherit_is_still_guarded(agent: Agent, kern: Kernel) -> None:
    """Control: the same with the cgroup registered inherit=True: the child stays an agent."""
    kern.register_cgroup(agent.cgid, agent.id, inherit=True)
    _enforce(agent)

    def go() -> int:
        sub = agent.cgroup / "escape"
        sub.mkdir()
        return _clone3_into(sub)

    out = agent.run(go)
    assert out.error == errno.EPERM or out.signal == signal.SIGKILL or out.value != 0, out


def test_attack_cgroup_procs_fd_opened_in_observe(
    agent: Agent, backends: Backends, outside_cgroup: Path
) -> None:
    """Open another cgroup's cgroup.procs O_WRONLY while the agent is in OBSERVE (reported as
    would-deny), keep the fd; the operator promotes to ENFORCE; write the pid: the agent left.
    Then bpf() runs unguarded. Expected if held: the write (or the bpf()) is refused."""
    agent.configure(connect="observe")
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r1)
        os.close(w2)
        rc = 90
        try:
            (agent.cgroup / "cgroup.procs").write_text(str(os.getpid()))
            fd = os.open(outside_cgroup / "cgroup.procs", os.O_WRONLY)
            os.write(w1, b"o")
            os.read(r2, 1)  # now in ENFORCE
            try:
                os.write(fd, str(os.getpid()).encode())
            except OSError as e:
                os._exit(100 + e.errno)
            try:
                _bpf_map_create()
                rc = 0
            except OSError as e:
                rc = e.errno
        except BaseException:
            rc = 91
        os._exit(rc)
    os.close(w1)
    os.close(r2)
    assert os.read(r1, 1) == b"o"
    _enforce(agent)
    os.write(w2, b"e")
    _, status = os.waitpid(pid, 0)
    assert not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0), (
        "left the agent through a cgroup.procs fd opened in OBSERVE and ran bpf()"
    )


# ---- signals to corrald (here: the test runner, guard_tgid) -----------------------------------


@contextlib.contextmanager
def _urg_catcher() -> Iterator[list[int]]:
    got: list[int] = []
    old = signal.signal(signal.SIGURG, lambda s, f: got.append(s))
    try:
        yield got
    finally:
        signal.signal(signal.SIGURG, old)


def _settle(got: list[int]) -> None:
    for _ in range(20):
        if got:
            return
        time.sleep(0.01)


def _signal_expect(backends: Backends, out: Outcome, got: list[int]) -> None:
    if backends.guard in ("lsm", "fmod_ret"):
        assert not got, f"signal reached corrald: {out}"
    else:
        # README: fallback kills the sender (the signal is delivered first)
        assert out.signal == signal.SIGKILL, f"not seen: sender alive, signal delivered={got}"


def _via_fsetown(me: int) -> str:
    r, w = os.pipe()
    import fcntl

    fcntl.fcntl(r, F_SETOWN, me)
    fcntl.fcntl(r, F_SETSIG, signal.SIGURG)
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | O_ASYNC)
    os.write(w, b"x")
    return "sent"


def test_attack_signal_corrald_via_fsetown_sigio(agent: Agent, backends: Backends) -> None:
    """fcntl(pipe, F_SETOWN, corrald) + F_SETSIG(sig) + O_ASYNC, then write the pipe: the kernel
    sends sig (SIGKILL works too) via send_sigio -> security_file_send_sigiotask, not task_kill.
    Expected per README: EPERM (LSM/fmod_ret: the signal never arrives); fallback killed."""
    _enforce(agent)
    me = os.getpid()
    with _urg_catcher() as got:
        out = agent.run(lambda: _via_fsetown(me))
        _settle(got)
    _signal_expect(backends, out, got)


def _siginfo_queue(sig: int) -> ctypes.Array[ctypes.c_char]:
    b = ctypes.create_string_buffer(128)
    struct.pack_into("<iii", b, 0, sig, 0, -1)  # si_code = SI_QUEUE
    return b


@pytest.mark.parametrize(
    "how", ["kill-minus-one", "kill-pgrp", "pidfd_send_signal", "tkill", "rt_sigqueueinfo"]
)
def test_attack_signal_corrald_other_syscalls(agent: Agent, backends: Backends, how: str) -> None:
    """SIGURG (harmless) to corrald by other routes than kill(pid)/tgkill: kill(-1), kill(-pgrp),
    pidfd_send_signal, tkill, rt_sigqueueinfo. LSM/fmod_ret: task_kill refuses corrald (for -1
    and -pgrp silently: kill returns 0 for the others); fallback: README says killed."""
    _enforce(agent)
    me = os.getpid()

    def send() -> str:
        if how == "kill-minus-one":
            os.kill(-1, signal.SIGURG)
        elif how == "kill-pgrp":
            os.killpg(os.getpgid(me), signal.SIGURG)
        elif how == "pidfd_send_signal":
            signal.pidfd_send_signal(os.pidfd_open(me), signal.SIGURG)
        elif how == "tkill":
            _check(libc.syscall(SYS_TKILL, me, signal.SIGURG))
        else:
            _check(libc.syscall(SYS_RT_SIGQUEUEINFO, me, signal.SIGURG, _siginfo_queue(23)))
        return "sent"

    with _urg_catcher() as got:
        out = agent.run(send)
        _settle(got)
    _signal_expect(backends, out, got)


# ---- mounts by the new mount API ---------------------------------------------------------------


def _open_tree_clone(path: str) -> int:
    return _check(libc.syscall(SYS_OPEN_TREE, -100, path.encode(), OPEN_TREE_CLONE | AT_RECURSIVE))


def test_attack_open_tree_clone(agent: Agent, backends: Backends) -> None:
    """open_tree(OPEN_TREE_CLONE): a detached copy of a mount tree (a mount made, though not
    attached). Expected (mount kind): EPERM / killed."""
    _enforce(agent)
    out = agent.run(lambda: os.close(_open_tree_clone("/tmp")) or "cloned")
    _expect(backends, out, fallback="killed")


def test_attack_fsopen_fsmount_detached(agent: Agent, backends: Backends) -> None:
    """fsopen(tmpfs) + fsconfig(CMD_CREATE) + fsmount: a new detached filesystem the agent can
    use through the fd without move_mount. Expected (mount kind): EPERM / killed."""
    _enforce(agent)

    def go() -> str:
        fs = _check(libc.syscall(SYS_FSOPEN, b"tmpfs", 0))
        _check(libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0))
        m = _check(libc.syscall(SYS_FSMOUNT, fs, 0, 0))
        f = os.open("made", os.O_CREAT | os.O_WRONLY, dir_fd=m)
        os.close(f)
        return "mounted"

    _expect(backends, agent.run(go), fallback="killed")


def test_attack_mount_setattr_propagation(agent: Agent, backends: Backends) -> None:
    """unshare(CLONE_NEWNS), then mount_setattr(/, AT_RECURSIVE, propagation=MS_PRIVATE): what
    mount(MS_REC|MS_PRIVATE) does (denied), by the other syscall. Expected: EPERM / killed."""
    _enforce(agent)

    def go() -> str:
        _check(libc.unshare(CLONE_NEWNS))
        attr = struct.pack("<4Q", 0, 0, MS_PRIVATE, 0)
        buf = ctypes.create_string_buffer(attr, len(attr))
        _check(libc.syscall(SYS_MOUNT_SETATTR, -100, b"/", AT_RECURSIVE, buf, len(attr)))
        return "set"

    _expect(backends, agent.run(go), fallback="killed")


def test_attack_detached_mount_forges_open_path(
    agent: Agent, backends: Backends, workdir: Path
) -> None:
    """Path identity through a detached mount: the open dimension allows only the exact path
    /<name> (nonexistent). The agent clones its work dir with open_tree(OPEN_TREE_CLONE) (O_PATH
    fd: no file_open) and opens <name> relative to it: d_path of a file on a detached mount is
    "/<name>", so the novel file passes as the allowed one. Expected if held: open_tree refused
    (mount kind) or the open denied. LSM/fmod_ret only (the fallback does not deny opens)."""
    if backends.guard not in ("lsm", "fmod_ret"):
        pytest.skip("fallback: opens are reported, not denied")
    name = f"corral-forged-{uuid.uuid4().hex[:8]}"
    (workdir / name).write_text("secret")
    agent.kern.allow_paths("open", agent.lists["open"], ["/" + name])
    agent.configure(open="enforce")

    def go() -> str:
        try:
            open(workdir / name).close()
            return "control: direct open allowed?!"
        except PermissionError:
            pass
        t = _open_tree_clone(str(workdir))
        f = os.open(name, os.O_RDONLY, dir_fd=t)
        data = os.read(f, 64).decode()
        return f"read {data!r} as {os.readlink(f'/proc/self/fd/{f}')}"

    out = agent.run(go)
    assert out.value is None or out.value.startswith("control"), f"forged open path: {out}"
    assert out.error == errno.EPERM, out


def test_attack_mount_in_a_new_user_namespace(agent: Agent, backends: Backends) -> None:
    """unshare(CLONE_NEWUSER|CLONE_NEWNS) then mount tmpfs (as the userns' root). Expected:
    EPERM (sb_mount) / killed."""
    _enforce(agent)

    def go() -> str:
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
        _check(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
        return "mounted"

    _expect(backends, agent.run(go), fallback="killed")


# ---- ptrace class --------------------------------------------------------------------------------


def test_attack_proc_pid_mem_of_a_process_outside(
    agent: Agent,
    backends: Backends,
    outsider: int,  # noqa: F811
) -> None:
    """open(/proc/OUTSIDER/mem, O_RDWR): PTRACE_MODE_ATTACH. LSM/fmod_ret: EPERM; fallback: not
    seen (README)."""
    _enforce(agent)

    def go() -> str:
        os.close(os.open(f"/proc/{outsider}/mem", os.O_RDWR))
        return "opened"

    out = agent.run(go)
    if backends.guard in ("lsm", "fmod_ret"):
        # the guard's EPERM comes back as EACCES: mm_access() reports a refused ptrace check so
        assert out.error in (errno.EPERM, errno.EACCES), out
    else:
        _expect(backends, out, fallback="unseen")


_SHARED = ctypes.create_string_buffer(b"outsider-secret", 64)


def test_attack_process_vm_writev_outside(
    agent: Agent,
    backends: Backends,
    outsider: int,  # noqa: F811
) -> None:
    """process_vm_writev into a process outside (same address layout: forked from the runner).
    LSM/fmod_ret: EPERM; fallback not seen."""
    _enforce(agent)

    class Iov(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    def go() -> str:
        src = ctypes.create_string_buffer(b"pwned", 8)
        local = Iov(ctypes.addressof(src), 5)
        remote = Iov(ctypes.addressof(_SHARED), 5)
        libc.process_vm_writev.restype = ctypes.c_ssize_t
        _check(libc.process_vm_writev(outsider, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
        return "written"

    _expect(backends, agent.run(go), fallback="unseen")


# ---- kinds and allowances ------------------------------------------------------------------------


def test_attack_bpf_denied_when_another_kind_is_allowed(agent: Agent, backends: Backends) -> None:
    """tamper_allow={mount, ptrace}: bpf() is still denied (EPERM) / killed."""
    _enforce(agent, tamper_allow=frozenset({"mount", "ptrace"}))
    _expect(backends, agent.run(_bpf_map_create), fallback="killed")


# ---- what the guard must not break ------------------------------------------------------------


def test_attack_ordinary_netlink_and_getaddrinfo_still_work(agent: Agent) -> None:
    """socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE) is how glibc lists interfaces
    (if_nameindex, getifaddrs, getaddrinfo(AI_ADDRCONFIG)) and how ip/ss talk to the kernel:
    not a raw inet socket. Expected: works on every backend."""
    _enforce(agent)

    def go() -> str:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE).close()
        names = [n for _, n in socket.if_nameindex()]
        return f"ok {names}"

    out = agent.run(go)
    assert out.value and out.value.startswith("ok"), out


def test_attack_ordinary_things_still_work(agent: Agent, outsider: int) -> None:  # noqa: F811
    """prctl(PR_SET_NAME), AF_UNIX/UDP/TCP sockets, ping (ICMP DGRAM may be off by sysctl: not
    required), reading /proc/PID/status and /proc/PID/stat of a process outside, fork+exec."""
    _enforce(agent)

    def go() -> str:
        _check(libc.prctl(15, b"renamed", 0, 0, 0))
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        a, b = socket.socketpair()
        a.close()
        b.close()
        Path(f"/proc/{outsider}/status").read_text()
        Path(f"/proc/{outsider}/stat").read_text()
        Path("/proc/1/cmdline").read_bytes()
        for _ in range(50):
            p = os.fork()
            if p == 0:
                os.execv(sys.executable, [sys.executable, "-c", "pass"])
            _, st = os.waitpid(p, 0)
            if st:
                return f"exec failed {st}"
        return "ok"

    assert agent.run(go).value == "ok"


# ---- io_uring ----------------------------------------------------------------------------------

SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_SOCKET = 45
IORING_ENTER_GETEVENTS = 1


def _uring_socket(family: int, stype: int, proto: int) -> int:
    """One IORING_OP_SOCKET (5.19+): socket() without the socket syscall. Returns the new fd or
    raises OSError(-res)."""
    import mmap

    params = ctypes.create_string_buffer(120)
    ring = _check(libc.syscall(SYS_IO_URING_SETUP, 4, params))
    p = bytes(params)
    sq_entries, cq_entries = struct.unpack_from("<II", p, 0)
    _sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("<7I", p, 40)
    cq_head, _cq_tail, cq_mask, _, _, cqes = struct.unpack_from("<6I", p, 80)
    sq_len = sq_array + sq_entries * 4
    cq_len = cqes + cq_entries * 16
    sq = mmap.mmap(ring, sq_len, offset=0)
    cq = mmap.mmap(ring, cq_len, offset=0x8000000)
    sqes = mmap.mmap(ring, sq_entries * 64, offset=0x10000000)
    # sqe 0: opcode, flags, ioprio, fd=domain, off=type, addr, len=protocol, rw_flags
    sqe = struct.pack("<BBHiQQII", IORING_OP_SOCKET, 0, 0, family, stype, 0, proto, 0)
    sqes[0:64] = sqe + bytes(64 - len(sqe))
    tail = struct.unpack_from("<I", sq, sq_tail)[0]
    struct.pack_into("<I", sq, sq_array + (tail & struct.unpack_from("<I", sq, sq_mask)[0]) * 4, 0)
    struct.pack_into("<I", sq, sq_tail, tail + 1)
    _check(libc.syscall(SYS_IO_URING_ENTER, ring, 1, 1, IORING_ENTER_GETEVENTS, None, 0))
    head = struct.unpack_from("<I", cq, cq_head)[0]
    mask = struct.unpack_from("<I", cq, cq_mask)[0]
    _, res, _ = struct.unpack_from("<QiI", cq, cqes + (head & mask) * 16)
    if res < 0:
        raise OSError(-res, os.strerror(-res))
    os.close(res)
    return res


@pytest.mark.parametrize(
    "sock",
    [
        ("packet", socket.AF_PACKET, socket.SOCK_RAW, 0),
        ("inet-raw", socket.AF_INET, socket.SOCK_RAW, 17),
    ],
    ids=lambda s: s[0],
)
def test_attack_raw_socket_via_io_uring(agent: Agent, backends: Backends, sock: tuple) -> None:
    """io_uring IORING_OP_SOCKET: no socket() syscall. LSM/fmod_ret: security_socket_create ->
    EPERM. Fallback: inet raw denied by cgroup/sock_create; AF_PACKET (README: killed at
    sys_enter_socket) is not seen by that tracepoint."""
    _enforce(agent)
    _, fam, typ, proto = sock
    out = agent.run(lambda: _uring_socket(fam, typ, proto) and "made")
    _expect(backends, out, fallback="denied" if fam == socket.AF_INET else "killed")


def test_attack_io_uring_socket_works_outside(kern: Kernel) -> None:
    """Control for the io_uring helper (not an attack on the guard): a UDP socket via io_uring
    from outside every agent is made (name holds 'attack' for -k)."""
    from .conftest import run_in_cgroup

    out = run_in_cgroup(
        kern.cgroup_root, lambda: _uring_socket(socket.AF_INET, socket.SOCK_DGRAM, 0)
    )
    assert out.error is None and isinstance(out.value, int), out
