"""Re-checking the backends in use: a backend no longer seen to act is `lost`, never `enforce`."""

from __future__ import annotations

import asyncio

from corral.kernel.layout import DIMS
from corral.kernel.loader import Backends
from corral.kernel.probe import ProbeResult
from corral.kernel.recheck import Rechecker, changed, reconcile

LSM = Backends.choose(True)
FALLBACK = Backends.choose(False, open_fallback="tracepoint")


def caps(kind: str) -> dict[str, dict[str, str]]:
    if kind == "lsm":
        return {d: {"mode": "enforce", "backend": "lsm", "how": "seen"} for d in DIMS}
    return {
        "exec": {"mode": "kill", "backend": "tracepoint", "how": "seen"},
        "open": {"mode": "observe-only", "backend": "tracepoint", "how": "seen"},
        "connect": {"mode": "enforce", "backend": "cgroup", "how": "seen"},
    }


def test_the_same_backends_stay_as_the_probe_says() -> None:
    assert reconcile(LSM, caps("lsm"), caps("lsm")) == caps("lsm")
    assert reconcile(FALLBACK, caps("fallback"), caps("fallback")) == caps("fallback")


def test_a_dimension_without_a_hook_at_start_has_nothing_to_lose() -> None:
    start = caps("fallback")
    start["open"] = {"mode": "unwatched", "backend": "none", "how": "kernel.fallback_open: off"}
    fresh = caps("fallback")
    fresh["open"] = {"mode": "observe-only", "backend": "tracepoint", "how": "seen"}
    assert reconcile(FALLBACK, start, fresh)["open"] == start["open"]


def test_lsm_that_stopped_acting_is_lost_in_every_dimension() -> None:
    now = reconcile(LSM, caps("lsm"), caps("fallback"))
    for dim, cap in now.items():
        assert cap["mode"] == "lost", dim
        assert cap["backend"] == "lsm"
        assert cap["how"].startswith("NOT ENFORCED")
    assert changed(caps("lsm"), now) == ["exec", "open", "connect"]


def test_rechecker_applies_changes_and_says_which() -> None:
    current = {"caps": caps("lsm")}
    answers = [caps("lsm"), caps("fallback"), caps("lsm")]

    def probe() -> ProbeResult:
        return ProbeResult("k", "x86_64", "1.1", capabilities=answers.pop(0))

    def apply(new: dict[str, dict[str, str]]) -> None:
        current["caps"] = new

    r = Rechecker(60, probe, lambda: LSM, lambda: current["caps"], apply)

    async def three() -> list[list[str]]:
        return [await r.once() for _ in range(3)]

    first, second, third = asyncio.run(three())
    assert first == []
    assert second == ["exec", "open", "connect"]
    assert third == ["exec", "open", "connect"]  # acting again
    assert current["caps"] == caps("lsm")
    assert r.checks == 3


def test_interval_zero_never_probes() -> None:
    def probe() -> ProbeResult:
        raise AssertionError("probed")

    r = Rechecker(0, probe, lambda: LSM, dict, lambda _: None)
    asyncio.run(r.run(asyncio.Event()))
