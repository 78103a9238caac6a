// SPDX-License-Identifier: MIT
/*
 * sched_procs - procs run coroutines in parallel; work queued on one proc
 * is stolen by the others.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull
#define MAXTIDS 64

static kg_wg_t wg;
static _Atomic long tids[MAXTIDS];

static void note_tid(void)
{
	long t = gettid_();
	int i;

	for (i = 0; i < MAXTIDS; i++) {
		long expect = 0;

		if (atomic_load(&tids[i]) == t)
			return;
		if (atomic_compare_exchange_strong(&tids[i], &expect, t))
			return;
		if (expect == t)
			return;
	}
}

static int distinct_tids(void)
{
	int i, n = 0;

	for (i = 0; i < MAXTIDS; i++)
		n += atomic_load(&tids[i]) != 0;
	return n;
}

static void compute(void *p)
{
	uint64_t t0 = kg_now_ns();
	volatile unsigned long x = 0;

	(void)p;
	note_tid();
	while (kg_now_ns() - t0 < 5 * MS)
		x++;
	note_tid();
	kg_wg_done(&wg);
}

static struct kg_stats after;

/* Main queues all the work on its own proc and never yields while doing so. */
static void load_main(void *p)
{
	long i, n = (long)(intptr_t)p;

	kg_wg_add(&wg, n);
	for (i = 0; i < n; i++)
		kg_go(compute, NULL);
	kg_wg_wait(&wg);
	kg_stats(&after);
}

/* Under load both procs run coroutines, on different threads. */
TEST(both_procs_run_under_load)
{
	uint64_t t0 = kg_now_ns(), dt;
	long n = 64;

	memset(tids, 0, sizeof(tids));
	wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(load_main, (void *)(intptr_t)n, 2));
	dt = kg_now_ns() - t0;
	ASSERT_GE(distinct_tids(), 2);
	ASSERT_GE(after.workers, 2u);
	TH_LOG("64 x 5 ms of work took %.0f ms on 2 procs", dt / 1e6);
}

/* Work queued on one proc moves to the others by stealing. */
TEST(stealing_moves_queued_work)
{
	memset(tids, 0, sizeof(tids));
	wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(load_main, (void *)(intptr_t)200, 4));
	ASSERT_GT(after.steals, 0ull);
	ASSERT_GE(distinct_tids(), 2);
}

/* Ping-pong storm: many coroutines yielding and spawning on 2 procs,
 * counted exactly. */
static _Atomic long storm_count;

static void storm_leaf(void *p)
{
	int i;

	(void)p;
	for (i = 0; i < 10; i++)
		kg_yield();
	atomic_fetch_add(&storm_count, 1);
	kg_wg_done(&wg);
}

static void storm_node(void *p)
{
	long i, fan = (long)(intptr_t)p;

	for (i = 0; i < fan; i++) {
		kg_wg_add(&wg, 1);
		kg_go(storm_leaf, NULL);
		if (i % 7 == 0)
			kg_yield();
	}
	kg_wg_done(&wg);
}

static void storm_main(void *p)
{
	long i, nodes = (long)(intptr_t)p;

	kg_wg_add(&wg, nodes);
	for (i = 0; i < nodes; i++)
		kg_go(storm_node, (void *)(intptr_t)100);
	kg_wg_wait(&wg);
}

TEST_TIMEOUT(spawn_yield_storm, 120)
{
	long nodes = scaled(1000, 20);
	int iter;

	for (iter = 0; iter < 5; iter++) {
		atomic_store(&storm_count, 0);
		wg = (kg_wg_t)KG_WG_INIT;
		ASSERT_EQ(0, run_kg(storm_main, (void *)(intptr_t)nodes, 2));
		ASSERT_EQ(nodes * 100, atomic_load(&storm_count));
	}
}

/* A WaitGroup mixes coroutines and plain threads both ways. */
static kg_wg_t from_thread, to_thread;

static void *plain_thread(void *p)
{
	(void)p;
	kg_sleep(20 * MS);
	kg_wg_done(&from_thread);	/* wakes a parked coroutine */
	kg_wg_wait(&to_thread);		/* futex wait for coroutines */
	return NULL;
}

static void mixer_co(void *p)
{
	(void)p;
	kg_sleep(5 * MS);
	kg_wg_done(&to_thread);
}

static void wg_main(void *p)
{
	pthread_t t;
	int i;

	(void)p;
	kg_wg_add(&from_thread, 1);
	kg_wg_add(&to_thread, 10);
	CO_CHECK(pthread_create(&t, NULL, plain_thread, NULL) == 0, "thread");
	for (i = 0; i < 10; i++)
		kg_go(mixer_co, NULL);
	kg_wg_wait(&from_thread);
	pthread_join(t, NULL);
}

TEST(waitgroup_with_plain_threads)
{
	from_thread = (kg_wg_t)KG_WG_INIT;
	to_thread = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(wg_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(-EINVAL, kg_wg_add(&to_thread, -1));
	ASSERT_EQ(-EINVAL, kg_wg_add(NULL, 1));
	ASSERT_EQ(0, kg_wg_wait(&to_thread));
}

TEST_HARNESS_MAIN
