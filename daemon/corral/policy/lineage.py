"""Exec lineage: an exec entry allows a program for the callers it was seen from, as
KubeArmor's ``fromSource`` does, not for the whole agent.

The caller of an exec is the executable of the process that calls execve; for a script's
interpreter (the second round of one execve) it is the script. `npx` legitimately runs
`/usr/bin/sh`, which then runs `node`; with lineage that allows `sh` started by `npx`'s node,
not `sh` started by the agent's Python after a prompt injection.

An exec entry (exact, prefix or pattern) carries the set of its callers (``Entry.callers``), or
None: any caller. Learning adds the caller of each exec it sees; an `accept` or an import
without a caller allows any caller. Events of the fallback backend carry no caller (the
tracepoint runs after the exec replaced it): learned there, an entry is for any caller.

In the kernel (bpf/corral.h): the entries for any caller are in the agent's exec list; those
of caller number i in the list ``exec list | i << CORRAL_CALLER_SHIFT``, and ``exec_callers``
maps (exec list, caller path) to that list. The BPF LSM and fmod_ret programs look up the
caller's list, then the any-caller list. The fallback cannot know the caller: for it every
program goes into the any-caller list (``lineage=False``), and `status` says lineage is not
enforced there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from .patterns import kernel_groups

if TYPE_CHECKING:
    from .baseline import Baseline


@cache
def _layout() -> tuple[int, int]:
    from corral.kernel.layout import C

    return int(C.CORRAL_CALLER_SHIFT), int(C.CORRAL_CALLERS_MAX)


def caller_list(base: int, index: int) -> int:
    """The kernel list of one caller's programs."""
    shift, most = _layout()
    if not 0 < index <= most:
        raise ValueError(f"caller index {index} out of range 1..{most}")
    if base >> shift:
        raise ValueError(f"exec list id {base} does not fit below bit {shift}")
    return base | index << shift


def base_list(list_id: int) -> int:
    """The agent's exec list a list id belongs to (itself, or the list of one caller)."""
    return list_id & ((1 << _layout()[0]) - 1)


@dataclass
class PathLists:
    """One kernel list's entries, in the form Kernel.allow_paths and set_patterns take."""

    exact: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)

    @property
    def groups(self) -> dict[str, list[str]]:
        return kernel_groups(self.patterns)


@dataclass
class ExecLists:
    callers: dict[str, int]  # caller path -> its kernel list
    lists: dict[int, PathLists]  # kernel list -> entries (the base list first)


def exec_lists(b: Baseline, base: int, *, lineage: bool) -> ExecLists:
    """The exec entries of b as kernel lists under base (the agent's exec list)."""
    out = ExecLists({}, {base: PathLists()})
    if lineage:
        out.callers = {c: caller_list(base, i) for c, i in b.caller_ids.items()}
    rows = [(p, "prefix" if pre else "exact", e) for p, pre, e in b.path_entries("exec")]
    rows += [(g, "pattern", e) for g, e in b.pattern_entries("exec")]
    for key, kind, entry in rows:
        targets = [base] if not lineage or entry.callers is None else [
            out.callers[c] for c in sorted(entry.callers) if c in out.callers
        ]  # fmt: skip
        for list_id in targets:
            lists = out.lists.setdefault(list_id, PathLists())
            {"exact": lists.exact, "prefix": lists.prefixes, "pattern": lists.patterns}[
                kind
            ].append(key)
    return out
