"""corral.h is the one layout: cffi's view of it must match what clang put in the object's BTF."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.kernel import events, keys, layout
from corral.kernel import loader as kernel
from corral.kernel.layout import C

STRUCTS = [
    "corral_cgroup_val",
    "corral_agent_cfg",
    "corral_config",
    "corral_resolved",
    "corral_path_key",
    "corral_net_key",
    "corral_allow_val",
    "corral_counters",
    "corral_rate",
    "corral_event",
]


@pytest.fixture(scope="module")
def btf_structs() -> dict[str, dict]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    obj = kernel.object_path()
    out = subprocess.run(
        [bpftool, "-j", "btf", "dump", "file", str(obj)], check=True, capture_output=True, text=True
    ).stdout
    types = json.loads(out)["types"]
    return {t["name"]: t for t in types if t.get("kind") == "STRUCT" and t.get("name")}


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_matches_object_btf(name: str, btf_structs: dict[str, dict]) -> None:
    ffi = layout.ffi()
    bt = btf_structs[name]
    assert ffi.sizeof(f"struct {name}") == bt["size"]
    for m in bt["members"]:
        assert ffi.offsetof(f"struct {name}", m["name"]) * 8 == m["bits_offset"], m["name"]


def test_enum_names_come_from_the_header() -> None:
    assert layout.DIMS == ("exec", "open", "connect")
    assert layout.MODES == ("off", "observe", "alert", "enforce")
    assert layout.VERDICTS == ("allowed", "would-deny", "denied", "killed")
    assert len(layout.DIMS) == C.CORRAL_NDIMS


def test_path_key_exact_and_prefix() -> None:
    k = keys.path_key(7, "/usr/bin/python3", prefix=False)
    assert k.list == 7
    assert k.prefixlen == 8 * (4 + len("/usr/bin/python3") + 1)  # NUL included
    p = keys.path_key(7, "/srv/data", prefix=True)
    assert bytes(layout.ffi().buffer(p.path))[:10] == b"/srv/data/"
    assert p.prefixlen == 8 * (4 + 10)  # no NUL: everything beneath matches


def test_path_key_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        keys.path_key(1, "/" + "a" * (C.CORRAL_PATH_MAX - 1), prefix=False)
    keys.path_key(1, "/" + "a" * (C.CORRAL_PATH_MAX - 2), prefix=False)  # 251 bytes fit


def test_net_key_v4_v6_and_port_order() -> None:
    k = keys.net_key(3, "10.0.0.0/8", 443)
    assert k.family == socket.AF_INET and k.port == socket.htons(443)
    assert k.prefixlen == 64 + 8
    assert bytes(layout.ffi().buffer(k.addr))[:4] == bytes([10, 0, 0, 0])
    k6 = keys.net_key(3, "2001:db8::1", 0)
    assert k6.family == socket.AF_INET6 and k6.prefixlen == 64 + 128
    with pytest.raises(ValueError):
        keys.net_key(3, "10.0.0.1", 70000)


def test_event_decode_round_trip() -> None:
    e = layout.new("struct corral_event")
    e.agent, e.pid, e.dim, e.verdict, e.mode = 5, 42, C.CORRAL_DIM_CONNECT, 2, 3
    e.family, e.port, e.proto, e.backend = socket.AF_INET6, 8443, 6, C.CORRAL_BACKEND_LSM
    e.flags = C.CORRAL_EF_INHERITED | C.CORRAL_EF_V4MAPPED
    layout.ffi().memmove(e.addr, socket.inet_pton(socket.AF_INET6, "2001:db8::7"), 16)
    layout.ffi().memmove(e.comm, b"agent", 5)
    ev = events.decode(layout.to_bytes(e), offset_ns=0)
    assert ev.object == "[2001:db8::7]:8443"
    assert (ev.verdict, ev.mode, ev.backend, ev.comm) == ("denied", "enforce", "lsm", "agent")
    assert ev.flags == ("inherited", "v4mapped")


def test_short_record_is_an_error() -> None:
    with pytest.raises(ValueError):
        events.decode(b"\0" * 10)


@pytest.mark.parametrize("name", STRUCTS)
def test_unpacker_reads_what_cffi_reads(name: str) -> None:
    """The one-call decoder derived from the header sees every field exactly as cffi does."""
    import random

    packer, names = layout.unpacker(f"struct {name}")
    assert packer.size == layout.sizeof(f"struct {name}")
    rng = random.Random(name)
    for _ in range(20):
        raw = bytes(rng.randrange(256) for _ in range(packer.size))
        view = layout.from_bytes(f"struct {name}", raw)
        for field, value in zip(names, packer.unpack(raw), strict=True):
            ref = getattr(view, field)
            if isinstance(value, bytes):
                assert value == bytes(layout.ffi().buffer(ref)), field
            else:
                assert value == ref, field


def _reference_decode(raw: bytes) -> dict:
    """The field-by-field cffi decoding events.decode replaced, kept as the oracle."""
    e = layout.from_bytes("struct corral_event", raw)

    def cstr(buf) -> str:
        return layout.ffi().string(buf).decode("utf-8", "surrogateescape")

    out = {
        "cgroup_id": int(e.cgroup_id),
        "agent_id": int(e.agent),
        "pid": int(e.pid),
        "tid": int(e.tid),
        "ppid": int(e.ppid),
        "uid": int(e.uid),
        "err": int(e.err),
        "comm": cstr(e.comm),
        "flags": tuple(n for b, n in sorted(layout.EVENT_FLAGS.items()) if e.flags & b),
    }
    if e.dim == C.CORRAL_DIM_CONNECT:
        out["port"] = int(e.port)
        addr = bytes(layout.ffi().buffer(e.addr))
        if e.family == socket.AF_INET:
            out["address"] = str(ipaddress.IPv4Address(addr[:4]))
        else:
            out["address"] = str(ipaddress.IPv6Address(addr))
    else:
        out["path"] = cstr(e.path)
    return out


def test_decode_matches_the_cffi_oracle_on_random_records() -> None:
    import random

    rng = random.Random(7)
    size = layout.sizeof("struct corral_event")
    for i in range(300):
        e = layout.new("struct corral_event")
        layout.ffi().memmove(e, bytes(rng.randrange(256) for _ in range(size)), size)
        e.dim = i % 3
        e.verdict, e.mode, e.backend = i % 4, i % 4, 1 + i % 3
        e.family = socket.AF_INET if i % 2 else socket.AF_INET6
        raw = layout.to_bytes(e)
        ev = events.decode(raw, offset_ns=0)
        for k, v in _reference_decode(raw).items():
            assert getattr(ev, k) == v, (k, i)
        assert ev.to_dict()["object"] == ev.object


@given(st.integers(0, 2**32 - 1), st.binary(max_size=255).filter(lambda b: b"\0" not in b))
def test_exact_key_bytes_is_the_cffi_key(list_id: int, path: bytes) -> None:
    assert keys.exact_key_bytes(list_id, path) == layout.to_bytes(keys.exact_key(list_id, path))


def test_exact_key_bytes_refuses_what_exact_key_refuses() -> None:
    for bad in (b"a\0b", b"/" + b"x" * 255):
        with pytest.raises(ValueError):
            keys.exact_key_bytes(1, bad)


def test_unpacker_of_some_fields_reads_them_where_the_whole_one_does() -> None:
    import random

    whole, names = layout.unpacker("struct corral_event")
    hot, hot_names = layout.unpacker("struct corral_event", events.HOT_FIELDS)
    assert hot_names == events.HOT_FIELDS and hot.size == whole.size
    rng = random.Random(3)
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(whole.size))
        full = dict(zip(names, whole.unpack(raw), strict=True))
        assert hot.unpack(raw) == tuple(full[n] for n in events.HOT_FIELDS)
    with pytest.raises(KeyError):
        layout.unpacker("struct corral_event", ("no_such_field",))
