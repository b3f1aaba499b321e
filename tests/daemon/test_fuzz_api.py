"""Fuzz every operation of the OpenAPI document against a REAL corrald over its unix socket.

schemathesis generates the requests from daemon/corral/openapi.yaml (valid ones, and invalid
ones: wrong types, broken names, bodies that violate the schema) and checks each answer: no
5xx, a documented status code and content type, a body that matches the documented schema, and
invalid input rejected with a 4xx. Requests go through requests + a unix-socket transport
adapter (tests/daemon/unix_http.py) with a per-request timeout, so a hang fails the test.

Meanwhile an agent in ENFORCE sits in a real cgroup; after every operation's run (and at the
end) its process must still get EPERM for a connect outside its baseline, and still reach the
baselined port: the daemon keeps enforcing throughout.

CORRAL_FUZZ_EXAMPLES sets the examples per operation and generation mode (default 50; e.g. 1000
for a long local run).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks as oas

from corral.api import openapi_document
from tests.daemon.daemons import corrald
from tests.daemon.test_e2e import BIN, Daemon, _cgroup_of_child, ctl, ctl_json
from tests.daemon.unix_http import BASE_URL, unix_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF, makes cgroups")

EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "50"))
TIMEOUT = 5.0  # seconds per request: a hang is a failure
MAX_BODY = 4096
CHECKS = [
    not_a_server_error,
    oas.status_code_conformance,
    oas.content_type_conformance,
    oas.response_schema_conformance,
    oas.negative_data_rejection,
]
# Invalid input must get one of these (413: an invalid body can also be an oversized one). An
# explicit config: nothing is read from a schemathesis.toml that happens to be around.
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 405, 409, 413]}}}
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
OPERATIONS = [r.ok() for r in SCHEMA.get_all_operations()]
MUTATING = {"PUT", "POST", "DELETE", "PATCH"}
_TRUTHY = re.compile(r"^(1|true|yes|on)$", re.I)

GUARD_PY = textwrap.dedent("""
    import socket, sys

    def connect(port):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return "ok"
        except PermissionError:
            return "EPERM"
        except OSError as e:
            return type(e).__name__
        finally:
            s.close()

    print(connect(int(sys.argv[1])), flush=True)   # learnt while observing
    for line in sys.stdin:                          # then: one port per line, one answer each
        print(connect(int(line)), flush=True)
""")


@dataclass
class Guard:
    """A long-lived agent process in a real cgroup that connects when told to."""

    name: str
    proc: subprocess.Popen[str]
    allowed_port: int
    novel_port: int
    cgroup: Path

    def connect(self, port: int) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{port}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()


@dataclass
class Fuzzed:
    daemon: Daemon
    session: requests.Session
    guard: Guard
    target: str  # an agent in observe that mutating operations may hit

    def assert_enforcing(self) -> None:
        assert self.daemon.proc is not None and self.daemon.proc.poll() is None, "corrald died"
        assert self.guard.connect(self.guard.novel_port) == "EPERM", "enforcement stopped"
        assert self.guard.connect(self.guard.allowed_port) == "ok", "baselined connect broke"
        r = self.session.get(f"{BASE_URL}/v1/status", timeout=TIMEOUT)
        assert r.status_code == 200, r.text


def _listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    return srv


def _start_guard(d: Daemon, name: str, allowed: int, novel: int, script: Path) -> Guard:
    command = [sys.executable, str(script), str(allowed)]
    proc = subprocess.Popen(
        [str(BIN / "corralctl"), "--socket", str(d.sock), "run", "--agent", name, "--", *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ok", "the guard agent could not connect"
    guard = Guard(name, proc, allowed, novel, _cgroup_of_child(proc.pid))
    deadline = time.monotonic() + 20
    while f"127.0.0.1:{allowed}" not in json.dumps(ctl_json(d, "baseline", name)):
        assert time.monotonic() < deadline, "the guard's connect was never learnt"
        time.sleep(0.1)
    assert ctl(d, "mode", name, "enforce").returncode == 0
    return guard


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    config = f"max_request_bytes: {MAX_BODY}\nevents: {{log_events: false}}\n"
    with corrald("fuzz", config) as d, _listener() as allowed, _listener() as novel:
        script = d.state.parent / "guard.py"
        script.write_text(GUARD_PY)
        tag = d.pins.name.rsplit("-", 1)[1]
        guard = None
        session = unix_session(str(d.sock), TIMEOUT)
        try:
            target = f"fuzz-target-{tag}"
            assert ctl(d, "run", "--agent", target, "--", "true").returncode == 0
            guard = _start_guard(
                d, f"fuzz-guard-{tag}", allowed.getsockname()[1], novel.getsockname()[1], script
            )
            f = Fuzzed(d, session, guard, target)
            f.assert_enforcing()
            yield f
            f.assert_enforcing()
        finally:
            session.close()
            if guard is not None:
                (guard.cgroup / "cgroup.kill").write_text("1")
                guard.proc.kill()
                guard.proc.wait()


def _aim(case: schemathesis.Case, name: str | None) -> None:
    """Point a valid case at an existing agent (random names are almost never agents), and
    never follow the event stream (it does not end; tested on its own below)."""
    if name is not None:
        if "name" in (case.path_parameters or {}):
            case.path_parameters["name"] = name
        if case.query and "agent" in case.query:
            case.query["agent"] = name
    if case.query and _TRUTHY.match(str(case.query.get("follow", ""))):
        case.query["follow"] = "0"


def _names(f: Fuzzed, op: schemathesis.APIOperation) -> st.SearchStrategy[str | None]:
    """Valid cases keep their random name or aim at the observe agent; read-only operations
    also at the enforced guard (mutating it would end its enforcement, legitimately)."""
    names: list[str | None] = [None, f.target]
    if op.method.upper() not in MUTATING:
        names.append(f.guard.name)
    return st.sampled_from(names)


def _run(f: Fuzzed, op: schemathesis.APIOperation, mode: schemathesis.GenerationMode) -> int:
    seen = 0

    @given(case=op.as_strategy(generation_mode=mode), name=_names(f, op))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case, name: str | None) -> None:
        nonlocal seen
        _aim(case, name if mode == schemathesis.GenerationMode.POSITIVE else None)
        if op.method.upper() in MUTATING:
            assert (case.path_parameters or {}).get("name") != f.guard.name, "guard mutated"
        response = case.call(base_url=BASE_URL, session=f.session, timeout=TIMEOUT)
        case.validate_response(response, checks=CHECKS)
        seen += 1

    fuzz()
    return seen


@pytest.mark.parametrize("op", OPERATIONS, ids=[o.label for o in OPERATIONS])
def test_fuzz_operation(fuzzed: Fuzzed, op: schemathesis.APIOperation) -> None:
    """Valid and invalid requests for one operation; the guard is still denied afterwards."""
    sent = _run(fuzzed, op, schemathesis.GenerationMode.POSITIVE)
    if op.path_parameters or op.query or op.body:  # a free-form header has no invalid value
        sent += _run(fuzzed, op, schemathesis.GenerationMode.NEGATIVE)
    assert sent > 0
    fuzzed.assert_enforcing()


def _error(r: requests.Response, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    for word in words:
        assert word in body["error"]["message"], body
    return str(body["error"]["message"])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "mode"), ("POST", "accept"), ("POST", "run")],
)
def test_oversized_bodies_get_413(fuzzed: Fuzzed, method: str, path: str, chunked: bool) -> None:
    """One byte over max_request_bytes: 413; at the limit the body is read (and refused for
    its unknown field)."""

    def send(size: int) -> requests.Response:
        body = json.dumps({"pad": ""}).encode()
        body = body[:-2] + b"x" * (size - len(body)) + body[-2:]
        assert len(body) == size
        data: Any = iter([body[:100], body[100:]]) if chunked else body
        url = f"{BASE_URL}/v1/agents/{fuzzed.target}/{path}"
        return fuzzed.session.request(method, url, data=data, timeout=TIMEOUT)

    _error(send(MAX_BODY + 1), 413, f"the limit is {MAX_BODY} bytes")
    _error(send(MAX_BODY), 400, "unknown field", "'pad'")
    fuzzed.assert_enforcing()


BAD_NAMES = [
    "-leading-dash",
    ".hidden",
    "a%2Fb%2Fc%2Fd%2Fe",  # five segments
    "a%2F%2Fb",  # empty segment
    "x" * 513,
    "a%20b",
    "caf%C3%A9",
    "a%00b",
    "a%2F",
    "%2E%2E",
    "semi%3Bcolon",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_agent_names_get_400(fuzzed: Fuzzed, name: str) -> None:
    for method, path, body in (
        ("GET", "", None),
        ("GET", "/baseline", None),
        ("PUT", "/mode", {"mode": "observe"}),
        ("POST", "/run", {"pid": os.getpid()}),
    ):
        r = fuzzed.session.request(
            method, f"{BASE_URL}/v1/agents/{name}{path}", json=body, timeout=TIMEOUT
        )
        _error(r, 400, "invalid agent name", "segments")
    r = fuzzed.session.get(f"{BASE_URL}/v1/events?agent={name}", timeout=TIMEOUT)
    _error(r, 400, "invalid agent name")


def test_follow_streams_ndjson_and_ends_with_the_client(fuzzed: Fuzzed) -> None:
    url = f"{BASE_URL}/v1/events?follow=1&agent={fuzzed.guard.name}"
    with _listener() as fresh, fuzzed.session.get(url, stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        port = fresh.getsockname()[1]  # never reported before: not suppressed
        assert fuzzed.guard.connect(port) == "EPERM"
        event = json.loads(next(r.iter_lines()))
        assert (event["agent"], event["verdict"]) == (fuzzed.guard.name, "denied")
        assert event["object"] == f"127.0.0.1:{port}"
    fuzzed.assert_enforcing()
