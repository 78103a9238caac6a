// SPDX-License-Identifier: MIT
/*
 * handoff.c - the userspace half of the handoff: how a proc changes hands
 * between workers, and how a worker whose proc the kernel side took while
 * it blocked comes back.
 *
 * The problem. A worker (Go's M, an OS thread) runs coroutines only while
 * it holds a proc (Go's P: a run queue and timers). When the worker blocks
 * in the kernel, in any system call, page fault or library call, the
 * coroutines queued on its proc must not wait for it: the proc has to move
 * to another thread within microseconds, without the running thread
 * paying a lock or an atomic on its fast path, and without userspace ever
 * guessing whether a thread is blocked (it cannot know; the kernel does).
 *
 * The shared state (uapi/kgreen.h), memory both sides see: the module's
 * mmapped pages, the BPF program's mmapped array map, or (sysmon) our own.
 *   worker slot  in_sched  1 while the worker runs scheduler code holding
 *                          a proc; written only by the worker, relaxed
 *                          stores and a compiler barrier (kg_enter_sched,
 *                          kg_leave_sched)
 *                proc      the proc it holds, or KG_PROC_NONE
 *   proc slot    owner     a worker's index, or KG_OWNER_DETACHED
 *                work hint the run queue's indices, runnext, timers: the
 *                          kernel side reads them to see if a detach pays
 *
 * The owner changes only by compare-and-swap, and exactly these ways:
 *
 *   DETACHED --acquire (kg_proc_acquire)--> W      W took it: from the idle
 *                                                  list, from a parked
 *                                                  worker's hand-over
 *                                                  (nextp), or from a record
 *   W --release (kg_proc_release)--> DETACHED      W itself: the proc goes
 *                                                  idle (find_runnable) or
 *                                                  W's thread ends
 *   W --detach (kernel side)--> DETACHED           at W's blocking switch,
 *                                                  or at the end of a time
 *                                                  slice, on W's CPU
 *   W --retake (sysmon.c)--> DETACHED              W is in a marked region,
 *                                                  or its slice is up, or
 *                                                  (a kernel backend) W
 *                                                  sleeps in the kernel
 *                                                  holding a proc that got
 *                                                  work after W blocked,
 *                                                  and the ask handshake
 *                                                  won (kg_proc_ask_take)
 *
 * A detached proc is always in exactly one place: on rt.idle_procs, in a
 * parked worker's nextp, in a new worker's nextp, named by a record in the
 * kernel side's queue, or, for the few instructions between taking it and
 * passing it on, in the hands of whoever took it (a standby reading the
 * records, sysmon's retake). Nothing else holds it, so nothing is lost.
 *
 * A proc is lost only at a blocking switch (or, with sysmon, while its
 * worker is inside a region marked as blocking), or when one coroutine
 * has run on its worker for a whole time slice (kg_slice_due, uapi): the
 * kernel side then detaches in the interrupt that stopped the worker on
 * its own CPU (the same program-order argument as below), sysmon by the
 * handshake kg_proc_ask_take explains; either way the coroutine runs on, off its
 * proc, and comes back like one whose call returned. The kernel side detaches at
 * the context switch of a registered worker that leaves its CPU without
 * being runnable (preemption is not a block), on that worker's own CPU,
 * only if kg_detach_rule (uapi/kgreen.h, the one copy the module, the BPF
 * program and sysmon share) says so: in_sched is 0, the slot names a proc,
 * and that proc has work. The worker's own plain stores to its slot were
 * made on that CPU before the switch, so program order makes them current
 * there (the argument rseq rests on): no barrier on the worker's side.
 * The kernel then sets the worker's slot.proc to NONE and queues a record
 * {proc, worker, time}; it never starts or wakes a worker itself beyond
 * waking a standby, and it never detaches a proc from a worker that is
 * running or in scheduler code.
 *
 *   W runs a coroutine (in_sched 0)
 *        | blocks in the kernel
 *        v
 *   kernel side: kg_detach_rule == YES: CAS owner W -> DETACHED,
 *   W.slot.proc = NONE, record {proc, W, ts} queued, standby woken
 *        |                                  |
 *        v                                  v
 *   standby S (kg_park_worker, waiting     W's call returns; its coroutine
 *   in the backend's wait) takes the    runs on without a proc until its
 *   records (standby_take): CAS         next kgreen call, which reads
 *   DETACHED -> S for one, gives the    slot.proc == NONE (kg_proc_lost)
 *   others to parked or new workers     and goes through kg_proc_regain:
 *   (__kg_startm); runs the proc's      an idle proc if there is one,
 *   queue                               else the scheduler queues the
 *                                       coroutine globally and W parks,
 *                                       a spare (Go's exitsyscall)
 *
 * Locks. rt.lock (idle lists, worker creation) is never held across a
 * context switch or a futex wait. A coroutine holding a kgreen lock (a
 * channel's, a sync object's) may have its proc taken like any other (its
 * worker may block in the lock's own futex), but must not be queued while
 * it holds the lock: its waiters, blocked in the kernel, may hold the proc
 * it would wait for. So an entry with a lock held (a wake-up, a park whose
 * commit releases the lock) only forgets a lost proc (kg_proc_forget); the
 * coroutine goes back through kg_proc_regain at its next entry without
 * one.
 *
 * Who wakes whom. A parked worker sleeps on its futex word (wake); a
 * standby sleeps in the backend's wait instead (ops->wait), so that the
 * kernel side can wake it; at most one parked worker is the watcher, which
 * sleeps in the poller (netpoll.c: descriptors coroutines wait on, and an
 * eventfd for wake-ups) until the earliest timer of all procs, and runs
 * what either brings on an idle proc. Waking a parked worker hands it a
 * proc first (nextp, then wake = HANDOFF).
 *
 * Backends: bpf.c and kmod.c behind struct kg_evops (backend.h); sysmon.c
 * retakes procs itself through kg_handoff_proc. The scheduler (sched.c)
 * sits on top of this file: it decides when to idle a proc, wake one, or
 * park a worker; this file decides how a proc moves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/membarrier.h>

#include "handoff.h"
#include "netpoll.h"
#include "stack.h"
#include "timer.h"

/* ------------------------------------------------------------------ */
/* Owning a proc                                                       */
/* ------------------------------------------------------------------ */

void kg_proc_acquire(struct kg_worker *w, struct kg_proc *p)
{
	__u32 expect = KG_OWNER_DETACHED;

	/* only detached procs are handed out; CAS pairs with the kernel's */
	if (!__atomic_compare_exchange_n(&p->slot->owner, &expect, w->index,
					 false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		kg_throw("kg_proc_acquire: proc %u owned by worker %u", p->index,
			 expect);
#ifdef KG_TSAN
	__tsan_acquire(p);	/* see kg_leave_sched */
#endif
	w->proc = p;
	/* relaxed: the kernel side reads it on this CPU (program order) */
	__atomic_store_n(&w->slot->proc, p->index, __ATOMIC_RELAXED);
}

void kg_proc_release(struct kg_worker *w)
{
	struct kg_proc *p = w->proc;
	__u32 expect = w->index;

	__atomic_store_n(&w->slot->proc, KG_PROC_NONE, __ATOMIC_RELAXED);
	if (!__atomic_compare_exchange_n(&p->slot->owner, &expect,
					 KG_OWNER_DETACHED, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		kg_throw("kg_proc_release: proc %u owned by worker %u, not %u",
			 p->index, expect, w->index);
	w->proc = NULL;
}


/*
 * slot.proc has KG_PROC_ASK set (kg_proc_lost): NONE, the proc is gone;
 * else sysmon asks for it at the end of a time slice, and w, entering
 * the runtime, is no hog: it keeps the proc by clearing the bit, unless
 * sysmon's compare-and-swap to NONE came first (kg_proc_ask_take).
 * acquire: a NONE stored by sysmon brings its count of preempts with it.
 */
bool kg_proc_taken(struct kg_worker *w)
{
	__u32 v = __atomic_load_n(&w->slot->proc, __ATOMIC_ACQUIRE);

	if (v == KG_PROC_NONE)
		return true;
	if (!(v & KG_PROC_ASK))
		return false;
	if (__atomic_compare_exchange_n(&w->slot->proc, &v, v & ~KG_PROC_ASK,
					false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		return false;
	return v == KG_PROC_NONE;
}

/*
 * w has let go of a lost proc: if it was taken at the end of a time slice
 * (the taker counted it in the slot's preempts before it stored NONE),
 * give the place back in hdr.slice_out.
 */
void kg_slice_back(struct kg_worker *w)
{
	__u32 n = __atomic_load_n(&w->slot->preempts, __ATOMIC_RELAXED);

	if (n == w->preempts_seen)
		return;
	__atomic_fetch_sub(&w->rt->shared->hdr.slice_out, n - w->preempts_seen,
			   __ATOMIC_RELAXED);
	w->preempts_seen = n;
	KG_PROBE2(preempted, w->index, w->cur->id);
}

/*
 * w's proc was taken while its coroutine blocked (kg_proc_lost): let go
 * of it and take an idle proc if there is one. false: none; the caller
 * (sched.c) queues the coroutine globally and w parks as a spare.
 */
bool kg_proc_regain(struct kg_worker *w)
{
	struct kg_proc *p;

	kg_proc_forget(w);
	p = kg_pidle_get(w->rt);
	if (!p)
		return false;
	kg_proc_acquire(w, p);
	return true;
}

/* ------------------------------------------------------------------ */
/* Idle procs, parked workers, starting workers                        */
/* ------------------------------------------------------------------ */

static void *worker_thread(void *arg);

void __kg_pidle_put(struct kg_rt *rt, struct kg_proc *p)
{
	p->idle_next = rt->idle_procs;
	rt->idle_procs = p;
	atomic_fetch_add(&rt->npidle, 1);
}

struct kg_proc *__kg_pidle_get(struct kg_rt *rt)
{
	struct kg_proc *p = rt->idle_procs;

	if (p) {
		rt->idle_procs = p->idle_next;
		atomic_fetch_sub(&rt->npidle, 1);
	}
	return p;
}

struct kg_proc *kg_pidle_get(struct kg_rt *rt)
{
	struct kg_proc *p;

	if (!atomic_load(&rt->npidle))
		return NULL;
	pthread_mutex_lock(&rt->lock);
	p = __kg_pidle_get(rt);
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
 * its load of wake (kg_park_worker): one side sees the other.
 */
static void wake_parked(struct kg_worker *w)
{
	kg_futex_wake(&w->wake, 1);
	if (atomic_load(&w->standby))
		w->rt->ev->kick(w);
	/* the watcher may sleep in the poller; seq_cst: as for standby,
	 * against its store of timer_watcher then load of wake */
	if (w->rt->np && atomic_load(&w->rt->timer_watcher) == w)
		kg_netpoll_break(w->rt->np);
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

struct kg_worker *kg_worker_new(struct kg_rt *rt)
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
	w->cur = &w->g0;
	atomic_store_explicit(&w->g0.state, KG_CO_RUNNING, memory_order_relaxed);
	rt->workers[idx] = w;
	atomic_store(&rt->nworkers, idx + 1);
	return w;
}

/*
 * End the runtime (main returned, or a deadlock was reported): every
 * worker stops at its next scheduler entry, parked ones are woken, and
 * kg_run's thread, which waits on rt->done, is woken to tear down.
 */
void kg_rt_finish(struct kg_rt *rt)
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
uint32_t kg_workers_out(struct kg_rt *rt)
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
int kg_worker_start(struct kg_worker *w, struct kg_proc *p, bool spinning)
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
	if (kg_rt_done(rt))
		return false;
	w = kg_worker_new(rt);
	if (!w)
		return false;
	if (!kg_worker_start(w, p, spinning))
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
void __kg_startm(struct kg_rt *rt, struct kg_proc *p, bool spinning)
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
	__kg_pidle_put(rt, p);
	if (spinning)
		atomic_fetch_sub(&rt->nspinning, 1);
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
		    rt->nprocs + KG_STANDBYS + 1 + kg_workers_out(rt) &&
	    !__new_worker(rt, NULL, false) && !kg_rt_done(rt))
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
	if (atomic_fetch_sub(&rt->nstandby, 1) > 1 || kg_rt_done(rt))
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
	if (!t->mine && !kg_rt_done(rt) && __widle_remove(rt, t->w)) {
		t->mine = p;
		KG_PROBE3(handoff, ev->proc, ev->worker, (int)t->w->index);
	} else {
		__kg_startm(rt, p, false);
		KG_PROBE3(handoff, ev->proc, ev->worker, -1);
	}
	pthread_mutex_unlock(&rt->lock);
}

static bool standby_take(struct kg_worker *w)
{
	struct standby_take t = { .w = w, .now = kg_now_ns() };

	if (w->rt->ev->events(w, standby_take_one, &t) <= 0 || !t.mine)
		return false;
	kg_proc_acquire(w, t.mine);
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

/* ------------------------------------------------------------------ */
/* Handoff latencies (kg_stats)                                        */
/* ------------------------------------------------------------------ */

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
uint64_t kg_handoff_quantile(struct kg_rt *rt, double q)
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
	/* from finds its proc gone at its next scheduler entry (kg_workers_out) */
	atomic_fetch_add(&from->lost_seen, 1);
	atomic_fetch_add_explicit(&rt->handoffs, 1, memory_order_relaxed);
	hlat_record(rt, ns);
}

void kg_handoff_proc(struct kg_rt *rt, struct kg_proc *p)
{
	pthread_mutex_lock(&rt->lock);
	__kg_startm(rt, p, false);
	pthread_mutex_unlock(&rt->lock);
}

/*
 * kg_strand_kick's slow path (handoff.h): the watch sleeps; wake it. The
 * seq_cst exchange, after the fence of kg_strand_kick's caller: against
 * the watch's store of 0 then its look at the queues (sysmon.c).
 */
void kg_strand_wake(struct kg_rt *rt)
{
	if (atomic_exchange(&rt->strand_armed, 1))
		return;
	atomic_fetch_add(&rt->mon_seq, 1);
	kg_futex_wake(&rt->mon_seq, 1);
}

/*
 * Taking a proc from another thread: the ask. The kernel sides take a
 * proc only on its worker's own CPU, where program order is enough;
 * sysmon.c's monitor runs on another, and its worker promised nothing: it
 * may enter scheduler code and use its proc at any instruction, with no
 * more than a plain store of in_sched. So the taker asks first and decides
 * after a fence it makes every worker execute:
 *
 *   taker                               worker (scheduler entry)
 *   CAS slot.proc p -> p|ASK            in_sched = 1        (plain)
 *   membarrier(PRIVATE_EXPEDITED)       load slot.proc      (plain)
 *   load in_sched, switches             ASK seen: CAS p|ASK -> p (keep)
 *   still 0, unchanged:                           or NONE found (taken)
 *     CAS p|ASK -> NONE (take)
 *   else CAS p|ASK -> p (withdraw)
 *
 * The worker uses its proc only in scheduler code, between its store of
 * in_sched 1 and its release store of 0 (kg_enter_sched, kg_leave_sched).
 * membarrier puts a full barrier in every running thread of the process
 * between the taker's CAS and its loads; where that barrier falls in the
 * worker's latest entry decides:
 *  - before the entry's load of slot.proc: the load sees ASK, and the
 *    worker keeps the proc by CAS (then the taker's final CAS fails) or
 *    finds NONE and never touches it;
 *  - after that load, with the worker still in scheduler code: the taker
 *    sees in_sched 1 (the barrier orders the store before its loads) and
 *    withdraws;
 *  - after that load, the worker having left again: if it switched, the
 *    count moved and the taker withdraws; if not (a kg_go, a wake-up), it
 *    is back in coroutine code, done with the proc, and the taker's
 *    acquire load of in_sched 0 sees everything it wrote there: taking
 *    the proc now is a take at an in_sched 0 point, as a kernel side's.
 * The two compare-and-swaps on slot.proc decide, and exactly one
 * succeeds: no proc is used by the worker after the taker took it, and no
 * worker waits for the taker. The worker's fast path is unchanged:
 * kg_proc_lost tests the bit that NONE already has. A worker asleep in
 * the kernel is the same case as one in coroutine code: it writes nothing
 * to its slot until it wakes, and its wake-up is an entry like any other.
 * The kernel side may still be at that worker's blocking switch, though,
 * detaching the proc from a reading it made before our ask: both sides
 * then store NONE, and the owner's compare-and-swap says who took it.
 *
 * The process must have registered for MEMBARRIER_CMD_PRIVATE_EXPEDITED.
 */
bool kg_proc_ask_take(struct kg_rt *rt, struct kg_worker *w, uint32_t pi,
		      uint64_t seen, bool slice)
{
	struct kg_worker_slot *ws = w->slot;
	uint32_t expect = pi, asked = pi | KG_PROC_ASK;
	uint64_t t0 = kg_now_ns();

	/* seq_cst: before the membarrier, as its pairing requires */
	if (!__atomic_compare_exchange_n(&ws->proc, &expect, asked, false,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return false;
	if (kg_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
	    __atomic_load_n(&ws->in_sched, __ATOMIC_SEQ_CST) ||
	    kg_load_relaxed(W_SWITCHES(w)) != seen ||
	    (slice && !kg_slice_enter(rt->shared))) {
		/* it entered the runtime, or no place is left: withdraw (the
		 * worker may have kept its proc already: then this fails) */
		__atomic_compare_exchange_n(&ws->proc, &asked, pi, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
		return false;
	}
	/* a slice's take is counted before NONE is stored: the worker reads
	 * the count after NONE (kg_slice_back) */
	if (slice)
		__atomic_fetch_add(&ws->preempts, 1, __ATOMIC_RELAXED);
	/* release: the count with it (kg_proc_taken's acquire) */
	if (!__atomic_compare_exchange_n(&ws->proc, &asked, KG_PROC_NONE,
					 false, __ATOMIC_SEQ_CST,
					 __ATOMIC_RELAXED)) {
		/* the worker kept it: it never saw the count */
		if (slice) {
			__atomic_fetch_sub(&ws->preempts, 1, __ATOMIC_RELAXED);
			kg_slice_undo(rt->shared);
		}
		return false;
	}
	expect = w->index;
	if (!__atomic_compare_exchange_n(&rt->procs[pi].slot->owner, &expect,
					 KG_OWNER_DETACHED, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		/*
		 * A kernel side detached it first, at the worker's blocking
		 * switch: it read the slot before our ask, and its write of
		 * NONE to the slot (the same as ours) comes after its owner
		 * CAS, on a CPU membarrier does not wait for. Its record hands
		 * the proc on. Without a kernel side nobody else takes one.
		 */
		if (rt->ev && expect == KG_OWNER_DETACHED)
			return false;
		kg_throw("proc %u owned by %u, not worker %u", pi, expect,
			 w->index);
	}
	/* its latency: the handshake's (a slice or a block is no delay) */
	kg_handoff_seen(rt, w, kg_now_ns() - t0);
	KG_PROBE3(handoff, pi, w->index, -1);
	kg_handoff_proc(rt, &rt->procs[pi]);
	return true;
}

/* ------------------------------------------------------------------ */
/* Parking a worker                                                    */
/* ------------------------------------------------------------------ */

/* Coroutines wait on descriptors: the watcher watches them too. */
static bool fds_waited(struct kg_rt *rt)
{
	return rt->np && atomic_load_explicit(&rt->np->nwait,
					      memory_order_relaxed);
}

/*
 * The watcher's sleep: in the poller when there is one (descriptors, and
 * kicks through its eventfd: see wake_parked), else on its futex. Returns
 * the coroutines whose descriptors became ready.
 */
static struct kg_co *watch(struct kg_worker *w, uint64_t deadline)
{
	struct kg_netpoll *np = w->rt->np;
	uint64_t now;
	struct kg_co *ready;

	if (!np) {
		kg_futex_wait(&w->wake, KG_WAKE_PARKED, deadline);
		return NULL;
	}
	now = deadline == UINT64_MAX ? 0 : kg_now_ns();
	atomic_store(&np->blocked, 1);
	ready = kg_netpoll(np, deadline == UINT64_MAX ? UINT64_MAX :
			   deadline > now ? deadline - now : 0);
	atomic_store(&np->blocked, 0);
	return ready;
}

/*
 * Park w until it is handed a proc (it then holds it on return), a timer
 * may be due, until passes, a descriptor waited on is ready, or the
 * runtime is done (it holds none). Returns the coroutines the poller
 * reported ready (linked through kg_co.next, waits complete: the caller
 * makes them runnable), or NULL.
 */
struct kg_co *kg_park_worker(struct kg_worker *w, uint64_t until)
{
	struct kg_rt *rt = w->rt;
	struct kg_worker *expect = NULL;
	struct kg_co *ready = NULL;
	uint32_t expect_state;
	uint64_t deadline;
	bool watcher = false, standby = false;

	pthread_mutex_lock(&rt->lock);
	if (kg_rt_done(rt)) {
		pthread_mutex_unlock(&rt->lock);
		return NULL;
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
	 * Descriptors are the same: with coroutines waiting on some and an
	 * idle proc to run them, the watcher sleeps in the poller (Go's
	 * blocking netpoll in findrunnable), its timeout the earliest timer.
	 */
	deadline = kg_timers_next_all(rt);
	if (!atomic_load(&rt->npidle))
		deadline = UINT64_MAX;
	else if (deadline == UINT64_MAX && fds_waited(rt))
		deadline = UINT64_MAX - 1;	/* watch, without a timer */
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
			 * heaps: pairs with the heap.next store (timer.c)
			 * then kg_timer_notify's load of timer_watch_until
			 * (sched.c). A timer armed in
			 * between kicks us (wake: PARKED -> KICK), and the
			 * futex wait below then returns at once.
			 */
			atomic_store(&rt->timer_watch_until, deadline);
			deadline = kg_timers_next_all(rt);
			atomic_store(&rt->timer_watch_until, deadline);
			if (deadline == UINT64_MAX && !fds_waited(rt)) {
				/*
				 * Nothing left to watch (another worker fired
				 * the timer): give the role up, so that this
				 * worker may be a standby; a watcher never is,
				 * and it may be the only spare. A timer armed
				 * from now on finds no watcher and wakes a proc
				 * (kg_timer_notify); one armed before this CAS
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
		if (standby) {
			rt->ev->wait(w, deadline);
		} else if (watcher && !ready) {
			ready = watch(w, deadline);
			if (!ready)
				continue;
			/* run them: leave the list unless popped */
			pthread_mutex_lock(&rt->lock);
			if (__widle_remove(rt, w)) {
				pthread_mutex_unlock(&rt->lock);
				break;
			}
			pthread_mutex_unlock(&rt->lock);
			/* popped: a handoff is coming; wait for it as a
			 * plain parked worker, holding what we collected */
			watcher = false;
			deadline = UINT64_MAX;
			atomic_store(&rt->timer_watch_until, UINT64_MAX);
			expect = w;
			atomic_compare_exchange_strong(&rt->timer_watcher,
						       &expect, NULL);
		} else {
			kg_futex_wait(&w->wake, KG_WAKE_PARKED, deadline);
		}
	}
	if (standby) {
		/* a record the wait returned but nobody handled: pass it on */
		if (w->rt->ev->held && w->rt->ev->held(w))
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
		kg_proc_acquire(w, w->nextp);
		w->nextp = NULL;
	}
	return ready;
}

/* ------------------------------------------------------------------ */
/* Worker threads                                                      */
/* ------------------------------------------------------------------ */

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
	/* relaxed atomic stores: the strand watch (sysmon.c) reads tid */
	__atomic_store_n(&w->tid, (uint32_t)gettid(), __ATOMIC_RELAXED);
	if ((err = w->rt->ev->worker_add(w))) {
		kg_debug("worker %u: cannot register with the kernel side "
			 "(%s); its blocks will not hand off", w->index,
			 strerror(-err));
		__atomic_store_n(&w->tid, 0, __ATOMIC_RELAXED);
	}
}

static void worker_unregister(struct kg_worker *w)
{
	if (w->tid)
		w->rt->ev->worker_del(w);
	__atomic_store_n(&w->tid, 0, __ATOMIC_RELAXED);
}

static void *worker_thread(void *arg)
{
	struct kg_worker *w = arg;

	kg_tls_worker = w;
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
	pthread_mutex_lock(&w->rt->lock);	/* pairs with __kg_startm */
	pthread_mutex_unlock(&w->rt->lock);
	if (w->nextp) {
		kg_proc_acquire(w, w->nextp);
		w->nextp = NULL;
	}
	w->rt->worker_body(w);
	worker_unregister(w);
	kg_altstack_teardown(w);
	kg_tls_worker = NULL;
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

void kg_start_standby(struct kg_rt *rt)
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
			kg_sys_nanosleep(&nap, NULL);
		}
}

