"""BPF object files (``struct bpf_object``) and their programs."""

from __future__ import annotations

import ctypes
import errno
import os
from types import TracebackType
from typing import TypeVar

from . import _lib
from ._lib import lib
from .constants import AttachType, ProgType
from .errors import BpfError, check_int, check_ptr
from .link import Link
from .maps import Map

StrPath = str | os.PathLike[str]
_E = TypeVar("_E", ProgType, AttachType)


class BpfObjectOpenOpts(ctypes.Structure):
    """Prefix of ``struct bpf_object_open_opts``; libbpf honours ``sz`` for shorter structs."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
    ]


def _open_opts(name: str | None) -> BpfObjectOpenOpts | None:
    if name is None:
        return None
    return BpfObjectOpenOpts(sz=ctypes.sizeof(BpfObjectOpenOpts), object_name=name.encode())


def _enum_or_int(cls: type[_E], value: int) -> _E | int:
    try:
        return cls(value)
    except ValueError:
        return value


class BpfObject:
    """An opened (and possibly loaded) BPF ELF object.

    Use :meth:`open_file` or :meth:`open_mem`, adjust programs/maps, then
    :meth:`load`. Closing the object unloads programs and maps that nothing
    else references; links created from its programs are owned by the caller
    and stay attached until destroyed.
    """

    def __init__(self, ptr: int, label: str, keepalive: object = None) -> None:
        self._ptr: int | None = ptr
        self._label = label
        self._keepalive = keepalive  # the ELF buffer for open_mem objects
        self._loaded = False
        self._programs = {p.name: p for p in self._iter_programs()}
        self._maps = {m.name: m for m in self._iter_maps()}

    @classmethod
    def open_file(cls, path: StrPath, name: str | None = None) -> BpfObject:
        """Open a BPF ELF file; ``name`` overrides the object name (default: file stem)."""
        p = os.fsencode(path)
        label = os.path.basename(os.fsdecode(p))
        opts = _open_opts(name)
        mark = _lib.log_tail.mark()
        ptr = lib.bpf_object__open_file(p, ctypes.byref(opts) if opts else None)
        return cls(check_ptr(ptr, f"open object {label}", mark), label)

    @classmethod
    def open_mem(cls, data: bytes, name: str) -> BpfObject:
        """Open a BPF ELF image held in memory; the buffer is kept for the object's life."""
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        opts = _open_opts(name)
        mark = _lib.log_tail.mark()
        ptr = lib.bpf_object__open_mem(buf, len(data), ctypes.byref(opts) if opts else None)
        return cls(check_ptr(ptr, f"open object {name} from memory", mark), name, keepalive=buf)

    def _check_open(self) -> int:
        if self._ptr is None:
            raise BpfError(errno.EBADF, f"use object {self._label}: object is closed")
        return self._ptr

    def _iter_programs(self) -> list[Program]:
        obj = self._check_open()
        out: list[Program] = []
        prog = lib.bpf_object__next_program(obj, None)
        while prog:
            out.append(Program(prog, self))
            prog = lib.bpf_object__next_program(obj, prog)
        return out

    def _iter_maps(self) -> list[Map]:
        obj = self._check_open()
        out: list[Map] = []
        m = lib.bpf_object__next_map(obj, None)
        while m:
            out.append(Map(ptr=m, owner=self))
            m = lib.bpf_object__next_map(obj, m)
        return out

    @property
    def name(self) -> str:
        raw = lib.bpf_object__name(self._check_open())
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def programs(self) -> dict[str, Program]:
        self._check_open()
        return dict(self._programs)

    @property
    def maps(self) -> dict[str, Map]:
        """Maps by name, including libbpf internal ones such as ``<obj>.rodata``."""
        self._check_open()
        return dict(self._maps)

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def load(self) -> None:
        """Create the maps and load the programs (with autoload on) into the kernel."""
        obj = self._check_open()
        mark = _lib.log_tail.mark()
        check_int(lib.bpf_object__load(obj), f"load object {self._label}", mark)
        self._loaded = True

    def close(self) -> None:
        """Free the object (idempotent). Links created from it are not affected."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.bpf_object__close(ptr)
            self._keepalive = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_ptr", None) is not None:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else ("loaded" if self._loaded else "opened")
        return f"<BpfObject {self._label} {state}>"


class BpfTestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts`` from <bpf/bpf.h>; ``sz`` must be set."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class Program:
    """A BPF program inside a :class:`BpfObject`."""

    def __init__(self, ptr: int, owner: BpfObject) -> None:
        self._ptr = ptr
        self._owner = owner

    def _handle(self) -> int:
        self._owner._check_open()
        return self._ptr

    def __repr__(self) -> str:
        return f"<Program {self.name!r} section={self.section!r}>"

    @property
    def name(self) -> str:
        raw = lib.bpf_program__name(self._handle())
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def section(self) -> str:
        raw = lib.bpf_program__section_name(self._handle())
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def autoload(self) -> bool:
        return bool(lib.bpf_program__autoload(self._handle()))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        op = f"set autoload of program '{self.name}' (only before load)"
        check_int(lib.bpf_program__set_autoload(self._handle(), bool(value)), op)

    @property
    def loaded(self) -> bool:
        return lib.bpf_program__fd(self._handle()) >= 0

    @property
    def fd(self) -> int:
        """Program fd; raises BpfError if the program is not loaded."""
        op = f"get fd of program '{self.name}' (not loaded?)"
        return check_int(lib.bpf_program__fd(self._handle()), op)

    @property
    def prog_type(self) -> ProgType | int:
        return _enum_or_int(ProgType, lib.bpf_program__type(self._handle()))

    @property
    def expected_attach_type(self) -> AttachType | int:
        return _enum_or_int(AttachType, lib.bpf_program__expected_attach_type(self._handle()))

    def test_run(self, ctx: bytes = b"") -> int:
        """Runs the loaded program once in the kernel (``BPF_PROG_TEST_RUN``) with ``ctx`` as
        its context (for raw_tp programs: the u64 arguments); returns its return value. For
        the program types the kernel can test-run (raw_tp, syscall, XDP, skb, ...)."""
        buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
        opts = BpfTestRunOpts(sz=ctypes.sizeof(BpfTestRunOpts))
        if buf is not None:
            opts.ctx_in = ctypes.cast(buf, ctypes.c_void_p)
            opts.ctx_size_in = len(ctx)
        op = f"test-run program '{self.name}'"
        check_int(lib.bpf_prog_test_run_opts(self.fd, ctypes.byref(opts)), op)
        return int(opts.retval)

    def attach(self) -> Link:
        """Attach by section (lsm/, fentry/, tp_btf/, raw_tp/, tracepoint/, kprobe/, ...)."""
        mark = _lib.log_tail.mark()
        op = f"attach program '{self.name}' ({self.section})"
        ptr = check_ptr(lib.bpf_program__attach(self._handle()), op, mark)
        return Link(ptr, f"{self.name}:{self.section}")

    def attach_cgroup(self, cgroup: StrPath | int) -> Link:
        """Attach to a cgroup v2 given as a directory path or an open fd (not closed)."""
        if isinstance(cgroup, int):
            return self._attach_cgroup_fd(cgroup, f"fd {cgroup}")
        path = os.fsdecode(cgroup)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            op = f"attach program '{self.name}' to cgroup {path}: open cgroup"
            raise BpfError(exc.errno or errno.EIO, op) from exc
        try:
            return self._attach_cgroup_fd(fd, path)
        finally:
            os.close(fd)

    def _attach_cgroup_fd(self, fd: int, what: str) -> Link:
        mark = _lib.log_tail.mark()
        op = f"attach program '{self.name}' ({self.section}) to cgroup {what}"
        ptr = check_ptr(lib.bpf_program__attach_cgroup(self._handle(), fd), op, mark)
        return Link(ptr, f"{self.name}:cgroup:{what}")
