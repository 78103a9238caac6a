// SPDX-License-Identifier: MIT
/*
 * chan_basic - channel semantics, after Go's test/chan and
 * runtime/chan_test.go: FIFO per sender, buffered capacity, close (drain,
 * then closed; send on closed and double close fail), close wakes every
 * waiter, signal channels, timeouts, the sieve, a 10,000-coroutine chain,
 * plain threads on both ends, timer channels, directional handles.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "harness.h"
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif
#include "kg_test.h"

#define MS 1000000ull

static kg_wg_t wg;

/* --- FIFO per sender, unbuffered and buffered, 1 and 2 procs --- */

struct fifo_arg {
	kg_chan_t *ch;
	int nsend, nprod;
};

static void fifo_producer(void *p)
{
	struct fifo_arg *a = p;
	long id = kg_self();
	int i;

	for (i = 0; i < a->nsend; i++) {
		long v[2] = { id, i };

		CO_CHECK(kg_chan_send(a->ch, v) == 0, "send %d", i);
	}
	kg_wg_done(&wg);
}

static void fifo_main(void *p)
{
	struct fifo_arg *a = p;
	long last[64][2];
	int nseen = 0, i, k;

	for (i = 0; i < a->nprod; i++)
		last[i][0] = 0;
	kg_wg_add(&wg, a->nprod);
	for (i = 0; i < a->nprod; i++)
		kg_go(fifo_producer, a);
	for (i = 0; i < a->nprod * a->nsend; i++) {
		long v[2];

		CO_CHECK(kg_chan_recv(a->ch, v) == 0, "recv");
		for (k = 0; k < nseen && last[k][0] != v[0]; k++)
			;
		if (k == nseen) {
			CO_CHECK(v[1] == 0, "first from %ld is %ld", v[0], v[1]);
			last[nseen][0] = v[0];
			last[nseen++][1] = v[1];
		} else {
			CO_CHECK(v[1] == last[k][1] + 1, "from %ld: %ld after %ld",
				 v[0], v[1], last[k][1]);
			last[k][1] = v[1];
		}
	}
	kg_wg_wait(&wg);
	CO_CHECK(nseen == a->nprod, "%d producers seen", nseen);
	CO_CHECK(kg_chan_try_recv(a->ch, NULL) == -EAGAIN, "empty after");
}

FIXTURE(fifo) {
	int dummy;
};
FIXTURE_VARIANT(fifo) {
	size_t cap;
	unsigned int procs;
};
FIXTURE_VARIANT_ADD(fifo, unbuffered_1proc) { .cap = 0, .procs = 1 };
FIXTURE_VARIANT_ADD(fifo, unbuffered_2procs) { .cap = 0, .procs = 2 };
FIXTURE_VARIANT_ADD(fifo, buffered_1proc) { .cap = 7, .procs = 1 };
FIXTURE_VARIANT_ADD(fifo, buffered_2procs) { .cap = 100, .procs = 2 };
FIXTURE_SETUP(fifo) { self->dummy = 0; }
FIXTURE_TEARDOWN(fifo) {}

TEST_F(fifo, per_sender_order)
{
	struct fifo_arg a = { .nsend = (int)scaled(20000, 10), .nprod = 8 };

	a.ch = kg_chan_make(2 * sizeof(long), variant->cap);
	ASSERT_NONNULL(a.ch);
	ASSERT_EQ(0, run_kg(fifo_main, &a, variant->procs));
	ASSERT_EQ(0, co_failures());
	kg_chan_free(a.ch);
}

/* --- buffered capacity, len, cap, try_ --- */

TEST(buffered_capacity_and_len)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 10);
	int i, v;

	ASSERT_NONNULL(c);
	ASSERT_EQ(10u, kg_chan_cap(c));
	ASSERT_EQ(sizeof(int), kg_chan_elem_size(c));
	for (i = 0; i < 10; i++) {
		ASSERT_EQ(0, kg_chan_try_send(c, &i));
		ASSERT_EQ((size_t)i + 1, kg_chan_len(c));
	}
	ASSERT_EQ(-EAGAIN, kg_chan_try_send(c, &i));
	for (i = 0; i < 10; i++) {
		ASSERT_EQ(0, kg_chan_try_recv(c, &v));
		ASSERT_EQ(i, v);
	}
	ASSERT_EQ(-EAGAIN, kg_chan_try_recv(c, &v));
	ASSERT_EQ(0u, kg_chan_len(c));
	/* wrap around the ring many times */
	for (i = 0; i < 1000; i++) {
		ASSERT_EQ(0, kg_chan_try_send(c, &i));
		if (i % 3 == 2) {
			int j;

			for (j = 0; j < 3; j++)
				ASSERT_EQ(0, kg_chan_try_recv(c, &v));
			ASSERT_EQ(i, v);
		}
	}
	kg_chan_free(c);
}

TEST(unbuffered_try_without_partner)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);
	int v = 1;

	ASSERT_NONNULL(c);
	ASSERT_EQ(0u, kg_chan_cap(c));
	ASSERT_EQ(-EAGAIN, kg_chan_try_send(c, &v));
	ASSERT_EQ(-EAGAIN, kg_chan_try_recv(c, &v));
	ASSERT_EQ(-EAGAIN, kg_chan_send_timeout(c, &v, 0));
	kg_chan_free(c);
}

/* --- close --- */

TEST(close_drains_then_closed)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 5);
	int i, v = -1;

	ASSERT_NONNULL(c);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, kg_chan_send(c, &i));
	ASSERT_EQ(0, kg_chan_close(c));
	ASSERT_EQ(-EPIPE, kg_chan_close(c));
	ASSERT_EQ(-EPIPE, kg_chan_send(c, &i));
	ASSERT_EQ(-EPIPE, kg_chan_try_send(c, &i));
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, kg_chan_recv(c, &v));
		ASSERT_EQ(i, v);
	}
	v = 77;
	ASSERT_EQ(-EPIPE, kg_chan_recv(c, &v));
	ASSERT_EQ(77, v);	/* untouched */
	ASSERT_EQ(-EPIPE, kg_chan_try_recv(c, &v));
	ASSERT_EQ(-EPIPE, kg_chan_recv_timeout(c, &v, MS));
	kg_chan_free(c);
}

static _Atomic int nepipe;

static void blocked_receiver(void *p)
{
	int v;

	if (kg_chan_recv(p, &v) == -EPIPE)
		atomic_fetch_add(&nepipe, 1);
	kg_wg_done(&wg);
}

static void blocked_sender(void *p)
{
	int v = 5;

	if (kg_chan_send(p, &v) == -EPIPE)
		atomic_fetch_add(&nepipe, 1);
	kg_wg_done(&wg);
}

static void close_wakes_main(void *p)
{
	kg_chan_t *r = kg_chan_make(sizeof(int), 0);
	kg_chan_t *s = kg_chan_make(sizeof(int), 1);
	int i, n = *(int *)p, v = 0;

	CO_CHECK(kg_chan_send(s, &v) == 0, "fill");
	kg_wg_add(&wg, 2 * n);
	for (i = 0; i < n; i++) {
		kg_go(blocked_receiver, r);
		kg_go(blocked_sender, s);
	}
	/* let them all block: wait until everyone has parked */
	while (kg_chan_len(s) != 1 || atomic_load(&nepipe))
		kg_yield();
	for (i = 0; i < 100; i++)
		kg_yield();
	CO_CHECK(kg_chan_close(r) == 0, "close r");
	CO_CHECK(kg_chan_close(s) == 0, "close s");
	kg_wg_wait(&wg);
	CO_CHECK(atomic_load(&nepipe) == 2 * n, "%d of %d saw EPIPE",
		 atomic_load(&nepipe), 2 * n);
	/* the buffered value is still there for receivers */
	CO_CHECK(kg_chan_recv(s, &v) == 0, "drain");
	CO_CHECK(kg_chan_recv(s, &v) == -EPIPE, "then closed");
	kg_chan_free(r);
	kg_chan_free(s);
}

TEST(close_wakes_every_waiter)
{
	int n = 100;

	atomic_store(&nepipe, 0);
	ASSERT_EQ(0, run_kg(close_wakes_main, &n, 2));
	ASSERT_EQ(0, co_failures());
}

/* --- signal channels, NULL out --- */

static void signaller(void *p)
{
	int i;

	for (i = 0; i < 100; i++)
		CO_CHECK(kg_chan_send(p, NULL) == 0, "signal");
	kg_chan_close(p);
}

static void signal_main(void *p)
{
	kg_chan_t *c = kg_chan_make(0, *(size_t *)p);
	int n = 0;

	kg_go(signaller, c);
	while (kg_chan_recv(c, NULL) == 0)
		n++;
	CO_CHECK(n == 100, "%d signals", n);
	kg_chan_free(c);
}

TEST(zero_size_elements)
{
	size_t caps[] = { 0, 3 };
	int i;

	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, run_kg(signal_main, &caps[i], 2));
	ASSERT_EQ(0, co_failures());
}

TEST(recv_null_discards)
{
	kg_chan_t *c = kg_chan_make(sizeof(long), 2);
	long v = 9;

	ASSERT_EQ(0, kg_chan_send(c, &v));
	v = 10;
	ASSERT_EQ(0, kg_chan_send(c, &v));
	ASSERT_EQ(0, kg_chan_recv(c, NULL));
	ASSERT_EQ(0, kg_chan_recv(c, &v));
	ASSERT_EQ(10, v);
	kg_chan_free(c);
}

/* --- bad input --- */

TEST(bad_input)
{
	kg_chan_t *c;
	int v = 0;

	ASSERT_EQ(-EINVAL, kg_chan_send(NULL, &v));
	ASSERT_EQ(-EINVAL, kg_chan_recv(NULL, &v));
	ASSERT_EQ(-EINVAL, kg_chan_try_send(NULL, &v));
	ASSERT_EQ(-EINVAL, kg_chan_try_recv(NULL, &v));
	ASSERT_EQ(-EINVAL, kg_chan_send_timeout(NULL, &v, 1));
	ASSERT_EQ(-EINVAL, kg_chan_recv_timeout(NULL, &v, 1));
	ASSERT_EQ(-EINVAL, kg_chan_close(NULL));
	ASSERT_EQ(0u, kg_chan_len(NULL));
	ASSERT_EQ(0u, kg_chan_cap(NULL));
	kg_chan_free(NULL);
	errno = 0;
	ASSERT_NULL(kg_chan_make(KG_CHAN_ELEM_MAX + 1, 1));
	ASSERT_EQ(EINVAL, errno);
	errno = 0;
	ASSERT_NULL(kg_chan_make(1 << 16, SIZE_MAX / 2));
	ASSERT_EQ(EINVAL, errno);
	c = kg_chan_make(sizeof(int), 1);
	ASSERT_EQ(-EINVAL, kg_chan_send(c, NULL));
	ASSERT_EQ(-EINVAL, kg_chan_try_send(c, NULL));
	ASSERT_EQ(0u, kg_chan_len(c));
	kg_chan_free(c);
	errno = 0;
	ASSERT_NULL(kg_after(MS));	/* no runtime */
	ASSERT_EQ(EPERM, errno);
	ASSERT_NULL(kg_ticker_make(0));
	ASSERT_EQ(-EINVAL, kg_ticker_stop(NULL));
	ASSERT_EQ(-EINVAL, kg_ticker_reset(NULL, 1));
	ASSERT_NULL(kg_ticker_chan(NULL));
}

/* --- timeouts --- */

static void timeout_main(void *p)
{
	kg_chan_t *e = kg_chan_make(sizeof(int), 0);
	kg_chan_t *f = kg_chan_make(sizeof(int), 1);
	uint64_t t0;
	int v = 1, i;

	(void)p;
	CO_CHECK(kg_chan_send(f, &v) == 0, "fill");
	for (i = 0; i < 5; i++) {
		t0 = kg_now_ns();
		CO_CHECK(kg_chan_recv_timeout(e, &v, 5 * MS) == -ETIMEDOUT,
			 "recv timeout");
		CO_CHECK(kg_now_ns() - t0 >= 5 * MS, "early: %llu ns",
			 (unsigned long long)(kg_now_ns() - t0));
		t0 = kg_now_ns();
		CO_CHECK(kg_chan_send_timeout(f, &v, 5 * MS) == -ETIMEDOUT,
			 "send timeout");
		CO_CHECK(kg_now_ns() - t0 >= 5 * MS, "early");
		CO_CHECK(kg_chan_send_timeout(e, &v, 2 * MS) == -ETIMEDOUT,
			 "unbuffered send timeout");
	}
	/* the channels still work after timed-out waiters left */
	CO_CHECK(kg_chan_recv(f, &v) == 0 && v == 1, "value kept");
	CO_CHECK(kg_chan_try_recv(e, &v) == -EAGAIN, "no stale waiter");
	kg_chan_free(e);
	kg_chan_free(f);
}

TEST(timeouts)
{
	ASSERT_EQ(0, run_kg(timeout_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

static void late_sender(void *p)
{
	int v = 42;

	kg_sleep(2 * MS);
	CO_CHECK(kg_chan_send(p, &v) == 0, "late send");
}

static void timeout_success_main(void *p)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);
	int v = 0;

	(void)p;
	kg_go(late_sender, c);
	CO_CHECK(kg_chan_recv_timeout(c, &v, 10000 * MS) == 0, "in time");
	CO_CHECK(v == 42, "value %d", v);
	kg_chan_free(c);
}

TEST(timeout_not_reached)
{
	ASSERT_EQ(0, run_kg(timeout_success_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* --- the sieve (Go's test/chan/sieve1.go) --- */

static void generate(void *p)
{
	long i;

	for (i = 2;; i++)
		if (kg_chan_send(p, &i))
			break;
	kg_wg_done(&wg);
}

struct filter {
	kg_chan_t *in, *out;
	long prime;
};

static void filter(void *p)
{
	struct filter *f = p;
	long v;

	while (kg_chan_recv(f->in, &v) == 0)
		if (v % f->prime && kg_chan_send(f->out, &v))
			break;
	kg_chan_close(f->in);	/* upstream sees -EPIPE and stops */
	kg_wg_done(&wg);
}

static void sieve_main(void *p)
{
	static const long want[] = { 2,  3,  5,  7,  11, 13, 17, 19, 23, 29,
				     31, 37, 41, 43, 47, 53, 59, 61, 67, 71 };
	struct filter fs[20];
	kg_chan_t *ch = kg_chan_make(sizeof(long), *(size_t *)p);
	int i;

	kg_wg_add(&wg, 21);
	kg_go(generate, ch);
	for (i = 0; i < 20; i++) {
		long prime;

		CO_CHECK(kg_chan_recv(ch, &prime) == 0, "recv prime");
		CO_CHECK(prime == want[i], "prime %d: %ld", i, prime);
		fs[i].in = ch;
		fs[i].out = kg_chan_make(sizeof(long), *(size_t *)p);
		fs[i].prime = prime;
		kg_go(filter, &fs[i]);
		ch = fs[i].out;
	}
	/* stop the chain from the end: every stage closes its input */
	kg_chan_close(ch);
	kg_wg_wait(&wg);
	kg_chan_free(ch);
	for (i = 19; i >= 0; i--)
		kg_chan_free(fs[i].in);
}

TEST(sieve)
{
	size_t caps[] = { 0, 4 };
	int i;

	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, run_kg(sieve_main, &caps[i], 2));
	ASSERT_EQ(0, co_failures());
}

/* --- a chain of 10,000 coroutines --- */

struct link {
	kg_chan_t *left, *right;
};

static void chain_link(void *p)
{
	struct link *l = p;
	long v;

	if (kg_chan_recv(l->right, &v) == 0) {
		v++;
		kg_chan_send(l->left, &v);
	}
}

static void chain_main(void *p)
{
	int n = *(int *)p, i;
	struct link *links = calloc((size_t)n, sizeof(*links));
	kg_chan_t **chans = calloc((size_t)n + 1, sizeof(*chans));
	long v = 0;

	for (i = 0; i <= n; i++)
		chans[i] = kg_chan_make(sizeof(long), 0);
	for (i = 0; i < n; i++) {
		links[i].left = chans[i];
		links[i].right = chans[i + 1];
		CO_CHECK(kg_go(chain_link, &links[i]) > 0, "spawn");
	}
	CO_CHECK(kg_chan_send(chans[n], &v) == 0, "start");
	CO_CHECK(kg_chan_recv(chans[0], &v) == 0, "end");
	CO_CHECK(v == n, "%ld hops, want %d", v, n);
	for (i = 0; i <= n; i++)
		kg_chan_free(chans[i]);
	free(links);
	free(chans);
}

TEST(chain_10000)
{
	/* TSan counts each coroutine as a thread (limit 8128) */
	int n = (int)scaled(10000, 4);

	ASSERT_EQ(0, run_kg(chain_main, &n, 2));
	ASSERT_EQ(0, co_failures());
}

/* --- plain threads on either end --- */

static void *thread_sender(void *p)
{
	long i;

	for (i = 0; i < 10000; i++)
		if (kg_chan_send(p, &i))
			return (void *)1;
	kg_chan_close(p);
	return NULL;
}

static void *thread_receiver(void *p)
{
	long i, v;

	for (i = 0; i < 10000; i++)
		if (kg_chan_recv(p, &v) || v != i)
			return (void *)1;
	return NULL;
}

static void thread_mix_main(void *p)
{
	kg_chan_t *in = kg_chan_make(sizeof(long), 0);
	kg_chan_t *out = kg_chan_make(sizeof(long), 3);
	pthread_t a, b;
	void *ra, *rb;
	long v, n = 0;

	(void)p;
	pthread_create(&a, NULL, thread_sender, in);
	pthread_create(&b, NULL, thread_receiver, out);
	while (kg_chan_recv(in, &v) == 0) {
		CO_CHECK(v == n, "got %ld want %ld", v, n);
		n++;
		CO_CHECK(kg_chan_send(out, &v) == 0, "forward");
	}
	pthread_join(a, &ra);
	pthread_join(b, &rb);
	CO_CHECK(n == 10000 && !ra && !rb, "n %ld", n);
	kg_chan_free(in);
	kg_chan_free(out);
}

TEST(threads_and_coroutines)
{
	ASSERT_EQ(0, run_kg(thread_mix_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

TEST(threads_without_runtime)
{
	kg_chan_t *c = kg_chan_make(sizeof(long), 0);
	pthread_t a;
	void *ra;
	long i, v;
	uint64_t t0;

	ASSERT_EQ(0, pthread_create(&a, NULL, thread_sender, c));
	for (i = 0; i < 10000; i++) {
		ASSERT_EQ(0, kg_chan_recv(c, &v));
		ASSERT_EQ(i, v);
	}
	ASSERT_EQ(-EPIPE, kg_chan_recv(c, &v));
	pthread_join(a, &ra);
	ASSERT_NULL(ra);
	kg_chan_free(c);
	c = kg_chan_make(sizeof(long), 0);
	t0 = kg_now_ns();
	ASSERT_EQ(-ETIMEDOUT, kg_chan_recv_timeout(c, &v, 3 * MS));
	ASSERT_LE(3 * MS, kg_now_ns() - t0);
	ASSERT_EQ(-ETIMEDOUT, kg_chan_send_timeout(c, &v, 1 * MS));
	kg_chan_free(c);
}

/* --- timer channels --- */

static void after_main(void *p)
{
	uint64_t t0 = kg_now_ns(), fired = 0;
	kg_chan_t *a = kg_after(5 * MS);
	kg_chan_t *never = kg_after(3600000 * MS);
	kg_ticker_t *t;
	int i;

	(void)p;
	CO_CHECK(a && never, "kg_after");
	CO_CHECK(kg_chan_recv(a, &fired) == 0, "after fires");
	CO_CHECK(fired >= t0 + 5 * MS, "fired %llu ns after start",
		 (unsigned long long)(fired - t0));
	CO_CHECK(kg_now_ns() >= t0 + 5 * MS, "received early");
	CO_CHECK(kg_chan_try_recv(a, &fired) == -EAGAIN, "fires once");
	kg_chan_free(a);
	kg_chan_free(never);	/* stops a pending timer */

	t0 = kg_now_ns();	/* ticks count from the make, not after */
	t = kg_ticker_make(2 * MS);
	CO_CHECK(t != NULL, "ticker");
	for (i = 0; i < 5; i++) {
		uint64_t tick;

		CO_CHECK(kg_chan_recv(kg_ticker_chan(t), &tick) == 0, "tick");
		CO_CHECK(tick >= t0 + (uint64_t)(i + 1) * 2 * MS,
			 "tick %d at %llu", i, (unsigned long long)(tick - t0));
	}
	CO_CHECK(kg_ticker_reset(t, 1 * MS) == 0, "reset");
	kg_sleep(10 * MS);
	/* a slow receiver finds one tick, not a backlog */
	CO_CHECK(kg_chan_len(kg_ticker_chan(t)) == 1, "len %zu",
		 kg_chan_len(kg_ticker_chan(t)));
	CO_CHECK(kg_ticker_stop(t) == 0, "stop");
}

TEST(after_and_ticker)
{
	ASSERT_EQ(0, run_kg(after_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* A kg_after channel left unfreed when the runtime ends can still be
 * received from (nothing) and freed afterwards. */
static void orphan_main(void *p)
{
	*(kg_chan_t **)p = kg_after(3600000 * MS);
}

TEST(after_outlives_runtime)
{
	kg_chan_t *a = NULL;

	ASSERT_EQ(0, run_kg(orphan_main, &a, 1));
	ASSERT_NONNULL(a);
	ASSERT_EQ(-EAGAIN, kg_chan_try_recv(a, NULL));
	kg_chan_free(a);
}

/* --- directional handles and typed helpers --- */

static void dir_producer(kg_sendch_t out)
{
	int i;

	for (i = 0; i < 10; i++)
		CO_CHECK(KG_SEND_VAL(out.ch, i) == 0, "send");
	kg_chan_close(out.ch);
}

static void dir_prod_co(void *p)
{
	dir_producer(kg_chan_sender(p));
}

static int dir_consumer(kg_recvch_t in)
{
	int v, sum = 0;

	while (kg_recv(in, &v) == 0)
		sum += v;
	return sum;
}

static void dir_main(void *p)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);
	long wrong = 1;

	(void)p;
	kg_go(dir_prod_co, c);
	CO_CHECK(dir_consumer(kg_chan_receiver(c)) == 45, "sum");
	CO_CHECK(KG_SEND_VAL(c, wrong) == -EINVAL, "size mismatch");
	CO_CHECK(KG_RECV_VAL(c, wrong) == -EINVAL, "size mismatch");
	kg_chan_free(c);
}

TEST(directional_and_typed)
{
	ASSERT_EQ(0, run_kg(dir_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* kg_chan_free refuses a channel that still has waiters, loudly. */
static void stuck(void *p)
{
	kg_chan_recv(p, NULL);
}

static void free_busy_main(void *p)
{
	kg_chan_t *c = kg_chan_make(0, 0);
	int i;

	(void)p;
	kg_go(stuck, c);
	for (i = 0; i < 10; i++)
		kg_yield();
	kg_chan_free(c);	/* refused: prints, keeps it */
	CO_CHECK(kg_chan_send(c, NULL) == 0, "still usable");
	kg_chan_free(c);
}

TEST(free_with_waiters_is_refused)
{
	ASSERT_EQ(0, run_kg(free_busy_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

/*
 * Timed receivers that time out in reverse order give their indices back
 * (the last one's each time), also across a segment's end (32 cells):
 * afterwards, senders parked one after another are received in order,
 * every one. With `pre` exchanges first, the waiters start anywhere in a
 * segment. (A give-back across a segment's end once let the segment be
 * retired under a parked sender: values lost, a sender hung.)
 */
struct giveback {
	kg_chan_t *c;
	int pre, k;
	kg_wg_t wg;
};

static struct giveback *cur_gb;

struct gb_waiter {
	struct giveback *g;
	long ns;
};

static void gb_recv_for(void *p)
{
	struct gb_waiter *w = p;
	int v;

	CO_CHECK(kg_chan_recv_timeout(w->g->c, &v, (uint64_t)w->ns) ==
			 -ETIMEDOUT, "nothing was sent yet");
	kg_wg_done(&w->g->wg);
}

static void gb_send(void *p)
{
	int v = (int)(intptr_t)p;

	kg_chan_send(cur_gb->c, &v);
}

static void giveback_main(void *p)
{
	struct giveback *g = p;
	struct gb_waiter w[8];
	int i, v;

	cur_gb = g;
	for (i = 0; i < g->pre; i++) {
		kg_go(gb_send, (void *)(intptr_t)i);
		kg_chan_recv(g->c, &v);
	}
	/* k receivers park in order; the last parked times out first */
	kg_wg_add(&g->wg, g->k);
	for (i = 0; i < g->k; i++) {
		w[i] = (struct gb_waiter){ g, (long)(g->k - i) * 2 * MS };
		kg_go(gb_recv_for, &w[i]);
		kg_yield();
	}
	kg_wg_wait(&g->wg);
	/* k senders park in order, then are received in that order */
	for (i = 0; i < g->k; i++) {
		kg_go(gb_send, (void *)(intptr_t)(1000 + i));
		kg_yield();
	}
	for (i = 0; i < g->k; i++) {
		v = -1;
		CO_CHECK(kg_chan_recv_timeout(g->c, &v, 500 * MS) == 0 &&
				 v == 1000 + i,
			 "pre %d k %d: receive %d got %d", g->pre, g->k, i, v);
	}
}

TEST_TIMEOUT(indices_given_back_across_segments, 120)
{
	int pre, k;

	for (k = 2; k <= 5; k += 3)
		for (pre = 24; pre < 40; pre++) {
			struct giveback g = { .pre = pre, .k = k,
					      .wg = KG_WG_INIT };

			g.c = kg_chan_make(sizeof(int), 0);
			ASSERT_EQ(0, run_kg(giveback_main, &g, 1));
			kg_chan_free(g.c);
		}
	ASSERT_EQ(0, co_failures());
}

/*
 * A timer channel with a waiter: kg_chan_free refuses before it touches
 * the timer, so the waiter is still woken when the timer fires; the same
 * for a ticker, whose stop says -EBUSY. Once nobody waits, both free.
 */
struct timer_wait {
	kg_chan_t *ch;
	_Atomic int got;
	kg_chan_t *done;
};

static void timer_waiter(void *p)
{
	struct timer_wait *tw = p;
	uint64_t when = 0;

	CO_CHECK(kg_chan_recv(tw->ch, &when) == 0 && when > 0, "fired");
	atomic_fetch_add(&tw->got, 1);
	kg_chan_send(tw->done, NULL);
}

static void timer_free_main(void *p)
{
	struct timer_wait tw = { .done = kg_chan_make(0, 1) };
	kg_ticker_t *t;
	int i;

	(void)p;
	tw.ch = kg_after(20 * MS);
	kg_go(timer_waiter, &tw);
	for (i = 0; i < 10; i++)
		kg_yield();
	kg_chan_free(tw.ch);	/* refused: the timer keeps running */
	CO_CHECK(kg_chan_recv_timeout(tw.done, NULL, 2000 * MS) == 0,
		 "the waiter was never woken");
	CO_CHECK(atomic_load(&tw.got) == 1, "got %d", atomic_load(&tw.got));
	kg_chan_free(tw.ch);

	t = kg_ticker_make(20 * MS);
	tw.ch = kg_ticker_chan(t);
	kg_go(timer_waiter, &tw);
	for (i = 0; i < 10; i++)
		kg_yield();
	CO_CHECK(kg_ticker_stop(t) == -EBUSY, "stop with a waiter");
	CO_CHECK(kg_chan_recv_timeout(tw.done, NULL, 2000 * MS) == 0,
		 "the ticker's waiter was never woken");
	CO_CHECK(kg_ticker_stop(t) == 0, "stop");
	kg_chan_free(tw.done);
}

TEST(free_timer_with_waiter_is_refused)
{
	ASSERT_EQ(0, run_kg(timer_free_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

/*
 * A parked coroutine resumed on a worker thread that never ran a channel
 * operation (the one sysmon hands main's proc to while main sits in a
 * marked blocking call) finishes its operation there. Nothing of it may
 * stay behind in that thread when the thread exits: LeakSanitizer checks
 * that in ASan builds (a spare record used to leak so); every build
 * checks that the receiver did resume on another thread.
 */
static struct {
	kg_chan_t *ch;
	int pipefd[2];
	_Atomic long parked_tid, resumed_tid, main_tid;
} mv;

static void moved_receiver(void *p)
{
	long v = 0;
	char c = 1;

	(void)p;
	atomic_store(&mv.parked_tid, gettid_());
	CO_CHECK(kg_chan_recv(mv.ch, &v) == 0 && v == 42, "recv %ld", v);
	atomic_store(&mv.resumed_tid, gettid_());
	CO_CHECK(write(mv.pipefd[1], &c, 1) == 1, "write");	/* main goes on */
}

static void *moved_sender(void *p)
{
	long v = 42;

	(void)p;
	kg_chan_send(mv.ch, &v);	/* the receiver waits: it is woken */
	return NULL;
}

static void moved_main(void *p)
{
	pthread_t t;
	char c;

	(void)p;
	atomic_store(&mv.main_tid, gettid_());
	kg_go(moved_receiver, NULL);
	while (!atomic_load(&mv.parked_tid))
		kg_yield();	/* one proc: it ran until it parked */
	CO_CHECK(pthread_create(&t, NULL, moved_sender, NULL) == 0, "thread");
	/* our worker blocks until the receiver has run: on another one */
	kg_blocking_begin();
	CO_CHECK(read(mv.pipefd[0], &c, 1) == 1, "read");
	kg_blocking_end();
	pthread_join(t, NULL);
}

TEST(resumed_on_a_fresh_worker_leaves_nothing)
{
	struct kg_config cfg = { .procs = 1, .backend = "sysmon" };

	mv.ch = kg_chan_make(sizeof(long), 0);
	ASSERT_TRUE(mv.ch != NULL);
	ASSERT_EQ(0, pipe(mv.pipefd));
	ASSERT_EQ(0, kg_run(moved_main, NULL, &cfg));
	ASSERT_EQ(0, co_failures());
	EXPECT_EQ(atomic_load(&mv.main_tid), atomic_load(&mv.parked_tid));
	EXPECT_NE(atomic_load(&mv.parked_tid), atomic_load(&mv.resumed_tid));
	kg_chan_free(mv.ch);
	close(mv.pipefd[0]);
	close(mv.pipefd[1]);
#ifdef __SANITIZE_ADDRESS__
	/* kg_run joined its workers: their thread-local memory is gone */
	ASSERT_EQ(0, __lsan_do_recoverable_leak_check());
#endif
}

/*
 * main returns while other coroutines still wait in channel operations,
 * or were woken from one and never ran again (Go drops such goroutines
 * when main returns). kg_run lets go of what the channels hold for them:
 * nothing leaks (LeakSanitizer checks it in ASan builds), and the
 * channels, which outlive kg_run, no longer lead to the coroutines'
 * stacks: a later operation on one moves past the dropped waiter instead
 * of waking a coroutine that is gone. Three kinds of record: a plain
 * send/recv, a timed one, a select.
 */
enum { LB_PLAIN, LB_TIMED, LB_SELECT, LB_KINDS };

static struct {
	kg_chan_t *woken[LB_KINDS];	/* their senders are woken, not run */
	kg_chan_t *parked[LB_KINDS];	/* their receivers wait for ever */
	kg_chan_t *other;		/* the selects' second case */
	_Atomic int waiting, ran_again;
} lb;

static int lb_op(int kind, kg_chan_t *c, bool send)
{
	long v = 5;
	struct kg_case k[2] = {
		{ c, send ? KG_SEND : KG_RECV, &v, false },
		{ lb.other, KG_RECV, &v, false },
	};

	switch (kind) {
	case LB_PLAIN:
		return send ? kg_chan_send(c, &v) : kg_chan_recv(c, &v);
	case LB_TIMED:
		return send ? kg_chan_send_timeout(c, &v, 3600 * 1000 * MS) :
			      kg_chan_recv_timeout(c, &v, 3600 * 1000 * MS);
	default:
		return kg_select(k, 2, -1);
	}
}

static void lb_sender(void *p)
{
	int kind = (int)(intptr_t)p;

	atomic_fetch_add(&lb.waiting, 1);
	lb_op(kind, lb.woken[kind], true);
	atomic_store(&lb.ran_again, 1);	/* must not happen: main is gone */
}

static void lb_receiver(void *p)
{
	int kind = (int)(intptr_t)p;

	atomic_fetch_add(&lb.waiting, 1);
	lb_op(kind, lb.parked[kind], false);
	atomic_store(&lb.ran_again, 1);
}

static void lb_main(void *p)
{
	int kind;
	long v;

	(void)p;
	for (kind = 0; kind < LB_KINDS; kind++) {
		kg_go(lb_sender, (void *)(intptr_t)kind);
		kg_go(lb_receiver, (void *)(intptr_t)kind);
	}
	/* one proc: each ran until it parked */
	while (atomic_load(&lb.waiting) < 2 * LB_KINDS)
		kg_yield();
	kg_yield();
	for (kind = 0; kind < LB_KINDS; kind++)	/* wake the senders */
		CO_CHECK(kg_chan_recv(lb.woken[kind], &v) == 0 && v == 5,
			 "recv %d", kind);
}	/* and return before they run again */

TEST(left_behind_at_main_return_leaves_nothing)
{
	/* sysmon, nothing marked: no handoff lets a woken one run early */
	struct kg_config cfg = { .procs = 1, .backend = "sysmon" };
	long v = 1;
	int kind;

	for (kind = 0; kind < LB_KINDS; kind++) {
		lb.woken[kind] = kg_chan_make(sizeof(long), 0);
		lb.parked[kind] = kg_chan_make(sizeof(long), 0);
		ASSERT_TRUE(lb.woken[kind] && lb.parked[kind]);
	}
	lb.other = kg_chan_make(sizeof(long), 0);
	ASSERT_TRUE(lb.other != NULL);
	ASSERT_EQ(0, kg_run(lb_main, NULL, &cfg));
	ASSERT_EQ(0, co_failures());
	EXPECT_EQ(0, atomic_load(&lb.ran_again));
	/* from this plain thread: the dropped receivers take nothing */
	for (kind = 0; kind < LB_KINDS; kind++)
		EXPECT_EQ(-EAGAIN, kg_chan_try_send(lb.parked[kind], &v));
	EXPECT_EQ(-EAGAIN, kg_chan_try_send(lb.other, &v));
	for (kind = 0; kind < LB_KINDS; kind++) {
		kg_chan_free(lb.woken[kind]);
		kg_chan_free(lb.parked[kind]);
	}
	kg_chan_free(lb.other);
#ifdef __SANITIZE_ADDRESS__
	ASSERT_EQ(0, __lsan_do_recoverable_leak_check());
#endif
}

TEST_HARNESS_MAIN
