// SPDX-License-Identifier: MIT
/*
 * coldspawn - the first spawns of a fresh process: the main coroutine
 * takes a timestamp, spawns 10,000 coroutines that each do a WaitGroup
 * done, and waits for them, on 2 procs. Nothing is warm: no stack has
 * been made yet, no memory touched, so this is what a short-lived
 * program (a CLI tool, a test) pays for its first burst of concurrency,
 * which spawn's round 1 of 1e6 averages away. The clock starts inside the
 * main coroutine, after kg_run's start-up (threads, backend), as the Go
 * twin's starts in main after the runtime's: neither start-up is counted.
 * Prints cold10k_us (elapsed microseconds) and cold10k_minflt (minor page
 * faults meanwhile, getrusage). Twin: go/coldspawn (GOMAXPROCS 2).
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define COLD_N 10000

static kg_wg_t wg = KG_WG_INIT;

static void worker(void *arg)
{
	(void)arg;
	kg_wg_done(&wg);
}

static void main_co(void *arg)
{
	uint64_t t0, t1;
	long f0, f1;
	int i;

	(void)arg;
	f0 = minflt();
	t0 = kg_now_ns();
	kg_wg_add(&wg, COLD_N);
	for (i = 0; i < COLD_N; i++) {
		if (kg_go(worker, NULL) < 0) {
			fprintf(stderr, "coldspawn: kg_go failed at %d\n", i);
			exit(1);
		}
	}
	kg_wg_wait(&wg);
	t1 = kg_now_ns();
	f1 = minflt();
	printf("cold10k_us %.1f\n", (double)(t1 - t0) / 1e3);
	print_per_n("cold10k_minflt", f0, f1, 1);
}

int main(void)
{
	struct kg_config cfg = { .procs = 2 };

	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
