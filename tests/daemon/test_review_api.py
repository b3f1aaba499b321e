"""Admin API routes for baseline review (fake services, real document module, real socket):
export (JSON and YAML), import (merge/replace, pre-seeding, errors, limits), diff, accept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corral.api.server import start_api
from corral.contract import Services
from tests.daemon.test_api import assert_error, call, url
from tests.daemon.test_api_fakes import DIFF_VIEW, LONG_NAME, FakeController

ENC = "prod%2FDeployment%2Fchatbot%2Fagent"
YAML = {"Content-Type": "application/yaml"}
DOC = b"""\
apiVersion: corral.io/v3
kind: Baseline
metadata:
  name: NAME
spec:
  modes: {exec: enforce, open: alert, connect: enforce}
  autoPromote: false
  exec:
  - {path: /usr/bin/python3, source: learned}
  open:
  - {prefix: /usr/lib/, source: imported}
  connect:
  - {address: 127.0.0.1, port: 8080, source: accepted}
"""


def doc(name: str = "demo") -> bytes:
    return DOC.replace(b"NAME", name.encode())


@pytest.fixture
async def api(ctl: FakeController, sock_dir: Path) -> AsyncIterator[aiohttp.ClientSession]:
    srv = await start_api(
        Services.of(ctl), sock_dir / "corral.sock", max_body=1024, max_import=4096
    )
    connector = aiohttp.UnixConnector(path=str(srv.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s
    await srv.close()


async def raw(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, str, bytes]:
    async with session.request(method, url(path), **kwargs) as resp:
        return resp.status, resp.content_type, await resp.read()


# ---- import -------------------------------------------------------------------------------


async def test_import_pre_seeds_an_unknown_agent(
    api: aiohttp.ClientSession, ctl: FakeController
) -> None:
    status, body = await call(api, "PUT", "/v1/agents/new-bot/baseline", data=doc("new-bot"),
                              headers=YAML)  # fmt: skip
    assert status == 201, body
    assert body["created"] is True and body["added"] == 3 and body["strategy"] == "merge"
    assert body["modes"] == {"exec": "enforce", "open": "alert", "connect": "enforce"}
    assert body["digest"].startswith("sha256:")
    assert ctl.calls[-1] == ("import", "new-bot", "merge", False, False)
    # the same document again: nothing new, 200
    status, body = await call(api, "PUT", "/v1/agents/new-bot/baseline?strategy=replace",
                              data=doc("new-bot"), headers=YAML)  # fmt: skip
    assert status == 200 and (body["created"], body["added"], body["kept"]) == (False, 0, 3)


async def test_import_then_export_gives_back_the_same_bytes(api: aiohttp.ClientSession) -> None:
    path = f"/v1/agents/{ENC}/baseline"
    status, _ = await call(api, "PUT", path, data=doc(LONG_NAME), headers=YAML)
    assert status == 200
    status, ctype, text = await raw(api, "GET", f"{path}?format=export",
                                    headers={"Accept": "application/yaml"})  # fmt: skip
    assert (status, ctype) == (200, "application/yaml")
    assert text == doc(LONG_NAME)  # the document was canonical: the same bytes come back
    status, ctype, js = await raw(api, "GET", f"{path}?format=export")
    assert (status, ctype) == (200, "application/json") and js.endswith(b"}\n")
    status, body = await call(api, "PUT", path, data=js,
                              headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and body["added"] == 0
    status, _, again = await raw(api, "GET", f"{path}?format=export")
    assert again == js


async def test_dry_run_and_keep_modes(api: aiohttp.ClientSession, ctl: FakeController) -> None:
    q = "?dry_run=1&keep_modes=true&strategy=replace"
    status, body = await call(api, "PUT", f"/v1/agents/ghost/baseline{q}", data=doc("ghost"),
                              headers=YAML)  # fmt: skip
    assert status == 200 and body["dry_run"] is True and body["created"] is True
    assert "ghost" not in ctl.agents
    assert ctl.calls[-1] == ("import", "ghost", "replace", True, True)


@pytest.mark.parametrize(
    ("path", "data", "words"),
    [
        ("/v1/agents/demo/baseline", doc().replace(b"/usr/bin/python3", b"python3"),
         ["invalid baseline document: spec.exec[0]: path must be absolute"]),
        ("/v1/agents/demo/baseline", doc("other"),
         ["baseline of 'other' (metadata.name), not of 'demo'", "rename=1"]),
        ("/v1/agents/demo/baseline?strategy=overwrite", doc(), ["strategy", "merge, replace"]),
        ("/v1/agents/demo/baseline?force=1", doc(), ["unknown query parameter(s): force"]),
        ("/v1/agents/demo/baseline?dry_run=maybe", doc(), ["dry_run must be 1 or 0"]),
        ("/v1/agents/demo/baseline", b"  \n", ["empty body", "baseline export"]),
        ("/v1/agents/demo/baseline", b"spec: [", ["not valid YAML"]),
        ("/v1/agents/bad%20name/baseline", doc(), ["invalid agent name"]),
    ],
)  # fmt: skip
async def test_import_errors_are_400_and_change_nothing(
    api: aiohttp.ClientSession, ctl: FakeController, path: str, data: bytes, words: list[str]
) -> None:
    status, body = await call(api, "PUT", path, data=data, headers=YAML)
    assert_error(status, body, 400, *words)
    assert not any(c[0] == "import" for c in ctl.calls)


async def test_rename_imports_under_the_url_name(
    api: aiohttp.ClientSession, ctl: FakeController
) -> None:
    status, body = await call(api, "PUT", "/v1/agents/demo/baseline?rename=1", data=doc("other"),
                              headers=YAML)  # fmt: skip
    assert status == 200 and body["agent"] == "demo"
    assert ctl.baselines["demo"].agent == "demo"


async def test_import_size_limit_is_its_own(api: aiohttp.ClientSession) -> None:
    big = doc() + b"#" * 5000  # above max_import (4096), a comment: valid otherwise
    status, body = await call(api, "PUT", "/v1/agents/demo/baseline", data=big, headers=YAML)
    assert_error(status, body, 413, "limit is 4096 bytes", "max_import_bytes")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"#" * 1000

    status, body = await call(api, "PUT", "/v1/agents/demo/baseline", data=chunks(), headers=YAML)
    assert_error(status, body, 413, "limit is 4096 bytes")
    # documents may be larger than other bodies (max_body 1024) ...
    status, _ = await call(api, "PUT", "/v1/agents/demo/baseline", data=doc() + b"#" * 2000,
                           headers=YAML)  # fmt: skip
    assert status == 200
    # ... other bodies keep their own limit, chunked or not
    status, body = await call(api, "POST", "/v1/agents/demo/accept", data=chunks())
    assert_error(status, body, 413, "limit is 1024 bytes", "max_request_bytes")


async def test_node_capacity_errors_pass_through(ctl: FakeController, sock_dir: Path) -> None:
    srv = await start_api(Services.of(ctl), sock_dir / "big.sock", max_import=1 << 20)
    entries = b"".join(f"  - {{path: /f{i}}}\n".encode() for i in range(1001))
    many = doc().replace(b"  open:\n", b"  open:\n" + entries)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(srv.path))) as s:
            status, body = await call(s, "PUT", "/v1/agents/demo/baseline", data=many,
                                      headers=YAML)  # fmt: skip
    finally:
        await srv.close()
    assert_error(status, body, 400, "spec.open: 1001 entries")


# ---- export -------------------------------------------------------------------------------


async def test_export_format_and_errors(api: aiohttp.ClientSession) -> None:
    status, body = await call(api, "GET", "/v1/agents/demo/baseline?format=xml")
    assert_error(status, body, 400, "format must be one of detail, export")
    status, body = await call(api, "GET", "/v1/agents/nobody/baseline?format=export")
    assert_error(status, body, 404, "no agent named 'nobody'")
    status, body = await call(api, "GET", "/v1/agents/demo/baseline")  # detail, as before
    assert status == 200 and body["agent"] == "demo" and "exec" in body


# ---- diff and accept ----------------------------------------------------------------------


async def test_diff(api: aiohttp.ClientSession, ctl: FakeController) -> None:
    status, body = await call(api, "GET", "/v1/agents/demo/diff")
    assert status == 200 and body["view"] == DIFF_VIEW and body["flat"] is False
    assert [r["kind"] for r in body["rows"]] == ["exact", "group", "exact"]
    status, body = await call(api, "GET", f"/v1/agents/{ENC}/diff?flat=1")
    assert status == 200 and len(body["rows"]) == 8 and ctl.calls[-1] == ("diff", LONG_NAME, True)
    status, body = await call(api, "GET", "/v1/agents/nobody/diff")
    assert_error(status, body, 404, "no agent")
    status, body = await call(api, "GET", "/v1/agents/demo/diff?group=3")
    assert_error(status, body, 400, "unknown query parameter(s): group")


async def test_accept_rows(api: aiohttp.ClientSession, ctl: FakeController) -> None:
    body = {"index": [2, 3], "view": DIFF_VIEW}
    status, resp = await call(api, "POST", "/v1/agents/demo/accept", json=body)
    assert status == 200 and ctl.calls[-1] == ("accept", "demo", None, [2, 3], DIFF_VIEW, False)
    body = {"entries": [{"dimension": "open", "object": "/tmp/cache/"}], "index": [1],
            "flat": True}  # fmt: skip
    status, resp = await call(api, "POST", "/v1/agents/demo/accept", json=body)
    assert status == 200 and ctl.calls[-1][3:] == ([1], None, True)
    status, resp = await call(api, "POST", "/v1/agents/demo/accept",
                              json={"index": [1], "view": "0000aaaa"})  # fmt: skip
    assert_error(status, resp, 409, "changed since view 0000aaaa")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"index": []}, ['"index" must be a non-empty list']),
        ({"index": [0]}, ["row numbers"]),
        ({"index": ["1"]}, ["row numbers"]),
        ({"index": [True]}, ["row numbers"]),
        ({"index": [1], "view": "../x"}, ['"view" must be the view string']),
        ({"index": [1], "flat": "yes"}, ['"flat" must be true or false']),
        ({"view": "abc"}, ['"view" and "flat" only go with "index"']),
        ({"flat": True}, ['only go with "index"']),
    ],
)
async def test_accept_bad_row_bodies(
    api: aiohttp.ClientSession, body: dict[str, Any], words: list[str]
) -> None:
    status, resp = await call(api, "POST", "/v1/agents/demo/accept", json=body)
    assert_error(status, resp, 400, *words)


async def test_new_routes_exist_with_their_methods(api: aiohttp.ClientSession) -> None:
    status, body = await call(api, "POST", "/v1/agents/demo/diff")
    assert_error(status, body, 405, "allowed: GET")
    status, body = await call(api, "PATCH", "/v1/agents/demo/baseline")
    assert_error(status, body, 405)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/v1/agents/demo/baseline?format=", ["format must be one of detail, export; got ''"]),
        ("/v1/agents/demo/baseline?strategy=", ["strategy must be one of merge, replace"]),
    ],
)
async def test_an_empty_choice_is_not_the_default(
    api: aiohttp.ClientSession, path: str, words: list[str]
) -> None:
    """?format= used to mean detail and ?strategy= merge; the document lists the choices."""
    method, data = ("PUT", doc()) if "strategy" in path else ("GET", None)
    status, body = await call(api, method, path, data=data, headers=YAML)
    assert_error(status, body, 400, *words)


async def test_view_is_ascii(api: aiohttp.ClientSession) -> None:
    """str.isalnum() also takes "é" and "٣": the view is an ASCII digest."""
    for view in ("caf\u00e9", "\u0663\u0663"):
        status, resp = await call(api, "POST", "/v1/agents/demo/accept",
                                  json={"index": [1], "view": view})  # fmt: skip
        assert_error(status, resp, 400, '"view" must be the view string')


async def test_documents_the_parser_cannot_hold_are_400(api: aiohttp.ClientSession) -> None:
    for data, headers in (
        (doc().replace(b"kind: Baseline", b"kind: 2024-13-45"), YAML),
        (b"[" * 2000 + b"]" * 2000, {"Content-Type": "application/json"}),
    ):
        status, body = await call(api, "PUT", "/v1/agents/demo/baseline", data=data,
                                  headers=headers)  # fmt: skip
        assert_error(status, body, 400, "invalid baseline document", "not valid")
