// SPDX-License-Identifier: MIT
/*
 * sync.c - synchronization objects that park coroutines, not workers.
 *
 * Every object keeps its waiters in an intrusive list of nodes that live on
 * the waiters' own stacks, under a word-sized spinlock in the object (held
 * for a few instructions, never across a switch or a syscall). A waiter is
 * either a coroutine, parked through the scheduler, or a plain thread,
 * sleeping on a futex in its node; the waker does not need to know which.
 *
 * Parking a coroutine while its node is on the list is safe because the
 * lock is released only by the post-switch action (after the coroutine's
 * registers are saved): a waker that takes the lock and finds the node can
 * resume the coroutine at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

struct kg_waiter {
	struct kg_waiter *next;
	struct kg_co *co;		/* NULL for a plain thread */
	_Atomic uint32_t done;		/* plain threads: futex word */
};

static void spin_lock(uint32_t *l)
{
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(l, __ATOMIC_RELAXED))
			kg_cpu_relax();
	}
}

static void spin_unlock(uint32_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

/* Post-switch action: the waiter is switched out, let wakers see it. */
static void after_unlock(struct kg_worker *w, struct kg_co *prev, void *lock)
{
	(void)w;
	(void)prev;
	spin_unlock(lock);
}

/*
 * Sleep until the node is woken; called with *lock held, returns without
 * it. The node must already be on the object's list.
 */
static void wait_node(struct kg_waiter *n, uint32_t *lock)
{
	struct kg_worker *w = kg_worker_self();

	if (w && w->cur != &w->g0) {
		n->co = w->cur;
		kg_sched_park(after_unlock, lock);
		return;
	}
	n->co = NULL;
	spin_unlock(lock);
	while (!atomic_load_explicit(&n->done, memory_order_acquire))
		syscall(SYS_futex, &n->done, FUTEX_WAIT_PRIVATE, 0, NULL, NULL,
			0);
}

/* Wake one node taken off a list (lock no longer needed). */
static void wake_node(struct kg_waiter *n)
{
	struct kg_co *co = n->co;

	if (co) {
		kg_wake(co);
		return;
	}
	/* release: the waiter may return and free its node right after */
	atomic_store_explicit(&n->done, 1, memory_order_release);
	syscall(SYS_futex, &n->done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/*
 * WaitGroup, Go's design: one 64-bit word holds the counter (high half)
 * and the number of waiters (low half), so kg_wg_add is a single atomic
 * add unless it takes the counter to zero with waiters present. Waiters
 * register (waiters + 1) and queue their node in one critical section of
 * wg->lock; the adder that sees "counter 0, waiters > 0" takes the lock,
 * so it finds every registered node. Both decisions come from the same
 * atomic word, whose modifications are totally ordered: either the adder
 * sees the waiter, or the waiter sees the zero counter.
 */
#define WG_COUNT(v) ((int32_t)((v) >> 32))
#define WG_WAITERS(v) ((uint32_t)(v))

int kg_wg_add(kg_wg_t *wg, int64_t delta)
{
	struct kg_waiter *list, *n;
	uint64_t v, inc;

	if (!wg || delta < INT32_MIN || delta > INT32_MAX)
		return -EINVAL;
	inc = (uint64_t)delta << 32;
	v = __atomic_add_fetch(&wg->state, inc, __ATOMIC_ACQ_REL);
	if (WG_COUNT(v) < 0 || (delta > 0 && WG_COUNT(v) < WG_COUNT(inc))) {
		/* negative, or wrapped past INT32_MAX: undo */
		__atomic_sub_fetch(&wg->state, inc, __ATOMIC_ACQ_REL);
		return -EINVAL;
	}
	if (WG_COUNT(v) > 0 || WG_WAITERS(v) == 0 || delta == 0)
		return 0;
	spin_lock(&wg->lock);
	list = wg->waiters;
	wg->waiters = NULL;
	/* every registered waiter is on the list: clear their count */
	__atomic_and_fetch(&wg->state, ~(uint64_t)0xffffffff, __ATOMIC_ACQ_REL);
	spin_unlock(&wg->lock);
	while ((n = list)) {
		list = n->next;
		wake_node(n);
	}
	return 0;
}

int kg_wg_done(kg_wg_t *wg)
{
	return kg_wg_add(wg, -1);
}

int kg_wg_wait(kg_wg_t *wg)
{
	struct kg_waiter n = { 0 };
	uint64_t v;

	if (!wg)
		return -EINVAL;
	if (WG_COUNT(__atomic_load_n(&wg->state, __ATOMIC_ACQUIRE)) == 0)
		return 0;
	spin_lock(&wg->lock);
	v = __atomic_add_fetch(&wg->state, 1, __ATOMIC_ACQ_REL);
	if (WG_COUNT(v) == 0) {
		/* reached zero before we registered: nobody will wake us */
		__atomic_sub_fetch(&wg->state, 1, __ATOMIC_ACQ_REL);
		spin_unlock(&wg->lock);
		return 0;
	}
	n.next = wg->waiters;
	wg->waiters = &n;
	wait_node(&n, &wg->lock);
	return 0;
}
