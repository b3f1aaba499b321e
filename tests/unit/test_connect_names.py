"""Connect entries by name (issue 17) above the kernel: the baseline's host entries and how
they cover, store (schema 4) and rest; review selectors and `accept --connect NAME:PORT`;
documents corral.io/v3 (v2 still read); the name book the decoder keeps from the agents'
own DNS answers. The kernel side is tests/kernel/test_dns.py, end to end
tests/daemon/test_names_e2e.py."""

from __future__ import annotations

import time

import dns.message
import dns.rrset
import pytest

from corral.contract import BadRequest
from corral.kernel.events import Event
from corral.node.baselines import _check_names, checked_name
from corral.pipeline.names import NameBook
from corral.policy import document, review
from corral.policy.agents import Deviation
from corral.policy.baseline import Baseline
from corral.policy.blob import decode_file, encode_file
from corral.policy.rules import BaselineRules, check_host, is_host_object, parse_host


def test_host_objects_are_told_from_addresses() -> None:
    assert is_host_object("api.openai.com:443")
    assert is_host_object(("api.openai.com", 443))
    for addr in ("1.2.3.4:443", "[::1]:443", "10.0.0.0/24:443", ("1.2.3.4", 443)):
        assert not is_host_object(addr)
    assert parse_host("API.OpenAI.com.:443") == ("api.openai.com", 443)
    assert parse_host("x.example.com:*") == ("x.example.com", 0)


@pytest.mark.parametrize(
    "bad", ["", "*.com", "a.*.example.com", "-a.example.com", "a..b", "a b.com", "x" * 254]
)
def test_names_the_kernel_cannot_hold_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="kernel can hold"):
        check_host(bad)


def test_learned_names_cover_their_ports_and_wildcards_one_label() -> None:
    b = Baseline("a")
    assert b.observe_host("api.openai.com", 443, 1.0)
    assert not b.observe_host("api.openai.com", 443, 2.0), "a hit"
    assert b.contains("connect", "api.openai.com:443")
    assert not b.contains("connect", "api.openai.com:80")
    assert not b.contains("connect", "x.api.openai.com:443")
    assert b.add("connect", "*.s3.amazonaws.com:443")
    assert not b.add("connect", "b1.s3.amazonaws.com:443"), "covered by the wildcard"
    assert b.contains("connect", "b2.s3.amazonaws.com:443")
    assert not b.contains("connect", "a.b2.s3.amazonaws.com:443"), "one label, never two"
    assert not b.contains("connect", "s3.amazonaws.com:443")
    assert b.kernel_names() == {"*.s3.amazonaws.com": [443], "api.openai.com": [443]}
    revision = b.revision
    b.observe_host("api.openai.com", 0, 3.0)
    assert b.revision == revision, "port 0 is never learned: noted as unenforceable"
    assert [u.reason for u in b.unenforceable] == ["port 0 (would allow every port)"]


def test_a_wildcard_or_any_port_swallows_what_it_covers() -> None:
    b = Baseline("a")
    b.add("connect", "b1.s3.amazonaws.com:443", when=1.0)
    b.add("connect", "b2.s3.amazonaws.com:443", when=2.0)
    b.add("connect", "b3.s3.amazonaws.com:80", when=2.0)
    b.add("connect", "*.s3.amazonaws.com:443", when=3.0)
    names = b.kernel_names()
    assert names == {"*.s3.amazonaws.com": [443], "b3.s3.amazonaws.com": [80]}
    merged = b.entry("connect", ("*.s3.amazonaws.com", 443))
    assert merged is not None and merged.hits == 3 and merged.first_seen == 1.0
    b.add("connect", "b3.s3.amazonaws.com:*")
    assert b.kernel_names()["b3.s3.amazonaws.com"] == [0]


def test_names_are_stored_and_rest_as_schema_4() -> None:
    b = Baseline("a")
    b.observe_host("api.openai.com", 443, 1.0)
    b.add("connect", "10.0.0.1:443")
    again = decode_file(encode_file(b), BaselineRules())
    assert again.kernel_names() == {"api.openai.com": [443]}
    assert again.summary()["counts"]["connect"] == 2
    again.freeze()
    assert again.kernel_names() == {"api.openai.com": [443]}, "streamed from the blob"
    assert again.summary()["counts"]["connect"] == 2
    rows = {r["object"]: r["kind"] for r in again.to_dict()["connect"]}
    assert rows == {"10.0.0.1:443": "host", "api.openai.com:443": "name"}
    rested = decode_file(encode_file(again), BaselineRules(), rest=True)
    assert rested.frozen and rested.kernel_names() == {"api.openai.com": [443]}


def _deviation(obj: str) -> Deviation:
    return Deviation("connect", obj, 1, 1.0, 1.0, "denied", "python3")


def test_accepting_a_name_covers_its_deviations() -> None:
    sel = review.selector("connect", "api.example.com:443")
    assert (sel.kind, sel.object, sel.widens) == ("name", "api.example.com:443", "")
    assert sel.covers(_deviation("api.example.com:443"))
    assert not sel.covers(_deviation("api.example.com:80"))
    assert not sel.covers(_deviation("127.0.0.1:443"))
    wide = review.selector("connect", "*.example.com:*")
    assert wide.kind == "wildcard" and "one label under example.com" in wide.widens
    assert "every port" in wide.widens
    assert wide.covers(_deviation("api.example.com:8443"))
    assert not wide.covers(_deviation("a.api.example.com:8443"))
    exact = review.exact(_deviation("api.example.com:443"))
    assert exact is not None and exact.host == ("api.example.com", 443)


def test_the_operator_gives_names_under_the_name_rules() -> None:
    assert checked_name("connect", "API.Example.COM:443") == "api.example.com:443"
    assert checked_name("connect", "10.0.0.1:443") == "10.0.0.1:443"
    assert checked_name("open", "/x.com:1") == "/x.com:1"
    with pytest.raises(ValueError, match="other owners"):
        checked_name("connect", "*.co.uk:443")


def test_documents_v3_carry_names_and_v2_still_reads() -> None:
    b = Baseline("a")
    b.observe_host("api.openai.com", 443, 1.0)
    b.add("connect", "*.s3.amazonaws.com:*")
    text = document.dump_yaml(document.export(b))
    assert "apiVersion: corral.io/v3" in text
    assert "{host: api.openai.com, port: 443, source: learned}" in text
    doc = document.parse(text.encode())
    p = document.plan(doc, None, agent="a", strategy="replace", rules=BaselineRules(), now=5.0)
    assert p.baseline.kernel_names() == {"*.s3.amazonaws.com": [0], "api.openai.com": [443]}
    assert document.dump_yaml(document.export(p.baseline)) == text, "export->import->export"
    v2 = text.replace("corral.io/v3", "corral.io/v2")
    with pytest.raises(BadRequest, match=r"host entries need apiVersion corral\.io/v3"):
        document.parse(v2.encode())
    no_names = "apiVersion: corral.io/v2\nkind: Baseline\nmetadata: {name: a}\nspec: {}\n"
    assert document.parse(no_names.encode()).entries == []
    bad = text.replace("api.openai.com", "api..openai.com")
    with pytest.raises(BadRequest, match="kernel can hold"):
        document.parse(bad.encode())
    wide = text.replace("'*.s3.amazonaws.com'", "'*.co.uk'")
    assert "*.co.uk" in wide
    with pytest.raises(BadRequest, match="other owners"):
        _check_names(document.parse(wide.encode()))


def _answer(name: str, address: str, ttl: int = 60) -> bytes:
    r = dns.message.make_response(dns.message.make_query(name, "A"))
    r.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", address))
    return r.to_wire()


def _dns_event(msg: bytes, mode: str = "enforce", flags: tuple[str, ...] = ()) -> Event:
    return Event(
        0, 1, 7, 0, 0, 0, 0, "", "dns", "allowed", mode, "cgroup", flags, 0,
        None, "inet", "127.0.0.53", 53, 17, message=msg,
    )  # fmt: skip


def test_the_name_book_names_an_address_for_its_ttl_plus_the_grace() -> None:
    book = NameBook(grace=0.2)
    assert book.answer(_dns_event(_answer("api.example.com", "10.1.1.1", ttl=0))) is not None
    assert book.name_of(7, "10.1.1.1") == "api.example.com"
    assert book.name_of(8, "10.1.1.1") is None, "per agent"
    assert [a for a, _ in book.addresses(7, "api.example.com")] == ["10.1.1.1"]
    time.sleep(0.3)
    assert book.name_of(7, "10.1.1.1") is None, "expired"


def test_the_name_book_ignores_foreign_answers_unless_the_agent_learns() -> None:
    book = NameBook()
    assert book.answer(_dns_event(_answer("x.example.com", "10.2.2.2"), flags=("foreign",))) is None
    assert book.name_of(7, "10.2.2.2") is None and book.foreign == 1
    book.answer(_dns_event(_answer("x.example.com", "10.2.2.2"), "observe", ("foreign",)))
    assert book.name_of(7, "10.2.2.2") == "x.example.com"
    assert book.answer(_dns_event(b"\x00garbage")) is None and book.unreadable == 1


def test_the_name_book_is_bounded_per_agent() -> None:
    book = NameBook(per_agent=3)
    for i in range(5):
        book.answer(_dns_event(_answer(f"n{i}.example.com", f"10.3.3.{i}")))
    assert [book.name_of(7, f"10.3.3.{i}") for i in range(5)] == [
        None,
        None,
        "n2.example.com",
        "n3.example.com",
        "n4.example.com",
    ]


def test_encrypted_dns_is_named_in_diff() -> None:
    rows = review.rows([_deviation("1.1.1.1:443"), _deviation("10.0.0.9:853")])
    notes = {r.object: r.note for r in rows}
    assert notes["1.1.1.1:443"].startswith("DNS over HTTPS: corral cannot read these answers")
    assert notes["10.0.0.9:853"].startswith("DNS over TLS")
    assert review.encrypted_dns_note("10.0.0.9:443") == ""


def test_many_names_under_one_parent_collapse_into_its_wildcard() -> None:
    """More than the threshold of names one label under a parent on one port become
    "*.parent" (merged, the names gone); never a wildcard at or above a registrable domain."""
    from corral.names.generalise import parent_wildcard
    from corral.pipeline.learner import Learner

    assert parent_wildcard("b1.s3.amazonaws.com") == "*.s3.amazonaws.com"
    assert parent_wildcard("openai.com") is None, "*.com"
    assert parent_wildcard("foo.co.uk") is None, "*.co.uk"
    assert parent_wildcard("db.default.svc.cluster.local") is None, "no registrable domain"
    learner = Learner({}, lambda: None, changed=lambda _: None, write_failed=lambda _: None,
                      name_collapse_threshold=3)  # fmt: skip
    b = Baseline("a")
    held = []
    for i in range(1, 5):
        name = f"b{i}.s3.amazonaws.com"
        b.observe_host(name, 443, float(i))
        held.append(learner._collapse_name(b, name, 443))
    assert held[:3] == ["b1.s3.amazonaws.com", "b2.s3.amazonaws.com", "b3.s3.amazonaws.com"]
    assert held[3] == "*.s3.amazonaws.com"
    assert b.kernel_names() == {"*.s3.amazonaws.com": [443]}
    wide = b.entry("connect", ("*.s3.amazonaws.com", 443))
    assert wide is not None and wide.hits == 4 and wide.source == "learned"
    assert not b.observe_host("b9.s3.amazonaws.com", 443, 9.0), "a hit of the wildcard"
    assert not b.contains("connect", "b9.s3.amazonaws.com:80"), "its port only"
    assert not b.contains("connect", "x.b9.s3.amazonaws.com:443"), "one label only"
    b.observe_host("other.example.com", 443, 10.0)
    assert learner._collapse_name(b, "other.example.com", 443) == "other.example.com"


def test_an_answer_that_breaks_the_parser_never_stops_the_event_path() -> None:
    """Red team, 2026-12-07: an A record of another class than IN (opaque data to dnspython)
    raised AttributeError out of the decoder and ended corrald's event task for every agent.
    Now it is a stray record, and anything else the parser raises is counted, not raised."""
    r = dns.message.make_response(dns.message.make_query("api.example.com", "A"))
    r.answer.append(dns.rrset.from_text("api.example.com.", 60, 254, "A", "\\# 4 0a000001"))
    book = NameBook()
    a = book.answer(_dns_event(r.to_wire()))
    assert a is not None and a.addresses == () and a.stray == 1


def test_a_foreign_answer_names_a_learned_connect_but_never_reaches_the_kernel() -> None:
    """Red team, 2026-12-07: a forged answer while learning named the connect (as meant) and
    its address went into the kernel with the learned name, allowed for a day in enforce."""
    book = NameBook()
    book.answer(_dns_event(_answer("api.openai.com", "10.6.6.6"), "observe", ("foreign",)))
    book.answer(_dns_event(_answer("api.openai.com", "10.7.7.7"), "observe"))
    assert book.name_of(7, "10.6.6.6") == "api.openai.com"
    assert book.name_of(7, "10.6.6.6", learning=False) is None, "no forged name in enforce"
    assert book.name_of(7, "10.7.7.7", learning=False) == "api.openai.com"
    assert [a for a, _ in book.addresses(7, "api.openai.com")] == ["10.7.7.7"]


def test_one_agent_cannot_flood_the_parser() -> None:
    """Red team, 2026-12-07: ~2 ms of dnspython per big answer at the kernel's budget (per
    CPU) stalled corrald for seconds. Answers beyond PARSE_PER_SECOND per agent are counted."""
    from corral.pipeline import names

    book = NameBook()
    msg = _answer("x.example.com", "10.8.8.8")
    for _ in range(names.PARSE_PER_SECOND + 50):
        book.answer(_dns_event(msg))
    assert 0 < book.skipped <= 50 + names.PARSE_PER_SECOND
    other = _dns_event(msg)._replace(agent_id=8)
    assert book.answer(other) is not None, "another agent's budget is its own"
