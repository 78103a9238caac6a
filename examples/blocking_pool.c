// SPDX-License-Identifier: MIT
/*
 * blocking_pool - Go's worker pool, where jobs make ordinary blocking
 * calls, run once per backend (`make demo`).
 *
 * As in the Go tutorial: a jobs channel, a results channel, workers that
 * take jobs and send results. Here 16 workers on 2 procs take 400 jobs;
 * a quarter compute (200 us), the others make plain blocking calls:
 * read() on a pipe a plain thread feeds, fsync() of a freshly written
 * file, and a 1 ms nanosleep made as a raw system call. libkgreen's read
 * parks the coroutine in the poller (Documentation/net.md); fsync and the
 * raw sleep go straight to the kernel, where no wrapper sees them. While
 * a worker thread sits in such a call, the coroutines queued behind it
 * wait, unless the runtime hands its proc to another thread.
 *
 * The table: for each backend that can serve here, the wall time, the
 * handoffs and their latency (kg_stats), and last the same program with
 * kernel help turned off (sysmon, calls not marked, time slices off: what
 * a C program gets from a plain coroutine library). The sysmon row marks
 * the calls with kg_blocking_begin/end, as Go's syscall package does.
 *
 *   blocking_pool [JOBS] [BACKEND...]    (default 400; every backend)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <kgreen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 16
#define US 1000ull

static long njobs = 400;
static int marked;		/* wrap the calls in kg_blocking_begin/end */
static int feed[2];		/* the pipe the feeder thread writes */
static int filefd = -1;
static atomic_int stop_feeder;

struct pool {
	kg_chan_t *jobs, *results;
	kg_wg_t wg;
	long sum;
	struct kg_stats st;
};

static void spin(uint64_t ns)
{
	uint64_t t0 = kg_now_ns();

	while (kg_now_ns() - t0 < ns)
		;
}

/* One job: what it does depends on its number. Returns j * 2. */
static long do_job(long j)
{
	struct timespec ts = { 0, 1000 * 1000 };
	char c, page[4096] = { 0 };

	if (marked && j % 4)
		kg_blocking_begin();
	switch (j % 4) {
	case 0:
		spin(200 * US);			/* compute */
		break;
	case 1:
		if (read(feed[0], &c, 1) != 1)	/* wait for the feeder */
			abort();
		break;
	case 2:
		if (pwrite(filefd, page, sizeof(page), 0) < 0 ||
		    fsync(filefd))			/* to the disk */
			abort();
		break;
	case 3:
		syscall(SYS_nanosleep, &ts, NULL);	/* a raw sleep */
		break;
	}
	if (marked && j % 4)
		kg_blocking_end();
	return j * 2;
}

static void worker(void *arg)
{
	struct pool *p = arg;
	long j, r;

	while (kg_chan_recv(p->jobs, &j) == 0) {	/* until closed */
		r = do_job(j);
		kg_chan_send(p->results, &r);
	}
	kg_wg_done(&p->wg);
}

static void main_co(void *arg)
{
	struct pool *p = arg;
	long j, r, w;

	p->jobs = kg_chan_make(sizeof(long), (size_t)njobs);
	p->results = kg_chan_make(sizeof(long), (size_t)njobs);
	kg_wg_add(&p->wg, WORKERS);
	for (w = 0; w < WORKERS; w++)
		kg_go(worker, p);
	for (j = 1; j <= njobs; j++)
		kg_chan_send(p->jobs, &j);
	kg_chan_close(p->jobs);
	for (j = 0; j < njobs; j++) {
		kg_chan_recv(p->results, &r);
		p->sum += r;
	}
	kg_wg_wait(&p->wg);
	kg_stats(&p->st);
	kg_chan_free(p->jobs);
	kg_chan_free(p->results);
}

/* The plain thread that feeds the pipe: a byte every 300 us. */
static void *feeder(void *arg)
{
	struct timespec ts = { 0, 300 * 1000 };

	(void)arg;
	while (!atomic_load(&stop_feeder)) {
		if (write(feed[1], "x", 1) != 1)
			break;
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void nothing(void *arg)
{
	(void)arg;
}

/* One row; 0, 1 if the pool's result is wrong, -ENODEV if unavailable. */
static int row(const char *label, const char *backend, int mark)
{
	struct kg_config cfg = { .procs = 2, .backend = backend };
	struct pool p = { .wg = KG_WG_INIT };
	uint64_t t0;
	int err;

	marked = mark;
	/* set the backend up first (BPF verification takes milliseconds) */
	err = kg_run(nothing, NULL, &cfg);
	if (!err) {
		t0 = kg_now_ns();
		err = kg_run(main_co, &p, &cfg);
		t0 = kg_now_ns() - t0;
	}
	if (err == -ENODEV) {
		printf("%-22s %10s   (not available here: the reason is above)\n",
		       label, "-");
		return -ENODEV;
	}
	if (err) {
		printf("%-22s kg_run: %s\n", label, strerror(-err));
		return 1;
	}
	printf("%-22s %10.1f %9llu %9.1f %9.1f\n", label, t0 / 1e6,
	       (unsigned long long)p.st.handoffs, p.st.handoff_ns_p50 / 1e3,
	       p.st.handoff_ns_p99 / 1e3);
	fflush(stdout);
	/* results: 2 * (1 + ... + njobs) */
	return p.sum != njobs * (njobs + 1) ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const char *const all[] = { "kmod", "bpf", "sysmon", "off" };
	const char *const *which = all;
	char path[] = "/var/tmp/kgreen-demo-XXXXXX";
	int i, n = 4, bad = 0, kmod_missing = 0;
	pthread_t t;

	if (argc > 1)
		njobs = atol(argv[1]);
	if (njobs < 1)
		return 2;
	if (argc > 2) {
		which = (const char *const *)&argv[2];
		n = argc - 2;
	}
	filefd = mkstemp(path);
	if (filefd < 0) {
		strcpy(path, "/tmp/kgreen-demo-XXXXXX");
		filefd = mkstemp(path);
	}
	if (filefd < 0 || pipe(feed) ||
	    pthread_create(&t, NULL, feeder, NULL)) {
		perror("blocking_pool");
		return 1;
	}
	unlink(path);
	printf("Go's worker pool in C: %d workers, 2 procs, %ld jobs (a quarter "
	       "compute 200 us;\nthe rest wait in read() on a pipe, which parks, "
	       "or block in fsync() or a raw 1 ms nanosleep)\n\n", WORKERS, njobs);
	printf("%-22s %10s %9s %9s %9s\n", "backend", "wall ms", "handoffs",
	       "p50 us", "p99 us");
	for (i = 0; i < n; i++) {
		const char *b = which[i];
		int r;

		if (!strcmp(b, "off")) {
			/* sysmon's time slice would take the proc of a call
			 * blocked for 10 ms, as of a coroutine that spins */
			setenv("KGREEN_SLICE", "off", 1);
			r = row("off (sysmon, unmarked)", "sysmon", 0);
			unsetenv("KGREEN_SLICE");
		}
		else if (!strcmp(b, "sysmon"))
			r = row("sysmon (calls marked)", "sysmon", 1);
		else
			r = row(b, b, 0);
		if (r == -ENODEV)
			kmod_missing |= !strcmp(b, "kmod");
		else if (r)
			bad = 1;
	}
	atomic_store(&stop_feeder, 1);
	pthread_join(t, NULL);
	close(filefd);
	printf("\nhandoffs: procs moved from a blocked worker thread to another "
	       "one; latency:\nfrom the block to the proc running again "
	       "(sysmon: from the marked call's start).\n");
	if (kmod_missing)
		printf("The kmod backend needs kgreen.ko loaded; see it in a VM "
		       "with Debian's kernel:\n  make vmdemo\n");
	if (bad)
		printf("\nWRONG: a pool's results did not add up\n");
	return bad;
}
