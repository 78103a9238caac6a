/* SPDX-License-Identifier: MIT */
/*
 * stack.h - coroutine memory (stack.c): stacks carved from slabs, their
 * guards, the pools coroutines are allocated from, the overflow handler.
 */
#ifndef KG_STACK_H
#define KG_STACK_H

#include "rt.h"

int kg_stacks_init(struct kg_rt *rt);
void kg_stacks_destroy(struct kg_rt *rt);
/*
 * A coroutine with a stack of size bytes: a freed one (p's cache, then the
 * global pool), else, with may_carve, a new one from a slab. NULL: out of
 * memory, or nothing freed and !may_carve.
 */
struct kg_co *kg_co_alloc(struct kg_rt *rt, struct kg_proc *p, size_t size,
			  bool may_carve);
void kg_co_free(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co);
void kg_procs_cache_drain(struct kg_rt *rt, struct kg_proc *p, uint32_t keep);
int kg_altstack_setup(struct kg_worker *w);
void kg_altstack_teardown(struct kg_worker *w);
int kg_segv_install(void);
void kg_segv_restore(void);
void kg_canary_check(struct kg_co *co);
uint64_t kg_stack_bytes(struct kg_rt *rt);
/* Call fn on every coroutine alive (quiescent callers only: reports). */
void kg_co_foreach(struct kg_rt *rt, void (*fn)(struct kg_co *, void *),
		   void *arg);
/* The name of co's entry function, or "?". */
const char *kg_co_entry_name(struct kg_co *co);

#endif /* KG_STACK_H */
