// SPDX-License-Identifier: MIT
/*
 * demo - a first look at kgreen: many coroutines on a few threads.
 *
 * 100,000 coroutines (or argv[1]) each sleep a few milliseconds, then do
 * a bit of work; a WaitGroup tells main when all are done. The output shows
 * how many OS threads carried them and what the scheduler did, and checks
 * the work's result.
 */
#include <kgreen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static long N = 100000;
static kg_wg_t wg = KG_WG_INIT;
static _Atomic unsigned long total;

static void job(void *arg)
{
	unsigned long i = (unsigned long)(uintptr_t)arg, sum = 0, k;

	kg_sleep((i % 20) * 1000000ull);	/* 0..19 ms */
	for (k = 0; k < 1000; k++)
		sum += (i * k) % 7;
	atomic_fetch_add(&total, sum);
	kg_wg_done(&wg);
}

/* The same work done plainly, to check the coroutines' result. */
static unsigned long expected_total(void)
{
	unsigned long i, k, sum = 0;

	for (i = 0; i < (unsigned long)N; i++)
		for (k = 0; k < 1000; k++)
			sum += (i * k) % 7;
	return sum;
}

static void main_co(void *arg)
{
	struct kg_stats st;
	uint64_t t0 = kg_now_ns(), t1;
	unsigned long i;

	(void)arg;
	kg_wg_add(&wg, N);
	for (i = 0; i < (unsigned long)N; i++) {
		if (kg_go(job, (void *)(uintptr_t)i) < 0) {
			fprintf(stderr, "demo: kg_go failed\n");
			exit(1);
		}
	}
	kg_wg_wait(&wg);
	t1 = kg_now_ns();
	kg_stats(&st);
	printf("kgreen demo: %ld coroutines slept 0-19 ms each and computed\n", N);
	printf("  wall time       %.1f ms (the longest sleep is 19 ms)\n",
	       (double)(t1 - t0) / 1e6);
	printf("  procs/workers   %u / %u\n", st.procs, st.workers);
	printf("  switches        %llu\n", (unsigned long long)st.switches);
	printf("  steals          %llu coroutines, %llu timers\n",
	       (unsigned long long)st.steals,
	       (unsigned long long)st.timer_steals);
	printf("  stack memory    %llu MiB virtual for %ld coroutines\n",
	       (unsigned long long)(st.stack_bytes >> 20), N);
	printf("  backend         %s (%llu handoffs of blocked workers' procs)\n",
	       kg_backend_name(), (unsigned long long)st.handoffs);
	printf("  checksum        %lu (%s)\n", (unsigned long)atomic_load(&total),
	       atomic_load(&total) == expected_total() ? "ok" : "WRONG");
}

int main(int argc, char **argv)
{
	int err;

	if (argc > 1)
		N = atol(argv[1]);
	if (N < 1) {
		fprintf(stderr, "usage: %s [coroutines]\n", argv[0]);
		return 2;
	}
	err = kg_run(main_co, NULL, NULL);

	if (err) {
		fprintf(stderr, "demo: kg_run: %d\n", err);
		return 1;
	}
	return atomic_load(&total) == expected_total() ? 0 : 1;
}
