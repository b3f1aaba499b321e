"""Scenarios that hold on every backend: run on the host (cgroup/tracepoint) and in the VM (LSM)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from corral.kernel import layout

from .conftest import Agent, Collector, connect_child, exec_child, free_port, run_in_cgroup

TRUE = shutil.which("true") or "/bin/true"


def test_connect_denied_outside_allowlist_allowed_inside(agent: Agent, listener, kern) -> None:
    host, port = listener(socket.AF_INET)
    agent.kern.allow_net(agent.lists["connect"], [(host, port)])
    agent.configure(connect="enforce")

    assert agent.run(connect_child(socket.AF_INET, host, port)).value == "connected"
    denied = agent.run(connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert denied.error == errno.EPERM


def test_process_outside_the_cgroup_is_unaffected(agent: Agent, kern) -> None:
    agent.configure(connect="enforce", exec="enforce")
    outside = kern.cgroup_root  # the root cgroup is no agent
    res = run_in_cgroup(outside, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.value == "refused"
    assert run_in_cgroup(outside, exec_child(TRUE)).exit_code == 0


def test_cidr_and_any_port_entries(agent: Agent, listener) -> None:
    host, port = listener(socket.AF_INET)
    agent.kern.allow_net(agent.lists["connect"], [("127.0.0.0/8", 0)])
    agent.configure(connect="enforce")
    assert agent.run(connect_child(socket.AF_INET, host, port)).value == "connected"
    assert agent.run(connect_child(socket.AF_INET, "127.0.0.1", free_port())).value == "refused"


def test_port_specific_entry_denies_other_ports(agent: Agent, listener) -> None:
    host, port = listener(socket.AF_INET)
    agent.kern.allow_net(agent.lists["connect"], [("127.0.0.0/8", port)])
    agent.configure(connect="enforce")
    assert agent.run(connect_child(socket.AF_INET, host, port)).value == "connected"
    assert agent.run(connect_child(socket.AF_INET, host, free_port())).error == errno.EPERM


def test_ipv6_connect_and_v4_mapped(agent: Agent, listener, collector: Collector) -> None:
    host6, port6 = listener(socket.AF_INET6)
    agent.kern.allow_net(agent.lists["connect"], [("::1", port6), ("127.0.0.1", 0)])
    agent.configure(connect="enforce")
    assert agent.run(connect_child(socket.AF_INET6, host6, port6)).value == "connected"
    other = free_port(socket.AF_INET6)
    denied = agent.run(connect_child(socket.AF_INET6, "::1", other))
    assert denied.error == errno.EPERM
    ev = collector.wait(lambda e: e.pid == denied.pid and e.dimension == "connect")
    assert (ev.family, ev.address, ev.port, ev.verdict) == ("inet6", "::1", other, "denied")
    # ::ffff:127.0.0.1 is checked as 127.0.0.1, which is allowed on any port
    mapped = agent.run(connect_child(socket.AF_INET6, "::ffff:127.0.0.1", free_port()))
    assert mapped.value == "refused"


def test_udp_sendmsg_enforced(agent: Agent) -> None:
    agent.configure(connect="enforce")
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", free_port(), socket.SOCK_DGRAM))
    assert res.error == errno.EPERM


def test_observe_reports_novel_connect_with_attribution(agent: Agent, collector: Collector) -> None:
    agent.configure(connect="observe")
    port = free_port()
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", port))
    assert res.value == "refused"  # allowed through, nobody listening
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "connect")
    assert ev.agent_id == agent.id
    assert ev.cgroup_id == agent.cgid
    assert ev.verdict == "allowed" and ev.mode == "observe"
    assert ev.object == f"127.0.0.1:{port}"
    assert ev.protocol == socket.IPPROTO_TCP


def test_alert_reports_would_deny_and_allows(agent: Agent, collector: Collector) -> None:
    agent.configure(connect="alert")
    port = free_port()
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", port))
    assert res.value == "refused"
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "connect")
    assert ev.verdict == "would-deny" and ev.mode == "alert"


def test_mode_flip_takes_effect_without_reload(agent: Agent, kern) -> None:
    programs_before = kern.programs
    target = ("127.0.0.1", free_port())
    agent.configure(connect="observe")
    assert agent.run(connect_child(socket.AF_INET, *target)).value == "refused"
    agent.configure(connect="enforce")
    assert agent.run(connect_child(socket.AF_INET, *target)).error == errno.EPERM
    agent.configure(connect="alert")
    assert agent.run(connect_child(socket.AF_INET, *target)).value == "refused"
    assert kern.programs == programs_before


def test_counters_count(agent: Agent, listener, kern) -> None:
    host, port = listener(socket.AF_INET)
    kern.allow_net(agent.lists["connect"], [(host, port)])
    agent.configure(connect="enforce")
    for _ in range(3):
        agent.run(connect_child(socket.AF_INET, host, port))
    for _ in range(2):
        agent.run(connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    c = kern.counters(agent.id)["connect"]
    assert c["allowed"] == 3
    assert c["denied"] == 2


def test_repeats_suppressed_within_window(agent: Agent, collector: Collector, kern) -> None:
    agent.configure(connect="observe")
    port = free_port()
    pids = [agent.run(connect_child(socket.AF_INET, "127.0.0.1", port)).pid for _ in range(3)]
    collector.wait(lambda e: e.pid == pids[0] and e.dimension == "connect")
    seen = [e for e in collector.drain() if e.pid in pids and e.dimension == "connect"]
    assert len(seen) == 1
    c = kern.counters(agent.id)["connect"]
    assert c["novel"] == 3 and c["suppressed"] == 2


def test_a_mode_flip_reports_the_new_verdict_within_the_window(
    agent: Agent, collector: Collector
) -> None:
    """Suppression is per verdict: what ALERT reported as would-deny is reported again, as
    denied, by the first attempt after the flip to ENFORCE."""
    agent.configure(connect="alert")
    port = free_port()
    first = agent.run(connect_child(socket.AF_INET, "127.0.0.1", port))
    collector.wait(lambda e: e.pid == first.pid and e.verdict == "would-deny")
    agent.configure(connect="enforce")
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", port))
    assert res.error == errno.EPERM
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "connect")
    assert ev.verdict == "denied"


def test_rate_limit_drops_are_counted(agent: Agent, collector: Collector, kern) -> None:
    agent.configure(connect="observe", rate_limit=2)
    ports: list[int] = []
    while len(ports) < 8:  # distinct: a port drawn twice would be suppressed, not reported
        if (p := free_port()) not in ports:
            ports.append(p)

    def burst() -> None:
        for p in ports:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", p))

    res = agent.run(burst)
    reported = [e for e in collector.drain(0.5) if e.pid == res.pid]
    c = kern.counters(agent.id)["connect"]
    assert c["novel"] == 8
    assert len(reported) + c["dropped"] == 8
    assert c["dropped"] >= 8 - 2 * os.cpu_count()  # the limit is per CPU


def test_inheritance_from_registered_parent(kern, agent: Agent) -> None:
    """A child cgroup nobody registered gets the parent's policy if the parent says inherit."""
    child = agent.cgroup / "new-container"
    child.mkdir()
    agent.configure(connect="enforce")
    # Registered without inherit: the child is not covered.
    res = run_in_cgroup(child, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.value == "refused"
    kern.register_cgroup(agent.cgid, agent.id, inherit=True)
    res = run_in_cgroup(child, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.error == errno.EPERM
    grandchild = child / "nested"
    grandchild.mkdir()
    res = run_in_cgroup(grandchild, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.error == errno.EPERM


def test_inherited_events_carry_the_flag(kern, agent: Agent, collector: Collector) -> None:
    child = agent.cgroup / "c"
    child.mkdir()
    kern.register_cgroup(agent.cgid, agent.id, inherit=True)
    agent.configure(connect="observe")
    res = run_in_cgroup(child, connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    ev = collector.wait(lambda e: e.pid == res.pid)
    assert ev.agent_id == agent.id and "inherited" in ev.flags
    assert ev.cgroup_id == os.stat(child).st_ino


def test_exec_observe_reports_path(agent: Agent, collector: Collector) -> None:
    agent.configure(exec="observe")
    res = agent.run(exec_child(TRUE))
    assert res.exit_code == 0
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "exec")
    assert ev.path in (TRUE, os.path.realpath(TRUE))
    assert ev.agent_id == agent.id and ev.verdict == "allowed"


def test_exec_enforce_blocks_novel_allows_baselined(agent: Agent, workdir: Path, backends) -> None:
    allowed = workdir / "allowed-true"
    novel = workdir / "novel-true"
    shutil.copy(TRUE, allowed)
    shutil.copy(TRUE, novel)
    agent.kern.allow_paths("exec", agent.lists["exec"], [str(allowed)])
    agent.configure(exec="enforce")
    assert agent.run(exec_child(str(allowed))).exit_code == 0
    res = agent.run(exec_child(str(novel)))
    if backends.enforcement("exec") == "deny":
        assert res.error == errno.EPERM
    else:
        assert res.signal == signal.SIGKILL


def test_exec_directory_prefix_entry(agent: Agent, workdir: Path, backends) -> None:
    tools = workdir / "tools"
    tools.mkdir()
    for name in ("a", "b"):
        shutil.copy(TRUE, tools / name)
    shutil.copy(TRUE, workdir / "toolsX")  # shares the string prefix, not the directory
    agent.kern.allow_paths("exec", agent.lists["exec"], [], prefixes=[str(tools)])
    agent.configure(exec="enforce")
    assert agent.run(exec_child(str(tools / "a"))).exit_code == 0
    assert agent.run(exec_child(str(tools / "b"))).exit_code == 0
    res = agent.run(exec_child(str(workdir / "toolsX")))
    assert res.error == errno.EPERM or res.signal == signal.SIGKILL


def test_exec_overlong_path_fails_closed(agent: Agent, workdir: Path, collector: Collector) -> None:
    deep = workdir
    while len(str(deep)) < layout.C.CORRAL_PATH_MAX + 20:
        deep = deep / ("d" * 40)
    deep.mkdir(parents=True)
    binary = deep / "true"
    shutil.copy(TRUE, binary)
    # Even a prefix entry covering the whole tree cannot let a path the kernel cannot hold through.
    agent.kern.allow_paths("exec", agent.lists["exec"], [], prefixes=[str(workdir)])
    agent.configure(exec="enforce")
    res = agent.run(exec_child(str(binary)))
    assert res.error == errno.EPERM or res.signal == signal.SIGKILL
    ev = collector.wait(lambda e: e.pid == res.pid and e.dimension == "exec")
    assert "toolong" in ev.flags and ev.verdict in ("denied", "killed")


def test_unregistered_cgroup_is_left_alone(kern, agent: Agent) -> None:
    agent.configure(connect="enforce")
    kern.unregister_cgroup(agent.cgid)
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.value == "refused"
    kern.register_cgroup(agent.cgid, agent.id)  # generation bump: the kernel cache follows
    res = agent.run(connect_child(socket.AF_INET, "127.0.0.1", free_port()))
    assert res.error == errno.EPERM


@pytest.mark.parametrize(
    "network,port", [("10.1.2.3", 443), ("10.0.0.0/8", 0), ("2001:db8::/32", 53)]
)
def test_net_key_golden(network: str, port: int, kern) -> None:
    """The key Python builds is found by the kernel's own LPM lookup (bpf map syscall)."""
    from corral.kernel.keys import net_key

    lst = 999_001
    kern.allow_net(lst, [(network, port)])
    try:
        probe_addr = network.split("/")[0]
        k = net_key(lst, probe_addr, port)
        k.prefixlen = 8 * (layout.sizeof("struct corral_net_key") - 4)  # full length, as in BPF
        assert kern.map("net_allow").lookup(layout.to_bytes(k)) is not None
    finally:
        kern.clear_list("connect", lst)


def test_proc_pid_paths_are_normalised(agent: Agent, collector: Collector) -> None:
    """/proc/<pid>/x is reported (and looked up) as /proc/*/x: one entry for every pid."""
    agent.configure(open="observe")

    def read_own_stat() -> int:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            f.read(1)
        return os.getpid()

    res = agent.run(read_own_stat)
    ev = collector.wait(
        lambda e: e.pid == res.pid and e.dimension == "open" and "stat" in (e.path or "")
    )
    assert ev.path == "/proc/*/stat"


def test_clear_lists_and_remove_entries(kern) -> None:
    """clear_lists empties several lists in one sweep and leaves the others; remove_* delete
    given entries of one list (absent ones skipped). Checked on the real maps."""
    from corral.kernel.keys import exact_key_bytes, net_key

    a, b, keep = 999_101, 999_102, 999_103
    paths = [f"/srv/x/{i}" for i in range(50)]
    for lst in (a, b, keep):
        kern.allow_paths("open", lst, paths, ["/srv/dir/"])
        kern.allow_net(lst, [("10.0.0.0/8", 0), ("10.1.2.3", 443)])

    def held(lst: int) -> tuple[int, bool]:
        """(exact paths found, 10.1.2.3:443 found) in list lst."""
        exact = sum(
            kern.map("open_exact").lookup(exact_key_bytes(lst, p)) is not None for p in paths
        )
        host = net_key(lst, "10.1.2.3", 443)
        host.prefixlen = 8 * (layout.sizeof("struct corral_net_key") - 4)
        net = kern.map("net_allow").lookup(layout.to_bytes(host)) is not None
        return exact, net

    try:
        assert kern.remove_paths("open", a, [*paths[:10], "/never/added"]) == 10
        assert kern.remove_net(a, [("10.1.2.3", 443), ("192.0.2.1", 1)]) == 1
        assert held(a) == (40, False)
        assert kern.clear_lists("open", [a, b]) == 40 + 1 + 50 + 1
        assert kern.clear_lists("connect", {a, b}) == 1 + 2
        assert held(a) == held(b) == (0, False)
        assert held(keep) == (50, True)
        assert kern.clear_lists("open", []) == 0
    finally:
        for dim in ("open", "connect"):
            kern.clear_lists(dim, [a, b, keep])
