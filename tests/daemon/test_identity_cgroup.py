"""corral.identity against REAL cgroup v2 directories (created under the cgroup2 mount,
removed deepest first) and inotify on tmp and real trees. Needs root."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.identity import LocalSource
from corral.identity.cgroupfs import cgroup2_mount, scan_cgroups
from corral.identity.pods import parse_pod_list
from corral.identity.watch import CgroupWatcher
from corral.identity.workloads import discover

from .test_identity import DAEMON_START, load


def _mount() -> Path | None:
    try:
        return cgroup2_mount()
    except RuntimeError:
        return None


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or _mount() is None, reason="needs root and cgroup v2"),
]


def _rmtree_cgroups(top: Path) -> None:
    """cgroupfs dirs are removed with rmdir only, deepest first (files inside are virtual)."""
    if not top.exists():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
        os.rmdir(dirpath)


@pytest.fixture
def cg_top() -> Iterator[Path]:
    mount = _mount()
    assert mount is not None
    top = mount / f"corral-test-{uuid.uuid4().hex[:10]}"
    top.mkdir()
    try:
        yield top
    finally:
        _rmtree_cgroups(top)


def _pod_doc(uid: str, cid: str, qos: str = "Burstable") -> dict[str, object]:
    doc = load()
    item = next(i for i in doc["items"] if i["metadata"]["name"] == "crawler-5c9f7b6d48-lm2qz")
    item["metadata"]["uid"] = uid
    item["status"]["qosClass"] = qos
    item["status"]["containerStatuses"][0]["containerID"] = f"containerd://{cid}"
    doc["items"] = [item]
    return doc


def test_real_cgroups_map_to_inodes(cg_top: Path) -> None:
    uid, cid = str(uuid.uuid4()), uuid.uuid4().hex * 2
    kp = cg_top / "kubepods.slice"
    pod = kp / "kubepods-burstable.slice" / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
    ctr = pod / f"cri-containerd-{cid}.scope"
    ctr.mkdir(parents=True)
    guid, gcid = str(uuid.uuid4()), uuid.uuid4().hex * 2
    gpod = kp / f"kubepods-pod{guid.replace('-', '_')}.slice"
    (gpod / f"cri-containerd-{gcid}.scope").mkdir(parents=True)
    assert (ctr / "cgroup.procs").exists()  # a real cgroup, not a plain directory

    # scanning the whole real hierarchy (with whatever else lives on this host) finds them
    index = scan_cgroups(cg_top.parent)
    assert index.pod(uid) is not None and index.pod(uid).id == os.stat(pod).st_ino  # type: ignore[union-attr]
    assert index.containers[cid].id == os.stat(ctr).st_ino
    assert index.pod(guid).path == str(gpod)  # type: ignore[union-attr]
    assert index.containers[gcid].path == str(gpod / f"cri-containerd-{gcid}.scope")

    ws = discover(parse_pod_list(_pod_doc(uid, cid)), index, started_at=DAEMON_START)
    (w,) = ws
    assert w.agent == "research/Deployment/crawler/crawler"
    assert w.pod_cgroups[0].id == os.stat(pod).st_ino
    assert w.container_cgroups[0].id == os.stat(ctr).st_ino
    assert w.container_cgroups[0].path == str(ctr)


def test_process_in_container_cgroup_reports_that_path(cg_top: Path) -> None:
    cid = uuid.uuid4().hex * 2
    ctr = cg_top / "kubepods" / "besteffort" / f"pod{uuid.uuid4()}" / cid
    ctr.mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        (ctr / "cgroup.procs").write_text(str(proc.pid))
        line = next(
            ln
            for ln in Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
            if ln.startswith("0::")
        )
        mount = _mount()
        assert mount is not None
        assert mount / line[3:].lstrip("/") == ctr
        assert scan_cgroups(cg_top).containers[cid].id == os.stat(ctr).st_ino
    finally:
        proc.kill()
        proc.wait()


async def test_local_source_real_cgroups(cg_top: Path) -> None:
    for d in (
        "system.slice/nginx.service",
        "system.slice/agent-run.scope",
        "system.slice/ssh.socket",
        "system.slice/nginx.service/child",
    ):
        (cg_top / d).mkdir(parents=True)
    rel = cg_top.name
    src = LocalSource([f"{rel}/system.slice/*.service", f"{rel}/system.slice/*.scope"])
    ws = await src.poll()
    assert [w.agent for w in ws] == ["local/agent-run", "local/nginx"]
    nginx = ws[1]
    assert nginx.pod_cgroups[0].path == str(cg_top / "system.slice/nginx.service")
    assert nginx.pod_cgroups[0].id == os.stat(cg_top / "system.slice/nginx.service").st_ino
    assert nginx.registrations() == [(nginx.pod_cgroups[0].id, True)]


# ---- inotify --------------------------------------------------------------------------------


@pytest.fixture
async def watcher() -> AsyncIterator[CgroupWatcher]:
    w = CgroupWatcher()
    w.start()
    try:
        yield w
    finally:
        w.close()


async def _fires(w: CgroupWatcher, within: float = 1.0) -> bool:
    try:
        await asyncio.wait_for(w.changed.wait(), within)
    except TimeoutError:
        return False
    w.changed.clear()
    return True


async def test_inotify_tmp_tree(tmp_path: Path, watcher: CgroupWatcher) -> None:
    qos = tmp_path / "kubepods" / "burstable"
    qos.mkdir(parents=True)
    watcher.update(scan_cgroups(tmp_path).watch_dirs)
    assert str(qos) in watcher.watched
    pod = qos / f"pod{uuid.uuid4()}"
    pod.mkdir()
    assert await _fires(watcher)
    assert str(pod) in watcher.watched  # new pod dirs are watched at once
    (pod / ("c" * 64)).mkdir()
    assert await _fires(watcher)
    (qos / "not-a-dir").write_text("x")  # files do not count
    assert not await _fires(watcher, 0.2)
    (pod / ("c" * 64)).rmdir()
    pod.rmdir()
    assert await _fires(watcher)
    await asyncio.sleep(0.05)
    assert str(pod) not in watcher.watched  # IN_IGNORED dropped the watch


async def test_inotify_real_cgroupfs(cg_top: Path, watcher: CgroupWatcher) -> None:
    qos = cg_top / "kubepods.slice" / "kubepods-burstable.slice"
    qos.mkdir(parents=True)
    watcher.update(scan_cgroups(cg_top).watch_dirs)
    assert {str(qos), str(qos.parent)} <= watcher.watched
    pod = qos / f"kubepods-burstable-pod{str(uuid.uuid4()).replace('-', '_')}.slice"
    pod.mkdir()
    assert await _fires(watcher)
    (pod / f"cri-containerd-{'d' * 64}.scope").mkdir()
    assert await _fires(watcher)
    watcher.update(set())
    assert watcher.watched == set()
