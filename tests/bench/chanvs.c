// SPDX-License-Identifier: MIT
/*
 * chanvs - the lock-free channel (kg_chan_*) beside the oracle, Go's
 * lock-based hchan design (kg_hchan_*), on the same workloads in one
 * process: unbuffered ping-pong on 1 proc (ns per send+recv) and a
 * buffered cap-1024 channel, 4 producers x 4 consumers on 2 procs
 * (Mmsg/s). Prints lf_* and oracle_* figures; run-bench prints the
 * ratio lock-free/oracle.
 */
#include <kgreen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "../hchan.h"

struct impl {
	void *(*make)(size_t, size_t);
	void (*free_)(void *);
	int (*send)(void *, const void *);
	int (*recv)(void *, void *);
	int (*close)(void *);
};

static const struct impl lf = {
	(void *(*)(size_t, size_t))kg_chan_make, (void (*)(void *))kg_chan_free,
	(int (*)(void *, const void *))kg_chan_send,
	(int (*)(void *, void *))kg_chan_recv, (int (*)(void *))kg_chan_close,
};
static const struct impl oracle = {
	(void *(*)(size_t, size_t))kg_hchan_make,
	(void (*)(void *))kg_hchan_free,
	(int (*)(void *, const void *))kg_hchan_send,
	(int (*)(void *, void *))kg_hchan_recv, (int (*)(void *))kg_hchan_close,
};

static const struct impl *im;
static void *a, *b;
static long rounds = 1000000, msgs = 4000000;
static double result;
static kg_wg_t wg = KG_WG_INIT, prod = KG_WG_INIT;
static _Atomic uint64_t total;

static void pong(void *arg)
{
	long i, v;

	(void)arg;
	for (i = 0; i < rounds; i++) {
		im->recv(a, &v);
		im->send(b, &v);
	}
	kg_wg_done(&wg);
}

static void pingpong_main(void *arg)
{
	long i, v = 1;
	uint64_t t0;

	(void)arg;
	a = im->make(sizeof(long), 0);
	b = im->make(sizeof(long), 0);
	kg_wg_add(&wg, 1);
	kg_go(pong, NULL);
	t0 = kg_now_ns();
	for (i = 0; i < rounds; i++) {
		im->send(a, &v);
		im->recv(b, &v);
	}
	kg_wg_wait(&wg);
	result = (double)(kg_now_ns() - t0) / (2.0 * (double)rounds);
	im->free_(a);
	im->free_(b);
}

static void producer(void *arg)
{
	uint64_t i;

	(void)arg;
	for (i = 0; i < (uint64_t)msgs / 4; i++)
		im->send(a, &i);
	kg_wg_done(&prod);
}

static void consumer(void *arg)
{
	uint64_t v, sum = 0;

	(void)arg;
	while (im->recv(a, &v) == 0)
		sum += v;
	atomic_fetch_add(&total, sum);
	kg_wg_done(&wg);
}

static void mpmc_main(void *arg)
{
	uint64_t t0, per = (uint64_t)msgs / 4;
	int i;

	(void)arg;
	a = im->make(sizeof(uint64_t), 1024);
	atomic_store(&total, 0);
	kg_wg_add(&wg, 4);
	kg_wg_add(&prod, 4);
	t0 = kg_now_ns();
	for (i = 0; i < 4; i++) {
		kg_go(consumer, NULL);
		kg_go(producer, NULL);
	}
	kg_wg_wait(&prod);
	im->close(a);
	kg_wg_wait(&wg);
	result = (double)msgs / ((double)(kg_now_ns() - t0) / 1e3);
	if (atomic_load(&total) != 4 * (per * (per - 1) / 2)) {
		fprintf(stderr, "chanvs: lost or duplicated messages\n");
		exit(1);
	}
	im->free_(a);
}

static double run(const struct impl *which, void (*fn)(void *),
		  unsigned int procs)
{
	struct kg_config cfg = { .procs = procs };

	im = which;
	if (kg_run(fn, NULL, &cfg)) {
		fprintf(stderr, "chanvs: kg_run failed\n");
		exit(1);
	}
	return result;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		rounds = msgs = atol(argv[1]);
	printf("lf_pingpong1_ns %.2f\n", run(&lf, pingpong_main, 1));
	printf("oracle_pingpong1_ns %.2f\n", run(&oracle, pingpong_main, 1));
	printf("lf_mpmc4x4_mmsgs %.2f\n", run(&lf, mpmc_main, 2));
	printf("oracle_mpmc4x4_mmsgs %.2f\n", run(&oracle, mpmc_main, 2));
	return 0;
}
