"""Whether corral sees an agent at all: an agent whose pods run in gVisor or Kata
(identity/sandbox.py) is "not covered". Its cgroups stay registered (the runtime's own host
processes there are still kept from the admin API and its tamper attempts still counted), but
what host BPF sees of it is the runtime, not the agent: its modes are shown with
"(not covered)", it is never auto-promoted, and ENFORCE is refused, since it would deny nothing
the agent does (only the runtime's own work)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.contract import Conflict
from corral.identity.sandbox import Sandbox


def view(sandbox: Sandbox | None) -> dict[str, Any]:
    """An agent's coverage as the API shows it."""
    if sandbox is None:
        return {"covered": True}
    return {"covered": False, **sandbox.to_dict()}


def effective(mode: str, sandbox: Sandbox | None, on_backend: str) -> str:
    """What a mode does for the agent: on_backend (status.effective) unless it is not covered."""
    if sandbox is None or mode == "off":
        return on_backend
    return f"{mode} (not covered: {sandbox.runtime} sandbox)"


def refuse_enforce(name: str, sandbox: Sandbox | None, modes: Mapping[str, str]) -> None:
    """Conflict when modes set ENFORCE on an agent that is not covered."""
    dims = sorted(d for d, m in modes.items() if m == "enforce")
    if sandbox is None or not dims:
        return
    raise Conflict(
        f"{name} is not covered: {sandbox.why}. ENFORCE ({', '.join(dims)}) would deny nothing "
        "the agent does, so corrald refuses it; nothing changed. Run the agent with a runtime "
        "whose syscalls the host kernel handles (runc, crun) to enforce it"
    )
