"""BPF links: the attachment of a program to a hook."""

from __future__ import annotations

import errno
import os
from types import TracebackType

from . import _lib
from ._lib import lib
from .errors import BpfError, check_int, check_ptr

StrPath = str | os.PathLike[str]


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
