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

/* bpf.c: the BPF backend (fails with -ENODEV when built without libbpf) */
int kg_bpf_open(struct kg_shared **shared, const struct kg_evops **ops,
		char *why, size_t whylen);
/* kmod.c: the kernel module backend, /dev/kgreen */
int kg_kmod_open(struct kg_shared **shared, const struct kg_evops **ops,
		 char *why, size_t whylen);

#endif /* KG_BACKEND_H */
