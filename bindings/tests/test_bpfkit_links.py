"""Links: cgroup attachment enforced by the kernel, pinning, disconnect, reopen."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfkit import BpfError, BpfObject, Link
from bpfkit.link import LINK_TYPE_CGROUP

CHILD = """
import socket, sys
sys.stdin.readline()  # wait until the parent moved us into the cgroup
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        print("ok")
    except OSError as e:
        print(e.errno)
    finally:
        s.close()
"""


@pytest.fixture
def listeners() -> Iterator[tuple[int, int]]:
    """Two listening loopback sockets: (blocked port, allowed port)."""
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        socks.append(s)
    try:
        yield socks[0].getsockname()[1], socks[1].getsockname()[1]
    finally:
        for s in socks:
            s.close()


def connect_from_cgroup(cgroup: Path, *ports: int) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        (cgroup / "cgroup.procs").write_text(str(child.pid))
        out, _ = child.communicate("go\n", timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return out.split()


def connect_here(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_cgroup_connect4_enforced(obj: BpfObject, cgroup: Path, listeners: tuple[int, int]) -> None:
    blocked, allowed = listeners
    obj.maps["blocked_ports"].update(struct.pack("<I", blocked), b"\x01")
    with obj.programs["deny_connect4"].attach_cgroup(cgroup) as link:
        assert link.fd >= 0
        assert connect_from_cgroup(cgroup, blocked, allowed) == [str(errno.EPERM), "ok"]
        connect_here(blocked)  # this process is outside the cgroup: allowed
    # detached by the context manager: the child may connect again
    assert connect_from_cgroup(cgroup, blocked) == ["ok"]


def test_cgroup_attach_by_fd(obj: BpfObject, cgroup: Path, listeners: tuple[int, int]) -> None:
    blocked, _ = listeners
    obj.maps["blocked_ports"].update(struct.pack("<I", blocked), b"\x01")
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        link = obj.programs["deny_connect4"].attach_cgroup(fd)
    finally:
        os.close(fd)
    try:
        assert connect_from_cgroup(cgroup, blocked) == [str(errno.EPERM)]
    finally:
        link.destroy()


def test_attach_cgroup_missing_dir(obj: BpfObject, tmp_path: Path) -> None:
    with pytest.raises(BpfError) as ei:
        obj.programs["deny_connect4"].attach_cgroup(tmp_path / "no-such-cgroup")
    assert ei.value.errno == errno.ENOENT
    assert "deny_connect4" in ei.value.op


def test_link_pin_unpin_open_pinned(obj: BpfObject, pin_dir: Path) -> None:
    path = pin_dir / "link"
    with obj.programs["trace_sys_enter"].attach() as link:
        link.pin(path)
        assert path.exists()
        with Link.open_pinned(path) as again:
            assert again.fd >= 0
            assert again.pin_path == str(path)
        link.unpin()
        assert not path.exists()
    with pytest.raises(BpfError) as ei:
        Link.open_pinned(path)
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(BpfError):
        _ = link.fd  # destroyed by the context manager


def test_link_pin_disconnect_and_reopen(obj: BpfObject, pin_dir: os.PathLike[str]) -> None:
    """A disconnected, pinned link keeps the program attached after destroy()."""
    counts = obj.maps["counts"]
    zero = struct.pack("<I", 0)

    def total() -> int:
        per_cpu = counts.lookup_percpu(zero) or []
        return sum(struct.unpack("<Q", v)[0] for v in per_cpu)

    path = os.path.join(pin_dir, "sys_enter_link")
    obj.maps["target_tgid"].update(zero, struct.pack("<I", os.getpid()))
    try:
        link = obj.programs["trace_sys_enter"].attach()
        link.pin(path)
        assert link.pin_path == path
        leaked_fd = link.fd
        link.disconnect()
        link.destroy()
        link.destroy()  # idempotent
        os.fstat(leaked_fd)  # like libbpf, a disconnected link leaves its fd open
        before = total()
        os.getppid()
        assert total() > before, "program detached although the link was disconnected"

        with Link.open_pinned(path) as reopened:
            assert reopened.fd >= 0
            reopened.unpin()
            assert not os.path.exists(path)
        os.close(leaked_fd)
        # last reference gone: detached now
        before = total()
        os.getppid()
        assert total() == before
    finally:
        obj.maps["target_tgid"].update(zero, struct.pack("<I", 0))


def test_link_info_names_the_cgroup_until_detached(
    obj: BpfObject, cgroup: Path, listeners: tuple[int, int]
) -> None:
    blocked, _ = listeners
    obj.maps["blocked_ports"].update(struct.pack("<I", blocked), b"\x01")
    cgid = os.stat(cgroup).st_ino  # the cgroup id (kernfs inode)
    with obj.programs["deny_connect4"].attach_cgroup(cgroup) as link:
        info = link.info()
        assert info.type == LINK_TYPE_CGROUP and info.cgroup_id == cgid and not info.detached
        assert info.id > 0 and info.prog_id > 0
        link.detach()  # what anyone with the link's fd (e.g. from its pin) can do
        assert link.info().detached
        assert connect_from_cgroup(cgroup, blocked) == ["ok"]  # no longer enforced
    obj.maps["blocked_ports"].delete(struct.pack("<I", blocked))
