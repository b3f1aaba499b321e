"""Diff rows and accept selectors (review.py): grouping, numbering, view digests, coverage."""

from __future__ import annotations

import pytest

from corral.policy import review
from corral.policy.agents import Agent, Deviation
from corral.policy.baseline import Baseline

T0 = 1_700_000_000.0


def dev(dim: str, obj: str, count: int = 1, verdict: str = "would-deny", t: float = T0,
        comm: str = "python3") -> Deviation:  # fmt: skip
    return Deviation(dim, obj, count, t, t + 10, verdict, comm)


def test_rows_are_ordered_by_dimension_then_object_and_numbered() -> None:
    devs = [
        dev("connect", "10.0.0.2:443"),
        dev("open", "/etc/b"),
        dev("exec", "/usr/bin/curl", verdict="killed"),
        dev("connect", "9.0.0.1:443"),
        dev("open", "/etc/a"),
    ]
    rows = review.rows(devs)
    assert [(r.dimension, r.object, r.kind) for r in rows] == [
        ("exec", "/usr/bin/curl", "exact"),
        ("open", "/etc/a", "exact"),
        ("open", "/etc/b", "exact"),
        ("connect", "9.0.0.1:443", "exact"),  # numerically, not as text
        ("connect", "10.0.0.2:443", "exact"),
    ]
    d = rows[0].to_dict(1)
    assert d == {
        "index": 1, "dimension": "exec", "object": "/usr/bin/curl", "kind": "exact",
        "objects": 1, "members": ["/usr/bin/curl"], "count": 1, "first_seen": T0,
        "last_seen": T0 + 10, "verdicts": ["killed"], "comms": ["python3"], "callers": [],
        "exes": [], "note": "",
    }  # fmt: skip


def test_fan_out_is_grouped_and_flat_shows_each() -> None:
    tmp = [dev("open", f"/tmp/x/f{i}", count=2, t=T0 + i) for i in range(6)]
    few = [dev("open", f"/srv/y/f{i}") for i in range(review.GROUP_MIN - 1)]
    ports = [dev("connect", f"127.0.0.1:{p}", verdict="denied") for p in range(8000, 8005)]
    pool = [dev("connect", f"10.1.2.{i}:443") for i in range(1, 7)]
    rows = review.rows(tmp + few + ports + pool)
    groups = {r.object: r for r in rows if r.kind == "group"}
    assert sorted(groups) == ["/tmp/x/", "10.1.2.0/24:443", "127.0.0.1:*"]
    g = groups["/tmp/x/"].to_dict(7)
    assert (g["objects"], g["count"], g["first_seen"], g["last_seen"]) == (6, 12, T0, T0 + 15)
    assert g["members"] == sorted(d.object for d in tmp)
    assert sum(1 for r in rows if r.kind == "exact") == len(few)
    flat = review.rows(tmp + few + ports + pool, flat=True)
    assert len(flat) == len(tmp + few + ports + pool)
    assert all(r.kind == "exact" for r in flat)


def test_view_follows_the_rows_not_the_counts() -> None:
    devs = [dev("open", "/etc/a"), dev("open", "/etc/b")]
    v = review.view(review.rows(devs))
    devs[0].count += 5
    assert review.view(review.rows(devs)) == v
    assert review.view(review.rows([*devs, dev("open", "/etc/c")])) != v
    assert review.view(review.rows(devs, flat=True)) == v  # no groups here: the same rows


def test_pending_drops_what_the_baseline_covers() -> None:
    b = Baseline("x")
    b.add("open", "/data", prefix=True)
    b.add("connect", "10.0.0.0/24:443")
    devs = [dev("open", "/data/f"), dev("open", "/etc/x"), dev("connect", "10.0.0.5:443"),
            dev("connect", "10.0.0.5:80"), dev("connect", "not an address")]  # fmt: skip
    assert [d.object for d in review.pending(devs, b)] == ["/etc/x", "10.0.0.5:80",
                                                          "not an address"]  # fmt: skip


def test_long_paths_carry_a_note() -> None:
    (row,) = review.rows([dev("open", "/" + "x" * 300)])
    assert "can never be allowed" in row.note


def test_an_unresolved_path_is_not_called_too_long() -> None:
    """An open whose path the kernel could not produce arrives with an empty object: the note
    says so (it used to say "longer than the kernel's path limit")."""
    (row,) = review.rows([dev("open", "")], flat=True)
    assert "could not produce a path" in row.note and "longer" not in row.note


def test_unresolved_opens_are_no_deviations_where_opens_are_only_reported() -> None:
    from corral.pipeline.batch import Batch
    from corral.pipeline.deviations import DeviationTracker

    def batch(agent: Agent) -> Batch:
        seen = [
            ("open", "", "would-deny", T0, "id", "", 1, ""),
            ("open", "/etc/shadow", "would-deny", T0, "id", "", 1, ""),
        ]
        return Batch(records=[], deviations={agent.id: (agent, seen)})

    for skip, want in ((True, ["/etc/shadow"]), (False, ["", "/etc/shadow"])):
        agent = Agent(name="a", id=1, modes={}, lists={})
        tracker = DeviationTracker(lambda: None)
        tracker.skip_unresolved_opens = skip
        tracker.on_batch(batch(agent))
        assert sorted(d.object for d in agent.deviations.values()) == want


def test_selectors() -> None:
    s = review.selector("open", "/tmp/x/")
    assert (s.prefix, s.kind, s.object) == (True, "prefix", "/tmp/x/")
    assert s.covers(dev("open", "/tmp/x/f")) and not s.covers(dev("open", "/tmp/xy"))
    assert not s.covers(dev("exec", "/tmp/x/f"))
    s = review.selector("exec", "/proc/123/exe")
    assert s.path == "/proc/*/exe" and s.covers(dev("exec", "/proc/77/exe"))
    s = review.selector("connect", "10.0.0.0/24:443")
    assert s.kind == "network" and s.covers(dev("connect", "10.0.0.9:443"))
    assert not s.covers(dev("connect", "10.0.0.9:80"))
    assert not s.covers(dev("connect", "[::1]:443"))
    s = review.selector("connect", "[::1]:*")
    assert s.object == "[::1]:*" and s.covers(dev("connect", "[::1]:8080"))
    assert review.selector("open", "rel/file").covers(dev("open", "rel/file"))
    for dim, obj, msg in [
        ("open", "rel/dir/", "must be absolute"),
        ("read", "/x", "unknown dimension"),
        ("open", "/a\0b", "NUL"),
        ("connect", "10.0.0.1", "not address:port"),
        ("connect", "10.0.0.1:99999", "out of range"),
    ]:
        with pytest.raises(ValueError, match=msg):
            review.selector(dim, obj)


def test_exact_selector_of_a_deviation() -> None:
    assert review.exact(dev("open", "/some/dir/")) == review.Selector("open", path="/some/dir/")
    assert review.exact(dev("connect", "1.2.3.4:0")) is None  # would allow every port
    assert review.exact(dev("connect", "garbage")) is None
    s = review.exact(dev("connect", "[::ffff:1.2.3.4]:443"))
    assert s is not None and s.object == "1.2.3.4:443"


def test_deviations_record_the_command_and_old_registries_still_load() -> None:
    a = Agent("x", 1, {}, {})
    a.record_deviation("open", "/etc/x", "would-deny", T0, "curl")
    a.record_deviation("open", "/etc/x", "denied", T0 + 1)
    (d,) = a.deviations.values()
    assert (d.count, d.verdict, d.comm, d.key) == (2, "denied", "curl", "open\0/etc/x")
    old = {"name": "x", "id": 1, "modes": {}, "lists": {}, "deviations": [
        {"dimension": "open", "object": "/y", "count": 1, "first_seen": T0, "last_seen": T0,
         "verdict": "denied"}]}  # fmt: skip
    assert Agent.from_json(old).deviations["open\0/y"].comm == ""
