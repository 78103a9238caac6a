/* SPDX-License-Identifier: MIT */
/*
 * deadlock.h - the deadlock watch (deadlock.c) and the plain-thread
 * accounting it needs.
 */
#ifndef KG_DEADLOCK_H
#define KG_DEADLOCK_H

#include "rt.h"

/*
 * Plain threads (not workers) that have waited in or woken through a
 * kgreen object and are still alive: any of them may wake a coroutine
 * later, so the deadlock watch stays quiet while there is one. The count
 * drops when such a thread exits (a pthread key destructor). kg_run's
 * own thread is not counted while it runs the runtime.
 */
extern _Atomic long kg_foreign_threads;
/* Wake-ups made by plain threads: progress the deadlock watch sees. */
extern _Atomic uint64_t kg_foreign_wakes;
/* Count the calling plain thread as a possible waker (once). */
void kg_foreign_note(void);
/* kg_run's thread: stop counting it while it is a worker; resume after. */
bool kg_foreign_pause(void);
void kg_foreign_resume(bool was);

/* Coroutines alive in rt. */
uint64_t kg_live(struct kg_rt *rt);
/*
 * Called by a worker about to park without a proc: how long it may
 * sleep (UINT64_MAX: until woken). Reports a deadlock when it is sure.
 */
uint64_t kg_deadlock_watch(struct kg_worker *w);

#endif /* KG_DEADLOCK_H */
