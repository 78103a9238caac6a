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
#define US 1000ull

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

	for (round = 0; round < scaled(10, 5); round++)
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

/* ------------------------------------------------------------------ */
/* TestChan                                                            */
/* ------------------------------------------------------------------ */

struct tc {
	kg_chan_t *c, *done, *parts;
	_Atomic int flag1, flag2;
	size_t cap;
};

static void tc_recv_flag(void *p)
{
	struct tc *t = p;
	int v;

	kg_chan_recv(t->c, &v);
	atomic_store(&t->flag1, 1);
}

static void tc_send_flag(void *p)
{
	struct tc *t = p;
	int zero = 0;

	kg_chan_send(t->c, &zero);
	atomic_store(&t->flag2, 1);
}

static void tc_close_wait(void *p)
{
	struct tc *t = p;
	int v = 5, r = kg_chan_recv(t->c, &v);
	bool ok = r == -EPIPE;

	kg_chan_send(t->done, &ok);
}

static void tc_send100(void *p)
{
	struct tc *t = p;
	int i;

	for (i = 0; i < 100; i++)
		kg_chan_send(t->c, &i);
}

#define TC_P 4
#define TC_L 1000

static void tc_sendL(void *p)
{
	struct tc *t = p;
	int i;

	for (i = 0; i < TC_L; i++)
		kg_chan_send(t->c, &i);
}

static void tc_recvL(void *p)
{
	struct tc *t = p;
	int *recv = calloc(TC_L, sizeof(int)), i, v;

	for (i = 0; i < TC_L; i++) {
		kg_chan_recv(t->c, &v);
		if (v >= 0 && v < TC_L)
			recv[v]++;
	}
	kg_chan_send(t->parts, &recv);
}

static void test_chan_main(void *p)
{
	int n = *(int *)p, chan_cap, i, v, zero = 0;

	/* one record per capacity: coroutines of a round may still read
	 * theirs (a receiver woken late) while the next round runs */
	static struct tc rounds[200];

	for (chan_cap = 0; chan_cap < n; chan_cap++) {
		struct tc *t = &rounds[chan_cap];
		int *total = calloc(TC_L, sizeof(int)), *part;
		bool ok;

		memset(t, 0, sizeof(*t));
		t->cap = (size_t)chan_cap;

		/* receive from an empty channel blocks */
		t->c = kg_chan_make(sizeof(int), t->cap);
		kg_go(tc_recv_flag, t);
		kg_go(tc_recv_flag, t);
		kg_sleep(1 * MS);
		CO_CHECK(!atomic_load(&t->flag1), "chan[%d]: receive from empty",
			 chan_cap);
		/* a non-blocking receive does not block */
		CO_CHECK(kg_chan_try_recv(t->c, &v) == -EAGAIN, "chan[%d]",
			 chan_cap);
		kg_chan_send(t->c, &zero);
		kg_chan_send(t->c, &zero);
		kg_sleep(100 * US);
		kg_chan_free(t->c);

		/* send to a full channel blocks */
		t->c = kg_chan_make(sizeof(int), t->cap);
		for (i = 0; i < chan_cap; i++)
			kg_chan_send(t->c, &i);
		kg_go(tc_send_flag, t);
		kg_sleep(1 * MS);
		CO_CHECK(!atomic_load(&t->flag2), "chan[%d]: send to full",
			 chan_cap);
		CO_CHECK(kg_chan_try_send(t->c, &zero) == -EAGAIN, "chan[%d]",
			 chan_cap);
		kg_chan_recv(t->c, &v);
		kg_sleep(100 * US);
		while (kg_chan_try_recv(t->c, &v) == 0)
			;
		kg_chan_free(t->c);

		/* values then zero (closed) from a closed channel */
		t->c = kg_chan_make(sizeof(int), t->cap);
		for (i = 0; i < chan_cap; i++)
			kg_chan_send(t->c, &i);
		kg_chan_close(t->c);
		for (i = 0; i < chan_cap; i++) {
			v = -1;
			kg_chan_recv(t->c, &v);
			CO_CHECK(v == i, "chan[%d]: received %d, expected %d",
				 chan_cap, v, i);
		}
		CO_CHECK(kg_chan_recv(t->c, &v) == -EPIPE, "closed");
		kg_chan_free(t->c);

		/* close unblocks a receive */
		t->c = kg_chan_make(sizeof(int), t->cap);
		t->done = kg_chan_make(sizeof(bool), 0);
		kg_go(tc_close_wait, t);
		kg_sleep(1 * MS);
		kg_chan_close(t->c);
		kg_chan_recv(t->done, &ok);
		CO_CHECK(ok, "chan[%d]: close did not unblock", chan_cap);
		kg_chan_free(t->c);

		/* 100 integers in FIFO order, twice */
		t->c = kg_chan_make(sizeof(int), t->cap);
		for (int round = 0; round < 2; round++) {
			kg_go(tc_send100, t);
			for (i = 0; i < 100; i++) {
				v = -1;
				CO_CHECK(kg_chan_recv(t->c, &v) == 0 && v == i,
					 "chan[%d]: received %d, expected %d",
					 chan_cap, v, i);
			}
		}
		/* 1000 integers in 4 coroutines, each received 4 times */
		t->parts = kg_chan_make(sizeof(int *), 0);
		for (i = 0; i < TC_P; i++)
			kg_go(tc_sendL, t);
		for (i = 0; i < TC_P; i++)
			kg_go(tc_recvL, t);
		for (i = 0; i < TC_P; i++) {
			kg_chan_recv(t->parts, &part);
			for (v = 0; v < TC_L; v++)
				total[v] += part[v];
			free(part);
		}
		for (v = 0; v < TC_L; v++)
			if (total[v] != TC_P) {
				CO_CHECK(0, "chan[%d]: %d received %d times",
					 chan_cap, v, total[v]);
				break;
			}
		kg_chan_free(t->c);
		kg_chan_free(t->done);
		kg_chan_free(t->parts);
		free(total);

		/* len and cap */
		t->c = kg_chan_make(sizeof(int), t->cap);
		CO_CHECK(kg_chan_len(t->c) == 0 && kg_chan_cap(t->c) == t->cap,
			 "len/cap");
		for (i = 0; i < chan_cap; i++)
			kg_chan_send(t->c, &i);
		CO_CHECK(kg_chan_len(t->c) == t->cap, "len %zu, cap %zu",
			 kg_chan_len(t->c), t->cap);
		kg_chan_free(t->c);
	}
}

TEST_TIMEOUT(TestChan, 300)
{
	int n = (int)scaled(200, 10);	/* Go's -short: 20 */

	ASSERT_EQ(0, run_kg(test_chan_main, &n, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* TestNonblockRecvRace, TestNonblockSelectRace, ...Race2               */
/* ------------------------------------------------------------------ */

static void nbrr_co(void *p)
{
	struct kg_case cs = { p, KG_RECV, NULL, false };

	CO_CHECK(kg_select(&cs, 1, 0) == 0, "chan is not ready");
}

static void nbrr_main(void *p)
{
	long n = *(long *)p, i;
	int one = 1;

	for (i = 0; i < n; i++) {
		kg_chan_t *c = kg_chan_make(sizeof(int), 1);

		kg_chan_send(c, &one);
		kg_go(nbrr_co, c);
		kg_chan_close(c);
		kg_chan_recv(c, NULL);
		kg_yield();	/* the coroutine's select is over */
		kg_sleep(0);
		kg_chan_free(c);
	}
}

struct nbsr {
	kg_chan_t *c1, *c2, *done;
};

static void nbsr_co(void *p)
{
	struct nbsr *x = p;
	struct kg_case cs[2] = { { x->c1, KG_RECV, NULL, false },
				 { x->c2, KG_RECV, NULL, false } };
	bool ok = kg_select(cs, 2, 0) >= 0;

	kg_chan_send(x->done, &ok);
}

static void nbsr_main(void *p)
{
	long n = ((long *)p)[0], i;
	int close_c2 = (int)((long *)p)[1], one = 1;
	kg_chan_t *done = kg_chan_make(sizeof(bool), 1);

	for (i = 0; i < n; i++) {
		struct nbsr x = { kg_chan_make(sizeof(int), 1),
				  kg_chan_make(sizeof(int), close_c2 ? 0 : 1),
				  done };
		bool ok = false;

		kg_chan_send(x.c1, &one);
		kg_go(nbsr_co, &x);
		if (close_c2)
			kg_chan_close(x.c2);
		else
			kg_chan_send(x.c2, &one);
		kg_chan_try_recv(x.c1, NULL);
		kg_chan_recv(done, &ok);
		CO_CHECK(ok, "no chan is ready (round %ld)", i);
		if (!ok)
			break;
		kg_chan_free(x.c1);
		kg_chan_free(x.c2);
	}
	kg_chan_free(done);
}

TEST_TIMEOUT(TestNonblockRecvRace, 120)
{
	long n = scaled(10000, 10);

	ASSERT_EQ(0, run_kg(nbrr_main, &n, 2));
	ASSERT_EQ(0, co_failures());
}

TEST_TIMEOUT(TestNonblockSelectRace, 120)
{
	long a[2] = { scaled(100000, 20), 0 };

	ASSERT_EQ(0, run_kg(nbsr_main, a, 2));
	ASSERT_EQ(0, co_failures());
}

TEST_TIMEOUT(TestNonblockSelectRace2, 120)
{
	long a[2] = { scaled(100000, 20), 1 };

	ASSERT_EQ(0, run_kg(nbsr_main, a, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* TestSelectStress                                                    */
/* ------------------------------------------------------------------ */

/*
 * 4 coroutines send N values on each of 4 channels (two unbuffered, caps
 * 2 and 3), 4 receive N from each, one sends N on each in a single select
 * and one receives N from each in a single select, disabling a channel's
 * case (NULL) once it has done its N. Nothing may deadlock. Go runs it
 * with GOMAXPROCS(10); here with 2 procs and 10.
 */
struct sst {
	kg_chan_t *c[4];
	long n;
	kg_wg_t wg;
};

struct sst_arg {
	struct sst *s;
	int k;
};

static void sst_send(void *p)
{
	struct sst_arg *a = p;
	long i;
	int zero = 0;

	for (i = 0; i < a->s->n; i++)
		kg_chan_send(a->s->c[a->k], &zero);
	kg_wg_done(&a->s->wg);
}

static void sst_recv(void *p)
{
	struct sst_arg *a = p;
	long i;

	for (i = 0; i < a->s->n; i++)
		kg_chan_recv(a->s->c[a->k], NULL);
	kg_wg_done(&a->s->wg);
}

static void sst_select(void *p)
{
	struct sst_arg *a = p;
	struct sst *s = a->s;
	long cnt[4] = { 0 }, i;
	int zero = 0, k, order[4] = { 3, 2, 0, 1 };
	struct kg_case cs[4];

	for (k = 0; k < 4; k++)
		cs[k] = (struct kg_case){ s->c[order[k]],
					  a->k ? KG_RECV : KG_SEND,
					  a->k ? NULL : &zero, false };
	for (i = 0; i < 4 * s->n; i++) {
		int r = kg_select(cs, 4, -1);

		CO_CHECK(r >= 0 && r < 4, "select %d", r);
		if (r < 0)
			break;
		if (++cnt[r] == s->n)
			cs[r].ch = NULL;
	}
	kg_wg_done(&s->wg);
}

static void sst_main(void *p)
{
	struct sst *s = p;
	struct sst_arg args[10];
	int k;

	kg_wg_add(&s->wg, 10);
	for (k = 0; k < 4; k++) {
		args[k] = (struct sst_arg){ s, k };
		kg_go(sst_send, &args[k]);
		kg_go(sst_recv, &args[k]);
	}
	args[4] = (struct sst_arg){ s, 0 };
	args[5] = (struct sst_arg){ s, 1 };
	kg_go(sst_select, &args[4]);
	kg_go(sst_select, &args[5]);
	kg_wg_wait(&s->wg);
}

TEST_TIMEOUT(TestSelectStress, 300)
{
	unsigned int procs[] = { 2, 10 };
	int i, k;

	for (i = 0; i < 2; i++) {
		struct sst s = { .n = scaled(100000, 10), .wg = KG_WG_INIT };
		size_t caps[4] = { 0, 0, 2, 3 };

		for (k = 0; k < 4; k++)
			s.c[k] = kg_chan_make(sizeof(int), caps[k]);
		ASSERT_EQ(0, run_kg(sst_main, &s, procs[i]));
		ASSERT_EQ(0, co_failures());
		for (k = 0; k < 4; k++)
			kg_chan_free(s.c[k]);
	}
}

/* ------------------------------------------------------------------ */
/* TestSelectFairness                                                  */
/* ------------------------------------------------------------------ */

/*
 * c1 and c2 always ready, c3 and c4 never: over 10,000 selects the counts
 * for c1 and c2 must be within 10 sigma of half each.
 */
struct fair {
	kg_chan_t *c1, *c2, *c3, *c4, *out, *done;
	kg_wg_t wg;
};

static void fair_co(void *p)
{
	struct fair *f = p;
	unsigned char b;

	for (;;) {
		struct kg_case cs[4] = { { f->c3, KG_RECV, &b, false },
					 { f->c4, KG_RECV, &b, false },
					 { f->c1, KG_RECV, &b, false },
					 { f->c2, KG_RECV, &b, false } };
		struct kg_case out[2] = { { f->out, KG_SEND, &b, false },
					  { f->done, KG_RECV, NULL, false } };

		kg_select(cs, 4, -1);
		if (kg_select(out, 2, -1) == 1)
			break;
	}
	kg_wg_done(&f->wg);
}

static void fair_main(void *p)
{
	const int trials = 10000;
	struct fair f = { .wg = KG_WG_INIT };
	unsigned char one = 1, two = 2, b;
	int i, cnt1 = 0, cnt2 = 0;
	double mean = trials * 0.5, sd = sqrt(trials * 0.25);

	(void)p;
	f.c1 = kg_chan_make(1, (size_t)trials + 1);
	f.c2 = kg_chan_make(1, (size_t)trials + 1);
	for (i = 0; i < trials + 1; i++) {
		kg_chan_send(f.c1, &one);
		kg_chan_send(f.c2, &two);
	}
	f.c3 = kg_chan_make(1, 0);
	f.c4 = kg_chan_make(1, 0);
	f.out = kg_chan_make(1, 0);
	f.done = kg_chan_make(0, 0);
	kg_wg_add(&f.wg, 1);
	kg_go(fair_co, &f);
	for (i = 0; i < trials; i++) {
		kg_chan_recv(f.out, &b);
		if (b == 1)
			cnt1++;
		else if (b == 2)
			cnt2++;
		else
			CO_CHECK(0, "unexpected value %d on channel", b);
	}
	CO_CHECK(fabs(cnt1 - mean) <= 10 * sd,
		 "unfair select: in %d trials, results were %d, %d", trials,
		 cnt1, cnt2);
	kg_chan_close(f.done);
	kg_wg_wait(&f.wg);
	kg_chan_free(f.c1);
	kg_chan_free(f.c2);
	kg_chan_free(f.c3);
	kg_chan_free(f.c4);
	kg_chan_free(f.out);
	kg_chan_free(f.done);
}

TEST(TestSelectFairness)
{
	ASSERT_EQ(0, run_kg(fair_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* TestPseudoRandomSend                                                */
/* ------------------------------------------------------------------ */

struct prs {
	kg_chan_t *c;
	int l[100];
	kg_mutex_t m;
};

static void prs_recv(void *p)
{
	struct prs *x = p;
	int i;

	for (i = 0; i < 100; i++) {
		kg_yield();
		kg_chan_recv(x->c, &x->l[i]);
	}
	kg_mutex_unlock(&x->m);
}

static void prs_main(void *p)
{
	size_t caps[] = { 0, 100 };
	int k, i, zero = 0, one = 1;

	(void)p;
	for (k = 0; k < 2; k++) {
		struct prs x = { .m = KG_MUTEX_INIT };
		int n0 = 0, n1 = 0;

		x.c = kg_chan_make(sizeof(int), caps[k]);
		kg_mutex_lock(&x.m);
		kg_go(prs_recv, &x);
		for (i = 0; i < 100; i++) {
			struct kg_case cs[2] = { { x.c, KG_SEND, &one, false },
						 { x.c, KG_SEND, &zero, false } };

			kg_select(cs, 2, -1);
		}
		kg_mutex_lock(&x.m);	/* wait */
		for (i = 0; i < 100; i++) {
			n0 += (x.l[i] + 1) % 2;
			n1 += x.l[i];
		}
		CO_CHECK(n0 > 10 && n1 > 10, "want pseudorandom, got %d zeros "
			 "and %d ones (chan cap %zu)", n0, n1, caps[k]);
		kg_chan_free(x.c);
	}
}

TEST(TestPseudoRandomSend)
{
	ASSERT_EQ(0, run_kg(prs_main, NULL, 1));
	ASSERT_EQ(0, run_kg(prs_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* TestMultiConsumer                                                   */
/* ------------------------------------------------------------------ */

#define MC_NWORK 23
static const int mc_pn[] = { 2, 3, 7, 11, 13, 17, 19, 23, 27, 31 };

struct mc {
	kg_chan_t *q, *r;
	kg_wg_t wg;
	long niter, expect;
};

struct mc_arg {
	struct mc *m;
	int w;
};

static void mc_worker(void *p)
{
	struct mc_arg *a = p;
	int v;

	while (kg_chan_recv(a->m->q, &v) == 0) {
		/* mess with the FIFO-ish nature of range */
		if (mc_pn[a->w % 10] == v)
			kg_yield();
		kg_chan_send(a->m->r, &v);
	}
	kg_wg_done(&a->m->wg);
}

static void mc_feeder(void *p)
{
	struct mc *m = p;
	long i;

	for (i = 0; i < m->niter; i++) {
		int v = mc_pn[i % 10];

		m->expect += v;
		kg_chan_send(m->q, &v);
	}
	kg_chan_close(m->q);	/* no more work */
	kg_wg_wait(&m->wg);	/* workers done */
	kg_chan_close(m->r);	/* ... so no more results */
}

static void mc_main(void *p)
{
	struct mc *m = p;
	struct mc_arg args[MC_NWORK];
	long n = 0, s = 0;
	int i, v;

	kg_wg_add(&m->wg, MC_NWORK);
	for (i = 0; i < MC_NWORK; i++) {
		args[i] = (struct mc_arg){ m, i };
		kg_go(mc_worker, &args[i]);
	}
	kg_go(mc_feeder, m);
	while (kg_chan_recv(m->r, &v) == 0) {
		n++;
		s += v;
	}
	CO_CHECK(n == m->niter && s == m->expect,
		 "expected sum %ld (got %ld) from %ld iter (saw %ld)",
		 m->expect, s, m->niter, n);
}

TEST_TIMEOUT(TestMultiConsumer, 120)
{
	int k;

	for (k = 0; k < 2; k++) {
		struct mc m = { .niter = scaled(271828, 10), .wg = KG_WG_INIT };

		m.q = kg_chan_make(sizeof(int), MC_NWORK * 3);
		m.r = kg_chan_make(sizeof(int), MC_NWORK * 3);
		ASSERT_EQ(0, run_kg(mc_main, &m, procs_of[k]));
		ASSERT_EQ(0, co_failures());
		kg_chan_free(m.q);
		kg_chan_free(m.r);
	}
}

/* ------------------------------------------------------------------ */
/* TestShrinkStackDuringBlockedSend, TestSelectStackAdjust's intent     */
/* ------------------------------------------------------------------ */

/*
 * Go moves stacks (growth, and shrinking by the GC) while goroutines are
 * blocked in channel operations whose elements live on those stacks.
 * kgreen's stacks never move, so what carries over is the property the
 * tests protect: a coroutine blocked in a send or a select whose value
 * and destinations live in its own frame, deep in its stack and then
 * shallow again, and resumed on another worker thread, moves its values
 * intact; here with 512-byte elements, through plain operations and
 * selects of several cases (the Go tests' "use lots of stack, briefly").
 */
struct big {
	unsigned char b[512];
};

static unsigned long deep(int n, unsigned long acc)
{
	volatile unsigned char pad[1024];

	pad[n % 1024] = (unsigned char)n;
	if (n == 0)
		return acc + pad[0];
	return deep(n - 1, acc + pad[n % 1024]);
}

struct stk {
	kg_chan_t *c, *d, *idle_s, *idle_r;	/* never ready, one each */
	int n;
};

static void stk_sender(void *p)
{
	struct stk *s = p;
	int i;

	for (i = 0; i < s->n; i++) {
		struct big v;

		memset(v.b, i & 0xff, sizeof(v.b));
		if (i % 2) {
			struct kg_case cs[2] = { { s->idle_s, KG_SEND, &v, false },
						 { s->c, KG_SEND, &v, false } };

			CO_CHECK(kg_select(cs, 2, -1) == 1, "select send");
		} else {
			kg_chan_send(s->c, &v);
		}
		(void)deep(20, 0);	/* lots of stack, briefly */
	}
	kg_chan_send(s->d, NULL);
}

static void stk_main(void *p)
{
	struct stk *s = p;
	struct big x;
	int i, k;

	kg_go(stk_sender, s);
	for (i = 0; i < s->n; i++) {
		struct kg_case cs[2] = { { s->idle_r, KG_RECV, &x, false },
					 { s->c, KG_RECV, &x, false } };

		if (i % 3)
			CO_CHECK(kg_select(cs, 2, -1) == 1, "select recv");
		else
			kg_chan_recv(s->c, &x);
		for (k = 0; k < (int)sizeof(x.b); k++)
			if (x.b[k] != (i & 0xff)) {
				CO_CHECK(0, "bad channel read: want %d, got %d",
					 i & 0xff, x.b[k]);
				break;
			}
		kg_sleep(i % 8 ? 0 : 100 * US);
	}
	kg_chan_recv(s->d, NULL);
}

TEST(TestShrinkStackDuringBlockedSend)
{
	int k;

	for (k = 0; k < 2; k++) {
		struct stk s = { kg_chan_make(sizeof(struct big), 0),
				 kg_chan_make(0, 0),
				 kg_chan_make(sizeof(struct big), 0),
				 kg_chan_make(sizeof(struct big), 0), 200 };

		ASSERT_EQ(0, run_kg(stk_main, &s, procs_of[k]));
		ASSERT_EQ(0, co_failures());
		kg_chan_free(s.c);
		kg_chan_free(s.d);
		kg_chan_free(s.idle_s);
		kg_chan_free(s.idle_r);
	}
}

/* ------------------------------------------------------------------ */
/* TestChanSendInterface, TestChanSendSelectBarrier's intent            */
/* ------------------------------------------------------------------ */

/*
 * TestChanSendInterface: a select sending on a full channel takes
 * default, whatever the value. The barrier tests check Go's GC write
 * barriers on pointers a select sends; the C counterpart: pointers sent
 * through selects by several coroutines at once arrive intact, each
 * exactly once.
 */
static void send_iface_main(void *p)
{
	kg_chan_t *c = kg_chan_make(sizeof(void *), 1);
	void *m = &m, *other = &c;
	struct kg_case cs[2] = { { c, KG_SEND, &m, false },
				 { c, KG_SEND, &other, false } };

	(void)p;
	kg_chan_send(c, &m);
	CO_CHECK(kg_select(cs, 1, 0) == -EAGAIN, "full: default");
	CO_CHECK(kg_select(cs, 2, 0) == -EAGAIN, "full: default");
	kg_chan_free(c);
}

TEST(TestChanSendInterface)
{
	ASSERT_EQ(0, run_kg(send_iface_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

#define BAR_N 4
#define BAR_PER bar_per
static long bar_per;

struct bar {
	kg_chan_t *c, *never;
	long *slots;
	kg_wg_t wg;
};

struct bar_arg {
	struct bar *b;
	int k;
};

static void bar_sender(void *p)
{
	struct bar_arg *a = p;
	long i;

	for (i = 0; i < BAR_PER; i++) {
		long *ptr = &a->b->slots[a->k * BAR_PER + i];
		struct kg_case cs[2] = { { a->b->c, KG_SEND, &ptr, false },
					 { a->b->never, KG_SEND, &ptr, false } };

		int r = kg_select(cs, 2, -1);

		CO_CHECK(r == 0, "select: %d", r);
	}
	kg_wg_done(&a->b->wg);
}

static void bar_main(void *p)
{
	struct bar *b = p;
	struct bar_arg args[BAR_N];
	long i, *ptr;

	kg_wg_add(&b->wg, BAR_N);
	for (i = 0; i < BAR_N; i++) {
		args[i] = (struct bar_arg){ b, (int)i };
		kg_go(bar_sender, &args[i]);
	}
	for (i = 0; i < BAR_N * BAR_PER; i++) {
		kg_chan_recv(b->c, &ptr);
		if (ptr < b->slots || ptr >= b->slots + BAR_N * BAR_PER)
			CO_CHECK(0, "bad pointer %p", (void *)ptr);
		else
			(*ptr)++;
	}
	kg_wg_wait(&b->wg);
	for (i = 0; i < BAR_N * BAR_PER; i++)
		if (b->slots[i] != 1) {
			CO_CHECK(0, "slot %ld received %ld times", i,
				 b->slots[i]);
			break;
		}
}

TEST(TestChanSendSelectBarrier)
{
	size_t caps[] = { 0, 1, 16 };
	int k;

	bar_per = scaled(20000, 10);
	for (k = 0; k < 3; k++) {
		struct bar b = { kg_chan_make(sizeof(long *), caps[k]),
				 kg_chan_make(sizeof(long *), 0), NULL,
				 KG_WG_INIT };

		b.slots = calloc(BAR_N * BAR_PER, sizeof(long));
		ASSERT_EQ(0, run_kg(bar_main, &b, 2));
		ASSERT_EQ(0, co_failures());
		kg_chan_free(b.c);
		kg_chan_free(b.never);
		free(b.slots);
	}
}

TEST_HARNESS_MAIN
