// SPDX-License-Identifier: MIT
/*
 * wait.c - how a coroutine or a plain thread waits for a channel or a sync
 * object, and how whoever completes its operation resumes it.
 *
 * The problem: one waiting operation may be completed by several parties
 * racing each other (the partners of each case of a select, a close, the
 * timeout), the waiter may be a coroutine (park it, never its worker) or a
 * plain thread (sleep on a futex), and the waiter's bookkeeping lives on
 * its own stack, so nobody may touch it once the waiter has resumed.
 *
 * Chosen (Go's selectDone plus an explicit wake handshake):
 *  1. A struct kg_parker per operation. Completing it starts with a
 *     compare-and-swap on parker.claim from 0: exactly one party wins; the
 *     losers leave it alone (they skip it in their wait queues). The winner
 *     moves the value, then calls kg_parker_wake.
 *  2. A coroutine parks with a post-switch action (the commit) that
 *     releases the caller's locks and then moves state PARKING -> PARKED.
 *     kg_parker_wake exchanges state to WOKEN: if it saw PARKED it makes
 *     the coroutine runnable; if it saw PARKING the commit is still to
 *     come, and the commit, failing its CAS, makes it runnable instead.
 *     Either way the coroutine is resumed once, with its registers saved.
 *  3. A coroutine's timeout is a kg_timer armed before the caller takes
 *     its channel locks (heap locks come before channel locks). Its
 *     callback is just another claimant (KG_CLAIM_TIMEOUT). The resumed
 *     coroutine cancels it; cancel waits out a running callback (it runs
 *     under the heap lock), so the parker can then go out of scope.
 *  4. A plain thread sleeps on state (futex) and, when its deadline
 *     passes, claims KG_CLAIM_TIMEOUT itself; if someone else claimed
 *     first, it waits for their wake (they are moving its value).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_SPINS 128

void kg_futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline)
{
	struct timespec ts, *tsp = NULL;

	if (deadline != UINT64_MAX) {
		uint64_t now = kg_now_ns();
		uint64_t rel = deadline > now ? deadline - now : 0;

		if (!rel)
			return;
		ts.tv_sec = (time_t)(rel / 1000000000ull);
		ts.tv_nsec = (long)(rel % 1000000000ull);
		tsp = &ts;
	}
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
}

void kg_futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* kg_lock                                                             */
/* ------------------------------------------------------------------ */

void kg_lock_slow(kg_lock_t *l)
{
	int i;

	for (i = 0; i < LOCK_SPINS; i++) {
		uint32_t zero = 0;

		if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_weak_explicit(
			    &l->v, &zero, 1, memory_order_acquire,
			    memory_order_relaxed))
			return;
		kg_cpu_relax();
	}
	/*
	 * Mark "locked, sleepers" and sleep until we are the one that moved
	 * it from 0. acquire: pairs with the release exchange in kg_unlock.
	 */
	while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
		kg_futex_wait(&l->v, 2, UINT64_MAX);
}

void kg_unlock_slow(kg_lock_t *l)
{
	kg_futex_wake(&l->v, 1);
}

/* ------------------------------------------------------------------ */
/* Plain threads as possible wakers (the deadlock watch)               */
/* ------------------------------------------------------------------ */

_Atomic long kg_foreign_threads;
static pthread_key_t foreign_key;
static pthread_once_t foreign_once = PTHREAD_ONCE_INIT;
static __thread bool foreign_noted KG_TLS;

static void foreign_exit(void *v)
{
	(void)v;
	atomic_fetch_sub(&kg_foreign_threads, 1);
}

static void foreign_key_make(void)
{
	pthread_key_create(&foreign_key, foreign_exit);
}

void kg_foreign_note(void)
{
	if (foreign_noted)
		return;
	pthread_once(&foreign_once, foreign_key_make);
	foreign_noted = true;
	atomic_fetch_add(&kg_foreign_threads, 1);
	/* non-NULL, so the destructor runs at thread exit */
	pthread_setspecific(foreign_key, &foreign_noted);
}

bool kg_foreign_pause(void)
{
	if (!foreign_noted)
		return false;
	atomic_fetch_sub(&kg_foreign_threads, 1);
	return true;
}

void kg_foreign_resume(bool was)
{
	if (was)
		atomic_fetch_add(&kg_foreign_threads, 1);
}

/* ------------------------------------------------------------------ */
/* Parkers                                                             */
/* ------------------------------------------------------------------ */

uint64_t kg_fastrand(void)
{
	static __thread uint64_t x KG_TLS;

	if (kg_unlikely(!x))
		x = (kg_now_ns() ^ (uint64_t)(uintptr_t)&x) | 1;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	return x * 0x2545F4914F6CDD1DULL;
}

void kg_parker_init(struct kg_parker *pk)
{
	struct kg_worker *w = kg_worker_self();

	atomic_store_explicit(&pk->claim, 0, memory_order_relaxed);
	atomic_store_explicit(&pk->state, KG_PK_PARKING, memory_order_relaxed);
	pk->timer_armed = false;
	pk->timer.heap_idx = -1;
	atomic_store_explicit(&pk->timer.heap, NULL, memory_order_relaxed);
	if (w && w->cur != &w->g0) {
		pk->co = w->cur;
		pk->rt = w->rt;
	} else {
		pk->co = NULL;
		pk->rt = kg_rt_current();
	}
}

void kg_parker_wake(struct kg_worker *w, struct kg_parker *pk)
{
	/* read before the wake: pk may be gone right after it */
	struct kg_co *co = pk->co;

	if (!co) {
		/* release: the value moved before is seen by the thread */
		atomic_store_explicit(&pk->state, KG_PK_WOKEN,
				      memory_order_release);
		kg_futex_wake(&pk->state, 1);
		return;
	}
	/* acq_rel: pairs with the commit's CAS PARKING -> PARKED */
	if (atomic_exchange_explicit(&pk->state, KG_PK_WOKEN,
				     memory_order_acq_rel) != KG_PK_PARKED)
		return;		/* the commit has yet to run: it resumes co */
	if (w)
		kg_ready(w, co, true);
	else
		kg_wake(co);
}

/* A coroutine's deadline passed: one more claimant. */
static uint64_t timeout_fire(struct kg_worker *w, struct kg_timer *t)
{
	struct kg_parker *pk = t->arg;

	if (kg_parker_claim(pk, KG_CLAIM_TIMEOUT))
		kg_parker_wake(w, pk);
	return 0;
}

int kg_parker_arm(struct kg_parker *pk, uint64_t deadline)
{
	int err;

	if (!pk->co || deadline == UINT64_MAX)
		return 0;
	pk->timer.fn = timeout_fire;
	pk->timer.arg = pk;
	err = kg_timer_start(pk->rt, &pk->timer, deadline);
	if (!err)
		pk->timer_armed = true;
	return err;
}

void kg_parker_done(struct kg_parker *pk)
{
	if (pk->timer_armed) {
		kg_timer_cancel(&pk->timer);
		pk->timer_armed = false;
	}
}

struct park_commit {
	void (*unlock)(void *);
	void *arg;
	struct kg_parker *pk;
};

/*
 * Post-switch action: prev's registers are saved. Release the caller's
 * locks (wakers may now find the parker), then publish PARKED. c and pk
 * live on prev's stack and stay valid: prev cannot resume before this
 * action either publishes PARKED or makes it runnable itself.
 */
static void after_park(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	struct park_commit *c = arg;
	struct kg_parker *pk = c->pk;
	uint32_t expect = KG_PK_PARKING;

	c->unlock(c->arg);
	/* acq_rel: pairs with kg_parker_wake's exchange */
	if (!atomic_compare_exchange_strong_explicit(
		    &pk->state, &expect, KG_PK_PARKED, memory_order_acq_rel,
		    memory_order_acquire))
		kg_ready(w, prev, true);	/* woken meanwhile */
}

void kg_parker_wait(struct kg_parker *pk, void (*unlock)(void *), void *arg,
		    uint64_t deadline)
{
	if (pk->co) {
		struct park_commit c = { unlock, arg, pk };

		kg_sched_park(after_park, &c);
		if (atomic_load_explicit(&pk->state, memory_order_acquire) !=
		    KG_PK_WOKEN)
			kg_throw("kg_parker_wait: coroutine %ld resumed before "
				 "its wake", pk->co->id);
		kg_parker_done(pk);
		return;
	}
	unlock(arg);
	kg_foreign_note();
	/* acquire: pairs with the waker's release store of WOKEN */
	while (atomic_load_explicit(&pk->state, memory_order_acquire) !=
	       KG_PK_WOKEN) {
		if (deadline != UINT64_MAX && kg_now_ns() >= deadline) {
			if (kg_parker_claim(pk, KG_CLAIM_TIMEOUT))
				return;
			deadline = UINT64_MAX;	/* claimed: a wake comes */
			continue;
		}
		kg_futex_wait(&pk->state, KG_PK_PARKING, deadline);
	}
}
