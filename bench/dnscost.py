"""Per-call cost of the DNS reader (bpf/dns.bpf.h, cgroup_skb/ingress at the cgroup root) on
this machine's kernel: it runs for every packet every socket on the node receives, so its early
out (not UDP from port 53) is what every packet pays, and an answer's parse what a lookup pays.

Workloads, each a loop of N receives in one child in a fresh cgroup registered as an agent
(connect in ALERT; its list allows the resolver) of corral's object loaded with Backends.dns:
- udp-other: a datagram to itself on loopback, from a port that is not 53 (the early out);
- dns-allowed: a query to dnsmasq on 127.0.0.78 for a name the list allows (parse, LPM hit,
  two dns_addrs updates: A records);
- dns-not-allowed: the same for a name it does not (parse, LPM miss).
Reported: run_time_ns / run_cnt delta (kernel.bpf_stats_enabled) per workload, median of the
rounds (min, max), for this tree's object and the object of --answers-before (same rounds,
order alternating). The ring buffer is read while the workloads run, as corrald reads it: the
reader sends every answer to user space.

    python -m bench.dnscost [--rounds 5] [-n 20000] [--write-doc]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.kernel import dnsmaps, probe
from corral.kernel import loader as kernel
from corral.kernel.loader import AgentConfig, Backends, Kernel
from tests.kernel import dnsserver
from tests.kernel.conftest import run_in_cgroup

from . import env, progcost, syscalls
from .stats import median

SERVER = "127.0.0.78"
AGENT = 1
LIST = 3
PROG = kernel.DNS_PROGRAM
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


def _loop_connect(n: int) -> int:
    """connects to a port nothing listens on, at an address no list allows (ALERT: refused)."""
    for _ in range(n):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s,
            contextlib.suppress(ConnectionRefusedError),
        ):
            s.connect(("127.0.0.86", 9))
    return n


def connect_miss(obj: Path, dns: str, cg: Path, n: int) -> dict[str, float]:
    """ns per call of each connect program over n connects that miss every list, with obj."""
    backends = Backends.choose(probe.run_probe().deny).without_guard()
    k = Kernel(dataclasses.replace(backends, dns=dns), obj_path=obj)
    try:
        k.register_cgroup(kernel.cgroup_id(cg), AGENT)
        modes = {"exec": "off", "open": "off", "connect": "alert"}
        k.set_agent(AGENT, AgentConfig(modes=modes, lists={"exec": 1, "open": 2, "connect": LIST}))
        k.activate()
        s0 = syscalls._prog_stats()
        out = run_in_cgroup(cg, lambda: _loop_connect(n), timeout=600)
        s1 = syscalls._prog_stats()
        assert out.value == n, out
    finally:
        k.close()
    res = {}
    for prog, (rt, cnt) in s1.items():
        runs = cnt - s0.get(prog, (0, 0))[1]
        if "connect" in prog and runs * 2 >= n:
            res[prog] = (rt - s0.get(prog, (0, 0))[0]) / runs
    return res


def measure_connect(before: str, rounds: int, n: int) -> dict[str, Any]:
    """The connect programs' miss path before (commit `before`) and after (this tree)."""
    obj_before = env.BUILD / f"dnscost-before-{before}.bpf.o"
    obj_before.parent.mkdir(parents=True, exist_ok=True)
    progcost.build_object(before, obj_before)
    objs = {"before": (obj_before, "none"), "after": (kernel.object_path(), "cgroup_skb")}
    samples: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with env.cgroup("corral-dnscost-connect") as cg:
        for r in range(rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for label in order:
                for prog, ns in connect_miss(*objs[label], cg, n).items():
                    samples[label].setdefault(prog, []).append(ns)
    return {
        "before_commit": before,
        "ns_per_call": {
            label: {p: {"median": median(v), "min": min(v), "max": max(v)} for p, v in d.items()}
            for label, d in samples.items()
        },
    }


@contextlib.contextmanager
def _loaded(obj: Path, cg: Path) -> Iterator[Kernel]:
    """corral's object (obj) with the reader, the agent in cg allowed its resolver and one
    name, and its ring buffer read in a thread as corrald would."""
    backends = Backends.choose(probe.run_probe().deny).without_guard()
    k = Kernel(dataclasses.replace(backends, dns="cgroup_skb"), obj_path=obj)
    stop = threading.Event()
    reader: threading.Thread | None = None
    try:
        k.map("dns_settings").update(b"\0" * 4, dnsmaps.settings_value(30 * 10**9))
        k.register_cgroup(kernel.cgroup_id(cg), AGENT)
        lists = {"exec": 1, "open": 2, "connect": LIST}
        modes = {"exec": "off", "open": "off", "connect": "alert"}
        k.set_agent(AGENT, AgentConfig(modes=modes, lists=lists))
        k.allow_net(LIST, [(f"{SERVER}/32", 53)])
        name = "api.example.com"
        k.map("dns_names").update(dnsmaps.name_key(LIST, name), dnsmaps.name_value(name, (443,)))
        k.activate()
        rb = k.ring_buffer(lambda data: None)

        def drain() -> None:
            while not stop.is_set():
                rb.poll(50)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        yield k
    finally:
        stop.set()
        if reader is not None:
            reader.join(5)
        k.close()


def _round(cg: Path, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for w, fn in WORKLOADS.items():
        s0 = syscalls._prog_stats().get(PROG, (0, 0))
        res = run_in_cgroup(cg, lambda fn=fn: fn(n), timeout=600)
        s1 = syscalls._prog_stats().get(PROG, (0, 0))
        assert res.value == n, res
        runs = s1[1] - s0[1]
        out[w] = (s1[0] - s0[0]) / runs if runs else float("nan")
    return out


def measure(rounds: int, n: int, before: str, after: Path | None = None) -> dict[str, Any]:
    obj_before = env.BUILD / f"dnscost-before-{before}.bpf.o"
    obj_before.parent.mkdir(parents=True, exist_ok=True)
    progcost.build_object(before, obj_before)
    objs = {"before": obj_before, "after": after or kernel.object_path()}
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    samples: dict[str, dict[str, list[float]]] = {
        label: {w: [] for w in WORKLOADS} for label in objs
    }
    try:
        with dnsserver.dnsmasq(SERVER, RECORDS, 300), env.cgroup("corral-dnscost") as cg:
            for r in range(rounds):
                for label in ["before", "after"] if r % 2 == 0 else ["after", "before"]:
                    with _loaded(objs[label], cg):
                        for w, ns in _round(cg, n).items():
                            samples[label][w].append(ns)
                env.log(f"dnscost: round {r + 1}/{rounds} done")
    finally:
        stats.write_text(old)
    return {
        "machine": env.machine(),
        "load": env.load(),
        "rounds": rounds,
        "n": n,
        "before_commit": before,
        "ns_per_call": {
            label: {w: {"median": median(v), "min": min(v), "max": max(v)} for w, v in d.items()}
            for label, d in samples.items()
        },
    }


SCALE = 10000  # names in the list, and addresses answered for them


def _loop_connect_named(n: int) -> int:
    """non-blocking connects to an address an allowed name's answer gave (192.0.2.10:443,
    never reached: the program's verdict is what is measured)."""
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setblocking(False)
            s.connect_ex(("192.0.2.10", 443))
    return n


def _fill(k: Kernel, count: int) -> None:
    """count more names in the list and an answered address for each (as corrald holds a big
    baseline's names and the answers they got)."""
    keys = [dnsmaps.name_key(LIST, f"svc-{i}.example.net") for i in range(count)]
    vals = [dnsmaps.name_value("x.example.net", (443,))] * count
    k.map("dns_names").update_batch(keys, vals)
    held = [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 3600.0) for i in range(count)]
    dnsmaps.allow_addresses(k, LIST, held, (443,))


def measure_scale(rounds: int, n: int) -> dict[str, Any]:
    """This tree's object with 1 name, then with SCALE more names and answered addresses:
    the reader's lookup (an LPM trie) and connect's (a hash) as the lists grow."""
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    out: dict[str, dict[str, list[float]]] = {"1": {}, str(SCALE): {}}
    work = {"dns-allowed": WORKLOADS["dns-allowed"], "connect-by-name": _loop_connect_named}
    try:
        with (
            dnsserver.dnsmasq(SERVER, RECORDS, 300),
            env.cgroup("corral-dnscost-scale") as cg,
            _loaded(kernel.object_path(), cg) as k,
        ):
            for size in out:
                if size != "1":
                    _fill(k, SCALE)
                for _ in range(rounds):
                    for w, fn in work.items():
                        s0 = syscalls._prog_stats()
                        res = run_in_cgroup(cg, lambda fn=fn: fn(n), timeout=600)
                        s1 = syscalls._prog_stats()
                        assert res.value == n, res
                        prog = PROG if w == "dns-allowed" else "corral_cg_connect4"
                        runs = s1.get(prog, (0, 0))[1] - s0.get(prog, (0, 0))[1]
                        spent = s1.get(prog, (0, 0))[0] - s0.get(prog, (0, 0))[0]
                        out[size].setdefault(w, []).append(spent / runs if runs else 0.0)
    finally:
        stats.write_text(old)
    return {
        size: {w: {"median": median(v), "min": min(v), "max": max(v)} for w, v in d.items()}
        for size, d in out.items()
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
        f"{result['n']} receives per workload; `run_time_ns / run_cnt` of "
        "`corral_cg_dns_ingress`, median (min-max), before (object of "
        f"{result['before_commit']}) and after (this commit's), order alternating, the ring "
        "buffer read meanwhile. udp-other is what every packet an agent's socket receives pays "
        "once the program is attached (its early out); the answers are what a lookup pays. "
        "After: an allowed name's answer is taken only from the agent's resolver (one more "
        "`net_allow` lookup), and answers the kernel does not take are sent to user space "
        "(the agent here is in ALERT: dns-not-allowed's answers; while an agent learns, all "
        "of them): a 512-byte message on the ring and its wakeup, a self-IPI, which costs "
        "microseconds on this host (a virtual machine); once per DNS answer.",
        "",
        "| workload | before ns per call | after ns per call |",
        "|---|---|---|",
    ]
    by = result["ns_per_call"]
    for w in by["after"]:
        cells = [
            f"{d[w]['median']:.0f} ({d[w]['min']:.0f}-{d[w]['max']:.0f})"
            for d in (by["before"], by["after"])
        ]
        lines.append(f"| {w} | {cells[0]} | {cells[1]} |")
    conn = result.get("connect")
    if conn:
        lines += [
            "",
            "Connect now looks up `dns_addrs` when the static lists miss (the allowed path is "
            "unchanged). Its miss path, before "
            f"(object of {conn['before_commit']}) and after (this commit's), connects to an "
            "address no list allows (ALERT), same rounds, order alternating. Next: skip the "
            "lookup where the reader is off (a read-only global the verifier prunes).",
            "",
            "| program | before ns per call | after ns per call |",
            "|---|---|---|",
        ]
        b, a = conn["ns_per_call"]["before"], conn["ns_per_call"]["after"]
        for prog in sorted(set(b) | set(a)):
            cells = [
                f"{d[prog]['median']:.0f} ({d[prog]['min']:.0f}-{d[prog]['max']:.0f})"
                if prog in d
                else "-"
                for d in (b, a)
            ]
            lines.append(f"| `{prog}` | {cells[0]} | {cells[1]} |")
    scale = result.get("scale")
    if scale:
        lines += [
            "",
            f"As the lists grow: this commit's object, the agent's list with 1 name, then "
            f"{SCALE} more names and an answered address for each (`dns_names` is an LPM trie, "
            "`dns_addrs` a hash), same rounds: dns-allowed is the reader's cost per answer "
            "(above), connect-by-name a connect to an address an allowed name's answer gave "
            "(`corral_cg_connect4`: the static lists miss, then `dns_addrs` allows).",
            "",
            f"| workload | 1 name, ns per call | {SCALE} names, ns per call |",
            "|---|---|---|",
        ]
        small, big = scale["1"], scale[str(SCALE)]
        for w in small:
            cells = [
                f"{d[w]['median']:.0f} ({d[w]['min']:.0f}-{d[w]['max']:.0f})" for d in (small, big)
            ]
            lines.append(f"| {w} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=20000, help="receives per workload and round")
    ap.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument(
        "--before",
        default="c02edd0",
        help="the commit whose object is 'before' for connect (before it consulted the answers)",
    )
    ap.add_argument(
        "--answers-before",
        default="37550a2",
        help="the commit whose object is 'before' for the reader (before it reported answers)",
    )
    ap.add_argument("--no-connect", action="store_true", help="skip the connect miss path")
    ap.add_argument(
        "--scale-only",
        action="store_true",
        help=f"only the {SCALE}-name rows, added to the result docs/benchmarks.md already has",
    )
    ap.add_argument("--after-object", type=Path, help="the 'after' object (default: this tree's)")
    a = ap.parse_args()
    if a.scale_only:
        from . import report

        result = json.loads(report.DATA.read_text()).get("dnscost", {})
        result["scale"] = measure_scale(a.rounds, a.n)
        print(json.dumps(result["scale"], indent=2))
        if a.write_doc:
            report.save_part("dnscost", result, section(result), TITLE)
        return 0
    result = measure(a.rounds, a.n, a.answers_before, a.after_object)
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    try:
        if not a.no_connect:
            result["connect"] = measure_connect(a.before, a.rounds, a.n)
    finally:
        stats.write_text(old)
    print(json.dumps(result, indent=2))
    if a.write_doc:
        from . import report

        report.save_part("dnscost", result, section(result), TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
