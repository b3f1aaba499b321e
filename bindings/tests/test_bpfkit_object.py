"""BpfObject / Program lifecycle against the real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfkit
from bpfkit import AttachType, BpfError, BpfObject, MapType, ProgType

PROGRAMS = {"trace_sys_enter", "trace_sys_exit", "deny_connect4"}
MAPS = {"kv", "prefixes", "target_tgid", "counts", "events", "blocked_ports"}


def test_open_load_iterate_close(testprog_path: Path) -> None:
    o = BpfObject.open_file(testprog_path)
    assert o.name == "testprog"
    assert set(o.programs) == PROGRAMS
    assert set(o.maps) >= MAPS
    assert not o.loaded
    o.load()
    assert o.loaded
    enter = o.programs["trace_sys_enter"]
    assert enter.section == "raw_tp/sys_enter"
    assert enter.prog_type == ProgType.RAW_TRACEPOINT
    assert enter.fd > 0
    connect = o.programs["deny_connect4"]
    assert connect.prog_type == ProgType.CGROUP_SOCK_ADDR
    assert connect.expected_attach_type == AttachType.CGROUP_INET4_CONNECT
    assert o.maps["events"].type == MapType.RINGBUF
    assert o.maps["prefixes"].type == MapType.LPM_TRIE
    o.close()
    o.close()  # idempotent
    assert o.closed
    with pytest.raises(BpfError):
        _ = o.programs
    with pytest.raises(BpfError):
        _ = enter.fd


def test_open_file_with_name(testprog_path: Path) -> None:
    with BpfObject.open_file(testprog_path, name="custom") as o:
        assert o.name == "custom"


def test_open_mem_keeps_buffer(testprog_path: Path) -> None:
    data = testprog_path.read_bytes()
    with BpfObject.open_mem(data, "frommem") as o:
        del data
        assert o.name == "frommem"
        o.load()
        assert o.programs["trace_sys_enter"].fd > 0


def test_autoload_toggle(testprog_path: Path) -> None:
    with BpfObject.open_file(testprog_path) as o:
        prog = o.programs["trace_sys_exit"]
        assert prog.autoload
        prog.autoload = False
        assert not prog.autoload
        o.load()
        assert not prog.loaded
        with pytest.raises(BpfError) as ei:
            _ = prog.fd
        assert "trace_sys_exit" in ei.value.op
        assert o.programs["trace_sys_enter"].loaded
        with pytest.raises(BpfError):
            prog.autoload = True  # too late: already loaded


def test_set_max_entries_before_load(testprog_path: Path) -> None:
    with BpfObject.open_file(testprog_path) as o:
        kv = o.maps["kv"]
        kv.set_max_entries(256)
        o.load()
        assert kv.max_entries == 256
        with pytest.raises(BpfError):
            kv.set_max_entries(512)


def test_helpers() -> None:
    major, minor = (int(x) for x in bpfkit.libbpf_version().split(".")[:2])
    assert (major, minor) >= (1, 1)
    assert bpfkit.num_possible_cpus() >= 1
    assert bpfkit.probe_map_type(MapType.HASH)
    assert bpfkit.probe_map_type(MapType.RINGBUF)
    assert bpfkit.probe_prog_type(ProgType.RAW_TRACEPOINT)
    assert bpfkit.probe_prog_type(ProgType.CGROUP_SOCK_ADDR)


def test_num_possible_cpus_matches_sysfs() -> None:
    spec = Path("/sys/devices/system/cpu/possible").read_text().strip()
    total = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    assert bpfkit.num_possible_cpus() == total
