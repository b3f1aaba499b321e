"""The runtime AI-BOM: per agent, what it is made of, derived from corral's own evidence.

Two sources feed one inventory per agent:

* events (``on_event``): every exec/open/connect that reaches user space, whatever its verdict;
* baselines (``_derive``): every stored entry, at start and whenever a baseline's revision
  changes. In ENFORCE the kernel reports nothing for baselined behaviour, and in any mode it
  reports an object once per suppression window, so the baseline is what keeps the AI-BOM
  complete; a collapsed prefix (".../site-packages/") names no package, so the packages
  installed beneath it are listed from a live process's root and marked "installed".

Records are add-only (an inventory says what was ever seen; a baseline reset does not erase
it) and persisted per agent as JSON under <state_dir>/aibom/, written crash-safe with
store.atomic_write, so the AI-BOM survives restarts even for behaviour the kernel no longer
reports.

Everything that reads /proc (argv, package versions, the package of an MCP server's script,
directory listings) runs in worker threads fed by one bounded queue; a version that cannot be
read (the process is gone) stays unknown and is tried again on a later event, or every
RETRY_SECONDS from a live process of the agent.

An MCP server is seen through several execs (npx, the `sh -c` npm runs it with, node running
its node_modules/.bin script, the script itself): each is a process record with its command
line, and the package.json above the script names the package it belongs to, so that
views.py shows them, and the package the interpreter opened, as one server.

This module is the tracker (``AibomTracker``) that runs all that in the daemon's event loop;
records.py holds the records, jobs.py the worker's jobs, hostnames.py the DNS names,
views.py what the API shows, procfs.py the /proc readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from corral.kernel.events import Event
from corral.policy.baseline import Baseline
from corral.policy.rules import format_net, normalise_network
from corral.policy.store import atomic_write

from . import procfs
from .hostnames import HostNames, Resolver
from .jobs import (
    UNANSWERED,
    CmdlineJob,
    Job,
    ListJob,
    ScriptJob,
    VersionCache,
    VersionJob,
    list_installed,
    read_script_package,
    read_version,
)
from .records import Inventory, Sight, evidence, inventory_file, read_inventories, touch
from .rules import LLM_SERVER, ExecHit, PackageHit, Rules, canonical, split_package_path
from .views import agent_view, is_ai

log = structlog.get_logger("corral.aibom")

SAMPLE_PATHS = 3
QUEUE_MAX = 4096
RETRY_SECONDS = 60.0
EVENT_RETRY_SECONDS = 2.0
SYNC_SECONDS = 2.0
DNS_TIMEOUT = 10.0
DENIED = frozenset({"denied", "killed"})
HINT_SOURCE = "dist-info directory name"
REST_SECONDS = 10.0
MAX_COMMANDS = 8  # launch command lines kept per process record


class AibomTracker:
    """The node's AI-BOM. Runs in the daemon's event loop; /proc reads go to threads."""

    def __init__(
        self,
        rules: Rules,
        state_dir: str | os.PathLike[str],
        node: str,
        *,
        baselines: Callable[[], Mapping[str, Baseline]],
        cgroups_of: Callable[[str], list[str]],
        read_proc: bool = True,
        resolve_hosts: bool = True,
        dns_refresh: float = 300.0,
        save_interval: float = 5.0,
    ) -> None:
        self.rules = rules
        self.dir = Path(state_dir) / "aibom"
        self.node = node
        self.baselines = baselines
        self.cgroups_of = cgroups_of
        self.read_proc = read_proc
        self.resolve_hosts = resolve_hosts
        self.dns_refresh = dns_refresh
        self.save_interval = save_interval
        self.inventories: dict[str, Inventory] = {}
        self.names = HostNames()
        # LLM servers (executable rules of kind llm-server) whose process was seen on the
        # node, in any agent: add-only, like the records they come from
        self.llm_servers: frozenset[str] = frozenset()
        self.stats = {
            "jobs_dropped": 0,
            "versions_read": 0,
            "cmdlines_read": 0,
            "scripts_read": 0,
            "dns_rounds": 0,
            "dns_failures": 0,
        }
        self._queue: asyncio.Queue[Job] = asyncio.Queue(QUEUE_MAX)
        self._pending: set[tuple[str, str]] = set()
        self._attempts: dict[tuple[str, str], float] = {}
        self._listed: dict[tuple[str, str], float] = {}
        # packages dirs of baselines, listed again every RETRY_SECONDS (without re-deriving)
        self._listings: dict[tuple[str, str], Sight] = {}
        self._derived: dict[str, tuple[int, int]] = {}
        self._dirty: set[str] = set()
        self._saved_at: dict[str, float] = {}  # time.monotonic of each agent's last save
        self._cache: VersionCache = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._resolver = Resolver()
        self._stopping = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.inventories.update(await asyncio.to_thread(self._load_all))
        self.sync_baselines()
        self._tasks = [
            asyncio.create_task(self._worker(), name="aibom-worker"),
            asyncio.create_task(self._sync_loop(), name="aibom-sync"),
        ]
        if self.resolve_hosts and self.rules.hostnames:
            self._tasks.append(asyncio.create_task(self._dns_loop(), name="aibom-dns"))
        log.info(
            "AI-BOM tracking",
            rules=list(self.rules.files),
            agents=len(self.inventories),
            read_proc=self.read_proc,
            resolve_hosts=self.resolve_hosts,
        )

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.save()

    def reload(self, rules: Rules) -> None:
        """New rules apply to new events and to every baseline, re-derived now."""
        self.rules = rules
        log.info("AI-BOM rules reloaded", rules=list(rules.files))
        self._derived.clear()
        self._listed.clear()
        self._listings.clear()
        self.sync_baselines()

    # ---- events ------------------------------------------------------------------------------

    def on_event(self, agent: str, ev: Event) -> None:
        """Cheap classification in the loop; /proc work is queued."""
        seen = Sight(ev.ts_ns / 1e9, "event", denied=ev.verdict in DENIED)
        if ev.dimension == "open" and ev.path:
            pid = None if "relative" in ev.flags else ev.pid
            self._path(agent, ev.path, seen, pid)
        elif ev.dimension == "exec" and ev.path:
            self._exec(agent, ev.path, None, seen, ev.pid)
            if self.read_proc and self.rules.wants_argv(ev.path):
                self._submit(CmdlineJob(agent, ev.pid, ev.path, seen))
        elif ev.dimension == "connect" and ev.address is not None and ev.port is not None:
            rec = self._endpoint(agent, normalise_network(ev.address), ev.port, seen)
            if rec is not None and ev.host and ev.host not in rec["hostnames"]:
                # the name the agent's own DNS answer gave this address (pipeline/names.py)
                rec["hostnames"] = sorted({*rec["hostnames"], ev.host})
                self._dirty.add(agent)

    def _inv(self, agent: str) -> Inventory:
        inv = self.inventories.get(agent)
        if inv is None:
            inv = self.inventories[agent] = Inventory(agent)
        return inv

    def _upsert(
        self, agent: str, kind: str, key: str, fields: Callable[[], dict[str, Any]], seen: Sight
    ) -> dict[str, Any] | None:
        """The record under key (made from fields() if new), its evidence updated; None when
        the table is full."""
        inv = self._inv(agent)
        if not inv.slot(kind, key):
            return None
        table: dict[str, dict[str, Any]] = getattr(inv, kind)
        rec = table.get(key)
        new = rec is None
        if rec is None:
            rec = table[key] = {**fields(), **evidence(seen.when, seen.via)}
        if touch(rec, seen.when, seen.via, first=seen.first, denied=seen.denied) or new:
            self._dirty.add(agent)
        return rec

    def _path(self, agent: str, path: str, seen: Sight, pid: int | None = None) -> None:
        if not self.rules.maybe_interesting(path):
            return
        hit = self.rules.classify_package(path)
        if hit is not None:
            self._package(agent, hit, path, seen, pid)
            return
        m = self.rules.classify_model(path)
        if m is not None:
            fields = {"path": path, "format": m.format, "name": m.name, "revision": m.revision}
            self._upsert(agent, "models", path, fields.copy, seen)

    def _package(
        self, agent: str, hit: PackageHit, path: str, seen: Sight, pid: int | None
    ) -> None:
        inv = self._inv(agent)
        if not hit.module:  # a <dist>-<version>.dist-info path: a version hint only
            self._hint(agent, inv, f"{hit.packages_dir}\0{canonical(hit.dist)}", hit.version_hint)
            return
        key = f"{hit.ecosystem}\0{hit.packages_dir}\0{hit.module}"
        pypi = hit.ecosystem == "pypi"
        name = canonical(hit.module.replace("/", "-")) if pypi else hit.module

        def fields() -> dict[str, Any]:
            return {
                "ecosystem": hit.ecosystem,
                "packages_dir": hit.packages_dir,
                "module": hit.module,
                "framework": hit.framework,
                "category": hit.category,
                "name": name,
                "version": inv.hints.get(f"{hit.packages_dir}\0{name}") if pypi else None,
                "version_source": None,
                "paths": [],
            }

        rec = self._upsert(agent, "packages", key, fields, seen)
        if rec is None:
            return
        if rec["version"] is not None and rec["version_source"] is None:
            rec["version_source"] = HINT_SOURCE
        if len(rec["paths"]) < SAMPLE_PATHS and path not in rec["paths"]:
            rec["paths"].append(path)
        if rec["version"] is None and rec["packages_dir"].startswith("/"):
            job = VersionJob(agent, key, rec["ecosystem"], rec["packages_dir"], rec["module"], pid)
            self._once(job, EVENT_RETRY_SECONDS)

    def _hint(self, agent: str, inv: Inventory, key: str, version: str | None) -> None:
        """A version named by a dist-info directory: for packages whose METADATA is unread."""
        if not version or inv.hints.get(key) == version or not inv.slot("hints", key):
            return
        inv.hints[key] = version
        self._dirty.add(agent)
        for rec in inv.packages.values():
            mine = f"{rec['packages_dir']}\0{canonical(rec['name'])}" == key
            if mine and rec["version"] is None and rec["ecosystem"] == "pypi":
                rec["version"], rec["version_source"] = version, HINT_SOURCE

    def _once(self, job: VersionJob | ScriptJob, every: float) -> None:
        """Queues a lookup of a record unless one is pending or was tried less than every
        seconds ago."""
        k = (job.agent, job.key)
        if not self.read_proc or k in self._pending:
            return
        if time.monotonic() - self._attempts.get(k, -1e9) >= every and self._submit(job):
            self._pending.add(k)

    def _exec(
        self, agent: str, exe: str, argv: list[str] | None, seen: Sight, pid: int | None = None
    ) -> None:
        for hit in self.rules.classify_exec(exe, argv):
            if argv is not None and hit.category != "mcp-server":
                continue  # the exe-only hits were recorded when the event came
            key = f"{hit.category}\0{hit.name}\0{hit.exe}"
            if argv is not None and not hit.launcher:  # recorded when the event came
                rec = self._inv(agent).processes.get(key)
            else:
                rec = self._upsert(agent, "processes", key, partial(_process, hit), seen)
            if rec is not None and hit.category == LLM_SERVER:
                self._llm_server(hit.rule)
            if rec is None or hit.category != "mcp-server":
                continue
            rec.setdefault("script", hit.script)  # records of older corrald versions
            self._add_command(agent, rec, list(hit.command))
            if rec["script"]:
                self._once(ScriptJob(agent, key, rec["script"], pid), EVENT_RETRY_SECONDS)

    def _llm_server(self, name: str) -> None:
        if name not in self.llm_servers:
            self.llm_servers = self.llm_servers | {name}

    def _add_command(self, agent: str, rec: dict[str, Any], command: list[str]) -> None:
        """Keeps a launch command line of an MCP server (MAX_COMMANDS at most)."""
        commands = rec.setdefault("commands", [rec["command"]] if rec["command"] else [])
        if not command or command in commands or len(commands) >= MAX_COMMANDS:
            return
        commands.append(command)
        rec["command"] = rec["command"] or command
        self._dirty.add(agent)

    def _endpoint(self, agent: str, net: Any, port: int, seen: Sight) -> dict[str, Any] | None:
        host = net.prefixlen == net.max_prefixlen
        key = format_net(net, port)
        fields = {
            "object": key,
            "address": str(net.network_address) if host else str(net),
            "network": not host,
            "port": port,
            "hostnames": [],
        }
        rec = self._upsert(agent, "endpoints", key, fields.copy, seen)
        if rec is not None and host:
            self._add_names(agent, rec)
        return rec

    def _add_names(self, agent: str, rec: dict[str, Any]) -> None:
        names = self.names.of(rec["address"])
        if set(names) - set(rec["hostnames"]):
            rec["hostnames"] = sorted({*rec["hostnames"], *names})
            self._dirty.add(agent)

    # ---- baselines ---------------------------------------------------------------------------

    def sync_baselines(self) -> None:
        """Derives the inventory of every agent whose baseline changed since the last time."""
        for agent, b in list(self.baselines().items()):
            mark = (id(b), b.revision)
            if self._derived.get(agent) != mark:
                self._derived[agent] = mark
                for k in [k for k in self._listings if k[0] == agent]:
                    del self._listings[k]  # the new derivation names the dirs to list
                resting = b.frozen
                self._derive(agent, b)
                if resting:  # read through once, then back to rest
                    b.freeze()

    def learned(
        self, agent: str, b: Baseline, revision: int, dim: str, rule: tuple[str, Any] | None
    ) -> None:
        """corrald learned one object into b (its revision was `revision` before) from an event
        this tracker saw (on_event). What a derivation of b would add beyond that event is the
        rule the object collapsed into (a directory prefix, an aggregated network): added here,
        and b stays derived, if it was before. A learning agent's baseline then costs nothing
        per sync, where re-deriving it whole took a time that grew with the baseline."""
        if self._derived.get(agent) != (id(b), revision):
            return  # not derived yet, or changed by something else: the next sync derives all
        self._derived[agent] = (id(b), b.revision)
        if rule is None:
            return
        if dim == "open" and rule[1] is True:
            e = b.entry("open", rule[0], prefix=True)
            if e is not None:
                self._prefix(agent, rule[0], Sight(e.last_seen, "baseline", first=e.first_seen))
        elif dim == "connect":
            net = normalise_network(rule[0])
            e = b.entry("connect", (net, rule[1]))
            if e is not None and net.prefixlen < net.max_prefixlen:
                seen = Sight(e.last_seen, "baseline", first=e.first_seen)
                self._endpoint(agent, net, rule[1], seen)

    def _derive(self, agent: str, b: Baseline) -> None:
        self._inv(agent)
        for path, prefix, e in b.iter_path_entries("open"):
            seen = Sight(e.last_seen, "baseline", first=e.first_seen)
            if prefix:
                self._prefix(agent, path, seen)
            else:
                self._path(agent, path, seen)
        for path, prefix, e in b.iter_path_entries("exec"):
            if not prefix:
                self._exec(agent, path, None, Sight(e.last_seen, "baseline", first=e.first_seen))
        for net, port, e in b.iter_net_entries():
            self._endpoint(agent, net, port, Sight(e.last_seen, "baseline", first=e.first_seen))

    def _prefix(self, agent: str, prefix: str, seen: Sight) -> None:
        """A collapsed directory rule: inside a package it still names it; a packages dir (or
        a namespace/scope in one) is listed from a live process of the agent."""
        loc = split_package_path(prefix)
        if loc is None:
            return
        hit = self.rules.classify_package(prefix)
        if hit is not None and hit.module:
            self._package(agent, hit, prefix, seen, None)
            return
        _, _, rest = loc
        if len(rest) <= 1 and self.read_proc and prefix.startswith("/"):
            self._listings[(agent, prefix)] = seen
            self._list(agent, prefix, seen)

    def _list(self, agent: str, prefix: str, seen: Sight) -> None:
        """Queues the listing of a packages dir, at most once every RETRY_SECONDS."""
        k = (agent, prefix)
        if time.monotonic() - self._listed.get(k, -1e9) >= RETRY_SECONDS:
            self._listed[k] = time.monotonic()
            self._submit(ListJob(agent, prefix, seen))

    # ---- the worker --------------------------------------------------------------------------

    def _submit(self, job: Job) -> bool:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats["jobs_dropped"] += 1
            return False
        return True

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if isinstance(job, VersionJob):
                    await self._run_version(job)
                elif isinstance(job, CmdlineJob):
                    await self._run_cmdline(job)
                elif isinstance(job, ScriptJob):
                    await self._run_script(job)
                else:
                    await self._run_list(job)
            except Exception as e:  # a bad /proc read must never stop the worker
                log.warning("AI-BOM lookup failed", job=type(job).__name__, error=str(e))

    def _pids(self, agent: str, first: int | None) -> Callable[[], list[int]]:
        cgroups = list(self.cgroups_of(agent))  # snapshot in the loop: bindings change there

        def pids() -> list[int]:
            found = [first] if first else []
            return found + [p for p in procfs.cgroup_pids(cgroups) if p != first]

        return pids

    async def _run_version(self, job: VersionJob) -> None:
        pids = self._pids(job.agent, job.pid)
        result = await asyncio.to_thread(read_version, pids, job, self._cache)
        k = (job.agent, job.key)
        self._pending.discard(k)
        self._attempts[k] = time.monotonic()
        rec = self.inventories.get(job.agent, Inventory("")).packages.get(job.key)
        if result is None or rec is None:
            return
        name, version, where = result
        self.stats["versions_read"] += 1
        rec.update(name=name, version=version, version_source=where)
        self._dirty.add(job.agent)

    async def _run_cmdline(self, job: CmdlineJob) -> None:
        argv = await asyncio.to_thread(procfs.matching_cmdline, job.pid, job.exe)
        if argv is None:
            return
        self.stats["cmdlines_read"] += 1
        self._exec(job.agent, job.exe, argv, job.seen, job.pid)

    async def _run_script(self, job: ScriptJob) -> None:
        pids = self._pids(job.agent, job.pid)
        result = await asyncio.to_thread(read_script_package, pids, job)
        k = (job.agent, job.key)
        self._pending.discard(k)
        self._attempts[k] = time.monotonic()
        rec = self.inventories.get(job.agent, Inventory("")).processes.get(job.key)
        if result is UNANSWERED or rec is None:
            return  # no live process: tried again after RETRY_SECONDS
        rec["script"] = ""  # answered: the script is part of that package, or of none
        if result is not None:
            self.stats["scripts_read"] += 1
            name, version, where = result
            rec["package"] = name
            if version is not None:
                rec["version"], rec["version_source"] = version, where
        self._dirty.add(job.agent)

    async def _run_list(self, job: ListJob) -> None:
        spaces = {p[0] for r in self.rules.packages for p in r.python if len(p) > 1}
        pids = self._pids(job.agent, None)

        names = await asyncio.to_thread(list_installed, pids, job.prefix, spaces)
        if names is None:
            return  # no live process: tried again after RETRY_SECONDS
        base = job.prefix.rstrip("/")
        installed = Sight(job.seen.when, "installed", first=job.seen.first)
        for name in names:
            path = f"{base}/{name}/"
            hit = self.rules.classify_package(path)
            if hit is not None and hit.module:
                self._package(job.agent, hit, path, installed, None)

    # ---- periodic work -----------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        last_save = last_retry = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SYNC_SECONDS)
            try:
                self.sync_baselines()
                now = time.monotonic()
                if now - last_retry >= RETRY_SECONDS:
                    last_retry = now
                    self._retry_versions()
                if now - last_save >= self.save_interval:
                    last_save = now
                    await self.save()
                self.rest()
            except Exception as e:
                log.error("AI-BOM maintenance failed", error=str(e))

    def _retry_versions(self) -> None:
        for agent, inv in self.inventories.items():
            if inv.resting is not None:
                continue  # rests only with every version known
            for key, rec in inv.packages.items():
                if rec["version"] is None and rec["packages_dir"].startswith("/"):
                    job = VersionJob(
                        agent, key, rec["ecosystem"], rec["packages_dir"], rec["module"], None
                    )
                    self._once(job, RETRY_SECONDS)
            for key, rec in inv.processes.items():
                if rec.get("script"):
                    self._once(ScriptJob(agent, key, rec["script"], None), RETRY_SECONDS)
        self._listed = {
            k: t for k, t in self._listed.items() if time.monotonic() - t < RETRY_SECONDS
        }
        # the listings of collapsed packages dirs, retried without re-deriving every baseline
        # (which read every entry of every agent, thawing resting baselines, once a minute)
        for (agent, prefix), seen in list(self._listings.items()):
            self._list(agent, prefix, seen)

    async def _dns_loop(self) -> None:
        while not self._stopping.is_set():
            for host in self.rules.hostnames:
                try:
                    infos = await asyncio.wait_for(self._resolver.resolve(host), DNS_TIMEOUT)
                except (OSError, TimeoutError, UnicodeError):
                    self.stats["dns_failures"] += 1
                    continue
                self.names.record(host, infos, time.time())
            self.stats["dns_rounds"] += 1
            self._name_endpoints()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.dns_refresh)

    def _name_endpoints(self) -> None:
        for agent, inv in self.inventories.items():
            rest = inv.resting
            if rest is not None and not rest.may_name(self.names):
                continue
            for rec in inv.endpoints.values():
                if not rec["network"]:
                    self._add_names(agent, rec)

    # ---- persistence -------------------------------------------------------------------------

    def _load_all(self) -> dict[str, Inventory]:
        out: dict[str, Inventory] = {}
        for inv in read_inventories(self.dir):
            for rec in inv.processes.values():
                if rec["category"] == LLM_SERVER:
                    self._llm_server(rec["rule"])
            # read one at a time and put to rest at once: records of every agent loaded
            # together and freed agent by agent as they come up leave the heap fragmented
            self._put_to_rest(inv)
            out[inv.agent] = inv
        return out

    async def save(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for agent in sorted(dirty):
            inv = self.inventories.get(agent)
            if inv is None:
                continue
            data = inv.dump()
            self._saved_at[agent] = time.monotonic()
            try:
                await asyncio.to_thread(atomic_write, inventory_file(self.dir, agent), data)
            except OSError as e:
                self._dirty.add(agent)
                log.error("saving the AI-BOM failed; will retry", agent=agent, error=str(e))

    # ---- rest --------------------------------------------------------------------------------

    def rest(self, agent: str | None = None, *, quiet: float = REST_SECONDS) -> int:
        """Puts inventories at rest (agent: that one only) that nothing changed or read for
        quiet seconds; returns how many. Never one waiting for a package version or with an
        endpoint DNS names (the periodic passes read those). The records of an agent that is
        not acting (500 endpoints: 0.3 MB as dicts) then take a few kB."""
        now = time.monotonic()
        names = [agent] if agent is not None else list(self.inventories)
        n = 0
        for name in names:
            inv = self.inventories.get(name)
            if inv is None or inv.resting is not None:
                continue
            if quiet and (
                name in self._dirty
                or now - max(inv.live_since, self._saved_at.get(name, -1e9)) < quiet
            ):
                continue
            if self._put_to_rest(inv):
                n += 1
        return n

    def _put_to_rest(self, inv: Inventory) -> bool:
        """Rests inv unless a periodic pass must read it (a version or a script's package to
        retry, an endpoint DNS names)."""
        if any(r["version"] is None for r in inv.packages.values()):
            return False
        if self.read_proc and any(r.get("script") for r in inv.processes.values()):
            return False
        named = self.names.by_address
        if named and any(
            not r["network"] and r["address"] in named for r in inv.endpoints.values()
        ):
            return False
        ai = is_ai(inv, self.rules, self.names, self.llm_servers)
        inv.rest(ai, self.rules, self.names, self.llm_servers)
        return True

    # ---- views -------------------------------------------------------------------------------

    def agent_view(self, agent: str) -> dict[str, Any]:
        """The AI-BOM of one agent, JSON-ready, sorted (views.agent_view)."""
        inv = self.inventories.get(agent) or Inventory(agent)
        return agent_view(inv, agent, self.node, self.rules, self.names, self.llm_servers)

    def agents(self) -> list[str]:
        return sorted(set(self.baselines()) | set(self.inventories))

    def node_view(self) -> dict[str, Any]:
        views = [self.agent_view(a) for a in self.agents()]
        return {
            "node": self.node,
            "ai_agents": sum(1 for v in views if v["ai_agent"]),
            "agents": views,
        }

    def ai_agents(self) -> int:
        """How many agents are AI agents (cheaper than building every view; a resting
        inventory answers from its rest)."""
        return sum(
            1
            for inv in self.inventories.values()
            if is_ai(inv, self.rules, self.names, self.llm_servers)
        )


def _process(hit: ExecHit) -> dict[str, Any]:
    """A new process record's fields. script: the MCP server's file whose package is still
    to look up ("" once answered); package: the package it belongs to."""
    return {
        "category": hit.category,
        "name": hit.name,
        "exe": hit.exe,
        "rule": hit.rule,
        "version": hit.version,
        "command": list(hit.command),
        "launcher": hit.launcher,
        "commands": [],
        "script": hit.script if hit.category == "mcp-server" else "",
        "package": None,
        "version_source": None,
    }
