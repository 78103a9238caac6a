// SPDX-License-Identifier: MIT
/*
 * chan_select - kg_select with Go's rules: uniform choice among ready
 * cases, default (timeout 0), timeouts, NULL channels never ready, recv on
 * closed is ready with ok = false, send on closed fails, exactly one case
 * happens when selects race (Go's test/chan/doubleselect.go), many cases,
 * plain threads.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

static kg_wg_t wg;

TEST(fairness_two_ready)
{
	kg_chan_t *a = kg_chan_make(sizeof(int), 1);
	kg_chan_t *b = kg_chan_make(sizeof(int), 1);
	long n = 100000, i, hits[2] = { 0, 0 };
	int v = 0;

	ASSERT_EQ(0, kg_chan_send(a, &v));
	ASSERT_EQ(0, kg_chan_send(b, &v));
	for (i = 0; i < n; i++) {
		struct kg_case cs[2] = {
			{ a, KG_RECV, &v, false },
			{ b, KG_RECV, &v, false },
		};
		int r = kg_select(cs, 2, 0);

		ASSERT_TRUE(r == 0 || r == 1);
		ASSERT_TRUE(cs[r].ok);
		ASSERT_FALSE(cs[1 - r].ok);
		hits[r]++;
		ASSERT_EQ(0, kg_chan_send(cs[r].ch, &v));	/* refill */
	}
	TH_LOG("case 0: %ld, case 1: %ld", hits[0], hits[1]);
	ASSERT_LE(n * 45 / 100, hits[0]);
	ASSERT_LE(n * 45 / 100, hits[1]);
	kg_chan_free(a);
	kg_chan_free(b);
}

TEST(fairness_three_ready_mixed)
{
	kg_chan_t *r1 = kg_chan_make(sizeof(int), 1);
	kg_chan_t *s1 = kg_chan_make(sizeof(int), 1);
	kg_chan_t *r2 = kg_chan_make(sizeof(int), 1);
	long n = 30000, i, hits[3] = { 0, 0, 0 };
	int v = 3, out = 0;

	ASSERT_EQ(0, kg_chan_send(r1, &v));
	ASSERT_EQ(0, kg_chan_send(r2, &v));
	for (i = 0; i < n; i++) {
		struct kg_case cs[3] = {
			{ r1, KG_RECV, &out, false },
			{ s1, KG_SEND, &v, false },
			{ r2, KG_RECV, &out, false },
		};
		int r = kg_select(cs, 3, -1);

		ASSERT_TRUE(r >= 0 && r < 3);
		hits[(unsigned int)r % 3]++;
		if (r == 1) {
			ASSERT_EQ(0, kg_chan_recv(s1, NULL));
		} else {
			ASSERT_EQ(0, kg_chan_send(cs[r].ch, &v));
		}
	}
	for (i = 0; i < 3; i++)
		ASSERT_LE(n * 30 / 100, hits[i]);
	kg_chan_free(r1);
	kg_chan_free(s1);
	kg_chan_free(r2);
}

TEST(default_timeout_and_null_cases)
{
	kg_chan_t *e = kg_chan_make(sizeof(int), 0);
	int v = 0;
	struct kg_case cs[3] = {
		{ NULL, KG_RECV, &v, false },
		{ e, KG_RECV, &v, false },
		{ NULL, KG_SEND, &v, false },
	};
	uint64_t t0;

	ASSERT_EQ(-EAGAIN, kg_select(cs, 3, 0));
	t0 = kg_now_ns();
	ASSERT_EQ(-ETIMEDOUT, kg_select(cs, 3, 3 * MS));
	ASSERT_LE(3 * MS, kg_now_ns() - t0);
	/* only NULL channels: default, timeout */
	ASSERT_EQ(-EAGAIN, kg_select(cs, 1, 0));
	ASSERT_EQ(-ETIMEDOUT, kg_select(cs, 1, 1 * MS));
	ASSERT_EQ(-EAGAIN, kg_select(NULL, 0, 0));
	ASSERT_EQ(-ETIMEDOUT, kg_select(NULL, 0, 1 * MS));
	/* a NULL channel never wins, even with a ready case beside it */
	kg_chan_free(e);
	e = kg_chan_make(sizeof(int), 1);
	ASSERT_EQ(0, kg_chan_send(e, &v));
	cs[1].ch = e;
	ASSERT_EQ(1, kg_select(cs, 3, -1));
	ASSERT_TRUE(cs[1].ok);
	kg_chan_free(e);
}

TEST(closed_channels)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 2);
	kg_chan_t *e = kg_chan_make(sizeof(int), 0);
	int v = 5, out = -1;
	struct kg_case rc[2] = {
		{ e, KG_RECV, &out, false },
		{ c, KG_RECV, &out, false },
	};
	struct kg_case sc[2] = {
		{ e, KG_RECV, &out, false },
		{ c, KG_SEND, &v, false },
	};

	ASSERT_EQ(0, kg_chan_send(c, &v));
	ASSERT_EQ(0, kg_chan_close(c));
	/* buffered value first, ok = true */
	ASSERT_EQ(1, kg_select(rc, 2, -1));
	ASSERT_TRUE(rc[1].ok);
	ASSERT_EQ(5, out);
	/* then closed: ready, ok = false, out untouched */
	out = -1;
	ASSERT_EQ(1, kg_select(rc, 2, -1));
	ASSERT_FALSE(rc[1].ok);
	ASSERT_EQ(-1, out);
	ASSERT_EQ(1, kg_select(rc, 2, 0));
	/* a send case on a closed channel */
	ASSERT_EQ(-EPIPE, kg_select(sc, 2, -1));
	kg_chan_free(c);
	kg_chan_free(e);
}

TEST(bad_input)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 1);
	struct kg_case cs[1] = { { c, 7, NULL, false } };

	ASSERT_EQ(-EINVAL, kg_select(NULL, 1, 0));
	ASSERT_EQ(-EINVAL, kg_select(cs, 1, 0));
	cs[0].op = KG_SEND;	/* NULL elem, elem_size 4 */
	ASSERT_EQ(-EINVAL, kg_select(cs, 1, 0));
	cs[0].op = KG_RECV;
	ASSERT_EQ(-EINVAL, kg_select(cs, 1, -2));
	ASSERT_EQ(-EINVAL, kg_select(cs, KG_SELECT_MAX + 1, 0));
	ASSERT_EQ(-EAGAIN, kg_select(cs, 1, 0));	/* recv NULL: discard */
	kg_chan_free(c);
}

/* --- a select parked on many channels is woken by one --- */

struct waker {
	kg_chan_t *c;
	int v;
};

static void wake_one(void *p)
{
	struct waker *w = p;

	kg_sleep(1 * MS);
	CO_CHECK(kg_chan_send(w->c, &w->v) == 0, "send");
}

static void many_cases_main(void *p)
{
	int n = *(int *)p, i, out = -1, r;
	kg_chan_t **ch = calloc((size_t)n, sizeof(*ch));
	struct kg_case *cs = calloc((size_t)n, sizeof(*cs));
	struct waker w;

	for (i = 0; i < n; i++) {
		ch[i] = kg_chan_make(sizeof(int), 0);
		cs[i] = (struct kg_case){ ch[i], KG_RECV, &out, false };
	}
	w.c = ch[n / 2];
	w.v = 1234;
	kg_go(wake_one, &w);
	r = kg_select(cs, (size_t)n, -1);
	CO_CHECK(r == n / 2, "chose %d", r);
	CO_CHECK(out == 1234 && cs[r].ok, "out %d", out);
	/* every other channel is clean again: no sudog left behind */
	for (i = 0; i < n; i++)
		CO_CHECK(kg_chan_try_send(ch[i], &i) == -EAGAIN, "stale on %d",
			 i);
	for (i = 0; i < n; i++)
		kg_chan_free(ch[i]);
	free(ch);
	free(cs);
}

TEST(many_cases)
{
	int sizes[] = { 2, 9, 1000 }, i;

	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, run_kg(many_cases_main, &sizes[i], 2));
	ASSERT_EQ(0, co_failures());
}

/* the same channel in several cases, both directions */
static void same_chan_main(void *p)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);
	int v = 7, out = 0, i, r;

	(void)p;
	for (i = 0; i < 100; i++) {
		struct kg_case cs[3] = {
			{ c, KG_RECV, &out, false },
			{ c, KG_RECV, &out, false },
			{ c, KG_SEND, &v, false },
		};

		CO_CHECK(kg_select(cs, 3, 0) == -EAGAIN, "nothing ready");
		r = kg_select(cs, 3, 1 * MS);
		CO_CHECK(r == -ETIMEDOUT, "cannot pair with itself: %d", r);
	}
	kg_chan_free(c);
}

TEST(same_channel_twice)
{
	ASSERT_EQ(0, run_kg(same_chan_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

/* --- doubleselect: values through racing selects, each exactly once --- */

#define DS_CHANS 4

struct ds {
	kg_chan_t *c[DS_CHANS];
	kg_chan_t *done;
	long n;
	unsigned char *seen;
	_Atomic long dup, got;
};

static void ds_sender(void *p)
{
	struct ds *d = p;
	long i;

	for (i = 0; i < d->n; i++) {
		struct kg_case cs[DS_CHANS];
		int k;

		for (k = 0; k < DS_CHANS; k++)
			cs[k] = (struct kg_case){ d->c[k], KG_SEND, &i, false };
		CO_CHECK(kg_select(cs, DS_CHANS, -1) >= 0, "select send");
	}
	for (i = 0; i < DS_CHANS; i++)
		kg_chan_close(d->c[i]);
	kg_wg_done(&wg);
}

static void ds_receiver(void *p)
{
	struct ds *d = p;
	kg_chan_t *c = d->c[kg_self() % DS_CHANS];
	long v;

	/* receivers on single channels, some through select */
	for (;;) {
		int r;

		if (kg_self() % 2) {
			r = kg_chan_recv(c, &v);
		} else {
			struct kg_case cs[2] = {
				{ c, KG_RECV, &v, false },
				{ d->done, KG_RECV, NULL, false },
			};

			r = kg_select(cs, 2, -1);
			if (r == 0 && !cs[0].ok)
				r = -EPIPE;
			else if (r == 0)
				r = 0;
			else
				r = -EPIPE;
		}
		if (r)
			break;
		if (v < 0 || v >= d->n || __atomic_exchange_n(&d->seen[v], 1,
							      __ATOMIC_RELAXED))
			atomic_fetch_add(&d->dup, 1);
		atomic_fetch_add(&d->got, 1);
	}
	kg_wg_done(&wg);
}

static void doubleselect_main(void *p)
{
	struct ds *d = p;
	int i;

	kg_wg_add(&wg, 1 + 4 * DS_CHANS);
	for (i = 0; i < 4 * DS_CHANS; i++)
		kg_go(ds_receiver, d);
	kg_go(ds_sender, d);
	kg_wg_wait(&wg);
}

TEST(doubleselect_exactly_once)
{
	struct ds d = { .n = scaled(200000, 10) };
	unsigned int procs[] = { 1, 2, 3 };
	int i, k;

	for (k = 0; k < 3; k++) {
		d.seen = calloc((size_t)d.n, 1);
		for (i = 0; i < DS_CHANS; i++)
			d.c[i] = kg_chan_make(sizeof(long), 0);
		d.done = kg_chan_make(0, 0);
		atomic_store(&d.dup, 0);
		atomic_store(&d.got, 0);
		ASSERT_EQ(0, run_kg(doubleselect_main, &d, procs[k]));
		ASSERT_EQ(0, co_failures());
		ASSERT_EQ(0, atomic_load(&d.dup));
		ASSERT_EQ(d.n, atomic_load(&d.got));
		for (i = 0; i < DS_CHANS; i++)
			kg_chan_free(d.c[i]);
		kg_chan_free(d.done);
		free(d.seen);
	}
}

/* --- select races a timeout: the value is either taken or left --- */

static _Atomic long race_taken, race_timeouts;

static void race_sender(void *p)
{
	long i;

	for (i = 0; i < 2000; i++) {
		if (kg_chan_send_timeout(p, &i, 20000) == 0)
			atomic_fetch_add(&race_taken, 1);
		else
			atomic_fetch_add(&race_timeouts, 1);
	}
	kg_wg_done(&wg);
}

static _Atomic long race_received;

static void race_receiver(void *p)
{
	long v;
	int i;

	for (i = 0; i < 2000; i++) {
		struct kg_case cs[1] = { { p, KG_RECV, &v, false } };

		if (kg_select(cs, 1, 20000) == 0)
			atomic_fetch_add(&race_received, 1);
	}
	kg_wg_done(&wg);
}

static void timeout_race_main(void *p)
{
	kg_chan_t *c = kg_chan_make(sizeof(long), 0);

	(void)p;
	kg_wg_add(&wg, 4);
	kg_go(race_sender, c);
	kg_go(race_sender, c);
	kg_go(race_receiver, c);
	kg_go(race_receiver, c);
	kg_wg_wait(&wg);
	kg_chan_free(c);
}

TEST(timeouts_race_transfers)
{
	atomic_store(&race_taken, 0);
	atomic_store(&race_received, 0);
	ASSERT_EQ(0, run_kg(timeout_race_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
	TH_LOG("taken %ld, received %ld, timeouts %ld", race_taken,
	       race_received, race_timeouts);
	ASSERT_EQ(atomic_load(&race_taken), atomic_load(&race_received));
}

/* --- plain threads select too --- */

static void *thread_selector(void *p)
{
	kg_chan_t **c = p, *live[2] = { c[0], c[1] };
	long v, n = 0;
	int done = 0;

	while (done < 2) {
		struct kg_case cs[2] = {
			{ live[0], KG_RECV, &v, false },
			{ live[1], KG_RECV, &v, false },
		};
		int r = kg_select(cs, 2, -1);

		if (r < 0)
			return (void *)1;
		if (!cs[r].ok) {
			live[r] = NULL;	/* closed: Go's "ch = nil" */
			done++;
			continue;
		}
		n++;
	}
	return (void *)n;
}

static void feed(void *p)
{
	long i;

	for (i = 0; i < 1000; i++)
		kg_chan_send(p, &i);
	kg_chan_close(p);
}

static void thread_select_main(void *p)
{
	kg_chan_t *c[2] = { kg_chan_make(sizeof(long), 0),
			    kg_chan_make(sizeof(long), 0) };
	pthread_t t;
	void *r;

	(void)p;
	pthread_create(&t, NULL, thread_selector, c);
	kg_go(feed, c[0]);
	kg_go(feed, c[1]);
	pthread_join(t, &r);
	CO_CHECK((long)r == 2000, "thread received %ld", (long)r);
	kg_chan_free(c[0]);
	kg_chan_free(c[1]);
}

TEST(thread_select)
{
	ASSERT_EQ(0, run_kg(thread_select_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void *thread_select_timeout(void *p)
{
	struct kg_case cs[1] = { { p, KG_RECV, NULL, false } };
	uint64_t t0 = kg_now_ns();

	if (kg_select(cs, 1, 2 * MS) != -ETIMEDOUT)
		return (void *)1;
	return kg_now_ns() - t0 >= 2 * MS ? NULL : (void *)2;
}

TEST(thread_select_timeout_no_runtime)
{
	kg_chan_t *c = kg_chan_make(0, 0);
	pthread_t t;
	void *r;

	ASSERT_EQ(0, pthread_create(&t, NULL, thread_select_timeout, c));
	pthread_join(t, &r);
	ASSERT_NULL(r);
	ASSERT_EQ(-EAGAIN, kg_chan_try_send(c, NULL));
	kg_chan_free(c);
}

TEST_HARNESS_MAIN
