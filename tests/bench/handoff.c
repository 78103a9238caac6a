// SPDX-License-Identifier: MIT
/*
 * handoff - what a blocking call costs the coroutines queued behind it.
 *
 *  1. Latency, 1 proc: coroutine A makes a raw blocking read on a pipe;
 *     coroutine B, queued behind A, stamps when it runs (then writes the
 *     byte that ends A's read). Latency = B's stamp - A's stamp just before
 *     the read. TRIALS trials (default 300, argv[1]); p50/p99/max in us.
 *     bpf: the read is not annotated. sysmon: A marks it with
 *     kg_blocking_begin/end, as Go's syscall.Syscall does. A trial nobody
 *     hands off ends after 100 ms (a watchdog thread writes the byte).
 *  2. Mixed, 2 procs: 1000 coroutines each blocking 1 ms in a raw
 *     nanosleep + 1000 each computing 100 us; wall ms (ideal: 50).
 *     bpf; sysmon with the sleeps marked; sysmon unmarked.
 *  3. Cost when nothing blocks: the yield switch (2 coroutines, 1 proc),
 *     measured before the BPF programs are loaded (sysmon) and after
 *     (bpf), in this process.
 *  4. Sparse blocks, 1 proc, bpf: the latency of 1., but for a block
 *     every 20 ms instead of back to back, the standby idle in between
 *     (as a server's occasional blocking call finds it). A, as in 1.,
 *     wakes a plain pthread (sem_post) and makes a raw blocking read on a
 *     pipe; the pthread writes the byte 1 ms later (plus its own wake-up),
 *     so a block nobody hands off ends there. B, queued behind A, only
 *     stamps. 100 blocks (HANDOFF_SPARSE=N); p50/p99 in us, and the
 *     process's CPU time (getrusage utime + stime, all threads) over the
 *     wall time of those ~2 s in percent: what the standby costs while
 *     nothing blocks (the pthread's share is ~100 wake-ups).
 * Prints handoff_{p50,p99,max}_us, sysmon_handoff_*, mixed_ms,
 * mixed_sysmon_ms, mixed_sysmon_plain_ms, switch_sysmon_ns, switch_bpf_ns,
 * sparse_p50_us, sparse_p99_us, sparse_cpu_pct.
 * HANDOFF_DEBUG=1 also prints, for the bpf latency run, kg_stats' mean
 * and max time from the kernel's record to a standby holding the proc.
 * HANDOFF_KMOD=1 (tools/vmbench, where kgreen.ko is loaded) measures the
 * kmod backend too: kmod_handoff_*, mixed_kmod_ms, switch_kmod_ns.
 * Twin: go/handoff (GOMAXPROCS 1 and 2, syscall.Syscall).
 */
#define _GNU_SOURCE
#include <kgreen.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define US 1000ull
#define MS 1000000ull

static long trials = 300;
static int marked;
static int pipefd[2];
static _Atomic uint64_t a_stamp, b_stamp;
static _Atomic int a_in_read, stop_watch;
static uint64_t *lat;
static kg_wg_t wg = KG_WG_INIT;

static void co_a(void *p)
{
	char c;

	(void)p;
	atomic_store(&a_stamp, kg_now_ns());
	atomic_store(&a_in_read, 1);
	if (marked)
		kg_blocking_begin();
	if (syscall(SYS_read, pipefd[0], &c, 1) != 1)
		abort();
	if (marked)
		kg_blocking_end();
	atomic_store(&a_in_read, 0);
	kg_wg_done(&wg);
}

static void co_b(void *p)
{
	(void)p;
	atomic_store(&b_stamp, kg_now_ns());
	if (write(pipefd[1], "x", 1) != 1)
		abort();
	kg_wg_done(&wg);
}

/* Ends a trial that nobody handed off: B cannot run to write the byte. */
static void *watchdog(void *p)
{
	struct timespec ts = { 0, 1000000 };

	(void)p;
	while (!atomic_load(&stop_watch)) {
		uint64_t t = atomic_load(&a_stamp);

		nanosleep(&ts, NULL);
		if (atomic_load(&a_in_read) && t == atomic_load(&a_stamp) &&
		    kg_now_ns() - t > 100 * MS && !atomic_load(&b_stamp)) {
			if (write(pipefd[1], "x", 1) != 1)
				abort();
			atomic_store(&a_in_read, 0);
		}
	}
	return NULL;
}

/* One trial: A blocks, B queued behind it; how long until B ran. */
static uint64_t trial(void (*a)(void *), void (*b)(void *))
{
	atomic_store(&b_stamp, 0);
	kg_wg_add(&wg, 2);
	kg_go(b, NULL);		/* queued behind A */
	kg_go(a, NULL);		/* runnext: runs first */
	kg_wg_wait(&wg);
	return atomic_load(&b_stamp) - atomic_load(&a_stamp);
}

static void latency_main(void *p)
{
	long i;

	(void)p;
	for (i = 0; i < trials; i++)
		lat[i] = trial(co_a, co_b);
	if (getenv("HANDOFF_DEBUG")) {
		struct kg_stats st;

		kg_stats(&st);
		fprintf(stderr, "handoffs %llu, kernel record to proc taken: "
			"mean %.1f us, max %.1f us\n",
			(unsigned long long)st.handoffs,
			st.handoffs ? st.handoff_ns_sum / 1e3 / st.handoffs : 0,
			st.handoff_ns_max / 1e3);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sort v (ns) and print its median and 99th percentile in us. */
static void sort_print(uint64_t *v, long n, const char *prefix,
		       const char *p50, const char *p99)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	printf("%s%s %.1f\n", prefix, p50, v[n / 2] / 1e3);
	printf("%s%s %.1f\n", prefix, p99, v[n * 99 / 100] / 1e3);
}

static int latency(const char *backend, const char *prefix)
{
	struct kg_config cfg = { .procs = 1, .backend = backend };
	pthread_t t;
	int err;

	marked = !strcmp(backend, "sysmon");
	atomic_store(&stop_watch, 0);
	pthread_create(&t, NULL, watchdog, NULL);
	err = kg_run(latency_main, NULL, &cfg);
	atomic_store(&stop_watch, 1);
	pthread_join(t, NULL);
	if (err)
		return err;
	sort_print(lat, trials, prefix, "handoff_p50_us", "handoff_p99_us");
	printf("%shandoff_max_us %.1f\n", prefix, lat[trials - 1] / 1e3);
	return 0;
}

/* ---- sparse ---- */

#define SPARSE_PERIOD (20 * MS)

static long sparse_n = 100;
static int sparse_fd[2];
static sem_t sparse_go;
static _Atomic int sparse_stop;
static uint64_t *sparse_lat, sparse_wall_ns, sparse_cpu_ns;

/* The plain thread that ends each sparse read, 1 ms after A woke it. */
static void *sparse_writer(void *p)
{
	struct timespec ts = { 0, (long)MS };

	(void)p;
	for (;;) {
		while (sem_wait(&sparse_go))
			;
		if (atomic_load(&sparse_stop))
			return NULL;
		nanosleep(&ts, NULL);
		if (write(sparse_fd[1], "x", 1) != 1)
			abort();
	}
}

static void co_sparse_a(void *p)
{
	char c;

	(void)p;
	sem_post(&sparse_go);
	atomic_store(&a_stamp, kg_now_ns());
	if (syscall(SYS_read, sparse_fd[0], &c, 1) != 1)
		abort();
	kg_wg_done(&wg);
}

static void co_sparse_b(void *p)
{
	(void)p;
	atomic_store(&b_stamp, kg_now_ns());
	kg_wg_done(&wg);
}

static uint64_t cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 * MS +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * US;
}

static void sparse_main(void *p)
{
	uint64_t t0, c0, next, now;
	long i;

	(void)p;
	c0 = cpu_ns();
	t0 = kg_now_ns();
	for (i = 0; i < sparse_n; i++) {
		/* a period of idle before each block, the first too */
		next = t0 + (uint64_t)(i + 1) * SPARSE_PERIOD;
		now = kg_now_ns();
		if (next > now)
			kg_sleep(next - now);
		sparse_lat[i] = trial(co_sparse_a, co_sparse_b);
	}
	sparse_wall_ns = kg_now_ns() - t0;
	sparse_cpu_ns = cpu_ns() - c0;
}

static int sparse(const char *backend)
{
	struct kg_config cfg = { .procs = 1, .backend = backend };
	pthread_t t;
	int err;

	atomic_store(&sparse_stop, 0);
	if (pthread_create(&t, NULL, sparse_writer, NULL))
		return -1;
	err = kg_run(sparse_main, NULL, &cfg);
	atomic_store(&sparse_stop, 1);
	sem_post(&sparse_go);
	pthread_join(t, NULL);
	if (err)
		return err;
	sort_print(sparse_lat, sparse_n, "", "sparse_p50_us", "sparse_p99_us");
	printf("sparse_cpu_pct %.1f\n",
	       100.0 * (double)sparse_cpu_ns / (double)sparse_wall_ns);
	return 0;
}

/* ---- mixed ---- */

static void blocker(void *p)
{
	struct timespec ts = { 0, (long)MS };

	(void)p;
	if (marked)
		kg_blocking_begin();
	syscall(SYS_nanosleep, &ts, NULL);
	if (marked)
		kg_blocking_end();
	kg_wg_done(&wg);
}

static void computer(void *p)
{
	uint64_t t0 = kg_now_ns();

	(void)p;
	while (kg_now_ns() - t0 < 100 * US)
		;
	kg_wg_done(&wg);
}

/* Timed inside main, as the Go twin is: not kg_run's start and teardown. */
static uint64_t mixed_ns;

static void mixed_main(void *p)
{
	uint64_t t0 = kg_now_ns();
	int i;

	(void)p;
	kg_wg_add(&wg, 2000);
	for (i = 0; i < 1000; i++) {
		kg_go(blocker, NULL);
		kg_go(computer, NULL);
	}
	kg_wg_wait(&wg);
	mixed_ns = kg_now_ns() - t0;
}

static int mixed(const char *backend, int mark, const char *key)
{
	struct kg_config cfg = { .procs = 2, .backend = backend };
	int err;

	marked = mark;
	err = kg_run(mixed_main, NULL, &cfg);
	if (!err)
		printf("%s %.1f\n", key, mixed_ns / 1e6);
	return err;
}

/* ---- switch ---- */

static long nswitch = 2000000;
static double switch_ns;

static void yielder(void *p)
{
	long i;

	(void)p;
	for (i = 0; i < nswitch; i++)
		kg_yield();
	kg_wg_done(&wg);
}

static void switch_main(void *p)
{
	uint64_t t0;

	(void)p;
	kg_wg_add(&wg, 2);
	t0 = kg_now_ns();
	kg_go(yielder, NULL);
	kg_go(yielder, NULL);
	kg_wg_wait(&wg);
	switch_ns = (double)(kg_now_ns() - t0) / (2.0 * nswitch);
}

static int switch_cost(const char *backend, const char *key)
{
	struct kg_config cfg = { .procs = 1, .backend = backend };
	int err = kg_run(switch_main, NULL, &cfg);

	if (!err)
		printf("%s %.2f\n", key, switch_ns);
	return err;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		trials = atol(argv[1]);
	if (trials < 2) {
		fprintf(stderr, "handoff: need at least 2 trials\n");
		return 2;
	}
	if (getenv("HANDOFF_SPARSE"))
		sparse_n = atol(getenv("HANDOFF_SPARSE"));
	if (sparse_n < 2) {
		fprintf(stderr, "handoff: need at least 2 sparse blocks\n");
		return 2;
	}
	lat = calloc((size_t)trials, sizeof(*lat));
	sparse_lat = calloc((size_t)sparse_n, sizeof(*sparse_lat));
	if (!lat || !sparse_lat || pipe(pipefd) || pipe(sparse_fd) ||
	    sem_init(&sparse_go, 0, 0))
		return 1;
	/* sysmon first: the BPF programs, once loaded, stay for the process */
	if (switch_cost("sysmon", "switch_sysmon_ns") ||
	    latency("sysmon", "sysmon_") ||
	    mixed("sysmon", 1, "mixed_sysmon_ms") ||
	    mixed("sysmon", 0, "mixed_sysmon_plain_ms"))
		return 1;
	if (getenv("HANDOFF_KMOD") && !strcmp(getenv("HANDOFF_KMOD"), "1") &&
	    (switch_cost("kmod", "switch_kmod_ns") ||
	     latency("kmod", "kmod_") || mixed("kmod", 0, "mixed_kmod_ms"))) {
		fprintf(stderr, "handoff: the kmod backend is not available\n");
		return 1;
	}
	if (latency("bpf", "") || sparse("bpf") ||
	    mixed("bpf", 0, "mixed_ms") ||
	    switch_cost("bpf", "switch_bpf_ns")) {
		fprintf(stderr, "handoff: the bpf backend is not available "
			"here; its figures are missing\n");
		return 1;
	}
	return 0;
}
