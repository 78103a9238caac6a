// SPDX-License-Identifier: MIT
/*
 * spawn - spawn N coroutines (default 1e6) that all stay alive, parked on
 * a WaitGroup gate; then release them; then do it again, reusing memory.
 * Prints, per coroutine: spawn_ns (round 1: first touch of memory),
 * rss_bytes (resident memory per parked coroutine), release_ns, and
 * spawn2_ns, release2_ns (round 2). For round 1's spawn (from the first
 * kg_go until all have started) also, per coroutine: spawn_minflt (minor
 * page faults, getrusage) and spawn_dtlb (dTLB load misses in user space,
 * perf_event_open on every thread; -1 without hardware counters, as in
 * most VMs): what the first touch of the stacks costs the MMU.
 * Twin: go/spawn.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static long n = 1000000;
static kg_wg_t gate, started, ended;

static void parked(void *arg)
{
	(void)arg;
	kg_wg_done(&started);
	kg_wg_wait(&gate);
	kg_wg_done(&ended);
}

static void round_trip(int round)
{
	uint64_t t0, t1, t2;
	long r0, r1, f0, f1, i;
	long long d0 = -1, d1 = -1;
	struct dtlb d = { .n = 0 };

	kg_wg_add(&gate, 1);
	kg_wg_add(&started, n);
	kg_wg_add(&ended, n);
	if (round == 1 && !dtlb_open(&d))
		d0 = dtlb_read(&d);
	r0 = rss_kb();
	f0 = minflt();
	t0 = kg_now_ns();
	for (i = 0; i < n; i++) {
		if (kg_go(parked, NULL) < 0) {
			fprintf(stderr, "spawn: kg_go failed at %ld\n", i);
			exit(1);
		}
	}
	kg_wg_wait(&started);
	t1 = kg_now_ns();
	f1 = minflt();
	d1 = dtlb_read(&d);
	dtlb_close(&d);
	r1 = rss_kb();
	kg_wg_done(&gate);
	kg_wg_wait(&ended);
	t2 = kg_now_ns();
	if (round == 1) {
		printf("spawn_ns %.1f\n", (double)(t1 - t0) / (double)n);
		printf("rss_bytes %.0f\n", (double)(r1 - r0) * 1024.0 / (double)n);
		printf("release_ns %.1f\n", (double)(t2 - t1) / (double)n);
		print_per_n("spawn_minflt", f0, f1, n);
		print_per_n("spawn_dtlb", d0, d1, n);
	} else {
		printf("spawn2_ns %.1f\n", (double)(t1 - t0) / (double)n);
		printf("release2_ns %.1f\n", (double)(t2 - t1) / (double)n);
	}
}

static void main_co(void *arg)
{
	(void)arg;
	round_trip(1);
	round_trip(2);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		n = atol(argv[1]);
	return kg_run(main_co, NULL, NULL) ? 1 : 0;
}
