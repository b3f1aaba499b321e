"""Connect by name, end to end (issue 17): a real corrald, real corralctl, a real DNS server
(dnsmasq on 127.0.0.77:53) and an agent in a real cgroup that resolves a name with a real
UDP DNS exchange (dnspython's stub resolver, pointed at that server) and connects to the
answer. Learned by name, not by address; the name's addresses rotate; enforce: the new
address connects, a name never seen and a bare address are denied, events and diff name
them, and `accept --connect NAME:PORT` allows the name."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_e2e import Daemon, ctl, ctl_json, running_daemon
from tests.kernel import dnsserver

SERVER = "127.0.0.77"
TTL = 60
FIRST = {"api.example.com": ("127.0.0.81",), "other.example.com": ("127.0.0.84",)}
ROTATED = {"api.example.com": ("127.0.0.82",), "other.example.com": ("127.0.0.84",)}

AGENT = textwrap.dedent(f"""
    import errno, socket, sys
    import dns.message, dns.query
    target, port = sys.argv[1], int(sys.argv[2])
    address = target
    if not target[0].isdigit():
        answer = dns.query.udp(dns.message.make_query(target, "A"), "{SERVER}", timeout=5)
        address = [str(r) for rrset in answer.answer for r in rrset if rrset.rdtype == 1][0]
    try:
        with socket.create_connection((address, port), timeout=5):
            print(address, "connect:ok")
    except OSError as e:
        print(address, "connect:" + (errno.errorcode.get(e.errno) or str(e)))
""")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port open on every loopback address."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(64)
        yield s.getsockname()[1]


def dns_server(records: dict[str, tuple[str, ...]]):  # type: ignore[no-untyped-def]
    try:
        return dnsserver.dnsmasq(SERVER, records, TTL)
    except dnsserver.DnsServerError as e:
        pytest.fail(str(e))


def run(d: Daemon, script: Path, target: str, port: int) -> str:
    r = ctl(d, "run", "--agent", "namer", "--", sys.executable, str(script), target, str(port))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_a_name_learned_from_the_agents_answers_holds_when_its_address_rotates(
    tmp_path: Path, listener: int
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    port = listener
    with running_daemon(tmp_path) as d:
        status = ctl_json(d, "status")
        assert isinstance(status, dict)
        assert status["connect_by_name"]["enforced"] is True, status["connect_by_name"]

        with dns_server(FIRST):
            for _ in range(2):  # learn
                assert run(d, script, "api.example.com", port) == "127.0.0.81 connect:ok"
            time.sleep(1.0)
            base = ctl_json(d, "baseline", "namer")
            assert isinstance(base, dict)
            connects = {(e["kind"], e["object"]) for e in base["connect"]}
            assert ("name", f"api.example.com:{port}") in connects, connects
            assert ("host", f"{SERVER}:53") in connects, "the resolver, by address"
            assert not any("127.0.0.81" in o for _, o in connects), "never the address"

        assert ctl(d, "mode", "namer", "--connect", "enforce").returncode == 0
        with dns_server(ROTATED):
            # the name's address rotated: the agent's own answer allows the new one
            assert run(d, script, "api.example.com", port) == "127.0.0.82 connect:ok"
            # a name the baseline does not hold, and an address no answer gave
            assert run(d, script, "other.example.com", port) == "127.0.0.84 connect:EPERM"
            assert run(d, script, "127.0.0.83", port) == "127.0.0.83 connect:EPERM"
            assert run(d, script, "127.0.0.81", port) == "127.0.0.81 connect:ok", (
                "the old address: its answer's TTL plus the grace have not passed"
            )

            time.sleep(1.0)
            evs = ctl_json(d, "events", "--agent", "namer", "--limit", "1000")
            assert isinstance(evs, list)
            denied = {e["object"] for e in evs if e["verdict"] == "denied"}
            assert f"127.0.0.84:{port} (other.example.com)" in denied, denied
            assert f"127.0.0.83:{port}" in denied

            diff = ctl_json(d, "diff", "namer")
            assert isinstance(diff, dict)
            objects = {r["object"] for r in diff["rows"]}
            assert f"other.example.com:{port}" in objects, objects
            assert f"127.0.0.83:{port}" in objects

            r = ctl(d, "accept", "namer", "--connect", f"other.example.com:{port}")
            assert r.returncode == 0, r.stderr
            assert run(d, script, "other.example.com", port) == "127.0.0.84 connect:ok"
            r = ctl(d, "accept", "namer", "--connect", f"*.com:{port}")
            assert r.returncode != 0 and "other owners" in r.stderr, r.stderr

        text = json.dumps(ctl_json(d, "baseline", "namer"))
        assert f"other.example.com:{port}" in text
