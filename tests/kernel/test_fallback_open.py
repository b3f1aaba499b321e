"""The fallback open hooks (no BPF LSM): syscall tracepoints, tp_btf/sys_enter, or none at all
(kernel.fallback_open: off). Each is loaded into this kernel on its own and watched reporting
(or not reporting) a real open by a process in a real cgroup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import config
from corral.kernel import probe
from corral.kernel.loader import OPEN_PROGRAMS, Backends, Kernel

from .conftest import SUPPRESS_NS, Collector, exec_child, make_agent, open_child

pytestmark = pytest.mark.fallback


@pytest.fixture
def fallback_kernel(request: pytest.FixtureRequest) -> Iterator[tuple[Kernel, Collector]]:
    k = Kernel(Backends.choose(False, open_fallback=request.param), suppress_ns=SUPPRESS_NS)
    try:
        k.activate()
        c = Collector(k, [])
        yield k, c
        c.close()
    finally:
        k.close()


@pytest.mark.parametrize("fallback_kernel", ["tracepoint", "sys_enter"], indirect=True)
def test_each_open_hook_reports_an_agents_open(
    fallback_kernel: tuple[Kernel, Collector], workdir: Path
) -> None:
    kern, collector = fallback_kernel
    backend = kern.backends.open
    assert set(kern.programs) & {p for ps in OPEN_PROGRAMS.values() for p in ps} == set(
        OPEN_PROGRAMS[backend]
    )
    f = workdir / "notes.txt"
    f.write_text("n")
    with make_agent(kern) as agent:
        agent.configure(open="alert")
        res = agent.run(open_child(f))
        assert res.value == "opened"
        ev = collector.wait(lambda e: e.pid == res.pid and e.path == str(f))
    assert (ev.dimension, ev.verdict, ev.backend) == ("open", "would-deny", "tracepoint")


@pytest.mark.parametrize("fallback_kernel", ["none"], indirect=True)
def test_open_unwatched_loads_no_open_hook_and_still_kills_execs(
    fallback_kernel: tuple[Kernel, Collector], workdir: Path
) -> None:
    kern, collector = fallback_kernel
    assert not set(kern.programs) & {p for ps in OPEN_PROGRAMS.values() for p in ps}
    f = workdir / "secret"
    f.write_text("s")
    with make_agent(kern) as agent:
        agent.configure(open="enforce", exec="enforce")
        opened = agent.run(open_child(f))
        killed = agent.run(exec_child("/bin/true"))
        collector.wait(lambda e: e.pid == killed.pid and e.dimension == "exec")
        seen = collector.drain()
    assert opened.value == "opened"
    assert killed.signal is not None
    assert not [e for e in seen if e.dimension == "open"]


def test_probe_says_opens_are_unwatched_when_configured_off() -> None:
    res = probe.run_probe(fallback_open="off")
    assert res.capabilities["open"]["mode"] == "unwatched"
    assert "kernel.fallback_open" in res.capabilities["open"]["how"]
    assert res.backends().open == "none"
    assert probe.run_probe().backends().open == "tracepoint"


def test_fallback_open_setting_is_validated() -> None:
    assert config.from_dict({"kernel": {"fallback_open": "off"}}).kernel.fallback_open == "off"
    with pytest.raises(config.ConfigError, match=r"kernel\.fallback_open: 'deny' is not one of"):
        config.from_dict({"kernel": {"fallback_open": "deny"}})
