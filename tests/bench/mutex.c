// SPDX-License-Identifier: MIT
/*
 * mutex - a contended mutex: 8 coroutines on 2 procs each lock a
 * kg_mutex_t, increment a shared counter and unlock, N times in all
 * (default 3e7, argv[1]). Prints "mutex_ns": wall time per lock/unlock
 * pair, and checks the counter. Twin: go/mutex (sync.Mutex, GOMAXPROCS 2).
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

#define NCO 8

static long n = 30000000;
static kg_mutex_t mu = KG_MUTEX_INIT;
static long counter;			/* under mu */
static kg_wg_t wg = KG_WG_INIT;

static void incrementer(void *arg)
{
	long i, per = n / NCO;

	(void)arg;
	for (i = 0; i < per; i++) {
		kg_mutex_lock(&mu);
		counter++;
		kg_mutex_unlock(&mu);
	}
	kg_wg_done(&wg);
}

static void main_co(void *arg)
{
	uint64_t t0, t1;
	long total = n / NCO * NCO;
	int i;

	(void)arg;
	kg_wg_add(&wg, NCO);
	t0 = kg_now_ns();
	for (i = 0; i < NCO; i++) {
		if (kg_go(incrementer, NULL) < 0) {
			fprintf(stderr, "mutex: kg_go failed\n");
			exit(1);
		}
	}
	kg_wg_wait(&wg);
	t1 = kg_now_ns();
	printf("mutex_ns %.1f\n", (double)(t1 - t0) / (double)total);
	if (counter != total) {
		fprintf(stderr, "mutex: counter %ld, expected %ld\n", counter,
			total);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	struct kg_config cfg = { .procs = 2 };

	if (argc > 1)
		n = atol(argv[1]);
	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
