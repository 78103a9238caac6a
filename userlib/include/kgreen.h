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

#ifdef __cplusplus
}
#endif
#endif /* KGREEN_H */
