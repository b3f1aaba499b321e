/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * corral.h - the ONE definition of everything the BPF programs share with user space.
 *
 * Read by clang (kernel side, after vmlinux.h) and by cffi's cdef (corral/layout.py).
 * So: plain declarations, enums and integer #defines only; no other preprocessor logic
 * than the include guard, no includes, types spelled __u8/__u16/__u32/__u64/__s32.
 */
#ifndef CORRAL_H
#define CORRAL_H

#define CORRAL_ABI_VERSION 1

/* Path buffer in the kernel, NUL included. 4 (list id) + 252 = 256 = LPM_DATA_SIZE_MAX. */
#define CORRAL_PATH_MAX 252
#define CORRAL_COMM_LEN 16
#define CORRAL_EXE_NAME_LEN 32
#define CORRAL_ADDR_LEN 16

/* kubelet's default max-pods is 110; 1024 agents leaves room for dense nodes. Ids start at 1. */
#define CORRAL_MAX_AGENTS 1024
/* cgroup ids registered (containers + pods); ~8 per agent. */
#define CORRAL_MAX_CGROUPS 8192
/* Ancestor walk bound: kubepods.slice/<qos>/<pod>/<container> is depth 4-5; systemd nests deeper. */
#define CORRAL_MAX_CGROUP_DEPTH 16

#define CORRAL_NDIMS 3

enum corral_dim {
	CORRAL_DIM_EXEC = 0,
	CORRAL_DIM_OPEN = 1,
	CORRAL_DIM_CONNECT = 2,
};

enum corral_mode {
	CORRAL_MODE_OFF = 0,
	CORRAL_MODE_OBSERVE = 1,
	CORRAL_MODE_ALERT = 2,
	CORRAL_MODE_ENFORCE = 3,
};

enum corral_verdict {
	CORRAL_VERDICT_ALLOWED = 0,    /* OBSERVE: not in the baseline, allowed, reported */
	CORRAL_VERDICT_WOULD_DENY = 1, /* ALERT (or ENFORCE where the backend cannot deny) */
	CORRAL_VERDICT_DENIED = 2,     /* ENFORCE: -EPERM */
	CORRAL_VERDICT_KILLED = 3,     /* ENFORCE on the fallback exec backend: SIGKILL */
};

enum corral_backend {
	CORRAL_BACKEND_LSM = 1,
	CORRAL_BACKEND_CGROUP = 2,     /* cgroup/connect*, cgroup/sendmsg* */
	CORRAL_BACKEND_TRACEPOINT = 3, /* tracepoints: exec (kill) and open (observe only) */
	CORRAL_BACKEND_FMOD_RET = 4,   /* fmod_ret on security_*: BPF LSM's decisions without it */
};

enum corral_event_flag {
	CORRAL_EF_TOOLONG = 1,     /* path longer than CORRAL_PATH_MAX: fails closed */
	CORRAL_EF_UNRESOLVED = 2,  /* the kernel could not produce the path: fails closed */
	CORRAL_EF_INHERITED = 4,   /* agent found through an ancestor cgroup */
	CORRAL_EF_RELATIVE = 8,    /* path as the process gave it, not resolved (tracepoint backend) */
	CORRAL_EF_NOENFORCE = 16,  /* ENFORCE asked, this backend can only report */
	CORRAL_EF_V4MAPPED = 32,   /* IPv6 ::ffff:a.b.c.d, checked as IPv4 */
	CORRAL_EF_NOCALLER = 64,   /* exec: the caller is unknown; judged by the any-caller entries */
};

/*
 * The tamper guard: what a confined agent could do to switch corral off or step outside its
 * cgroup's view. Its events carry dim CORRAL_EVENT_TAMPER (not a dimension: no mode, list or
 * baseline of its own) and the kind in corral_event.tamper. The guard acts in the agent's
 * highest mode (ENFORCE in any dimension: denied), reports in OBSERVE and ALERT, and never
 * learns; a kind the operator accepted for an agent (corral_agent_cfg.tamper_allow) passes.
 */
#define CORRAL_EVENT_TAMPER 3
/* A DNS answer to an agent's socket (struct corral_dns_event): not a dimension either */
#define CORRAL_EVENT_DNS 4

enum corral_tamper {
	CORRAL_TAMPER_NONE = 0,
	CORRAL_TAMPER_BPF = 1,        /* bpf(2), any command: agents do not load BPF */
	CORRAL_TAMPER_MOUNT = 2,      /* mount, move_mount, umount, pivot_root */
	CORRAL_TAMPER_CHROOT = 3,
	CORRAL_TAMPER_PTRACE = 4,     /* attach-class access (ptrace, pidfd_getfd, process_vm_*) outside the agent */
	CORRAL_TAMPER_RAW_SOCKET = 5, /* SOCK_RAW, AF_PACKET: packets no connect hook sees */
	CORRAL_TAMPER_CGROUP = 6,     /* opening a cgroupfs file for writing (cgroup.procs: leaving the cgroup) */
	CORRAL_TAMPER_BPFFS = 7,      /* unlink or rename on a bpf filesystem (corral's pins) */
	CORRAL_TAMPER_SIGNAL = 8,     /* a signal to corrald */
	CORRAL_TAMPER_PRCTL = 9,      /* prctl(PR_SET_MM): replacing the executable exec lineage reads */
	CORRAL_TAMPER_DNS_SERVER = 10, /* binding port 53: answering its own queries as its resolver,
				       * which connect by name trusts */
};

#define CORRAL_TAMPER_KINDS 11

enum corral_cgroup_flag {
	CORRAL_CG_INHERIT = 1,     /* descendants of this cgroup get its agent */
};

/* map cgroup_agents: cgroup id (the cgroup directory's inode) -> agent */
struct corral_cgroup_val {
	__u32 agent;
	__u32 flags;
};

/* map agent_cfg: ARRAY indexed by agent id. Changing a mode is one write of this value. */
struct corral_agent_cfg {
	__u8 mode[CORRAL_NDIMS];
	__u8 active;
	/* allow-list ids per dimension; unique per (agent, dimension). Swapping a list is one write. */
	__u32 list[CORRAL_NDIMS];
	/* events per second per CPU reaching user space; 0 = unlimited */
	__u32 rate_limit;
	/* tamper kinds the operator accepted for this agent: bit 1 << enum corral_tamper */
	__u32 tamper_allow;
};

/* map settings: ARRAY of one */
struct corral_config {
	__u64 suppress_ns;  /* same (agent, dimension, object) reported at most once per window */
	__u64 generation;   /* bumped on every cgroup_agents change: invalidates resolve_cache */
	__u32 guard_tgid;   /* corrald's tgid: a signal to it from an agent is tamper */
	__u32 reserved;
};

/* map resolve_cache: LRU cgroup id -> resolution (agent 0 = not an agent) */
struct corral_resolved {
	__u64 generation;
	__u32 agent;
	__u32 flags;
};

/*
 * maps exec_allow, open_allow: LPM trie. Exact entry: the path and its NUL, prefixlen covering both.
 * Directory entry: "dir/" without NUL, prefixlen covering it. Also the key of the seen_path LRU.
 */
struct corral_path_key {
	__u32 prefixlen;
	__u32 list;
	__u8 path[CORRAL_PATH_MAX];
};

/*
 * map net_allow: LPM trie. Data: list, family, zero, port (network order, 0 = any port),
 * address (IPv4 in the first 4 bytes). Prefix entries stop inside addr. Also the seen_net key.
 */
struct corral_net_key {
	__u32 prefixlen;
	__u32 list;
	__u8 family;
	__u8 zero;
	__u16 port;
	__u8 addr[CORRAL_ADDR_LEN];
};

struct corral_allow_val {
	__u32 flags;
};

/*
 * Exec lineage. An exec entry allows a program for one caller (the executable that calls execve,
 * or for a script's interpreter the script) or for any caller. Entries for any caller live in the
 * agent's exec list; those of one caller in a list of their own, list | index << CALLER_SHIFT,
 * which map exec_callers names: HASH, key = path key (list = the agent's exec list, path = the
 * caller, full prefixlen, zero-padded) -> value below.
 */
#define CORRAL_CALLER_SHIFT 20
#define CORRAL_CALLERS_MAX 4095

struct corral_caller_val {
	__u32 list;
};


/*
 * maps exec_pattern, open_pattern: LPM trie keyed like the path tries by (list, literal prefix of
 * a pattern: its bytes before the first wildcard). The value holds every pattern of the list whose
 * literal prefix is a prefix of the key's, so one longest-prefix lookup finds all that can match.
 * '?' is one byte, '*' any run of bytes; neither matches '/'.
 */
#define CORRAL_PATTERN_SET_MAX 8

struct corral_pattern {
	__u16 start;   /* bytes of literal prefix: the lookup matched them, the matcher starts here */
	__u16 len;     /* bytes of glob, no NUL */
	__u8 glob[CORRAL_PATH_MAX];
};

struct corral_pattern_set {
	__u32 count;
	__u32 reserved;
	struct corral_pattern pattern[CORRAL_PATTERN_SET_MAX];
};

/*
 * maps seen_path, seen_net: LRU of what was reported lately, per object, list and executable
 * (a repeat by another executable is reported on its own). pending counts the repeats
 * suppressed since the last report: the next report carries them (and zeroes it), and corrald
 * adds what is still pending when it shows counts.
 */
struct corral_seen_path_key {
	struct corral_path_key key;
	__u64 exe;      /* the executable's inode and device (corral_event.exe); 0: not known */
};

struct corral_seen_net_key {
	struct corral_net_key key;
	__u64 exe;
};

struct corral_seen_val {
	__u64 stamp;    /* time of the last report; its verdict in the low two bits */
	__u64 pending;  /* repeats suppressed since */
};

/* map counters: PERCPU_ARRAY indexed by agent * CORRAL_NDIMS + dim */
struct corral_counters {
	__u64 allowed;     /* in the baseline */
	__u64 novel;       /* OBSERVE: not in the baseline, allowed */
	__u64 would_deny;  /* ALERT */
	__u64 denied;      /* ENFORCE: denied or killed */
	__u64 suppressed;  /* report skipped: seen within the window */
	__u64 dropped;     /* report lost: rate limit or ring buffer full */
};

/* map tamper_counters: PERCPU_ARRAY of struct corral_counters indexed by agent (would_deny, denied,
 * suppressed, dropped) */

/* map rate: PERCPU_ARRAY indexed by agent */
struct corral_rate {
	__u64 window_start;
	__u64 count;
};

/* ring buffer record */
struct corral_event {
	__u64 ts_ns;        /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;
	__u32 agent;
	__u32 pid;          /* tgid */
	__u32 tid;
	__u32 ppid;         /* 0 where the hook cannot see the task (cgroup programs) */
	__u32 uid;
	__s32 err;          /* kernel error while resolving the object, 0 if none */
	__u8 dim;
	__u8 verdict;
	__u8 mode;
	__u8 flags;
	__u8 backend;
	__u8 proto;         /* IPPROTO_* for connect */
	__u16 family;       /* AF_INET / AF_INET6 for connect */
	__u16 port;         /* host order */
	__u16 tamper;       /* enum corral_tamper (dim CORRAL_EVENT_TAMPER); 0 otherwise */
	__u8 addr[CORRAL_ADDR_LEN];
	__u64 exe;          /* the task's executable: inode ^ device << 32; 0 in cgroup programs */
	__u32 repeats;      /* the same (object, list, exe, verdict) suppressed since its last report */
	__u32 list;         /* the allow-list it was looked up in (exec: the caller's, if any) */
	char comm[CORRAL_COMM_LEN];
	char exe_name[CORRAL_EXE_NAME_LEN]; /* the executable's file name ("" in cgroup programs) */
	char path[CORRAL_PATH_MAX];
};

/* ring buffer record of an exec the LSM and fmod_ret backends judged: the event, then the caller */
struct corral_exec_event {
	struct corral_event event;
	char caller[CORRAL_PATH_MAX];
};

/*
 * map probe_state (probe.bpf.c): ARRAY of one. The probe proves a hook by its effect: the hook
 * counts, and denies where it can, the operations of one process (tgid) and nothing else.
 */
struct corral_probe {
	__u32 tgid;                 /* the probe's child; 0 = the hooks do nothing */
	__u32 deny;                 /* 1: deny (-EPERM, or SIGKILL on the exec tracepoint) */
	__u64 hits[CORRAL_NDIMS];   /* operations of tgid seen, per dimension */
};

/*
 * DNS-aware egress (issue 17, bpf/dns.bpf.c). The agent's own DNS answers, read on its
 * sockets' receive path before it can read them, put the addresses of a name its baseline
 * allows into dns_addrs. Names are held reversed ("moc.ianepo.ipa") so that an LPM prefix is
 * a parent domain: an exact name ends in its NUL, "*.s3.amazonaws.com" is the prefix
 * "moc.swanozama.3s." and matches names of exactly `labels` labels.
 */
#define CORRAL_DNS_NAME_MAX 252   /* 4 (list) + 252 = 256 = LPM_DATA_SIZE_MAX; longer: not allowed */
#define CORRAL_DNS_PORTS 4
/* a classic DNS message over UDP; longer (EDNS) answers are read as far as this */
#define CORRAL_DNS_MSG_MAX 512

/* map dns_names: LPM trie */
struct corral_dns_key {
	__u32 prefixlen;
	__u32 list;
	__u8 name[CORRAL_DNS_NAME_MAX];
};

struct corral_dns_name_val {
	__u16 port[CORRAL_DNS_PORTS]; /* network order; 0 = any port; unused slots repeat port[0] */
	__u8 labels;                  /* a wildcard entry: the labels a name must have; 0: exact */
	__u8 pad[7];
};

/* map dns_addrs: LRU hash, what the answers allowed */
struct corral_dns_addr_key {
	__u32 list;
	__u8 family;
	__u8 pad[3];
	__u8 addr[CORRAL_ADDR_LEN];
};

struct corral_dns_addr_val {
	__u64 expires_ns;             /* bpf_ktime_get_boot_ns: the record's TTL plus the grace */
	__u16 port[CORRAL_DNS_PORTS];
};

enum corral_dns_stat {
	CORRAL_DNS_ANSWERS = 0,       /* answers to an agent's socket */
	CORRAL_DNS_ALLOWED = 1,       /* ... for a name its baseline allows, from its resolver */
	CORRAL_DNS_ADDRESSES = 2,     /* addresses put into dns_addrs */
	CORRAL_DNS_UNPARSED = 3,      /* answers not read: compressed question, too long, cut */
	CORRAL_DNS_FOREIGN = 4,       /* an allowed name's answer from an address the agent may not
				       * reach on port 53: not its resolver, never taken */
	CORRAL_DNS_REPORTED = 5,      /* answers sent to user space (struct corral_dns_event) */
	CORRAL_DNS_DROPPED = 6,       /* ... lost: rate limit or ring buffer full */
	CORRAL_DNS_STATS = 7,
};

/*
 * ring buffer record of a DNS answer to an agent's socket, for learning by name and for naming
 * connects: event.dim CORRAL_EVENT_DNS, cgroup_id/agent/mode (the connect dimension's) filled,
 * family/addr/port the answer's source (its resolver), no task fields (the receive path runs in
 * no task of the agent's); then the message as received (user space parses it).
 */
enum corral_dns_event_flag {
	CORRAL_DNS_EF_TAKEN = 1,      /* the kernel put its addresses into dns_addrs */
	CORRAL_DNS_EF_FOREIGN = 2,    /* not from an address the agent may reach on port 53 */
	CORRAL_DNS_EF_CUT = 4,        /* longer than CORRAL_DNS_MSG_MAX: msg holds its start */
};

struct corral_dns_event {
	struct corral_event event;
	__u16 len;                    /* bytes of msg */
	__u16 flags;                  /* enum corral_dns_event_flag */
	__u32 reserved;
	__u8 msg[CORRAL_DNS_MSG_MAX];
};

/* map dns_settings: ARRAY of one */
struct corral_dns_settings {
	__u64 grace_ns;               /* added to every TTL (apps reuse addresses past it) */
};

#endif /* CORRAL_H */
