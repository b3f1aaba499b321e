/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The smallest static binary the exec benchmark can spawn: no libc, no dynamic loader, no
 * syscall but exit. Built at bench time with `cc -static -nostdlib -O2`. What the exec
 * measurement then times is the kernel's execve + exit + the parent's spawn/wait, so the
 * hooks' share of it is as large as it can be (the worst case for the overhead ratio).
 */
void _start(void)
{
#if defined(__x86_64__)
	__asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall");
#elif defined(__aarch64__)
	__asm__ volatile("mov x8, #93\n\tmov x0, #0\n\tsvc #0");
#else
#error "exit0.c: add the exit syscall for this architecture"
#endif
	for (;;)
		;
}
