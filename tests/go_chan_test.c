// SPDX-License-Identifier: MIT
/*
 * go_chan_test - the channel and select tests of Go's runtime/chan_test.go
 * (golang/go, src/runtime/chan_test.go), in C: each TEST is named after
 * the Go test it ports and checks what that test checks. Where a Go test
 * cannot apply as written, its comment says why and what is kept.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

static const unsigned int procs_of[] = { 1, 2 };

/* ------------------------------------------------------------------ */
/* TestSelfSelect                                                      */
/* ------------------------------------------------------------------ */

/*
 * Two coroutines loop over a select with a send and a receive case on the
 * same channel: they must meet each other (on an unbuffered channel a
 * select never receives its own value), and never deadlock.
 */
struct self_select {
	kg_chan_t *c;
	size_t cap;
	kg_wg_t wg;
	_Atomic long self_recv;
};

struct self_arg {
	struct self_select *s;
	int p;
};

static void self_select_co(void *arg)
{
	struct self_arg *a = arg;
	struct self_select *s = a->s;
	int i, p = a->p, v, r;

	for (i = 0; i < 1000; i++) {
		struct kg_case cs[2];

		/* both case orders, as the Go test does */
		if (p == 0 || i % 2 == 0) {
			cs[0] = (struct kg_case){ s->c, KG_SEND, &p, false };
			cs[1] = (struct kg_case){ s->c, KG_RECV, &v, false };
		} else {
			cs[0] = (struct kg_case){ s->c, KG_RECV, &v, false };
			cs[1] = (struct kg_case){ s->c, KG_SEND, &p, false };
		}
		v = -1;
		r = kg_select(cs, 2, -1);
		CO_CHECK(r == 0 || r == 1, "select returned %d", r);
		if (r >= 0 && cs[r].op == KG_RECV && s->cap == 0 && v == p)
			atomic_fetch_add(&s->self_recv, 1);
	}
	kg_wg_done(&s->wg);
}

static void self_select_main(void *arg)
{
	struct self_select *s = arg;
	struct self_arg a[2] = { { s, 0 }, { s, 1 } };

	kg_wg_add(&s->wg, 2);
	kg_go(self_select_co, &a[0]);
	kg_go(self_select_co, &a[1]);
	kg_wg_wait(&s->wg);
}

TEST_TIMEOUT(TestSelfSelect, 120)
{
	size_t caps[] = { 0, 10 };
	int i, k, round;

	for (round = 0; round < 10; round++)
		for (k = 0; k < 2; k++)
			for (i = 0; i < 2; i++) {
				struct self_select s = { .cap = caps[i],
							 .wg = KG_WG_INIT };

				s.c = kg_chan_make(sizeof(int), caps[i]);
				ASSERT_NONNULL(s.c);
				ASSERT_EQ(0, run_kg(self_select_main, &s,
						    procs_of[k]));
				ASSERT_EQ(0, co_failures());
				ASSERT_EQ(0, atomic_load(&s.self_recv));
				kg_chan_free(s.c);
			}
}

/*
 * The same from plain threads, and mixed: a thread's select in both
 * directions meets a coroutine's plain send and receive.
 */
static void *self_select_thread(void *arg)
{
	self_select_co(arg);
	return NULL;
}

static void self_select_mixed_main(void *arg)
{
	struct self_select *s = arg;
	struct self_arg a[2] = { { s, 0 }, { s, 1 } };
	pthread_t t;

	kg_wg_add(&s->wg, 2);
	CO_CHECK(pthread_create(&t, NULL, self_select_thread, &a[1]) == 0,
		 "thread");
	kg_go(self_select_co, &a[0]);
	kg_wg_wait(&s->wg);
	pthread_join(t, NULL);
}

TEST_TIMEOUT(TestSelfSelect_threads, 120)
{
	struct self_select s = { .wg = KG_WG_INIT };

	s.c = kg_chan_make(sizeof(int), 0);
	ASSERT_NONNULL(s.c);
	ASSERT_EQ(0, run_kg(self_select_mixed_main, &s, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0, atomic_load(&s.self_recv));
	kg_chan_free(s.c);
}

/*
 * A select waiting in both directions is met by plain operations of
 * either direction, by a try (Go's select with default), and by close.
 */
static void both_ways_waiter(void *arg)
{
	kg_chan_t *c = arg;
	int mine = 5, got = 0, r, i;

	for (i = 0; i < 4; i++) {
		struct kg_case cs[2] = { { c, KG_SEND, &mine, false },
					 { c, KG_RECV, &got, false } };

		r = kg_select(cs, 2, -1);
		if (i == 3) {	/* closed */
			CO_CHECK(r == 1 && !cs[1].ok, "closed: %d", r);
			break;
		}
		CO_CHECK(r >= 0 && cs[r].ok, "select %d: %d", i, r);
		if (r == 1)
			CO_CHECK(got == 40 + i, "got %d", got);
	}
}

static void both_ways_main(void *arg)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);
	int v, i, r;

	(void)arg;
	kg_go(both_ways_waiter, c);
	for (i = 0; i < 3; i++) {
		kg_sleep(2 * MS);	/* the select is waiting */
		switch (i) {
		case 0:	/* a plain receive meets its send */
			CO_CHECK(kg_chan_recv(c, &v) == 0 && v == 5, "recv");
			break;
		case 1:	/* a plain send meets its receive */
			v = 41;
			CO_CHECK(kg_chan_send(c, &v) == 0, "send");
			break;
		default:	/* a try does too */
			v = 42;
			r = kg_chan_try_send(c, &v);
			if (r == -EAGAIN)
				r = kg_chan_try_recv(c, &v);
			CO_CHECK(r == 0, "try: %d", r);
			break;
		}
	}
	kg_sleep(2 * MS);
	CO_CHECK(kg_chan_close(c) == 0, "close");
	kg_sleep(2 * MS);
	kg_chan_free(c);
}

TEST(TestSelfSelect_met_by_any_party)
{
	int k;

	for (k = 0; k < 2; k++) {
		ASSERT_EQ(0, run_kg(both_ways_main, NULL, procs_of[k]));
		ASSERT_EQ(0, co_failures());
	}
}

/* ------------------------------------------------------------------ */
/* TestSelectDuplicateChannel                                          */
/* ------------------------------------------------------------------ */

/*
 * A queues on c twice (two receive cases) and on d; B queues on c. d
 * wakes A, which must leave c's queue intact, so that a send on c then
 * wakes B.
 */
struct dup {
	kg_chan_t *c, *d, *e;
	_Atomic int b_got;
};

static void dup_a(void *arg)
{
	struct dup *x = arg;
	int v, nine = 9;
	struct kg_case cs[3] = { { x->c, KG_RECV, &v, false },
				 { x->c, KG_RECV, &v, false },
				 { x->d, KG_RECV, &v, false } };

	CO_CHECK(kg_select(cs, 3, -1) == 2, "woken by d");
	kg_chan_send(x->e, &nine);
}

static void dup_b(void *arg)
{
	struct dup *x = arg;
	int v = 0;

	kg_chan_recv(x->c, &v);
	atomic_store(&x->b_got, v);
}

static void dup_main(void *arg)
{
	struct dup *x = arg;
	int seven = 7, eight = 8, v;

	kg_go(dup_a, x);
	kg_sleep(1 * MS);	/* A queues on c first */
	kg_go(dup_b, x);
	kg_sleep(1 * MS);	/* then B */
	kg_chan_send(x->d, &seven);
	kg_chan_recv(x->e, &v);
	CO_CHECK(v == 9, "A says %d", v);
	kg_chan_send(x->c, &eight);	/* must wake B */
	kg_sleep(1 * MS);
	CO_CHECK(atomic_load(&x->b_got) == 8, "B got %d",
		 atomic_load(&x->b_got));
}

TEST(TestSelectDuplicateChannel)
{
	int k;

	for (k = 0; k < 2; k++) {
		struct dup x = { kg_chan_make(sizeof(int), 0),
				 kg_chan_make(sizeof(int), 0),
				 kg_chan_make(sizeof(int), 0), 0 };

		ASSERT_EQ(0, run_kg(dup_main, &x, procs_of[k]));
		ASSERT_EQ(0, co_failures());
		kg_chan_free(x.c);
		kg_chan_free(x.d);
		kg_chan_free(x.e);
	}
}

TEST_HARNESS_MAIN
