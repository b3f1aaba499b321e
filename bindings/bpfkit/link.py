"""BPF links: the attachment of a program to a hook."""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from types import TracebackType

from . import _lib
from ._lib import lib
from .errors import BpfError, check_int, check_ptr

StrPath = str | os.PathLike[str]

# enum bpf_link_type (include/uapi/linux/bpf.h)
LINK_TYPE_CGROUP = 3


class _LinkInfo(ctypes.Structure):
    """struct bpf_link_info: its head, then the union (8-byte aligned, at offset 16) as bytes;
    the cgroup member starts with `__u64 cgroup_id`. The buffer is larger than any kernel's
    struct: the kernel reads only its own size and wants the rest zero."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("union", ctypes.c_uint8 * 240),
    ]


@dataclass(frozen=True)
class LinkInfo:
    type: int  # enum bpf_link_type
    id: int
    prog_id: int
    cgroup_id: int | None  # cgroup links: the cgroup; 0 once the link was detached

    @property
    def detached(self) -> bool:
        return self.cgroup_id == 0


class Link:
    """An attached BPF program (a ``struct bpf_link``).

    A Link is owned by the caller: it stays attached until :meth:`destroy` is
    called (or the context manager exits, or the process exits and the kernel
    closes its fd). After :meth:`disconnect`, ``destroy()`` only frees the
    userspace handle and leaves the attachment in place; combine this with
    :meth:`pin` for links that must outlive the process.
    """

    def __init__(self, ptr: int, description: str) -> None:
        self._ptr: int | None = ptr
        self._description = description

    def __repr__(self) -> str:
        state = "destroyed" if self._ptr is None else f"fd={self.fd}"
        return f"<Link {self._description} {state}>"

    @classmethod
    def open_pinned(cls, path: StrPath) -> Link:
        """Open a link pinned in bpffs (``bpf_link__open``)."""
        p = os.fsencode(path)
        mark = _lib.log_tail.mark()
        ptr = check_ptr(lib.bpf_link__open(p), f"open pinned link {os.fsdecode(p)}", mark)
        return cls(ptr, f"pinned:{os.fsdecode(p)}")

    def _handle(self) -> int:
        if self._ptr is None:
            raise BpfError(errno.EBADF, f"use link {self._description}: link already destroyed")
        return self._ptr

    @property
    def fd(self) -> int:
        return check_int(lib.bpf_link__fd(self._handle()), f"get fd of link {self._description}")

    @property
    def pin_path(self) -> str | None:
        raw = lib.bpf_link__pin_path(self._handle())
        return os.fsdecode(raw) if raw else None

    def info(self) -> LinkInfo:
        """What the kernel says of this link now (``bpf_obj_get_info_by_fd``)."""
        raw = _LinkInfo()
        size = ctypes.c_uint32(ctypes.sizeof(raw))
        op = f"get info of link {self._description}"
        check_int(lib.bpf_obj_get_info_by_fd(self.fd, ctypes.byref(raw), ctypes.byref(size)), op)
        cgroup_id = None
        if raw.type == LINK_TYPE_CGROUP:
            cgroup_id = int.from_bytes(bytes(raw.union[:8]), "little")
        return LinkInfo(raw.type, raw.id, raw.prog_id, cgroup_id)

    def detach(self) -> None:
        """Detach the program while the link stays (``bpf_link_detach``; cgroup links and a few
        other kinds support it, tracing links do not: EOPNOTSUPP)."""
        check_int(lib.bpf_link_detach(self.fd), f"detach link {self._description}")

    def pin(self, path: StrPath) -> None:
        """Pin the link in bpffs so it survives the process (and ``destroy``)."""
        p = os.fsencode(path)
        mark = _lib.log_tail.mark()
        check_int(lib.bpf_link__pin(self._handle(), p), f"pin link at {os.fsdecode(p)}", mark)

    def unpin(self) -> None:
        """Remove the bpffs pin created by :meth:`pin` or used by :meth:`open_pinned`."""
        mark = _lib.log_tail.mark()
        check_int(lib.bpf_link__unpin(self._handle()), f"unpin link {self._description}", mark)

    def disconnect(self) -> None:
        """Make :meth:`destroy` free the handle without detaching the program.

        As in libbpf, the link fd is then left open (until the process exits), so the
        program stays attached even if the link is not pinned.
        """
        lib.bpf_link__disconnect(self._handle())

    def destroy(self) -> None:
        """Detach (unless disconnected) and free the link. Idempotent."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            mark = _lib.log_tail.mark()
            check_int(lib.bpf_link__destroy(ptr), f"destroy link {self._description}", mark)

    close = destroy

    def __enter__(self) -> Link:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
