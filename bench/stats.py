"""Small, dependency-free statistics for the reports."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: Sequence[float]) -> tuple[float, float]:
    """(min, max): with 5-9 rounds the honest spread is the whole range."""
    return (float(min(xs)), float(max(xs))) if xs else (float("nan"), float("nan"))


def pct(ratio: float) -> float:
    """A ratio (1.031) as overhead in percent (3.1)."""
    return (ratio - 1.0) * 100.0


def fmt_pct(ratio: float, digits: int = 1) -> str:
    p = pct(ratio)
    return f"{p:+.{digits}f} %"


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"
