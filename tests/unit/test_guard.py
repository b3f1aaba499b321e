"""The tamper guard as user space sees it: its records decoded, its kinds in the kernel's bits,
its reports in diff (shown, never accepted into a baseline), and what status says per backend.
The kernel side is attacked for real in tests/kernel/test_guard.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.kernel import events, guard, layout
from corral.kernel.loader import GUARD_PROGRAMS, Backends, _no_such_tracepoint
from corral.policy import review
from corral.policy.agents import Deviation


def test_the_tamper_event_is_one_past_the_dimensions() -> None:
    assert len(layout.DIMS) == layout.C.CORRAL_EVENT_TAMPER
    assert len(layout.TAMPER_KINDS) + 1 == layout.C.CORRAL_TAMPER_KINDS


def test_kinds_and_bits_round_trip() -> None:
    bits = layout.tamper_bits({"bpf", "prctl"})
    assert bits == (1 << layout.C.CORRAL_TAMPER_BPF) | (1 << layout.C.CORRAL_TAMPER_PRCTL)
    assert layout.tamper_kinds(bits) == {"bpf", "prctl"}
    with pytest.raises(ValueError, match="unknown tamper kind 'bfp'"):
        layout.tamper_bits({"bfp"})


def _record(kind: int, text: bytes, verdict: int) -> bytes:
    e = layout.new("struct corral_event")
    e.dim = layout.C.CORRAL_EVENT_TAMPER
    e.tamper = kind
    e.verdict = verdict
    e.mode = layout.C.CORRAL_MODE_ENFORCE
    e.backend = layout.C.CORRAL_BACKEND_LSM
    e.agent = 7
    e.path = text
    return layout.to_bytes(e)


def test_a_tamper_record_decodes_with_its_kind_and_text() -> None:
    rec = _record(layout.C.CORRAL_TAMPER_MOUNT, b"move_mount x to wc", 2)
    ev = events.decode(rec, offset_ns=0)
    assert (ev.dimension, ev.tamper, ev.path, ev.verdict) == (
        "tamper", "mount", "move_mount x to wc", "denied",
    )  # fmt: skip
    assert ev.object == "move_mount x to wc" and ev.caller is None
    assert events.decode(_record(200, b"?", 1), offset_ns=0).tamper == "kind200"


def test_diff_shows_tamper_and_accept_never_takes_it() -> None:
    d = Deviation("tamper", "bpf(cmd=0)", 3, 1.0, 2.0, "denied", "python3")
    rows = review.rows([Deviation("exec", "/usr/bin/id", 1, 1.0, 2.0, "denied", "sh"), d])
    assert [(r.dimension, r.object) for r in rows] == [
        ("exec", "/usr/bin/id"), ("tamper", "bpf(cmd=0)"),
    ]  # fmt: skip
    assert "never accepted into a baseline" in rows[1].note
    assert review.exact(d) is None


def test_backends_choose_a_guard() -> None:
    assert Backends.choose("lsm").guard == "lsm"
    assert Backends.choose("fmod_ret").guard == "fmod_ret"
    assert Backends.choose(False, open_fallback="tracepoint").guard == "tracepoint"
    assert Backends.choose(False, open_fallback="sys_enter").guard == "cgroup"
    assert Backends.choose("lsm").without_guard().guard == "none"


def test_status_says_per_kind_what_happens() -> None:
    lsm = guard.enforcement("lsm", {})
    assert set(lsm) == set(layout.TAMPER_KINDS)
    assert all(
        v == "denied with EPERM (BPF LSM)"
        for k, v in lsm.items()
        if k not in ("mount", "chroot", "dns-server")
    )
    for backend in ("lsm", "fmod_ret", "tracepoint", "cgroup"):
        assert guard.enforcement(backend, {})["dns-server"] == guard.CGROUP_DENIED
    gone = {"corral_cg_guard_bind6": "Permission denied"}
    assert guard.enforcement("lsm", gone)["dns-server"].endswith("except bind6 (hook not attached)")
    assert (
        lsm["chroot"]
        == "denied with EPERM (BPF LSM); setns into a mount namespace: " + guard.KILLED
    )
    assert lsm["mount"].startswith("denied with EPERM (BPF LSM); opening a file through a detach")
    assert lsm["mount"].endswith("open_tree_attr): " + guard.KILLED)
    part = guard.enforcement("lsm", {"corral_lsm_guard_umount": "EINVAL"})
    assert part["mount"].startswith(
        "denied with EPERM (BPF LSM), except umount (hook not attached); "
    )
    gone = guard.enforcement("fmod_ret", {"corral_fmod_guard_chroot": "EINVAL"})
    assert gone["chroot"].startswith("not seen: hook not attached (EINVAL); setns into a mount")

    fb = guard.enforcement("tracepoint", {"corral_tp_guard_chroot": "Permission denied"})
    assert fb["bpf"] == guard.KILLED
    assert fb["chroot"] == guard.KILLED + ", except chroot (hook not attached)"
    assert fb["bpffs"] == guard.UNSEEN
    assert fb["cgroup"].startswith("clone3(CLONE_INTO_CGROUP) killed")
    assert fb["raw-socket"].startswith("raw inet sockets denied with EPERM")
    assert "ptrace and process_vm_* not seen" in fb["ptrace"]
    # a syscall this kernel does not have is no gap: open_tree_attr before Linux 6.15
    old = guard.enforcement("tracepoint", {"corral_tp_guard_open_tree_attr": guard.NO_SUCH_SYSCALL})
    assert old["mount"] == guard.KILLED
    gap = guard.enforcement("tracepoint", {"corral_tp_guard_fsmount": "Permission denied"})
    assert gap["mount"] == guard.KILLED + ", except fsmount (hook not attached)"
    none = guard.enforcement("none", {}, "the tamper guard (lsm) did not load: E2BIG")
    assert all(v.startswith("not guarded: the tamper guard") for v in none.values())


def test_every_program_named_for_status_exists_in_the_loader_lists() -> None:
    for family, prefix, hooks in (
        ("lsm", "corral_lsm_guard_", guard._DENY_HOOKS),
        ("fmod_ret", "corral_fmod_guard_", guard._DENY_HOOKS),
        ("tracepoint", "corral_tp_guard_", guard._TRACEPOINT_HOOKS),
    ):
        for names in hooks.values():
            for h in names:
                assert prefix + h in GUARD_PROGRAMS[family], (family, h)


def test_a_tracepoint_the_kernel_lacks_is_told_from_one_that_failed(tmp_path: Path) -> None:
    (tmp_path / "events" / "syscalls" / "sys_enter_fsopen").mkdir(parents=True)
    assert not _no_such_tracepoint(tmp_path, "tracepoint/syscalls/sys_enter_fsopen")
    assert _no_such_tracepoint(tmp_path, "tracepoint/syscalls/sys_enter_open_tree_attr")
    assert not _no_such_tracepoint(tmp_path, "lsm/file_open")
