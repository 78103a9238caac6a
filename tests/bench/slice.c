// SPDX-License-Identifier: MIT
/*
 * slice - time slicing: coroutines that compute for 2 s of CPU without a
 * kgreen call ("hogs": a loop calibrated at start to take that long on one
 * CPU) beside a coroutine that sleeps 10 ms at a time (the ticker).
 * Prints, for 1 proc and 1 hog on the backend kg_run picks (bpf here) and
 * on sysmon, and for 2 procs and 3 hogs: the ticker's largest gap and its
 * ticks while hogs run, how long the hogs took, the peak thread count.
 * Twin: go/slice (GOMAXPROCS 1 and 2, Go's asynchronous preemption).
 */
#include <kgreen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"

#define MS 1000000ull

struct scen {
	unsigned int hogs;
	uint64_t hog_iters;
	_Atomic int done;
	uint64_t t0, t_done, max_gap, ticks;
	long threads;
	kg_wg_t wg, tick_wg;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The hog's work: n rounds of xorshift, kept from the optimizer. */
static uint64_t work(uint64_t n)
{
	uint64_t x = 88172645463325252ull;

	while (n--) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		__asm__ volatile("" : "+r"(x));
	}
	return x;
}

/* Rounds of work that take ns on one CPU here. */
static uint64_t calibrate(uint64_t ns)
{
	uint64_t n = 1 << 20, t0, t;

	for (;;) {
		t0 = mono_ns();
		work(n);
		t = mono_ns() - t0;
		if (t >= 100 * MS)
			return (uint64_t)((double)n * (double)ns / (double)t);
		n *= 2;
	}
}

static void hog(void *arg)
{
	struct scen *s = arg;

	work(s->hog_iters);
	kg_wg_done(&s->wg);
}

static void ticker(void *arg)
{
	struct scen *s = arg;
	uint64_t last = mono_ns();

	while (!atomic_load(&s->done)) {
		uint64_t now;
		long th;

		kg_sleep(10 * MS);
		now = mono_ns();
		/* the gaps that overlap the hogs' run */
		if (now > s->t0 && (!atomic_load(&s->done) || last < s->t_done)) {
			if (now - last > s->max_gap)
				s->max_gap = now - last;
			s->ticks++;
		}
		th = proc_status("Threads:");
		if (th > s->threads)
			s->threads = th;
		last = now;
	}
	kg_wg_done(&s->tick_wg);
}

static void scen_main(void *arg)
{
	struct scen *s = arg;
	unsigned int i;

	kg_wg_add(&s->tick_wg, 1);
	kg_wg_add(&s->wg, (int)s->hogs);
	kg_go(ticker, s);
	kg_sleep(30 * MS);
	s->t0 = mono_ns();
	for (i = 0; i < s->hogs; i++)
		kg_go(hog, s);
	kg_wg_wait(&s->wg);
	s->t_done = mono_ns();
	atomic_store(&s->done, 1);
	kg_wg_wait(&s->tick_wg);
}

static int run(const char *prefix, unsigned int procs, unsigned int hogs,
	       const char *backend, uint64_t hog_iters)
{
	struct scen s = { .hogs = hogs, .hog_iters = hog_iters };
	struct kg_config cfg = { .procs = procs, .backend = backend };

	if (kg_run(scen_main, &s, &cfg))
		return 1;
	printf("%s_gap_ms %.1f\n", prefix, (double)s.max_gap / 1e6);
	printf("%s_ticks %llu\n", prefix, (unsigned long long)s.ticks);
	printf("%s_hogs_ms %.0f\n", prefix, (double)(s.t_done - s.t0) / 1e6);
	printf("%s_threads %ld\n", prefix, s.threads);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t iters = calibrate((argc > 1 ? (uint64_t)atol(argv[1]) : 2000) *
				   MS);

	return run("slice1", 1, 1, NULL, iters) ||
	       run("slice1sysmon", 1, 1, "sysmon", iters) ||
	       run("slice3", 2, 3, NULL, iters);
}
