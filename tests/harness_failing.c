// SPDX-License-Identifier: MIT
/*
 * harness_failing - deliberately failing, crashing, hanging and skipping
 * tests; harness_selfcheck.sh checks how the harness reports each.
 */
#include <signal.h>

#include "harness.h"

TEST(fails_with_values)
{
	int seen = 7;

	ASSERT_EQ(5, seen) TH_LOG("logged after the failure");
	TH_LOG("not reached: ASSERT ends the test");
}

TEST(expect_goes_on)
{
	EXPECT_EQ(1, 2);
	TH_LOG("reached after EXPECT");
}

TEST(passes)
{
	ASSERT_TRUE(1);
}

TEST(crashes)
{
	raise(SIGSEGV);
}

TEST_TIMEOUT(hangs, 1)
{
	for (;;)
		pause();
}

TEST(only_skips)
{
	SKIP(return, "nothing to do here");
}

TEST_SIGNAL(wrong_signal, SIGABRT)
{
	raise(SIGTERM);
}

TEST_HARNESS_MAIN
