// SPDX-License-Identifier: MIT
/*
 * stack.c - coroutine stacks: carved from large slabs, pooled, guarded.
 *
 * A million coroutines must fit in one process. One mmap per stack plus an
 * mprotect'd guard page costs two VMAs per stack and hits vm.max_map_count
 * (65530 by default) near 32k stacks. So stacks are carved from slabs of
 * up to 256 MiB (one VMA each; MAP_NORESERVE, so only touched pages cost
 * memory), and each stack's guard region below it is installed as:
 *
 *   1. madvise(MADV_GUARD_INSTALL) (Linux 6.13+): the guard lives in the
 *      page tables, the VMA is not split, no limit;
 *   2. else mprotect(PROT_NONE), while the VMA budget derived from
 *      vm.max_map_count lasts (each guard splits the slab's VMA twice);
 *   3. else a canary word at the stack's low end, checked (with the saved
 *      stack pointer) at every switch
 *      away from the coroutine (after the fact, but loud).
 *
 * The struct kg_co lives at the top of its stack, so a parked coroutine
 * with shallow frames costs one page. Freed coroutines (stack included) go
 * to the freeing proc's cache (owner only, no lock), overflowing to a
 * global pool (an array per size class) under the allocator's lock.
 *
 * A guard hit raises SIGSEGV, handled on a per-worker alternate signal
 * stack: the handler reports "stack overflow" with the coroutine's id,
 * name, entry function and stack bounds, then aborts. Faults elsewhere go
 * to the handler that was installed before kg_run.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "context.h"
#include "stack.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define VALGRIND_STACK_REGISTER(lo, hi) 0
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif
#ifdef KG_ASAN
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define GUARD_SIZE ((size_t)64 * 1024)
#define SLAB_BYTES ((size_t)256 * 1024 * 1024)
#define SLAB_MAX_STACKS 1024
#define CLASS_MIN_SHIFT 14	/* 16 KiB */
#define NCLASSES 17		/* 16 KiB .. 1 GiB */
#define KG_CANARY 0x6b675f737461636bull	/* "kg_stack" */
#define ALTSTACK_SIZE ((size_t)64 * 1024)

struct kg_slab {
	struct kg_slab *next;
	char *base;
	size_t bytes;
	uint32_t nstacks, carved;
	uint32_t size_class;
};

struct kg_pool {
	struct kg_co **v;
	size_t n, cap;
};

struct kg_stack_alloc {
	pthread_mutex_t lock;		/* protects everything below */
	struct kg_slab *slabs;
	struct kg_slab *cur[NCLASSES];	/* slab being carved, per class */
	struct kg_pool pool[NCLASSES];	/* freed coroutines, per class */
	long mprotect_budget;		/* guards mprotect may still add */
	uint32_t dflt;			/* class of the default stack size */
	_Atomic uint64_t bytes;
};

static size_t class_size(uint32_t c)
{
	return (size_t)1 << (c + CLASS_MIN_SHIFT);
}

static uint32_t size_to_class(size_t size)
{
	uint32_t c = 0;

	while (class_size(c) < size && c < NCLASSES - 1)
		c++;
	return c;
}

static long read_max_map_count(void)
{
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	long v = 65530;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = 65530;
		fclose(f);
	}
	return v;
}

int kg_stacks_init(struct kg_rt *rt)
{
	struct kg_stack_alloc *a = calloc(1, sizeof(*a));
	long max;
	void *probe;

	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	max = read_max_map_count();
	/* keep 8192 maps for the program; each mprotect guard costs two */
	a->mprotect_budget = max > 8192 ? (max - 8192) / 2 : 0;
	a->dflt = size_to_class(rt->stack_size);
	rt->stacks = a;

	/* which guard mechanism does this kernel offer? */
	rt->guard_mode = KG_GUARD_CANARY;
	probe = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (probe == MAP_FAILED)
		return -ENOMEM;
	if (getenv("KGREEN_STACK_GUARD") &&
	    !strcmp(getenv("KGREEN_STACK_GUARD"), "mprotect"))
		rt->guard_mode = KG_GUARD_MPROTECT;
	else if (getenv("KGREEN_STACK_GUARD") &&
		 !strcmp(getenv("KGREEN_STACK_GUARD"), "canary"))
		rt->guard_mode = KG_GUARD_CANARY;
	else if (madvise(probe, 4096, MADV_GUARD_INSTALL) == 0)
		rt->guard_mode = KG_GUARD_MADVISE;
	else if (a->mprotect_budget > 0)
		rt->guard_mode = KG_GUARD_MPROTECT;
	munmap(probe, 2 * 4096);
	return 0;
}

static struct kg_co *slab_co(struct kg_slab *s, uint32_t i);

void kg_stacks_destroy(struct kg_rt *rt)
{
	struct kg_stack_alloc *a = rt->stacks;
	struct kg_slab *s, *n;
	uint32_t c;

	if (!a)
		return;
	for (c = 0; c < NCLASSES; c++) {
		size_t i;

		for (i = 0; i < a->pool[c].n; i++)
			VALGRIND_STACK_DEREGISTER(a->pool[c].v[i]->stack.vg_id);
		free(a->pool[c].v);
	}
	for (s = a->slabs; s; s = n) {
		n = s->next;
#ifdef KG_TSAN
		for (uint32_t i = 0; i < s->carved; i++) {
			struct kg_co *co = slab_co(s, i);

			if (co->tsan_fiber)
				__tsan_destroy_fiber(co->tsan_fiber);
		}
#endif
		munmap(s->base, s->bytes);
		free(s);
	}
	pthread_mutex_destroy(&a->lock);
	free(a);
	rt->stacks = NULL;
}

uint64_t kg_stack_bytes(struct kg_rt *rt)
{
	return atomic_load(&rt->stacks->bytes);
}

/* Install the guard below a fresh stack; returns the mode used. */
static uint32_t install_guard(struct kg_rt *rt, char *guard, char *lo)
{
	struct kg_stack_alloc *a = rt->stacks;

	if (rt->guard_mode == KG_GUARD_MADVISE &&
	    madvise(guard, GUARD_SIZE, MADV_GUARD_INSTALL) == 0)
		return KG_GUARD_MADVISE;
	if (rt->guard_mode != KG_GUARD_CANARY && a->mprotect_budget > 0 &&
	    mprotect(guard, GUARD_SIZE, PROT_NONE) == 0) {
		if (--a->mprotect_budget == 0 &&
		    rt->guard_mode == KG_GUARD_MPROTECT) {
			rt->guard_mode = KG_GUARD_CANARY;
			kg_debug("vm.max_map_count budget for guard pages used "
				 "up: new stacks use canaries");
		}
		return KG_GUARD_MPROTECT;
	}
	*(uint64_t *)lo = KG_CANARY;
	return KG_GUARD_CANARY;
}

/*
 * For debuggers (tools/gdb/kgreen-gdb.py): how slab_co below finds the
 * coroutine of each stack, read from the process or a core file without
 * running any of its code.
 */
__attribute__((used)) const struct {
	uint64_t guard_size;
	uint32_t class_min_shift;
	uint32_t cacheline;
	uint32_t co_size;
} kg_gdb_layout = { GUARD_SIZE, CLASS_MIN_SHIFT, KG_CACHELINE,
		    sizeof(struct kg_co) };

/* The coroutine at the top of stack i of slab s. */
static struct kg_co *slab_co(struct kg_slab *s, uint32_t i)
{
	size_t slot = GUARD_SIZE + class_size(s->size_class);
	uintptr_t hi = (uintptr_t)s->base + (size_t)i * slot + slot;

	return (struct kg_co *)((hi - sizeof(struct kg_co)) &
				~(uintptr_t)(KG_CACHELINE - 1));
}

void kg_co_foreach(struct kg_rt *rt, void (*fn)(struct kg_co *, void *),
		   void *arg)
{
	struct kg_stack_alloc *a = rt->stacks;
	struct kg_slab *s;
	uint32_t i;

	pthread_mutex_lock(&a->lock);
	for (s = a->slabs; s; s = s->next) {
		for (i = 0; i < s->carved; i++) {
			struct kg_co *co = slab_co(s, i);
			uint32_t st = atomic_load_explicit(&co->state,
							   memory_order_acquire);

			if (co->id && st != KG_CO_DEAD)
				fn(co, arg);
		}
	}
	pthread_mutex_unlock(&a->lock);
}

/* Carve a new stack of class c; caller holds a->lock. */
static struct kg_co *__carve(struct kg_rt *rt, uint32_t c)
{
	struct kg_stack_alloc *a = rt->stacks;
	struct kg_slab *s = a->cur[c];
	size_t slot = GUARD_SIZE + class_size(c);
	char *guard, *lo, *hi;
	struct kg_co *co;

	if (!s || s->carved == s->nstacks) {
		uint32_t n = (uint32_t)(SLAB_BYTES / slot);

		if (n > SLAB_MAX_STACKS)
			n = SLAB_MAX_STACKS;
		if (n < 1)
			n = 1;
		s = calloc(1, sizeof(*s));
		if (!s)
			return NULL;
		s->bytes = (size_t)n * slot;
		s->base = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);
		if (s->base == MAP_FAILED) {
			free(s);
			return NULL;
		}
		/*
		 * A coroutine touches a page or two of its stack. Kernels
		 * with transparent huge pages "always" (Debian's 6.1) would
		 * back each touch with 2 MiB: 10,000 parked coroutines took
		 * 890 MB there. Best effort: without THP this fails harmlessly.
		 */
		madvise(s->base, s->bytes, MADV_NOHUGEPAGE);
		s->nstacks = n;
		s->size_class = c;
		s->next = a->slabs;
		a->slabs = s;
		a->cur[c] = s;
		atomic_fetch_add(&a->bytes, s->bytes);
	}
	guard = s->base + (size_t)s->carved * slot;
	lo = guard + GUARD_SIZE;
	hi = lo + class_size(c);
	co = slab_co(s, s->carved++);
	memset(co, 0, sizeof(*co));
	co->stack.lo = lo;
	co->stack.hi = (char *)co;
	co->stack.size_class = c;
	co->stack.guard = install_guard(rt, guard, lo);
	co->stack.vg_id = VALGRIND_STACK_REGISTER(lo, hi);
	co->timer.heap_idx = -1;
	co->rt = rt;
	return co;
}

/*
 * The global pool of freed coroutines: per size class, an array used as a
 * stack (caller holds a->lock). Arrays, not lists threaded through the
 * coroutines, so that moving a batch touches no coroutine memory.
 */
static int __pool_push(struct kg_stack_alloc *a, uint32_t c, struct kg_co *co)
{
	struct kg_pool *pl = &a->pool[c];

	if (pl->n == pl->cap) {
		size_t cap = pl->cap ? pl->cap * 2 : 1024;
		struct kg_co **v = realloc(pl->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		pl->v = v;
		pl->cap = cap;
	}
	pl->v[pl->n++] = co;
	return 0;
}

static struct kg_co *__pool_pop(struct kg_stack_alloc *a, uint32_t c)
{
	struct kg_pool *pl = &a->pool[c];

	return pl->n ? pl->v[--pl->n] : NULL;
}

/* Refill p's cache from the global pool: one lock for a batch. */
static void cache_refill(struct kg_stack_alloc *a, struct kg_proc *p)
{
	struct kg_pool *pl = &a->pool[a->dflt];
	size_t n;

	pthread_mutex_lock(&a->lock);
	n = pl->n < KG_PROC_CACHE / 2 ? pl->n : KG_PROC_CACHE / 2;
	if (n)	/* an empty pool may have no array yet: no memcpy from NULL */
		memcpy(p->free_cos, pl->v + pl->n - n, n * sizeof(*pl->v));
	pl->n -= n;
	pthread_mutex_unlock(&a->lock);
	p->nfree_cos = (uint32_t)n;
}

struct kg_co *kg_co_alloc(struct kg_rt *rt, struct kg_proc *p, size_t size,
			  bool may_carve)
{
	struct kg_stack_alloc *a = rt->stacks;
	uint32_t c = size == rt->stack_size ? a->dflt : size_to_class(size);
	struct kg_co *co = NULL;

	if (p && c == a->dflt) {
		if (!p->nfree_cos)
			cache_refill(a, p);
		if (p->nfree_cos) {
			co = p->free_cos[--p->nfree_cos];
			/*
			 * The next ones are likely cold (freed long ago, one
			 * page each): start the TLB and cache fill of the
			 * lines spawn writes 4 spawns ahead, to overlap.
			 */
			if (p->nfree_cos >= 4)
				kg_co_prefetch(p->free_cos[p->nfree_cos - 4], 1);
		}
	}
	if (!co) {
		pthread_mutex_lock(&a->lock);
		co = __pool_pop(a, c);
		if (!co && may_carve)
			co = __carve(rt, c);
		pthread_mutex_unlock(&a->lock);
		if (!co)
			return NULL;
	}
	/*
	 * Only the first line of co is written here and in spawn (timer.heap_idx
	 * is -1 from __carve on: timers reset it when they fire).
	 */
	co->next = NULL;
	atomic_store_explicit(&co->state, KG_CO_RUNNABLE, memory_order_relaxed);
#ifdef KG_ASAN
	co->asan_fake = NULL;
	/* frames of the previous owner that never returned left poison */
	ASAN_UNPOISON_MEMORY_REGION(co->stack.lo,
				    (size_t)(co->stack.hi - co->stack.lo));
#endif
#ifdef KG_TSAN
	/*
	 * A ThreadSanitizer fiber lives as long as its stack: creating one
	 * clears most of a megabyte of TSan state, which made a spawn-heavy
	 * suite spend minutes there. The next owner inherits the previous
	 * one's clock, an edge the scheduler's free-then-alloc has anyway.
	 */
	if (!co->tsan_fiber)
		co->tsan_fiber = __tsan_create_fiber(0);
#endif
	return co;
}

void kg_co_free(struct kg_rt *rt, struct kg_proc *p, struct kg_co *co)
{
	struct kg_stack_alloc *a = rt->stacks;
	uint32_t c = co->stack.size_class;

	/* a ThreadSanitizer fiber stays with the stack (kg_co_alloc) */
	if (p && c == a->dflt) {
		if (p->nfree_cos == KG_PROC_CACHE)
			kg_procs_cache_drain(rt, p, KG_PROC_CACHE / 2);
		if (p->nfree_cos < KG_PROC_CACHE) {
			p->free_cos[p->nfree_cos++] = co;
			return;
		}
	}
	pthread_mutex_lock(&a->lock);
	if (__pool_push(a, c, co))
		kg_debug("no memory to pool a freed stack: it is lost");
	pthread_mutex_unlock(&a->lock);
}

/* Move p's cached coroutines down to keep of them to the global pool. */
void kg_procs_cache_drain(struct kg_rt *rt, struct kg_proc *p, uint32_t keep)
{
	struct kg_stack_alloc *a = rt->stacks;

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	while (p->nfree_cos > keep &&
	       !__pool_push(a, a->dflt, p->free_cos[p->nfree_cos - 1]))
		p->nfree_cos--;
	pthread_mutex_unlock(&a->lock);
}

/* ------------------------------------------------------------------ */
/* Overflow reports                                                    */
/* ------------------------------------------------------------------ */

static struct sigaction old_segv, old_bus;
static _Atomic int segv_installed;

const char *kg_co_entry_name(struct kg_co *co)
{
	Dl_info info;

	if (dladdr((void *)(uintptr_t)co->fn, &info) && info.dli_sname)
		return info.dli_sname;
	return "?";
}

static void report_overflow(struct kg_co *co, const void *addr)
{
	char buf[512];
	const char *fname = kg_co_entry_name(co);
	int n;

	n = snprintf(buf, sizeof(buf),
		     "kgreen: stack overflow in coroutine %ld \"%s\" "
		     "(entry %s at %p): fault at %p, stack [%p, %p), "
		     "guard [%p, %p)\n",
		     co->id, co->named ? co->name : "", fname,
		     (void *)(uintptr_t)co->fn, addr, (void *)co->stack.lo,
		     (void *)co->stack.hi, (void *)(co->stack.lo - GUARD_SIZE),
		     (void *)co->stack.lo);
	if (n > 0 && kg_sys_write(STDERR_FILENO, buf, (size_t)n) < 0)
		n = 0;
}

void kg_canary_check(struct kg_co *co)
{
	if (co->stack.guard != KG_GUARD_CANARY || !co->id ||
	    co->state == KG_CO_DEAD)
		return;
	/* frames may jump over the canary: the saved sp tells too */
	if (*(volatile uint64_t *)co->stack.lo != KG_CANARY ||
	    (char *)co->sp < co->stack.lo) {
		report_overflow(co, co->stack.lo);
		abort();
	}
}

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	struct kg_worker *w = kg_worker_self();
	struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
	char *addr = si->si_addr;

	if (w && w->cur && w->cur != &w->g0) {
		struct kg_co *co = w->cur;

		if (addr >= co->stack.lo - GUARD_SIZE && addr < co->stack.lo) {
			report_overflow(co, addr);
			signal(SIGABRT, SIG_DFL);
			abort();
		}
	}
	/* not ours: hand the fault to whoever handled it before */
	if (old->sa_flags & SA_SIGINFO) {
		if (old->sa_sigaction) {
			old->sa_sigaction(sig, si, uc);
			return;
		}
	} else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
		return;
	}
	/* default action: reinstall it and let the fault happen again */
	signal(sig, SIG_DFL);
}

int kg_segv_install(void)
{
	struct sigaction sa;

	if (atomic_exchange(&segv_installed, 1))
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &old_segv) ||
	    sigaction(SIGBUS, &sa, &old_bus)) {
		atomic_store(&segv_installed, 0);
		return -errno;
	}
	return 0;
}

void kg_segv_restore(void)
{
	if (!atomic_exchange(&segv_installed, 0))
		return;
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
}

int kg_altstack_setup(struct kg_worker *w)
{
	stack_t ss;

	w->altstack = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->altstack == MAP_FAILED) {
		w->altstack = NULL;
		return -ENOMEM;
	}
	ss.ss_sp = w->altstack;
	ss.ss_size = ALTSTACK_SIZE;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, &w->old_altstack)) {
		munmap(w->altstack, ALTSTACK_SIZE);
		w->altstack = NULL;
		return -errno;
	}
	return 0;
}

void kg_altstack_teardown(struct kg_worker *w)
{
	stack_t ss = { .ss_flags = SS_DISABLE };

	if (!w->altstack)
		return;
	if (!(w->old_altstack.ss_flags & SS_DISABLE) && w->old_altstack.ss_sp)
		ss = w->old_altstack;
	sigaltstack(&ss, NULL);
	munmap(w->altstack, ALTSTACK_SIZE);
	w->altstack = NULL;
}
