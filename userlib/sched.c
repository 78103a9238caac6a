// SPDX-License-Identifier: MIT
/*
 * sched.c - the M:N coroutine scheduler.
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
 * are simply parked workers.
 *
 * Rejected approaches: one global locked queue (every switch contends on
 * one cache line); a scheduler context between every two coroutines (two
 * stack switches per yield instead of one); a monitor thread that polls for
 * blocked workers (the kernel tells us instead, see the handoff below).
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
 *     already spinning (wakep), and a spinning worker that finds work wakes
 *     the next one. Steal half of a victim's queue; check the global queue
 *     every 61st schedule for fairness.
 *  4. Handoff shape: each worker has a slot shared with the kernel side
 *     (uapi/kgreen.h). in_sched is 1 while the worker runs scheduler code
 *     holding a proc (plain stores + compiler barrier: the kernel side reads
 *     it on the worker's own CPU, in program order). The kernel side may
 *     detach the proc of a worker that blocks while in_sched == 0; every
 *     scheduler entry from a coroutine therefore checks slot->proc and, if
 *     the proc is gone, takes an idle one or queues its coroutine globally
 *     and becomes a spare (Go's exitsyscall).
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
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "context.h"
#include "internal.h"

__thread struct kg_worker *kg_tls_worker KG_TLS;
#define tls_worker kg_tls_worker
static _Atomic(struct kg_rt *) cur_rt;
static _Atomic int rt_running;
static _Atomic long next_co_id;
static int kg_debug_on;

int kg_debug_level(void)
{
	return kg_debug_on;
}
_Atomic uint64_t kg_foreign_wakes;

#define SPIN_NS 20000		/* how long an idle worker looks before parking */
#define STEAL_TRIES 4
#define RUNNEXT_GRACE_NS 3000	/* before a thief takes a proc's runnext */
#define GLOBAL_FAIRNESS 61

/* ------------------------------------------------------------------ */
/* Diagnostics                                                         */
/* ------------------------------------------------------------------ */

void kg_throw(const char *fmt, ...)
{
	va_list ap;

	fputs("kgreen: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void kg_debug(const char *fmt, ...)
{
	va_list ap;

	if (!kg_debug_on)
		return;
	fputs("kgreen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * The thread pointer changes when a coroutine migrates between workers, but
 * compilers treat the address of a __thread variable as constant within a
 * function. Reading it through this out-of-line function (with an asm the
 * optimizer cannot see through) makes every call re-read it.
 */
__attribute__((noinline)) struct kg_worker *kg_worker_self(void)
{
	__asm__ __volatile__("" ::: "memory");
	return tls_worker;
}

/* kg_note_caller's rare path: a plain thread uses a kgreen object. */
void kg_note_caller_slow(void)
{
	kg_foreign_note();
}

struct kg_rt *kg_rt_current(void)
{
	return atomic_load_explicit(&cur_rt, memory_order_acquire);
}

uint64_t kg_rand(struct kg_worker *w)
{
	/* xorshift64*: cheap, per worker, good enough for victim choice */
	uint64_t x = w->rand;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	w->rand = x;
	return x * 0x2545F4914F6CDD1DULL;
}

uint64_t kg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* The handoff slot: in_sched and the proc the kernel side may take     */
/* ------------------------------------------------------------------ */

/*
 * Plain stores ordered by compiler barriers: the kernel side reads the slot
 * only on this worker's CPU while this worker is switched out, so program
 * order is all that is needed (the rseq argument). The barrier keeps the
 * compiler from moving scheduler memory accesses across the flag.
 */
static inline void sched_enter(struct kg_worker *w)
{
	*(volatile __u32 *)&w->slot->in_sched = 1;
	kg_barrier();
}

static inline void sched_leave(struct kg_worker *w)
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
	kg_barrier();
	*(volatile __u32 *)&w->slot->in_sched = 0;
}

/*
 * Debug and sanitizer builds check at every scheduling decision that the
 * proc the worker uses is still its own: a proc run by two workers at
 * once (a broken handoff) throws instead of corrupting queues.
 */
static inline void check_owner(struct kg_worker *w, struct kg_proc *p)
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

static void acquire_proc(struct kg_worker *w, struct kg_proc *p)
{
	__u32 expect = KG_OWNER_DETACHED;

	/* only detached procs are handed out; CAS pairs with the kernel's */
	if (!__atomic_compare_exchange_n(&p->slot->owner, &expect, w->index,
					 false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		kg_throw("acquire_proc: proc %u owned by worker %u", p->index,
			 expect);
#ifdef KG_TSAN
	__tsan_acquire(p);	/* see sched_leave */
#endif
	w->proc = p;
	/* relaxed: the kernel side reads it on this CPU (program order) */
	__atomic_store_n(&w->slot->proc, p->index, __ATOMIC_RELAXED);
}

static void release_proc(struct kg_worker *w)
{
	struct kg_proc *p = w->proc;
	__u32 expect = w->index;

	__atomic_store_n(&w->slot->proc, KG_PROC_NONE, __ATOMIC_RELAXED);
	if (!__atomic_compare_exchange_n(&p->slot->owner, &expect,
					 KG_OWNER_DETACHED, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		kg_throw("release_proc: proc %u owned by worker %u, not %u",
			 p->index, expect, w->index);
	w->proc = NULL;
}

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

static uint32_t runq_len(struct kg_proc *p)
{
	uint32_t h = atomic_load_explicit(RQ_HEAD(p), memory_order_acquire);
	uint32_t t = atomic_load_explicit(RQ_TAIL(p), memory_order_acquire);

	return t - h;
}

static bool runq_empty(struct kg_proc *p)
{
	return runq_len(p) == 0 &&
	       !atomic_load_explicit(RQ_NEXT(p), memory_order_acquire);
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
 * Put co on p's queue; p must be held by the calling worker. With next,
 * co goes to runnext and the coroutine it displaces goes to the tail.
 */
static inline __attribute__((always_inline)) void runq_put(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co,
		     bool next)
{
	if (next) {
		/* thieves may take runnext concurrently: exchange, not store */
		co = atomic_exchange_explicit(RQ_NEXT(p), co,
					      memory_order_acq_rel);
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
		/* acquire pairs with the release store of tail/runnext */
		if (atomic_compare_exchange_strong_explicit(
			    RQ_HEAD(p), &h, h + 1, memory_order_acq_rel,
			    memory_order_relaxed)) {
			if (kg_unlikely(t - h > 2))
				runq_prefetch(p, h, t);
			return co;
		}
	}
}

/* A thief's grab of half of p's queue into batch; returns how many. */
static uint32_t runq_grab(struct kg_proc *p, struct kg_co **batch,
			  bool with_next)
{
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

/* ------------------------------------------------------------------ */
/* Idle procs, parked workers, wakep                                   */
/* ------------------------------------------------------------------ */

static void __pidle_put(struct kg_rt *rt, struct kg_proc *p)
{
	p->idle_next = rt->idle_procs;
	rt->idle_procs = p;
	atomic_fetch_add(&rt->npidle, 1);
}

static struct kg_proc *__pidle_get(struct kg_rt *rt)
{
	struct kg_proc *p = rt->idle_procs;

	if (p) {
		rt->idle_procs = p->idle_next;
		atomic_fetch_sub(&rt->npidle, 1);
	}
	return p;
}

static struct kg_proc *pidle_get(struct kg_rt *rt)
{
	struct kg_proc *p;

	if (!atomic_load(&rt->npidle))
		return NULL;
	pthread_mutex_lock(&rt->lock);
	p = __pidle_get(rt);
	pthread_mutex_unlock(&rt->lock);
	return p;
}

/* Remove w from the idle worker list; false if someone popped it first. */
static bool __widle_remove(struct kg_rt *rt, struct kg_worker *w)
{
	struct kg_worker **pp;

	for (pp = &rt->idle_workers; *pp; pp = &(*pp)->idle_next) {
		if (*pp == w) {
			*pp = w->idle_next;
			return true;
		}
	}
	return false;
}

/*
 * A parked worker sleeps on its futex, or, as a standby, in the backend's
 * event wait: wake both ways. seq_cst: the store of wake before the load
 * of w->standby here, against the standby's store of w->standby before
 * its load of wake (park_worker): one side sees the other.
 */
static void wake_parked(struct kg_worker *w)
{
	kg_futex_wake(&w->wake, 1);
	if (atomic_load(&w->standby))
		w->rt->ev->kick(w);
}

/* Hand a popped parked worker its proc (maybe NULL) and wake it. */
static void wake_worker(struct kg_worker *w, struct kg_proc *p, bool spinning)
{
	w->nextp = p;
	w->spinning = spinning;
	/* seq_cst (release at least: nextp and spinning are visible once
	 * wake reads HANDOFF; seq_cst for wake_parked) */
	atomic_store(&w->wake, KG_WAKE_HANDOFF);
	wake_parked(w);
}

void kg_kick_watcher(struct kg_worker *w)
{
	uint32_t expect = KG_WAKE_PARKED;

	if (atomic_compare_exchange_strong(&w->wake, &expect, KG_WAKE_KICK))
		wake_parked(w);
}

static void *worker_thread(void *arg);

static struct kg_worker *worker_new(struct kg_rt *rt)
{
	uint32_t idx = atomic_load(&rt->nworkers);
	struct kg_worker *w;

	if (idx >= KG_MAX_WORKERS)
		return NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->rt = rt;
	w->index = idx;
	w->slot = &rt->shared->workers[idx];
	w->slot->proc = KG_PROC_NONE;
	w->rand = 0x9E3779B97F4A7C15ull * (idx + 1) ^ kg_now_ns();
	w->cur = &w->g0;
	w->ep_fd = w->kick_fd = -1;
	atomic_store_explicit(&w->g0.state, KG_CO_RUNNING, memory_order_relaxed);
	rt->workers[idx] = w;
	atomic_store(&rt->nworkers, idx + 1);
	return w;
}

static inline bool rt_done(struct kg_rt *rt)
{
	return atomic_load_explicit(&rt->done, memory_order_acquire) != 0;
}

/*
 * End the runtime (main returned, or a deadlock was reported): every
 * worker stops at its next scheduler entry, parked ones are woken, and
 * kg_run's thread, which waits on rt->done, is woken to tear down.
 */
static void rt_finish(struct kg_rt *rt)
{
	struct kg_worker *iw;

	/* release: everything main did happens before the shutdown */
	atomic_store_explicit(&rt->done, 1, memory_order_release);
	pthread_mutex_lock(&rt->lock);
	while ((iw = rt->idle_workers)) {
		rt->idle_workers = iw->idle_next;
		wake_worker(iw, NULL, false);
	}
	pthread_mutex_unlock(&rt->lock);
	kg_futex_wake(&rt->done, 1);
}

/* Some parked worker other than w that is not a standby (rt.lock). */
static struct kg_worker *__idle_plain(struct kg_rt *rt, struct kg_worker *w)
{
	struct kg_worker *iw;

	for (iw = rt->idle_workers; iw; iw = iw->idle_next)
		if (iw != w && !atomic_load(&iw->standby))
			return iw;
	return NULL;
}

/* Workers running a coroutine without their proc (taken while blocked). */
static uint32_t workers_out(struct kg_rt *rt)
{
	uint32_t i, n = atomic_load(&rt->nworkers), out = 0;

	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];

		if (w && atomic_load(&w->lost_seen) >
				 atomic_load(&w->lost_handled))
			out++;
	}
	return out;
}

/* Start w's thread, to take proc p (NULL: look for one); 0 or an errno. */
static int worker_start(struct kg_worker *w, struct kg_proc *p, bool spinning)
{
	pthread_attr_t attr;
	int err;

	w->nextp = p;
	w->spinning = spinning;
	pthread_attr_init(&attr);
	err = pthread_create(&w->thread, &attr, worker_thread, w);
	pthread_attr_destroy(&attr);
	return err;
}

/*
 * Start a new worker thread that takes proc p (NULL: none; it looks for
 * an idle proc, else parks as a spare). Caller holds rt->lock.
 */
static bool __new_worker(struct kg_rt *rt, struct kg_proc *p, bool spinning)
{
	struct kg_worker *w;

	/*
	 * Once the runtime is done (set before the shutdown takes rt.lock),
	 * kg_run is about to join the workers it knows: start no more.
	 */
	if (rt_done(rt))
		return false;
	w = worker_new(rt);
	if (!w)
		return false;
	if (!worker_start(w, p, spinning))
		return true;
	rt->workers[w->index] = NULL;
	atomic_fetch_sub(&rt->nworkers, 1);
	free(w);
	return false;
}

/*
 * Start a worker on proc p: a parked one if any, else a new thread.
 * Caller holds rt->lock. On failure p goes back to the idle list.
 */
static void __startm(struct kg_rt *rt, struct kg_proc *p, bool spinning)
{
	/* a plain parked worker first: standbys stay where they wait */
	struct kg_worker *w = __idle_plain(rt, NULL);

	if (!w)
		w = rt->idle_workers;
	if (w) {
		__widle_remove(rt, w);
		wake_worker(w, p, spinning);
		return;
	}
	if (__new_worker(rt, p, spinning))
		return;
	kg_debug("cannot start a worker thread; proc %u stays idle", p->index);
	__pidle_put(rt, p);
	if (spinning)
		atomic_fetch_sub(&rt->nspinning, 1);
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

	if (!atomic_load(&rt->npidle))
		return;
	if (atomic_load(&rt->nspinning) ||
	    !atomic_compare_exchange_strong(&rt->nspinning, &zero, 1))
		return;
	pthread_mutex_lock(&rt->lock);
	p = __pidle_get(rt);
	if (!p) {
		pthread_mutex_unlock(&rt->lock);
		atomic_fetch_sub(&rt->nspinning, 1);
		return;
	}
	__startm(rt, p, true);
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
	if (kg_likely(w->proc != NULL))
		runq_put(w->rt, w->proc, co, next);
	else
		gq_put(w->rt, co);
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
	kg_count(&w->switches);
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

/* Let go of the lost proc (once per loss): w runs its coroutine without one. */
static void forget_proc(struct kg_worker *w)
{
	if (w->proc) {
		w->proc = NULL;
		atomic_fetch_add(&w->lost_handled, 1);
	}
}

/*
 * The worker's proc was detached by the kernel side while the coroutine
 * blocked (slot->proc == NONE). Take an idle proc if there is one; else
 * put the coroutine on the global queue and let this worker become a
 * spare. Returns the worker the coroutine runs on afterwards, holding a
 * proc and in scheduler mode. Only for entries where the coroutine holds
 * no kgreen lock (yield, spawn, exit, kg_blocking_end): a coroutine queued
 * with a lock held would wait for a proc that the lock's waiters, blocked
 * in the kernel, may be holding.
 */
static __attribute__((noinline)) struct kg_worker *
lost_proc(struct kg_worker *w)
{
	struct kg_proc *p;

	forget_proc(w);
	p = pidle_get(w->rt);
	if (p) {
		acquire_proc(w, p);
		return w;
	}
	w->after = after_gq_put;
	return switch_to(w, &w->g0);
}

/* Entry into scheduler code from a coroutine that holds no kgreen lock. */
static inline struct kg_worker *sched_enter_co(struct kg_worker *w)
{
	sched_enter(w);
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
	sched_enter(w);
	if (kg_unlikely(kg_proc_lost(w)))
		forget_proc(w);
	return w;
}

void kg_proc_lost_slow(struct kg_worker *w)
{
	/* the scheduler's own code (g0) holds no proc at times: not lost */
	if (w->cur == &w->g0 || !w->rt->ev)
		return;
	w = sched_enter_co(w);
	sched_leave(w);
}

void kg_sched_lost(struct kg_worker *w)
{
	__atomic_store_n(&w->slot->proc, KG_PROC_NONE, __ATOMIC_RELAXED);
	w = sched_enter_co(w);
	sched_leave(w);
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
		sched_leave(w);
		return;
	}
	atomic_store_explicit(&co->state, KG_CO_RUNNABLE, memory_order_relaxed);
	kg_foreign_note();
	gq_put(rt, co);
	atomic_fetch_add_explicit(&kg_foreign_wakes, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	kg_wakep(rt);
}

/* Next coroutine from w's own proc (and the global queue), or NULL. */
static inline struct kg_co *find_local(struct kg_worker *w)
{
	struct kg_proc *p = w->proc;
	struct kg_co *co;

	check_owner(w, p);
	if (kg_unlikely(atomic_load_explicit(&p->timers.next,
					     memory_order_relaxed) != UINT64_MAX))
		kg_timers_run(w, p, kg_now_ns());
	if (kg_unlikely(++p->schedtick % GLOBAL_FAIRNESS == 0)) {
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
	if (w->proc && !rt_done(w->rt))
		next = find_local(w);
	return switch_to(w, next ? next : &w->g0);
}

void kg_sched_park(kg_after_fn commit, void *arg)
{
	struct kg_worker *w = sched_enter_locked(kg_worker_self());

	w = park(w, commit, arg);
	sched_leave(w);
}

void kg_yield(void)
{
	struct kg_worker *w = kg_worker_self();
	struct kg_co *next;

	if (!w || w->cur == &w->g0)
		return;
	w = sched_enter_co(w);
	if (kg_unlikely(rt_done(w->rt))) {
		w->after = NULL;
		w = switch_to(w, &w->g0);	/* never resumed */
	}
	next = find_local(w);
	if (next) {
		w->after = after_requeue;
		w = switch_to(w, next);
	}
	sched_leave(w);
}

/* ------------------------------------------------------------------ */
/* Spawn and exit                                                      */
/* ------------------------------------------------------------------ */

static void after_free(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	(void)arg;
	kg_co_free(w->rt, w->proc, prev);
}

__attribute__((noreturn)) void kg_co_main(struct kg_worker *w)
{
	struct kg_co *self, *next = NULL;
	struct kg_rt *rt;

	kg_san_after(NULL);
	w = finish_switch(w);
	sched_leave(w);
	self = w->cur;
	self->fn(self->arg);

	w = sched_enter_co(kg_worker_self());
	rt = w->rt;
	atomic_store_explicit(&self->state, KG_CO_DEAD, memory_order_relaxed);
	kg_store_relaxed(&w->proc->live, kg_load_relaxed(&w->proc->live) - 1);
	if (self->is_main)
		rt_finish(rt);
	else if (!rt_done(rt)) {
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

uint64_t kg_live(struct kg_rt *rt)
{
	int64_t sum = 0;
	uint32_t i;

	for (i = 0; i < rt->nprocs; i++)
		sum += kg_load_relaxed(&rt->procs[i].live);
	return sum > 0 ? (uint64_t)sum : 0;
}

static long spawn(struct kg_worker *w, void (*fn)(void *), void *arg,
		  size_t stack_size, const char *name)
{
	struct kg_rt *rt = w->rt;
	struct kg_co *co;
	long id;

	co = kg_co_alloc(rt, w->proc, stack_size);
	if (!co)
		return -ENOMEM;
	co->fn = fn;
	co->arg = arg;
	co->is_main = 0;
	co->id = id = next_id(w->proc);
	/* unnamed: leave name[] alone, it is in a line spawn need not touch */
	co->named = name != NULL;
	if (name) {
		strncpy(co->name, name, KG_NAME_MAX - 1);
		co->name[KG_NAME_MAX - 1] = 0;
	}
	kg_ctx_make(co, co);
	kg_store_relaxed(&w->proc->live, kg_load_relaxed(&w->proc->live) + 1);
	kg_count(&w->proc->spawned);
	/* once ready, co may run, exit and be reused: do not touch it */
	kg_ready(w, co, true);
	return id;
}

long kg_go_opts(void (*fn)(void *), void *arg, const struct kg_spawn_opts *o)
{
	struct kg_worker *w;
	size_t size = 0;
	long id;

	if (!fn)
		return -EINVAL;
	if (o) {
		if (o->flags)
			return -EINVAL;
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
	id = spawn(w, fn, arg, size, o ? o->name : NULL);
	sched_leave(w);
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

		start = (uint32_t)(kg_rand(w) % n);
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

static bool any_work(struct kg_rt *rt)
{
	uint32_t i;

	if (kg_load_relaxed(GQ_LEN(rt)))
		return true;
	for (i = 0; i < rt->nprocs; i++)
		if (!runq_empty(&rt->procs[i]))
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* The standby spare (event backends)                                  */
/* ------------------------------------------------------------------ */

/*
 * With the bpf backend the kernel side detaches a blocked worker's proc
 * and leaves a record in a ring buffer; it cannot start a thread. So
 * KG_STANDBYS parked workers, the standbys, wait on the ring (each in its
 * own epoll set) instead of their futex: when one takes a proc, the other
 * is already waiting, and the first's replacement (a parked worker kicked
 * awake, or a new thread) arrives off the critical path. The kernel side
 * never names a standby: the records wait in the ring for whichever
 * standby reads them next, so there is no idle-server pointer to go stale.
 */
#define KG_STANDBYS 2

/*
 * w, parking, becomes a standby if fewer than KG_STANDBYS wait. Not the
 * timer watcher: it wakes at every deadline, and the role would change
 * hands as often.
 */
static bool standby_claim(struct kg_worker *w, bool watcher)
{
	struct kg_rt *rt = w->rt;
	uint32_t n = atomic_load(&rt->nstandby);

	/* a worker the kernel side does not know could not be woken by it */
	if (!rt->ev || watcher || !w->tid)
		return false;
	do {
		if (n >= KG_STANDBYS)
			return false;
	} while (!atomic_compare_exchange_weak(&rt->nstandby, &n, n + 1));
	if (rt->ev->waiter_open(w)) {
		atomic_fetch_sub(&rt->nstandby, 1);
		return false;
	}
	atomic_store(&w->standby, 1);	/* seq_cst: see wake_parked */
	/*
	 * Keep one worker beyond the procs' and the standbys in reserve, to
	 * replace a standby that takes a proc. Counted against all workers,
	 * not the parked ones: workers popped and parked again by the
	 * scheduler come and go all the time and must not start threads.
	 */
	pthread_mutex_lock(&rt->lock);
	if (atomic_load(&rt->nworkers) <
		    rt->nprocs + KG_STANDBYS + 1 + workers_out(rt) &&
	    !__new_worker(rt, NULL, false) && !rt_done(rt))
		kg_debug("cannot start a reserve spare worker");
	pthread_mutex_unlock(&rt->lock);
	return true;
}

/*
 * w leaves the role (it is off the idle list). While another standby
 * waits, the next worker to park (typically the one whose proc was just
 * taken, back from its system call) fills the role: nothing to do on this
 * critical path. If none is left, wake a parked worker to take it (no
 * thread is started here: standby_claim keeps the reserve).
 */
static void standby_vacate(struct kg_worker *w)
{
	struct kg_rt *rt = w->rt;
	struct kg_worker *iw;

	atomic_store(&w->standby, 0);
	if (atomic_fetch_sub(&rt->nstandby, 1) > 1 || rt_done(rt))
		return;
	pthread_mutex_lock(&rt->lock);
	iw = __idle_plain(rt, w);
	if (iw)
		kg_kick_watcher(iw);
	pthread_mutex_unlock(&rt->lock);
}

/*
 * The standby w (parked, on the idle list) takes the pending handoff
 * records: the first detached proc for itself, unless it was popped
 * meanwhile (a handoff to it is under way), the others for parked or new
 * workers. Returns true if w now holds a proc.
 */
struct standby_take {
	struct kg_worker *w;
	struct kg_proc *mine;
	uint64_t now;
};

static void standby_take_one(void *arg, const struct kg_handoff_event *ev)
{
	struct standby_take *t = arg;
	struct kg_rt *rt = t->w->rt;
	struct kg_worker *bw;
	struct kg_proc *p;

	if (ev->proc >= rt->nprocs || ev->worker >= atomic_load(&rt->nworkers) ||
	    !(bw = rt->workers[ev->worker])) {
		kg_debug("bad handoff record: proc %u worker %u", ev->proc,
			 ev->worker);
		return;
	}
	p = &rt->procs[ev->proc];
	kg_handoff_seen(rt, bw, t->now > ev->ts_ns ? t->now - ev->ts_ns : 0);
	atomic_store_explicit(&rt->last_handoff, t->now, memory_order_relaxed);
	pthread_mutex_lock(&rt->lock);
	if (!t->mine && !rt_done(rt) && __widle_remove(rt, t->w)) {
		t->mine = p;
		KG_PROBE3(handoff, ev->proc, ev->worker, (int)t->w->index);
	} else {
		__startm(rt, p, false);
		KG_PROBE3(handoff, ev->proc, ev->worker, -1);
	}
	pthread_mutex_unlock(&rt->lock);
}

static bool standby_take(struct kg_worker *w)
{
	struct standby_take t = { .w = w, .now = kg_now_ns() };

	if (w->rt->ev->events(w, standby_take_one, &t) <= 0 || !t.mine)
		return false;
	acquire_proc(w, t.mine);
	return true;
}

/*
 * Waking a standby from epoll costs tens of microseconds (the ring's
 * irq_work, a cross-CPU wake, the thread's return to userspace). While
 * handoffs are frequent (the last one less than STANDBY_HOT_NS ago) and a
 * CPU is free (fewer procs busy than CPUs: spinning must not take a CPU
 * from running coroutines), a standby polls the ring for up to
 * STANDBY_SPIN_NS first, yielding the CPU between polls to any thread
 * that wants it (a busy poll measured a lower median but a ten times
 * worse p99 here: it kept returning workers off the CPU). Returns true if
 * a record (or a wake) arrived.
 */
#define STANDBY_HOT_NS (2 * 1000 * 1000ull)
#define STANDBY_SPIN_NS (200 * 1000ull)

static bool standby_spin(struct kg_worker *w)
{
	struct kg_rt *rt = w->rt;
	uint64_t now = kg_now_ns(), until;
	uint32_t idle = 0;
	bool got = false;

	if (now - atomic_load_explicit(&rt->last_handoff,
				       memory_order_relaxed) > STANDBY_HOT_NS ||
	    rt->nprocs - atomic_load(&rt->npidle) >= rt->ncpus ||
	    !atomic_compare_exchange_strong(&rt->standby_spinning, &idle, 1))
		return false;	/* one spinner is enough */
	for (until = now + STANDBY_SPIN_NS; kg_now_ns() < until;) {
		if (rt->ev->pending() ||
		    atomic_load_explicit(&w->wake, memory_order_relaxed) !=
			    KG_WAKE_PARKED) {
			got = true;
			break;
		}
		/* give the CPU to any thread that wants it (a worker back
		 * from its system call) between polls: it is only borrowed */
		sched_yield();
	}
	atomic_store(&rt->standby_spinning, 0);
	return got;
}

/*
 * Bucket of ns: KG_HLAT_SUB linear steps within each power of two (the
 * two bits below the top one), so a percentile read back is within 25%.
 */
static uint32_t hlat_bucket(uint64_t ns)
{
	uint32_t top, sub;

	if (ns < KG_HLAT_SUB)
		return (uint32_t)ns;
	top = 63 - (uint32_t)__builtin_clzll(ns);
	sub = (uint32_t)(ns >> (top - 2)) & (KG_HLAT_SUB - 1);
	top = top < 40 ? top : 40;
	return top * KG_HLAT_SUB + sub;
}

/* The smallest ns of bucket b. */
static uint64_t hlat_floor(uint32_t b)
{
	uint32_t top = b / KG_HLAT_SUB, sub = b % KG_HLAT_SUB;

	if (top < 2)
		return b < KG_HLAT_SUB ? b : (uint64_t)1 << top;
	return ((uint64_t)KG_HLAT_SUB + sub) << (top - 2);
}

static void hlat_record(struct kg_rt *rt, uint64_t ns)
{
	/* relaxed: statistics, read racily by kg_stats */
	atomic_fetch_add_explicit(&rt->hlat_sum, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&rt->hlat_hist[hlat_bucket(ns)], 1,
				  memory_order_relaxed);
	uint64_t max = atomic_load_explicit(&rt->hlat_max,
					    memory_order_relaxed);

	while (ns > max && !atomic_compare_exchange_weak_explicit(
				   &rt->hlat_max, &max, ns,
				   memory_order_relaxed, memory_order_relaxed))
		;
}

/* The q-th quantile (0..1) of the recorded latencies: a bucket's floor. */
static uint64_t hlat_quantile(struct kg_rt *rt, double q)
{
	uint64_t n = 0, seen = 0, want;
	uint32_t b;

	for (b = 0; b < KG_HLAT_BUCKETS; b++)
		n += atomic_load_explicit(&rt->hlat_hist[b],
					  memory_order_relaxed);
	if (!n)
		return 0;
	want = (uint64_t)(q * (double)(n - 1)) + 1;
	for (b = 0; b < KG_HLAT_BUCKETS; b++) {
		seen += atomic_load_explicit(&rt->hlat_hist[b],
					     memory_order_relaxed);
		if (seen >= want)
			return hlat_floor(b);
	}
	return atomic_load_explicit(&rt->hlat_max, memory_order_relaxed);
}

void kg_handoff_seen(struct kg_rt *rt, struct kg_worker *from, uint64_t ns)
{
	/* from finds its proc gone at its next scheduler entry (workers_out) */
	atomic_fetch_add(&from->lost_seen, 1);
	atomic_fetch_add_explicit(&rt->handoffs, 1, memory_order_relaxed);
	hlat_record(rt, ns);
}

void kg_handoff_proc(struct kg_rt *rt, struct kg_proc *p)
{
	pthread_mutex_lock(&rt->lock);
	__startm(rt, p, false);
	pthread_mutex_unlock(&rt->lock);
}

/*
 * Park w until it is handed a proc (returns true), or a timer may be due
 * or the runtime is done (returns false; w holds no proc).
 */
static void park_worker(struct kg_worker *w, uint64_t until)
{
	struct kg_rt *rt = w->rt;
	struct kg_worker *expect = NULL;
	uint32_t expect_state;
	uint64_t deadline;
	bool watcher = false, standby = false;

	pthread_mutex_lock(&rt->lock);
	if (rt_done(rt)) {
		pthread_mutex_unlock(&rt->lock);
		return;
	}
	atomic_store_explicit(&w->wake, KG_WAKE_PARKED, memory_order_relaxed);
	w->nextp = NULL;
	w->idle_next = rt->idle_workers;
	rt->idle_workers = w;
	pthread_mutex_unlock(&rt->lock);

	/*
	 * Timers are the procs' work: a parked worker wakes for one only if
	 * an idle proc could run it. With every proc busy, their workers fire
	 * due timers at their next scheduling point, and the worker that
	 * idles a proc looks at the timers before it parks here; a worker
	 * without a proc waking for a due timer could only find no proc and
	 * park again, over and over, on the CPUs the busy procs need.
	 * So: with an idle proc, a future deadline makes w the timer watcher
	 * (if none is: one watcher is enough), and a deadline already due
	 * sends w back to take that proc; otherwise w sleeps until woken.
	 */
	deadline = kg_timers_next_all(rt);
	if (deadline != UINT64_MAX && !atomic_load(&rt->npidle))
		deadline = UINT64_MAX;
	if (deadline != UINT64_MAX && deadline > kg_now_ns()) {
		if (atomic_compare_exchange_strong(&rt->timer_watcher, &expect,
						   w))
			watcher = true;
		else
			deadline = UINT64_MAX;
	}
	if (until < deadline)
		deadline = until;
	atomic_fetch_add_explicit(&rt->parks, 1, memory_order_relaxed);
	for (;;) {
		uint32_t state;

		/* claim before reading wake: see wake_parked */
		if (!standby)
			standby = standby_claim(w, watcher);
		state = atomic_load(&w->wake);
		if (state == KG_WAKE_HANDOFF)
			break;
		if (standby && standby_take(w))
			break;
		if (state == KG_WAKE_KICK) {
			expect_state = KG_WAKE_KICK;
			atomic_compare_exchange_strong(&w->wake, &expect_state,
						       KG_WAKE_PARKED);
			continue;
		}
		if (watcher) {
			/*
			 * seq_cst store of our deadline, then re-read of the
			 * heaps: pairs with kg_timer_arm's heap.next store
			 * then load of timer_watch_until. A timer armed in
			 * between kicks us (wake: PARKED -> KICK), and the
			 * futex wait below then returns at once.
			 */
			atomic_store(&rt->timer_watch_until, deadline);
			deadline = kg_timers_next_all(rt);
			atomic_store(&rt->timer_watch_until, deadline);
			if (deadline == UINT64_MAX) {
				/*
				 * Nothing left to watch (another worker fired
				 * the timer): give the role up, so that this
				 * worker may be a standby; a watcher never is,
				 * and it may be the only spare. A timer armed
				 * from now on finds no watcher and wakes a proc
				 * (timer_notify); one armed before this CAS
				 * kicked us, and the loop looks again.
				 */
				watcher = false;
				expect = w;
				atomic_compare_exchange_strong(
					&rt->timer_watcher, &expect, NULL);
				/*
				 * seq_cst CAS, then a re-read: a timer armed
				 * before it saw w as the watcher (and maybe
				 * only kicked us), so look once more and keep
				 * the role if one is there.
				 */
				deadline = kg_timers_next_all(rt);
				expect = NULL;
				if (deadline != UINT64_MAX &&
				    atomic_compare_exchange_strong(
					    &rt->timer_watcher, &expect, w)) {
					watcher = true;
					atomic_store(&rt->timer_watch_until,
						     deadline);
				} else {
					deadline = UINT64_MAX;
				}
				if (until < deadline)
					deadline = until;
				continue;
			}
			if (until < deadline)
				deadline = until;
		}
		if (deadline != UINT64_MAX && kg_now_ns() >= deadline) {
			/* a timer is due: leave the list unless popped */
			pthread_mutex_lock(&rt->lock);
			if (__widle_remove(rt, w)) {
				pthread_mutex_unlock(&rt->lock);
				break;
			}
			pthread_mutex_unlock(&rt->lock);
			deadline = UINT64_MAX;	/* popped: handoff coming */
			if (watcher) {
				watcher = false;
				atomic_store(&rt->timer_watch_until, UINT64_MAX);
				expect = w;
				atomic_compare_exchange_strong(
					&rt->timer_watcher, &expect, NULL);
			}
			continue;
		}
		if (standby && standby_spin(w))
			continue;
		if (standby)
			rt->ev->wait(w, deadline);
		else
			kg_futex_wait(&w->wake, KG_WAKE_PARKED, deadline);
	}
	if (standby) {
		/* a record the wait returned but nobody handled: pass it on */
		if (w->kev_full)
			standby_take(w);
		standby_vacate(w);
	}
	if (watcher) {
		atomic_store(&rt->timer_watch_until, UINT64_MAX);
		expect = w;
		atomic_compare_exchange_strong(&rt->timer_watcher, &expect,
					       NULL);
	}
	if (atomic_load_explicit(&w->wake, memory_order_acquire) ==
		    KG_WAKE_HANDOFF && w->nextp) {
		acquire_proc(w, w->nextp);
		w->nextp = NULL;
	}
}

/* ------------------------------------------------------------------ */
/* Deadlock detection (Go's checkdead)                                 */
/* ------------------------------------------------------------------ */

#define KG_DEADLOCK_NS (100 * 1000000ull)

/*
 * Nothing can run now and nothing could make anything run: every proc is
 * idle, no run queue holds work, no timer is armed, and no plain thread
 * that has used kgreen objects is alive (it could wake a coroutine).
 * A worker blocked in a system call holds its proc, so it counts as busy;
 * one whose proc was handed off counts through workers_out; and before
 * it reports, deadlock_watch checks that every live coroutine waits.
 */
static bool deadlock_suspect(struct kg_rt *rt)
{
	return atomic_load(&rt->npidle) == rt->nprocs && !any_work(rt) &&
	       workers_out(rt) == 0 &&
	       kg_timers_next_all(rt) == UINT64_MAX &&
	       atomic_load(&kg_foreign_threads) == 0 && kg_live(rt) > 0;
}

/* Anything that moves when a coroutine runs or is woken. */
static uint64_t progress(struct kg_rt *rt)
{
	uint64_t sum = atomic_load(&kg_foreign_wakes);
	uint32_t i;

	for (i = 0; i < atomic_load(&rt->nworkers); i++)
		if (rt->workers[i])
			sum += kg_load_relaxed(&rt->workers[i]->switches);
	for (i = 0; i < rt->nprocs; i++)
		sum += kg_load_relaxed(&rt->procs[i].spawned);
	return sum;
}

struct dl_report {
	uint64_t n;
};

static void report_one(struct kg_co *co, void *arg)
{
	struct dl_report *r = arg;
	uint32_t st = atomic_load_explicit(&co->state, memory_order_relaxed);

	r->n++;
	fprintf(stderr, "\ncoroutine %ld%s%s%s [%s",
		co->id, co->name[0] ? " \"" : "", co->name,
		co->name[0] ? "\"" : "",
		st == KG_CO_WAITING ? (co->wait_reason ? co->wait_reason :
							 "waiting") :
		st == KG_CO_RUNNABLE ? "runnable" : "running");
	if (st == KG_CO_WAITING && co->wait_obj)
		fprintf(stderr, " %p", co->wait_obj);
	fprintf(stderr, "]:\n\tentry %s at %p, arg %p\n",
		kg_co_entry_name(co), (void *)(uintptr_t)co->fn, co->arg);
}

static void co_awake(struct kg_co *co, void *arg)
{
	if (atomic_load_explicit(&co->state, memory_order_relaxed) !=
	    KG_CO_WAITING)
		*(bool *)arg = true;
}

/* Whether some live coroutine is not waiting (running or runnable). */
static bool any_co_awake(struct kg_rt *rt)
{
	bool awake = false;

	kg_co_foreach(rt, co_awake, &awake);
	return awake;
}

/* Print Go's message and where every coroutine waits; end the runtime. */
static void report_deadlock(struct kg_rt *rt)
{
	struct dl_report r = { 0 };

	fprintf(stderr, "all coroutines are asleep - deadlock!\n");
	kg_co_foreach(rt, report_one, &r);
	fprintf(stderr, "\n(%llu coroutine%s; kg_run returns -EDEADLK)\n",
		(unsigned long long)r.n, r.n == 1 ? "" : "s");
	fflush(stderr);
	rt_finish(rt);
}

/*
 * Called by a worker about to park without a proc. Returns how long it
 * may sleep: forever normally; while a deadlock is suspected, until the
 * suspicion is KG_DEADLOCK_NS old, so that some worker comes back to
 * confirm it (no progress meanwhile) and report it.
 */
static uint64_t deadlock_watch(struct kg_worker *w)
{
	struct kg_rt *rt = w->rt;
	uint64_t now, prog, until = UINT64_MAX;
	bool candidate = false, awake, report = false;

	if (!deadlock_suspect(rt)) {
		pthread_mutex_lock(&rt->lock);
		rt->dl_since = 0;
		pthread_mutex_unlock(&rt->lock);
		return UINT64_MAX;
	}
	now = kg_now_ns();
	prog = progress(rt);
	pthread_mutex_lock(&rt->lock);
	if (!rt->dl_since || rt->dl_progress != prog) {
		rt->dl_since = now;
		rt->dl_progress = prog;
	} else if (now - rt->dl_since >= KG_DEADLOCK_NS && !rt_done(rt) &&
		   !rt->deadlock) {
		candidate = true;
	}
	until = rt->dl_since + KG_DEADLOCK_NS;
	pthread_mutex_unlock(&rt->lock);
	if (!candidate)
		return until;
	/*
	 * A coroutine running or runnable, yet in no queue and on no proc,
	 * is in transit on a worker that lost its proc (back from a
	 * handed-off call, on its way to the global queue) and was
	 * descheduled. It is not asleep: no report. That worker parks when
	 * it is done, and the watch starts over. The walk takes the stack
	 * allocator's lock, so it runs outside rt.lock.
	 */
	awake = any_co_awake(rt);
	pthread_mutex_lock(&rt->lock);
	if (awake) {
		rt->dl_since = 0;
	} else if (!rt->deadlock && !rt_done(rt) &&
		   rt->dl_progress == progress(rt)) {
		/* decided under rt.lock: exactly one worker reports */
		rt->deadlock = 1;
		report = true;
	}
	pthread_mutex_unlock(&rt->lock);
	if (report)
		report_deadlock(rt);
	return UINT64_MAX;
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

		if (rt_done(rt))
			return NULL;
		if (!w->proc) {
			struct kg_proc *p = pidle_get(rt);

			if (p)
				acquire_proc(w, p);
			else
				park_worker(w, UINT64_MAX);
			continue;
		}
		co = find_local(w);
		if (co)
			goto found;
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
		} while (!rt_done(rt) && kg_now_ns() < spin_until);

		/* give up the proc, then look once more (see kg_wakep) */
		pthread_mutex_lock(&rt->lock);
		co = __gq_pop(rt);
		if (co) {
			pthread_mutex_unlock(&rt->lock);
			goto found;
		}
		{
			struct kg_proc *p = w->proc;

			release_proc(w);
			__pidle_put(rt, p);
		}
		pthread_mutex_unlock(&rt->lock);
		if (w->spinning) {
			w->spinning = false;
			atomic_fetch_sub(&rt->nspinning, 1);
		}
		if (any_work(rt)) {
			struct kg_proc *p = pidle_get(rt);

			if (p) {
				acquire_proc(w, p);
				continue;
			}
		}
		if (kg_timers_next_all(rt) <= kg_now_ns()) {
			struct kg_proc *p = pidle_get(rt);

			if (p) {
				acquire_proc(w, p);
				/* fire everyone's expired timers here */
				co = steal_work(w);
				if (co)
					goto found;
				continue;
			}
		}
		park_worker(w, deadlock_watch(w));
		if (rt_done(rt))
			return NULL;
		continue;
found:
		reset_spinning(w);
		return co;
	}
}

static void worker_loop(struct kg_worker *w)
{
	struct kg_co *co;

	sched_enter(w);
	while ((co = find_runnable(w)) != NULL)
		w = switch_to(w, co);
	if (w->proc) {
		struct kg_proc *p = w->proc;

		release_proc(w);
		pthread_mutex_lock(&w->rt->lock);
		__pidle_put(w->rt, p);
		pthread_mutex_unlock(&w->rt->lock);
	}
}

static void g0_init(struct kg_worker *w)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;

	w->g0.id = 0;
	w->errno_addr = &errno;	/* on the worker's own thread */
	snprintf(w->g0.name, sizeof(w->g0.name), "g0/%u", w->index);
	if (pthread_getattr_np(pthread_self(), &attr) == 0) {
		if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
			w->g0.stack.lo = addr;
			w->g0.stack.hi = (char *)addr + size;
		}
		pthread_attr_destroy(&attr);
	}
#ifdef KG_TSAN
	w->g0.tsan_fiber = __tsan_get_current_fiber();
#endif
}

static void drop_event(void *arg, const struct kg_handoff_event *ev)
{
	(void)arg;
	kg_debug("dropping a handoff record of an earlier runtime (proc %u, "
		 "worker %u)", ev->proc, ev->worker);
}

/* Tell the backend which thread w is (the kernel side looks workers up). */
static void worker_register(struct kg_worker *w)
{
	int err;

	if (!w->rt->ev)
		return;
	w->tid = (uint32_t)gettid();
	if ((err = w->rt->ev->worker_add(w))) {
		kg_debug("worker %u: cannot register with the kernel side "
			 "(%s); its blocks will not hand off", w->index,
			 strerror(-err));
		w->tid = 0;
	}
}

static void worker_unregister(struct kg_worker *w)
{
	if (w->tid)
		w->rt->ev->worker_del(w);
	w->tid = 0;
}

static void *worker_thread(void *arg)
{
	struct kg_worker *w = arg;

	tls_worker = w;
	g0_init(w);
	kg_altstack_setup(w);
	worker_register(w);
	/*
	 * Records left from an earlier kg_run of this process (a worker that
	 * blocked after that runtime ended) name procs and workers of a
	 * runtime that is gone: the first worker to start (kg_run's first
	 * standby, before main runs) drops them.
	 */
	if (w->tid && !atomic_exchange(&w->rt->stale_dropped, 1))
		w->rt->ev->events(w, drop_event, NULL);
	pthread_mutex_lock(&w->rt->lock);	/* pairs with __startm */
	pthread_mutex_unlock(&w->rt->lock);
	if (w->nextp) {
		acquire_proc(w, w->nextp);
		w->nextp = NULL;
	}
	worker_loop(w);
	worker_unregister(w);
	kg_altstack_teardown(w);
	tls_worker = NULL;
	atomic_store(&w->exited, 1);
	return NULL;
}

/*
 * Start the first standby (event backends) and wait until it waits on the
 * kernel side, so that main's first blocking call is already handed off.
 * With no work queued anywhere yet, the new worker parks at once and
 * claims the role (and starts the reserve spare, see standby_claim). The
 * wait is bounded: if the thread or its wait set cannot be made, the
 * runtime starts without a standby (one debug line) and the next worker
 * to park takes the role.
 */
#define STANDBY_START_NS (20 * 1000 * 1000ull)

static void start_standby(struct kg_rt *rt)
{
	struct timespec nap = { 0, 20 * 1000 };
	uint64_t until = kg_now_ns() + STANDBY_START_NS;
	bool ok;

	pthread_mutex_lock(&rt->lock);
	ok = __new_worker(rt, NULL, false);
	pthread_mutex_unlock(&rt->lock);
	if (!ok) {
		kg_debug("cannot start the standby spare worker");
		return;
	}
	while (!atomic_load(&rt->nstandby))
		if (kg_now_ns() >= until) {
			kg_debug("no standby after %llu ms: starting without",
				 STANDBY_START_NS / 1000000);
			return;
		} else {
			nanosleep(&nap, NULL);
		}
}

/* ------------------------------------------------------------------ */
/* kg_run                                                              */
/* ------------------------------------------------------------------ */

static unsigned int default_procs(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		n = CPU_COUNT(&set);
		if (n > 0)
			return (unsigned int)n;
	}
	n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned int)n : 1;
}

static int env_uint(const char *name, unsigned long max, unsigned long *out)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || v > max) {
		fprintf(stderr, "kgreen: ignoring %s=%s (expected 0..%lu)\n",
			name, s, max);
		return 0;
	}
	*out = v;
	return 1;
}

static int config(struct kg_rt *rt, const struct kg_config *cfg)
{
	unsigned long v;
	const char *backend = cfg ? cfg->backend : NULL;
	unsigned int i;

	if (cfg) {
		if (cfg->flags || cfg->procs > KG_MAX_PROCS)
			return -EINVAL;
		for (i = 0; i < sizeof(cfg->__reserved) / sizeof(cfg->__reserved[0]); i++)
			if (cfg->__reserved[i])
				return -EINVAL;
		if (cfg->stack_size && (cfg->stack_size < KG_STACK_MIN ||
					cfg->stack_size > KG_STACK_MAX))
			return -EINVAL;
	}
	kg_debug_on = 0;
	if (env_uint("KGREEN_DEBUG", 9, &v))
		kg_debug_on = (int)v;
	if (cfg && cfg->debug)
		kg_debug_on = cfg->debug;
	rt->debug = kg_debug_on;

	rt->nprocs = rt->ncpus = default_procs();
	if (env_uint("KGREEN_PROCS", KG_MAX_PROCS, &v) && v)
		rt->nprocs = (uint32_t)v;
	if (cfg && cfg->procs)
		rt->nprocs = cfg->procs;
	if (rt->nprocs > KG_MAX_PROCS)
		rt->nprocs = KG_MAX_PROCS;

	rt->stack_size = 256 * 1024;
	if (cfg && cfg->stack_size)
		rt->stack_size = cfg->stack_size;

	if (!backend)
		backend = getenv("KGREEN_BACKEND");
	if (!backend || !*backend || !strcmp(backend, "auto"))
		rt->backend = KG_BACKEND_NONE;	/* auto: decided in rt_init */
	else if (!strcmp(backend, "sysmon"))
		rt->backend = KG_BACKEND_SYSMON;
	else if (!strcmp(backend, "bpf"))
		rt->backend = KG_BACKEND_BPF;
	else if (!strcmp(backend, "kmod"))
		rt->backend = KG_BACKEND_KMOD;
	else
		return -EINVAL;
	return 0;
}

static const char *const backend_names[] = {
	[KG_BACKEND_NONE] = "none",
	[KG_BACKEND_SYSMON] = "sysmon",
	[KG_BACKEND_BPF] = "bpf",
	[KG_BACKEND_KMOD] = "kmod",
};

/*
 * Pick the backend (rt->backend: the one asked for, NONE for auto) and set
 * up the shared state. auto: kmod if /dev/kgreen is usable, else bpf if it
 * loads, else sysmon, saying on stderr why a kernel backend could not
 * serve (once per process and reason; a machine without the module is
 * the usual case and says nothing). A backend asked for by name that
 * cannot serve fails with -ENODEV and the reason.
 */
static void say_once(const char *fmt, const char *why)
{
	static char last[260];
	char line[260];

	snprintf(line, sizeof(line), fmt, why);
	if (strcmp(line, last)) {
		snprintf(last, sizeof(last), "%s", line);
		fputs(line, stderr);
	}
}

/* The kernel backends, in auto's order of preference. */
static const struct {
	uint32_t id;
	int (*open)(struct kg_shared **, const struct kg_evops **, char *,
		    size_t);
	/* auto's line when it cannot serve (%s: why), or NULL: silent */
	const char *fallback;
} kernel_backends[] = {
	{ KG_BACKEND_KMOD, kg_kmod_open,
	  "kgreen: kmod backend unavailable (%s); trying bpf\n" },
	{ KG_BACKEND_BPF, kg_bpf_open,
	  "kgreen: BPF backend unavailable (%s); using sysmon\n" },
};

static int backend_init(struct kg_rt *rt)
{
	char why[200];
	bool want_auto = rt->backend == KG_BACKEND_NONE;
	size_t i;
	int err;

	for (i = 0; i < sizeof(kernel_backends) / sizeof(kernel_backends[0]);
	     i++) {
		uint32_t id = kernel_backends[i].id;

		if (!want_auto && rt->backend != id)
			continue;
		err = kernel_backends[i].open(&rt->shared, &rt->ev, why,
					      sizeof(why));
		if (!err) {
			rt->backend = id;
			return 0;
		}
		if (!want_auto) {
			fprintf(stderr, "kgreen: backend %s is not available: "
				"%s\n", backend_names[id], why);
			return -ENODEV;
		}
		/* no /dev/kgreen: the usual machine, nothing to say */
		if (!(id == KG_BACKEND_KMOD && err == -ENOENT))
			say_once(kernel_backends[i].fallback, why);
	}
	rt->backend = KG_BACKEND_SYSMON;
	rt->ev = NULL;
	rt->shared = aligned_alloc(KG_CACHELINE, sizeof(*rt->shared));
	if (!rt->shared)
		return -ENOMEM;
	memset(rt->shared, 0, sizeof(*rt->shared));
	rt->shared_owned = true;
	return 0;
}

/* kg_co_foreach: let go of what co, left behind, waits in (kg_co.abandon). */
static void co_abandon(struct kg_co *co, void *arg)
{
	if (co->abandon)
		co->abandon(co, *(int *)arg);
}

static void rt_free(struct kg_rt *rt)
{
	uint32_t i;

	/*
	 * Coroutines main left behind: their stacks go below. Every wait
	 * still queued is withdrawn first, so that settling what was handed
	 * to the others (pass 1) can wake no coroutine of this runtime.
	 */
	if (rt->stacks) {
		int pass;

		for (pass = 0; pass < 2; pass++)
			kg_co_foreach(rt, co_abandon, &pass);
	}
	if (rt->procs)
		kg_timers_orphan(rt);
	for (i = 0; rt->procs && i < rt->nprocs; i++) {
		kg_procs_cache_drain(rt, &rt->procs[i], 0);
		if (rt->procs[i].timers.next)	/* initialized */
			kg_timers_destroy(&rt->procs[i].timers);
	}
	kg_stacks_destroy(rt);
	for (i = 0; i < KG_MAX_WORKERS; i++) {
		if (rt->workers[i] && rt->workers[i]->ep_fd >= 0) {
			close(rt->workers[i]->ep_fd);
			close(rt->workers[i]->kick_fd);
		}
		free(rt->workers[i]);
	}
	free(rt->gq.v);
	free(rt->procs);
	if (rt->shared_owned)
		free(rt->shared);
	pthread_mutex_destroy(&rt->lock);
	free(rt);
}

static struct kg_rt *rt_new(void)
{
	struct kg_rt *rt = calloc(1, sizeof(*rt));

	if (!rt)
		return NULL;
	pthread_mutex_init(&rt->lock, NULL);
	atomic_store(&rt->timer_watch_until, UINT64_MAX);
	return rt;
}

static int rt_init(struct kg_rt *rt)
{
	uint32_t i;

	int err = backend_init(rt);

	if (err)
		return err;
	/*
	 * No worker of ours is registered: the kernel side ignores it all,
	 * except kev_pending, the module's own count of queued records
	 * (kept: records of an earlier runtime are dropped in kg_run).
	 */
	memset(&rt->shared->workers, 0, sizeof(rt->shared->workers));
	memset(&rt->shared->procs, 0, sizeof(rt->shared->procs));
	rt->shared->hdr.gq_len = 0;
	rt->shared->hdr.flags = 0;
	rt->shared->hdr.version = KG_ABI_VERSION;
	rt->shared->hdr.nprocs = rt->nprocs;
	/*
	 * A worker is in scheduler code from its creation until it first runs
	 * a coroutine: the kernel side must not detach a proc it is taking
	 * (kg_run's thread may block in mmap or pthread_create meanwhile).
	 */
	for (i = 0; i < KG_MAX_WORKERS; i++) {
		rt->shared->workers[i].proc = KG_PROC_NONE;
		rt->shared->workers[i].in_sched = 1;
	}
	rt->procs = aligned_alloc(KG_CACHELINE,
				  sizeof(struct kg_proc) * rt->nprocs);
	if (!rt->procs)
		return -ENOMEM;
	memset(rt->procs, 0, sizeof(struct kg_proc) * rt->nprocs);
	for (i = 0; i < rt->nprocs; i++) {
		struct kg_proc *p = &rt->procs[i];

		p->index = i;
		p->slot = &rt->shared->procs[i];
		p->slot->owner = KG_OWNER_DETACHED;
		if (kg_timers_init(&p->timers))
			return -ENOMEM;
		p->timers.hint = &p->slot->timers;
	}
	return kg_stacks_init(rt);
}

/* Wait up to 1 s for every worker thread to leave; false if some did not. */
static bool join_workers(struct kg_rt *rt)
{
	uint32_t i, n = atomic_load(&rt->nworkers);
	struct timespec ts;
	bool all = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 1;
	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];

		if (!w)
			continue;
		if (pthread_timedjoin_np(w->thread, NULL, &ts) != 0) {
			kg_debug("worker %u still runs a coroutine after main "
				 "returned; its memory is left in place",
				 w->index);
			pthread_detach(w->thread);
			all = false;
		}
	}
	return all;
}

/*
 * join_workers left workers behind, each still in a coroutine (blocked in
 * the kernel, or computing). The shared slots they would write at their
 * next kgreen call are the process's (the backend's mapping), which the
 * next runtime reuses: give this runtime a private copy and point its
 * workers and procs there, and have the kernel side forget their threads
 * where that can be done from here (bpf; with kmod each thread leaves
 * when it ends). The rest of this runtime's memory stays for them; a
 * left-behind worker's next scheduler entry finds the runtime done and
 * ends its thread. They are in coroutine code, not the scheduler's: the
 * slot pointers are read again at their next entry.
 */
static void leave_behind(struct kg_rt *rt)
{
	struct kg_shared *priv = malloc(sizeof(*priv));
	uint32_t i, n = atomic_load(&rt->nworkers);

	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];

		if (w && !atomic_load(&w->exited) && w->tid &&
		    rt->ev->worker_forget) {
			rt->ev->worker_forget(w);
			w->tid = 0;	/* its own exit unregisters nothing */
		}
	}
	if (!priv) {
		kg_debug("no memory to detach the workers left behind from "
			 "the shared state");
		return;
	}
	memcpy(priv, rt->shared, sizeof(*priv));
	for (i = 0; i < n; i++)
		if (rt->workers[i])
			rt->workers[i]->slot = &priv->workers[i];
	for (i = 0; i < rt->nprocs; i++) {
		struct kg_proc *p = &rt->procs[i];

		p->slot = &priv->procs[i];
		p->timers.hint = &p->slot->timers;
	}
	rt->shared = priv;
}

/*
 * kg_run's own thread runs no coroutine: it starts worker 0 on proc 0
 * with main queued, then waits until the runtime ends (rt->done). A
 * coroutine may block in the kernel for ever (accept, read on a pipe
 * nobody writes); were it on kg_run's thread, kg_run could never return,
 * while Go's main ends the program whatever its goroutines do. So the
 * caller's thread only supervises: when main returns, it joins the
 * workers for up to 1 s and returns; a worker still blocked then is left
 * behind with the runtime's memory (see join_workers).
 */
int kg_run(void (*main_fn)(void *), void *arg, const struct kg_config *cfg)
{
	struct kg_rt *rt;
	struct kg_worker *w0;
	struct kg_proc *p0;
	struct kg_co *co;
	int expect = 0, err;
	bool was_foreign;
	uint32_t i;

	if (!main_fn)
		return -EINVAL;
	if (tls_worker)
		return -EBUSY;
	if (!atomic_compare_exchange_strong(&rt_running, &expect, 1))
		return -EBUSY;
	rt = rt_new();
	if (!rt) {
		atomic_store(&rt_running, 0);
		return -ENOMEM;
	}
	err = config(rt, cfg);
	if (!err)
		err = rt_init(rt);
	if (!err && kg_segv_install())
		err = -ENOMEM;
	if (err) {
		rt_free(rt);
		atomic_store(&rt_running, 0);
		return err;
	}
	kg_debug("runtime starting: %u procs, backend %s, stack guards %s",
		 rt->nprocs, backend_names[rt->backend],
		 rt->guard_mode == KG_GUARD_MADVISE ? "madvise" :
		 rt->guard_mode == KG_GUARD_MPROTECT ? "mprotect" : "canary");

	/* this thread waits in kg_run: it can wake no coroutine meanwhile */
	was_foreign = kg_foreign_pause();
	if (rt->backend == KG_BACKEND_SYSMON && (err = kg_sysmon_start(rt)))
		goto out;
	for (i = rt->nprocs; i-- > 1;)
		__pidle_put(rt, &rt->procs[i]);

	/* main, queued on proc 0 before any thread can own it */
	p0 = &rt->procs[0];
	co = kg_co_alloc(rt, p0, rt->stack_size);
	if (!co) {
		err = -ENOMEM;
		goto out;
	}
	/* worker 0 runs main first; its thread starts after the standby's */
	w0 = worker_new(rt);
	if (!w0) {
		err = -ENOMEM;
		goto out;
	}
	co->fn = main_fn;
	co->arg = arg;
	co->is_main = 1;
	co->id = next_id(p0);
	strcpy(co->name, "main");
	co->named = 1;
	kg_ctx_make(co, co);
	rt->main_co = co;
	kg_store_relaxed(&p0->live, 1);
	atomic_store_explicit(&cur_rt, rt, memory_order_release);
	/*
	 * The standby first, so that even main's first block hands off; with
	 * nothing queued anywhere yet, it parks at once and takes the role.
	 * Then main goes on proc 0, which no worker owns until worker 0
	 * starts (the thread's creation orders the queue's stores).
	 */
	if (rt->ev)
		start_standby(rt);
	runq_put(rt, p0, co, false);
	err = worker_start(w0, p0, false);
	if (err) {
		/* main never ran: its stack goes with the runtime */
		rt->workers[0] = NULL;
		free(w0);
		err = -err;
		rt_finish(rt);
	}
	/* acquire: pairs with rt_finish's release store */
	while (!atomic_load_explicit(&rt->done, memory_order_acquire))
		kg_futex_wait(&rt->done, 0, UINT64_MAX);
	if (rt->deadlock)
		err = -EDEADLK;

out:
	atomic_store_explicit(&cur_rt, NULL, memory_order_release);
	if (!rt->done)
		rt_finish(rt);	/* a standby may have started */
	kg_sysmon_stop(rt);
	if (rt->debug && kg_live(rt))
		kg_debug("main returned with %llu coroutine(s) still alive",
			 (unsigned long long)kg_live(rt));
	/*
	 * A worker may be starting under rt.lock (it checked done before
	 * rt_finish set it): let it finish, so that join_workers sees it.
	 * Later ones see done and start nothing.
	 */
	pthread_mutex_lock(&rt->lock);
	pthread_mutex_unlock(&rt->lock);
	if (join_workers(rt))
		rt_free(rt);
	else if (rt->ev)
		leave_behind(rt);
	kg_segv_restore();
	kg_foreign_resume(was_foreign);
	atomic_store(&rt_running, 0);
	return err;
}

/* ------------------------------------------------------------------ */
/* Introspection                                                       */
/* ------------------------------------------------------------------ */

const char *kg_backend_name(void)
{
	struct kg_rt *rt = kg_rt_current();

	return rt ? backend_names[rt->backend] : "none";
}

int kg_stats(struct kg_stats *out)
{
	struct kg_rt *rt;
	uint32_t i;

	if (!out)
		return -EINVAL;
	rt = kg_rt_current();
	if (!rt)
		return -ESRCH;
	memset(out, 0, sizeof(*out));
	out->procs = rt->nprocs;
	out->workers = atomic_load(&rt->nworkers);
	out->stack_guard = rt->guard_mode;
	out->coroutines = kg_live(rt);
	for (i = 0; i < rt->nprocs; i++) {
		struct kg_proc *p = &rt->procs[i];

		out->steals += kg_load_relaxed(&p->steals);
		out->timer_steals += kg_load_relaxed(&p->timer_steals);
		out->spawned += kg_load_relaxed(&p->spawned);
	}
	for (i = 0; i < atomic_load(&rt->nworkers); i++)
		if (rt->workers[i])
			out->switches += kg_load_relaxed(&rt->workers[i]->switches);
	out->parks = atomic_load(&rt->parks);
	out->handoffs = atomic_load(&rt->handoffs);
	out->handoff_ns_sum = atomic_load(&rt->hlat_sum);
	out->handoff_ns_max = atomic_load(&rt->hlat_max);
	out->handoff_ns_p50 = hlat_quantile(rt, 0.50);
	out->handoff_ns_p99 = hlat_quantile(rt, 0.99);
	for (i = 0; i < KG_MAX_WORKERS; i++)
		out->blocks += __atomic_load_n(&rt->shared->workers[i].blocks,
					       __ATOMIC_RELAXED);
	out->stack_bytes = kg_stack_bytes(rt);
	return 0;
}
