// SPDX-License-Identifier: MIT
/*
 * switch - cost of one coroutine switch: 2 coroutines on 1 proc call
 * kg_yield() N times each. Prints "switch_ns <ns per switch>".
 * Twin: go/switch (runtime.Gosched, GOMAXPROCS=1).
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

static long n = 10000000;
static kg_wg_t wg = KG_WG_INIT;
static uint64_t t0;

static void yielder(void *arg)
{
	long i;

	(void)arg;
	if (!t0)
		t0 = kg_now_ns();
	for (i = 0; i < n; i++)
		kg_yield();
	kg_wg_done(&wg);
}

static void main_co(void *arg)
{
	uint64_t t1;

	(void)arg;
	kg_wg_add(&wg, 2);
	kg_go(yielder, NULL);
	kg_go(yielder, NULL);
	kg_wg_wait(&wg);
	t1 = kg_now_ns();
	printf("switch_ns %.2f\n", (double)(t1 - t0) / (2.0 * (double)n));
}

int main(int argc, char **argv)
{
	struct kg_config cfg = { .procs = 1 };

	if (argc > 1)
		n = atol(argv[1]);
	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
