"""Consumer: deviations (ALERT, ENFORCE) counted into their agents' review tables."""

from __future__ import annotations

from collections.abc import Callable

from .batch import Batch


class DeviationTracker:
    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed  # the registry has to be saved

    def on_batch(self, batch: Batch) -> None:
        for agent, seen in batch.deviations.values():
            agent.record_deviations(seen)
        if batch.deviations:
            self.changed()
