// SPDX-License-Identifier: MIT
/*
 * probecost - what the BPF backend costs programs that are not kgreen's.
 * Its programs run at every context switch and system call on the
 * machine; for other processes they stop at one tgid compare. Two
 * processes bounce a byte over two pipes N times (default 2e5, argv[1]):
 * every round trip is 4 system calls and 2 blocking switches. Both
 * processes run pinned to one CPU, so that the switches are direct and
 * the VM's idle wake-ups stay out of the figure. Timed twice before this
 * process loads the BPF programs (kg_run with the bpf backend; they stay
 * attached while it lives) and twice after; the best of each pair.
 * KGREEN_BPF_SYSLAT=1 measures the system call histogram's cost too.
 * Prints pipe_rt_off_ns and pipe_rt_bpf_ns (ns per round trip).
 *
 * For kgreen.ko (tools/vmbench), two more modes:
 *   probecost --plain [N]   only the ping-pong, best of 3: pipe_rt_ns
 *   probecost --hold SECS   a kgreen program (KGREEN_BACKEND's backend)
 *                           whose workers stay registered, idle, for SECS
 */
#define _GNU_SOURCE
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

static long n = 200000;

static double pingpong(void)
{
	int a[2], b[2];
	uint64_t t0;
	cpu_set_t one, all;
	pid_t pid;
	long i;
	char c = 0;

	sched_getaffinity(0, sizeof(all), &all);

	if (pipe(a) || pipe(b))
		exit(1);
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof(one), &one);	/* the child inherits it */
	pid = fork();
	if (pid < 0)
		exit(1);
	if (pid == 0) {
		for (i = 0; i < n; i++)
			if (read(a[0], &c, 1) != 1 || write(b[1], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	t0 = kg_now_ns();
	for (i = 0; i < n; i++)
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
			exit(1);
	t0 = kg_now_ns() - t0;
	waitpid(pid, NULL, 0);
	sched_setaffinity(0, sizeof(all), &all);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	return (double)t0 / n;
}

static void nothing(void *p)
{
	(void)p;
}

static void hold(void *p)
{
	printf("holding\n");
	fflush(stdout);
	kg_sleep((uint64_t)atol(p) * 1000000000ull);
}

int main(int argc, char **argv)
{
	struct kg_config cfg = { .procs = 1, .backend = "bpf" };
	double off = 1e18, on = 1e18, v;
	int round;

	if (argc > 2 && !strcmp(argv[1], "--hold"))
		return kg_run(hold, argv[2], NULL) ? 1 : 0;
	if (argc > 1 && !strcmp(argv[1], "--plain")) {
		if (argc > 2)
			n = atol(argv[2]);
		for (round = 0; round < 3; round++) {
			v = pingpong();
			off = v < off ? v : off;
		}
		printf("pipe_rt_ns %.1f\n", off);
		return 0;
	}
	if (argc > 1)
		n = atol(argv[1]);
	if (n < 1)
		return 2;
	for (round = 0; round < 2; round++) {
		v = pingpong();
		off = v < off ? v : off;
	}
	if (kg_run(nothing, NULL, &cfg)) {
		fprintf(stderr, "probecost: the bpf backend is not available\n");
		return 1;
	}
	for (round = 0; round < 2; round++) {
		v = pingpong();
		on = v < on ? v : on;
	}
	printf("pipe_rt_off_ns %.1f\n", off);
	printf("pipe_rt_bpf_ns %.1f\n", on);
	return 0;
}
