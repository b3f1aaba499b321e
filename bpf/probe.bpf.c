// SPDX-License-Identifier: GPL-2.0-only
/*
 * Feature probe. A program that loads and attaches proves nothing: BPF LSM programs load and
 * attach on kernels where `bpf` is not an active LSM, and never run there. So each hook family
 * is proven by its effect: its effect_* programs count the operations of one process (the
 * probe's child, probe_state.tgid) and deny them where the hook can, and the child reports what
 * it saw. The probe_* programs only answer "does this program type load here".
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "corral.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define SIGKILL 9
#define FMODE_EXEC_OPEN 040 /* __FMODE_EXEC in f_flags: open_exec(), judged as an exec */

#include "lsm_ret.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct corral_probe);
} probe_state SEC(".maps");

/* The probe's state when the current task is the probe's child, else NULL. */
static __always_inline struct corral_probe *child(void)
{
	__u32 zero = 0;
	struct corral_probe *p = bpf_map_lookup_elem(&probe_state, &zero);

	if (!p || !p->tgid || (bpf_get_current_pid_tgid() >> 32) != p->tgid)
		return NULL;
	return p;
}

/* Counts the child's operation; -EPERM where the probe asks for a denial. */
static __always_inline int hit(__u32 dim)
{
	struct corral_probe *p = child();

	if (!p || dim >= CORRAL_NDIMS)
		return 0;
	__sync_fetch_and_add(&p->hits[dim], 1);
	return p->deny ? -EPERM : 0;
}

/* ---- BPF LSM ---------------------------------------------------------------------------- */

SEC("lsm/bprm_check_security")
int BPF_PROG(effect_lsm_exec, struct linux_binprm *bprm, int ret)
{
	return lsm_ret(ret ? ret : hit(CORRAL_DIM_EXEC));
}

SEC("lsm/file_open")
int BPF_PROG(effect_lsm_open, struct file *file, int ret)
{
	if (ret)
		return lsm_ret(ret);
	if (BPF_CORE_READ(file, f_flags) & FMODE_EXEC_OPEN)
		return 0;
	return lsm_ret(hit(CORRAL_DIM_OPEN));
}

SEC("lsm/socket_connect")
int BPF_PROG(effect_lsm_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	return lsm_ret(ret ? ret : hit(CORRAL_DIM_CONNECT));
}

/* ---- fmod_ret on the security_* functions (BPF LSM's decisions where it is not active) ----- */

SEC("fmod_ret/security_bprm_check")
int BPF_PROG(effect_fmod_exec, struct linux_binprm *bprm, int ret)
{
	return ret ? ret : hit(CORRAL_DIM_EXEC);
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(effect_fmod_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	if (BPF_CORE_READ(file, f_flags) & FMODE_EXEC_OPEN)
		return 0;
	return hit(CORRAL_DIM_OPEN);
}

SEC("fmod_ret/security_socket_connect")
int BPF_PROG(effect_fmod_connect, struct socket *sock, struct sockaddr *address, int addrlen,
	     int ret)
{
	return ret ? ret : hit(CORRAL_DIM_CONNECT);
}

/* ---- fallback: tracepoints and cgroup sock_addr ----------------------------------------- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(effect_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (hit(CORRAL_DIM_EXEC))
		bpf_send_signal(SIGKILL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int effect_tp_openat(struct trace_event_raw_sys_enter *ctx)
{
	hit(CORRAL_DIM_OPEN);
	return 0;
}

/* Attached to the probe's own throwaway cgroup only: everything connecting there is the child. */
SEC("cgroup/connect4")
int effect_cg_connect4(struct bpf_sock_addr *ctx)
{
	return hit(CORRAL_DIM_CONNECT) ? 0 : 1;
}

/* ---- load-only probes ------------------------------------------------------------------- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int probe_ringbuf(void *ctx)
{
	bpf_ringbuf_output(&probe_rb, &ctx, sizeof(ctx), 0);
	return 0;
}
