// SPDX-License-Identifier: MIT
/*
 * sync.c - Go's sync package for coroutines and plain threads: WaitGroup,
 * Mutex, RWMutex, Cond, Once and a counting semaphore.
 *
 * The problem: a lock that parks the coroutine (never its worker) when it
 * must wait, sleeps a plain thread on a futex when the caller is one, lets
 * both kinds wait on the same object, costs one atomic operation when
 * nobody waits, and, for the timed waits, lets a timeout race a wake-up
 * without losing either.
 *
 * Rejected: a pthread mutex or condition variable inside each object (it
 * blocks the worker, and with it every coroutine queued on its proc); a
 * coroutine-only design with a separate path for threads (programs mix
 * them, often on one object); one big lock per object on every fast path
 * (Go shows the uncontended lock needs a single compare-and-swap).
 *
 * Chosen:
 *  1. Each object keeps its hot state in one atomic word, changed by
 *     compare-and-swap or atomic add, so an uncontended lock, unlock,
 *     acquire, release, add or done takes no lock: the mutex's state word
 *     is Go's (locked, woken and starving bits, waiter count above them),
 *     the RWMutex counts readers as Go does, the semaphore packs tokens
 *     and waiters in 64 bits, the WaitGroup its counter and waiters.
 *  2. Whoever must wait queues a struct sync_waiter (on its own stack) on
 *     the object's wait queue, under the object's internal kg_lock, and
 *     waits through a kg_parker (wait.c): a coroutine parks and the lock
 *     is released only once it is switched out (the park commit); a plain
 *     thread sleeps on the parker's futex word. The waker does not need
 *     to know which kind it wakes.
 *  3. A waiter is completed by whoever claims its parker first (a CAS
 *     from 0): a releaser handing it a token (CLAIM_GRANT), or its
 *     timeout (KG_CLAIM_TIMEOUT; a timer callback for a coroutine, the
 *     thread itself for a thread). Wakers claim under the object lock
 *     while the waiter is still queued, so a waiter that lost to its
 *     timeout is skipped, never touched after it may have returned; the
 *     timed-out waiter removes itself under the same lock.
 *  4. Handing over means counting. A release that finds no waiter queued
 *     yet leaves a token (the mutex's and RWMutex's sema counters, Go's
 *     runtime semaphores), so a release that comes between "I will wait"
 *     in the atomic word and the queueing is never lost.
 *
 * Locks: each object's kg_lock protects its queues and token counters,
 * nothing else; it is held for a few instructions and never across a
 * switch except through the park commit that releases it. Timer heap
 * locks (a coroutine's timeout) are taken before it, never under it:
 * kg_parker_arm runs before kg_lock, kg_parker_done after kg_unlock.
 * The atomic words are never changed under the lock by anything but
 * compare-and-swap or atomic add, so lock-free fast paths may run at any
 * time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "wait.h"

/* A sync object's grant: the claim that hands the waiter what it waits for. */
#define CLAIM_GRANT 1u

_Static_assert(sizeof(kg_lock_t) == sizeof(uint32_t),
	       "kg_lock_t must fit the public uint32_t lock fields");

/* The internal lock behind a public object's uint32_t lock field. */
#define OBJ_LOCK(o) ((kg_lock_t *)(void *)&(o)->lock)

/*
 * One caller waiting on one object; lives on the caller's stack for the
 * duration of the call. next/prev/queued belong to the object's lock;
 * pk's claim decides who completes the wait.
 */
struct sync_waiter {
	struct kg_parker pk;
	struct sync_waiter *next, *prev;
	bool queued;
};

static void waiter_init(struct sync_waiter *n)
{
	kg_parker_init(&n->pk);
	n->next = n->prev = NULL;
	n->queued = false;
}

/* Park commit: the waiter is switched out (or a thread about to sleep). */
static void unlock_obj(void *lock)
{
	kg_unlock(lock);
}

static void unlock_nothing(void *arg)
{
	(void)arg;
}

typedef void (*abandon_fn)(struct kg_co *co, int pass);

/*
 * Wait until claimed (and woken); unlock(arg) runs once the waiter is
 * committed. why and obj name the wait in deadlock reports (Go's words);
 * abandon lets go of it should main return before the coroutine runs
 * again (kg_co.abandon: see "Left behind" below). Only the waiter writes
 * its coroutine's abandon and wait_rec.
 */
static void waiter_wait(struct sync_waiter *n, void (*unlock)(void *),
			void *arg, uint64_t deadline, const char *why,
			const void *obj, abandon_fn abandon)
{
	struct kg_co *co = n->pk.co;

	kg_co_waiting(co, why, obj);
	if (co) {
		co->wait_rec = n;
		co->abandon = abandon;
	}
	kg_parker_wait(&n->pk, unlock, arg, deadline);
	if (co)
		co->abandon = NULL;
}

/* ------------------------------------------------------------------ */
/* Wait queues (caller holds the object's lock)                        */
/* ------------------------------------------------------------------ */

static void __wq_push(struct kg_waitq *q, struct sync_waiter *n, bool front)
{
	struct sync_waiter *head = q->head, *tail = q->tail;

	n->queued = true;
	if (!head) {
		n->next = n->prev = NULL;
		q->head = q->tail = n;
	} else if (front) {
		n->prev = NULL;
		n->next = head;
		head->prev = n;
		q->head = n;
	} else {
		n->next = NULL;
		n->prev = tail;
		tail->next = n;
		q->tail = n;
	}
}

static void __wq_remove(struct kg_waitq *q, struct sync_waiter *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		q->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		q->tail = n->prev;
	n->next = n->prev = NULL;
	n->queued = false;
}

/*
 * Take the first waiter that can still be granted off q and claim it.
 * Waiters whose timeout won the claim are dropped from q on the way (they
 * remove nothing themselves then); *dropped counts them. Returns the
 * claimed waiter, to wake after the lock is released, or NULL.
 */
static struct sync_waiter *__wq_grant(struct kg_waitq *q, uint32_t *dropped)
{
	struct sync_waiter *n;

	while ((n = q->head)) {
		__wq_remove(q, n);
		if (kg_parker_claim(&n->pk, CLAIM_GRANT))
			return n;
		if (dropped)
			(*dropped)++;
	}
	return NULL;
}

/*
 * Grant up to max waiters of q; they are chained through next (each no
 * longer queued) for wake_chain. Returns how many.
 */
static uint32_t __wq_grant_many(struct kg_waitq *q, uint32_t max,
				struct sync_waiter **chain, uint32_t *dropped)
{
	struct sync_waiter *n, *first = NULL, **tail = &first;
	uint32_t got = 0;

	while (got < max && (n = __wq_grant(q, dropped))) {
		*tail = n;
		tail = &n->next;
		got++;
	}
	*chain = first;
	return got;
}

/*
 * Wake a chain of waiters; call with no lock held. grant: claim each one
 * first (CLAIM_GRANT; a chain with no timeouts, whose claims cannot fail),
 * in the same pass: each waiter lives on its own stack, a page apart (a
 * million waiters, a million TLB misses per pass). Else they are granted
 * already.
 */
static void wake_chain(struct sync_waiter *n, bool grant)
{
	while (n) {
		/* read before the wake: the waiter may return right after */
		struct sync_waiter *next = n->next;

		if (grant)
			kg_parker_claim(&n->pk, CLAIM_GRANT);
		kg_parker_wake(NULL, &n->pk);
		n = next;
	}
}

/*
 * After a wait that may have timed out: true if it was granted. A waiter
 * whose timeout won removes itself from q, unless a granter dropped it
 * already; when it does, left(arg) runs under the lock (the semaphore
 * uncounts it there, as every change of its waiter count happens).
 */
static bool waiter_finish(struct sync_waiter *n, kg_lock_t *l,
			  struct kg_waitq *q, void (*left)(void *), void *arg)
{
	/* acquire: pairs with the claimant's acq_rel CAS */
	if (atomic_load_explicit(&n->pk.claim, memory_order_acquire) !=
	    KG_CLAIM_TIMEOUT)
		return true;
	kg_lock(l);
	if (n->queued) {
		__wq_remove(q, n);
		if (left)
			left(arg);
	}
	kg_unlock(l);
	return false;
}

/* ------------------------------------------------------------------ */
/* Left behind: coroutines main leaves waiting                         */
/* ------------------------------------------------------------------ */

/*
 * kg_run is ending and a coroutine, alive, never ran again after it
 * waited on an object (main returned first). Its waiter is on its stack,
 * about to be unmapped, and the object may outlive kg_run. The rules:
 *  - a wait still queued is withdrawn as if it had timed out: out of the
 *    queue, uncounted wherever the object counts its waiters (pass 0);
 *  - what the coroutine was handed and had yet to return with stays with
 *    it, as what it holds does: a mutex handed over in starvation mode, a
 *    read or write lock, a semaphore token, a Cond signal, a WaitGroup's
 *    release. Only a normal-mode mutex wake-up is no grant (it is a turn
 *    to compete): pass 1 passes it on;
 *  - an RWMutex writer withdrawn while readers were still in undoes its
 *    announcement in pass 1 (the readers queued behind it go in) and lets
 *    go of the writers' mutex.
 * Pass 1 may wake waiters, but pass 0 has withdrawn every coroutine of
 * this runtime, so those are plain threads. No worker runs; other
 * threads must not be using the object meanwhile (channels.md).
 */

/*
 * Pass 0 for n, a waiter queued on q under l: withdraw it and let
 * left(arg) uncount it under l. It is claimed as timed out, so that in
 * pass 1 its claim tells a withdrawn waiter (KG_CLAIM_TIMEOUT) from one
 * that was handed what it waited for.
 */
static void waiter_withdraw(struct sync_waiter *n, kg_lock_t *l,
			    struct kg_waitq *q, void (*left)(void *),
			    void *arg)
{
	kg_lock(l);
	if (n->queued) {
		__wq_remove(q, n);
		kg_parker_claim(&n->pk, KG_CLAIM_TIMEOUT);
		if (left)
			left(arg);
	}
	kg_unlock(l);
}

/* ------------------------------------------------------------------ */
/* WaitGroup                                                           */
/* ------------------------------------------------------------------ */

/*
 * Go's design: one 64-bit word holds the counter (high half) and the
 * number of waiters (low half), so kg_wg_add is a single atomic add unless
 * it takes the counter to zero with waiters present. Waiters register
 * (waiters + 1) and queue their node in one critical section of wg->lock;
 * the adder that sees "counter 0, waiters > 0" takes the lock, so it finds
 * every registered node. Both decisions come from the same atomic word,
 * whose modifications are totally ordered: either the adder sees the
 * waiter, or the waiter sees the zero counter. Waiters are chained through
 * wg->waiters (a stack: they are all released at once).
 */
#define WG_COUNT(v) ((int32_t)((v) >> 32))
#define WG_WAITERS(v) ((uint32_t)(v))

int kg_wg_add(kg_wg_t *wg, int64_t delta)
{
	struct sync_waiter *list;
	uint64_t v, inc;

	kg_note_caller();

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
	kg_lock(OBJ_LOCK(wg));
	list = wg->waiters;
	wg->waiters = NULL;
	/* every registered waiter is on the list: clear their count */
	__atomic_and_fetch(&wg->state, ~(uint64_t)0xffffffff, __ATOMIC_ACQ_REL);
	kg_unlock(OBJ_LOCK(wg));
	/* no timeouts here: each claim succeeds, each waiter waits for it */
	wake_chain(list, true);
	return 0;
}

int kg_wg_done(kg_wg_t *wg)
{
	return kg_wg_add(wg, -1);
}

/* Left behind in kg_wg_wait: off the list and uncounted, if still on it. */
static void wg_abandon(struct kg_co *co, int pass)
{
	kg_wg_t *wg = (kg_wg_t *)co->wait_obj;
	struct sync_waiter *n = co->wait_rec, *p, *prev = NULL;

	if (pass != 0)
		return;
	kg_lock(OBJ_LOCK(wg));
	for (p = wg->waiters; p; prev = p, p = p->next) {
		if (p != n)
			continue;
		if (prev)
			prev->next = n->next;
		else
			wg->waiters = n->next;
		/* under the lock the count is the list's length */
		__atomic_sub_fetch(&wg->state, 1, __ATOMIC_ACQ_REL);
		break;
	}
	kg_unlock(OBJ_LOCK(wg));
}

int kg_wg_wait(kg_wg_t *wg)
{
	struct sync_waiter n;
	uint64_t v;

	kg_note_caller();

	if (!wg)
		return -EINVAL;
	if (WG_COUNT(__atomic_load_n(&wg->state, __ATOMIC_ACQUIRE)) == 0)
		return 0;
	waiter_init(&n);
	kg_lock(OBJ_LOCK(wg));
	v = __atomic_add_fetch(&wg->state, 1, __ATOMIC_ACQ_REL);
	if (WG_COUNT(v) == 0) {
		/* reached zero before we registered: nobody will wake us */
		__atomic_sub_fetch(&wg->state, 1, __ATOMIC_ACQ_REL);
		kg_unlock(OBJ_LOCK(wg));
		return 0;
	}
	n.next = wg->waiters;
	wg->waiters = &n;
	waiter_wait(&n, unlock_obj, OBJ_LOCK(wg), UINT64_MAX,
		    "sync.WaitGroup.Wait", wg, wg_abandon);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Mutex                                                               */
/* ------------------------------------------------------------------ */

/*
 * Go's sync.Mutex state machine, on m->state:
 *   LOCKED    someone holds the mutex (in starvation mode the bit is clear
 *             for the moment between a handoff and the new owner's fixup;
 *             STARVING keeps newcomers out then);
 *   WOKEN     a waiter is awake and competing (or a spinner is about to
 *             be): unlock need not wake another;
 *   STARVING  starvation mode: unlock hands the mutex to the first waiter
 *             and newcomers queue behind it without trying;
 *   waiters   (state >> WAITER_SHIFT) callers counted as waiting: each has
 *             queued, or is about to queue, on the mutex's semaphore.
 * The semaphore (m->sema tokens, m->q waiters, under m->lock) is Go's
 * runtime semaphore: a release wakes the first waiter, or leaves a token
 * for a waiter that counted itself in state but has not queued yet.
 *
 * Invariants: a release is issued only for a waiter counted in state (in
 * normal mode the unlocker uncounts it as it marks WOKEN; in starvation
 * mode the waiter handed the mutex uncounts itself in its fixup), so every
 * token left in m->sema has a counted waiter on its way to take it. In
 * starvation mode an unlock always finds a waiter: the mutex enters it
 * only while locked and with the entering waiter counted, and a waiter
 * handed the mutex as the last one counted leaves it.
 */
#define MUTEX_LOCKED 1u
#define MUTEX_WOKEN 2u
#define MUTEX_STARVING 4u
#define MUTEX_WAITER_SHIFT 3
#define MUTEX_WAITER (1u << MUTEX_WAITER_SHIFT)
#define MUTEX_WAITERS(s) ((s) >> MUTEX_WAITER_SHIFT)
#define STARVATION_NS 1000000ull	/* a waiter waiting longer: starving */
#define SPIN_ROUNDS 4			/* Go's active_spin */
#define SPIN_PAUSES 30			/* Go's active_spin_cnt */

static _Atomic int online_cpus;

/*
 * Spinning makes sense only on a multiprocessor, and for a few rounds:
 * the holder is running elsewhere and likely to let go soon.
 */
static bool can_spin(int round)
{
	int n;

	if (round >= SPIN_ROUNDS)
		return false;
	n = atomic_load_explicit(&online_cpus, memory_order_relaxed);
	if (!n) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);

		n = c > 0 ? (int)c : 1;
		atomic_store_explicit(&online_cpus, n, memory_order_relaxed);
	}
	return n > 1;
}

static void mutex_abandon(struct kg_co *co, int pass);

/* Go's runtime_SemacquireMutex on m->sema: lifo puts a re-waiter first. */
static void mutex_sema_acquire(kg_mutex_t *m, bool lifo)
{
	struct sync_waiter n;

	waiter_init(&n);
	kg_lock(OBJ_LOCK(m));
	if (m->sema) {
		/* a release came before we queued: its token is ours */
		m->sema--;
		kg_unlock(OBJ_LOCK(m));
		return;
	}
	__wq_push(&m->q, &n, lifo);
	waiter_wait(&n, unlock_obj, OBJ_LOCK(m), UINT64_MAX, "sync.Mutex.Lock",
		    m, mutex_abandon);
}

/*
 * Go's runtime_Semrelease on m->sema. handoff (starvation mode): the woken
 * waiter owns the mutex; let it run now instead of this caller going on.
 */
static void mutex_sema_release(kg_mutex_t *m, bool handoff)
{
	struct sync_waiter *n;
	bool co;

	kg_lock(OBJ_LOCK(m));
	n = __wq_grant(&m->q, NULL);
	if (!n)
		m->sema++;
	kg_unlock(OBJ_LOCK(m));
	if (!n)
		return;
	co = n->pk.co != NULL;	/* read before the wake frees n */
	kg_parker_wake(NULL, &n->pk);
	if (handoff && co)
		kg_yield();	/* in our runnext, unless still parking */
}

static void mutex_lock_slow(kg_mutex_t *m)
{
	uint64_t wait_start = 0;
	bool starving = false, awoke = false, lifo;
	int round = 0;
	uint32_t old = __atomic_load_n(&m->state, __ATOMIC_RELAXED), new;

	for (;;) {
		/*
		 * Locked in normal mode: spin a little. Setting WOKEN tells
		 * unlock not to wake a waiter while we are about to take it.
		 * No spinning in starvation mode: the mutex goes to the
		 * first waiter, not to us.
		 */
		if ((old & (MUTEX_LOCKED | MUTEX_STARVING)) == MUTEX_LOCKED &&
		    can_spin(round)) {
			if (!awoke && !(old & MUTEX_WOKEN) &&
			    MUTEX_WAITERS(old) &&
			    __atomic_compare_exchange_n(
				    &m->state, &old, old | MUTEX_WOKEN, false,
				    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				awoke = true;
			for (int i = 0; i < SPIN_PAUSES; i++)
				kg_cpu_relax();
			round++;
			old = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
			continue;
		}
		new = old;
		/* a starving mutex is not ours to take: queue behind */
		if (!(old & MUTEX_STARVING))
			new |= MUTEX_LOCKED;
		if (old & (MUTEX_LOCKED | MUTEX_STARVING))
			new += MUTEX_WAITER;
		/*
		 * Switch to starvation mode, but only while locked: an
		 * unlock in starvation mode must find a waiter to hand to.
		 */
		if (starving && (old & MUTEX_LOCKED))
			new |= MUTEX_STARVING;
		if (awoke) {
			/* we set WOKEN (or were woken with it): clear it */
			if (!(new & MUTEX_WOKEN))
				kg_throw("kg_mutex_lock: woken flag lost "
					 "(state %#x)", old);
			new &= ~MUTEX_WOKEN;
		}
		/* acquire: pairs with the release in kg_mutex_unlock */
		if (!__atomic_compare_exchange_n(&m->state, &old, new, false,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		if (!(old & (MUTEX_LOCKED | MUTEX_STARVING)))
			return;		/* locked it */
		/* waited before: keep our place at the head of the queue */
		lifo = wait_start != 0;
		if (!wait_start)
			wait_start = kg_now_ns();
		mutex_sema_acquire(m, lifo);
		starving = starving ||
			   kg_now_ns() - wait_start > STARVATION_NS;
		old = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
		if (old & MUTEX_STARVING) {
			/*
			 * Handed to us. LOCKED is clear and we are still
			 * counted as a waiter: fix both. Leave starvation
			 * mode if we did not starve or nobody is behind us
			 * (two callers could otherwise hand it back and
			 * forth in starvation mode forever).
			 */
			uint32_t delta = MUTEX_LOCKED - MUTEX_WAITER;

			if ((old & (MUTEX_LOCKED | MUTEX_WOKEN)) ||
			    !MUTEX_WAITERS(old))
				kg_throw("kg_mutex_lock: bad handoff state %#x",
					 old);
			if (!starving || MUTEX_WAITERS(old) == 1)
				delta -= MUTEX_STARVING;
			/* acquire: pairs with the unlocker's release */
			__atomic_add_fetch(&m->state, delta, __ATOMIC_ACQ_REL);
			return;
		}
		awoke = true;
		round = 0;
	}
}

int kg_mutex_lock(kg_mutex_t *m)
{
	uint32_t unlocked = 0;

	kg_note_caller();

	if (!m)
		return -EINVAL;
	/*
	 * Look before the CAS (test and test-and-set): a CAS on a held mutex
	 * fails anyway, and it would take the state's line away from the
	 * holder's CPU, which then waits to get it back for its unlock. A
	 * load shares the line; the slow path spins on loads. Contended (8
	 * coroutines on 2 procs) the pair measured 0.82 of the plain CAS.
	 * acquire (the CAS): pairs with the release in kg_mutex_unlock.
	 */
	if (kg_likely(__atomic_load_n(&m->state, __ATOMIC_RELAXED) == 0 &&
		      __atomic_compare_exchange_n(&m->state, &unlocked,
						  MUTEX_LOCKED, false,
						  __ATOMIC_ACQUIRE,
						  __ATOMIC_RELAXED)))
		return 0;
	mutex_lock_slow(m);
	return 0;
}

int kg_mutex_trylock(kg_mutex_t *m)
{
	uint32_t old;

	kg_note_caller();

	if (!m)
		return -EINVAL;
	old = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
	/* a changing waiter count is no reason to fail: retry the CAS */
	while (!(old & (MUTEX_LOCKED | MUTEX_STARVING))) {
		/* acquire: pairs with the release in kg_mutex_unlock */
		if (__atomic_compare_exchange_n(&m->state, &old,
						old | MUTEX_LOCKED, false,
						__ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return 0;
	}
	return -EBUSY;
}

static void mutex_unlock_slow(kg_mutex_t *m, uint32_t new)
{
	uint32_t old = new;

	if (new & MUTEX_STARVING) {
		/* starvation mode: the first waiter owns it now */
		mutex_sema_release(m, true);
		return;
	}
	for (;;) {
		/*
		 * Nobody to wake, or no need: someone was woken or spins
		 * (WOKEN), took the lock already (LOCKED), or the mutex went
		 * into starvation mode, where the unlocker that sees STARVING
		 * in its own unlock hands over, not us.
		 */
		if (!MUTEX_WAITERS(old) ||
		    (old & (MUTEX_LOCKED | MUTEX_WOKEN | MUTEX_STARVING)))
			return;
		/* the right to wake one: uncount it, mark WOKEN */
		new = (old - MUTEX_WAITER) | MUTEX_WOKEN;
		if (__atomic_compare_exchange_n(&m->state, &old, new, false,
						__ATOMIC_RELAXED,
						__ATOMIC_RELAXED)) {
			mutex_sema_release(m, false);
			return;
		}
	}
}

static int mutex_unlock(kg_mutex_t *m)
{
	uint32_t old = MUTEX_LOCKED, new;

	/* release: pairs with the acquire CAS of the next locker */
	if (kg_likely(__atomic_compare_exchange_n(&m->state, &old, 0, false,
						  __ATOMIC_RELEASE,
						  __ATOMIC_RELAXED)))
		return 0;
	/* not a plain CAS-able unlock: misuse leaves m untouched */
	do {
		if (!(old & MUTEX_LOCKED))
			return -EPERM;
		new = old - MUTEX_LOCKED;
	} while (!__atomic_compare_exchange_n(&m->state, &old, new, false,
					      __ATOMIC_RELEASE,
					      __ATOMIC_RELAXED));
	mutex_unlock_slow(m, new);
	return 0;
}

int kg_mutex_unlock(kg_mutex_t *m)
{
	kg_note_caller();

	if (!m)
		return -EINVAL;
	return mutex_unlock(m);
}

/* A waiter left behind has gone: one fewer counted (under m->lock). */
static void mutex_left(void *arg)
{
	kg_mutex_t *m = arg;
	uint32_t old = __atomic_load_n(&m->state, __ATOMIC_RELAXED), new;

	do {
		new = old - MUTEX_WAITER;
		/*
		 * Starvation mode serves waiters: with none counted (none
		 * handed the mutex either, it would still be counted), an
		 * unlock is a plain one again.
		 */
		if (!MUTEX_WAITERS(new))
			new &= ~MUTEX_STARVING;
	} while (!__atomic_compare_exchange_n(&m->state, &old, new, false,
					      __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
}

/*
 * Left behind in mutex_sema_acquire (see "Left behind"). Pass 0: a queued
 * waiter is withdrawn and uncounted. Pass 1, for one that was not: it was
 * released and never ran. In starvation mode that handed it the mutex: it holds it, as its
 * own fixup would have recorded. In normal mode the unlocker marked WOKEN
 * for it (nobody else sets WOKEN while it is set, and no other wake comes
 * meanwhile): clear it, and wake the next waiter if the unlock that woke
 * it left one to wake.
 */
static void mutex_abandon(struct kg_co *co, int pass)
{
	kg_mutex_t *m = (kg_mutex_t *)co->wait_obj;
	struct sync_waiter *n = co->wait_rec;
	uint32_t old, new, delta;

	if (pass == 0) {
		waiter_withdraw(n, OBJ_LOCK(m), &m->q, mutex_left, m);
		return;
	}
	/* withdrawn in pass 0: nothing was handed to it */
	if (atomic_load_explicit(&n->pk.claim, memory_order_acquire) ==
	    KG_CLAIM_TIMEOUT)
		return;
	old = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
	if (old & MUTEX_STARVING) {
		if ((old & (MUTEX_LOCKED | MUTEX_WOKEN)) || !MUTEX_WAITERS(old))
			kg_throw("kg_run: bad mutex handoff state %#x", old);
		delta = MUTEX_LOCKED - MUTEX_WAITER;
		if (MUTEX_WAITERS(old) == 1)
			delta -= MUTEX_STARVING;
		__atomic_add_fetch(&m->state, delta, __ATOMIC_ACQ_REL);
		return;
	}
	do {
		new = old & ~MUTEX_WOKEN;
	} while (!__atomic_compare_exchange_n(&m->state, &old, new, false,
					      __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	mutex_unlock_slow(m, new);
}

/* ------------------------------------------------------------------ */
/* RWMutex                                                             */
/* ------------------------------------------------------------------ */

/*
 * Go's sync.RWMutex. rw->readers counts readers in or waiting; a writer
 * subtracts RW_MAX_READERS from it, which makes it negative (new readers
 * see that and queue on the reader semaphore) and tells it how many
 * readers are in: it waits on the writer semaphore for that many to
 * leave, counting them down in rw->departing; the last one wakes it. On
 * unlock the writer adds RW_MAX_READERS back and releases the reader
 * semaphore once per reader that queued meanwhile: those readers go in
 * before the next writer, which takes rw->w only after this one let go.
 * Writers among themselves queue on rw->w.
 *
 * Both semaphores live under rw->lock: tokens rsema/wsema for releases
 * that come before their waiter queued, queues rq/wq. The writer queue
 * holds at most one waiter (the holder of rw->w).
 */
#define RW_MAX_READERS (1 << 30)

static void rw_reader_abandon(struct kg_co *co, int pass);
static void rw_writer_abandon(struct kg_co *co, int pass);

static void rw_sema_acquire(kg_rwmutex_t *rw, uint32_t *tokens,
			    struct kg_waitq *q, const char *why,
			    abandon_fn abandon)
{
	struct sync_waiter n;

	waiter_init(&n);
	kg_lock(OBJ_LOCK(rw));
	if (*tokens) {
		(*tokens)--;
		kg_unlock(OBJ_LOCK(rw));
		return;
	}
	__wq_push(q, &n, false);
	waiter_wait(&n, unlock_obj, OBJ_LOCK(rw), UINT64_MAX, why, rw, abandon);
}

/* Release a semaphore count times: to its waiters first, then tokens. */
static void rw_sema_release(kg_rwmutex_t *rw, uint32_t *tokens,
			    struct kg_waitq *q, uint32_t count)
{
	struct sync_waiter *chain;
	uint32_t got;

	kg_lock(OBJ_LOCK(rw));
	got = __wq_grant_many(q, count, &chain, NULL);
	*tokens += count - got;
	kg_unlock(OBJ_LOCK(rw));
	wake_chain(chain, false);
}

int kg_rwmutex_rlock(kg_rwmutex_t *rw)
{
	kg_note_caller();
	if (!rw)
		return -EINVAL;
	/* acquire: pairs with the writer's release when it adds back */
	if (__atomic_add_fetch(&rw->readers, 1, __ATOMIC_ACQ_REL) < 0)
		rw_sema_acquire(rw, &rw->rsema, &rw->rq,	/* a writer */
				"sync.RWMutex.RLock", rw_reader_abandon);
	return 0;
}

int kg_rwmutex_tryrlock(kg_rwmutex_t *rw)
{
	int32_t c;

	kg_note_caller();

	if (!rw)
		return -EINVAL;
	c = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED);
	while (c >= 0) {
		/* acquire: pairs with the writer's release when it adds back */
		if (__atomic_compare_exchange_n(&rw->readers, &c, c + 1, false,
						__ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return 0;
	}
	return -EBUSY;
}

int kg_rwmutex_runlock(kg_rwmutex_t *rw)
{
	int32_t c;

	kg_note_caller();

	if (!rw)
		return -EINVAL;
	c = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED);
	do {
		/*
		 * 0: nobody in; -RW_MAX_READERS: only a writer. (A count
		 * that includes waiting readers cannot tell them from the
		 * ones in: that misuse goes unseen, as in Go.)
		 */
		if (c == 0 || c == -RW_MAX_READERS)
			return -EPERM;
		/* release: pairs with the writer's acquire subtraction */
	} while (!__atomic_compare_exchange_n(&rw->readers, &c, c - 1, false,
					      __ATOMIC_RELEASE,
					      __ATOMIC_RELAXED));
	/*
	 * A writer waits for the readers that were in when it came: the
	 * last of them wakes it. acq_rel: orders this reader's critical
	 * section before the writer's (pairs with the writer's add).
	 */
	if (c - 1 < 0 &&
	    __atomic_sub_fetch(&rw->departing, 1, __ATOMIC_ACQ_REL) == 0)
		rw_sema_release(rw, &rw->wsema, &rw->wq, 1);
	return 0;
}

int kg_rwmutex_lock(kg_rwmutex_t *rw)
{
	int32_t r;

	kg_note_caller();

	if (!rw)
		return -EINVAL;
	kg_mutex_lock(&rw->w);
	/* announce the writer: readers from now on queue */
	r = __atomic_sub_fetch(&rw->readers, RW_MAX_READERS, __ATOMIC_ACQ_REL) +
	    RW_MAX_READERS;
	/*
	 * Wait for the r readers in to leave; the ones that left since the
	 * subtraction already counted departing down below zero.
	 */
	if (r && __atomic_add_fetch(&rw->departing, r, __ATOMIC_ACQ_REL))
		rw_sema_acquire(rw, &rw->wsema, &rw->wq, "sync.RWMutex.Lock",
				rw_writer_abandon);
	return 0;
}

int kg_rwmutex_trylock(kg_rwmutex_t *rw)
{
	int32_t zero = 0;

	kg_note_caller();

	if (!rw)
		return -EINVAL;
	if (kg_mutex_trylock(&rw->w))
		return -EBUSY;
	/* acquire: pairs with the last reader's release */
	if (!__atomic_compare_exchange_n(&rw->readers, &zero, -RW_MAX_READERS,
					 false, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED)) {
		kg_mutex_unlock(&rw->w);
		return -EBUSY;
	}
	return 0;
}

int kg_rwmutex_unlock(kg_rwmutex_t *rw)
{
	int32_t c, r;

	kg_note_caller();

	if (!rw)
		return -EINVAL;
	c = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED);
	do {
		/* not negative: no writer in (a waiting one goes unseen) */
		if (c >= 0)
			return -EPERM;
		/* release: pairs with the readers' acquire add */
	} while (!__atomic_compare_exchange_n(&rw->readers, &c,
					      c + RW_MAX_READERS, false,
					      __ATOMIC_RELEASE,
					      __ATOMIC_RELAXED));
	/* the readers that came while we were in are queued (or queuing) */
	r = c + RW_MAX_READERS;
	if (r)
		rw_sema_release(rw, &rw->rsema, &rw->rq, (uint32_t)r);
	kg_mutex_unlock(&rw->w);
	return 0;
}

/* A reader left behind in the queue: no longer among the readers. */
static void rw_reader_left(void *arg)
{
	kg_rwmutex_t *rw = arg;

	__atomic_sub_fetch(&rw->readers, 1, __ATOMIC_ACQ_REL);
}

/*
 * Left behind in kg_rwmutex_rlock behind a writer (see "Left behind"):
 * withdrawn and uncounted, so the writer's unlock releases one token
 * fewer. A reader let in already holds its read lock.
 */
static void rw_reader_abandon(struct kg_co *co, int pass)
{
	kg_rwmutex_t *rw = (kg_rwmutex_t *)co->wait_obj;

	if (pass == 0)
		waiter_withdraw(co->wait_rec, OBJ_LOCK(rw), &rw->rq,
				rw_reader_left, rw);
}

/*
 * Left behind in kg_rwmutex_lock, waiting for the readers in to leave
 * (see "Left behind"). Pass 0 withdraws it. Pass 1: if the last reader
 * let it in, it holds the write lock. If it was withdrawn, undo its
 * announcement: readers = the ones in (departing counts them) plus the
 * ones queued behind it; those in now leave without counting departing
 * down, those queued go in, and the writers' mutex is free again.
 */
static void rw_writer_abandon(struct kg_co *co, int pass)
{
	kg_rwmutex_t *rw = (kg_rwmutex_t *)co->wait_obj;
	struct sync_waiter *n = co->wait_rec;
	int32_t c, in;

	if (pass == 0) {
		waiter_withdraw(n, OBJ_LOCK(rw), &rw->wq, NULL, NULL);
		return;
	}
	if (atomic_load_explicit(&n->pk.claim, memory_order_acquire) !=
	    KG_CLAIM_TIMEOUT)
		return;
	c = __atomic_add_fetch(&rw->readers, RW_MAX_READERS, __ATOMIC_ACQ_REL);
	in = __atomic_exchange_n(&rw->departing, 0, __ATOMIC_ACQ_REL);
	if (c > in)
		rw_sema_release(rw, &rw->rsema, &rw->rq, (uint32_t)(c - in));
	mutex_unlock(&rw->w);
}

/* ------------------------------------------------------------------ */
/* Cond                                                                */
/* ------------------------------------------------------------------ */

/*
 * A waiter queues itself on c->q before it unlocks m, so a signal sent by
 * whoever takes m next finds it: "unlock and start waiting" is one step
 * for every signaller that holds m (Go gets the same from its notify list
 * tickets). Queued while still running is fine: a signal that claims the
 * parker before the waiter parked is seen by its park commit (wait.c), so
 * the commit releases nothing (unlock_nothing) and c->lock is not held
 * across the unlock of m, which may itself wake someone or yield.
 * Signals claim the longest waiter that has not timed out; a timed-out
 * waiter removes itself. Nothing but c->q is shared, so a signal from a
 * caller that does not hold m is as good as Go's.
 */
/* Left behind in kg_cond_wait: withdrawn; a signal it got is spent. */
static void cond_abandon(struct kg_co *co, int pass)
{
	kg_cond_t *c = (kg_cond_t *)co->wait_obj;

	if (pass == 0)
		waiter_withdraw(co->wait_rec, OBJ_LOCK(c), &c->q, NULL, NULL);
}

static int cond_wait(kg_cond_t *c, kg_mutex_t *m, uint64_t deadline)
{
	struct sync_waiter n;
	bool granted;
	int err;

	if (!c || !m)
		return -EINVAL;
	if (!(__atomic_load_n(&m->state, __ATOMIC_RELAXED) & MUTEX_LOCKED))
		return -EPERM;
	waiter_init(&n);
	/* a coroutine's timer is armed before any lock (heap lock first) */
	err = kg_parker_arm(&n.pk, deadline);
	if (err)
		return err;
	kg_lock(OBJ_LOCK(c));
	__wq_push(&c->q, &n, false);
	kg_unlock(OBJ_LOCK(c));
	if (kg_mutex_unlock(m)) {
		/*
		 * m was unlocked behind our back between the check and now
		 * (misuse by two parties). Withdraw; a signal that claimed us
		 * meanwhile is passed on to the next waiter.
		 */
		if (kg_parker_claim(&n.pk, KG_CLAIM_TIMEOUT))
			kg_parker_done(&n.pk);
		else	/* a signal or our timer won: it wakes us */
			waiter_wait(&n, unlock_nothing, NULL, UINT64_MAX,
				    "sync.Cond.Wait", c, cond_abandon);
		if (waiter_finish(&n, OBJ_LOCK(c), &c->q, NULL, NULL))
			kg_cond_signal(c);
		return -EPERM;
	}
	waiter_wait(&n, unlock_nothing, NULL, deadline, "sync.Cond.Wait", c,
		    cond_abandon);
	granted = waiter_finish(&n, OBJ_LOCK(c), &c->q, NULL, NULL);
	kg_mutex_lock(m);
	return granted ? 0 : -ETIMEDOUT;
}

int kg_cond_wait(kg_cond_t *c, kg_mutex_t *m)
{
	return cond_wait(c, m, UINT64_MAX);
}

int kg_cond_wait_timeout(kg_cond_t *c, kg_mutex_t *m, uint64_t ns)
{
	kg_note_caller();
	return cond_wait(c, m, kg_deadline(kg_now_ns(), ns));
}

static int cond_wake(kg_cond_t *c, uint32_t max)
{
	struct sync_waiter *chain;

	if (!c)
		return -EINVAL;
	kg_lock(OBJ_LOCK(c));
	__wq_grant_many(&c->q, max, &chain, NULL);
	kg_unlock(OBJ_LOCK(c));
	wake_chain(chain, false);
	return 0;
}

int kg_cond_signal(kg_cond_t *c)
{
	kg_note_caller();
	return cond_wake(c, 1);
}

int kg_cond_broadcast(kg_cond_t *c)
{
	kg_note_caller();
	return cond_wake(c, UINT32_MAX);
}

/* ------------------------------------------------------------------ */
/* Once                                                                */
/* ------------------------------------------------------------------ */

/*
 * Go's sync.Once: done is set only after fn returns, so a caller that
 * sees it can skip the mutex; the others take the mutex, which orders
 * them after the one call of fn.
 */
int kg_once(kg_once_t *once, void (*fn)(void *), void *arg)
{
	kg_note_caller();
	if (!once || !fn)
		return -EINVAL;
	/* acquire: pairs with the release store below (fn's effects) */
	if (kg_likely(__atomic_load_n(&once->done, __ATOMIC_ACQUIRE)))
		return 0;
	kg_mutex_lock(&once->m);
	if (!__atomic_load_n(&once->done, __ATOMIC_RELAXED)) {
		fn(arg);
		/* release: pairs with the fast path's acquire load */
		__atomic_store_n(&once->done, 1, __ATOMIC_RELEASE);
	}
	kg_mutex_unlock(&once->m);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Semaphore                                                           */
/* ------------------------------------------------------------------ */

/*
 * s->state holds the free tokens (low 32 bits) and the number of queued
 * waiters (high 32 bits). Invariant: tokens == 0 or waiters == 0. Tokens
 * grow only by a CAS that sees no waiters; a caller queues (waiters + 1)
 * only by a CAS that sees no tokens; so a token is never left free while
 * someone waits for one, and FIFO order cannot be overtaken: with waiters
 * queued there is no free token for a newcomer to take, a release hands
 * its token to the first waiter directly. The waiter count changes only
 * under s->lock and equals the length of s->q there, so a releaser that
 * saw waiters finds them once it holds the lock.
 */
#define SEM_TOKENS(v) ((uint32_t)(v))
#define SEM_WAITERS(v) ((uint32_t)((v) >> 32))
#define SEM_WAITER (1ull << 32)

int kg_sem_init(kg_sem_t *s, int32_t n)
{
	if (!s || n < 0)
		return -EINVAL;
	*s = (kg_sem_t)KG_SEM_INIT(n);
	return 0;
}

/* Take a free token if no one is queued; false if none. */
static bool sem_take(kg_sem_t *s)
{
	uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);

	while (SEM_TOKENS(v) && !SEM_WAITERS(v)) {
		/* acquire: pairs with the releaser's release CAS */
		if (__atomic_compare_exchange_n(&s->state, &v, v - 1, false,
						__ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return true;
	}
	return false;
}

/* The timed-out waiter removed itself: one fewer queued (under s->lock). */
static void sem_left(void *arg)
{
	kg_sem_t *s = arg;

	__atomic_sub_fetch(&s->state, SEM_WAITER, __ATOMIC_RELAXED);
}

/* Left behind in a semaphore's queue: withdrawn; a token it got is its. */
static void sem_abandon(struct kg_co *co, int pass)
{
	kg_sem_t *s = (kg_sem_t *)co->wait_obj;

	if (pass == 0)
		waiter_withdraw(co->wait_rec, OBJ_LOCK(s), &s->q, sem_left, s);
}

static int sem_acquire(kg_sem_t *s, uint64_t deadline)
{
	struct sync_waiter n;
	uint64_t v;
	int err;

	if (sem_take(s))
		return 0;
	waiter_init(&n);
	/* a coroutine's timer is armed before any lock (heap lock first) */
	err = kg_parker_arm(&n.pk, deadline);
	if (err)
		return err;
	kg_lock(OBJ_LOCK(s));
	v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
	for (;;) {
		if (SEM_TOKENS(v) && !SEM_WAITERS(v)) {
			/* acquire: pairs with the releaser's release CAS */
			if (__atomic_compare_exchange_n(&s->state, &v, v - 1,
							false, __ATOMIC_ACQUIRE,
							__ATOMIC_RELAXED)) {
				kg_unlock(OBJ_LOCK(s));
				kg_parker_done(&n.pk);
				return 0;
			}
			continue;
		}
		/*
		 * No free token: count ourselves queued. A releaser's CAS
		 * that would add a token fails on this change and takes the
		 * lock, behind us.
		 */
		if (__atomic_compare_exchange_n(&s->state, &v, v + SEM_WAITER,
						false, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			break;
	}
	__wq_push(&s->q, &n, false);
	waiter_wait(&n, unlock_obj, OBJ_LOCK(s), deadline, "semacquire", s,
		    sem_abandon);
	return waiter_finish(&n, OBJ_LOCK(s), &s->q, sem_left, s) ? 0
								  : -ETIMEDOUT;
}

int kg_sem_acquire(kg_sem_t *s)
{
	kg_note_caller();
	if (!s)
		return -EINVAL;
	return sem_acquire(s, UINT64_MAX);
}

int kg_sem_tryacquire(kg_sem_t *s)
{
	kg_note_caller();
	if (!s)
		return -EINVAL;
	return sem_take(s) ? 0 : -EAGAIN;
}

int kg_sem_acquire_timeout(kg_sem_t *s, uint64_t ns)
{
	kg_note_caller();
	if (!s)
		return -EINVAL;
	if (!ns)
		return sem_take(s) ? 0 : -EAGAIN;
	return sem_acquire(s, kg_deadline(kg_now_ns(), ns));
}

/* Add a free token if nobody is queued: 1 done, 0 waiters, -EOVERFLOW. */
static int sem_put(kg_sem_t *s)
{
	uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);

	while (!SEM_WAITERS(v)) {
		if (SEM_TOKENS(v) >= INT32_MAX)
			return -EOVERFLOW;
		/* release: pairs with the taker's acquire CAS */
		if (__atomic_compare_exchange_n(&s->state, &v, v + 1, false,
						__ATOMIC_RELEASE,
						__ATOMIC_RELAXED))
			return 1;
	}
	return 0;
}

int kg_sem_release(kg_sem_t *s)
{
	struct sync_waiter *n;
	uint32_t dropped = 0;
	int r;

	kg_note_caller();

	if (!s)
		return -EINVAL;
	r = sem_put(s);
	if (r)
		return r < 0 ? r : 0;
	kg_lock(OBJ_LOCK(s));
	n = __wq_grant(&s->q, &dropped);
	if (n)
		dropped++;	/* the granted one leaves the queue too */
	/*
	 * Under the lock the waiter count is q's length: uncount the ones
	 * taken off. Waiters that timed out and were dropped return no
	 * token; the granted one takes ours. The token passes through the
	 * claim CAS and the wake (acq_rel/release), not through state.
	 */
	if (dropped)
		__atomic_sub_fetch(&s->state, dropped * SEM_WAITER,
				   __ATOMIC_RELAXED);
	r = n ? 1 : sem_put(s);	/* none granted: q is empty now */
	kg_unlock(OBJ_LOCK(s));
	if (n)
		kg_parker_wake(NULL, &n->pk);
	return r < 0 ? r : 0;
}
