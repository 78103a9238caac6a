// SPDX-License-Identifier: MIT
/*
 * sched_yield - kg_yield interleaves runnable coroutines fairly, and each
 * coroutine keeps its own registers and floating-point control state.
 */
#define _GNU_SOURCE
#include <fenv.h>
#include <math.h>

#include "harness.h"
#include "kg_test.h"

#define ROUNDS 1000
#define MAXCO 8

static int order[MAXCO * ROUNDS + 16];
static _Atomic int norder;
static kg_wg_t wg;

static void turn_taker(void *p)
{
	int me = (int)(intptr_t)p, i;

	for (i = 0; i < ROUNDS; i++) {
		order[atomic_fetch_add(&norder, 1)] = me;
		kg_yield();
	}
	kg_wg_done(&wg);
}

static int nco;

static void round_robin_main(void *p)
{
	int i;

	(void)p;
	kg_wg_add(&wg, nco);
	for (i = 0; i < nco; i++)
		kg_go(turn_taker, (void *)(intptr_t)i);
	kg_wg_wait(&wg);
}

FIXTURE(rr) {
	int dummy;
};

FIXTURE_VARIANT(rr) {
	int coroutines;
};

FIXTURE_VARIANT_ADD(rr, two) { .coroutines = 2 };
FIXTURE_VARIANT_ADD(rr, five) { .coroutines = 5 };

FIXTURE_SETUP(rr)
{
	self->dummy = 0;
	atomic_store(&norder, 0);
	wg = (kg_wg_t)KG_WG_INIT;
	nco = variant->coroutines;
}

FIXTURE_TEARDOWN(rr)
{
}

/*
 * On one proc, n coroutines that yield in a loop run in strict rotation:
 * after the first round, every window of n consecutive turns holds each
 * coroutine exactly once.
 */
TEST_F(rr, strict_rotation_on_one_proc)
{
	/*
	 * The rotation is the scheduler's alone: with a kernel backend, a
	 * coroutine whose worker blocks (a page fault under a slow VM) lets
	 * the others run ahead on a spare worker, as it should.
	 */
	struct kg_config cfg = { .procs = 1, .backend = "sysmon" };
	int i, k, n = variant->coroutines;

	ASSERT_EQ(0, kg_run(round_robin_main, NULL, &cfg));
	ASSERT_EQ(n * ROUNDS, atomic_load(&norder));
	for (i = 0; i + n <= n * ROUNDS; i += n) {
		int seen[MAXCO] = { 0 };

		for (k = 0; k < n; k++)
			seen[order[i + k]]++;
		for (k = 0; k < n; k++)
			ASSERT_EQ(1, seen[k]) TH_LOG("window at turn %d", i);
	}
}

/* Yield with nothing else runnable returns at once; outside, it is a no-op. */
static void lonely(void *p)
{
	int i;

	for (i = 0; i < 100000; i++)
		kg_yield();
	*(int *)p = 1;
}

TEST(yield_alone_and_outside)
{
	int done = 0;

	kg_yield();
	ASSERT_EQ(0, run_kg(lonely, &done, 1));
	ASSERT_EQ(1, done);
}

/*
 * Each coroutine keeps its own rounding mode (MXCSR and x87 control word)
 * across switches: one sets FE_UPWARD, the other FE_DOWNWARD, and they
 * alternate; each must keep seeing its own.
 */
static _Atomic int fp_bad;

static void rounding(void *p)
{
	int mode = (int)(intptr_t)p, i;
	volatile double one = 1.0, three = 3.0;
	volatile long double lone = 1.0L, lthree = 3.0L;
	double a;
	long double b;

	fesetround(mode);
	for (i = 0; i < 1000; i++) {
		kg_yield();
		if (fegetround() != mode)
			atomic_fetch_add(&fp_bad, 1);
		/* 1/3 rounds differently up and down, in SSE and in x87 */
		a = one / three;
		b = lone / lthree;
		if (mode == FE_UPWARD && (a * 3.0 < 1.0 || b * 3.0L < 1.0L))
			atomic_fetch_add(&fp_bad, 1);
		if (mode == FE_DOWNWARD && (a * 3.0 > 1.0 || b * 3.0L > 1.0L))
			atomic_fetch_add(&fp_bad, 1);
	}
	kg_wg_done(&wg);
}

static void fp_main(void *p)
{
	(void)p;
	kg_wg_add(&wg, 3);
	kg_go(rounding, (void *)(intptr_t)FE_UPWARD);
	kg_go(rounding, (void *)(intptr_t)FE_DOWNWARD);
	kg_go(rounding, (void *)(intptr_t)FE_TONEAREST);
	kg_wg_wait(&wg);
}

TEST(fp_control_is_per_coroutine)
{
	wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(fp_main, NULL, 1));
	ASSERT_EQ(0, atomic_load(&fp_bad));
	ASSERT_EQ(FE_TONEAREST, fegetround());
}

/* Callee-saved registers survive switches: deep recursion with many live
 * values across kg_yield computes the same result as without yields. */
/* Unsigned: the arithmetic wraps by design (signed overflow would be UB). */
static unsigned long mix(long depth, unsigned long a, unsigned long b,
			 unsigned long c, unsigned long d, int yield)
{
	unsigned long r;

	if (depth == 0)
		return a ^ b ^ c ^ d;
	if (yield)
		kg_yield();
	r = mix(depth - 1, a * 3 + 1, b ^ (a << 1), c + d, d - a, yield);
	return r + a - b + c * 7 - d;
}

static unsigned long results[4];

static void mixer(void *p)
{
	long i = (long)(intptr_t)p;

	results[i] = mix(200, i + 1, i * 5, 77 - i, 1000 + i, 1);
	kg_wg_done(&wg);
}

static void mix_main(void *p)
{
	long i;

	(void)p;
	kg_wg_add(&wg, 4);
	for (i = 0; i < 4; i++)
		kg_go(mixer, (void *)(intptr_t)i);
	kg_wg_wait(&wg);
}

TEST(registers_survive_switches)
{
	long i;

	wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(mix_main, NULL, 2));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(mix(200, i + 1, i * 5, 77 - i, 1000 + i, 0),
			  results[i]);
}

TEST_HARNESS_MAIN
