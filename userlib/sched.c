// SPDX-License-Identifier: MIT
/*
 * sched.c - the M:N coroutine scheduler: run queues, switching, spawn,
 * and finding work.
 *
 * The problem: run many coroutines on a few OS threads so that each thread
 * switches between coroutines in nanoseconds, idle threads burn no CPU, and
 * a thread that blocks in the kernel can lose its queue of coroutines to
 * another thread without the running thread taking any lock on its fast
 * path.
 *
 * The shape is Go's (runtime/proc.go): a coroutine (G) runs on a worker
 * thread (M) that holds a proc (P). A proc owns a local run queue, a
 * runnext slot and a timer heap; there are KGREEN_PROCS procs. A worker
 * must hold a proc to run coroutines; idle procs sit on rt.idle_procs,
 * parked workers on rt.idle_workers, and spares (workers without a proc)
 * are simply parked workers. How a proc changes hands (and how a worker
 * whose proc the kernel side took comes back) is handoff.c's; this file
 * decides when.
 *
 * Rejected approaches: one global locked queue (every switch contends on
 * one cache line); a scheduler context between every two coroutines (two
 * stack switches per yield instead of one); a monitor thread as the way
 * to notice blocked workers (it sees only calls marked as blocking, and
 * only after a delay: sysmon.c is that scheme, Go's, kept for machines
 * where the kernel cannot tell us).
 *
 * Chosen:
 *  1. Switches go directly from coroutine to coroutine. The scheduler's own
 *     context (g0, on the worker thread's stack) is used only when the
 *     worker has nothing to run and must steal or park.
 *  2. A coroutine that switches away is published (requeued, put on a
 *     timer, freed) only after its registers are saved: it leaves a
 *     post-switch action in kg_worker.after, which the next context on that
 *     worker runs first (finish_switch). One mechanism serves yield, park
 *     and exit, and no worker can ever resume a half-saved coroutine.
 *  3. Work placement as in Go: a woken or spawned coroutine goes to the
 *     waker's proc (runnext), an idle proc is woken only if no worker is
 *     already spinning (kg_wakep), and a spinning worker that finds work
 *     wakes the next one. Steal half of a victim's queue; check the global
 *     queue every 61st schedule for fairness.
 *  4. Every entry into scheduler code marks the worker's slot (in_sched,
 *     kg_enter_sched) and checks whether the kernel side took its proc
 *     meanwhile (kg_proc_lost): if so the coroutine takes an idle proc or
 *     goes to the global queue, and its worker becomes a spare (lost_proc,
 *     Go's exitsyscall).
 *
 * Invariants:
 *  - A RUNNABLE coroutine is on exactly one queue; a RUNNING one is some
 *    worker's cur; a WAITING one is owned by what will wake it.
 *  - Only the worker holding a proc pushes to its ring and runs its
 *    post-switch actions; it does so with in_sched == 1.
 *  - rt.lock is never held across a switch or a futex wait.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "netpoll.h"
#include "sched.h"
#include "stack.h"
#include "timer.h"

static _Atomic long next_co_id;

#define SPIN_NS 20000		/* how long an idle worker looks before parking */
#define STEAL_TRIES 4
#define RUNNEXT_GRACE_NS 3000	/* before a thief takes a proc's runnext */
#define GLOBAL_FAIRNESS 61
#define SPAWN_DRAIN 16		/* queued ones a stackless kg_go yields to */

/* ------------------------------------------------------------------ */
/* Run queues                                                          */
/* ------------------------------------------------------------------ */

/*
 * Global queue: a ring of pointers that grows by doubling, so that moving
 * coroutines in and out touches no coroutine memory (a list threaded
 * through them would cost a cache miss per coroutine, serialized). Only
 * if the ring cannot grow (no memory) do coroutines go on an overflow list
 * linked through kg_co.next, so that nothing is ever lost. Caller holds
 * rt->lock.
 */
static bool __gq_grow(struct kg_global_queue *q)
{
	size_t cap = q->cap ? q->cap * 2 : 1024, i;
	struct kg_co **v = malloc(cap * sizeof(*v));

	if (!v)
		return false;
	for (i = 0; i < q->rn; i++)
		v[i] = q->v[(q->head + i) & (q->cap - 1)];
	free(q->v);
	q->v = v;
	q->cap = cap;
	q->head = 0;
	return true;
}

static void __gq_push(struct kg_rt *rt, struct kg_co *co)
{
	struct kg_global_queue *q = &rt->gq;

	if (!q->otail && (q->rn < q->cap || __gq_grow(q))) {
		q->v[(q->head + q->rn) & (q->cap - 1)] = co;
		q->rn++;
	} else {
		co->next = NULL;
		if (q->otail)
			q->otail->next = co;
		else
			q->ohead = co;
		q->otail = co;
	}
	kg_store_relaxed(GQ_LEN(rt), kg_load_relaxed(GQ_LEN(rt)) + 1);
}

static struct kg_co *__gq_pop(struct kg_rt *rt)
{
	struct kg_global_queue *q = &rt->gq;
	struct kg_co *co;

	if (q->rn) {
		co = q->v[q->head];
		q->head = (q->head + 1) & (q->cap - 1);
		q->rn--;
	} else if (q->ohead) {
		co = q->ohead;
		q->ohead = co->next;
		if (!q->ohead)
			q->otail = NULL;
	} else {
		return NULL;
	}
	kg_store_relaxed(GQ_LEN(rt), kg_load_relaxed(GQ_LEN(rt)) - 1);
	return co;
}

static void gq_put(struct kg_rt *rt, struct kg_co *co)
{
	pthread_mutex_lock(&rt->lock);
	__gq_push(rt, co);
	pthread_mutex_unlock(&rt->lock);
}

/*
 * Local ring full: move half of it plus co to the global queue, so that
 * other procs can take it. Fails if thieves changed head meanwhile.
 */
static bool runq_put_slow(struct kg_rt *rt, struct kg_proc *p,
			  struct kg_co *co, uint32_t h, uint32_t t)
{
	struct kg_co *batch[KG_RUNQ_SIZE / 2 + 1];
	uint32_t n = (t - h) / 2, i;

	for (i = 0; i < n; i++)
		batch[i] = atomic_load_explicit(&p->runq[(h + i) % KG_RUNQ_SIZE],
						memory_order_relaxed);
	/* release: the slots we read are given back for the owner to reuse */
	if (!atomic_compare_exchange_strong_explicit(RQ_HEAD(p), &h, h + n,
						     memory_order_release,
						     memory_order_relaxed))
		return false;
	batch[n] = co;
	pthread_mutex_lock(&rt->lock);
	for (i = 0; i <= n; i++)
		__gq_push(rt, batch[i]);
	pthread_mutex_unlock(&rt->lock);
	return true;
}

/*
 * Thieves take from a proc's runnext and ring head concurrently with its
 * owner, so the owner changes both by exchange and compare-and-swap. A
 * solo proc (the runtime's only one, kg_proc.solo) has no thief: a thief
 * holds a proc of its own to steal into (steal_work returns at once with
 * one proc, and runq_grab throws on a solo proc). Everyone else only
 * reads there (the kernel side's work hint, the watches). A proc changes
 * owners by a chain of CASes on its owner word: the old owner's side is
 * fully ordered or a release (the kernel side's cmpxchg at a block, on
 * the old owner's CPU after its last store; kg_proc_release; sysmon's,
 * after its acquire of the worker's in_sched), the new owner's an
 * acquire, so the new owner sees the old one's last stores here. So on
 * a solo proc the owner takes runnext and advances head with plain
 * stores: two locked instructions fewer per channel hand-off (a wake
 * into runnext, then taking it), one per yield.
 */

/*
 * Put co on p's queue; p must be held by the calling worker. With next,
 * co goes to runnext and the coroutine it displaces goes to the tail.
 */
static inline __attribute__((always_inline)) void runq_put(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co,
		     bool next)
{
	if (next) {
		struct kg_co *old = co;

		if (p->solo) {
			co = atomic_load_explicit(RQ_NEXT(p),
						  memory_order_relaxed);
			atomic_store_explicit(RQ_NEXT(p), old,
					      memory_order_relaxed);
		} else {
			/* thieves may take runnext: exchange, not store */
			co = atomic_exchange_explicit(RQ_NEXT(p), old,
						      memory_order_acq_rel);
		}
		if (!co)
			return;
	}
	for (;;) {
		/* acquire: pairs with thieves' release CAS on head */
		uint32_t h = atomic_load_explicit(RQ_HEAD(p),
						  memory_order_acquire);
		uint32_t t = atomic_load_explicit(RQ_TAIL(p),
						  memory_order_relaxed);

		if (t - h < KG_RUNQ_SIZE) {
			atomic_store_explicit(&p->runq[t % KG_RUNQ_SIZE], co,
					      memory_order_relaxed);
			/*
			 * release: publishes the slot and the coroutine's
			 * saved context; pairs with the acquire in
			 * runq_get/runq_grab.
			 */
			atomic_store_explicit(RQ_TAIL(p), t + 1,
					      memory_order_release);
			return;
		}
		if (runq_put_slow(rt, p, co, h, t))
			return;
	}
}

/*
 * The coroutines queued after the one being taken run soon and their pages
 * are likely cold (a million parked coroutines are a million distinct
 * pages). A prefetch that misses the TLB waits for its page walk, so start
 * the walks 4 at a time, for the ones 4..7 ahead (they overlap; one by one
 * they would not), and fill the lines of the one 2 ahead, whose page is in
 * the TLB by then. Out of line: the yield fast path never gets here.
 */
static __attribute__((noinline)) void runq_prefetch(struct kg_proc *p,
						    uint32_t h, uint32_t t)
{
	uint32_t k;

	if ((h & 3) == 0)
		for (k = 4; k < 8 && k < t - h; k++)
			__builtin_prefetch(atomic_load_explicit(
				&p->runq[(h + k) % KG_RUNQ_SIZE],
				memory_order_relaxed), 1, 3);
	kg_co_prefetch(atomic_load_explicit(&p->runq[(h + 2) % KG_RUNQ_SIZE],
					    memory_order_relaxed), 5);
}

/* Owner's dequeue: runnext first, then the ring's head. */
static inline __attribute__((always_inline)) struct kg_co *runq_get(struct kg_proc *p)
{
	struct kg_co *co = atomic_load_explicit(RQ_NEXT(p),
						memory_order_relaxed);

	if (co && p->solo) {	/* no thief: see above */
		atomic_store_explicit(RQ_NEXT(p), NULL, memory_order_relaxed);
		return co;
	}
	if (co && atomic_compare_exchange_strong_explicit(
			  RQ_NEXT(p), &co, NULL, memory_order_acquire,
			  memory_order_relaxed))
		return co;
	for (;;) {
		uint32_t h = atomic_load_explicit(RQ_HEAD(p),
						  memory_order_acquire);
		uint32_t t = atomic_load_explicit(RQ_TAIL(p),
						  memory_order_relaxed);

		if (t == h)
			return NULL;
		co = atomic_load_explicit(&p->runq[h % KG_RUNQ_SIZE],
					  memory_order_relaxed);
		/*
		 * A solo proc has no thief (see above): a store. Else a CAS,
		 * whose acquire pairs with the release store of tail/runnext
		 * (a thief's; on a solo proc the owner put them itself).
		 */
		if (p->solo)
			atomic_store_explicit(RQ_HEAD(p), h + 1,
					      memory_order_relaxed);
		else if (!atomic_compare_exchange_strong_explicit(
				 RQ_HEAD(p), &h, h + 1, memory_order_acq_rel,
				 memory_order_relaxed))
			continue;
		if (kg_unlikely(t - h > 2))
			runq_prefetch(p, h, t);
		return co;
	}
}

/* A thief's grab of half of p's queue into batch; returns how many. */
static uint32_t runq_grab(struct kg_proc *p, struct kg_co **batch,
			  bool with_next)
{
	/* its owner uses plain stores (see runq_put): no thief may come */
	if (kg_unlikely(p->solo))
		kg_throw("runq_grab: a thief on the only proc");
	for (;;) {
		uint32_t h = atomic_load_explicit(RQ_HEAD(p),
						  memory_order_acquire);
		/* acquire: pairs with the owner's release store of tail */
		uint32_t t = atomic_load_explicit(RQ_TAIL(p),
						  memory_order_acquire);
		uint32_t n = t - h, i;

		n -= n / 2;
		if (n == 0) {
			struct kg_co *co;

			if (!with_next)
				return 0;
			/*
			 * runnext holds a coroutine its owner just woke and
			 * is about to run (ping-pong partners): give the
			 * owner a few microseconds first, as Go does, or the
			 * pair bounces between procs on every exchange.
			 */
			if (atomic_load_explicit(RQ_NEXT(p),
						 memory_order_relaxed)) {
				uint64_t until = kg_now_ns() + RUNNEXT_GRACE_NS;

				while (kg_now_ns() < until)
					kg_cpu_relax();
			}
			co = atomic_load_explicit(RQ_NEXT(p),
						  memory_order_acquire);
			if (co && atomic_compare_exchange_strong_explicit(
					  RQ_NEXT(p), &co, NULL,
					  memory_order_acq_rel,
					  memory_order_relaxed)) {
				batch[0] = co;
				return 1;
			}
			return 0;
		}
		if (n > KG_RUNQ_SIZE / 2)
			continue;	/* read h and t inconsistently: retry */
		for (i = 0; i < n; i++)
			batch[i] = atomic_load_explicit(
				&p->runq[(h + i) % KG_RUNQ_SIZE],
				memory_order_relaxed);
		if (atomic_compare_exchange_strong_explicit(
			    RQ_HEAD(p), &h, h + n, memory_order_acq_rel,
			    memory_order_relaxed))
			return n;
	}
}

/* Steal half of victim's queue into w's (empty) queue; return one to run. */
static struct kg_co *runq_steal(struct kg_worker *w, struct kg_proc *victim,
				bool with_next)
{
	struct kg_co *batch[KG_RUNQ_SIZE / 2];
	uint32_t n = runq_grab(victim, batch, with_next), i;

	if (!n)
		return NULL;
	for (i = 1; i < n; i++)
		runq_put(w->rt, w->proc, batch[i], false);
	kg_store_relaxed(&w->proc->steals,
			 kg_load_relaxed(&w->proc->steals) + n);
	return batch[0];
}

/* Take a batch from the global queue: one to run, the rest go local. */
static struct kg_co *gq_get(struct kg_worker *w, uint32_t max)
{
	struct kg_rt *rt = w->rt;
	struct kg_co *co, *first;
	uint32_t n;

	if (!kg_load_relaxed(GQ_LEN(rt)))
		return NULL;
	pthread_mutex_lock(&rt->lock);
	n = kg_load_relaxed(GQ_LEN(rt));
	if (n > n / rt->nprocs + 1)
		n = n / rt->nprocs + 1;
	if (max && n > max)
		n = max;
	if (n > KG_RUNQ_SIZE / 2)
		n = KG_RUNQ_SIZE / 2;
	first = __gq_pop(rt);
	while (first && --n > 0 && (co = __gq_pop(rt)))
		runq_put(rt, w->proc, co, false);
	pthread_mutex_unlock(&rt->lock);
	return first;
}

/*
 * Wake an idle proc to look for work, unless a worker is already spinning
 * (it will find the work, then call wakep itself if more is left).
 * The caller has made work visible and executed a seq_cst fence; idle
 * workers increment npidle and decrement nspinning (seq_cst RMW) before
 * their final check of all queues, so one side always sees the other.
 */
void kg_wakep(struct kg_rt *rt)
{
	uint32_t zero = 0;
	struct kg_proc *p;

	if (!atomic_load(&rt->npidle)) {
		/* every proc is held: by running workers, which will find the
		 * work, or by ones asleep in the kernel, which will not */
		kg_strand_kick(rt);
		return;
	}
	if (atomic_load(&rt->nspinning) ||
	    !atomic_compare_exchange_strong(&rt->nspinning, &zero, 1))
		return;
	pthread_mutex_lock(&rt->lock);
	p = __kg_pidle_get(rt);
	if (!p) {
		pthread_mutex_unlock(&rt->lock);
		atomic_fetch_sub(&rt->nspinning, 1);
		return;
	}
	__kg_startm(rt, p, true);
	pthread_mutex_unlock(&rt->lock);
}

/* A spinning worker found work: stop counting it, keep one spinner going. */
static void reset_spinning(struct kg_worker *w)
{
	if (!w->spinning)
		return;
	w->spinning = false;
	if (atomic_fetch_sub(&w->rt->nspinning, 1) == 1)
		kg_wakep(w->rt);
}

/*
 * Make co runnable on w's proc. next: put it in runnext (a wake-up or a
 * spawn runs soon, on the waker's proc, as in Go).
 */
void kg_ready(struct kg_worker *w, struct kg_co *co, bool next)
{
	atomic_store_explicit(&co->state, KG_CO_RUNNABLE, memory_order_relaxed);
	if (kg_likely(w->proc != NULL)) {
		runq_put(w->rt, w->proc, co, next);
		/*
		 * The only proc, and ours: no other to wake, and we run what
		 * we queued at our next switch (if we block first, the
		 * kernel side hands the proc on, as for any queued work).
		 */
		if (w->proc->solo)
			return;
	} else {
		gq_put(w->rt, co);
	}
	/* StoreLoad: the queued work before the idle counts (see kg_wakep) */
	atomic_thread_fence(memory_order_seq_cst);
	kg_wakep(w->rt);
}

/* ------------------------------------------------------------------ */
/* Switching                                                           */
/* ------------------------------------------------------------------ */

/*
 * Run the post-switch action left by the context we switched away from.
 * The switch hands over the worker itself (not read from TLS: the thread
 * may have changed, and this saves the lookup); w->from is the context
 * that switched to us.
 */
static struct kg_worker *finish_switch(struct kg_worker *w)
{
	struct kg_co *prev = w->from;
	kg_after_fn fn = w->after;

	if (kg_unlikely(prev->stack.guard == KG_GUARD_CANARY))
		kg_canary_check(prev);
	if (fn) {
		w->after = NULL;
		fn(w, prev, w->after_arg);
	}
	return w;
}

/*
 * Switch from the running context to next on worker w, and return in the
 * old context when something resumes it (maybe on another worker), with
 * that switch finished. Returns the worker the caller now runs on.
 */
static struct kg_worker *switch_to(struct kg_worker *w, struct kg_co *next)
{
	struct kg_co *self = w->cur;

#ifdef KG_DEBUG_RCU
	if (kg_unlikely(kg_rcu_depth))
		kg_throw("switch_to: coroutine %ld switches inside an RCU "
			 "read-side section", self->id);
#endif
	/*
	 * errno belongs to the thread, and we may resume on another one: it
	 * travels in our frame, read through this worker's address of it
	 * and stored through the address of the worker that resumes us (each
	 * worker notes its thread's at start: glibc's __errno_location is
	 * const, so calling it here could reuse the old thread's address).
	 */
	int e = *w->errno_addr;

	atomic_store_explicit(&next->state, KG_CO_RUNNING, memory_order_relaxed);
	w->cur = next;
	w->from = self;
	/*
	 * The count is the time slice's clock (uapi/kgreen.h, kg_slice_due),
	 * in steps of 2, its low bit next's KG_GO_NOPREEMPT: one relaxed
	 * store to the slot's line, which kg_enter_sched wrote already.
	 */
	kg_store_relaxed(W_SWITCHES(w),
			 ((kg_load_relaxed(W_SWITCHES(w)) + 2) & ~1ull) |
				 next->nopreempt);
	KG_PROBE2(co_run, w->index, next->id);
	w = finish_switch(kg_switch(self, next, w));
	/* after the post-switch action, whose system calls may set it */
	*w->errno_addr = e;
	return w;
}

static void after_requeue(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	(void)arg;
	atomic_store_explicit(&prev->state, KG_CO_RUNNABLE, memory_order_relaxed);
	if (w->proc)
		runq_put(w->rt, w->proc, prev, false);
	else
		gq_put(w->rt, prev);
}

static void after_gq_put(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	(void)arg;
	atomic_store_explicit(&prev->state, KG_CO_RUNNABLE, memory_order_relaxed);
	gq_put(w->rt, prev);
	atomic_thread_fence(memory_order_seq_cst);
	kg_wakep(w->rt);
}

/*
 * The worker's proc was detached by the kernel side while the coroutine
 * blocked (slot->proc == NONE). Take an idle proc if there is one; else
 * put the coroutine on the global queue and let this worker become a
 * spare. Returns the worker the coroutine runs on afterwards, holding a
 * proc and in scheduler mode. Only for entries where the coroutine holds
 * no kgreen lock (yield, spawn, exit, kg_blocking_end): a coroutine queued
 * with a lock held would wait for a proc that the lock's waiters, blocked
 * in the kernel, may be holding (handoff.c, "Locks").
 */
static __attribute__((noinline)) struct kg_worker *
lost_proc(struct kg_worker *w)
{
	if (kg_proc_regain(w))
		return w;
	w->after = after_gq_put;
	return switch_to(w, &w->g0);
}

/* Entry into scheduler code from a coroutine that holds no kgreen lock. */
static inline struct kg_worker *sched_enter_co(struct kg_worker *w)
{
	kg_enter_sched(w);
	if (kg_unlikely(kg_proc_lost(w)))
		w = lost_proc(w);
	return w;
}

/*
 * Entry from a coroutine that may hold a channel's or sync object's lock
 * (a wake-up, a park whose commit releases the lock): it must not be
 * queued while holding it. A lost proc is only forgotten: a wake-up goes
 * to the global queue, a park switches to g0, which finds a proc or parks
 * the worker as a spare once the commit has released the lock.
 */
static inline struct kg_worker *sched_enter_locked(struct kg_worker *w)
{
	kg_enter_sched(w);
	if (kg_unlikely(kg_proc_lost(w)))
		kg_proc_forget(w);
	return w;
}

void kg_proc_lost_slow(struct kg_worker *w)
{
	/* the scheduler's own code (g0) holds no proc at times: not lost */
	if (w->cur == &w->g0)
		return;
	w = sched_enter_co(w);
	kg_leave_sched(w);
}

void kg_sched_lost(struct kg_worker *w)
{
	__atomic_store_n(&w->slot->proc, KG_PROC_NONE, __ATOMIC_RELAXED);
	w = sched_enter_co(w);
	kg_leave_sched(w);
}

/*
 * Wake a parked coroutine from any thread. On a worker of the same runtime
 * it goes to that worker's runnext (Go's ready()); from a foreign thread it
 * goes to the global queue and an idle proc is woken for it.
 */
void kg_wake(struct kg_co *co)
{
	struct kg_worker *w = kg_worker_self();
	/* once queued, co may run and exit: read its runtime first */
	struct kg_rt *rt = co->rt;

	if (w && w->rt == rt) {
		if (w->cur == &w->g0) {	/* a post-switch action, on g0 */
			kg_ready(w, co, true);
			return;
		}
		w = sched_enter_locked(w);
		kg_ready(w, co, true);
		kg_leave_sched(w);
		return;
	}
	atomic_store_explicit(&co->state, KG_CO_RUNNABLE, memory_order_relaxed);
	kg_foreign_note();
	gq_put(rt, co);
	atomic_fetch_add_explicit(&kg_foreign_wakes, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	kg_wakep(rt);
}

/* ------------------------------------------------------------------ */
/* Timers: who fires them                                              */
/* ------------------------------------------------------------------ */

/*
 * A new deadline on some heap: a parked timer watcher sleeps until
 * timer_watch_until; wake it if this deadline is earlier, or get a worker
 * to watch if none does. seq_cst load after the heap's seq_cst store of
 * its next deadline (timer.c, publish_next): pairs with the watcher's
 * store of timer_watch_until then re-read of the heaps (kg_park_worker).
 */
void kg_timer_notify(struct kg_rt *rt, uint64_t when, bool held)
{
	if (when < atomic_load(&rt->timer_watch_until)) {
		struct kg_worker *watcher = atomic_load(&rt->timer_watcher);

		if (watcher)
			kg_kick_watcher(watcher);
		else
			kg_wakep(rt);
	}
	if (!held) {
		/*
		 * On a heap the caller does not hold (a plain thread's, a
		 * proc taken meanwhile, proc 0's for a coroutine off its
		 * proc): its holder may be asleep in the kernel
		 * (kg_strand_kick). seq_cst fence: the heap's hint before
		 * the watch's flag.
		 */
		atomic_thread_fence(memory_order_seq_cst);
		kg_strand_kick(rt);
	}
}

int kg_timer_start(struct kg_rt *rt, struct kg_timer *t, uint64_t when)
{
	struct kg_worker *w = kg_worker_self();
	/* a stale w->proc (taken by a handoff) still names a live heap */
	struct kg_proc *p = w && w->rt == rt && w->proc ? w->proc
							: &rt->procs[0];
	int err = kg_timer_add(&p->timers, t, when);

	if (err)
		return err;
	kg_timer_notify(rt, when,
			w && w->rt == rt && w->proc &&
				__atomic_load_n(&p->slot->owner,
						__ATOMIC_RELAXED) == w->index);
	return 0;
}

/* ------------------------------------------------------------------ */
/* The poller's coroutines                                             */
/* ------------------------------------------------------------------ */

/* While every proc is busy, someone polls at least this often (Go's
 * sysmon: 10 ms). */
#define POLL_PERIOD_NS (10 * 1000 * 1000ull)

/* Coroutines wait on descriptors and no worker is blocked collecting
 * them (it would report them itself): a poll without waiting may help. */
static inline bool poll_useful(struct kg_rt *rt)
{
	struct kg_netpoll *np = rt->np;

	return np && atomic_load_explicit(&np->nwait, memory_order_relaxed) &&
	       !atomic_load_explicit(&np->blocked, memory_order_relaxed);
}

/*
 * Make the coroutines the poller reported (a kg_co.next list) runnable on
 * w's proc, or globally if w holds none. take: hand the first back to
 * run now instead (w holds a proc). Go's injectglist.
 */
static struct kg_co *inject(struct kg_worker *w, struct kg_co *list,
			    bool take)
{
	struct kg_co *first = NULL, *next;
	bool queued = false;

	for (; list; list = next) {
		next = list->next;	/* the queues may reuse the link */
		if (take && !first) {
			first = list;
			continue;
		}
		atomic_store_explicit(&list->state, KG_CO_RUNNABLE,
				      memory_order_relaxed);
		if (w->proc)
			runq_put(w->rt, w->proc, list, false);
		else
			gq_put(w->rt, list);
		queued = true;
	}
	if (queued) {
		/* StoreLoad: the queued work before the idle counts */
		atomic_thread_fence(memory_order_seq_cst);
		kg_wakep(w->rt);
	}
	return first;
}

/* Every proc may be busy: poll if nobody has for POLL_PERIOD_NS. */
static __attribute__((noinline)) void poll_due(struct kg_worker *w)
{
	struct kg_netpoll *np = w->rt->np;

	if (kg_now_ns() - atomic_load_explicit(&np->last,
					       memory_order_relaxed) <
	    POLL_PERIOD_NS)
		return;
	inject(w, kg_netpoll(np, 0), false);
}

/* What a parked worker brought back from the poller: run it. */
static struct kg_co *take_polled(struct kg_worker *w, struct kg_co *list)
{
	struct kg_proc *p;

	if (!list)
		return NULL;
	if (!w->proc && (p = kg_pidle_get(w->rt)))
		kg_proc_acquire(w, p);
	return inject(w, list, w->proc != NULL);
}

/* Next coroutine from w's own proc (and the global queue), or NULL. */
static inline struct kg_co *find_local(struct kg_worker *w)
{
	struct kg_proc *p = w->proc;
	struct kg_co *co;

	kg_proc_check(w, p);
	if (kg_unlikely(atomic_load_explicit(&p->timers.next,
					     memory_order_relaxed) != UINT64_MAX))
		kg_timers_run(w, p, kg_now_ns());
	if (kg_unlikely(++p->schedtick % GLOBAL_FAIRNESS == 0)) {
		if (poll_useful(w->rt))
			poll_due(w);
		co = gq_get(w, 1);
		if (co)
			return co;
	}
	co = runq_get(p);
	if (co)
		return co;
	return gq_get(w, 0);
}

/*
 * Park the running coroutine: switch to the next runnable one (or to g0),
 * and have commit(w, co, arg) run once its registers are saved. commit
 * makes the park visible to whoever will wake it. Returns the worker the
 * coroutine resumes on. Caller is in scheduler mode.
 */
static struct kg_worker *park(struct kg_worker *w, kg_after_fn commit,
			      void *arg)
{
	struct kg_co *next = NULL;

	atomic_store_explicit(&w->cur->state, KG_CO_WAITING,
			      memory_order_relaxed);
	w->after = commit;
	w->after_arg = arg;
	if (w->proc && !kg_rt_done(w->rt))
		next = find_local(w);
	return switch_to(w, next ? next : &w->g0);
}

void kg_sched_park(kg_after_fn commit, void *arg)
{
	struct kg_worker *w = sched_enter_locked(kg_worker_self());

	w = park(w, commit, arg);
	kg_leave_sched(w);
}

void kg_yield(void)
{
	struct kg_worker *w = kg_worker_self();
	struct kg_co *next;

	if (!w || w->cur == &w->g0)
		return;
	w = sched_enter_co(w);
	if (kg_unlikely(kg_rt_done(w->rt))) {
		w->after = NULL;
		w = switch_to(w, &w->g0);	/* never resumed */
	}
	next = find_local(w);
	if (next) {
		w->after = after_requeue;
		w = switch_to(w, next);
	} else {
		/*
		 * Nothing else to run: the coroutine goes on, but this was a
		 * scheduling point all the same (Go's Gosched counts one), so
		 * a new slice begins: a coroutine yielding in a loop beside
		 * work that is not runnable (a timer) is no hog. +2 keeps the
		 * NOPREEMPT bit.
		 */
		kg_store_relaxed(W_SWITCHES(w),
				 kg_load_relaxed(W_SWITCHES(w)) + 2);
	}
	kg_leave_sched(w);
}

/* ------------------------------------------------------------------ */
/* Spawn and exit                                                      */
/* ------------------------------------------------------------------ */

static void after_free(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	(void)arg;
	kg_co_free(w->rt, w->proc, prev);
}

/* First C function of every coroutine (kg_ctx_make's entry). */
static __attribute__((noreturn)) void kg_co_main(struct kg_worker *w)
{
	struct kg_co *self, *next = NULL;
	struct kg_rt *rt;

	kg_san_after(NULL);
	w = finish_switch(w);
	kg_leave_sched(w);
	self = w->cur;
	self->fn(self->arg);

	w = sched_enter_co(kg_worker_self());
	rt = w->rt;
	atomic_store_explicit(&self->state, KG_CO_DEAD, memory_order_relaxed);
	kg_store_relaxed(&w->proc->live, kg_load_relaxed(&w->proc->live) - 1);
	if (self->is_main)
		kg_rt_finish(rt);
	else if (!kg_rt_done(rt)) {
		next = find_local(w);
	}
	w->after = after_free;
	switch_to(w, next ? next : &w->g0);
	kg_throw("kg_co_main: dead coroutine %ld resumed", self->id);
}

/* Ids are unique for the process: procs take them from the global counter
 * in batches, so spawning touches no shared cache line. */
static long next_id(struct kg_proc *p)
{
	if (p->id_next == p->id_end) {
		p->id_next = atomic_fetch_add_explicit(&next_co_id, 64,
						       memory_order_relaxed) + 1;
		p->id_end = p->id_next + 64;
	}
	return p->id_next++;
}

/* Start co (from kg_co_alloc) as fn(arg) on w's proc; its id. */
static long spawn(struct kg_worker *w, struct kg_co *co, void (*fn)(void *),
		  void *arg, const char *name, unsigned int flags)
{
	long id;

	co->fn = fn;
	co->arg = arg;
	co->is_main = 0;
	co->nopreempt = !!(flags & KG_GO_NOPREEMPT);
	co->id = id = next_id(w->proc);
	/* unnamed: leave name[] alone, it is in a line spawn need not touch */
	co->named = name != NULL;
	if (name) {
		strncpy(co->name, name, KG_NAME_MAX - 1);
		co->name[KG_NAME_MAX - 1] = 0;
	}
	kg_ctx_make(co, co, kg_co_main);
	kg_store_relaxed(&w->proc->live, kg_load_relaxed(&w->proc->live) + 1);
	kg_count(&w->proc->spawned);
	/* once ready, co may run, exit and be reused: do not touch it */
	kg_ready(w, co, true);
	return id;
}

/*
 * Spawn fn(arg) from scheduler mode on w (a timer callback: Go's
 * time.AfterFunc runs its function in a goroutine of its own). The id,
 * or -ENOMEM, -EAGAIN (w holds no proc).
 */
long kg_spawn_sched(struct kg_worker *w, void (*fn)(void *), void *arg)
{
	struct kg_co *co;

	if (!w->proc)
		return -EAGAIN;
	co = kg_co_alloc(w->rt, w->proc, w->rt->stack_size, true);
	if (!co)
		return -ENOMEM;
	return spawn(w, co, fn, arg, NULL, 0);
}

/* main's coroutine, made on proc p (kg_run queues it with kg_runq_put). */
struct kg_co *kg_main_make(struct kg_rt *rt, struct kg_proc *p,
			   void (*fn)(void *), void *arg)
{
	struct kg_co *co = kg_co_alloc(rt, p, rt->stack_size, true);

	if (!co)
		return NULL;
	co->fn = fn;
	co->arg = arg;
	co->is_main = 1;
	co->nopreempt = 0;
	co->id = next_id(p);
	strcpy(co->name, "main");
	co->named = 1;
	kg_ctx_make(co, co, kg_co_main);
	kg_store_relaxed(&p->live, 1);
	return co;
}

/* Queue co on p from outside the scheduler (kg_run, before any worker
 * owns p: the first worker's creation orders these stores before its
 * reads). */
void kg_runq_put(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co)
{
	runq_put(rt, p, co, false);
}

/*
 * Spawning with no freed stack at hand would carve a new one (a page
 * fault and a guard install: microseconds, and memory kept for good),
 * while the coroutines queued on this proc, once run, may exit and free
 * theirs. A spawner that runs ahead of its children (a loop of kg_go)
 * does not carve while SPAWN_DRAIN or more of them wait here: it yields
 * to them first, as Go's scheduler would preempt it at some point, and
 * reuses what they free. A coroutine spawned with KG_GO_NOPREEMPT asked
 * not to be switched out at other points than its own calls: never here.
 */
static bool spawn_drains(struct kg_worker *w)
{
	struct kg_proc *p = w->proc;
	/* owner's view: tail is ours, head only grows (thieves, acquire) */
	uint32_t t = atomic_load_explicit(RQ_TAIL(p), memory_order_relaxed);
	uint32_t h = atomic_load_explicit(RQ_HEAD(p), memory_order_acquire);

	return !w->cur->nopreempt && t - h >= SPAWN_DRAIN;
}

long kg_go_opts(void (*fn)(void *), void *arg, const struct kg_spawn_opts *o)
{
	struct kg_worker *w;
	struct kg_co *co;
	size_t size = 0;
	unsigned int flags = 0;
	long id;

	if (!fn)
		return -EINVAL;
	if (o) {
		if (o->flags & ~KG_GO_NOPREEMPT)
			return -EINVAL;
		flags = o->flags;
		size = o->stack_size;
		if (size && (size < KG_STACK_MIN || size > KG_STACK_MAX))
			return -EINVAL;
	}
	w = kg_worker_self();
	if (!w || w->cur == &w->g0)
		return -EPERM;
	if (!size)
		size = w->rt->stack_size;
	w = sched_enter_co(w);
	co = kg_co_alloc(w->rt, w->proc, size, false);
	if (!co && spawn_drains(w)) {
		kg_leave_sched(w);
		kg_yield();
		w = sched_enter_co(kg_worker_self());
	}
	/* what the yield's coroutines freed first, else a new stack */
	if (!co)
		co = kg_co_alloc(w->rt, w->proc, size, true);
	id = co ? spawn(w, co, fn, arg, o ? o->name : NULL, flags) : -ENOMEM;
	kg_leave_sched(w);
	return id;
}

long kg_go(void (*fn)(void *), void *arg)
{
	return kg_go_opts(fn, arg, NULL);
}

long kg_self(void)
{
	struct kg_worker *w = kg_worker_self();

	if (!w || w->cur == &w->g0)
		return 0;
	return w->cur->id;
}

/* ------------------------------------------------------------------ */
/* The worker loop (on g0)                                             */
/* ------------------------------------------------------------------ */

/* One pass over other procs: steal queued coroutines or expired timers. */
static struct kg_co *steal_work(struct kg_worker *w)
{
	struct kg_rt *rt = w->rt;
	uint32_t n = rt->nprocs, i, start, try;
	uint64_t now = 0;

	if (n < 2)
		return NULL;
	for (try = 0; try < STEAL_TRIES; try++) {
		bool last = try == STEAL_TRIES - 1;

		start = (uint32_t)(kg_fastrand() % n);
		for (i = 0; i < n; i++) {
			struct kg_proc *v = &rt->procs[(start + i) % n];
			struct kg_co *co;

			if (v == w->proc)
				continue;
			if (last && atomic_load_explicit(&v->timers.next,
							 memory_order_relaxed) !=
					    UINT64_MAX) {
				if (!now)
					now = kg_now_ns();
				if (kg_timers_run(w, v, now)) {
					co = runq_get(w->proc);
					if (co)
						return co;
				}
			}
			co = runq_steal(w, v, last);
			if (co)
				return co;
		}
	}
	return NULL;
}

/*
 * Find a coroutine to run, stealing and parking as needed. Runs on g0.
 * Returns NULL when the runtime is done.
 */
static struct kg_co *find_runnable(struct kg_worker *w)
{
	struct kg_rt *rt = w->rt;
	struct kg_co *co;

	for (;;) {
		uint64_t spin_until;

		co = NULL;

		if (kg_rt_done(rt))
			return NULL;
		if (!w->proc) {
			struct kg_proc *p = kg_pidle_get(rt);

			if (p)
				kg_proc_acquire(w, p);
			else
				co = take_polled(w,
						 kg_park_worker(w, UINT64_MAX));
			if (co)
				goto found;
			continue;
		}
		co = find_local(w);
		if (co)
			goto found;
		if (poll_useful(rt)) {
			co = inject(w, kg_netpoll(rt->np, 0), true);
			if (co)
				goto found;
		}
		if (!w->spinning &&
		    2 * atomic_load(&rt->nspinning) <
			    rt->nprocs - atomic_load(&rt->npidle)) {
			w->spinning = true;
			atomic_fetch_add(&rt->nspinning, 1);
		}
		/* spin briefly: work often arrives within microseconds */
		spin_until = kg_now_ns() + SPIN_NS;
		do {
			co = steal_work(w);
			if (co)
				goto found;
			co = find_local(w);
			if (co)
				goto found;
			kg_cpu_relax();
		} while (!kg_rt_done(rt) && kg_now_ns() < spin_until);

		/* give up the proc, then look once more (see kg_wakep) */
		pthread_mutex_lock(&rt->lock);
		co = __gq_pop(rt);
		if (co) {
			pthread_mutex_unlock(&rt->lock);
			goto found;
		}
		{
			struct kg_proc *p = w->proc;

			kg_proc_release(w);
			__kg_pidle_put(rt, p);
		}
		pthread_mutex_unlock(&rt->lock);
		if (w->spinning) {
			w->spinning = false;
			atomic_fetch_sub(&rt->nspinning, 1);
		}
		if (kg_any_work(rt)) {
			struct kg_proc *p = kg_pidle_get(rt);

			if (p) {
				kg_proc_acquire(w, p);
				continue;
			}
		}
		if (kg_timers_next_all(rt) <= kg_now_ns()) {
			struct kg_proc *p = kg_pidle_get(rt);

			if (p) {
				kg_proc_acquire(w, p);
				/* fire everyone's expired timers here */
				co = steal_work(w);
				if (co)
					goto found;
				continue;
			}
		}
		co = take_polled(w, kg_park_worker(w, kg_deadlock_watch(w)));
		if (co)
			goto found;
		if (kg_rt_done(rt))
			return NULL;
		continue;
found:
		reset_spinning(w);
		return co;
	}
}

void kg_worker_loop(struct kg_worker *w)
{
	struct kg_co *co;

	kg_enter_sched(w);
	while ((co = find_runnable(w)) != NULL)
		w = switch_to(w, co);
	if (w->proc) {
		struct kg_proc *p = w->proc;

		kg_proc_release(w);
		pthread_mutex_lock(&w->rt->lock);
		__kg_pidle_put(w->rt, p);
		pthread_mutex_unlock(&w->rt->lock);
	}
}

