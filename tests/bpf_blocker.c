// SPDX-License-Identifier: MIT
/*
 * bpf_blocker - helper for bpftool.sh: a kgreen program on the bpf backend
 * (1 proc) whose coroutine A blocks in read() on a pipe while B waits
 * behind it, ROUNDS times, so that the kernel side counts blocks and
 * handoffs. Prints "ready" once done, then stays alive (its maps with it)
 * until stdin reaches end of file. Exit 4: the bpf backend cannot load.
 */
#define _GNU_SOURCE
#include <kgreen.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ROUNDS 20

static int fds[2];
static kg_wg_t wg = KG_WG_INIT;

static void co_a(void *p)
{
	char c;

	(void)p;
	if (syscall(SYS_read, fds[0], &c, 1) != 1)
		_exit(1);
	kg_wg_done(&wg);
}

static void co_b(void *p)
{
	(void)p;
	if (write(fds[1], "x", 1) != 1)
		_exit(1);
	kg_wg_done(&wg);
}

static void run(void *p)
{
	int i;

	(void)p;
	for (i = 0; i < ROUNDS; i++) {
		kg_wg_add(&wg, 2);
		kg_go(co_b, NULL);
		kg_go(co_a, NULL);
		kg_wg_wait(&wg);
	}
	printf("ready\n");
	fflush(stdout);
	while (getchar() != EOF)
		;
}

int main(void)
{
	struct kg_config cfg = { .procs = 1, .backend = "bpf" };
	int err;

	if (pipe(fds))
		return 1;
	err = kg_run(run, NULL, &cfg);
	return err == -ENODEV ? 4 : err ? 1 : 0;
}
