// SPDX-License-Identifier: MIT
/*
 * runtime.c - kg_run: configuration, choosing the backend, setting the
 * runtime up, running it, and tearing it down; kg_stats and
 * kg_backend_name.
 *
 * kg_run's own thread runs no coroutine: it starts worker 0 on proc 0
 * with main queued, then waits until the runtime ends (rt->done). A
 * coroutine may block in the kernel for ever (accept, read on a pipe
 * nobody writes); were it on kg_run's thread, kg_run could never return,
 * while Go's main ends the program whatever its goroutines do. So the
 * caller's thread only supervises: when main returns, it joins the
 * workers for up to 1 s and returns; a worker still blocked then is left
 * behind with the runtime's memory (leave_behind).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deadlock.h"
#include "fd.h"
#include "handoff.h"
#include "hook.h"
#include "netpoll.h"
#include "sched.h"
#include "stack.h"
#include "sysmon.h"
#include "timer.h"

static _Atomic int rt_running;

/* ------------------------------------------------------------------ */
/* Configuration and backends                                          */
/* ------------------------------------------------------------------ */

static unsigned int default_procs(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		n = CPU_COUNT(&set);
		if (n > 0)
			return (unsigned int)n;
	}
	n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned int)n : 1;
}

static int env_uint(const char *name, unsigned long max, unsigned long *out)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || v > max) {
		fprintf(stderr, "kgreen: ignoring %s=%s (expected 0..%lu)\n",
			name, s, max);
		return 0;
	}
	*out = v;
	return 1;
}

/*
 * KGREEN_SLICE: a duration, "10ms", "500us", "2s" (a bare number is
 * milliseconds), or "0" / "off". false (with one line on stderr) if the
 * value is not one, or outside [1 ms, 60 s].
 */
static bool env_slice(uint64_t *out)
{
	static const struct { const char *unit; uint64_t ns; } units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "ms", 1000000 },
		{ "s", 1000000000 }, { "", 1000000 },
	};
	const char *s = getenv("KGREEN_SLICE");
	unsigned long long v;
	char *end;
	size_t i;

	if (!s || !*s)
		return false;
	if (!strcmp(s, "off")) {
		*out = 0;
		return true;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	for (i = 0; !errno && end != s && i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit))
			continue;
		if (!v) {
			*out = 0;
			return true;
		}
		if (v <= 60ull * 1000000000 / units[i].ns &&
		    v * units[i].ns >= 1000000) {
			*out = v * units[i].ns;
			return true;
		}
		break;
	}
	fprintf(stderr, "kgreen: ignoring KGREEN_SLICE=%s (expected off, 0, or "
		"a duration from 1ms to 60s such as 10ms)\n", s);
	return false;
}

static int config(struct kg_rt *rt, const struct kg_config *cfg)
{
	unsigned long v;
	const char *backend = cfg ? cfg->backend : NULL;
	unsigned int i;

	if (cfg) {
		if ((cfg->flags & ~KG_RUN_NO_INTERPOSE) ||
		    cfg->procs > KG_MAX_PROCS)
			return -EINVAL;
		for (i = 0; i < sizeof(cfg->__reserved) / sizeof(cfg->__reserved[0]); i++)
			if (cfg->__reserved[i])
				return -EINVAL;
		if (cfg->stack_size && (cfg->stack_size < KG_STACK_MIN ||
					cfg->stack_size > KG_STACK_MAX))
			return -EINVAL;
	}
	rt->debug = 0;
	if (env_uint("KGREEN_DEBUG", 9, &v))
		rt->debug = (int)v;
	if (cfg && cfg->debug)
		rt->debug = cfg->debug;
	kg_debug_set(rt->debug);

	rt->nprocs = rt->ncpus = default_procs();
	if (env_uint("KGREEN_PROCS", KG_MAX_PROCS, &v) && v)
		rt->nprocs = (uint32_t)v;
	if (cfg && cfg->procs)
		rt->nprocs = cfg->procs;
	if (rt->nprocs > KG_MAX_PROCS)
		rt->nprocs = KG_MAX_PROCS;

	rt->hooks = !(cfg && (cfg->flags & KG_RUN_NO_INTERPOSE));
	if (env_uint("KGREEN_INTERPOSE", 1, &v) && !v)
		rt->hooks = false;
	if (rt->hooks)
		kg_hooks_init();

	/* Go's forcePreemptNS */
	rt->slice_ns = KG_SLICE_DEFAULT_NS;
	env_slice(&rt->slice_ns);
	rt->slice_hogs = KG_SLICE_HOGS_DEFAULT;
	if (env_uint("KGREEN_SLICE_HOGS", KG_MAX_WORKERS / 2, &v))
		rt->slice_hogs = (uint32_t)v;

	rt->stack_size = 256 * 1024;
	if (cfg && cfg->stack_size)
		rt->stack_size = cfg->stack_size;

	if (!backend)
		backend = getenv("KGREEN_BACKEND");
	if (!backend || !*backend || !strcmp(backend, "auto"))
		rt->backend = KG_BACKEND_NONE;	/* auto: decided in rt_init */
	else if (!strcmp(backend, "sysmon"))
		rt->backend = KG_BACKEND_SYSMON;
	else if (!strcmp(backend, "bpf"))
		rt->backend = KG_BACKEND_BPF;
	else if (!strcmp(backend, "kmod"))
		rt->backend = KG_BACKEND_KMOD;
	else
		return -EINVAL;
	return 0;
}

static const char *const backend_names[] = {
	[KG_BACKEND_NONE] = "none",
	[KG_BACKEND_SYSMON] = "sysmon",
	[KG_BACKEND_BPF] = "bpf",
	[KG_BACKEND_KMOD] = "kmod",
};

/*
 * Pick the backend (rt->backend: the one asked for, NONE for auto) and set
 * up the shared state. auto: kmod if /dev/kgreen is usable, else bpf if it
 * loads, else sysmon, saying on stderr why a kernel backend could not
 * serve (once per process and reason; a machine without the module is
 * the usual case and says nothing). A backend asked for by name that
 * cannot serve fails with -ENODEV and the reason.
 */
static void say_once(const char *fmt, const char *why)
{
	static char last[260];
	char line[260];

	snprintf(line, sizeof(line), fmt, why);
	if (strcmp(line, last)) {
		snprintf(last, sizeof(last), "%s", line);
		fputs(line, stderr);
	}
}

/* The kernel backends, in auto's order of preference. */
static const struct {
	uint32_t id;
	int (*open)(struct kg_shared **, const struct kg_evops **, char *,
		    size_t);
	/* auto's line when it cannot serve (%s: why), or NULL: silent */
	const char *fallback;
} kernel_backends[] = {
	{ KG_BACKEND_KMOD, kg_kmod_open,
	  "kgreen: kmod backend unavailable (%s); trying bpf\n" },
	{ KG_BACKEND_BPF, kg_bpf_open,
	  "kgreen: BPF backend unavailable (%s); using sysmon\n" },
};

static int backend_init(struct kg_rt *rt)
{
	char why[200];
	bool want_auto = rt->backend == KG_BACKEND_NONE;
	size_t i;
	int err;

	for (i = 0; i < sizeof(kernel_backends) / sizeof(kernel_backends[0]);
	     i++) {
		uint32_t id = kernel_backends[i].id;

		if (!want_auto && rt->backend != id)
			continue;
		err = kernel_backends[i].open(&rt->shared, &rt->ev, why,
					      sizeof(why));
		if (!err) {
			rt->backend = id;
			return 0;
		}
		if (!want_auto) {
			fprintf(stderr, "kgreen: backend %s is not available: "
				"%s\n", backend_names[id], why);
			return -ENODEV;
		}
		/* no /dev/kgreen: the usual machine, nothing to say */
		if (!(id == KG_BACKEND_KMOD && err == -ENOENT))
			say_once(kernel_backends[i].fallback, why);
	}
	rt->backend = KG_BACKEND_SYSMON;
	rt->ev = NULL;
	rt->shared = aligned_alloc(KG_CACHELINE, sizeof(*rt->shared));
	if (!rt->shared)
		return -ENOMEM;
	memset(rt->shared, 0, sizeof(*rt->shared));
	rt->shared_owned = true;
	return 0;
}

/* kg_co_foreach: let go of what co, left behind, waits in (kg_co.abandon). */
static void co_abandon(struct kg_co *co, void *arg)
{
	if (co->abandon)
		co->abandon(co, *(int *)arg);
}

static void rt_free(struct kg_rt *rt)
{
	uint32_t i;

	/*
	 * Coroutines main left behind: their stacks go below. Every wait
	 * still queued is withdrawn first, so that settling what was handed
	 * to the others (pass 1) can wake no coroutine of this runtime.
	 * With none alive (the workers are gone: the counts are final) the
	 * walks are skipped: they read every stack's top page, a million
	 * page walks after a million coroutines.
	 */
	if (rt->stacks && rt->procs && kg_live(rt) > 0) {
		int pass;

		for (pass = 0; pass < 2; pass++)
			kg_co_foreach(rt, co_abandon, &pass);
	}
	if (rt->procs)
		kg_timers_orphan(rt);
	for (i = 0; rt->procs && i < rt->nprocs; i++) {
		kg_procs_cache_drain(rt, &rt->procs[i], 0);
		if (rt->procs[i].timers.next)	/* initialized */
			kg_timers_destroy(&rt->procs[i].timers);
	}
	kg_stacks_destroy(rt);
	kg_sysmon_free(rt);
	kg_netpoll_destroy(rt);
	for (i = 0; i < KG_MAX_WORKERS; i++) {
		if (rt->workers[i] && rt->workers[i]->be)
			rt->ev->worker_free(rt->workers[i]);
		free(rt->workers[i]);
	}
	free(rt->gq.v);
	free(rt->procs);
	if (rt->shared_owned)
		free(rt->shared);
	pthread_mutex_destroy(&rt->lock);
	free(rt);
}

static struct kg_rt *rt_new(void)
{
	/* aligned: some fields own a cache line (rt.h) */
	struct kg_rt *rt = aligned_alloc(_Alignof(struct kg_rt), sizeof(*rt));

	if (rt)
		memset(rt, 0, sizeof(*rt));
	if (!rt || kg_mutex_init(&rt->lock)) {
		free(rt);
		return NULL;
	}
	atomic_store(&rt->timer_watch_until, UINT64_MAX);
	rt->worker_body = kg_worker_loop;
	return rt;
}

static int rt_init(struct kg_rt *rt)
{
	uint32_t i;

	int err = backend_init(rt);

	if (err)
		return err;
	/*
	 * No worker of ours is registered: the kernel side ignores it all,
	 * except kev_pending, the module's own count of queued records
	 * (kept: records of an earlier runtime are dropped in kg_run).
	 */
	memset(&rt->shared->workers, 0, sizeof(rt->shared->workers));
	memset(&rt->shared->procs, 0, sizeof(rt->shared->procs));
	rt->shared->hdr.gq_len = 0;
	rt->shared->hdr.flags = 0;
	rt->shared->hdr.version = KG_ABI_VERSION;
	rt->shared->hdr.nprocs = rt->nprocs;
	rt->shared->hdr.slice_ns = rt->slice_ns;
	rt->shared->hdr.slice_hogs = rt->slice_hogs;
	rt->shared->hdr.slice_out = 0;
	/*
	 * A worker is in scheduler code from its creation until it first runs
	 * a coroutine: the kernel side must not detach a proc it is taking
	 * (kg_run's thread may block in mmap or pthread_create meanwhile).
	 */
	for (i = 0; i < KG_MAX_WORKERS; i++) {
		rt->shared->workers[i].proc = KG_PROC_NONE;
		rt->shared->workers[i].in_sched = 1;
	}
	rt->procs = aligned_alloc(KG_CACHELINE,
				  sizeof(struct kg_proc) * rt->nprocs);
	if (!rt->procs)
		return -ENOMEM;
	memset(rt->procs, 0, sizeof(struct kg_proc) * rt->nprocs);
	for (i = 0; i < rt->nprocs; i++) {
		struct kg_proc *p = &rt->procs[i];

		p->index = i;
		p->solo = rt->nprocs == 1;
		p->slot = &rt->shared->procs[i];
		p->slot->owner = KG_OWNER_DETACHED;
		if (kg_timers_init(&p->timers))
			return -ENOMEM;
		p->timers.hint = &p->slot->timers;
	}
	err = kg_netpoll_init(rt);
	if (err)
		kg_debug("no poller (%s): descriptor waits hold their thread",
			 strerror(-err));
	return kg_stacks_init(rt);
}

/* Wait up to 1 s for every worker thread to leave; false if some did not. */
static bool join_workers(struct kg_rt *rt)
{
	uint32_t i, n = atomic_load(&rt->nworkers);
	struct timespec ts;
	bool all = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 1;
	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];

		if (!w)
			continue;
		if (pthread_timedjoin_np(w->thread, NULL, &ts) != 0) {
			kg_debug("worker %u still runs a coroutine after main "
				 "returned; its memory is left in place",
				 w->index);
			pthread_detach(w->thread);
			all = false;
		}
	}
	return all;
}

/*
 * join_workers left workers behind, each still in a coroutine (blocked in
 * the kernel, or computing). The shared slots they would write at their
 * next kgreen call are the process's (the backend's mapping), which the
 * next runtime reuses: give this runtime a private copy and point its
 * workers and procs there, and have the kernel side forget their threads
 * where that can be done from here (bpf; with kmod each thread leaves
 * when it ends). The rest of this runtime's memory stays for them; a
 * left-behind worker's next scheduler entry finds the runtime done and
 * ends its thread. They are in coroutine code, not the scheduler's: the
 * slot pointers are read again at their next entry.
 */
static void leave_behind(struct kg_rt *rt)
{
	struct kg_shared *priv = malloc(sizeof(*priv));
	uint32_t i, n = atomic_load(&rt->nworkers);

	for (i = 0; i < n; i++) {
		struct kg_worker *w = rt->workers[i];

		if (w && !atomic_load(&w->exited) && w->tid &&
		    rt->ev->worker_forget) {
			rt->ev->worker_forget(w);
			w->tid = 0;	/* its own exit unregisters nothing */
		}
	}
	if (!priv) {
		kg_debug("no memory to detach the workers left behind from "
			 "the shared state");
		return;
	}
	memcpy(priv, rt->shared, sizeof(*priv));
	for (i = 0; i < n; i++)
		if (rt->workers[i])
			rt->workers[i]->slot = &priv->workers[i];
	for (i = 0; i < rt->nprocs; i++) {
		struct kg_proc *p = &rt->procs[i];

		p->slot = &priv->procs[i];
		p->timers.hint = &p->slot->timers;
	}
	rt->shared = priv;
}

/*
 * kg_run's own thread runs no coroutine: it starts worker 0 on proc 0
 * with main queued, then waits until the runtime ends (rt->done). A
 * coroutine may block in the kernel for ever (accept, read on a pipe
 * nobody writes); were it on kg_run's thread, kg_run could never return,
 * while Go's main ends the program whatever its goroutines do. So the
 * caller's thread only supervises: when main returns, it joins the
 * workers for up to 1 s and returns; a worker still blocked then is left
 * behind with the runtime's memory (see join_workers).
 */
int kg_run(void (*main_fn)(void *), void *arg, const struct kg_config *cfg)
{
	struct kg_rt *rt;
	struct kg_worker *w0;
	struct kg_proc *p0;
	struct kg_co *co;
	int expect = 0, err;
	bool was_foreign;
	uint32_t i;

	if (!main_fn)
		return -EINVAL;
	if (kg_tls_worker)
		return -EBUSY;
	if (!atomic_compare_exchange_strong(&rt_running, &expect, 1))
		return -EBUSY;
	rt = rt_new();
	if (!rt) {
		atomic_store(&rt_running, 0);
		return -ENOMEM;
	}
	err = config(rt, cfg);
	if (!err)
		err = rt_init(rt);
	if (!err && kg_segv_install())
		err = -ENOMEM;
	if (err) {
		rt_free(rt);
		atomic_store(&rt_running, 0);
		return err;
	}
	kg_debug("runtime starting: %u procs, backend %s, stack guards %s",
		 rt->nprocs, backend_names[rt->backend],
		 rt->guard_mode == KG_GUARD_MADVISE ? "madvise" :
		 rt->guard_mode == KG_GUARD_MPROTECT ? "mprotect" : "canary");

	/* this thread waits in kg_run: it can wake no coroutine meanwhile */
	was_foreign = kg_foreign_pause();
	/* sysmon's backend, or a kernel backend's strand watch (sysmon.c) */
	if ((err = kg_sysmon_start(rt)))
		goto out;
	for (i = rt->nprocs; i-- > 1;)
		__kg_pidle_put(rt, &rt->procs[i]);

	/* main, queued on proc 0 before any thread can own it */
	p0 = &rt->procs[0];
	co = kg_main_make(rt, p0, main_fn, arg);
	if (!co) {
		err = -ENOMEM;
		goto out;
	}
	/* worker 0 runs main first; its thread starts after the standby's */
	w0 = kg_worker_new(rt);
	if (!w0) {
		kg_store_relaxed(&p0->live, 0);	/* main never runs */
		err = -ENOMEM;
		goto out;
	}
	rt->main_co = co;
	kg_rt_set_current(rt);
	/*
	 * The standby first, so that even main's first block hands off; with
	 * nothing queued anywhere yet, it parks at once and takes the role.
	 * Then main goes on proc 0, which no worker owns until worker 0
	 * starts (the thread's creation orders the queue's stores).
	 */
	if (rt->ev)
		kg_start_standby(rt);
	kg_runq_put(rt, p0, co);
	err = kg_worker_start(w0, p0, false);
	if (err) {
		/* main never ran: its stack goes with the runtime */
		rt->workers[0] = NULL;
		free(w0);
		err = -err;
		kg_rt_finish(rt);
	}
	/* acquire: pairs with kg_rt_finish's release store */
	while (!atomic_load_explicit(&rt->done, memory_order_acquire))
		kg_futex_wait(&rt->done, 0, UINT64_MAX);
	if (rt->deadlock)
		err = -EDEADLK;

out:
	kg_rt_set_current(NULL);
	if (!rt->done)
		kg_rt_finish(rt);	/* a standby may have started */
	kg_sysmon_stop(rt);
	if (rt->debug && kg_live(rt))
		kg_debug("main returned with %llu coroutine(s) still alive",
			 (unsigned long long)kg_live(rt));
	/*
	 * A worker may be starting under rt.lock (it checked done before
	 * kg_rt_finish set it): let it finish, so that join_workers sees it.
	 * Later ones see done and start nothing.
	 */
	pthread_mutex_lock(&rt->lock);
	pthread_mutex_unlock(&rt->lock);
	/* a close on a plain thread may still be reading rt (fd.c) */
	kg_fd_quiesce();
	if (join_workers(rt))
		rt_free(rt);
	else if (rt->ev)
		leave_behind(rt);
	kg_segv_restore();
	kg_foreign_resume(was_foreign);
	atomic_store(&rt_running, 0);
	return err;
}

/* ------------------------------------------------------------------ */
/* Introspection                                                       */
/* ------------------------------------------------------------------ */

const char *kg_backend_name(void)
{
	struct kg_rt *rt = kg_rt_current();

	return rt ? backend_names[rt->backend] : "none";
}

int kg_stats(struct kg_stats *out)
{
	struct kg_rt *rt;
	uint32_t i;

	if (!out)
		return -EINVAL;
	rt = kg_rt_current();
	if (!rt)
		return -ESRCH;
	memset(out, 0, sizeof(*out));
	out->procs = rt->nprocs;
	out->workers = atomic_load(&rt->nworkers);
	out->stack_guard = rt->guard_mode;
	out->coroutines = kg_live(rt);
	for (i = 0; i < rt->nprocs; i++) {
		struct kg_proc *p = &rt->procs[i];

		out->steals += kg_load_relaxed(&p->steals);
		out->timer_steals += kg_load_relaxed(&p->timer_steals);
		out->spawned += kg_load_relaxed(&p->spawned);
	}
	for (i = 0; i < atomic_load(&rt->nworkers); i++)
		if (rt->workers[i])
			out->switches +=
				kg_load_relaxed(W_SWITCHES(rt->workers[i])) >> 1;
	out->parks = atomic_load(&rt->parks);
	out->handoffs = atomic_load(&rt->handoffs);
	out->handoff_ns_sum = atomic_load(&rt->hlat_sum);
	out->handoff_ns_max = atomic_load(&rt->hlat_max);
	out->handoff_ns_p50 = kg_handoff_quantile(rt, 0.50);
	out->handoff_ns_p99 = kg_handoff_quantile(rt, 0.99);
	for (i = 0; i < KG_MAX_WORKERS; i++) {
		out->blocks += __atomic_load_n(&rt->shared->workers[i].blocks,
					       __ATOMIC_RELAXED);
		out->preemptions += __atomic_load_n(
			&rt->shared->workers[i].preempts, __ATOMIC_RELAXED);
	}
	out->preempted_now = __atomic_load_n(&rt->shared->hdr.slice_out,
					     __ATOMIC_RELAXED);
	out->stack_bytes = kg_stack_bytes(rt);
	return 0;
}
