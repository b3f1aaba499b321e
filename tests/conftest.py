"""Shared by every suite: hypothesis tests check properties, never timings (speed targets are
benchmarks, bench/): no per-example deadline, which a loaded CI machine or a VM under TCG
would miss while the property holds."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("corral", deadline=None)
settings.load_profile("corral")
