"""The AI-BOM worker's jobs (what an event or a baseline entry leaves to read from /proc) and
the parts of them that run in a thread: a package's version, read from the root of the first
live process of the agent that answers (cached per root), the package an MCP server's script
belongs to, and the packages installed in a packages dir. argv is read by
procfs.matching_cmdline."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import procfs
from .records import Sight

CACHE_SECONDS = 300.0
CACHE_MAX = 10000

# (root id, ecosystem, packages dir, module) -> (when, (name, version, where) or None)
VersionCache = dict[tuple[Any, ...], tuple[float, tuple[str, str, str] | None]]


@dataclass(frozen=True)
class VersionJob:
    agent: str
    key: str
    ecosystem: str
    packages_dir: str
    module: str
    pid: int | None


@dataclass(frozen=True)
class CmdlineJob:
    agent: str
    pid: int
    exe: str
    seen: Sight


@dataclass(frozen=True)
class ListJob:
    agent: str
    prefix: str  # a baseline prefix entry that is a packages dir (or a namespace/scope in one)
    seen: Sight


@dataclass(frozen=True)
class ScriptJob:
    agent: str
    key: str  # the process record's
    script: str  # the MCP server's file
    pid: int | None


Job = VersionJob | CmdlineJob | ListJob | ScriptJob
# a script's package (name, version, where), None for none; UNANSWERED: no live process read it
ScriptPackage = tuple[str, str | None, str] | None
UNANSWERED: Any = object()


def read_version(
    pids: Callable[[], list[int]], job: VersionJob, cache: VersionCache
) -> tuple[str, str, str] | None:
    """In a thread: the first live process of the agent whose root answers."""
    for pid in pids():
        found = procfs.root_of(pid)
        if found is None:
            continue
        root, root_id = found
        ck = (root_id, job.ecosystem, job.packages_dir, job.module)
        cached = cache.get(ck)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            result = procfs.package_version(root, job.ecosystem, job.packages_dir, job.module)
        except OSError:
            continue  # that process is gone: try the next one
        if len(cache) >= CACHE_MAX:  # only this worker thread touches the cache
            cache.clear()
        cache[ck] = (time.monotonic(), result)
        return result
    return None


def list_installed(
    pids: Callable[[], list[int]], prefix: str, spaces: Iterable[str]
) -> list[str] | None:
    """In a thread: the packages in the packages dir prefix, as the first live process of the
    agent whose root answers sees it; None when none does."""
    for pid in pids():
        found = procfs.root_of(pid)
        if found is None:
            continue
        with contextlib.suppress(OSError):
            return procfs.list_packages(found[0], prefix.rstrip("/"), spaces)
    return None


def read_script_package(pids: Callable[[], list[int]], job: ScriptJob) -> ScriptPackage:
    """In a thread: the package of job.script as the first live process of the agent whose
    root answers sees it; UNANSWERED when none does."""
    for pid in pids():
        found = procfs.root_of(pid)
        if found is None:
            continue
        try:
            return procfs.script_package(found[0], job.script)
        except OSError:
            continue  # that process is gone: try the next one
    return UNANSWERED
