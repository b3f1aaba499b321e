"""The AI-BOM's DNS lookups: a resolver that never answers (a node without DNS, the VM suite)
must not hold up corrald's exit, block the loop, or pile up threads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest

from corral.aibom import hostnames
from corral.aibom.hostnames import RESOLVERS_MAX, Resolver


@pytest.fixture
def hung(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    release = threading.Event()

    def never(host: str) -> set[str]:
        release.wait()
        return {"192.0.2.1"}

    monkeypatch.setattr(hostnames, "resolve", never)
    return release


async def test_a_hung_lookup_times_out_and_bounds_the_threads(hung: threading.Event) -> None:
    r = Resolver()
    for _ in range(RESOLVERS_MAX):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.resolve("api.example.com"), 0.05)
    with pytest.raises(OSError, match="unanswered"):
        await r.resolve("api.example.com")
    hung.set()  # the stuck lookups end: their slots come back, late answers are dropped
    for _ in range(100):
        if not any(t.name == "corral-dns" for t in threading.enumerate()):
            break
        await asyncio.sleep(0.02)
    assert await r.resolve("api.example.com") == {"192.0.2.1"}


async def test_an_error_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(host: str) -> set[str]:
        raise OSError("Name or service not known")

    monkeypatch.setattr(hostnames, "resolve", fails)
    with pytest.raises(OSError, match="not known"):
        await Resolver().resolve("nowhere.invalid")


def test_a_hung_lookup_does_not_hold_up_exit() -> None:
    """A ThreadPoolExecutor's worker is joined at exit: this process would never end."""
    code = textwrap.dedent("""
        import asyncio, threading
        from corral.aibom import hostnames
        hostnames.resolve = lambda host: threading.Event().wait() or set()
        async def main():
            try:
                await asyncio.wait_for(hostnames.Resolver().resolve("x.example"), 0.1)
            except TimeoutError:
                print("timed out")
        asyncio.run(main())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "timed out"
