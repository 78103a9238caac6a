/* SPDX-License-Identifier: MIT */
/*
 * sched.h - the scheduler (sched.c), as the layers above it use it:
 * making coroutines runnable, parking them, arming timers, and the entry
 * check every public channel and sync call makes.
 */
#ifndef KG_SCHED_H
#define KG_SCHED_H

#include "deadlock.h"
#include "handoff.h"

/* What a worker does right after switching away from a coroutine: see
 * kg_after_fn (rt.h). */

/*
 * Make co runnable on w's proc (the global queue if w has none). next:
 * put it in runnext (a wake-up or a spawn runs soon, on the waker's proc,
 * as in Go). Caller is in scheduler mode on w.
 */
void kg_ready(struct kg_worker *w, struct kg_co *co, bool next);
/* Make a parked coroutine runnable from any thread (worker or not). */
void kg_wake(struct kg_co *co);
/* Park the calling coroutine; commit(w, co, arg) runs once it is out. */
void kg_sched_park(kg_after_fn commit, void *arg);
/* Wake an idle proc to look for work, unless a worker already spins. */
void kg_wakep(struct kg_rt *rt);
/* sysmon retook the calling coroutine's worker's proc: go through the
 * scheduler now (an idle proc, or the global queue). */
void kg_sched_lost(struct kg_worker *w);
void kg_proc_lost_slow(struct kg_worker *w);

/*
 * Arm t (fn, arg set) for deadline when on the calling worker's proc's heap
 * (procs[0]'s from a thread outside the runtime), and make sure some
 * worker will fire it in time. 0, or -ENOMEM.
 */
int kg_timer_start(struct kg_rt *rt, struct kg_timer *t, uint64_t when);
/*
 * A timer for when was put on one of rt's heaps: wake or kick a watcher;
 * held: the caller holds that heap's proc (else kick the strand watch).
 */
void kg_timer_notify(struct kg_rt *rt, uint64_t when, bool held);

/* Spawn fn(arg) from scheduler mode on w (a timer callback). */
long kg_spawn_sched(struct kg_worker *w, void (*fn)(void *), void *arg);

/* The body of every worker thread (rt->worker_body). */
void kg_worker_loop(struct kg_worker *w);
/* main's coroutine, allocated on p (not queued); NULL: no memory. */
struct kg_co *kg_main_make(struct kg_rt *rt, struct kg_proc *p,
			   void (*fn)(void *), void *arg);
/* Queue co on p, which no worker owns yet (kg_run). */
void kg_runq_put(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co);

/*
 * At the entry of every channel and sync call (never with a lock held):
 * note a plain thread as a possible waker (deadlock.c); and, Go's
 * exitsyscall deferred to where the runtime can see it, send a coroutine
 * whose worker's proc the kernel side took while it blocked through the
 * scheduler before it goes on, so that it runs procless only until its
 * next kgreen call.
 */
static inline void kg_note_caller(void)
{
	struct kg_worker *w = kg_tls_worker;

	if (kg_unlikely(!w))
		kg_foreign_note();
	else if (kg_unlikely(kg_proc_lost(w)))
		kg_proc_lost_slow(w);
}

#endif /* KG_SCHED_H */
