"""BPF maps: object maps and maps re-opened from bpffs, operated via their fd."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _lib
from ._lib import lib
from .constants import BPF_ANY, PERCPU_MAP_TYPES, MapType
from .errors import BpfError, check_int, error

if TYPE_CHECKING:
    from collections.abc import Buffer

    from .object import BpfObject

    BufferLike = Buffer
else:
    BufferLike = Any

StrPath = str | os.PathLike[str]

ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of the bpf syscall
_BATCH_FALLBACK_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})
BPF_OBJ_NAME_LEN = 16


class BpfMapInfo(ctypes.Structure):
    """``struct bpf_map_info`` from <linux/bpf.h> (prefix; the kernel accepts a shorter struct)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class BpfMapBatchOpts(ctypes.Structure):
    """``struct bpf_map_batch_opts`` from <bpf/bpf.h>; ``sz`` must be set."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


def _batch_opts(elem_flags: int = 0) -> BpfMapBatchOpts:
    return BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts), elem_flags=elem_flags, flags=0)


def num_possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU map value multiplier)."""
    return check_int(lib.libbpf_num_possible_cpus(), "count possible CPUs")


def bpf_obj_get(path: StrPath) -> int:
    """Open a pinned BPF object (map, program or link) and return a new fd (caller closes)."""
    p = os.fsencode(path)
    return check_int(lib.bpf_obj_get(p), f"open pinned object {os.fsdecode(p)}")


def bpf_obj_pin(fd: int, path: StrPath) -> None:
    """Pin the BPF object behind fd (map, program or link) at path: a new pin, whatever
    libbpf remembers of earlier ones (bpf_map__pin skips a map it pinned before, even after
    that pin was removed)."""
    p = os.fsencode(path)
    check_int(lib.bpf_obj_pin(fd, p), f"pin object at {os.fsdecode(p)}")


def _as_bytes(data: BufferLike) -> bytes:
    if isinstance(data, bytes):
        return data
    return memoryview(data).tobytes()


def _map_type(value: int) -> MapType | int:
    try:
        return MapType(value)
    except ValueError:
        return value


class Map:
    """A BPF map, either part of a :class:`BpfObject` or opened from a bpffs pin.

    Element operations use the low-level fd API, so they behave the same for
    both kinds. Keys and values are ``bytes``; any buffer (bytes, bytearray,
    memoryview, ctypes/cffi buffers) is accepted as input.
    """

    def __init__(
        self,
        *,
        ptr: int | None = None,
        owner: BpfObject | None = None,
        fd: int | None = None,
        info: BpfMapInfo | None = None,
    ) -> None:
        self._ptr = ptr
        self._owner = owner
        self._own_fd = fd
        self._info = info
        # (fd, key_size, value_size, percpu) once the map exists in the kernel: element
        # operations then cost no libbpf getter calls (a flip is one update on a hot path)
        self._geom: tuple[int, int, int, bool] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def open_pinned(cls, path: StrPath) -> Map:
        """Open a map pinned in bpffs; the returned Map owns a new fd (see :meth:`close`)."""
        fd = bpf_obj_get(path)
        try:
            info = BpfMapInfo()
            size = ctypes.c_uint32(ctypes.sizeof(info))
            op = f"get info of pinned map {os.fsdecode(path)}"
            check_int(lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), op)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd=fd, info=info)

    def close(self) -> None:
        """Close the fd of a map opened with :meth:`open_pinned` (no-op for object maps)."""
        fd, self._own_fd = self._own_fd, None
        self._geom = None
        if fd is not None:
            self._info = None
            os.close(fd)

    def __enter__(self) -> Map:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_own_fd", None) is not None:
            self.close()

    def __repr__(self) -> str:
        return f"<Map {self.name!r} type={self.type!r}>"

    # ------------------------------------------------------------------ attributes

    def _handle(self) -> int:
        if self._ptr is None:
            raise BpfError(errno.EINVAL, "libbpf map handle needed: map was opened from a pin")
        if self._owner is not None:
            self._owner._check_open()
        return self._ptr

    def _pinned_info(self) -> BpfMapInfo:
        if self._info is None:
            raise BpfError(errno.EBADF, "use pinned map: map already closed")
        return self._info

    @property
    def name(self) -> str:
        if self._ptr is None:
            return self._pinned_info().name.decode("utf-8", "replace")
        raw = lib.bpf_map__name(self._handle())
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def fd(self) -> int:
        if self._ptr is None:
            self._pinned_info()
            assert self._own_fd is not None
            return self._own_fd
        fd = int(lib.bpf_map__fd(self._handle()))
        return fd if fd >= 0 else check_int(fd, f"get fd of map '{self.name}' (object not loaded?)")

    @property
    def type(self) -> MapType | int:
        if self._ptr is None:
            return _map_type(self._pinned_info().type)
        return _map_type(lib.bpf_map__type(self._handle()))

    @property
    def key_size(self) -> int:
        if self._ptr is None:
            return int(self._pinned_info().key_size)
        return int(lib.bpf_map__key_size(self._handle()))

    @property
    def value_size(self) -> int:
        """Size of one value as declared (per CPU, for per-CPU maps)."""
        if self._ptr is None:
            return int(self._pinned_info().value_size)
        return int(lib.bpf_map__value_size(self._handle()))

    @property
    def max_entries(self) -> int:
        if self._ptr is None:
            return int(self._pinned_info().max_entries)
        return int(lib.bpf_map__max_entries(self._handle()))

    @property
    def map_flags(self) -> int:
        if self._ptr is None:
            return int(self._pinned_info().map_flags)
        return int(lib.bpf_map__map_flags(self._handle()))

    @property
    def is_percpu(self) -> bool:
        return int(self.type) in PERCPU_MAP_TYPES

    @property
    def value_buffer_size(self) -> int:
        """Bytes exchanged with the kernel per value (all CPUs for per-CPU maps)."""
        if not self.is_percpu:
            return self.value_size
        return _round_up8(self.value_size) * num_possible_cpus()

    # ------------------------------------------------------------------ pre-load setup

    def set_max_entries(self, n: int) -> None:
        """Resize the map; only before the object is loaded."""
        check_int(
            lib.bpf_map__set_max_entries(self._handle(), n),
            f"set max_entries of map '{self.name}' to {n}",
        )

    def set_pin_path(self, path: StrPath | None) -> None:
        """Pin the map at ``path`` on load, re-using an existing compatible pin there."""
        p = os.fsencode(path) if path is not None else None
        check_int(lib.bpf_map__set_pin_path(self._handle(), p), f"set pin path of '{self.name}'")

    @property
    def pin_path(self) -> str | None:
        if self._ptr is None:
            return None
        raw = lib.bpf_map__pin_path(self._handle())
        return os.fsdecode(raw) if raw else None

    def reuse_fd(self, fd: int) -> None:
        """Use the existing map behind ``fd`` instead of creating one (before load)."""
        mark = _lib.log_tail.mark()
        op = f"reuse fd {fd} for map '{self.name}'"
        check_int(lib.bpf_map__reuse_fd(self._handle(), fd), op, mark)

    # ------------------------------------------------------------------ pinning

    def pin(self, path: StrPath) -> None:
        """Pin the map in bpffs at ``path``."""
        p = os.fsencode(path)
        op = f"pin map '{self.name}' at {os.fsdecode(p)}"
        mark = _lib.log_tail.mark()
        if self._ptr is None:
            check_int(lib.bpf_obj_pin(self.fd, p), op, mark)
        else:
            check_int(lib.bpf_map__pin(self._handle(), p), op, mark)

    def unpin(self, path: StrPath | None = None) -> None:
        """Remove the pin at ``path`` (default: the object map's pin path)."""
        p = os.fsencode(path) if path is not None else None
        op = f"unpin map '{self.name}'" + (f" at {os.fsdecode(p)}" if p else "")
        if self._ptr is not None:
            mark = _lib.log_tail.mark()
            check_int(lib.bpf_map__unpin(self._handle(), p), op, mark)
            return
        if p is None:
            raise BpfError(errno.EINVAL, op + ": a path is required for a map opened from a pin")
        try:
            os.unlink(p)
        except OSError as exc:
            raise BpfError(exc.errno or errno.EIO, op) from exc

    # ------------------------------------------------------------------ buffers

    def _io(self) -> tuple[int, int, int, bool]:
        """(fd, key_size, value_size, percpu), cached while the map cannot change: an object map
        once its object is loaded (until the object closes), a pinned map until close()."""
        geom = self._geom
        if geom is not None and (self._owner is None or not self._owner.closed):
            return geom
        self._geom = None
        geom = (self.fd, self.key_size, self.value_size, self.is_percpu)
        if self._owner is None or self._owner.loaded:
            self._geom = geom
        return geom

    def _key(self, key: BufferLike) -> bytes:
        data = _as_bytes(key)
        size = self._io()[1]
        if len(data) != size:
            raise ValueError(f"map '{self.name}': key is {len(data)} bytes, key_size is {size}")
        return data

    def _keys(self, keys: Sequence[BufferLike]) -> list[bytes]:
        """_key of each; bytes of the right size pass through with one C-level check (a whole
        allow-list is pushed at once: 1M keys)."""
        if all(type(k) is bytes for k in keys) and set(map(len, keys)) == {self._io()[1]}:
            return list(keys)  # type: ignore[arg-type]
        return [self._key(k) for k in keys]

    def _values(self, values: Sequence[BufferLike]) -> list[bytes]:
        """_value of each, with the same fast path as _keys for plain maps."""
        _, _, size, percpu = self._io()
        if not percpu and all(type(v) is bytes for v in values) and set(map(len, values)) == {size}:
            return list(values)  # type: ignore[arg-type]
        return [self._value(v) for v in values]

    def _value(self, value: BufferLike) -> bytes:
        data = _as_bytes(value)
        _, _, size, percpu = self._io()
        if not percpu:
            if len(data) != size:
                raise ValueError(
                    f"map '{self.name}': value is {len(data)} bytes, value_size is {size}"
                )
            return data
        stride, ncpus = _round_up8(size), num_possible_cpus()
        if len(data) == stride * ncpus:
            return data
        if len(data) == size:
            return (data + bytes(stride - size)) * ncpus
        raise ValueError(
            f"map '{self.name}': per-CPU value is {len(data)} bytes, expected value_size "
            f"{size} or {stride} * {ncpus} CPUs = {stride * ncpus}"
        )

    # ------------------------------------------------------------------ element operations

    def lookup(self, key: BufferLike) -> bytes | None:
        """Value for ``key`` or None if absent (all CPUs concatenated for per-CPU maps)."""
        k = self._key(key)
        out = ctypes.create_string_buffer(self.value_buffer_size)
        ret = lib.bpf_map_lookup_elem(self.fd, k, out)
        if ret < 0:
            if -ret == errno.ENOENT:
                return None
            raise error(-ret, f"lookup in map '{self.name}'")
        return out.raw

    def lookup_percpu(self, key: BufferLike) -> list[bytes] | None:
        """Per-CPU map: one value per possible CPU, or None if absent."""
        if not self.is_percpu:
            raise BpfError(errno.EINVAL, f"lookup_percpu in map '{self.name}': not a per-CPU map")
        raw = self.lookup(key)
        if raw is None:
            return None
        size = self.value_size
        stride = _round_up8(size)
        return [raw[i : i + size] for i in range(0, len(raw), stride)]

    def update(self, key: BufferLike, value: BufferLike, flags: int = BPF_ANY) -> None:
        """Insert or update ``key``; per-CPU maps take one value (replicated) or all CPUs."""
        k, v = self._key(key), self._value(value)
        ret = lib.bpf_map_update_elem(self._io()[0], k, v, flags)
        if ret < 0:
            raise error(-ret, f"update map '{self.name}'")

    def delete(self, key: BufferLike) -> bool:
        """Delete ``key``; False if it was not present."""
        k = self._key(key)
        ret = lib.bpf_map_delete_elem(self._io()[0], k)
        if ret < 0:
            if -ret == errno.ENOENT:
                return False
            raise error(-ret, f"delete from map '{self.name}'")
        return True

    def keys(self) -> Iterator[bytes]:
        """Iterate over keys with get_next_key (restarts if the current key is deleted)."""
        fd, size = self.fd, self.key_size
        prev: bytes | None = None
        nxt = ctypes.create_string_buffer(size)
        while True:
            ret = lib.bpf_map_get_next_key(fd, prev, nxt)
            if ret < 0:
                if -ret == errno.ENOENT:
                    return
                raise error(-ret, f"iterate keys of map '{self.name}'")
            prev = nxt.raw
            yield prev

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Iterate over (key, value) pairs; keys deleted meanwhile are skipped."""
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    # ------------------------------------------------------------------ batch operations

    def update_batch(
        self, keys: Sequence[BufferLike], values: Sequence[BufferLike], flags: int = BPF_ANY
    ) -> None:
        """Update many elements with one syscall, looping if the map lacks batch support."""
        if len(keys) != len(values):
            raise ValueError(f"map '{self.name}': {len(keys)} keys but {len(values)} values")
        if not keys:
            return
        kbufs = self._keys(keys)
        vbufs = self._values(values)
        n = len(kbufs)
        count = ctypes.c_uint32(n)
        opts = _batch_opts(flags)
        ret = lib.bpf_map_update_batch(
            self.fd, b"".join(kbufs), b"".join(vbufs), ctypes.byref(count), ctypes.byref(opts)
        )
        if ret == 0:
            return
        if -ret not in _BATCH_FALLBACK_ERRNOS:
            raise error(-ret, f"batch update map '{self.name}'")
        for k, v in zip(kbufs[_done(count, n) :], vbufs[_done(count, n) :], strict=True):
            self.update(k, v, flags)

    def delete_batch(self, keys: Sequence[BufferLike]) -> int:
        """Delete many keys; missing keys are skipped. Returns how many were deleted."""
        kbufs = self._keys(keys)
        deleted = start = 0
        while start < len(kbufs):
            n = len(kbufs) - start
            count = ctypes.c_uint32(n)
            opts = _batch_opts()
            ret = lib.bpf_map_delete_batch(
                self.fd, b"".join(kbufs[start:]), ctypes.byref(count), ctypes.byref(opts)
            )
            if ret == 0:
                return deleted + n
            done = _done(count, n)
            if -ret == errno.ENOENT:  # kernel stops at the first missing key
                deleted += done
                start += done + 1
                continue
            if -ret not in _BATCH_FALLBACK_ERRNOS:
                raise error(-ret, f"batch delete from map '{self.name}'")
            return deleted + done + sum(self.delete(k) for k in kbufs[start + done :])
        return deleted


def _round_up8(n: int) -> int:
    return (n + 7) & ~7


def _done(count: ctypes.c_uint32, requested: int) -> int:
    """Elements a failed batch call processed (the kernel leaves count untouched when it
    rejects the whole call, in which case nothing was processed)."""
    return count.value if count.value < requested else 0
