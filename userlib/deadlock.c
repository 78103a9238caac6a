// SPDX-License-Identifier: MIT
/*
 * deadlock.c - Go's checkdead: "all coroutines are asleep - deadlock!".
 *
 * When every coroutine waits and nothing could ever wake one, a Go
 * program dies with that message and a dump of where each goroutine
 * waits; kg_run reports the same and returns -EDEADLK. The hard part is
 * "nothing could wake one": a timer may be armed, a worker may be blocked
 * in the kernel with a coroutine that will wake others when it returns,
 * and a plain thread (not a worker) that has used a channel may send on it
 * later. The last needs counting plain threads, done here too.
 *
 * A worker about to park without a proc asks kg_deadlock_watch how long
 * it may sleep: forever, unless a deadlock is suspected (every proc idle,
 * no queued coroutine, no timer, no worker out with a coroutine, no plain
 * thread that could wake one, some coroutine alive). A suspicion unchanged
 * (no progress: switches, spawns, wake-ups by plain threads) for
 * KG_DEADLOCK_NS is confirmed by a walk over every coroutine (none may be
 * awake) and reported, once, under rt.lock.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

#include "deadlock.h"
#include "handoff.h"
#include "netpoll.h"
#include "stack.h"
#include "timer.h"

/* ------------------------------------------------------------------ */
/* Plain threads as possible wakers                                    */
/* ------------------------------------------------------------------ */

_Atomic long kg_foreign_threads;
_Atomic uint64_t kg_foreign_wakes;
static pthread_key_t foreign_key;
static pthread_once_t foreign_once = PTHREAD_ONCE_INIT;
static __thread bool foreign_noted KG_TLS;

static void foreign_exit(void *v)
{
	(void)v;
	atomic_fetch_sub(&kg_foreign_threads, 1);
}

static void foreign_key_make(void)
{
	pthread_key_create(&foreign_key, foreign_exit);
}

void kg_foreign_note(void)
{
	if (foreign_noted)
		return;
	pthread_once(&foreign_once, foreign_key_make);
	foreign_noted = true;
	atomic_fetch_add(&kg_foreign_threads, 1);
	/* non-NULL, so the destructor runs at thread exit */
	pthread_setspecific(foreign_key, &foreign_noted);
}

bool kg_foreign_pause(void)
{
	if (!foreign_noted)
		return false;
	atomic_fetch_sub(&kg_foreign_threads, 1);
	return true;
}

void kg_foreign_resume(bool was)
{
	if (was)
		atomic_fetch_add(&kg_foreign_threads, 1);
}

uint64_t kg_live(struct kg_rt *rt)
{
	int64_t sum = 0;
	uint32_t i;

	for (i = 0; i < rt->nprocs; i++)
		sum += kg_load_relaxed(&rt->procs[i].live);
	return sum > 0 ? (uint64_t)sum : 0;
}

/* ------------------------------------------------------------------ */
/* The watch                                                           */
/* ------------------------------------------------------------------ */

#define KG_DEADLOCK_NS (100 * 1000000ull)

/*
 * Nothing can run now and nothing could make anything run: every proc is
 * idle, no run queue holds work, no timer is armed, and no plain thread
 * that has used kgreen objects is alive (it could wake a coroutine).
 * A worker blocked in a system call holds its proc, so it counts as busy;
 * one whose proc was handed off counts through kg_workers_out; and before
 * it reports, kg_deadlock_watch checks that every live coroutine waits.
 */
static bool deadlock_suspect(struct kg_rt *rt)
{
	return atomic_load(&rt->npidle) == rt->nprocs && !kg_any_work(rt) &&
	       kg_workers_out(rt) == 0 &&
	       kg_timers_next_all(rt) == UINT64_MAX &&
	       atomic_load(&kg_foreign_threads) == 0 &&
	       !(rt->np && atomic_load(&rt->np->nwait)) && kg_live(rt) > 0;
}

/* Anything that moves when a coroutine runs or is woken. */
static uint64_t progress(struct kg_rt *rt)
{
	uint64_t sum = atomic_load(&kg_foreign_wakes);
	uint32_t i;

	for (i = 0; i < atomic_load(&rt->nworkers); i++)
		if (rt->workers[i])
			sum += kg_load_relaxed(W_SWITCHES(rt->workers[i]));
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
	kg_rt_finish(rt);
}

/*
 * Called by a worker about to park without a proc. Returns how long it
 * may sleep: forever normally; while a deadlock is suspected, until the
 * suspicion is KG_DEADLOCK_NS old, so that some worker comes back to
 * confirm it (no progress meanwhile) and report it.
 */
uint64_t kg_deadlock_watch(struct kg_worker *w)
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
	} else if (now - rt->dl_since >= KG_DEADLOCK_NS && !kg_rt_done(rt) &&
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
	} else if (!rt->deadlock && !kg_rt_done(rt) &&
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

