// SPDX-License-Identifier: MIT
/*
 * base.c - the bottom layer (base.h): the log, the clock, random numbers,
 * futexes and kg_lock, and the thread's worker. Calls nothing else of
 * libkgreen.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base.h"

#define LOCK_SPINS 128

__thread struct kg_worker *kg_tls_worker KG_TLS;
static _Atomic(struct kg_rt *) cur_rt;
static int debug_level;
#ifdef KG_DEBUG_RCU
__thread int kg_rcu_depth KG_TLS;
#endif

/* ------------------------------------------------------------------ */
/* Diagnostics                                                         */
/* ------------------------------------------------------------------ */

int kg_debug_level(void)
{
	return debug_level;
}

void kg_debug_set(int level)
{
	debug_level = level;
}

void kg_throw(const char *fmt, ...)
{
	va_list ap;

	fputs("kgreen: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void kg_debug(const char *fmt, ...)
{
	va_list ap;

	if (!debug_level)
		return;
	fputs("kgreen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ------------------------------------------------------------------ */
/* Clock, random numbers                                               */
/* ------------------------------------------------------------------ */

uint64_t kg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t kg_fastrand(void)
{
	/* xorshift64*, one state per thread: cheap and good enough for
	 * choosing steal victims and select's poll order */
	static __thread uint64_t x KG_TLS;

	if (kg_unlikely(!x))
		x = (kg_now_ns() ^ (uint64_t)(uintptr_t)&x) | 1;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	return x * 0x2545F4914F6CDD1DULL;
}

/* ------------------------------------------------------------------ */
/* Futexes and kg_lock                                                 */
/* ------------------------------------------------------------------ */

void kg_futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline)
{
	struct timespec ts, *tsp = NULL;

	if (deadline != UINT64_MAX) {
		uint64_t now = kg_now_ns();

		if (deadline <= now)
			return;
		ts = kg_timespec(deadline - now);
		tsp = &ts;
	}
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
}

void kg_futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

int kg_mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int r;

	if (pthread_mutexattr_init(&a))
		return -ENOMEM;
	/* spin a while before sleeping (glibc's adaptive mutex) */
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
	r = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return r ? -ENOMEM : 0;
}

void kg_lock_slow(kg_lock_t *l)
{
	int i;

	for (i = 0; i < LOCK_SPINS; i++) {
		uint32_t zero = 0;

		if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_weak_explicit(
			    &l->v, &zero, 1, memory_order_acquire,
			    memory_order_relaxed))
			return;
		kg_cpu_relax();
	}
	/*
	 * Mark "locked, sleepers" and sleep until we are the one that moved
	 * it from 0. acquire: pairs with the release exchange in kg_unlock.
	 */
	while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
		kg_futex_wait(&l->v, 2, UINT64_MAX);
}

void kg_unlock_slow(kg_lock_t *l)
{
	kg_futex_wake(&l->v, 1);
}

/* ------------------------------------------------------------------ */
/* epoll with a timeout in ns                                          */
/* ------------------------------------------------------------------ */

int kg_membarrier(int cmd)
{
	return (int)syscall(__NR_membarrier, cmd, 0, 0);
}

/*
 * epoll_wait with a timeout in ns (UINT64_MAX: none). epoll_pwait2 (Linux
 * 5.11) takes a timespec; where it is missing (older kernels, some
 * emulators) epoll_wait's milliseconds, rounded up so that a timer's
 * deadline is never woken for early, over and over.
 */
int kg_epoll_wait(int epfd, struct epoll_event *evs, int max,
		  uint64_t timeout_ns)
{
	static _Atomic int no_pwait2;
	struct timespec ts;
	int n, ms;

	if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
		if (timeout_ns != UINT64_MAX)
			ts = kg_timespec(timeout_ns);
		n = epoll_pwait2(epfd, evs, max,
				 timeout_ns == UINT64_MAX ? NULL : &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
	}
	if (timeout_ns == UINT64_MAX)
		ms = -1;
	else if (timeout_ns >= (uint64_t)INT32_MAX * 1000000)
		ms = INT32_MAX;
	else
		ms = (int)((timeout_ns + 999999) / 1000000);
	return epoll_wait(epfd, evs, max, ms);
}

/* ------------------------------------------------------------------ */
/* Where we run                                                        */
/* ------------------------------------------------------------------ */

/*
 * The thread pointer changes when a coroutine migrates between workers, but
 * compilers treat the address of a __thread variable as constant within a
 * function. Reading it through this out-of-line function (with an asm the
 * optimizer cannot see through) makes every call re-read it.
 */
__attribute__((noinline)) struct kg_worker *kg_worker_self(void)
{
	__asm__ __volatile__("" ::: "memory");
	return kg_tls_worker;
}

int kg_sys_close(int fd)
{
	static _Atomic(int (*)(int)) libc_close;
	int (*f)(int) = atomic_load_explicit(&libc_close, memory_order_relaxed);

	if (kg_unlikely(!f)) {
		/* RTLD_NEXT from here: libc's (or a sanitizer's), never the
		 * program's own close that hook.c defines */
		f = (int (*)(int))dlsym(RTLD_NEXT, "close");
		if (!f)
			return (int)syscall(SYS_close, fd);
		atomic_store_explicit(&libc_close, f, memory_order_relaxed);
	}
	return f(fd);
}

int *kg_errno_location(void)
{
	/* out of line, not const: the thread running now */
	return __errno_location();
}

struct kg_rt *kg_rt_current(void)
{
	/* acquire: pairs with kg_run's release store of a ready runtime */
	return atomic_load_explicit(&cur_rt, memory_order_acquire);
}

void kg_rt_set_current(struct kg_rt *rt)
{
	atomic_store_explicit(&cur_rt, rt, memory_order_release);
}
