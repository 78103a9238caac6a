// SPDX-License-Identifier: MIT
/*
 * sysmon.c - the monitor thread: Go's sysmon, in two roles.
 *
 * 1. The backend without kernel help. A coroutine marks a call that may
 * block with kg_blocking_begin/end. The monitor wakes every 20 us while
 * there is something to retake and backs off to 10 ms when there is not
 * (doubling after 50 idle rounds, as Go's sysmon does); it retakes the
 * proc of a worker that has stayed in a marked region for 20 us or more
 * while the proc has work, and hands it to a parked or new worker.
 * Unmarked blocking calls stall their proc: only the kernel backends see
 * those.
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
 * worker promised nothing, so sysmon asks first and decides after a fence
 * it makes every worker execute: the membarrier handshake, which
 * handoff.c explains (kg_proc_ask_take). Without membarrier (seccomp, an
 * old kernel), sysmon does not slice.
 *
 * 2. With a kernel backend, procs stranded behind an idle block. The
 * kernel side decides at a worker's blocking switch, once: a proc with no
 * work stays with its blocked worker (KG_DETACH_IDLE), since moving it
 * would only wake a spare for nothing. Work can come to it later without
 * its worker waking: a coroutine woken by a plain thread, or by a worker
 * whose own proc was taken (both go to the global queue), a timer armed
 * by such a worker. If every proc is held by a worker asleep like that,
 * nothing runs the work until a blocked call returns, maybe never; Go's
 * sysmon retakes a P from a syscall for the same reason. So kg_wakep,
 * finding no idle proc, kicks the monitor (kg_strand_kick). While every
 * proc is held and one has work, it looks every 1 ms, backing off to 10
 * ms while nothing is stranded: a worker that holds a proc with work
 * (kg_detach_rule), has not switched since the last look, and whose
 * thread sleeps in the kernel (/proc/self/task/TID/stat; where /proc
 * cannot say, none does) loses that proc by the same handshake, as if the
 * kernel side had detached it at the block. Timers armed on a proc their
 * caller does not hold kick it too (kg_timer_notify). Running workers are
 * left to the kernel side's time slice. After 50 looks with nothing
 * stranded the watch sleeps until the next kick.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#define STRAND_MIN_NS (1000 * 1000ull)

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
	/* the strand watch's: the switch count at its last look, if looked */
	__u64 strand_seen;
	bool strand_looked;
};

struct kg_sysmon {
	pthread_t thread;
	bool slicing;			/* membarrier registered */
	bool strands;			/* role 2 only: a kernel backend serves */
	_Atomic uint32_t stop;		/* 1 = stop (then rt.mon_seq moves) */
	bool stopped;			/* joined (kg_run's thread only) */
	struct sysmon_worker w[KG_MAX_WORKERS];
};

/* The calling coroutine's worker's state, when sysmon serves it. */
static struct sysmon_worker *sysmon_worker(struct kg_worker **wp)
{
	struct kg_worker *w = kg_tls_worker;

	if (!w || w->cur == &w->g0 || !w->rt->sysmon || w->rt->sysmon->strands)
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
	if (kg_proc_ask_take(rt, w, pi, sw->slice_seen, true))
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

/*
 * Whether worker thread tid sleeps in the kernel (state S or D). Where
 * /proc cannot say (not mounted, another PID namespace's), no: a worker
 * that runs must be left to the kernel side's time slice.
 */
static bool thread_asleep(uint32_t tid)
{
	char path[64], buf[512], *rp;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%u/stat", tid);
	/* raw calls: libc's read and close are hook.c's, a layer up */
	fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -1 : kg_sys_read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		syscall(SYS_close, fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	/* "tid (comm) S ...": comm may hold spaces and parentheses */
	rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' && (rp[2] == 'S' || rp[2] == 'D');
}

/* Every proc is held, and one has work (maybe nobody's to run). */
static bool strand_possible(struct kg_rt *rt)
{
	uint32_t i;

	if (atomic_load(&rt->npidle))
		return false;
	for (i = 0; i < rt->nprocs; i++)
		if (kg_proc_has_work(rt->shared, rt->procs[i].slot))
			return true;
	return false;
}

/* One look of the strand watch (role 2): whether it took a proc. */
static unsigned int strand_look(struct kg_rt *rt)
{
	uint32_t i, n = atomic_load(&rt->nworkers);

	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];
		struct sysmon_worker *sw = &rt->sysmon->w[i];
		uint64_t sws;
		uint32_t pi, tid;

		/* tid: written by the worker's own thread as it starts */
		if (!w || !(tid = __atomic_load_n(&w->tid, __ATOMIC_RELAXED)))
			continue;
		sws = kg_load_relaxed(W_SWITCHES(w));
		/* racy reads, as the kernel side's; the handshake decides */
		if (kg_detach_rule(rt->shared, w->slot, &pi) != KG_DETACH_YES ||
		    !sw->strand_looked || sws != sw->strand_seen) {
			sw->strand_seen = sws;
			sw->strand_looked = true;
			continue;
		}
		/* one a look: the next, a delay later, takes another if the
		 * work is still there */
		if (thread_asleep(tid) &&
		    kg_proc_ask_take(rt, w, pi, sws, false))
			return 1;
	}
	return 0;
}

/* Role 2: sleep until kicked, then look while something may be stranded. */
static void strand_watch(struct kg_rt *rt)
{
	struct kg_sysmon *sm = rt->sysmon;
	uint64_t delay = STRAND_MIN_NS;
	unsigned int idle = 0;

	for (;;) {
		/* the word before the flag: a kick in between moves it */
		uint32_t seq = atomic_load(&rt->mon_seq);
		bool armed = atomic_load(&rt->strand_armed);

		if (atomic_load(&sm->stop))
			break;
		kg_futex_wait(&rt->mon_seq, seq,
			      armed ? kg_now_ns() + delay : UINT64_MAX);
		if (!armed) {
			/* kicked: note who holds what now; the next look, a
			 * delay later, takes a proc whose worker stayed */
			delay = STRAND_MIN_NS;
			idle = 0;
			if (!atomic_load(&sm->stop))
				strand_look(rt);
			continue;
		}
		if (atomic_load(&sm->stop))
			break;
		if (strand_look(rt)) {
			delay = STRAND_MIN_NS;
			idle = 0;
			continue;
		}
		delay = delay * 2 > SYSMON_MAX_NS ? SYSMON_MAX_NS : delay * 2;
		if (strand_possible(rt)) {
			idle = 0;
			continue;
		}
		if (++idle < SYSMON_IDLE_ROUNDS)
			continue;
		/*
		 * Sleep until the next kick. A seq_cst exchange (a full
		 * barrier), then a look at the queues (after strand_possible's
		 * seq_cst load of npidle): against kg_strand_kick's caller,
		 * which queued its work, fenced, then read the flag (kg_wakep):
		 * one side sees the other.
		 */
		atomic_exchange(&rt->strand_armed, 0);
		if (strand_possible(rt))
			atomic_store(&rt->strand_armed, 1);
		idle = 0;
	}
}

static void *sysmon_main(void *arg)
{
	struct kg_rt *rt = arg;
	struct kg_sysmon *sm = rt->sysmon;
	uint64_t delay = SYSMON_MIN_NS;
	unsigned int idle = 0;

	if (sm->strands) {
		strand_watch(rt);
		return NULL;
	}
	while (!atomic_load(&sm->stop)) {
		uint32_t seq = atomic_load(&rt->mon_seq);

		if (atomic_load(&sm->stop))
			break;
		kg_futex_wait(&rt->mon_seq, seq, kg_now_ns() + delay);
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
	sm->strands = rt->ev != NULL;
	/*
	 * The handshake needs membarrier (handoff.c); registering is
	 * idempotent. Without it sysmon does not slice, and a kernel
	 * backend goes without the strand watch.
	 */
	if (sm->strands || rt->slice_ns) {
		bool ok = !kg_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);

		if (!ok)
			kg_debug("no membarrier (%s): %s", strerror(errno),
				 sm->strands ? "no watch for stranded procs"
					     : "no time slices");
		if (sm->strands && !ok) {
			free(sm);
			return 0;
		}
		sm->slicing = ok && !sm->strands;
	}
	rt->sysmon = sm;
	err = pthread_create(&sm->thread, NULL, sysmon_main, rt);
	if (err) {
		rt->sysmon = NULL;
		free(sm);
		if (!rt->ev)	/* kg_run's error for threads it cannot start */
			return -ENOMEM;
		kg_debug("cannot start the strand watch (%s)", strerror(err));
	}
	return 0;
}

void kg_sysmon_stop(struct kg_rt *rt)
{
	struct kg_sysmon *sm = rt->sysmon;

	if (!sm || sm->stopped)
		return;
	atomic_store(&sm->stop, 1);
	atomic_fetch_add(&rt->mon_seq, 1);
	kg_futex_wake(&rt->mon_seq, 1);
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
	return w->rt->sysmon && !w->rt->sysmon->strands &&
	       atomic_load_explicit(&w->rt->sysmon->w[w->index].blk,
				    memory_order_relaxed) != BLK_NONE;
}
