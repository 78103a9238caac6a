// SPDX-License-Identifier: MIT
/*
 * sched_lifecycle - coroutines are born, run and die; ids are unique; the
 * runtime starts, ends when main returns, and starts again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "kg_test.h"

struct spawn_ctx {
	long n;
	long *ids;		/* id each child saw from kg_self() */
	long *returned;		/* id kg_go returned for it */
	kg_wg_t wg;
};

struct child_arg {
	struct spawn_ctx *ctx;
	long i;
};

static struct child_arg *args;

static void child(void *p)
{
	struct child_arg *a = p;

	a->ctx->ids[a->i] = kg_self();
	kg_wg_done(&a->ctx->wg);
}

static void spawn_main(void *p)
{
	struct spawn_ctx *ctx = p;
	struct kg_stats st;
	long i, id;

	kg_wg_add(&ctx->wg, ctx->n);
	for (i = 0; i < ctx->n; i++) {
		args[i].ctx = ctx;
		args[i].i = i;
		id = kg_go(child, &args[i]);
		CO_CHECK(id > 0, "kg_go returned %ld at %ld", id, i);
		ctx->returned[i] = id;
		if (i % 1000 == 999)
			kg_yield();	/* let some finish: memory is reused */
	}
	kg_wg_wait(&ctx->wg);
	/* a child may still be between kg_wg_done and its exit: wait a bit */
	for (i = 0; i < 1000; i++) {
		CO_CHECK(kg_stats(&st) == 0, "kg_stats");
		if (st.coroutines == 1)
			break;
		kg_sleep(1000000);
	}
	CO_CHECK(st.coroutines == 1, "%llu coroutines alive, expected main only",
		 (unsigned long long)st.coroutines);
	CO_CHECK(st.spawned >= (uint64_t)ctx->n, "spawned %llu",
		 (unsigned long long)st.spawned);
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? -1 : x > y;
}

/* 1e5 coroutines spawn and exit; every id is positive, unique, and the one
 * kg_go returned. */
TEST_TIMEOUT(spawn_exit_unique_ids, 120)
{
	struct spawn_ctx ctx = { .n = scaled(100000, 20), .wg = KG_WG_INIT };
	long i;

	ctx.ids = calloc(ctx.n, sizeof(long));
	ctx.returned = calloc(ctx.n, sizeof(long));
	args = calloc(ctx.n, sizeof(*args));
	ASSERT_NONNULL(ctx.ids);
	ASSERT_NONNULL(args);
	ASSERT_EQ(0, run_kg(spawn_main, &ctx, 2));
	ASSERT_EQ(0, co_failures());
	for (i = 0; i < ctx.n; i++)
		ASSERT_EQ(ctx.returned[i], ctx.ids[i]);
	qsort(ctx.ids, ctx.n, sizeof(long), cmp_long);
	ASSERT_GT(ctx.ids[0], 0);
	for (i = 1; i < ctx.n; i++)
		ASSERT_NE(ctx.ids[i - 1], ctx.ids[i]);
}

static void note_self(void *p)
{
	*(long *)p = kg_self();
}

/* kg_run can run again after it returned, and ids keep growing. */
TEST(run_twice)
{
	long first = 0, second = 0;

	ASSERT_EQ(0, run_kg(note_self, &first, 2));
	ASSERT_EQ(0, run_kg(note_self, &second, 1));
	ASSERT_GT(first, 0);
	ASSERT_GT(second, first);
	ASSERT_EQ(0, kg_self());
}

static void sleep_forever(void *p)
{
	(void)p;
	kg_sleep(3600ull * 1000000000ull);
}

static void spin_forever(void *p)
{
	(void)p;
	for (;;)
		kg_yield();
}

static void main_leaves_others(void *p)
{
	(void)p;
	kg_go(sleep_forever, NULL);
	kg_go(spin_forever, NULL);
	kg_go(spin_forever, NULL);
	kg_sleep(10 * 1000000ull);
}

/* Returning from main ends the runtime, as in Go, with others alive. */
TEST(main_return_ends_runtime)
{
	uint64_t t0 = kg_now_ns();

	ASSERT_EQ(0, run_kg(main_leaves_others, NULL, 2));
	ASSERT_LT(kg_now_ns() - t0, 2000000000ull);
	/* and the next run starts clean */
	ASSERT_EQ(0, run_kg(main_leaves_others, NULL, 2));
}

/*
 * main returns while coroutines are blocked in the kernel for good (an
 * accept nobody connects to, a read of a pipe nobody writes): kg_run
 * still returns, as Go's main ends the program whatever its goroutines
 * do. The calls are marked so that sysmon hands the proc on as well.
 */
struct blocked {
	int lsock;
	int pipe[2];
	_Atomic int entered;
	_Atomic int resumed;
};

static void block_in_accept(void *p)
{
	struct blocked *b = p;

	atomic_fetch_add(&b->entered, 1);
	kg_blocking_begin();
	accept(b->lsock, NULL, NULL);
	kg_blocking_end();
	atomic_fetch_add(&b->resumed, 1);
}

static void block_in_read(void *p)
{
	struct blocked *b = p;
	char c;

	atomic_fetch_add(&b->entered, 1);
	kg_blocking_begin();
	(void)!read(b->pipe[0], &c, 1);
	kg_blocking_end();
	atomic_fetch_add(&b->resumed, 1);
	/* the runtime is gone: its next kgreen call ends it, as main's
	 * return ended the others */
	kg_yield();
	atomic_fetch_add(&b->resumed, 1);
}

static void main_leaves_blocked(void *p)
{
	struct blocked *b = p;
	int i;

	kg_go(block_in_read, b);
	kg_go(block_in_accept, b);
	/* let both run and block (each on its own thread by then) */
	for (i = 0; i < 2000 && atomic_load(&b->entered) < 2; i++)
		kg_sleep(1000000);
	kg_sleep(20 * 1000000ull);
	CO_CHECK(atomic_load(&b->entered) == 2, "entered %d",
		 atomic_load(&b->entered));
}

static void busy_child(void *p)
{
	int i;

	for (i = 0; i < 200; i++)
		kg_yield();
	kg_chan_send(p, NULL);
}

/* the second runtime's main: wake the left-behind reader, then work */
static void wake_left_behind(void *p)
{
	struct blocked *b = p;
	kg_chan_t *done = kg_chan_make(0, 4);
	int i, pfd[2];
	char c;

	CO_CHECK(write(b->pipe[1], "x", 1) == 1, "write");
	for (i = 0; i < 2000 && atomic_load(&b->resumed) < 1; i++)
		kg_sleep(1000000);
	CO_CHECK(atomic_load(&b->resumed) == 1, "resumed %d",
		 atomic_load(&b->resumed));
	for (i = 0; i < 4; i++)
		kg_go(busy_child, done);
	for (i = 0; i < 4; i++)
		CO_CHECK(kg_chan_recv_timeout(done, NULL, 2000000000ull) == 0,
			 "child %d", i);
	/* a block of our own is handed off as before */
	CO_CHECK(pipe(pfd) == 0, "pipe");
	CO_CHECK(write(pfd[1], "y", 1) == 1, "write");
	kg_blocking_begin();
	CO_CHECK(read(pfd[0], &c, 1) == 1, "read");
	kg_blocking_end();
	kg_sleep(20 * 1000000ull);
	close(pfd[0]);
	close(pfd[1]);
	kg_chan_free(done);
}

static void leave_blocked(struct __test_metadata *_metadata,
			  const char *backend, unsigned int procs)
{
	struct blocked b = { .lsock = -1 };
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	/* libc's calls, not interposed: they must block their threads (the
	 * interposition would park them, and main's return end them) */
	struct kg_config cfg = { .procs = procs, .backend = backend,
				 .flags = KG_RUN_NO_INTERPOSE };
	uint64_t t0;
	long first = 0;
	int r;

	b.lsock = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_LE(0, b.lsock);
	ASSERT_EQ(0, bind(b.lsock, (struct sockaddr *)&a, sizeof(a)));
	ASSERT_EQ(0, listen(b.lsock, 4));
	ASSERT_EQ(0, pipe(b.pipe));
	t0 = kg_now_ns();
	r = kg_run(main_leaves_blocked, &b, &cfg);
	if (r == -ENODEV)
		SKIP(return, "backend %s cannot serve here", backend);
	ASSERT_EQ(0, r);
	/* joins for up to 1 s, then leaves the blocked workers behind */
	ASSERT_LT(kg_now_ns() - t0, 4000000000ull);
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0, atomic_load(&b.resumed));
	/* the next runtime starts while those threads are still blocked */
	ASSERT_EQ(0, run_kg(note_self, &first, procs));
	ASSERT_GT(first, 0);
	/*
	 * A left-behind coroutine that comes back while the next runtime
	 * runs finds its own runtime gone: it runs on to its next kgreen
	 * call, which ends its thread. Nothing of the new runtime is
	 * touched (it shares the backend's state with the old one): the new
	 * one goes on scheduling, sleeping and blocking, and ends.
	 */
	ASSERT_EQ(0, run_kg(wake_left_behind, &b, procs));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(1, atomic_load(&b.resumed));
	ASSERT_EQ(0, run_kg(note_self, &first, procs));
}

TEST_TIMEOUT(main_return_leaves_blocked_sysmon, 30)
{
	leave_blocked(_metadata, "sysmon", 1);
}

TEST_TIMEOUT(main_return_leaves_blocked_kernel, 30)
{
	leave_blocked(_metadata, "auto", 1);
}

TEST_TIMEOUT(main_return_leaves_blocked_2procs, 30)
{
	leave_blocked(_metadata, "auto", 2);
}

static void nested(void *p)
{
	*(int *)p = kg_run(nested, NULL, NULL);
}

TEST(nested_run_is_busy)
{
	int err = 0;

	ASSERT_EQ(0, run_kg(nested, &err, 1));
	ASSERT_EQ(-EBUSY, err);
}

static void check_stats(void *p)
{
	struct kg_stats st;

	(void)p;
	CO_CHECK(kg_stats(&st) == 0, "kg_stats");
	CO_CHECK(st.procs == 3, "procs %u", st.procs);
	CO_CHECK(st.coroutines == 1, "coroutines %llu",
		 (unsigned long long)st.coroutines);
	CO_CHECK(st.workers >= 1, "workers %u", st.workers);
	CO_CHECK(st.stack_guard >= KG_GUARD_MADVISE &&
			 st.stack_guard <= KG_GUARD_CANARY,
		 "guard %u", st.stack_guard);
	CO_CHECK(!strcmp(kg_backend_name(), "bpf") ||
			 !strcmp(kg_backend_name(), "sysmon"),
		 "backend %s", kg_backend_name());
	CO_CHECK(kg_stats(NULL) == -EINVAL, "NULL out");
}

TEST(stats_and_backend)
{
	struct kg_stats st;

	ASSERT_EQ(-ESRCH, kg_stats(&st));
	ASSERT_EQ(0, run_kg(check_stats, NULL, 3));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(-ESRCH, kg_stats(&st));
}

static void nothing(void *p)
{
	(void)p;
}

/* KGREEN_PROCS sets the number of procs; explicit config wins over it. */
static void procs_seen(void *p)
{
	struct kg_stats st;

	kg_stats(&st);
	*(unsigned int *)p = st.procs;
}

TEST(procs_from_environment)
{
	unsigned int procs = 0;

	setenv("KGREEN_PROCS", "5", 1);
	ASSERT_EQ(0, kg_run(procs_seen, &procs, NULL));
	ASSERT_EQ(5u, procs);
	ASSERT_EQ(0, run_kg(procs_seen, &procs, 2));
	ASSERT_EQ(2u, procs);
	unsetenv("KGREEN_PROCS");
}

TEST(config_errors)
{
	struct kg_config cfg = { 0 };

	ASSERT_EQ(-EINVAL, kg_run(NULL, NULL, NULL));
	cfg.flags = 2;	/* not a KG_RUN_ flag */
	ASSERT_EQ(-EINVAL, kg_run(nothing, NULL, &cfg));
	cfg.flags = 0;
	cfg.procs = 100000;
	ASSERT_EQ(-EINVAL, kg_run(nothing, NULL, &cfg));
	cfg.procs = 0;
	cfg.stack_size = 100;
	ASSERT_EQ(-EINVAL, kg_run(nothing, NULL, &cfg));
	cfg.stack_size = 0;
	cfg.backend = "no-such-backend";
	ASSERT_EQ(-EINVAL, kg_run(nothing, NULL, &cfg));
	cfg.backend = "auto";
	ASSERT_EQ(0, kg_run(nothing, NULL, &cfg));
}

/* A backend this build cannot provide fails with -ENODEV, not silently. */
TEST(forced_backend_unavailable)
{
	struct kg_config cfg = { .backend = "kmod" };

	ASSERT_EQ(-ENODEV, kg_run(nothing, NULL, &cfg));
}

TEST_HARNESS_MAIN
