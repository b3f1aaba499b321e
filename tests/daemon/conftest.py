"""Fixtures shared by the API and CLI tests: a short socket directory and fake services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_api_fakes import FakeController, short_tmpdir


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def ctl() -> FakeController:
    return FakeController()
