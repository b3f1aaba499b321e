"""The AI-BOM's records: one ``Inventory`` per agent (packages, models, endpoints, processes,
version hints, what was left out when a table was full), the evidence each record carries
(``evidence``, ``touch``, a ``Sight``), its file format (``dump``, ``from_json``) and its rest
(the tables compressed while nobody reads them).

Records are add-only: an inventory says what was ever seen; a baseline reset does not erase it.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import time
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from corral.policy.store import file_name

if TYPE_CHECKING:
    from .hostnames import HostNames
    from .rules import Rules

log = structlog.get_logger("corral.aibom")

SCHEMA = 1
CAPS = {"packages": 1000, "models": 1000, "endpoints": 2000, "processes": 1000, "hints": 4000}
TABLES = ("packages", "models", "endpoints", "processes", "hints", "truncated")
_EVIDENCE = frozenset({"first_seen", "last_seen", "events", "via", "denied"})
RECORD_FIELDS = {
    "packages": _EVIDENCE
    | {
        "ecosystem",
        "packages_dir",
        "module",
        "framework",
        "category",
        "name",
        "version",
        "version_source",
        "paths",
    },
    "models": _EVIDENCE | {"path", "format", "name", "revision"},
    "endpoints": _EVIDENCE | {"object", "address", "network", "port", "hostnames"},
    "processes": _EVIDENCE | {"category", "name", "exe", "rule", "version", "command", "launcher"},
}


def evidence(when: float, via: str) -> dict[str, Any]:
    return {"first_seen": when, "last_seen": when, "events": 0, "via": [via], "denied": False}


def touch(
    rec: dict[str, Any], when: float, via: str, *, first: float | None = None, denied: bool = False
) -> bool:
    """Updates a record's evidence; True if anything changed. Events count; baseline
    derivations (repeated on every change of the baseline) do not."""
    before = (rec["first_seen"], rec["last_seen"], len(rec["via"]), rec["denied"])
    rec["first_seen"] = min(rec["first_seen"], when if first is None else first)
    rec["last_seen"] = max(rec["last_seen"], when)
    if via not in rec["via"]:
        rec["via"] = sorted([*rec["via"], via])
    rec["denied"] = rec["denied"] or denied
    if via == "event":
        rec["events"] += 1
        return True
    return before != (rec["first_seen"], rec["last_seen"], len(rec["via"]), rec["denied"])


def _host_hash(address: str) -> int:
    """32 bits of hash(): a collision only costs a thaw that finds nothing."""
    return hash(address) & 0xFFFFFFFF


@dataclass(frozen=True)
class _Rest:
    """An inventory at rest: its tables as one compressed JSON document (the file's own
    encoding, so nothing changes on the way back), and what the periodic passes need to know
    without reading it: whether it makes its agent an AI agent (under these rules, and with
    none of its host addresses named by DNS then), and hashes of those host addresses."""

    blob: bytes
    ai: bool
    rules: Rules
    hosts: array  # sorted _host_hash of every host endpoint's address
    names_version: int
    servers: frozenset[str] = frozenset()  # the node's LLM servers ai was answered with

    def may_name(self, names: HostNames) -> bool:
        """Could DNS now name one of the host addresses (thaw and look)?"""
        if names.version == self.names_version:
            return False
        for a in names.by_address:
            h = _host_hash(a)
            i = bisect.bisect_left(self.hosts, h)
            if i < len(self.hosts) and self.hosts[i] == h:
                return True
        return False


@dataclass
class Inventory:
    """One agent's AI-BOM records. It may rest (``rest``): the tables then live compressed
    and come back, unchanged, on first access (``__getattr__``)."""

    agent: str
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)  # "<dir>\0<canonical dist>" -> version
    truncated: dict[str, int] = field(default_factory=dict)
    # when the tables were last made or thawed (time.monotonic)
    live_since: float = field(default_factory=time.monotonic, compare=False, repr=False)

    @property
    def resting(self) -> _Rest | None:
        return self.__dict__.get("_rest")

    def rest(
        self, ai: bool, rules: Rules, names: HostNames, servers: frozenset[str] = frozenset()
    ) -> None:
        """Puts the tables at rest (ai: what views.is_ai answers now, with these LLM
        servers on the node)."""
        if self.resting is not None:
            return
        tables = {k: self.__dict__[k] for k in TABLES}
        hosts = array("I", sorted({_host_hash(r["address"]) for r in self.endpoints.values()
                                   if not r["network"]}))  # fmt: skip
        blob = zlib.compress(json.dumps(tables).encode(), 1)
        for k in TABLES:
            del self.__dict__[k]
        self.__dict__["_rest"] = _Rest(blob, ai, rules, hosts, names.version, servers)

    def __getattr__(self, name: str) -> Any:
        """Only reached for a table of a resting inventory: brings every table back."""
        rest = self.__dict__.get("_rest")
        if rest is None or name not in TABLES:
            raise AttributeError(name)
        self.__dict__.update(self._tables(rest))
        del self.__dict__["_rest"]
        self.live_since = time.monotonic()
        return self.__dict__[name]

    @staticmethod
    def _tables(rest: _Rest) -> dict[str, Any]:
        tables: dict[str, Any] = json.loads(zlib.decompress(rest.blob))
        return tables

    def dump(self) -> bytes:
        """The file's bytes (canonical JSON); a resting inventory stays at rest."""
        rest = self.resting
        doc = self.to_json() if rest is None else {
            "schema": SCHEMA, "agent": self.agent, **self._tables(rest)
        }  # fmt: skip
        return json.dumps(doc, sort_keys=True).encode()

    def slot(self, kind: str, key: str) -> bool:
        """May a new record go into this table? Counts what was left out when full."""
        table: dict[str, Any] = getattr(self, kind)
        if key in table or len(table) < CAPS[kind]:
            return True
        self.truncated[kind] = self.truncated.get(kind, 0) + 1
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "agent": self.agent,
            "packages": self.packages,
            "models": self.models,
            "endpoints": self.endpoints,
            "processes": self.processes,
            "hints": self.hints,
            "truncated": self.truncated,
        }

    @classmethod
    def from_json(cls, data: Any) -> Inventory:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not an AI-BOM inventory of schema {SCHEMA}")
        inv = cls(str(data["agent"]))
        for kind in ("packages", "models", "endpoints", "processes", "hints", "truncated"):
            value = data.get(kind, {})
            if not isinstance(value, dict):
                raise ValueError(f"{kind}: expected a mapping")
            setattr(inv, kind, value)
        for kind, needed in RECORD_FIELDS.items():
            for key, rec in getattr(inv, kind).items():
                missing = needed - set(rec) if isinstance(rec, dict) else needed
                if missing:
                    raise ValueError(f"{kind}[{key!r}]: missing {', '.join(sorted(missing))}")
        return inv


@dataclass(frozen=True)
class Sight:
    """One sighting of an object: when, how (event | baseline | installed), whether the kernel
    denied it, and for baseline entries when it was first seen."""

    when: float
    via: str
    denied: bool = False
    first: float | None = None


# ---- files --------------------------------------------------------------------------------------


def inventory_file(directory: Path, agent: str) -> Path:
    """Where agent's inventory is saved: its baseline's file name, as .aibom.json."""
    return directory / (file_name(agent).removesuffix(".baseline") + ".aibom.json")


def read_inventories(directory: Path) -> Iterator[Inventory]:
    """The inventories saved in directory (made if missing), read one at a time (blocks: from
    a thread). A file that cannot be read is moved aside (.corrupt-<time>) and skipped: the
    agent's inventory is then rebuilt from its baseline."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in sorted(directory.glob("*.aibom.json")):
        try:
            inv = Inventory.from_json(json.loads(p.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            target = p.with_name(f"{p.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ')}")
            with contextlib.suppress(OSError):
                os.rename(p, target)
            log.error(
                "AI-BOM file unreadable; moved aside, rebuilt from the baseline",
                file=str(p),
                error=str(e),
                moved_to=str(target),
            )
            continue
        yield inv
