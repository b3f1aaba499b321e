"""`KubeletClient`: GET /pods from the kubelet's authenticated port (service-account token,
TLS), with retries, backoff, the last good PodList through outages, and `KubeletHealth`."""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from .pods import PodInfo, PodListError, parse_pod_list

log = structlog.get_logger("corral.identity")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOKEN_FILE = f"{SA_DIR}/token"
DEFAULT_CA_FILE = f"{SA_DIR}/ca.crt"


_PARSE_INLINE_MAX = 256 * 1024


def _decode_pod_list(body: str) -> list[PodInfo]:
    return parse_pod_list(json.loads(body))


class KubeletError(RuntimeError):
    """A failed /pods fetch, with a message that says what to check."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class KubeletHealth:
    last_success: float | None = None  # wall clock
    last_error: str | None = None
    last_error_at: float | None = None
    failing_since: float | None = None  # first failure of the current outage
    consecutive_failures: int = 0
    pods: int = 0  # pods in the last good list

    @property
    def ok(self) -> bool:
        return self.consecutive_failures == 0 and self.last_success is not None

    def describe(self) -> str:
        def ts(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

        if self.ok:
            return f"kubelet ok, {self.pods} pods"
        if self.last_success is None:
            return f"kubelet unreachable, no pod list yet: {self.last_error}"
        since = ts(self.failing_since or self.last_error_at or time.time())
        return (
            f"kubelet unreachable since {since} ({self.consecutive_failures} failures: "
            f"{self.last_error}), using last good state from {ts(self.last_success)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "consecutive_failures": self.consecutive_failures,
            "pods": self.pods,
            "summary": self.describe(),
        }


def default_kubelet_url() -> str:
    """https://<node>:10250/pods with the node from the downward API env (NODE_IP/HOST_IP or
    NODE_NAME), else 127.0.0.1 (a hostNetwork daemonset pod reaches its kubelet there)."""
    host = os.environ.get("NODE_IP") or os.environ.get("HOST_IP") or os.environ.get("NODE_NAME")
    host = host or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:10250/pods"


class KubeletClient:
    """GET /pods from the kubelet, keeping the last good PodList through outages.

    get_pods() retries transient failures (connection, timeout, 5xx) within a call with
    exponential backoff and full jitter; after a failed call, later calls wait out a growing
    backoff (up to max_backoff) before hitting the kubelet again and return the last good
    state meanwhile. 401/403 and malformed answers are not retried within a call."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token_file: str | None = DEFAULT_TOKEN_FILE,
        ca_file: str | None = DEFAULT_CA_FILE,
        insecure_skip_tls_verify: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 30.0,
        on_request: Callable[[float, str | None], None] | None = None,
    ) -> None:
        """on_request(seconds, error or None) is called after every GET /pods attempt."""
        self.url = url or default_kubelet_url()
        self.on_request = on_request
        self.token_file = token_file
        self.ca_file = ca_file
        self.insecure = insecure_skip_tls_verify
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=connect_timeout,
            connect=connect_timeout,
            sock_read=read_timeout,
        )
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.health = KubeletHealth()
        self.last_good: list[PodInfo] | None = None
        self._next_try = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeletClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise KubeletError(
                f"cannot load kubelet CA {self.ca_file}: {e} (set ca_file, or "
                "insecure_skip_tls_verify for a self-signed kubelet serving cert)",
                retryable=False,
            ) from e

    def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(ssl=self._ssl(), limit=2)
            self._session = aiohttp.ClientSession(connector=conn, timeout=self.timeout)
        return self._session

    def _headers(self) -> dict[str, str]:
        if not self.token_file:
            return {"Accept": "application/json"}
        try:  # re-read every time: projected service-account tokens rotate
            token = Path(self.token_file).read_text().strip()
        except OSError as e:
            log.warning("service-account token unreadable", file=self.token_file, error=str(e))
            return {"Accept": "application/json"}
        return {"Accept": "application/json", "Authorization": f"Bearer {token}"}

    def _auth_error(self, status: int, body: str) -> KubeletError:
        detail = body.strip()[:300]
        if status == 401:
            msg = (
                f"kubelet {self.url} answered 401 Unauthorized: check the service-account token "
                f"({self.token_file or 'none configured'}) is mounted and current, and that the "
                "kubelet accepts bearer tokens (authentication.webhook.enabled)"
            )
        else:
            msg = (
                f"kubelet {self.url} answered 403 Forbidden: the service account needs RBAC "
                "'get' on nodes/pods (kubelet fine-grained authz) or nodes/proxy"
            )
        return KubeletError(f"{msg}: {detail}" if detail else msg, retryable=False)

    async def fetch_pods(self) -> list[PodInfo]:
        """One attempt. Raises KubeletError."""
        try:
            session = self._session_get()
            async with session.get(self.url, headers=self._headers()) as resp:
                body = await resp.text(errors="replace")
                if resp.status in (401, 403):
                    raise self._auth_error(resp.status, body)
                if resp.status != 200:
                    raise KubeletError(
                        f"kubelet {self.url} answered {resp.status}: {body.strip()[:200]}",
                        retryable=resp.status >= 500 or resp.status == 429,
                    )
        except aiohttp.ClientConnectorCertificateError as e:
            raise KubeletError(
                f"kubelet {self.url} TLS verification failed against {self.ca_file}: {e}. "
                "Kubelet serving certs are often self-signed (no serverTLSBootstrap): give "
                "their CA, or set insecure_skip_tls_verify",
                retryable=False,
            ) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise KubeletError(f"kubelet {self.url} unreachable: {type(e).__name__}: {e}") from e
        try:
            if len(body) < _PARSE_INLINE_MAX:
                return _decode_pod_list(body)
            return await asyncio.to_thread(_decode_pod_list, body)  # MBs on a full node
        except (ValueError, PodListError) as e:
            raise KubeletError(
                f"kubelet {self.url} sent no valid PodList: {e}", retryable=False
            ) from e

    def _delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    async def _fetch_with_retries(self) -> list[PodInfo]:
        for attempt in range(self.retries + 1):
            start = time.monotonic()
            try:
                pods = await self.fetch_pods()
            except KubeletError as e:
                self._observed(start, str(e))
                if not e.retryable or attempt == self.retries:
                    raise
                log.debug("kubelet fetch failed, retrying", error=str(e), attempt=attempt + 1)
                await asyncio.sleep(self._delay(attempt))
            else:
                self._observed(start, None)
                return pods
        raise AssertionError("unreachable")

    def _observed(self, start: float, error: str | None) -> None:
        if self.on_request is not None:
            self.on_request(time.monotonic() - start, error)

    async def get_pods(self) -> list[PodInfo]:
        """The current pod list, or the last good one while the kubelet fails (see health).
        Raises KubeletError only when there has never been a good list."""
        if time.monotonic() >= self._next_try:
            try:
                pods = await self._fetch_with_retries()
            except KubeletError as e:
                self._failed(e)
            else:
                self._succeeded(pods)
                return pods
        if self.last_good is None:
            raise KubeletError(self.health.last_error or "kubelet not reached yet")
        return self.last_good

    def _succeeded(self, pods: list[PodInfo]) -> None:
        if self.health.consecutive_failures:
            log.info("kubelet reachable again", after_failures=self.health.consecutive_failures)
        self.last_good = pods
        self.health.last_success = time.time()
        self.health.consecutive_failures = 0
        self.health.failing_since = None
        self.health.pods = len(pods)
        self._next_try = 0.0

    def _failed(self, e: KubeletError) -> None:
        h = self.health
        now = time.time()
        h.consecutive_failures += 1
        h.failing_since = h.failing_since or now
        h.last_error, h.last_error_at = str(e), now
        self._next_try = time.monotonic() + self._delay(h.consecutive_failures)
        log.warning(
            "kubelet fetch failed",
            error=str(e),
            failures=h.consecutive_failures,
            using_last_good=self.last_good is not None,
        )
