"""Which name an agent's address came from: the agent's own DNS answers, as the kernel's
DNS reader sent them (struct corral_dns_event), kept per agent for their TTL plus the grace.

The decoder hands each answer here the moment it meets it in the ring, so a connect later in
the same batch is already named: learning records {name, port} instead of the address
(Baseline.observe_host), deviations group by name, events carry it. Only the addresses at the
end of the question's CNAME chain count (corral.names.answers).

Answers from elsewhere than a resolver the agent may reach on port 53 (the kernel flags them
"foreign": anyone able to send from port 53 could name any address) are ignored, except while
the agent's connect dimension learns: its resolver is not in the baseline before its first
query has been learned, and a forged name there only narrows what is learned (the kernel
allows a name's addresses from the resolver's answers only, never from the forged one).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import structlog

from corral.kernel import events
from corral.names import answers

log = structlog.get_logger("corral.pipeline")

PER_AGENT = 4096  # addresses remembered per agent (least recently answered dropped first)
# answers parsed per agent per second (dnspython: ~2 ms for 29 records; the kernel's budget
# is per CPU): beyond it they are counted, not read, so one agent cannot stall corrald
PARSE_PER_SECOND = 100


class NameBook:
    def __init__(self, grace: float = 300.0, per_agent: int = PER_AGENT) -> None:
        self.grace = grace
        self.per_agent = per_agent
        # agent id -> address -> (name, expiry on the monotonic clock, from its resolver)
        self._names: dict[int, OrderedDict[str, tuple[str, float, bool]]] = {}
        self.unreadable = 0  # answers dnspython could not read (the kernel may have)
        self.skipped = 0  # answers over an agent's PARSE_PER_SECOND: not read
        self._budget: dict[int, tuple[float, int]] = {}  # agent id -> (second, answers read)
        self.foreign = 0  # answers not from the agent's resolver: ignored

    def answer(self, ev: events.Event) -> answers.Answer | None:
        """Takes one DNS record (Event of dimension "dns"); the parsed answer, if usable."""
        if "foreign" in ev.flags and ev.mode != "observe":
            self.foreign += 1
            return None
        if not self._spend(ev.agent_id):
            self.skipped += 1
            return None
        try:
            a = answers.parse(ev.message or b"")
        except answers.AnswerError as e:
            self.unreadable += 1
            log.debug("a DNS answer could not be read", agent_id=ev.agent_id, error=str(e))
            return None
        except Exception as e:  # the agent wrote this message: it must never stop the ring
            self.unreadable += 1
            log.warning("a DNS answer broke the parser", agent_id=ev.agent_id, error=repr(e))
            return None
        if not a.addresses:
            return a
        book = self._names.setdefault(ev.agent_id, OrderedDict())
        now = time.monotonic()
        trusted = "foreign" not in ev.flags
        for address, ttl in a.addresses:
            book[address] = (a.qname, now + min(ttl, 86400) + self.grace, trusted)
            book.move_to_end(address)
        while len(book) > self.per_agent:
            book.popitem(last=False)
        return a

    def _spend(self, agent_id: int) -> bool:
        second = float(int(time.monotonic()))
        start, used = self._budget.get(agent_id, (second, 0))
        if start != second:
            start, used = second, 0
        if used >= PARSE_PER_SECOND:
            return False
        self._budget[agent_id] = (start, used + 1)
        return True

    def name_of(self, agent_id: int, address: str | None, learning: bool = True) -> str | None:
        """The name the agent's latest answer gave for address, while it is valid; once the
        agent no longer learns, only a name its resolver gave (a forged one would label a
        denied connect with a name an operator may trust)."""
        book = self._names.get(agent_id)
        if not book or address is None:
            return None
        hit = book.get(address)
        if hit is None:
            return None
        if hit[1] < time.monotonic():
            del book[address]
            return None
        return hit[0] if learning or hit[2] else None

    def addresses(self, agent_id: int, name: str) -> list[tuple[str, float]]:
        """(address, seconds left) the agent's resolver gave for name, still valid: what may
        go into the kernel (a foreign answer names a connect while the agent learns, never
        allows an address)."""
        book = self._names.get(agent_id) or {}
        now = time.monotonic()
        return [
            (a, exp - now) for a, (n, exp, ok) in book.items() if n == name and exp > now and ok
        ]

    def forget(self, agent_id: int) -> None:
        self._names.pop(agent_id, None)
