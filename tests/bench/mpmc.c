// SPDX-License-Identifier: MIT
/*
 * mpmc - throughput of a buffered channel (capacity 1024) between P
 * producers and C consumers on 2 procs: M messages in all (default 4e6,
 * argv[1]), each a uint64_t; the producers' WaitGroup closes the channel,
 * the consumers drain it until closed. Timed from the first spawn until
 * every consumer is done. Prints "mpmc1x1_mmsgs" and "mpmc4x4_mmsgs"
 * (millions of messages per second) and checks the sum received.
 * Twin: go/mpmc (GOMAXPROCS 2).
 */
#include <kgreen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define CAP 1024

static long m = 4000000;
static int nprod, ncons;
static kg_chan_t *ch;
static kg_wg_t producing = KG_WG_INIT, consuming = KG_WG_INIT;
static _Atomic uint64_t total;
static double mmsgs;

static void producer(void *arg)
{
	uint64_t i, per = (uint64_t)(m / nprod);

	(void)arg;
	for (i = 0; i < per; i++)
		kg_chan_send(ch, &i);
	kg_wg_done(&producing);
}

static void consumer(void *arg)
{
	uint64_t v, sum = 0;

	(void)arg;
	while (kg_chan_recv(ch, &v) == 0)
		sum += v;
	atomic_fetch_add(&total, sum);
	kg_wg_done(&consuming);
}

static void spawn(void (*fn)(void *))
{
	if (kg_go(fn, NULL) < 0) {
		fprintf(stderr, "mpmc: kg_go failed\n");
		exit(1);
	}
}

static void main_co(void *arg)
{
	uint64_t t0, t1, per = (uint64_t)(m / nprod);
	int i;

	(void)arg;
	kg_wg_add(&consuming, ncons);
	kg_wg_add(&producing, nprod);
	t0 = kg_now_ns();
	for (i = 0; i < ncons; i++)
		spawn(consumer);
	for (i = 0; i < nprod; i++)
		spawn(producer);
	kg_wg_wait(&producing);
	kg_chan_close(ch);
	kg_wg_wait(&consuming);
	t1 = kg_now_ns();
	mmsgs = (double)per * nprod * 1e3 / (double)(t1 - t0);
	if (atomic_load(&total) != nprod * (per * (per - 1) / 2)) {
		fprintf(stderr, "mpmc: wrong sum %llu\n",
			(unsigned long long)atomic_load(&total));
		exit(1);
	}
}

static void run(int p, int c)
{
	struct kg_config cfg = { .procs = 2 };

	nprod = p;
	ncons = c;
	atomic_store(&total, 0);
	ch = kg_chan_make(sizeof(uint64_t), CAP);
	if (!ch || kg_run(main_co, NULL, &cfg)) {
		fprintf(stderr, "mpmc: setup failed\n");
		exit(1);
	}
	kg_chan_free(ch);
	printf("mpmc%dx%d_mmsgs %.2f\n", p, c, mmsgs);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		m = atol(argv[1]);
	run(1, 1);
	run(4, 4);
	return 0;
}
