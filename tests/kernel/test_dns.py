"""DNS-aware egress (issue 17): corral's object with Backends.dns reads the answers a real DNS
server (dnsmasq on a loopback address, port 53) sends to an agent in a real cgroup, and connect
in ENFORCE then allows the addresses of the names the agent's list allows, on their ports only,
and nothing else. Real programs, real cgroups, real packets, connects that get EPERM or not;
the client is dnspython's stub resolver (a real UDP socket), like an agent's resolver."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import dns.message
import dns.query
import dns.rrset
import pytest

from corral.kernel import dnsmaps, events
from corral.kernel.layout import C
from corral.kernel.loader import Backends, Kernel
from corral.names import answers
from tests.kernel import dnsserver
from tests.kernel.conftest import SUPPRESS_NS, Agent, Collector, make_agent, run_in_cgroup

SERVER = "127.0.0.77"
GRACE_NS = 30 * 1_000_000_000
TTL = 300
# loopback addresses the agent may reach only by name
RECORDS = {
    "api.example.com": ("127.0.0.81", "::1"),
    "x1.cdn.example.com": ("127.0.0.82",),
    "a.b.cdn.example.com": ("127.0.0.83",),
    "other.example.com": ("127.0.0.84",),
}
EPERM = "EPERM"


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[str]:
    extra = [
        "--cname=www.example.com,api.example.com",
        f"--host-record=forever.example.com,127.0.0.85,{2**31 - 1}",
    ]
    try:
        with dnsserver.dnsmasq(SERVER, RECORDS, TTL, extra) as address:
            yield address
    except dnsserver.DnsServerError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def kern_dns(backends: Backends) -> Iterator[Kernel]:
    """corral's object with the DNS reader (no tamper guard: it is not what this tests)."""
    k = Kernel(
        dataclasses.replace(backends.without_guard(), dns="cgroup_skb"), suppress_ns=SUPPRESS_NS
    )
    k.map("dns_settings").update(b"\0\0\0\0", dnsmaps.settings_value(GRACE_NS))
    k.activate()
    yield k
    k.close()


@pytest.fixture
def port() -> Iterator[int]:
    """A TCP port listened on at every loopback address the records name."""
    socks = []
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", 0))
    s.listen(64)
    socks.append(s)
    p = s.getsockname()[1]
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s6.bind(("::1", p))
    s6.listen(64)
    socks.append(s6)
    yield p
    for s in socks:
        s.close()


@dataclasses.dataclass
class Dns:
    kern: Kernel
    agent: Agent

    @property
    def list(self) -> int:
        return self.agent.lists["connect"]

    def allow(self, name: str, *ports: int) -> None:
        self.kern.map("dns_names").update(
            dnsmaps.name_key(self.list, name), dnsmaps.name_value(name, ports or (0,))
        )

    def run(self, fn: Callable[[], Any]) -> Any:
        out = run_in_cgroup(self.agent.cgroup, fn)
        assert out.signal is None and out.exit_code == 0, out
        return EPERM if out.error == 1 else out.value if out.error is None else out.error

    def resolve(self, name: str, rdtype: str = "A", tcp: bool = False) -> Any:
        def child() -> list[str]:
            q = dns.message.make_query(name, rdtype)
            query = dns.query.tcp if tcp else dns.query.udp
            r = query(q, SERVER, port=53, timeout=5)
            return sorted(str(rd) for rrset in r.answer for rd in rrset if rrset.rdtype in (1, 28))

        return self.run(child)

    def connect(self, address: str, port: int) -> Any:
        def child() -> str:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect((address, port))
            return "connected"

        return self.run(child)

    def expiry(self, address: str) -> int | None:
        raw = self.kern.map("dns_addrs").lookup(dnsmaps.addr_key(self.list, address))
        return dnsmaps.addr_value(raw)[0] if raw else None

    def stat(self, which: int) -> int:
        per_cpu = self.kern.map("dns_stats").lookup_percpu(which.to_bytes(4, "little")) or []
        return sum(int.from_bytes(v[:8], "little") for v in per_cpu)


@pytest.fixture
def agent_dns(kern_dns: Kernel, dnsmasq: str) -> Iterator[Dns]:
    """An agent in connect ENFORCE whose list allows only its resolver (UDP 53)."""
    with make_agent(kern_dns) as a:
        kern_dns.allow_net(a.lists["connect"], [(f"{SERVER}/32", 53)])
        a.configure(connect="enforce")
        yield Dns(kern_dns, a)


def test_connect_by_name_is_allowed_after_the_agents_own_answer(agent_dns: Dns, port: int) -> None:
    agent_dns.allow("api.example.com", port)
    assert agent_dns.connect("127.0.0.81", port) == EPERM, "before any answer: an address"
    assert agent_dns.resolve("api.example.com") == ["127.0.0.81"]
    assert agent_dns.connect("127.0.0.81", port) == "connected"
    assert agent_dns.connect("127.0.0.81", port + 1 if port < 65535 else port - 1) == EPERM
    assert agent_dns.resolve("api.example.com", "AAAA") == ["::1"]
    assert agent_dns.connect("::1", port) == "connected"


def test_the_answer_is_there_before_the_agent_reads_it(agent_dns: Dns) -> None:
    agent_dns.allow("api.example.com", 443)
    assert agent_dns.resolve("api.example.com") == ["127.0.0.81"]
    expires = agent_dns.expiry("127.0.0.81")
    assert expires is not None
    left = expires - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert TTL * 10**9 < left <= TTL * 10**9 + GRACE_NS, "TTL plus the grace"


def test_a_name_not_allowed_opens_nothing(agent_dns: Dns, port: int) -> None:
    agent_dns.allow("api.example.com", port)
    assert agent_dns.resolve("other.example.com") == ["127.0.0.84"]
    assert agent_dns.connect("127.0.0.84", port) == EPERM
    assert agent_dns.stat(C.CORRAL_DNS_ANSWERS) >= 1


def test_a_cname_chain_gives_the_addresses_at_its_end(agent_dns: Dns, port: int) -> None:
    agent_dns.allow("www.example.com", port)
    assert agent_dns.resolve("www.example.com") == ["127.0.0.81"]
    assert agent_dns.connect("127.0.0.81", port) == "connected"


def test_a_wildcard_allows_one_label_only(agent_dns: Dns, port: int) -> None:
    agent_dns.allow("*.cdn.example.com", port)
    assert agent_dns.resolve("x1.cdn.example.com") == ["127.0.0.82"]
    assert agent_dns.resolve("a.b.cdn.example.com") == ["127.0.0.83"]
    assert agent_dns.connect("127.0.0.82", port) == "connected"
    assert agent_dns.connect("127.0.0.83", port) == EPERM, "two labels in place of the *"


def test_a_hostile_ttl_is_capped_at_a_day(agent_dns: Dns) -> None:
    agent_dns.allow("forever.example.com", 443)
    assert agent_dns.resolve("forever.example.com") == ["127.0.0.85"]
    expires = agent_dns.expiry("127.0.0.85")
    assert expires is not None
    assert expires - time.clock_gettime_ns(time.CLOCK_BOOTTIME) <= 86400 * 10**9 + GRACE_NS


def test_answers_to_processes_outside_every_agent_are_not_read(agent_dns: Dns) -> None:
    agent_dns.allow("api.example.com", 443)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(dnsserver.query("api.example.com"), (SERVER, 53))
        assert s.recv(512)
    assert agent_dns.expiry("127.0.0.81") is None


def test_names_too_long_for_the_kernel_are_refused_by_the_map_writer() -> None:
    name = ".".join(["a" * 60] * 4) + ".com"  # 248 bytes: fits
    assert len(dnsmaps.name_key(1, name)) > 0
    with pytest.raises(dnsmaps.DnsKeyError, match="name buffer"):
        dnsmaps.name_key(1, "b" * 10 + "." + name)


def forged_answer(name: str, address: str) -> bytes:
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name + ".", TTL, "IN", "A", address))
    return r.to_wire()


def test_an_answer_from_elsewhere_than_the_agents_resolver_is_not_taken(
    agent_dns: Dns, port: int
) -> None:
    """The agent, root, binds a free loopback address on port 53 and sends itself an answer
    naming an address of its choice for an allowed name: the kernel reads it, counts it
    foreign and never allows the address."""
    agent_dns.allow("api.example.com", port)
    # it may send to itself (127.0.0.1, any port): what it may not reach is 127.0.0.86
    agent_dns.kern.allow_net(agent_dns.list, [("127.0.0.1/32", 0)])
    before = agent_dns.stat(C.CORRAL_DNS_FOREIGN)

    def child() -> int:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as me,
        ):
            fake.bind(("127.0.0.99", 53))
            me.bind(("127.0.0.1", 0))
            me.settimeout(5)
            fake.sendto(forged_answer("api.example.com", "127.0.0.86"), me.getsockname())
            return len(me.recv(512))

    assert agent_dns.run(child) > 0, "the application still gets the datagram"
    assert agent_dns.expiry("127.0.0.86") is None
    assert agent_dns.stat(C.CORRAL_DNS_FOREIGN) == before + 1
    assert agent_dns.connect("127.0.0.86", port) == EPERM


def test_answers_go_to_user_space_whole(agent_dns: Dns) -> None:
    """Answers reach the ring as received, with their resolver and whether the kernel took
    them: all of them while the agent learns (learning by name), after that those the kernel
    did not take (what names a denied connect). What learning and named events read."""
    agent_dns.allow("api.example.com", 443)
    got = Collector(agent_dns.kern, [])
    mine = agent_dns.agent.id

    def answers_for(name: str) -> list[events.Event]:
        got.drain()
        return [
            e
            for e in got.got
            if e.dimension == "dns"
            and e.agent_id == mine
            and answers.parse(e.message or b"").qname == name
        ]

    try:
        assert agent_dns.resolve("www.example.com") == ["127.0.0.81"]
        assert agent_dns.resolve("api.example.com") == ["127.0.0.81"]
        (not_taken,) = answers_for("www.example.com")
        assert answers_for("api.example.com") == [], "taken in enforce: not sent"
        agent_dns.agent.configure(connect="observe")
        assert agent_dns.resolve("api.example.com") == ["127.0.0.81"]
        (taken,) = answers_for("api.example.com")
    finally:
        got.close()
    assert not_taken.address == SERVER and not_taken.port == 53
    assert not_taken.mode == "enforce" and not_taken.cgroup_id == agent_dns.agent.cgid
    assert not_taken.flags == ()
    a = answers.parse(not_taken.message or b"")
    assert (a.qname, a.chain) == ("www.example.com", ("api.example.com",))
    assert a.addresses == (("127.0.0.81", TTL),)
    assert taken.flags == ("taken",) and taken.mode == "observe"


def test_an_answer_forged_from_a_remote_resolvers_address_on_loopback_is_not_taken(
    agent_dns: Dns, port: int
) -> None:
    """The agent's resolver is remote (a pod's cluster DNS, 10.96.0.10 here): the agent, root,
    binds that address with IP_TRANSPARENT (CAP_NET_ADMIN; IP_FREEBIND alone gets ENETUNREACH
    for a local destination) on port 53 and sends itself an answer through loopback. Its
    source is the resolver's, but a remote resolver never answers through the loopback
    device: not taken."""
    agent_dns.allow("api.example.com", port)
    agent_dns.kern.allow_net(agent_dns.list, [("10.96.0.10/32", 53), ("127.0.0.1/32", 0)])
    before = agent_dns.stat(C.CORRAL_DNS_FOREIGN)

    def child() -> int:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as me,
        ):
            fake.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
            fake.bind(("10.96.0.10", 53))
            me.bind(("127.0.0.1", 0))
            me.settimeout(5)
            fake.sendto(forged_answer("api.example.com", "127.0.0.87"), me.getsockname())
            data, source = me.recvfrom(512)
            assert source == ("10.96.0.10", 53), source
            return len(data)

    out = run_in_cgroup(agent_dns.agent.cgroup, child)
    assert out.error is None and out.value > 0, f"the forged datagram arrives: {out}"
    assert agent_dns.expiry("127.0.0.87") is None
    assert agent_dns.stat(C.CORRAL_DNS_FOREIGN) == before + 1
    assert agent_dns.connect("127.0.0.87", port) == EPERM


def test_an_answer_over_tcp_counts_as_one_over_udp(agent_dns: Dns, port: int) -> None:
    """DNS over TCP (truncated UDP answers are retried so, and some resolvers always use it):
    the message after its 2-byte length, whole in its segment."""
    agent_dns.allow("api.example.com", port)
    assert agent_dns.connect("127.0.0.81", port) == EPERM
    assert agent_dns.resolve("api.example.com", tcp=True) == ["127.0.0.81"]
    assert agent_dns.connect("127.0.0.81", port) == "connected"


def test_an_answered_address_expires_after_its_ttl_and_the_grace(kern_dns: Kernel) -> None:
    """TTL 1 s, grace 1 s (set for this test): allowed at once, denied once both passed."""
    extra = ["--host-record=brief.example.com,127.0.0.88,1"]
    with (
        make_agent(kern_dns) as a,
        dnsserver.dnsmasq("127.0.0.79", {"x.example": ("127.0.0.1",)}, 1, extra),
    ):
        kern_dns.allow_net(a.lists["connect"], [("127.0.0.79/32", 53)])
        a.configure(connect="enforce")
        kern_dns.map("dns_settings").update(b"\0\0\0\0", dnsmaps.settings_value(10**9))
        try:
            d = Dns(kern_dns, a)
            with socket.socket() as srv:
                srv.bind(("127.0.0.88", 0))
                srv.listen(8)
                port = srv.getsockname()[1]
                d.allow("brief.example.com", port)

                def resolve() -> list[str]:
                    q = dns.message.make_query("brief.example.com", "A")
                    r = dns.query.udp(q, "127.0.0.79", port=53, timeout=5)
                    return [str(rd) for rrset in r.answer for rd in rrset]

                assert d.run(resolve) == ["127.0.0.88"]
                assert d.connect("127.0.0.88", port) == "connected"
                time.sleep(2.5)
                assert d.connect("127.0.0.88", port) == EPERM, "TTL 1 s + grace 1 s passed"
        finally:
            kern_dns.map("dns_settings").update(b"\0\0\0\0", dnsmaps.settings_value(GRACE_NS))


def _private_resolv_conf(server: str) -> None:
    """As a container runtime gives a pod its resolv.conf: a mount namespace of the child's
    own (before it joins the agent's cgroup), with /etc/resolv.conf naming server."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) or libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None):
        raise OSError(ctypes.get_errno(), "unshare/mount")
    path = "/tmp/corral-test-resolv.conf"
    with open(path, "w") as f:
        f.write(f"nameserver {server}\noptions attempts:1 timeout:3\n")
    target = os.path.realpath("/etc/resolv.conf")
    if not os.path.exists(target):  # a dangling link (a VM without resolved): give it a file
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    if libc.mount(path.encode(), target.encode(), None, 0x1000, None):  # MS_BIND
        raise OSError(ctypes.get_errno(), "bind resolv.conf")


def test_glibcs_resolver_through_resolv_conf(agent_dns: Dns, port: int) -> None:
    """The agent resolves as most agents do, with glibc's getaddrinfo and the resolv.conf its
    runtime gave it: a connected UDP socket to the resolver, then connect by name."""
    agent_dns.allow("api.example.com", port)

    def child() -> str:
        infos = socket.getaddrinfo("api.example.com", port, socket.AF_INET, socket.SOCK_STREAM)
        address = infos[0][4][0]
        with socket.create_connection((address, port), timeout=5):
            return f"{address} connected"

    out = run_in_cgroup(agent_dns.agent.cgroup, child, setup=lambda: _private_resolv_conf(SERVER))
    assert out.value == "127.0.0.81 connected", out
