// SPDX-License-Identifier: MIT
/*
 * pingpong - latency of an unbuffered channel: two coroutines bounce a
 * value over two unbuffered channels (ping: a -> b, pong: b -> a), N round
 * trips (default 2e6, argv[1]), on 1 proc and then on 2 procs (the runtime
 * is started twice).
 * Prints "pingpong1_ns" and "pingpong2_ns": ns per half round trip, i.e.
 * per send + its matching receive, each a rendezvous that parks one side
 * and wakes it. Twin: go/pingpong (GOMAXPROCS 1, then 2).
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

static long n = 2000000;
static kg_chan_t *ping, *pong;
static kg_wg_t wg = KG_WG_INIT;
static double ns_per_half;

/* b: return every ball it gets, until ping is closed */
static void ponger(void *arg)
{
	long v;

	(void)arg;
	while (kg_chan_recv(ping, &v) == 0)
		kg_chan_send(pong, &v);
	kg_wg_done(&wg);
}

/* a, the first coroutine: serve n balls, time them */
static void pinger(void *arg)
{
	uint64_t t0, t1;
	long i, v;

	(void)arg;
	kg_wg_add(&wg, 1);
	if (kg_go(ponger, NULL) < 0) {
		fprintf(stderr, "pingpong: kg_go failed\n");
		exit(1);
	}
	t0 = kg_now_ns();
	for (i = 0; i < n; i++) {
		kg_chan_send(ping, &i);
		kg_chan_recv(pong, &v);
		if (v != i) {
			fprintf(stderr, "pingpong: got %ld back for %ld\n", v, i);
			exit(1);
		}
	}
	t1 = kg_now_ns();
	kg_chan_close(ping);
	kg_wg_wait(&wg);
	ns_per_half = (double)(t1 - t0) / (2.0 * (double)n);
}

static void run(unsigned int procs)
{
	struct kg_config cfg = { .procs = procs };

	ping = kg_chan_make(sizeof(long), 0);
	pong = kg_chan_make(sizeof(long), 0);
	if (!ping || !pong || kg_run(pinger, NULL, &cfg)) {
		fprintf(stderr, "pingpong: setup failed\n");
		exit(1);
	}
	kg_chan_free(ping);
	kg_chan_free(pong);
	printf("pingpong%u_ns %.1f\n", procs, ns_per_half);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		n = atol(argv[1]);
	run(1);
	run(2);
	return 0;
}
