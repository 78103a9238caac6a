/* SPDX-License-Identifier: MIT */
/*
 * handoff.h - how a proc changes hands (handoff.c, whose opening essay
 * is the protocol): the worker's slot shared with the kernel side, owning
 * and losing procs, idle procs, parked and standby workers, worker
 * threads, and the handoff statistics.
 */
#ifndef KG_HANDOFF_H
#define KG_HANDOFF_H

#include "backend.h"
#include "context.h"

/*
 * Entering and leaving scheduler code: in_sched, with a relaxed store (a
 * plain mov) and a compiler barrier to enter, a release store to leave.
 * A worker touches its proc's queues only between the two. The kernel
 * side reads the slot only on this worker's CPU, while this worker is
 * switched out or interrupted, so program
 * order is all that is needed (the rseq argument). The barrier keeps the
 * compiler from moving scheduler memory accesses across the flag. Atomic
 * rather than volatile because sysmon reads it from another thread
 * (kg_detach_rule): a racy read by design, which must not be a data race.
 */
static inline void kg_enter_sched(struct kg_worker *w)
{
	__atomic_store_n(&w->slot->in_sched, 1, __ATOMIC_RELAXED);
	kg_barrier();
}

static inline void kg_leave_sched(struct kg_worker *w)
{
#ifdef KG_TSAN
	/*
	 * From here the kernel side may detach the proc and a spare take it:
	 * the owner's writes to the proc happen before, through the kernel's
	 * compare-and-swap, which ThreadSanitizer cannot see. Say so.
	 */
	if (w->proc)
		__tsan_release(w->proc);
#endif
	/*
	 * release (a plain mov on x86, stlr on arm64): what the worker wrote
	 * to its proc in scheduler code is visible to whoever reads in_sched
	 * 0 with acquire and then takes the proc from another CPU (sysmon's
	 * slice: sysmon.c). The kernel sides read on this CPU and need none.
	 */
	__atomic_store_n(&w->slot->in_sched, 0, __ATOMIC_RELEASE);
}

bool kg_proc_taken(struct kg_worker *w);
void kg_slice_back(struct kg_worker *w);

/*
 * The kernel side (or sysmon) took w's proc while its coroutine blocked
 * or ran past its time slice. One relaxed load and one test on the fast
 * path: KG_PROC_NONE and sysmon's question (KG_PROC_ASK) share the bit,
 * and kg_proc_taken answers the question.
 */
static inline bool kg_proc_lost(struct kg_worker *w)
{
	return kg_unlikely(__atomic_load_n(&w->slot->proc, __ATOMIC_RELAXED) &
			   KG_PROC_ASK) &&
	       kg_proc_taken(w);
}

/* Let go of the lost proc (once per loss): w runs its coroutine without one. */
static inline void kg_proc_forget(struct kg_worker *w)
{
	if (w->proc) {
		w->proc = NULL;
		atomic_fetch_add(&w->lost_handled, 1);
		kg_slice_back(w);
	}
}

/*
 * Debug and sanitizer builds check at every scheduling decision that the
 * proc the worker uses is still its own: a proc run by two workers at
 * once (a broken handoff) throws instead of corrupting queues.
 */
static inline void kg_proc_check(struct kg_worker *w, struct kg_proc *p)
{
#ifdef KG_DEBUG_RCU
	__u32 owner = __atomic_load_n(&p->slot->owner, __ATOMIC_RELAXED);

	if (kg_unlikely(owner != w->index))
		kg_throw("proc %u is used by worker %u but owned by %u",
			 p->index, w->index, owner);
#else
	(void)w;
	(void)p;
#endif
}

/* DETACHED -> w (CAS); throws if p is owned. */
void kg_proc_acquire(struct kg_worker *w, struct kg_proc *p);
/* w -> DETACHED (CAS); w->proc becomes NULL. */
void kg_proc_release(struct kg_worker *w);
/* Forget a lost proc and take an idle one: false if none is idle. */
bool kg_proc_regain(struct kg_worker *w);

/* Idle procs. __: the caller holds rt.lock. */
void __kg_pidle_put(struct kg_rt *rt, struct kg_proc *p);
struct kg_proc *__kg_pidle_get(struct kg_rt *rt);
struct kg_proc *kg_pidle_get(struct kg_rt *rt);

/*
 * Start a worker on proc p: a parked one if any, else a new thread.
 * Caller holds rt.lock. On failure p goes back to the idle list.
 * spinning: the worker counts in rt.nspinning (kg_wakep's).
 */
void __kg_startm(struct kg_rt *rt, struct kg_proc *p, bool spinning);
/*
 * Park w (no proc) until it is handed one, a timer may be due, until
 * passes, a descriptor waited on is ready, or the runtime is done. On
 * return w holds a proc if it was handed one. Returns the coroutines the
 * poller found ready (kg_co.next list; the caller makes them runnable).
 */
struct kg_co *kg_park_worker(struct kg_worker *w, uint64_t until);
/* Nudge a parked timer watcher to re-read the timer heaps. */
void kg_kick_watcher(struct kg_worker *w);
/* End the runtime: every worker stops at its next scheduler entry. */
void kg_rt_finish(struct kg_rt *rt);
/* Workers running a coroutine without their proc (taken while blocked). */
uint32_t kg_workers_out(struct kg_rt *rt);

/* A worker record (index, slot) for rt, not started yet; NULL at the cap. */
struct kg_worker *kg_worker_new(struct kg_rt *rt);
/* Start w's thread, to take proc p (NULL: look for one); 0 or an errno. */
int kg_worker_start(struct kg_worker *w, struct kg_proc *p, bool spinning);
/* Start the first standby and wait (bounded) until it waits. */
void kg_start_standby(struct kg_rt *rt);

/*
 * Count a handoff of blocked worker from's proc that took ns (from the
 * block or the kernel's detach to the proc moving on).
 */
void kg_handoff_seen(struct kg_rt *rt, struct kg_worker *from, uint64_t ns);
/* Hand proc p (detached from its blocked worker) to a parked or new
 * worker: sysmon.c's retake. */
void kg_handoff_proc(struct kg_rt *rt, struct kg_proc *p);
void kg_strand_wake(struct kg_rt *rt);

/*
 * Work was queued where no proc may run it (no proc idle, or a timer on
 * a proc its caller does not hold). If every proc is held by a worker
 * asleep in the kernel since before the work came (an idle block: the
 * kernel side left the proc with it, having nothing to hand on), only the
 * monitor's strand watch (sysmon.c) can move one: wake it unless it
 * watches already, one relaxed load in the common case of a busy
 * runtime. The caller has made the work visible and executed a seq_cst
 * fence (as for kg_wakep).
 */
static inline void kg_strand_kick(struct kg_rt *rt)
{
	if (!atomic_load_explicit(&rt->strand_armed, memory_order_relaxed))
		kg_strand_wake(rt);
}
/*
 * Take proc pi from worker w, which holds it and whose slot's switch count
 * read seen, from another thread: the membarrier handshake (handoff.c).
 * slice: the take ends a time slice (counted in preempts and slice_out);
 * else it is a blocked worker's. true if taken and handed on.
 */
bool kg_proc_ask_take(struct kg_rt *rt, struct kg_worker *w, uint32_t pi,
		      uint64_t seen, bool slice);
/* The q-th quantile (0..1) of the handoff latencies, in ns. */
uint64_t kg_handoff_quantile(struct kg_rt *rt, double q);

#endif /* KG_HANDOFF_H */
