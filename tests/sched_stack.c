// SPDX-License-Identifier: MIT
/*
 * sched_stack - stack overflow is caught and reported with the coroutine's
 * id, name, entry function and bounds, whatever the guard mechanism; big
 * stacks work; a million coroutines fit under vm.max_map_count; a loop
 * of kg_go reuses the stacks of the children that finished rather than
 * making new ones, unless the spawner asked not to be preempted.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "harness.h"
#include "kg_test.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* Deep recursion with 1 KiB frames; yields at the bottom (canary mode
 * detects the overflow at the next switch). */
__attribute__((noinline)) static int recurse(int depth, int limit)
{
	volatile char frame[1024];

	frame[0] = (char)depth;
	frame[sizeof(frame) - 1] = (char)depth;
	if (depth >= limit) {
		kg_yield();
		return frame[0];
	}
	return recurse(depth + 1, limit) + frame[sizeof(frame) - 1];
}

/* Not static: the report names it, found with dladdr (-rdynamic). */
void kg_test_overflowing_entry(void *p)
{
	recurse(0, (int)(intptr_t)p);
}

static void other(void *p)
{
	(void)p;
	kg_yield();
}

static void overflow_main(void *p)
{
	struct kg_spawn_opts o = { .stack_size = 64 * 1024,
				   .name = "deep-diver" };

	kg_go(other, NULL);
	/* ~80 KiB of frames on a 64 KiB stack: 16 KiB into the guard */
	kg_go_opts(kg_test_overflowing_entry, p, &o);
	kg_sleep(1000000000ull);
}

/* Run the overflow in a child; return its stderr, and its wait status. */
static char *run_overflow(const char *guard_mode, int *status)
{
	int fds[2];
	pid_t pid;
	static char buf[4096];
	size_t len = 0;
	ssize_t n;

	if (pipe(fds))
		return NULL;
	pid = fork();
	if (pid == 0) {
		dup2(fds[1], 2);
		close(fds[0]);
		if (guard_mode)
			setenv("KGREEN_STACK_GUARD", guard_mode, 1);
		run_kg(overflow_main, (void *)(intptr_t)80, 1);
		_exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = 0;
	close(fds[0]);
	waitpid(pid, status, 0);
	return buf;
}

/* Do guard regions really fault here? (Emulators may accept and ignore.) */
static int madvise_guards_supported(void)
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		volatile char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (madvise((void *)p, 4096, MADV_GUARD_INSTALL))
			_exit(1);
		p[0] = 1;	/* must die here */
		_exit(2);
	}
	waitpid(pid, &status, 0);
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

FIXTURE(overflow) {
	int unused;
};

FIXTURE_VARIANT(overflow) {
	const char *mode;	/* KGREEN_STACK_GUARD, NULL = default */
};

FIXTURE_VARIANT_ADD(overflow, default_guard) { .mode = NULL };
FIXTURE_VARIANT_ADD(overflow, mprotect_guard) { .mode = "mprotect" };
FIXTURE_VARIANT_ADD(overflow, canary) { .mode = "canary" };

FIXTURE_SETUP(overflow)
{
	self->unused = 0;
}

FIXTURE_TEARDOWN(overflow)
{
}

TEST_F(overflow, dies_with_report)
{
	int status = 0;
	char *out;

	if (KG_TEST_SANITIZED)
		SKIP(return, "sanitizers own SIGSEGV and the stack layout");
	if (!variant->mode && !madvise_guards_supported())
		SKIP(return, "no working MADV_GUARD_INSTALL (Linux 6.13+)");
	out = run_overflow(variant->mode, &status);
	ASSERT_NONNULL(out);
	TH_LOG("child said: %s", out);
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(SIGABRT, WTERMSIG(status));
	ASSERT_NONNULL(strstr(out, "stack overflow"));
	ASSERT_NONNULL(strstr(out, "\"deep-diver\""));
	ASSERT_NONNULL(strstr(out, "kg_test_overflowing_entry"));
	ASSERT_NONNULL(strstr(out, "stack ["));
	ASSERT_NONNULL(strstr(out, "coroutine 3 "));
}

/*
 * A fault that is not a stack overflow is not ours: the process dies by
 * SIGSEGV as it would without kgreen (the handler passes it on).
 */
/* UBSan would report the store itself: the test wants the fault */
__attribute__((no_sanitize_undefined)) static void bad_pointer(void *p)
{
	volatile int *null = p;

	*null = 1;
}

static void segv_main(void *p)
{
	(void)p;
	kg_go(bad_pointer, NULL);
	kg_sleep(1000000000ull);
}

TEST_SIGNAL(other_faults_pass_through, SIGSEGV)
{
	if (KG_TEST_SANITIZED)
		SKIP(return, "sanitizers report the fault and exit instead");
	run_kg(segv_main, NULL, 2);
}

/* A coroutine with a big stack can use it. */
static int big_result;

static void big_user(void *p)
{
	big_result = recurse(0, (int)(intptr_t)p) >= 0;
}

static void big_main(void *p)
{
	struct kg_spawn_opts o = { .stack_size = 8 << 20, .name = "big" };

	(void)p;
	CO_CHECK(kg_go_opts(big_user, (void *)(intptr_t)4000, &o) > 0, "spawn");
	kg_sleep(50 * 1000000ull);
}

TEST(big_stack_is_usable)
{
	ASSERT_EQ(0, run_kg(big_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(1, big_result);
}

/* A million coroutines alive at once, under the default vm.max_map_count. */
static kg_wg_t gate, started, ended;
static long maps_alive, alive_seen;
static uint64_t guard_mode;

static void parked(void *p)
{
	(void)p;
	kg_wg_done(&started);
	kg_wg_wait(&gate);
	kg_wg_done(&ended);
}

static void million_main(void *p)
{
	long i, n = (long)(intptr_t)p;
	struct kg_stats st;

	kg_wg_add(&gate, 1);
	kg_wg_add(&started, n);
	kg_wg_add(&ended, n);
	for (i = 0; i < n; i++) {
		long id = kg_go(parked, NULL);

		if (id < 0) {
			CO_CHECK(id > 0, "kg_go failed with %ld at %ld", id, i);
			kg_wg_add(&started, -(n - i));
			kg_wg_add(&ended, -(n - i));
			break;
		}
	}
	kg_wg_wait(&started);
	kg_stats(&st);
	alive_seen = (long)st.coroutines;
	guard_mode = st.stack_guard;
	maps_alive = count_maps();
	kg_wg_done(&gate);
	kg_wg_wait(&ended);
}

TEST_TIMEOUT(million_alive, 300)
{
	/* TSan counts each fiber as a thread and allows 8128 */
	long n = scaled(1000000, 250);
	/* each parked coroutine keeps a page or two: ~8 KiB with slack */
	unsigned long long need = (unsigned long long)n * 8192;
	unsigned long long avail = (unsigned long long)sysconf(_SC_AVPHYS_PAGES) *
				   (unsigned long long)sysconf(_SC_PAGESIZE);

	if (avail < need)
		SKIP(return, "needs %llu MiB of free memory, %llu MiB free",
		     need >> 20, avail >> 20);
	gate = started = ended = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(million_main, (void *)(intptr_t)n, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(n + 1, alive_seen);
	TH_LOG("%ld coroutines alive used %ld mappings (guard mode %llu)", n,
	       maps_alive, (unsigned long long)guard_mode);
	ASSERT_LT(maps_alive, 65530);
}

/*
 * A loop of kg_go whose children finish at once (Go's `for { go f() }`):
 * the spawner yields to its queued children before it would make a new
 * stack, so the children's freed stacks serve the next spawns. On 1 proc,
 * without that, 10,000 spawns would make 10,000 stacks (nothing runs
 * until the spawner waits): a dozen slabs (819 default stacks each)
 * instead of the first. Not scaled down: under a slab's worth of spawns
 * the test could not tell.
 */
static kg_wg_t loop_wg;
static _Atomic long loop_ran;
static uint64_t loop_bytes0, loop_bytes1;

static void loop_child(void *p)
{
	(void)p;
	loop_ran++;	/* 1 proc: one coroutine at a time */
	kg_wg_done(&loop_wg);
}

static void loop_main(void *p)
{
	long i, n = (long)(intptr_t)p;
	struct kg_stats st;

	CO_CHECK(kg_stats(&st) == 0, "kg_stats");
	loop_bytes0 = st.stack_bytes;
	kg_wg_add(&loop_wg, n);
	for (i = 0; i < n; i++)
		CO_CHECK(kg_go(loop_child, NULL) > 0, "kg_go at %ld", i);
	kg_wg_wait(&loop_wg);
	CO_CHECK(kg_stats(&st) == 0, "kg_stats");
	loop_bytes1 = st.stack_bytes;
}

TEST(spawn_loop_reuses_stacks)
{
	loop_wg = (kg_wg_t)KG_WG_INIT;
	loop_ran = 0;
	ASSERT_EQ(0, run_kg(loop_main, (void *)(intptr_t)10000, 1));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(10000, loop_ran);
	TH_LOG("stack bytes %llu before the loop, %llu after",
	       (unsigned long long)loop_bytes0,
	       (unsigned long long)loop_bytes1);
	ASSERT_NE(0ull, (unsigned long long)loop_bytes0);
	ASSERT_EQ(loop_bytes0, loop_bytes1);
}

/*
 * A spawner started with KG_GO_NOPREEMPT never yields in kg_go, stacks or
 * not: on 1 proc none of its children runs before it waits.
 */
static long nopreempt_early;

static void nopreempt_spawner(void *p)
{
	long i, n = (long)(intptr_t)p;

	for (i = 0; i < n; i++) {
		CO_CHECK(kg_go(loop_child, NULL) > 0, "kg_go at %ld", i);
		if (loop_ran)
			nopreempt_early++;
	}
	kg_wg_wait(&loop_wg);
}

static void nopreempt_main(void *p)
{
	struct kg_spawn_opts o = { .flags = KG_GO_NOPREEMPT };
	long n = (long)(intptr_t)p;

	kg_wg_add(&loop_wg, n);
	CO_CHECK(kg_go_opts(nopreempt_spawner, p, &o) > 0, "spawn");
	kg_wg_wait(&loop_wg);
}

TEST(nopreempt_spawner_never_yields)
{
	loop_wg = (kg_wg_t)KG_WG_INIT;
	loop_ran = nopreempt_early = 0;
	ASSERT_EQ(0, run_kg(nopreempt_main, (void *)(intptr_t)2000, 1));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(2000, loop_ran);
	ASSERT_EQ(0, nopreempt_early);
}

TEST_HARNESS_MAIN
