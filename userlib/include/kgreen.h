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
	unsigned int flags;	/* must be 0 */
	unsigned int __reserved[7];
};

/*
 * kg_run - start the runtime, run main_fn(arg) as the first coroutine, and
 * return when main_fn returns (as a Go program ends when main returns; other
 * coroutines still alive are abandoned, and reported with KGREEN_DEBUG=1).
 * Returns 0, or:
 *   -EINVAL  main_fn is NULL, or cfg has an invalid field (procs > 1024,
 *            unknown backend, flags set, stack size out of range)
 *   -EBUSY   the runtime is already running in this process
 *   -ENOMEM  the runtime's memory or threads could not be allocated
 *   -ENODEV  the backend named explicitly cannot be used here
 * The runtime can be started again after kg_run returns.
 */
KG_API int kg_run(void (*main_fn)(void *), void *arg,
		  const struct kg_config *cfg);

/* Options for kg_go_opts(); zeroed fields mean defaults. */
struct kg_spawn_opts {
	size_t stack_size;	/* bytes; 0: the runtime default */
	const char *name;	/* copied (up to 31 bytes); NULL: unnamed */
	unsigned int flags;	/* must be 0 */
	unsigned int __reserved[5];
};

#define KG_STACK_MIN ((size_t)16 * 1024)
#define KG_STACK_MAX ((size_t)1024 * 1024 * 1024)

/*
 * kg_go - spawn a coroutine running fn(arg). Returns its id (> 0, unique for
 * the life of the process), or:
 *   -EINVAL  fn is NULL
 *   -EPERM   no runtime is running (call from within kg_run's coroutines)
 *   -ENOMEM  no memory for the coroutine or its stack
 */
KG_API long kg_go(void (*fn)(void *), void *arg);

/*
 * kg_go_opts - kg_go with options. Errors as kg_go, and -EINVAL when the
 * stack size is outside [KG_STACK_MIN, KG_STACK_MAX] or flags are set.
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
	uint64_t __reserved[8];
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
 * frees it with kg_chan_free (which also stops the timer). Needs a running
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
/* Stop the ticker and free it with its channel. 0, or -EINVAL (NULL). */
KG_API int kg_ticker_stop(kg_ticker_t *t);

#ifdef __cplusplus
}
#endif
#endif /* KGREEN_H */
