"""Map operations on object maps and on maps re-opened from bpffs."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path

import pytest

import bpfkit
from bpfkit import BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, BpfError, BpfObject, Map, MapType


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def lpm_key(prefixlen: int, addr: str) -> bytes:
    return struct.pack("<I", prefixlen) + bytes(int(x) for x in addr.split("."))


def test_crud(obj: BpfObject) -> None:
    kv = obj.maps["kv"]
    assert (kv.type, kv.key_size, kv.value_size, kv.max_entries) == (MapType.HASH, 4, 8, 128)
    assert kv.lookup(u32(1)) is None
    kv.update(u32(1), u64(100))
    assert kv.lookup(u32(1)) == u64(100)
    kv.update(bytearray(u32(1)), memoryview(u64(101)), BPF_EXIST)
    assert kv.lookup(u32(1)) == u64(101)
    with pytest.raises(BpfError) as ei:
        kv.update(u32(1), u64(1), BPF_NOEXIST)
    assert ei.value.errno == 17  # EEXIST
    assert ei.value.op == "update map 'kv'"
    assert kv.delete(u32(1)) is True
    assert kv.delete(u32(1)) is False
    assert kv.lookup(u32(1)) is None


def test_any_buffer_accepted(obj: BpfObject) -> None:
    kv = obj.maps["kv"]
    key = ctypes.c_uint32(7)
    value = ctypes.c_uint64(77)
    kv.update(key, value)
    assert kv.lookup(memoryview(bytes(key))) == u64(77)


def test_size_checks(obj: BpfObject) -> None:
    kv = obj.maps["kv"]
    with pytest.raises(ValueError, match=r"map 'kv': key is 2 bytes, key_size is 4"):
        kv.update(b"\x01\x00", u64(1))
    with pytest.raises(ValueError, match=r"map 'kv': value is 4 bytes, value_size is 8"):
        kv.update(u32(1), u32(1))
    with pytest.raises(ValueError, match="key_size is 4"):
        kv.lookup(b"\x00" * 8)
    with pytest.raises(ValueError, match="key_size is 4"):
        kv.delete(b"")


def test_keys_and_items(obj: BpfObject) -> None:
    kv = obj.maps["kv"]
    assert list(kv.keys()) == []
    for i in range(10):
        kv.update(u32(i), u64(i * i))
    assert sorted(kv.keys()) == sorted(u32(i) for i in range(10))
    assert dict(kv.items()) == {u32(i): u64(i * i) for i in range(10)}


def test_percpu_values(obj: BpfObject) -> None:
    counts = obj.maps["counts"]
    ncpu = bpfkit.num_possible_cpus()
    assert counts.type == MapType.PERCPU_ARRAY and counts.is_percpu
    assert counts.value_buffer_size == 8 * ncpu
    counts.update(u32(0), u64(5))  # one value: replicated on every CPU
    assert counts.lookup_percpu(u32(0)) == [u64(5)] * ncpu
    full = b"".join(u64(100 + cpu) for cpu in range(ncpu))
    counts.update(u32(0), full)
    assert counts.lookup_percpu(u32(0)) == [u64(100 + cpu) for cpu in range(ncpu)]
    assert counts.lookup(u32(0)) == full
    with pytest.raises(ValueError, match="per-CPU value is 3 bytes"):
        counts.update(u32(0), b"abc")
    with pytest.raises(BpfError):
        obj.maps["kv"].lookup_percpu(u32(0))


def test_lpm_trie(obj: BpfObject) -> None:
    trie = obj.maps["prefixes"]
    trie.update(lpm_key(8, "10.0.0.0"), u32(8))
    trie.update(lpm_key(24, "10.1.2.0"), u32(24))
    assert trie.lookup(lpm_key(32, "10.1.2.3")) == u32(24)
    assert trie.lookup(lpm_key(32, "10.9.9.9")) == u32(8)
    assert trie.lookup(lpm_key(32, "11.0.0.1")) is None
    assert sorted(trie.keys()) == sorted([lpm_key(8, "10.0.0.0"), lpm_key(24, "10.1.2.0")])


def test_batch_update_delete(obj: BpfObject) -> None:
    kv = obj.maps["kv"]
    keys = [u32(i) for i in range(20)]
    kv.update_batch(keys, [u64(i + 1000) for i in range(20)])
    assert dict(kv.items()) == {u32(i): u64(i + 1000) for i in range(20)}
    # missing keys (50, 51) are skipped, the rest deleted
    deleted = kv.delete_batch([*keys[:5], u32(50), *keys[5:10], u32(51)])
    assert deleted == 10
    assert sorted(kv.keys()) == sorted(keys[10:])
    with pytest.raises(ValueError, match="3 keys but 2 values"):
        kv.update_batch(keys[:3], [u64(0)] * 2)
    # one wrong size among right ones is named, and nothing is written
    with pytest.raises(ValueError, match="key is 5 bytes, key_size is 4"):
        kv.update_batch([u32(60), u32(61) + b"\0", u32(62)], [u64(0)] * 3)
    with pytest.raises(ValueError, match="value is 4 bytes, value_size is 8"):
        kv.update_batch([u32(60), u32(61)], [u64(0), u32(0)])
    with pytest.raises(ValueError, match="key is 5 bytes"):
        kv.delete_batch([u32(60), u32(61) + b"\0"])
    assert kv.lookup(u32(60)) is None
    # buffers other than bytes are taken too
    kv.update_batch([bytearray(u32(70))], [memoryview(u64(7))])
    assert kv.lookup(u32(70)) == u64(7)


def test_batch_on_lpm_trie(obj: BpfObject) -> None:
    trie = obj.maps["prefixes"]
    keys = [lpm_key(16, f"10.{i}.0.0") for i in range(5)]
    trie.update_batch(keys, [u32(i) for i in range(5)])
    assert trie.lookup(lpm_key(32, "10.3.1.1")) == u32(3)
    assert trie.delete_batch([*keys[:2], lpm_key(16, "99.0.0.0")]) == 2
    assert sorted(trie.keys()) == sorted(keys[2:])


def test_batch_falls_back_to_loop(obj: BpfObject) -> None:
    """Kernel rejections of a whole batch (EINVAL/ENOTSUPP) fall back to per-element calls."""
    # array maps have no delete_batch (ENOTSUPP): the per-element delete then reports the
    # real error (arrays cannot delete elements: EINVAL)
    with pytest.raises(BpfError) as ei:
        obj.maps["counts"].delete_batch([u32(0)])
    assert (ei.value.errno, ei.value.op) == (errno.EINVAL, "delete from map 'counts'")
    # BPF_F_LOCK on a map without a spin lock: the batch is rejected with EINVAL, the loop
    # reproduces the error per element and nothing is written
    kv = obj.maps["kv"]
    with pytest.raises(BpfError) as ei:
        kv.update_batch([u32(1), u32(2)], [u64(1), u64(2)], BPF_F_LOCK)
    assert (ei.value.errno, ei.value.op) == (errno.EINVAL, "update map 'kv'")
    assert list(kv.keys()) == []


def test_percpu_batch(obj: BpfObject) -> None:
    counts = obj.maps["counts"]
    ncpu = bpfkit.num_possible_cpus()
    counts.update_batch([u32(0)], [u64(9)])
    assert counts.lookup_percpu(u32(0)) == [u64(9)] * ncpu


def test_pin_and_open_pinned(obj: BpfObject, pin_dir: Path) -> None:
    kv = obj.maps["kv"]
    kv.update(u32(1), u64(11))
    path = pin_dir / "kv"
    kv.pin(path)
    assert path.exists()
    with Map.open_pinned(path) as pinned:
        assert pinned.name == "kv"
        assert pinned.type == MapType.HASH
        assert (pinned.key_size, pinned.value_size, pinned.max_entries) == (4, 8, 128)
        assert pinned.lookup(u32(1)) == u64(11)
        pinned.update(u32(2), u64(22))  # shared with the object's map
        assert kv.lookup(u32(2)) == u64(22)
        assert sorted(pinned.keys()) == [u32(1), u32(2)]
    kv.unpin(path)
    assert not path.exists()


def test_open_pinned_percpu(obj: BpfObject, pin_dir: Path) -> None:
    counts = obj.maps["counts"]
    counts.update(u32(0), u64(3))
    counts.pin(pin_dir / "counts")
    with Map.open_pinned(pin_dir / "counts") as pinned:
        assert pinned.is_percpu
        assert pinned.lookup_percpu(u32(0)) == [u64(3)] * bpfkit.num_possible_cpus()
        pinned.unpin(pin_dir / "counts")


def test_pinned_map_reused_on_load(testprog_path: Path, obj: BpfObject, pin_dir: Path) -> None:
    """A second object re-adopts the pinned map: by set_pin_path and by reuse_fd."""
    path = pin_dir / "kv"
    obj.maps["kv"].pin(path)
    obj.maps["kv"].update(u32(5), u64(55))
    with BpfObject.open_file(testprog_path) as second:
        second.maps["kv"].set_pin_path(path)
        second.load()
        assert second.maps["kv"].lookup(u32(5)) == u64(55)
    fd = bpfkit.bpf_obj_get(path)
    try:
        with BpfObject.open_file(testprog_path) as third:
            third.maps["kv"].reuse_fd(fd)
            third.load()
            third.maps["kv"].update(u32(6), u64(66))
    finally:
        os.close(fd)
    assert obj.maps["kv"].lookup(u32(6)) == u64(66)
    obj.maps["kv"].unpin(path)


def test_open_pinned_missing(pin_dir: Path) -> None:
    with pytest.raises(BpfError) as ei:
        Map.open_pinned(pin_dir / "missing")
    assert ei.value.errno == 2
