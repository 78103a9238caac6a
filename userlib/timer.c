// SPDX-License-Identifier: MIT
/*
 * timer.c - per-proc timer heaps.
 *
 * Each proc keeps a binary min-heap of sleeping coroutines ordered by
 * deadline, as Go keeps timers per P. The owning worker fires expired
 * timers at every scheduler pass (one relaxed load of heap.next when there
 * are none). Other workers fire them too ("timer stealing") when they look
 * for work, so a proc that is busy running one coroutine does not delay
 * another's wake-up.
 *
 * Locking: heap.lock protects the heap array; heap.next is a lock-free copy
 * of the earliest deadline, written under the lock with seq_cst stores so
 * that a parking worker and a new timer cannot miss each other (see
 * kg_timer_notify in sched.c and kg_park_worker in handoff.c). Lock order:
 * a heap lock may be held while taking rt.lock (queue overflow), never the
 * reverse. A timer's function runs under its heap's lock, so
 * kg_timer_cancel returning means it is not running and will not run.
 *
 * This file keeps the heaps; which worker fires what, and when, is the
 * scheduler's (kg_timer_start, find_local, steal_work, kg_park_worker).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <pthread.h>

#include "timer.h"

int kg_timers_init(struct kg_timer_heap *h)
{
	if (kg_mutex_init(&h->lock))
		return -ENOMEM;
	h->v = NULL;
	h->n = h->cap = 0;
	h->hint = NULL;
	atomic_store(&h->next, UINT64_MAX);
	return 0;
}

void kg_timers_destroy(struct kg_timer_heap *h)
{
	free(h->v);
	h->v = NULL;
	pthread_mutex_destroy(&h->lock);
}

static void heap_set(struct kg_timer_heap *h, uint32_t i, struct kg_timer *t)
{
	h->v[i] = t;
	t->heap_idx = (int32_t)i;
}

static void sift_up(struct kg_timer_heap *h, uint32_t i)
{
	struct kg_timer *t = h->v[i];

	while (i > 0) {
		uint32_t parent = (i - 1) / 2;

		if (h->v[parent]->when <= t->when)
			break;
		heap_set(h, i, h->v[parent]);
		i = parent;
	}
	heap_set(h, i, t);
}

static void sift_down(struct kg_timer_heap *h, uint32_t i)
{
	struct kg_timer *t = h->v[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->when < h->v[c]->when)
			c++;
		if (t->when <= h->v[c]->when)
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, t);
}

static void publish_next(struct kg_timer_heap *h)
{
	atomic_store(&h->next, h->n ? h->v[0]->when : UINT64_MAX);
	/* the kernel side reads it at a blocking switch; relaxed suffices:
	 * a stale value only costs one needless (or late) handoff */
	if (h->hint)
		__atomic_store_n(h->hint, h->n, __ATOMIC_RELAXED);
}

/* Grow the heap so one more timer fits; caller holds h->lock. */
static int __heap_reserve(struct kg_timer_heap *h)
{
	uint32_t cap;
	struct kg_timer **v;

	if (h->n < h->cap)
		return 0;
	cap = h->cap ? h->cap * 2 : 64;
	v = realloc(h->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	h->v = v;
	h->cap = cap;
	return 0;
}

/* Insert t (room reserved); caller holds h->lock. */
static void __heap_push(struct kg_timer_heap *h, struct kg_timer *t)
{
	h->v[h->n] = t;
	h->n++;
	sift_up(h, h->n - 1);
	atomic_store_explicit(&t->heap, h, memory_order_relaxed);
}

/* Remove the timer at index i; caller holds h->lock. */
static void __heap_remove(struct kg_timer_heap *h, uint32_t i)
{
	struct kg_timer *t = h->v[i];

	h->n--;
	if (i < h->n) {
		heap_set(h, i, h->v[h->n]);
		if (i > 0 && h->v[i]->when < h->v[(i - 1) / 2]->when)
			sift_up(h, i);
		else
			sift_down(h, i);
	}
	t->heap_idx = -1;
}

int kg_timer_reserve(struct kg_timer_heap *h)
{
	int err;

	pthread_mutex_lock(&h->lock);
	err = __heap_reserve(h);
	pthread_mutex_unlock(&h->lock);
	return err;
}

int kg_timer_add(struct kg_timer_heap *h, struct kg_timer *t, uint64_t when)
{
	pthread_mutex_lock(&h->lock);
	if (__heap_reserve(h)) {
		pthread_mutex_unlock(&h->lock);
		return -ENOMEM;
	}
	t->when = when;
	__heap_push(h, t);
	publish_next(h);
	pthread_mutex_unlock(&h->lock);
	return 0;
}

bool kg_timer_cancel(struct kg_timer *t)
{
	struct kg_timer_heap *h = atomic_load_explicit(&t->heap,
						       memory_order_relaxed);
	bool armed = false;

	if (!h)
		return false;
	/* the lock also waits out a callback of t running right now */
	pthread_mutex_lock(&h->lock);
	if (atomic_load_explicit(&t->heap, memory_order_relaxed) == h &&
	    t->heap_idx >= 0) {
		__heap_remove(h, (uint32_t)t->heap_idx);
		publish_next(h);
		armed = true;
	}
	pthread_mutex_unlock(&h->lock);
	return armed;
}

void kg_timers_orphan(struct kg_rt *rt)
{
	uint32_t i, j;

	for (i = 0; i < rt->nprocs; i++) {
		struct kg_timer_heap *h = &rt->procs[i].timers;

		pthread_mutex_lock(&h->lock);
		for (j = 0; j < h->n; j++) {
			h->v[j]->heap_idx = -1;
			atomic_store_explicit(&h->v[j]->heap, NULL,
					      memory_order_relaxed);
		}
		h->n = 0;
		publish_next(h);
		pthread_mutex_unlock(&h->lock);
	}
}

unsigned int kg_timers_run(struct kg_worker *w, struct kg_proc *p,
			   uint64_t now)
{
	struct kg_timer_heap *h = &p->timers;
	unsigned int fired = 0;

	if (atomic_load_explicit(&h->next, memory_order_relaxed) > now)
		return 0;
	if (pthread_mutex_trylock(&h->lock))
		return 0;	/* someone else is firing them */
	while (h->n && h->v[0]->when <= now) {
		struct kg_timer *t = h->v[0];
		uint64_t again;

		__heap_remove(h, 0);
		/* t may be freed by its owner as soon as fn returns 0 */
		again = t->fn(w, t);
		if (again) {
			/* room is there: t was just removed */
			t->when = again;
			__heap_push(h, t);
		}
		fired++;
	}
	publish_next(h);
	pthread_mutex_unlock(&h->lock);
	if (fired && p != w->proc && w->proc)
		kg_store_relaxed(&w->proc->timer_steals,
				 kg_load_relaxed(&w->proc->timer_steals) +
					 fired);
	return fired;
}

uint64_t kg_timers_next_all(struct kg_rt *rt)
{
	uint64_t min = UINT64_MAX;
	uint32_t i;

	for (i = 0; i < rt->nprocs; i++) {
		uint64_t t = atomic_load(&rt->procs[i].timers.next);

		if (t < min)
			min = t;
	}
	return min;
}
