// SPDX-License-Identifier: MIT
/*
 * sched_badinput - bad arguments give clear errors, never a crash; running
 * out of memory gives -ENOMEM and the runtime goes on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/resource.h>

#include "harness.h"
#include "kg_test.h"

static void nothing(void *p)
{
	(void)p;
}

TEST(spawn_outside_runtime_is_eperm)
{
	ASSERT_EQ(-EPERM, kg_go(nothing, NULL));
	ASSERT_EQ(-EPERM, kg_go_opts(nothing, NULL, NULL));
	ASSERT_EQ(0, kg_self());
	kg_yield();	/* no-op, no crash */
}

static void bad_spawns(void *p)
{
	struct kg_spawn_opts o = { 0 };

	(void)p;
	CO_CHECK(kg_go(NULL, NULL) == -EINVAL, "NULL fn");
	CO_CHECK(kg_go_opts(NULL, NULL, &o) == -EINVAL, "NULL fn with opts");
	o.stack_size = 1;
	CO_CHECK(kg_go_opts(nothing, NULL, &o) == -EINVAL, "1-byte stack");
	o.stack_size = KG_STACK_MIN - 1;
	CO_CHECK(kg_go_opts(nothing, NULL, &o) == -EINVAL, "below minimum");
	o.stack_size = KG_STACK_MAX + 1;
	CO_CHECK(kg_go_opts(nothing, NULL, &o) == -EINVAL, "above maximum");
	o.stack_size = (size_t)-1;
	CO_CHECK(kg_go_opts(nothing, NULL, &o) == -EINVAL, "SIZE_MAX");
	o.stack_size = 0;
	o.flags = 0x80;
	CO_CHECK(kg_go_opts(nothing, NULL, &o) == -EINVAL, "unknown flags");
	o.flags = 0;
	o.name = "a name that is much longer than thirty-one bytes, truncated";
	CO_CHECK(kg_go_opts(nothing, NULL, &o) > 0, "long name");
	o.stack_size = KG_STACK_MIN;
	o.name = NULL;
	CO_CHECK(kg_go_opts(nothing, NULL, &o) > 0, "minimum stack");
	kg_yield();
}

TEST(bad_spawn_arguments)
{
	ASSERT_EQ(0, run_kg(bad_spawns, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/*
 * Out of memory: with the address space limited, spawning fails with
 * -ENOMEM at some point; the coroutines already alive still run, finish,
 * and their memory is reused for new ones.
 */
static kg_wg_t gate, done_wg;
static long spawned_before_oom, oom_err, respawned;

static void waiter(void *p)
{
	(void)p;
	kg_wg_wait(&gate);
	kg_wg_done(&done_wg);
}

static void oom_main(void *p)
{
	struct rlimit rl;
	long i, id = 0;

	(void)p;
	kg_wg_add(&gate, 1);
	/* 2 GiB more than now: a few stack slabs, then nothing */
	getrlimit(RLIMIT_AS, &rl);
	rl.rlim_cur = (rlim_t)proc_status_kb("VmSize") * 1024 + (2ul << 30);
	CO_CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit");
	for (i = 0; i < 10000000; i++) {
		kg_wg_add(&done_wg, 1);
		id = kg_go(waiter, NULL);
		if (id < 0) {
			kg_wg_add(&done_wg, -1);
			break;
		}
	}
	spawned_before_oom = i;
	oom_err = id;
	kg_wg_done(&gate);
	kg_wg_wait(&done_wg);
	/* memory came back to the pool: spawning works again */
	for (i = 0; i < 1000; i++) {
		kg_wg_add(&done_wg, 1);
		if (kg_go(waiter, NULL) > 0)
			respawned++;
		else
			kg_wg_add(&done_wg, -1);
	}
	kg_wg_wait(&done_wg);
	rl.rlim_cur = RLIM_INFINITY;
	setrlimit(RLIMIT_AS, &rl);
}

TEST_TIMEOUT(out_of_memory_is_enomem, 120)
{
	if (KG_TEST_SANITIZED)
		SKIP(return, "sanitizers reserve terabytes of address space");
	if (getenv("KG_TEST_EMULATED"))
		SKIP(return, "RLIMIT_AS does not bound an emulated process");
	gate = done_wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(oom_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(-ENOMEM, oom_err);
	ASSERT_GT(spawned_before_oom, 1000);
	ASSERT_EQ(1000, respawned);
}

TEST(waitgroup_bad_input)
{
	kg_wg_t wg = KG_WG_INIT;

	ASSERT_EQ(-EINVAL, kg_wg_add(NULL, 1));
	ASSERT_EQ(-EINVAL, kg_wg_done(NULL));
	ASSERT_EQ(-EINVAL, kg_wg_wait(NULL));
	ASSERT_EQ(-EINVAL, kg_wg_done(&wg));	/* would go negative */
	ASSERT_EQ(0, kg_wg_wait(&wg));		/* zero: returns at once */
	ASSERT_EQ(0, kg_wg_add(&wg, 2));
	ASSERT_EQ(-EINVAL, kg_wg_add(&wg, -3));
	ASSERT_EQ(0, kg_wg_add(&wg, -2));
}

TEST_HARNESS_MAIN
