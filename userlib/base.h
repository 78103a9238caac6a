/* SPDX-License-Identifier: MIT */
/*
 * base.h - the bottom layer of libkgreen (base.c): what every other file
 * uses and that calls nothing above it. Compiler and CPU helpers, the
 * fatal error and the debug log, the clock and timespec conversion, one
 * fast random number function, futex wait and wake, kg_lock, and which
 * worker (and which runtime) runs on this thread.
 *
 * Nothing here is exported: the library is built with -fvisibility=hidden
 * and a version script; only include/kgreen.h names are public.
 */
#ifndef KG_BASE_H
#define KG_BASE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "kgreen.h"

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
 *   fd_wait(coroutine id, fd, dir) the coroutine parks until fd is
 *                                  readable (dir 0) or writable (1)
 *   fd_done(coroutine id, fd, res) its wait ended: 0 ready, -ETIMEDOUT,
 *                                  -EBADF, a context's error
 *   preempted(worker, coroutine id) the coroutine, back in the runtime,
 *                                  finds its proc was taken at the end
 *                                  of its time slice
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
/* The debug level (KGREEN_DEBUG / kg_config.debug); kg_run sets it. */
int kg_debug_level(void);
void kg_debug_set(int level);

/* ns (a duration) as a timespec. */
static inline struct timespec kg_timespec(uint64_t ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(ns / 1000000000ull),
		.tv_nsec = (long)(ns % 1000000000ull),
	};

	return ts;
}

/* Absolute deadline ns from now (saturating below UINT64_MAX, "none"). */
static inline uint64_t kg_deadline(uint64_t now, uint64_t ns)
{
	return now + ns < now ? UINT64_MAX - 1 : now + ns;
}

/* membarrier(2), cmd a MEMBARRIER_CMD_*: 0 or -1 with errno. */
int kg_membarrier(int cmd);

/*
 * epoll_wait (max events into evs) with a timeout in ns (UINT64_MAX:
 * none); epoll_wait's milliseconds, rounded up, where the kernel has no
 * epoll_pwait2. The count, or -1 and errno.
 */
struct epoll_event;
int kg_epoll_wait(int epfd, struct epoll_event *evs, int max,
		  uint64_t timeout_ns);

/* A cheap random number for the calling thread (victims, select order). */
uint64_t kg_fastrand(void);

/* Private futex wait until *addr != val, a wake, or deadline (kg_now_ns
 * clock; UINT64_MAX: none); and wake n waiters. */
void kg_futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline);
void kg_futex_wake(_Atomic uint32_t *addr, int n);

/*
 * kg_lock: a mutex for short critical sections (channels, sync objects):
 * spins briefly, then sleeps on a futex. 0 unlocked, 1 locked, 2 locked
 * with sleepers. A coroutine may hold one across its own switch-out only
 * through a post-switch action that releases it (the park commit).
 */
typedef struct { _Atomic uint32_t v; } kg_lock_t;

void kg_lock_slow(kg_lock_t *l);
void kg_unlock_slow(kg_lock_t *l);

/*
 * The runtime's pthread mutexes (rt.lock, the timer heaps) spin before
 * they sleep. Their critical sections last well under a microsecond, and
 * a coroutine's worker that sleeps in the kernel on a contended one is a
 * blocked worker to the backends: its proc would be handed off for a wait
 * shorter than the handoff. 0 or -ENOMEM.
 */
int kg_mutex_init(pthread_mutex_t *m);

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
 * The library's own reads, writes, closes and sleeps (its eventfds, epoll
 * sets, a plain thread's nap) must not go through the read, write, close
 * and nanosleep libkgreen defines for the program (hook.c). Reads, writes
 * and sleeps go straight to the kernel; closes go to libc's close (the
 * next definition after libkgreen's), so that what intercepts libc (a
 * sanitizer's descriptor bookkeeping) sees every descriptor end. Each
 * returns as libc's does (-1 and errno).
 */
int kg_sys_close(int fd);
static inline ssize_t kg_sys_read(int fd, void *buf, size_t n)
{
	return syscall(SYS_read, fd, buf, n);
}

static inline ssize_t kg_sys_write(int fd, const void *buf, size_t n)
{
	return syscall(SYS_write, fd, buf, n);
}

static inline int kg_sys_nanosleep(const struct timespec *req,
				   struct timespec *rem)
{
	return (int)syscall(SYS_nanosleep, req, rem);
}

struct kg_worker;
struct kg_rt;

/*
 * The worker running on this thread (set by its thread at start), NULL on
 * a plain thread. Initial-exec TLS is read through %fs (tpidr_el0) at each
 * access, so a coroutine reads the worker it runs on now; but compilers
 * treat a __thread variable's address as constant within a function, so
 * code that may have switched since its last read calls kg_worker_self().
 */
extern __thread struct kg_worker *kg_tls_worker KG_TLS;
struct kg_worker *kg_worker_self(void);
/* The runtime kg_run is running, or NULL (set and cleared by kg_run). */
struct kg_rt *kg_rt_current(void);
void kg_rt_set_current(struct kg_rt *rt);

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

#endif /* KG_BASE_H */
