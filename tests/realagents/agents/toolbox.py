"""What the corpus's agents share (standard library only): their built-in tools, the JSON line
each tool call prints for the harness, and the run's log file.

The tools are the ones many agent frameworks ship and trust the model with: read_file (any
path), write_file (any path), run_command (any program) and http_request (any URL). They are
deliberately naive; what stops a hijacked agent is corral, in the kernel, not the tool.

Each tool call prints one line on stdout, `{"event": "tool", "tool": ..., "outcome": ...}`, with
outcome `ok`, `denied` (EPERM/EACCES), `killed` (the program died of a signal before it could
answer: corral's fallback exec kill) or `error`. The final answer prints `{"event": "final"}`.
Lines carry sizes, never contents: a tool may read a real /etc/shadow.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
MAX_RESULT = 4000  # characters of a tool's result handed back to the model

# JSON schemas of the tools' arguments (OpenAI "parameters", Anthropic "input_schema").
TOOL_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "read_file": (
        "Read a text file. Relative paths are in the workspace; ~ is the home directory.",
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
    "write_file": (
        "Write (replace) a text file with the given content.",
        {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    ),
    "run_command": (
        "Run a program with arguments in the workspace; returns its output.",
        {
            "type": "object",
            "properties": {"argv": {"type": "array", "items": {"type": "string"}}},
            "required": ["argv"],
        },
    ),
    "http_request": (
        "Send an HTTP request (GET, or POST with a text body); returns the response body.",
        {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "method": {"type": "string", "enum": ["GET", "POST"]},
                "body": {"type": "string"},
            },
            "required": ["url"],
        },
    ),
}


class Killed(Exception):
    """The program the tool started died of a signal."""


@dataclass(frozen=True)
class ToolResult:
    outcome: str  # ok | denied | killed | error
    detail: str  # for the harness: sizes and errors, never contents
    content: str  # for the model


def emit(event: str, **fields: Any) -> None:
    """One JSON line for the harness on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def workspace() -> Path:
    return Path(os.environ.get("AGENT_WORKSPACE", os.getcwd())).resolve()


def open_log(agent: str) -> tuple[logging.Logger, Path]:
    """A log file per run, named by its start time (and pid), under AGENT_LOG_DIR or
    ~/.local/state/AGENT/logs: the way most agents keep their logs."""
    default = Path.home() / ".local" / "state" / agent / "logs"
    log_dir = Path(os.environ.get("AGENT_LOG_DIR", default))
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")
    path = log_dir / f"{agent}-{stamp}-{os.getpid()}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()  # the SDKs' own log lines (httpx, mcp, ...) go there too
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return logging.getLogger(agent), path


class Toolbox:
    """The built-in tools, each call logged and reported on stdout."""

    def __init__(self, root: Path, log: logging.Logger) -> None:
        self.root = root
        self.log = log
        self.tools: dict[str, Callable[..., tuple[str, str]]] = {
            "read_file": self.read_file,
            "write_file": self.write_file,
            "run_command": self.run_command,
            "http_request": self.http_request,
        }

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        result = self._call(name, arguments)
        self.log.info("tool %s -> %s (%s)", name, result.outcome, result.detail)
        emit("tool", tool=name, outcome=result.outcome, detail=result.detail)
        return result

    def _call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        fn = self.tools.get(name)
        if fn is None:
            return ToolResult("error", f"unknown tool {name}", f"error: unknown tool {name}")
        try:
            content, detail = fn(**arguments)
        except Killed as e:
            return ToolResult("killed", str(e), f"error: {e}")
        except OSError as e:
            denied = e.errno in (errno.EPERM, errno.EACCES)
            detail = f"{errno.errorcode.get(e.errno or 0, 'OSError')}: {e.strerror}"
            return ToolResult("denied" if denied else "error", detail, f"error: {detail}")
        except (TypeError, ValueError, urllib.error.URLError, subprocess.SubprocessError) as e:
            return ToolResult("error", f"{type(e).__name__}: {e}", f"error: {e}")
        return ToolResult("ok", detail, content[:MAX_RESULT])

    def _path(self, path: str) -> Path:
        full = Path(os.path.expanduser(path))
        return full if full.is_absolute() else self.root / full

    def read_file(self, path: str) -> tuple[str, str]:
        data = self._path(path).read_bytes()
        return data.decode("utf-8", errors="replace"), f"read {len(data)} bytes"

    def write_file(self, path: str, content: str) -> tuple[str, str]:
        data = content.encode()
        with open(self._path(path), "wb") as f:  # replaces the content, keeps the mode
            f.write(data)
        return f"wrote {len(data)} bytes to {path}", f"wrote {len(data)} bytes"

    def run_command(self, argv: list[str]) -> tuple[str, str]:
        exe = shutil.which(argv[0]) or argv[0]
        proc = subprocess.run(
            [exe, *argv[1:]],
            cwd=self.root,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            raise Killed(f"{exe} was killed by {sig}")
        out = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
        return out, f"{exe}: exit {proc.returncode}, {len(out)} characters of output"

    def http_request(
        self, url: str, method: str = "GET", body: str | None = None
    ) -> tuple[str, str]:
        data = body.encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=HTTP_TIMEOUT) as resp:
                text = resp.read().decode("utf-8", errors="replace")
                return text, f"HTTP {resp.status}, {len(text)} characters"
        except urllib.error.URLError as e:
            if isinstance(e.reason, OSError):
                raise e.reason from None  # EPERM from corral's connect hook, refused, ...
            raise


def task_from_argv(agent: str) -> str:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {agent} TASK")
    return sys.argv[1]
