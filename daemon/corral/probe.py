"""Kernel probe: what this kernel offers corral, found by trying, and which backend enforces what.

Every answer comes from the running kernel: files it exposes, mounts, and real BPF_PROG_LOADs of
the tiny programs in bpf/probe.bpf.c. Nothing is inferred from version numbers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bpfkit import BpfError, BpfObject, libbpf_version

from .kernel import Backends, object_path

log = structlog.get_logger("corral.probe")

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
BPFFS = Path("/sys/fs/bpf")
SECURITYFS = Path("/sys/kernel/security")
TRACEFS = Path("/sys/kernel/tracing")
OPEN_TRACEPOINT = "events/syscalls/sys_enter_openat"

PROBE_PROGRAMS = {
    "lsm": "probe_lsm",
    "tp_btf": "probe_tp_btf",
    "cgroup_sock_addr": "probe_cgroup_sock_addr",
    "ringbuf": "probe_ringbuf",
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
    capabilities: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def lsm(self) -> bool:
        return self.checks["lsm_program"].ok

    def backends(self) -> Backends:
        return Backends.choose(self.lsm, open_fallback=self.capabilities["open"]["backend"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mount(source: str, target: Path, fstype: str) -> str | None:
    """mount(2) through libc; returns an error string or None."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, None) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def _mounted(target: Path, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(len(p) > 2 and p[1] == str(target) and p[2] == fstype for p in map(str.split, f))


def ensure_mount(target: Path, fstype: str) -> Check:
    if _mounted(target, fstype):
        return Check(True, f"{fstype} mounted at {target}")
    err = _mount(fstype, target, fstype)
    if err:
        return Check(False, f"{fstype} not mounted at {target} and mounting failed: {err}")
    return Check(True, f"{fstype} was not mounted; mounted it at {target}")


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
        if kind == "lsm" and e.errno == 1:
            hint = " (typical of kernels without ftrace-patchable functions / BPF trampolines)"
        return Check(False, f"load failed: {os.strerror(e.errno or 0)}{hint}")
    return Check(True, "loads")


def _fallback_open(checks: dict[str, Check], fallback_open: str) -> dict[str, str]:
    if fallback_open == "off":
        return {
            "mode": "unwatched",
            "backend": "none",
            "how": "not watched: kernel.fallback_open is off (no BPF LSM here)",
        }
    if checks["syscall_tracepoints"].ok:
        return {
            "mode": "observe-only",
            "backend": "tracepoint",
            "how": "reported, never denied: needs BPF LSM to enforce (syscall tracepoints)",
        }
    if checks["tp_btf_program"].ok:
        return {
            "mode": "observe-only",
            "backend": "sys_enter",
            "how": "reported, never denied: needs BPF LSM to enforce (tp_btf/sys_enter: runs "
            "for every syscall)",
        }
    return {"mode": "unavailable", "backend": "none", "how": "no open hook loads"}


def capability_matrix(
    checks: dict[str, Check], fallback_open: str = "report"
) -> dict[str, dict[str, str]]:
    lsm = checks["lsm_program"].ok
    tp = checks["tp_btf_program"].ok
    cg = checks["cgroup_sock_addr_program"].ok
    caps: dict[str, dict[str, str]] = {}
    if lsm:
        for dim in ("exec", "open", "connect"):
            caps[dim] = {"mode": "enforce", "backend": "lsm", "how": "denied with EPERM"}
        return caps
    caps["exec"] = (
        {
            "mode": "kill",
            "backend": "tracepoint",
            "how": "killed with SIGKILL before the new image runs (not EPERM)",
        }
        if tp
        else {"mode": "unavailable", "backend": "none", "how": "no exec hook loads"}
    )
    caps["open"] = _fallback_open(checks, fallback_open)
    caps["connect"] = (
        {"mode": "enforce", "backend": "cgroup", "how": "denied with EPERM (cgroup/connect4/6)"}
        if cg
        else {"mode": "unavailable", "backend": "none", "how": "no connect hook loads"}
    )
    return caps


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
    res.capabilities = capability_matrix(c, fallback_open)
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
