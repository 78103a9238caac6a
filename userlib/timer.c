// SPDX-License-Identifier: MIT
/*
 * timer.c - per-proc timer heaps and kg_sleep.
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
 * kg_timer_arm and park_worker in sched.c). Lock order: a heap lock may be
 * held while taking rt.lock (queue overflow), never the reverse.
 *
 * A sleeping coroutine is armed only after it has switched away (the
 * post-switch action), so a worker that fires the timer always finds its
 * registers saved.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

int kg_timers_init(struct kg_timer_heap *h)
{
	if (pthread_mutex_init(&h->lock, NULL))
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

/*
 * A new deadline on some heap: a parked timer watcher sleeps until
 * timer_watch_until; wake it if this deadline is earlier, or get a worker
 * to watch if none does. seq_cst load after the seq_cst heap.next store
 * (publish_next): pairs with the watcher's store of timer_watch_until then
 * re-read of heap.next (park_worker in sched.c).
 */
static void timer_notify(struct kg_rt *rt, uint64_t when)
{
	if (when < atomic_load(&rt->timer_watch_until)) {
		struct kg_worker *watcher = atomic_load(&rt->timer_watcher);

		if (watcher)
			kg_kick_watcher(watcher);
		else
			kg_wakep(rt);
	}
}

static struct kg_timer_heap *heap_for(struct kg_rt *rt)
{
	struct kg_worker *w = kg_worker_self();

	/* a stale w->proc (taken by a handoff) still names a live heap */
	if (w && w->rt == rt && w->proc)
		return &w->proc->timers;
	return &rt->procs[0].timers;
}

int kg_timer_start(struct kg_rt *rt, struct kg_timer *t, uint64_t when)
{
	struct kg_timer_heap *h = heap_for(rt);

	pthread_mutex_lock(&h->lock);
	if (__heap_reserve(h)) {
		pthread_mutex_unlock(&h->lock);
		return -ENOMEM;
	}
	t->when = when;
	__heap_push(h, t);
	publish_next(h);
	pthread_mutex_unlock(&h->lock);
	timer_notify(rt, when);
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

/* kg_sleep's timer: make the sleeper runnable on the firing worker. */
static uint64_t sleep_fire(struct kg_worker *w, struct kg_timer *t)
{
	kg_ready(w, t->arg, false);
	return 0;
}

/* Post-switch action of kg_sleep: put prev on w's proc's heap. */
static void after_arm(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	struct kg_rt *rt = w->rt;
	struct kg_proc *p = w->proc ? w->proc : &rt->procs[0];
	struct kg_timer_heap *h = &p->timers;
	/* once on the heap, prev may fire, run and sleep again: copy first */
	uint64_t when = prev->timer.when;

	(void)arg;
	prev->timer.fn = sleep_fire;
	prev->timer.arg = prev;
	pthread_mutex_lock(&h->lock);
	if (__heap_reserve(h)) {
		/*
		 * kg_sleep reserved room on the proc it ran on; only a proc
		 * change in between (a handoff) gets here. Wake it now:
		 * kg_sleep sees the deadline not reached and sleeps again.
		 */
		pthread_mutex_unlock(&h->lock);
		kg_ready(w, prev, false);
		return;
	}
	__heap_push(h, &prev->timer);
	publish_next(h);
	pthread_mutex_unlock(&h->lock);
	timer_notify(rt, when);
}

static int timer_reserve(struct kg_proc *p)
{
	int err;

	pthread_mutex_lock(&p->timers.lock);
	err = __heap_reserve(&p->timers);
	pthread_mutex_unlock(&p->timers.lock);
	return err;
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

static void plain_sleep(uint64_t ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(ns / 1000000000ull),
		.tv_nsec = (long)(ns % 1000000000ull),
	};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int kg_sleep(uint64_t ns)
{
	struct kg_worker *w = kg_worker_self();
	uint64_t now, deadline;

	if (!w || w->cur == &w->g0) {
		/* a plain thread that sleeps in kgreen may wake a coroutine
		 * after it: a possible waker for the deadlock watch */
		if (!w)
			kg_foreign_note();
		plain_sleep(ns);
		return 0;
	}
	if (!ns) {
		kg_yield();
		return 0;
	}
	now = kg_now_ns();
	deadline = now + ns < now ? UINT64_MAX - 1 : now + ns;
	do {
		/* after_arm's heap: a coroutine whose proc was taken while
		 * it held a lock runs without one until it parks */
		if (timer_reserve(w->proc ? w->proc : &w->rt->procs[0]))
			return -ENOMEM;
		w->cur->timer.when = deadline;
		kg_co_waiting(w->cur, "sleep", NULL);
		kg_sched_park(after_arm, NULL);
		w = kg_worker_self();
	} while (kg_now_ns() < deadline);
	return 0;
}
