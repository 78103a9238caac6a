// SPDX-License-Identifier: MIT
/*
 * sync_rwmutex - kg_rwmutex_t: readers share it, a writer has it alone, a
 * waiting writer keeps new readers out (so readers cannot starve it), and
 * misuse returns -EPERM without changing anything; coroutines and plain
 * threads mixed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#include "harness.h"
#include "kg_test.h"

static kg_rwmutex_t rw;
static kg_wg_t wg;
static struct thread_gate gate;
static _Atomic int readers_in, writers_in, max_readers;

static void reset(void)
{
	rw = (kg_rwmutex_t)KG_RWMUTEX_INIT;
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
	atomic_store(&readers_in, 0);
	atomic_store(&writers_in, 0);
	atomic_store(&max_readers, 0);
}

/* Yield in a coroutine, the CPU in a thread. */
static void reader_enter(void)
{
	int n = atomic_fetch_add(&readers_in, 1) + 1, m;

	CO_CHECK(atomic_load(&writers_in) == 0, "a reader beside a writer");
	m = atomic_load(&max_readers);
	while (n > m && !atomic_compare_exchange_weak(&max_readers, &m, n))
		;
}

static void reader_leave(void)
{
	atomic_fetch_sub(&readers_in, 1);
}

static void writer_enter(void)
{
	int w = atomic_fetch_add(&writers_in, 1);

	CO_CHECK(w == 0, "%d other writers in", w);
	CO_CHECK(atomic_load(&readers_in) == 0, "%d readers beside a writer",
		 atomic_load(&readers_in));
}

static void writer_leave(void)
{
	atomic_fetch_sub(&writers_in, 1);
}

/*
 * Readers hold the lock together: in each round every participant takes
 * the read lock and waits, holding it, until all have arrived. With the
 * read lock exclusive this never completes.
 */
#define SHARE_CO 8
#define SHARE_THREADS 2
#define SHARE_ALL (SHARE_CO + SHARE_THREADS)
#define SHARE_ROUNDS 200

static _Atomic long arrived;

static void share_work(void)
{
	long r;

	for (r = 0; r < SHARE_ROUNDS; r++) {
		uint64_t give_up = kg_now_ns() + 10000000000ull;

		CO_CHECK(kg_rwmutex_rlock(&rw) == 0, "rlock");
		reader_enter();
		atomic_fetch_add(&arrived, 1);
		while (atomic_load(&arrived) < (r + 1) * SHARE_ALL) {
			if (kg_now_ns() > give_up) {
				CO_CHECK(0, "round %ld: readers not all in", r);
				break;
			}
			pause_any();
		}
		reader_leave();
		CO_CHECK(kg_rwmutex_runlock(&rw) == 0, "runlock");
	}
	kg_wg_done(&wg);
}

static void share_co(void *p)
{
	(void)p;
	share_work();
}

static void *share_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	share_work();
	return NULL;
}

static void share_main(void *p)
{
	pthread_t t[SHARE_THREADS];
	int i;

	(void)p;
	kg_wg_add(&wg, SHARE_ALL);
	for (i = 0; i < SHARE_THREADS; i++)
		CO_CHECK(pthread_create(&t[i], NULL, share_thread, NULL) == 0,
			 "thread");
	for (i = 0; i < SHARE_CO; i++)
		kg_go(share_co, NULL);
	thread_gate_open(&gate, SHARE_THREADS);
	kg_wg_wait(&wg);
	for (i = 0; i < SHARE_THREADS; i++)
		pthread_join(t[i], NULL);
}

FIXTURE(procs) {
	int dummy;
};

FIXTURE_VARIANT(procs) {
	unsigned int procs;
};

FIXTURE_VARIANT_ADD(procs, one) { .procs = 1 };
FIXTURE_VARIANT_ADD(procs, two) { .procs = 2 };

FIXTURE_SETUP(procs)
{
	reset();
	atomic_store(&arrived, 0);
}

FIXTURE_TEARDOWN(procs)
{
}

TEST_F(procs, readers_share)
{
	ASSERT_EQ(0, run_kg(share_main, NULL, variant->procs));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(SHARE_ALL, atomic_load(&max_readers));
	ASSERT_EQ(0, rw.readers);
}

/*
 * A writer has it alone: readers check that a data array is consistent
 * (all elements equal) and no writer is in; writers check they are alone
 * and update the array in steps, yielding in between. Coroutines and
 * threads, lock and trylock forms, random yields from the seed.
 */
#define DATA_N 8
#define EX_READERS_CO 6
#define EX_WRITERS_CO 2
#define EX_READERS_TH 2
#define EX_WRITERS_TH 1

static long data[DATA_N];
static long ex_iters;
static _Atomic long writes;

static void ex_reader(uint64_t rnd)
{
	long i;

	for (i = 0; i < ex_iters; i++) {
		uint64_t r = xorshift(&rnd);
		int k;

		if (r % 4 == 0) {
			if (kg_rwmutex_tryrlock(&rw)) {
				pause_any();
				continue;
			}
		} else {
			kg_rwmutex_rlock(&rw);
		}
		reader_enter();
		for (k = 1; k < DATA_N; k++)
			CO_CHECK(data[k] == data[0], "torn read at %d", k);
		if (r % 3 == 0)
			pause_any();
		reader_leave();
		CO_CHECK(kg_rwmutex_runlock(&rw) == 0, "runlock");
	}
}

static void ex_writer(uint64_t rnd)
{
	long i;

	for (i = 0; i < ex_iters / 4; i++) {
		uint64_t r = xorshift(&rnd);
		int k;

		if (r % 4 == 0) {
			if (kg_rwmutex_trylock(&rw)) {
				pause_any();
				i--;
				continue;
			}
		} else {
			kg_rwmutex_lock(&rw);
		}
		writer_enter();
		for (k = 0; k < DATA_N; k++) {
			data[k]++;
			if (r % 2 == 0 && k == DATA_N / 2)
				pause_any();
		}
		atomic_fetch_add(&writes, 1);
		writer_leave();
		CO_CHECK(kg_rwmutex_unlock(&rw) == 0, "unlock");
		if (r % 3 == 0)
			pause_any();
	}
}

static uint64_t seed_for(intptr_t who)
{
	return harness_seed() * 2654435761u + (uint64_t)who * 7919 + 1;
}

static void ex_co(void *p)
{
	intptr_t who = (intptr_t)p;

	if (who < 100)
		ex_reader(seed_for(who));
	else
		ex_writer(seed_for(who));
	kg_wg_done(&wg);
}

static void *ex_thread(void *p)
{
	thread_gate_wait(&gate);
	ex_co(p);
	return NULL;
}

static void exclusive_main(void *p)
{
	pthread_t t[EX_READERS_TH + EX_WRITERS_TH];
	intptr_t i;

	(void)p;
	kg_wg_add(&wg, EX_READERS_CO + EX_WRITERS_CO + EX_READERS_TH +
			       EX_WRITERS_TH);
	for (i = 0; i < EX_READERS_TH + EX_WRITERS_TH; i++) {
		intptr_t who = i < EX_READERS_TH ? 50 + i : 150 + i;

		CO_CHECK(pthread_create(&t[i], NULL, ex_thread,
					(void *)who) == 0, "thread");
	}
	for (i = 0; i < EX_READERS_CO; i++)
		kg_go(ex_co, (void *)i);
	for (i = 0; i < EX_WRITERS_CO; i++)
		kg_go(ex_co, (void *)(100 + i));
	thread_gate_open(&gate, EX_READERS_TH + EX_WRITERS_TH);
	kg_wg_wait(&wg);
	for (i = 0; i < EX_READERS_TH + EX_WRITERS_TH; i++)
		pthread_join(t[i], NULL);
}

TEST_F(procs, writer_exclusive)
{
	int k;

	harness_seed();
	memset(data, 0, sizeof(data));
	atomic_store(&writes, 0);
	ex_iters = scaled(20000, 10);
	ASSERT_EQ(0, run_kg(exclusive_main, NULL, variant->procs));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ((EX_WRITERS_CO + EX_WRITERS_TH) * (ex_iters / 4),
		  atomic_load(&writes));
	for (k = 0; k < DATA_N; k++)
		ASSERT_EQ(atomic_load(&writes), data[k]);
	ASSERT_LT(1, atomic_load(&max_readers));
	ASSERT_EQ(0, rw.readers);
	ASSERT_EQ(0u, rw.w.state);
}

/*
 * A writer is not starved by readers: readers overlap without a gap (each
 * takes the read lock again right after releasing it, while others are
 * in), so with reader preference the writer would never get in and the
 * test would time out. The writer gets in WRITER_ROUNDS times; then the
 * readers stop.
 */
#define NS_READERS 4
#define WRITER_ROUNDS 20

static _Atomic int stop_readers;
static _Atomic long reader_rounds;
static uint64_t writer_max_ns;

static void overlapping_reader(void *p)
{
	(void)p;
	while (!atomic_load(&stop_readers)) {
		kg_rwmutex_rlock(&rw);
		reader_enter();
		kg_yield();
		kg_yield();
		reader_leave();
		kg_rwmutex_runlock(&rw);
		atomic_fetch_add(&reader_rounds, 1);
	}
	kg_wg_done(&wg);
}

static void patient_writer(void *p)
{
	int i;

	(void)p;
	for (i = 0; i < WRITER_ROUNDS; i++) {
		uint64_t t0 = kg_now_ns(), dt;

		kg_rwmutex_lock(&rw);
		dt = kg_now_ns() - t0;
		writer_enter();
		kg_yield();
		writer_leave();
		kg_rwmutex_unlock(&rw);
		if (dt > writer_max_ns)
			writer_max_ns = dt;
		/* let the readers overlap again before the next round */
		while (atomic_load(&readers_in) < 2)
			kg_yield();
	}
	atomic_store(&stop_readers, 1);
	kg_wg_done(&wg);
}

static void not_starved_main(void *p)
{
	int i;

	(void)p;
	kg_wg_add(&wg, NS_READERS + 1);
	for (i = 0; i < NS_READERS; i++)
		kg_go(overlapping_reader, NULL);
	while (atomic_load(&reader_rounds) < 100)
		kg_yield();
	kg_go(patient_writer, NULL);
	kg_wg_wait(&wg);
}

TEST_F(procs, writer_not_starved_by_readers)
{
	atomic_store(&stop_readers, 0);
	atomic_store(&reader_rounds, 0);
	writer_max_ns = 0;
	ASSERT_EQ(0, run_kg(not_starved_main, NULL, variant->procs));
	ASSERT_EQ(0, co_failures());
	ASSERT_LT(1, atomic_load(&max_readers)) TH_LOG("readers overlapped");
	TH_LOG("writer's longest wait: %llu us over %ld reader rounds",
	       (unsigned long long)writer_max_ns / 1000,
	       atomic_load(&reader_rounds));
	ASSERT_LT(writer_max_ns, 1000000000ull);
}

/*
 * On one proc, step by step: a reader holds the lock; a writer arrives
 * and waits; now new readers wait too (tryrlock is -EBUSY, rlock blocks);
 * when the reader leaves the writer goes first, then the new reader.
 */
static char order[8];
static _Atomic int norder;

static void note(char c)
{
	order[atomic_fetch_add(&norder, 1)] = c;
}

static void step_writer(void *p)
{
	(void)p;
	note('w');
	kg_rwmutex_lock(&rw);
	note('W');
	kg_yield();
	kg_rwmutex_unlock(&rw);
	kg_wg_done(&wg);
}

static void step_reader(void *p)
{
	(void)p;
	note('r');
	kg_rwmutex_rlock(&rw);
	note('R');
	kg_rwmutex_runlock(&rw);
	kg_wg_done(&wg);
}

static void steps_main(void *p)
{
	(void)p;
	kg_wg_add(&wg, 2);
	CO_CHECK(kg_rwmutex_rlock(&rw) == 0, "first reader");
	kg_go(step_writer, NULL);
	kg_yield();		/* the writer runs and waits */
	CO_CHECK(kg_rwmutex_tryrlock(&rw) == -EBUSY, "writer waiting");
	CO_CHECK(kg_rwmutex_trylock(&rw) == -EBUSY, "writer waiting");
	kg_go(step_reader, NULL);
	kg_yield();		/* the new reader runs and waits */
	note('0');
	CO_CHECK(kg_rwmutex_runlock(&rw) == 0, "first reader leaves");
	kg_wg_wait(&wg);
	CO_CHECK(kg_rwmutex_tryrlock(&rw) == 0, "free for readers again");
	CO_CHECK(kg_rwmutex_runlock(&rw) == 0, "runlock");
}

TEST(waiting_writer_blocks_new_readers)
{
	reset();
	atomic_store(&norder, 0);
	memset(order, 0, sizeof(order));
	ASSERT_EQ(0, run_kg(steps_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	/* w: writer waits; r: reader waits; 0: first reader out; W then R */
	ASSERT_STREQ("wr0WR", order);
}

/* Misuse: -EPERM and the lock unchanged; -EBUSY for try forms. */
TEST(misuse)
{
	kg_rwmutex_t r = KG_RWMUTEX_INIT, before;

	ASSERT_EQ(-EPERM, kg_rwmutex_runlock(&r));
	ASSERT_EQ(-EPERM, kg_rwmutex_unlock(&r));
	ASSERT_EQ(0, memcmp(&r, &(kg_rwmutex_t)KG_RWMUTEX_INIT, sizeof(r)));

	ASSERT_EQ(0, kg_rwmutex_rlock(&r));
	memcpy(&before, &r, sizeof(r));
	/* read-locked, not write-locked */
	ASSERT_EQ(-EPERM, kg_rwmutex_unlock(&r));
	ASSERT_EQ(-EBUSY, kg_rwmutex_trylock(&r));
	ASSERT_EQ(0, memcmp(&r, &before, sizeof(r)));
	ASSERT_EQ(0, kg_rwmutex_tryrlock(&r));	/* readers share */
	ASSERT_EQ(0, kg_rwmutex_runlock(&r));
	ASSERT_EQ(0, kg_rwmutex_runlock(&r));
	ASSERT_EQ(-EPERM, kg_rwmutex_runlock(&r));

	ASSERT_EQ(0, kg_rwmutex_lock(&r));
	memcpy(&before, &r, sizeof(r));
	/* write-locked, not read-locked */
	ASSERT_EQ(-EPERM, kg_rwmutex_runlock(&r));
	ASSERT_EQ(-EBUSY, kg_rwmutex_tryrlock(&r));
	ASSERT_EQ(-EBUSY, kg_rwmutex_trylock(&r));
	ASSERT_EQ(0, memcmp(&r, &before, sizeof(r)));
	ASSERT_EQ(0, kg_rwmutex_unlock(&r));
	ASSERT_EQ(-EPERM, kg_rwmutex_unlock(&r));
	ASSERT_EQ(0, kg_rwmutex_trylock(&r));
	ASSERT_EQ(0, kg_rwmutex_unlock(&r));
	ASSERT_EQ(0, memcmp(&r, &(kg_rwmutex_t)KG_RWMUTEX_INIT, sizeof(r)));
}

/* No runtime: plain threads only, readers and writers. */
TEST(threads_without_runtime)
{
	pthread_t t[6];
	intptr_t i;
	int k;

	reset();
	harness_seed();
	memset(data, 0, sizeof(data));
	atomic_store(&writes, 0);
	ex_iters = scaled(4000, 10);	/* threads hand over through futexes */
	kg_wg_add(&wg, 6);
	for (i = 0; i < 6; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, ex_thread,
					    (void *)(i < 4 ? i : 100 + i)));
	thread_gate_open(&gate, 6);
	for (i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(2 * (ex_iters / 4), atomic_load(&writes));
	for (k = 0; k < DATA_N; k++)
		ASSERT_EQ(atomic_load(&writes), data[k]);
}

TEST_HARNESS_MAIN
