"""BPF ring buffer consumer (``struct ring_buffer``) with asyncio integration."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import platform
from collections.abc import Callable
from types import TracebackType

from . import _lib
from ._lib import RINGBUF_SAMPLE_FN, lib
from .errors import BpfError, check_ptr, error
from .maps import Map

RecordCallback = Callable[[bytes], None]

# Returned to libbpf when the user callback raised: stops the current consume/poll.
_CALLBACK_FAILED = -errno.ECANCELED


class RingBuffer:
    """Consume records from a ``BPF_MAP_TYPE_RINGBUF`` map.

    ``callback(data)`` is called once per record with a copy of its bytes.
    If it raises, libbpf stops after that record (which counts as consumed)
    and the exception is re-raised from :meth:`poll` / :meth:`consume` /
    :meth:`run`; remaining records are delivered on the next call.
    """

    def __init__(self, map_or_fd: Map | int, callback: RecordCallback) -> None:
        self._map = map_or_fd if isinstance(map_or_fd, Map) else None  # keeps the fd alive
        fd = map_or_fd.fd if isinstance(map_or_fd, Map) else map_or_fd
        self._callback = callback
        self._error: BaseException | None = None
        self._c_callback = RINGBUF_SAMPLE_FN(self._on_sample)  # referenced for our lifetime
        mark = _lib.log_tail.mark()
        ptr = lib.ring_buffer__new(fd, self._c_callback, None, None)
        self._ptr: int | None = check_ptr(ptr, f"create ring buffer on map fd {fd}", mark)

    def _on_sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        try:
            self._callback(ctypes.string_at(data, size) if data else b"")
        except BaseException as exc:  # re-raised by poll()/consume()
            self._error = exc
            return _CALLBACK_FAILED
        return 0

    def _handle(self) -> int:
        if self._ptr is None:
            raise BpfError(errno.EBADF, "use ring buffer: ring buffer is closed")
        return self._ptr

    def _result(self, ret: int, op: str) -> int:
        exc, self._error = self._error, None
        if exc is not None:
            raise exc
        if ret < 0:
            if -ret == errno.EINTR:
                return 0
            raise error(-ret, op)
        return ret

    @property
    def epoll_fd(self) -> int:
        """An epoll fd that becomes readable when records are available."""
        return int(lib.ring_buffer__epoll_fd(self._handle()))

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to ``timeout_ms`` (-1: forever) for records, deliver them, return count."""
        ret = lib.ring_buffer__poll(self._handle(), timeout_ms)
        return self._result(ret, "poll ring buffer")

    def consume(self) -> int:
        """Deliver every record available now without waiting; return the count."""
        ret = lib.ring_buffer__consume(self._handle())
        return self._result(ret, "consume ring buffer")

    async def run(self, after_batch: Callable[[int], None] | None = None) -> None:
        """Deliver records from the running event loop until cancelled or a callback raises.

        ``after_batch(n)``, if given, is called after each batch of ``n`` records (every record
        available when the ring became readable): the place to flush work batched per record.
        """
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = self.epoll_fd
        loop.add_reader(fd, ready.set)
        try:
            while True:
                ready.clear()
                n = self.consume()
                if after_batch is not None and n:
                    after_batch(n)
                await ready.wait()
        finally:
            loop.remove_reader(fd)

    def close(self) -> None:
        """Free the ring buffer (idempotent). Do not call while :meth:`run` is active."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.ring_buffer__free(ptr)

    def __enter__(self) -> RingBuffer:
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


# Kernel ABI (include/uapi/linux/bpf.h): each record starts with an 8-byte header whose first
# 32 bits are the length, with these two flags.
_BUSY_BIT = 1 << 31
_DISCARD_BIT = 1 << 30
_HDR_SZ = 8


def record_span(length: int) -> int:
    """Bytes a record of ``length`` takes in a ring buffer: its header and data, 8-aligned."""
    return (length + _HDR_SZ + 7) & ~7


# Reading the shared pages straight from Python relies on the CPU not reordering loads (a
# record's header, then its bytes, after the kernel published them in that order): true of
# x86-64 (TSO). Elsewhere RingReader.supported() is False and callers use RingBuffer.
_TSO_MACHINES = frozenset({"x86_64", "amd64"})


class RingReader:
    """Batch consumer of a ``BPF_MAP_TYPE_RINGBUF`` map: maps the ring into this process (as
    libbpf does) and returns every available record from one call, advancing the consumer
    position once per batch. No libbpf callback per record: for high event rates.

    Available where :meth:`supported` says so (x86-64); use :class:`RingBuffer` elsewhere.
    """

    def __init__(self, ring: Map, max_batch: int = 4096) -> None:
        if not self.supported():
            raise BpfError(errno.ENOTSUP, f"RingReader on {platform.machine()}: use RingBuffer")
        self._map = ring  # keeps the fd alive
        self.fd = ring.fd
        size = ring.max_entries
        if size <= 0 or size & (size - 1):
            raise BpfError(errno.EINVAL, f"map '{ring.name}' is not a ring buffer (size {size})")
        page = mmap.PAGESIZE
        self._mask = size - 1
        self.max_batch = max_batch
        self.joined = 0  # records that straddled the end of the ring (joined from two pieces)
        self._size = size
        self._page = page
        self._cons_map = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # the producer page, then the data pages once. The kernel offers them twice in a row
        # (libbpf maps both, so that a record that wraps is contiguous), but every mapped page
        # counts in the process's RSS: a wrapped record is joined from its two pieces instead.
        self._prod_map = mmap.mmap(
            self.fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._cons = memoryview(self._cons_map).cast("Q")
        self._prod = memoryview(self._prod_map)[:8].cast("Q")
        self._data = memoryview(self._prod_map)[page:]
        self._words = self._data.cast("I")

    @staticmethod
    def supported() -> bool:
        return platform.machine().lower() in _TSO_MACHINES

    def read(self) -> list[bytes]:
        """Every record available now (at most max_batch), in order; discarded ones skipped."""
        cons = self._cons[0]
        prod = self._prod[0]
        out: list[bytes] = []
        add = out.append
        words, mask, size, page = self._words, self._mask, self._size, self._page
        mm = self._prod_map  # slicing the mmap copies straight into a bytes object
        limit = self.max_batch
        while cons < prod and len(out) < limit:
            off = cons & mask
            header = words[off >> 2]
            if header & _BUSY_BIT:
                break  # reserved, not yet submitted: later records wait for it
            length = header & ~(_BUSY_BIT | _DISCARD_BIT)
            if not header & _DISCARD_BIT:
                start = off + _HDR_SZ  # headers are 8-aligned: one never wraps
                end = start + length
                if end <= size:
                    add(mm[page + start : page + end])
                    if length:
                        cons = self._run_of(out, cons, prod, header, limit)
                        continue
                else:
                    add(mm[page + start : page + size] + mm[page : page + end - size])
                    self.joined += 1
            cons += (length + _HDR_SZ + 7) & ~7  # record_span, inline: a call per record costs
        self._cons[0] = cons
        return out

    def _run_of(self, out: list[bytes], cons: int, prod: int, header: int, limit: int) -> int:
        """After the record at ``cons`` (submitted, ``header`` its length, already in out):
        the records that follow it with the same header (same length, submitted, kept), up to
        the end of the ring, in a few C-level calls instead of Python steps per record (a
        producer of one record type writes runs of them). Returns the position after them.

        A header read at one stride on is a real header only if the one before it was read as
        this same length: the headers are compared in order, and the run stops at the first
        that differs (a record still reserved, a discarded one, another length)."""
        stride = record_span(header)
        off = (cons & self._mask) + stride
        cons += stride
        # records whose bytes end before the end of the ring, and that the producer reached
        n = min((self._size - off - _HDR_SZ - header) // stride + 1, (prod - cons) // stride)
        n = min(n, limit - len(out))
        if n <= 0:
            return cons
        step = stride >> 2
        heads = self._words[off >> 2 : (off >> 2) + n * step : step].tolist()
        if heads.count(header) != n:
            n = next(i for i, h in enumerate(heads) if h != header)
        first = self._page + off + _HDR_SZ  # headers read (above) before the bytes (below)
        mm = self._prod_map
        out += [mm[a : a + header] for a in range(first, first + n * stride, stride)]
        return cons + n * stride

    async def run(self, on_batch: Callable[[list[bytes]], None], *, linger: float = 0.0) -> None:
        """Hands each batch to ``on_batch`` from the running event loop until cancelled (or
        on_batch raises: the records of that batch count as consumed).

        ``linger`` (seconds): after a batch, wait this long before reading again rather than
        going back to the loop's poll at once. A busy ring is then read in batches of hundreds
        of records instead of a few per wakeup (each wakeup costs a loop round and syscalls),
        for at most ``linger`` of extra delay per record."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        watching = False
        try:
            while True:
                # the map fd polls readable while records wait (level-triggered): watched only
                # while waiting, or every loop round of a linger would wake up for it
                loop.add_reader(self.fd, ready.set)
                watching = True
                await ready.wait()
                ready.clear()
                loop.remove_reader(self.fd)
                watching = False
                while batch := self.read():
                    on_batch(batch)
                    # a full batch: let the loop breathe; else wait for more to gather
                    await asyncio.sleep(0 if len(batch) >= self.max_batch else linger)
        finally:
            if watching:
                loop.remove_reader(self.fd)

    def close(self) -> None:
        for view in ("_words", "_data", "_prod", "_cons"):
            v = getattr(self, view, None)
            if v is not None:
                v.release()
                setattr(self, view, None)
        for m in ("_prod_map", "_cons_map"):
            mm = getattr(self, m, None)
            if mm is not None:
                mm.close()
                setattr(self, m, None)

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
