"""corral.kernel mounts what it needs: a fresh node has no tracefs (and may have no bpffs).

Each test runs a child in a private mount namespace (unshare -m) with tracefs and bpffs
unmounted, as on a freshly booted machine, and uses corral.kernel there as a library user
would: no probe, no corrald.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from corral.kernel import hostfs

FRESH = textwrap.dedent(
    """
    import ctypes, ctypes.util, os, sys
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    MS_REC, MS_PRIVATE = 0x4000, 1 << 18
    assert libc.unshare(0x00020000) == 0, os.strerror(ctypes.get_errno())  # CLONE_NEWNS
    # /sys, not /: in a chroot / need not be a mount point; nothing below /sys may propagate
    assert libc.mount(b"none", b"/sys", None, MS_REC | MS_PRIVATE, None) == 0
    for target in (b"/sys/kernel/debug/tracing", b"/sys/kernel/tracing", b"/sys/kernel/debug",
                   b"/sys/fs/bpf"):
        while libc.umount2(target, 2) == 0:  # MNT_DETACH, every stacked mount
            pass
    from corral.kernel import hostfs
    assert not hostfs.mounted(hostfs.TRACEFS, "tracefs"), "tracefs still mounted"
    assert not hostfs.mounted(hostfs.BPFFS, "bpf"), "bpffs still mounted"
    """
)


def run_fresh(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", FRESH + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kernel_activate_mounts_tracefs_for_its_tracepoints() -> None:
    r = run_fresh(
        """
        from corral.kernel.loader import Backends, Kernel
        with Kernel(Backends.choose(False, open_fallback="tracepoint")) as k:
            k.activate()
            assert "corral_tp_openat" in k.programs
        print("tracefs", hostfs.mounted(hostfs.TRACEFS, "tracefs"))
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tracefs True" in r.stdout


def test_kernel_mounts_bpffs_for_its_pins() -> None:
    r = run_fresh(
        """
        from pathlib import Path
        from corral.kernel.loader import Backends, Kernel, remove_pins
        pins = Path("/sys/fs/bpf/corral-hostfs-test")
        with Kernel(Backends.choose(False, open_fallback="none"), pin_dir=pins) as k:
            k.activate()
            print("pinned", sorted(p.name for p in (k._pins / "links").iterdir()))
            remove_pins(k._pins)
        print("bpffs", hostfs.mounted(hostfs.BPFFS, "bpf"))
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bpffs True" in r.stdout
    assert "corral_cg_connect4" in r.stdout


def test_pins_off_bpffs_get_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    r = run_fresh(
        f"""
        from corral.kernel.loader import Backends, Kernel
        try:
            Kernel(Backends.choose(False, open_fallback="none"), pin_dir={str(tmp_path)!r})
        except hostfs.MountError as e:
            print("error:", e)
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{tmp_path} is not on a bpf file system" in r.stdout
    assert "mount -t bpf bpf DIR" in r.stdout


def test_fstype_of_reads_the_longest_mount_prefix() -> None:
    assert hostfs.fstype_of(Path("/proc/self")) == "proc"
    assert hostfs.fstype_of(Path("/sys/kernel")) == "sysfs"


def test_mount_points_with_escaped_characters_are_decoded() -> None:
    assert hostfs._unescape(r"/mnt/a\040b\011c\134d") == "/mnt/a b\tc\\d"
