/* SPDX-License-Identifier: MIT */
/*
 * timer.h - the per-proc timer heaps (timer.c). Arming a timer so that
 * some worker fires it in time is the scheduler's: kg_timer_start
 * (sched.h).
 */
#ifndef KG_TIMER_H
#define KG_TIMER_H

#include "rt.h"

int kg_timers_init(struct kg_timer_heap *h);
void kg_timers_destroy(struct kg_timer_heap *h);
/* Room on h for one more timer; 0 or -ENOMEM. */
int kg_timer_reserve(struct kg_timer_heap *h);
/* Put t (fn, arg set) on h for deadline when; 0 or -ENOMEM (no room). */
int kg_timer_add(struct kg_timer_heap *h, struct kg_timer *t, uint64_t when);
/* Disarm t; true if it was armed. Afterwards t->fn is not running. */
bool kg_timer_cancel(struct kg_timer *t);
/* Detach every timer still armed on rt's heaps (the runtime is ending). */
void kg_timers_orphan(struct kg_rt *rt);
/* Fire proc p's expired timers on worker w; returns how many. */
unsigned int kg_timers_run(struct kg_worker *w, struct kg_proc *p,
			   uint64_t now);
/* The earliest deadline of all procs' heaps, UINT64_MAX if none. */
uint64_t kg_timers_next_all(struct kg_rt *rt);

#endif /* KG_TIMER_H */
