"""Per-call cost of the DNS program (bpf/dns.bpf.c, cgroup_skb/ingress) on this machine's
kernel: it runs for every packet a socket in a registered cgroup receives, so its early out
(not UDP from port 53) is what every packet pays, and an answer's parse is what a lookup pays.

Workloads, each a loop of N receives in one child in a fresh cgroup with the program attached:
- udp-other: a datagram to itself on loopback, from a port that is not 53 (the early out);
- dns-allowed: a query to dnsmasq on 127.0.0.78 for a name the list allows (parse, LPM hit,
  two dns_addrs updates: A records);
- dns-not-allowed: the same for a name it does not (parse, LPM miss).
Reported: run_time_ns / run_cnt delta (kernel.bpf_stats_enabled) per workload, median of the
rounds (min, max).

    python -m bench.dnscost [--rounds 5] [-n 20000] [--write-doc]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from bpfkit import BpfObject
from corral.kernel import dnsmaps
from corral.kernel import loader as kernel
from tests.kernel import dnsserver
from tests.kernel.conftest import run_in_cgroup

from . import env, progcost, syscalls
from .stats import median

OBJ = Path(kernel.__file__).resolve().parents[1] / "bpf" / "dns.bpf.o"
SERVER = "127.0.0.78"
LIST = 1
PROG = "corral_dns_ingress"
RECORDS = {"api.example.com": ("192.0.2.10", "192.0.2.11"), "other.example.com": ("192.0.2.30",)}
TITLE = "## Per-call cost of the DNS program"


def _loop_udp(n: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for _ in range(n):
            s.sendto(b"x" * 64, s.getsockname())
            s.recv(128)
    return n


def _loop_dns(name: str, n: int) -> int:
    q = dnsserver.query(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for _ in range(n):
            s.sendto(q, (SERVER, 53))
            s.recv(512)
    return n


WORKLOADS = {
    "udp-other": lambda n: _loop_udp(n),
    "dns-allowed": lambda n: _loop_dns("api.example.com", n),
    "dns-not-allowed": lambda n: _loop_dns("other.example.com", n),
}


def measure(rounds: int, n: int) -> dict[str, Any]:
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    samples: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    try:
        with dnsserver.dnsmasq(SERVER, RECORDS, 300), env.cgroup("corral-dnscost") as cg:
            obj = BpfObject.open_file(OBJ)
            obj.load()
            link = obj.programs["corral_dns_ingress"].attach_cgroup(cg)
            try:
                m = obj.maps
                cgid = kernel.cgroup_id(cg).to_bytes(8, "little")
                m["dns_cgroups"].update(cgid, LIST.to_bytes(4, "little"))
                m["dns_settings"].update(b"\0" * 4, dnsmaps.settings_value(30 * 10**9))
                name = "api.example.com"
                m["dns_names"].update(
                    dnsmaps.name_key(LIST, name), dnsmaps.name_value(name, (443,))
                )
                for r in range(rounds):
                    for w, fn in WORKLOADS.items():
                        s0 = syscalls._prog_stats().get(PROG, (0, 0))
                        out = run_in_cgroup(cg, lambda fn=fn: fn(n), timeout=600)
                        s1 = syscalls._prog_stats().get(PROG, (0, 0))
                        assert out.value == n, out
                        runs = s1[1] - s0[1]
                        samples[w].append((s1[0] - s0[0]) / runs if runs else float("nan"))
                    env.log(f"dnscost: round {r + 1}/{rounds} done")
            finally:
                link.destroy()
                obj.close()
    finally:
        stats.write_text(old)
    return {
        "machine": env.machine(),
        "load": env.load(),
        "rounds": rounds,
        "n": n,
        "ns_per_call": {
            w: {"median": median(v), "min": min(v), "max": max(v)} for w, v in samples.items()
        },
    }


def section(result: dict[str, Any]) -> list[str]:
    if not result:
        return []
    m, load = result["machine"], result["load"]
    lines = [
        TITLE,
        "",
        f"`python -m bench.dnscost` on the host (kernel {m['kernel']}, "
        f"{m['cores']} CPUs, {m['cpu_model']}; 1-minute load {load['load1']}"
        f"{', noisy: other work ran' if load['noisy'] else ''}), {result['rounds']} rounds of "
        f"{result['n']} receives per workload; `run_time_ns / run_cnt` of `corral_dns_ingress`, "
        "median (min-max). The program is new (issue 17, first step): there is no before. "
        "udp-other is what every packet an agent's socket receives pays once the program is "
        "attached (its early out); the answers are what a lookup pays.",
        "",
        "| workload | ns per call |",
        "|---|---|",
    ]
    for w, v in result["ns_per_call"].items():
        lines.append(f"| {w} | {v['median']:.0f} ({v['min']:.0f}-{v['max']:.0f}) |")
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=20000, help="receives per workload and round")
    ap.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    a = ap.parse_args()
    result = measure(a.rounds, a.n)
    print(json.dumps(result, indent=2))
    if a.write_doc:
        from . import report

        data = json.loads(report.DATA.read_text()) if report.DATA.exists() else {}
        data["dnscost"] = result
        report.DATA.write_text(json.dumps(data, indent=1, sort_keys=True))
        progcost.splice(report.DOC, section(result), title=TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
