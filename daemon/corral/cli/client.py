"""corralctl's side of the admin API: its vocabulary, exit codes and errors, and the HTTP/1.1
client over corrald's unix socket."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .render import visible

DEFAULT_SOCKET = "/run/corral/corral.sock"
ENV_SOCKET = "CORRAL_SOCKET"
DIMENSIONS = ("exec", "open", "connect")
MODES = ("observe", "alert", "enforce", "off")
REQUEST_TIMEOUT = 30.0
MAX_LIMIT = 10_000

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

PROG = "corralctl"


# ---------------------------------------------------------------------------------------------
# errors


class CliError(Exception):
    """Printed as `corralctl: <message>`; the process exits with .code."""

    code = EXIT_FAILED


class RequestFailed(CliError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(CliError):
    code = EXIT_UNREACHABLE


def _unreachable(path: str, reason: str) -> Unreachable:
    return Unreachable(
        f"cannot reach corrald ({reason}): is corrald running? start it with `make run` or "
        f"`systemctl start corrald`; socket: {path}"
    )


class _UsageError(Exception):
    pass


def _usage_error(message: str) -> _UsageError:
    return _UsageError(message)


# ---------------------------------------------------------------------------------------------
# the client


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def agent_path(name: str, *rest: str) -> str:
    """/v1/agents/<name percent-encoded as one segment>[/rest...]"""
    return "/".join(["/v1/agents", quote(name, safe=""), *rest])


class Client:
    """A short-lived HTTP/1.1 client over the daemon's unix socket."""

    def __init__(self, socket_path: str, timeout: float | None = REQUEST_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        """body: sent as JSON; data: sent as is with content_type."""
        conn = _UnixConnection(self.socket_path, timeout)
        headers = {"Accept": accept}
        payload = data
        if body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except FileNotFoundError:
            conn.close()
            raise _unreachable(self.socket_path, "no socket") from None
        except ConnectionRefusedError:
            conn.close()
            raise _unreachable(self.socket_path, "connection refused") from None
        except PermissionError:
            conn.close()
            raise Unreachable(
                f"permission denied on {self.socket_path}: run as root or as a member of the "
                "socket's group"
            ) from None
        except TimeoutError:
            conn.close()
            raise Unreachable(
                f"corrald did not answer within {timeout:g}s; socket: {self.socket_path}"
            ) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            conn.close()
            raise _unreachable(self.socket_path, str(exc) or type(exc).__name__) from None

    def request(self, method: str, path: str, body: Any = None, **send: Any) -> Any:
        """A JSON answer. send: data/content_type for a body that is not JSON."""
        raw = self.request_raw(method, path, body, **send)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise RequestFailed(
                f"corrald sent a response that is not JSON: {raw[:200]!r}"
            ) from None

    def request_raw(self, method: str, path: str, body: Any = None, **send: Any) -> bytes:
        """The answer's bytes, as the daemon sent them (errors raised as for request)."""
        conn, resp = self._send(method, path, body, self.timeout, **send)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.socket_path, f"connection lost: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise _failure(resp.status, raw)
        return raw

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """NDJSON lines until the daemon ends the stream."""
        conn, resp = self._send("GET", path, None, self.timeout)
        try:
            if resp.status >= 400:
                raise _failure(resp.status, resp.read())
            if conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet stream is not a dead daemon
            while line := resp.readline():
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and set(item) == {"error"}:
                    raise _failure(item["error"].get("status", 500), line)
                yield item
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.socket_path, f"connection lost: {exc}") from None
        finally:
            conn.close()


def _failure(status: int, raw: bytes) -> RequestFailed:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode(errors="replace").strip()[:500] or "no details"
    return RequestFailed(visible(str(message)), status)  # it may quote a hostile path
