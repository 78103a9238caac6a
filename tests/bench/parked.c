// SPDX-License-Identifier: MIT
/*
 * parked - what a coroutine parked on a channel costs: N coroutines
 * (default 1e6; BENCH_N, or argv[1]) each block receiving from ONE shared
 * unbuffered channel, on 2 procs; then the channel is closed. This is
 * the state of a server's idle handlers (all waiting on something), and
 * spawn's WaitGroup gate measured through a channel's wait queue instead.
 *
 * "All parked": each coroutine increments an atomic counter just before
 * its receive; main polls the counter with kg_yield (it runs again once
 * the coroutines queued on its proc have run) and stops the clock when
 * it reaches N. At most one coroutine per proc is then between its
 * increment and its park, so main sleeps 10 ms (uncounted) before it
 * reads RSS and the counters: by then every receiver is parked.
 *
 * Prints, per coroutine: parked_spawn_ns (first kg_go until the counter
 * reaches N), parked_rss_bytes (VmRSS after parking minus before, as
 * spawn does), parked_close_ns (kg_chan_close until all N receivers have
 * returned, a WaitGroup), and for the spawn-and-park (with the 10 ms)
 * parked_minflt (minor page faults, getrusage) and parked_dtlb (dTLB load
 * misses in user space, perf_event_open on every thread; -1 without
 * hardware counters, as in most VMs). Twin: go/parked (GOMAXPROCS 2).
 */
#include <kgreen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define MS 1000000ull

static long n = 1000000;
static kg_chan_t *ch;
static kg_wg_t done = KG_WG_INIT;
static _Atomic long arrived;

static void receiver(void *arg)
{
	int v;

	(void)arg;
	atomic_fetch_add_explicit(&arrived, 1, memory_order_relaxed);
	if (kg_chan_recv(ch, &v) != -EPIPE) {
		fprintf(stderr, "parked: a receive did not see the close\n");
		exit(1);
	}
	kg_wg_done(&done);
}

static void main_co(void *arg)
{
	struct dtlb d = { .n = 0 };
	uint64_t t0, t1, t2, t3;
	long long d0 = -1, d1;
	long r0, r1, f0, f1, i;

	(void)arg;
	ch = kg_chan_make(sizeof(int), 0);
	if (!ch) {
		perror("parked: kg_chan_make");
		exit(1);
	}
	kg_wg_add(&done, n);
	if (!dtlb_open(&d))
		d0 = dtlb_read(&d);
	r0 = rss_kb();
	f0 = minflt();
	t0 = kg_now_ns();
	for (i = 0; i < n; i++) {
		if (kg_go(receiver, NULL) < 0) {
			fprintf(stderr, "parked: kg_go failed at %ld\n", i);
			exit(1);
		}
	}
	while (atomic_load_explicit(&arrived, memory_order_relaxed) < n)
		kg_yield();
	t1 = kg_now_ns();
	kg_sleep(10 * MS);
	f1 = minflt();
	d1 = dtlb_read(&d);
	dtlb_close(&d);
	r1 = rss_kb();
	t2 = kg_now_ns();
	kg_chan_close(ch);
	kg_wg_wait(&done);
	t3 = kg_now_ns();
	kg_chan_free(ch);
	printf("parked_spawn_ns %.1f\n", (double)(t1 - t0) / (double)n);
	printf("parked_rss_bytes %.0f\n",
	       (double)(r1 - r0) * 1024.0 / (double)n);
	printf("parked_close_ns %.1f\n", (double)(t3 - t2) / (double)n);
	print_per_n("parked_minflt", f0, f1, n);
	print_per_n("parked_dtlb", d0, d1, n);
}

int main(int argc, char **argv)
{
	struct kg_config cfg = { .procs = 2 };

	if (getenv("BENCH_N"))
		n = atol(getenv("BENCH_N"));
	if (argc > 1)
		n = atol(argv[1]);
	if (n < 1) {
		fprintf(stderr, "parked: need at least 1 coroutine\n");
		return 2;
	}
	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
