/* SPDX-License-Identifier: MIT */
/*
 * fd.h - waiting for a descriptor (fd.c), for the layers above it: a wait
 * until an absolute deadline that something else may cancel (contexts,
 * cancel.c).
 */
#ifndef KG_FD_H
#define KG_FD_H

#include "netpoll.h"

/*
 * Cancellation of a wait by someone else. armed(h, fw): the coroutine is
 * about to park on fw; from now until done(h) returns, kg_fd_cancel(fw,
 * err) completes the wait with err. done(h): the wait is over (called by
 * the waiter, before fw goes out of scope). check(h): for a plain thread,
 * which waits in ppoll slices: 0, or the error to stop with.
 */
struct kg_fdhook {
	void (*armed)(struct kg_fdhook *h, struct kg_fdwaiter *fw);
	void (*done)(struct kg_fdhook *h);
	int (*check)(struct kg_fdhook *h);
};

/* kg_fd_wait until deadline (kg_now_ns; UINT64_MAX: none), cancellable
 * through hook (may be NULL). */
int kg_fd_wait_until(int fd, int events, uint64_t deadline,
		     struct kg_fdhook *hook);
/* Complete fw's wait with err, from any thread (between armed and done). */
void kg_fd_cancel(struct kg_fdwaiter *fw, int err);

/* Wait until no kg_fd_close may still be reading the runtime kg_run has
 * just stopped naming current (kg_run, before it frees the runtime). */
void kg_fd_quiesce(void);

#endif /* KG_FD_H */
