"""Hooks proven by their effect.

A BPF program that loads and attaches has not been shown to run: BPF LSM programs load and
attach on every kernel built with CONFIG_BPF_LSM, and where `bpf` is not in the active LSM list
(Debian's and Ubuntu's default) they sit on stubs nothing calls. So a hook family counts only
once its programs (bpf/probe.bpf.c, effect_*) were seen to run for real operations: a child
process execs, opens and connects once, the programs count and deny what it does (they act on
that one process and nothing else), and the child reports what it saw.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bpfkit import BpfError, BpfObject, Link, Map, Program

from . import hostfs, layout
from .layout import DIMS

# The child: says "ready" once started (the hooks act on it only after that: its own start-up
# opens files), waits for "go", opens, connects, reports, then execs (last: an exec that works
# replaces it). Everything it needs is imported before "ready". What it opens and execs are
# files the parent holds open and passes down (an unnamed temporary file, reopened through
# /proc/self/fd; /bin/true, exec'd by fd): no name in a shared directory that a process on the
# node could swap for a dangling link, making the operation fail before the hook runs.
CHILD = r"""
import json, os, socket, sys
target, port, exe_fd, exe = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
path = f"/proc/self/fd/{target}"
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
seen = {}
try:
    os.close(os.open(path, os.O_RDONLY))
    seen["open"] = "allowed"
except OSError as e:
    seen["open"] = e.errno
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(("127.0.0.1", port))
    seen["connect"] = "allowed"
except ConnectionRefusedError:
    seen["connect"] = "allowed"
except OSError as e:
    seen["connect"] = e.errno
s.close()
sys.stdout.write(json.dumps(seen) + "\n")
sys.stdout.flush()
try:
    os.execve(exe_fd, [exe], {})
except OSError as e:
    sys.stdout.write(json.dumps({"exec": e.errno}) + "\n")
    sys.stdout.flush()
"""
CHILD_TIMEOUT = 120.0  # seconds; a Python start under QEMU's emulation takes a few


@dataclass(frozen=True)
class Effect:
    """One hook of one family, as seen by the probe's child."""

    program: str
    attached: bool
    hits: int  # operations of the child the program saw
    seen: str  # what the child saw: "EPERM", "allowed", "killed", another errno's name, "-"
    detail: str

    @property
    def fired(self) -> bool:
        return self.hits > 0

    def shows(self, wanted: str) -> bool:
        """The hook ran and the child saw what enforcement by it looks like."""
        return self.fired and self.seen == wanted


def run_round(
    programs: dict[str, str], obj_path: Path, cgroup_root: Path | None
) -> dict[str, Effect]:
    """Attaches programs (dimension -> program in obj_path) together, runs the child once, and
    says per dimension what happened. Never raises for a kernel that says no."""
    with BpfObject.open_file(str(obj_path)) as obj:
        for name, prog in obj.programs.items():
            prog.autoload = name in programs.values()
        try:
            obj.load()
        except BpfError as e:
            why = f"does not load here: {os.strerror(e.errno or 0)}"
            return {d: Effect(p, False, 0, "-", why) for d, p in programs.items()}
        with contextlib.ExitStack() as stack:
            cgroup = stack.enter_context(_throwaway_cgroup(cgroup_root))
            attached: dict[str, str] = {}
            for dim, name in programs.items():
                attached[dim] = _attach(stack, obj.programs[name], cgroup)
            state = obj.maps["probe_state"]
            seen = _run_child(state, cgroup)
            hits = _hits(state)
    return {
        dim: Effect(
            name,
            attached[dim] == "",
            hits[dim],
            seen.get(dim, "-"),
            attached[dim] or _describe(hits[dim], seen.get(dim, "-")),
        )
        for dim, name in programs.items()
    }


def _attach(stack: contextlib.ExitStack, prog: Program, cgroup: Path | None) -> str:
    """Attaches prog for the round; '' or why it could not be."""
    try:
        if prog.section.startswith("cgroup/"):
            if cgroup is None:
                return "not attached: no cgroup v2 directory could be made for the probe"
            link: Link = prog.attach_cgroup(str(cgroup))
        else:
            if prog.section.startswith("tracepoint/"):
                hostfs.ensure_tracefs()
            link = prog.attach()
    except (BpfError, hostfs.MountError) as e:
        return f"loads, attach failed: {e}".splitlines()[0]
    stack.callback(link.destroy)
    return ""


def _describe(hits: int, seen: str) -> str:
    if hits == 0:
        return f"attached, never ran for the probe's operation (the child saw: {seen})"
    return f"ran ({hits}x); the child saw: {seen}"


@contextlib.contextmanager
def _throwaway_cgroup(root: Path | None) -> Iterator[Path | None]:
    """A fresh cgroup for the child (cgroup programs attach to it alone); None where none can be
    made."""
    if root is None:
        yield None
        return
    path = root / f"corral-probe-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


def _closed_port() -> int:
    """A loopback port nothing listens on: an allowed connect is refused, a denied one EPERM."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_child(state: Map, cgroup: Path | None) -> dict[str, str]:
    exe = shutil.which("true") or "/bin/true"
    with tempfile.TemporaryFile(prefix="corral-probe-") as target, open(exe, "rb") as binary:
        fds = (target.fileno(), binary.fileno())
        args = [str(fds[0]), str(_closed_port()), str(fds[1]), exe]
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", CHILD, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=fds,
        )
        assert child.stdout is not None
        try:
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text(str(child.pid))
            if child.stdout.readline() != b"ready\n":
                _, err = child.communicate(timeout=CHILD_TIMEOUT)
                raise RuntimeError(f"the probe's child did not start: {err.decode()[-500:]}")
            _set_state(state, child.pid)
            out, _ = child.communicate(b"go\n", timeout=CHILD_TIMEOUT)
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            _set_state(state, 0)
    return _read_outcome(out.decode(errors="replace"), child.returncode)


def _read_outcome(out: str, returncode: int) -> dict[str, str]:
    seen: dict[str, str] = {}
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            seen.update({k: _name(v) for k, v in json.loads(line).items()})
    if "exec" not in seen:
        seen["exec"] = {0: "allowed", -9: "killed"}.get(returncode, f"exit status {returncode}")
    return seen


def _name(v: str | int) -> str:
    return v if isinstance(v, str) else errno.errorcode.get(v, str(v))


def _empty_state() -> bytes:
    return bytes(layout.sizeof("struct corral_probe"))


def _set_state(state: Map, tgid: int) -> None:
    """Points the hooks at tgid (0: at nobody), keeping the counts."""
    v = layout.from_bytes("struct corral_probe", state.lookup(bytes(4)) or _empty_state())
    v.tgid = tgid
    v.deny = 1
    state.update(bytes(4), layout.to_bytes(v))


def _hits(state: Map) -> dict[str, int]:
    v = layout.from_bytes("struct corral_probe", state.lookup(bytes(4)) or _empty_state())
    return {d: int(v.hits[i]) for i, d in enumerate(DIMS)}
