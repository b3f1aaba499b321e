"""Ring buffer delivery via poll() and asyncio, fed by a real raw_tp/sys_enter program."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import struct
import time
from collections.abc import Iterator

import pytest

from bpfkit import BpfObject, RingBuffer, RingReader

EVENT = struct.Struct("<IIQ")  # struct event {u32 tgid; u32 pad; u64 syscall_id;}
GETPPID_NR = {"x86_64": 110, "aarch64": 173}.get(platform.machine())


def decode(data: bytes) -> tuple[int, int]:
    tgid, _pad, nr = EVENT.unpack(data)
    return tgid, nr


@pytest.fixture
def tracing(obj: BpfObject) -> Iterator[BpfObject]:
    """Attach the sys_enter tracer and trace this process until teardown."""
    link = obj.programs["trace_sys_enter"].attach()
    obj.maps["target_tgid"].update(struct.pack("<I", 0), struct.pack("<I", os.getpid()))
    try:
        yield obj
    finally:
        obj.maps["target_tgid"].update(struct.pack("<I", 0), struct.pack("<I", 0))
        link.destroy()


def test_poll_delivers_records(tracing: BpfObject) -> None:
    records: list[bytes] = []
    with RingBuffer(tracing.maps["events"], records.append) as rb:
        assert rb.epoll_fd >= 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.getppid()
            rb.poll(100)
            if any(decode(r)[1] == GETPPID_NR for r in records) or (GETPPID_NR is None and records):
                break
    assert records, "no ring buffer record arrived"
    assert all(len(r) == EVENT.size for r in records)
    assert {decode(r)[0] for r in records} == {os.getpid()}
    if GETPPID_NR is not None:
        assert GETPPID_NR in {decode(r)[1] for r in records}
    per_cpu = tracing.maps["counts"].lookup_percpu(struct.pack("<I", 0))
    assert per_cpu is not None
    assert sum(struct.unpack("<Q", v)[0] for v in per_cpu) >= len(records)


def test_consume_drains_batch(tracing: BpfObject) -> None:
    records: list[bytes] = []
    with RingBuffer(tracing.maps["events"].fd, records.append) as rb:
        for _ in range(20):
            os.getppid()
        n = rb.consume()
        assert n >= 20
        assert len(records) == n


def test_poll_reraises_callback_exception(tracing: BpfObject) -> None:
    calls: list[bytes] = []

    def callback(data: bytes) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("boom from callback")

    with RingBuffer(tracing.maps["events"], callback) as rb:
        for _ in range(5):
            os.getppid()
        with pytest.raises(RuntimeError, match="boom from callback"):
            rb.poll(1000)
        assert len(calls) == 1  # libbpf stopped right after the failing record
        assert rb.consume() >= 1  # the remaining records are still delivered
        assert len(calls) > 1


async def test_asyncio_run_delivers(tracing: BpfObject) -> None:
    loop = asyncio.get_running_loop()
    seen = asyncio.Event()
    records: list[bytes] = []
    pid = os.getpid()  # not in the callback: a syscall there would feed the ring forever

    def callback(data: bytes) -> None:
        records.append(data)
        if decode(data)[0] == pid:
            seen.set()

    with RingBuffer(tracing.maps["events"], callback) as rb:
        task = asyncio.create_task(rb.run())
        os.getppid()
        await asyncio.wait_for(seen.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.remove_reader(rb.epoll_fd) is False  # run() removed its reader
    assert records


async def test_asyncio_run_propagates_callback_exception(tracing: BpfObject) -> None:
    loop = asyncio.get_running_loop()

    def callback(data: bytes) -> None:
        raise ValueError(f"bad record of {len(data)} bytes")

    with RingBuffer(tracing.maps["events"], callback) as rb:
        task = asyncio.create_task(rb.run())
        os.getppid()
        with pytest.raises(ValueError, match="bad record of 16 bytes"):
            await asyncio.wait_for(task, 5)
        assert loop.remove_reader(rb.epoll_fd) is False


async def test_asyncio_run_calls_after_batch_with_the_count(tracing: BpfObject) -> None:
    records: list[bytes] = []
    batches: list[int] = []
    done = asyncio.Event()

    def after_batch(n: int) -> None:
        batches.append(n)
        done.set()

    with RingBuffer(tracing.maps["events"], records.append) as rb:
        task = asyncio.create_task(rb.run(after_batch))
        os.getppid()
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert batches and all(n > 0 for n in batches)
    assert sum(batches) == len(records)


GETPID_NR = {"x86_64": 39, "aarch64": 172}.get(platform.machine())
needs_tso = pytest.mark.skipif(
    not RingReader.supported(), reason=f"RingReader is x86-64 only ({platform.machine()})"
)


@needs_tso
def test_reader_batches_wrap_around_the_ring_in_order(tracing: BpfObject) -> None:
    """256 KiB ring, 24 bytes per record: 40,000 records go round it almost four times, none
    lost or repeated (counted by the getppid calls made; the interpreter's own syscalls add
    records of other numbers)."""
    ring = tracing.maps["events"]
    got: list[bytes] = []
    with RingReader(ring, max_batch=100_000) as reader:
        reader.read()  # whatever the fixture's own syscalls left
        for _ in range(8):
            for _ in range(5000):
                os.getppid()
            got += reader.read()
        got += reader.read()
    assert len(got) >= 40_000
    assert all(len(r) == EVENT.size for r in got)
    assert {decode(r)[0] for r in got} == {os.getpid()}
    if GETPPID_NR is not None:
        assert sum(1 for r in got if decode(r)[1] == GETPPID_NR) == 40_000


WIDE = struct.Struct("<IIQQQQ")  # struct wide_event


@needs_tso
def test_reader_joins_records_that_straddle_the_end_of_the_ring(tracing: BpfObject) -> None:
    """48-byte records (40 + header) do not divide the 256 KiB ring: as 20,000 of them go
    round it, some start before its end and finish at its start. The data pages are mapped
    once (not twice, as libbpf does), so those come back joined from two pieces, intact and
    in order."""
    if GETPPID_NR is None:
        pytest.skip(f"no getppid number known for {platform.machine()}")
    tracing.maps["wide_nr"].update(struct.pack("<I", 0), struct.pack("<Q", GETPPID_NR))
    got: list[bytes] = []
    try:
        with RingReader(tracing.maps["events"], max_batch=100_000) as reader:
            reader.read()
            for _ in range(8):
                for _ in range(2500):
                    os.getppid()
                got += reader.read()
            got += reader.read()
            joined = reader.joined
    finally:
        tracing.maps["wide_nr"].update(struct.pack("<I", 0), struct.pack("<Q", 0))
    wide = [WIDE.unpack(r) for r in got if len(r) == WIDE.size]
    assert len(wide) >= 20_000
    assert joined >= 1
    mask = (1 << 64) - 1
    for tgid, _pad, nr, seq, check, check2 in wide:
        assert (tgid, nr) == (os.getpid(), GETPPID_NR)
        assert check == (seq * 0x9E3779B97F4A7C15) & mask and check2 == ~seq & mask
    seqs = [w[3] for w in wide]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@needs_tso
def test_reader_skips_discarded_records_and_caps_batches(tracing: BpfObject) -> None:
    if GETPID_NR is None:
        pytest.skip(f"no getpid number known for {platform.machine()}")
    tracing.maps["discard_nr"].update(struct.pack("<I", 0), struct.pack("<Q", GETPID_NR))
    try:
        with RingReader(tracing.maps["events"], max_batch=10) as reader:
            reader.read()
            while reader.read():
                pass
            for _ in range(50):
                os.getpid()  # reserved then discarded: never delivered
                os.getppid()
            batches = []
            while batch := reader.read():
                batches.append(batch)
    finally:
        tracing.maps["discard_nr"].update(struct.pack("<I", 0), struct.pack("<Q", 0))
    records = [r for b in batches for r in b]
    assert all(len(b) <= 10 for b in batches) and len(batches) >= 5
    assert GETPID_NR not in {decode(r)[1] for r in records}
    assert sum(1 for r in records if decode(r)[1] == GETPPID_NR) == 50


@needs_tso
async def test_reader_run_hands_batches_to_the_loop(tracing: BpfObject) -> None:
    got: list[bytes] = []
    with RingReader(tracing.maps["events"]) as reader:
        task = asyncio.create_task(reader.run(got.extend))
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(decode(r)[1] == GETPPID_NR for r in got):
                os.getppid()
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert GETPPID_NR is None or any(decode(r)[1] == GETPPID_NR for r in got)


@needs_tso
def test_test_run_runs_a_raw_tp_program_with_the_given_arguments(tracing: BpfObject) -> None:
    """Program.test_run (BPF_PROG_TEST_RUN): the raw_tp program sees the u64 arguments given
    as its context, here a made-up syscall number, and its record reaches the ring."""
    prog = tracing.programs["trace_sys_enter"]
    with RingReader(tracing.maps["events"]) as reader:
        while reader.read():
            pass
        assert prog.test_run(struct.pack("<QQ", 0, 987_654)) == 0
        got = [decode(r) for r in reader.read()]
    assert (os.getpid(), 987_654) in got
