// SPDX-License-Identifier: MIT
/*
 * sched_procs - procs run coroutines in parallel; work queued on one proc
 * is stolen by the others.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sys/socket.h>

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

/*
 * Mixed stress, more procs than CPUs: 200 nodes x 50 leaves that yield,
 * sleep and spawn; every round counts exactly 10,000 leaves.
 */
static _Atomic long mixed_count;
static kg_wg_t mixed_wg;

static void mixed_leaf(void *p)
{
	long k = (long)(intptr_t)p, i;

	for (i = 0; i < k % 5; i++)
		kg_yield();
	if (k % 3 == 0)
		kg_sleep((uint64_t)(k % 7) * 10000);
	atomic_fetch_add(&mixed_count, 1);
	kg_wg_done(&mixed_wg);
}

static void mixed_node(void *p)
{
	long k = (long)(intptr_t)p, i;

	for (i = 0; i < 50; i++) {
		kg_wg_add(&mixed_wg, 1);
		kg_go(mixed_leaf, (void *)(intptr_t)(k * 50 + i));
		if (i % 9 == 0)
			kg_yield();
	}
	kg_wg_done(&mixed_wg);
}

static void mixed_main(void *p)
{
	long r, i, rounds = (long)(intptr_t)p;

	for (r = 0; r < rounds; r++) {
		atomic_store(&mixed_count, 0);
		kg_wg_add(&mixed_wg, 200);
		for (i = 0; i < 200; i++)
			kg_go(mixed_node, (void *)(intptr_t)i);
		kg_wg_wait(&mixed_wg);
		CO_CHECK(atomic_load(&mixed_count) == 10000,
			 "round %ld counted %ld", r, atomic_load(&mixed_count));
	}
}

FIXTURE(mixed) {
	int unused;
};

FIXTURE_VARIANT(mixed) {
	unsigned int procs;
};

FIXTURE_VARIANT_ADD(mixed, procs1) { .procs = 1 };
FIXTURE_VARIANT_ADD(mixed, procs3) { .procs = 3 };
FIXTURE_VARIANT_ADD(mixed, procs8) { .procs = 8 };

FIXTURE_SETUP(mixed)
{
	mixed_wg = (kg_wg_t)KG_WG_INIT;
}

FIXTURE_TEARDOWN(mixed)
{
}

TEST_F_TIMEOUT(mixed, every_leaf_counted, 120)
{
	ASSERT_EQ(0, run_kg(mixed_main, (void *)(intptr_t)scaled(20, 4),
			    variant->procs));
	ASSERT_EQ(0, co_failures());
}

/*
 * libc from coroutines that migrate between workers: allocation, stdio
 * formatting, errno read right after the call that set it, reentrant
 * tokenizing, all correct however often the coroutine moves.
 */
static _Atomic long libc_bad, migrations;
static kg_wg_t libc_wg;

static void libc_user(void *p)
{
	long i, id = (long)(intptr_t)p, tid = gettid_();

	for (i = 0; i < 300; i++) {
		char buf[64], *save = NULL, *tok;
		char *heap = malloc(100 + (size_t)(i % 50));
		int e;

		if (!heap) {
			atomic_fetch_add(&libc_bad, 1);
			continue;
		}
		snprintf(heap, 100, "%ld,%ld,x", id, i);
		kg_yield();
		errno = 0;
		if (strtol("99999999999999999999999", NULL, 10) != LONG_MAX)
			atomic_fetch_add(&libc_bad, 1);
		e = errno;	/* read before the next switch point */
		kg_yield();
		if (e != ERANGE)
			atomic_fetch_add(&libc_bad, 1);
		tok = strtok_r(heap, ",", &save);
		kg_yield();
		if (!tok || atol(tok) != id)
			atomic_fetch_add(&libc_bad, 1);
		tok = strtok_r(NULL, ",", &save);
		if (!tok || atol(tok) != i)
			atomic_fetch_add(&libc_bad, 1);
		snprintf(buf, sizeof(buf), "%s", heap);
		free(heap);
		if (gettid_() != tid) {
			atomic_fetch_add(&migrations, 1);
			tid = gettid_();
		}
	}
	kg_wg_done(&libc_wg);
}

static void libc_main(void *p)
{
	long i;

	(void)p;
	kg_wg_add(&libc_wg, 100);
	for (i = 0; i < 100; i++)
		kg_go(libc_user, (void *)(intptr_t)i);
	kg_wg_wait(&libc_wg);
}

TEST(libc_calls_across_migration)
{
	libc_wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(libc_main, NULL, 2));
	ASSERT_EQ(0, atomic_load(&libc_bad));
	TH_LOG("coroutines moved between workers %ld times",
	       atomic_load(&migrations));
}

/*
 * errno travels with the coroutine: a value set before a switch point is
 * there after it, on whatever thread the coroutine resumes, although the
 * other coroutines set their own errno on those threads meanwhile. Read
 * through out-of-line functions, so each read takes the current thread's
 * address (the documented limit: an address taken before the switch is
 * the old thread's errno, a different variable once the thread changed).
 */
static __attribute__((noinline, noipa)) int errno_now(void)
{
	return errno;
}

static __attribute__((noinline, noipa)) int *errno_addr(void)
{
	return &errno;
}

static _Atomic long errno_bad, errno_moves, errno_addr_moved;
static kg_wg_t errno_wg;

static void errno_user(void *p)
{
	long id = (long)(intptr_t)p, i;

	for (i = 0; i < scaled(3000, 10); i++) {
		int want = (int)(1000 + id * 100000 + i);
		long tid = gettid_();
		int *addr = errno_addr();

		errno = want;
		switch (i % 3) {
		case 0:
			kg_yield();
			break;
		case 1:
			kg_sleep(i % 7 ? 0 : 20000);
			break;
		default:
			/* a call that may go through the scheduler */
			kg_wg_add(&errno_wg, 0);
			kg_yield();
			break;
		}
		if (errno_now() != want)
			atomic_fetch_add(&errno_bad, 1);
		if (gettid_() != tid) {
			atomic_fetch_add(&errno_moves, 1);
			if (errno_addr() != addr)
				atomic_fetch_add(&errno_addr_moved, 1);
		}
	}
	kg_wg_done(&errno_wg);
}

static void errno_main(void *p)
{
	long i;

	(void)p;
	kg_wg_add(&errno_wg, 16);
	for (i = 0; i < 16; i++)
		kg_go(errno_user, (void *)(intptr_t)i);
	kg_wg_wait(&errno_wg);
}

TEST(errno_travels_with_the_coroutine)
{
	errno_wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(errno_main, NULL, 2));
	ASSERT_EQ(0, atomic_load(&errno_bad));
	/* (moves are likely, not certain: errno_after_a_taken_proc_sysmon
	 * forces one) */
	TH_LOG("%ld moves between threads", atomic_load(&errno_moves));
	/* the limit: each move changed the variable errno names */
	ASSERT_EQ(atomic_load(&errno_moves), atomic_load(&errno_addr_moved));
}

/*
 * The server pattern of go.md under sysmon: a marked call fails, the proc
 * was taken meanwhile (the region lasted), and kg_blocking_end sends the
 * coroutine through the scheduler to another thread: errno is still the
 * failed call's. A pipe written 5 ms later keeps the region long enough.
 */
struct errno_region {
	int pipe[2];
	int seen;
	long tid_before, tid_after;
};

static void *late_writer(void *p)
{
	struct errno_region *r = p;

	usleep(5000);
	(void)!write(r->pipe[1], "x", 1);
	return NULL;
}

/* holds the proc it was handed for 30 ms: main must come back elsewhere */
static void busy_other(void *p)
{
	uint64_t until = kg_now_ns() + 30 * MS;

	(void)p;
	while (kg_now_ns() < until)
		;
}

static void errno_region_main(void *p)
{
	struct errno_region *r = p;
	pthread_t t;
	char c;

	kg_go(busy_other, NULL);	/* the proc has work: sysmon takes it */
	CO_CHECK(pthread_create(&t, NULL, late_writer, r) == 0, "thread");
	r->tid_before = gettid_();
	kg_blocking_begin();
	(void)!read(r->pipe[0], &c, 1);
	/* fails at once: EBADF on this thread */
	(void)!accept4(-1, NULL, NULL, 0);
	kg_blocking_end();
	r->seen = errno_now();
	r->tid_after = gettid_();
	pthread_join(t, NULL);
}

TEST(errno_after_a_taken_proc_sysmon)
{
	struct kg_config cfg = { .procs = 1, .backend = "sysmon" };
	int moved = 0, i;

	/*
	 * busy_other must keep the proc it gets busy, so that no proc is idle
	 * when main comes back and it queues for one (on another thread): a
	 * time slice would take that proc from busy_other and leave it idle.
	 */
	setenv("KGREEN_SLICE", "off", 1);
	for (i = 0; i < 5; i++) {
		struct errno_region r = { .seen = -1 };

		ASSERT_EQ(0, pipe(r.pipe));
		ASSERT_EQ(0, kg_run(errno_region_main, &r, &cfg));
		ASSERT_EQ(EBADF, r.seen);
		moved += r.tid_before != r.tid_after;
		close(r.pipe[0]);
		close(r.pipe[1]);
	}
	unsetenv("KGREEN_SLICE");
	TH_LOG("the coroutine resumed on another thread in %d of 5 runs",
	       moved);
	ASSERT_LT(0, moved);
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
