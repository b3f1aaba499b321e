"""A real DNS server for the DNS-aware egress tests and bench: dnsmasq (Debian's dnsmasq-base,
installed by `make test-deps`) on a loopback address, port 53, answering from fixed records
only (no upstream, no hosts file)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.message


class DnsServerError(RuntimeError):
    """dnsmasq is missing or did not come up; the message says what to do."""


def query(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype).to_wire()


@contextlib.contextmanager
def dnsmasq(
    address: str,
    records: Mapping[str, Sequence[str]],
    ttl: int,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """dnsmasq answering `records` (name -> addresses) with `ttl` on address:53."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(binary).exists():
        raise DnsServerError("dnsmasq is not installed: `make test-deps` installs dnsmasq-base")
    args = [
        binary,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        f"--listen-address={address}",
        "--port=53",
        f"--local-ttl={ttl}",
        "--pid-file=",
        "--user=nobody",
        "--log-facility=-",
        *extra,
    ]
    args += [f"--host-record={name},{','.join(addrs)}" for name, addrs in records.items()]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        _wait(proc, address, next(iter(records)))
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


def _wait(proc: subprocess.Popen[str], address: str, name: str) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise DnsServerError(f"dnsmasq exited with {proc.returncode}: {err.strip()}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(query(name), (address, 53))
            if s.recv(512):
                return
        time.sleep(0.05)
    raise DnsServerError(f"dnsmasq did not answer on {address}:53 within 10 s")
