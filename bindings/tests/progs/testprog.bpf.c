// SPDX-License-Identifier: GPL-2.0
/* Test program for the bpfkit test-suite. Needs no vmlinux.h. */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct event {
	__u32 tgid;
	__u32 pad;
	__u64 syscall_id;
};

/* 40 bytes (48 with the ring's header): does not divide the ring, so records straddle its end. */
struct wide_event {
	__u32 tgid;
	__u32 pad;
	__u64 syscall_id;
	__u64 seq;
	__u64 check;  /* seq * 0x9E3779B97F4A7C15 */
	__u64 check2; /* ~seq */
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

/* Generic hash map for CRUD tests: u32 -> u64. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} kv SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
} prefixes SEC(".maps");

/* Single-slot config: the tgid whose syscalls are traced (0 = nobody). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target_tgid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* A syscall number whose records are reserved and then discarded (0: none). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} discard_nr SEC(".maps");

/* A syscall number whose records are struct wide_event (0: none). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} wide_nr SEC(".maps");

/* Ports (host byte order) that connect4 denies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u8);
} blocked_ports SEC(".maps");

SEC("raw_tp/sys_enter")
int trace_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *target = bpf_map_lookup_elem(&target_tgid, &zero);
	__u64 *count, *discard, *wide;
	struct wide_event *w;
	struct event *e;
	__u64 seq = 0;

	if (!target || *target == 0 || *target != tgid)
		return 0;
	count = bpf_map_lookup_elem(&counts, &zero);
	if (count) {
		*count += 1;
		seq = *count;
	}
	wide = bpf_map_lookup_elem(&wide_nr, &zero);
	if (wide && *wide && *wide == (__u64)ctx->args[1]) {
		w = bpf_ringbuf_reserve(&events, sizeof(*w), 0);
		if (!w)
			return 0;
		w->tgid = tgid;
		w->pad = 0;
		w->syscall_id = ctx->args[1];
		w->seq = seq;
		w->check = seq * 0x9E3779B97F4A7C15ULL;
		w->check2 = ~seq;
		bpf_ringbuf_submit(w, 0);
		return 0;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->tgid = tgid;
	e->pad = 0;
	e->syscall_id = ctx->args[1];
	discard = bpf_map_lookup_elem(&discard_nr, &zero);
	if (discard && *discard && *discard == e->syscall_id) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Loadable but never attached by the tests: used for the autoload toggle. */
SEC("raw_tp/sys_exit")
int trace_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

SEC("cgroup/connect4")
int deny_connect4(struct bpf_sock_addr *ctx)
{
	__u32 port = bpf_ntohs((__u16)ctx->user_port);

	if (bpf_map_lookup_elem(&blocked_ports, &port))
		return 0;
	return 1;
}
