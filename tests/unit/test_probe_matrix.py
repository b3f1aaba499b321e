"""The capability matrix comes from what the probe's child saw, never from a load."""

from __future__ import annotations

from corral.kernel.effect import Effect, _read_outcome
from corral.kernel.probe import Check, capability_matrix, deny_family

DIMS = ("exec", "open", "connect")


def checks(bpf_active: bool = True) -> dict[str, Check]:
    c = {f"{k}_program": Check(True, "loads") for k in ("lsm", "fmod_ret", "tp_btf")}
    c["bpf_lsm_active"] = Check(bpf_active, "lockdown,capability" + (",bpf" if bpf_active else ""))
    return c


def family(seen: dict[str, str], hits: int = 1) -> dict[str, Effect]:
    return {d: Effect(f"effect_{d}", True, hits, seen[d], "") for d in DIMS}


DENIED = dict.fromkeys(DIMS, "EPERM")
NEVER_RAN = dict.fromkeys(DIMS, "allowed")
FALLBACK_SEEN = {"exec": "killed", "open": "allowed", "connect": "EPERM"}


def test_lsm_that_denies_is_chosen() -> None:
    effects = {"lsm": family(DENIED)}
    caps = capability_matrix(checks(), effects)
    assert {c["backend"] for c in caps.values()} == {"lsm"}
    assert all(c["mode"] == "enforce" and "seen" in c["how"] for c in caps.values())


def test_lsm_attached_that_never_ran_is_not_chosen_fmod_ret_is() -> None:
    effects = {"lsm": family(NEVER_RAN, hits=0), "fmod_ret": family(DENIED)}
    assert deny_family(checks(bpf_active=False), effects) == "fmod_ret"
    caps = capability_matrix(checks(bpf_active=False), effects)
    assert {c["backend"] for c in caps.values()} == {"fmod_ret"}


def test_lsm_hooks_that_ran_without_bpf_in_the_lsm_list_are_not_trusted() -> None:
    effects = {"lsm": family(DENIED), "fmod_ret": family(DENIED)}
    assert deny_family(checks(bpf_active=False), effects) == "fmod_ret"


def test_one_hook_short_is_not_the_family() -> None:
    partly = family(DENIED)
    partly["open"] = Effect("effect_open", True, 0, "allowed", "never ran")
    effects = {"lsm": partly, "fallback": family(FALLBACK_SEEN)}
    caps = capability_matrix(checks(), effects)
    assert caps["exec"]["backend"] == "tracepoint" and caps["exec"]["mode"] == "kill"
    assert caps["connect"] == {
        "mode": "enforce",
        "backend": "cgroup",
        "how": caps["connect"]["how"],
    }


def test_a_fallback_hook_not_seen_to_act_is_unavailable() -> None:
    seen = dict(FALLBACK_SEEN, connect="allowed")
    effects = {"fallback": family(seen)}
    caps = capability_matrix(checks(), effects)
    assert caps["connect"]["mode"] == "unavailable"
    assert caps["exec"]["mode"] == "kill"


def test_child_outcomes_are_read_from_its_lines_and_exit_status() -> None:
    assert _read_outcome('{"open": 1, "connect": "allowed"}\n{"exec": 1}\n', 0) == {
        "open": "EPERM",
        "connect": "allowed",
        "exec": "EPERM",
    }
    assert _read_outcome('{"open": "allowed", "connect": 1}\n', -9)["exec"] == "killed"
    assert _read_outcome('{"open": "allowed", "connect": 1}\n', 0)["exec"] == "allowed"
    assert _read_outcome("garbage\n", 3)["exec"] == "exit status 3"
