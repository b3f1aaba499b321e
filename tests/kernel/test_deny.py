"""The backends that deny with EPERM: BPF LSM, and fmod_ret on the security_* functions where
BPF LSM is not active. Runs in the VM suite: booted with `bpf` in lsm= these tests run on the LSM
backend, booted without it on fmod_ret (the same decisions, another attachment)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from corral.kernel import layout, probe
from corral.kernel.keys import path_key

from .conftest import Agent, Collector, connect_child, open_child, run_in_cgroup
from .test_guard import CLONE_NEWNS, MS_PRIVATE, MS_REC, _check, libc

pytestmark = pytest.mark.deny


def test_probe_says_all_three_enforce_via_the_expected_family() -> None:
    """BPF LSM where `bpf` is an active LSM, fmod_ret where it is not (CORRAL_VM_LSM: the boot)."""
    want = "fmod_ret" if os.environ.get("CORRAL_VM_LSM") == "inactive" else "lsm"
    res = probe.run_probe()
    for dim in ("exec", "open", "connect"):
        assert res.capabilities[dim]["mode"] == "enforce", res.capabilities
        assert res.capabilities[dim]["backend"] == want, res.checks


def test_open_enforce_denies_with_eperm(agent: Agent, workdir: Path) -> None:
    ok, bad = workdir / "ok.txt", workdir / "secret.txt"
    ok.write_text("x")
    bad.write_text("y")
    agent.kern.allow_paths("open", agent.lists["open"], [str(ok)])
    agent.configure(open="enforce")
    assert agent.run(open_child(ok)).value == "opened"
    assert agent.run(open_child(bad)).error == errno.EPERM


def test_open_directory_prefix(agent: Agent, workdir: Path) -> None:
    data = workdir / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "f").write_text("1")
    (workdir / "data-other").write_text("2")
    agent.kern.allow_paths("open", agent.lists["open"], [], prefixes=[str(data)])
    agent.configure(open="enforce")
    assert agent.run(open_child(data / "sub" / "f")).value == "opened"
    assert agent.run(open_child(workdir / "data-other")).error == errno.EPERM


def test_open_overlong_path_fails_closed(agent: Agent, workdir: Path, collector: Collector) -> None:
    deep = workdir
    while len(str(deep)) < layout.C.CORRAL_PATH_MAX + 20:
        deep = deep / ("d" * 40)
    deep.mkdir(parents=True)
    target = deep / "f"
    target.write_text("x")
    agent.kern.allow_paths("open", agent.lists["open"], [], prefixes=[str(workdir)])
    agent.configure(open="enforce")
    res = agent.run(open_child(target))
    assert res.error == errno.EPERM
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "open")
    assert "toolong" in ev.flags and ev.verdict == "denied"


def test_open_path_golden(agent: Agent, workdir: Path, collector: Collector) -> None:
    """The kernel reports the resolved path Python computes, and finds Python's key for it."""
    f = workdir / "golden.txt"
    f.write_text("g")
    link = workdir / "link.txt"
    link.symlink_to(f)
    agent.configure(open="observe")
    res = agent.run(open_child(link))
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "open")
    assert ev.path == os.path.realpath(link) == str(f)
    k = path_key(agent.lists["open"], ev.path, prefix=False)
    agent.kern.allow_paths("open", agent.lists["open"], [os.path.realpath(link)])
    k.prefixlen = 8 * (layout.sizeof("struct corral_path_key") - 4)
    assert agent.kern.map("open_exact").lookup(layout.to_bytes(k)) is not None
    agent.configure(open="enforce")
    assert agent.run(open_child(link)).value == "opened"


def test_exec_denied_is_eperm_not_kill(agent: Agent, collector: Collector, backends) -> None:
    agent.configure(exec="enforce")
    res = agent.run(lambda: os.execv("/bin/true", ["/bin/true"]))
    assert res.error == errno.EPERM and res.signal is None
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "exec")
    assert ev.verdict == "denied" and ev.backend == backends.exec
    assert ev.path == os.path.realpath("/bin/true")


def test_exec_is_judged_by_the_exec_hook_not_file_open(agent: Agent, collector: Collector) -> None:
    """execve opens the program (__FMODE_EXEC): that open belongs to the exec dimension, so a
    novel program under exec+open ENFORCE is reported as a denied exec, not a denied open."""
    true = os.path.realpath("/bin/true")
    agent.kern.allow_paths("open", agent.lists["open"], [], prefixes=["/"])
    agent.configure(exec="enforce", open="enforce")
    res = agent.run(lambda: os.execv(true, [true]))
    assert res.error == errno.EPERM
    ev = collector.wait(lambda e: e.pid == res.pid and e.verdict == "denied")
    assert (ev.dimension, ev.path) == ("exec", true)
    agent.kern.allow_paths("exec", agent.lists["exec"], [true])
    agent.kern.clear_list("open", agent.lists["open"])
    res = agent.run(lambda: os.execv(true, [true]))
    # execve itself now passes; the loader's open of libc is an ordinary open, and is denied
    assert res.error is None and res.exit_code == 127


def test_connect_reports_ppid(agent: Agent, collector: Collector, backends) -> None:
    agent.configure(connect="enforce")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", port))
    assert res.error == errno.EPERM
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "connect")
    assert ev.ppid == os.getpid() and ev.backend == backends.connect


def test_proc_normalised_entry_enforced(agent: Agent) -> None:
    agent.kern.allow_paths("open", agent.lists["open"], ["/proc/*/stat"])
    agent.configure(open="enforce")

    def read(name: str):
        def body() -> str:
            with open(f"/proc/{os.getpid()}/{name}", "rb") as f:
                f.read(1)
            return "opened"

        return body

    assert agent.run(read("stat")).value == "opened"
    assert agent.run(read("environ")).error == errno.EPERM


def test_overlayfs_files_are_judged_by_the_path_the_agent_named(
    agent: Agent, workdir: Path
) -> None:
    """An agent on overlayfs (a container's root; virtme's /tmp): from 6.8 the kernel opens each
    overlay file's backing file too, and copy-up opens the lower file, on a private clone of the
    layer's mount, whose paths (`/f`, relative to the layer) no baseline has. Only the open the
    agent asked for is judged: the allowed directory opens, reads, copies up and creates; a file
    beside it is still denied."""
    for d in ("lower", "upper", "work", "merged"):
        (workdir / d).mkdir()
    (workdir / "lower" / "f").write_text("lower-data")
    (workdir / "lower" / "secret").write_text("s")
    merged = workdir / "merged"
    allowed = [str(merged), f"{merged}/f", f"{merged}/f.new"]
    agent.kern.allow_paths("open", agent.lists["open"], allowed)
    agent.configure(open="enforce")

    def setup() -> None:  # as a container runtime does, before the agent joins its cgroup
        _check(libc.unshare(CLONE_NEWNS))
        _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
        opts = f"lowerdir={workdir}/lower,upperdir={workdir}/upper,workdir={workdir}/work"
        _check(libc.mount(b"overlay", str(merged).encode(), b"overlay", 0, opts.encode()))

    def go() -> str:
        data = (merged / "f").read_text()
        with open(merged / "f", "a") as f:  # copy-up: the kernel opens the lower file
            f.write("+")
        (merged / "f.new").write_text("n")
        listed = sorted(os.listdir(merged))
        try:
            (merged / "secret").read_text()
            secret = "read"
        except PermissionError:
            secret = "EPERM"
        return f"{data} {(merged / 'f').read_text()} {listed} secret {secret}"

    out = run_in_cgroup(agent.cgroup, go, setup=setup)
    assert out.value == "lower-data lower-data+ ['f', 'f.new', 'secret'] secret EPERM", out
