/* SPDX-License-Identifier: MIT */
/*
 * bench.h - helpers the benchmark programs share.
 */
#ifndef KG_BENCH_H
#define KG_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif /* KG_BENCH_H */
