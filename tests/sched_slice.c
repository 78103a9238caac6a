// SPDX-License-Identifier: MIT
/*
 * sched_slice - time slicing: a coroutine that runs for a slice without a
 * kgreen call loses its proc, so that the coroutines queued behind it run;
 * it keeps running on its thread and comes back through the scheduler at
 * its next kgreen call (Documentation/threads.md, "Time slicing").
 *
 * Each test runs on the kernel backend (bpf here, kmod in the VM:
 * KG_TEST_KBACKEND) and on sysmon. A ticker sleeps 10 ms at a time beside
 * coroutines that spin without calling kgreen ("hogs"); without slicing
 * the ticker waits for the whole hog.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

static const char *kbackend(void)
{
	const char *b = getenv("KG_TEST_KBACKEND");

	return b && *b ? b : "bpf";
}

/* Sanitizers slow everything, timers included: widen the bounds. */
static uint64_t slack(uint64_t ns)
{
	const char *m = getenv("KG_TEST_TIMEOUT_MULT");
	long k = m && atol(m) > 0 ? atol(m) : 1;

	return ns * (uint64_t)(KG_TEST_SANITIZED ? 2 * k : k);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* The scenario: hogs beside a ticker                                  */
/* ------------------------------------------------------------------ */

struct scen {
	unsigned int procs, hogs;
	uint64_t hog_ns;		/* each hog spins this long */
	unsigned int go_flags;		/* kg_go_opts flags of the hogs */
	int hog_kind;			/* HOG_SPIN, HOG_QSORT, HOG_MUTEX */
	/* results */
	_Atomic int hogs_running;
	uint64_t max_gap, ticks;	/* while a hog runs */
	uint64_t hogs_ns;		/* first hog start to last hog end */
	uint64_t max_out;		/* most coroutines off their procs */
	uint32_t max_workers;
	struct kg_stats st;
	_Atomic uint64_t t0;		/* when the hogs were spawned */
	_Atomic uint64_t t_done;	/* when the last one ended */
	_Atomic int done;		/* the hogs are done */
	kg_wg_t wg, tick_wg;
	kg_mutex_t mu;
	long in_mu, mu_violations, mu_waiters_done;
};

enum { HOG_SPIN, HOG_QSORT, HOG_MUTEX };

static void spin_for(uint64_t ns)
{
	uint64_t t0 = mono_ns();
	volatile uint64_t x = 0;

	while (mono_ns() - t0 < ns)
		x++;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

static void hog(void *arg)
{
	struct scen *s = arg;

	atomic_fetch_add(&s->hogs_running, 1);
	if (s->hog_kind == HOG_QSORT) {
		/* a long libc call: about as long as hog_ns spins */
		size_t n = 4u << 20, i;
		int *v = malloc(n * sizeof(*v));
		uint32_t r = 12345;

		if (v) {
			for (i = 0; i < n; i++) {
				r = r * 1103515245u + 12345u;
				v[i] = (int)(r >> 1);
			}
			qsort(v, n, sizeof(*v), cmp_int);
			for (i = 1; i < n; i++)
				if (v[i - 1] > v[i])
					break;
			CO_CHECK(i == n, "qsort left element %zu out of order", i);
			free(v);
		}
	} else if (s->hog_kind == HOG_MUTEX) {
		kg_mutex_lock(&s->mu);
		s->in_mu++;
		spin_for(s->hog_ns);	/* holding the lock */
		s->in_mu--;
		kg_mutex_unlock(&s->mu);
	} else {
		spin_for(s->hog_ns);
	}
	atomic_fetch_sub(&s->hogs_running, 1);
	kg_wg_done(&s->wg);
}

/* Waits on the mutex the hog holds; checks mutual exclusion. */
static void mu_waiter(void *arg)
{
	struct scen *s = arg;

	kg_mutex_lock(&s->mu);
	if (s->in_mu)
		s->mu_violations++;
	s->in_mu++;
	kg_yield();
	s->in_mu--;
	s->mu_waiters_done++;
	kg_mutex_unlock(&s->mu);
	kg_wg_done(&s->wg);
}

/*
 * Ticks every 10 ms until the hogs are done; the gaps that end after the
 * first hog was spawned count (the one that spans the hog's start is the
 * one that waits for the first preemption).
 */
static void ticker(void *arg)
{
	struct scen *s = arg;
	uint64_t last = mono_ns();

	while (!atomic_load(&s->done)) {
		struct kg_stats st;
		uint64_t now, t0;

		kg_sleep(10 * MS);
		now = mono_ns();
		t0 = atomic_load(&s->t0);
		/* the gaps that overlap the hogs' run */
		if (t0 && now > t0 &&
		    (!atomic_load(&s->done) || last < atomic_load(&s->t_done))) {
			if (now - last > s->max_gap)
				s->max_gap = now - last;
			s->ticks++;
		}
		if (!kg_stats(&st)) {
			if (st.preempted_now > s->max_out)
				s->max_out = st.preempted_now;
			if (st.workers > s->max_workers)
				s->max_workers = st.workers;
		}
		last = now;
	}
	kg_wg_done(&s->tick_wg);
}

static void scen_main(void *arg)
{
	struct scen *s = arg;
	struct kg_spawn_opts o = { .flags = s->go_flags, .name = "hog" };
	unsigned int i, waiters = s->hog_kind == HOG_MUTEX ? 5 : 0;

	kg_wg_add(&s->tick_wg, 1);
	kg_wg_add(&s->wg, (int)(s->hogs + waiters));
	CO_CHECK(kg_go(ticker, s) > 0, "ticker");
	kg_sleep(20 * MS);	/* the ticker is in its loop */
	atomic_store(&s->t0, mono_ns());
	for (i = 0; i < s->hogs; i++)
		CO_CHECK(kg_go_opts(hog, s, &o) > 0, "hog %u", i);
	for (i = 0; i < waiters; i++)
		CO_CHECK(kg_go(mu_waiter, s) > 0, "waiter %u", i);
	kg_wg_wait(&s->wg);
	atomic_store(&s->t_done, mono_ns());
	s->hogs_ns = atomic_load(&s->t_done) - atomic_load(&s->t0);
	atomic_store(&s->done, 1);
	kg_wg_wait(&s->tick_wg);
	CO_CHECK(kg_stats(&s->st) == 0, "kg_stats");
}

/* 0, or -ENODEV: the backend cannot serve here. */
static int run_scen(struct scen *s, const char *backend)
{
	struct kg_config cfg = { .procs = s->procs, .backend = backend };
	int err = kg_run(scen_main, s, &cfg);

	if (!err)
		fprintf(stderr, "# %s: %u hog(s) of %llu ms on %u proc(s): "
			"ticker's largest gap %.1f ms over %llu ticks, hogs "
			"done in %llu ms, preemptions %llu, most out %llu, "
			"workers %u\n", backend, s->hogs,
			(unsigned long long)(s->hog_ns / MS), s->procs,
			s->max_gap / 1e6, (unsigned long long)s->ticks,
			(unsigned long long)(s->hogs_ns / MS),
			(unsigned long long)s->st.preemptions,
			(unsigned long long)s->max_out, s->max_workers);
	return err;
}

FIXTURE(slice) {
	int unused;
};

FIXTURE_VARIANT(slice) {
	int kernel;	/* 1: the kernel backend, 0: sysmon */
	uint64_t gap;	/* the ticker's largest gap allowed */
};

/* The targets are 25 and 50 ms; the bounds leave room for a
 * loaded machine, and are far below what no slicing gives (the hog). */
FIXTURE_VARIANT_ADD(slice, kernel) { .kernel = 1, .gap = 100 * MS };
FIXTURE_VARIANT_ADD(slice, sysmon) { .kernel = 0, .gap = 150 * MS };

FIXTURE_SETUP(slice)
{
	unsetenv("KGREEN_SLICE");
	unsetenv("KGREEN_SLICE_HOGS");
}

FIXTURE_TEARDOWN(slice)
{
	unsetenv("KGREEN_SLICE");
	unsetenv("KGREEN_SLICE_HOGS");
}

static const char *backend_of(const FIXTURE_VARIANT(slice) *v)
{
	return v->kernel ? kbackend() : "sysmon";
}

#define RUN_OR_SKIP(s, v)                                                     \
	do {                                                                  \
		int err_ = run_scen((s), backend_of(v));                      \
		if (err_ == -ENODEV)                                          \
			SKIP(return, "the %s backend cannot serve here",      \
			     backend_of(v));                                   \
		ASSERT_EQ(0, err_);                                           \
		ASSERT_EQ(0, co_failures());                                  \
	} while (0)

/*
 * The hogs were sliced: a preemption, the ticker's gaps bounded, and every
 * hog back from running off its proc (no place in slice_out leaked).
 */
#define ASSERT_SLICED(s)                                                      \
	do {                                                                  \
		ASSERT_GE((s)->st.preemptions, 1ull);                         \
		ASSERT_LE((s)->max_gap, slack(variant->gap));                 \
		ASSERT_EQ(0ull, (s)->st.preempted_now);                       \
	} while (0)

/* 1 proc, 1 hog: the ticker keeps ticking. */
TEST_F_TIMEOUT(slice, one_hog_one_proc, 60)
{
	struct scen s = { .procs = 1, .hogs = 1, .hog_ns = 600 * MS };

	RUN_OR_SKIP(&s, variant);
	ASSERT_SLICED(&s);
	ASSERT_GE(s.ticks, 20ull);
}

/*
 * 2 procs, 3 hogs (more than the CPUs here): each preempted hog costs
 * one thread while it runs off its proc; they finish in about the CPU time
 * they need, and the ticker keeps ticking.
 */
TEST_F_TIMEOUT(slice, three_hogs_two_procs, 60)
{
	struct scen s = { .procs = 2, .hogs = 3, .hog_ns = 400 * MS };

	RUN_OR_SKIP(&s, variant);
	ASSERT_SLICED(&s);
	ASSERT_LE(s.max_out, 3ull);
}

/* More hogs than KGREEN_SLICE_HOGS: never more out at once. */
TEST_F_TIMEOUT(slice, hogs_bounded, 60)
{
	struct scen s = { .procs = 2, .hogs = 6, .hog_ns = 200 * MS };

	setenv("KGREEN_SLICE_HOGS", "2", 1);
	RUN_OR_SKIP(&s, variant);
	ASSERT_GE(s.st.preemptions, 1ull);
	ASSERT_LE(s.max_out, 2ull);
	/* procs + hogs out + standbys and the reserve + a few spares */
	ASSERT_LE(s.max_workers, 2u + 2 + 3 + 3);
	ASSERT_EQ(0ull, s.st.preempted_now);
}

/* A hog holding a kgreen mutex: waiters wait, exclusion holds. */
TEST_F_TIMEOUT(slice, hog_holds_mutex, 60)
{
	struct scen s = { .procs = 1, .hogs = 1, .hog_ns = 300 * MS,
			  .hog_kind = HOG_MUTEX };

	RUN_OR_SKIP(&s, variant);
	ASSERT_SLICED(&s);
	ASSERT_EQ(0L, s.mu_violations);
	ASSERT_EQ(5L, s.mu_waiters_done);
}

/* A hog inside one long libc call (qsort): sliced all the same. */
TEST_F_TIMEOUT(slice, hog_in_qsort, 60)
{
	struct scen s = { .procs = 1, .hogs = 1, .hog_kind = HOG_QSORT };

	RUN_OR_SKIP(&s, variant);
	if (s.hogs_ns < 100 * MS)
		SKIP(return, "qsort took only %llu ms here",
		     (unsigned long long)(s.hogs_ns / MS));
	ASSERT_SLICED(&s);
}

/* The 300 ms hog kept its proc: no preemption, the ticker waited. */
#define RUN_NOT_SLICED(s)                                                     \
	do {                                                                  \
		RUN_OR_SKIP(s, variant);                                      \
		ASSERT_EQ(0ull, (s)->st.preemptions);                         \
		ASSERT_GE((s)->max_gap, (uint64_t)(250 * MS));                \
	} while (0)

/* KG_GO_NOPREEMPT: the hog keeps its proc; the ticker waits for it. */
TEST_F_TIMEOUT(slice, nopreempt_coroutine, 60)
{
	struct scen s = { .procs = 1, .hogs = 1, .hog_ns = 300 * MS,
			  .go_flags = KG_GO_NOPREEMPT };

	RUN_NOT_SLICED(&s);
}

/* KGREEN_SLICE=off: no slicing at all. */
TEST_F_TIMEOUT(slice, off_by_environment, 60)
{
	struct scen s = { .procs = 1, .hogs = 1, .hog_ns = 300 * MS };

	setenv("KGREEN_SLICE", "off", 1);
	RUN_NOT_SLICED(&s);
}

/* A longer slice: the ticker waits about that long, no longer. */
TEST_F_TIMEOUT(slice, longer_slice, 60)
{
	struct scen s = { .procs = 1, .hogs = 1, .hog_ns = 600 * MS };

	setenv("KGREEN_SLICE", "100ms", 1);
	RUN_OR_SKIP(&s, variant);
	ASSERT_GE(s.st.preemptions, 1ull);
	ASSERT_GE(s.max_gap, (uint64_t)(90 * MS));
	ASSERT_LE(s.max_gap, slack(100 * MS + variant->gap));
}

/*
 * Many short coroutines that each compute for well under a slice (2 ms
 * of spinning apiece, 2 procs) are never preempted. Main is one of them:
 * it yields after each spawn. Without that its spawn loop is one long
 * run whenever the other proc keeps its queue short (so kg_go never
 * yields, see spawn_drains): under TSan 300 spawns took over 100 ms, and
 * the slice rightly preempted main (seen in about one run in ten there).
 */
struct shorts {
	kg_wg_t wg;
	struct kg_stats st;
};

static void short_one(void *arg)
{
	struct shorts *sh = arg;

	spin_for(2 * MS);
	kg_wg_done(&sh->wg);
}

static void shorts_main(void *arg)
{
	struct shorts *sh = arg;
	int i, n = (int)scaled(300, 3);

	kg_wg_add(&sh->wg, n);
	for (i = 0; i < n; i++) {
		CO_CHECK(kg_go(short_one, sh) > 0, "spawn %d", i);
		kg_yield();
	}
	kg_wg_wait(&sh->wg);
	CO_CHECK(kg_stats(&sh->st) == 0, "kg_stats");
}

TEST_F_TIMEOUT(slice, short_coroutines_never_preempted, 60)
{
	struct shorts sh = { 0 };
	struct kg_config cfg = { .procs = 2, .backend = backend_of(variant) };
	int err = kg_run(shorts_main, &sh, &cfg);

	if (err == -ENODEV)
		SKIP(return, "the %s backend cannot serve here",
		     backend_of(variant));
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0ull, sh.st.preemptions);
}

/*
 * A storm: with a 1 ms slice, coroutines alternate spins of up to 8 ms
 * (preempted often) with kgreen calls of every kind (channel round trips,
 * a mutex, yields, sleeps, spawns, and regions marked as blocking around a
 * raw sleep, which sysmon retakes), so that slices end at every point of
 * the scheduler's entries and exits, and sysmon's retakes meet its slices.
 * Nothing may be lost or run twice, and every coroutine that ran off its
 * proc comes back.
 */
#define STORM_CO 8

struct storm {
	kg_chan_t *ch[STORM_CO / 2];
	kg_mutex_t mu;
	long in_mu, violations, sum;
	kg_wg_t wg;
	int rounds;
	struct kg_stats st;
};

static struct storm *storm_of;

static void nop_co(void *arg)
{
	(void)arg;
}

static void storm_co(void *arg)
{
	struct storm *st = storm_of;
	long me = (long)(intptr_t)arg;
	kg_chan_t *ch = st->ch[me / 2];
	uint32_t r = (uint32_t)me * 2654435761u + 1;
	int i;

	for (i = 0; i < st->rounds; i++) {
		long v = i;

		r = r * 1103515245u + 12345u;
		spin_for((r >> 8) % (8 * MS));
		switch (r % 6) {
		case 0:
			kg_mutex_lock(&st->mu);
			if (st->in_mu++)
				st->violations++;
			spin_for(100 * 1000);
			st->in_mu--;
			st->sum++;
			kg_mutex_unlock(&st->mu);
			break;
		case 1:
			kg_yield();
			break;
		case 2:
			kg_sleep(100 * 1000);
			break;
		case 3: {
			struct timespec ts = { 0, 200 * 1000 };

			kg_blocking_begin();
			syscall(SYS_nanosleep, &ts, NULL);
			kg_blocking_end();
			break;
		}
		case 4:
			CO_CHECK(kg_go(nop_co, NULL) > 0, "spawn");
			break;
		default:
			break;
		}
		/* partners exchange one value per round, in order */
		if (me & 1) {
			CO_CHECK(kg_chan_send(ch, &v) == 0, "send");
		} else {
			long got = -1;

			CO_CHECK(kg_chan_recv(ch, &got) == 0 && got == i,
				 "round %d got %ld", i, got);
		}
	}
	kg_wg_done(&st->wg);
}

static void storm_main(void *arg)
{
	struct storm *st = arg;
	long i;

	storm_of = st;
	for (i = 0; i < STORM_CO / 2; i++)
		st->ch[i] = kg_chan_make(sizeof(long), i % 2);
	kg_wg_add(&st->wg, STORM_CO);
	for (i = 0; i < STORM_CO; i++)
		CO_CHECK(kg_go(storm_co, (void *)(intptr_t)i) > 0, "spawn");
	kg_wg_wait(&st->wg);
	for (i = 0; i < STORM_CO / 2; i++)
		kg_chan_free(st->ch[i]);
	CO_CHECK(kg_stats(&st->st) == 0, "kg_stats");
}

TEST_F_TIMEOUT(slice, preempt_storm, 120)
{
	struct storm st = { .rounds = (int)scaled(100, 3) };
	struct kg_config cfg = { .procs = 2, .backend = backend_of(variant) };
	int err = 0, tries;

	setenv("KGREEN_SLICE", "1ms", 1);
	/*
	 * A second storm if the first saw no preemption at all: under
	 * qemu-user (the aarch64 check) a sysmon run now and then takes none
	 * (cause not known yet); two in a row would still fail.
	 */
	for (tries = 0; tries < 2; tries++) {
		if (tries)	/* a fresh storm; the first's violations kept */
			st = (struct storm){ .rounds = st.rounds,
					     .violations = st.violations };
		err = kg_run(storm_main, &st, &cfg);
		if (err || st.st.preemptions)
			break;
		TH_LOG("%s: no preemption in storm %d", backend_of(variant),
		       tries + 1);
	}
	if (err == -ENODEV)
		SKIP(return, "the %s backend cannot serve here",
		     backend_of(variant));
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	TH_LOG("%s: %llu preemptions, %llu handoffs, %u workers",
	       backend_of(variant), (unsigned long long)st.st.preemptions,
	       (unsigned long long)st.st.handoffs, st.st.workers);
	ASSERT_EQ(0L, st.violations);
	ASSERT_GE(st.st.preemptions, 1ull);
	ASSERT_EQ(0ull, st.st.preempted_now);
}

/*
 * A coroutine that yields in a loop for 300 ms, while the only other work
 * on its proc is a sleeper's timer (so each yield finds nothing to run and
 * keeps running), is never preempted: every yield is a scheduling point.
 */
static void long_sleeper(void *arg)
{
	(void)arg;
	kg_sleep(1000 * MS);
}

static void yielder_main(void *arg)
{
	struct kg_stats *st = arg;
	uint64_t t0;

	CO_CHECK(kg_go(long_sleeper, NULL) > 0, "spawn");
	kg_sleep(5 * MS);	/* the sleeper's timer is armed */
	t0 = mono_ns();
	while (mono_ns() - t0 < 300 * MS)
		kg_yield();
	CO_CHECK(kg_stats(st) == 0, "kg_stats");
}

TEST_F_TIMEOUT(slice, yield_loop_never_preempted, 60)
{
	struct kg_stats st = { 0 };
	struct kg_config cfg = { .procs = 1, .backend = backend_of(variant) };
	int err = kg_run(yielder_main, &st, &cfg);

	if (err == -ENODEV)
		SKIP(return, "the %s backend cannot serve here",
		     backend_of(variant));
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0ull, st.preemptions);
}

static void nop(void *arg)
{
	(void)arg;
}

/* Bad values are refused with a line on stderr, and the default holds. */
TEST(bad_slice_values)
{
	static const char *const bad[] = { "banana", "10parsecs", "-5ms",
					   "0.5ms", "100us", "61s" };
	struct kg_spawn_opts o = { .flags = 0x100 };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scen s = { .procs = 1, .hogs = 1, .hog_ns = 200 * MS };

		setenv("KGREEN_SLICE", bad[i], 1);
		ASSERT_EQ(0, run_scen(&s, "sysmon"));
		EXPECT_GE(s.st.preemptions, 1ull);
	}
	unsetenv("KGREEN_SLICE");
	ASSERT_EQ(-EINVAL, kg_go_opts(nop, NULL, &o));
	ASSERT_EQ(0, co_failures());
}

TEST_HARNESS_MAIN
