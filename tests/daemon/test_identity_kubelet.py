"""KubeletClient and KubernetesSource against a real HTTPS server on 127.0.0.1: TLS from a
trustme CA, bearer-token checks, real PodList JSON, and failure endpoints."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from corral.identity import KubeletClient, KubeletError, KubernetesSource, PodSelector

from .test_identity import DAEMON_START, FIXTURES, build_tree, load


@dataclass
class Kubelet:
    base: str
    ca_file: Path
    token_file: Path
    state: dict[str, object] = field(default_factory=dict)

    def client(self, path: str = "/pods", **kw: object) -> KubeletClient:
        opts: dict[str, object] = {
            "token_file": str(self.token_file),
            "ca_file": str(self.ca_file),
            "retries": 2,
            "backoff": 0.001,
            "max_backoff": 0.001,
        }
        opts.update(kw)
        return KubeletClient(f"{self.base}{path}", **opts)  # type: ignore[arg-type]


def _app(state: dict[str, object]) -> web.Application:
    podlist = (FIXTURES / "podlist.json").read_text()

    async def pods(req: web.Request) -> web.Response:
        state["hits"] = int(state.get("hits", 0)) + 1  # type: ignore[call-overload]
        if req.headers.get("Authorization") != f"Bearer {state['token']}":
            return web.Response(status=401, text="Unauthorized")
        fail = state.get("fail")
        if fail == "500":
            return web.Response(status=500, text="Internal Server Error")
        if fail == "malformed":
            return web.Response(
                text='{"kind": "PodList", "items": [', content_type="application/json"
            )
        if fail == "status":
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503}
            return web.json_response(body)
        if fail == "slow":
            await asyncio.sleep(2)
        return web.Response(text=podlist, content_type="application/json")

    async def empty(_: web.Request) -> web.Response:
        return web.Response(text=(FIXTURES / "podlist_items_null.json").read_text())

    async def forbidden(_: web.Request) -> web.Response:
        return web.Response(
            status=403,
            text="Forbidden (user=system:serviceaccount:corral:corral, verb=get, "
            "resource=nodes, subresource(s)=[proxy])",
        )

    async def big(_: web.Request) -> web.Response:
        doc = json.loads(podlist)
        items = []
        for n in range(20):  # ~220 pods, > 256 KiB: decoded off the event loop
            for i in json.loads(podlist)["items"]:
                i["metadata"]["uid"] = f"{n}-{i['metadata']['uid']}"
                items.append(i)
        doc["items"] = items
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/pods", pods)
    app.router.add_get("/big", big)
    app.router.add_get("/empty", empty)
    app.router.add_get("/forbidden", forbidden)
    return app


@pytest.fixture
async def kubelet(tmp_path: Path) -> AsyncIterator[Kubelet]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    token_file = tmp_path / "token"
    token_file.write_text("tok-1\n")
    state: dict[str, object] = {"token": "tok-1"}
    runner = web.AppRunner(_app(state))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Kubelet(f"https://127.0.0.1:{port}", ca_file, token_file, state)
    finally:
        await runner.cleanup()


async def test_fetch_and_parse(kubelet: Kubelet) -> None:
    async with kubelet.client() as c:
        pods = await c.get_pods()
    assert len(pods) == 11 and c.health.ok and c.health.pods == 11
    assert "kubelet ok" in c.health.describe()


async def test_big_podlist(kubelet: Kubelet) -> None:
    async with kubelet.client("/big") as c:
        assert len(await c.get_pods()) == 220


async def test_items_null(kubelet: Kubelet) -> None:
    async with kubelet.client("/empty") as c:
        assert await c.get_pods() == []


async def test_token_is_reread(kubelet: Kubelet) -> None:
    async with kubelet.client() as c:
        await c.get_pods()
        kubelet.token_file.write_text("tok-2")
        kubelet.state["token"] = "tok-2"
        pods = await c.fetch_pods()
    assert len(pods) == 11


async def test_401_says_what_to_check(kubelet: Kubelet) -> None:
    kubelet.token_file.write_text("wrong")
    async with kubelet.client() as c:
        with pytest.raises(KubeletError) as ei:
            await c.get_pods()
    msg = str(ei.value)
    assert "401" in msg and str(kubelet.token_file) in msg and "token" in msg
    assert kubelet.state["hits"] == 1  # not retried
    assert c.health.consecutive_failures == 1 and "401" in (c.health.last_error or "")


async def test_403_names_the_rbac(kubelet: Kubelet) -> None:
    async with kubelet.client("/forbidden") as c:
        with pytest.raises(KubeletError, match=r"nodes/pods.*nodes/proxy") as ei:
            await c.fetch_pods()
    assert "subresource(s)=[proxy]" in str(ei.value)


@pytest.mark.parametrize(
    ("fail", "hits", "error"),
    [
        ("500", 3, "answered 500"),  # retried: 1 + 2 retries
        ("malformed", 1, "no valid PodList"),
        ("status", 1, "expected a PodList, got 'Status'"),
        ("slow", 3, "unreachable"),
    ],
)
async def test_keeps_last_good_state(kubelet: Kubelet, fail: str, hits: int, error: str) -> None:
    async with kubelet.client(read_timeout=0.3) as c:
        good = await c.get_pods()
        kubelet.state.update(fail=fail, hits=0)
        again = await c.get_pods()
        assert again is good
        assert kubelet.state["hits"] == hits
        assert c.health.consecutive_failures == 1 and not c.health.ok
        assert error in (c.health.last_error or "")
        assert "using last good state" in c.health.describe()
        await asyncio.sleep(0.01)  # past the (1 ms) backoff between calls
        await c.get_pods()
        assert c.health.consecutive_failures == 2
        kubelet.state["fail"] = None
        await asyncio.sleep(0.01)
        await c.get_pods()
        assert c.health.ok and c.health.consecutive_failures == 0
        assert c.health.failing_since is None


async def test_backoff_between_calls(kubelet: Kubelet) -> None:
    async with kubelet.client(retries=0, backoff=60, max_backoff=60) as c:
        await c.get_pods()
        kubelet.state.update(fail="500", hits=0)
        await c.get_pods()
        # the next attempt is delayed by up to 60 s of jittered backoff (the jitter may pick
        # ~0, so only check calls in between do not hammer the kubelet)
        for _ in range(5):
            await c.get_pods()
        assert int(kubelet.state["hits"]) <= 2  # type: ignore[call-overload]


async def test_no_good_state_yet_raises(kubelet: Kubelet) -> None:
    kubelet.state["fail"] = "500"
    async with kubelet.client() as c:
        with pytest.raises(KubeletError, match="500"):
            await c.get_pods()
    assert "no pod list yet" in c.health.describe()


async def test_wrong_ca_fails_right_ca_works_insecure_works(
    kubelet: Kubelet, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with kubelet.client(ca_file=str(other)) as c:
        with pytest.raises(KubeletError, match="TLS verification failed"):
            await c.get_pods()
    async with kubelet.client() as c:
        assert len(await c.get_pods()) == 11
    async with kubelet.client(ca_file=str(other), insecure_skip_tls_verify=True) as c:
        assert len(await c.get_pods()) == 11


async def test_missing_ca_file(kubelet: Kubelet, tmp_path: Path) -> None:
    async with kubelet.client(ca_file=str(tmp_path / "nope.crt")) as c:
        with pytest.raises(KubeletError, match="cannot load kubelet CA"):
            await c.get_pods()


async def test_unreachable_port(tmp_path: Path) -> None:
    c = KubeletClient(
        "https://127.0.0.1:1/pods",
        token_file=None,
        insecure_skip_tls_verify=True,
        retries=1,
        backoff=0.001,
    )
    async with c:
        with pytest.raises(KubeletError, match="unreachable"):
            await c.get_pods()


async def test_kubernetes_source_poll_and_inotify(kubelet: Kubelet, tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    build_tree(root, load(), "systemd")
    src = KubernetesSource(
        kubelet.client(),
        cgroup_root=root,
        selector=PodSelector(namespaces=("agents",)),
        started_at=DAEMON_START.timestamp(),
    )
    try:
        ws = {w.agent: w for w in await src.poll()}
        api = ws["agents/Deployment/agent-api/agent"]
        assert len(api.pod_cgroups) == 2 and api.partial
        assert "research/Deployment/crawler/crawler" not in ws
        assert src.changed is not None and not src.changed.is_set()
        # a new pod appears: the watch on the QoS dir fires well before the poll interval
        new_pod = root / "kubepods.slice/kubepods-besteffort.slice"
        new_pod = new_pod / "kubepods-besteffort-pod0b0b0b0b_1111_4222_8333_444444444444.slice"
        new_pod.mkdir()
        await asyncio.wait_for(src.wait(interval=30), 1.0)
        assert src.changed.is_set()
        await src.poll()
        assert not src.changed.is_set()
        # ... and its first container too (the new pod dir was watched on the spot/after poll)
        (new_pod / f"cri-containerd-{'a' * 64}.scope").mkdir()
        await asyncio.wait_for(src.wait(interval=30), 1.0)
        assert src.index is not None and str(new_pod) in src.index.watch_dirs
    finally:
        await src.close()


async def test_kubernetes_source_kubelet_down_from_start(tmp_path: Path) -> None:
    c = KubeletClient("https://127.0.0.1:1/pods", token_file=None, ca_file=None, retries=0)
    src = KubernetesSource(c, cgroup_root=tmp_path, watch=False)
    try:
        assert await src.poll() == []
        assert src.health.consecutive_failures == 1
    finally:
        await src.close()


def test_podlist_fixture_is_kubernetes_json() -> None:
    doc = json.loads((FIXTURES / "podlist.json").read_text())
    assert doc["kind"] == "PodList" and doc["apiVersion"] == "v1"
