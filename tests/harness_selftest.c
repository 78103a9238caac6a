// SPDX-License-Identifier: MIT
/*
 * harness_selftest - the harness's features, used the way suites use
 * them; every test here passes (one is skipped on purpose).
 */
#include <signal.h>

#include "harness.h"

static int evaluations;

static int counted(int v)
{
	evaluations++;
	return v;
}

TEST(checks_pass_and_evaluate_once)
{
	unsigned long big = ~0ul;
	const char *name = "kgreen";

	ASSERT_EQ(4, 2 + 2);
	ASSERT_NE(1, 2);
	ASSERT_LT(1, 2);
	ASSERT_LE(2, 2);
	ASSERT_GT(3, 2);
	ASSERT_GE(3, 3);
	ASSERT_EQ(~0ul, big);
	ASSERT_TRUE(1);
	ASSERT_FALSE(0);
	ASSERT_NULL(NULL);
	ASSERT_NONNULL(name);
	ASSERT_STREQ("kgreen", name);
	ASSERT_STRNE("go", name);
	EXPECT_EQ(7, counted(7));
	ASSERT_EQ(1, evaluations);
	ASSERT_EQ(0, 0) TH_LOG("not printed: the check passed");
}

FIXTURE(counter) {
	int value;
	int set_up;
};

FIXTURE_VARIANT(counter) {
	int start;
};

FIXTURE_VARIANT_ADD(counter, from_zero) { .start = 0 };
FIXTURE_VARIANT_ADD(counter, from_ten) { .start = 10 };

FIXTURE_SETUP(counter)
{
	self->value = variant->start;
	self->set_up = 1;
}

FIXTURE_TEARDOWN(counter)
{
	if (!self->set_up)
		abort();
}

TEST_F(counter, setup_ran_with_variant)
{
	ASSERT_EQ(1, self->set_up);
	self->value += 5;
	ASSERT_EQ(variant->start + 5, self->value);
}

TEST(skipped_with_reason)
{
	SKIP(return, "this test skips on purpose");
	abort();
}

TEST_SIGNAL(dies_by_expected_signal, SIGABRT)
{
	abort();
}

TEST_TIMEOUT(short_timeout_not_reached, 5)
{
	usleep(1000);
}

TEST(seed_is_stable)
{
	ASSERT_EQ(harness_seed(), harness_seed());
}

TEST_HARNESS_MAIN
