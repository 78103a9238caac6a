// SPDX-License-Identifier: MIT
/*
 * select4 - cost of a select whose cases are all ready: one coroutine on
 * 1 proc selects over receives from 4 buffered channels (capacity 4096,
 * kept full). Selects run in batches of 4096 with the clock read around
 * each batch; between batches (untimed) each channel is topped up again.
 * A batch cannot empty a channel (a channel holds a whole batch), so every
 * select sees 4 ready cases and picks one at random. N selects in all
 * (default 5e6, argv[1]). Prints "select4_ns" (ns per select) and checks
 * that each channel was picked about a quarter of the time.
 * Twin: go/select4 (GOMAXPROCS 1).
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

#define NCH 4
#define BATCH 4096

static long n = 5000000;

static void main_co(void *arg)
{
	kg_chan_t *ch[NCH];
	struct kg_case cases[NCH];
	long picked[NCH] = { 0 }, taken[NCH], done = 0;
	uint64_t v = 1, sum = 0, busy = 0, t0;
	int i, r;
	long k;

	(void)arg;
	for (i = 0; i < NCH; i++) {
		ch[i] = kg_chan_make(sizeof(uint64_t), BATCH);
		if (!ch[i]) {
			fprintf(stderr, "select4: kg_chan_make failed\n");
			exit(1);
		}
		for (k = 0; k < BATCH; k++)
			kg_chan_send(ch[i], &v);
		cases[i] = (struct kg_case){ ch[i], KG_RECV, &v, false };
	}
	while (done < n) {
		for (i = 0; i < NCH; i++)
			taken[i] = 0;
		t0 = kg_now_ns();
		for (k = 0; k < BATCH; k++) {
			r = kg_select(cases, NCH, -1);
			if (r < 0 || r >= NCH) {
				fprintf(stderr, "select4: kg_select: %d\n", r);
				exit(1);
			}
			taken[r]++;
			sum += v;
		}
		busy += kg_now_ns() - t0;
		done += BATCH;
		/* refill, untimed: never blocks, the room is there */
		for (i = 0; i < NCH; i++) {
			picked[i] += taken[i];
			for (k = 0; k < taken[i]; k++)
				kg_chan_send(ch[i], &v);
		}
	}
	printf("select4_ns %.1f\n", (double)busy / (double)done);
	if (sum != (uint64_t)done) {
		fprintf(stderr, "select4: received %llu values for %ld selects\n",
			(unsigned long long)sum, done);
		exit(1);
	}
	for (i = 0; i < NCH; i++) {
		if (picked[i] < done / NCH * 9 / 10 ||
		    picked[i] > done / NCH * 11 / 10) {
			fprintf(stderr, "select4: case %d chosen %ld times of %ld\n",
				i, picked[i], done);
			exit(1);
		}
		kg_chan_free(ch[i]);
	}
}

int main(int argc, char **argv)
{
	struct kg_config cfg = { .procs = 1 };

	if (argc > 1)
		n = atol(argv[1]);
	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
