"""BPF ring buffer consumer (``struct ring_buffer``) with asyncio integration."""

from __future__ import annotations

import asyncio
import ctypes
import errno
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
