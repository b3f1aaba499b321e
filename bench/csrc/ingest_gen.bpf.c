// SPDX-License-Identifier: GPL-2.0
/* Benchmark only: writes novel open events straight into a running corrald's event ring, so
 * that the consumer's capacity is measured without a process paying an open() per event on
 * the same (2-CPU) machine. Run with BPF_PROG_TEST_RUN; the ring is corrald's pinned one
 * (bpf_map__reuse_fd before load). Records are struct corral_event, as corral's hooks write. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "corral.h"

char LICENSE[] SEC("license") = "GPL";

/* replaced by corrald's ring (reuse_fd): same type and size */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct gen {
	__u32 agent;
	__u8 verdict;
	__u8 mode;
	__u32 tag;
	__u64 seq;
	__u32 written;
};

#define PREFIX "/corral-bench-novel/"

static __always_inline char hexdigit(__u64 v)
{
	v &= 0xf;
	return v < 10 ? '0' + v : 'a' + v - 10;
}

static long emit(__u64 i, void *arg)
{
	struct gen *g = arg;
	struct corral_event *e;
	__u64 seq = g->seq + i;
	__u32 p = sizeof(PREFIX) - 1;
	int k;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0; /* full: counted by the caller (written < asked) */
	__builtin_memset(e, 0, offsetof(struct corral_event, path));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = 1;
	e->agent = g->agent;
	e->pid = e->tid = bpf_get_current_pid_tgid() >> 32;
	e->dim = CORRAL_DIM_OPEN;
	e->verdict = g->verdict;
	e->mode = g->mode;
	e->backend = CORRAL_BACKEND_TRACEPOINT;
	__builtin_memcpy(e->comm, "corral-ingest", 14);
	__builtin_memcpy(e->path, PREFIX, sizeof(PREFIX) - 1);
	for (k = 7; k >= 0; k--)
		e->path[p++] = hexdigit(g->tag >> (4 * k));
	e->path[p++] = '/';
	for (k = 15; k >= 0; k--)
		e->path[p++] = hexdigit(seq >> (4 * k));
	e->path[p] = 0;
	bpf_ringbuf_submit(e, 0);
	g->written++;
	return 0;
}

/* args: agent id, verdict, mode, tag, first sequence number, count */
SEC("raw_tp/sys_enter") /* never attached: run with BPF_PROG_TEST_RUN */
int ingest_gen(struct bpf_raw_tracepoint_args *ctx)
{
	struct gen g = {
		.agent = ctx->args[0],
		.verdict = ctx->args[1],
		.mode = ctx->args[2],
		.tag = ctx->args[3],
		.seq = ctx->args[4],
	};

	bpf_loop(ctx->args[5], emit, &g, 0);
	return g.written;
}
