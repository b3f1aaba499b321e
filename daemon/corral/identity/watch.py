"""`CgroupWatcher`: inotify on the kubepods/QoS and pod cgroup directories, so new pods and
containers are seen before the next kubelet poll."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterable

import structlog

from .cgroupfs import POD_DIR

log = structlog.get_logger("corral.identity")


IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_libc: ctypes.CDLL | None = None


def _inotify_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


class CgroupWatcher:
    """inotify on the kubepods/QoS directories and pod directories: `changed` is set when a
    directory appears or disappears under any of them (a new pod or a new container). A new
    pod directory is watched at once, so its containers trigger too. The daemon waits on
    `changed` alongside its poll interval and clears it before each poll."""

    MASK = IN_CREATE | IN_DELETE | IN_ONLYDIR

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self._fd = -1
        self._wds: dict[int, str] = {}
        self._paths: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Call from the running loop."""
        if self._fd >= 0:
            return
        fd = _inotify_libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._wds.clear()
        self._paths.clear()

    @property
    def watched(self) -> set[str]:
        return set(self._paths)

    def add(self, path: str) -> bool:
        if self._fd < 0 or path in self._paths:
            return path in self._paths
        wd = _inotify_libc().inotify_add_watch(self._fd, os.fsencode(path), self.MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR):
                log.warning("inotify_add_watch failed", path=path, error=os.strerror(err))
            return False
        self._wds[wd], self._paths[path] = path, wd
        return True

    def remove(self, path: str) -> None:
        wd = self._paths.pop(path, None)
        if wd is not None:
            self._wds.pop(wd, None)
            _inotify_libc().inotify_rm_watch(self._fd, wd)  # EINVAL if already gone: fine

    def update(self, paths: Iterable[str]) -> None:
        """Watch exactly these directories (e.g. CgroupIndex.watch_dirs after a scan). Runs in
        the loop: one inotify_add_watch per new directory, cheap even for hundreds of pods."""
        want = set(paths)
        for p in self.watched - want:
            self.remove(p)
        for p in sorted(want):
            self.add(p)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError as e:
            log.warning("inotify read failed", error=str(e))
            return
        changed = False
        off = 0
        while off + _EVENT.size <= len(data):
            wd, mask, _cookie, n = _EVENT.unpack_from(data, off)
            name = data[off + _EVENT.size : off + _EVENT.size + n].rstrip(b"\0")
            off += _EVENT.size + n
            changed |= self._event(wd, mask, os.fsdecode(name))
        if changed:
            self.changed.set()

    def _event(self, wd: int, mask: int, name: str) -> bool:
        if mask & IN_Q_OVERFLOW:  # events were lost: rescan
            return True
        parent = self._wds.get(wd)
        if mask & IN_IGNORED:
            if parent is not None:
                self._paths.pop(parent, None)
                self._wds.pop(wd, None)
            return False
        if parent is None or not mask & (IN_CREATE | IN_DELETE) or not mask & IN_ISDIR:
            return False
        if mask & IN_CREATE and POD_DIR.fullmatch(name):
            self.add(os.path.join(parent, name))
        return True
