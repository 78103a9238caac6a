// SPDX-License-Identifier: MIT
/*
 * kgreen-trace - watch a running kgreen process (Documentation/tracing.md).
 *
 *   kgreen-trace [-i SECS] [-n COUNT] PID
 *       a live view, every SECS (1): each worker thread and what it does
 *       (the coroutine it runs, or the system call it is blocked in),
 *       coroutine switches, blocks and handoffs per second, descriptor
 *       waits per second and the ones under way (fd, read or write, which
 *       coroutine), and, when the
 *       process uses the kmod or bpf backend, each proc's owner and queue
 *       length read from its shared state (the bpf map, or the process's
 *       /dev/kgreen mapping). COUNT views, then exit (default: until
 *       interrupted).
 *   kgreen-trace record [-d SECS] -o FILE PID
 *       SECS (2) of events as a Chrome/Perfetto trace (JSON): coroutine
 *       runs per worker thread, blocks named by their system call,
 *       handoffs as flows from the blocked worker to the one that took
 *       the proc, descriptor waits and their ends ("fd 7 read wait",
 *       "fd 7 done"). Opens in ui.perfetto.dev or chrome://tracing.
 *
 * Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF. Coroutine
 * runs and handoffs come from libkgreen's USDT probes; a libkgreen built
 * without <sys/sdt.h> has none, and then only threads are traced.
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "trace.h"
#include "trace.skel.h"
#include "syscall_names.h"
#include "uapi/kgreen.h"

#define MAX_THREADS 4096

struct thread {
	__u32 tid;
	int worker;		/* -1: not seen as a worker */
	long co;		/* running coroutine (0: scheduler) */
	int blocked;		/* 1 while off CPU asleep */
	long sys;		/* the system call it blocks in, or -1 */
	unsigned long runs, blocks;	/* this interval */
};

static struct {
	pid_t pid;
	struct thread th[MAX_THREADS];
	int nth;
	unsigned long handoffs, handoffs_total, events;
	/* coroutines back from running off their procs after a time slice */
	unsigned long preempts, preempts_total;
	/* descriptor waits: this interval's, and those under way (as seen
	 * since the tool attached) */
	unsigned long fdwaits;
	struct { long co; int fd, dir; } waiting[256];
	int nwaiting;
	/* record mode */
	struct tr_event *log;
	size_t nlog, cap;
	bool recording, overflow;
	volatile sig_atomic_t stop;
	/* the bpf backend's shared state, when found */
	const struct kg_shared *sh;
	/* or the kmod backend's: the address of its /dev/kgreen mapping */
	unsigned long kmod_addr;
	struct kg_shared *copy;	/* read from the process at each view */
} S;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("kgreen-trace: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static const char *sysname(long nr, char *buf, size_t len)
{
	if (nr >= 0 && (size_t)nr < sizeof(syscall_names) /
					  sizeof(syscall_names[0]) &&
	    syscall_names[nr])
		return syscall_names[nr];
	if (nr < 0)
		return "sleep";	/* a page fault, or not in a system call */
	snprintf(buf, len, "syscall %ld", nr);
	return buf;
}

static struct thread *thread_of(__u32 tid)
{
	int i;

	for (i = 0; i < S.nth; i++)
		if (S.th[i].tid == tid)
			return &S.th[i];
	if (S.nth == MAX_THREADS)
		return NULL;
	S.th[S.nth] = (struct thread){ .tid = tid, .worker = -1, .sys = -1 };
	return &S.th[S.nth++];
}

static int on_event(void *ctx, void *data, size_t size)
{
	const struct tr_event *e = data;
	struct thread *t;

	(void)ctx;
	if (size < sizeof(*e))
		return 0;
	S.events++;
	if (S.recording) {
		if (S.nlog == S.cap) {
			size_t cap = S.cap ? S.cap * 2 : 65536;
			struct tr_event *n = realloc(S.log, cap * sizeof(*n));

			if (!n) {
				S.overflow = true;
				return 0;
			}
			S.log = n;
			S.cap = cap;
		}
		S.log[S.nlog++] = *e;
	}
	t = thread_of(e->tid);
	if (!t)
		return 0;
	switch (e->type) {
	case TR_RUN:
		t->worker = (int)e->a;
		t->co = e->b;
		t->runs++;
		break;
	case TR_HANDOFF:
		S.handoffs++;
		S.handoffs_total++;
		break;
	case TR_PREEMPT:
		S.preempts++;
		S.preempts_total++;
		break;
	case TR_BLOCK:
		t->blocked = 1;
		t->sys = e->a;
		t->blocks++;
		break;
	case TR_ONCPU:
		t->blocked = 0;
		break;
	case TR_FDWAIT:
		S.fdwaits++;
		if (S.nwaiting < (int)(sizeof(S.waiting) / sizeof(S.waiting[0]))) {
			S.waiting[S.nwaiting].co = e->a;
			S.waiting[S.nwaiting].fd = (int)e->b;
			S.waiting[S.nwaiting].dir = (int)e->c;
			S.nwaiting++;
		}
		break;
	case TR_FDDONE: {
		int i;

		for (i = 0; i < S.nwaiting; i++)
			if (S.waiting[i].co == e->a) {
				S.waiting[i] = S.waiting[--S.nwaiting];
				break;
			}
		break;
	}
	}
	return 0;
}

/*
 * The first line of /proc/PID/maps containing needle, into line (len
 * bytes, newline stripped); false if none.
 */
static bool maps_line(const char *needle, char *line, size_t len)
{
	char maps[64];
	bool found = false;
	FILE *f;

	snprintf(maps, sizeof(maps), "/proc/%d/maps", S.pid);
	f = fopen(maps, "r");
	if (!f)
		die("cannot read %s: %s", maps, strerror(errno));
	while (!found && fgets(line, (int)len, f)) {
		line[strcspn(line, "\n")] = 0;
		found = strstr(line, needle) != NULL;
	}
	fclose(f);
	return found;
}

/* The file holding libkgreen's probes: its shared library, else the program. */
static void probe_binary(char *path, size_t len)
{
	char line[PATH_MAX + 128];

	if (maps_line("/libkgreen.so", line, sizeof(line)))
		snprintf(path, len, "%s", strchr(line, '/'));
	else
		snprintf(path, len, "/proc/%d/exe", S.pid);
}

/* The bpf backend's kg_shared map among the process's descriptors. */
static void find_shared(void)
{
	char dir[64], path[PATH_MAX], buf[256];
	struct dirent *d;
	DIR *dp;

	snprintf(dir, sizeof(dir), "/proc/%d/fdinfo", S.pid);
	dp = opendir(dir);
	if (!dp)
		return;
	while (!S.sh && (d = readdir(dp))) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(buf, sizeof(buf), f)) {
			struct bpf_map_info info = { 0 };
			__u32 ilen = sizeof(info), id;
			void *p;
			int fd;

			if (sscanf(buf, "map_id: %u", &id) != 1)
				continue;
			fd = bpf_map_get_fd_by_id(id);
			if (fd < 0)
				continue;
			if (!bpf_obj_get_info_by_fd(fd, &info, &ilen) &&
			    !strcmp(info.name, "kg_shared")) {
				p = mmap(NULL, sizeof(struct kg_shared),
					 PROT_READ, MAP_SHARED, fd, 0);
				if (p != MAP_FAILED)
					S.sh = p;
			}
			close(fd);
		}
		fclose(f);
	}
	closedir(dp);
}

/* The kmod backend's state: mapped from /dev/kgreen in the process. */
static void find_kmod_mapping(void)
{
	char line[PATH_MAX + 128];
	unsigned long lo, hi;

	if (!maps_line(" /dev/" KG_DEV_NAME, line, sizeof(line)) ||
	    strcmp(strchr(line, '/'), "/dev/" KG_DEV_NAME) ||
	    sscanf(line, "%lx-%lx", &lo, &hi) != 2 ||
	    hi - lo < sizeof(struct kg_shared))
		return;
	S.copy = malloc(sizeof(struct kg_shared));
	if (S.copy)
		S.kmod_addr = lo;
}

/* A fresh copy of the kmod backend's state (process_vm_readv), or NULL. */
static const struct kg_shared *read_kmod_state(void)
{
	struct iovec local = { S.copy, sizeof(*S.copy) };
	struct iovec remote = { (void *)S.kmod_addr, sizeof(*S.copy) };

	if (!S.kmod_addr)
		return NULL;
	if (process_vm_readv(S.pid, &local, 1, &remote, 1, 0) !=
	    (ssize_t)sizeof(*S.copy))
		return NULL;
	return S.copy;
}

static int cmp_thread(const void *a, const void *b)
{
	const struct thread *x = a, *y = b;
	int wx = x->worker < 0 ? INT_MAX : x->worker;
	int wy = y->worker < 0 ? INT_MAX : y->worker;

	return wx != wy ? (wx < wy ? -1 : 1) : (x->tid > y->tid) - (x->tid < y->tid);
}

static void view(double secs, bool tty)
{
	struct thread sorted[MAX_THREADS];
	char buf[32];
	unsigned int i;
	int n = 0;

	if (tty)
		fputs("\033[H\033[2J", stdout);
	printf("kgreen-trace: pid %d, %.0f s; handoffs %.0f/s (%lu in all); "
	       "preempted %.0f/s (%lu in all)\n\n", S.pid, secs,
	       S.handoffs / secs, S.handoffs_total, S.preempts / secs,
	       S.preempts_total);
	printf("descriptor waits %.0f/s", S.fdwaits / secs);
	if (S.nwaiting) {
		int k;

		printf("; waiting now:");
		for (k = 0; k < S.nwaiting && k < 4; k++)
			printf(" fd %d %s (coroutine %ld)%s", S.waiting[k].fd,
			       S.waiting[k].dir ? "write" : "read",
			       S.waiting[k].co,
			       k + 1 < S.nwaiting && k < 3 ? "," : "");
		if (S.nwaiting > 4)
			printf(" and %d more", S.nwaiting - 4);
	}
	printf("\n\n");
	S.fdwaits = 0;
	printf("%-8s %-8s %-36s %10s %10s\n", "worker", "tid", "doing",
	       "switch/s", "block/s");
	memcpy(sorted, S.th, sizeof(S.th[0]) * (size_t)S.nth);
	qsort(sorted, (size_t)S.nth, sizeof(sorted[0]), cmp_thread);
	for (i = 0; i < (unsigned int)S.nth; i++) {
		struct thread *t = &sorted[i];
		char doing[64], w[16];

		if (t->worker < 0 && !t->blocks)
			continue;
		if (t->blocked)
			snprintf(doing, sizeof(doing), "blocked in %s",
				 sysname(t->sys, buf, sizeof(buf)));
		else if (t->worker < 0)
			snprintf(doing, sizeof(doing), "(not a worker)");
		else if (t->co)
			snprintf(doing, sizeof(doing), "running coroutine %ld",
				 t->co);
		else
			snprintf(doing, sizeof(doing), "scheduler / parked");
		snprintf(w, sizeof(w), t->worker < 0 ? "-" : "%d", t->worker);
		printf("%-8s %-8u %-36s %10.0f %10.0f\n", w, t->tid, doing,
		       t->runs / secs, t->blocks / secs);
		n++;
	}
	for (i = 0; i < (unsigned int)S.nth; i++)
		S.th[i].runs = S.th[i].blocks = 0;
	S.handoffs = 0;
	S.preempts = 0;
	if (!n)
		printf("(no worker activity seen yet)\n");
	if (S.sh || S.kmod_addr) {
		const struct kg_shared *sh = S.sh ? S.sh : read_kmod_state();
		unsigned int np;

		if (!sh) {
			printf("\nprocs: cannot read the kmod backend's state "
			       "(%s)\n", strerror(errno));
			fflush(stdout);
			return;
		}
		np = sh->hdr.nprocs;

		printf("\n%-6s %-10s %8s %8s %7s   global queue: %u\n", "proc",
		       "owner", "queued", "runnext", "timers", sh->hdr.gq_len);
		for (i = 0; i < np && i < KG_MAX_PROCS; i++) {
			const struct kg_proc_slot *ps = &sh->procs[i];
			char o[24];

			if (ps->owner == KG_OWNER_DETACHED)
				snprintf(o, sizeof(o), "none");
			else
				snprintf(o, sizeof(o), "worker %u", ps->owner);
			printf("%-6u %-10s %8u %8s %7u\n", i, o,
			       ps->runq_tail - ps->runq_head,
			       ps->runnext ? "yes" : "-", ps->timers);
		}
	} else {
		printf("\nprocs: their queues are visible with the kmod and bpf "
		       "backends (their shared state); this process uses "
		       "sysmon\n");
	}
	fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* record: the Chrome trace event format                              */
/* ------------------------------------------------------------------ */

struct slice {
	int open;		/* 0 none, 1 coroutine, 2 block */
	__u64 start;
	long co, sys;
};

static void put_slice(FILE *f, bool *first, __u32 tid, const struct slice *s,
		      __u64 end, __u64 t0)
{
	char buf[32];

	if (!s->open || end < s->start)
		return;
	fprintf(f, "%s\n{\"ph\":\"X\",\"pid\":%d,\"tid\":%u,\"ts\":%.3f,"
		"\"dur\":%.3f,", *first ? "" : ",", S.pid, tid,
		(s->start - t0) / 1e3, (end - s->start) / 1e3);
	if (s->open == 1 && s->co)
		fprintf(f, "\"cat\":\"coroutine\",\"name\":\"coroutine %ld\","
			"\"args\":{\"id\":%ld}}", s->co, s->co);
	else if (s->open == 1)
		fprintf(f, "\"cat\":\"scheduler\",\"name\":\"scheduler\"}");
	else
		fprintf(f, "\"cat\":\"block\",\"name\":\"%s\",\"args\":"
			"{\"syscall\":%ld}}", sysname(s->sys, buf, sizeof(buf)),
			s->sys);
	*first = false;
}

static void write_trace(const char *out)
{
	struct slice sl[MAX_THREADS] = { { 0 } };
	__u32 worker_tid[KG_MAX_WORKERS] = { 0 };
	FILE *f = fopen(out, "w");
	bool first = true;
	__u64 t0, tend;
	size_t i;
	int k, flow = 0;

	if (!f)
		die("cannot write %s: %s", out, strerror(errno));
	t0 = S.nlog ? S.log[0].ts : 0;
	tend = S.nlog ? S.log[S.nlog - 1].ts : 0;
	for (i = 0; i < S.nlog; i++)
		if (S.log[i].type == TR_RUN && S.log[i].a >= 0 &&
		    S.log[i].a < KG_MAX_WORKERS)
			worker_tid[S.log[i].a] = S.log[i].tid;
	fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[");
	fprintf(f, "\n{\"ph\":\"M\",\"pid\":%d,\"name\":\"process_name\","
		"\"args\":{\"name\":\"kgreen pid %d\"}}", S.pid, S.pid);
	first = false;
	for (k = 0; k < S.nth; k++) {
		if (S.th[k].worker >= 0)
			fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%d,\"tid\":%u,"
				"\"name\":\"thread_name\",\"args\":{\"name\":"
				"\"worker %d\"}}", S.pid, S.th[k].tid,
				S.th[k].worker);
	}
	for (i = 0; i < S.nlog; i++) {
		const struct tr_event *e = &S.log[i];
		struct thread *t = thread_of(e->tid);
		struct slice *s;

		if (!t)
			continue;
		s = &sl[t - S.th];
		switch (e->type) {
		case TR_RUN:
			put_slice(f, &first, e->tid, s, e->ts, t0);
			*s = (struct slice){ 1, e->ts, e->b, -1 };
			break;
		case TR_BLOCK:
			put_slice(f, &first, e->tid, s, e->ts, t0);
			*s = (struct slice){ 2, e->ts, s->co, e->a };
			break;
		case TR_ONCPU:
			if (s->open == 2) {
				put_slice(f, &first, e->tid, s, e->ts, t0);
				/* back on its CPU: the coroutine goes on */
				*s = (struct slice){ 1, e->ts, s->co, -1 };
			}
			break;
		case TR_FDWAIT:
		case TR_FDDONE:
			fprintf(f, ",\n{\"ph\":\"i\",\"s\":\"t\",\"pid\":%d,"
				"\"tid\":%u,\"ts\":%.3f,\"cat\":\"fd\","
				"\"name\":\"fd %lld %s\",\"args\":{"
				"\"coroutine\":%lld,\"%s\":%lld}}",
				S.pid, e->tid, (e->ts - t0) / 1e3,
				(long long)e->b,
				e->type == TR_FDDONE ? "done" :
				e->c ? "write wait" : "read wait",
				(long long)e->a,
				e->type == TR_FDDONE ? "result" : "dir",
				(long long)e->c);
			break;
		case TR_PREEMPT:
			fprintf(f, ",\n{\"ph\":\"i\",\"s\":\"t\",\"pid\":%d,"
				"\"tid\":%u,\"ts\":%.3f,\"cat\":\"preempt\","
				"\"name\":\"preempted\",\"args\":{"
				"\"worker\":%lld,\"coroutine\":%lld}}",
				S.pid, e->tid, (e->ts - t0) / 1e3,
				(long long)e->a, (long long)e->b);
			break;
		case TR_HANDOFF: {
			__u32 from = e->b >= 0 && e->b < KG_MAX_WORKERS ?
					     worker_tid[e->b] : 0;

			fprintf(f, ",\n{\"ph\":\"i\",\"s\":\"t\",\"pid\":%d,"
				"\"tid\":%u,\"ts\":%.3f,\"cat\":\"handoff\","
				"\"name\":\"handoff\",\"args\":{\"proc\":%lld,"
				"\"from_worker\":%lld,\"to_worker\":%lld}}",
				S.pid, e->tid, (e->ts - t0) / 1e3,
				(long long)e->a, (long long)e->b,
				(long long)e->c);
			if (from) {
				flow++;
				fprintf(f, ",\n{\"ph\":\"s\",\"id\":%d,\"pid\":%d,"
					"\"tid\":%u,\"ts\":%.3f,\"cat\":\"handoff\","
					"\"name\":\"proc %lld\"}", flow, S.pid,
					from, (e->ts - t0) / 1e3,
					(long long)e->a);
				fprintf(f, ",\n{\"ph\":\"f\",\"bp\":\"e\",\"id\":%d,"
					"\"pid\":%d,\"tid\":%u,\"ts\":%.3f,"
					"\"cat\":\"handoff\",\"name\":\"proc %lld\"}",
					flow, S.pid, e->tid,
					(e->ts - t0) / 1e3 + 0.001,
					(long long)e->a);
			}
			break;
		}
		}
	}
	for (k = 0; k < S.nth; k++)
		put_slice(f, &first, S.th[k].tid, &sl[k], tend, t0);
	fprintf(f, "\n]}\n");
	if (fclose(f))
		die("cannot write %s: %s", out, strerror(errno));
}

static void on_signal(int sig)
{
	(void)sig;
	S.stop = 1;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Read events for secs, or until interrupted (or, with upto_exit, until
 * the process is gone); returns the seconds it took.
 */
static double poll_for(struct ring_buffer *rb, double secs, bool upto_exit)
{
	double t0 = mono_s(), now;

	do {
		ring_buffer__poll(rb, 100);
		now = mono_s();
	} while (!S.stop && now - t0 < secs && !(upto_exit && kill(S.pid, 0)));
	return now - t0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: kgreen-trace [-i SECS] [-n COUNT] PID\n"
		"       kgreen-trace record [-d SECS] -o FILE PID\n");
	return 2;
}

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt,
			va_list ap)
{
	if (level == LIBBPF_DEBUG || getenv("KGREEN_TRACE_QUIET"))
		return 0;
	return vfprintf(stderr, fmt, ap);
}

int main(int argc, char **argv)
{
	double interval = 1, secs = 2;
	const char *out = NULL;
	bool record = false, tty = isatty(1);
	long count = -1;
	char bin[PATH_MAX];
	struct kgreen_trace *skel;
	struct ring_buffer *rb;
	struct bpf_link *l1, *l2;
	int opt, err;

	if (argc > 1 && !strcmp(argv[1], "record")) {
		record = true;
		argv++;
		argc--;
	}
	while ((opt = getopt(argc, argv, "i:n:d:o:h")) != -1) {
		switch (opt) {
		case 'i': interval = atof(optarg); break;
		case 'n': count = atol(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'o': out = optarg; break;
		default: return usage();
		}
	}
	if (optind != argc - 1 || interval <= 0 || secs <= 0 ||
	    (record && !out))
		return usage();
	S.pid = atoi(argv[optind]);
	if (S.pid <= 0 || kill(S.pid, 0))
		die("no process %s", argv[optind]);

	libbpf_set_print(libbpf_quiet);
	skel = kgreen_trace__open();
	if (!skel)
		die("cannot open the BPF object");
	skel->rodata->tr_tgid = (__u32)S.pid;
	err = kgreen_trace__load(skel);
	if (err)
		die("cannot load the BPF programs (%s): needs root, or "
		    "CAP_BPF and CAP_PERFMON, and a kernel with BTF",
		    strerror(-err));
	if (!bpf_program__attach(skel->progs.tr_sys_enter) ||
	    !bpf_program__attach(skel->progs.tr_sys_exit) ||
	    !bpf_program__attach(skel->progs.tr_sched_switch))
		die("cannot attach to the scheduler's tracepoints: %s",
		    strerror(errno));
	probe_binary(bin, sizeof(bin));
	l1 = bpf_program__attach_usdt(skel->progs.tr_co_run, S.pid, bin,
				      "kgreen", "co_run", NULL);
	l2 = bpf_program__attach_usdt(skel->progs.tr_handoff, S.pid, bin,
				      "kgreen", "handoff", NULL);
	/* the descriptor probes: libkgreen from before them has none */
	bpf_program__attach_usdt(skel->progs.tr_fd_wait, S.pid, bin, "kgreen",
				 "fd_wait", NULL);
	bpf_program__attach_usdt(skel->progs.tr_fd_done, S.pid, bin, "kgreen",
				 "fd_done", NULL);
	bpf_program__attach_usdt(skel->progs.tr_preempted, S.pid, bin,
				 "kgreen", "preempted", NULL);
	if (!l1 || !l2)
		fprintf(stderr, "kgreen-trace: %s has no kgreen USDT probes "
			"(libkgreen built without <sys/sdt.h>?): tracing "
			"threads only\n", bin);
	find_shared();
	if (!S.sh)
		find_kmod_mapping();
	rb = ring_buffer__new(bpf_map__fd(skel->maps.tr_events), on_event,
			      NULL, NULL);
	if (!rb)
		die("cannot read the event ring");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	if (record) {
		double took;

		S.recording = true;
		took = poll_for(rb, secs, true);
		ring_buffer__consume(rb);
		write_trace(out);
		fprintf(stderr, "kgreen-trace: %zu events in %.1f s to %s%s\n",
			S.nlog, took, out,
			S.overflow ? " (out of memory: some dropped)" : "");
	} else {
		while (!S.stop && count != 0 && !kill(S.pid, 0)) {
			poll_for(rb, interval, false);
			view(interval, tty);
			if (count > 0)
				count--;
		}
	}
	ring_buffer__free(rb);
	bpf_link__destroy(l1);
	bpf_link__destroy(l2);
	kgreen_trace__destroy(skel);
	return 0;
}
