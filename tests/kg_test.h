/* SPDX-License-Identifier: MIT */
/*
 * kg_test.h - helpers shared by the kgreen suites, on top of harness.h.
 *
 * Assertions from the harness end the test process's current function, so
 * they belong in the test body. Inside coroutines use CO_CHECK: it prints
 * what failed and counts it; the body then asserts co_failures() == 0
 * after kg_run returns.
 */
#ifndef KG_TEST_H
#define KG_TEST_H

#include <errno.h>
#include <sched.h>
#include <kgreen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic int kg_test_failures;

#define CO_CHECK(cond, fmt, ...)                                              \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "# %s:%d: check failed: %s: " fmt "\n", \
				__FILE__, __LINE__, #cond, ##__VA_ARGS__);    \
			atomic_fetch_add(&kg_test_failures, 1);               \
		}                                                             \
	} while (0)

static inline int co_failures(void)
{
	return atomic_load(&kg_test_failures);
}

/* Run fn(arg) as the main coroutine with the given number of procs. */
static inline int run_kg(void (*fn)(void *), void *arg, unsigned int procs)
{
	struct kg_config cfg = { .procs = procs };

	return kg_run(fn, arg, &cfg);
}

#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
	__has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KG_TEST_SANITIZED 1
#else
#define KG_TEST_SANITIZED 0
#endif

/*
 * Iteration counts: full size normally, divided under sanitizers (ASan
 * and TSan make each switch 10-100x dearer; TSan keeps per-fiber state).
 * KG_TEST_SCALE=N overrides the divisor.
 */
static inline long scaled(long n, long san_divisor)
{
	const char *s = getenv("KG_TEST_SCALE");
	long d = KG_TEST_SANITIZED ? san_divisor : 1;

	if (s && atol(s) > 0)
		d = atol(s);
	return n / d > 0 ? n / d : 1;
}

/*
 * A start gate for plain threads that coroutines will wait for. The
 * runtime's deadlock watch counts a plain thread as a possible waker once
 * it has waited in a kgreen call; a thread that so far only took
 * lock-free fast paths is invisible to it, and on a loaded machine it may
 * not run for the watch's 100 ms while every coroutine waits. Each thread
 * calls thread_gate_wait() first (it waits there at least once); the main
 * coroutine calls thread_gate_open(gate, n) once all n are waiting.
 */
struct thread_gate {
	kg_mutex_t m;
	kg_cond_t c;
	int waiting;		/* m */
	bool open;		/* m */
};

#define THREAD_GATE_INIT { KG_MUTEX_INIT, KG_COND_INIT, 0, false }

static inline void thread_gate_wait(struct thread_gate *g)
{
	kg_mutex_lock(&g->m);
	g->waiting++;
	while (!g->open)
		kg_cond_wait(&g->c, &g->m);
	kg_mutex_unlock(&g->m);
}

static inline void thread_gate_open(struct thread_gate *g, int n)
{
	for (;;) {
		kg_mutex_lock(&g->m);
		if (g->waiting >= n)
			break;
		kg_mutex_unlock(&g->m);
		kg_yield();
	}
	g->open = true;
	kg_cond_broadcast(&g->c);
	kg_mutex_unlock(&g->m);
}

static inline long gettid_(void)
{
	return (long)syscall(SYS_gettid);
}

/* A field of /proc/self/status in kB, or -1. */
static inline long proc_status_kb(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t len = strlen(field);
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, len) && line[len] == ':')
			v = atol(line + len + 1);
	fclose(f);
	return v;
}

static inline long count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* A small seeded generator for test schedules. */
static inline uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Let others run: yield a coroutine, or the thread outside the runtime. */
static inline void pause_any(void)
{
	if (kg_self())
		kg_yield();
	else
		sched_yield();
}

/*
 * Run fn(arg) under kg_run on procs procs with stderr captured into out
 * (len bytes, NUL-terminated) and echoed as TAP comments; *ms (may be
 * NULL) gets the wall time. Returns kg_run's result, or -errno if the
 * capture could not be set up.
 */
static inline int run_kg_captured(void (*fn)(void *), void *arg,
				  unsigned int procs, char *out, size_t len,
				  uint64_t *ms)
{
	FILE *tmp = tmpfile();
	int saved, r;
	uint64_t t0;
	size_t n;

	if (!tmp)
		return -errno;
	fflush(stderr);
	saved = dup(2);
	dup2(fileno(tmp), 2);
	t0 = kg_now_ns();
	r = run_kg(fn, arg, procs);
	if (ms)
		*ms = (kg_now_ns() - t0) / 1000000;
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, len - 1, tmp);
	out[n] = 0;
	fclose(tmp);
	for (char *l = out, *e; *l; l = e + 1) {
		e = strchrnul(l, '\n');
		fprintf(stderr, "# | %.*s\n", (int)(e - l), l);
		if (!*e)
			break;
	}
	return r;
}

/* Raise RLIMIT_NOFILE's soft limit towards need (at most the hard one). */
static inline void raise_nofile(long need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)need ? rl.rlim_max :
							    (rlim_t)need;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * From a coroutine: receive a 10 ms ticker's ticks for window_ns; the
 * number received, and the largest gap between two in *gap_ns. A ticker
 * that keeps ticking beside a load is the test that the load holds no
 * proc.
 */
static inline long tick_for(uint64_t window_ns, uint64_t *gap_ns)
{
	kg_ticker_t *tk = kg_ticker_make(10 * 1000000ull);
	uint64_t t0, last, now, gap = 0;
	long ticks = 0;

	if (!tk)
		return 0;
	t0 = last = kg_now_ns();
	while (kg_now_ns() - t0 < window_ns) {
		if (kg_chan_recv(kg_ticker_chan(tk), &now))
			break;
		now = kg_now_ns();
		if (now - last > gap)
			gap = now - last;
		last = now;
		ticks++;
	}
	kg_ticker_stop(tk);
	*gap_ns = gap;
	return ticks;
}

#endif /* KG_TEST_H */
