"""requests over a unix socket: what the fuzz tests hand to schemathesis (case.call(session=)).

A transport adapter, so schemathesis builds and validates requests exactly as over TCP; only
the connection goes to the socket. No tests here."""

from __future__ import annotations

import socket
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

BASE_URL = "http://localhost"  # the host is ignored: every connection goes to the socket


class _Connection(urllib3.connection.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)  # type: ignore[arg-type]
        sock.connect(self._path)
        self.sock = sock


class _Pool(urllib3.HTTPConnectionPool):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=4)
        self._path = path

    def _new_conn(self) -> _Connection:
        return _Connection(self._path, self.timeout.connect_timeout)  # type: ignore[union-attr]


class UnixAdapter(HTTPAdapter):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__()
        self._pool = _Pool(path, timeout)

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> _Pool:
        return self._pool

    def get_connection(self, *args: Any, **kwargs: Any) -> _Pool:  # requests < 2.32
        return self._pool

    def close(self) -> None:
        self._pool.close()
        super().close()


def unix_session(path: str, timeout: float = 5.0) -> requests.Session:
    """A requests.Session whose http://localhost/... requests go to the unix socket at path."""
    s = requests.Session()
    # schemathesis gives a session's headers priority over a case's: requests' defaults
    # (Accept: */*) would replace every generated Accept header
    s.headers.clear()
    s.mount("http://", UnixAdapter(path, timeout))
    return s
