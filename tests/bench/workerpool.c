// SPDX-License-Identifier: MIT
/*
 * workerpool - Go by Example's worker pool at scale: 1e5 jobs (argv[1])
 * sent on a jobs channel to 4 workers, each sending job * 2 back on a
 * results channel; main sends every job, closes jobs, and receives every
 * result. Both channels are buffered for all the jobs, as in Go by
 * Example. A round makes the channels and starts the workers; 30 rounds,
 * all procs. Prints "workerpool_mjobs" (millions of jobs per second over
 * all rounds) and checks the results' sum. Twin: go/workerpool.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

#define NWORKERS 4
#define ROUNDS 30

static long njobs = 100000;
static kg_chan_t *jobs, *results;
static kg_wg_t wg = KG_WG_INIT;

static void worker(void *arg)
{
	long j, r;

	(void)arg;
	while (kg_chan_recv(jobs, &j) == 0) {
		r = j * 2;
		kg_chan_send(results, &r);
	}
	kg_wg_done(&wg);
}

static void round_trip(void)
{
	long j, r, sum = 0;
	int i;

	jobs = kg_chan_make(sizeof(long), njobs);
	results = kg_chan_make(sizeof(long), njobs);
	if (!jobs || !results) {
		fprintf(stderr, "workerpool: kg_chan_make failed\n");
		exit(1);
	}
	kg_wg_add(&wg, NWORKERS);
	for (i = 0; i < NWORKERS; i++) {
		if (kg_go(worker, NULL) < 0) {
			fprintf(stderr, "workerpool: kg_go failed\n");
			exit(1);
		}
	}
	for (j = 1; j <= njobs; j++)
		kg_chan_send(jobs, &j);
	kg_chan_close(jobs);
	for (j = 0; j < njobs; j++) {
		kg_chan_recv(results, &r);
		sum += r;
	}
	kg_wg_wait(&wg);
	kg_chan_free(jobs);
	kg_chan_free(results);
	if (sum != njobs * (njobs + 1)) {
		fprintf(stderr, "workerpool: wrong sum %ld\n", sum);
		exit(1);
	}
}

static void main_co(void *arg)
{
	uint64_t t0, t1;
	int i;

	(void)arg;
	t0 = kg_now_ns();
	for (i = 0; i < ROUNDS; i++)
		round_trip();
	t1 = kg_now_ns();
	printf("workerpool_mjobs %.2f\n",
	       (double)njobs * ROUNDS * 1e3 / (double)(t1 - t0));
}

int main(int argc, char **argv)
{
	if (argc > 1)
		njobs = atol(argv[1]);
	return kg_run(main_co, NULL, NULL) ? 1 : 0;
}
