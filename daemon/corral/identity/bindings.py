"""Which agent a registered cgroup belongs to, and where that knowledge came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Binding:
    """A cgroup registered in the kernel: whose it is and where it came from."""

    cgid: int
    agent: str
    inherit: bool
    source: str  # kubernetes | local | run
    path: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
