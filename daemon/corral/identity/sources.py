"""The identity sources the daemon polls: `KubernetesSource` (kubelet pods + one cgroupfs
scan, woken early by a `CgroupWatcher`) and `LocalSource` (cgroups matched by globs such as
`system.slice/*.service`, as agents named `local/<unit>`)."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import time
from collections.abc import Sequence

import structlog

from .cgroupfs import (
    DEFAULT_MAX_DEPTH,
    CgroupIndex,
    CgroupRef,
    cgroup2_mount,
    scan_cgroups,
    subdirs,
)
from .kubelet import KubeletClient, KubeletError, KubeletHealth
from .sandbox import SandboxDetector
from .selector import PodSelector
from .watch import CgroupWatcher
from .workloads import Workload, discover

log = structlog.get_logger("corral.identity")


class KubernetesSource:
    """poll(): kubelet pods + one cgroupfs scan (in a thread) -> workloads, each saying
    whether its pods run in a sandbox host BPF does not see (sandbox.py, also in a thread)."""

    def __init__(
        self,
        client: KubeletClient,
        *,
        cgroup_root: str | os.PathLike[str] | None = None,
        selector: PodSelector | None = None,
        started_at: float | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        watch: bool = True,
        sandboxes: SandboxDetector | None = None,
    ) -> None:
        self.client = client
        self.sandboxes = sandboxes or SandboxDetector()
        self.cgroup_root = os.fspath(cgroup_root or cgroup2_mount())
        self.selector = selector or PodSelector()
        self.started_at = time.time() if started_at is None else started_at
        self.max_depth = max_depth
        self.watcher: CgroupWatcher | None = CgroupWatcher() if watch else None
        self.index: CgroupIndex | None = None

    @property
    def health(self) -> KubeletHealth:
        return self.client.health

    @property
    def changed(self) -> asyncio.Event | None:
        return self.watcher.changed if self.watcher else None

    async def poll(self) -> list[Workload]:
        """[] while the kubelet has never answered (health says why)."""
        if self.watcher is not None:
            self.watcher.changed.clear()
        index_task = asyncio.create_task(
            asyncio.to_thread(scan_cgroups, self.cgroup_root, self.max_depth)
        )
        try:
            pods = await self.client.get_pods()
        except KubeletError:
            pods = []
        except BaseException:
            index_task.cancel()
            raise
        self.index = await index_task
        self._rewatch(self.index)
        sandboxes = await asyncio.to_thread(self.sandboxes.detect, pods, self.index)
        return discover(
            pods,
            self.index,
            selector=self.selector,
            started_at=self.started_at,
            sandboxes=sandboxes,
        )

    def _rewatch(self, index: CgroupIndex) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher.start()
        except OSError as e:
            log.warning("inotify unavailable, polling only", error=str(e))
            self.watcher = None
            return
        self.watcher.update(index.watch_dirs)

    async def wait(self, interval: float = 2.0) -> None:
        """Sleep until the next poll is due: interval elapsed or a cgroup change seen."""
        if self.watcher is None:
            await asyncio.sleep(interval)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.watcher.changed.wait(), interval)

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        await self.client.close()


def local_agent_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for suffix in (".service", ".scope"):
        base = base.removesuffix(suffix)
    return f"local/{base}"


def match_local(root: str | os.PathLike[str], globs: Sequence[str]) -> list[Workload]:
    """Cgroup directories matching globs (relative to root, fnmatch per path component)."""
    root = os.fspath(root)
    out: dict[str, Workload] = {}
    for pattern in globs:
        for path in _glob_dirs(root, pattern.strip("/")):
            try:
                cg = CgroupRef(path, os.stat(path).st_ino, inherit=True)
            except FileNotFoundError:
                continue
            agent = local_agent_name(path)
            w = out.setdefault(agent, Workload(agent=agent, source="local"))
            if cg not in w.pod_cgroups:
                w.pod_cgroups.append(cg)
    return sorted(out.values(), key=lambda w: w.agent)


def _glob_dirs(root: str, pattern: str) -> list[str]:
    paths = [root]
    for part in (p for p in pattern.split("/") if p):
        nxt: list[str] = []
        for base in paths:
            if not any(c in part for c in "*?["):
                cand = os.path.join(base, part)
                if os.path.isdir(cand) and not os.path.islink(cand):
                    nxt.append(cand)
                continue
            nxt += sorted(e.path for e in subdirs(base) if fnmatch.fnmatchcase(e.name, part))
        paths = nxt
    return paths


class LocalSource:
    """Agents from cgroup globs, for nodes without a kubelet. Same Workload type: the matched
    cgroup sits in pod_cgroups, registered with inherit so child cgroups are covered."""

    def __init__(
        self, globs: Sequence[str], *, cgroup_root: str | os.PathLike[str] | None = None
    ) -> None:
        self.globs = list(globs)
        self.cgroup_root = os.fspath(cgroup_root or cgroup2_mount())

    async def poll(self) -> list[Workload]:
        return await asyncio.to_thread(match_local, self.cgroup_root, self.globs)
