// SPDX-License-Identifier: MIT
/*
 * selectmem - memory a select loop keeps: Go's test/chan/select2.go as a
 * benchmark. A sender sends on an unbuffered channel c while main selects
 * {recv c, recv dummy} (dummy never ready) for each value, on 1 proc.
 * After a warm-up round of 100,000, ten more rounds; prints the RSS
 * growth over those rounds per 100,000 selects ("selectmem_rss_bytes"),
 * and the time per select ("selectmem_ns"). Twin: go/selectmem.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define ROUND 100000
#define ROUNDS 10

static kg_chan_t *c, *dummy;

static void sender(void *arg)
{
	long n = (long)arg, i;
	int one = 1;

	for (i = 0; i < n; i++)
		kg_chan_send(c, &one);
}

static void receive(long n)
{
	int v;
	long i;

	for (i = 0; i < n; i++) {
		struct kg_case cs[2] = { { c, KG_RECV, &v, false },
					 { dummy, KG_RECV, &v, false } };

		if (kg_select(cs, 2, -1) != 0) {
			fprintf(stderr, "selectmem: dummy chosen\n");
			exit(1);
		}
	}
}

static void main_co(void *arg)
{
	long before;
	uint64_t t0;

	(void)arg;
	c = kg_chan_make(sizeof(int), 0);
	dummy = kg_chan_make(sizeof(int), 0);
	kg_go(sender, (void *)(long)ROUND);
	receive(ROUND);	/* warm up */
	before = rss_kb();
	t0 = kg_now_ns();
	kg_go(sender, (void *)(long)(ROUND * ROUNDS));
	receive(ROUND * ROUNDS);
	printf("selectmem_ns %.1f\n",
	       (double)(kg_now_ns() - t0) / (ROUND * ROUNDS));
	printf("selectmem_rss_bytes %ld\n",
	       (rss_kb() - before) * 1024 / ROUNDS);
}

int main(void)
{
	struct kg_config cfg = { .procs = 1 };

	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
