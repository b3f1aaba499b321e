"""Kernel probe: what this kernel offers corral, found by trying, and which backend enforces what.

Every answer comes from the running kernel: files it exposes, mounts, and real BPF_PROG_LOADs of
the tiny programs in bpf/probe.bpf.c. Nothing is inferred from version numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bpfkit import BpfError, BpfObject, libbpf_version

from . import hostfs
from .effect import Effect, run_round
from .hostfs import BPFFS, SECURITYFS, TRACEFS
from .loader import Backends, cgroup2_root, object_path

log = structlog.get_logger("corral.probe")

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
OPEN_TRACEPOINT = "events/syscalls/sys_enter_openat"

# Load-only probes: does this program type load here.
PROBE_PROGRAMS = {
    "lsm": "effect_lsm_open",
    "fmod_ret": "effect_fmod_open",
    "tp_btf": "probe_tp_btf",
    "cgroup_sock_addr": "effect_cg_connect4",
    "ringbuf": "probe_ringbuf",
}

# Probes by effect, one round per hook family: the round's programs are attached together and
# the probe's child execs, opens and connects once.
EFFECT_PROGRAMS: dict[str, dict[str, str]] = {
    "lsm": {"exec": "effect_lsm_exec", "open": "effect_lsm_open", "connect": "effect_lsm_connect"},
    "fmod_ret": {
        "exec": "effect_fmod_exec",
        "open": "effect_fmod_open",
        "connect": "effect_fmod_connect",
    },
    "fallback": {
        "exec": "effect_tp_exec",
        "open": "effect_tp_openat",
        "connect": "effect_cg_connect4",
    },
}
# What the child must see where a family's hook enforces (tracepoint exec: killed after exec).
EFFECT_WANTED = {
    ("lsm", "exec"): "EPERM",
    ("lsm", "open"): "EPERM",
    ("lsm", "connect"): "EPERM",
    ("fmod_ret", "exec"): "EPERM",
    ("fmod_ret", "open"): "EPERM",
    ("fmod_ret", "connect"): "EPERM",
    ("fallback", "exec"): "killed",
    ("fallback", "open"): "allowed",
    ("fallback", "connect"): "EPERM",
}


@dataclass
class Check:
    ok: bool
    detail: str


@dataclass
class ProbeResult:
    kernel: str
    arch: str
    libbpf: str
    checks: dict[str, Check] = field(default_factory=dict)
    # hook family -> dimension -> what its program did for the probe's child
    effects: dict[str, dict[str, Effect]] = field(default_factory=dict)
    capabilities: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def lsm(self) -> bool:
        """BPF LSM decides here: `bpf` is an active LSM and each LSM hook was seen to deny."""
        return proven("lsm", self.checks, self.effects)

    @property
    def deny(self) -> str | None:
        """The family that denies exec, open and connect here ('lsm', 'fmod_ret'), if any."""
        return deny_family(self.checks, self.effects)

    def backends(self) -> Backends:
        return Backends.choose(self.deny, open_fallback=self.capabilities["open"]["backend"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_mount(target: Path, fstype: str) -> Check:
    res = hostfs.ensure_mount(target, fstype)
    return Check(res.ok, res.detail)


def _cgroup2() -> Check:
    with open("/proc/self/mounts") as f:
        mounts = [p for p in map(str.split, f) if len(p) > 2 and p[2] == "cgroup2"]
    if not mounts:
        return Check(False, "no cgroup v2 hierarchy mounted: corral keys agents by cgroup v2 id")
    where = mounts[0][1]
    hybrid = " (hybrid layout: v1 controllers beside it)" if where != "/sys/fs/cgroup" else ""
    return Check(True, f"cgroup2 at {where}{hybrid}")


def _active_lsms(securityfs: Check) -> Check:
    path = SECURITYFS / "lsm"
    if not securityfs.ok or not path.exists():
        return Check(False, "securityfs unavailable: cannot read the active LSM list")
    lsms = path.read_text().strip()
    if "bpf" not in lsms.split(","):
        return Check(False, f"{lsms} — 'bpf' missing: boot with lsm=...,bpf to enable BPF LSM")
    return Check(True, lsms)


def _syscall_tracepoints(tracefs: Check) -> Check:
    """libbpf finds a tracepoint's id in tracefs (/sys/kernel/tracing, or debugfs's tracing/)."""
    for root in (TRACEFS, Path("/sys/kernel/debug/tracing")):
        if (root / OPEN_TRACEPOINT).is_dir():
            return Check(True, f"{root}/events/syscalls/sys_enter_open*")
    if not tracefs.ok:
        return Check(False, f"{tracefs.detail}: syscall tracepoints cannot be attached")
    return Check(
        False, "no syscalls/sys_enter_openat event (kernel without CONFIG_FTRACE_SYSCALLS)"
    )


@contextlib.contextmanager
def _quiet_libbpf() -> Any:
    """A failed probe load is an answer, not a warning: keep libbpf's complaint at debug level."""
    lg = logging.getLogger("bpfkit")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def try_program(kind: str, obj_path: Path | None = None) -> Check:
    """Loads one probe program on its own; the kernel's answer is the result."""
    name = PROBE_PROGRAMS[kind]
    try:
        with (
            _quiet_libbpf(),
            BpfObject.open_file(str(obj_path or object_path("probe.bpf.o"))) as obj,
        ):
            for pname, prog in obj.programs.items():
                prog.autoload = pname == name
            obj.load()
    except BpfError as e:
        hint = ""
        if kind in DENY_FAMILIES and e.errno == 1:
            hint = " (typical of kernels without ftrace-patchable functions / BPF trampolines)"
        return Check(False, f"load failed: {os.strerror(e.errno or 0)}{hint}")
    return Check(True, "loads")


# The families that deny all three dimensions with EPERM, in order of preference.
DENY_FAMILIES = ("lsm", "fmod_ret")
_DENY_HOW = {
    "lsm": "denied with EPERM by BPF LSM (seen: the probe's child was denied)",
    "fmod_ret": "denied with EPERM by fmod_ret on security_* (seen: the probe's child was denied)",
}


def proven(family: str, checks: dict[str, Check], effects: dict[str, dict[str, Effect]]) -> bool:
    """Each hook of the family was seen to act as enforcement by it looks (and, for LSM, `bpf`
    is an active LSM)."""
    eff = effects.get(family, {})
    ok = bool(eff) and all(eff[d].shows(EFFECT_WANTED[family, d]) for d in eff)
    return ok and (family != "lsm" or checks["bpf_lsm_active"].ok)


def deny_family(checks: dict[str, Check], effects: dict[str, dict[str, Effect]]) -> str | None:
    return next((f for f in DENY_FAMILIES if proven(f, checks, effects)), None)


def _family_check(
    family: str, checks: dict[str, Check], effects: dict[str, dict[str, Effect]]
) -> Check:
    if proven(family, checks, effects):
        return Check(True, "exec, open and connect of the probe's child denied with EPERM")
    eff = effects.get(family, {})
    if not eff:
        earlier = deny_family(checks, effects)
        if earlier is not None:
            return Check(True, f"not needed: {earlier} denies every dimension here")
        return Check(False, "not tried: " + checks[f"{family}_program"].detail)
    bad = [f"{d}: {e.detail}" for d, e in eff.items() if not e.shows(EFFECT_WANTED[family, d])]
    if family == "lsm" and not checks["bpf_lsm_active"].ok and not bad:
        bad = ["the hooks ran, yet 'bpf' is not in the active LSM list"]
    return Check(False, "; ".join(bad))


def _fallback_check(effects: dict[str, dict[str, Effect]]) -> Check:
    fb = effects.get("fallback")
    if fb is None:
        return Check(True, "not needed: a family above denies every dimension")
    parts = [f"{d}: {e.detail}" for d, e in fb.items()]
    return Check(
        all(e.shows(EFFECT_WANTED["fallback", d]) for d, e in fb.items()), "; ".join(parts)
    )


def _fallback_open(
    checks: dict[str, Check], effect: Effect | None, fallback_open: str
) -> dict[str, str]:
    if fallback_open == "off":
        return {
            "mode": "unwatched",
            "backend": "none",
            "how": "not watched: kernel.fallback_open is off (neither BPF LSM nor fmod_ret "
            "acts here)",
        }
    if effect is not None and effect.fired:
        return {
            "mode": "observe-only",
            "backend": "tracepoint",
            "how": "reported, never denied: needs BPF LSM or fmod_ret to enforce (syscall "
            "tracepoints, seen to run)",
        }
    if checks["tp_btf_program"].ok:
        return {
            "mode": "observe-only",
            "backend": "sys_enter",
            "how": "reported, never denied: needs BPF LSM or fmod_ret to enforce "
            "(tp_btf/sys_enter: runs for every syscall)",
        }
    why = effect.detail if effect is not None else "no open hook loads"
    return {"mode": "unavailable", "backend": "none", "how": f"no open hook: {why}"}


def capability_matrix(
    checks: dict[str, Check],
    effects: dict[str, dict[str, Effect]],
    fallback_open: str = "report",
) -> dict[str, dict[str, str]]:
    """What each dimension gets here, from what the probe's child saw, never from a load."""
    caps: dict[str, dict[str, str]] = {}
    family = deny_family(checks, effects)
    if family is not None:
        for dim in ("exec", "open", "connect"):
            caps[dim] = {"mode": "enforce", "backend": family, "how": _DENY_HOW[family]}
        return caps
    fb = effects.get("fallback", {})
    exec_ = fb.get("exec")
    caps["exec"] = (
        {
            "mode": "kill",
            "backend": "tracepoint",
            "how": "killed with SIGKILL before the new image runs, not EPERM (seen: the probe's "
            "child was killed)",
        }
        if exec_ is not None and exec_.shows(EFFECT_WANTED["fallback", "exec"])
        else {
            "mode": "unavailable",
            "backend": "none",
            "how": f"no exec hook: {exec_.detail if exec_ else 'none loads'}",
        }
    )
    caps["open"] = _fallback_open(checks, fb.get("open"), fallback_open)
    conn = fb.get("connect")
    caps["connect"] = (
        {
            "mode": "enforce",
            "backend": "cgroup",
            "how": "denied with EPERM, cgroup/connect4/6 (seen: the probe's child was denied)",
        }
        if conn is not None and conn.shows(EFFECT_WANTED["fallback", "connect"])
        else {
            "mode": "unavailable",
            "backend": "none",
            "how": f"no connect hook: {conn.detail if conn else 'none loads'}",
        }
    )
    return caps


def prove_effects(
    checks: dict[str, Check], obj_path: Path | None = None, cgroup_root: Path | None = None
) -> dict[str, dict[str, Effect]]:
    """Runs the probe's child under the hook families that load, in order of preference (BPF
    LSM, fmod_ret, the fallback hooks), until one denies all three dimensions; the fallback
    family runs where none does."""
    obj = obj_path or object_path("probe.bpf.o")
    if cgroup_root is None and checks["cgroup2"].ok:
        cgroup_root = cgroup2_root()
    effects: dict[str, dict[str, Effect]] = {}
    with _quiet_libbpf():
        for family in DENY_FAMILIES:
            if checks[f"{family}_program"].ok:
                effects[family] = run_round(EFFECT_PROGRAMS[family], obj, cgroup_root)
                if proven(family, checks, effects):
                    return effects
        effects["fallback"] = run_round(EFFECT_PROGRAMS["fallback"], obj, cgroup_root)
    return effects


def run_probe(fallback_open: str = "report") -> ProbeResult:
    """fallback_open: kernel.fallback_open, what to do about opens where BPF LSM is missing."""
    res = ProbeResult(kernel=platform.release(), arch=platform.machine(), libbpf=libbpf_version())
    c = res.checks
    c["btf"] = Check(
        BTF_PATH.exists(),
        str(BTF_PATH)
        if BTF_PATH.exists()
        else "no /sys/kernel/btf/vmlinux: CO-RE needs a kernel built with CONFIG_DEBUG_INFO_BTF",
    )
    c["cgroup2"] = _cgroup2()
    c["bpffs"] = ensure_mount(BPFFS, "bpf")
    c["securityfs"] = ensure_mount(SECURITYFS, "securityfs")
    c["bpf_lsm_active"] = _active_lsms(c["securityfs"])
    c["tracefs"] = ensure_mount(TRACEFS, "tracefs")
    c["syscall_tracepoints"] = _syscall_tracepoints(c["tracefs"])
    for kind in PROBE_PROGRAMS:
        c[f"{kind}_program"] = try_program(kind)
    res.effects = prove_effects(c)
    for family in DENY_FAMILIES:
        c[f"{family}_effect"] = _family_check(family, c, res.effects)
    c["fallback_effect"] = _fallback_check(res.effects)
    res.capabilities = capability_matrix(c, res.effects, fallback_open)
    log.debug("probe done", **{k: v.ok for k, v in c.items()})
    return res


def render_table(res: ProbeResult) -> str:
    lines = [
        f"kernel {res.kernel} ({res.arch}), libbpf {res.libbpf}",
        "",
        "CHECK".ljust(26) + "RESULT",
    ]
    for name, chk in res.checks.items():
        lines.append(f"{name:<26}{'ok  ' if chk.ok else 'NO  '}{chk.detail}")
    lines += ["", f"{'DIMENSION':<12}{'ENFORCEMENT':<15}{'BACKEND':<12}HOW"]
    for dim, cap in res.capabilities.items():
        lines.append(f"{dim:<12}{cap['mode']:<15}{cap['backend']:<12}{cap['how']}")
    return "\n".join(lines)
