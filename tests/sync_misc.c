// SPDX-License-Identifier: MIT
/*
 * sync_misc - kg_once_t (exactly once under 100 concurrent callers,
 * coroutines and threads) and kg_sem_t (counting bound, FIFO hand-over,
 * timeouts racing releases without losing a token, overflow), waits of
 * coroutines main leaves behind (withdrawn, counts exact), and -EINVAL
 * for NULL everywhere in the sync API.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>

#include "harness.h"
#include "kg_test.h"

static kg_wg_t wg;
static struct thread_gate gate;

/* ---------------------------------------------------------------- */
/* Once                                                              */
/* ---------------------------------------------------------------- */

/*
 * 80 coroutines on 2 procs and 20 plain threads call kg_once on one fresh
 * object at the same moment, each round. fn takes its time (it yields);
 * every caller must return after fn did, seeing its plain store, and fn
 * must have run exactly once.
 */
#define ONCE_CO 80
#define ONCE_TH 20

static kg_once_t once;
static _Atomic int fn_calls, start_gate;
static long once_value;			/* written by fn only, plain */

static void once_fn(void *arg)
{
	int i;

	atomic_fetch_add(&fn_calls, 1);
	for (i = 0; i < 5; i++)
		pause_any();
	once_value = (long)(intptr_t)arg;
}

static void once_caller(void)
{
	while (!atomic_load(&start_gate))
		pause_any();
	CO_CHECK(kg_once(&once, once_fn, (void *)(intptr_t)42) == 0, "once");
	CO_CHECK(once_value == 42, "fn's store not seen: %ld", once_value);
	CO_CHECK(atomic_load(&fn_calls) == 1, "fn ran %d times",
		 atomic_load(&fn_calls));
	kg_wg_done(&wg);
}

static void once_co(void *p)
{
	(void)p;
	once_caller();
}

static void *once_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	once_caller();
	return NULL;
}

static void once_main(void *p)
{
	pthread_t t[ONCE_TH];
	int i;

	(void)p;
	kg_wg_add(&wg, ONCE_CO + ONCE_TH);
	for (i = 0; i < ONCE_TH; i++)
		CO_CHECK(pthread_create(&t[i], NULL, once_thread, NULL) == 0,
			 "thread");
	for (i = 0; i < ONCE_CO; i++)
		kg_go(once_co, NULL);
	thread_gate_open(&gate, ONCE_TH);
	atomic_store(&start_gate, 1);
	kg_wg_wait(&wg);
	for (i = 0; i < ONCE_TH; i++)
		pthread_join(t[i], NULL);
}

TEST(once_exactly_once_100_callers)
{
	long r, rounds = scaled(50, 5);

	for (r = 0; r < rounds; r++) {
		once = (kg_once_t)KG_ONCE_INIT;
		wg = (kg_wg_t)KG_WG_INIT;
		gate = (struct thread_gate)THREAD_GATE_INIT;
		atomic_store(&fn_calls, 0);
		atomic_store(&start_gate, 0);
		once_value = 0;
		ASSERT_EQ(0, run_kg(once_main, NULL, 2));
		ASSERT_EQ(1, atomic_load(&fn_calls)) TH_LOG("round %ld", r);
	}
	ASSERT_EQ(0, co_failures());
	/* done stays done: not even a new runtime runs fn again */
	ASSERT_EQ(0, kg_once(&once, once_fn, (void *)(intptr_t)7));
	ASSERT_EQ(1, atomic_load(&fn_calls));
	ASSERT_EQ(42, once_value);
}

TEST(once_threads_without_runtime)
{
	pthread_t t[16];
	long r;
	int i;

	for (r = 0; r < scaled(20, 4); r++) {
		once = (kg_once_t)KG_ONCE_INIT;
		wg = (kg_wg_t)KG_WG_INIT;
		gate = (struct thread_gate)THREAD_GATE_INIT;
		atomic_store(&fn_calls, 0);
		atomic_store(&start_gate, 0);
		once_value = 0;
		kg_wg_add(&wg, 16);
		for (i = 0; i < 16; i++)
			ASSERT_EQ(0, pthread_create(&t[i], NULL, once_thread,
						    NULL));
		thread_gate_open(&gate, 16);
		atomic_store(&start_gate, 1);
		for (i = 0; i < 16; i++)
			pthread_join(t[i], NULL);
		ASSERT_EQ(1, atomic_load(&fn_calls));
	}
	ASSERT_EQ(0, co_failures());
}

/* ---------------------------------------------------------------- */
/* Semaphore                                                         */
/* ---------------------------------------------------------------- */

static kg_sem_t sem;

/*
 * KG_SEM_INIT(3): never more than 3 holders, and 3 reached, among 20
 * coroutines on 2 procs and 2 threads holding across yields.
 */
#define CNT_CO 20
#define CNT_TH 2
#define CNT_TOKENS 3

static _Atomic int holders, max_holders;
static long cnt_iters;

static void count_work(void)
{
	long i;

	for (i = 0; i < cnt_iters; i++) {
		int n, m;

		CO_CHECK(kg_sem_acquire(&sem) == 0, "acquire");
		n = atomic_fetch_add(&holders, 1) + 1;
		CO_CHECK(n <= CNT_TOKENS, "%d holders", n);
		m = atomic_load(&max_holders);
		while (n > m &&
		       !atomic_compare_exchange_weak(&max_holders, &m, n))
			;
		pause_any();
		atomic_fetch_sub(&holders, 1);
		CO_CHECK(kg_sem_release(&sem) == 0, "release");
	}
	kg_wg_done(&wg);
}

static void count_co(void *p)
{
	(void)p;
	count_work();
}

static void *count_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	count_work();
	return NULL;
}

static void count_main(void *p)
{
	pthread_t t[CNT_TH];
	int i;

	(void)p;
	kg_wg_add(&wg, CNT_CO + CNT_TH);
	for (i = 0; i < CNT_TH; i++)
		CO_CHECK(pthread_create(&t[i], NULL, count_thread, NULL) == 0,
			 "thread");
	for (i = 0; i < CNT_CO; i++)
		kg_go(count_co, NULL);
	thread_gate_open(&gate, CNT_TH);
	kg_wg_wait(&wg);
	for (i = 0; i < CNT_TH; i++)
		pthread_join(t[i], NULL);
}

TEST(sem_counts)
{
	int i;

	sem = (kg_sem_t)KG_SEM_INIT(CNT_TOKENS);
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
	cnt_iters = scaled(5000, 10);
	ASSERT_EQ(0, run_kg(count_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	/* how many overlapped is up to the scheduler: never more than 3 */
	ASSERT_GE(CNT_TOKENS, atomic_load(&max_holders));
	/* all tokens back, nobody queued */
	for (i = 0; i < CNT_TOKENS; i++)
		ASSERT_EQ(0, kg_sem_tryacquire(&sem));
	ASSERT_EQ(-EAGAIN, kg_sem_tryacquire(&sem));
	ASSERT_EQ(0u, (uint32_t)(sem.state >> 32));
}

/*
 * On one proc, step by step: of 5 coroutines that each take a token and
 * hold it until told, exactly 3 get in and 2 queue; once the holders let
 * go, the queued ones get theirs.
 */
#define HOLD_CO 5

static kg_wg_t hold_gate;

static void holder(void *p)
{
	(void)p;
	CO_CHECK(kg_sem_acquire(&sem) == 0, "acquire");
	atomic_fetch_add(&holders, 1);
	kg_wg_wait(&hold_gate);
	atomic_fetch_sub(&holders, 1);
	CO_CHECK(kg_sem_release(&sem) == 0, "release");
	kg_wg_done(&wg);
}

static void hold_main(void *p)
{
	int i;

	(void)p;
	kg_wg_add(&hold_gate, 1);
	kg_wg_add(&wg, HOLD_CO);
	for (i = 0; i < HOLD_CO; i++)
		kg_go(holder, NULL);
	for (i = 0; i < 100 && atomic_load(&holders) < CNT_TOKENS; i++)
		kg_yield();
	kg_yield();	/* one more round: nobody else gets in */
	CO_CHECK(atomic_load(&holders) == CNT_TOKENS, "%d holders",
		 atomic_load(&holders));
	CO_CHECK((uint32_t)(sem.state >> 32) == HOLD_CO - CNT_TOKENS,
		 "%u queued", (uint32_t)(sem.state >> 32));
	CO_CHECK(kg_sem_tryacquire(&sem) == -EAGAIN, "none free");
	kg_wg_done(&hold_gate);
	kg_wg_wait(&wg);
}

TEST(sem_holds_n_at_once)
{
	int i;

	sem = (kg_sem_t)KG_SEM_INIT(CNT_TOKENS);
	wg = (kg_wg_t)KG_WG_INIT;
	hold_gate = (kg_wg_t)KG_WG_INIT;
	atomic_store(&holders, 0);
	ASSERT_EQ(0, run_kg(hold_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	for (i = 0; i < CNT_TOKENS; i++)
		ASSERT_EQ(0, kg_sem_tryacquire(&sem));
	ASSERT_EQ(-EAGAIN, kg_sem_tryacquire(&sem));
}

/*
 * FIFO on one proc: waiters queue in spawn order; each release hands the
 * token to the first one directly, so even the releaser cannot take it
 * back with tryacquire before the waiter runs.
 */
#define FIFO_N 10

static int got_order[FIFO_N], ngot;

static void fifo_waiter(void *p)
{
	CO_CHECK(kg_sem_acquire(&sem) == 0, "acquire");
	got_order[ngot++] = (int)(intptr_t)p;
	kg_wg_done(&wg);
}

static void fifo_main(void *p)
{
	intptr_t i;

	(void)p;
	kg_wg_add(&wg, FIFO_N);
	for (i = 0; i < FIFO_N; i++) {
		kg_go(fifo_waiter, (void *)i);
		kg_yield();	/* it runs and queues */
	}
	for (i = 0; i < FIFO_N; i++) {
		CO_CHECK(kg_sem_release(&sem) == 0, "release");
		CO_CHECK(kg_sem_tryacquire(&sem) == -EAGAIN,
			 "token %ld was handed to the waiter", i);
		CO_CHECK(ngot == i, "%d got before the yield", ngot);
		kg_yield();
		CO_CHECK(ngot == i + 1, "%d got after the yield", ngot);
	}
	kg_wg_wait(&wg);
}

TEST(sem_fifo_handover)
{
	int i;

	sem = (kg_sem_t)KG_SEM_INIT(0);
	wg = (kg_wg_t)KG_WG_INIT;
	ngot = 0;
	ASSERT_EQ(0, run_kg(fifo_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	for (i = 0; i < FIFO_N; i++)
		ASSERT_EQ(i, got_order[i]);
}

/* Timeouts: -ETIMEDOUT after at least ns; ns == 0 is the try form. */
#define TMO_NS 20000000ull

static void sem_timeout_check(void)
{
	uint64_t t0, dt;
	int err;

	CO_CHECK(kg_sem_acquire_timeout(&sem, 0) == -EAGAIN, "ns 0, none");
	t0 = kg_now_ns();
	err = kg_sem_acquire_timeout(&sem, TMO_NS);
	dt = kg_now_ns() - t0;
	CO_CHECK(err == -ETIMEDOUT, "got %d", err);
	CO_CHECK(dt >= TMO_NS, "after %llu ns", (unsigned long long)dt);
	CO_CHECK(dt < 50 * TMO_NS, "after %llu ns", (unsigned long long)dt);
	CO_CHECK(kg_sem_release(&sem) == 0, "release");
	CO_CHECK(kg_sem_acquire_timeout(&sem, 0) == 0, "ns 0, one free");
	CO_CHECK(kg_sem_release(&sem) == 0, "release");
	CO_CHECK(kg_sem_acquire_timeout(&sem, TMO_NS) == 0, "one free");
}

static void timeout_co(void *p)
{
	(void)p;
	sem_timeout_check();
	kg_wg_done(&wg);
}

static void *timeout_thread(void *p)
{
	(void)p;
	thread_gate_wait(&gate);
	sem_timeout_check();
	kg_wg_done(&wg);
	return NULL;
}

static void timeout_main(void *p)
{
	pthread_t t;

	(void)p;
	kg_wg_add(&wg, 1);
	kg_go(timeout_co, NULL);
	kg_wg_wait(&wg);
	kg_wg_add(&wg, 1);
	CO_CHECK(pthread_create(&t, NULL, timeout_thread, NULL) == 0, "thread");
	thread_gate_open(&gate, 1);
	kg_wg_wait(&wg);
	pthread_join(t, NULL);
}

TEST(sem_timeout)
{
	sem = (kg_sem_t)KG_SEM_INIT(0);
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
	ASSERT_EQ(0, run_kg(timeout_main, NULL, 2));
	kg_wg_add(&wg, 1);
	timeout_thread(NULL);	/* no runtime (the gate is open) */
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0u, (uint32_t)(sem.state >> 32));
	ASSERT_NULL(sem.q.head);
}

/*
 * Timeouts racing releases lose no token and make none up: waiters take
 * tokens with short random timeouts while releasers put back a known
 * number; in the end taken + left free == released, and no waiter is
 * still counted.
 */
#define RACE_CO 6
#define RACE_TH 2
#define REL_CO 2

static long race_iters, releases_each;
static _Atomic long taken, race_timeouts;

static void race_take(intptr_t who)
{
	uint64_t rnd = harness_seed() * 2654435761u + (uint64_t)who * 13 + 1;
	long i;

	for (i = 0; i < race_iters; i++) {
		uint64_t ns = 10000 + xorshift(&rnd) % 100000;
		int err = kg_sem_acquire_timeout(&sem, ns);

		if (!err)
			atomic_fetch_add(&taken, 1);
		else if (err == -ETIMEDOUT)
			atomic_fetch_add(&race_timeouts, 1);
		else
			CO_CHECK(0, "acquire: %d", err);
	}
	kg_wg_done(&wg);
}

static void race_co(void *p)
{
	race_take((intptr_t)p);
}

static void *race_thread(void *p)
{
	thread_gate_wait(&gate);
	race_take((intptr_t)p);
	return NULL;
}

static void race_releaser(void *p)
{
	uint64_t rnd = harness_seed() * 2654435761u + (uint64_t)(intptr_t)p;
	long i;

	for (i = 0; i < releases_each; i++) {
		uint64_t r = xorshift(&rnd);

		CO_CHECK(kg_sem_release(&sem) == 0, "release");
		if (r % 2)
			kg_yield();
		else
			kg_sleep(r % 40000);
	}
	kg_wg_done(&wg);
}

static void race_main(void *p)
{
	pthread_t t[RACE_TH];
	intptr_t i;

	(void)p;
	kg_wg_add(&wg, RACE_CO + RACE_TH + REL_CO);
	for (i = 0; i < RACE_TH; i++)
		CO_CHECK(pthread_create(&t[i], NULL, race_thread,
					(void *)(100 + i)) == 0,
			 "thread");
	for (i = 0; i < RACE_CO; i++)
		kg_go(race_co, (void *)i);
	for (i = 0; i < REL_CO; i++)
		kg_go(race_releaser, (void *)(200 + i));
	thread_gate_open(&gate, RACE_TH);
	kg_wg_wait(&wg);
	for (i = 0; i < RACE_TH; i++)
		pthread_join(t[i], NULL);
}

TEST(sem_timeouts_race_releases)
{
	long left = 0, released;

	harness_seed();
	sem = (kg_sem_t)KG_SEM_INIT(0);
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
	atomic_store(&taken, 0);
	atomic_store(&race_timeouts, 0);
	race_iters = scaled(1000, 5);
	releases_each = race_iters * (RACE_CO + RACE_TH) / REL_CO / 2;
	released = releases_each * REL_CO;
	ASSERT_EQ(0, run_kg(race_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	while (kg_sem_tryacquire(&sem) == 0)
		left++;
	TH_LOG("released %ld: taken %ld, left %ld; %ld timeouts", released,
	       atomic_load(&taken), left, atomic_load(&race_timeouts));
	ASSERT_EQ(released, atomic_load(&taken) + left);
	ASSERT_LT(0, atomic_load(&race_timeouts));
	ASSERT_EQ(0u, (uint32_t)(sem.state >> 32));
	ASSERT_NULL(sem.q.head);
}

TEST(sem_overflow_and_init)
{
	kg_sem_t s = KG_SEM_INIT(INT32_MAX), z;

	ASSERT_EQ(-EOVERFLOW, kg_sem_release(&s));
	ASSERT_EQ(0, memcmp(&s, &(kg_sem_t)KG_SEM_INIT(INT32_MAX), sizeof(s)));
	ASSERT_EQ(0, kg_sem_tryacquire(&s));
	ASSERT_EQ(0, kg_sem_release(&s));
	ASSERT_EQ(-EOVERFLOW, kg_sem_release(&s));

	ASSERT_EQ(-EINVAL, kg_sem_init(&s, -1));
	ASSERT_EQ(-EINVAL, kg_sem_init(NULL, 1));
	ASSERT_EQ(0, kg_sem_init(&s, 2));
	ASSERT_EQ(0, kg_sem_tryacquire(&s));
	ASSERT_EQ(0, kg_sem_acquire(&s));
	ASSERT_EQ(-EAGAIN, kg_sem_tryacquire(&s));
	ASSERT_EQ(0, kg_sem_release(&s));
	ASSERT_EQ(0, kg_sem_acquire_timeout(&s, 1000));
	/* zeroed memory: a semaphore with no tokens */
	memset(&z, 0, sizeof(z));
	ASSERT_EQ(-EAGAIN, kg_sem_tryacquire(&z));
	ASSERT_EQ(0, kg_sem_release(&z));
	ASSERT_EQ(0, kg_sem_acquire(&z));
}

TEST(sem_threads_without_runtime)
{
	pthread_t t[6];
	int i;

	sem = (kg_sem_t)KG_SEM_INIT(CNT_TOKENS);
	wg = (kg_wg_t)KG_WG_INIT;
	gate = (struct thread_gate)THREAD_GATE_INIT;
	atomic_store(&max_holders, 0);
	cnt_iters = scaled(2000, 10);	/* futex handovers between threads */
	kg_wg_add(&wg, 6);
	for (i = 0; i < 6; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, count_thread, NULL));
	thread_gate_open(&gate, 6);
	for (i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ(0, co_failures());
	ASSERT_GE(CNT_TOKENS, atomic_load(&max_holders));
	ASSERT_EQ(0u, (uint32_t)(sem.state >> 32));
}

/* ---------------------------------------------------------------- */
/* Deadlocks are reported with the sync wait                         */
/* ---------------------------------------------------------------- */

/*
 * A coroutine stuck on each kind of sync object, nothing else alive: the
 * runtime reports the deadlock naming the wait (Go's words) and kg_run
 * returns -EDEADLK.
 */
static kg_mutex_t dl_mu;
static kg_rwmutex_t dl_rw;
static kg_cond_t dl_cv;
static kg_sem_t dl_sem;

static void deadlock_main(void *p)
{
	switch ((int)(intptr_t)p) {
	case 0:
		kg_mutex_lock(&dl_mu);
		kg_mutex_lock(&dl_mu);
		break;
	case 1:
		kg_rwmutex_rlock(&dl_rw);
		kg_rwmutex_lock(&dl_rw);
		break;
	case 2:
		kg_rwmutex_lock(&dl_rw);
		kg_rwmutex_rlock(&dl_rw);
		break;
	case 3:
		kg_mutex_lock(&dl_mu);
		kg_cond_wait(&dl_cv, &dl_mu);
		break;
	case 4:
		kg_sem_acquire(&dl_sem);
		break;
	}
}

TEST(deadlock_names_the_wait)
{
	static const char *const want[] = {
		"[sync.Mutex.Lock", "[sync.RWMutex.Lock", "[sync.RWMutex.RLock",
		"[sync.Cond.Wait", "[semacquire",
	};
	static char out[4096];
	int i;

	for (i = 0; i < 5; i++) {
		dl_mu = (kg_mutex_t)KG_MUTEX_INIT;
		dl_rw = (kg_rwmutex_t)KG_RWMUTEX_INIT;
		dl_cv = (kg_cond_t)KG_COND_INIT;
		dl_sem = (kg_sem_t)KG_SEM_INIT(0);
		ASSERT_EQ(-EDEADLK,
			  run_kg_captured(deadlock_main, (void *)(intptr_t)i,
					  2, out, sizeof(out), NULL))
			TH_LOG("case %d said: %s", i, out);
		ASSERT_NONNULL(strstr(out, "all coroutines are asleep"))
			TH_LOG("case %d said: %s", i, out);
		ASSERT_NONNULL(strstr(out, want[i]))
			TH_LOG("case %d said: %s", i, out);
	}
}

/* ---------------------------------------------------------------- */
/* Left behind at main's return                                      */
/* ---------------------------------------------------------------- */

/*
 * Coroutines waiting on sync objects when main returns never run again
 * (Go drops them too), and their stacks go. The objects outlive kg_run:
 * each wait still queued must be withdrawn and uncounted, so that later
 * calls from plain threads neither wake a coroutine that is gone nor hand
 * it a token, and the counts come out exact. What a coroutine was handed
 * and never returned with stays its own (the starvation-mode handoff:
 * the mutex stays locked, and unlockable); a normal-mode wake-up is
 * passed on (else the mutex's WOKEN flag would stay set and no later
 * unlock would wake anyone).
 */
#define MUTEX_STATE_LOCKED 1u		/* sync.c's state bits */
#define MUTEX_STATE_STARVING 4u

static struct {
	kg_mutex_t mu, mw, ms, cm;
	kg_wg_t wg;
	kg_sem_t sem;
	kg_cond_t cv;
	kg_rwmutex_t rw, rw2;
	_Atomic int waiting, ran_again, phase;
} lb;

enum { LB_MU, LB_MW, LB_MS, LB_WG, LB_SEM, LB_SEMT, LB_CV, LB_RD, LB_WR2,
       LB_RD2, LB_N };

static void lb_co(void *p)
{
	int kind = (int)(intptr_t)p;

	atomic_fetch_add(&lb.waiting, 1);
	switch (kind) {
	case LB_MU:
		kg_mutex_lock(&lb.mu);
		break;
	case LB_MW:
		kg_mutex_lock(&lb.mw);
		break;
	case LB_MS:
		kg_mutex_lock(&lb.ms);
		break;
	case LB_WG:
		kg_wg_wait(&lb.wg);
		break;
	case LB_SEM:
		kg_sem_acquire(&lb.sem);
		break;
	case LB_SEMT:
		kg_sem_acquire_timeout(&lb.sem, 3600ull * 1000000000ull);
		break;
	case LB_CV:
		kg_mutex_lock(&lb.cm);
		kg_cond_wait(&lb.cv, &lb.cm);
		break;
	case LB_RD:
		kg_rwmutex_rlock(&lb.rw);
		break;
	case LB_WR2:
		kg_rwmutex_lock(&lb.rw2);
		break;
	default:
		kg_rwmutex_rlock(&lb.rw2);
		break;
	}
	atomic_store(&lb.ran_again, 1);	/* must not happen: main is gone */
}

/* Until n coroutines have come and (one proc) parked. */
static void lb_settle(int n)
{
	while (atomic_load(&lb.waiting) < n)
		kg_yield();
	kg_yield();
}

/*
 * A plain thread drives lb.ms into starvation mode with lb_co(LB_MS) as
 * its waiter. It holds ms while the coroutine waits over 1 ms, wakes it
 * and takes ms back while main keeps the one proc busy; main then lets
 * the coroutine run: starving, it finds ms locked, marks STARVING and
 * waits again. The thread hands ms over while main, busy again, is about
 * to return before the coroutine can run.
 */
static void *lb_starver(void *p)
{
	(void)p;
	usleep(3000);
	kg_mutex_unlock(&lb.ms);
	kg_mutex_lock(&lb.ms);
	atomic_store(&lb.phase, 1);
	while (atomic_load(&lb.phase) < 2)
		usleep(100);
	kg_mutex_unlock(&lb.ms);	/* starvation mode: hands it over */
	atomic_store(&lb.phase, 3);
	return NULL;
}

/* Busy until the starver says phase (no switch: nothing else runs). */
static void lb_spin_until(int phase)
{
	while (atomic_load(&lb.phase) < phase)
		;
}

static void lb_main(void *p)
{
	pthread_t *starver = p;
	int kind;

	kg_mutex_lock(&lb.mu);
	kg_mutex_lock(&lb.mw);
	kg_wg_add(&lb.wg, 1);
	kg_rwmutex_lock(&lb.rw);
	kg_rwmutex_rlock(&lb.rw2);
	for (kind = 0; kind < LB_N; kind++) {
		kg_go(lb_co, (void *)(intptr_t)kind);
		lb_settle(kind + 1);	/* in order: RD2 queues behind WR2 */
	}
	CO_CHECK(pthread_create(starver, NULL, lb_starver, NULL) == 0,
		 "thread");
	lb_spin_until(1);
	kg_yield();			/* the ms waiter marks STARVING */
	CO_CHECK(__atomic_load_n(&lb.ms.state, __ATOMIC_ACQUIRE) &
			 MUTEX_STATE_STARVING,
		 "ms state %#x", lb.ms.state);
	atomic_store(&lb.phase, 2);
	lb_spin_until(3);
	/* wake the waiter on mw (normal mode): it is queued to run next */
	kg_mutex_unlock(&lb.mw);
}	/* and return before the woken ones run */

static void *lb_lock_unlock(void *p)
{
	kg_mutex_lock(p);
	kg_mutex_unlock(p);
	return NULL;
}

TEST(left_behind_waiters_are_withdrawn)
{
	/*
	 * sysmon, with no region marked blocking: the one proc is never
	 * handed to another thread, so nothing runs while main spins (a
	 * kernel backend would hand it over whenever main's thread blocks,
	 * inside ThreadSanitizer's runtime for one).
	 */
	struct kg_config cfg = { .procs = 1, .backend = "sysmon" };
	struct timespec ts;
	pthread_t starver, t;

	lb.mu = lb.mw = lb.ms = lb.cm = (kg_mutex_t)KG_MUTEX_INIT;
	lb.wg = (kg_wg_t)KG_WG_INIT;
	lb.sem = (kg_sem_t)KG_SEM_INIT(0);
	lb.cv = (kg_cond_t)KG_COND_INIT;
	lb.rw = lb.rw2 = (kg_rwmutex_t)KG_RWMUTEX_INIT;
	ASSERT_EQ(0, kg_mutex_lock(&lb.ms));	/* the starver's, from here */
	ASSERT_EQ(0, kg_run(lb_main, &starver, &cfg));
	ASSERT_EQ(0, pthread_join(starver, NULL));
	ASSERT_EQ(0, co_failures());
	EXPECT_EQ(0, atomic_load(&lb.ran_again));

	/* mu: main still holds it; its waiter is gone and uncounted */
	EXPECT_EQ(MUTEX_STATE_LOCKED, lb.mu.state);
	EXPECT_EQ(0, kg_mutex_unlock(&lb.mu));
	EXPECT_EQ(0u, lb.mu.state);
	EXPECT_EQ(0u, lb.mu.sema);
	/* mw: the woken waiter's turn was passed on: unlocks wake again */
	EXPECT_EQ(0u, lb.mw.state);
	ASSERT_EQ(0, kg_mutex_lock(&lb.mw));
	ASSERT_EQ(0, pthread_create(&t, NULL, lb_lock_unlock, &lb.mw));
	usleep(20000);
	EXPECT_EQ(0, kg_mutex_unlock(&lb.mw));
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	ASSERT_EQ(0, pthread_timedjoin_np(t, NULL, &ts))
		TH_LOG("a waiter was not woken by the unlock");
	EXPECT_EQ(0u, lb.mw.state);
	/* ms: handed over in starvation mode, it stays locked, normally */
	EXPECT_EQ(MUTEX_STATE_LOCKED, lb.ms.state);
	EXPECT_EQ(0, kg_mutex_unlock(&lb.ms));
	EXPECT_EQ(0, kg_mutex_trylock(&lb.ms));
	EXPECT_EQ(0, kg_mutex_unlock(&lb.ms));
	EXPECT_EQ(0u, lb.ms.state);

	/* wg: counter 1, no waiter */
	EXPECT_EQ((uint64_t)1 << 32, lb.wg.state);
	EXPECT_EQ(NULL, lb.wg.waiters);
	EXPECT_EQ(0, kg_wg_done(&lb.wg));
	EXPECT_EQ(0, kg_wg_wait(&lb.wg));

	/* sem: both waiters gone; a release leaves its token free */
	EXPECT_EQ(0u, lb.sem.state);
	EXPECT_EQ(0, kg_sem_release(&lb.sem));
	EXPECT_EQ(0, kg_sem_tryacquire(&lb.sem));
	EXPECT_EQ(-EAGAIN, kg_sem_tryacquire(&lb.sem));

	/* cond: the waiter let go of cm and left the queue */
	EXPECT_EQ(NULL, lb.cv.q.head);
	EXPECT_EQ(0, kg_cond_signal(&lb.cv));
	EXPECT_EQ(0, kg_mutex_trylock(&lb.cm));
	EXPECT_EQ(0, kg_mutex_unlock(&lb.cm));

	/* rw: main's write lock; the reader queued behind it is gone */
	EXPECT_EQ(0, kg_rwmutex_unlock(&lb.rw));
	EXPECT_EQ(0, lb.rw.readers);
	EXPECT_EQ(0u, lb.rw.rsema);
	EXPECT_EQ(0, kg_rwmutex_trylock(&lb.rw));
	EXPECT_EQ(0, kg_rwmutex_unlock(&lb.rw));

	/*
	 * rw2: main's read lock; the writer waiting for it and the reader
	 * behind the writer are gone: the writer's announcement undone,
	 * its mutex free. Only main's read lock is left.
	 */
	EXPECT_EQ(1, lb.rw2.readers);
	EXPECT_EQ(0, lb.rw2.departing);
	EXPECT_EQ(0u, lb.rw2.w.state);
	EXPECT_EQ(-EBUSY, kg_rwmutex_trylock(&lb.rw2));
	EXPECT_EQ(0, kg_rwmutex_runlock(&lb.rw2));
	EXPECT_EQ(0, kg_rwmutex_trylock(&lb.rw2));
	EXPECT_EQ(0, kg_rwmutex_unlock(&lb.rw2));
	EXPECT_EQ(0, kg_rwmutex_tryrlock(&lb.rw2));
	EXPECT_EQ(0, kg_rwmutex_runlock(&lb.rw2));
	EXPECT_EQ(0u, lb.rw2.wsema);
	EXPECT_EQ(0u, lb.rw2.rsema);
}

/* ---------------------------------------------------------------- */
/* Bad inputs                                                        */
/* ---------------------------------------------------------------- */

static void noop(void *p)
{
	(void)p;
}

TEST(null_is_einval)
{
	kg_mutex_t m = KG_MUTEX_INIT;
	kg_cond_t c = KG_COND_INIT;
	kg_once_t o = KG_ONCE_INIT;

	ASSERT_EQ(-EINVAL, kg_mutex_lock(NULL));
	ASSERT_EQ(-EINVAL, kg_mutex_trylock(NULL));
	ASSERT_EQ(-EINVAL, kg_mutex_unlock(NULL));

	ASSERT_EQ(-EINVAL, kg_rwmutex_rlock(NULL));
	ASSERT_EQ(-EINVAL, kg_rwmutex_tryrlock(NULL));
	ASSERT_EQ(-EINVAL, kg_rwmutex_runlock(NULL));
	ASSERT_EQ(-EINVAL, kg_rwmutex_lock(NULL));
	ASSERT_EQ(-EINVAL, kg_rwmutex_trylock(NULL));
	ASSERT_EQ(-EINVAL, kg_rwmutex_unlock(NULL));

	ASSERT_EQ(-EINVAL, kg_cond_wait(NULL, &m));
	ASSERT_EQ(-EINVAL, kg_cond_wait(&c, NULL));
	ASSERT_EQ(-EINVAL, kg_cond_wait_timeout(NULL, &m, 1));
	ASSERT_EQ(-EINVAL, kg_cond_wait_timeout(&c, NULL, 1));
	ASSERT_EQ(-EINVAL, kg_cond_signal(NULL));
	ASSERT_EQ(-EINVAL, kg_cond_broadcast(NULL));

	ASSERT_EQ(-EINVAL, kg_once(NULL, noop, NULL));
	ASSERT_EQ(-EINVAL, kg_once(&o, NULL, NULL));
	ASSERT_EQ(0u, o.done) TH_LOG("a failed call does not use up the once");

	ASSERT_EQ(-EINVAL, kg_sem_init(NULL, 0));
	ASSERT_EQ(-EINVAL, kg_sem_acquire(NULL));
	ASSERT_EQ(-EINVAL, kg_sem_tryacquire(NULL));
	ASSERT_EQ(-EINVAL, kg_sem_acquire_timeout(NULL, 0));
	ASSERT_EQ(-EINVAL, kg_sem_acquire_timeout(NULL, 1000));
	ASSERT_EQ(-EINVAL, kg_sem_release(NULL));

	/* the objects passed beside a NULL are untouched */
	ASSERT_EQ(0, memcmp(&m, &(kg_mutex_t)KG_MUTEX_INIT, sizeof(m)));
	ASSERT_EQ(0, memcmp(&c, &(kg_cond_t)KG_COND_INIT, sizeof(c)));
}

TEST_HARNESS_MAIN
