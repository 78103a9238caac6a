// SPDX-License-Identifier: MIT
/*
 * chan_stress - 8 producers x 8 consumers move 1e6 uniquely numbered items
 * over unbuffered and buffered channels, directly and through selects,
 * with and without plain threads among them: every item is received
 * exactly once, none is lost, none is invented.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "harness.h"
#include "kg_test.h"

#define NPROD 8
#define NCONS 8

enum mode { DIRECT, SELECT, TIMED };

struct stress {
	kg_chan_t *c[2];
	long items;			/* total */
	enum mode mode;
	int threads;			/* how many producers/consumers are threads */
	_Atomic unsigned char *seen;
	_Atomic long got, dup, bad, producers_left;
	kg_wg_t wg;
};

static void produce(struct stress *s, int id)
{
	long per = s->items / NPROD, i;

	for (i = id * per; i < (id + 1) * per; i++) {
		int r;

		if (s->mode == SELECT) {
			struct kg_case cs[2] = {
				{ s->c[0], KG_SEND, &i, false },
				{ s->c[1], KG_SEND, &i, false },
			};

			r = kg_select(cs, 2, -1);
			r = r >= 0 ? 0 : r;
		} else if (s->mode == TIMED) {
			do
				r = kg_chan_send_timeout(s->c[i & 1], &i, 50000);
			while (r == -ETIMEDOUT);
		} else {
			r = kg_chan_send(s->c[i & 1], &i);
		}
		if (r)
			atomic_fetch_add(&s->bad, 1);
	}
	/* the last producer closes both channels */
	if (atomic_fetch_sub(&s->producers_left, 1) == 1) {
		kg_chan_close(s->c[0]);
		kg_chan_close(s->c[1]);
	}
}

static void consume(struct stress *s, int id)
{
	kg_chan_t *live[2] = { s->c[0], s->c[1] };
	int open = 2;
	long v;

	while (open) {
		int r, k;

		if (s->mode == SELECT || s->mode == TIMED) {
			struct kg_case cs[2] = {
				{ live[0], KG_RECV, &v, false },
				{ live[1], KG_RECV, &v, false },
			};

			r = kg_select(cs, 2, s->mode == TIMED ? 50000 : -1);
			if (r == -ETIMEDOUT)
				continue;
			if (r < 0) {
				atomic_fetch_add(&s->bad, 1);
				return;
			}
			if (!cs[r].ok) {
				live[r] = NULL;
				open--;
				continue;
			}
		} else {
			k = (id + open) & 1;
			if (!live[k])
				k ^= 1;
			r = kg_chan_recv(live[k], &v);
			if (r == -EPIPE) {
				live[k] = NULL;
				open--;
				continue;
			}
		}
		if (v < 0 || v >= s->items)
			atomic_fetch_add(&s->bad, 1);
		else if (atomic_exchange_explicit(&s->seen[v], 1,
						  memory_order_relaxed))
			atomic_fetch_add(&s->dup, 1);
		atomic_fetch_add_explicit(&s->got, 1, memory_order_relaxed);
	}
}

struct role {
	struct stress *s;
	int id;
};

static struct role roles[NPROD + NCONS];

static void prod_co(void *p)
{
	struct role *r = p;

	produce(r->s, r->id);
	kg_wg_done(&r->s->wg);
}

static void cons_co(void *p)
{
	struct role *r = p;

	consume(r->s, r->id - NPROD);
	kg_wg_done(&r->s->wg);
}

static void *prod_thread(void *p)
{
	prod_co(p);
	return NULL;
}

static void *cons_thread(void *p)
{
	cons_co(p);
	return NULL;
}

static void stress_main(void *p)
{
	struct stress *s = p;
	pthread_t th[NPROD + NCONS];
	int i, nth = 0;

	kg_wg_add(&s->wg, NPROD + NCONS);
	for (i = 0; i < NPROD + NCONS; i++) {
		bool prod = i < NPROD;
		/* the first `threads` producers and consumers are threads */
		bool thread = (prod ? i : i - NPROD) < s->threads;

		roles[i].s = s;
		roles[i].id = i;
		if (thread)
			pthread_create(&th[nth++], NULL,
				       prod ? prod_thread : cons_thread,
				       &roles[i]);
		else
			kg_go(prod ? prod_co : cons_co, &roles[i]);
	}
	kg_wg_wait(&s->wg);
	for (i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
}

FIXTURE(stress) {
	struct stress s;
};
FIXTURE_VARIANT(stress) {
	size_t cap;
	enum mode mode;
	int threads;
};
FIXTURE_VARIANT_ADD(stress, unbuffered) { .cap = 0, .mode = DIRECT };
FIXTURE_VARIANT_ADD(stress, buffered) { .cap = 64, .mode = DIRECT };
FIXTURE_VARIANT_ADD(stress, unbuffered_select) { .cap = 0, .mode = SELECT };
FIXTURE_VARIANT_ADD(stress, buffered_select) { .cap = 16, .mode = SELECT };
FIXTURE_VARIANT_ADD(stress, timed) { .cap = 1, .mode = TIMED };
FIXTURE_VARIANT_ADD(stress, with_threads) { .cap = 4, .mode = SELECT,
					    .threads = 2 };
FIXTURE_SETUP(stress)
{
	memset(&self->s, 0, sizeof(self->s));
}
FIXTURE_TEARDOWN(stress) {}

TEST_F_TIMEOUT(stress, every_item_exactly_once, 120)
{
	struct stress *s = &self->s;
	long i, missing = 0;

	s->items = scaled(1000000, 20) / NPROD * NPROD;
	s->mode = variant->mode;
	s->threads = variant->threads;
	s->seen = calloc((size_t)s->items, 1);
	s->c[0] = kg_chan_make(sizeof(long), variant->cap);
	s->c[1] = kg_chan_make(sizeof(long), variant->cap);
	atomic_store(&s->producers_left, NPROD);
	ASSERT_EQ(0, run_kg(stress_main, s, 2));
	for (i = 0; i < s->items; i++)
		missing += !atomic_load(&s->seen[i]);
	ASSERT_EQ(0, atomic_load(&s->bad));
	ASSERT_EQ(0, atomic_load(&s->dup));
	ASSERT_EQ(0, missing);
	ASSERT_EQ(s->items, atomic_load(&s->got));
	TH_LOG("%ld items", s->items);
	kg_chan_free(s->c[0]);
	kg_chan_free(s->c[1]);
	free((void *)s->seen);
}

TEST_HARNESS_MAIN
