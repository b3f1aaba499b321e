"""The OpenAPI document (daemon/corral/api/openapi.yaml) is valid, served, and describes exactly the
routes api/routes.py registers. Its schemas are checked against real answers by test_fuzz_api.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from corral import __version__
from corral.api.routes import openapi_document
from corral.api.server import ApiServer, make_app, start_api
from corral.contract import Services
from tests.daemon.test_api_fakes import FakeController

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def routed(app: aiohttp.web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }


def route_diff(doc: dict[str, Any], app: aiohttp.web.Application) -> str:
    """'' when they agree, else what to add where."""
    missing = sorted(routed(app) - documented(doc))
    extra = sorted(documented(doc) - routed(app))
    lines = []
    if missing:
        lines.append("routes in api/routes.py that api/openapi.yaml does not document:")
        lines += [f"    {m} {p}" for m, p in missing]
        if any(m == "HEAD" for m, _ in missing):
            lines.append("    (HEAD: add_get(..., allow_head=False) like the other routes)")
    if extra:
        lines.append("operations in api/openapi.yaml with no route in api/routes.py:")
        lines += [f"    {m} {p}" for m, p in extra]
    if lines:
        lines.append("see docs/api.md: add the operation with its request/response schemas")
    return "\n".join(lines)


def test_document_is_valid_openapi_3() -> None:
    doc = openapi_document()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["version"] == __version__


def test_document_and_route_table_are_the_same() -> None:
    app = make_app(Services.of(FakeController()))
    diff = route_diff(openapi_document(), app)
    assert not diff, "\n" + diff


def test_route_diff_names_what_is_missing_and_extra() -> None:
    """The failure message other branches' new routes will see."""
    app = make_app(Services.of(FakeController()))

    async def fake(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({})

    app.router.add_get("/v1/zz-test-only", fake)  # a path no branch will ever route
    doc = openapi_document()
    doc = {**doc, "paths": {**doc["paths"], "/v1/nope": {"post": {"responses": {}}}}}
    diff = route_diff(doc, app)
    fake = "GET /v1/zz-test-only\n    HEAD /v1/zz-test-only\n    (HEAD:"
    assert f"does not document:\n    {fake}" in diff
    assert "no route in api/routes.py:\n    POST /v1/nope" in diff


def test_every_operation_is_described() -> None:
    doc = openapi_document()
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            ids.append(op["operationId"])
            assert op.get("summary"), (method, path)
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (method, path)
            if path.startswith("/v1/") and path != "/v1/openapi.json":
                assert "500" in codes, (method, path)
            params = [p.get("$ref", "").rsplit("/", 1)[-1] or p["name"]
                      for p in item.get("parameters", []) + op.get("parameters", [])]  # fmt: skip
            if "{name}" in path:
                assert "AgentName" in params and "400" in codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= codes, (method, path)
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_documented_file_is_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"openapi.yaml"' in pyproject


@pytest.fixture
async def server(ctl: FakeController, sock_dir: Path) -> AsyncIterator[ApiServer]:
    srv = await start_api(Services.of(ctl), sock_dir / "corral.sock")
    yield srv
    await srv.close()


async def test_served_document_and_metrics(server: ApiServer) -> None:
    connector = aiohttp.UnixConnector(path=str(server.path))
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get("http://localhost/v1/openapi.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == openapi_document()
        async with s.get("http://localhost/metrics") as r:  # no registry given: empty, valid
            assert r.status == 200 and r.content_type == "text/plain"
            assert list(text_string_to_metric_families(await r.text())) == []
        async with s.head("http://localhost/metrics") as r:
            assert r.status == 405
