"""Agent bookkeeping and registry limits (pure logic: no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.contract import Conflict
from corral.kernel.layout import C
from corral.policy.agents import DEVIATIONS_MAX, Agent, AgentLimitReached, Deviation, Registry


def test_the_agent_limit_is_a_conflict_not_a_crash(tmp_path: Path) -> None:
    """An import can create agents; at the kernel's limit the API answers 409 (was a 500)."""
    reg = Registry(tmp_path)
    for i in range(1, C.CORRAL_MAX_AGENTS):
        reg.create(f"a{i}", mode="observe", auto_promote=False, source="import")
    with pytest.raises(AgentLimitReached, match="agent limit reached") as info:
        reg.create("one-more", mode="observe", auto_promote=False, source="import")
    assert isinstance(info.value, Conflict) and info.value.status == 409
    assert "one-more" not in reg.agents


def _agent() -> Agent:
    return Agent(name="a", id=1, modes={}, lists={})


def test_deviations_bounded_least_recently_seen_dropped() -> None:
    a = _agent()
    for i in range(DEVIATIONS_MAX):
        a.record_deviation("open", f"/f{i}", "would-deny", float(i))
    a.record_deviation("open", "/f0", "would-deny", float(DEVIATIONS_MAX))  # seen again
    a.record_deviation("open", "/new", "would-deny", float(DEVIATIONS_MAX + 1))
    assert len(a.deviations) == DEVIATIONS_MAX
    assert "open\0/f1" not in a.deviations  # the least recently seen
    d0 = a.deviations["open\0/f0"]
    assert (d0.count, d0.first_seen, d0.last_seen) == (2, 0.0, float(DEVIATIONS_MAX))
    assert "open\0/new" in a.deviations


def test_loaded_deviations_are_ordered_by_last_seen() -> None:
    a = _agent()
    a.record_deviation("open", "/late", "denied", 10.0)
    a.record_deviation("open", "/early", "denied", 1.0)
    b = Agent.from_json(a.to_json())
    assert list(b.deviations) == ["open\0/early", "open\0/late"]


def test_registry_snapshot_is_what_save_writes(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    a = reg.create("snap", mode="alert", auto_promote=False, source="run")
    a.record_deviation("open", "/etc/shadow", "would-deny", 1.0)
    reg.dirty = True
    data = reg.snapshot()
    assert not reg.dirty
    a.record_deviation("open", "/etc/passwd", "would-deny", 2.0)  # after the snapshot
    reg.write(data)
    written = (tmp_path / reg.path.name).read_bytes()
    assert written == Registry.encode(data)
    assert b"/etc/passwd" not in written and b"/etc/shadow" in written
    reg.save()
    assert b"/etc/passwd" in reg.path.read_bytes()
    again = Registry(tmp_path)
    again.load()
    assert again.agents["snap"].to_json() == a.to_json()
    assert json.loads(reg.path.read_bytes())["next_list"] == reg._next_list


def test_schema_1_registries_are_read_and_rewritten_as_schema_2(tmp_path: Path) -> None:
    """Schema 1 kept deviations as objects (before comm existed, without it); schema 2 keeps
    them as arrays in Deviation's field order."""
    reg = Registry(tmp_path)
    a = reg.create("old", mode="alert", auto_promote=False, source="local")
    doc = json.loads(Registry.encode(reg.snapshot()))
    doc["schema"] = 1
    doc["agents"][0]["deviations"] = [
        {"dimension": "open", "object": "/etc/shadow", "count": 3, "first_seen": 1.0,
         "last_seen": 5.0, "verdict": "would-deny"},
        {"dimension": "exec", "object": "/bin/nc", "count": 1, "first_seen": 2.0,
         "last_seen": 2.0, "verdict": "denied", "comm": "sh"},
    ]  # fmt: skip
    reg.path.write_text(json.dumps(doc))
    old = Registry(tmp_path)
    old.load()
    devs = old.agents["old"].deviations
    assert list(devs) == ["exec\0/bin/nc", "open\0/etc/shadow"]  # least recently seen first
    assert devs["open\0/etc/shadow"].count == 3 and devs["open\0/etc/shadow"].comm == ""
    old.save()
    written = json.loads(reg.path.read_bytes())
    assert written["schema"] == 2
    assert written["agents"][0]["deviations"][1] == [
        "open", "/etc/shadow", 3, 1.0, 5.0, "would-deny", "", "", []
    ]  # fmt: skip
    again = Registry(tmp_path)
    again.load()
    assert again.agents["old"].to_json() == old.agents["old"].to_json() != a.to_json()


def _eager(
    seen: list[tuple[str, str, str, float, str, str, int, str]],
) -> list[tuple[object, ...]]:
    """The table as an object-per-deviation OrderedDict would keep it (the plain reading)."""
    table: dict[str, list[object]] = {}
    for dim, obj, verdict, now, comm, caller, _times, _exe in seen:
        key = f"{dim}\0{obj}"
        d = table.pop(key, None)
        if d is None:
            if len(table) >= DEVIATIONS_MAX:
                del table[next(iter(table))]
            d = [dim, obj, 0, now, now, verdict, comm, caller, []]
        d[2] = int(d[2]) + 1  # type: ignore[call-overload]
        d[4] = max(float(d[4]), now)  # type: ignore[arg-type]
        d[5] = verdict
        d[6] = comm or d[6]
        table[key] = d
    return [tuple(d) for d in table.values()]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["open", "exec"]),
            st.integers(0, DEVIATIONS_MAX + 40),
            st.sampled_from(["would-deny", "denied"]),
            st.floats(0, 100, allow_nan=False),
            st.sampled_from(["", "curl", "python3"]),
            st.booleans(),
        ),
        max_size=300,
    ),
    st.integers(1, 50),
)
@settings(max_examples=60, deadline=None)
def test_deviations_seen_once_stay_tuples_until_read_and_mean_the_same(
    ops: list[tuple[str, int, str, float, str, bool]], batch: int
) -> None:
    """record_deviations keeps a deviation seen once as its tuple (no object per novel event)
    and `deviations` builds the objects on read: whatever the interleaving of batches and
    reads, the table (order, counts, times, verdicts, commands) and the registry's snapshot
    are those of one object per deviation."""
    a = _agent()
    seen: list[tuple[str, str, str, float, str, str, int, str]] = []
    pending: list[tuple[str, str, str, float, str, str, int, str]] = []
    for dim, i, verdict, now, comm, read in ops:
        item = (dim, f"/f{i}", verdict, now, comm, "", 1, "")
        seen.append(item)
        pending.append(item)
        if len(pending) >= batch or read:
            a.record_deviations(pending)
            pending = []
        if read:
            got = [
                (
                    d.dimension,
                    d.object,
                    d.count,
                    d.first_seen,
                    d.last_seen,
                    d.verdict,
                    d.comm,
                    d.caller,
                    d.exes,
                )
                for d in a.deviations.values()
            ]
            assert got == _eager(seen)
    a.record_deviations(pending)
    assert a.snapshot()[1] == _eager(seen)  # straight from the tuples: nothing built
    assert [tuple(d) for d in a.to_json()["deviations"]] == _eager(seen)
    assert all(isinstance(d, Deviation) for d in a.deviations.values())
    assert list(a.deviations) == [f"{d[0]}\0{d[1]}" for d in _eager(seen)]
