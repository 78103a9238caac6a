/* SPDX-License-Identifier: MIT */
/*
 * internal.h - libkgreen's internal types, shared by the scheduler (sched.c),
 * timers (timer.c), stacks (stack.c) and the context switch (context.h).
 * Nothing here is exported: the library is built with -fvisibility=hidden
 * and a version script; only include/kgreen.h names are public.
 */
#ifndef KG_INTERNAL_H
#define KG_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kgreen.h"
/*
 * The shared state's racy reads (kg_proc_has_work) as relaxed atomics:
 * the same single loads, and ThreadSanitizer sees what they are.
 */
#define KG_LOAD_ONCE(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#include "uapi/kgreen.h"

#define KG_CACHELINE 64
#define kg_likely(x) __builtin_expect(!!(x), 1)
#define kg_unlikely(x) __builtin_expect(!!(x), 0)
#define kg_barrier() __asm__ __volatile__("" ::: "memory")
/* Our thread-locals are few and small: static TLS, no __tls_get_addr. */
#define KG_TLS __attribute__((tls_model("initial-exec")))

/*
 * Static probes for tracers (tools/trace/kgreen-trace; bpftrace, perf):
 * USDT, provider "kgreen". Each is a single nop until a tracer attaches.
 *   co_run(worker, coroutine id)   the worker switches to it (0: the
 *                                  scheduler's own context)
 *   handoff(proc, from, to)        proc moved from blocked worker `from`
 *                                  to worker `to` (-1: not chosen yet)
 */
#ifdef KG_HAVE_SDT
#include <sys/sdt.h>
#define KG_PROBE2(name, a, b) DTRACE_PROBE2(kgreen, name, a, b)
#define KG_PROBE3(name, a, b, c) DTRACE_PROBE3(kgreen, name, a, b, c)
#else
#define KG_PROBE2(name, a, b) do { } while (0)
#define KG_PROBE3(name, a, b, c) do { } while (0)
#endif

static inline void kg_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Relaxed shorthands for single-writer counters and hints. */
#define kg_load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define kg_store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
/* Increment of a counter that only one thread writes: no locked RMW needed. */
#define kg_count(p) kg_store_relaxed((p), kg_load_relaxed(p) + 1)

/* A broken internal invariant: print the function's complaint and abort. */
__attribute__((noreturn, format(printf, 1, 2)))
void kg_throw(const char *fmt, ...);
/* One line on stderr when debugging is on (KGREEN_DEBUG=1). */
__attribute__((format(printf, 1, 2))) void kg_debug(const char *fmt, ...);

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
	uint16_t is_main;
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
	 * (written by thieves and the owner) alone in a line; tail (owner,
	 * release; thieves acquire) with runnext. Use RQ_HEAD/RQ_TAIL/RQ_NEXT.
	 */
	struct kg_proc_slot *slot;
	uint32_t index;
	uint32_t schedtick;		/* owner only */
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
	uint64_t rand;
	pthread_t thread;
	void *altstack;
	stack_t old_altstack;		/* the thread's own, restored at exit */
	_Atomic uint32_t exited;
	_Atomic uint64_t switches;	/* single writer (this worker), relaxed */
	uint32_t tid;			/* registered with the backend, or 0 */
	/*
	 * Proc taken while a coroutine ran on this worker: lost_seen counts
	 * the takes userspace has learnt of (the standby read the kernel's
	 * record, or sysmon retook it), lost_handled the worker's own
	 * returns to the scheduler without its proc (lost_proc). While
	 * seen > handled, the worker is out with a coroutine, blocked: the
	 * deadlock watch counts it as a possible waker.
	 */
	_Atomic uint64_t lost_seen, lost_handled;
	/*
	 * sysmon backend: blk is KG_BLK_IN between kg_blocking_begin and
	 * _end (since: when it began); sysmon moves it IN -> RETAKEN by CAS
	 * before it takes the proc, and _end's CAS IN -> NONE fails then.
	 */
	_Atomic uint32_t blk;
	_Atomic uint64_t blk_since;
	/* event backends: 1 while a standby (waits for the kernel side's
	 * records, not on its futex) */
	_Atomic uint32_t standby;
	int ep_fd, kick_fd;		/* bpf: its epoll set and eventfd, or -1 */
	/* kmod: a record KG_IOC_WAIT returned, not yet handled (its own) */
	struct kg_handoff_event kev;
	bool kev_full;
};

enum { KG_BLK_NONE = 0, KG_BLK_IN = 1, KG_BLK_RETAKEN = 2 };

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

struct kg_rt {
	uint32_t nprocs;
	uint32_t ncpus;			/* CPUs we may run on */
	size_t stack_size;
	int debug;
	struct kg_proc *procs;		/* nprocs of them */
	/*
	 * The memory shared with the kernel side (uapi/kgreen.h): the BPF
	 * backend's mmapped map, else our own allocation (shared_owned).
	 */
	struct kg_shared *shared;
	bool shared_owned;
	uint32_t backend;		/* enum kg_backend_id */
	const struct kg_evops *ev;	/* bpf, kmod: the event backend */
	/*
	 * Event backends (bpf): parked workers that wait for the kernel
	 * side's handoff records (at most KG_STANDBYS; a worker that parks
	 * while there are fewer takes the role).
	 */
	_Atomic uint32_t nstandby;
	_Atomic uint32_t standby_spinning;	/* one standby polls at a time */
	/* sysmon backend: the monitor thread */
	pthread_t sysmon;
	bool sysmon_on;
	_Atomic uint32_t sysmon_stop;	/* futex word: 1 = stop */
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
};

/*
 * Plain threads (not workers) that have waited in or woken through a
 * kgreen object and are still alive: any of them may wake a coroutine
 * later, so the deadlock watch stays quiet while there is one. The count
 * drops when such a thread exits (a pthread key destructor). kg_run's
 * own thread is not counted while it runs the runtime.
 */
extern _Atomic long kg_foreign_threads;
/* Wake-ups made by plain threads: progress the deadlock watch sees. */
extern _Atomic uint64_t kg_foreign_wakes;
/* Count the calling plain thread as a possible waker (once). */
void kg_foreign_note(void);
/*
 * Every public channel and sync call: a plain thread (not a worker) counts
 * from now on as a possible waker for the deadlock watch, until it exits.
 * Initial-exec TLS is read through %fs (tpidr_el0) at each access, so a
 * coroutine reads the worker it runs on now; callers read it before any
 * switch of theirs anyway.
 */
extern __thread struct kg_worker *kg_tls_worker KG_TLS;
void kg_note_caller_slow(void);
void kg_proc_lost_slow(struct kg_worker *w);

/* The kernel side (or sysmon) took w's proc while its coroutine blocked. */
static inline bool kg_proc_lost(struct kg_worker *w)
{
	return __atomic_load_n(&w->slot->proc, __ATOMIC_RELAXED) ==
	       KG_PROC_NONE;
}

/*
 * At the entry of every channel and sync call (never with a lock held):
 * note a plain thread; and, Go's exitsyscall deferred to where the
 * runtime can see it, send a coroutine whose worker's proc the kernel
 * side took while it blocked through the scheduler before it goes on, so
 * that it runs procless only until its next kgreen call.
 */
static inline void kg_note_caller(void)
{
	struct kg_worker *w = kg_tls_worker;

	if (kg_unlikely(!w))
		kg_note_caller_slow();
	else if (kg_unlikely(kg_proc_lost(w)))
		kg_proc_lost_slow(w);
}
/* kg_run's thread: stop counting it while it is a worker; resume after. */
bool kg_foreign_pause(void);
void kg_foreign_resume(bool was);

/* Debug level (KGREEN_DEBUG / kg_config.debug) of the runtime. */
int kg_debug_level(void);

/* The worker running on this thread, NULL outside the runtime. */
struct kg_worker *kg_worker_self(void);
struct kg_rt *kg_rt_current(void);

/* sched.c */
void kg_ready(struct kg_worker *w, struct kg_co *co, bool next);
/* Make a parked coroutine runnable from any thread (worker or not). */
void kg_wake(struct kg_co *co);
/* Park the calling coroutine; commit(w, co, arg) runs once it is switched out. */
void kg_sched_park(kg_after_fn commit, void *arg);
/* Nudge a parked timer watcher to re-read the timer heaps. */
void kg_kick_watcher(struct kg_worker *w);
void kg_wakep(struct kg_rt *rt);
uint64_t kg_rand(struct kg_worker *w);
uint64_t kg_live(struct kg_rt *rt);

/*
 * Hand proc p (detached from its blocked worker) to a parked worker, or a
 * new one. sysmon.c's retake.
 */
void kg_handoff_proc(struct kg_rt *rt, struct kg_proc *p);
/* The calling coroutine's worker lost its proc: go through lost_proc now. */
void kg_sched_lost(struct kg_worker *w);

/*
 * The event backends, bpf.c and kmod.c: a kernel side detaches a blocked
 * worker's proc and queues a handoff record, which a standby takes.
 * Loaded once per process (again in a forked child).
 */
typedef void (*kg_event_fn)(void *arg, const struct kg_handoff_event *ev);
struct kg_evops {
	/* The calling thread, worker w, tells the kernel side who it is /
	 * that it is leaving (always called by w's own thread). */
	int (*worker_add)(struct kg_worker *w);
	void (*worker_del)(struct kg_worker *w);
	/* Forget worker w's thread, from another thread (kg_run leaving w
	 * behind); NULL where only the thread itself can (kmod: it does so
	 * when it ends). */
	void (*worker_forget)(struct kg_worker *w);
	/*
	 * Hand every pending handoff record to fn (non-blocking), w's own
	 * first; how many. Called by the standby w; fn may take rt.lock.
	 */
	int (*events)(struct kg_worker *w, kg_event_fn fn, void *arg);
	/* Set up w's wait (idempotent); 0 or -errno. */
	int (*waiter_open)(struct kg_worker *w);
	/* Sleep until a record is pending, w is kicked, or deadline
	 * (kg_now_ns; UINT64_MAX: none). */
	void (*wait)(struct kg_worker *w, uint64_t deadline);
	/* End w's current or next wait (from any thread). */
	void (*kick)(struct kg_worker *w);
	/* A record is waiting (a cheap peek, for a polling standby). */
	bool (*pending)(void);
};

/* bpf.c: the BPF backend (fails with -ENODEV when built without libbpf) */
int kg_bpf_open(struct kg_shared **shared, const struct kg_evops **ops,
		char *why, size_t whylen);
/* kmod.c: the kernel module backend, /dev/kgreen */
int kg_kmod_open(struct kg_shared **shared, const struct kg_evops **ops,
		 char *why, size_t whylen);

/*
 * Count a handoff of blocked worker from's proc that took ns (from the
 * block or the kernel's detach to the proc moving on).
 */
void kg_handoff_seen(struct kg_rt *rt, struct kg_worker *from, uint64_t ns);

/* sysmon.c: the backend without kernel help */
int kg_sysmon_start(struct kg_rt *rt);
void kg_sysmon_stop(struct kg_rt *rt);

/* timer.c */
int kg_timers_init(struct kg_timer_heap *h);
void kg_timers_destroy(struct kg_timer_heap *h);
/*
 * Arm t (fn, arg set) for deadline when on the calling worker's proc's heap
 * (procs[0]'s from a thread outside the runtime). 0, or -ENOMEM.
 */
int kg_timer_start(struct kg_rt *rt, struct kg_timer *t, uint64_t when);
/* Disarm t; true if it was armed. Afterwards t->fn is not running. */
bool kg_timer_cancel(struct kg_timer *t);
/* Detach every timer still armed on rt's heaps (the runtime is ending). */
void kg_timers_orphan(struct kg_rt *rt);
/* Fire the proc's expired timers onto w's proc; returns how many. */
unsigned int kg_timers_run(struct kg_worker *w, struct kg_proc *p, uint64_t now);
uint64_t kg_timers_next_all(struct kg_rt *rt);

/* stack.c */
int kg_stacks_init(struct kg_rt *rt);
void kg_stacks_destroy(struct kg_rt *rt);
struct kg_co *kg_co_alloc(struct kg_rt *rt, struct kg_proc *p, size_t size);
void kg_co_free(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co);
void kg_procs_cache_drain(struct kg_rt *rt, struct kg_proc *p, uint32_t keep);
int kg_altstack_setup(struct kg_worker *w);
void kg_altstack_teardown(struct kg_worker *w);
int kg_segv_install(void);
void kg_segv_restore(void);
void kg_canary_check(struct kg_co *co);
uint64_t kg_stack_bytes(struct kg_rt *rt);
/* Call fn on every coroutine alive (quiescent callers only: reports). */
void kg_co_foreach(struct kg_rt *rt, void (*fn)(struct kg_co *, void *),
		   void *arg);
/* The name of co's entry function, or "?". */
const char *kg_co_entry_name(struct kg_co *co);

/* ------------------------------------------------------------------ */
/* wait.c: locks and parkers shared by channels and sync objects       */
/* ------------------------------------------------------------------ */

/*
 * kg_lock: a mutex for short critical sections (channels, sync objects):
 * spins briefly, then sleeps on a futex. 0 unlocked, 1 locked, 2 locked
 * with sleepers. A coroutine may hold one across its own switch-out only
 * through a post-switch action that releases it (the park commit).
 */
typedef struct { _Atomic uint32_t v; } kg_lock_t;

/* Private futex wait until *addr != val, a wake, or deadline (kg_now_ns
 * clock; UINT64_MAX: none); and wake n waiters. */
void kg_futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline);
void kg_futex_wake(_Atomic uint32_t *addr, int n);

void kg_lock_slow(kg_lock_t *l);
void kg_unlock_slow(kg_lock_t *l);

static inline void kg_lock(kg_lock_t *l)
{
	uint32_t zero = 0;

	/* acquire: pairs with the release in kg_unlock */
	if (kg_likely(atomic_compare_exchange_strong_explicit(
		    &l->v, &zero, 1, memory_order_acquire, memory_order_relaxed)))
		return;
	kg_lock_slow(l);
}

static inline void kg_unlock(kg_lock_t *l)
{
	/* release: pairs with the acquire in kg_lock */
	if (kg_unlikely(atomic_exchange_explicit(&l->v, 0,
						 memory_order_release) == 2))
		kg_unlock_slow(l);
}

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

/* Absolute deadline ns from now (saturating). */
static inline uint64_t kg_deadline(uint64_t now, uint64_t ns)
{
	return now + ns < now ? UINT64_MAX - 1 : now + ns;
}

/*
 * Debug builds (KG_DEBUG, on in sanitizer builds) count the read-side
 * sections the channel code holds on each worker and throw if a
 * coroutine switch happens inside one: a section must never span a
 * switch (the coroutine may resume on another thread, and a parked
 * coroutine would hold back every grace period).
 */
#if defined(KG_DEBUG) || defined(__SANITIZE_ADDRESS__) || \
	defined(__SANITIZE_THREAD__)
#define KG_DEBUG_RCU 1
extern __thread int kg_rcu_depth KG_TLS;
#endif

/* A cheap random number for the calling thread (select's poll order). */
uint64_t kg_fastrand(void);

#endif /* KG_INTERNAL_H */
