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
from typing import Any

import pytest

from corral.kernel.loader import Backends, Kernel

from .conftest import Agent, Outcome, run_in_cgroup
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
    attached). Expected (mount kind): killed on every backend (no LSM hook sees it)."""
    _enforce(agent)
    out = agent.run(lambda: os.close(_open_tree_clone("/tmp")) or "cloned")
    assert out.signal == signal.SIGKILL, out


def test_attack_fsopen_fsmount_detached(agent: Agent, backends: Backends) -> None:
    """fsopen(tmpfs) + fsconfig(CMD_CREATE) + fsmount: a new detached filesystem the agent can
    use through the fd without move_mount. Expected (mount kind): killed on every backend."""
    _enforce(agent)

    def go() -> str:
        fs = _check(libc.syscall(SYS_FSOPEN, b"tmpfs", 0))
        _check(libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0))
        m = _check(libc.syscall(SYS_FSMOUNT, fs, 0, 0))
        f = os.open("made", os.O_CREAT | os.O_WRONLY, dir_fd=m)
        os.close(f)
        return "mounted"

    out = agent.run(go)
    assert out.signal == signal.SIGKILL, out


def test_attack_mount_setattr_propagation(agent: Agent, backends: Backends) -> None:
    """unshare(CLONE_NEWNS), then mount_setattr(/, AT_RECURSIVE, propagation=MS_PRIVATE): what
    mount(MS_REC|MS_PRIVATE) does (denied), by the other syscall. Expected: killed everywhere."""
    _enforce(agent)

    def go() -> str:
        _check(libc.unshare(CLONE_NEWNS))
        attr = struct.pack("<4Q", 0, 0, MS_PRIVATE, 0)
        buf = ctypes.create_string_buffer(attr, len(attr))
        _check(libc.syscall(SYS_MOUNT_SETATTR, -100, b"/", AT_RECURSIVE, buf, len(attr)))
        return "set"

    out = agent.run(go)
    assert out.signal == signal.SIGKILL, out


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
    assert out.signal == signal.SIGKILL, out  # at open_tree(OPEN_TREE_CLONE)


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
    out = run_in_cgroup(
        kern.cgroup_root, lambda: _uring_socket(socket.AF_INET, socket.SOCK_DGRAM, 0)
    )
    assert out.error is None and isinstance(out.value, int), out


# ==== red-team run: the guard's new file_open / file_permission / tracepoint checks =============

SYS_SETNS = 308
SYS_NAME_TO_HANDLE_AT, SYS_OPEN_BY_HANDLE_AT = 303, 304
SYS_CLONE = 56
SYS_PRCTL, SYS_SOCKET = 157, 41
SYS_PWRITEV2 = 328
SYS_IO_SETUP, SYS_IO_SUBMIT, SYS_IO_GETEVENTS = 206, 209, 208
CLONE_FILES = 0x400
CLONE_NEWNET = 0x40000000
HIGH = 1 << 32  # above what the kernel's int argument keeps
MS_BIND = 4096
PR_SET_MM_EXE_FILE = 13
IORING_OP_WRITE = 23


def _run_prepared(cgroup: Path, setup: Any, fn: Any, timeout: float = 60.0) -> Outcome:
    """As run_in_cgroup, with setup() run in the child before it joins the agent's cgroup."""
    return run_in_cgroup(cgroup, fn, timeout, setup=setup)


def _private_ns() -> None:
    _check(libc.unshare(CLONE_NEWNS))
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))


def _mount(src: str | None, dst: str, fstype: str | None = None, flags: int = 0) -> None:
    _check(
        libc.mount(
            src.encode() if src else b"none",
            dst.encode(),
            fstype.encode() if fstype else None,
            flags,
            None,
        )
    )


@pytest.fixture
def other_mnt_ns(workdir: Path) -> Iterator[tuple[int, Path]]:
    """A process outside every agent in its own mount namespace, where a tmpfs covers
    workdir/over holding 'marker' = b'other-ns' (in the agent's namespace: an empty dir)."""
    over = workdir / "over"
    over.mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _private_ns()
            _mount(None, str(over), "tmpfs")
            (over / "marker").write_bytes(b"other-ns")
            os.write(w, b"r")
        except BaseException:
            os.write(w, b"x")
        time.sleep(120)
        os._exit(0)
    assert os.read(r, 1) == b"r"
    os.close(r)
    os.close(w)
    yield pid, over
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.mark.parametrize(
    "how",
    [
        "nsfd-nstype-high-bit-only",
        "nsfd-nstype-high-bit+NEWNS",
        "pidfd-NEWNS",
        "pidfd-NEWNS|NEWUSER",
    ],
)
def test_attack_setns_nstype_in_the_upper_half(
    agent: Agent, backends: Backends, other_mnt_ns: tuple[int, Path], how: str
) -> None:
    """setns's nstype is an int: the kernel drops the upper 32 bits of the register, the
    sys_enter_setns tracepoint reads all 64. nstype = 1<<32 is 0 (any type) to the kernel and
    neither 0 nor CLONE_NEWNS to the guard. The agent enters another process' mount namespace
    (there a tmpfs covers workdir/over). Expected if held: SIGKILL on every backend."""
    _enforce(agent)
    pid, over = other_mnt_ns

    def go() -> str:
        if how.startswith("nsfd"):
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            nstype = HIGH if how.endswith("only") else HIGH | CLONE_NEWNS
        else:
            fd = os.pidfd_open(pid)
            nstype = CLONE_NEWNS if how == "pidfd-NEWNS" else CLONE_NEWNS | CLONE_NEWUSER
        _check(libc.syscall(SYS_SETNS, fd, ctypes.c_long(nstype)))
        return "entered: marker=" + (over / "marker").read_text()

    out = agent.run(go)

    print("OUTCOME", out)
    assert out.signal == signal.SIGKILL, f"setns got through: {out}"


def test_attack_prctl_pr_set_mm_option_in_the_upper_half(agent: Agent, backends: Backends) -> None:
    """prctl's option is an int: option = PR_SET_MM | 1<<32 is PR_SET_MM to the kernel, not 35
    to sys_enter_prctl. Fallback expected (README): killed. LSM/fmod_ret: task_prctl sees the int
    (EPERM). Evidence of a bypass: the call reaches prctl (EBUSY/EPERM of prctl itself, no kill)."""
    _enforce(agent)

    def go() -> str:
        fd = os.open(sys.executable, os.O_RDONLY)
        _check(
            libc.syscall(
                SYS_PRCTL,
                ctypes.c_long(35 | HIGH),
                ctypes.c_long(PR_SET_MM_EXE_FILE),
                ctypes.c_long(fd),
                ctypes.c_long(0),
                ctypes.c_long(0),
            )
        )
        return "forged"

    out = agent.run(go)

    print("OUTCOME", out)
    if backends.guard in ("lsm", "fmod_ret"):
        assert out.error == errno.EPERM, out
    else:
        assert out.signal == signal.SIGKILL, f"not killed: {out}"


def test_attack_packet_socket_family_in_the_upper_half(agent: Agent, backends: Backends) -> None:
    """socket(AF_PACKET | 1<<32, SOCK_RAW, 0): AF_PACKET to the kernel, not 17 to
    sys_enter_socket. Fallback expected (README): killed; LSM/fmod_ret EPERM."""
    _enforce(agent)

    def go() -> str:
        fd = _check(
            libc.syscall(SYS_SOCKET, ctypes.c_long(socket.AF_PACKET | HIGH), socket.SOCK_RAW, 0)
        )
        os.close(fd)
        return "packet socket made"

    out = agent.run(go)
    print("OUTCOME", out)
    _expect(backends, out, fallback="killed")


# ---- the kill after the call: a process that shares the fd table survives -----------------------


def _sacrifice(fn: Any) -> int:
    """clone(CLONE_FILES) without CLONE_THREAD: a separate process (its own SIGKILL) sharing the
    caller's descriptor table. Returns its wait status."""
    pid = _check(libc.syscall(SYS_CLONE, ctypes.c_ulong(CLONE_FILES | signal.SIGCHLD), 0, 0, 0, 0))
    if pid == 0:
        try:
            fn()
            os._exit(0)
        except OSError as e:
            os._exit(e.errno or 98)
        except BaseException:
            os._exit(97)
    _, st = os.waitpid(pid, 0)
    return st


def _next_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    return fd


def _st(st: int) -> str:
    return f"sig{os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit{os.WEXITSTATUS(st)}"


def test_attack_open_tree_clone_by_a_sacrificed_fd_sharer(
    agent: Agent, backends: Backends, workdir: Path
) -> None:
    """A clone(CLONE_FILES) child calls open_tree(OPEN_TREE_CLONE) and is killed after the call
    completes; the detached tree's fd is in the table the agent shares, and the agent reads a
    file through it. Expected if held: the open through the detached mount is refused (EPERM on
    LSM/fmod_ret); the fallback does not see opens."""
    (workdir / "secret").write_text("through-detached")
    _enforce(agent)

    def go() -> str:
        n = _next_fd()
        st = _sacrifice(lambda: _open_tree_clone(str(workdir)))
        os.fstat(n)  # the fd survived its maker
        f = os.open("secret", os.O_RDONLY, dir_fd=n)
        return f"maker {_st(st)}; read {os.read(f, 64)!r} via {os.readlink(f'/proc/self/fd/{f}')}"

    out = agent.run(go)

    print("OUTCOME", out)
    _expect(backends, out, fallback="unseen")


def test_attack_fsopen_fsconfig_fsmount_by_sacrificed_fd_sharers(
    agent: Agent, backends: Backends
) -> None:
    """fsopen in one sacrificed fd-sharer, fsconfig(CMD_CREATE) by the agent itself (no
    tracepoint), fsmount in a second sacrificed fd-sharer: the agent holds a new detached tmpfs
    and creates/writes a file in it. Expected if held: EPERM at the open (LSM/fmod_ret)."""
    _enforce(agent)

    def go() -> str:
        n = _next_fd()
        st1 = _sacrifice(lambda: _check(libc.syscall(SYS_FSOPEN, b"tmpfs", 0)))
        _check(libc.syscall(SYS_FSCONFIG, n, FSCONFIG_CMD_CREATE, None, None, 0))
        m = _next_fd()
        st2 = _sacrifice(lambda: _check(libc.syscall(SYS_FSMOUNT, n, 0, 0)))
        os.fstat(m)
        f = os.open("made", os.O_CREAT | os.O_RDWR, dir_fd=m)
        os.write(f, b"x")
        return f"fsopen child {_st(st1)}, fsmount child {_st(st2)}; wrote a file on the new fs"

    out = agent.run(go)
    print("OUTCOME", out)
    _expect(backends, out, fallback="unseen")


def test_attack_sacrificed_child_mount_persists_in_a_shared_namespace(
    agent: Agent, backends: Backends, workdir: Path
) -> None:
    """The agent's processes share a mount namespace (here a private one, made before it joined,
    as a container's). A forked child bind-mounts 'evil' over 'allowed' and is killed after the
    call (fallback): the mount stays for the agent's other processes. Expected if held: the
    parent still reads 'original' (LSM/fmod_ret: the mount is EPERM)."""
    (workdir / "allowed").write_text("original")
    (workdir / "evil").write_text("evil")
    _enforce(agent)

    def go() -> str:
        pid = os.fork()
        if pid == 0:
            try:
                _mount(str(workdir / "evil"), str(workdir / "allowed"), None, MS_BIND)
            except OSError as e:
                os._exit(e.errno or 98)
            os._exit(0)
        _, st = os.waitpid(pid, 0)
        return f"child {_st(st)}; parent reads {(workdir / 'allowed').read_text()!r}"

    out = _run_prepared(agent.cgroup, _private_ns, go)

    print("OUTCOME", out)
    assert out.value and out.value.endswith("'original'"), f"mount persisted: {out}"


# ---- path identity: open_by_handle_at through a bind mount ------------------------------------


def _handle_of(path: str) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(8 + 128)
    struct.pack_into("<I", buf, 0, 128)
    mount_id = ctypes.c_int()
    _check(libc.syscall(SYS_NAME_TO_HANDLE_AT, -100, path.encode(), buf, ctypes.byref(mount_id), 0))
    return buf


def test_attack_open_by_handle_forges_open_path(
    agent: Agent, backends: Backends, workdir: Path
) -> None:
    """A bind mount of a subdirectory (a volume, /etc/hosts in a pod: made before the agent ran)
    in the agent's own namespace. open_by_handle_at(cwd = that mount, handle of ANY file on the
    same filesystem): the file's struct path pairs the bind mount with a dentry outside its
    root; d_path walks up to the filesystem's root and never meets the mount: "/<name>". Not a
    detached mount (same namespace), no mount call. The open dimension allows only "/<name>".
    Expected if held: EPERM. LSM/fmod_ret only."""
    if backends.guard not in ("lsm", "fmod_ret"):
        pytest.skip("fallback: opens are reported, not denied")
    name = f"corral-forged-{uuid.uuid4().hex[:8]}"
    fs, mnt = workdir / "fs", workdir / "mnt"
    fs.mkdir()
    mnt.mkdir()
    agent.kern.allow_paths("open", agent.lists["open"], ["/" + name])
    agent.configure(open="enforce")

    def setup() -> None:
        _private_ns()
        _mount(None, str(fs), "tmpfs")
        (fs / "sub").mkdir()
        (fs / name).write_text("secret")
        _mount(str(fs / "sub"), str(mnt), None, MS_BIND)

    def go() -> str:
        try:
            open(fs / name).close()
            return "control: direct open allowed?!"
        except PermissionError:
            pass
        h = _handle_of(str(fs / name))
        os.chdir(mnt)
        f = _check(libc.syscall(SYS_OPEN_BY_HANDLE_AT, -100, h, os.O_RDONLY))
        return f"read {os.read(f, 64)!r} as {os.readlink(f'/proc/self/fd/{f}')}"

    out = _run_prepared(agent.cgroup, setup, go)

    print("OUTCOME", out)
    assert out.error == errno.EPERM, f"forged open path: {out}"


# ---- a kept cgroup.procs descriptor: other write paths ----------------------------------------


def _uring_write(fd: int, data: bytes) -> int:
    import mmap

    params = ctypes.create_string_buffer(120)
    ring = _check(libc.syscall(SYS_IO_URING_SETUP, 4, params))
    p = bytes(params)
    sq_entries, cq_entries = struct.unpack_from("<II", p, 0)
    _sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("<7I", p, 40)
    cq_head, _cq_tail, cq_mask, _, _, cqes = struct.unpack_from("<6I", p, 80)
    sq = mmap.mmap(ring, sq_array + sq_entries * 4, offset=0)
    cq = mmap.mmap(ring, cqes + cq_entries * 16, offset=0x8000000)
    sqes = mmap.mmap(ring, sq_entries * 64, offset=0x10000000)
    buf = ctypes.create_string_buffer(data, len(data))
    sqe = struct.pack(
        "<BBHiQQII", IORING_OP_WRITE, 0, 0, fd, 0, ctypes.addressof(buf), len(data), 0
    )
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
    return res


def _aio_write(fd: int, data: bytes) -> int:
    ctx = ctypes.c_ulong(0)
    _check(libc.syscall(SYS_IO_SETUP, 1, ctypes.byref(ctx)))
    buf = ctypes.create_string_buffer(data, len(data))
    # aio_data, aio_key, aio_rw_flags, opcode(PWRITE=1), reqprio, fildes, buf, nbytes, offset, ...
    iocb = ctypes.create_string_buffer(
        struct.pack(
            "<QIIHhIQQqQII", 0, 0, 0, 1, 0, fd, ctypes.addressof(buf), len(data), 0, 0, 0, 0
        )
    )
    ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
    _check(libc.syscall(SYS_IO_SUBMIT, ctx, 1, ptrs))
    ev = ctypes.create_string_buffer(32)
    _check(libc.syscall(SYS_IO_GETEVENTS, ctx, 1, 1, ev, None))
    res = struct.unpack_from("<q", ev, 16)[0]
    if res < 0:
        raise OSError(-res, os.strerror(-res))
    return res


def _write_by(how: str, fd: int, data: bytes) -> None:
    if how == "write":
        _ = os.write(fd, data)
    elif how == "writev":
        os.writev(fd, [data])
    elif how == "pwritev2":
        iov = (ctypes.c_void_p * 2)(
            ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value, len(data)
        )
        _check(libc.syscall(SYS_PWRITEV2, fd, iov, 1, ctypes.c_long(-1), ctypes.c_long(-1), 0))
    elif how == "io_uring-write":
        _uring_write(fd, data)
    elif how == "aio-pwrite":
        _aio_write(fd, data)
    elif how == "splice":
        r, w = os.pipe()
        os.write(w, data)
        os.splice(r, fd, len(data))
    elif how == "sendfile":
        m = os.memfd_create("pid")
        os.write(m, data)
        os.sendfile(fd, m, 0, len(data))
    elif how == "copy_file_range":
        m = os.memfd_create("pid")
        os.write(m, data)
        os.copy_file_range(m, fd, len(data), 0)
    elif how == "reopen-proc-self-fd":
        g = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
        os.write(g, data)


@pytest.mark.parametrize(
    "how",
    [
        "write",
        "writev",
        "pwritev2",
        "io_uring-write",
        "aio-pwrite",
        "splice",
        "sendfile",
        "copy_file_range",
        "reopen-proc-self-fd",
    ],
)
def test_attack_kept_cgroup_procs_fd_other_write_paths(
    agent: Agent, backends: Backends, outside_cgroup: Path, how: str
) -> None:
    """cgroup.procs of a cgroup outside the agent, opened O_WRONLY before ENFORCE (inherited);
    the agent writes its pid by another route than write(2). Expected if held: EPERM
    (LSM/fmod_ret); fallback: not seen (README). Value: the agent's cgroup afterwards."""
    kept = os.open(outside_cgroup / "cgroup.procs", os.O_WRONLY)
    try:
        _enforce(agent)

        def go() -> str:
            _write_by(how, kept, str(os.getpid()).encode())
            return "now in " + Path("/proc/self/cgroup").read_text().strip()

        out = agent.run(go)

        print("OUTCOME", out)
    finally:
        os.close(kept)
    _expect(backends, out, fallback="unseen")


# ---- what real agents do in ENFORCE: must not be refused by the guard ---------------------------


@pytest.mark.parametrize(
    "what", ["proc-self-exe", "dirfd-from-before", "reopen-fd-from-before", "exec-proc-self-exe"]
)
def test_attack_after_unshare_newns_old_files_still_open(
    agent: Agent, workdir: Path, what: str
) -> None:
    """unshare(CLONE_NEWNS) (allowed: not a mount) then use what was opened before it: the
    executable (/proc/self/exe: mm->exe_file is on the old namespace's mount), a directory fd
    (openat), a regular file reopened via /proc/self/fd. Their mounts belong to the old
    namespace: foreign_mount says 'detached'. Expected: all work (a false positive otherwise)."""
    (workdir / "f").write_text("data")
    _enforce(agent)

    def go() -> str:
        d = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
        f = os.open(workdir / "f", os.O_RDONLY)
        _check(libc.unshare(CLONE_NEWNS))
        if what == "proc-self-exe":
            os.close(os.open("/proc/self/exe", os.O_RDONLY))
        elif what == "dirfd-from-before":
            os.close(os.open("f", os.O_RDONLY, dir_fd=d))
        elif what == "reopen-fd-from-before":
            os.close(os.open(f"/proc/self/fd/{f}", os.O_RDONLY))
        else:
            pid = os.fork()
            if pid == 0:
                try:
                    os.execv("/proc/self/exe", [sys.executable, "-c", "pass"])
                except OSError as e:
                    os._exit(100 + (e.errno or 0))
            _, st = os.waitpid(pid, 0)
            if st:
                return f"exec failed {_st(st)}"
        return "ok"

    out = agent.run(go)

    print("OUTCOME", out)
    assert out.value == "ok", f"false positive after unshare(CLONE_NEWNS): {out}"


def test_attack_ordinary_agent_workloads_still_work(agent: Agent, workdir: Path) -> None:
    """/dev/stdin as a pipe (cat), a subprocess pipeline, fexecve of a memfd, reading
    /proc/self/mountinfo, /proc/self/fd of pipe/socket/eventfd-ish things, a python -c child
    that imports and reads files. Expected: all work."""
    import shutil
    import subprocess

    _enforce(agent)
    true = shutil.which("true") or "/bin/true"

    def go() -> str:
        res = []
        r = subprocess.run(["cat", "/dev/stdin"], input=b"piped", capture_output=True, check=False)
        res.append(("cat /dev/stdin", r.returncode, r.stdout))
        r = subprocess.run(
            ["sh", "-c", "echo hi | cat; ls / >/dev/null; cat </dev/stdin"],
            input=b"x",
            capture_output=True,
            check=False,
        )
        res.append(("sh pipeline", r.returncode, r.stdout))
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, email, sqlite3; "
                "print(open('/proc/self/mountinfo').read().count(' '))",
            ],
            capture_output=True,
            check=False,
        )
        res.append(("python child", r.returncode, r.stderr[-200:]))
        m = os.memfd_create("prog", 0)
        with open(true, "rb") as src:
            os.write(m, src.read())
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(m, [true], {})
            except OSError as e:
                os._exit(100 + (e.errno or 0))
        _, st = os.waitpid(pid, 0)
        res.append(("fexecve memfd", st, b""))
        Path("/proc/self/mountinfo").read_text()
        a, _b = socket.socketpair()
        try:
            os.open(f"/proc/self/fd/{a.fileno()}", os.O_RDWR)
        except OSError as e:
            res.append(("reopen socket", 0 if e.errno == errno.ENXIO else e.errno, b""))
        bad = [x for x in res if x[1] != 0]
        return "ok" if not bad else f"failed: {bad}"

    out = agent.run(go)

    print("OUTCOME", out)
    assert out.value == "ok", out


def test_attack_overlayfs_files_still_open(agent: Agent, workdir: Path) -> None:
    """A container's root is overlayfs: the kernel opens the backing file too (a private clone
    of the layer's mount). The agent (namespace made before it joined) reads a lower file and
    writes a new one (copy-up). Expected: works (the guard alone; open is OFF)."""
    for d in ("lower", "upper", "work", "merged"):
        (workdir / d).mkdir()
    (workdir / "lower" / "f").write_text("lower-data")
    _enforce(agent)

    def setup() -> None:
        _private_ns()
        opts = f"lowerdir={workdir}/lower,upperdir={workdir}/upper,workdir={workdir}/work"
        _check(
            libc.mount(b"overlay", str(workdir / "merged").encode(), b"overlay", 0, opts.encode())
        )

    def go() -> str:
        data = (workdir / "merged" / "f").read_text()
        with open(workdir / "merged" / "f", "a") as f:  # copy-up
            f.write("+")
        (workdir / "merged" / "new").write_text("n")
        return data

    out = _run_prepared(agent.cgroup, setup, go)

    print("OUTCOME", out)
    assert out.value == "lower-data", f"overlayfs refused: {out}"


def test_attack_proc_pid_root_of_another_namespace(
    agent: Agent, backends: Backends, other_mnt_ns: tuple[int, Path]
) -> None:
    """Observation: /proc/PID/root/... of a process in another mount namespace (outside the
    agent) is a mount of that namespace: refused on LSM/fmod_ret as 'detached'. Reported as seen
    (assert documents what happens)."""
    _enforce(agent)
    pid, over = other_mnt_ns
    out = agent.run(lambda: Path(f"/proc/{pid}/root{over}/marker").read_text())
    print("OUTCOME", out)
    if backends.guard in ("lsm", "fmod_ret"):
        assert out.error == errno.EPERM, out
    else:
        assert out.value == "other-ns", out


SYS_OPEN_TREE_ATTR = 467


def test_attack_open_tree_attr_clone(agent: Agent, backends: Backends) -> None:
    """open_tree_attr(OPEN_TREE_CLONE) (6.15+): the guard's tracepoint program for it. Expected:
    killed on every backend; skipped where the syscall does not exist."""
    _enforce(agent)

    def go() -> str:
        fd = _check(libc.syscall(SYS_OPEN_TREE_ATTR, -100, b"/tmp", OPEN_TREE_CLONE, None, 0))
        os.close(fd)
        return "cloned"

    out = agent.run(go)
    print("OUTCOME", out)
    if out.error == errno.ENOSYS:
        pytest.skip("no open_tree_attr on this kernel")
    assert out.signal == signal.SIGKILL, out


SYS_EXECVEAT = 322


def test_attack_execveat_through_a_sacrificed_detached_tree(
    agent: Agent, backends: Backends, workdir: Path
) -> None:
    """As above, then execveat(tree_fd, "prog") of a copy of `true` in the detached tree (the
    exec dimension is OFF: only the guard can refuse). Expected if held: EPERM (LSM/fmod_ret)."""
    import shutil

    shutil.copy(shutil.which("true") or "/bin/true", workdir / "prog")
    _enforce(agent)

    def go() -> str:
        n = _next_fd()
        st = _sacrifice(lambda: _open_tree_clone(str(workdir)))
        pid = os.fork()
        if pid == 0:
            argv = (ctypes.c_char_p * 2)(b"prog", None)
            envp = (ctypes.c_char_p * 1)(None)
            libc.syscall(SYS_EXECVEAT, n, b"prog", argv, envp, 0)
            os._exit(100 + ctypes.get_errno())
        _, st2 = os.waitpid(pid, 0)
        code = os.WEXITSTATUS(st2) if os.WIFEXITED(st2) else -1
        if code >= 100:
            raise OSError(code - 100, f"execveat (maker {_st(st)})")
        return f"maker {_st(st)}; exec through the detached tree ran, exit {code}"

    out = agent.run(go)
    print("OUTCOME", out)
    _expect(backends, out, fallback="unseen")
