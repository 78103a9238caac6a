/* SPDX-License-Identifier: MIT */
/*
 * wait.h - how a coroutine or a plain thread waits for a channel or a sync
 * object (wait.c, whose essay explains the parker), and kg_sleep's timers.
 */
#ifndef KG_WAIT_H
#define KG_WAIT_H

#include "sched.h"

/*
 * A parker: one blocking operation of one coroutine or plain thread (a
 * channel op, a select over many cases, a sync wait). It lives on the
 * waiter's stack for the duration of the call.
 *
 * claim decides who completes the operation: 0 while open; whoever moves
 * it from 0 (compare-and-swap) owns the outcome: a channel operation
 * (case index + 1), the timeout (KG_CLAIM_TIMEOUT) or a sync object's
 * grant. Exactly one CAS succeeds, so exactly one case of a select
 * happens. The winner transfers the value, then calls kg_parker_wake.
 *
 * state is the wake handshake (and a plain thread's futex word):
 * PARKING from kg_parker_wait's start until the coroutine is switched out
 * and the caller's locks are released (the park commit); PARKED after;
 * WOKEN once the winner called kg_parker_wake. Whichever of the commit
 * and the winner comes second makes the coroutine runnable, so a winner
 * that comes early (a timer firing before the commit) never resumes a
 * coroutine whose registers are not saved yet.
 */
#define KG_CLAIM_TIMEOUT 0xffffffffu
enum { KG_PK_PARKING = 0, KG_PK_PARKED = 1, KG_PK_WOKEN = 2 };

struct kg_parker {
	_Atomic uint32_t claim;
	_Atomic uint32_t state;
	struct kg_co *co;		/* NULL: a plain thread */
	struct kg_rt *rt;		/* runtime of co, or the running one */
	struct kg_timer timer;		/* coroutines' deadline */
	bool timer_armed;
};

/* Set pk up for the calling coroutine or thread. */
void kg_parker_init(struct kg_parker *pk);
static inline bool kg_parker_claim(struct kg_parker *pk, uint32_t who)
{
	uint32_t open = 0;

	/* acq_rel: the winner sees the waiter's setup (elem pointers) and
	 * the waiter, woken, sees what the winner wrote before waking it */
	return atomic_compare_exchange_strong_explicit(
		&pk->claim, &open, who, memory_order_acq_rel,
		memory_order_acquire);
}
/*
 * For a coroutine with a deadline: arm the timeout before taking the locks
 * kg_parker_wait will release (a heap lock may not be taken under a
 * channel lock). 0, or -ENOMEM.
 */
int kg_parker_arm(struct kg_parker *pk, uint64_t deadline);
/*
 * Wait until claimed and woken. unlock(arg) releases the caller's locks
 * once the waiter is committed (a coroutine: after it is switched out).
 * A plain thread with a deadline claims KG_CLAIM_TIMEOUT itself when it
 * passes. On return the claim is final; a coroutine's timer is disarmed.
 */
void kg_parker_wait(struct kg_parker *pk, void (*unlock)(void *), void *arg,
		    uint64_t deadline);
/* After a successful claim and the value transfer: resume the waiter.
 * w: the calling worker when in scheduler mode (timer callbacks), else
 * NULL. Does not touch pk after the waiter may have resumed. */
void kg_parker_wake(struct kg_worker *w, struct kg_parker *pk);
/* Disarm the timeout of an operation that finished without waiting. */
void kg_parker_done(struct kg_parker *pk);

/* Say why co (may be NULL) is about to wait, for reports. */
static inline void kg_co_waiting(struct kg_co *co, const char *why,
				 const void *obj)
{
	if (co) {
		co->wait_reason = why;
		co->wait_obj = obj;
	}
}

#endif /* KG_WAIT_H */
