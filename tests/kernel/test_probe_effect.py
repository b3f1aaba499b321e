"""The probe reports a backend only where its hooks were seen to act (corral.effect).

Runs everywhere: on this host (BPF LSM does not load), in the VM with BPF LSM active, and in the
VM booted without `bpf` in lsm= (compiled in, loads and attaches, never runs).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import tempfile
import threading
from pathlib import Path

import pytest

from corral.kernel import probe
from corral.kernel.effect import run_round
from corral.kernel.loader import object_path

ACTIVE_LSMS = Path("/sys/kernel/security/lsm")


def _bpf_lsm_active() -> bool:
    probe.ensure_mount(probe.SECURITYFS, "securityfs")
    return "bpf" in ACTIVE_LSMS.read_text().strip().split(",")


def test_every_reported_backend_was_seen_to_act() -> None:
    res = probe.run_probe()
    for dim, cap in res.capabilities.items():
        if cap["backend"] == "lsm":
            assert _bpf_lsm_active()
            assert res.effects["lsm"][dim].shows("EPERM"), res.effects
        elif cap["mode"] == "kill":
            assert res.effects["fallback"][dim].shows("killed"), res.effects
        elif cap["backend"] == "cgroup":
            assert res.effects["fallback"][dim].shows("EPERM"), res.effects
        if cap["mode"] in ("enforce", "kill"):
            assert "seen" in cap["how"]


def test_a_hook_that_could_not_be_attached_proves_nothing() -> None:
    """Without a cgroup for the child the connect program cannot be attached: the round says
    so, and the other hooks are still proven."""
    effects = run_round(probe.EFFECT_PROGRAMS["fallback"], object_path("probe.bpf.o"), None)
    assert not effects["connect"].attached
    assert not effects["connect"].fired
    assert "no cgroup v2 directory" in effects["connect"].detail
    assert effects["open"].fired


@pytest.mark.lsm_inactive
def test_lsm_attached_but_inactive_is_never_reported() -> None:
    """Debian's default: BPF LSM compiled in, `bpf` not in lsm=. Its programs load and attach
    and never run; the probe says so and picks the fallback backends."""
    assert not _bpf_lsm_active()
    res = probe.run_probe()
    lsm = res.effects["lsm"]
    assert all(e.attached and not e.fired for e in lsm.values()), lsm
    assert not res.lsm
    assert all(cap["backend"] != "lsm" for cap in res.capabilities.values()), res.capabilities
    assert not res.checks["lsm_effect"].ok
    assert "never ran" in res.checks["lsm_effect"].detail
    assert res.backends().open != "lsm"


def test_a_process_swapping_names_in_tmp_cannot_make_a_hook_look_dead() -> None:
    """Attack (red team, 2026-12-06): a process on the node replaced the probe's temporary file
    with a dangling symlink as soon as it appeared, so the child's open failed before the hook
    ran and the probe fell back to weaker backends. The child now opens the file the parent
    holds, through /proc/self/fd: whatever happens to a name (where /tmp cannot make unnamed
    files, Python names it for a moment), the hooks are still seen to act."""
    tmp = Path(tempfile.gettempdir())
    stop = threading.Event()
    swapped: list[str] = []
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert ino >= 0, os.strerror(ctypes.get_errno())
    IN_CREATE = 0x100  # <sys/inotify.h>
    assert libc.inotify_add_watch(ino, bytes(tmp), IN_CREATE) >= 0

    def attacker() -> None:
        """Swaps every new corral-probe* name for a dangling link as soon as it appears."""
        while not stop.is_set():
            select.select([ino], [], [], 0.05)
            with contextlib.suppress(BlockingIOError):
                buf = os.read(ino, 65536)
                off = 0
                while off < len(buf):
                    _, _, _, n = struct.unpack_from("iIII", buf, off)
                    name = buf[off + 16 : off + 16 + n].rstrip(b"\0").decode()
                    off += 16 + n
                    if name.startswith("corral-probe"):
                        with contextlib.suppress(OSError):
                            link = tmp / f".swap-{name}"
                            link.symlink_to("/nonexistent/corral")
                            os.replace(link, tmp / name)
                            swapped.append(name)

    t = threading.Thread(target=attacker, daemon=True)
    t.start()
    try:
        for _ in range(3):
            effects = run_round(probe.EFFECT_PROGRAMS["fallback"], object_path("probe.bpf.o"), None)
            # the open reached the file (on LSM and fmod_ret the hook runs only then; the
            # fallback's syscall tracepoint runs at entry, so "allowed" is what tells here)
            assert effects["open"].shows("allowed"), effects["open"]
            assert effects["exec"].shows("killed"), effects["exec"]
    finally:
        stop.set()
        t.join()
        os.close(ino)
        for name in swapped:
            (tmp / name).unlink(missing_ok=True)
