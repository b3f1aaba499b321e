/* SPDX-License-Identifier: GPL-2.0-only */
/* BPF side only (after vmlinux.h and bpf_helpers.h): shared by corral.bpf.c and probe.bpf.c. */
#ifndef CORRAL_LSM_RET_H
#define CORRAL_LSM_RET_H

/*
 * LSM programs must return a value the verifier can prove is in [-4095, 0] (6.7+). Neither a
 * previous program's verdict nor clang's branch-free -(bool) for a shared decision is one, so
 * every return passes a barrier and an explicit range check. The check is on the 64-bit value
 * that is returned: checked on a sign-extended copy, the bounds do not reach the register
 * returned.
 */
static __always_inline int lsm_ret(long ret)
{
	barrier_var(ret);
	if (ret < -4095 || ret > 0)
		return -EPERM;
	return ret;
}

#endif /* CORRAL_LSM_RET_H */
