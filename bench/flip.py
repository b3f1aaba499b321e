"""Flip latency: from the admin API call that changes an agent's mode to the moment a real
process in the agent's cgroup sees the kernel decide differently.

A C watcher in the agent's cgroup connects to a closed loopback port in a tight loop
(ECONNREFUSED while allowed, EPERM once denied) and prints the CLOCK_MONOTONIC time of every
change of outcome. The harness notes the same clock just before it sends
PUT /v1/agents/{name}/mode over the unix socket; latency = first changed outcome - that time.
Flips alternate alert -> enforce (first EPERM) and enforce -> alert (first refusal), in pairs
over two kinds of client: one that keeps its HTTP/1.1 connection open (a controller) and one
that opens a new connection per call (as corralctl does). The agent carries a 10,000-entry
baseline (written with corral's own store before the daemon starts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from corral.policy.agents import Registry
from corral.policy.store import BaselineStore

from . import env
from .daemon import Corrald, corrald
from .footprint import make_baseline
from .stats import median
from .syscalls import free_port

AGENT = "flip/agent"


class Watcher:
    """The C flipwatch process and a thread collecting its lines."""

    def __init__(self, d: Corrald, loop: Path, port: int, seconds: float) -> None:
        r, w = os.pipe()
        # nice 19: the observer spins on a CPU and must not delay the daemon it measures
        argv = ["/usr/bin/nice", "-n", "19", str(loop), "flipwatch", str(port), str(seconds)]
        self.pid = d.spawn(AGENT, argv, stdout=w)
        os.close(w)
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(r,), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd) as f:
            for line in f:
                row = json.loads(line)
                with self.cond:
                    self.lines.append(row)
                    self.cond.notify_all()

    def wait_for(self, outcome: str, after: int, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for row in self.lines[after:]:
                    if row.get("outcome") == outcome:
                        return row
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the watcher never saw {outcome}: {self.lines[-5:]}")
                self.cond.wait(left)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


def _request(method: str, path: str, body: dict[str, str] | None, *, close: bool) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = [
        f"{method} {path} HTTP/1.1",
        "Host: corrald",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(["Connection: close"] if close else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class KeptConnection:
    """One HTTP/1.1 connection kept open across requests, as a controller keeps it."""

    def __init__(self, sock_path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(sock_path))
        self.buf = b""

    def request(
        self, method: str, path: str, body: dict[str, str] | None = None
    ) -> tuple[int, int, int]:
        """(status, t_sent_ns, t_answered_ns); the request is built before the clock starts."""
        req = _request(method, path, body, close=False)
        t0 = time.monotonic_ns()
        self.sock.sendall(req)
        t1 = 0
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            t1 = t1 or time.monotonic_ns()
            if not chunk:
                raise ConnectionError("corrald closed the kept connection")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        self.buf = self.buf[length:]
        return int(head.split(b" ", 2)[1]), t0, t1

    def close(self) -> None:
        self.sock.close()


def put_mode(sock_path: Path, path: str, body: dict[str, str]) -> tuple[int, int, int]:
    """PUT on a new connection, opened and the request prepared before the clock starts (one
    call of corralctl): (status, t_sent_ns, t_answered_ns)."""
    req = _request("PUT", path, body, close=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock_path))
        t0 = time.monotonic_ns()
        s.sendall(req)
        head = s.recv(65536)
        t1 = time.monotonic_ns()
        while s.recv(65536):
            pass
    return int(head.split(b" ", 2)[1]), t0, t1


FLOOR_SERVER = """
import asyncio, sys
from aiohttp import web
async def main():
    app = web.Application()
    app.router.add_put("/x", lambda r: web.Response(text="ok"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, sys.argv[1]).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def http_floor(n: int = 100) -> dict[str, float]:
    """Round trip of the same kinds of request to a bare aiohttp server on a unix socket (no
    corral): the floor the HTTP stack alone sets on this machine, right now."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-http-") as d:
        sock = Path(d) / "s.sock"
        srv = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER, str(sock)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
            rtts: list[float] = []
            kept_rtts: list[float] = []
            conn = KeptConnection(sock)
            conn.request("PUT", "/x", {})
            for _ in range(n):
                _, t0, t1 = put_mode(sock, "/x", {})
                rtts.append((t1 - t0) / 1e6)
                time.sleep(0.02)
                _, t0, t1 = conn.request("PUT", "/x", {})
                kept_rtts.append((t1 - t0) / 1e6)
                time.sleep(0.02)
            conn.close()
        finally:
            srv.kill()
            srv.wait()
    return {
        "median_ms": median(rtts),
        "min_ms": min(rtts),
        "kept_median_ms": median(kept_rtts),
        "kept_min_ms": min(kept_rtts),
    }


def measure(flips: int = 20) -> dict[str, Any]:
    tools = env.helpers()
    out: dict[str, Any] = {"machine": env.machine(), "load_start": env.load(), "flips": []}
    work = Path(tempfile.mkdtemp(prefix="corral-bench-flip-"))
    try:
        state = work / "state"
        reg = Registry(state)
        state.mkdir(parents=True, exist_ok=True)
        reg.create(AGENT, mode="alert", auto_promote=False, source="run")
        reg.save()
        BaselineStore(state).save(make_baseline(AGENT, 0))
        port = free_port()
        with corrald(keep=state) as d:
            w = Watcher(d, tools["loop"], port, 120)
            conn = KeptConnection(d.sock)
            try:
                w.wait_for("refused", 0)
                conn.request("GET", "/v1/status")
                mode = "alert"
                for i in range(2 * flips):
                    time.sleep(0.2)
                    target, expect = (
                        ("enforce", "eperm") if mode == "alert" else ("alert", "refused")
                    )
                    kind = "kept" if i // 2 % 2 == 0 else "new"
                    with w.cond:
                        seen = len(w.lines)
                    path, body = d.agent_path(AGENT, "mode"), {"connect": target}
                    if kind == "kept":
                        status, t0, t_api = conn.request("PUT", path, body)
                    else:
                        status, t0, t_api = put_mode(d.sock, path, body)
                    if status != 200:
                        raise RuntimeError(f"PUT mode answered {status}")
                    row = w.wait_for(expect, seen)
                    out["flips"].append(
                        {
                            "i": i,
                            "to": target,
                            "connection": kind,
                            "kernel_ms": (row["t_ns"] - t0) / 1e6,
                            "api_ms": (t_api - t0) / 1e6,
                        }
                    )
                    mode = target
            finally:
                conn.close()
                w.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for kind, prefix in (("kept", ""), ("new", "new_")):
        rows = [f for f in out["flips"] if f["connection"] == kind]
        ks = sorted(f["kernel_ms"] for f in rows)
        out[f"{prefix}kernel_ms_median"] = median(ks)
        out[f"{prefix}kernel_ms_max"] = max(ks)
        out[f"{prefix}kernel_ms_p90"] = ks[int(0.9 * (len(ks) - 1))]
        out[f"{prefix}api_ms_median"] = median([f["api_ms"] for f in rows])
    out["baseline_entries"] = 10_000
    out["http_floor"] = http_floor()
    out["load_end"] = env.load()
    return out


def main(argv: list[str] | None = None) -> int:
    def args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--flips", type=int, default=20)

    return env.part_main(argv, __doc__, args, lambda a: measure(a.flips))


if __name__ == "__main__":
    raise SystemExit(main())
