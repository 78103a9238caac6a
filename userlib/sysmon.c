// SPDX-License-Identifier: MIT
/*
 * sysmon.c - the backend without kernel help: Go's sysmon.
 *
 * A coroutine marks a call that may block with kg_blocking_begin/end. A
 * monitor thread wakes every 20 us while there is something to retake and
 * backs off to 10 ms when there is not (doubling after 50 idle rounds, as
 * Go's sysmon does); it retakes the proc of a worker that has stayed in a
 * marked region for 20 us or more while the proc has work, and hands it to
 * a parked or new worker. Unmarked blocking calls stall their proc: only
 * the kernel backends see those.
 *
 * Why userspace may take the proc here, when the handoff protocol lets only
 * the kernel side take one: inside a marked region the worker promises not
 * to touch its proc, and leaving the region is a CAS on w->blk that either
 * keeps the proc (IN -> NONE) or learns it is gone (RETAKEN). sysmon takes
 * the proc only after its own CAS IN -> RETAKEN succeeded, so exactly one
 * side decides.
 *
 * Time slices. sysmon also takes the proc of a worker whose coroutine has
 * run for a slice (kg_slice_due: the slot's switch count has not moved)
 * while the proc has work, so that the queue behind a CPU-bound coroutine
 * moves on while that coroutine keeps running on its thread. Here the
 * worker promised nothing: it may enter scheduler code and use its proc at
 * any instruction, with no more than a plain store of in_sched (the
 * kernel sides take a proc only on the worker's own CPU, where program
 * order is enough; sysmon runs on another). So sysmon asks first and
 * decides after a fence it makes every worker execute:
 *
 *   sysmon                              worker (scheduler entry)
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
 * between sysmon's CAS and its loads; where that barrier falls in the
 * worker's latest entry decides:
 *  - before the entry's load of slot.proc: the load sees ASK, and the
 *    worker keeps the proc by CAS (then sysmon's final CAS fails) or finds
 *    NONE and never touches it;
 *  - after that load, with the worker still in scheduler code: sysmon
 *    sees in_sched 1 (the barrier orders the store before its loads) and
 *    withdraws;
 *  - after that load, the worker having left again: if it switched, the
 *    count moved and sysmon withdraws; if not (a kg_go, a wake-up), it is
 *    back in coroutine code, done with the proc, and sysmon's acquire load
 *    of in_sched 0 sees everything it wrote there: taking the proc now is
 *    a take at an in_sched 0 point, as a kernel side's.
 * The two compare-and-swaps on slot.proc decide, and exactly one succeeds:
 * no proc is used by the worker after sysmon took it, and no worker waits
 * for sysmon. The worker's fast path is unchanged: kg_proc_lost tests the
 * bit that NONE already has. Without membarrier (seccomp, an old kernel),
 * sysmon does not slice.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sched.h"
#include "sysmon.h"

#define SYSMON_RETAKE_NS (20 * 1000ull)
#define SYSMON_MIN_NS (20 * 1000ull)
#define SYSMON_MAX_NS (10 * 1000 * 1000ull)
#define SYSMON_IDLE_ROUNDS 50

/*
 * Per worker: blk is BLK_IN between kg_blocking_begin and _end (since:
 * when it began); sysmon moves it IN -> RETAKEN by CAS before it takes
 * the proc, and _end's CAS IN -> NONE fails then. One line each: every
 * worker writes its own at each begin and end.
 */
enum { BLK_NONE = 0, BLK_IN = 1, BLK_RETAKEN = 2 };

struct sysmon_worker {
	_Alignas(KG_CACHELINE) _Atomic uint32_t blk;
	_Atomic uint64_t since;
	/* kg_slice_due's memory of the worker (sysmon's thread only) */
	__u64 slice_seen, slice_since;
};

struct kg_sysmon {
	pthread_t thread;
	bool slicing;			/* membarrier registered */
	_Atomic uint32_t stop;		/* futex word: 1 = stop */
	bool stopped;			/* joined (kg_run's thread only) */
	struct sysmon_worker w[KG_MAX_WORKERS];
};

/* The calling coroutine's worker's state, when sysmon serves it. */
static struct sysmon_worker *sysmon_worker(struct kg_worker **wp)
{
	struct kg_worker *w = kg_tls_worker;

	if (!w || w->cur == &w->g0 || !w->rt->sysmon)
		return NULL;
	*wp = w;
	return &w->rt->sysmon->w[w->index];
}

void kg_blocking_begin(void)
{
	struct kg_worker *w;
	struct sysmon_worker *sw = sysmon_worker(&w);

	if (!sw)
		return;
	atomic_store_explicit(&sw->since, kg_now_ns(), memory_order_relaxed);
	/* release: sysmon that sees IN (acquire) sees since too */
	atomic_store_explicit(&sw->blk, BLK_IN, memory_order_release);
}

void kg_blocking_end(void)
{
	struct kg_worker *w;
	struct sysmon_worker *sw = sysmon_worker(&w);
	uint32_t in = BLK_IN;

	if (!sw)
		return;
	/* acq_rel: on failure, sysmon's retake happened before; see it */
	if (atomic_compare_exchange_strong_explicit(&sw->blk, &in, BLK_NONE,
						    memory_order_acq_rel,
						    memory_order_acquire))
		return;
	if (in != BLK_RETAKEN)
		return;		/* end without begin */
	/*
	 * The proc went to another worker. Say so in the slot before blk
	 * reads NONE (release; sysmon loads blk with acquire): from NONE on,
	 * sysmon looks at this worker's slice again, and a slot still naming
	 * the proc would let it take a proc another worker runs.
	 */
	__atomic_store_n(&w->slot->proc, KG_PROC_NONE, __ATOMIC_RELAXED);
	atomic_store_explicit(&sw->blk, BLK_NONE, memory_order_release);
	/* take an idle proc or requeue */
	kg_sched_lost(w);
}

static int membarrier(int cmd)
{
	return (int)syscall(__NR_membarrier, cmd, 0, 0);
}

/*
 * Take proc pi from worker w, whose coroutine has run for a slice (see
 * "Time slices" above); seen is its switch count. true if taken.
 */
static bool slice_take(struct kg_rt *rt, struct kg_worker *w, uint32_t pi,
		       uint64_t seen)
{
	struct kg_worker_slot *ws = w->slot;
	uint32_t expect = pi, asked = pi | KG_PROC_ASK;
	uint64_t t0 = kg_now_ns();

	/* seq_cst: before the membarrier, as its pairing requires */
	if (!__atomic_compare_exchange_n(&ws->proc, &expect, asked, false,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return false;
	if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
	    __atomic_load_n(&ws->in_sched, __ATOMIC_SEQ_CST) ||
	    kg_load_relaxed(W_SWITCHES(w)) != seen ||
	    !kg_slice_enter(rt->shared)) {
		/* it entered the runtime, or no place is left: withdraw (the
		 * worker may have kept its proc already: then this fails) */
		__atomic_compare_exchange_n(&ws->proc, &asked, pi, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
		return false;
	}
	/* counted before NONE is stored: the worker reads it after NONE */
	__atomic_fetch_add(&ws->preempts, 1, __ATOMIC_RELAXED);
	/* release: the count with it (kg_proc_taken's acquire) */
	if (!__atomic_compare_exchange_n(&ws->proc, &asked, KG_PROC_NONE,
					 false, __ATOMIC_SEQ_CST,
					 __ATOMIC_RELAXED)) {
		/* the worker kept it: it never saw the count */
		__atomic_fetch_sub(&ws->preempts, 1, __ATOMIC_RELAXED);
		kg_slice_undo(rt->shared);
		return false;
	}
	expect = w->index;
	if (!__atomic_compare_exchange_n(&rt->procs[pi].slot->owner, &expect,
					 KG_OWNER_DETACHED, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		kg_throw("sysmon: proc %u owned by %u, not worker %u", pi,
			 expect, w->index);
	/* its latency: the handshake's (the slice itself is not a delay) */
	kg_handoff_seen(rt, w, kg_now_ns() - t0);
	KG_PROBE3(handoff, pi, w->index, -1);
	kg_handoff_proc(rt, &rt->procs[pi]);
	return true;
}

/* Worker w (not in a marked region): take its proc if its slice is up. */
static unsigned int slice_check(struct kg_rt *rt, struct kg_worker *w,
				struct sysmon_worker *sw, uint64_t now)
{
	uint32_t pi;

	if (!kg_slice_due(rt->shared, w->slot, &sw->slice_seen,
			  &sw->slice_since, now))
		return 0;
	/* a racy look first (see retake); slice_take decides */
	if (kg_detach_rule(rt->shared, w->slot, &pi) != KG_DETACH_YES)
		return 0;
	if (slice_take(rt, w, pi, sw->slice_seen))
		return 1;
	/*
	 * It entered the runtime meanwhile without switching (a kg_go, a
	 * wake-up), or no place was free: ask again a slice later, not at
	 * every pass (each ask costs every running worker an IPI).
	 */
	sw->slice_since = now;
	return 0;
}

/*
 * One pass: retake the procs of workers blocked too long, and of workers
 * whose coroutine ran for a slice. How many.
 */
static unsigned int retake(struct kg_rt *rt, uint64_t now)
{
	uint32_t i, n = atomic_load(&rt->nworkers);
	unsigned int taken = 0;

	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];
		struct sysmon_worker *sw = &rt->sysmon->w[i];
		uint32_t in = BLK_IN, pi, expect, blk;
		struct kg_proc *p;
		uint64_t since;

		if (!w)
			continue;
		blk = atomic_load_explicit(&sw->blk, memory_order_acquire);
		/*
		 * Outside a region, the slice. Not while RETAKEN: the proc is
		 * gone already, though the slot names it until the worker's
		 * kg_blocking_end says so (it writes nothing else meanwhile).
		 */
		if (blk == BLK_NONE && rt->sysmon->slicing)
			taken += slice_check(rt, w, sw, now);
		if (blk != BLK_IN)
			continue;
		since = atomic_load_explicit(&sw->since, memory_order_relaxed);
		if (now - since < SYSMON_RETAKE_NS)
			continue;
		/*
		 * The rule the kernel side applies (uapi/kgreen.h), read from
		 * another thread: racy reads (relaxed atomics on both sides).
		 * While the worker stays in the region its slot holds still
		 * (coroutine code, in_sched 0, its proc untouched); if it
		 * leaves meanwhile, what we read may be stale, and our CAS on
		 * blk below fails, so a stale answer never takes a proc.
		 */
		if (kg_detach_rule(rt->shared, w->slot, &pi) != KG_DETACH_YES)
			continue;
		p = &rt->procs[pi];
		if (!atomic_compare_exchange_strong(&sw->blk, &in,
						    BLK_RETAKEN))
			continue;	/* it left the region */
		expect = w->index;
		if (!__atomic_compare_exchange_n(&p->slot->owner, &expect,
						 KG_OWNER_DETACHED, false,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			kg_throw("sysmon: proc %u owned by %u, not worker %u",
				 pi, expect, w->index);
		/* from the block's start: what the queued coroutines waited */
		kg_handoff_seen(rt, w, now > since ? now - since : 0);
		KG_PROBE3(handoff, pi, w->index, -1);
		kg_handoff_proc(rt, p);
		taken++;
	}
	return taken;
}

static void *sysmon_main(void *arg)
{
	struct kg_rt *rt = arg;
	struct kg_sysmon *sm = rt->sysmon;
	uint64_t delay = SYSMON_MIN_NS;
	unsigned int idle = 0;

	while (!atomic_load(&sm->stop)) {
		kg_futex_wait(&sm->stop, 0, kg_now_ns() + delay);
		if (atomic_load(&sm->stop))
			break;
		if (retake(rt, kg_now_ns())) {
			idle = 0;
			delay = SYSMON_MIN_NS;
		} else if (++idle > SYSMON_IDLE_ROUNDS) {
			delay = delay * 2 > SYSMON_MAX_NS ? SYSMON_MAX_NS
							  : delay * 2;
		}
	}
	return NULL;
}

int kg_sysmon_start(struct kg_rt *rt)
{
	struct kg_sysmon *sm = aligned_alloc(KG_CACHELINE, sizeof(*sm));
	int err;

	if (!sm)
		return -ENOMEM;
	memset(sm, 0, sizeof(*sm));
	/* time slices need membarrier (see above); registering is idempotent */
	if (rt->slice_ns) {
		sm->slicing = !membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
		if (!sm->slicing)
			kg_debug("sysmon: no membarrier (%s): no time slices",
				 strerror(errno));
	}
	rt->sysmon = sm;
	err = pthread_create(&sm->thread, NULL, sysmon_main, rt);
	if (err) {
		rt->sysmon = NULL;
		free(sm);
		return -ENOMEM;	/* kg_run's error for threads it cannot start */
	}
	return 0;
}

void kg_sysmon_stop(struct kg_rt *rt)
{
	struct kg_sysmon *sm = rt->sysmon;

	if (!sm || sm->stopped)
		return;
	atomic_store(&sm->stop, 1);
	kg_futex_wake(&sm->stop, 1);
	pthread_join(sm->thread, NULL);
	sm->stopped = true;
}

void kg_sysmon_free(struct kg_rt *rt)
{
	free(rt->sysmon);
	rt->sysmon = NULL;
}

bool kg_sysmon_marked(struct kg_worker *w)
{
	/* only w's own thread asks: it wrote blk itself, unless sysmon
	 * moved it to RETAKEN, which is not NONE either */
	return w->rt->sysmon &&
	       atomic_load_explicit(&w->rt->sysmon->w[w->index].blk,
				    memory_order_relaxed) != BLK_NONE;
}
