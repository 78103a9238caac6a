// SPDX-License-Identifier: MIT
/*
 * sync_cond - kg_cond_t: signal wakes the longest waiter, broadcast wakes
 * all, a bounded buffer between coroutines and threads loses no wake-up,
 * timeouts relock the mutex and never eat a signal meant for a live
 * waiter, misuse is -EPERM.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#include "harness.h"
#include "kg_test.h"

static kg_mutex_t mu;
static kg_cond_t cv, cv2;
static kg_wg_t wg;
static struct thread_gate gate;

static void reset(void)
{
	mu = (kg_mutex_t)KG_MUTEX_INIT;
	cv = (kg_cond_t)KG_COND_INIT;
	cv2 = (kg_cond_t)KG_COND_INIT;
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
}

/*
 * On one proc: five coroutines wait in turn; each signal wakes exactly
 * one, the longest waiting.
 */
#define FIFO_N 5

static int woke_order[FIFO_N];
static int nwoke;			/* mu */

static void fifo_waiter(void *p)
{
	kg_mutex_lock(&mu);
	CO_CHECK(kg_cond_wait(&cv, &mu) == 0, "wait");
	woke_order[nwoke++] = (int)(intptr_t)p;
	kg_mutex_unlock(&mu);
	kg_wg_done(&wg);
}

static void fifo_main(void *p)
{
	intptr_t i;

	(void)p;
	kg_wg_add(&wg, FIFO_N);
	for (i = 0; i < FIFO_N; i++) {
		kg_go(fifo_waiter, (void *)i);
		kg_yield();	/* it runs and waits */
	}
	for (i = 0; i < FIFO_N; i++) {
		kg_mutex_lock(&mu);
		CO_CHECK(nwoke == i, "before signal %ld: %d woke", i, nwoke);
		kg_cond_signal(&cv);
		kg_mutex_unlock(&mu);
		kg_yield();	/* the woken one runs */
		kg_mutex_lock(&mu);
		CO_CHECK(nwoke == i + 1, "after signal %ld: %d woke", i, nwoke);
		kg_mutex_unlock(&mu);
	}
	kg_wg_wait(&wg);
	CO_CHECK(kg_cond_signal(&cv) == 0, "signal with nobody waiting");
}

TEST(signal_wakes_one_in_order)
{
	int i;

	reset();
	nwoke = 0;
	ASSERT_EQ(0, run_kg(fifo_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	for (i = 0; i < FIFO_N; i++)
		ASSERT_EQ(i, woke_order[i]);
}

/*
 * Broadcast wakes every waiter, coroutines and threads: the main
 * coroutine sees all of them counted under the mutex (so all are queued:
 * a waiter queues before it unlocks), then broadcasts once.
 */
#define BC_CO 40
#define BC_TH 4

static int waiting, woken;		/* mu */
static bool go_flag;			/* mu */

static void bc_wait(void)
{
	kg_mutex_lock(&mu);
	waiting++;
	while (!go_flag)
		CO_CHECK(kg_cond_wait(&cv, &mu) == 0, "wait");
	woken++;
	kg_mutex_unlock(&mu);
	kg_wg_done(&wg);
}

static void bc_co(void *p)
{
	(void)p;
	bc_wait();
}

static void *bc_thread(void *p)
{
	(void)p;
	bc_wait();
	return NULL;
}

static void broadcast_main(void *p)
{
	pthread_t t[BC_TH];
	int i, all = BC_CO + BC_TH;

	(void)p;
	waiting = woken = 0;
	go_flag = false;
	kg_wg_add(&wg, all);
	for (i = 0; i < BC_TH; i++)
		CO_CHECK(pthread_create(&t[i], NULL, bc_thread, NULL) == 0,
			 "thread");
	for (i = 0; i < BC_CO; i++)
		kg_go(bc_co, NULL);
	for (;;) {
		kg_mutex_lock(&mu);
		if (waiting == all)
			break;
		kg_mutex_unlock(&mu);
		kg_yield();
	}
	CO_CHECK(woken == 0, "%d woke early", woken);
	go_flag = true;
	kg_cond_broadcast(&cv);
	kg_mutex_unlock(&mu);
	kg_wg_wait(&wg);
	CO_CHECK(woken == all, "%d of %d woke", woken, all);
	for (i = 0; i < BC_TH; i++)
		pthread_join(t[i], NULL);
}

TEST(broadcast_wakes_all)
{
	long r, rounds = scaled(30, 3);

	reset();
	for (r = 0; r < rounds; r++)
		ASSERT_EQ(0, run_kg(broadcast_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_NULL(cv.q.head);
}

/*
 * A bounded buffer (Go's classic): producers wait on "not full", consumers
 * on "not empty", each signalling the other once per item. A lost wake-up
 * hangs it; a torn one corrupts the sum.
 */
#define BUF_CAP 4
#define PC_CO 4
#define PC_TH 2

static long buf[BUF_CAP];
static int buf_n, buf_head;		/* mu */
static long pc_items;
static _Atomic long consumed_sum;

static void produce(long id, uint64_t rnd)
{
	long i;

	for (i = 0; i < pc_items; i++) {
		kg_mutex_lock(&mu);
		while (buf_n == BUF_CAP)
			kg_cond_wait(&cv, &mu);	/* not full */
		buf[(buf_head + buf_n) % BUF_CAP] = id * pc_items + i;
		buf_n++;
		kg_cond_signal(&cv2);		/* not empty */
		kg_mutex_unlock(&mu);
		if (xorshift(&rnd) % 4 == 0)
			pause_any();
	}
}

static void consume(uint64_t rnd)
{
	long i, sum = 0;

	for (i = 0; i < pc_items; i++) {
		kg_mutex_lock(&mu);
		while (buf_n == 0)
			kg_cond_wait(&cv2, &mu);
		sum += buf[buf_head];
		buf_head = (buf_head + 1) % BUF_CAP;
		buf_n--;
		kg_cond_signal(&cv);
		kg_mutex_unlock(&mu);
		if (xorshift(&rnd) % 4 == 0)
			pause_any();
	}
	atomic_fetch_add(&consumed_sum, sum);
}

static void pc_role(intptr_t who)
{
	uint64_t rnd = harness_seed() * 2654435761u + (uint64_t)who * 31 + 1;

	if (who % 2)
		produce(who / 2, rnd);
	else
		consume(rnd);
	kg_wg_done(&wg);
}

static void pc_co(void *p)
{
	pc_role((intptr_t)p);
}

static void *pc_thread(void *p)
{
	thread_gate_wait(&gate);
	pc_role((intptr_t)p);
	return NULL;
}

static void pc_main(void *p)
{
	pthread_t t[2 * PC_TH];
	intptr_t i;

	(void)p;
	kg_wg_add(&wg, 2 * (PC_CO + PC_TH));
	for (i = 0; i < 2 * PC_TH; i++)
		CO_CHECK(pthread_create(&t[i], NULL, pc_thread,
					(void *)(2 * PC_CO + i)) == 0,
			 "thread");
	for (i = 0; i < 2 * PC_CO; i++)
		kg_go(pc_co, (void *)i);
	thread_gate_open(&gate, 2 * PC_TH);
	kg_wg_wait(&wg);
	for (i = 0; i < 2 * PC_TH; i++)
		pthread_join(t[i], NULL);
}

TEST(bounded_buffer_threads_and_coroutines)
{
	long producers = PC_CO + PC_TH, total;

	reset();
	harness_seed();
	buf_n = buf_head = 0;
	atomic_store(&consumed_sum, 0);
	pc_items = scaled(10000, 10);
	total = producers * pc_items;
	ASSERT_EQ(0, run_kg(pc_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0, buf_n);
	/* values 0 .. total-1, each once */
	ASSERT_EQ(total * (total - 1) / 2, atomic_load(&consumed_sum));
}

/* Timeout: -ETIMEDOUT after at least ns, with the mutex locked again. */
#define TMO_NS 20000000ull

static void timed_wait_check(void)
{
	uint64_t t0, dt;
	int err;

	CO_CHECK(kg_mutex_lock(&mu) == 0, "lock");
	t0 = kg_now_ns();
	err = kg_cond_wait_timeout(&cv, &mu, TMO_NS);
	dt = kg_now_ns() - t0;
	CO_CHECK(err == -ETIMEDOUT, "got %d", err);
	CO_CHECK(dt >= TMO_NS, "woke after %llu ns", (unsigned long long)dt);
	CO_CHECK(dt < 50 * TMO_NS, "woke after %llu ns",
		 (unsigned long long)dt);
	CO_CHECK(kg_mutex_trylock(&mu) == -EBUSY, "relocked");
	/* ns == 0: times out at once, relocked too */
	CO_CHECK(kg_cond_wait_timeout(&cv, &mu, 0) == -ETIMEDOUT, "ns 0");
	CO_CHECK(kg_mutex_trylock(&mu) == -EBUSY, "relocked");
	CO_CHECK(kg_mutex_unlock(&mu) == 0, "unlock");
}

static void *timed_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	timed_wait_check();
	kg_wg_done(&wg);
	return NULL;
}

static void timed_co(void *p)
{
	(void)p;
	timed_wait_check();
	kg_wg_done(&wg);
}

static void timeout_main(void *p)
{
	pthread_t t;

	(void)p;
	/* one at a time: they share the mutex */
	kg_wg_add(&wg, 1);
	kg_go(timed_co, NULL);
	kg_wg_wait(&wg);
	kg_wg_add(&wg, 1);
	CO_CHECK(pthread_create(&t, NULL, timed_thread, NULL) == 0, "thread");
	thread_gate_open(&gate, 1);
	kg_wg_wait(&wg);
	pthread_join(t, NULL);
}

TEST(wait_timeout_relocks)
{
	reset();
	ASSERT_EQ(0, run_kg(timeout_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	/* and with no runtime at all (the gate is open) */
	kg_wg_add(&wg, 1);
	timed_thread(NULL);
	ASSERT_EQ(0, co_failures());
	ASSERT_NULL(cv.q.head) TH_LOG("timed-out waiters left the queue");
}

/*
 * A waiter that timed out does not take a signal from a live one: thread
 * A waits with a 1 ms timeout, coroutine B after it without one; A's
 * deadline passes, then one signal: B must get it (else the test hangs).
 */
static _Atomic int a_result = 1;

static void *timing_out_thread(void *p)
{
	(void)p;
	kg_mutex_lock(&mu);
	waiting++;
	atomic_store(&a_result, kg_cond_wait_timeout(&cv, &mu, 1000000));
	kg_mutex_unlock(&mu);
	return NULL;
}

static void live_waiter(void *p)
{
	(void)p;
	kg_mutex_lock(&mu);
	waiting++;
	CO_CHECK(kg_cond_wait(&cv, &mu) == 0, "wait");
	woken++;
	kg_mutex_unlock(&mu);
	kg_wg_done(&wg);
}

static void skip_main(void *p)
{
	pthread_t t;

	(void)p;
	waiting = woken = 0;
	CO_CHECK(pthread_create(&t, NULL, timing_out_thread, NULL) == 0, "A");
	for (;;) {	/* A is queued once it is counted */
		kg_mutex_lock(&mu);
		if (waiting == 1)
			break;
		kg_mutex_unlock(&mu);
		kg_yield();
	}
	kg_mutex_unlock(&mu);
	kg_wg_add(&wg, 1);
	kg_go(live_waiter, NULL);
	for (;;) {
		kg_mutex_lock(&mu);
		if (waiting == 2)
			break;
		kg_mutex_unlock(&mu);
		kg_yield();
	}
	kg_mutex_unlock(&mu);
	pthread_join(t, NULL);	/* A times out; this worker blocks */
	CO_CHECK(atomic_load(&a_result) == -ETIMEDOUT, "A: %d",
		 atomic_load(&a_result));
	kg_mutex_lock(&mu);
	kg_cond_signal(&cv);
	kg_mutex_unlock(&mu);
	kg_wg_wait(&wg);
	CO_CHECK(woken == 1, "B woke: %d", woken);
}

TEST(timed_out_waiter_takes_no_signal)
{
	reset();
	ASSERT_EQ(0, run_kg(skip_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/*
 * Timeouts racing signals: waiters wait with short random timeouts while
 * signallers signal whenever someone is counted as waiting. Every wait
 * ends (no hang), each successful wait matches a distinct signal, and
 * both outcomes happen.
 */
#define RACE_CO 6
#define RACE_TH 2
#define RACE_SIG 2

static long race_iters;
static long signals, grants, timeouts;	/* mu */
static _Atomic int waiters_left;

static void race_waiter(intptr_t who)
{
	uint64_t rnd = harness_seed() * 2654435761u + (uint64_t)who * 17 + 1;
	long i;

	for (i = 0; i < race_iters; i++) {
		int err;

		kg_mutex_lock(&mu);
		waiting++;
		err = kg_cond_wait_timeout(&cv, &mu,
					   20000 + xorshift(&rnd) % 200000);
		waiting--;
		if (err == 0)
			grants++;
		else if (err == -ETIMEDOUT)
			timeouts++;
		else
			CO_CHECK(0, "wait: %d", err);
		kg_mutex_unlock(&mu);
	}
	atomic_fetch_sub(&waiters_left, 1);
	kg_wg_done(&wg);
}

static void race_co(void *p)
{
	race_waiter((intptr_t)p);
}

static void *race_thread(void *p)
{
	thread_gate_wait(&gate);
	race_waiter((intptr_t)p);
	return NULL;
}

static void race_signaller(void *p)
{
	uint64_t rnd = harness_seed() * 2654435761u + (uint64_t)(intptr_t)p;

	while (atomic_load(&waiters_left)) {
		uint64_t r = xorshift(&rnd);

		kg_mutex_lock(&mu);
		if (waiting && r % 3 == 0) {
			kg_cond_signal(&cv);
			signals++;
		}
		kg_mutex_unlock(&mu);
		if (r % 2)
			kg_yield();
		else
			kg_sleep(r % 50000);
	}
	kg_wg_done(&wg);
}

static void race_main(void *p)
{
	pthread_t t[RACE_TH];
	intptr_t i;

	(void)p;
	atomic_store(&waiters_left, RACE_CO + RACE_TH);
	kg_wg_add(&wg, RACE_CO + RACE_TH + RACE_SIG);
	for (i = 0; i < RACE_TH; i++)
		CO_CHECK(pthread_create(&t[i], NULL, race_thread,
					(void *)(100 + i)) == 0,
			 "thread");
	for (i = 0; i < RACE_CO; i++)
		kg_go(race_co, (void *)i);
	for (i = 0; i < RACE_SIG; i++)
		kg_go(race_signaller, (void *)(200 + i));
	thread_gate_open(&gate, RACE_TH);
	kg_wg_wait(&wg);
	for (i = 0; i < RACE_TH; i++)
		pthread_join(t[i], NULL);
}

TEST(timeouts_race_signals)
{
	reset();
	harness_seed();
	waiting = 0;
	signals = grants = timeouts = 0;
	race_iters = scaled(1000, 5);
	ASSERT_EQ(0, run_kg(race_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	TH_LOG("signals %ld, woken by one %ld, timed out %ld", signals, grants,
	       timeouts);
	ASSERT_EQ((RACE_CO + RACE_TH) * race_iters, grants + timeouts);
	ASSERT_LE(grants, signals);
	ASSERT_LT(0, grants);
	ASSERT_LT(0, timeouts);
	ASSERT_NULL(cv.q.head);
}

/* Waiting with the mutex not locked: -EPERM, nothing queued or changed. */
TEST(wait_on_unlocked_mutex_is_eperm)
{
	kg_mutex_t m = KG_MUTEX_INIT;
	kg_cond_t c = KG_COND_INIT;

	ASSERT_EQ(-EPERM, kg_cond_wait(&c, &m));
	ASSERT_EQ(-EPERM, kg_cond_wait_timeout(&c, &m, 1000));
	ASSERT_EQ(0, memcmp(&c, &(kg_cond_t)KG_COND_INIT, sizeof(c)));
	ASSERT_EQ(0, memcmp(&m, &(kg_mutex_t)KG_MUTEX_INIT, sizeof(m)));
	ASSERT_EQ(0, kg_cond_signal(&c));
	ASSERT_EQ(0, kg_cond_broadcast(&c));
}

TEST_HARNESS_MAIN
