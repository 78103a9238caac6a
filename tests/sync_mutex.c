// SPDX-License-Identifier: MIT
/*
 * sync_mutex - kg_mutex_t: mutual exclusion between coroutines on several
 * procs and plain threads, trylock and misuse errors, and starvation mode
 * (a waiter gets the lock within a bound while others hammer it).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#include "harness.h"
#include "kg_test.h"

static kg_mutex_t mu;
static kg_wg_t wg;
static struct thread_gate gate;
static long counter;			/* protected by mu */
static _Atomic int inside;		/* holders now: must stay <= 1 */

static void reset(void)
{
	mu = (kg_mutex_t)KG_MUTEX_INIT;
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
	counter = 0;
	atomic_store(&inside, 0);
}

/* Enter and leave the critical section, checking nobody else is in. */
static void enter(void)
{
	int n = atomic_fetch_add(&inside, 1);

	CO_CHECK(n == 0, "%d others inside the mutex", n);
}

static void leave(void)
{
	atomic_fetch_sub(&inside, 1);
}

/*
 * Go tour's SafeCounter: 2000 coroutines on 2 procs each increment once.
 * The increment reads, yields, then writes: without mutual exclusion,
 * updates are lost.
 */
static void inc_once(void *p)
{
	(void)p;
	kg_mutex_lock(&mu);
	enter();
	long v = counter;

	kg_yield();
	counter = v + 1;
	leave();
	kg_mutex_unlock(&mu);
	kg_wg_done(&wg);
}

static void counter_main(void *p)
{
	int i, n = (int)(intptr_t)p;

	kg_wg_add(&wg, n);
	for (i = 0; i < n; i++)
		CO_CHECK(kg_go(inc_once, NULL) > 0, "spawn %d", i);
	kg_wg_wait(&wg);
}

TEST(counter_2000_coroutines)
{
	reset();
	ASSERT_EQ(0, run_kg(counter_main, (void *)(intptr_t)2000, 2));
	ASSERT_EQ(2000, counter);
	ASSERT_EQ(0, co_failures());
}

/*
 * Stress: coroutines lock (or trylock) many times, with random yields
 * inside and outside the critical section; a random plain-store RMW in
 * between would lose updates without exclusion.
 */
#define STRESS_CO 16

static long stress_iters;
static _Atomic long trylock_wins;

static void stresser(void *p)
{
	uint64_t rnd = harness_seed() * 2654435761u + (uint64_t)(intptr_t)p + 1;
	long i;

	for (i = 0; i < stress_iters; i++) {
		uint64_t r = xorshift(&rnd);

		if (r % 5 == 0) {
			int err = kg_mutex_trylock(&mu);

			CO_CHECK(err == 0 || err == -EBUSY, "trylock %d", err);
			if (err) {
				i--;	/* not counted: try again */
				kg_yield();
				continue;
			}
			atomic_fetch_add(&trylock_wins, 1);
		} else {
			CO_CHECK(kg_mutex_lock(&mu) == 0, "lock");
		}
		enter();
		long v = counter;

		if (r % 7 == 0)
			kg_yield();
		counter = v + 1;
		leave();
		CO_CHECK(kg_mutex_unlock(&mu) == 0, "unlock");
		if (r % 3 == 0)
			kg_yield();
	}
	kg_wg_done(&wg);
}

static void stress_main(void *p)
{
	intptr_t i;

	(void)p;
	kg_wg_add(&wg, STRESS_CO);
	for (i = 0; i < STRESS_CO; i++)
		kg_go(stresser, (void *)i);
	kg_wg_wait(&wg);
}

FIXTURE(stress) {
	int dummy;
};

FIXTURE_VARIANT(stress) {
	unsigned int procs;
};

FIXTURE_VARIANT_ADD(stress, procs1) { .procs = 1 };
FIXTURE_VARIANT_ADD(stress, procs2) { .procs = 2 };
FIXTURE_VARIANT_ADD(stress, procs4) { .procs = 4 };

FIXTURE_SETUP(stress)
{
	reset();
	atomic_store(&trylock_wins, 0);
	stress_iters = scaled(20000, 10);
}

FIXTURE_TEARDOWN(stress)
{
}

TEST_F(stress, seeded_lock_trylock_yield)
{
	harness_seed();
	ASSERT_EQ(0, run_kg(stress_main, NULL, variant->procs));
	ASSERT_EQ(STRESS_CO * stress_iters, counter);
	ASSERT_EQ(0, co_failures());
	ASSERT_LT(0, atomic_load(&trylock_wins));
	ASSERT_EQ(0u, mu.state) TH_LOG("the mutex ends unlocked, no waiters");
}

/*
 * Plain threads and coroutines on one mutex: 4 threads started from the
 * main coroutine and 8 coroutines on 2 procs. Threads sleep on a futex,
 * coroutines park; both wake each other.
 */
#define MIX_THREADS 4
#define MIX_CO 8

static long mix_iters;

static void mixed_work(void)
{
	long i;

	for (i = 0; i < mix_iters; i++) {
		kg_mutex_lock(&mu);
		enter();
		long v = counter;

		if (i % 16 == 0)
			kg_yield();	/* no-op in a thread */
		counter = v + 1;
		leave();
		kg_mutex_unlock(&mu);
	}
	kg_wg_done(&wg);
}

static void *mixed_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	CO_CHECK(kg_self() == 0, "a plain thread");
	mixed_work();
	return NULL;
}

static void mixed_co(void *p)
{
	(void)p;
	mixed_work();
}

static void mixed_main(void *p)
{
	pthread_t t[MIX_THREADS];
	int i;

	(void)p;
	kg_wg_add(&wg, MIX_THREADS + MIX_CO);
	for (i = 0; i < MIX_THREADS; i++)
		CO_CHECK(pthread_create(&t[i], NULL, mixed_thread, NULL) == 0,
			 "thread %d", i);
	for (i = 0; i < MIX_CO; i++)
		kg_go(mixed_co, NULL);
	thread_gate_open(&gate, MIX_THREADS);
	kg_wg_wait(&wg);	/* parks: threads finishing wake us */
	for (i = 0; i < MIX_THREADS; i++)
		pthread_join(t[i], NULL);
}

TEST(threads_and_coroutines_contend)
{
	reset();
	mix_iters = scaled(20000, 10);
	ASSERT_EQ(0, run_kg(mixed_main, NULL, 2));
	ASSERT_EQ((MIX_THREADS + MIX_CO) * mix_iters, counter);
	ASSERT_EQ(0, co_failures());
}

/* No runtime at all: plain threads only, futex waits both ways. */
TEST(threads_without_runtime)
{
	pthread_t t[8];
	int i;

	reset();
	mix_iters = scaled(50000, 10);
	kg_wg_add(&wg, 8);
	for (i = 0; i < 8; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, mixed_thread, NULL));
	thread_gate_open(&gate, 8);
	for (i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ(8 * mix_iters, counter);
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0u, mu.state);
}

/* trylock: 0 when free, -EBUSY when held, by anyone. */
static int holder_saw;

static void try_other(void *p)
{
	(void)p;
	holder_saw = kg_mutex_trylock(&mu);
	kg_wg_done(&wg);
}

static void trylock_main(void *p)
{
	(void)p;
	CO_CHECK(kg_mutex_trylock(&mu) == 0, "free mutex");
	CO_CHECK(kg_mutex_trylock(&mu) == -EBUSY, "held by me");
	kg_wg_add(&wg, 1);
	kg_go(try_other, NULL);
	kg_wg_wait(&wg);
	CO_CHECK(holder_saw == -EBUSY, "held, seen by another: %d",
		 holder_saw);
	CO_CHECK(kg_mutex_unlock(&mu) == 0, "unlock");
	CO_CHECK(kg_mutex_trylock(&mu) == 0, "free again");
	CO_CHECK(kg_mutex_unlock(&mu) == 0, "unlock");
}

TEST(trylock_busy)
{
	reset();
	ASSERT_EQ(0, run_kg(trylock_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	/* from a plain thread too */
	ASSERT_EQ(0, kg_mutex_trylock(&mu));
	ASSERT_EQ(-EBUSY, kg_mutex_trylock(&mu));
	ASSERT_EQ(0, kg_mutex_unlock(&mu));
	ASSERT_EQ(0u, mu.state);
}

/* Unlock of an unlocked mutex: -EPERM, and nothing changes. */
TEST(unlock_unlocked_is_eperm)
{
	kg_mutex_t m = KG_MUTEX_INIT, before;

	ASSERT_EQ(-EPERM, kg_mutex_unlock(&m));
	ASSERT_EQ(0, memcmp(&m, &(kg_mutex_t)KG_MUTEX_INIT, sizeof(m)));
	ASSERT_EQ(0, kg_mutex_lock(&m));
	ASSERT_EQ(0, kg_mutex_unlock(&m));
	memcpy(&before, &m, sizeof(m));
	ASSERT_EQ(-EPERM, kg_mutex_unlock(&m));
	ASSERT_EQ(0, memcmp(&m, &before, sizeof(m)));
	ASSERT_EQ(0, kg_mutex_trylock(&m));
	ASSERT_EQ(0, kg_mutex_unlock(&m));
	/* zeroed memory is an unlocked mutex too */
	memset(&m, 0, sizeof(m));
	ASSERT_EQ(0, kg_mutex_lock(&m));
	ASSERT_EQ(0, kg_mutex_unlock(&m));
}

/*
 * Starvation mode. Hammers take the lock, hold it across a short busy
 * stretch and a kg_yield (as a coroutine holding a lock across I/O would),
 * unlock and take it again at once. In normal mode the unlocker takes the
 * lock again before the waiter it woke runs, so the woken waiter fails and
 * goes back to the head of the queue, and those behind it are never woken:
 * on one proc that lasts for as long as the hammers go on (HAMMER_NS). Once
 * a waiter has waited 1 ms the mutex hands it over in FIFO order, so the
 * victim (a coroutine, or a plain thread) gets it after a few handoffs.
 * Each of its VICTIM_ROUNDS waits must stay below a bound far above that
 * and far below HAMMER_NS. (On one proc, without starvation mode, the
 * victim waits all of HAMMER_NS; on two, where the victim sometimes
 * wins a race, the variants check the bound and liveness.)
 */
#define HAMMERS 4
#define HOLD_NS 5000ull
#define VICTIM_ROUNDS 20
/* how long the hammers go on: a starved victim waits all of it */
#define HAMMER_NS (KG_TEST_SANITIZED ? 12000000000ull : 3000000000ull)

static _Atomic int stop_hammers;
static _Atomic long hammer_rounds;
static uint64_t victim_max_ns;
static uint64_t hammer_deadline;

static void spin_ns(uint64_t ns)
{
	uint64_t end = kg_now_ns() + ns;

	while (kg_now_ns() < end)
		;
}

static void hammer(void *p)
{
	(void)p;
	while (!atomic_load(&stop_hammers) && kg_now_ns() < hammer_deadline) {
		kg_mutex_lock(&mu);
		enter();
		spin_ns(HOLD_NS);
		leave();
		kg_yield();
		kg_mutex_unlock(&mu);
		atomic_fetch_add(&hammer_rounds, 1);
	}
	kg_wg_done(&wg);
}

static void victim(void)
{
	int i;

	for (i = 0; i < VICTIM_ROUNDS; i++) {
		uint64_t t0 = kg_now_ns(), dt;

		kg_mutex_lock(&mu);
		dt = kg_now_ns() - t0;
		enter();
		leave();
		kg_mutex_unlock(&mu);
		if (dt > victim_max_ns)
			victim_max_ns = dt;
		kg_yield();	/* let the hammers have it again */
	}
	atomic_store(&stop_hammers, 1);
	kg_wg_done(&wg);
}

static void victim_co(void *p)
{
	(void)p;
	victim();
}

static void *victim_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	victim();
	return NULL;
}

static void starve_main(void *p)
{
	bool thread = p != NULL;
	pthread_t t;
	int i;

	kg_wg_add(&wg, HAMMERS + 1);
	for (i = 0; i < HAMMERS; i++)
		kg_go(hammer, NULL);
	/* let the hammers get going before the victim arrives */
	while (atomic_load(&hammer_rounds) < 100 &&
	       kg_now_ns() < hammer_deadline)
		kg_yield();
	if (thread)
		CO_CHECK(pthread_create(&t, NULL, victim_thread, NULL) == 0,
			 "thread");
	if (thread)
		thread_gate_open(&gate, 1);
	else
		kg_go(victim_co, NULL);
	kg_wg_wait(&wg);
	if (thread)
		pthread_join(t, NULL);
}

FIXTURE(starve) {
	int dummy;
};

FIXTURE_VARIANT(starve) {
	unsigned int procs;
	bool thread_victim;
};

FIXTURE_VARIANT_ADD(starve, procs1_coroutine) { .procs = 1 };
FIXTURE_VARIANT_ADD(starve, procs1_thread) {
	.procs = 1, .thread_victim = true
};
FIXTURE_VARIANT_ADD(starve, procs2_coroutine) { .procs = 2 };
FIXTURE_VARIANT_ADD(starve, procs2_thread) {
	.procs = 2, .thread_victim = true
};

FIXTURE_SETUP(starve)
{
	reset();
	atomic_store(&stop_hammers, 0);
	atomic_store(&hammer_rounds, 0);
	victim_max_ns = 0;
	hammer_deadline = kg_now_ns() + HAMMER_NS;
}

FIXTURE_TEARDOWN(starve)
{
}

TEST_F(starve, waiter_gets_lock_within_bound)
{
	/* a starved victim waits until the hammers stop: HAMMER_NS */
	uint64_t bound = HAMMER_NS / 6;

	ASSERT_EQ(0, run_kg(starve_main,
			    (void *)(intptr_t)variant->thread_victim,
			    variant->procs));
	ASSERT_EQ(0, co_failures());
	TH_LOG("victim's longest wait: %llu us, hammer rounds: %ld",
	       (unsigned long long)victim_max_ns / 1000,
	       atomic_load(&hammer_rounds));
	ASSERT_LT(victim_max_ns, bound);
	ASSERT_EQ(1, atomic_load(&stop_hammers)) TH_LOG("victim finished");
}

TEST_HARNESS_MAIN
