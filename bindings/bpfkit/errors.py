"""The bpfkit error model: one exception type, :class:`BpfError`."""

from __future__ import annotations

import ctypes
import errno as errno_mod
from collections.abc import Iterable

from . import _lib


class BpfError(OSError):
    """A libbpf or kernel BPF operation failed.

    Attributes:
        errno: the positive error number (as for any ``OSError``).
        strerror: its description.
        op: what bpfkit was doing, e.g. ``"load object prog.bpf.o"``.
        libbpf_log: the libbpf WARN/INFO lines printed while the operation ran (for a
            verifier rejection this includes the verifier log tail).
    """

    def __init__(self, err: int, op: str, libbpf_log: Iterable[str] = ()) -> None:
        err = abs(err) or errno_mod.EINVAL
        super().__init__(err, _lib.strerror(err))
        self.op = op
        self.libbpf_log: tuple[str, ...] = tuple(libbpf_log)

    def __str__(self) -> str:
        msg = f"{self.op}: {self.strerror} (errno {self.errno})"
        if self.libbpf_log:
            msg += "\n" + "\n".join(f"  {line}" for line in self.libbpf_log)
        return msg

    def __reduce__(self) -> tuple[type[BpfError], tuple[int, str, tuple[str, ...]]]:
        return (type(self), (self.errno, self.op, self.libbpf_log))


def error(err: int, op: str, mark: int | None = None) -> BpfError:
    """Build a BpfError for ``op``, attaching the libbpf lines printed since ``mark``."""
    lines = _lib.log_tail.since(mark) if mark is not None else []
    return BpfError(err, op, lines)


def check_int(ret: int, op: str, mark: int | None = None) -> int:
    """Raise for a libbpf 1.x int return (negative errno); return it otherwise."""
    if ret < 0:
        raise error(-ret, op, mark)
    return ret


def check_ptr(ptr: int | None, op: str, mark: int | None = None) -> int:
    """Raise for a NULL pointer return, reading errno saved by ctypes."""
    if not ptr:
        raise error(ctypes.get_errno() or errno_mod.EINVAL, op, mark)
    return ptr
