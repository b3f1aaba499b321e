"""A tiny agent for the connect-by-name walkthrough (docs/names.md): resolves a name with a
real DNS query (dnspython's stub resolver, to the server given, as an agent's resolver would)
and connects to the first address of the answer; prints the address and the outcome.

    python3 examples/name_agent.py NAME PORT [--server 127.0.0.77]
"""

from __future__ import annotations

import argparse
import errno
import socket

import dns.message
import dns.query


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("port", type=int)
    ap.add_argument("--server", default="127.0.0.77")
    a = ap.parse_args()
    answer = dns.query.udp(dns.message.make_query(a.name, "A"), a.server, timeout=5)
    addresses = [str(r) for rrset in answer.answer for r in rrset if rrset.rdtype == 1]
    if not addresses:
        print(f"{a.name}: no address")
        return 1
    try:
        with socket.create_connection((addresses[0], a.port), timeout=5):
            print(f"{a.name} -> {addresses[0]}:{a.port} connected")
            return 0
    except OSError as e:
        print(f"{a.name} -> {addresses[0]}:{a.port} {errno.errorcode.get(e.errno or 0, str(e))}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
