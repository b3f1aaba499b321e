"""Consumer: deviations (ALERT, ENFORCE) counted into their agents' review tables."""

from __future__ import annotations

from collections.abc import Callable

from .batch import Batch


class DeviationTracker:
    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed  # the registry has to be saved
        # opens without a path, when the open hook only reports (the fallback's syscall
        # tracepoint could not read the name): an artefact of the hook, not something the
        # agent could be denied or a baseline could allow; set by the composition root
        self.skip_unresolved_opens = False

    def on_batch(self, batch: Batch) -> None:
        skip = self.skip_unresolved_opens
        for agent, seen in batch.deviations.values():
            if skip:
                seen = [s for s in seen if s[0] != "open" or s[1] != ""]
            agent.record_deviations(seen)
        if batch.deviations:
            self.changed()
