/* SPDX-License-Identifier: MIT */
/*
 * kgreen.h - Go-style concurrency for C: coroutines scheduled M:N over a few
 * OS threads.
 *
 * Conventions, for every function below:
 *  - functions that can fail return 0 (or a non-negative value) on success and
 *    a negative errno on failure; each function's comment lists its errors;
 *  - constructors return NULL and set errno;
 *  - every exported name starts with kg_ (functions, types) or KG_ (macros).
 *
 * The manual is Documentation/api.md; this header is its table of contents.
 */
#ifndef KGREEN_H
#define KGREEN_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KG_API __attribute__((visibility("default")))
#else
#define KG_API
#endif

#define KG_VERSION_MAJOR 0
#define KG_VERSION_MINOR 1

/*
 * errno, for code that runs in coroutines. A coroutine may resume on
 * another thread after any kgreen call, but glibc declares
 * __errno_location const, so the compiler may compute errno's address
 * once per function and read the first thread's variable after a switch
 * (a loop "read(); on EAGAIN, kg_fd_wait(); again" is the usual victim).
 * kg_errno_location() is an ordinary call: every use of errno in code
 * that includes this header asks for the running thread's. The runtime
 * carries errno's value across switches. Define KG_NO_ERRNO_OVERRIDE
 * before including this header to keep glibc's macro.
 */
KG_API int *kg_errno_location(void);
#ifndef KG_NO_ERRNO_OVERRIDE
#undef errno
#define errno (*kg_errno_location())
#endif

/* ------------------------------------------------------------------ */
/* Runtime                                                             */
/* ------------------------------------------------------------------ */

/*
 * Runtime configuration for kg_run(). Zero (or a NULL cfg) means "default";
 * the environment overrides defaults, explicit fields override both.
 */
struct kg_config {
	unsigned int procs;	/* scheduling slots; 0: KGREEN_PROCS, else CPUs */
	size_t stack_size;	/* default coroutine stack; 0: 256 KiB */
	const char *backend;	/* NULL: KGREEN_BACKEND, else "auto" */
	int debug;		/* 0: KGREEN_DEBUG; 1: debug log on stderr */
	unsigned int flags;	/* KG_RUN_ flags; others must be 0 */
	unsigned int __reserved[7];
};

/*
 * libc's blocking socket, pipe and sleep calls made in coroutines park the
 * coroutine instead of holding its thread (Documentation/net.md). This
 * flag, or KGREEN_INTERPOSE=0 in the environment, turns that off: they
 * block their thread, and only the handoff covers them.
 */
#define KG_RUN_NO_INTERPOSE 1u

/*
 * kg_run - start the runtime, run main_fn(arg) as the first coroutine, and
 * return when main_fn returns (as a Go program ends when main returns; other
 * coroutines still alive are abandoned, and reported with KGREEN_DEBUG=1,
 * even those blocked in the kernel: their threads are left behind after
 * 1 s). The calling thread runs no coroutine; it waits here.
 * Returns 0, or:
 *   -EINVAL  main_fn is NULL, or cfg has an invalid field (procs > 1024,
 *            unknown backend, flags set, stack size out of range)
 *   -EBUSY   the runtime is already running in this process
 *   -ENOMEM  the runtime's memory or threads could not be allocated
 *   -ENODEV  the backend named explicitly cannot be used here
 *   -EDEADLK every coroutine waited on a channel or sync object with
 *            nothing left that could wake one; "all coroutines are asleep
 *            - deadlock!" and where each waited were printed on stderr
 * The runtime can be started again after kg_run returns.
 */
KG_API int kg_run(void (*main_fn)(void *), void *arg,
		  const struct kg_config *cfg);

/* Options for kg_go_opts(); zeroed fields mean defaults. */
struct kg_spawn_opts {
	size_t stack_size;	/* bytes; 0: the runtime default */
	const char *name;	/* copied (up to 31 bytes); NULL: unnamed */
	unsigned int flags;	/* KG_GO_ flags; others must be 0 */
	unsigned int __reserved[5];
};

/*
 * The coroutine never loses its proc at the end of a time slice
 * (Documentation/threads.md, "Time slicing"): for code that must stay on
 * the thread that runs it, as far as kgreen is concerned, until its next
 * kgreen call. A block in the kernel still hands its proc off.
 */
#define KG_GO_NOPREEMPT 1u

#define KG_STACK_MIN ((size_t)16 * 1024)
#define KG_STACK_MAX ((size_t)1024 * 1024 * 1024)

/*
 * kg_go - spawn a coroutine running fn(arg). Returns its id (> 0, unique for
 * the life of the process), or:
 *   -EINVAL  fn is NULL
 *   -EPERM   no runtime is running (call from within kg_run's coroutines)
 *   -ENOMEM  no memory for the coroutine or its stack
 * It may yield to the coroutines queued on the caller's proc before making
 * a new stack, so that a spawning loop reuses the stacks of those that
 * exit (a KG_GO_NOPREEMPT caller never yields here).
 */
KG_API long kg_go(void (*fn)(void *), void *arg);

/*
 * kg_go_opts - kg_go with options. Errors as kg_go, and -EINVAL when the
 * stack size is outside [KG_STACK_MIN, KG_STACK_MAX] or flags other than
 * KG_GO_ ones are set.
 */
KG_API long kg_go_opts(void (*fn)(void *), void *arg,
		       const struct kg_spawn_opts *opts);

/* kg_yield - let other runnable coroutines run; a no-op outside the runtime. */
KG_API void kg_yield(void);

/* kg_self - the calling coroutine's id, or 0 when not called from one. */
KG_API long kg_self(void);

/*
 * kg_sleep - park the calling coroutine for at least ns nanoseconds
 * (the worker runs other coroutines meanwhile); ns == 0 yields. From a
 * plain thread it sleeps the thread. Signals do not cut it short.
 * Returns 0, or:
 *   -ENOMEM  no memory to queue the timer (nothing slept)
 */
KG_API int kg_sleep(uint64_t ns);

/* kg_now_ns - CLOCK_MONOTONIC in nanoseconds; the runtime's clock. */
KG_API uint64_t kg_now_ns(void);

/*
 * kg_fd_wait - wait until fd is readable (KG_FD_READ) or writable
 * (KG_FD_WRITE), for at most timeout_ns (-1: no limit; 0: only look).
 * A coroutine parks and its worker runs others meanwhile (the runtime's
 * poller watches fd); a plain thread sleeps in ppoll(2). Use it with a
 * non-blocking descriptor: do the read or write, and on EAGAIN wait here
 * and try again (readiness may be reported more often than it lasts).
 * A descriptor epoll cannot watch (a regular file) is always ready.
 * Returns 0 (ready), or:
 *   -ETIMEDOUT  the time passed first
 *   -EBADF      fd is not open, or kg_fd_close closed it while waiting
 *   -EINVAL     events is not exactly one of KG_FD_READ, KG_FD_WRITE
 *   -ENOMEM     no memory for the wait (nothing waited)
 */
#define KG_FD_READ 1
#define KG_FD_WRITE 2
KG_API int kg_fd_wait(int fd, int events, int64_t timeout_ns);

/*
 * kg_fd_close - close(fd), first ending the waits on it: coroutines in
 * kg_fd_wait(fd) return -EBADF (Go's "use of closed network connection").
 * Returns 0 or close's -errno.
 */
KG_API int kg_fd_close(int fd);

/*
 * kg_blocking_begin / kg_blocking_end - bracket a call that may block in
 * the kernel (read on a pipe, fsync, a lock held by a plain thread...).
 * Only the sysmon backend needs them: its monitor thread hands the proc of
 * a coroutine that stays inside such a region for more than 20 us to
 * another worker, so the coroutines queued behind it run meanwhile. The
 * bpf and kmod backends see every block in the kernel, annotated or not,
 * and make these no-ops. Outside a coroutine they do nothing. Between the
 * two calls, call nothing of kgreen's; regions do not nest (the inner end
 * ends the region).
 */
KG_API void kg_blocking_begin(void);
KG_API void kg_blocking_end(void);

/* kg_backend_name - "sysmon", "bpf" or "kmod" while running; "none" otherwise. */
KG_API const char *kg_backend_name(void);

enum kg_stack_guard {
	KG_GUARD_NONE = 0,	/* runtime not started */
	KG_GUARD_MADVISE = 1,	/* MADV_GUARD_INSTALL: page-table guards, no VMA */
	KG_GUARD_MPROTECT = 2,	/* PROT_NONE page per stack, costs VMAs */
	KG_GUARD_CANARY = 3,	/* canary words checked at every switch */
};

/* Counters; all cumulative since kg_run began unless said otherwise. */
struct kg_stats {
	uint32_t procs;		/* scheduling slots */
	uint32_t workers;	/* OS threads the runtime has started */
	uint32_t stack_guard;	/* enum kg_stack_guard for new stacks */
	uint32_t __pad;
	uint64_t coroutines;	/* alive now */
	uint64_t spawned;	/* total kg_go calls that succeeded */
	uint64_t switches;	/* coroutine switches */
	uint64_t steals;	/* coroutines moved by work stealing */
	uint64_t timer_steals;	/* timers fired by a proc other than their own */
	uint64_t parks;		/* times an idle worker parked on its futex */
	uint64_t handoffs;	/* procs taken from blocked workers */
	uint64_t stack_bytes;	/* virtual bytes reserved for stacks */
	/* bpf/kmod: blocking switches of workers the kernel side saw */
	uint64_t blocks;
	/*
	 * Handoff latency: bpf/kmod from the kernel's detach (at the block)
	 * to a spare holding the proc; sysmon from kg_blocking_begin to the
	 * retake. p50/p99 are within 25% (a histogram's bucket floors).
	 */
	uint64_t handoff_ns_sum;	/* divide by handoffs for the mean */
	uint64_t handoff_ns_max;
	uint64_t handoff_ns_p50;
	uint64_t handoff_ns_p99;
	/*
	 * Procs taken from a coroutine that ran a whole time slice without
	 * a kgreen call (also counted in handoffs), and such coroutines
	 * running off their procs now.
	 */
	uint64_t preemptions;
	uint64_t preempted_now;
	uint64_t __reserved[1];
};

/*
 * kg_stats - copy the runtime's counters into *out. Returns 0, or
 *   -EINVAL  out is NULL
 *   -ESRCH   the runtime is not running
 */
KG_API int kg_stats(struct kg_stats *out);

/* ------------------------------------------------------------------ */
/* WaitGroup                                                           */
/* ------------------------------------------------------------------ */

/*
 * kg_wg_t - Go's sync.WaitGroup: a counter; kg_wg_wait blocks until it is
 * zero. Works from coroutines (parks the coroutine, not the worker) and
 * from plain threads (futex). Initialize with KG_WG_INIT or zero memory.
 * The fields are internal.
 */
typedef struct kg_wg {
	uint64_t state;		/* counter (high 32 bits), waiters (low 32) */
	uint32_t lock;
	uint32_t __pad;
	void *waiters;
} kg_wg_t;

#define KG_WG_INIT { 0, 0, 0, NULL }

/*
 * kg_wg_add - add delta (may be negative) to the counter; at zero, every
 * waiter is released. Returns 0, or:
 *   -EINVAL  wg is NULL, delta is outside the int32_t range, or the
 *            counter would go negative or past INT32_MAX (it is left
 *            unchanged; a concurrent kg_wg_wait may wait for the
 *            transient value, as misuse does in Go)
 */
KG_API int kg_wg_add(kg_wg_t *wg, int64_t delta);

/* kg_wg_done - kg_wg_add(wg, -1). */
KG_API int kg_wg_done(kg_wg_t *wg);

/*
 * kg_wg_wait - block until the counter is zero. Returns 0, or:
 *   -EINVAL  wg is NULL
 */
KG_API int kg_wg_wait(kg_wg_t *wg);

/* ------------------------------------------------------------------ */
/* Mutex, RWMutex, Cond, Once, Semaphore                               */
/* ------------------------------------------------------------------ */

/*
 * Go's sync package. Common to all of them:
 *  - a blocked call parks the calling coroutine, never its worker; from a
 *    plain thread (or with no runtime at all) it sleeps on a futex; the
 *    two mix freely on one object;
 *  - initialize with the KG_..._INIT macro or zeroed memory (a semaphore
 *    with KG_SEM_INIT(n) or kg_sem_init); no destroy call is needed, and
 *    an object must not be moved or copied while in use;
 *  - the struct fields are internal (the layout is fixed, with reserved
 *    room), and a lock is not owned by a coroutine: any coroutine or
 *    thread may unlock it, as in Go;
 *  - every call that can block may move the calling coroutine to another
 *    worker thread (see Documentation/threads.md), and so may
 *    kg_mutex_unlock: in starvation mode it lets the waiter it handed
 *    the lock to run first.
 */

/* Internal to the types below: a FIFO of waiting callers. */
struct kg_waitq {
	void *head, *tail;
};

/*
 * kg_mutex_t - Go's sync.Mutex. Normal mode: a newly arriving locker may
 * take the lock ahead of woken waiters (throughput). Once a waiter has
 * waited more than 1 ms the mutex enters starvation mode: unlock hands it
 * straight to the first waiter in FIFO order, until a waiter that waited
 * less than 1 ms, or was the last one, returns it to normal mode.
 */
typedef struct kg_mutex {
	uint32_t state;		/* locked, woken, starving, waiters<<3 */
	uint32_t sema;		/* wake tokens not yet taken */
	uint32_t lock;		/* protects sema and q */
	uint32_t __pad;
	struct kg_waitq q;
	uint64_t __reserved[2];
} kg_mutex_t;

#define KG_MUTEX_INIT { 0, 0, 0, 0, { NULL, NULL }, { 0, 0 } }

/*
 * kg_mutex_lock - lock m, waiting while another holds it. Returns 0, or:
 *   -EINVAL  m is NULL
 */
KG_API int kg_mutex_lock(kg_mutex_t *m);

/*
 * kg_mutex_trylock - lock m if that needs no waiting. Returns 0, or:
 *   -EINVAL  m is NULL
 *   -EBUSY   m is locked (or handed to a waiter in starvation mode)
 */
KG_API int kg_mutex_trylock(kg_mutex_t *m);

/*
 * kg_mutex_unlock - unlock m and let a waiter have it. Returns 0, or:
 *   -EINVAL  m is NULL
 *   -EPERM   m is not locked (Go throws; m is left unchanged)
 */
KG_API int kg_mutex_unlock(kg_mutex_t *m);

/*
 * kg_rwmutex_t - Go's sync.RWMutex: any number of readers or one writer.
 * A writer waiting in kg_rwmutex_lock keeps new readers out, so a stream
 * of readers cannot starve it; the writer waits for the readers already
 * in. A reader must not take the read lock again while holding it (a
 * waiting writer would deadlock both, as in Go).
 */
typedef struct kg_rwmutex {
	kg_mutex_t w;		/* held by the writer (or one waiting) */
	int32_t readers;	/* readers in or waiting; -2^30: writer */
	int32_t departing;	/* readers the waiting writer waits for */
	uint32_t lock;		/* protects the tokens and queues below */
	uint32_t rsema, wsema;	/* wake tokens: readers, writer */
	uint32_t __pad;
	struct kg_waitq rq, wq;
	uint64_t __reserved[2];
} kg_rwmutex_t;

#define KG_RWMUTEX_INIT                                                       \
	{ KG_MUTEX_INIT, 0, 0, 0, 0, 0, 0, { NULL, NULL }, { NULL, NULL },    \
	  { 0, 0 } }

/*
 * kg_rwmutex_rlock - take a read lock, waiting while a writer holds the
 * lock or waits for it. Returns 0, or:
 *   -EINVAL  rw is NULL
 */
KG_API int kg_rwmutex_rlock(kg_rwmutex_t *rw);

/*
 * kg_rwmutex_tryrlock - take a read lock if that needs no waiting.
 * Returns 0, or:
 *   -EINVAL  rw is NULL
 *   -EBUSY   a writer holds the lock or waits for it
 */
KG_API int kg_rwmutex_tryrlock(kg_rwmutex_t *rw);

/*
 * kg_rwmutex_runlock - release a read lock. Returns 0, or:
 *   -EINVAL  rw is NULL
 *   -EPERM   no reader holds rw or waits for it (rw is left unchanged;
 *            readers waiting behind a writer are not told apart from
 *            readers in, as in Go)
 */
KG_API int kg_rwmutex_runlock(kg_rwmutex_t *rw);

/*
 * kg_rwmutex_lock - take the write lock, waiting for other writers and for
 * the readers in. Returns 0, or:
 *   -EINVAL  rw is NULL
 */
KG_API int kg_rwmutex_lock(kg_rwmutex_t *rw);

/*
 * kg_rwmutex_trylock - take the write lock if that needs no waiting.
 * Returns 0, or:
 *   -EINVAL  rw is NULL
 *   -EBUSY   a reader or a writer holds rw, or a writer waits for it
 */
KG_API int kg_rwmutex_trylock(kg_rwmutex_t *rw);

/*
 * kg_rwmutex_unlock - release the write lock; readers that waited for it
 * get in before the next writer. Returns 0, or:
 *   -EINVAL  rw is NULL
 *   -EPERM   rw is not write-locked (rw is left unchanged; a writer
 *            still waiting for readers to leave is not told apart)
 */
KG_API int kg_rwmutex_unlock(kg_rwmutex_t *rw);

/*
 * kg_cond_t - Go's sync.Cond, bound to a kg_mutex_t at each wait. Waiters
 * are woken in the order they started waiting. As everywhere, re-check
 * the condition in a loop around the wait.
 */
typedef struct kg_cond {
	uint32_t lock;		/* protects q */
	uint32_t __pad;
	struct kg_waitq q;
	uint64_t __reserved[2];
} kg_cond_t;

#define KG_COND_INIT { 0, 0, { NULL, NULL }, { 0, 0 } }

/*
 * kg_cond_wait - unlock m, wait for a signal or broadcast, lock m again;
 * no signal sent after the wait began is missed (the unlock and the start
 * of the wait are one step). The caller must hold m. Returns 0, or:
 *   -EINVAL  c or m is NULL
 *   -EPERM   m is not locked (nothing waited; m is left unchanged)
 */
KG_API int kg_cond_wait(kg_cond_t *c, kg_mutex_t *m);

/*
 * kg_cond_wait_timeout - kg_cond_wait for at most ns nanoseconds. m is
 * locked again in every case but -EINVAL and -EPERM. Errors as
 * kg_cond_wait, and:
 *   -ETIMEDOUT  the time passed with no signal for this waiter
 *   -ENOMEM     no memory to queue the coroutine's timer (nothing waited;
 *               m is still locked)
 */
KG_API int kg_cond_wait_timeout(kg_cond_t *c, kg_mutex_t *m, uint64_t ns);

/*
 * kg_cond_signal - wake the longest-waiting waiter, if any. Returns 0, or:
 *   -EINVAL  c is NULL
 */
KG_API int kg_cond_signal(kg_cond_t *c);

/*
 * kg_cond_broadcast - wake every waiter. Returns 0, or:
 *   -EINVAL  c is NULL
 */
KG_API int kg_cond_broadcast(kg_cond_t *c);

/*
 * kg_once_t - Go's sync.Once: kg_once runs fn(arg) the first time it is
 * called on the object, and never again; every caller returns only once
 * that call of fn has returned. fn must not call kg_once on the same
 * object (it would wait for itself, as in Go).
 */
typedef struct kg_once {
	uint32_t done;		/* fn has returned */
	uint32_t __pad;
	kg_mutex_t m;		/* held while fn runs */
} kg_once_t;

#define KG_ONCE_INIT { 0, 0, KG_MUTEX_INIT }

/*
 * kg_once - run fn(arg) if no call on once has yet; wait for that call to
 * return. Returns 0 (whether or not this call ran fn), or:
 *   -EINVAL  once or fn is NULL
 */
KG_API int kg_once(kg_once_t *once, void (*fn)(void *), void *arg);

/*
 * kg_sem_t - a counting semaphore (Go's x/sync/semaphore with weight 1):
 * acquire takes a token, waiting while there is none; release returns one.
 * Waiters get tokens in FIFO order: a release with waiters hands its token
 * to the first one, and a new acquirer never takes one ahead of them.
 * KG_SEM_INIT(n) starts with n tokens, 0 <= n <= INT32_MAX.
 */
typedef struct kg_sem {
	uint64_t state;		/* tokens (low 32 bits), waiters */
	uint32_t lock;		/* protects q and the waiter count */
	uint32_t __pad;
	struct kg_waitq q;
	uint64_t __reserved[2];
} kg_sem_t;

#define KG_SEM_INIT(n)                                                        \
	{ (uint64_t)(uint32_t)(n), 0, 0, { NULL, NULL }, { 0, 0 } }

/*
 * kg_sem_init - set s up with n tokens (for memory a static initializer
 * cannot reach); s must not be in use. Returns 0, or:
 *   -EINVAL  s is NULL, or n is negative
 */
KG_API int kg_sem_init(kg_sem_t *s, int32_t n);

/*
 * kg_sem_acquire - take a token, waiting for one. Returns 0, or:
 *   -EINVAL  s is NULL
 */
KG_API int kg_sem_acquire(kg_sem_t *s);

/*
 * kg_sem_tryacquire - take a token if one is free now. Returns 0, or:
 *   -EINVAL  s is NULL
 *   -EAGAIN  no token is free (or waiters are queued for them)
 */
KG_API int kg_sem_tryacquire(kg_sem_t *s);

/*
 * kg_sem_acquire_timeout - take a token, waiting at most ns nanoseconds;
 * ns == 0 behaves as kg_sem_tryacquire. Returns 0, or:
 *   -EINVAL     s is NULL
 *   -EAGAIN     ns == 0 and no token is free
 *   -ETIMEDOUT  the time passed first (no token was taken)
 *   -ENOMEM     no memory to queue the coroutine's timer (nothing waited)
 */
KG_API int kg_sem_acquire_timeout(kg_sem_t *s, uint64_t ns);

/*
 * kg_sem_release - return a token: to the first waiter if there is one.
 * Returns 0, or:
 *   -EINVAL     s is NULL
 *   -EOVERFLOW  s already holds INT32_MAX free tokens (left unchanged)
 */
KG_API int kg_sem_release(kg_sem_t *s);

/* ------------------------------------------------------------------ */
/* Channels                                                            */
/* ------------------------------------------------------------------ */

/*
 * kg_chan_t - Go's channel: a typed FIFO of fixed-size elements between
 * coroutines (and plain threads). capacity 0 is unbuffered (a send waits
 * for a receiver: rendezvous); capacity > 0 buffers that many elements.
 * Elements are copied in and out by value (elem_size bytes). elem_size 0
 * makes a pure signal channel (elem pointers may then be NULL).
 * Every blocking call parks the calling coroutine, never its worker; from a
 * plain thread it sleeps on a futex. Channels need no running runtime.
 */
typedef struct kg_chan kg_chan_t;

#define KG_CHAN_ELEM_MAX ((size_t)65536)

/*
 * kg_chan_make - a new channel. NULL with errno set on failure:
 *   EINVAL  elem_size > KG_CHAN_ELEM_MAX, or elem_size * capacity overflows
 *   ENOMEM  no memory for the channel and its buffer
 */
KG_API kg_chan_t *kg_chan_make(size_t elem_size, size_t capacity);

/*
 * kg_chan_free - release a channel. Call it once no operation on it can
 * start any more (as with free()); coroutines still parked on it are a
 * bug (they would never wake): close it first. NULL is a no-op.
 */
KG_API void kg_chan_free(kg_chan_t *ch);

/*
 * kg_chan_send - copy *elem into the channel, waiting while it is full
 * (unbuffered: until a receiver takes it). Returns 0, or:
 *   -EINVAL  ch is NULL, or elem is NULL with elem_size > 0
 *   -EPIPE   the channel is closed (also when it is closed while waiting;
 *            the value was not sent)
 */
KG_API int kg_chan_send(kg_chan_t *ch, const void *elem);

/*
 * kg_chan_recv - take the oldest element into *out (out NULL: discard it),
 * waiting while the channel is empty. Returns 0, or:
 *   -EINVAL  ch is NULL
 *   -EPIPE   the channel is closed and drained (*out is left untouched)
 */
KG_API int kg_chan_recv(kg_chan_t *ch, void *out);

/* Non-blocking forms (Go's select with default): errors as above, and
 *   -EAGAIN  the operation would have to wait */
KG_API int kg_chan_try_send(kg_chan_t *ch, const void *elem);
KG_API int kg_chan_try_recv(kg_chan_t *ch, void *out);

/* Forms that wait at most ns nanoseconds: errors as above, and
 *   -ETIMEDOUT  the time passed first (nothing was sent or received)
 * ns == 0 behaves as the try_ form (-EAGAIN). */
KG_API int kg_chan_send_timeout(kg_chan_t *ch, const void *elem, uint64_t ns);
KG_API int kg_chan_recv_timeout(kg_chan_t *ch, void *out, uint64_t ns);

/*
 * kg_chan_close - no more sends: every waiting sender fails with -EPIPE,
 * receivers drain what is buffered and then see -EPIPE. Returns 0, or:
 *   -EINVAL  ch is NULL
 *   -EPIPE   the channel was already closed
 */
KG_API int kg_chan_close(kg_chan_t *ch);

/* Elements buffered now / the capacity / the element size (0 for NULL). */
KG_API size_t kg_chan_len(kg_chan_t *ch);
KG_API size_t kg_chan_cap(kg_chan_t *ch);
KG_API size_t kg_chan_elem_size(kg_chan_t *ch);

/* ------------------------------------------------------------------ */
/* Select                                                              */
/* ------------------------------------------------------------------ */

#define KG_SEND 1
#define KG_RECV 2

/*
 * One case of kg_select. ch NULL disables the case (Go's nil channel:
 * never ready). KG_SEND sends *elem; KG_RECV receives into *elem (NULL:
 * discard). ok is set on return: true when this case moved a value, false
 * for a recv case that found the channel closed.
 */
struct kg_case {
	kg_chan_t *ch;
	int op;
	void *elem;
	bool ok;
};

#define KG_SELECT_MAX 65535

/*
 * kg_select - Go's select: wait until one case can proceed, do exactly
 * that one, and return its index. When several are ready one is chosen
 * uniformly at random. timeout_ns: -1 waits forever, 0 is Go's default
 * case (return -EAGAIN when nothing is ready), > 0 waits at most that
 * long. n == 0 with -1 blocks forever (Go's empty select). Errors:
 *   -EINVAL     cases is NULL with n > 0, n > KG_SELECT_MAX, an op is
 *               neither KG_SEND nor KG_RECV, a send elem is NULL with
 *               elem_size > 0, or timeout_ns < -1
 *   -EAGAIN     timeout_ns == 0 and no case was ready
 *   -ETIMEDOUT  timeout_ns > 0 passed with no case ready
 *   -EPIPE      the chosen case sends on a closed channel
 *   -ENOMEM     more than a few cases and no memory for their bookkeeping
 */
KG_API int kg_select(struct kg_case *cases, size_t n, int64_t timeout_ns);

/* ------------------------------------------------------------------ */
/* Directional handles and typed helpers                               */
/* ------------------------------------------------------------------ */

/* Send-only and receive-only views of a channel: distinct struct types, so
 * passing one where the other is expected does not compile (Go's chan<- T
 * and <-chan T). */
typedef struct { kg_chan_t *ch; } kg_sendch_t;
typedef struct { kg_chan_t *ch; } kg_recvch_t;

static inline kg_sendch_t kg_chan_sender(kg_chan_t *ch)
{
	kg_sendch_t s = { ch };
	return s;
}

static inline kg_recvch_t kg_chan_receiver(kg_chan_t *ch)
{
	kg_recvch_t r = { ch };
	return r;
}

/* As kg_chan_send / kg_chan_recv, through a directional handle. */
static inline int kg_send(kg_sendch_t s, const void *elem)
{
	return kg_chan_send(s.ch, elem);
}

static inline int kg_recv(kg_recvch_t r, void *out)
{
	return kg_chan_recv(r.ch, out);
}

/* As kg_chan_close, through a send handle: in Go, close(ch) is the
 * sender's; a receive-only handle cannot close. */
static inline int kg_close(kg_sendch_t s)
{
	return kg_chan_close(s.ch);
}

/*
 * Typed convenience (GNU C): send a value, receive into an lvalue. The
 * value's size must equal the channel's element size, else -EINVAL.
 *   KG_SEND_VAL(ch, 42)           int err = ...
 *   int x; KG_RECV_VAL(ch, x)     int err = ...
 */
#define KG_SEND_VAL(ch, val)                                                  \
	__extension__({                                                       \
		__typeof__(val) kg_v_ = (val);                                \
		kg_chan_elem_size(ch) == sizeof(kg_v_) ?                      \
			kg_chan_send((ch), &kg_v_) : -22 /* EINVAL */;         \
	})
#define KG_RECV_VAL(ch, lval)                                                 \
	(kg_chan_elem_size(ch) == sizeof(lval) ?                              \
		 kg_chan_recv((ch), &(lval)) : -22 /* EINVAL */)

/* ------------------------------------------------------------------ */
/* Timer channels                                                      */
/* ------------------------------------------------------------------ */

/*
 * kg_after - Go's time.After: a channel (capacity 1) that receives one
 * uint64_t, the kg_now_ns() at which ns nanoseconds had passed. The caller
 * frees it with kg_chan_free (which also stops the timer; while a coroutine
 * or thread waits on the channel it refuses, and the timer still fires and
 * wakes the waiter). Needs a running
 * runtime. NULL with errno set on failure:
 *   EPERM   no runtime is running
 *   ENOMEM  no memory
 */
KG_API kg_chan_t *kg_after(uint64_t ns);

/*
 * kg_ticker_t - Go's time.Ticker: its channel (capacity 1) receives the
 * kg_now_ns() of each tick every ns nanoseconds; ticks that find the
 * channel full are dropped, so a slow receiver does not fall behind.
 */
typedef struct kg_ticker kg_ticker_t;

/* NULL with errno: EINVAL (ns == 0), EPERM (no runtime), ENOMEM. */
KG_API kg_ticker_t *kg_ticker_make(uint64_t ns);
/* The ticker's channel; do not free it (kg_ticker_stop does). */
KG_API kg_chan_t *kg_ticker_chan(kg_ticker_t *t);
/* Change the period (next tick ns from now). 0, or -EINVAL (NULL, ns 0),
 * -EPERM (not the runtime the ticker was made in), -ENOMEM. */
KG_API int kg_ticker_reset(kg_ticker_t *t, uint64_t ns);
/* Stop the ticker and free it with its channel. 0, or -EINVAL (NULL),
 * -EBUSY (someone waits on its channel: nothing is stopped or freed, the
 * ticks go on and wake the waiter). */
KG_API int kg_ticker_stop(kg_ticker_t *t);

/* ------------------------------------------------------------------ */
/* Contexts                                                            */
/* ------------------------------------------------------------------ */

/*
 * Contexts: cancellation and deadlines for requests, Go's context package.
 * A context is cancelled by kg_context_cancel, by its deadline, or by the
 * cancellation of its parent; cancellation flows down the tree, never up.
 *
 * kg_context_background - the root: never cancelled, no deadline, its
 *   done channel NULL (a select case on NULL is never ready); never freed.
 * kg_context_with_cancel(parent) - a child cancelled with the parent or by
 *   kg_context_cancel. NULL with errno EINVAL (parent NULL) or ENOMEM.
 * kg_context_with_deadline(parent, deadline_ns) - also cancelled when
 *   kg_now_ns() reaches deadline_ns (the parent's deadline if earlier).
 *   EPERM: no runtime to keep the time (a deadline needs kg_run's timers).
 * kg_context_with_timeout(parent, ns) - with_deadline(kg_now_ns() + ns).
 * kg_context_cancel(c) - cancel c and its descendants (err -ECANCELED);
 *   idempotent; c stays valid until freed.
 * kg_context_free(c) - cancel c (Go's "defer cancel()"), and let go of it:
 *   c may no longer be used by the caller; its memory goes when its
 *   children are freed too. Background and NULL: nothing.
 * kg_context_err(c) - 0 while not cancelled, then -ECANCELED or
 *   -ETIMEDOUT (Go's Canceled, DeadlineExceeded).
 * kg_context_done(c) - a channel closed when c is cancelled: a receive
 *   case in kg_select (it reports ok = false then), or kg_chan_recv.
 * kg_context_deadline(c) - the deadline (kg_now_ns clock), UINT64_MAX if
 *   none.
 * kg_fd_wait_context(fd, events, c) - kg_fd_wait until c's deadline,
 *   returning c's error if c is cancelled first (-ECANCELED, -ETIMEDOUT).
 */
typedef struct kg_context kg_context_t;
KG_API kg_context_t *kg_context_background(void);
KG_API kg_context_t *kg_context_with_cancel(kg_context_t *parent);
KG_API kg_context_t *kg_context_with_deadline(kg_context_t *parent,
					      uint64_t deadline_ns);
KG_API kg_context_t *kg_context_with_timeout(kg_context_t *parent,
					     uint64_t ns);
KG_API void kg_context_cancel(kg_context_t *c);
KG_API void kg_context_free(kg_context_t *c);
KG_API int kg_context_err(kg_context_t *c);
KG_API kg_chan_t *kg_context_done(kg_context_t *c);
KG_API uint64_t kg_context_deadline(kg_context_t *c);
KG_API int kg_fd_wait_context(int fd, int events, kg_context_t *c);

#ifdef __cplusplus
}
#endif
#endif /* KGREEN_H */
