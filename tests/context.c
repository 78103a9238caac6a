// SPDX-License-Identifier: MIT
/*
 * context.c - contexts (Go's context package): cancellation closes done
 * and flows down the tree, never up; deadlines, a child's capped by its
 * parent's; select on done; descriptor waits a context ends; bad input;
 * and many trees made, cancelled and freed at once on two procs (every
 * one freed: LeakSanitizer checks the counting).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/socket.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

static bool closed(kg_context_t *c)
{
	/* a receive on a closed zero-size channel: -EPIPE at once */
	return kg_chan_try_recv(kg_context_done(c), NULL) == -EPIPE;
}

static void cancel_main(void *p)
{
	kg_context_t *bg = kg_context_background(), *a, *b, *c, *d;

	(void)p;
	CO_CHECK(kg_context_err(bg) == 0, "background");
	CO_CHECK(kg_context_done(bg) == NULL, "background done");
	CO_CHECK(kg_context_deadline(bg) == UINT64_MAX, "no deadline");
	a = kg_context_with_cancel(bg);
	b = kg_context_with_cancel(a);
	c = kg_context_with_cancel(b);
	d = kg_context_with_cancel(a);
	CO_CHECK(a && b && c && d, "made");
	CO_CHECK(!kg_context_err(c) && !closed(c), "open");
	/* cancelling b: b and c, not a or d */
	kg_context_cancel(b);
	CO_CHECK(kg_context_err(b) == -ECANCELED && closed(b), "b");
	CO_CHECK(kg_context_err(c) == -ECANCELED && closed(c), "c");
	CO_CHECK(kg_context_err(a) == 0 && !closed(a), "a untouched");
	CO_CHECK(kg_context_err(d) == 0 && !closed(d), "d untouched");
	kg_context_cancel(b);	/* idempotent */
	/* a child of a cancelled context is born cancelled */
	kg_context_free(kg_context_with_cancel(c));
	kg_context_free(a);	/* cancels d */
	CO_CHECK(kg_context_err(d) == -ECANCELED, "d by a");
	kg_context_free(c);
	kg_context_free(b);
	kg_context_free(d);
	kg_context_free(NULL);
	kg_context_free(bg);
}

TEST(cancel_flows_down_not_up)
{
	ASSERT_EQ(0, run_kg(cancel_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

static void born_main(void *p)
{
	kg_context_t *a = kg_context_with_cancel(kg_context_background());
	kg_context_t *b;

	(void)p;
	kg_context_cancel(a);
	b = kg_context_with_cancel(a);
	CO_CHECK(kg_context_err(b) == -ECANCELED && closed(b), "born");
	kg_context_free(b);
	b = kg_context_with_timeout(a, 1000 * MS);
	CO_CHECK(kg_context_err(b) == -ECANCELED, "born, with a deadline");
	kg_context_free(b);
	kg_context_free(a);
}

TEST(a_child_of_a_cancelled_context_is_born_cancelled)
{
	ASSERT_EQ(0, run_kg(born_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

static void deadline_main(void *p)
{
	kg_context_t *bg = kg_context_background(), *a, *b, *c;
	struct kg_case cs[2];
	uint64_t t0 = kg_now_ns();
	int r;

	(void)p;
	a = kg_context_with_timeout(bg, 30 * MS);
	b = kg_context_with_timeout(a, 1000 * MS);	/* capped by a's */
	c = kg_context_with_cancel(b);
	CO_CHECK(kg_context_deadline(b) == kg_context_deadline(a),
		 "child deadline capped");
	CO_CHECK(kg_context_deadline(c) == kg_context_deadline(a),
		 "inherited");
	/* Go: select { case <-ctx.Done(): ...; case <-time.After(1s): } */
	cs[0] = (struct kg_case){ .ch = kg_context_done(c), .op = KG_RECV };
	cs[1] = (struct kg_case){ .ch = NULL, .op = KG_RECV };	/* never */
	r = kg_select(cs, 2, 2000 * (int64_t)MS);
	CO_CHECK(r == 0 && !cs[0].ok, "select: %d", r);
	CO_CHECK(kg_now_ns() - t0 >= 30 * MS, "early: %llu ms",
		 (unsigned long long)((kg_now_ns() - t0) / MS));
	CO_CHECK(kg_now_ns() - t0 < 1000 * MS, "late");
	CO_CHECK(kg_context_err(a) == -ETIMEDOUT, "a: %d", kg_context_err(a));
	CO_CHECK(kg_context_err(c) == -ETIMEDOUT, "c: %d", kg_context_err(c));
	kg_context_free(c);
	kg_context_free(b);
	kg_context_free(a);
	/* a deadline already past */
	a = kg_context_with_deadline(bg, kg_now_ns() - 1);
	CO_CHECK(a && kg_context_err(a) == -ETIMEDOUT && closed(a), "past");
	kg_context_free(a);
	/* cancelled before its deadline: the deadline changes nothing */
	a = kg_context_with_timeout(bg, 20 * MS);
	kg_context_cancel(a);
	kg_sleep(40 * MS);
	CO_CHECK(kg_context_err(a) == -ECANCELED, "stays cancelled");
	kg_context_free(a);
}

TEST(deadlines)
{
	ASSERT_EQ(0, run_kg(deadline_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static int sv[2];
static kg_context_t *fdctx;
static _Atomic int fd_res = 1;

static void fd_waiter(void *p)
{
	(void)p;
	atomic_store(&fd_res, kg_fd_wait_context(sv[0], KG_FD_READ, fdctx));
}

static void fd_main(void *p)
{
	kg_context_t *bg = kg_context_background();
	uint64_t t0;

	(void)p;
	CO_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0,
		 "socketpair");
	/* cancelled while waiting */
	fdctx = kg_context_with_cancel(bg);
	kg_go(fd_waiter, NULL);
	kg_sleep(10 * MS);
	CO_CHECK(atomic_load(&fd_res) == 1, "did not wait");
	kg_context_cancel(fdctx);
	while (atomic_load(&fd_res) == 1)
		kg_sleep(MS);
	CO_CHECK(atomic_load(&fd_res) == -ECANCELED, "cancel: %d",
		 atomic_load(&fd_res));
	kg_context_free(fdctx);
	/* the deadline */
	t0 = kg_now_ns();
	fdctx = kg_context_with_timeout(bg, 20 * MS);
	CO_CHECK(kg_fd_wait_context(sv[0], KG_FD_READ, fdctx) == -ETIMEDOUT,
		 "deadline");
	CO_CHECK(kg_now_ns() - t0 >= 20 * MS, "early");
	kg_context_free(fdctx);
	/* ready first */
	fdctx = kg_context_with_timeout(bg, 1000 * MS);
	CO_CHECK(write(sv[1], "x", 1) == 1, "write");
	CO_CHECK(kg_fd_wait_context(sv[0], KG_FD_READ, fdctx) == 0, "ready");
	/* an ended context ends the wait before it starts */
	kg_context_cancel(fdctx);
	CO_CHECK(kg_fd_wait_context(sv[0], KG_FD_READ, fdctx) == -ECANCELED,
		 "already");
	kg_context_free(fdctx);
	CO_CHECK(kg_fd_wait_context(sv[0], KG_FD_READ, bg) == 0, "background");
	CO_CHECK(kg_fd_wait_context(sv[0], KG_FD_READ, NULL) == -EINVAL,
		 "NULL");
	close(sv[0]);
	close(sv[1]);
}

TEST(descriptor_waits_end_with_their_context)
{
	ASSERT_EQ(0, run_kg(fd_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void *plain_canceller(void *p)
{
	usleep(20 * 1000);
	kg_context_cancel(p);
	return NULL;
}

static void plain_main(void *p)
{
	kg_context_t *c = kg_context_with_cancel(kg_context_background());
	pthread_t t;
	int s[2];

	(void)p;
	CO_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s) == 0,
		 "socketpair");
	/* a plain thread cancels a coroutine's wait */
	pthread_create(&t, NULL, plain_canceller, c);
	CO_CHECK(kg_fd_wait_context(s[0], KG_FD_READ, c) == -ECANCELED,
		 "cancelled from a thread");
	pthread_join(t, NULL);
	kg_context_free(c);
	close(s[0]);
	close(s[1]);
}

TEST(a_plain_thread_cancels)
{
	ASSERT_EQ(0, run_kg(plain_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void bad_main(void *p)
{
	(void)p;
	errno = 0;
	CO_CHECK(kg_context_with_cancel(NULL) == NULL && errno == EINVAL,
		 "NULL parent");
	errno = 0;
	CO_CHECK(kg_context_with_timeout(NULL, MS) == NULL && errno == EINVAL,
		 "NULL parent, deadline");
	CO_CHECK(kg_context_err(NULL) == -EINVAL, "err NULL");
	CO_CHECK(kg_context_done(NULL) == NULL, "done NULL");
	kg_context_cancel(NULL);
}

TEST(bad_input)
{
	kg_context_t *c;

	ASSERT_EQ(0, run_kg(bad_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	/* outside kg_run: cancel trees work, deadlines need the runtime */
	c = kg_context_with_cancel(kg_context_background());
	ASSERT_NE(NULL, c);
	errno = 0;
	ASSERT_EQ(NULL, kg_context_with_timeout(c, MS));
	ASSERT_EQ(EPERM, errno);
	kg_context_free(c);
}

/* Trees made, cancelled from several sides and freed, all at once. */
#define TREES scaled(2000, 10)
static kg_wg_t storm_wg = KG_WG_INIT;
static _Atomic long storm_seen;

static void storm_one(void *p)
{
	uint64_t r = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull | 1;
	kg_context_t *root, *mid, *leaf[4];
	int i;

	root = kg_context_with_timeout(kg_context_background(),
				       (xorshift(&r) % 3) * MS);
	mid = kg_context_with_cancel(root);
	for (i = 0; i < 4; i++)
		leaf[i] = xorshift(&r) & 1 ?
				  kg_context_with_cancel(mid) :
				  kg_context_with_timeout(mid,
							  (xorshift(&r) % 3) * MS);
	if (xorshift(&r) & 1)
		kg_yield();
	switch (xorshift(&r) % 3) {
	case 0:
		kg_context_cancel(mid);
		break;
	case 1:
		kg_context_cancel(leaf[xorshift(&r) % 4]);
		break;
	default:
		kg_sleep(xorshift(&r) % (3 * MS));
		break;
	}
	for (i = 0; i < 4; i++)
		if (kg_context_err(leaf[i]))
			atomic_fetch_add(&storm_seen, 1);
	/* freed parents first or children first */
	if (xorshift(&r) & 1) {
		kg_context_free(root);
		kg_context_free(mid);
		for (i = 0; i < 4; i++)
			kg_context_free(leaf[i]);
	} else {
		for (i = 0; i < 4; i++)
			kg_context_free(leaf[i]);
		kg_context_free(mid);
		kg_context_free(root);
	}
	kg_wg_done(&storm_wg);
}

static void storm_main(void *p)
{
	long i;

	(void)p;
	kg_wg_add(&storm_wg, (int)TREES);
	for (i = 0; i < TREES; i++)
		kg_go(storm_one, (void *)(intptr_t)(i + 1));
	kg_wg_wait(&storm_wg);
	/* let the deadline coroutines of cancelled trees finish */
	kg_sleep(10 * MS);
}

TEST_TIMEOUT(trees_made_cancelled_and_freed_at_once, 60)
{
	ASSERT_EQ(0, run_kg(storm_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	TH_LOG("%ld trees, %ld leaves ended by then", TREES,
	       atomic_load(&storm_seen));
}

TEST_HARNESS_MAIN
