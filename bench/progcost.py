"""Per-call cost of each program before and after two kernel changes, inside QEMU (virtme-ng,
TCG) on Debian's 6.1 and 6.12 kernels booted with BPF LSM active (one boot per kernel).

"before" is corral.bpf.o built from commit BEFORE (the commit before learned path patterns,
b43592a, and exec lineage, adddd52): its sources are taken with `git show` into a temporary
directory and compiled with the Makefile's BPF_CFLAGS. "after" is the current
daemon/corral/bpf/corral.bpf.o (`make bpf`). Both objects are driven by this tree's loader,
touching for "before" only the maps both objects have (agents, cgroups, the exact and prefix
allow-lists, the network list, settings, counters); their shared structs are identical in both
headers (the changes only add structs).

In each boot, for each backend family (BPF LSM, and fmod_ret measured in the same boot), several
rounds; each round loads one object, fills its lists, measures every workload, unloads, then
the other object (the order alternates round by round). A workload is the C loop of
bench/csrc/loop.c run by a process in the agent's cgroup; each program's cost per call is the
delta of run_time_ns / run_cnt (kernel.bpf_stats_enabled, on for the whole run, so both objects
pay the same accounting) over the loop. Reported: per program and workload, the median over the
rounds. Timings under TCG are emulated: compare only numbers of the same boot.

    python -m bench.progcost             both kernels, one boot each (~10 min on 2 CPUs)
    python -m bench.progcost --guest ... inside a guest
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corral.kernel import events
from corral.kernel.loader import AgentConfig, Backends, Kernel, cgroup_id
from tests.vm.run_vm import LSM_APPEND, find_kernel

from . import env, syscalls, vm
from .stats import median, spread

BEFORE = "e037c1b"  # the parent of b43592a (patterns); adddd52 (lineage) came after
KERNELS = ("6.1", "6.12")
FAMILIES = ("lsm", "fmod_ret")
MARKER = "CORRAL-PROGCOST-JSON "
AGENT = syscalls.AGENT
LISTS = syscalls.LISTS
OUT = env.BUILD / "progcost"
PATTERN_NAME = "agent-1a2b3c4d.json"  # a tempfile-like name
PATTERN_GLOB = "agent-????????.json"

# (name, what it measures, op, file key or None, open mode, only the "after" object has it)
WORKLOADS: tuple[tuple[str, str, str, str | None, str, bool], ...] = (
    (
        "open-exact",
        "open allowed by an exact entry (10,000 in the list)",
        "open",
        "data",
        "enforce",
        False,
    ),
    ("open-prefix", "open allowed by a directory prefix", "open", "prefixed", "enforce", False),
    (
        "open-pattern",
        f"open allowed by a pattern (.../{PATTERN_GLOB})",
        "open",
        "patterned",
        "enforce",
        True,
    ),
    (
        "open-miss",
        "open of a path in no list (ALERT: deviation, report suppressed)",
        "open",
        "missing",
        "alert",
        False,
    ),
    (
        "open-miss-near-pattern",
        "open in no list, under a pattern's literal prefix (ALERT; the glob runs and fails)",
        "open",
        "near_pattern",
        "alert",
        False,
    ),
    (
        "exec-any",
        "exec of an allowed static binary (any-caller list; no caller entries)",
        "exec",
        None,
        "enforce",
        False,
    ),
    (
        "exec-caller",
        "exec allowed by the caller's own list (lineage entry for the loop)",
        "exec",
        None,
        "enforce",
        False,
    ),
    (
        "exec-caller-miss",
        "exec: the caller has a list without it, allowed by the any-caller "
        "list (lineage's longest path)",
        "exec",
        None,
        "enforce",
        False,
    ),
    (
        "connect",
        "connect allowed (10,000 entries; second lookup, port 0, allows)",
        "connect",
        None,
        "enforce",
        False,
    ),
)
CALLER_LIST = LISTS["exec"] | (1 << 20)  # the caller's own list (list | index << CALLER_SHIFT)
OTHER_CALLER_LIST = LISTS["exec"] | (2 << 20)


# ---- the objects (host) -----------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(env.REPO), *args], capture_output=True, text=True, check=True
    ).stdout


def build_object(commit: str, out: Path) -> None:
    """corral.bpf.o of a commit: its bpf/ sources (`git show`) compiled into out with the
    Makefile's BPF_CFLAGS."""
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    with tempfile.TemporaryDirectory(prefix="corral-bpf-") as tmp:
        src = Path(tmp)
        for path in _git("ls-tree", "--name-only", commit, "bpf/").split():
            if path.endswith((".h", "corral.bpf.c")):  # guard.bpf.h, dns.bpf.h where present
                (src / Path(path).name).write_text(_git("show", f"{commit}:{path}"))
        cflags = ["-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-Wall", "-Werror"]
        cmd = ["clang", *cflags, f"-I{src}", "-c", str(src / "corral.bpf.c"), "-o", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"building the {commit} object failed:\n{r.stderr}")


def build_objects(after: str = "HEAD") -> dict[str, Any]:
    """Both objects from git (BEFORE and `after`), and a snapshot of `after`'s Python to drive
    them: the checkout may hold uncommitted work on bpf/ and daemon/ (other layouts), which
    neither object matches. The snapshot (git archive of daemon/, bpf/, tests/vm/, with this
    tree's bench/) goes to build/progcost-src/<commit>/; its build/ points at this tree's (the
    C helpers)."""
    OUT.mkdir(parents=True, exist_ok=True)
    head = _git("rev-parse", "--short", after).strip()
    objs = {
        "before": (BEFORE, OUT / f"before-{BEFORE}.bpf.o"),
        "after": (head, OUT / f"after-{head}.bpf.o"),
    }
    for commit, path in objs.values():
        build_object(commit, path)
    snap = env.REPO / "build" / "progcost-src" / head
    if snap.exists():
        shutil.rmtree(snap)
    snap.mkdir(parents=True)
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(env.REPO),
            "archive",
            head,
            "daemon",
            "bpf",
            "tests/__init__.py",
            "tests/vm",
        ],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
    shutil.copytree(
        env.REPO / "bench", snap / "bench", ignore=shutil.ignore_patterns("__pycache__")
    )
    (snap / "build").symlink_to(env.REPO / "build")
    return {
        **{
            label: {"commit": commit, "path": str(path), "sha256": _sha(path)}
            for label, (commit, path) in objs.items()
        },
        "python_snapshot": str(snap),
        "uncommitted_in_checkout": _git(
            "status", "--porcelain", "--", "bpf", "daemon"
        ).splitlines(),
        "clang": subprocess.run(
            ["clang", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0],
    }


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


# ---- the guest --------------------------------------------------------------------------------


def make_files(root: Path, fx: syscalls.Fixture) -> dict[str, Path]:
    files = {"data": fx.data}
    for key, rel in (
        ("prefixed", "p/allowed-by-prefix"),
        ("patterned", f"t/{PATTERN_NAME}"),
        ("missing", "m/unlisted.txt"),
        ("near_pattern", "t/agent-notes.txt"),
    ):
        f = root / rel
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"corral bench\n")
        files[key] = f
    return files


def observe_paths(
    after_obj: Path,
    backends: Backends,
    cg: Path,
    loop: Path,
    files: dict[str, Path],
    binary: Path,
) -> dict[str, str]:
    """How this kernel reports our files, the binary, and the loop as exec caller: learned by
    observing one open of each and one exec with the after object (which reports callers)."""
    k = Kernel(backends, obj_path=after_obj, suppress_ns=60 * 1_000_000_000)
    got: list[events.Event] = []
    try:
        k.register_cgroup(cgroup_id(cg), AGENT)
        modes = {"exec": "observe", "open": "observe", "connect": "off"}
        k.set_agent(AGENT, AgentConfig(modes=modes, lists=dict(LISTS), rate_limit=1000))
        k.activate()
        rb = k.ring_buffer(lambda data: got.append(events.decode(data)))
        try:
            for f in files.values():
                syscalls.run_loop(loop, cg, "open", 1, str(f))
            syscalls.run_loop(loop, cg, "exec", 1, str(binary))
            deadline = time.monotonic() + 10
            seen: dict[str, str] = {}
            while time.monotonic() < deadline and len(seen) < len(files) + 2:
                rb.poll(100)
                for e in got:
                    for key, f in files.items():
                        if e.dimension == "open" and e.path and e.path.endswith("/" + f.name):
                            seen[key] = e.path
                    if e.dimension == "exec" and e.path and e.path.endswith(binary.name):
                        seen["binary"] = e.path
                        seen["caller"] = e.caller or ""
        finally:
            rb.close()
    finally:
        k.close()
    if len(seen) < len(files) + 2 or not seen["caller"]:
        raise RuntimeError(f"no event for some bench files: {seen}; saw {got}")
    return seen


def load(
    obj: Path,
    after: bool,
    backends: Backends,
    cg: Path,
    lists: dict[str, Any],
    paths: dict[str, str],
) -> Kernel:
    k = Kernel(backends, obj_path=obj, suppress_ns=60 * 1_000_000_000)
    try:
        k.register_cgroup(cgroup_id(cg), AGENT)
        prefix = paths["prefixed"].rsplit("/", 1)[0] + "/"
        k.allow_paths("exec", LISTS["exec"], lists["exec"])
        k.allow_paths("open", LISTS["open"], lists["open"], [prefix])
        k.allow_net(LISTS["connect"], lists["connect"])
        if after:
            from corral.policy.patterns import kernel_groups

            glob = paths["patterned"].rsplit("/", 1)[0] + "/" + PATTERN_GLOB
            k.set_patterns("open", LISTS["open"], kernel_groups([glob]))
            k.allow_paths("exec", CALLER_LIST, [paths["binary"]])
            other = [p for p in lists["exec"] if p != paths["binary"]][:1]
            k.allow_paths("exec", OTHER_CALLER_LIST, other)
        set_modes(k, "enforce")
        k.activate()
    except BaseException:
        k.close()
        raise
    return k


def set_modes(k: Kernel, open_mode: str) -> None:
    modes = {"exec": "enforce", "open": open_mode, "connect": "enforce"}
    k.set_agent(AGENT, AgentConfig(modes=modes, lists=dict(LISTS), rate_limit=1000))


def set_callers(k: Kernel, workload: str, caller: str) -> None:
    want = {
        "exec-caller": {caller: CALLER_LIST},
        "exec-caller-miss": {caller: OTHER_CALLER_LIST},
    }.get(workload, {})
    k.set_callers(LISTS["exec"], want)


def measure_one(
    k: Kernel,
    after: bool,
    workload: tuple[str, str, str, str | None, str, bool],
    loop: Path,
    cg: Path,
    arg: str,
    n: int,
    caller: str,
) -> dict[str, Any]:
    name, _, op, _, open_mode, _ = workload
    set_modes(k, open_mode)
    if after:
        set_callers(k, name, caller)
    dim = op if op in syscalls.OPS else "open"  # write: the file is opened once, then written
    c0 = k.counters(AGENT)[dim]
    s0 = syscalls._prog_stats()
    syscalls.run_loop(loop, cg, op, n, arg)
    s1 = syscalls._prog_stats()
    c1 = k.counters(AGENT)[dim]
    progs = {}
    for prog, (rt, cnt) in s1.items():
        runs = cnt - s0.get(prog, (0, 0))[1]
        if runs * 2 >= n:  # the programs that ran for each operation of the loop
            progs[prog] = {"runs": runs, "ns_per_run": (rt - s0.get(prog, (0, 0))[0]) / runs}
    counters = {f: c1[f] - c0[f] for f in c1}
    expect_allowed = open_mode == "enforce"
    if dim != op:
        ok = counters["allowed"] <= 1 and counters["denied"] == 0
    else:
        ok = counters["allowed"] >= n if expect_allowed else counters["allowed"] == 0
    return {"n": n, "programs": progs, "counters": counters, "as_expected": ok}


def guest(
    before: Path, after: Path, families: list[str], rounds: int, target_s: float, seed: int
) -> dict[str, Any]:
    tools = env.helpers()
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats_path.read_text().strip()
    stats_path.write_text("1")
    out: dict[str, Any] = {"machine": env.machine(), "load_start": env.load(), "families": {}}
    rng = random.Random(seed)
    try:
        with env.tmpfs() as root, env.cgroup() as cg:
            fx = syscalls.Fixture.make(root, tools["exit0"])
            files = make_files(root, fx)
            iters = syscalls.calibrate(tools["loop"], cg, fx, target_s)
            out["iterations"] = iters
            for family in families:
                backends = Backends.choose(family)
                paths = observe_paths(after, backends, cg, tools["loop"], files, fx.binary)
                lists = syscalls.worst_case_lists(
                    fx, {"open": paths["data"], "exec": paths["binary"]}
                )
                env.log(f"progcost: {family}: paths {paths}")
                samples = []
                for r in range(rounds):
                    order = [("before", before), ("after", after)]
                    if r % 2:
                        order.reverse()
                    for label, obj in order:
                        is_after = label == "after"
                        k = load(obj, is_after, backends, cg, lists, paths)
                        try:
                            wls = list(WORKLOADS)
                            rng.shuffle(wls)
                            for w in wls:
                                if w[5] and not is_after:
                                    continue
                                op, key = w[2], w[3]
                                arg = str(files[key]) if key else syscalls.op_arg(fx, op)
                                res = measure_one(
                                    k,
                                    is_after,
                                    w,
                                    tools["loop"],
                                    cg,
                                    arg,
                                    iters[op],
                                    paths["caller"],
                                )
                                samples.append(
                                    {"round": r, "object": label, "workload": w[0], **res}
                                )
                        finally:
                            k.close()
                    env.log(f"progcost: {family} round {r + 1}/{rounds} done")
                out["families"][family] = {
                    "backends": backends.__dict__,
                    "paths": paths,
                    "samples": samples,
                    "summary": summarize(samples),
                }
    finally:
        stats_path.write_text(old)
    out["load_end"] = env.load()
    return out


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """workload -> program -> {before, after: median ns/call (min, max)}, change %."""
    out: dict[str, Any] = {}
    for w in WORKLOADS:
        name = w[0]
        rows: dict[str, Any] = {}
        progs = sorted({p for s in samples if s["workload"] == name for p in s["programs"]})
        for prog in progs:
            row: dict[str, Any] = {}
            for label in ("before", "after"):
                ns = [
                    s["programs"][prog]["ns_per_run"]
                    for s in samples
                    if s["workload"] == name and s["object"] == label and prog in s["programs"]
                ]
                if ns:
                    lo, hi = spread(ns)
                    row[label] = {"median": median(ns), "min": lo, "max": hi, "rounds": len(ns)}
            if "before" in row and "after" in row:
                row["change_pct"] = (row["after"]["median"] / row["before"]["median"] - 1) * 100
            rows[prog] = row
        bad = [s for s in samples if s["workload"] == name and not s["as_expected"]]
        out[name] = {"programs": rows, "unexpected_samples": len(bad)}
    return out


# ---- the boots (host) -------------------------------------------------------------------------


def guest_command(
    python: str, objs: dict[str, Any], families: tuple[str, ...], rounds: int, target_s: float
) -> str:
    snap = shlex.quote(objs["python_snapshot"])
    return (
        f"cd {snap} && PYTHONPATH={snap}/daemon:{snap} PYTHONDONTWRITEBYTECODE=1 "
        f"{shlex.quote(python)} -m bench.progcost --guest "
        f"--before {shlex.quote(objs['before']['path'])} "
        f"--after {shlex.quote(objs['after']['path'])} --families {','.join(families)} "
        f"--rounds {rounds} --target-seconds {target_s}"
    )


def run_boot(
    series: str,
    python: str,
    objs: dict[str, Any],
    families: tuple[str, ...],
    rounds: int,
    target_s: float,
    timeout: int,
) -> dict[str, Any]:
    kernel = find_kernel(series)
    if kernel is None:
        return {"series": series, "error": f"no /boot/vmlinuz-{series}*"}
    env.log(f"progcost: booting {kernel} (BPF LSM active)")
    log = env.BUILD / "progcost" / f"{Path(kernel).name}.log"
    load0 = env.load()
    command = guest_command(python, objs, families, rounds, target_s)
    text, seconds = vm.boot(python, kernel, command, 1, LSM_APPEND, timeout, log)
    res = vm.marked(text, MARKER)
    if res is None:
        return {"series": series, "error": f"no result:\n{vm.tail(text)}"}
    res.update(
        series=series,
        kernel_image=Path(kernel).name,
        lsm_append=LSM_APPEND,
        seconds=seconds,
        host_load_start=load0,
        host_load_end=env.load(),
    )
    return res


def measure(
    rounds: int = 5,
    target_s: float = 0.3,
    families: tuple[str, ...] = FAMILIES,
    kernels: tuple[str, ...] = KERNELS,
    timeout: int = 1800,
) -> dict[str, Any]:
    env.build_helpers()
    objs = build_objects()
    env.log(f"progcost: objects {objs}")
    return {
        "host": env.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "objects": objs,
        "rounds": rounds,
        "workloads": {w[0]: w[1] for w in WORKLOADS},
        "boots": [
            run_boot(k, sys.executable, objs, families, rounds, target_s, timeout) for k in kernels
        ],
    }


# ---- the report -------------------------------------------------------------------------------

TITLE = "## Per-call cost before/after patterns and lineage"


def _ns(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    return f"{d['median']:,.0f} ({d['min']:,.0f} … {d['max']:,.0f})"


def table(res: dict[str, Any]) -> list[str]:
    rows = [
        "| kernel | backend | program | workload | before ns/call | after ns/call | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in res.get("boots", []):
        if "error" in b:
            rows.append(f"| {b['series']} | error: {b['error'].splitlines()[0][:80]} ||||||")
            continue
        for family, f in b["families"].items():
            for w in WORKLOADS:
                s = f["summary"].get(w[0], {})
                for prog, row in s.get("programs", {}).items():
                    ch = row.get("change_pct")
                    cell = "-" if ch is None else f"{ch:+.1f} %"
                    if ch is not None and ch > 0:
                        cell = f"**{cell}**"
                    mark = " (!)" if s.get("unexpected_samples") else ""
                    rows.append(
                        f"| {b['kernel_image']} | {family} | `{prog}` | {w[0]}{mark} | "
                        f"{_ns(row.get('before'))} | {_ns(row.get('after'))} | {cell} |"
                    )
    return rows


def slower(
    res: dict[str, Any], threshold: float = 0.0
) -> list[tuple[str, str, str, str, float, bool]]:
    """(kernel, backend, program, workload, change %, whether every after round was slower
    than every before round) for each median that went up."""
    out = []
    for b in res.get("boots", []):
        for family, f in b.get("families", {}).items():
            for w, s in f["summary"].items():
                for prog, row in s["programs"].items():
                    ch = row.get("change_pct")
                    if ch is not None and ch > threshold:
                        clear = row["after"]["min"] > row["before"]["max"]
                        out.append((b["series"], family, prog, w, ch, clear))
    return out


def section(res: dict[str, Any]) -> list[str]:
    head = [TITLE, ""]
    if not res.get("boots"):
        return [*head, "Not measured in this run (`python -m bench --parts progcost`).", ""]
    objs = res["objects"]
    rounds = res["rounds"]
    fams = sorted({f for b in res["boots"] for f in b.get("families", {})})
    backends = " and ".join({"lsm": "BPF LSM", "fmod_ret": "fmod_ret"}.get(f, f) for f in fams)
    method = (
        f"Measured {res['date']}. One boot per Debian kernel under QEMU/TCG with `bpf` in "
        f"`lsm=`; in the same boot, for the {backends} backend{'s' if len(fams) > 1 else ''}, "
        f"{rounds} rounds, each loading one object, filling its lists, measuring every workload "
        f"(in a random order) and unloading it, then the other object (which goes first "
        f"alternates). *before*: corral.bpf.o built from {objs['before']['commit']} (the parent "
        f"of the patterns commit b43592a); *after*: built from {objs['after']['commit']} "
        f"(patterns b43592a and exec lineage adddd52); both from `git show` of their bpf/ "
        f"sources with the Makefile's BPF_CFLAGS, both driven by {objs['after']['commit']}'s "
        f"Python (a `git archive` snapshot; uncommitted work in the checkout is not measured), "
        f"which for *before* touches only the maps both objects have. ns/call: the program's "
        f"`run_time_ns / run_cnt` delta (`kernel.bpf_stats_enabled`, on for the whole run) "
        f"over the C loop of `bench/csrc/loop.c` run in the agent's cgroup, median of the "
        f"rounds (min … max); listed are the programs that ran once per operation "
        f"(`corral_*_open` also runs for each exec: execve opens the program). Lists as in "
        f"*Syscall overhead* (10,000 entries of ~240-byte paths per dimension, the checked "
        f"object allowed, connect allowed by the second lookup), plus for open a directory "
        f"prefix and, on *after*, one pattern `…/t/{PATTERN_GLOB}` and the lineage entries the "
        f"exec workloads name (the loop binary is the caller). Exec, connect and the allowed "
        f"opens run in ENFORCE; the opens in no list in ALERT (a deviation, its report "
        f"suppressed after the first). The harness's own few calls (bpftool, the loop's "
        f"start) are in the counts of both objects alike. TCG emulates the CPU: compare only "
        f"rows of the same boot. Raw numbers: `progcost` in "
        f"[benchmarks/results.json](benchmarks/results.json)."
    )
    workloads = [f"- **{k}**: {v}" for k, v in res["workloads"].items()]
    slow = slower(res)
    if slow:
        verdict = (
            "**Slower per call** (after vs before, median; *beyond the spread*: every after "
            "round slower than every before round): "
            + "; ".join(
                f"`{p}` on {s} ({f}), {w}: {ch:+.1f} %" + (" *beyond the spread*" if c else "")
                for s, f, p, w, ch, c in slow
            )
            + "."
        )
    else:
        verdict = "No program got slower per call in any workload."
    by_prog: dict[str, list[tuple[str, str, float, bool]]] = {}
    for s, _f, p, w, ch, c in slow:
        by_prog.setdefault(p, []).append((s, w, ch, c))
    gist = [
        f"- `{p}`: slower in {len(v)} (kernel, workload) pairs, by "
        f"{min(x[2] for x in v):+.0f} … {max(x[2] for x in v):+.0f} %; beyond the spread in "
        f"{sum(x[3] for x in v)}: "
        + (", ".join(f"{w} on {s} ({ch:+.0f} %)" for s, w, ch, c in v if c) or "none")
        for p, v in sorted(by_prog.items())
    ]
    bad = [
        (b["series"], fam, w)
        for b in res["boots"]
        for fam, f in b.get("families", {}).items()
        for w, s in f["summary"].items()
        if s.get("unexpected_samples")
    ]
    checks = (
        "Every sample's counters matched its workload (allowed opens, execs and connects "
        "counted as allowed; the ALERT opens never)."
        if not bad
        else "(!) counters did not match the workload in: "
        + ", ".join(f"{s} {f} {w}" for s, f, w in bad)
    )
    summary = ["In short, by program:", "", *gist, ""] if gist else []
    return [*head, method, "", *workloads, "", *table(res), "", *summary, verdict, "", checks, ""]


def splice(
    doc: Path,
    lines: list[str],
    before_title: str = "## Beside published figures",
    title: str = TITLE,
) -> None:
    """Puts the section into the generated document without regenerating the rest: replaces a
    section of the same title, else goes before before_title."""
    text = doc.read_text().splitlines()
    block = [*lines]
    if title in text:
        i = text.index(title)
        j = next((n for n in range(i + 1, len(text)) if text[n].startswith("## ")), len(text))
        text[i:j] = block
    elif before_title in text:
        i = text.index(before_title)
        text[i:i] = block
    else:
        text += ["", *block]
    doc.write_text("\n".join(text).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guest", action="store_true", help="inside a guest")
    ap.add_argument("--before", type=Path)
    ap.add_argument("--after", type=Path)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--target-seconds", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=env.BUILD / "results" / "progcost.json")
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="also put the section into docs/benchmarks.md and the raw numbers "
        "into docs/benchmarks/results.json (key progcost), leaving the rest as is",
    )
    a = ap.parse_args(argv)
    env.quiet()
    families = [f for f in a.families.split(",") if f]
    if a.guest:
        res = guest(a.before, a.after, families, a.rounds, a.target_seconds, a.seed)
        print(MARKER + json.dumps(res), flush=True)
        return 0
    t0 = time.monotonic()
    res = measure(a.rounds, a.target_seconds, tuple(families), tuple(a.kernels.split(",")))
    res["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print("\n".join(section(res)))
    if a.write_doc:
        from . import report

        data = json.loads(report.DATA.read_text()) if report.DATA.exists() else {}
        data["progcost"] = res
        report.DATA.write_text(json.dumps(data, indent=1, sort_keys=True))
        splice(report.DOC, section(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
