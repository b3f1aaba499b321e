"""Baseline documents (document.py): canonical export, validation with pointed errors, import
plans, and the export -> import -> export byte-for-byte round trip."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.policy.baseline import Baseline
from corral.policy.document import (
    PROBLEMS_MAX,
    DocumentError,
    dump_json,
    dump_yaml,
    export,
    parse,
    plan,
)
from corral.policy.rules import BaselineRules, Entry
from tests.daemon.test_baseline import T0, conn, ev

MODES = {"exec": "enforce", "open": "alert", "connect": "enforce"}
RULES = BaselineRules()


def learned() -> Baseline:
    """A learned baseline with every kind of entry the export has to write."""
    b = Baseline("team/demo", learning_since=T0)
    b.observe(ev("exec", "/usr/bin/python3", t=T0))
    b.observe(ev("exec", "/bin/sh", t=T0 + 1))
    b.observe(ev("open", "/etc/hosts", t=T0))
    b.observe(ev("open", "data/rel.txt", t=T0, flags=("relative",)))
    b.observe(ev("open", "/srv/\udcff\udcfe/raw", t=T0))  # not UTF-8
    b.observe(ev("open", "/srv/odd: name #1", t=T0))
    b.observe(ev("open", "/srv/tab\there", t=T0))
    b.observe(ev("open", "/proc/4242/status", t=T0))
    for i in range(25):  # collapses into /srv/app/lib/
        b.observe(ev("open", f"/srv/app/lib/m{i}.py", t=T0 + i))
    b.observe(conn("127.0.0.1", 8080, t=T0))
    b.observe(conn("::1", 8443, t=T0))
    b.observe(conn("2001:50:1:2:3:4:5:6", 443, t=T0))  # YAML 1.1 would read it as a number
    b.add("connect", "10.0.0.0/24:443", source="accepted", when=T0)
    b.add("connect", "10.0.0.9:*", source="accepted", when=T0)
    b.add("exec", "/usr/bin/git", source="accepted", when=T0)
    b.annotations = {"reviewed-by": "alice", "corral.io/ticket": "SEC-1"}
    return b


def export_yaml(b: Baseline, modes: dict[str, str] | None = MODES) -> str:
    return dump_yaml(export(b, modes=modes, auto_promote=False if modes else None))


def imported(text: str, current: Baseline | None = None, strategy: str = "replace") -> Baseline:
    doc = parse(text.encode())
    return plan(doc, current, agent=doc.name, strategy=strategy, rules=RULES, now=T0 + 99).baseline  # type: ignore[arg-type]


# ---- export layout --------------------------------------------------------------------------


def test_export_is_canonical_and_reviewable() -> None:
    text = export_yaml(learned())
    lines = text.splitlines()
    assert lines[:6] == [
        "apiVersion: corral.io/v3",
        "kind: Baseline",
        "metadata:",
        "  name: team/demo",
        "  annotations: {corral.io/ticket: SEC-1, reviewed-by: alice}",
        "spec:",
    ]
    assert "  modes: {exec: enforce, open: alert, connect: enforce}" in lines
    assert "  - {path: /usr/bin/git, source: accepted}" in lines
    assert "  - {prefix: /srv/app/lib/, source: learned}" in lines
    assert "  - {path: data/rel.txt, relative: true, source: learned}" in lines
    assert "  - {path: /proc/*/status, source: learned}" in lines
    assert "  - {network: 10.0.0.0/24, port: 443, source: accepted}" in lines
    assert "  - {address: 10.0.0.9, port: any, source: accepted}" in lines
    assert "  - {address: '2001:50:1:2:3:4:5:6', port: 443, source: learned}" in lines
    assert any("encoding: base64" in ln for ln in lines)
    # one entry per line, nothing that changes with time
    entries = [ln for ln in lines if ln.startswith("  - ")]
    assert len(entries) == len(learned())
    for word in ("hits", "first_seen", "last_seen", "seen", str(int(T0))):
        assert word not in text
    # sorted: exec before open before connect, paths bytewise, addresses numerically
    execs = [ln for ln in lines if ln.startswith("  - {path: /") and "bin" in ln]
    assert execs == sorted(execs)
    v4 = lines.index("  - {network: 10.0.0.0/24, port: 443, source: accepted}")
    assert v4 < lines.index("  - {address: 127.0.0.1, port: 8080, source: learned}")


def test_export_is_deterministic_whatever_the_learning_order() -> None:
    a, b = Baseline("x", learning_since=T0), Baseline("x", learning_since=T0 + 5)
    objs = [f"/opt/tool{i}" for i in range(10)]
    for i, o in enumerate(objs):
        a.observe(ev("exec", o, t=T0 + i))
    for i, o in enumerate(reversed(objs)):
        b.observe(ev("exec", o, t=T0 + 100 + i))
    assert export_yaml(a) == export_yaml(b)


def test_unenforceable_objects_are_not_exported() -> None:
    b = Baseline("x")
    b.observe(ev("open", "/very/" + "long" * 80, flags=("toolong",)))
    assert export(b)["spec"]["open"] == []


# ---- round trips ----------------------------------------------------------------------------


def test_export_import_export_is_byte_for_byte() -> None:
    first = export_yaml(learned())
    fresh = imported(first)  # into an agent that has nothing yet
    assert export_yaml(fresh) == first
    again = imported(first, learned())  # into the agent it came from
    assert export_yaml(again) == first
    as_json = dump_json(export(learned(), modes=MODES, auto_promote=False))
    doc = parse(as_json.encode(), "json")
    b = plan(doc, None, agent=doc.name, strategy="merge", rules=RULES, now=T0).baseline
    assert dump_json(export(b, modes=doc.modes, auto_promote=doc.auto_promote)) == as_json
    assert json.loads(as_json) == yaml.safe_load(first)  # the same document in both syntaxes


def test_the_operators_promotion_gates_go_with_the_document() -> None:
    """spec.promotion: the gates set for the agent (corralctl promotion), canonical (the
    config's order, durations as written), only when there are some."""
    gates = {"quiet_period": 1800.0, "min_runs": 5, "alert_period": 43200.0}
    text = dump_yaml(export(learned(), modes=MODES, auto_promote=True, promotion=gates))
    spec = "  autoPromote: true\n  promotion: {quietPeriod: 30m, minRuns: 5, alertPeriod: 12h}\n"
    assert spec in text
    doc = parse(text.encode())
    assert doc.promotion == gates
    b = plan(doc, None, agent=doc.name, strategy="replace", rules=RULES, now=T0).baseline
    again = export(b, modes=doc.modes, auto_promote=doc.auto_promote, promotion=doc.promotion)
    assert dump_yaml(again) == text
    assert "promotion" not in export_yaml(learned())  # none set: readable by an older corrald
    assert parse(export_yaml(learned()).encode()).promotion is None
    empty = export_yaml(learned()).replace("  autoPromote: false\n", "  promotion: {}\n")
    assert parse(empty.encode()).promotion == {}  # an import then forgets the gates


def test_the_allowed_tamper_kinds_go_with_the_document() -> None:
    """spec.tamperAllow: the tamper-guard kinds the operator allowed (corralctl tamper),
    sorted, on one line, only when there are some; [] allows none, absent keeps the agent's."""
    kinds = {"raw-socket", "mount"}
    text = dump_yaml(export(learned(), modes=MODES, auto_promote=True, tamper_allow=kinds))
    assert "  autoPromote: true\n  tamperAllow: [mount, raw-socket]\n  exec:\n" in text
    doc = parse(text.encode())
    assert doc.tamper_allow == kinds
    b = plan(doc, None, agent=doc.name, strategy="replace", rules=RULES, now=T0).baseline
    again = export(b, modes=doc.modes, auto_promote=doc.auto_promote, tamper_allow=doc.tamper_allow)
    assert dump_yaml(again) == text
    assert json.loads(dump_json(again))["spec"]["tamperAllow"] == ["mount", "raw-socket"]
    assert "tamperAllow" not in export_yaml(learned())  # none: readable by an older corrald
    assert parse(export_yaml(learned()).encode()).tamper_allow is None
    empty = export_yaml(learned()).replace("  autoPromote: false\n", "  tamperAllow: []\n")
    assert parse(empty.encode()).tamper_allow == set()  # an import then takes them back


def test_imported_entries_are_marked_and_keep_the_documents_source() -> None:
    b = imported(export_yaml(learned()))
    e = b.entry("exec", "/usr/bin/git")
    assert e is not None and (e.source, e.origin, e.hits) == ("imported", "accepted", 0)
    assert (e.first_seen, e.last_seen) == (T0 + 99, T0 + 99)
    e = b.entry("exec", "/usr/bin/python3")
    assert e is not None and (e.source, e.origin) == ("imported", "learned")
    hand = imported(DOC)  # entries without a source
    e = hand.entry("exec", "/usr/bin/python3")
    assert e is not None and (e.source, e.origin) == ("imported", None)
    assert "{path: /usr/bin/python3, source: imported}" in export_yaml(hand)
    shown = {e["object"]: e for e in b.to_dict()["exec"]}  # what `corralctl baseline` shows
    assert shown["/usr/bin/git"]["source"] == "imported"
    assert shown["/usr/bin/git"]["origin"] == "accepted"


paths = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=60
)
raw_paths = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(paths, max_size=8),
    raw=st.lists(raw_paths, max_size=4),
    nets=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32), st.integers(0, 65535)),
        max_size=8,
    ),
)
def test_round_trip_of_any_paths_and_networks(
    names: list[str], raw: list[bytes], nets: list[tuple[int, int, int]]
) -> None:
    b = Baseline("prop")
    for n in names:
        b.insert("open", "/" + n, Entry(T0, T0, 1, "learned"))
        b.insert("exec", n.lstrip("/") or "x", Entry(T0, T0, 1, "accepted"))
    for r in raw:
        b.insert("open", "/" + r.decode("utf-8", "surrogateescape"), Entry(T0, T0))
    for addr, plen, port in nets:
        net = ipaddress.IPv4Network((addr, plen), strict=False)
        b.insert("connect", (net, port), Entry(T0, T0))
    first = export_yaml(b)
    assert export_yaml(imported(first)) == first


# ---- validation -----------------------------------------------------------------------------

DOC = textwrap.dedent("""\
    apiVersion: corral.io/v1
    kind: Baseline
    metadata:
      name: demo
    spec:
      exec:
      - {path: /usr/bin/python3}
      open:
      - {prefix: /usr/lib/}
      connect:
      - {address: 127.0.0.1, port: 8080}
""")


def with_spec(dim: str, *items: str) -> str:
    body = "\n".join(f"  - {i}" for i in items)
    head = "apiVersion: corral.io/v1\nkind: Baseline\nmetadata: {name: demo}\nspec:\n"
    return f"{head}  {dim}:\n{body}\n"


BAD: list[tuple[str, str]] = [
    (
        with_spec("exec", "{path: /a}", "{path: /b}", "{path: /c}", "{path: usr/bin/x}"),
        "spec.exec[3]: path must be absolute",
    ),
    (
        with_spec("open", "{path: /x, relative: true}"),
        "spec.open[0]: path is absolute but relative",
    ),
    (with_spec("open", "{prefix: /usr/lib}"), "spec.open[0]: prefix must end with '/'"),
    (
        with_spec("open", "{path: /x, prefix: /y/}"),
        "spec.open[0]: give exactly one of path or prefix",
    ),
    (with_spec("open", "{file: /x}"), "spec.open[0].file: unknown field"),
    (with_spec("open", "/etc/hosts"), "spec.open[0]: must be a mapping like {path: ...}, not str"),
    (with_spec("open", "{path: ''}"), "spec.open[0]: path must be a non-empty string"),
    (with_spec("open", '{path: "/a\\0b"}'), "spec.open[0]: path contains a NUL byte"),
    (
        with_spec("open", "{path: '/" + "a" * 300 + "'}"),
        "path is 301 bytes; the kernel holds at most 251",
    ),
    (
        with_spec("open", "{path: '!!!', encoding: base64}"),
        "spec.open[0]: path is not valid base64",
    ),
    (with_spec("open", "{path: /x, encoding: hex}"), "spec.open[0]: encoding must be base64"),
    (with_spec("open", "{path: /x, source: guessed}"), "source must be one of learned, accepted"),
    (
        with_spec("open", "{path: /x}", "{path: /y}", "{path: /x}"),
        "spec.open[2]: duplicate of spec.open[0]",
    ),
    (
        with_spec("open", "{path: /proc/1/x}", "{path: /proc/*/x}"),
        "spec.open[1]: duplicate of spec.open[0]",
    ),
    (
        with_spec("connect", "{address: 10.0.0.300, port: 1}"),
        "spec.connect[0]: '10.0.0.300' is not an IP address",
    ),
    (
        with_spec("connect", "{address: 10.0.0.0/24, port: 1}"),
        "spec.connect[0]: address '10.0.0.0/24' is a network",
    ),
    (
        with_spec("connect", "{network: 10.0.0.1/24, port: 1}"),
        "has host bits set (did you mean 10.0.0.0/24?)",
    ),
    (
        with_spec("connect", "{address: 1.2.3.4, port: 0}"),
        "port 0 is out of range 1-65535 (write any for every port)",
    ),
    (
        with_spec("connect", "{address: 1.2.3.4, port: 70000}"),
        "spec.connect[0]: port 70000 is out of range",
    ),
    (
        with_spec("connect", "{address: 1.2.3.4, port: '443'}"),
        "port must be 1-65535 or any, not '443'",
    ),
    (with_spec("connect", "{address: 1.2.3.4}"), "port must be 1-65535 or any, not None"),
    (
        with_spec("connect", "{address: 1.2.3.4, port: true}"),
        "port must be 1-65535 or any, not True",
    ),
    (
        with_spec("connect", "{address: 2001:50:1:2:3:4:5:6, port: 1}"),
        "must be a string (quote IPv6 addresses)",
    ),
    (
        with_spec("exec", "{path: /a}").replace("corral.io/v1", "corral.io/v4"),
        "apiVersion: 'corral.io/v4' is not supported (this corrald reads corral.io/v1, "
        "corral.io/v2, corral.io/v3)",
    ),
    (
        with_spec("exec", "{path: /a}").replace("kind: Baseline", "kind: Policy"),
        "kind: must be Baseline",
    ),
    (
        with_spec("exec", "{path: /a}").replace("name: demo", "name: ../etc"),
        "metadata.name: invalid agent name",
    ),
    (with_spec("exec", "{path: /a}").replace("{name: demo}", "{}"), "metadata.name: required"),
    (
        with_spec("exec", "{path: /a}").replace("exec:", "exe:"),
        "spec.exe: unknown field (expected: modes, autoPromote, promotion, tamperAllow, exec, "
        "open, connect)",
    ),
    (with_spec("exec", "{path: /a}") + "status: {}\n", "status: unknown field"),
    (
        with_spec("exec", "{path: /a}") + "  modes: {exec: strict}\n",
        "spec.modes.exec: 'strict' is not a mode",
    ),
    (
        with_spec("exec", "{path: /a}") + "  modes: {read: alert}\n",
        "spec.modes.read: unknown dimension",
    ),
    (
        with_spec("exec", "{path: /a}") + "  autoPromote: yes please\n",
        "spec.autoPromote: must be true or false",
    ),
    (
        with_spec("exec", "{path: /a}") + "  promotion: {minRuns: 0, quiet: 30m}\n",
        "spec.promotion.minRuns: 0 is not a whole number from 1 to 100000",
    ),
    (
        with_spec("exec", "{path: /a}") + "  promotion: {quiet: 30m}\n",
        "spec.promotion.quiet: unknown gate (expected: minLearning, quietPeriod, minRuns",
    ),
    (
        with_spec("exec", "{path: /a}") + "  promotion: {quietPeriod: 30 minutes}\n",
        "spec.promotion.quietPeriod: '30 minutes' is not a duration from 0s to 365d",
    ),
    (
        with_spec("exec", "{path: /a}") + "  promotion: [minRuns]\n",
        "spec.promotion: must be a mapping",
    ),
    (
        with_spec("exec", "{path: /a}") + "  tamperAllow: [mount, mnt]\n",
        "spec.tamperAllow[1]: 'mnt' is not a tamper kind (expected: bpf, mount, chroot, ptrace, "
        "raw-socket, cgroup, bpffs, signal, prctl, dns-server)",
    ),
    (
        with_spec("exec", "{path: /a}") + "  tamperAllow: mount\n",
        "spec.tamperAllow: must be a list of tamper kinds like [mount, raw-socket]",
    ),
    (
        with_spec("exec", "{path: /a}").replace(
            "{name: demo}", "{name: demo, annotations: {a: 1}}"
        ),
        "values must be strings (quote 1)",
    ),
    (
        with_spec("exec", "{path: /a}").replace(
            "{name: demo}", "{name: demo, annotations: {'a b': x}}"
        ),
        "keys are 1-253 letters",
    ),
    ("apiVersion: corral.io/v1\nkind: Baseline\nmetadata: {name: demo}\n", "spec: required"),
    ("- just\n- a list\n", "document: must be a mapping"),
    ("apiVersion: [unclosed\n", "line 2, column 1: not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_errors_point_at_the_offending_entry(text: str, message: str) -> None:
    with pytest.raises(DocumentError) as info:
        parse(text.encode())
    assert message in str(info.value)
    assert str(info.value).startswith("invalid baseline document: ")


def test_every_problem_is_reported_and_the_list_is_bounded() -> None:
    text = with_spec("exec", "{path: a}", "{path: /b}", "{path: c}")
    with pytest.raises(DocumentError) as info:
        parse(text.encode())
    assert info.value.problems == [
        "spec.exec[0]: path must be absolute (a relative path, as the fallback open backend "
        "reports it, needs relative: true)",
        "spec.exec[2]: path must be absolute (a relative path, as the fallback open backend "
        "reports it, needs relative: true)",
    ]
    assert "2 problems:\n  spec.exec[0]" in str(info.value)
    many = with_spec("exec", *[f"{{path: rel{i}}}" for i in range(PROBLEMS_MAX + 7)])
    with pytest.raises(DocumentError) as info:
        parse(many.encode())
    assert len(info.value.problems) == PROBLEMS_MAX + 1
    assert info.value.problems[-1] == "... and 7 more"


def test_bytes_that_are_not_documents() -> None:
    with pytest.raises(DocumentError, match="not UTF-8 text"):
        parse(b"\xff\xfe")
    with pytest.raises(DocumentError, match="not valid JSON"):
        parse(b"{apiVersion: x}", "json")


@pytest.mark.parametrize(
    ("raw", "fmt"),
    [
        (b"apiVersion: 2024-13-45\n", "yaml"),  # a timestamp with no such month
        (b"kind: !!int x\n", "yaml"),
        (b"kind: " + b"1" * 5000 + b"\n", "yaml"),  # beyond int's digit limit
        (b"[" * 5000 + b"]" * 5000, "json"),  # deeper than the recursion limit
    ],
    ids=["bad-date", "bad-int-tag", "huge-int", "deep-json"],
)
def test_scalars_and_nesting_the_parser_cannot_hold_are_invalid_documents(
    raw: bytes, fmt: Any
) -> None:
    """These raised ValueError/RecursionError (a 500 in the API) instead of a DocumentError."""
    with pytest.raises(DocumentError, match="not valid"):
        parse(raw, fmt)


def test_lone_surrogates_are_not_text() -> None:
    """JSON and YAML can spell a lone UTF-16 surrogate ("\\udc80"): it cannot be stored or
    exported as UTF-8, so it is refused by name (base64 is the way to write such paths)."""
    doc = {"apiVersion": "corral.io/v1", "kind": "Baseline", "spec": {},
           "metadata": {"name": "demo", "annotations": {"note": "a\udc80"}}}  # fmt: skip
    doc["spec"] = {"open": [{"path": "/tmp/\ud800x"}, {"path": "L3gvgA==", "encoding": "base64"}]}
    with pytest.raises(DocumentError) as info:
        parse(json.dumps(doc).encode(), "json")
    assert [p.split(":")[0] for p in info.value.problems] == [
        "metadata.annotations['note']",
        "spec.open[0]",
    ]
    assert "lone surrogate" in str(info.value) and "encoding: base64" in str(info.value)
    with pytest.raises(DocumentError):  # libyaml refuses the escape; PyYAML's parser does not
        parse(with_spec("exec", '{path: "/a\\udc80"}').encode())


def test_annotation_keys_may_not_end_in_a_newline() -> None:
    meta = '{name: demo, annotations: {"a\\n": x}}'
    text = with_spec("exec", "{path: /a}").replace("{name: demo}", meta)
    with pytest.raises(DocumentError, match="keys are 1-253 letters"):
        parse(text.encode())


def test_a_minimal_hand_written_document() -> None:
    doc = parse(DOC.encode())
    assert doc.name == "demo" and doc.modes == {} and doc.auto_promote is None
    assert [(e.dimension, e.key, e.prefix, e.source) for e in doc.entries[:2]] == [
        ("exec", "/usr/bin/python3", False, None),
        ("open", "/usr/lib/", True, None),
    ]
    assert doc.digest.startswith("sha256:") and len(doc.digest) == 23
    assert parse(b"apiVersion: corral.io/v1\nkind: Baseline\nmetadata: {name: x}\nspec: {}\n")


def test_v4_mapped_addresses_and_any_port() -> None:
    doc = parse(with_spec("connect", "{address: '::ffff:10.1.2.3', port: any}").encode())
    (e,) = doc.entries
    assert e.key == (ipaddress.IPv4Network("10.1.2.3/32"), 0)


# ---- import plans ---------------------------------------------------------------------------


def base() -> Baseline:
    b = Baseline("demo", learning_since=T0)
    b.observe(ev("exec", "/usr/bin/python3", t=T0))
    b.observe(ev("exec", "/usr/bin/old", t=T0))
    b.observe(ev("open", "/etc/hosts", t=T0))
    return b


def run_plan(current: Baseline | None, strategy: str, text: str = DOC) -> Any:
    return plan(parse(text.encode()), current, agent="demo", strategy=strategy,  # type: ignore[arg-type]
                rules=RULES, now=T0 + 50)  # fmt: skip


def test_merge_is_a_union_that_keeps_existing_provenance() -> None:
    cur = base()
    p = run_plan(cur, "merge")
    assert (p.added, p.removed, p.kept) == (2, 0, 1)
    b = p.baseline
    assert b.contains("exec", "/usr/bin/old") and b.contains("open", "/etc/hosts")
    e = b.entry("exec", "/usr/bin/python3")
    assert e is not None and (e.source, e.first_seen) == ("learned", T0)  # kept as it was
    assert cur.entry("open", "/usr/lib/", prefix=True) is None  # the current one is untouched
    assert b.imports[-1]["strategy"] == "merge" and b.imports[-1]["added"] == 2


def test_replace_is_exactly_the_document() -> None:
    cur = base()
    cur.mark_partial("events dropped")
    cur.observe(ev("open", "/x/" + "y" * 300, flags=("toolong",)))
    p = run_plan(cur, "replace")
    assert (p.added, p.removed, p.kept) == (2, 2, 1)
    b = p.baseline
    assert not b.contains("exec", "/usr/bin/old") and not b.contains("open", "/etc/hosts")
    assert b.partial is False and b.unenforceable == []
    assert b.learning_since == T0 and b.revision == cur.revision + 1
    again = run_plan(b, "replace")
    assert (again.added, again.removed, again.kept, again.changed) == (0, 0, 3, False)


def test_import_never_collapses_what_was_reviewed() -> None:
    files = [f"{{path: /srv/data/f{i}}}" for i in range(40)]
    p = run_plan(None, "replace", with_spec("open", *files))
    assert len(p.baseline) == 40 and p.baseline.kernel_entries("open")[1] == []


def test_annotations_merge_or_replace() -> None:
    cur = base()
    cur.annotations = {"a": "1", "b": "2"}
    text = with_spec("exec", "{path: /a}").replace(
        "{name: demo}", "{name: demo, annotations: {b: 'three'}}"
    )
    assert run_plan(cur, "merge", text).baseline.annotations == {"a": "1", "b": "three"}
    assert run_plan(cur, "replace", text).baseline.annotations == {"b": "three"}
