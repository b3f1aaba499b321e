"""The backends in use, proven again while corrald runs.

A kernel can change under a running corrald (an LSM list edited by a later boot stage, a
livepatch, another tool detaching trampolines), so corrald re-runs the probe by effect every
`kernel.recheck_interval`. A dimension whose backend in use is no longer seen to act becomes
`lost`: status, agents and metrics stop saying `enforce` for it, and corrald logs an error. The
backends are chosen once, at start: a restart picks them anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import structlog

from corral.memory import release_memory

from .layout import DIMS
from .loader import Backends
from .probe import ProbeResult

log = structlog.get_logger("corral.recheck")

Capabilities = dict[str, dict[str, str]]


NOTHING_TO_LOSE = ("unavailable", "unwatched")


def reconcile(
    in_use: Backends,
    at_start: Mapping[str, Mapping[str, str]],
    fresh: Mapping[str, Mapping[str, str]],
) -> Capabilities:
    """What each dimension gets now: the fresh probe's answer where it names the backend in use,
    else `lost` (the programs attached at start are no longer proven to act). A dimension that
    had no working hook at start keeps what it was."""
    out: Capabilities = {}
    for dim in DIMS:
        if at_start[dim]["mode"] in NOTHING_TO_LOSE:
            out[dim] = dict(at_start[dim])
            continue
        cap = dict(fresh[dim])
        backend = in_use.of(dim)
        if cap["backend"] == backend:
            out[dim] = cap
            continue
        out[dim] = {
            "mode": "lost",
            "backend": backend,
            "how": (
                f"NOT ENFORCED: the {backend} hook was not seen to act at the last re-check "
                f"(the probe now finds {cap['mode']} via {cap['backend']}: {cap['how']}); "
                "restart corrald to choose backends again"
            ),
        }
    return out


def changed(old: Mapping[str, Mapping[str, str]], new: Capabilities) -> list[str]:
    """Dimensions whose mode or backend changed."""
    return [
        d
        for d in DIMS
        if (old[d]["mode"], old[d]["backend"]) != (new[d]["mode"], new[d]["backend"])
    ]


class Rechecker:
    """Re-runs probe() every interval seconds (0: never) and hands changed capabilities to
    apply()."""

    def __init__(
        self,
        interval: float,
        probe: Callable[[], ProbeResult],
        in_use: Callable[[], Backends],
        current: Callable[[], Mapping[str, Mapping[str, str]]],
        apply: Callable[[Capabilities], None],
    ) -> None:
        self.interval = interval
        self._probe = probe
        self._in_use = in_use
        self._current = current
        self._apply = apply
        self.at_start = {d: dict(c) for d, c in current().items()}
        self.checks = 0
        self.last_check: float | None = None  # time.monotonic()

    def summary(self) -> dict[str, float | int | None]:
        """For status: how often the backends were proven again, and how long ago last."""
        ago = None if self.last_check is None else round(time.monotonic() - self.last_check, 1)
        return {"interval_seconds": self.interval, "done": self.checks, "last_seconds_ago": ago}

    async def run(self, stopping: asyncio.Event) -> None:
        if self.interval <= 0:
            return
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
            if stopping.is_set():
                return
            try:
                await self.once()
            except Exception as e:
                log.error("re-check of the backends failed", error=str(e))

    async def once(self) -> list[str]:
        res = await asyncio.to_thread(self._probe)
        release_memory()  # libbpf's BTF parse for the probe's objects
        self.checks += 1
        self.last_check = time.monotonic()
        new = reconcile(self._in_use(), self.at_start, res.capabilities)
        dims = changed(self._current(), new)
        for dim in dims:
            cap = new[dim]
            if cap["mode"] == "lost":
                log.error(
                    "enforcement lost: the hook in use no longer acts",
                    dimension=dim,
                    backend=cap["backend"],
                    how=cap["how"],
                )
            else:
                log.warning(
                    "capability changed",
                    dimension=dim,
                    enforcement=cap["mode"],
                    backend=cap["backend"],
                    how=cap["how"],
                )
        if dims:
            self._apply(new)
        return dims
