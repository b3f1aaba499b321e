"""Real corrald processes for the metrics and fuzz tests (test_e2e.Daemon, set up and torn
down in one place). No tests here."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from corral.kernel.loader import remove_pins
from tests.daemon.test_api_fakes import short_tmpdir
from tests.daemon.test_e2e import Daemon


@contextlib.contextmanager
def corrald(kind: str, extra_config: str = "", *, start: bool = True) -> Iterator[Daemon]:
    """A Daemon with a short socket path and its own bpffs pins (corral-<kind>-<random>),
    started unless start=False; stopped and unpinned afterwards."""
    with short_tmpdir() as tmp:
        d = Daemon(
            state=tmp / "state",
            sock=tmp / "corral.sock",
            pins=Path("/sys/fs/bpf") / f"corral-{kind}-{uuid.uuid4().hex[:8]}",
            extra_config=extra_config,
        )
        try:
            if start:
                d.start()
            yield d
        finally:
            d.stop()
            if d.pins.exists():
                for fp in list(d.pins.iterdir()):
                    remove_pins(fp)
                d.pins.rmdir()
