/* SPDX-License-Identifier: Apache-2.0 */
/*
 * corral-bench-loop: the syscall loops the benchmarks time, in C so the interpreter's own
 * overhead does not dilute the ratio. Built at bench time with the system cc (bench/build.py).
 *
 *   loop [-c CGROUP] open N PATH        N x open(PATH, O_RDONLY) + close
 *   loop [-c CGROUP] exec N PATH        N x posix_spawn(PATH) + waitpid (PATH: a static binary)
 *   loop [-c CGROUP] connect N PORT     N x socket + connect(127.0.0.1:PORT) + accept + close
 *                                       (the listener is this process; RST close, no TIME_WAIT)
 *   loop [-c CGROUP] write N PATH       N x pwrite(fd, "x", 1, 0) on PATH opened once
 *   loop [-c CGROUP] flipwatch PORT S   connect(127.0.0.1:PORT) in a loop for up to S seconds;
 *                                       prints each change of outcome (refused <-> EPERM)
 *   loop [-c CGROUP] gen-open RATE S DIR   novel opens DIR/<n> at RATE per second for S seconds
 *
 * -c CGROUP: join that cgroup v2 directory first (the measured process must be the agent's).
 * Output: one JSON object per line on stdout. Times are CLOCK_MONOTONIC nanoseconds, the clock
 * Python's time.monotonic_ns() reads, so the harness can compare them with its own; the timed
 * loops also report CPU time (getrusage, self + reaped children) per iteration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of this process and its reaped children (user + system): what the hooks cost the
 * caller, without the time spent waiting for a CPU that other work on the machine had. */
static uint64_t cpu_ns(void)
{
	struct rusage self, kids;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	return ((uint64_t)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
			   kids.ru_stime.tv_sec)) * 1000000000ull +
	       ((uint64_t)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
			   kids.ru_stime.tv_usec)) * 1000ull;
}

static void die(const char *what)
{
	fprintf(stdout, "{\"error\": \"%s: %s\"}\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static void join_cgroup(const char *dir)
{
	char path[4096], pid[32];
	int fd, n;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		die("open cgroup.procs");
	n = snprintf(pid, sizeof(pid), "%d", getpid());
	if (write(fd, pid, n) != n)
		die("join cgroup");
	close(fd);
}

static int open_once(const char *path)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* One byte written in place: every read and write on the node pays file_permission. */
static int write_once(int fd)
{
	return pwrite(fd, "x", 1, 0) == 1 ? 0 : -1;
}

static int exec_once(const char *path)
{
	char *argv[] = {(char *)path, NULL};
	pid_t pid;
	int status;

	if (posix_spawn(&pid, path, NULL, NULL, argv, environ) != 0)
		return -1;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int listener(int port)
{
	struct sockaddr_in a = loopback(port);
	int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (l < 0)
		die("socket");
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind listener");
	if (listen(l, 128) < 0)
		die("listen");
	return l;
}

static int connect_once(int l, const struct sockaddr_in *a)
{
	struct linger lg = {1, 0};
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c, rc = 0;

	if (s < 0)
		return -1;
	if (connect(s, (const struct sockaddr *)a, sizeof(*a)) < 0) {
		close(s);
		return -1;
	}
	c = accept(l, NULL, NULL);
	if (c < 0)
		rc = -1;
	setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(s);
	if (c >= 0)
		close(c);
	return rc;
}

/* Runs N/10 warm-up iterations, then N timed ones. */
static int timed(const char *op, long n, const char *arg)
{
	struct sockaddr_in a;
	int l = -1, port = 0;
	long i, warm = n / 10 + 1, failed = 0;
	uint64_t t0 = 0, t1, c0 = 0, c1;

	if (!strcmp(op, "connect")) {
		port = atoi(arg);
		l = listener(port);
		a = loopback(port);
	} else if (!strcmp(op, "write")) {
		l = open(arg, O_WRONLY | O_CLOEXEC);
		if (l < 0) {
			fprintf(stderr, "loop write: %s: %s\n", arg, strerror(errno));
			return 2;
		}
	}
	for (i = 0; i < warm + n; i++) {
		int rc;

		if (i == warm) {
			c0 = cpu_ns();
			t0 = now_ns();
		}
		if (!strcmp(op, "open"))
			rc = open_once(arg);
		else if (!strcmp(op, "exec"))
			rc = exec_once(arg);
		else if (!strcmp(op, "write"))
			rc = write_once(l);
		else
			rc = connect_once(l, &a);
		if (rc) {
			failed++;
			if (failed == 1)
				fprintf(stderr, "loop %s: iteration %ld failed: %s\n", op, i, strerror(errno));
		}
	}
	t1 = now_ns();
	c1 = cpu_ns();
	printf("{\"op\": \"%s\", \"iterations\": %ld, \"ns_total\": %llu, \"ns_per_op\": %.3f, "
	       "\"cpu_ns_per_op\": %.3f, \"failed\": %ld}\n",
	       op, n, (unsigned long long)(t1 - t0), (double)(t1 - t0) / (double)n,
	       (double)(c1 - c0) / (double)n, failed);
	return failed ? 2 : 0;
}

/* Prints every change of the connect outcome: {"t_ns", "outcome"} (refused | eperm | other). */
static int flipwatch(int port, double seconds)
{
	struct sockaddr_in a = loopback(port);
	uint64_t end = now_ns() + (uint64_t)(seconds * 1e9), attempts = 0;
	const char *last = "";

	while (now_ns() < end) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		const char *outcome;
		int rc, err;

		if (s < 0)
			die("socket");
		rc = connect(s, (struct sockaddr *)&a, sizeof(a));
		err = errno;
		close(s);
		attempts++;
		outcome = rc == 0 ? "connected" : err == ECONNREFUSED ? "refused"
			: err == EPERM ? "eperm" : "other";
		if (strcmp(outcome, last)) {
			printf("{\"t_ns\": %llu, \"outcome\": \"%s\", \"attempt\": %llu}\n",
			       (unsigned long long)now_ns(), outcome, (unsigned long long)attempts);
			fflush(stdout);
			last = outcome;
		}
	}
	printf("{\"done\": true, \"attempts\": %llu}\n", (unsigned long long)attempts);
	return 0;
}

/* Novel opens at a fixed rate: every 1 ms, the opens due so far. Paths never repeat. */
static int gen_open(double rate, double seconds, const char *dir)
{
	char path[512];
	uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), done = 0, t;
	struct timespec tick = {0, 1000000};

	while ((t = now_ns()) < end) {
		uint64_t due = (uint64_t)((double)(t - start) * rate / 1e9);

		while (done < due) {
			snprintf(path, sizeof(path), "%s/%llu", dir, (unsigned long long)done);
			open_once(path); /* fails (no such file): the tracepoint still reports it */
			done++;
		}
		nanosleep(&tick, NULL);
	}
	t = now_ns();
	printf("{\"op\": \"gen-open\", \"events\": %llu, \"seconds\": %.6f, \"rate\": %.1f}\n",
	       (unsigned long long)done, (double)(t - start) / 1e9,
	       (double)done * 1e9 / (double)(t - start));
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 2 && !strcmp(argv[1], "-c")) {
		join_cgroup(argv[2]);
		i = 3;
	}
	if (argc - i == 3 && (!strcmp(argv[i], "open") || !strcmp(argv[i], "exec") ||
			      !strcmp(argv[i], "connect") || !strcmp(argv[i], "write")))
		return timed(argv[i], atol(argv[i + 1]), argv[i + 2]);
	if (argc - i == 3 && !strcmp(argv[i], "flipwatch"))
		return flipwatch(atoi(argv[i + 1]), atof(argv[i + 2]));
	if (argc - i == 4 && !strcmp(argv[i], "gen-open"))
		return gen_open(atof(argv[i + 1]), atof(argv[i + 2]), argv[i + 3]);
	fprintf(stderr, "usage: %s [-c CGROUP] open|exec|connect|write N ARG | flipwatch PORT SECONDS | "
			"gen-open RATE SECONDS DIR\n", argv[0]);
	return 64;
}
