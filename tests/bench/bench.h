/* SPDX-License-Identifier: MIT */
/*
 * bench.h - helpers the benchmark programs share.
 */
#ifndef KG_BENCH_H
#define KG_BENCH_H

#include <dirent.h>
#include <errno.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A number from /proc/self/status ("VmRSS:", "Threads:"), or -1. */
static inline long proc_status(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	size_t n = strlen(key);
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n))
			v = atol(line + n);
	fclose(f);
	return v;
}

/* The process's resident set (VmRSS) in kB, or -1. */
static inline long rss_kb(void)
{
	return proc_status("VmRSS:");
}

/* The process's minor page faults so far (all threads), or -1. */
static inline long minflt(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_minflt;
}

/*
 * dTLB load misses of the whole process, user space only (what
 * perf_event_paranoid 2 allows). A counter follows one thread, so
 * dtlb_open opens one per thread in /proc/self/task, each with inherit
 * set: threads those create later are counted too, and reading a counter
 * adds its inherited ones. dtlb_read sums them: compare two reads. Both
 * return -1 when the counters cannot be had (no PMU, as in most VMs, or
 * not permitted); a thread that ends before dtlb_open reaches it is
 * skipped.
 */
#define DTLB_MAX_THREADS 256

struct dtlb {
	int n;
	int fd[DTLB_MAX_THREADS];
};

static inline void dtlb_close(struct dtlb *d)
{
	while (d->n > 0)
		close(d->fd[--d->n]);
}

static inline int dtlb_open(struct dtlb *d)
{
	struct perf_event_attr a;
	struct dirent *e;
	DIR *dir = opendir("/proc/self/task");

	d->n = 0;
	if (!dir)
		return -1;
	memset(&a, 0, sizeof(a));
	a.type = PERF_TYPE_HW_CACHE;
	a.size = sizeof(a);
	a.config = PERF_COUNT_HW_CACHE_DTLB |
		   PERF_COUNT_HW_CACHE_OP_READ << 8 |
		   PERF_COUNT_HW_CACHE_RESULT_MISS << 16;
	a.inherit = 1;
	a.exclude_kernel = 1;
	a.exclude_hv = 1;
	while ((e = readdir(dir))) {
		long tid = atol(e->d_name), fd;

		if (tid <= 0)
			continue;
		fd = syscall(SYS_perf_event_open, &a, (pid_t)tid, -1, -1,
			     PERF_FLAG_FD_CLOEXEC);
		if (fd < 0 && errno == ESRCH)
			continue;
		if (fd < 0 || d->n == DTLB_MAX_THREADS) {
			if (fd >= 0)
				close((int)fd);
			closedir(dir);
			dtlb_close(d);
			return -1;
		}
		d->fd[d->n++] = (int)fd;
	}
	closedir(dir);
	return d->n ? 0 : -1;
}

static inline long long dtlb_read(struct dtlb *d)
{
	long long sum = 0;
	uint64_t v;
	int i;

	if (!d->n)
		return -1;
	for (i = 0; i < d->n; i++) {
		if (read(d->fd[i], &v, sizeof(v)) != sizeof(v))
			return -1;
		sum += (long long)v;
	}
	return sum;
}

/*
 * Print "key value": (after - before) / n with two decimals, or -1 when
 * either count is missing.
 */
static inline void print_per_n(const char *key, long long before,
			       long long after, long n)
{
	if (before < 0 || after < 0 || n <= 0)
		printf("%s -1\n", key);
	else
		printf("%s %.2f\n", key, (double)(after - before) / (double)n);
}

#endif /* KG_BENCH_H */
