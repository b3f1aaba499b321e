"""The kernel file systems corral needs, mounted by whoever needs them, where they are missing.

A fresh node boots without tracefs (libbpf finds a tracepoint's id there) and sometimes without
bpffs (pins live there). corral never assumes either: `corral.kernel` calls these before it
attaches a tracepoint or pins, the probe before it reports, so a library user of
`corral.kernel` gets what corrald gets. Mounting needs CAP_SYS_ADMIN in the host's mount
namespace; without it the error says what to mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

BPFFS = Path("/sys/fs/bpf")
SECURITYFS = Path("/sys/kernel/security")
TRACEFS = Path("/sys/kernel/tracing")
# libbpf looks here first when debugfs is mounted (its tracing/ is tracefs, automounted).
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")
_OCTAL = re.compile(r"\\([0-7]{3})")


class MountError(RuntimeError):
    """A file system corral needs is not mounted and could not be mounted."""


@dataclass(frozen=True)
class Mounted:
    ok: bool
    detail: str


def _mount_table(mounts: str = "/proc/self/mounts") -> list[tuple[str, str]]:
    """(mount point, fstype) pairs, in mount order (octal escapes of the kernel decoded)."""
    out = []
    with open(mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2:
                out.append((_unescape(parts[1]), parts[2]))
    return out


def _unescape(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounted(target: Path, fstype: str) -> bool:
    return (str(target), fstype) in _mount_table()


def fstype_of(path: Path) -> str | None:
    """The type of the file system path lives on (the last mount on its longest prefix)."""
    p = os.path.realpath(path)
    best, kind = -1, None
    for point, fstype in _mount_table():
        inside = p == point or p.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, kind = len(point), fstype
    return kind


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(fstype: str, target: Path) -> str | None:
    """mount(2) of a pseudo file system; an error string, or None."""
    if _libc().mount(fstype.encode(), str(target).encode(), fstype.encode(), 0, None) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def ensure_mount(target: Path, fstype: str) -> Mounted:
    """fstype mounted at target, mounting it if needed; never raises."""
    if mounted(target, fstype):
        return Mounted(True, f"{fstype} mounted at {target}")
    err = _mount(fstype, target)
    if err:
        return Mounted(False, f"{fstype} not mounted at {target} and mounting failed: {err}")
    return Mounted(True, f"{fstype} was not mounted; mounted it at {target}")


def ensure_tracefs() -> Path:
    """The tracefs libbpf will read (mounting /sys/kernel/tracing where none is). Raises
    MountError with what to do."""
    if (DEBUGFS_TRACING / "events").is_dir():
        return DEBUGFS_TRACING
    res = ensure_mount(TRACEFS, "tracefs")
    if not res.ok:
        raise MountError(
            f"{res.detail}: syscall tracepoints cannot be attached without it; mount it "
            f"(mount -t tracefs tracefs {TRACEFS}) or give corrald CAP_SYS_ADMIN"
        )
    return TRACEFS


def ensure_bpffs(pin_dir: Path) -> None:
    """pin_dir lies on a bpf file system (mounting /sys/fs/bpf where pin_dir is under it and
    nothing is mounted there). Raises MountError with what to do."""
    if fstype_of(pin_dir) == "bpf":
        return
    resolved = Path(os.path.realpath(pin_dir))
    if resolved.is_relative_to(BPFFS):
        res = ensure_mount(BPFFS, "bpf")
        if res.ok:
            return
        raise MountError(f"{res.detail}: pins under {pin_dir} need it")
    raise MountError(
        f"{pin_dir} is not on a bpf file system: pins need one (choose a directory under "
        f"{BPFFS}, or mount one: mount -t bpf bpf DIR)"
    )
