"""What the tamper guard (bpf/guard.bpf.h) does on this node, kind by kind: said plainly in
`status`, from the backend that loaded and the hooks that really attached."""

from __future__ import annotations

from .layout import TAMPER_KINDS

# Calls no LSM hook sees: every guard backend that reads the task kills at their syscall
# tracepoints (open_tree_attr: Linux 6.15 and later; setns: into a mount namespace only).
NEW_MOUNT_API = ("fsopen", "fsmount", "fspick", "mount_setattr", "open_tree", "open_tree_attr")
TP_EVERYWHERE = (*NEW_MOUNT_API, "setns")

# the hooks of each kind, by guard backend (program names without their family prefix)
_DENY_HOOKS = {
    "bpf": ("bpf",),
    "mount": ("mount", "move_mount", "umount", "pivotroot"),
    "chroot": ("chroot",),
    "ptrace": ("ptrace",),
    "raw-socket": ("socket",),
    "cgroup": ("open", "clone", "write"),
    "bpffs": ("unlink", "rename"),
    "signal": ("kill", "sigio"),
    "prctl": ("prctl",),
}
# cgroup programs every guard backend attaches (loader.GUARD_CGROUP), by kind
_CGROUP_HOOKS = {"dns-server": ("bind4", "bind6")}
CGROUP_DENIED = "denied with EPERM (cgroup/bind4, bind6: binding port 53)"
_TRACEPOINT_HOOKS = {
    "bpf": ("bpf",),
    "mount": ("mount", "umount", "move_mount", "pivot_root", *NEW_MOUNT_API),
    "chroot": ("chroot", "setns"),
    "ptrace": ("pidfd_getfd",),
    "raw-socket": ("socket",),
    "signal": ("kill", "tgkill", "tkill"),
    "prctl": ("prctl",),
    "cgroup": ("clone3",),
}
KILLED = "killed (the call itself completes first: syscall tracepoint)"
NO_SUCH_SYSCALL = "this kernel has no such syscall"  # a hook not needed here, not a gap
UNSEEN = "not seen: no hook for it on this backend"


def enforcement(guard: str, unattached: dict[str, str], error: str = "") -> dict[str, str]:
    """kind -> what an agent in ENFORCE suffers when it tries it here."""
    if guard in ("lsm", "fmod_ret"):
        prefix = "corral_lsm_guard_" if guard == "lsm" else "corral_fmod_guard_"
        verb = "denied with EPERM (BPF LSM)" if guard == "lsm" else "denied with EPERM (fmod_ret)"
        out = {
            k: _hooks_state(verb, prefix, _DENY_HOOKS[k], unattached)
            for k in TAMPER_KINDS
            if k not in _CGROUP_HOOKS
        }
        out |= _cgroup_kinds(unattached)
        api = _hooks_state(KILLED, "corral_tp_guard_", NEW_MOUNT_API, unattached)
        out["mount"] += (
            "; opening a file through a detached mount: denied; the new mount API (fsopen, "
            f"fsmount, fspick, mount_setattr, open_tree clone, open_tree_attr): {api}"
        )
        setns = _hooks_state(KILLED, "corral_tp_guard_", ("setns",), unattached)
        out["chroot"] += f"; setns into a mount namespace: {setns}"
        return out
    out = dict.fromkeys(TAMPER_KINDS, UNSEEN if not error else f"not guarded: {error}")
    if guard == "none":
        return out
    out |= _cgroup_kinds(unattached)
    sock = "corral_cg_guard_sock"
    raw = "raw inet sockets denied with EPERM (cgroup/sock_create)"
    out["raw-socket"] = f"{raw}; AF_PACKET not seen" if sock not in unattached else UNSEEN
    if guard == "cgroup":
        return out
    for kind, hooks in _TRACEPOINT_HOOKS.items():
        state = _hooks_state(KILLED, "corral_tp_guard_", hooks, unattached)
        if kind == "raw-socket":
            out[kind] = f"{raw}; AF_PACKET {state}" if sock not in unattached else state
        elif kind == "ptrace":
            out[kind] = f"pidfd_getfd {state}; ptrace and process_vm_* not seen"
        elif kind == "cgroup":
            out[kind] = f"clone3(CLONE_INTO_CGROUP) {state}; cgroupfs writes not seen"
        elif kind == "signal":
            out[kind] = f"kill, tkill, tgkill to corrald or -1: {state}; others not seen"
        else:
            out[kind] = state
    return out


def _cgroup_kinds(unattached: dict[str, str]) -> dict[str, str]:
    return {
        k: _hooks_state(CGROUP_DENIED, "corral_cg_guard_", hooks, unattached)
        for k, hooks in _CGROUP_HOOKS.items()
    }


def _hooks_state(verb: str, prefix: str, hooks: tuple[str, ...], unattached: dict[str, str]) -> str:
    missing = [h for h in hooks if unattached.get(prefix + h, NO_SUCH_SYSCALL) != NO_SUCH_SYSCALL]
    if not missing:
        return verb
    if len(missing) == len(hooks):
        return f"not seen: hook not attached ({unattached[prefix + missing[0]]})"
    return f"{verb}, except {', '.join(missing)} (hook not attached)"
