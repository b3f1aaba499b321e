"""DNS-aware egress, first step (issue 17): bpf/dns.bpf.c reads the answers a real DNS server
(dnsmasq, on a loopback address, port 53) sends to a process in a real cgroup, and puts the
addresses of allowed names into dns_addrs before the process reads them. Real program, real
cgroup, real packets; the client is dnspython's stub resolver (a real UDP socket)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest

from bpfkit import BpfObject, Map
from corral.kernel import dnsmaps
from corral.kernel import loader as kernel
from corral.kernel.layout import C
from tests.kernel import dnsserver
from tests.kernel.conftest import _cleanup_cgroup, run_in_cgroup

OBJ = Path(kernel.__file__).resolve().parents[1] / "bpf" / "dns.bpf.o"
SERVER = "127.0.0.77"
LIST = 7
GRACE_NS = 30 * 1_000_000_000
TTL = 300
RECORDS = {
    "api.example.com": ("192.0.2.10", "2001:db8::10"),
    "x1.cdn.example.com": ("192.0.2.21",),
    "a.b.cdn.example.com": ("192.0.2.22",),
    "other.example.com": ("192.0.2.30",),
}


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[str]:
    extra = [
        "--cname=www.example.com,api.example.com",
        f"--host-record=forever.example.com,192.0.2.40,{2**31 - 1}",
    ]
    try:
        with dnsserver.dnsmasq(SERVER, RECORDS, TTL, extra) as address:
            yield address
    except dnsserver.DnsServerError as e:
        pytest.fail(str(e))


@dataclass
class Dns:
    cgroup: Path
    maps: dict[str, Map]

    def allow(self, name: str, *ports: int) -> None:
        self.maps["dns_names"].update(
            dnsmaps.name_key(LIST, name), dnsmaps.name_value(name, ports or (0,))
        )

    def resolve(self, name: str, rdtype: str = "A") -> list[str]:
        """name resolved from inside the cgroup (dnspython over a real UDP socket)."""

        def child() -> list[str]:
            q = dns.message.make_query(name, rdtype)
            r = dns.query.udp(q, SERVER, port=53, timeout=5)
            return sorted(str(rd) for rrset in r.answer for rd in rrset if rrset.rdtype in (1, 28))

        out = run_in_cgroup(self.cgroup, child)
        assert out.error is None and out.value is not None, out
        return list(out.value)

    def expiry(self, address: str) -> tuple[int, tuple[int, ...]] | None:
        raw = self.maps["dns_addrs"].lookup(dnsmaps.addr_key(LIST, address))
        return dnsmaps.addr_value(raw) if raw else None

    def stat(self, which: int) -> int:
        per_cpu = self.maps["dns_stats"].lookup_percpu(which.to_bytes(4, "little")) or []
        return sum(int.from_bytes(v[:8], "little") for v in per_cpu)


@pytest.fixture
def dns_prog(dnsmasq: str) -> Iterator[Dns]:
    obj = BpfObject.open_file(OBJ)
    obj.load()
    cg = kernel.cgroup2_root() / f"corral-dns-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    link = obj.programs["corral_dns_ingress"].attach_cgroup(cg)
    try:
        maps = obj.maps
        maps["dns_cgroups"].update(
            kernel.cgroup_id(cg).to_bytes(8, "little"), LIST.to_bytes(4, "little")
        )
        maps["dns_settings"].update(b"\0\0\0\0", dnsmaps.settings_value(GRACE_NS))
        yield Dns(cg, maps)
    finally:
        link.destroy()
        obj.close()
        _cleanup_cgroup(cg)


def test_an_allowed_names_addresses_arrive_before_the_agent_reads_them(dns_prog: Dns) -> None:
    dns_prog.allow("api.example.com", 443)
    assert dns_prog.resolve("api.example.com") == ["192.0.2.10"]
    # the answer was read by the kernel before recv() returned it: the entry is there now
    hit = dns_prog.expiry("192.0.2.10")
    assert hit is not None
    expires, ports = hit
    left = expires - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert TTL * 10**9 < left <= TTL * 10**9 + GRACE_NS, "TTL plus the grace"
    assert ports == (443,) * C.CORRAL_DNS_PORTS
    assert dns_prog.resolve("api.example.com", "AAAA") == ["2001:db8::10"]
    assert dns_prog.expiry("2001:db8::10") is not None
    assert dns_prog.stat(C.CORRAL_DNS_ALLOWED) == 2


def test_a_hostile_ttl_is_capped_at_a_day(dns_prog: Dns) -> None:
    dns_prog.allow("forever.example.com", 443)
    assert dns_prog.resolve("forever.example.com") == ["192.0.2.40"]
    hit = dns_prog.expiry("192.0.2.40")
    assert hit is not None
    left = hit[0] - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert left <= 86400 * 10**9 + GRACE_NS


def test_a_name_not_allowed_adds_nothing(dns_prog: Dns) -> None:
    dns_prog.allow("api.example.com", 443)
    assert dns_prog.resolve("other.example.com") == ["192.0.2.30"]
    assert dns_prog.expiry("192.0.2.30") is None
    assert dns_prog.stat(C.CORRAL_DNS_ANSWERS) == 1
    assert dns_prog.stat(C.CORRAL_DNS_ALLOWED) == 0


def test_a_cname_chain_gives_the_addresses_at_its_end(dns_prog: Dns) -> None:
    dns_prog.allow("www.example.com", 443)
    assert dns_prog.resolve("www.example.com") == ["192.0.2.10"]
    assert dns_prog.expiry("192.0.2.10") is not None


def test_a_wildcard_allows_one_label_only(dns_prog: Dns) -> None:
    dns_prog.allow("*.cdn.example.com", 443)
    assert dns_prog.resolve("x1.cdn.example.com") == ["192.0.2.21"]
    assert dns_prog.resolve("a.b.cdn.example.com") == ["192.0.2.22"]
    assert dns_prog.expiry("192.0.2.21") is not None
    assert dns_prog.expiry("192.0.2.22") is None, "two labels in place of the *"


def test_answers_to_processes_outside_the_cgroup_are_not_read(dns_prog: Dns) -> None:
    dns_prog.allow("api.example.com", 443)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(dnsserver.query("api.example.com"), (SERVER, 53))
        assert s.recv(512)
    assert dns_prog.expiry("192.0.2.10") is None
    assert dns_prog.stat(C.CORRAL_DNS_ANSWERS) == 0


def test_names_too_long_for_the_kernel_are_refused_by_the_map_writer() -> None:
    name = ".".join(["a" * 60] * 4) + ".com"  # 248 bytes: fits
    assert len(dnsmaps.name_key(LIST, name)) > 0
    with pytest.raises(dnsmaps.DnsKeyError, match="name buffer"):
        dnsmaps.name_key(LIST, "b" * 10 + "." + name)
