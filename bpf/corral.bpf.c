// SPDX-License-Identifier: GPL-2.0-only
/*
 * corral kernel side: per-agent exec / open / connect decisions.
 *
 * Backends in this one object (user space picks with autoload):
 *   LSM        lsm/bprm_check_security, lsm/file_open, lsm/socket_connect  -> -EPERM
 *   fmod_ret   fmod_ret/security_bprm_check, security_file_open, security_socket_connect
 *              -> -EPERM where BPF LSM is not active (same decisions as LSM, other attachment)
 *   cgroup     cgroup/connect4/6 (+ sendmsg4/6 for unconnected UDP)         -> EPERM
 *   (any)      cgroup_skb/ingress: the agents' DNS answers, for connect by name (dns.bpf.h)
 *   tracepoint tp_btf/sched_process_exec (SIGKILL); open (report only): the syscall tracepoints
 *              syscalls/sys_enter_open{,at,at2}, else tp_btf/sys_enter
 * and the tamper guard (guard.bpf.h), on every backend as far as its hooks reach.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "corral.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define SIGKILL 9
#define AF_INET 2
#define AF_INET6 10
#define NSEC_PER_SEC 1000000000ULL

#include "lsm_ret.h"

#define PATH_KEY_BITS ((4 + CORRAL_PATH_MAX) * 8)
#define NET_KEY_BITS ((4 + 4 + CORRAL_ADDR_LEN) * 8)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CORRAL_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct corral_cgroup_val);
} cgroup_agents SEC(".maps");

/* Covers every cgroup that runs hooked syscalls, agents or not: sized for a busy node. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct corral_resolved);
} resolve_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CORRAL_MAX_AGENTS);
	__type(key, __u32);
	__type(value, struct corral_agent_cfg);
} agent_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct corral_config);
} settings SEC(".maps");

/* Default sizes; user space resizes before load from its configuration. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_allow_val);
} exec_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_allow_val);
} open_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_net_key);
	__type(value, struct corral_allow_val);
} net_allow SEC(".maps");

/*
 * Exact paths, one hash lookup whatever the list's size: an LPM trie walk compares the key from
 * its first byte at every node, so ~240-byte paths sharing a long prefix cost ~1 us in a
 * 10,000-entry trie and ~70 ns here. Key: the lookup key judge_path builds (prefixlen
 * PATH_KEY_BITS, list, path zero-padded to CORRAL_PATH_MAX). The tries above then hold only
 * directory prefixes ("dir/"). Sized like their tries by user space.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_allow_val);
} exec_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_allow_val);
} open_exact SEC(".maps");

/*
 * Learned patterns, keyed by their literal prefix (corral.h). Few per agent (a pattern replaces
 * every temp name or log of one shape): 4096 / 8192 entries hold ~4 / 8 per agent on a full node
 * (values ~2 KiB, allocated per entry); user space resizes them with the lists.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_pattern_set);
} exec_pattern SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_pattern_set);
} open_pattern SEC(".maps");

/* Exec lineage (corral.h): callers per agent are few (the agent, npx, sh, node, a script). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_path_key);
	__type(value, struct corral_caller_val);
} exec_callers SEC(".maps");

/*
 * The program each round of one execve judged, keyed by its struct linux_binprm: the next round
 * (a script's interpreter) is judged with it as the caller. Entries live for one execve.
 */
struct exec_round {
	__u8 path[CORRAL_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096); /* execs of agents in flight, node-wide */
	__type(key, __u64);
	__type(value, struct exec_round);
} exec_rounds SEC(".maps");

/*
 * The path of an executable per struct file, so that a caller's bpf_d_path is paid once per
 * executable, not per exec. Checked against the file's inode: a freed file's address may be
 * reused for another.
 */
struct exe_path {
	__u64 inode;
	__u8 path[CORRAL_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096); /* executables of agents that run programs, node-wide */
	__type(key, __u64);
	__type(value, struct exe_path);
} exe_paths SEC(".maps");

/* "Recently reported": bounds a flood of distinct novel objects to the rate limit below. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct corral_seen_path_key);
	__type(value, struct corral_seen_val);
} seen_path SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct corral_seen_net_key);
	__type(value, struct corral_seen_val);
} seen_net SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORRAL_MAX_AGENTS * CORRAL_NDIMS);
	__type(key, __u32);
	__type(value, struct corral_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORRAL_MAX_AGENTS);
	__type(key, __u32);
	__type(value, struct corral_rate);
} rate SEC(".maps");

/* Resized at load time (kernel.ring_buffer_mib); 4 MiB = ~12k events of 336 bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* fmod_ret exec: a program's path resolved at its open_exec, read back at the exec check. */
struct exec_path {
	__s32 err;
	__u8 flags;
	__u8 path[CORRAL_PATH_MAX];
	__u8 caller[CORRAL_PATH_MAX]; /* the executable that opened it; "" if unknown */
};

/* Per-CPU scratch: the path key is 260 bytes, too big to build next to other locals on the stack. */
struct scratch {
	struct corral_path_key pkey;
	struct corral_path_key ckey; /* exec: the caller, keyed like pkey */
	struct corral_net_key nkey;
	struct corral_seen_path_key spkey;
	struct corral_seen_net_key snkey;
	__u8 tmp[CORRAL_PATH_MAX];
	struct exec_path xpath;
	struct exe_path xexe;
	/* unused: keeps the ring records in the object's BTF (a ring buffer cannot name them) */
	struct corral_event event_btf;
	struct corral_exec_event exec_event_btf;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/* What a hook found out about the current task before judging an object. */
struct subject {
	__u64 cgid;
	struct corral_agent_cfg *cfg;
	__u32 agent;
	__u32 ppid;
	__u8 dim;
	__u8 mode;
	__u8 flags;
	__u8 backend;
	__s32 err;
};

static __always_inline struct corral_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&settings, &zero);
}

/* Deepest registered ancestor with CORRAL_CG_INHERIT; level 0 is the root. */
static __always_inline __u32 walk_ancestors(__u32 *flags)
{
	__u32 agent = 0;

	for (int level = 0; level < CORRAL_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		struct corral_cgroup_val *v;

		if (!id)
			break;
		v = bpf_map_lookup_elem(&cgroup_agents, &id);
		if (v && (v->flags & CORRAL_CG_INHERIT))
			agent = v->agent;
	}
	if (agent)
		*flags |= CORRAL_EF_INHERITED;
	return agent;
}

/* cgroup id -> agent id (0: not an agent). One LRU lookup on the common path. */
static __always_inline __u32 resolve_agent(__u64 cgid, __u8 *eflags)
{
	struct corral_config *conf = get_config();
	struct corral_cgroup_val *direct;
	struct corral_resolved *hit, res = {};

	if (!conf)
		return 0;
	hit = bpf_map_lookup_elem(&resolve_cache, &cgid);
	if (hit && hit->generation == conf->generation) {
		*eflags |= hit->flags;
		return hit->agent;
	}
	res.generation = conf->generation;
	direct = bpf_map_lookup_elem(&cgroup_agents, &cgid);
	if (direct)
		res.agent = direct->agent;
	else
		res.agent = walk_ancestors(&res.flags);
	bpf_map_update_elem(&resolve_cache, &cgid, &res, BPF_ANY);
	*eflags |= res.flags;
	return res.agent;
}

/* Fills s for the current task; false when it is not an agent or the dimension is OFF. */
static __always_inline bool subject_init(struct subject *s, __u8 dim, __u8 backend)
{
	__u32 agent;

	s->flags = 0;
	s->err = 0;
	s->ppid = 0;
	s->dim = dim;
	s->backend = backend;
	s->cgid = bpf_get_current_cgroup_id();
	agent = resolve_agent(s->cgid, &s->flags);
	if (!agent || agent >= CORRAL_MAX_AGENTS)
		return false;
	s->cfg = bpf_map_lookup_elem(&agent_cfg, &agent);
	if (!s->cfg || !s->cfg->active)
		return false;
	s->agent = agent;
	s->mode = s->cfg->mode[dim];
	return s->mode != CORRAL_MODE_OFF;
}

/* The verifier loses the bounds of s->dim once it is spilled: check it where it indexes. */
static __always_inline __u32 list_of(struct subject *s)
{
	__u32 d = s->dim;

	if (d >= CORRAL_NDIMS)
		return 0;
	return s->cfg->list[d];
}

static __always_inline struct corral_counters *counters_of(struct subject *s)
{
	__u32 idx = s->agent * CORRAL_NDIMS + s->dim;

	return bpf_map_lookup_elem(&counters, &idx);
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch_map, &zero);
}

/*
 * true when the report may go out: not seen with this verdict within the window, under the rate
 * limit; *seen is then the entry whose pending repeats the report takes (NULL: a new one). The
 * stamp keeps the verdict in its low two bits, so a mode flip (would-deny -> denied) is reported
 * again at once. A suppressed repeat counts in the entry's pending.
 */
static __always_inline bool may_report(struct subject *s, struct corral_counters *c, void *seen_map,
				       void *seen_key, __u64 now, __u8 verdict,
				       struct corral_seen_val **seen)
{
	struct corral_config *conf = get_config();
	__u64 stamp = (now & ~3ULL) | (verdict & 3);
	struct corral_seen_val fresh = { .stamp = stamp }, *last;
	struct corral_rate *r;

	*seen = NULL;
	if (!conf)
		return false;
	last = bpf_map_lookup_elem(seen_map, seen_key);
	if (last && (last->stamp & 3) == (verdict & 3) && now - last->stamp < conf->suppress_ns) {
		if (c)
			c->suppressed++;
		__sync_fetch_and_add(&last->pending, 1);
		return false;
	}
	if (last)
		last->stamp = stamp;
	else
		bpf_map_update_elem(seen_map, seen_key, &fresh, BPF_ANY);
	if (s->cfg->rate_limit) {
		r = bpf_map_lookup_elem(&rate, &s->agent);
		if (r && now - r->window_start >= NSEC_PER_SEC) {
			r->window_start = now;
			r->count = 0;
		}
		if (r && r->count >= s->cfg->rate_limit) {
			if (c)
				c->dropped++;
			return false;
		}
		if (r)
			r->count++;
	}
	*seen = last;
	return true;
}

/* The executable of the current task, as an id: inode ^ device << 32 (0 if it has none). */
static __always_inline __u64 current_exe_id(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *inode = BPF_CORE_READ(task, mm, exe_file, f_inode);

	if (!inode)
		return 0;
	return BPF_CORE_READ(inode, i_ino) ^ ((__u64)BPF_CORE_READ(inode, i_sb, s_dev) << 32);
}

/* The repeats a report carries: taken from its seen entry, which starts counting again. */
static __always_inline __u32 take_repeats(struct corral_seen_val *seen)
{
	__u64 n;

	if (!seen)
		return 0;
	n = __sync_lock_test_and_set(&seen->pending, 0);
	return n > 0xffffffff ? 0xffffffff : (__u32)n;
}

/* Only for events: the allowed path never pays for the two reads. */
static __always_inline void fill_ppid(struct subject *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	s->ppid = BPF_CORE_READ(task, real_parent, tgid);
}

/*
 * has_task is a constant at every call site: false in cgroup sock_addr programs, which may not
 * read the task (the call is compiled out there; ppid stays 0).
 */
static __always_inline void event_fill(struct subject *s, struct corral_event *e, __u8 verdict,
				       __u64 now, bool has_task)
{
	__u64 pid_tgid;

	if (has_task)
		fill_ppid(s);
	pid_tgid = bpf_get_current_pid_tgid();
	e->ts_ns = now;
	e->cgroup_id = s->cgid;
	e->agent = s->agent;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->ppid = s->ppid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->err = s->err;
	e->dim = s->dim;
	e->verdict = verdict;
	e->mode = s->mode;
	e->flags = s->flags;
	e->backend = s->backend;
	e->proto = 0;
	e->family = 0;
	e->port = 0;
	e->tamper = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	e->exe = 0;
	e->repeats = 0;
	e->list = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->exe_name[0] = 0;
	if (has_task) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		const unsigned char *name = BPF_CORE_READ(task, mm, exe_file, f_path.dentry, d_name.name);

		if (name)
			bpf_probe_read_kernel_str(e->exe_name, sizeof(e->exe_name), name);
	}
}

static __always_inline struct corral_event *event_start(struct subject *s, struct corral_counters *c,
							  __u8 verdict, __u64 now, bool has_task)
{
	struct corral_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		if (c)
			c->dropped++;
		return NULL;
	}
	event_fill(s, e, verdict, now, has_task);
	return e;
}

/* Counts and picks the verdict for an object not found in the allow-list. */
static __always_inline __u8 novel_verdict(struct subject *s, struct corral_counters *c, bool can_deny,
					  bool kill)
{
	if (s->mode == CORRAL_MODE_OBSERVE) {
		if (c)
			c->novel++;
		return CORRAL_VERDICT_ALLOWED;
	}
	if (s->mode == CORRAL_MODE_ENFORCE && can_deny) {
		if (c)
			c->denied++;
		return kill ? CORRAL_VERDICT_KILLED : CORRAL_VERDICT_DENIED;
	}
	if (s->mode == CORRAL_MODE_ENFORCE)
		s->flags |= CORRAL_EF_NOENFORCE;
	if (c)
		c->would_deny++;
	return CORRAL_VERDICT_WOULD_DENY;
}

static __always_inline bool blocks(__u8 verdict)
{
	return verdict == CORRAL_VERDICT_DENIED || verdict == CORRAL_VERDICT_KILLED;
}

/* ---- paths (exec, open) ------------------------------------------------------------------- */

static __always_inline void *path_map(__u8 dim)
{
	return dim == CORRAL_DIM_EXEC ? (void *)&exec_allow : (void *)&open_allow;
}

static __always_inline void *exact_map(__u8 dim)
{
	return dim == CORRAL_DIM_EXEC ? (void *)&exec_exact : (void *)&open_exact;
}

static __always_inline void *pattern_map(__u8 dim)
{
	return dim == CORRAL_DIM_EXEC ? (void *)&exec_pattern : (void *)&open_pattern;
}

/* One glob against one path, a step per bpf_loop iteration: '*' backtracks to its last start. */
struct glob_state {
	const __u8 *glob;
	const __u8 *path;
	__u32 gi;
	__u32 pi;
	__u32 len;
	__u32 star_gi;  /* GLOB_NO_STAR: no '*' seen */
	__u32 star_pi;
	int result;     /* 0: running, 1: match, -1: no match */
};

#define GLOB_NO_STAR 0xffffffff
/* A learned glob has a few wildcards; this bounds a hostile path's backtracking (no match). */
#define GLOB_STEPS 1024

static long glob_step(__u64 index, void *ctx)
{
	struct glob_state *st = ctx;
	__u32 gi = st->gi, pi = st->pi, sp;
	__u8 c, g = 0;

	/* the verifier needs both indexes bounded here, where they index 252-byte buffers */
	if (pi >= CORRAL_PATH_MAX || gi > st->len || st->len > CORRAL_PATH_MAX)
		goto fail;
	c = st->path[pi];
	if (gi < st->len && gi < CORRAL_PATH_MAX)
		g = st->glob[gi];
	if (!c) {
		if (gi < st->len && g == '*') {
			st->gi = gi + 1;
			return 0;
		}
		st->result = gi == st->len ? 1 : -1;
		return 1;
	}
	if (gi < st->len) {
		if (g == '*') {
			st->star_gi = gi;
			st->star_pi = pi;
			st->gi = gi + 1;
			return 0;
		}
		if (g == c || (g == '?' && c != '/')) {
			st->gi = gi + 1;
			st->pi = pi + 1;
			return 0;
		}
	}
	if (st->star_gi == GLOB_NO_STAR)
		goto fail;
	/* the last '*' takes one more byte, never a '/': no earlier '*' could do better */
	sp = st->star_pi;
	if (sp >= CORRAL_PATH_MAX || st->path[sp] == '/' || !st->path[sp])
		goto fail;
	st->star_pi = sp + 1;
	st->pi = sp + 1;
	st->gi = st->star_gi + 1;
	return 0;
fail:
	st->result = -1;
	return 1;
}

static __always_inline bool pattern_allowed(__u8 dim, struct corral_path_key *k)
{
	struct corral_pattern_set *set = bpf_map_lookup_elem(pattern_map(dim), k);
	struct glob_state st;

	if (!set)
		return false;
	for (__u32 i = 0; i < CORRAL_PATTERN_SET_MAX; i++) {
		if (i >= set->count)
			break;
		st.glob = set->pattern[i].glob;
		st.path = k->path;
		st.len = set->pattern[i].len;
		st.gi = set->pattern[i].start;
		st.pi = st.gi;
		st.star_gi = GLOB_NO_STAR;
		st.star_pi = 0;
		st.result = 0;
		bpf_loop(GLOB_STEPS, glob_step, &st, 0);
		if (st.result == 1)
			return true;
	}
	return false;
}

/* Exact entry first (hash), then the directory prefixes (LPM trie), then the patterns. */
static __always_inline bool path_allowed(__u8 dim, struct corral_path_key *k)
{
	return bpf_map_lookup_elem(exact_map(dim), k) || bpf_map_lookup_elem(path_map(dim), k) ||
	       pattern_allowed(dim, k);
}

/*
 * Exec with a known caller: the caller's own list first, then the entries for any caller. Leaves
 * pkey.list at the list that allowed it, or the caller's list (the key repeats are suppressed by:
 * a program denied for two callers is reported for each).
 */
static __always_inline bool exec_allowed(struct subject *s, struct scratch *sc)
{
	struct corral_caller_val *cv;
	__u32 base = sc->pkey.list;

	if (s->flags & CORRAL_EF_NOCALLER)
		return path_allowed(CORRAL_DIM_EXEC, &sc->pkey);
	sc->ckey.prefixlen = PATH_KEY_BITS;
	sc->ckey.list = base;
	cv = bpf_map_lookup_elem(&exec_callers, &sc->ckey);
	if (cv) {
		sc->pkey.list = cv->list;
		if (path_allowed(CORRAL_DIM_EXEC, &sc->pkey))
			return true;
	}
	sc->pkey.list = base;
	if (path_allowed(CORRAL_DIM_EXEC, &sc->pkey))
		return true;
	if (cv)
		sc->pkey.list = cv->list;
	return false;
}

/*
 * Judges sc->pkey.path (already filled, or s->flags has TOOLONG/UNRESOLVED). Returns the verdict;
 * paths the kernel could not produce are never looked up: they fail closed in ENFORCE. lineage (a
 * constant at each call site): an exec with its caller in sc->ckey.path, reported with it.
 */
static __always_inline __u8 judge_path(struct subject *s, struct scratch *sc, bool can_deny, bool kill,
				       bool lineage)
{
	struct corral_counters *c = counters_of(s);
	struct corral_seen_val *seen;
	struct corral_event *e;
	__u8 verdict;
	__u64 now;
	bool ok;

	sc->pkey.prefixlen = PATH_KEY_BITS;
	sc->pkey.list = list_of(s);
	ok = !(s->flags & (CORRAL_EF_TOOLONG | CORRAL_EF_UNRESOLVED));
	if (ok)
		ok = lineage ? exec_allowed(s, sc) : path_allowed(s->dim, &sc->pkey);
	if (ok) {
		if (c)
			c->allowed++;
		return CORRAL_VERDICT_ALLOWED;
	}
	verdict = novel_verdict(s, c, can_deny, kill);
	now = bpf_ktime_get_boot_ns(); /* only what is reported needs the time */
	__builtin_memcpy(&sc->spkey.key, &sc->pkey, sizeof(sc->pkey));
	sc->spkey.exe = current_exe_id();
	if (!may_report(s, c, &seen_path, &sc->spkey, now, verdict, &seen))
		return verdict;
	if (lineage) {
		struct corral_exec_event *x = bpf_ringbuf_reserve(&events, sizeof(*x), 0);

		if (!x) {
			if (c)
				c->dropped++;
			return verdict;
		}
		event_fill(s, &x->event, verdict, now, true);
		x->event.exe = sc->spkey.exe;
		x->event.list = sc->pkey.list;
		x->event.repeats = take_repeats(seen);
		bpf_probe_read_kernel(x->event.path, sizeof(x->event.path), sc->pkey.path);
		bpf_probe_read_kernel(x->caller, sizeof(x->caller), sc->ckey.path);
		bpf_ringbuf_submit(x, 0);
		return verdict;
	}
	e = event_start(s, c, verdict, now, true);
	if (!e)
		return verdict;
	e->exe = sc->spkey.exe;
	e->list = sc->pkey.list;
	e->repeats = take_repeats(seen);
	bpf_probe_read_kernel(e->path, sizeof(e->path), sc->pkey.path);
	bpf_ringbuf_submit(e, 0);
	return verdict;
}

/*
 * "/proc/1234/status" becomes "/proc/STAR/status" with a literal '*' (the first component after
 * /proc only): a process's own /proc entries are one baseline entry, not one per pid. Kernel and
 * baseline both use the normalised form; the allow-list stays exact-or-prefix.
 */
static __always_inline void normalize_proc(struct scratch *sc)
{
	__u8 *p = sc->pkey.path;
	int end = 7;

	if (p[0] != '/' || p[1] != 'p' || p[2] != 'r' || p[3] != 'o' || p[4] != 'c' || p[5] != '/' ||
	    p[6] < '0' || p[6] > '9')
		return;
	for (int i = 7; i < 17; i++) {
		if (p[i] < '0' || p[i] > '9')
			break;
		end = i + 1;
	}
	if (p[end & 31] != '/' && p[end & 31] != 0)
		return;
	/* constant sizes only: copy the tail out and back instead of shifting in place */
	__builtin_memset(sc->tmp, 0, sizeof(sc->tmp));
	if (bpf_probe_read_kernel_str(sc->tmp, CORRAL_PATH_MAX - 7, p + end) < 0)
		return;
	p[6] = '*';
	bpf_probe_read_kernel(p + 7, CORRAL_PATH_MAX - 7, sc->tmp);
}

/*
 * bpf_d_path into the scratch key, zero-padded: the key is hashed whole (exact lists, seen_path).
 * d_path builds the string at the end of its buffer and moves it to the front, leaving a stale
 * copy in the tail, so it writes into tmp and only the string up to its NUL is copied over.
 */
static __always_inline void resolve_d_path(struct subject *s, struct scratch *sc, struct path *p)
{
	long n;

	__builtin_memset(sc->pkey.path, 0, sizeof(sc->pkey.path));
	n = bpf_d_path(p, (char *)sc->tmp, sizeof(sc->tmp));
	if (n < 0) {
		s->err = n;
		s->flags |= n == -36 /* ENAMETOOLONG */ ? CORRAL_EF_TOOLONG : CORRAL_EF_UNRESOLVED;
		return;
	}
	bpf_probe_read_kernel_str(sc->pkey.path, sizeof(sc->pkey.path), sc->tmp);
	normalize_proc(sc);
}

#define FMODE_EXEC_OPEN 040 /* __FMODE_EXEC in f_flags: the file was opened by open_exec() */

/* The current task's executable into sc->ckey.path, zero-padded; false (all zero) if unknown. */
static __always_inline bool current_exe_path(struct scratch *sc)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mm_struct *mm = task->mm;
	struct exe_path *known;
	struct file *exe;
	__u64 key;

	exe = mm ? mm->exe_file : NULL;
	if (exe) {
		key = (__u64)exe;
		known = bpf_map_lookup_elem(&exe_paths, &key);
		if (known && known->inode == (__u64)exe->f_inode) {
			__builtin_memcpy(sc->ckey.path, known->path, sizeof(sc->ckey.path));
			return true;
		}
	}
	__builtin_memset(sc->ckey.path, 0, sizeof(sc->ckey.path));
	if (!exe || bpf_d_path((struct path *)&exe->f_path, (char *)sc->tmp, sizeof(sc->tmp)) < 0)
		return false;
	bpf_probe_read_kernel_str(sc->ckey.path, sizeof(sc->ckey.path), sc->tmp);
	sc->xexe.inode = (__u64)exe->f_inode;
	__builtin_memcpy(sc->xexe.path, sc->ckey.path, sizeof(sc->xexe.path));
	bpf_map_update_elem(&exe_paths, &key, &sc->xexe, BPF_ANY);
	return true;
}

/*
 * fmod_ret exec: bpf_d_path is not allowed at security_bprm_check (the kernel's d_path allow-list
 * has security_file_open, not it). execve opens the program with __FMODE_EXEC first (open_exec,
 * also for a script's interpreter), so that open resolves the path, kept per struct file, and the
 * check reads it back: the same bpf_d_path of the same struct path as on the LSM backend.
 * Entries live from open_exec to the check (the ELF interpreter's are never read: LRU evicts).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096); /* execs of agents between open_exec and the check, node-wide */
	__type(key, __u64);
	__type(value, struct exec_path);
} exec_paths SEC(".maps");

static __always_inline void stash_exec_path(struct subject *s, struct file *file)
{
	struct scratch *sc = get_scratch();
	__u64 key = (__u64)file;

	if (!sc)
		return;
	resolve_d_path(s, sc, (struct path *)&file->f_path);
	sc->xpath.err = s->err;
	sc->xpath.flags = s->flags & (CORRAL_EF_TOOLONG | CORRAL_EF_UNRESOLVED);
	__builtin_memcpy(sc->xpath.path, sc->pkey.path, sizeof(sc->xpath.path));
	current_exe_path(sc); /* still the caller's: the exec has not replaced it yet */
	__builtin_memcpy(sc->xpath.caller, sc->ckey.path, sizeof(sc->xpath.caller));
	bpf_map_update_elem(&exec_paths, &key, &sc->xpath, BPF_ANY);
}

/* The path stashed at open_exec for this file; none (evicted) fails closed as unresolved. */
static __always_inline void take_exec_path(struct subject *s, struct scratch *sc, struct file *file)
{
	__u64 key = (__u64)file;
	struct exec_path *x = bpf_map_lookup_elem(&exec_paths, &key);

	if (!x) {
		__builtin_memset(sc->pkey.path, 0, sizeof(sc->pkey.path));
		__builtin_memset(sc->ckey.path, 0, sizeof(sc->ckey.path));
		s->flags |= CORRAL_EF_UNRESOLVED | CORRAL_EF_NOCALLER;
		s->err = -2; /* ENOENT */
		return;
	}
	__builtin_memcpy(sc->pkey.path, x->path, sizeof(sc->pkey.path));
	__builtin_memcpy(sc->ckey.path, x->caller, sizeof(sc->ckey.path));
	if (!sc->ckey.path[0])
		s->flags |= CORRAL_EF_NOCALLER;
	s->flags |= x->flags;
	s->err = x->err;
	bpf_map_delete_elem(&exec_paths, &key);
}

/*
 * A script's interpreter is a second round of the same execve (binfmt_script changes
 * bprm->interp, which starts out as bprm->filename): its caller is the program the round before
 * judged, the script, not the process that called execve.
 */
static __always_inline void exec_round(struct subject *s, struct scratch *sc, struct linux_binprm *bprm)
{
	__u64 key = (__u64)bprm;
	struct exec_round *r;

	if (BPF_CORE_READ(bprm, interp) != BPF_CORE_READ(bprm, filename)) {
		r = bpf_map_lookup_elem(&exec_rounds, &key);
		if (r) {
			__builtin_memcpy(sc->ckey.path, r->path, sizeof(sc->ckey.path));
			s->flags &= ~CORRAL_EF_NOCALLER;
		} else {
			__builtin_memset(sc->ckey.path, 0, sizeof(sc->ckey.path));
			s->flags |= CORRAL_EF_NOCALLER;
		}
	}
	/*
	 * Kept for the next round: the path of a script (bprm->buf holds the file's first bytes).
	 * Anything else (an ELF, binfmt_misc's, a script whose path is unknown) leaves no entry,
	 * so a next round never reads one an earlier execve left at this bprm's address.
	 */
	if (bprm->buf[0] == '#' && bprm->buf[1] == '!' &&
	    !(s->flags & (CORRAL_EF_TOOLONG | CORRAL_EF_UNRESOLVED)))
		bpf_map_update_elem(&exec_rounds, &key, sc->pkey.path, BPF_ANY);
	else
		bpf_map_delete_elem(&exec_rounds, &key);
}

/* The exec decision, shared by the LSM and fmod_ret backends. */
static __always_inline int decide_exec(struct subject *s, struct linux_binprm *bprm, bool stashed)
{
	struct scratch *sc = get_scratch();
	struct file *file = bprm->file;

	if (!sc)
		return s->mode == CORRAL_MODE_ENFORCE ? -EPERM : 0;
	if (stashed) {
		take_exec_path(s, sc, file);
	} else {
		resolve_d_path(s, sc, (struct path *)&file->f_path);
		if (!current_exe_path(sc))
			s->flags |= CORRAL_EF_NOCALLER;
	}
	exec_round(s, sc, bprm);
	return blocks(judge_path(s, sc, true, false, true)) ? -EPERM : 0;
}

#define MNT_INTERNAL 0x4000
#define MNT_NS_INTERNAL (-22L) /* ERR_PTR(-EINVAL) */

/*
 * An open the kernel makes of a file on a private clone of a mount (clone_private_mount):
 * overlayfs's layers. From 6.8 overlayfs opens the backing file of each file opened on it
 * (backing_file_open) and security_file_open judges that open too, by the layer's path (relative
 * to the layer: `/x` for a container's or virtme's `/tmp/x`), so allowed files were denied; its
 * copy-up and readdir open layer files likewise on every kernel. The open the agent asked for
 * (the overlay's file, by the path it named) was judged just before. Such a mount has the mnt_ns
 * MNT_NS_INTERNAL without the MNT_INTERNAL flag: kern_mount's (pipes, memfds, nsfs) have both
 * and stay judged; no process names a path on a private clone.
 */
static __always_inline bool layer_open(struct file *file)
{
	struct vfsmount *vm = BPF_CORE_READ(file, f_path.mnt);
	struct mount *m = (void *)vm - bpf_core_field_offset(struct mount, mnt);

	return (long)BPF_CORE_READ(m, mnt_ns) == MNT_NS_INTERNAL &&
	       !(BPF_CORE_READ(vm, mnt_flags) & MNT_INTERNAL);
}

/* The open decision, shared by the LSM and fmod_ret backends. */
static __always_inline int decide_open(struct subject *s, struct file *file)
{
	struct scratch *sc = get_scratch();

	if (!sc)
		return s->mode == CORRAL_MODE_ENFORCE ? -EPERM : 0;
	resolve_d_path(s, sc, (struct path *)&file->f_path);
	return blocks(judge_path(s, sc, true, false, false)) ? -EPERM : 0;
}

/*
 * Not lsm.s/: sleepable programs may not use LPM tries on 6.1-6.12 ("Sleepable programs can only
 * use array, hash, ringbuf and local storage maps"). bpf_d_path stays allowed because the hooks are
 * on the d_path allow-list whether or not the program sleeps.
 */
SEC("lsm/bprm_check_security")
int BPF_PROG(corral_lsm_exec, struct linux_binprm *bprm, int ret)
{
	struct subject s;

	if (ret)
		return lsm_ret(ret);
	if (!subject_init(&s, CORRAL_DIM_EXEC, CORRAL_BACKEND_LSM))
		return 0;
	return lsm_ret(decide_exec(&s, bprm, false));
}

SEC("lsm/file_open")
int BPF_PROG(corral_lsm_open, struct file *file, int ret)
{
	struct subject s;

	if (ret)
		return lsm_ret(ret);
	/* execve's own open of the program (and a script's interpreter) is judged by the exec hook */
	if (BPF_CORE_READ(file, f_flags) & FMODE_EXEC_OPEN || layer_open(file))
		return 0;
	if (!subject_init(&s, CORRAL_DIM_OPEN, CORRAL_BACKEND_LSM))
		return 0;
	return lsm_ret(decide_open(&s, file));
}

/*
 * fmod_ret: the same decisions on the security_* functions themselves, for kernels where BPF
 * LSM is built but not active (or not built): any kernel with BTF and BPF trampolines. A
 * non-zero return skips the function and is what the caller gets.
 */
SEC("fmod_ret/security_bprm_check")
int BPF_PROG(corral_fmod_exec, struct linux_binprm *bprm, int ret)
{
	struct subject s;

	if (ret)
		return lsm_ret(ret);
	if (!subject_init(&s, CORRAL_DIM_EXEC, CORRAL_BACKEND_FMOD_RET))
		return 0;
	return lsm_ret(decide_exec(&s, bprm, true));
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(corral_fmod_open, struct file *file, int ret)
{
	struct subject s;

	if (ret || layer_open(file))
		return lsm_ret(ret);
	if (BPF_CORE_READ(file, f_flags) & FMODE_EXEC_OPEN) {
		if (subject_init(&s, CORRAL_DIM_EXEC, CORRAL_BACKEND_FMOD_RET))
			stash_exec_path(&s, file);
		return 0;
	}
	if (!subject_init(&s, CORRAL_DIM_OPEN, CORRAL_BACKEND_FMOD_RET))
		return 0;
	return lsm_ret(decide_open(&s, file));
}

/* Reads a user or kernel string into the scratch key; TOOLONG when it does not fit. */
static __always_inline void read_str_path(struct subject *s, struct scratch *sc, const char *src,
					  bool user)
{
	char next = 0;
	long n;

	__builtin_memset(sc->pkey.path, 0, sizeof(sc->pkey.path));
	if (user)
		n = bpf_probe_read_user_str(sc->pkey.path, sizeof(sc->pkey.path), src);
	else
		n = bpf_probe_read_kernel_str(sc->pkey.path, sizeof(sc->pkey.path), src);
	if (n < 0) {
		s->err = n;
		s->flags |= CORRAL_EF_UNRESOLVED;
		return;
	}
	if (n == sizeof(sc->pkey.path)) {
		if (user)
			bpf_probe_read_user(&next, 1, src + sizeof(sc->pkey.path) - 1);
		else
			bpf_probe_read_kernel(&next, 1, src + sizeof(sc->pkey.path) - 1);
		if (next) {
			s->flags |= CORRAL_EF_TOOLONG;
			s->err = -36;
		}
	}
	if (sc->pkey.path[0] != '/')
		s->flags |= CORRAL_EF_RELATIVE;
	normalize_proc(sc);
}

#define WALK_DEPTH 32 /* path components and mount crossings of a relative exec's program */

struct walk {
	struct dentry *d;
	struct vfsmount *vm;
	struct mount *m;
	struct dentry *root_d;
	struct vfsmount *root_m;
	__u32 pos;
	long err; /* 1 while walking, then 0 or -ENAMETOOLONG */
};

/* One step up (bpf_loop: an unrolled or bounded loop here is too complex for the verifier). */
static long walk_step(__u64 i, struct walk *w)
{
	/* locals: a CO-RE read of w->field would relocate struct walk itself */
	struct dentry *d = w->d;
	struct vfsmount *vm = w->vm;
	struct mount *m = w->m, *parent;
	struct scratch *sc = get_scratch();
	__u32 len, pos = w->pos;

	if (!sc || (d == w->root_d && vm == w->root_m)) {
		w->err = sc ? 0 : -12;
		return 1;
	}
	if (d == BPF_CORE_READ(vm, mnt_root)) {
		parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m) {
			w->err = 0;
			return 1;
		}
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = parent;
		w->vm = (void *)parent + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	len = BPF_CORE_READ(d, d_name.len);
	if (len + 1 > pos || pos >= CORRAL_PATH_MAX) {
		w->err = -36;
		return 1;
	}
	pos -= len;
	/* masks for the verifier only: pos + len < CORRAL_PATH_MAX was checked above */
	bpf_probe_read_kernel(&sc->tmp[pos & 0xff], len & 0xff, BPF_CORE_READ(d, d_name.name));
	pos -= 1;
	sc->tmp[pos & 0xff] = '/';
	w->pos = pos;
	w->d = BPF_CORE_READ(d, d_parent);
	return 0;
}

/*
 * The path of file, relative to the task's root as bpf_d_path's is (bpf_d_path is not allowed in
 * tracing programs): built backwards from the end of sc->tmp, then copied into the scratch key.
 * 0, -ENAMETOOLONG, or -ELOOP past WALK_DEPTH steps (both fail closed).
 */
static __always_inline long walk_path(struct scratch *sc, struct file *file)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct walk w = {
		.d = BPF_CORE_READ(file, f_path.dentry),
		.vm = BPF_CORE_READ(file, f_path.mnt),
		.root_d = BPF_CORE_READ(t, fs, root.dentry),
		.root_m = BPF_CORE_READ(t, fs, root.mnt),
		.pos = CORRAL_PATH_MAX - 1,
		.err = -40,
	};
	__u32 pos;

	w.m = (void *)w.vm - bpf_core_field_offset(struct mount, mnt);
	sc->tmp[CORRAL_PATH_MAX - 1] = 0;
	bpf_loop(WALK_DEPTH, walk_step, &w, 0);
	if (w.err)
		return w.err;
	pos = w.pos;
	if (pos == CORRAL_PATH_MAX - 1) {
		pos -= 1;
		sc->tmp[pos] = '/';
	}
	__builtin_memset(sc->pkey.path, 0, sizeof(sc->pkey.path));
	bpf_probe_read_kernel_str(sc->pkey.path, sizeof(sc->pkey.path), &sc->tmp[pos & 0xff]);
	return 0;
}

/*
 * Fallback exec: runs after the new image is loaded and before it returns to user space, so a
 * SIGKILL sent here means no instruction of the new program runs. Killed, not EPERM. A relative
 * name ("./tool") is the program's path from the task's root, so it names one file, as on LSM.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(corral_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct subject s;
	struct scratch *sc;

	if (!subject_init(&s, CORRAL_DIM_EXEC, CORRAL_BACKEND_TRACEPOINT))
		return 0;
	sc = get_scratch();
	if (!sc) {
		if (s.mode == CORRAL_MODE_ENFORCE)
			bpf_send_signal(SIGKILL);
		return 0;
	}
	read_str_path(&s, sc, BPF_CORE_READ(bprm, filename), false);
	if (s.flags & CORRAL_EF_RELATIVE) {
		long err = walk_path(sc, BPF_CORE_READ(bprm, file));

		s.flags &= ~CORRAL_EF_RELATIVE;
		if (err) {
			s.err = err;
			s.flags |= err == -36 ? CORRAL_EF_TOOLONG : CORRAL_EF_UNRESOLVED;
		}
	}
	/* the caller's executable is gone by now: the any-caller list holds every program here */
	s.flags |= CORRAL_EF_NOCALLER;
	if (blocks(judge_path(&s, sc, true, true, false)))
		bpf_send_signal(SIGKILL);
	return 0;
}

#if !defined(__TARGET_ARCH_x86) && !defined(__TARGET_ARCH_arm64)
#error "corral: set __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

/* Fallback open: report only, the path as the process passed it. */
static __always_inline void tp_open(const char *name)
{
	struct subject s;
	struct scratch *sc;

	if (!subject_init(&s, CORRAL_DIM_OPEN, CORRAL_BACKEND_TRACEPOINT))
		return;
	sc = get_scratch();
	if (!sc)
		return;
	read_str_path(&s, sc, name, true);
	judge_path(&s, sc, false, false, false);
}

/*
 * One program per open syscall: a syscall tracepoint runs only for its syscall, where
 * tp_btf/sys_enter (below, for kernels without syscall tracepoints) runs for every syscall.
 */
SEC("tracepoint/syscalls/sys_enter_openat")
int corral_tp_openat(struct trace_event_raw_sys_enter *ctx)
{
	tp_open((const char *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int corral_tp_openat2(struct trace_event_raw_sys_enter *ctx)
{
	tp_open((const char *)ctx->args[1]);
	return 0;
}

#if defined(__TARGET_ARCH_x86)
SEC("tracepoint/syscalls/sys_enter_open")
int corral_tp_open(struct trace_event_raw_sys_enter *ctx)
{
	tp_open((const char *)ctx->args[0]);
	return 0;
}

#define NR_OPEN 2
#define NR_OPENAT 257
#define NR_OPENAT2 437
#else
#define NR_OPEN -1
#define NR_OPENAT 56
#define NR_OPENAT2 437
#endif

SEC("tp_btf/sys_enter")
int BPF_PROG(corral_tp_sysenter_open, struct pt_regs *regs, long id)
{
	if (id == NR_OPEN)
		tp_open((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs));
	else if (id == NR_OPENAT || id == NR_OPENAT2)
		tp_open((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs));
	return 0;
}

/* ---- network (connect) -------------------------------------------------------------------- */

/* Looks up the destination with its port, then with port 0 (= any port). */
static __always_inline bool net_allowed(struct corral_net_key *k)
{
	__u16 port = k->port;

	if (bpf_map_lookup_elem(&net_allow, k))
		return true;
	k->port = 0;
	if (bpf_map_lookup_elem(&net_allow, k)) {
		k->port = port;
		return true;
	}
	k->port = port;
	return false;
}

#include "dns.bpf.h"

/* Rewrites ::ffff:a.b.c.d into an IPv4 key. */
static __always_inline void unmap_v4(struct subject *s, struct corral_net_key *k)
{
	__u32 *w = (__u32 *)k->addr;

	if (k->family != AF_INET6 || w[0] || w[1] || w[2] != bpf_htonl(0x0000ffff))
		return;
	w[0] = w[3];
	w[1] = 0;
	w[2] = 0;
	w[3] = 0;
	k->family = AF_INET;
	s->flags |= CORRAL_EF_V4MAPPED;
}

/* Judges sc->nkey (family, port, addr filled). */
static __always_inline __u8 judge_net(struct subject *s, struct scratch *sc, __u8 proto,
					bool has_task)
{
	struct corral_counters *c = counters_of(s);
	struct corral_net_key *k = &sc->nkey;
	struct corral_seen_val *seen;
	struct corral_event *e;
	__u8 verdict;
	__u64 now;

	unmap_v4(s, k);
	k->prefixlen = NET_KEY_BITS;
	k->list = s->cfg->list[CORRAL_DIM_CONNECT];
	k->zero = 0;
	if (net_allowed(k) || dns_allowed(k)) {
		if (c)
			c->allowed++;
		return CORRAL_VERDICT_ALLOWED;
	}
	verdict = novel_verdict(s, c, true, false);
	now = bpf_ktime_get_boot_ns();
	__builtin_memcpy(&sc->snkey.key, k, sizeof(*k));
	sc->snkey.exe = has_task ? current_exe_id() : 0;
	if (!may_report(s, c, &seen_net, &sc->snkey, now, verdict, &seen))
		return verdict;
	e = event_start(s, c, verdict, now, has_task);
	if (!e)
		return verdict;
	e->exe = sc->snkey.exe;
	e->list = k->list;
	e->repeats = take_repeats(seen);
	e->family = k->family;
	e->proto = proto;
	e->port = bpf_ntohs(k->port);
	__builtin_memcpy(e->addr, k->addr, sizeof(e->addr));
	e->path[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return verdict;
}

/* The connect decision, shared by the LSM and fmod_ret backends. */
static __always_inline int decide_connect(struct socket *sock, struct sockaddr *address, int addrlen,
					  __u8 backend)
{
	struct subject s;
	struct scratch *sc;
	__u16 family;
	__u8 proto;

	family = BPF_CORE_READ(address, sa_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (!subject_init(&s, CORRAL_DIM_CONNECT, backend))
		return 0;
	sc = get_scratch();
	if (!sc)
		return s.mode == CORRAL_MODE_ENFORCE ? -EPERM : 0;
	proto = BPF_CORE_READ(sock, sk, sk_protocol);
	__builtin_memset(&sc->nkey, 0, sizeof(sc->nkey));
	sc->nkey.family = family;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)address;

		if (addrlen < (int)sizeof(struct sockaddr_in)) {
			s.flags |= CORRAL_EF_UNRESOLVED;
			s.err = -22;
			return blocks(judge_net(&s, sc, proto, true)) ? -EPERM : 0;
		}
		sc->nkey.port = BPF_CORE_READ(in, sin_port);
		bpf_probe_read_kernel(sc->nkey.addr, 4, &in->sin_addr);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)address;

		if (addrlen < (int)sizeof(struct sockaddr_in6)) {
			s.flags |= CORRAL_EF_UNRESOLVED;
			s.err = -22;
			return blocks(judge_net(&s, sc, proto, true)) ? -EPERM : 0;
		}
		sc->nkey.port = BPF_CORE_READ(in6, sin6_port);
		bpf_probe_read_kernel(sc->nkey.addr, 16, &in6->sin6_addr);
	}
	return blocks(judge_net(&s, sc, proto, true)) ? -EPERM : 0;
}

SEC("lsm/socket_connect")
int BPF_PROG(corral_lsm_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return lsm_ret(ret);
	return lsm_ret(decide_connect(sock, address, addrlen, CORRAL_BACKEND_LSM));
}

SEC("fmod_ret/security_socket_connect")
int BPF_PROG(corral_fmod_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return lsm_ret(ret);
	return lsm_ret(decide_connect(sock, address, addrlen, CORRAL_BACKEND_FMOD_RET));
}

/* cgroup sock_addr: 1 = allow, 0 = EPERM to the caller. No task access here: ppid stays 0. */
static __always_inline int sock_addr4(struct bpf_sock_addr *ctx)
{
	struct subject s;
	struct scratch *sc;

	if (!subject_init(&s, CORRAL_DIM_CONNECT, CORRAL_BACKEND_CGROUP))
		return 1;
	sc = get_scratch();
	if (!sc)
		return s.mode == CORRAL_MODE_ENFORCE ? 0 : 1;
	__builtin_memset(&sc->nkey, 0, sizeof(sc->nkey));
	sc->nkey.family = AF_INET;
	sc->nkey.port = (__u16)ctx->user_port;
	*(__u32 *)sc->nkey.addr = ctx->user_ip4;
	return blocks(judge_net(&s, sc, ctx->protocol, false)) ? 0 : 1;
}

static __always_inline int sock_addr6(struct bpf_sock_addr *ctx)
{
	struct subject s;
	struct scratch *sc;
	__u32 *a;

	if (!subject_init(&s, CORRAL_DIM_CONNECT, CORRAL_BACKEND_CGROUP))
		return 1;
	sc = get_scratch();
	if (!sc)
		return s.mode == CORRAL_MODE_ENFORCE ? 0 : 1;
	__builtin_memset(&sc->nkey, 0, sizeof(sc->nkey));
	sc->nkey.family = AF_INET6;
	sc->nkey.port = (__u16)ctx->user_port;
	/* user_ip6 must be read one aligned 4-byte word at a time (ctx access rules). */
	a = (__u32 *)sc->nkey.addr;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	return blocks(judge_net(&s, sc, ctx->protocol, false)) ? 0 : 1;
}

SEC("cgroup/connect4")
int corral_cg_connect4(struct bpf_sock_addr *ctx)
{
	return sock_addr4(ctx);
}

SEC("cgroup/connect6")
int corral_cg_connect6(struct bpf_sock_addr *ctx)
{
	return sock_addr6(ctx);
}

SEC("cgroup/sendmsg4")
int corral_cg_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_addr4(ctx);
}

SEC("cgroup/sendmsg6")
int corral_cg_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_addr6(ctx);
}

#include "guard.bpf.h"
