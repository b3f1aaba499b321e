"""corral.names: normalised names, registrable domains, search expansions, name patterns and
DNS answers (real wire messages built and encoded by dnspython)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rrset
import pytest

from corral.names.answers import AnswerError, parse
from corral.names.domains import DomainError, normalise, registrable, strip_search
from corral.names.generalise import check_name_pattern, generalise_name, name_matches


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("API.OpenAI.com.", "api.openai.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("_mcp._tcp.example.com", "_mcp._tcp.example.com"),
    ],
)
def test_one_spelling(raw: str, want: str) -> None:
    assert normalise(raw) == want


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("a..b", "label ''"),
        ("x" * 64 + ".com", "label"),
        (("a" * 60 + ".") * 5 + "com", "at most 253"),
        ("evil\x1b[2J.com", "label"),
        ("a b.com", "label"),
        ("*.example.com", "label"),
    ],
)
def test_bad_names_say_why(raw: str, why: str) -> None:
    with pytest.raises(DomainError, match=why.replace("(", r"\(")):
        normalise(raw)


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("api.openai.com", "openai.com"),
        ("a.foo.co.uk", "foo.co.uk"),
        ("bucket-1.s3.amazonaws.com", "amazonaws.com"),  # ICANN section: s3 is no suffix here
        ("co.uk", None),
        ("localhost", None),
        ("db.default.svc.cluster.local", None),
    ],
)
def test_registrable_domain_from_the_bundled_psl(name: str, domain: str | None) -> None:
    assert registrable(name) == domain


@pytest.mark.parametrize(
    ("name", "search", "want"),
    [
        ("api.openai.com.default.svc.cluster.local", (), "api.openai.com"),
        ("api.openai.com.svc.cluster.local", (), "api.openai.com"),
        ("api.openai.com.cluster.local", (), "api.openai.com"),
        ("db.default.svc.cluster.local", (), "db.default.svc.cluster.local"),
        ("api.openai.com.corp.example", ("corp.example",), "api.openai.com"),
        ("host.corp.example", ("corp.example",), "host.corp.example"),
        ("api.openai.com", ("corp.example",), "api.openai.com"),
    ],
)
def test_search_expansions_are_the_name_asked_for(
    name: str, search: tuple[str, ...], want: str
) -> None:
    assert strip_search(name, search) == want


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        (
            "b-k2j9x1ab.s3.amazonaws.com",
            "b-3dysq4of.s3.amazonaws.com",
            "b-????????.s3.amazonaws.com",
        ),
        (
            "job-8f14e45fceea.run.example.com",
            "job-c9f0f895fb98.run.example.com",
            "job-????????????.run.example.com",
        ),
        ("eu.api.example.com", "us.api.example.com", None),  # names, not random words
        ("api.openai.com", "api.anthropic.com", None),  # two registrable domains
        ("a1b2c3d4.example.com", "x9y8z7w6.example.org", None),
        ("a.example.com", "a.b.example.com", None),  # depth differs
        ("k2j9x1ab.co.uk", "3dysq4of.co.uk", None),  # that label IS the registrable domain
        ("db-k2j9x1ab.svc.cluster.local", "db-3dysq4of.svc.cluster.local", None),  # no PSL domain
    ],
)
def test_names_generalise_only_on_evidence(a: str, b: str, want: str | None) -> None:
    assert generalise_name(a, b) == want


def test_a_learned_name_pattern_widens_with_new_evidence_only() -> None:
    p = generalise_name("b-k2j9x1ab.s3.amazonaws.com", "b-3dysq4of.s3.amazonaws.com")
    assert p is not None
    assert generalise_name(p, "b-zz9q8w7e.s3.amazonaws.com") == p  # covered: no wider
    assert generalise_name(p, "c-zz9q8w7e.s3.amazonaws.com") is None  # "b" and "c": names
    assert name_matches(p, "b-zz9q8w7e.s3.amazonaws.com")
    assert not name_matches(p, "b-zz9q8w7e.x.s3.amazonaws.com")
    assert not name_matches(p, "c-zz9q8w7e.s3.amazonaws.com")


@pytest.mark.parametrize(
    ("pattern", "name", "hit"),
    [
        ("*.s3.amazonaws.com", "b1.s3.amazonaws.com", True),
        ("*.s3.amazonaws.com", "a.b1.s3.amazonaws.com", False),  # never across a dot
        ("*.s3.amazonaws.com", "s3.amazonaws.com", False),
        ("api-?.example.com", "api-1.example.com", True),
        ("api-?.example.com", "api-12.example.com", False),
    ],
)
def test_wildcards_stay_in_their_label(pattern: str, name: str, hit: bool) -> None:
    assert name_matches(pattern, name) is hit


def test_operator_patterns_never_span_owners() -> None:
    assert check_name_pattern("*.S3.amazonaws.com.") == "*.s3.amazonaws.com"
    assert check_name_pattern("API.openai.com") == "api.openai.com"
    for bad in ("*.com", "api.*.com", "*.co.uk", "x.*", "*.svc.cluster.local"):
        with pytest.raises(DomainError):
            check_name_pattern(bad)


def _answer(qname: str, records: list[tuple[str, str, str]], ttl: int = 60) -> bytes:
    q = dns.message.make_query(qname, "A")
    r = dns.message.make_response(q)
    for owner, rtype, value in records:
        r.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, value))
    return r.to_wire()


def test_an_answer_follows_the_cname_chain() -> None:
    wire = _answer(
        "api.openai.com",
        [
            ("api.openai.com.", "CNAME", "api.openai.com.cdn.cloudflare.net."),
            ("api.openai.com.cdn.cloudflare.net.", "A", "104.18.7.192"),
            ("api.openai.com.cdn.cloudflare.net.", "A", "104.18.6.192"),
            ("evil.example.", "A", "6.6.6.6"),  # off the chain: not the queried name's
        ],
        ttl=300,
    )
    a = parse(wire)
    assert a.qname == "api.openai.com" and a.qtype == "A" and a.rcode == "NOERROR"
    assert a.chain == ("api.openai.com.cdn.cloudflare.net",)
    assert sorted(a.addresses) == [("104.18.6.192", 300), ("104.18.7.192", 300)]
    assert a.stray == 1
    framed = len(wire).to_bytes(2, "big") + wire
    assert parse(framed, tcp=True) == a


def test_bad_messages_say_why() -> None:
    wire = _answer("api.openai.com", [("api.openai.com.", "A", "104.18.7.192")])
    with pytest.raises(AnswerError, match="not a DNS message"):
        parse(wire[:20])
    with pytest.raises(AnswerError, match="length prefix"):
        parse(b"\x00\x05" + wire, tcp=True)
    with pytest.raises(AnswerError, match="a query"):
        parse(dns.message.make_query("api.openai.com", "A").to_wire())
    with pytest.raises(AnswerError, match="not a DNS message"):
        parse(b"\xff" * 600)


def test_a_truncated_answer_is_flagged() -> None:
    q = dns.message.make_query("api.openai.com", "A")
    r = dns.message.make_response(q)
    r.flags |= dns.flags.TC
    a = parse(r.to_wire())
    assert a.truncated and a.addresses == ()
