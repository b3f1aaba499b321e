"""BaselineStore on real files: round trips, names, corruption, SIGKILL mid-save, disk full."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.policy.baseline import Baseline
from corral.policy.blob import (
    MAGIC,
    CorruptBaseline,
    _decode_resting,
    decode_file,
    decode_payload,
    encode_file,
    encode_payload,
)
from corral.policy.rules import BaselineRules
from corral.policy.store import BaselineStore, atomic_write, file_name

from .test_baseline import T0, conn, ev

NAMES = [
    "demo",
    "prod/Deployment/chatbot/agent",
    "A.b_c-d/0.9/x_Y-z",
    "9lives",
    "a" * 253,
    "/".join(["s" * 127] * 4),  # 511 characters: stored under a hash
    "x.baseline",
    "x.baseline.corrupt-1",
]


def sample(agent: str = "demo", n: int = 50, seed: int = 0, *, patterns: bool = True) -> Baseline:
    """A baseline with entries in every dimension, collapses, aggregates and unenforceables."""
    rnd = random.Random(seed)
    b = Baseline(agent, learning_since=T0)
    for i in range(n):
        t = T0 + i
        b.observe(ev("exec", f"/usr/bin/tool{rnd.randrange(n)}", t=t))
        b.observe(ev("open", f"/srv/app/{i % 7}/f{rnd.randrange(10 * n)}", t=t))
        b.observe(ev("open", f"/data/run/{i}/x", t=t))
        b.observe(conn(f"10.{i % 3}.{rnd.randrange(4)}.{rnd.randrange(256)}", 443, t=t))
        b.observe(conn(f"2001:db8::{rnd.randrange(1 << 16):x}", 8443, t=t))
    b.observe(ev("open", "/very/" + "long" * 80, flags=("toolong",)))
    b.observe(ev("open", "/bad/name\udcff\udc80"))
    if patterns:
        for name in ("k2j9x1ab", "zq0_r7tm", "4kd9e2aa"):  # learned into a pattern
            b.observe(ev("open", f"/tmp/agent-{name}.json", t=T0))
        b.add("open", "/var/log/app-*.log", source="accepted", pattern=True, when=T0)
    b.add("open", "/opt/imported/", source="imported", prefix=True, when=T0)
    b.mark_partial("events dropped")
    return b


def big(agent: str = "big", n: int = 10_000, tag: float = 0.0) -> Baseline:
    """n distinct entries that neither collapse nor aggregate."""
    b = Baseline(agent, learning_since=T0 + tag)
    for i in range(n // 2):
        b.add("open", f"/d{i % 40}/a{i % 25}/b{i}/file.py", source="learned", when=T0 + tag)
    for i in range(n // 4):
        b.add("exec", f"/opt/bin{i % 50}/t{i}x", source="learned", when=T0 + tag)
    for i in range(n - n // 2 - n // 4):
        b.add("connect", (f"10.{i // 4096}.{(i // 16) % 256}.{i % 16}", 443), when=T0 + tag)
    assert len(b) == n
    return b


# ---- round trips --------------------------------------------------------------------------------


def test_round_trip_and_byte_stability(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    b = sample()
    path = store.save(b)
    first = path.read_bytes()
    store.save(b)
    assert path.read_bytes() == first  # saving twice: identical files
    loaded = store.load("demo")
    assert loaded is not None
    assert loaded.to_dict() == b.to_dict()
    assert loaded.summary() == b.summary()
    assert encode_file(loaded) == first  # load + save: identical too
    for d in ("exec", "open", "connect"):
        assert loaded.kernel_entries(d) == b.kernel_entries(d)
    # the loaded baseline keeps learning with the same indexes
    assert loaded.observe(ev("open", "/srv/app/0/f99999")) is b.observe(
        ev("open", "/srv/app/0/f99999")
    )
    assert loaded.to_dict() == b.to_dict()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_file_format_is_versioned_and_checksummed(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    raw = store.save(sample()).read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    header = unpacker.unpack()
    assert header["magic"] == MAGIC and header["schema"] == 4 and header["agent"] == "demo"
    assert len(header["sha256"]) == 32 and header["length"] == len(raw) - unpacker.tell()


def test_names_with_slashes_and_every_allowed_char(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    for name in NAMES:
        store.save(sample(name, n=5))
    assert store.names() == sorted(NAMES)
    files = sorted(p.name for p in store.dir.iterdir())
    assert all("/" not in f and len(f) <= 255 and not f.startswith(".") for f in files)
    expected = "prod%2FDeployment%2Fchatbot%2Fagent.baseline"
    assert file_name("prod/Deployment/chatbot/agent") == expected
    assert file_name("/".join(["s" * 127] * 4)).startswith("~")
    loaded = store.load_all()
    assert sorted(loaded) == sorted(NAMES)
    assert all(b.agent == name for name, b in loaded.items())
    # a fresh store (daemon restart) sees the same
    assert BaselineStore(tmp_path).names() == sorted(NAMES)
    assert store.delete("prod/Deployment/chatbot/agent") is True
    assert store.delete("prod/Deployment/chatbot/agent") is False
    assert store.load("prod/Deployment/chatbot/agent") is None
    assert "prod/Deployment/chatbot/agent" not in store.names()


def test_names_ignores_other_files(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(sample("real", n=3))
    for junk in (
        "README",
        "bad%zz.baseline",
        "x.baseline.corrupt-20250101T000000Z",
        "~ab.baseline",
        "%2eoops.baseline",
        "a%2fb.baseline",
    ):
        (store.dir / junk).write_bytes(b"junk")
    assert store.names() == ["real"]


def test_missing_is_none_and_invalid_names_rejected(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    assert store.load("nobody") is None
    assert store.load_all() == {}
    for bad in ("", "a\0b"):
        with pytest.raises(ValueError):
            file_name(bad)


def test_save_10k_entries_timing(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    b = big()
    t0 = time.perf_counter()
    data = encode_file(b)
    t1 = time.perf_counter()
    store.save(b)
    t2 = time.perf_counter()
    loaded = store.load("big")
    t3 = time.perf_counter()
    assert loaded is not None and len(loaded) == 10_000
    print(
        f"\n10,000-entry baseline: {len(data)} bytes; encode {1000 * (t1 - t0):.1f} ms, "
        f"save (encode + write + fsync + rename) {1000 * (t2 - t1):.1f} ms, "
        f"load {1000 * (t3 - t2):.1f} ms"
    )


# ---- corrupt files ------------------------------------------------------------------------------


def _flip(raw: bytes, at: int) -> bytes:
    b = bytearray(raw)
    b[at] ^= 0x01
    return bytes(b)


def _wrong_schema(raw: bytes) -> bytes:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    header = unpacker.unpack()
    header["schema"] = 99
    return msgpack.packb(header, use_bin_type=True) + raw[unpacker.tell() :]


CORRUPTIONS = {
    "empty": (lambda raw: b"", "empty file"),
    "truncated": (lambda raw: raw[: len(raw) // 2], "truncated"),
    "truncated header": (lambda raw: raw[:10], "truncated header"),
    "flipped payload byte": (lambda raw: _flip(raw, len(raw) - 20), "checksum mismatch"),
    "flipped magic byte": (lambda raw: _flip(raw, 8), "not a corral baseline"),
    "garbage": (lambda raw: random.Random(1).randbytes(5000), "not a corral baseline"),
    "wrong schema": (_wrong_schema, "schema 99 is not supported"),
    "appended": (lambda raw: raw + b"\0", "truncated or padded"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_file_moved_aside(tmp_path: Path, kind: str) -> None:
    mangle, problem = CORRUPTIONS[kind]
    store = BaselineStore(tmp_path)
    store.save(sample("healthy", n=5))
    path = store.save(sample("victim/one", n=5))
    path.write_bytes(mangle(path.read_bytes()))
    with structlog.testing.capture_logs() as logs:
        loaded = store.load_all()
    assert sorted(loaded) == ["healthy"]
    assert not path.exists()
    aside = list(store.dir.glob(f"{path.name}.corrupt-*"))
    assert len(aside) == 1
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    err = errors[0]
    assert problem in err["problem"]
    assert err["moved_to"] == str(aside[0]) and err["agent"] == "victim/one"
    # it says what the agent does now (fails closed where it enforces) and the way out
    assert "keeps its modes with an empty baseline" in err["now"]
    assert "denied (fails closed)" in err["now"]
    assert "corralctl baseline import victim/one FILE" in err["what_to_do"]
    with pytest.raises(CorruptBaseline):
        decode_file(aside[0].read_bytes())
    # the agent relearns: a new save works and a second corruption does not clobber the first
    store.save(sample("victim/one", n=3))
    assert store.load("victim/one") is not None
    path.write_bytes(b"")
    assert store.load("victim/one") is None
    assert len(list(store.dir.glob(f"{path.name}.corrupt-*"))) == 2
    assert store.names() == ["healthy"]


def test_malformed_payload_with_valid_checksum(tmp_path: Path) -> None:
    import hashlib

    store = BaselineStore(tmp_path)
    payload = msgpack.packb({"agent": "x", "exec": "not a list"}, use_bin_type=True)
    header = {
        "magic": MAGIC,
        "schema": 1,
        "agent": "x",
        "length": len(payload),
        "sha256": hashlib.sha256(payload).digest(),
    }
    store.path("x").write_bytes(msgpack.packb(header, use_bin_type=True) + payload)
    with structlog.testing.capture_logs() as logs:
        assert store.load("x") is None
    assert "malformed payload" in logs[0]["problem"]


def test_file_of_another_agent(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    shutil.copy(store.save(sample("a", n=3)), store.path("b"))
    assert store.load("b") is None
    assert store.load("a") is not None


# ---- crash safety -------------------------------------------------------------------------------


def _writer(state_dir: Path, agent: str, versions: list[bytes]) -> None:
    """Child: saves the versions in turn, forever."""
    store = BaselineStore(state_dir)
    i = 0
    while True:
        store.save_encoded(agent, versions[i % len(versions)])
        i += 1


def test_sigkill_mid_save_leaves_old_or_new(tmp_path: Path) -> None:
    agent = "prod/Deployment/chatbot/agent"
    versions = [encode_file(big(agent, 6000, tag=k)) for k in range(3)]
    old = encode_file(sample(agent, n=10))
    valid = {old, *versions}
    store = BaselineStore(tmp_path)
    store.save_encoded(agent, old)
    rnd = random.Random(42)
    seen: set[int] = set()
    delays = [rnd.uniform(0.0, 0.15) for _ in range(11)] + [1.0]  # the last one surely writes
    for delay in delays:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                _writer(tmp_path, agent, versions)
            finally:
                os._exit(1)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        raw = store.path(agent).read_bytes()
        assert raw in valid, "the file is neither the old nor a complete new version"
        decode_file(raw)
        seen.add(hash(raw))
    assert len(seen) > 1  # the kills did land at different points
    # temp files of the killed writers are removed by the next store (daemon restart)
    BaselineStore(tmp_path)
    assert [p.name for p in store.dir.iterdir()] == [file_name(agent)]
    assert store.load(agent) is not None


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full(tiny_fs: Path) -> None:
    store = BaselineStore(tiny_fs)
    small = sample("prod/Deployment/chatbot/agent", n=10)
    path = store.save(small)
    before = path.read_bytes()
    huge = big("prod/Deployment/chatbot/agent", 5000)
    with pytest.raises(OSError) as info:
        store.save(huge)
    assert info.value.errno == errno.ENOSPC
    msg = str(info.value)
    assert "prod/Deployment/chatbot/agent" in msg and str(path) in msg
    assert "No space left on device" in msg and "previous version" in msg
    assert path.read_bytes() == before
    loaded = store.load("prod/Deployment/chatbot/agent")
    assert loaded is not None and loaded.to_dict() == small.to_dict()
    assert [p.name for p in store.dir.iterdir()] == [path.name]  # no temp file left


# ---- property: anything learned round-trips -----------------------------------------------------

_seg = st.sampled_from(["a", "b", "c", "123", "proc", "é", "x\udcff", "..", ""])
_path = st.one_of(
    st.lists(_seg, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s)),
    st.text(min_size=0, max_size=12),
    st.just("/" + "l" * 260),
)
_flags = st.lists(
    st.sampled_from(["toolong", "unresolved", "relative", "inherited"]), max_size=2, unique=True
).map(tuple)
_addr = st.one_of(
    st.builds(lambda c, d: f"10.0.{c}.{d}", st.integers(0, 1), st.integers(0, 30)),
    st.builds(lambda d: f"2001:db8::{d:x}", st.integers(0, 30)),
    st.builds(lambda d: f"::ffff:10.0.0.{d}", st.integers(0, 30)),
    st.just("not-an-address"),
)
_event = st.one_of(
    st.builds(
        lambda d, p, f, t: ev(d, p, flags=f, t=T0 + t),
        st.sampled_from(["exec", "open"]),
        _path,
        _flags,
        st.floats(0, 1e6),
    ),
    st.builds(
        lambda a, p, t: conn(a, p, t=T0 + t),
        _addr,
        st.sampled_from([0, 53, 443]),
        st.floats(0, 1e6),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_property_any_events_round_trip(events: list, threshold: int, net_threshold: int) -> None:
    rules = BaselineRules(
        collapse_threshold=threshold, collapse_min_depth=1, net_collapse_threshold=net_threshold
    )
    b = Baseline("prop/agent", rules=rules, learning_since=T0)
    for e in events:
        b.observe(e)
    for e in events:  # everything learned (and enforceable) is allowed afterwards
        if b.contains(e.dimension, e.object if e.dimension == "connect" else e.path or ""):
            continue
        assert any(u.dimension == e.dimension for u in b.unenforceable)
    with tempfile.TemporaryDirectory() as d:
        store = BaselineStore(d, rules=rules)
        first = store.save(b).read_bytes()
        loaded = store.load("prop/agent")
        assert loaded is not None
        assert loaded.to_dict() == b.to_dict()
        assert store.save(loaded).read_bytes() == first
        assert encode_payload(loaded) == encode_payload(b)
        # at rest: saved byte for byte without thawing, then the same baseline on first use
        summary = b.summary()
        b.freeze()
        assert b.frozen and b.summary() == summary and len(b) == sum(summary["counts"].values())
        assert store.save(b).read_bytes() == first and b.frozen
        assert b.to_dict() == loaded.to_dict() and not b.frozen


def test_atomic_write(tmp_path: Path) -> None:
    target = tmp_path / "agents.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["agents.json"]
    with pytest.raises(OSError, match="previous version is unchanged") as info:
        atomic_write(tmp_path / "missing-dir" / "x", b"data")
    assert info.value.errno == errno.ENOENT


def test_disk_full_atomic_write(tiny_fs: Path) -> None:
    target = tiny_fs / "registry.json"
    atomic_write(target, b"old")
    with pytest.raises(OSError, match="No space left on device") as info:
        atomic_write(target, b"x" * 200_000)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [p.name for p in tiny_fs.iterdir()] == ["registry.json"]


def _v1_file(b: Baseline) -> bytes:
    """A baseline as corrald wrote it before schema 2: entry rows without origin, no imports."""
    import hashlib

    data = msgpack.unpackb(encode_payload(b), raw=False)
    for dim in ("exec", "open", "connect", "unenforceable"):
        data[dim] = [row[:-1] for row in data[dim]]  # drop the origin column
    del data["annotations"], data["imports"], data["exec_patterns"], data["open_patterns"]
    payload = msgpack.packb(data, use_bin_type=True)
    header = {"magic": MAGIC, "schema": 1, "agent": b.agent, "length": len(payload),
              "sha256": hashlib.sha256(payload).digest()}  # fmt: skip
    return msgpack.packb(header, use_bin_type=True) + payload


def test_schema_1_files_are_read_and_migrated(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    b = sample("old/agent", n=30, patterns=False)
    b.add("exec", "/usr/bin/accepted-by-hand", source="accepted", when=T0)
    store.path(b.agent).write_bytes(_v1_file(b))
    with structlog.testing.capture_logs() as logs:
        loaded = store.load("old/agent")
    assert loaded is not None and loaded.to_dict() == b.to_dict()
    assert loaded.lookup("exec", "/usr/bin/accepted-by-hand").source == "accepted"  # type: ignore[union-attr]
    assert any(e["event"] == "baseline file migrated" and e["schema_from"] == 1 for e in logs)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(store.path(b.agent).read_bytes())
    assert unpacker.unpack()["schema"] == 4  # rewritten in place, crash-safe
    again = store.load("old/agent")
    assert again is not None and encode_payload(again) == encode_payload(b)


def test_provenance_survives_the_store(tmp_path: Path) -> None:
    from corral.policy.rules import Entry

    store = BaselineStore(tmp_path)
    b = sample("prov", n=5)
    b.insert("open", "/etc/imported", Entry(T0, T0, 0, "imported", "learned"))
    b.annotations = {"reviewed-by": "alice"}
    b.record_import({"at": T0, "digest": "sha256:0011", "strategy": "merge", "added": 1})
    store.save(b)
    loaded = store.load("prov")
    assert loaded is not None and loaded.to_dict() == b.to_dict()
    e = loaded.entry("open", "/etc/imported")
    assert e is not None and (e.source, e.origin, e.declared_source) == (
        "imported", "learned", "learned")  # fmt: skip
    assert loaded.imports[0]["digest"] == "sha256:0011"
    assert loaded.annotations == {"reviewed-by": "alice"}


def test_a_resting_baseline_thaws_on_use_and_keeps_learning() -> None:
    b = Baseline("rest/agent", rules=BaselineRules(collapse_threshold=3), learning_since=T0)
    b.add("open", "/srv/app/data/one", "learned", T0)
    b.add("connect", ("10.0.0.1", 443), "learned", T0)
    b.freeze()
    b.freeze()  # idempotent
    assert b.frozen and b.summary()["counts"] == {"exec": 0, "open": 1, "connect": 1}
    assert b.contains("open", "/srv/app/data/one") and not b.frozen
    b.freeze()
    for name in ("two", "three", "four"):  # learning into it collapses as before
        assert b.add("open", f"/srv/app/data/{name}", "learned", T0 + 1)
    assert b.kernel_entries("open") == ([], ["/srv/app/data/"])
    revision = b.revision
    b.freeze()
    assert b.revision == revision and b.kernel_entries("connect") == [("10.0.0.1/32", 443)]


# ---- loading at rest: the entries streamed into the blob, never objects ------------------------


def _inflated(b: Baseline) -> tuple[bytes, dict]:
    assert b._frozen is not None
    return zlib.decompress(b._frozen[0]), b._frozen[1]


def _readers(b: Baseline) -> tuple:
    return (
        [b.kernel_entries(d) for d in ("exec", "open", "connect")],
        [b.path_entries(d) for d in ("exec", "open")],
        b.net_entries(),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, max_size=60), st.integers(1, 5))
def test_property_loading_at_rest_is_decode_then_freeze(events: list, threshold: int) -> None:
    rules = BaselineRules(collapse_threshold=threshold, collapse_min_depth=1)
    b = Baseline("prop/agent", rules=rules, learning_since=T0)
    for e in events:
        b.observe(e)
    b.add("open", "/srv/imported/data", "imported", T0)
    payload = encode_payload(b)
    assert _decode_resting(payload, rules) is not None  # what corral writes: streamed
    resting = decode_payload(payload, rules, rest=True)
    full = decode_payload(payload, rules)
    live = _readers(full)
    full.freeze()
    assert resting.frozen
    assert _inflated(resting) == _inflated(full)
    assert resting.summary() == full.summary() == b.summary()
    # what start-up reads from a resting baseline comes from the blob: it stays at rest
    assert _readers(resting) == live
    assert resting.frozen
    assert encode_payload(resting) == payload
    assert resting.to_dict() == b.to_dict()  # thaws


def _repacked(payload: bytes, change) -> bytes:
    data = msgpack.unpackb(payload, raw=False)
    change(data)
    return msgpack.packb(data, use_bin_type=True)


def _sample() -> Baseline:
    b = Baseline("rest/agent", learning_since=T0)
    for i in range(50):
        b.add("open", f"/srv/app/mod_{i:03d}.py", "learned", T0 + i)
    b.add("open", "/srv/app/cache/", "accepted", T0, prefix=True)
    b.add("exec", "/usr/bin/git", "learned", T0)
    b.add("connect", ("10.0.0.0/8", 443), "learned", T0)
    b.add("connect", ("::ffff:10.1.2.3", 80), "learned", T0)
    return b


@pytest.mark.parametrize(
    ("change", "streamed"),
    [
        (lambda d: d["open"].reverse(), False),  # rows out of order
        (lambda d: d["open"].append(list(d["open"][0])), False),  # a duplicate row
        (lambda d: d.update(exec=d.pop("exec")), False),  # tables in another order
        # forms each row is written back in: streamed, normalised as the full decode does
        (lambda d: d["connect"].__setitem__(0, ["10.9.9.9/8", *d["connect"][0][1:]]), True),
        (lambda d: [r.pop() for r in d["open"]], True),  # schema 1 rows: no origin
    ],
    ids=["reversed", "duplicate", "table-order", "host-bits", "schema-1-rows"],
)
def test_loading_at_rest_is_the_full_decode_for_rows_it_would_not_write(change, streamed) -> None:
    """Rows that are not what freeze() writes (hand-made or older files) give the same
    resting baseline as the full decode, never a blob with other bytes."""
    payload = _repacked(encode_payload(_sample()), change)
    assert (_decode_resting(payload, None) is not None) is streamed
    resting = decode_payload(payload, rest=True)
    full = decode_payload(payload)
    full.freeze()
    assert resting.frozen
    assert _inflated(resting) == _inflated(full)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["open"].__setitem__(0, ["not bytes", False, 1.0, 1.0, 1, "learned", None]),
        lambda d: d["open"].__setitem__(0, [b"/x", False, 1.0, 1.0, 1, "invented", None]),
        lambda d: d.pop("connect"),
        lambda d: d.update(open={"a": 1}),
    ],
    ids=["path-not-bytes", "unknown-source", "table-missing", "table-not-a-list"],
)
def test_loading_at_rest_rejects_what_the_full_decode_rejects(change) -> None:
    payload = _repacked(encode_payload(_sample()), change)
    with pytest.raises(CorruptBaseline):
        decode_payload(payload)
    with pytest.raises(CorruptBaseline):
        decode_payload(payload, rest=True)


def test_store_loads_at_rest(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    b = _sample()
    store.save(b)
    loaded = store.load("rest/agent", rest=True)
    assert loaded is not None and loaded.frozen
    assert loaded.summary() == b.summary()
    assert loaded.kernel_entries("open") == b.kernel_entries("open")
    assert loaded.frozen
