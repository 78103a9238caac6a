// SPDX-License-Identifier: MIT
/*
 * sched_sleep - kg_sleep parks only the coroutine, wakes in deadline
 * order, never early, and other procs fire a busy proc's timers.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

static kg_wg_t wg;
static _Atomic int nwoke;
static int woke[16];
static uint64_t early[16];

struct sleeper {
	int idx;
	uint64_t ns;
	uint64_t until;		/* absolute deadline, when set */
};

static struct sleeper sl[16];

static void sleeper(void *p)
{
	struct sleeper *s = p;
	uint64_t t0 = kg_now_ns(), dt, ns = s->ns;

	/*
	 * With an absolute deadline, a slow start (sanitizers, a loaded
	 * machine) cannot reorder the deadlines the test compares.
	 */
	if (s->until)
		ns = s->until > t0 ? s->until - t0 : 0;
	CO_CHECK(kg_sleep(ns) == 0, "kg_sleep");
	dt = kg_now_ns() - t0;
	if (dt < ns)
		early[s->idx] = ns - dt;
	woke[atomic_fetch_add(&nwoke, 1)] = s->idx;
	kg_wg_done(&wg);
}

static void order_main(void *p)
{
	int i, n = 8;
	uint64_t t0 = kg_now_ns();

	(void)p;
	kg_wg_add(&wg, n);
	/* spawned longest first: the wake order must still be by deadline */
	for (i = 0; i < n; i++) {
		sl[i].idx = i;
		sl[i].ns = (uint64_t)(n - i) * 15 * MS;
		sl[i].until = t0 + 100 * MS + sl[i].ns;
		kg_go(sleeper, &sl[i]);
	}
	kg_wg_wait(&wg);
}

FIXTURE(sleep) {
	int procs;
};

FIXTURE_VARIANT(sleep) {
	unsigned int procs;
};

FIXTURE_VARIANT_ADD(sleep, one_proc) { .procs = 1 };
FIXTURE_VARIANT_ADD(sleep, two_procs) { .procs = 2 };

FIXTURE_SETUP(sleep)
{
	self->procs = (int)variant->procs;
	wg = (kg_wg_t)KG_WG_INIT;
	atomic_store(&nwoke, 0);
	memset(early, 0, sizeof(early));
}

FIXTURE_TEARDOWN(sleep)
{
}

/* Sleepers wake in deadline order, each after at least its duration. */
TEST_F(sleep, wake_in_deadline_order)
{
	int i;

	ASSERT_EQ(0, run_kg(order_main, NULL, variant->procs));
	ASSERT_EQ(8, atomic_load(&nwoke));
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(7 - i, woke[i]) TH_LOG("wake #%d", i);
		ASSERT_EQ(0ull, early[i]) TH_LOG("sleeper %d woke early", i);
	}
}

static uint64_t elapsed;

static void measure_main(void *p)
{
	uint64_t t0 = kg_now_ns();

	kg_sleep((uint64_t)(uintptr_t)p);
	elapsed = kg_now_ns() - t0;
}

/* A loose bound: at least the duration, and not wildly more. */
TEST_F(sleep, duration_bounds)
{
	ASSERT_EQ(0, run_kg(measure_main, (void *)(uintptr_t)(50 * MS),
			    variant->procs));
	ASSERT_GE(elapsed, 50 * MS);
	ASSERT_LT(elapsed, 50 * MS + 500 * MS);
}

/* kg_sleep(0) is a yield; from a plain thread kg_sleep sleeps the thread. */
static void zero_main(void *p)
{
	(void)p;
	CO_CHECK(kg_sleep(0) == 0, "sleep 0");
}

TEST(sleep_zero_and_outside)
{
	uint64_t t0 = kg_now_ns();

	ASSERT_EQ(0, run_kg(zero_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	t0 = kg_now_ns();
	ASSERT_EQ(0, kg_sleep(20 * MS));
	ASSERT_GE(kg_now_ns() - t0, 20 * MS);
}

/*
 * Timer stealing: a coroutine arms its timer on proc P, then the
 * coroutine left on P computes for 400 ms without yielding. The sleeper
 * must still wake near its 20 ms deadline: the other proc fires P's timer.
 */
static uint64_t steal_woke_after;
static _Atomic int stop_busy;
static _Atomic long sleeper_tid;
static int scenario_runs;

static void short_sleeper(void *p)
{
	uint64_t t0 = kg_now_ns();

	(void)p;
	atomic_store(&sleeper_tid, gettid_());
	kg_sleep(20 * MS);
	steal_woke_after = kg_now_ns() - t0;
	atomic_store(&stop_busy, 1);
	kg_wg_done(&wg);
}

static void busy_main(void *p)
{
	uint64_t t0;
	struct kg_stats st;
	int attempt;

	(void)p;
	/*
	 * The sleeper must arm its timer on this proc; another proc may
	 * steal it before it runs. Retry until it ran on this thread.
	 */
	for (attempt = 0; attempt < 20; attempt++) {
		atomic_store(&stop_busy, 0);
		atomic_store(&sleeper_tid, 0);
		wg = (kg_wg_t)KG_WG_INIT;
		kg_wg_add(&wg, 1);
		kg_go(short_sleeper, NULL);
		kg_yield();	/* the sleeper runs here and parks */
		if (atomic_load(&sleeper_tid) != gettid_()) {
			kg_wg_wait(&wg);
			continue;
		}
		t0 = kg_now_ns();
		while (!atomic_load(&stop_busy) &&
		       kg_now_ns() - t0 < 400 * MS)
			;	/* no scheduler entry: this proc fires nothing */
		kg_wg_wait(&wg);
		kg_stats(&st);
		CO_CHECK(st.timer_steals >= 1, "timer_steals %llu",
			 (unsigned long long)st.timer_steals);
		scenario_runs++;
		break;
	}
}

TEST(busy_proc_timers_are_stolen)
{
	/* the busy loop must keep its proc: no time slice takes it (with
	 * one, the timer fires on the proc's new worker, not by a steal;
	 * sched_slice tests that) */
	setenv("KGREEN_SLICE", "off", 1);
	ASSERT_EQ(0, run_kg(busy_main, NULL, 2));
	unsetenv("KGREEN_SLICE");
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(1, scenario_runs);
	ASSERT_GE(steal_woke_after, 20 * MS);
	ASSERT_LT(steal_woke_after, 200 * MS);
}

/* Many sleepers with random durations: all wake, none early. */
static _Atomic int many_early, many_done;

static void random_sleeper(void *p)
{
	uint64_t ns = (uint64_t)(uintptr_t)p, t0 = kg_now_ns();

	kg_sleep(ns);
	if (kg_now_ns() - t0 < ns)
		atomic_fetch_add(&many_early, 1);
	atomic_fetch_add(&many_done, 1);
	kg_wg_done(&wg);
}

static void many_main(void *p)
{
	long i, n = (long)(intptr_t)p;
	unsigned int seed = harness_seed();

	kg_wg_add(&wg, n);
	for (i = 0; i < n; i++)
		kg_go(random_sleeper,
		      (void *)(uintptr_t)((uint64_t)(rand_r(&seed) % 50) * MS /
					  10));
	kg_wg_wait(&wg);
}

TEST(many_random_sleepers)
{
	long n = scaled(20000, 10);

	wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(many_main, (void *)(intptr_t)n, 2));
	ASSERT_EQ(n, atomic_load(&many_done));
	ASSERT_EQ(0, atomic_load(&many_early));
}

/* An idle runtime burns no CPU: main sleeps 300 ms, the process uses
 * (far) less than 30 ms of CPU meanwhile. */
static double cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 +
	       ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3;
}

static double idle_cpu;

static void idle_main(void *p)
{
	double c0;

	(void)p;
	kg_sleep(20 * MS);	/* let the other workers settle */
	c0 = cpu_ms();
	kg_sleep(300 * MS);
	idle_cpu = cpu_ms() - c0;
}

TEST(idle_runtime_burns_no_cpu)
{
	ASSERT_EQ(0, run_kg(idle_main, NULL, 2));
	ASSERT_LT(idle_cpu, 30.0);
}

/*
 * With every proc busy, a worker that parks does not spin on a due timer
 * it has no proc to fire. One proc: a coroutine blocks 10 ms (marked, so
 * handed off under every backend); main, moved to another worker, arms a
 * 1 ms kg_after timer and computes 60 ms without entering the scheduler.
 * The blocked worker comes back with the timer due and no proc idle, and
 * parks. The process's CPU time over those 60 ms stays near 60 ms (a
 * spinning worker doubled it on this 2-CPU machine); the timer fires once
 * main parks.
 */
static double busy_cpu, busy_wall;

static void spare_maker(void *p)
{
	struct timespec ts = { 0, 10 * MS };

	(void)p;
	kg_blocking_begin();
	syscall(SYS_nanosleep, &ts, NULL);
	kg_blocking_end();
	kg_wg_done(&wg);
}

static void spare_main(void *p)
{
	struct kg_stats st;
	kg_chan_t *tick;
	uint64_t t0, v;
	double c0;

	(void)p;
	kg_wg_add(&wg, 1);
	kg_go(spare_maker, NULL);
	kg_yield();		/* it blocks; main goes on elsewhere */
	tick = kg_after(MS);
	CO_CHECK(tick != NULL, "kg_after");
	c0 = cpu_ms();
	t0 = kg_now_ns();
	while (kg_now_ns() - t0 < 60 * MS)
		;	/* the only proc is busy: its timer waits */
	busy_wall = (kg_now_ns() - t0) / 1e6;
	busy_cpu = cpu_ms() - c0;
	kg_stats(&st);
	CO_CHECK(st.handoffs >= 1, "the blocked worker kept its proc");
	CO_CHECK(tick && kg_chan_recv(tick, &v) == 0, "the timer's value");
	kg_chan_free(tick);
	kg_wg_wait(&wg);
}

TEST(parked_workers_do_not_spin_on_a_busy_procs_timer)
{
	wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(spare_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	TH_LOG("busy %.1f ms wall, %.1f ms CPU", busy_wall, busy_cpu);
	ASSERT_LT(busy_cpu, busy_wall * 1.4);
}

TEST_HARNESS_MAIN
