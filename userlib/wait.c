// SPDX-License-Identifier: MIT
/*
 * wait.c - how a coroutine or a plain thread waits for a channel or a sync
 * object, and how whoever completes its operation resumes it; kg_sleep.
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
#include <time.h>

#include "timer.h"
#include "wait.h"

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

/* ------------------------------------------------------------------ */
/* kg_sleep                                                            */
/* ------------------------------------------------------------------ */

/*
 * A sleeping coroutine is armed only after it has switched away (the
 * post-switch action), so a worker that fires the timer always finds its
 * registers saved.
 */
/*
 * kg_sleep's timer: make the sleeper runnable on the firing worker, next
 * (runnext), as Go's timers ready a sleeping goroutine: a sleeper is
 * usually the latency-sensitive one (a ticker, a deadline), and behind a
 * queue of coroutines that each may take a time slice it could wait one
 * slice per coroutine.
 */
static uint64_t sleep_fire(struct kg_worker *w, struct kg_timer *t)
{
	kg_ready(w, t->arg, true);
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
	if (kg_timer_add(h, &prev->timer, when)) {
		/*
		 * kg_sleep reserved room on the proc it ran on; only a proc
		 * change in between (a handoff) gets here. Wake it now:
		 * kg_sleep sees the deadline not reached and sleeps again.
		 */
		kg_ready(w, prev, false);
		return;
	}
	/* without a proc, h is proc 0's, which some other worker holds */
	kg_timer_notify(rt, when, w->proc != NULL);
}

static void plain_sleep(uint64_t ns)
{
	struct timespec ts = kg_timespec(ns);

	while (kg_sys_nanosleep(&ts, &ts) && errno == EINTR)
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
	deadline = kg_deadline(now, ns);
	do {
		/* after_arm's heap: a coroutine whose proc was taken while
		 * it held a lock runs without one until it parks */
		if (kg_timer_reserve(w->proc ? &w->proc->timers
					     : &w->rt->procs[0].timers))
			return -ENOMEM;
		w->cur->timer.when = deadline;
		kg_co_waiting(w->cur, "sleep", NULL);
		kg_sched_park(after_arm, NULL);
		w = kg_worker_self();
	} while (kg_now_ns() < deadline);
	return 0;
}
