/* SPDX-License-Identifier: MIT */
/*
 * context.h - switching between coroutines, with the annotations the
 * sanitizers and valgrind need to follow a thread that changes stacks.
 *
 * kg_switch(from, to, w) saves from's registers on its stack and resumes
 * to, handing it the worker w. It returns in from, later, when some worker
 * switches back to it; the value returned is that worker, whose pending
 * post-switch action the scheduler then runs (kg_worker.after).
 */
#ifndef KG_CONTEXT_H
#define KG_CONTEXT_H

#include "rt.h"

#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define KG_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#define KG_TSAN 1
#include <sanitizer/tsan_interface.h>
#endif

void *kg_ctx_switch(void **save_sp, void *new_sp, void *arg);
void kg_ctx_entry(void);
/* A coroutine's first C function: it gets the worker that switched to it. */
typedef void (*kg_ctx_fn)(struct kg_worker *w);

/*
 * Build the frame kg_ctx_switch expects (arch/switch_*.S) at the top of
 * co's stack, below the struct kg_co that lives there, so the first
 * switch to co "returns" into kg_ctx_entry with default FP control state,
 * which calls entry (kept in a callee-saved register of the frame).
 */
static inline void kg_ctx_make(struct kg_co *co, void *top, kg_ctx_fn entry)
{
	uintptr_t sp = (uintptr_t)top & ~(uintptr_t)15;
	uint64_t *f;

#if defined(__x86_64__)
	/* after the 8 slots are popped rsp must be 16-byte aligned */
	sp -= 8 * sizeof(uint64_t);
	f = (uint64_t *)sp;
	f[0] = 0x1f80 | ((uint64_t)0x037f << 32);	/* default MXCSR, x87 CW */
	f[1] = f[2] = f[3] = f[4] = f[6] = 0;	/* r15..r12, rbp */
	f[5] = (uint64_t)(uintptr_t)entry;		/* rbx */
	f[7] = (uint64_t)(uintptr_t)kg_ctx_entry;
#elif defined(__aarch64__)
	sp -= 176;
	f = (uint64_t *)sp;
	for (int i = 0; i < 22; i++)
		f[i] = 0;			/* x19..x29, d8..d15, fpcr */
	f[0] = (uint64_t)(uintptr_t)entry;		/* x19 */
	f[11] = (uint64_t)(uintptr_t)kg_ctx_entry;	/* x30 */
#else
#error "kgreen: no context switch for this architecture"
#endif
	co->sp = f;
}

/* Sanitizer hooks around the raw switch. */
static inline void kg_san_before(struct kg_co *from, struct kg_co *to)
{
#ifdef KG_ASAN
	/* a dead coroutine never returns: NULL lets ASan drop its fake stack */
	__sanitizer_start_switch_fiber(
		atomic_load_explicit(&from->state, memory_order_relaxed) ==
				KG_CO_DEAD ? NULL : &from->asan_fake,
		to->stack.lo, (size_t)(to->stack.hi - to->stack.lo));
#endif
#ifdef KG_TSAN
	__tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
	(void)from;
	(void)to;
}

static inline void kg_san_after(struct kg_co *self)
{
#ifdef KG_ASAN
	__sanitizer_finish_switch_fiber(self ? self->asan_fake : NULL, NULL,
					NULL);
#endif
	(void)self;
}

static inline struct kg_worker *kg_switch(struct kg_co *from,
					  struct kg_co *to,
					  struct kg_worker *w)
{
	kg_san_before(from, to);
	w = kg_ctx_switch(&from->sp, to->sp, w);
	kg_san_after(from);
	return w;
}

#endif /* KG_CONTEXT_H */
