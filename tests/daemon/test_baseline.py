"""Baseline learning rules: novelty, hits, directory collapse, /proc, networks, contains()."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.kernel import keys as kernel
from corral.kernel.events import Event
from corral.policy.baseline import Baseline
from corral.policy.rules import (
    BaselineRules,
    aggregate_networks,
    collapse_allowed,
    collapse_paths,
    dir_depth,
    format_net,
    normalise_network,
    normalise_path,
    parent_dirs,
    parse_net,
    path_max,
)

T0 = 1_700_000_000.0


def ev(
    dimension: str,
    path: str | None = None,
    *,
    t: float = T0,
    flags: tuple[str, ...] = (),
    address: str | None = None,
    port: int | None = None,
) -> Event:
    family = None
    if address is not None:
        family = "inet6" if ":" in address else "inet"
    return Event(
        ts_ns=int(t * 1e9),
        cgroup_id=1,
        agent_id=1,
        pid=10,
        tid=10,
        ppid=1,
        uid=0,
        comm="agent",
        dimension=dimension,
        verdict="allowed",
        mode="observe",
        backend="lsm",
        flags=flags,
        err=0,
        path=path,
        family=family,
        address=address,
        port=port,
        protocol=6 if address is not None else None,
    )


def conn(address: str, port: int, **kw: object) -> Event:
    return ev("connect", address=address, port=port, **kw)  # type: ignore[arg-type]


# ---- novelty and hits ---------------------------------------------------------------------------


def test_novelty_hits_and_times() -> None:
    b = Baseline("demo", learning_since=T0 - 5)
    assert b.observe(ev("exec", "/usr/bin/python3", t=T0)) is True
    assert b.observe(ev("exec", "/usr/bin/python3", t=T0 + 10)) is False
    assert b.observe(ev("exec", "/usr/bin/python3", t=T0 - 1)) is False  # out of order
    e = b.lookup("exec", "/usr/bin/python3")
    assert e is not None
    assert (e.first_seen, e.last_seen, e.hits, e.source) == (T0 - 1, T0 + 10, 3, "learned")
    assert b.last_novel == T0
    assert b.observe(ev("open", "/usr/bin/python3", t=T0 + 20)) is True  # dimensions are separate
    assert b.last_novel == T0 + 20
    s = b.summary()
    assert s["counts"] == {"exec": 1, "open": 1, "connect": 0}
    assert s["learning_since"] == T0 - 5 and s["last_novel"] == T0 + 20
    assert s["partial"] is False


def test_partial_reasons() -> None:
    b = Baseline("demo")
    b.mark_partial("events dropped")
    b.mark_partial("learning began on an already-running container")
    b.mark_partial("events dropped")
    assert b.partial
    assert b.summary()["partial_reasons"] == [
        "events dropped",
        "learning began on an already-running container",
    ]


def test_exec_never_collapses() -> None:
    b = Baseline("demo")
    for i in range(40):
        b.observe(ev("exec", f"/opt/tools/bin/t{i}"))
    exact, prefixes = b.kernel_entries("exec")
    assert len(exact) == 40 and prefixes == []


def test_unknown_dimension_is_ignored() -> None:
    assert Baseline("demo").observe(ev("dim7", "/x")) is False


# ---- directory collapse -------------------------------------------------------------------------


def test_collapse_at_threshold() -> None:
    b = Baseline("demo")
    assert b.rules.collapse_threshold == 20
    for i in range(20):
        assert b.observe(ev("open", f"/app/lib/pkg/m{i}.py", t=T0 + i))
    assert b.kernel_entries("open") == (sorted(f"/app/lib/pkg/m{i}.py" for i in range(20)), [])
    b.observe(ev("open", "/app/lib/pkg/m1.py", t=T0 + 50))  # a hit, not a child
    assert b.observe(ev("open", "/app/lib/pkg/m20.py", t=T0 + 100)) is True
    assert b.kernel_entries("open") == ([], ["/app/lib/pkg/"])
    e = b.lookup("open", "/app/lib/pkg/whatever")
    assert e is not None
    assert (e.first_seen, e.last_seen, e.hits) == (T0, T0 + 100, 22)
    # later paths beneath are hits of the prefix
    assert b.observe(ev("open", "/app/lib/pkg/sub/deep.py", t=T0 + 200)) is False
    assert e.hits == 23 and e.last_seen == T0 + 200
    assert b.to_dict()["open"][0]["kind"] == "prefix"


def test_collapse_counts_subdirectories_and_takes_everything_beneath() -> None:
    b = Baseline("demo", rules=BaselineRules(collapse_threshold=4))
    for i in range(4):
        b.observe(ev("open", f"/srv/cache/data/d{i}/f"))
        b.observe(ev("open", f"/srv/cache/data/d{i}/g/h"))
    assert b.kernel_entries("open")[1] == []
    b.add("open", "/srv/cache/data/x/", source="imported", prefix=True)  # a 5th child, as a rule
    assert b.kernel_entries("open") == ([], ["/srv/cache/data/"])
    e = b.lookup("open", "/srv/cache/data/new")
    assert e is not None and e.hits == 9 and e.source == "learned"  # mixed sources -> learned


def test_collapse_picks_shallowest_and_cascade_matches_batch() -> None:
    rules = BaselineRules(collapse_threshold=2)
    paths = [f"/a/b/c/d{i}/f{j}" for i in range(3) for j in range(3)]
    b = Baseline("demo", rules=rules)
    for p in paths:
        b.observe(ev("open", p))
    exact, prefixes = b.kernel_entries("open")
    assert (set(exact), set(prefixes)) == collapse_paths(paths, rules)
    assert prefixes == ["/a/b/c/"]


def test_min_depth() -> None:
    b = Baseline("demo")
    for i in range(60):
        b.observe(ev("open", f"/usr/f{i}"))  # depth 1
        b.observe(ev("open", f"/opt/app/f{i}"))  # depth 2
    assert b.kernel_entries("open")[1] == []
    assert len(b.kernel_entries("open")[0]) == 120
    b2 = Baseline("demo", rules=BaselineRules(collapse_min_depth=2))
    for i in range(21):
        b2.observe(ev("open", f"/opt/app/f{i}"))
    assert b2.kernel_entries("open") == ([], ["/opt/app/"])
    assert dir_depth("/") == 0 and dir_depth("/etc/") == 1 and dir_depth("/home/x/") == 2


def test_sensitive_prefixes() -> None:
    b = Baseline("demo")
    for i in range(30):
        b.observe(ev("open", f"/var/run/secrets/s{i}"))  # depth 3 but listed
        b.observe(ev("open", f"/run/secrets/x/s{i}"))  # below a listed dir: allowed
        b.observe(ev("open", f"/etc/ssl/certs/c{i}.pem"))  # below /etc/: allowed
    exact, prefixes = b.kernel_entries("open")
    assert prefixes == ["/etc/ssl/certs/", "/run/secrets/x/"]
    assert len(exact) == 30 and all(p.startswith("/var/run/secrets/") for p in exact)

    # configurable; a collapse may not produce a prefix ABOVE a listed one either
    rules = BaselineRules(collapse_min_depth=2, sensitive_prefixes=("/etc/ssl/certs", "/srv/a/b/"))
    assert rules.sensitive_prefixes == ("/etc/ssl/certs/", "/srv/a/b/")
    b2 = Baseline("demo", rules=rules)
    for i in range(30):
        b2.observe(ev("open", f"/etc/ssl/certs/c{i}.pem"))
        b2.observe(ev("open", f"/srv/a/f{i}"))
    assert b2.kernel_entries("open")[1] == []
    assert not collapse_allowed("/srv/a/", rules)
    assert not collapse_allowed("/srv/a/b/", rules)
    assert collapse_allowed("/srv/a/b/c/", rules)
    assert collapse_allowed("/srv/a/bb/", rules)  # string prefix of /srv/a/b/? no: a sibling


def test_relative_paths_stored_as_given_and_never_collapsed() -> None:
    b = Baseline("demo")
    assert b.observe(ev("open", "./conf//x.yaml", flags=("relative",)))
    assert b.observe(ev("open", "proc/123/x", flags=("relative",)))
    for i in range(30):
        b.observe(ev("open", f"a/b/c/f{i}", flags=("relative",)))
    exact, prefixes = b.kernel_entries("open")
    assert "./conf//x.yaml" in exact and "proc/123/x" in exact
    assert prefixes == [] and len(exact) == 32


def test_root_directory_open_is_an_exact_entry() -> None:
    b = Baseline("demo")
    b.observe(ev("open", "/"))
    assert b.kernel_entries("open") == (["/"], [])
    assert not b.contains("open", "/etc/passwd")


# ---- /proc --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("/proc/1234/status", "/proc/*/status"),
        ("/proc/1/fd/3", "/proc/*/fd/3"),
        ("/proc/1234", "/proc/*"),
        ("/proc/12345678901/x", "/proc/*/x"),  # 11 digits: the kernel's bound
        ("/proc/123456789012/x", "/proc/123456789012/x"),
        ("/proc/self/status", "/proc/self/status"),
        ("/proc/thread-self/x", "/proc/thread-self/x"),
        ("/proc/12a/x", "/proc/12a/x"),
        ("/proc/*/status", "/proc/*/status"),
        ("/proc/sys/kernel/pid_max", "/proc/sys/kernel/pid_max"),
        ("/proc/123\n", "/proc/123\n"),
        ("/proc/", "/proc/"),
        ("/srv/proc/123/x", "/srv/proc/123/x"),
        ("/proc/1/task/2/x", "/proc/*/task/2/x"),  # first component only
        ("/proc/١٢/x", "/proc/١٢/x"),  # non-ASCII digits are not digits to the kernel
    ],
)
def test_normalise_path(raw: str, norm: str) -> None:
    assert normalise_path(raw) == norm


def test_proc_paths_in_baseline() -> None:
    b = Baseline("demo")
    assert b.observe(ev("open", "/proc/*/status"))  # as the kernel reports it
    assert b.add("open", "/proc/42/status") is False  # import: normalised, already there
    assert b.add("open", "/proc/42/cmdline") is True
    assert b.kernel_entries("open") == (["/proc/*/cmdline", "/proc/*/status"], [])
    assert b.contains("open", "/proc/7/status")
    assert not b.contains("open", "/proc/self/status")


# ---- unenforceable ------------------------------------------------------------------------------


def test_unenforceable_paths() -> None:
    b = Baseline("demo")
    assert b.observe(ev("open", "/x/" + "a" * 300, flags=("toolong",)))
    assert b.observe(ev("exec", "", flags=("unresolved",)))
    assert b.observe(ev("exec", "", flags=("unresolved",))) is False
    assert b.add("open", "/y/" + "b" * 260) is True  # too long without a flag (import)
    assert b.kernel_entries("open") == ([], []) and b.kernel_entries("exec") == ([], [])
    assert len(b) == 0
    assert [(u.dimension, u.reason, u.entry.hits) for u in b.unenforceable] == [
        ("exec", "unresolved", 2),
        ("open", "toolong", 1),
        ("open", "toolong", 1),
    ]
    assert not b.contains("open", "/x/" + "a" * 300)
    assert b.summary()["unenforceable"] == 3
    assert [u["reason"] for u in b.to_dict()["unenforceable"]] == [
        "unresolved",
        "toolong",
        "toolong",
    ]


def test_path_length_limits_in_bytes() -> None:
    assert path_max() == 252
    b = Baseline("demo")
    fits = "/" + "a" * 250  # 251 bytes + NUL = 252
    assert b.add("open", fits) and b.kernel_entries("open")[0] == [fits]
    assert b.add("open", "/" + "b" * 251) and len(b.unenforceable) == 1
    utf8 = "/" + "é" * 126  # 253 bytes although 127 characters
    assert b.add("open", utf8) and len(b.unenforceable) == 2
    prefix = "/" + "c" * 250 + "/"  # prefixes have no NUL: 252 bytes fit
    assert b.add("open", prefix, prefix=True)
    assert prefix in b.kernel_entries("open")[1]
    for p in b.kernel_entries("open")[0]:
        kernel.path_key(1, p, prefix=False)
    for p in b.kernel_entries("open")[1]:
        kernel.path_key(1, p, prefix=True)


# ---- contains -----------------------------------------------------------------------------------


def test_contains_prefix_vs_sibling() -> None:
    b = Baseline("demo")
    b.add("open", "/data/", prefix=True)
    b.add("open", "/srv/file")
    assert b.contains("open", "/data/x")
    assert b.contains("open", "/data/a/b/c")
    assert not b.contains("open", "/data-other")
    assert not b.contains("open", "/data-other/x")
    assert not b.contains("open", "/data")  # the directory itself is not beneath "/data/"
    assert not b.contains("open", "/dat")
    assert b.contains("open", "/srv/file")
    assert not b.contains("open", "/srv/file2")
    assert not b.contains("open", "/srv/file/x")
    assert not b.contains("open", "/srv/fil")
    assert not b.contains("exec", "/data/x")  # per dimension
    with pytest.raises(ValueError, match="dimension"):
        b.contains("mmap", "/x")


def test_prefix_add_subsumes_and_add_sources() -> None:
    b = Baseline("demo")
    b.observe(ev("exec", "/opt/x/bin/a", t=T0))
    b.observe(ev("exec", "/opt/x/bin/b", t=T0 + 1))
    b.observe(ev("exec", "/opt/x/binary", t=T0 + 2))
    assert b.add("exec", "/opt/x/bin", source="imported", when=T0 + 3, prefix=True)
    assert b.kernel_entries("exec") == (["/opt/x/binary"], ["/opt/x/bin/"])
    e = b.lookup("exec", "/opt/x/bin/a")
    assert e is not None and (e.hits, e.source, e.first_seen) == (3, "imported", T0)
    assert b.add("exec", "/opt/x/bin/sub/", prefix=True) is False  # already covered
    assert b.add("exec", "/opt/x/bin/c") is False
    assert b.add("exec", "/opt/y", when=T0 + 9) is True
    y = b.lookup("exec", "/opt/y")
    assert y is not None and y.source == "accepted" and b.last_novel == T0 + 9
    with pytest.raises(ValueError, match="source"):
        b.add("exec", "/x", source="guessed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimension"):
        b.add("fork", "/x")


# ---- networks -----------------------------------------------------------------------------------


def test_net_aggregation_v4() -> None:
    b = Baseline("demo")
    assert b.rules.net_collapse_threshold == 16
    for i in range(16):
        assert b.observe(conn(f"10.1.2.{i}", 443, t=T0 + i))
    b.observe(conn("10.1.3.1", 443))  # another /24
    b.observe(conn("10.1.2.99", 80))  # another port
    assert len(b.kernel_entries("connect")) == 18
    assert not b.contains("connect", ("10.1.2.200", 443))
    assert b.observe(conn("10.1.2.16", 443, t=T0 + 100))
    assert b.kernel_entries("connect") == [
        ("10.1.2.0/24", 443),
        ("10.1.2.99/32", 80),
        ("10.1.3.1/32", 443),
    ]
    e = b.lookup("connect", ("10.1.2.250", 443))
    assert e is not None and (e.hits, e.first_seen, e.last_seen) == (17, T0, T0 + 100)
    assert b.observe(conn("10.1.2.250", 443)) is False and e.hits == 18
    assert not b.contains("connect", ("10.1.2.250", 80))
    assert not b.contains("connect", ("10.1.4.1", 443))
    assert b.to_dict()["connect"][0]["object"] == "10.1.2.0/24:443"


def test_net_aggregation_v6_and_loopback() -> None:
    b = Baseline("demo")
    for i in range(17):
        b.observe(conn(f"2001:db8:0:1::{i + 1:x}", 8443))
        b.observe(conn(f"127.0.0.{i + 1}", 5432))  # loopback is not special
    for i in range(16):
        b.observe(conn(f"2001:db8:0:2::{i + 1:x}", 8443))
    entries = b.kernel_entries("connect")
    assert ("127.0.0.0/24", 5432) in entries
    assert ("2001:db8:0:1::/64", 8443) in entries
    assert sum(1 for n, _ in entries if n.startswith("2001:db8:0:2::")) == 16
    assert b.contains("connect", "[2001:db8:0:1:ffff::1]:8443")
    assert not b.contains("connect", "[2001:db8:0:3::1]:8443")
    objs = [c["object"] for c in b.to_dict()["connect"]]
    assert "[2001:db8:0:1::/64]:8443" in objs and "[2001:db8:0:2::1]:8443" in objs
    for net, port in entries:
        kernel.net_key(1, net, port)


def test_port_zero_and_v4_mapped() -> None:
    b = Baseline("demo")
    assert b.observe(conn("10.0.0.1", 0))  # observed port 0: unenforceable, not "any port"
    assert b.kernel_entries("connect") == []
    assert b.unenforceable[0].reason.startswith("port 0")
    assert not b.contains("connect", ("10.0.0.1", 22))

    b.observe(conn("10.0.0.1", 443, t=T0))
    b.observe(conn("10.0.0.1", 80, t=T0 + 1))
    assert b.add("connect", ("10.0.0.1", 0), source="accepted", when=T0 + 2)  # any port
    assert b.kernel_entries("connect") == [("10.0.0.1/32", 0)]
    e = b.lookup("connect", ("10.0.0.1", 22))
    assert e is not None and e.hits == 3
    assert b.to_dict()["connect"][0]["object"] == "10.0.0.1:*"

    assert b.add("connect", "[::ffff:192.0.2.7]:53")
    assert ("192.0.2.7/32", 53) in b.kernel_entries("connect")
    assert b.contains("connect", ("192.0.2.7", 53))
    assert b.contains("connect", ("::ffff:192.0.2.7", 53))
    assert normalise_network("::ffff:10.0.0.0/104") == ipaddress.ip_network("10.0.0.0/8")


def test_net_cidr_add_subsumes_and_longest_prefix() -> None:
    b = Baseline("demo")
    b.observe(conn("192.168.5.5", 443))
    b.observe(conn("192.168.6.6", 443))
    b.observe(conn("192.168.6.6", 80))
    assert b.add("connect", "192.168.0.0/16:443")
    assert b.kernel_entries("connect") == [("192.168.0.0/16", 443), ("192.168.6.6/32", 80)]
    assert b.add("connect", ("192.168.7.0/24", 443)) is False
    assert b.contains("connect", "192.168.200.1:443")
    assert not b.observe(conn("192.168.1.1", 443))


def test_parse_and_format_net() -> None:
    assert parse_net("1.2.3.4:443") == (ipaddress.ip_network("1.2.3.4/32"), 443)
    assert parse_net("[::1]:*") == (ipaddress.ip_network("::1/128"), 0)
    assert parse_net("10.0.0.0/24:80")[0].prefixlen == 24
    for bad in ("1.2.3.4", "nope:80", "1.2.3.4:70000", ":80"):
        with pytest.raises(ValueError):
            parse_net(bad)
    net, port = parse_net("[2001:db8::/64]:443")
    assert format_net(net, port) == "[2001:db8::/64]:443"
    assert format_net(*parse_net(("1.2.3.4", 0))) == "1.2.3.4:*"


def test_event_object_round_trips_through_add() -> None:
    b = Baseline("demo")
    for e in (conn("203.0.113.9", 443), conn("2001:db8::5", 443)):
        assert b.add("connect", e.object)
        assert b.contains("connect", e.object)
        assert b.observe(e) is False


def test_unparsable_address_is_unenforceable() -> None:
    b = Baseline("demo")
    assert b.observe(ev("connect", address=None, port=443))
    assert b.unenforceable[0].reason == "unparsable address"
    assert not b.contains("connect", "garbage")


# ---- output -------------------------------------------------------------------------------------


def test_to_dict_sorted_and_json_ready() -> None:
    b = Baseline("demo", learning_since=T0)
    for p in ("/z", "/a", "/m", "/bad\udcff"):
        b.observe(ev("exec", p))
    for a in ("10.0.0.9", "10.0.0.10", "::1", "9.9.9.9"):
        b.observe(conn(a, 443))
    d = b.to_dict()
    assert [x["object"] for x in d["exec"]] == ["/a", "/bad\udcff", "/m", "/z"]
    assert [x["object"] for x in d["connect"]] == [
        "9.9.9.9:443",
        "10.0.0.9:443",
        "10.0.0.10:443",
        "[::1]:443",
    ]
    assert set(d) >= {"agent", "version", "learning_since", "last_novel", "partial", "exec"}
    json.dumps(d)
    b2 = Baseline("demo", learning_since=T0)
    for p in ("/bad\udcff", "/m", "/a", "/z"):
        b2.observe(ev("exec", p))
    for a in ("9.9.9.9", "::1", "10.0.0.10", "10.0.0.9"):
        b2.observe(conn(a, 443))
    assert json.dumps(b2.to_dict()) == json.dumps(d)  # order of learning does not show


# ---- pure rules vs incremental ------------------------------------------------------------------


def test_parent_dirs() -> None:
    assert list(parent_dirs("/a/b/c")) == [("/", "a"), ("/a/", "b"), ("/a/b/", "c")]
    assert list(parent_dirs("/a/b/")) == [("/", "a"), ("/a/", "b")]
    assert list(parent_dirs("/")) == []
    assert list(parent_dirs("x/y")) == [("x/", "y")]


def test_aggregate_networks_batch() -> None:
    entries = [(ipaddress.ip_network(f"10.0.0.{i}/32"), 443) for i in range(17)]
    entries.append((ipaddress.ip_network("10.0.0.1/32"), 80))
    assert aggregate_networks(entries, 16) == {
        (ipaddress.ip_network("10.0.0.0/24"), 443),
        (ipaddress.ip_network("10.0.0.1/32"), 80),
    }


_component = st.sampled_from(["a", "b", "c", "d", "e", "f"])
_paths = st.lists(_component, min_size=1, max_size=4).map(lambda cs: "/" + "/".join(cs))


@settings(max_examples=150, deadline=None)
@given(st.lists(_paths, max_size=80), st.integers(1, 4), st.integers(1, 3))
def test_incremental_collapse_equals_batch(paths: list[str], threshold: int, depth: int) -> None:
    rules = BaselineRules(
        collapse_threshold=threshold, collapse_min_depth=depth, sensitive_prefixes=("/a/b/",)
    )
    b = Baseline("demo", rules=rules)
    for p in paths:
        b.observe(ev("open", p))
    exact, prefixes = b.kernel_entries("open")
    assert (set(exact), set(prefixes)) == collapse_paths(paths, rules)
    assert all(b.contains("open", p) for p in paths)
    # the hits of all entries add up to the events
    total = sum(e.hits for _, _, e in b.path_entries("open"))
    assert total == len(paths)


_v4 = st.builds(lambda c, d: f"10.0.{c}.{d}", st.integers(0, 2), st.integers(0, 40))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_v4, st.sampled_from([80, 443])), max_size=120), st.integers(1, 8))
def test_incremental_aggregation_equals_batch(conns: list[tuple[str, int]], threshold: int) -> None:
    b = Baseline("demo", rules=BaselineRules(net_collapse_threshold=threshold))
    for a, p in conns:
        b.observe(conn(a, p))
    got = {(n, p) for n, p, _ in b.net_entries()}
    assert got == aggregate_networks([(ipaddress.ip_network(a), p) for a, p in conns], threshold)
    assert all(b.contains("connect", c) for c in conns)


def test_new_with_config_fields() -> None:
    b = Baseline.new("demo", collapse_threshold=2, collapse_min_depth=1, net_collapse_threshold=3)
    assert b.rules == BaselineRules(2, 1, BaselineRules().sensitive_prefixes, 3)
    for i in range(3):
        b.observe(ev("open", f"/data/f{i}"))
    assert b.kernel_entries("open") == ([], ["/data/"])
    with pytest.raises(ValueError):
        Baseline.new("demo", collapse_threshold=0)


def test_kernel_rule_is_the_covering_entry_in_kernel_form() -> None:
    """What corrald writes into the kernel right after learning an object."""
    b = Baseline("demo")
    b.observe(ev("open", "/app/lib/pkg/m0.py"))
    assert b.kernel_rule("open", "/app/lib/pkg/m0.py") == ("/app/lib/pkg/m0.py", False)
    assert b.kernel_rule("open", "/app/lib/pkg/other.py") is None
    for i in range(1, 21):
        b.observe(ev("open", f"/app/lib/pkg/m{i}.py"))
    assert b.kernel_rule("open", "/app/lib/pkg/m20.py") == ("/app/lib/pkg/", True)
    assert b.kernel_rule("open", f"/proc/{123}/stat") is None
    b.observe(ev("open", "/proc/77/stat"))
    assert b.kernel_rule("open", "/proc/99/stat") == ("/proc/*/stat", False)
    for i in range(17):
        b.observe(conn(f"10.1.2.{i}", 443))
    assert b.kernel_rule("connect", ("10.1.2.9", 443)) == ("10.1.2.0/24", 443)
    assert b.kernel_rule("connect", ("10.1.2.9", 80)) is None
    assert b.kernel_rule("exec", "/bin/true") is None
