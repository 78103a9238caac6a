/* SPDX-License-Identifier: MIT */
/*
 * rt.h - the runtime's types, shared by every layer of libkgreen: the
 * coroutine (Go's G), the worker (M), the proc (P), timers and the
 * runtime itself, and the memory the kernel side shares with them
 * (uapi/kgreen.h). Functions live in the header of the file that owns
 * them (Documentation/architecture.md, "Where things are").
 */
#ifndef KG_RT_H
#define KG_RT_H

#include <pthread.h>
#include <signal.h>

#include "base.h"
/*
 * The shared state's racy reads (kg_proc_has_work) as relaxed atomics:
 * the same single loads, and ThreadSanitizer sees what they are.
 */
#define KG_LOAD_ONCE(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#include "uapi/kgreen.h"

struct kg_sysmon;
struct kg_netpoll;
struct kg_evops;
struct kg_stack_alloc;

struct kg_proc;
struct kg_worker;
struct kg_timer_heap;

/*
 * A timer (timer.c): fn(w, t) runs on worker w, in scheduler mode, under
 * the lock of the heap t is on, once now >= when. It returns 0, or the
 * next deadline to stay armed (tickers). Because fn runs under the heap
 * lock, kg_timer_cancel() returning means fn is not running and will not
 * run: a timer may live on the stack of whoever cancels it.
 * fn may take a channel lock or rt.lock (lock order: heap -> chan -> rt);
 * nobody may take a heap lock while holding a channel lock.
 */
struct kg_timer;
typedef uint64_t (*kg_timer_fn)(struct kg_worker *w, struct kg_timer *t);

struct kg_timer {
	uint64_t when;			/* deadline, kg_now_ns() clock */
	int32_t heap_idx;		/* index in heap->v, -1: not armed */
	uint32_t __pad;
	/* heap it was last armed on (written under that heap's lock) */
	_Atomic(struct kg_timer_heap *) heap;
	kg_timer_fn fn;
	void *arg;			/* for fn */
};

/*
 * Coroutine states. Per state: who owns the coroutine and where it is.
 *  RUNNABLE: on exactly one run queue (a proc's runnext or ring, or the
 *            global queue); whoever dequeues it owns it.
 *  RUNNING:  owned by the worker executing it (kg_worker.cur).
 *  WAITING:  parked; owned by what will wake it (a timer heap, later a
 *            channel or sync object). Its registers are saved: the park is
 *            committed only after the switch away (see kg_worker.after).
 *  DEAD:     returned from its function; its stack goes back to the pool
 *            once the worker has switched away from it.
 */
enum kg_co_state {
	KG_CO_RUNNABLE = 1,
	KG_CO_RUNNING,
	KG_CO_WAITING,
	KG_CO_DEAD,
};

#define KG_NAME_MAX 32

/* A stack carved from a slab (stack.c). */
struct kg_stack {
	/* guard and size_class first: they share kg_co's first cache line */
	uint32_t guard;		/* enum kg_stack_guard protecting this stack */
	uint32_t size_class;	/* index into the allocator's classes */
	char *lo;		/* lowest usable byte (just above the guard) */
	char *hi;		/* one past the highest byte */
	unsigned int vg_id;	/* valgrind stack id */
};

/*
 * A coroutine. It lives at the top of its own stack, so a parked
 * coroutine costs one page of memory when its frames are shallow.
 */
struct kg_co {
	/*
	 * First cache line: everything a spawn writes and a switch, first
	 * run and exit read. With the initial frame in the line below it
	 * (an aligned 128-byte pair, see stack.c), a spawn touches two lines
	 * of the new coroutine's page, the rest of the struct none.
	 */
	void *sp;			/* saved stack pointer while switched out */
	struct kg_co *next;		/* link: global queue, free lists */
	long id;
	_Atomic uint32_t state;		/* enum kg_co_state */
	uint8_t is_main;
	/* KG_GO_NOPREEMPT: never loses its proc to the time slice */
	uint8_t nopreempt;
	uint16_t named;			/* name[] is valid (else unnamed) */
	void (*fn)(void *);
	void *arg;
	struct kg_rt *rt;		/* the runtime that owns the stack */
	struct kg_stack stack;		/* guard, size_class in the first line */
	/* timer.c: kg_sleep's timer, armed while WAITING in a heap */
	struct kg_timer timer;
	/* why and on what it is WAITING (deadlock report, debuggers) */
	const char *wait_reason;
	const void *wait_obj;
	/*
	 * What it waits in, for kg_run's teardown should it never run again
	 * (main returned first): abandon(co, pass) lets go of wait_rec,
	 * pass 0 withdrawing waits still queued (no wake-ups), pass 1 then
	 * settling what was handed to it. Set by the coroutine before it
	 * parks and cleared when its wait returns; the teardown reads them
	 * when no worker runs.
	 */
	void (*abandon)(struct kg_co *co, int pass);
	void *wait_rec;
	/* sanitizer fiber state (context.h) */
	void *asan_fake;
	void *tsan_fiber;
	char name[KG_NAME_MAX];
};
_Static_assert(offsetof(struct kg_co, stack.size_class) +
		       sizeof(uint32_t) <= KG_CACHELINE,
	       "kg_co: hot fields must fit in the first cache line");

/*
 * Prefetch (for writing) the lines of co's page that a spawn, or a first
 * run up to a park, touches: co's first line and `below` lines under it
 * (the initial frame, then the frames of a shallow coroutine that parks:
 * 5 lines, 0x140 bytes, for kg_co_main -> fn -> kg_wg_wait -> switch).
 * Pooled stacks are cold, one page each: without this, every spawn and
 * every first run waits for a page walk and a cache miss in turn.
 */
static inline void kg_co_prefetch(const struct kg_co *co, int below)
{
	const char *c = (const char *)co;
	int k;

	for (k = -below; k <= 0; k++)
		__builtin_prefetch(c + k * KG_CACHELINE, 1, 3);
}

/*
 * A proc's local run queue: Go's runq. A ring that only the owning worker
 * pushes to (at tail) and that the owner and thieves pop from (at head, by
 * CAS). runnext holds the coroutine to run next (ping-pong locality).
 */
#define KG_RUNQ_SIZE 256
#define KG_PROC_CACHE 256

struct kg_timer_heap {
	pthread_mutex_t lock;		/* protects n, cap, v, timers' heap_idx */
	struct kg_timer **v;
	uint32_t n, cap;
	/* earliest deadline, UINT64_MAX if empty: lock-free peek for others */
	_Atomic uint64_t next;
	/* the proc slot's timers count (kernel side's work hint), or NULL */
	__u32 *hint;
};

struct kg_proc {
	/*
	 * The ring's indices and runnext live in the proc's slot in the
	 * memory shared with the kernel side (uapi/kgreen.h), so that the
	 * kernel sees whether the proc has work at no extra cost: head
	 * (written by thieves and the owner; on a solo proc by the owner
	 * alone) alone in a line; tail (owner, release; thieves acquire) with
	 * runnext. Use RQ_HEAD/RQ_TAIL/RQ_NEXT.
	 */
	struct kg_proc_slot *slot;
	uint32_t index;
	uint32_t schedtick;		/* owner only */
	bool solo;	/* the runtime's only proc: no thief (sched.c, runq_put) */
	_Atomic(struct kg_co *) runq[KG_RUNQ_SIZE];

	_Alignas(KG_CACHELINE) struct kg_proc *idle_next;	/* rt.lock */
	struct kg_timer_heap timers;
	/*
	 * Coroutines (with their stacks) freed on this proc, reused first;
	 * owner only. An array, so moving batches to and from the global
	 * pool touches no coroutine memory.
	 */
	uint32_t nfree_cos;
	struct kg_co *free_cos[KG_PROC_CACHE];
	/* ids handed out by this proc: [id_next, id_end) (owner only) */
	long id_next, id_end;
	/*
	 * Statistics, single writer (the owner), relaxed. live is this
	 * proc's spawns minus the exits that happened on it: it may go
	 * negative, the sum over procs is the number alive.
	 */
	_Atomic uint64_t steals, timer_steals, spawned;
	_Atomic int64_t live;
};

/*
 * The shared slot's plain __u32/__u64 fields, used as C11 atomics (same
 * size and alignment on every supported target).
 */
#define RQ_HEAD(p) ((_Atomic uint32_t *)&(p)->slot->runq_head)
#define RQ_TAIL(p) ((_Atomic uint32_t *)&(p)->slot->runq_tail)
#define RQ_NEXT(p) ((_Atomic(struct kg_co *) *)&(p)->slot->runnext)
_Static_assert(sizeof(struct kg_co *) <= sizeof(__u64), "runnext fits");
_Static_assert(sizeof(struct kg_worker_slot) == 64 &&
		       sizeof(struct kg_proc_slot) == 128 &&
		       sizeof(struct kg_shared_hdr) == 64,
	       "uapi slots are whole cache lines");

/* What a worker does right after switching away from a coroutine. */
typedef void (*kg_after_fn)(struct kg_worker *w, struct kg_co *prev, void *arg);

struct kg_worker {
	struct kg_co g0;		/* scheduler context on the thread's own stack */
	struct kg_co *cur;		/* coroutine running, or &g0 */
	struct kg_co *from;		/* the context that last switched to cur */
	struct kg_proc *proc;		/* proc held, NULL when none */
	struct kg_worker_slot *slot;	/* shared with the kernel side */
	struct kg_rt *rt;
	int *errno_addr;		/* this thread's errno (switch_to) */
	/*
	 * Post-switch action, set by the coroutine switching away and run by
	 * whichever context runs next on this worker (the new coroutine or
	 * g0). It is what makes a park safe: the coroutine is published
	 * (requeued, armed on a timer, freed) only once its registers are
	 * saved, so no other worker can resume it half-saved.
	 */
	kg_after_fn after;
	void *after_arg;
	/*
	 * Parking futex word: KG_WAKE_PARKED while parked, KG_WAKE_HANDOFF
	 * once popped from the idle list and handed nextp (release; the
	 * parker reads it with acquire), KG_WAKE_KICK when a new timer asks a
	 * parked watcher to recompute its deadline (CAS from PARKED only).
	 */
	_Atomic uint32_t wake;
	struct kg_proc *nextp;		/* proc handed over while parked (rt.lock) */
	bool spinning;			/* counted in rt.nspinning */
	struct kg_worker *idle_next;	/* rt.lock */
	uint32_t index;
	pthread_t thread;
	void *altstack;
	stack_t old_altstack;		/* the thread's own, restored at exit */
	_Atomic uint32_t exited;
	uint32_t tid;			/* registered with the backend, or 0 */
	/* the backend's own state for this worker (its ops create and free it) */
	void *be;
	/*
	 * Proc taken while a coroutine ran on this worker: lost_seen counts
	 * the takes userspace has learnt of (the standby read the kernel's
	 * record, or sysmon retook it), lost_handled the worker's own
	 * returns to the scheduler without its proc (lost_proc). While
	 * seen > handled, the worker is out with a coroutine, blocked: the
	 * deadlock watch counts it as a possible waker.
	 */
	_Atomic uint64_t lost_seen, lost_handled;
	/* slot.preempts this worker has accounted for (kg_proc_forget) */
	uint32_t preempts_seen;
	/* event backends: 1 while a standby (waits for the kernel side's
	 * records, not on its futex; handoff.c) */
	_Atomic uint32_t standby;
};

/* The time slice (Go's forcePreemptNS) and how many coroutines may run
 * off their procs after one at once (Documentation/threads.md). */
#define KG_SLICE_DEFAULT_NS (10 * 1000 * 1000ull)
#define KG_SLICE_HOGS_DEFAULT 64

/* handoff latency histogram: 4 buckets per power of two up to 2^40 ns */
#define KG_HLAT_SUB 4
#define KG_HLAT_BUCKETS (41 * KG_HLAT_SUB)

enum kg_backend_id {
	KG_BACKEND_NONE = 0,
	KG_BACKEND_SYSMON,
	KG_BACKEND_BPF,
	KG_BACKEND_KMOD,
};

enum { KG_WAKE_PARKED = 0, KG_WAKE_HANDOFF = 1, KG_WAKE_KICK = 2 };

struct kg_global_queue {
	struct kg_co **v;		/* ring, cap entries (power of two) */
	size_t cap, head, rn;		/* rt.lock; rn: entries in the ring */
	struct kg_co *ohead, *otail;	/* rt.lock; overflow when v cannot grow */
};
/* All entries of rt's global queue: written under rt.lock, peeked without.
 * In the shared header, so that the kernel side sees it too. */
#define GQ_LEN(rt) ((_Atomic uint32_t *)&(rt)->shared->hdr.gq_len)
/* Worker w's coroutine switches (x2, + KG_SWITCHES_NOPREEMPT): single
 * writer (w), relaxed. In w's slot, where the side that watches time
 * slices reads it (uapi/kgreen.h). */
#define W_SWITCHES(w) ((_Atomic uint64_t *)&(w)->slot->switches)

struct kg_rt {
	uint32_t nprocs;
	uint32_t ncpus;			/* CPUs we may run on */
	size_t stack_size;
	int debug;
	/* libc's blocking calls park coroutines (hook.c); KGREEN_INTERPOSE */
	bool hooks;
	struct kg_proc *procs;		/* nprocs of them */
	/*
	 * The memory shared with the kernel side (uapi/kgreen.h): the BPF
	 * backend's mmapped map, else our own allocation (shared_owned).
	 */
	struct kg_shared *shared;
	bool shared_owned;
	uint32_t backend;		/* enum kg_backend_id */
	/* time slice (KGREEN_SLICE; 0: off) and hogs out at once
	 * (KGREEN_SLICE_HOGS): copied to the shared header */
	uint64_t slice_ns;
	uint32_t slice_hogs;
	const struct kg_evops *ev;	/* bpf, kmod: the event backend */
	/*
	 * Event backends (bpf): parked workers that wait for the kernel
	 * side's handoff records (at most KG_STANDBYS; a worker that parks
	 * while there are fewer takes the role).
	 */
	_Atomic uint32_t nstandby;
	_Atomic uint32_t standby_spinning;	/* one standby polls at a time */
	/*
	 * The monitor thread and its state (sysmon.c): the sysmon backend's,
	 * or with a kernel backend the watch for procs stranded behind an
	 * idle block. mon_seq is its futex word (bumped by a kick and at
	 * stop); strand_armed: the watch looks (1), or sleeps until
	 * kg_strand_kick (0).
	 */
	struct kg_sysmon *sysmon;
	/* own line: kg_wakep reads strand_armed on a busy runtime */
	_Alignas(KG_CACHELINE) _Atomic uint32_t strand_armed;
	_Atomic uint32_t mon_seq;
	/*
	 * The body of every worker thread: the scheduler's loop (sched.c),
	 * given by kg_run, so that handoff.c, which starts the threads, needs
	 * no call up into the scheduler.
	 */
	void (*worker_body)(struct kg_worker *w);
	/* handoff latency (kernel record to proc taken), relaxed sums */
	_Atomic uint64_t hlat_sum, hlat_max;
	/* handoff latencies: KG_HLAT_SUB buckets per power of two of ns */
	_Atomic uint64_t hlat_hist[KG_HLAT_BUCKETS];
	_Atomic uint64_t last_handoff;	/* kg_now_ns of the last one seen */

	/*
	 * rt.lock protects: the global run queue, the idle proc and idle
	 * worker lists, worker creation, nworkers. Never held across a
	 * context switch or a futex wait.
	 */
	pthread_mutex_t lock;
	struct kg_global_queue gq;
	struct kg_proc *idle_procs;
	struct kg_worker *idle_workers;
	struct kg_worker *workers[KG_MAX_WORKERS];
	_Atomic uint32_t nworkers;
	_Atomic uint32_t npidle;	/* procs on idle_procs */
	_Atomic uint32_t nspinning;	/* workers looking for work with a proc */
	/*
	 * Timer watch: at most one parked worker sleeps with a timeout set to
	 * the earliest timer of all procs. timer_watch_until is that deadline
	 * (UINT64_MAX: no watcher). A new earlier timer wakes the watcher.
	 */
	_Atomic(struct kg_worker *) timer_watcher;
	_Atomic uint64_t timer_watch_until;

	_Atomic uint32_t done;		/* main returned: all workers stop */
	_Atomic uint32_t stale_dropped;	/* a worker dropped earlier runs' records */
	/*
	 * Deadlock watch (rt.lock): when every proc is idle with nothing
	 * queued, no timer and no plain thread blocked in a kgreen call,
	 * dl_since is when that was first seen and dl_progress the progress
	 * count then; unchanged for KG_DEADLOCK_NS means deadlock.
	 */
	uint64_t dl_since, dl_progress;
	uint32_t deadlock;		/* reported: kg_run returns -EDEADLK */
	_Atomic uint64_t parks;
	_Atomic uint64_t handoffs;
	uint32_t guard_mode;		/* stack.c: mode for new stacks */
	struct kg_stack_alloc *stacks;
	struct kg_co *main_co;
	/* the poller (netpoll.c), or NULL if it could not be set up */
	struct kg_netpoll *np;
};

static inline bool kg_rt_done(struct kg_rt *rt)
{
	/* acquire: pairs with the release store that ends the runtime */
	return atomic_load_explicit(&rt->done, memory_order_acquire) != 0;
}

/* Coroutines in p's ring (runnext not counted): a racy peek. */
static inline uint32_t kg_runq_len(struct kg_proc *p)
{
	uint32_t h = atomic_load_explicit(RQ_HEAD(p), memory_order_acquire);
	uint32_t t = atomic_load_explicit(RQ_TAIL(p), memory_order_acquire);

	return t - h;
}

/* Nothing queued on p, runnext included: a racy peek. */
static inline bool kg_runq_empty(struct kg_proc *p)
{
	return kg_runq_len(p) == 0 &&
	       !atomic_load_explicit(RQ_NEXT(p), memory_order_acquire);
}

/* Some coroutine is queued anywhere (global queue or a proc): a peek. */
static inline bool kg_any_work(struct kg_rt *rt)
{
	uint32_t i;

	if (kg_load_relaxed(GQ_LEN(rt)))
		return true;
	for (i = 0; i < rt->nprocs; i++)
		if (!kg_runq_empty(&rt->procs[i]))
			return true;
	return false;
}

#endif /* KG_RT_H */
