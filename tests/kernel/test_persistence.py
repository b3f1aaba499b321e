"""Pinned state: enforcement outlives kill -9, a restart adopts it, cleanup ends it."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.kernel import loader as kernel
from corral.kernel.loader import AgentConfig, Backends, Kernel, remove_pins

from .conftest import _cleanup_cgroup, connect_child, free_port, run_in_cgroup

AGENT = 900


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    d = Path("/sys/fs/bpf") / f"corral-test-{uuid.uuid4().hex[:8]}"
    yield d
    if d.exists():
        for fp in list(d.iterdir()):
            remove_pins(fp)
        d.rmdir()


@pytest.fixture
def cgroup(kern: Kernel) -> Iterator[Path]:
    cg = kern.cgroup_root / f"corral-pin-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    yield cg
    _cleanup_cgroup(cg)


def _owner_script(pin_dir: Path, cg: Path, deny: str | None) -> str:
    return textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from corral.kernel.loader import AgentConfig, Backends, Kernel, cgroup_id
        k = Kernel(Backends.choose({deny!r}), pin_dir=Path({str(pin_dir)!r}))
        k.register_cgroup(cgroup_id({str(cg)!r}), {AGENT})
        k.set_agent({AGENT}, AgentConfig(modes={{"exec": "off", "open": "off",
                     "connect": "enforce"}}, lists={{"exec": 1, "open": 2, "connect": 3}}))
        k.activate()
        print("ready", flush=True)
        signal.pause()
    """)


def test_enforcement_survives_kill9_and_restart_adopts(
    pin_dir: Path, cgroup: Path, backends: Backends, deny_family: str | None
) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _owner_script(pin_dir, cgroup, deny_family)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        while (line := owner.stdout.readline()) and line.strip() != "ready":
            pass
        assert line.strip() == "ready", "the owner process died before attaching"
        res = run_in_cgroup(cgroup, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
        assert res.error == errno.EPERM
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    # Owner gone (kill -9): nothing of ours holds an fd, only the pins.
    res = run_in_cgroup(cgroup, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.error == errno.EPERM, "denial must hold after kill -9 of the owner"

    with Kernel(backends, pin_dir=pin_dir) as again:
        assert again.adopted
        assert again.get_agent(AGENT).modes["connect"] == "enforce"
        assert again.registered_cgroups()[kernel.cgroup_id(cgroup)] == (AGENT, False)
        again.set_agent(
            AGENT,
            AgentConfig(
                modes={"exec": "off", "open": "off", "connect": "observe"},
                lists={"exec": 1, "open": 2, "connect": 3},
            ),
        )
    res = run_in_cgroup(cgroup, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.value == "refused", "the adopted maps are the ones the kernel uses"

    for fp in list(pin_dir.iterdir()):
        remove_pins(fp)


def test_cleanup_detaches(pin_dir: Path, cgroup: Path, backends: Backends) -> None:
    k = Kernel(backends, pin_dir=pin_dir)
    k.register_cgroup(kernel.cgroup_id(cgroup), AGENT + 1)
    k.set_agent(
        AGENT + 1,
        AgentConfig(
            modes={"exec": "off", "open": "off", "connect": "enforce"},
            lists={"exec": 4, "open": 5, "connect": 6},
        ),
    )
    k.activate()
    k.close()
    res = run_in_cgroup(cgroup, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.error == errno.EPERM
    for fp in list(pin_dir.iterdir()):
        assert remove_pins(fp) > 0
    res = run_in_cgroup(cgroup, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.value == "refused"


def test_upgrade_replaces_pins_of_another_fingerprint(pin_dir: Path, backends: Backends) -> None:
    stale = pin_dir / "0000000000000000"
    (stale / "maps").mkdir(parents=True)
    with Kernel(backends, pin_dir=pin_dir) as k:
        assert not k.adopted
        k.activate()
        assert sorted(p.name for p in pin_dir.iterdir()) == [k.fingerprint]
    assert os.path.isdir(pin_dir / k.fingerprint)
