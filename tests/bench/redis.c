// SPDX-License-Identifier: MIT
/*
 * redis: a client library from Debian, unmodified, used from 1,000
 * coroutines. Starts redis-server on 127.0.0.1 (a free port, no
 * persistence); 1,000 coroutines each connect with hiredis and make
 * REDIS_ROUNDS (default 200) INCR round trips with redisCommand, its
 * blocking API: hiredis' connect, write and read reach libkgreen's, which
 * park the coroutine. Go twin: go/redis, the same with a RESP client on
 * net.Conn (Go's runtime parks goroutines on its own poller). Prints
 * thousands of requests/s, round-trip latency p50/p99 (us), the peak
 * number of threads, and the requests that got no answer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <kgreen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define CLIENTS 1000

static int port, rounds;
static uint32_t *lat;		/* CLIENTS x rounds, us */
static _Atomic long answered, running;
static _Atomic long peak_threads;

static void client(void *p)
{
	long id = (long)(intptr_t)p;
	redisContext *c = redisConnect("127.0.0.1", port);
	int i;

	for (i = 0; c && !c->err && i < rounds; i++) {
		uint64_t t0 = kg_now_ns();
		redisReply *r = redisCommand(c, "INCR kgreen:bench");

		if (r && r->type == REDIS_REPLY_INTEGER) {
			lat[id * rounds + i] = (uint32_t)((kg_now_ns() - t0) / 1000);
			atomic_fetch_add(&answered, 1);
		}
		freeReplyObject(r);
	}
	if (c)
		redisFree(c);
	atomic_fetch_sub(&running, 1);
}

static void sampler(void *p)
{
	(void)p;
	while (atomic_load(&running) > 0) {
		long t = proc_status("Threads:");

		if (t > atomic_load(&peak_threads))
			atomic_store(&peak_threads, t);
		kg_sleep(5 * 1000000ull);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void bench_main(void *p)
{
	long i, n;
	uint64_t t0, ns;

	(void)p;
	atomic_store(&running, CLIENTS);
	kg_go(sampler, NULL);
	t0 = kg_now_ns();
	for (i = 0; i < CLIENTS; i++)
		kg_go(client, (void *)(intptr_t)i);
	while (atomic_load(&running) > 0)
		kg_sleep(1000000);
	ns = kg_now_ns() - t0;
	n = atomic_load(&answered);
	qsort(lat, (size_t)CLIENTS * rounds, sizeof(*lat), cmp_u32);
	/* unanswered requests sort first as zeros: skip them */
	lat += (long)CLIENTS * rounds - n;
	printf("redis1000_kreqs %.1f\n", n / (ns / 1e9) / 1000.0);
	printf("redis1000_p50_us %u\n", n ? lat[n / 2] : 0);
	printf("redis1000_p99_us %u\n", n ? lat[n * 99 / 100] : 0);
	printf("redis1000_threads %ld\n", atomic_load(&peak_threads));
	printf("redis1000_unanswered %ld\n", (long)CLIENTS * rounds - n);
}

/* redis-server on a free port; its pid, or -1 */
static pid_t start_server(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	char sport[16];
	int fd = socket(AF_INET, SOCK_STREAM, 0), i;
	pid_t pid;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	close(fd);
	port = ntohs(a.sin_port);
	snprintf(sport, sizeof(sport), "%d", port);
	pid = fork();
	if (pid == 0) {
		freopen("/dev/null", "w", stdout);
		execlp("redis-server", "redis-server", "--port", sport, "--bind",
		       "127.0.0.1", "--save", "", "--appendonly", "no",
		       "--maxclients", "10000", "--protected-mode", "no",
		       (char *)NULL);
		_exit(127);
	}
	for (i = 0; pid > 0 && i < 500; i++) {
		redisContext *c = redisConnect("127.0.0.1", port);
		int up = c && !c->err;

		redisFree(c);
		if (up)
			return pid;
		usleep(10000);
	}
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return -1;
}

int main(void)
{
	const char *s = getenv("REDIS_ROUNDS");
	struct rlimit rl;
	pid_t pid;
	int r;

	rounds = s && atoi(s) > 0 ? atoi(s) : 200;
	lat = calloc((size_t)CLIENTS * rounds, sizeof(*lat));
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	pid = start_server();
	if (pid < 0) {
		fprintf(stderr, "redis: cannot start redis-server "
				"(tools/install-deps build)\n");
		return 1;
	}
	r = kg_run(bench_main, NULL, NULL);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return r ? 1 : 0;
}
