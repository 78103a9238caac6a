/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the event backends, bpf.c and kmod.c: a kernel side
 * detaches a blocked worker's proc and queues a handoff record, which a
 * standby (handoff.c) takes. Each is loaded once per process (again in a
 * forked child). What a backend keeps per worker is its own (kg_worker.be,
 * created and freed by its ops).
 */
#ifndef KG_BACKEND_H
#define KG_BACKEND_H

#include <stdio.h>
#include <string.h>

#include "rt.h"

typedef void (*kg_event_fn)(void *arg, const struct kg_handoff_event *ev);

struct kg_evops {
	/* The calling thread, worker w, tells the kernel side who it is /
	 * that it is leaving (always called by w's own thread). */
	int (*worker_add)(struct kg_worker *w);
	void (*worker_del)(struct kg_worker *w);
	/* Forget worker w's thread, from another thread (kg_run leaving w
	 * behind); NULL where only the thread itself can (kmod: it does so
	 * when it ends). */
	void (*worker_forget)(struct kg_worker *w);
	/* Free w->be (the runtime is going away; w's thread has ended). */
	void (*worker_free)(struct kg_worker *w);
	/*
	 * Hand every pending handoff record to fn (non-blocking), w's own
	 * first; how many. Called by the standby w; fn may take rt.lock.
	 */
	int (*events)(struct kg_worker *w, kg_event_fn fn, void *arg);
	/* Set up w's wait (idempotent); 0 or -errno. */
	int (*waiter_open)(struct kg_worker *w);
	/* Sleep until a record is pending, w is kicked, or deadline
	 * (kg_now_ns; UINT64_MAX: none). */
	void (*wait)(struct kg_worker *w, uint64_t deadline);
	/* End w's current or next wait (from any thread). */
	void (*kick)(struct kg_worker *w);
	/* A record is waiting (a cheap peek, for a polling standby). */
	bool (*pending)(void);
	/* w's wait returned a record that is w's alone and no events call
	 * has handled yet (kmod); NULL where records are never held. */
	bool (*held)(struct kg_worker *w);
};

/*
 * A kernel backend proves itself before it is reported: the calling
 * thread registers as the last worker slot (in scheduler code, holding no
 * proc: only counted, never detached), sleeps 100 us at most three times,
 * and the kernel side must have counted a block in that slot. Without
 * this, a backend that loads but sees nothing (a PID namespace whose ids
 * it does not know, a hook that never fires) would be reported and do
 * nothing. reg(index, add) registers the calling thread or unregisters
 * it: 0 or -errno. Returns 0, or why not (in why) with -ENODEV.
 */
#define KG_PROBE_SLOT (KG_MAX_WORKERS - 1)

static inline int kg_backend_prove(struct kg_shared *sh,
				   int (*reg)(uint32_t index, bool add),
				   char *why, size_t whylen)
{
	struct kg_worker_slot *ws = &sh->workers[KG_PROBE_SLOT];
	struct timespec nap = { 0, 100 * 1000 };
	uint64_t before;
	int err, i;

	__atomic_store_n(&ws->in_sched, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&ws->proc, KG_PROC_NONE, __ATOMIC_RELAXED);
	before = __atomic_load_n(&ws->blocks, __ATOMIC_RELAXED);
	err = reg(KG_PROBE_SLOT, true);
	if (err) {
		snprintf(why, whylen, "cannot register a thread with the "
			 "kernel side: %s", strerror(-err));
		return -ENODEV;
	}
	for (i = 0; i < 3 && __atomic_load_n(&ws->blocks, __ATOMIC_RELAXED) ==
				    before; i++)
		kg_sys_nanosleep(&nap, NULL);
	reg(KG_PROBE_SLOT, false);
	if (__atomic_load_n(&ws->blocks, __ATOMIC_RELAXED) != before)
		return 0;
	snprintf(why, whylen, "the kernel side did not see a deliberate "
		 "block of a registered thread (3 sleeps of 100 us)");
	return -ENODEV;
}

/* bpf.c: the BPF backend (fails with -ENODEV when built without libbpf) */
int kg_bpf_open(struct kg_shared **shared, const struct kg_evops **ops,
		char *why, size_t whylen);
/* kmod.c: the kernel module backend, /dev/kgreen */
int kg_kmod_open(struct kg_shared **shared, const struct kg_evops **ops,
		 char *why, size_t whylen);

#endif /* KG_BACKEND_H */
