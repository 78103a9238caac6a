// SPDX-License-Identifier: MIT
/*
 * fd_target SECONDS - a program for trace.sh to watch: pairs of coroutines
 * bounce a byte over socketpairs, each waiting in kg_fd_wait between
 * bounces, for SECONDS; and one coroutine waits on a socket nobody writes
 * (a wait that is under way all along); and one coroutine spins for 30 ms
 * at a time without a kgreen call (a hog: the time slice takes its proc,
 * and it comes back preempted at its kg_yield).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <kgreen.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t until;

static void bounce(void *p)
{
	int fd = (int)(intptr_t)p;
	char c = 'x';

	if (fd & 1)
		(void)!write(fd, &c, 1);
	while (kg_now_ns() < until) {
		ssize_t n = read(fd, &c, 1);

		if (n == 1) {
			(void)!write(fd, &c, 1);
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			kg_fd_wait(fd, KG_FD_READ, 100 * 1000000LL);
		else
			break;
	}
}

static void idle(void *p)
{
	kg_fd_wait((int)(intptr_t)p, KG_FD_READ, -1);
}

static void hog(void *p)
{
	(void)p;
	while (kg_now_ns() < until) {
		struct timespec t0, t;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		do
			clock_gettime(CLOCK_MONOTONIC, &t);
		while ((t.tv_sec - t0.tv_sec) * 1000000000L +
			       (t.tv_nsec - t0.tv_nsec) < 30 * 1000000L);
		kg_yield();
	}
}

static void main_co(void *p)
{
	int sv[2], i;

	until = kg_now_ns() + (uint64_t)atoi(p) * 1000000000ull;
	for (i = 0; i < 4; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
			return;
		kg_go(bounce, (void *)(intptr_t)sv[0]);
		kg_go(bounce, (void *)(intptr_t)sv[1]);
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0)
		kg_go(idle, (void *)(intptr_t)sv[0]);
	kg_go(hog, NULL);
	while (kg_now_ns() < until)
		kg_sleep(10 * 1000000);
}

int main(int argc, char **argv)
{
	return kg_run(main_co, argc > 1 ? argv[1] : "5", NULL) ? 1 : 0;
}
