"""The baseline store (BaselineStore): one file per agent under <state_dir>/baselines/ in
blob.py's encoding, written crash-safe with temp file + fsync + rename + directory fsync
(atomic_write, which the other state files use too); corrupt files are moved aside.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .blob import SCHEMA_VERSION, CorruptBaseline, decode_file, encode_file, read_header
from .rules import BaselineRules

if TYPE_CHECKING:
    from .baseline import Baseline

log = structlog.get_logger("corral.baseline")

SUFFIX = ".baseline"
# what an agent whose baseline file was unreadable does now, and how to get out of it
_EMPTY_NOW = (
    "the agent keeps its modes with an empty baseline: where it enforces, everything it does "
    "is denied (fails closed); where it alerts, everything is a deviation; where it observes, "
    "it learns again"
)
_EMPTY_TODO = (
    "import a baseline you exported (corralctl baseline import {agent} FILE), or relearn "
    "(corralctl reset {agent}); the file moved aside is kept for inspection"
)
_NAME_MAX = 200  # encoded names longer than this are stored under their hash


def file_name(agent: str) -> str:
    """Reversible file name: percent-encoding ("/" -> %2F; "~" and a leading "." too), or
    "~<sha256>.baseline" when that would be too long for a file name (the agent is in the
    header)."""
    if not agent or "\0" in agent:
        raise ValueError(f"invalid agent name {agent!r}")
    enc = urllib.parse.quote(agent, safe="").replace("~", "%7E")
    if enc.startswith("."):
        enc = "%2E" + enc[1:]
    if len(enc) > _NAME_MAX:
        enc = "~" + hashlib.sha256(agent.encode()).hexdigest()
    return enc + SUFFIX


def agent_of_file(name: str) -> str | None:
    """The agent a percent-encoded file name stands for; None for other files or hashed names."""
    if not name.endswith(SUFFIX) or name.startswith((".", "~")):
        return None
    try:
        agent = urllib.parse.unquote(name[: -len(SUFFIX)], errors="strict")
        return agent if agent and file_name(agent) == name else None
    except (UnicodeError, ValueError):
        return None


class BaselineStore:
    """One file per agent under <state_dir>/baselines/; crash-safe writes, corrupt files moved
    aside. Not thread-safe for concurrent saves of the same agent."""

    def __init__(self, state_dir: str | os.PathLike[str], rules: BaselineRules | None = None):
        self.dir = Path(state_dir) / "baselines"
        self.rules = rules
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale_temps()

    def path(self, agent: str) -> Path:
        return self.dir / file_name(agent)

    def _remove_stale_temps(self) -> None:
        """Temp files left by a crash mid-save (the live files were never touched)."""
        for p in self.dir.glob(".*.tmp-*"):
            with contextlib.suppress(OSError):
                p.unlink()
                log.info("removed temporary baseline file left by a crash", file=str(p))

    # ---- names ----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        out: list[str] = []
        for p in self.dir.iterdir():
            if p.name.startswith("~") and p.name.endswith(SUFFIX):
                agent = self._agent_from_header(p)
            else:
                agent = agent_of_file(p.name)
            if agent is not None:
                out.append(agent)
        return sorted(out)

    def _agent_from_header(self, p: Path) -> str | None:
        try:
            with open(p, "rb") as f:
                header, _ = read_header(f.read(4096))
        except (OSError, CorruptBaseline):
            return None
        agent = header.get("agent")
        if isinstance(agent, str) and file_name(agent) == p.name:
            return agent
        return None

    # ---- load -----------------------------------------------------------------------------------

    def load(self, agent: str, *, rest: bool = False) -> Baseline | None:
        """The stored baseline, or None if there is none or it is unreadable (then it is moved
        aside to <file>.corrupt-<time>; the agent keeps its modes with an empty baseline).
        Never raises for bad content.
        rest: returned at rest (see decode_payload)."""
        path = self.path(agent)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._quarantine(agent, path, f"unreadable: {e.strerror or e}")
            return None
        try:
            b = decode_file(raw, self.rules, rest=rest)
        except CorruptBaseline as e:
            self._quarantine(agent, path, str(e))
            return None
        if b.agent != agent:
            self._quarantine(agent, path, f"belongs to agent {b.agent!r}")
            return None
        self._migrate(b, read_header(raw)[0].get("schema"))
        return b

    def _migrate(self, b: Baseline, schema: Any) -> None:
        """Rewrites an older schema's file in the current one (content unchanged). A failed
        write is logged and retried by the daemon's next save; the old file stays readable."""
        if schema == SCHEMA_VERSION:
            return
        try:
            self.save(b)
        except OSError as e:
            log.warning("could not migrate baseline file", agent=b.agent, error=str(e))
            return
        log.info(
            "baseline file migrated", agent=b.agent, schema_from=schema, schema_to=SCHEMA_VERSION
        )

    def load_all(self) -> dict[str, Baseline]:
        out: dict[str, Baseline] = {}
        for agent in self.names():
            b = self.load(agent)
            if b is not None:
                out[agent] = b
        return out

    def _quarantine(self, agent: str, path: Path, problem: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.rename(path, target)
        except OSError as e:
            log.error(
                "baseline file is corrupt and could not be moved aside",
                agent=agent,
                file=str(path),
                problem=problem,
                error=str(e),
                now=_EMPTY_NOW,
                what_to_do=_EMPTY_TODO.format(agent=agent),
            )
            return
        _fsync_dir(self.dir)
        log.error(
            "baseline file is corrupt; moved aside",
            agent=agent,
            file=str(path),
            problem=problem,
            moved_to=str(target),
            now=_EMPTY_NOW,
            what_to_do=_EMPTY_TODO.format(agent=agent),
        )

    # ---- save / delete --------------------------------------------------------------------------

    def save(self, baseline: Baseline) -> Path:
        """Writes the baseline atomically. Raises OSError (with the agent, file and cause) if the
        write fails, e.g. ENOSPC; the previous file, if any, is then unchanged."""
        return self.save_encoded(baseline.agent, encode_file(baseline))

    def save_encoded(self, agent: str, data: bytes) -> Path:
        """Writes bytes from encode_file(): lets a caller encode on the event loop (consistent
        snapshot) and write in a thread."""
        path = self.path(agent)
        try:
            atomic_write(path, data)
        except OSError as e:
            why = f"cannot save the baseline of agent {agent!r}: {e.strerror}"
            raise OSError(e.errno, why) from e
        return path

    def delete(self, agent: str) -> bool:
        """Removes the stored baseline; False if there was none."""
        try:
            self.path(agent).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.dir)
        return True


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Crash-safe replace of path with data: a temp file in the same directory, written and
    fsynced, renamed over path, then the directory fsynced. A crash leaves the old or the new
    file, never a mix. Raises OSError (errno kept) saying what failed and whether the previous
    file is intact."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        _write_durably(tmp, data)
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(
            e.errno, f"writing {target} failed: {_why(e)}; the previous version is unchanged"
        ) from e
    try:
        _fsync_dir(target.parent)
    except OSError as e:
        raise OSError(
            e.errno,
            f"{target} was written but syncing its directory failed: {_why(e)}; "
            "after a power loss the previous version may come back",
        ) from e


def _why(e: OSError) -> str:
    return e.strerror or (os.strerror(e.errno) if e.errno else str(e))


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
