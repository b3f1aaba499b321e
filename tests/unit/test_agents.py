"""Registry limits (pure logic: no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agents import AgentLimitReached, Registry
from corral.layout import C
from corral.service import Conflict


def test_the_agent_limit_is_a_conflict_not_a_crash(tmp_path: Path) -> None:
    """An import can create agents; at the kernel's limit the API answers 409 (was a 500)."""
    reg = Registry(tmp_path)
    for i in range(1, C.CORRAL_MAX_AGENTS):
        reg.create(f"a{i}", mode="observe", auto_promote=False, source="import")
    with pytest.raises(AgentLimitReached, match="agent limit reached") as info:
        reg.create("one-more", mode="observe", auto_promote=False, source="import")
    assert isinstance(info.value, Conflict) and info.value.status == 409
    assert "one-more" not in reg.agents
