"""The ring buffer's reader and the consumers it feeds.

kernel ring → Decoder (batch.py) → consumers, in the order the composition root registered
them (corral/app.py). A consumer is any object with `on_batch(batch)`; one that fails is logged
and does not keep the others from their share. A new consumer (DNS answers, tamper alerts) is
one class and one line of wiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from bpfkit import RingReader
from corral.kernel.loader import Kernel

from .batch import Batch, Decoder

log = structlog.get_logger("corral.pipeline")

# after each ring-buffer batch, wait this long for more records before reading again: a busy
# ring is then read in batches of hundreds (bpfkit.RingReader.run); an event is processed at
# most this much later (enforcement is the kernel's and does not wait for it)
EVENT_LINGER = 0.001


class Consumer(Protocol):
    def on_batch(self, batch: Batch) -> None: ...


class Ingest:
    def __init__(self, decoder: Decoder, consumers: Sequence[Consumer]) -> None:
        self.decoder = decoder
        self.consumers = list(consumers)

    def on_batch(self, records: list[bytes]) -> None:
        """One ring-buffer batch: every record waiting at a wakeup. A batch the decoder cannot
        take is logged and counted lost: the ring is read on (an agent writes what some
        records carry, a DNS message for one; nothing it writes may stop the event path)."""
        try:
            batch = self.decoder.decode(records)
        except Exception as e:
            self.decoder.stats.lost += len(records)
            log.error("a ring batch could not be decoded", records=len(records), error=repr(e))
            return
        for consumer in self.consumers:
            try:
                consumer.on_batch(batch)
            except Exception as e:
                log.error(
                    "event consumer failed on a batch",
                    consumer=type(consumer).__name__,
                    records=len(batch.records),
                    error=str(e),
                )

    async def run(self, kernel: Kernel) -> None:
        """Reads the ring until cancelled: through its epoll fd where bpfkit can read the ring
        itself, else through libbpf's callback per record."""
        if RingReader.supported():
            reader = kernel.ring_reader()
            try:
                await reader.run(self.on_batch, linger=EVENT_LINGER)
            finally:
                reader.close()
            return
        pending: list[bytes] = []

        def after_batch(n: int) -> None:
            batch = pending.copy()
            pending.clear()
            self.on_batch(batch)

        rb = kernel.ring_buffer(pending.append)
        try:
            await rb.run(after_batch)
        finally:
            rb.close()
