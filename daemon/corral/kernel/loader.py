"""The kernel side of corral as Python sees it: load corral.bpf.o, attach the chosen backends,
and read/write its maps (cgroup -> agent, per-agent modes, allow-lists, counters).

Every key and value is built from the structs in bpf/corral.h through corral.layout (keys.py):
there is no second description of a kernel layout here.

~650 lines: Kernel is the one owner of corral's kernel handles (load, attach, pin and adopt,
integrity checks and repair, map access); kept whole so that no other module holds them.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import ipaddress
import itertools
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from bpfkit import BpfError, BpfObject, Link, Map, RingBuffer, RingReader, bpf_obj_pin
from corral.contract import Conflict

from . import hostfs, layout
from .guard import NO_SUCH_SYSCALL, TP_EVERYWHERE
from .keys import (
    _allow_value,
    exact_key_bytes,
    net_key,
    path_key,
    pattern_key,
    pattern_set_value,
)
from .layout import DIMS, MODES, C

log = structlog.get_logger("corral.kernel")

LSM_PROGRAMS = {
    "exec": "corral_lsm_exec",
    "open": "corral_lsm_open",
    "connect": "corral_lsm_connect",
}
# The same decisions as fmod_ret programs on the security_* functions (BPF LSM not active).
# The fmod_ret exec check reads the path its open program resolved at open_exec: exec needs it.
FMOD_PROGRAMS = {
    "exec": "corral_fmod_exec",
    "open": "corral_fmod_open",
    "connect": "corral_fmod_connect",
}
DENY_PROGRAMS = {"lsm": LSM_PROGRAMS, "fmod_ret": FMOD_PROGRAMS}
EXEC_TRACEPOINT = "corral_tp_exec"
# Fallback open hooks, by Backends.open: the syscall tracepoints run only for their syscall
# (corral_tp_open exists on x86 only: arm64 has no open(2)); tp_btf/sys_enter runs for every
# syscall, so it is the choice only where syscall tracepoints are missing.
OPEN_PROGRAMS = {
    "tracepoint": ("corral_tp_openat", "corral_tp_openat2", "corral_tp_open"),
    "sys_enter": ("corral_tp_sysenter_open",),
}
# The tamper guard (bpf/guard.bpf.h), by Backends.guard. The three tp_btf programs keep a
# container runtime's init exempt until it execs; every family that reads the task needs them.
GUARD_HOOKS = (
    "bpf", "prctl", "mount", "move_mount", "umount", "pivotroot", "chroot", "ptrace", "socket",
    "open", "unlink", "rename", "kill", "clone", "sigio", "write",
)  # fmt: skip
TP_GUARDS = (
    "bpf", "mount", "umount", "move_mount", "pivot_root", "chroot", "pidfd_getfd", "prctl",
    "socket", "kill", "tgkill", "tkill", "clone3", *TP_EVERYWHERE,
)  # fmt: skip
GUARD_EXEMPT = ("corral_guard_attach", "corral_guard_fork", "corral_guard_exec")
# cgroup programs of the guard every backend attaches (sock_addr works wherever corral runs)
GUARD_CGROUP = ("corral_cg_guard_bind4", "corral_cg_guard_bind6")
_TP_EVERYWHERE = tuple(f"corral_tp_guard_{n}" for n in TP_EVERYWHERE)
GUARD_PROGRAMS: dict[str, tuple[str, ...]] = {
    "lsm": tuple(f"corral_lsm_guard_{h}" for h in GUARD_HOOKS)
    + _TP_EVERYWHERE
    + GUARD_EXEMPT
    + GUARD_CGROUP,
    "fmod_ret": tuple(f"corral_fmod_guard_{h}" for h in GUARD_HOOKS)
    + _TP_EVERYWHERE
    + GUARD_EXEMPT
    + GUARD_CGROUP,
    # the fallback: raw inet sockets denied; the rest killed after the call (syscall tracepoints)
    "tracepoint": (
        "corral_cg_guard_sock",
        *(f"corral_tp_guard_{n}" for n in TP_GUARDS),
        *GUARD_EXEMPT,
        *GUARD_CGROUP,
    ),
    # no syscall tracepoints: raw inet sockets and port 53 only
    "cgroup": ("corral_cg_guard_sock", *GUARD_CGROUP),
    "none": (),
}
CGROUP_CONNECT = ("corral_cg_connect4", "corral_cg_connect6")
CGROUP_SENDMSG = ("corral_cg_sendmsg4", "corral_cg_sendmsg6")
DNS_PROGRAM = "corral_cg_dns_ingress"  # Backends.dns == "cgroup_skb"

COUNTER_FIELDS = ("allowed", "novel", "would_deny", "denied", "suppressed", "dropped")
_INSERT_BATCH = 1024  # keys per BPF_MAP_UPDATE_BATCH when a list is filled
# Exact paths live in a hash map beside each LPM trie (which keeps the "dir/" prefixes); the
# pair is sized together from the trie's configured size.
EXACT_MAPS = {"exec_allow": "exec_exact", "open_allow": "open_exact"}


# The configuration field that sizes each allow-list map.
SIZE_SETTINGS = {
    "exec_allow": "exec_allow_entries",
    "exec_exact": "exec_allow_entries",
    "open_allow": "open_allow_entries",
    "open_exact": "open_allow_entries",
    "net_allow": "net_allow_entries",
}


class AllowListFull(Conflict):
    """An allow-list map is full: entries shared by every agent on the node."""

    def __init__(self, map_name: str, max_entries: int) -> None:
        super().__init__(
            f"the kernel allow-list map {map_name} is full ({max_entries:,} entries, shared by "
            f"every agent on this node): raise kernel.{SIZE_SETTINGS.get(map_name, '?')} in "
            "corrald's configuration and restart it; until then the kernel keeps denying what "
            "did not fit"
        )
        self.map_name = map_name


def object_path(name: str = "corral.bpf.o") -> Path:
    """The precompiled object shipped as package data (built by `make bpf`)."""
    p = Path(str(resources.files("corral").joinpath("bpf", name)))
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} is missing: build the BPF objects with `make bpf` (needs clang and libbpf-dev)"
        )
    return p


def cgroup2_root() -> Path:
    """Mount point of the cgroup v2 hierarchy (/sys/fs/cgroup, or .../unified on hybrid hosts)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    raise RuntimeError("no cgroup v2 hierarchy is mounted: corral needs cgroup v2 (see README)")


def cgroup_id(path: str | os.PathLike[str]) -> int:
    """A cgroup v2 directory's id, as bpf_get_current_cgroup_id() returns it: its inode."""
    return os.stat(path).st_ino


@dataclass(frozen=True)
class Backends:
    """Which program decides each dimension on this kernel, and whether it can deny."""

    exec: str  # "lsm" | "fmod_ret" | "tracepoint"
    # "lsm" | "fmod_ret" | "tracepoint" (syscall tracepoints) | "sys_enter" (tp_btf) | "none"
    open: str
    connect: str  # "lsm" | "fmod_ret" | "cgroup"
    # the tamper guard: "lsm" | "fmod_ret" (denies) | "tracepoint" (raw inet sockets denied,
    # the rest killed after the call) | "cgroup" (raw inet sockets only) | "none"
    guard: str = "none"
    # DNS-aware egress (bpf/dns.bpf.h): "cgroup_skb" reads agents' DNS answers so connect can
    # allow by name; "none" (the default until learning by name exists: docs/names.md)
    dns: str = "none"

    @classmethod
    def choose(cls, deny: bool | str | None, *, open_fallback: str = "tracepoint") -> Backends:
        """deny: the family that denies all three dimensions here ("lsm" or "fmod_ret"; True
        means "lsm"), or a false value for the fallback backends. open_fallback: the open hook
        of the fallback ("tracepoint", "sys_enter", or "none": opens not watched)."""
        if deny:
            family = "lsm" if deny is True else str(deny)
            if family not in DENY_PROGRAMS:
                raise ValueError(f"unknown backend family {family!r}")
            return cls(exec=family, open=family, connect=family, guard=family)
        guard = "tracepoint" if open_fallback == "tracepoint" else "cgroup"
        return cls(exec="tracepoint", open=open_fallback, connect="cgroup", guard=guard)

    def without_guard(self) -> Backends:
        return dataclasses.replace(self, guard="none")

    def of(self, dim: str) -> str:
        return str(getattr(self, dim))

    def enforcement(self, dim: str) -> str:
        """What ENFORCE means for dim here: 'deny', 'kill', 'observe-only' or 'unwatched'."""
        b = self.of(dim)
        if b in ("lsm", "fmod_ret", "cgroup"):
            return "deny"
        if b == "none":
            return "unwatched"
        if dim == "exec":
            return "kill"
        return "observe-only"


@dataclass
class AgentConfig:
    """The kernel's view of one agent: modes and allow-list ids per dimension."""

    modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(DIMS, "observe"))
    lists: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIMS, 0))
    rate_limit: int = 0
    active: bool = True
    tamper_allow: frozenset[str] = frozenset()  # tamper kinds the operator accepted


class Kernel:
    """Owns corral's BPF state in this kernel: its maps, its links, its ring buffer.

    Two ways in. Fresh: the object is loaded but nothing is attached until `activate()`, so the
    caller fills the maps (cgroups, modes, allow-lists) first and an enforced agent is never
    attached to empty lists. Adopted: with `pin_dir`, pins left by an earlier corrald of the same
    object and backends are reused as they are: the kernel never stopped enforcing, and
    `activate()` has nothing to attach.

    Pins live under pin_dir/<fingerprint>/{maps,links}/. A different fingerprint (an upgrade, or
    other backends) is replaced: the new links are attached before the old ones are removed.
    """

    def __init__(
        self,
        backends: Backends,
        *,
        cgroup_root: Path | None = None,
        obj_path: Path | None = None,
        map_sizes: dict[str, int] | None = None,
        suppress_ns: int = 60 * 1_000_000_000,
        pin_dir: Path | None = None,
    ) -> None:
        self.backends = backends
        self.cgroup_root = cgroup_root or cgroup2_root()
        self.pin_dir = pin_dir
        obj_path = self._obj_path = obj_path or object_path()
        self.fingerprint = _fingerprint(obj_path, backends, map_sizes or {})
        self._obj: BpfObject | None = None
        self.guard_error = ""  # why the tamper guard is not loaded, when it is not
        self.guard_unattached: dict[str, str] = {}  # guard programs that did not attach: why
        self._maps: dict[str, Map] = {}
        self._links: dict[str, Link] = {}  # program name -> its link
        self._active = False
        self.adopted = self._adopt()
        if self.adopted:
            self._generation = self._read_generation()
            self._set_guard_tgid()
            log.info("adopted pinned bpf state", pins=str(self._pins), backends=backends.__dict__)
            return
        self._generation = 0
        self.guard_unattached.clear()
        try:
            try:
                self._load(obj_path, map_sizes or {})
            except BpfError as e:
                if self.backends.guard == "none":
                    raise
                # the guard is not worth the dimensions: load without it, and say so
                self.guard_error = f"the tamper guard ({self.backends.guard}) did not load: {e}"
                log.error("tamper guard not loaded; agents are not kept from tampering",
                          error=str(e), backend=self.backends.guard)  # fmt: skip
                self.close()
                self.backends = self.backends.without_guard()
                self._load(obj_path, map_sizes or {})
            self._configure(suppress_ns)
        except BaseException:
            self.close()
            raise
        log.info("bpf loaded", backends=self.backends.__dict__, cgroup_root=str(self.cgroup_root))

    def _load(self, obj_path: Path, map_sizes: dict[str, int]) -> None:
        self._obj = BpfObject.open_file(str(obj_path))
        self._select_programs()
        for name, size in map_sizes.items():
            self._obj.maps[name].set_max_entries(size)
            if name in EXACT_MAPS:
                self._obj.maps[EXACT_MAPS[name]].set_max_entries(size)
        self._obj.load()
        self._maps = {n: m for n, m in self._obj.maps.items() if _ours(n)}

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def _pins(self) -> Path:
        assert self.pin_dir is not None
        return self.pin_dir / self._pin_name

    def _adopt(self) -> bool:
        self._pin_name = self.fingerprint
        if self.pin_dir is None:
            return False
        hostfs.ensure_bpffs(self.pin_dir)
        # ours: <fingerprint>, or <fingerprint>-<n> where damaged pins were replaced (bpffs
        # cannot rename a directory); the newest complete one
        ours = [
            d.name
            for d in (self.pin_dir.iterdir() if self.pin_dir.is_dir() else ())
            if d.name == self.fingerprint or d.name.startswith(self.fingerprint + "-")
        ]
        for name in sorted(ours, key=lambda n: (len(n), n)):
            if (self.pin_dir / name / "maps" / "settings").exists():
                self._pin_name = name
        if not (self._pins / "maps" / "settings").exists():
            return False
        try:
            self._maps = {p.name: Map.open_pinned(p) for p in (self._pins / "maps").iterdir()}
            self._links = {
                p.name: Link.open_pinned(p) for p in sorted((self._pins / "links").iterdir())
            }
        except (OSError, BpfError) as e:
            log.warning(
                "pinned bpf state unusable, loading fresh", pins=str(self._pins), error=str(e)
            )
            self._close_handles()
            return False
        # a guard hook this kernel would not attach was never pinned: not damage, said in status
        for name in GUARD_PROGRAMS[self.backends.guard]:
            if name not in self._links:
                self.guard_unattached[name] = "not attached when these pins were made"
        damage = self.damage() + [
            ("pin_missing", f"maps/{m}") for m in sorted(self._expected_maps - set(self._maps))
        ]
        if damage:
            # never adopt what someone tampered with: load and attach afresh under a new pin
            # directory; activate() removes the damaged one once the new links are in place
            # (its intact links keep enforcing until then)
            damaged, self._pin_name = self._pins, f"{self.fingerprint}-{time.time_ns()}"
            log.error(
                "pinned bpf state was tampered with: not adopted, loading fresh",
                pins=str(damaged),
                damage=[f"{k} {w}" for k, w in damage],
                new_pins=str(self._pins),
            )
            self._close_handles()
            return False
        self._active = True
        return True

    @property
    def _expected_maps(self) -> set[str]:
        """The maps of the object file (opened, not loaded)."""
        obj = BpfObject.open_file(str(self._obj_path))
        try:
            return {n for n in obj.maps if _ours(n)}
        finally:
            obj.close()

    def _select_programs(self) -> None:
        assert self._obj is not None
        for name, prog in self._obj.programs.items():
            prog.autoload = name in self.program_names()

    def program_names(self) -> set[str]:
        """The programs this backend choice runs."""
        wanted = {
            progs[d]
            for family, progs in DENY_PROGRAMS.items()
            for d in DIMS
            if self.backends.of(d) == family
        }
        if self.backends.exec == "fmod_ret":
            wanted.add(FMOD_PROGRAMS["open"])  # resolves the path of what execve opens
        if self.backends.exec == "tracepoint":
            wanted.add(EXEC_TRACEPOINT)
        wanted |= set(OPEN_PROGRAMS.get(self.backends.open, ()))
        if self.backends.connect == "cgroup":
            wanted |= set(CGROUP_CONNECT)
        wanted |= set(CGROUP_SENDMSG)  # unconnected UDP has no LSM connect hook
        wanted |= set(GUARD_PROGRAMS[self.backends.guard])
        if self.backends.dns == "cgroup_skb":
            wanted.add(DNS_PROGRAM)
        return wanted

    def activate(self) -> None:
        """Attaches the programs (after the maps are filled), pins, retires older pins."""
        if self._active:
            return
        assert self._obj is not None
        tracefs: Path | None = None
        if any(
            p.autoload and p.section.startswith("tracepoint/") for p in self._obj.programs.values()
        ):
            tracefs = hostfs.ensure_tracefs()
        for name, prog in self._obj.programs.items():
            if not prog.autoload:
                continue
            try:
                if name.startswith("corral_cg_"):
                    link = prog.attach_cgroup(str(self.cgroup_root))
                else:
                    link = prog.attach()
            except BpfError as e:
                if name not in GUARD_PROGRAMS[self.backends.guard]:
                    raise
                # one hook of the guard missing does not take the dimensions down: said in status
                if tracefs is not None and _no_such_tracepoint(tracefs, prog.section):
                    self.guard_unattached[name] = NO_SUCH_SYSCALL
                    log.info("tamper guard hook skipped", program=name, reason=NO_SUCH_SYSCALL)
                    continue
                self.guard_unattached[name] = str(e).splitlines()[0]
                log.error("tamper guard hook not attached", program=name, error=str(e))
                continue
            self._links[name] = link
            if self.pin_dir is not None:
                (self._pins / "links").mkdir(parents=True, exist_ok=True)
                link.pin(self._pins / "links" / name)
        if self.pin_dir is not None:
            (self._pins / "maps").mkdir(parents=True, exist_ok=True)
            for name, m in self._maps.items():
                if not (self._pins / "maps" / name).exists():
                    m.pin(self._pins / "maps" / name)
            self._retire_stale_pins()
        self._active = True
        log.info("bpf attached", programs=sorted(self.programs), pinned=self.pin_dir is not None)

    # ---- integrity ------------------------------------------------------------------------

    def damage(self) -> list[tuple[str, str]]:
        """What is wrong with corral's own kernel state now, as (kind, what): a link detached
        (BPF_LINK_DETACH by whoever got its fd), a pin removed, a program missing from the
        links. Read from the kernel; nothing here trusts what corrald did earlier."""
        out: list[tuple[str, str]] = []
        for name in sorted(self.program_names() - set(self._links) - set(self.guard_unattached)):
            out.append(("link_missing", name))
        for name, link in sorted(self._links.items()):
            try:
                info = link.info()
            except BpfError as e:
                out.append(("link_unreadable", f"{name}: {e}"))
                continue
            if info.cgroup_id is not None and info.cgroup_id != cgroup_id(self.cgroup_root):
                out.append(("link_detached", name))
        if self.pin_dir is not None and self._active:
            for name in sorted(self._links):
                if not (self._pins / "links" / name).exists():
                    out.append(("pin_missing", f"links/{name}"))
            for name in sorted(self._maps):
                if not (self._pins / "maps" / name).exists():
                    out.append(("pin_missing", f"maps/{name}"))
        return out

    def repair(self, damage: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Repairs what it can of damage(): a detached cgroup link is attached again (when this
        corrald loaded the object: adopted links have no program handle here; a restart
        re-creates them, see _adopt), a removed pin is pinned again from the handle we hold.
        Returns what is still broken."""
        left: list[tuple[str, str]] = []
        for kind, what in damage:
            try:
                if kind == "link_detached" and self._obj is not None:
                    self._reattach(what)
                elif kind == "pin_missing":
                    table, name = what.split("/", 1)
                    target = self._pins / table / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    handle = self._links[name] if table == "links" else self._maps[name]
                    bpf_obj_pin(handle.fd, target)
                else:
                    left.append((kind, what))
                    continue
                log.warning("kernel state repaired", kind=kind, what=what)
            except (OSError, BpfError) as e:
                log.error("kernel state not repaired", kind=kind, what=what, error=str(e))
                left.append((kind, what))
        return left

    def _reattach(self, name: str) -> None:
        assert self._obj is not None
        old = self._links[name]
        new = self._obj.programs[name].attach_cgroup(str(self.cgroup_root))
        self._links[name] = new
        if self.pin_dir is not None:
            pin = self._pins / "links" / name
            pin.unlink(missing_ok=True)
            bpf_obj_pin(new.fd, pin)
        old.destroy()

    def _retire_stale_pins(self) -> None:
        assert self.pin_dir is not None
        for old in self.pin_dir.iterdir():
            if old.name != self._pin_name and old.is_dir():
                log.info("removing bpf state of an earlier corrald", pins=str(old))
                remove_pins(old)

    def _configure(self, suppress_ns: int) -> None:
        conf = layout.new("struct corral_config")
        conf.suppress_ns = suppress_ns
        conf.generation = self._generation
        conf.guard_tgid = os.getpid()
        self.map("settings").update(_u32(0), layout.to_bytes(conf))

    def _set_guard_tgid(self) -> None:
        """Signals from agents to this process are tamper (an adopted state names the last
        corrald)."""
        m = self.map("settings")
        conf = layout.from_bytes("struct corral_config", m.lookup(_u32(0)) or b"")
        conf.guard_tgid = os.getpid()
        m.update(_u32(0), layout.to_bytes(conf))

    def _read_generation(self) -> int:
        raw = self.map("settings").lookup(_u32(0)) or b""
        return int(layout.from_bytes("struct corral_config", raw).generation)

    def _close_handles(self) -> None:
        for link in self._links.values():
            # Closes our fd only: a pinned link stays attached (the pin holds it), so the kernel
            # keeps enforcing after we are gone; an unpinned one detaches.
            link.destroy()
        self._links.clear()
        for m in self._maps.values():
            if self._obj is None:
                m.close()
        self._maps.clear()

    def close(self) -> None:
        """Releases our handles. Pinned state stays in the kernel (see `remove_pins`)."""
        self._close_handles()
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, name: str) -> Map:
        return self._maps[name]

    @property
    def programs(self) -> list[str]:
        if self._obj is None:
            return [p.name for p in (self._pins / "links").iterdir()] if self.adopted else []
        return [
            n
            for n, p in self._obj.programs.items()
            if p.autoload and n not in self.guard_unattached
        ]

    # ---- identity -------------------------------------------------------------------------

    def register_cgroup(self, cgid: int, agent: int, *, inherit: bool = False) -> None:
        _check_agent(agent)
        v = layout.new("struct corral_cgroup_val")
        v.agent = agent
        v.flags = C.CORRAL_CG_INHERIT if inherit else 0
        self.map("cgroup_agents").update(_u64(cgid), layout.to_bytes(v))
        self._bump_generation()

    def unregister_cgroup(self, cgid: int) -> bool:
        gone = self.map("cgroup_agents").delete(_u64(cgid))
        self._bump_generation()
        return gone

    def registered_cgroups(self) -> dict[int, tuple[int, bool]]:
        out: dict[int, tuple[int, bool]] = {}
        for k, v in self.map("cgroup_agents").items():
            val = layout.from_bytes("struct corral_cgroup_val", v)
            cgid = layout.ffi().cast("__u64 *", layout.ffi().from_buffer(k))[0]
            out[int(cgid)] = (val.agent, bool(val.flags & C.CORRAL_CG_INHERIT))
        return out

    def _bump_generation(self) -> None:
        """Invalidates every cached cgroup resolution in the kernel (one map write)."""
        self._generation += 1
        m = self.map("settings")
        conf = layout.from_bytes("struct corral_config", m.lookup(_u32(0)) or b"")
        conf.generation = self._generation
        m.update(_u32(0), layout.to_bytes(conf))

    # ---- agents ---------------------------------------------------------------------------

    def set_agent(self, agent: int, cfg: AgentConfig) -> None:
        """Writes the agent's modes and list ids: one map write, so a flip is atomic."""
        _check_agent(agent)
        v = layout.new("struct corral_agent_cfg")
        for i, dim in enumerate(DIMS):
            v.mode[i] = layout.mode_index(cfg.modes[dim])
            v.list[i] = cfg.lists[dim]
        v.rate_limit = cfg.rate_limit
        v.active = 1 if cfg.active else 0
        v.tamper_allow = layout.tamper_bits(cfg.tamper_allow)
        self.map("agent_cfg").update(_u32(agent), layout.to_bytes(v))

    def get_agent(self, agent: int) -> AgentConfig:
        _check_agent(agent)
        raw = self.map("agent_cfg").lookup(_u32(agent))
        v = layout.from_bytes("struct corral_agent_cfg", raw or b"")
        return AgentConfig(
            modes={d: MODES[v.mode[i]] for i, d in enumerate(DIMS)},
            lists={d: int(v.list[i]) for i, d in enumerate(DIMS)},
            rate_limit=int(v.rate_limit),
            active=bool(v.active),
            tamper_allow=layout.tamper_kinds(int(v.tamper_allow)),
        )

    def clear_agent(self, agent: int) -> None:
        _check_agent(agent)
        self.map("agent_cfg").update(_u32(agent), bytes(layout.sizeof("struct corral_agent_cfg")))

    # ---- allow-lists ----------------------------------------------------------------------

    def allow_paths(
        self, dim: str, list_id: int, exact: Iterable[str], prefixes: Iterable[str] = ()
    ) -> int:
        n = self._insert_all(self._exact_map(dim), (exact_key_bytes(list_id, p) for p in exact))
        prefix_keys = (layout.to_bytes(path_key(list_id, p, prefix=True)) for p in prefixes)
        return n + self._insert_all(self._path_map(dim), prefix_keys)

    def set_patterns(self, dim: str, list_id: int, groups: dict[str, list[str]]) -> int:
        """Makes the list's patterns exactly these groups (policy.patterns.kernel_groups: literal
        prefix -> the patterns its entry holds). New and changed entries are written before
        stale ones go: a lookup meanwhile finds the old patterns or the new, never none."""
        m = self._pattern_map(dim)
        keys = {
            layout.to_bytes(pattern_key(list_id, pre)): pattern_set_value(pats)
            for pre, pats in groups.items()
        }
        return _replace_list(m, list_id, keys)

    def set_callers(self, base: int, callers: dict[str, int]) -> int:
        """Exec lineage: makes exec_callers for the agent's exec list `base` exactly callers
        (caller path -> the list of its programs), new entries first, then stale ones out."""
        keys = {exact_key_bytes(base, c): _u32(lst) for c, lst in callers.items()}
        return _replace_list(self.map("exec_callers"), base, keys)

    def callers(self, base: int) -> dict[str, int]:
        """exec_callers of one exec list, as the kernel holds them."""
        m = self.map("exec_callers")
        list_of = _list_reader(m.name)
        out: dict[str, int] = {}
        for key in m:
            if list_of(key) != base:
                continue
            k = layout.from_bytes("struct corral_path_key", key)
            raw = bytes(layout.ffi().buffer(k.path)).split(b"\0", 1)[0]
            val = m.lookup(key)
            if val is not None:
                out[raw.decode("utf-8", "surrogateescape")] = int.from_bytes(val[:4], "little")
        return out

    def patterns(self, dim: str, list_id: int) -> dict[str, list[str]]:
        """The list's pattern groups as the kernel holds them (literal prefix -> patterns)."""
        m = self._pattern_map(dim)
        list_of = _list_reader(m.name)
        out: dict[str, list[str]] = {}
        for key in m:
            if list_of(key) != list_id:
                continue
            k = layout.from_bytes("struct corral_path_key", key)
            n = k.prefixlen // 8 - 4
            pre = bytes(layout.ffi().buffer(k.path))[:n].decode("utf-8", "surrogateescape")
            raw = m.lookup(key)
            if raw is None:
                continue
            v = layout.from_bytes("struct corral_pattern_set", raw)
            out[pre] = [
                bytes(layout.ffi().buffer(v.pattern[i].glob))[: v.pattern[i].len].decode(
                    "utf-8", "surrogateescape"
                )
                for i in range(v.count)
            ]
        return out

    def allow_net(self, list_id: int, entries: Iterable[tuple[str, int]]) -> int:
        """entries: (address or CIDR, port or 0 for any port)."""
        keys = (layout.to_bytes(net_key(list_id, a, p)) for a, p in entries)
        return self._insert_all(self.map("net_allow"), keys)

    def _insert_all(self, m: Map, keys: Iterator[bytes]) -> int:
        """Writes keys in batches of _INSERT_BATCH: a baseline's 10,000 keys (~2.7 MB of
        bytes objects) never exist at once, so a start-up that pushes 100 baselines does not
        leave the allocator's arenas pinned by what was allocated beside them."""
        n = 0
        while batch := list(itertools.islice(keys, _INSERT_BATCH)):
            self._insert(m, batch)
            n += len(batch)
        return n

    def _insert(self, m: Map, keys: list[bytes]) -> None:
        if not keys:
            return
        try:
            m.update_batch(keys, [_allow_value()] * len(keys))
        except BpfError as e:
            # hash maps say E2BIG when full, LPM tries ENOSPC
            if e.errno in (errno.E2BIG, errno.ENOSPC):
                raise AllowListFull(m.name, m.max_entries) from e
            raise

    def clear_list(self, dim: str, list_id: int) -> int:
        """Deletes every entry of one allow-list (after it has been swapped out)."""
        return self.clear_lists(dim, (list_id,))

    def clear_lists(self, dim: str, list_ids: Iterable[int]) -> int:
        """Deletes every entry of these allow-lists: one pass over each of the dimension's
        maps, whatever the number of lists (a pass reads every key of the map)."""
        ids = set(list_ids)
        if not ids:
            return 0
        removed = 0
        mask = (1 << C.CORRAL_CALLER_SHIFT) - 1 if dim == "exec" else 0xFFFFFFFF
        for m in self._maps_of(dim):
            list_of = _list_reader(m.name)
            doomed = [k for k in m if list_of(k) & mask in ids]  # exec: callers' lists too
            removed += m.delete_batch(doomed)
        return removed

    def remove_paths(
        self, dim: str, list_id: int, exact: Iterable[str], prefixes: Iterable[str] = ()
    ) -> int:
        """Deletes these entries from one allow-list (those it does not hold are skipped)."""
        n = self._exact_map(dim).delete_batch([exact_key_bytes(list_id, p) for p in exact])
        keys = [layout.to_bytes(path_key(list_id, p, prefix=True)) for p in prefixes]
        return n + self._path_map(dim).delete_batch(keys)

    def remove_net(self, list_id: int, entries: Iterable[tuple[str, int]]) -> int:
        """Deletes these (address or CIDR, port) entries from one allow-list."""
        keys = [layout.to_bytes(net_key(list_id, a, p)) for a, p in entries]
        return self.map("net_allow").delete_batch(keys)

    def _maps_of(self, dim: str) -> list[Map]:
        if dim == "connect":  # addresses, names, and what the names' answers allowed
            return [self.map("net_allow"), self.map("dns_names"), self.map("dns_addrs")]
        maps = [self._path_map(dim), self._exact_map(dim), self._pattern_map(dim)]
        return [*maps, self.map("exec_callers")] if dim == "exec" else maps

    def _path_map(self, dim: str) -> Map:
        if dim not in ("exec", "open"):
            raise ValueError(f"{dim!r} is not a path dimension")
        return self.map(f"{dim}_allow")

    def _pattern_map(self, dim: str) -> Map:
        return self.map(f"{self._path_map(dim).name.split('_')[0]}_pattern")

    def _exact_map(self, dim: str) -> Map:
        return self.map(EXACT_MAPS[self._path_map(dim).name])

    # ---- counters and events --------------------------------------------------------------

    def counters(self, agent: int) -> dict[str, dict[str, int]]:
        """Per-dimension counters summed over CPUs."""
        m = self.map("counters")
        out: dict[str, dict[str, int]] = {}
        for i, dim in enumerate(DIMS):
            totals = dict.fromkeys(COUNTER_FIELDS, 0)
            for raw in m.lookup_percpu(_u32(agent * len(DIMS) + i)) or []:
                c = layout.from_bytes("struct corral_counters", raw)
                for f in COUNTER_FIELDS:
                    totals[f] += int(getattr(c, f))
            out[dim] = totals
        return out

    def tamper_counters(self, agent: int) -> dict[str, int]:
        """The tamper guard's counters of one agent, summed over CPUs (would_deny, denied,
        suppressed, dropped; allowed and novel stay 0)."""
        totals = dict.fromkeys(COUNTER_FIELDS, 0)
        if "tamper_counters" not in self._maps:
            return totals
        for raw in self.map("tamper_counters").lookup_percpu(_u32(agent)) or []:
            c = layout.from_bytes("struct corral_counters", raw)
            for f in COUNTER_FIELDS:
                totals[f] += int(getattr(c, f))
        return totals

    def pending_repeats(self) -> dict[tuple[int, str], int]:
        """(list, object) -> repeats the kernel suppressed since its last report of them, for
        reports that were deviations (would-deny, denied, killed), summed over executables.
        The object is the path, or address:port as events show it."""
        out: dict[tuple[int, str], int] = {}
        for name in ("seen_path", "seen_net"):
            m = self.map(name)
            for key in m:
                raw = m.lookup(key)
                if raw is None:
                    continue
                stamp, pending = (
                    int.from_bytes(raw[:8], "little"),
                    int.from_bytes(raw[8:16], "little"),
                )
                if not pending or not stamp & 3:
                    continue
                list_id, obj = _seen_object(name, key)
                out[(list_id, obj)] = out.get((list_id, obj), 0) + pending
        return out

    def ring_buffer(self, callback: Any) -> RingBuffer:
        return RingBuffer(self.map("events"), callback)

    def ring_reader(self) -> RingReader:
        """Batches of records without a libbpf callback each (x86-64: RingReader.supported)."""
        return RingReader(self.map("events"))


def _no_such_tracepoint(tracefs: Path, section: str) -> bool:
    """A "tracepoint/CATEGORY/NAME" section whose tracepoint this kernel lacks (a newer syscall)."""
    if not section.startswith("tracepoint/"):
        return False
    return not (tracefs / "events" / section.removeprefix("tracepoint/")).is_dir()


def _ours(map_name: str) -> bool:
    """A map of corral's own, not one libbpf made for a section (corral.rodata holds the
    guard's format strings): those are the programs' business, and bpffs refuses names with
    a dot (EPERM), so they are never pinned."""
    return "." not in map_name


def remove_pins(pin_dir: Path) -> int:
    """Unpins everything under one fingerprint dir (links first: programs detach once no fd
    holds them) and removes the dir. Returns how many pins went."""
    removed = 0
    for sub in ("links", "maps"):
        for p in sorted(pin_dir.glob(f"{sub}/*")):
            p.unlink()
            removed += 1
        if (pin_dir / sub).is_dir():
            (pin_dir / sub).rmdir()
    pin_dir.rmdir()
    return removed


def _fingerprint(obj_path: Path, backends: Backends, map_sizes: dict[str, int]) -> str:
    h = hashlib.sha256(obj_path.read_bytes())
    h.update(repr((sorted(backends.__dict__.items()), sorted(map_sizes.items()))).encode())
    return h.hexdigest()[:16]


def _check_agent(agent: int) -> None:
    if not 1 <= agent < C.CORRAL_MAX_AGENTS:
        raise ValueError(f"agent id {agent} out of range 1..{C.CORRAL_MAX_AGENTS - 1}")


def _u32(v: int) -> bytes:
    return bytes(layout.ffi().buffer(layout.ffi().new("__u32 *", v)))


def _u64(v: int) -> bytes:
    return bytes(layout.ffi().buffer(layout.ffi().new("__u64 *", v)))


def _replace_list(m: Map, list_id: int, entries: dict[bytes, bytes]) -> int:
    """Makes one list's entries in m exactly these: new and changed ones are written before
    the stale ones go, so a lookup meanwhile finds the old or the new, never none."""
    list_of = _list_reader(m.name)
    stale = [k for k in m if list_of(k) == list_id and k not in entries]
    if entries:
        try:
            m.update_batch(list(entries), list(entries.values()))
        except BpfError as e:  # hash maps say E2BIG when full, LPM tries ENOSPC
            if e.errno in (errno.E2BIG, errno.ENOSPC):
                raise AllowListFull(m.name, m.max_entries) from e
            raise
    if stale:
        m.delete_batch(stale)
    return len(entries)


def _seen_object(map_name: str, key: bytes) -> tuple[int, str]:
    """(list, object) of a seen_path / seen_net key."""
    if map_name == "seen_path":
        k = layout.from_bytes("struct corral_seen_path_key", key)
        raw = bytes(layout.ffi().buffer(k.key.path)).split(b"\0", 1)[0]
        return int(k.key.list), raw.decode("utf-8", "surrogateescape")
    n = layout.from_bytes("struct corral_seen_net_key", key).key
    addr = bytes(layout.ffi().buffer(n.addr))
    port = socket.ntohs(n.port)
    if n.family == socket.AF_INET:
        return int(n.list), f"{socket.inet_ntop(socket.AF_INET, addr[:4])}:{port}"
    return int(n.list), f"[{ipaddress.IPv6Address(addr)}]:{port}"


@functools.cache
def _list_reader(map_name: str) -> Any:
    """key bytes -> the allow-list id in it, for one map (read with the header's unpacker)."""
    ctype = {
        "net_allow": "struct corral_net_key",
        "dns_names": "struct corral_dns_key",
        "dns_addrs": "struct corral_dns_addr_key",
    }.get(map_name, "struct corral_path_key")
    unpacker, names = layout.unpacker(ctype)
    i = names.index("list")

    def list_of(key: bytes) -> int:
        return int(unpacker.unpack_from(key)[i])

    return list_of
