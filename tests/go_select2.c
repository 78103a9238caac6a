// SPDX-License-Identifier: MIT
/*
 * go_select2 - Go's test/chan/select2.go: selects do not consume undue
 * memory. A sender sends 100,000 values on an unbuffered channel while
 * the receiver selects {recv c, recv dummy} for each; dummy never becomes
 * ready, so every select leaves a registration on dummy that must be
 * returned when it completes on c. After a warm-up round, a second round
 * may grow the heap by no more than Go's bound, 1.1e5 bytes for 100,000
 * selects (measured with mallinfo2 once RCU callbacks have run: freed
 * segments and records are returned through call_rcu).
 *
 * Beyond the Go test: the same with dummy buffered and full (stale send
 * registrations), with a timed receive in a loop (timed operations leave
 * records too), and with a plain thread as the receiver.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <urcu/urcu-memb.h>

#include "harness.h"
#include "kg_test.h"

#define ROUND 100000
#define GO_BOUND 110000		/* bytes, test/chan/select2.go */

enum shape { RECV_DUMMY, SEND_FULL, TIMED_RECV };

struct sel2 {
	kg_chan_t *c, *dummy;
	enum shape shape;
	long n;				/* per receive round */
	long send_n;			/* the sender's total */
	_Atomic long bad;
	kg_wg_t wg;
};

static void sender(void *p)
{
	struct sel2 *s = p;
	long i;
	int one = 1;

	for (i = 0; i < s->send_n; i++)
		kg_chan_send(s->c, &one);
	kg_wg_done(&s->wg);
}

static void receive_round(struct sel2 *s)
{
	int v, d = 0;
	long i;

	for (i = 0; i < s->n; i++) {
		struct kg_case cs[2] = {
			{ s->c, KG_RECV, &v, false },
			{ s->dummy, s->shape == SEND_FULL ? KG_SEND : KG_RECV,
			  &d, false },
		};
		int r;

		if (s->shape == TIMED_RECV) {
			/* the timed wait on dummy runs out, then c */
			r = kg_chan_recv_timeout(s->dummy, &d, 1);
			if (r != -ETIMEDOUT)
				atomic_fetch_add(&s->bad, 1);
			r = kg_chan_recv(s->c, &v);
		} else {
			r = kg_select(cs, 2, -1);
		}
		if (r != 0)
			atomic_fetch_add(&s->bad, 1);
	}
}

/*
 * Under the sanitizers the loops run for correctness only: their
 * allocators hold freed memory back (quarantine) where mallinfo2 does not
 * see it, and ThreadSanitizer cannot follow liburcu's barrier.
 */
static size_t heap_in_use(void)
{
	if (KG_TEST_SANITIZED)
		return 0;
	/* freed segments and records go through call_rcu: let them run */
	urcu_memb_barrier();
	return mallinfo2().uordblks;
}

struct measure {
	struct sel2 *s;
	size_t before, after;
	long rss_before, rss_after;
};

static void round_with_sender(struct sel2 *s)
{
	s->send_n = s->n;
	kg_wg_add(&s->wg, 1);
	kg_go(sender, s);
	receive_round(s);
	kg_wg_wait(&s->wg);
}

static void select2_main(void *p)
{
	struct measure *m = p;

	round_with_sender(m->s);	/* warm up */
	m->before = heap_in_use();
	m->rss_before = proc_status_kb("VmRSS");
	round_with_sender(m->s);
	m->after = heap_in_use();
	m->rss_after = proc_status_kb("VmRSS");
}

static void run_shape(struct __test_metadata *_metadata, enum shape shape,
		      unsigned int procs)
{
	struct sel2 s = { .shape = shape, .n = ROUND, .wg = KG_WG_INIT };
	struct measure m = { .s = &s };
	long grow;
	int one = 1;

	s.c = kg_chan_make(sizeof(int), 0);
	s.dummy = kg_chan_make(sizeof(int), shape == SEND_FULL ? 1 : 0);
	ASSERT_NONNULL(s.c);
	ASSERT_NONNULL(s.dummy);
	if (shape == SEND_FULL)	/* full: a send case on it never goes */
		ASSERT_EQ(0, kg_chan_try_send(s.dummy, &one));
	ASSERT_EQ(0, run_kg(select2_main, &m, procs));
	ASSERT_EQ(0, atomic_load(&s.bad));
	grow = (long)m.after - (long)m.before;
	TH_LOG("%s, %u proc(s): heap %+ld bytes, RSS %+ld kB for %d "
	       "operations after a warm-up (Go's bound: %d bytes)",
	       shape == RECV_DUMMY ? "select {recv c, recv dummy}" :
	       shape == SEND_FULL ? "select {recv c, send full}" :
				    "recv_timeout on dummy, then recv c",
	       procs, grow, m.rss_after - m.rss_before, ROUND, GO_BOUND);
	ASSERT_LT(grow, GO_BOUND);
	kg_chan_free(s.c);
	kg_chan_free(s.dummy);
}

TEST_TIMEOUT(select2, 120)
{
	run_shape(_metadata, RECV_DUMMY, 1);
	run_shape(_metadata, RECV_DUMMY, 2);
}

TEST_TIMEOUT(select2_send_case_on_full_channel, 120)
{
	run_shape(_metadata, SEND_FULL, 1);
	run_shape(_metadata, SEND_FULL, 2);
}

TEST_TIMEOUT(select2_timed_receive, 120)
{
	run_shape(_metadata, TIMED_RECV, 1);
}

/*
 * The worker-pool shape: workers loop on select {recv jobs, recv quit}
 * while one coroutine waits on quit for good. Each select's registration
 * on quit lands behind that waiter, where no sender's index reaches it:
 * the withdrawn cells' segments must go from the middle of the list.
 */
struct pool {
	kg_chan_t *jobs, *quit;
	kg_wg_t wg;
	size_t before, after;
};

static void quit_waiter(void *p)
{
	struct pool *x = p;

	kg_chan_recv(x->quit, NULL);
}

static void pool_worker(void *p)
{
	struct pool *x = p;
	int v;

	for (;;) {
		struct kg_case cs[2] = { { x->jobs, KG_RECV, &v, false },
					 { x->quit, KG_RECV, NULL, false } };

		if (kg_select(cs, 2, -1) != 0)
			break;
	}
	kg_wg_done(&x->wg);
}

static void pool_main(void *p)
{
	struct pool *x = p;
	int i, round;

	kg_go(quit_waiter, x);
	kg_wg_add(&x->wg, 4);
	for (i = 0; i < 4; i++)
		kg_go(pool_worker, x);
	for (round = 0; round < 2; round++) {
		if (round == 1)
			x->before = heap_in_use();
		for (i = 0; i < ROUND; i++)
			kg_chan_send(x->jobs, &i);
	}
	x->after = heap_in_use();
	kg_chan_close(x->quit);
	kg_wg_wait(&x->wg);
}

TEST_TIMEOUT(select2_behind_a_waiter, 120)
{
	struct pool x = { .wg = KG_WG_INIT };
	long grow;

	x.jobs = kg_chan_make(sizeof(int), 0);
	x.quit = kg_chan_make(0, 0);
	ASSERT_EQ(0, run_kg(pool_main, &x, 2));
	grow = (long)x.after - (long)x.before;
	TH_LOG("4 workers, one coroutine waiting on quit: heap %+ld bytes "
	       "for %d jobs", grow, ROUND);
	ASSERT_LT(grow, GO_BOUND);
	kg_chan_free(x.jobs);
	kg_chan_free(x.quit);
}

/* A plain thread's selects leave nothing behind either. */
static void *thread_receiver(void *p)
{
	struct measure *m = p;

	receive_round(m->s);	/* warm up */
	m->before = heap_in_use();
	receive_round(m->s);
	m->after = heap_in_use();
	return NULL;
}

static void thread_main(void *p)
{
	struct measure *m = p;
	pthread_t t;

	m->s->send_n = 2 * ROUND;	/* the sender covers both rounds */
	kg_wg_add(&m->s->wg, 1);
	kg_go(sender, m->s);
	CO_CHECK(pthread_create(&t, NULL, thread_receiver, m) == 0, "thread");
	kg_wg_wait(&m->s->wg);
	pthread_join(t, NULL);
}

TEST_TIMEOUT(select2_plain_thread, 120)
{
	struct sel2 s = { .shape = RECV_DUMMY, .n = ROUND, .wg = KG_WG_INIT };
	struct measure m = { .s = &s };
	long grow;

	s.c = kg_chan_make(sizeof(int), 0);
	s.dummy = kg_chan_make(sizeof(int), 0);
	ASSERT_EQ(0, run_kg(thread_main, &m, 2));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(0, atomic_load(&s.bad));
	grow = (long)m.after - (long)m.before;
	TH_LOG("plain thread: heap %+ld bytes for %d selects", grow, ROUND);
	ASSERT_LT(grow, GO_BOUND);
	kg_chan_free(s.c);
	kg_chan_free(s.dummy);
}

TEST_HARNESS_MAIN
