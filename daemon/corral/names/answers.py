"""What a DNS answer says: the name the agent asked for, the CNAME chain the resolver
followed, and the addresses (with their TTLs) at its end.

Parsed with dnspython (a complete, maintained DNS implementation: compression pointers, every
record type, EDNS, malformed-message errors) rather than by hand; the kernel's own parser, which
must decide before the agent reads the answer, is bounded and reads only what connect needs.
Only records on the chain count: an A record for a name the question did not lead to
(``stray``) is not an address of the queried name, whatever the resolver sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .domains import DomainError, normalise

CHAIN_MAX = 16  # CNAME hops followed; a longer chain is reported, its end not trusted


class AnswerError(ValueError):
    """A message corral could not read as an answer; the message says why."""


@dataclass(frozen=True)
class Answer:
    qname: str
    qtype: str
    rcode: str
    truncated: bool
    addresses: tuple[tuple[str, int], ...]  # (address, ttl) at the end of the chain
    chain: tuple[str, ...]  # CNAME targets, in order
    stray: int  # address records for names off the chain (ignored)


def parse(wire: bytes, *, tcp: bool = False) -> Answer:
    """An answer from a UDP payload, or a TCP frame (2-byte length first) when tcp."""
    if tcp:
        if len(wire) < 2 or int.from_bytes(wire[:2], "big") != len(wire) - 2:
            raise AnswerError("TCP frame: the length prefix does not match the message")
        wire = wire[2:]
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=False)
    except dns.message.Truncated:
        raise AnswerError("truncated message (TC bit set and records cut)") from None
    except (dns.exception.DNSException, ValueError) as e:
        raise AnswerError(f"not a DNS message: {e}") from None
    if not msg.flags & dns.flags.QR:
        raise AnswerError("a query, not an answer")
    if len(msg.question) != 1:
        raise AnswerError(f"{len(msg.question)} questions (answers carry exactly one)")
    q = msg.question[0]
    try:
        qname = normalise(q.name.to_text(omit_final_dot=True))
    except DomainError as e:
        raise AnswerError(str(e)) from None
    return _follow(msg, q.name, qname, dns.rdatatype.to_text(q.rdtype))


def _follow(msg: dns.message.Message, start: dns.name.Name, qname: str, qtype: str) -> Answer:
    owner, chain = start, []
    for _ in range(CHAIN_MAX):
        cname = next(
            (r for r in msg.answer if r.name == owner and r.rdtype == dns.rdatatype.CNAME), None
        )
        if cname is None:
            break
        owner = cname[0].target
        chain.append(owner.to_text(omit_final_dot=True).lower())
    addresses: list[tuple[str, int]] = []
    stray = 0
    for rrset in msg.answer:
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        if rrset.rdclass != dns.rdataclass.IN:  # another class's "A" is opaque data
            stray += len(rrset)
            continue
        if rrset.name != owner:
            stray += len(rrset)
            continue
        addresses += [(r.address, rrset.ttl) for r in rrset]
    return Answer(
        qname=qname,
        qtype=qtype,
        rcode=dns.rcode.to_text(msg.rcode()),
        truncated=bool(msg.flags & dns.flags.TC),
        addresses=tuple(addresses),
        chain=tuple(chain),
        stray=stray,
    )
