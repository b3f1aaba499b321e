"""Reading what other processes see: their argv, and small files inside their root
(/proc/<pid>/root/...), for the AI-BOM. Every function here blocks: call them through
asyncio.to_thread, never on the event loop.

Files are read as the process's root sees them: symlinks are resolved inside that root (an
absolute link restarts at the process's root, ".." stops there), like openat2's
RESOLVE_IN_ROOT, so a container cannot point corrald at the host's files. Only regular files
are read (never a FIFO or a device: O_NONBLOCK, fstat), and only their first bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .rules import NPM_DIR, canonical, dist_info_version

MAX_FILE = 1 << 20  # package.json, METADATA: a version is in the first lines
MAX_CMDLINE = 64 * 1024
MAX_LINKS = 40
MAX_DIR_ENTRIES = 20000
MAX_TOP_LEVEL_READS = 1000
MAX_PIDS = 64
MAX_PACKAGE_DEPTH = 6  # directories above a script searched for its package.json
CMDLINE_RETRY_DELAY = 0.05


def resolve_in_root(root: str, path: str) -> str:
    """root + path, with every symlink resolved as if root were "/". Raises OSError (ENOENT,
    ELOOP, ...) like open() would."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        p = parts.pop(0)
        if p == ".":
            continue
        if p == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root + "/" + "/".join([*resolved, p])
        st = os.lstat(candidate)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, "too many symbolic links", candidate)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [t for t in target.split("/") if t] + parts
        else:
            resolved.append(p)
    return root + "/" + "/".join(resolved)


def read_small(root: str, path: str, limit: int = MAX_FILE) -> bytes:
    """The first `limit` bytes of a regular file at path inside root."""
    full = resolve_in_root(root, path)
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", full)
        chunks: list[bytes] = []
        left = limit
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_dir(root: str, path: str) -> list[str]:
    full = resolve_in_root(root, path)
    with os.scandir(full) as it:
        out: list[str] = []
        for entry in it:
            out.append(entry.name)
            if len(out) >= MAX_DIR_ENTRIES:
                break
        return out


def root_of(pid: int) -> tuple[str, tuple[int, int]] | None:
    """("/proc/<pid>/root", (st_dev, st_ino) of that root) or None if the process is gone."""
    root = f"/proc/{pid}/root"
    try:
        st = os.stat(root)
    except OSError:
        return None
    return root, (st.st_dev, st.st_ino)


def read_cmdline(pid: int) -> list[str] | None:
    """argv of a live process (None when it is gone or has no argv, e.g. a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(MAX_CMDLINE)
    except OSError:
        return None
    if not raw:
        return None
    return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")]


def exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def matching_cmdline(pid: int, exe: str) -> list[str] | None:
    """argv of pid if it is (still, or already) the exec of exe; one short retry for LSM
    events, which arrive before the new image replaces the old argv."""
    for attempt in range(2):
        argv = read_cmdline(pid)
        if argv and _runs(argv, exe, pid):
            return argv
        if attempt == 0:
            time.sleep(CMDLINE_RETRY_DELAY)
    return None


def _runs(argv: list[str], exe: str, pid: int) -> bool:
    base = exe.rsplit("/", 1)[-1]
    heads = [a.rsplit("/", 1)[-1] for a in argv[:2]]
    return base in heads or exe_of(pid) == exe


def cgroup_pids(cgroups: Iterable[str], limit: int = MAX_PIDS) -> list[int]:
    """Live pids in these cgroup v2 directories or their descendants (a pod's cgroup holds
    its processes in container cgroups below it)."""
    out: list[int] = []
    for top in cgroups:
        for d in _walk(Path(top), depth=3):
            with contextlib.suppress(OSError, ValueError):
                out += [int(x) for x in (d / "cgroup.procs").read_text().split()]
            if len(out) >= limit:
                return out[:limit]
    return out


def _walk(d: Path, depth: int) -> Iterator[Path]:
    yield d
    if depth <= 0:
        return
    with contextlib.suppress(OSError):
        for child in d.iterdir():
            if child.is_dir() and not child.is_symlink():
                yield from _walk(child, depth - 1)


# ---- package versions ---------------------------------------------------------------------------


def package_version(
    root: str, ecosystem: str, packages_dir: str, module: str
) -> tuple[str, str, str] | None:
    """(distribution name, version, where it was read) of a package seen inside root, or None
    when nothing readable says. Raises OSError when root itself is gone."""
    if ecosystem == "npm":
        return _npm_version(root, packages_dir, module)
    return _python_version(root, packages_dir, module)


def _npm_version(root: str, packages_dir: str, module: str) -> tuple[str, str, str] | None:
    where = f"{packages_dir}/{module}/package.json"
    try:
        data = json.loads(read_small(root, where))
    except (OSError, ValueError):
        _raise_if_root_gone(root)
        return None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version or len(version) > 128:
        return None
    name = data.get("name")
    return (name if isinstance(name, str) and name else module), version, where


def script_package(root: str, script: str) -> tuple[str, str | None, str] | None:
    """(package name, version or None, where it was read) of the npm package an executed
    script belongs to: the nearest package.json with a name above the script's real path
    inside root (node_modules/.bin/X is a symlink into the package), never above the
    node_modules directory holding it. None when there is none or the script is unreadable.
    Raises OSError when root itself is gone."""
    try:
        real = resolve_in_root(root, script)[len(root) :]
    except OSError:
        _raise_if_root_gone(root)
        return None
    dirs = real.split("/")[:-1]
    for depth in range(len(dirs), max(len(dirs) - MAX_PACKAGE_DEPTH, 1), -1):
        where = "/".join(dirs[:depth])
        if where.rsplit("/", 1)[-1] == NPM_DIR:
            return None
        found = _package_json(root, f"{where}/package.json")
        if found is not None:
            return (*found, f"{where}/package.json")
    return None


def _package_json(root: str, where: str) -> tuple[str, str | None] | None:
    """(name, version or None) of a package.json that names a package."""
    try:
        data = json.loads(read_small(root, where))
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name or len(name) > 214:  # npm's limit
        return None
    version = data.get("version")
    ok = isinstance(version, str) and 0 < len(version) <= 128
    return name, version if ok else None


def _python_version(root: str, packages_dir: str, module: str) -> tuple[str, str, str] | None:
    try:
        entries = list_dir(root, packages_dir)
    except OSError:
        _raise_if_root_gone(root)
        return None
    dists = {}
    for e in entries:
        hint = dist_info_version(e)
        if hint is not None:
            dists.setdefault(canonical(hint[0]), e)
    want = canonical(module.replace("/", "-"))
    entry = dists.get(want) or _by_top_level(root, packages_dir, module, dists.values())
    if entry is None:
        return None
    where = f"{packages_dir}/{entry}/" + (
        "METADATA" if entry.endswith(".dist-info") else "PKG-INFO"
    )
    try:
        headers = metadata_headers(read_small(root, where, 64 * 1024))
    except OSError:
        return None
    version = headers.get("version")
    if not version:
        return None
    return headers.get("name") or module, version, where


def _by_top_level(root: str, packages_dir: str, module: str, entries: Iterable[str]) -> str | None:
    """The one distribution whose top_level.txt lists the module's first component."""
    top = module.split("/", 1)[0]
    found: list[str] = []
    for n, entry in enumerate(sorted(entries)):
        if n >= MAX_TOP_LEVEL_READS:
            break
        try:
            text = read_small(root, f"{packages_dir}/{entry}/top_level.txt", 64 * 1024)
        except OSError:
            continue
        if top in text.decode("utf-8", "replace").split():
            found.append(entry)
    return found[0] if len(found) == 1 else None


def metadata_headers(raw: bytes) -> dict[str, str]:
    """Name and Version from core metadata (RFC 822 headers up to the first blank line)."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        k = key.strip().lower()
        if sep and k in ("name", "version") and k not in out:
            out[k] = value.strip()[:128]
    return out


def list_packages(root: str, packages_dir: str, namespaces: Iterable[str] = ()) -> list[str]:
    """Package directories under a packages dir, as paths relative to it: "openai",
    "@langchain/core", and "google/genai" for namespace dirs listed in namespaces."""
    out: list[str] = []
    spaces = set(namespaces)
    for name in list_dir(root, packages_dir):
        if name.startswith(".") or name.endswith((".dist-info", ".egg-info", ".pth")):
            continue
        out.append(name)
        if name.startswith("@") or name in spaces:
            with contextlib.suppress(OSError):
                out += [f"{name}/{sub}" for sub in list_dir(root, f"{packages_dir}/{name}")]
    return out


def _raise_if_root_gone(root: str) -> None:
    if not os.path.exists(root):
        raise OSError(errno.ESRCH, "process is gone", root)
