// SPDX-License-Identifier: GPL-2.0
/* A program the verifier must reject: reads past the end of its context. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("raw_tp/sys_enter")
int read_out_of_bounds(struct bpf_raw_tracepoint_args *ctx)
{
	volatile __u64 *p = (volatile __u64 *)ctx;

	return (int)p[64];
}
