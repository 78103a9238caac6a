/* SPDX-License-Identifier: MIT */
/*
 * bench.h - helpers the benchmark programs share.
 */
#ifndef KG_BENCH_H
#define KG_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The process's resident set (VmRSS) in kB, or -1. */
static inline long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			v = atol(line + 6);
	fclose(f);
	return v;
}

#endif /* KG_BENCH_H */
