/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The tamper guard (included by corral.bpf.c, after its helpers): what a confined agent could do
 * to switch corral off or to step outside what its cgroup's hooks see. Kinds: enum corral_tamper
 * in corral.h. Backends:
 *   LSM / fmod_ret  security_bpf, task_prctl, sb_mount, move_mount, sb_umount, sb_pivotroot,
 *                   path_chroot, ptrace_access_check, socket_create, file_open (cgroupfs writes;
 *                   any open through a detached mount), file_permission (kept cgroupfs fds),
 *                   inode_unlink, inode_rename (bpffs), task_kill (corrald)       -> -EPERM
 *   fallback        cgroup/sock_create (raw inet sockets)                          -> EPERM
 *                   syscall tracepoints (bpf, mount family, chroot, PR_SET_MM, AF_PACKET,
 *                   pidfd_getfd, signals to corrald)      -> SIGKILL: the call itself completes
 *   every backend   syscall tracepoints of the new mount API (fsopen, fsmount, fspick,
 *                   mount_setattr, open_tree with OPEN_TREE_CLONE) and of setns into a mount
 *                   namespace: no LSM hook sees them
 *                                                          -> SIGKILL: the call itself completes
 * A container runtime's init is exempt until it execs (guard_exempt below).
 */
#ifndef CORRAL_GUARD_BPF_H
#define CORRAL_GUARD_BPF_H

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define BPF_FS_MAGIC 0xcafe4a11
#define PR_SET_MM 35
#define SOCK_RAW 3
#define SOCK_TYPE_MASK 0xf
#define AF_PACKET 17
#define PTRACE_MODE_ATTACH 0x02
#define FMODE_WRITE 0x2
#define MAY_WRITE 0x2
#define MAY_APPEND 0x8
#define CLONE_INTO_CGROUP 0x200000000ULL
#define OPEN_TREE_CLONE 1
#define CLONE_NEWNS 0x00020000
#define MAX_ERRNO 4095
#define MNT_NS_ANON_INO 0xEFFFFFF7U

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORRAL_MAX_AGENTS);
	__type(key, __u32);
	__type(value, struct corral_counters);
} tamper_counters SEC(".maps");

/* Reports are suppressed per (agent, kind, executable), like objects are; 4 per agent on average. */
struct guard_seen_key {
	__u32 agent;
	__u32 kind;
	__u64 exe;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct guard_seen_key);
	__type(value, struct corral_seen_val);
} seen_tamper SEC(".maps");

/*
 * A container runtime's init (runc init; crun) is moved into the container's cgroup, or cloned
 * into it, by a process outside every agent, and mounts and pivots the container's root there
 * before it execs the agent: such a task, and what it forks before its exec, is exempt. Whether
 * the cgroup is an agent's yet does not matter: corrald may register a new pod's cgroup while
 * the runtime is still setting it up. Task storage, not a map an agent could fill: it lives and
 * dies with the task, so nothing is evicted (an exemption lost to ENOMEM fails closed: the
 * runtime is denied).
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} guard_exempt SEC(".maps");

/* The agent of a cgroup that is not the current task's: as resolve_agent, walking up. */
static __always_inline __u32 cgroup_agent(struct cgroup *cg)
{
	for (int i = 0; i < CORRAL_MAX_CGROUP_DEPTH && cg; i++) {
		__u64 id = BPF_CORE_READ(cg, kn, id);
		struct corral_cgroup_val *v = bpf_map_lookup_elem(&cgroup_agents, &id);

		if (v && (i == 0 || (v->flags & CORRAL_CG_INHERIT)))
			return v->agent;
		cg = BPF_CORE_READ(cg, self.parent, cgroup);
	}
	return 0;
}

static __always_inline __u32 task_agent(struct task_struct *t)
{
	return cgroup_agent(BPF_CORE_READ(t, cgroups, dfl_cgrp));
}

static __always_inline bool current_is_agent(void)
{
	__u8 f = 0;

	return resolve_agent(bpf_get_current_cgroup_id(), &f) != 0;
}

static __always_inline void exempt(struct task_struct *t)
{
	__u32 one = 1;

	bpf_task_storage_get(&guard_exempt, t, &one, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

/* A task moved to another cgroup by a process outside every agent (runc writes cgroup.procs). */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(corral_guard_attach, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	if (!current_is_agent())
		exempt(task);
	return 0;
}

/* Children of an exempt task; and clone3(CLONE_INTO_CGROUP) from outside every agent (crun). */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(corral_guard_fork, struct task_struct *parent, struct task_struct *child)
{
	struct cgroup *cg;

	if (bpf_task_storage_get(&guard_exempt, parent, 0, 0)) {
		exempt(child);
		return 0;
	}
	cg = BPF_CORE_READ(child, cgroups, dfl_cgrp);
	if (BPF_CORE_READ(cg, kn, id) == bpf_get_current_cgroup_id())
		return 0;
	if (!current_is_agent())
		exempt(child);
	return 0;
}

/* The exemption ends with the exec of the agent's own program. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(corral_guard_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	bpf_task_storage_delete(&guard_exempt, p);
	return 0;
}

/*
 * Fills s for the current task; false when it is not an agent, the kind is accepted for it, all
 * its dimensions are OFF, or it is an exempt runtime init. The guard's mode is the agent's
 * highest: tampering with corral would defeat every dimension.
 */
static __always_inline bool guard_init(struct subject *s, __u8 kind, __u8 backend, bool has_task)
{
	struct corral_agent_cfg *cfg;
	__u8 mode = CORRAL_MODE_OFF;
	__u32 agent;

	s->flags = 0;
	s->err = 0;
	s->ppid = 0;
	s->dim = CORRAL_EVENT_TAMPER;
	s->backend = backend;
	s->cgid = bpf_get_current_cgroup_id();
	agent = resolve_agent(s->cgid, &s->flags);
	if (!agent || agent >= CORRAL_MAX_AGENTS)
		return false;
	cfg = bpf_map_lookup_elem(&agent_cfg, &agent);
	if (!cfg || !cfg->active || (cfg->tamper_allow & (1U << kind)))
		return false;
	for (int d = 0; d < CORRAL_NDIMS; d++)
		if (cfg->mode[d] > mode)
			mode = cfg->mode[d];
	if (mode == CORRAL_MODE_OFF)
		return false;
	if (has_task && bpf_task_storage_get(&guard_exempt, bpf_get_current_task_btf(), 0, 0))
		return false;
	s->cfg = cfg;
	s->agent = agent;
	s->mode = mode;
	return true;
}

/*
 * Counts, reports (fmt/args: the event's text, bpf_snprintf) and returns -EPERM where it denies.
 * OBSERVE and ALERT: would-deny (reported, never learned). kill: the fallback's tracepoints,
 * which cannot fail the call and send SIGKILL instead.
 */
static __always_inline int guard_act(struct subject *s, __u8 kind, bool can_deny, bool kill,
				     bool has_task, const char *fmt, __u64 *args, __u32 args_len)
{
	struct corral_counters *c = bpf_map_lookup_elem(&tamper_counters, &s->agent);
	struct guard_seen_key key = { .agent = s->agent, .kind = kind };
	struct corral_seen_val *seen;
	struct corral_event *e;
	__u64 now = bpf_ktime_get_boot_ns();
	__u8 verdict = CORRAL_VERDICT_WOULD_DENY;

	if (has_task)
		key.exe = current_exe_id();
	if (s->mode == CORRAL_MODE_ENFORCE && can_deny) {
		verdict = kill ? CORRAL_VERDICT_KILLED : CORRAL_VERDICT_DENIED;
		if (c)
			c->denied++;
	} else {
		if (s->mode == CORRAL_MODE_ENFORCE)
			s->flags |= CORRAL_EF_NOENFORCE;
		if (c)
			c->would_deny++;
	}
	if (may_report(s, c, &seen_tamper, &key, now, verdict, &seen)) {
		e = event_start(s, c, verdict, now, has_task);
		if (e) {
			e->tamper = kind;
			e->exe = key.exe;
			e->repeats = take_repeats(seen);
			bpf_snprintf(e->path, sizeof(e->path), fmt, args, args_len);
			bpf_ringbuf_submit(e, 0);
		}
	}
	if (!blocks(verdict))
		return 0;
	if (kill)
		bpf_send_signal(SIGKILL);
	return -EPERM;
}

/* One decision per kind, shared by the LSM and fmod_ret programs below. */

static __always_inline int guard_bpf(int cmd, __u8 backend)
{
	static const char fmt[] = "bpf(cmd=%d)";
	__u64 a[] = { cmd };
	struct subject s;

	if (!guard_init(&s, CORRAL_TAMPER_BPF, backend, true))
		return 0;
	return guard_act(&s, CORRAL_TAMPER_BPF, true, false, true, fmt, a, sizeof(a));
}

static __always_inline int guard_prctl(int option, unsigned long arg2, __u8 backend)
{
	static const char fmt[] = "prctl(PR_SET_MM, %lu)";
	__u64 a[] = { arg2 };
	struct subject s;

	if (option != PR_SET_MM || !guard_init(&s, CORRAL_TAMPER_PRCTL, backend, true))
		return 0;
	return guard_act(&s, CORRAL_TAMPER_PRCTL, true, false, true, fmt, a, sizeof(a));
}

static __always_inline int guard_mount(const char *fmt, __u64 *a, __u32 len, __u8 backend)
{
	struct subject s;

	if (!guard_init(&s, CORRAL_TAMPER_MOUNT, backend, true))
		return 0;
	return guard_act(&s, CORRAL_TAMPER_MOUNT, true, false, true, fmt, a, len);
}

static __always_inline __u64 dname(const struct path *p)
{
	return (__u64)BPF_CORE_READ(p, dentry, d_name.name);
}

static __always_inline int guard_sb_mount(const char *dev, const struct path *path, const char *type,
					  unsigned long flags, __u8 backend)
{
	static const char fmt[] = "mount %s (%s) on %s flags=0x%lx";
	__u64 a[] = { (__u64)dev, (__u64)type, dname(path), flags };

	return guard_mount(fmt, a, sizeof(a), backend);
}

static __always_inline int guard_move_mount(const struct path *from, const struct path *to,
					    __u8 backend)
{
	static const char fmt[] = "move_mount %s to %s";
	__u64 a[] = { dname(from), dname(to) };

	return guard_mount(fmt, a, sizeof(a), backend);
}

static __always_inline int guard_umount(struct vfsmount *mnt, int flags, __u8 backend)
{
	static const char fmt[] = "umount flags=0x%x";
	__u64 a[] = { flags };

	return guard_mount(fmt, a, sizeof(a), backend);
}

static __always_inline int guard_pivotroot(const struct path *old, const struct path *new,
					   __u8 backend)
{
	static const char fmt[] = "pivot_root %s %s";
	__u64 a[] = { dname(new), dname(old) };

	return guard_mount(fmt, a, sizeof(a), backend);
}

static __always_inline int guard_chroot(const struct path *path, __u8 backend)
{
	static const char fmt[] = "chroot .../%s";
	__u64 a[] = { dname(path) };
	struct subject s;

	if (!guard_init(&s, CORRAL_TAMPER_CHROOT, backend, true))
		return 0;
	return guard_act(&s, CORRAL_TAMPER_CHROOT, true, false, true, fmt, a, sizeof(a));
}

/* Attach-class access (ptrace attach, pidfd_getfd, process_vm_*, /proc/PID/mem) outside the agent. */
static __always_inline int guard_ptrace(struct task_struct *child, unsigned int mode, __u8 backend)
{
	static const char fmt[] = "ptrace-class access (mode 0x%x) to pid %d (%s)";
	__u64 a[3];
	struct subject s;

	if (!(mode & PTRACE_MODE_ATTACH))
		return 0;
	if (!guard_init(&s, CORRAL_TAMPER_PTRACE, backend, true) || task_agent(child) == s.agent)
		return 0;
	a[0] = mode;
	a[1] = BPF_CORE_READ(child, tgid);
	a[2] = (__u64)child->comm;
	return guard_act(&s, CORRAL_TAMPER_PTRACE, true, false, true, fmt, a, sizeof(a));
}

static __always_inline int guard_socket(int family, int type, int protocol, int kern, __u8 backend)
{
	static const char fmt[] = "socket(family=%d, type=%d, protocol=%d)";
	__u64 a[] = { family, type, protocol };
	struct subject s;

	/* AF_NETLINK SOCK_RAW is how glibc asks for interfaces (getaddrinfo's AI_ADDRCONFIG) */
	if (kern || !(family == AF_PACKET ||
		      ((type & SOCK_TYPE_MASK) == SOCK_RAW && (family == AF_INET || family == AF_INET6))))
		return 0;
	if (!guard_init(&s, CORRAL_TAMPER_RAW_SOCKET, backend, true))
		return 0;
	return guard_act(&s, CORRAL_TAMPER_RAW_SOCKET, true, false, true, fmt, a, sizeof(a));
}

/*
 * A file reached through a detached mount: a tree of open_tree(OPEN_TREE_CLONE) or fsmount (an
 * anonymous mount namespace), or one lazily unmounted (none). Its path (d_path) starts at that
 * tree's own root, so "/usr/bin/wc" may name any file the agent chose. Kernel-internal mounts
 * (pipes, memfds reopened through /proc/self/fd) carry an error pointer, not a namespace; the
 * mounts of another live namespace (the one the agent left with unshare) keep their names.
 */
static __always_inline bool detached_mount(struct file *file)
{
	struct vfsmount *vm = BPF_CORE_READ(file, f_path.mnt);
	struct mount *m = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	struct mnt_namespace *ns = BPF_CORE_READ(m, mnt_ns);
	unsigned int inum;

	if (!ns)
		return true;
	if ((unsigned long)ns >= (unsigned long)-MAX_ERRNO)
		return false;
	/* anonymous: no inode number before Linux 6.18, MNT_NS_ANON_INO from it */
	inum = BPF_CORE_READ(ns, ns.inum);
	return inum == 0 || inum == MNT_NS_ANON_INO;
}

static __always_inline int guard_open_kind(struct file *file, __u8 kind, const char *fmt,
					   __u8 backend)
{
	struct scratch *sc;
	struct subject s;
	__u64 a[1];

	if (!guard_init(&s, kind, backend, true))
		return 0;
	sc = get_scratch();
	if (!sc)
		return s.mode == CORRAL_MODE_ENFORCE ? -EPERM : 0;
	if (bpf_d_path((struct path *)&file->f_path, (char *)sc->tmp, sizeof(sc->tmp)) < 0)
		sc->tmp[0] = 0;
	a[0] = (__u64)sc->tmp;
	return guard_act(&s, kind, true, false, true, fmt, a, sizeof(a));
}

/*
 * Writes to cgroupfs (cgroup.procs: leaving the agent's cgroup), and any open or exec through a
 * detached mount. Cheap for every other open.
 */
static __always_inline int guard_open(struct file *file, __u8 backend)
{
	static const char cg_fmt[] = "open for writing: %s";
	static const char mnt_fmt[] = "open through a detached mount: %s";
	__u64 magic;

	if (detached_mount(file))
		return guard_open_kind(file, CORRAL_TAMPER_MOUNT, mnt_fmt, backend);
	if (!(BPF_CORE_READ(file, f_mode) & FMODE_WRITE))
		return 0;
	magic = BPF_CORE_READ(file, f_inode, i_sb, s_magic);
	if (magic != CGROUP2_SUPER_MAGIC && magic != CGROUP_SUPER_MAGIC)
		return 0;
	return guard_open_kind(file, CORRAL_TAMPER_CGROUP, cg_fmt, backend);
}

/*
 * A write through a cgroupfs descriptor opened before the agent was in ENFORCE (the open would
 * be refused now). Runs for every read and write on the node: the mask is tested first.
 */
static __always_inline int guard_write(struct file *file, int mask, __u8 backend)
{
	/* bpf_d_path is not allowed in this hook: the cgroup's name and the file's */
	static const char fmt[] = "write through a kept cgroupfs descriptor: .../%s/%s";
	struct subject s;
	__u64 a[2];
	__u64 magic;

	if (!(mask & (MAY_WRITE | MAY_APPEND)))
		return 0;
	magic = BPF_CORE_READ(file, f_inode, i_sb, s_magic);
	if (magic != CGROUP2_SUPER_MAGIC && magic != CGROUP_SUPER_MAGIC)
		return 0;
	if (!guard_init(&s, CORRAL_TAMPER_CGROUP, backend, true))
		return 0;
	a[0] = (__u64)BPF_CORE_READ(file, f_path.dentry, d_parent, d_name.name);
	a[1] = (__u64)BPF_CORE_READ(file, f_path.dentry, d_name.name);
	return guard_act(&s, CORRAL_TAMPER_CGROUP, true, false, true, fmt, a, sizeof(a));
}

/* clone3(CLONE_INTO_CGROUP): a child born in another cgroup, outside the agent. */
static __always_inline int guard_clone(__u64 flags, __u8 backend)
{
	static const char fmt[] = "clone3(CLONE_INTO_CGROUP, flags=0x%llx)";
	__u64 a[] = { flags };
	struct subject s;

	if (!(flags & CLONE_INTO_CGROUP) || !guard_init(&s, CORRAL_TAMPER_CGROUP, backend, true))
		return 0;
	return guard_act(&s, CORRAL_TAMPER_CGROUP, true, false, true, fmt, a, sizeof(a));
}

/* SIGIO/F_SETSIG to corrald: a signal sent by file I/O, not by kill(). */
static __always_inline int guard_sigio(struct task_struct *p, int sig, __u8 backend)
{
	static const char fmt[] = "signal %d to corrald (pid %d) by file I/O (F_SETOWN)";
	struct corral_config *conf = get_config();
	__u64 a[2];
	struct subject s;

	if (!conf || !conf->guard_tgid || BPF_CORE_READ(p, tgid) != conf->guard_tgid)
		return 0;
	if (!guard_init(&s, CORRAL_TAMPER_SIGNAL, backend, true))
		return 0;
	a[0] = sig;
	a[1] = conf->guard_tgid;
	return guard_act(&s, CORRAL_TAMPER_SIGNAL, true, false, true, fmt, a, sizeof(a));
}

/* Unlinks and renames on a bpf filesystem: corral's pins. */
static __always_inline int guard_bpffs(const char *fmt, struct inode *dir, struct dentry *d,
				       __u8 backend)
{
	__u64 a[1];
	struct subject s;

	if (BPF_CORE_READ(dir, i_sb, s_magic) != BPF_FS_MAGIC)
		return 0;
	if (!guard_init(&s, CORRAL_TAMPER_BPFFS, backend, true))
		return 0;
	a[0] = (__u64)BPF_CORE_READ(d, d_name.name);
	return guard_act(&s, CORRAL_TAMPER_BPFFS, true, false, true, fmt, a, sizeof(a));
}

static __always_inline int guard_kill(struct task_struct *p, int sig, __u8 backend)
{
	static const char fmt[] = "signal %d to corrald (pid %d)";
	struct corral_config *conf = get_config();
	__u64 a[2];
	struct subject s;

	if (!sig || !conf || !conf->guard_tgid || BPF_CORE_READ(p, tgid) != conf->guard_tgid)
		return 0;
	if (!guard_init(&s, CORRAL_TAMPER_SIGNAL, backend, true))
		return 0;
	a[0] = sig;
	a[1] = conf->guard_tgid;
	return guard_act(&s, CORRAL_TAMPER_SIGNAL, true, false, true, fmt, a, sizeof(a));
}

/*
 * LSM programs. Hooks whose argument count changed across kernels do not read the previous
 * program's verdict: a non-zero return of an earlier program ends the chain before this one.
 * task_prctl: returning 0 lets the hook's default (-ENOSYS, "not mine") stand.
 */
#define LSM_B CORRAL_BACKEND_LSM
#define FMOD_B CORRAL_BACKEND_FMOD_RET

SEC("lsm/bpf")
int BPF_PROG(corral_lsm_guard_bpf, int cmd)
{
	return lsm_ret(guard_bpf(cmd, LSM_B));
}

SEC("lsm/task_prctl")
int BPF_PROG(corral_lsm_guard_prctl, int option, unsigned long arg2)
{
	return lsm_ret(guard_prctl(option, arg2, LSM_B));
}

SEC("lsm/sb_mount")
int BPF_PROG(corral_lsm_guard_mount, const char *dev, const struct path *path, const char *type,
	     unsigned long flags)
{
	return lsm_ret(guard_sb_mount(dev, path, type, flags, LSM_B));
}

SEC("lsm/move_mount")
int BPF_PROG(corral_lsm_guard_move_mount, const struct path *from, const struct path *to)
{
	return lsm_ret(guard_move_mount(from, to, LSM_B));
}

SEC("lsm/sb_umount")
int BPF_PROG(corral_lsm_guard_umount, struct vfsmount *mnt, int flags)
{
	return lsm_ret(guard_umount(mnt, flags, LSM_B));
}

SEC("lsm/sb_pivotroot")
int BPF_PROG(corral_lsm_guard_pivotroot, const struct path *old, const struct path *new)
{
	return lsm_ret(guard_pivotroot(old, new, LSM_B));
}

SEC("lsm/path_chroot")
int BPF_PROG(corral_lsm_guard_chroot, const struct path *path)
{
	return lsm_ret(guard_chroot(path, LSM_B));
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(corral_lsm_guard_ptrace, struct task_struct *child, unsigned int mode)
{
	return lsm_ret(guard_ptrace(child, mode, LSM_B));
}

SEC("lsm/socket_create")
int BPF_PROG(corral_lsm_guard_socket, int family, int type, int protocol, int kern)
{
	return lsm_ret(guard_socket(family, type, protocol, kern, LSM_B));
}

SEC("lsm/file_open")
int BPF_PROG(corral_lsm_guard_open, struct file *file)
{
	return lsm_ret(guard_open(file, LSM_B));
}

SEC("lsm/file_permission")
int BPF_PROG(corral_lsm_guard_write, struct file *file, int mask)
{
	return lsm_ret(guard_write(file, mask, LSM_B));
}

SEC("lsm/inode_unlink")
int BPF_PROG(corral_lsm_guard_unlink, struct inode *dir, struct dentry *dentry)
{
	static const char fmt[] = "unlink on bpffs: %s";

	return lsm_ret(guard_bpffs(fmt, dir, dentry, LSM_B));
}

SEC("lsm/inode_rename")
int BPF_PROG(corral_lsm_guard_rename, struct inode *dir, struct dentry *dentry)
{
	static const char fmt[] = "rename on bpffs: %s";

	return lsm_ret(guard_bpffs(fmt, dir, dentry, LSM_B));
}

SEC("lsm/task_kill")
int BPF_PROG(corral_lsm_guard_kill, struct task_struct *p, struct kernel_siginfo *info, int sig)
{
	return lsm_ret(guard_kill(p, sig, LSM_B));
}

SEC("lsm/task_alloc")
int BPF_PROG(corral_lsm_guard_clone, struct task_struct *task, unsigned long clone_flags)
{
	return lsm_ret(guard_clone(clone_flags, LSM_B));
}

SEC("lsm/file_send_sigiotask")
int BPF_PROG(corral_lsm_guard_sigio, struct task_struct *p, struct fown_struct *fown, int sig)
{
	return lsm_ret(guard_sigio(p, sig, LSM_B));
}

/* fmod_ret: a non-zero return skips the security_* function; 0 runs it (and the other LSMs). */

SEC("fmod_ret/security_task_alloc")
int BPF_PROG(corral_fmod_guard_clone, struct task_struct *task, unsigned long clone_flags)
{
	return lsm_ret(guard_clone(clone_flags, FMOD_B));
}

SEC("fmod_ret/security_file_send_sigiotask")
int BPF_PROG(corral_fmod_guard_sigio, struct task_struct *p, struct fown_struct *fown, int sig)
{
	return lsm_ret(guard_sigio(p, sig, FMOD_B));
}

SEC("fmod_ret/security_bpf")
int BPF_PROG(corral_fmod_guard_bpf, int cmd)
{
	return lsm_ret(guard_bpf(cmd, FMOD_B));
}

SEC("fmod_ret/security_task_prctl")
int BPF_PROG(corral_fmod_guard_prctl, int option, unsigned long arg2)
{
	return lsm_ret(guard_prctl(option, arg2, FMOD_B));
}

SEC("fmod_ret/security_sb_mount")
int BPF_PROG(corral_fmod_guard_mount, const char *dev, const struct path *path, const char *type,
	     unsigned long flags)
{
	return lsm_ret(guard_sb_mount(dev, path, type, flags, FMOD_B));
}

SEC("fmod_ret/security_move_mount")
int BPF_PROG(corral_fmod_guard_move_mount, const struct path *from, const struct path *to)
{
	return lsm_ret(guard_move_mount(from, to, FMOD_B));
}

SEC("fmod_ret/security_sb_umount")
int BPF_PROG(corral_fmod_guard_umount, struct vfsmount *mnt, int flags)
{
	return lsm_ret(guard_umount(mnt, flags, FMOD_B));
}

SEC("fmod_ret/security_sb_pivotroot")
int BPF_PROG(corral_fmod_guard_pivotroot, const struct path *old, const struct path *new)
{
	return lsm_ret(guard_pivotroot(old, new, FMOD_B));
}

SEC("fmod_ret/security_path_chroot")
int BPF_PROG(corral_fmod_guard_chroot, const struct path *path)
{
	return lsm_ret(guard_chroot(path, FMOD_B));
}

SEC("fmod_ret/security_ptrace_access_check")
int BPF_PROG(corral_fmod_guard_ptrace, struct task_struct *child, unsigned int mode)
{
	return lsm_ret(guard_ptrace(child, mode, FMOD_B));
}

SEC("fmod_ret/security_socket_create")
int BPF_PROG(corral_fmod_guard_socket, int family, int type, int protocol, int kern)
{
	return lsm_ret(guard_socket(family, type, protocol, kern, FMOD_B));
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(corral_fmod_guard_open, struct file *file)
{
	return lsm_ret(guard_open(file, FMOD_B));
}

SEC("fmod_ret/security_file_permission")
int BPF_PROG(corral_fmod_guard_write, struct file *file, int mask)
{
	return lsm_ret(guard_write(file, mask, FMOD_B));
}

SEC("fmod_ret/security_inode_unlink")
int BPF_PROG(corral_fmod_guard_unlink, struct inode *dir, struct dentry *dentry)
{
	static const char fmt[] = "unlink on bpffs: %s";

	return lsm_ret(guard_bpffs(fmt, dir, dentry, FMOD_B));
}

SEC("fmod_ret/security_inode_rename")
int BPF_PROG(corral_fmod_guard_rename, struct inode *dir, struct dentry *dentry)
{
	static const char fmt[] = "rename on bpffs: %s";

	return lsm_ret(guard_bpffs(fmt, dir, dentry, FMOD_B));
}

SEC("fmod_ret/security_task_kill")
int BPF_PROG(corral_fmod_guard_kill, struct task_struct *p, struct kernel_siginfo *info, int sig)
{
	return lsm_ret(guard_kill(p, sig, FMOD_B));
}

/* ---- fallback: what this host's hooks can do ---------------------------------------------- */

/* Raw inet sockets: cgroup/sock_create may refuse them (0 = EPERM). It may not read the task. */
SEC("cgroup/sock_create")
int corral_cg_guard_sock(struct bpf_sock *sk)
{
	static const char fmt[] = "socket(family=%d, type=%d, protocol=%d)";
	__u64 a[3];
	struct subject s;

	if (sk->type != SOCK_RAW)
		return 1;
	if (!guard_init(&s, CORRAL_TAMPER_RAW_SOCKET, CORRAL_BACKEND_CGROUP, false))
		return 1;
	a[0] = sk->family;
	a[1] = sk->type;
	a[2] = sk->protocol;
	return guard_act(&s, CORRAL_TAMPER_RAW_SOCKET, true, false, false, fmt, a, sizeof(a)) ? 0 : 1;
}

/*
 * Port 53: connect by name trusts answers from the agent's resolver's address and port (dns.bpf.h);
 * an agent that can send from port 53 (its own server, bound beside the real one, in a network
 * namespace of its own, or on the resolver's address with IP_TRANSPARENT) could answer itself.
 * cgroup/bind runs on every backend, for every network namespace.
 */
static __always_inline int guard_bind(struct bpf_sock_addr *ctx)
{
	static const char fmt[] = "bind(family=%d, port=%d)";
	__u64 a[2];
	struct subject s;

	if (ctx->user_port != bpf_htons(53))
		return 1;
	if (!guard_init(&s, CORRAL_TAMPER_DNS_SERVER, CORRAL_BACKEND_CGROUP, false))
		return 1;
	a[0] = ctx->user_family;
	a[1] = 53;
	return guard_act(&s, CORRAL_TAMPER_DNS_SERVER, true, false, false, fmt, a, sizeof(a)) ? 0 : 1;
}

SEC("cgroup/bind4")
int corral_cg_guard_bind4(struct bpf_sock_addr *ctx)
{
	return guard_bind(ctx);
}

SEC("cgroup/bind6")
int corral_cg_guard_bind6(struct bpf_sock_addr *ctx)
{
	return guard_bind(ctx);
}

/*
 * Syscall tracepoints cannot fail a call: an agent in ENFORCE is killed, and the call it made
 * completes first (a map write through bpf() lands, and corrald's verification puts it back).
 */
static __always_inline int guard_tp(__u8 kind, const char *fmt, __u64 *a, __u32 len)
{
	struct subject s;

	if (!guard_init(&s, kind, CORRAL_BACKEND_TRACEPOINT, true))
		return 0;
	guard_act(&s, kind, true, true, true, fmt, a, len);
	return 0;
}

#define GUARD_TP(name, kind, text)                                              \
	SEC("tracepoint/syscalls/sys_enter_" #name)                              \
	int corral_tp_guard_##name(struct trace_event_raw_sys_enter *ctx)        \
	{                                                                        \
		static const char fmt[] = text;                                  \
		__u64 a[] = { ctx->args[0], ctx->args[1] };                      \
									       \
		return guard_tp(kind, fmt, a, sizeof(a));                        \
	}

GUARD_TP(bpf, CORRAL_TAMPER_BPF, "bpf(cmd=%lu) [%lx]")
GUARD_TP(mount, CORRAL_TAMPER_MOUNT, "mount(0x%lx, 0x%lx)")
GUARD_TP(umount, CORRAL_TAMPER_MOUNT, "umount(0x%lx, 0x%lx)")
GUARD_TP(move_mount, CORRAL_TAMPER_MOUNT, "move_mount(%ld, 0x%lx)")
GUARD_TP(pivot_root, CORRAL_TAMPER_MOUNT, "pivot_root(0x%lx, 0x%lx)")
GUARD_TP(chroot, CORRAL_TAMPER_CHROOT, "chroot(0x%lx) [%lx]")
GUARD_TP(pidfd_getfd, CORRAL_TAMPER_PTRACE, "pidfd_getfd(%ld, %ld)")
/* the new mount API: detached trees whose paths an agent chooses (see foreign_mount) */
GUARD_TP(fsopen, CORRAL_TAMPER_MOUNT, "fsopen(0x%lx, 0x%lx)")
GUARD_TP(fsmount, CORRAL_TAMPER_MOUNT, "fsmount(%ld, 0x%lx)")
GUARD_TP(fspick, CORRAL_TAMPER_MOUNT, "fspick(%ld, 0x%lx)")
GUARD_TP(mount_setattr, CORRAL_TAMPER_MOUNT, "mount_setattr(%ld, 0x%lx)")

/* setns into a mount namespace: like chroot, it changes what every path names */
SEC("tracepoint/syscalls/sys_enter_setns")
int corral_tp_guard_setns(struct trace_event_raw_sys_enter *ctx)
{
	static const char fmt[] = "setns(%ld, 0x%lx)";
	__u64 a[] = { ctx->args[0], ctx->args[1] };
	int nstype = (int)ctx->args[1]; /* an int: the kernel drops the register's upper half */

	if (nstype && !(nstype & CLONE_NEWNS))
		return 0;
	return guard_tp(CORRAL_TAMPER_CHROOT, fmt, a, sizeof(a));
}

static __always_inline int guard_tp_open_tree(struct trace_event_raw_sys_enter *ctx)
{
	static const char fmt[] = "open_tree(%ld, 0x%lx, OPEN_TREE_CLONE)";
	__u64 a[] = { ctx->args[0], ctx->args[1] };

	if (!(ctx->args[2] & OPEN_TREE_CLONE))
		return 0;
	return guard_tp(CORRAL_TAMPER_MOUNT, fmt, a, sizeof(a));
}

SEC("tracepoint/syscalls/sys_enter_open_tree")
int corral_tp_guard_open_tree(struct trace_event_raw_sys_enter *ctx)
{
	return guard_tp_open_tree(ctx);
}

/* Linux 6.15 and later: a kernel without it leaves this program unattached */
SEC("tracepoint/syscalls/sys_enter_open_tree_attr")
int corral_tp_guard_open_tree_attr(struct trace_event_raw_sys_enter *ctx)
{
	return guard_tp_open_tree(ctx);
}

SEC("tracepoint/syscalls/sys_enter_prctl")
int corral_tp_guard_prctl(struct trace_event_raw_sys_enter *ctx)
{
	static const char fmt[] = "prctl(PR_SET_MM, %lu)";
	__u64 a[] = { ctx->args[1] };

	if ((int)ctx->args[0] != PR_SET_MM) /* an int, as the kernel reads it */
		return 0;
	return guard_tp(CORRAL_TAMPER_PRCTL, fmt, a, sizeof(a));
}

SEC("tracepoint/syscalls/sys_enter_socket")
int corral_tp_guard_socket(struct trace_event_raw_sys_enter *ctx)
{
	static const char fmt[] = "socket(family=%ld, type=%ld, protocol=%ld)";
	__u64 a[] = { ctx->args[0], ctx->args[1], ctx->args[2] };

	/* an int, as the kernel reads it; raw inet sockets: corral_cg_guard_sock denies them */
	if ((int)ctx->args[0] != AF_PACKET)
		return 0;
	return guard_tp(CORRAL_TAMPER_RAW_SOCKET, fmt, a, sizeof(a));
}

static __always_inline int guard_tp_kill(long pid, long sig)
{
	static const char fmt[] = "signal %ld to corrald (pid %ld)";
	struct corral_config *conf = get_config();
	__u64 a[] = { sig, pid };

	/* kill(-1, sig) reaches every process the sender may signal: corrald among them */
	/* pid_t is 32 bits: -1 arrives as 0xffffffff in the register */
	if (!sig || !conf || !conf->guard_tgid || ((int)pid != conf->guard_tgid && (int)pid != -1))
		return 0;
	return guard_tp(CORRAL_TAMPER_SIGNAL, fmt, a, sizeof(a));
}

SEC("tracepoint/syscalls/sys_enter_tkill")
int corral_tp_guard_tkill(struct trace_event_raw_sys_enter *ctx)
{
	return guard_tp_kill(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_clone3")
int corral_tp_guard_clone3(struct trace_event_raw_sys_enter *ctx)
{
	static const char fmt[] = "clone3(CLONE_INTO_CGROUP, flags=0x%llx)";
	__u64 a[1] = {};

	if (bpf_probe_read_user(&a[0], sizeof(a[0]), (void *)ctx->args[0]) ||
	    !(a[0] & CLONE_INTO_CGROUP))
		return 0;
	return guard_tp(CORRAL_TAMPER_CGROUP, fmt, a, sizeof(a));
}

SEC("tracepoint/syscalls/sys_enter_kill")
int corral_tp_guard_kill(struct trace_event_raw_sys_enter *ctx)
{
	return guard_tp_kill(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_tgkill")
int corral_tp_guard_tgkill(struct trace_event_raw_sys_enter *ctx)
{
	return guard_tp_kill(ctx->args[0], ctx->args[2]);
}

#endif /* CORRAL_GUARD_BPF_H */
