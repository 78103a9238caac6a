// SPDX-License-Identifier: MIT
/*
 * cancel.c - contexts: cancellation and deadlines for requests, as Go's
 * context package (kg_context_*).
 *
 * A context has a done channel, closed once when it is cancelled, an
 * error (0, then -ECANCELED or -ETIMEDOUT), an optional deadline, a
 * parent and children. Cancelling one cancels its whole subtree. Waits
 * that honour a context (kg_fd_wait_context) register a hook that the
 * cancellation runs.
 *
 * Memory, without a garbage collector: a context is reference counted.
 * The user holds one reference (dropped by kg_context_free, which also
 * cancels, Go's "defer cancel()"); a child and its parent hold one on each
 * other while the child is linked (dropped by whichever of the two unlinks
 * it: the child's own cancellation or the parent's); an armed deadline
 * timer holds one (dropped when it is disarmed, or by the coroutine its
 * firing starts).
 *
 * Locks: each context's lock protects its error, hooks, children list and
 * parent pointer. Order: parent before child is never needed (nobody
 * holds two context locks at once); a context's lock may be held while
 * a hook takes a descriptor's lock (fd.c), never the reverse. The done
 * channel is closed with no context lock held.
 *
 * The deadline: a timer on the creating proc's heap. Its callback runs in
 * scheduler mode under the heap's lock, where cancelling (which disarms
 * the timers of a whole subtree, on any heap) could deadlock; so, as Go's
 * time.AfterFunc does, it starts a coroutine that cancels.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "fd.h"
#include "sched.h"
#include "timer.h"

struct kg_cancel_hook {
	struct kg_cancel_hook *next;
	void (*fn)(struct kg_cancel_hook *h, int err);
};

struct kg_context {
	kg_lock_t lock;
	_Atomic uint32_t refs;
	_Atomic int err;		/* written once, under lock */
	uint64_t deadline;		/* UINT64_MAX: none */
	kg_chan_t *done;		/* NULL: background */
	struct kg_context *parent;	/* lock; a reference while set */
	struct kg_context *kids;	/* lock; a reference on each */
	struct kg_context *sib_prev, *sib_next;	/* parent's lock */
	bool linked;			/* on parent's kids (parent's lock) */
	struct kg_cancel_hook *hooks;	/* lock */
	struct kg_timer timer;		/* the deadline, armed: a reference */
	/* the timer fired and handed its reference to deadline_co (set
	 * under the heap's lock, so kg_timer_cancel's caller sees it) */
	_Atomic bool fired;
	struct kg_rt *rt;
};

static struct kg_context background = {
	.deadline = UINT64_MAX,
};

kg_context_t *kg_context_background(void)
{
	return &background;
}

static void ctx_get(struct kg_context *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static void ctx_put(struct kg_context *c)
{
	/* acq_rel: the last one sees every other holder's writes */
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	kg_chan_free(c->done);
	free(c);
}

/* Take c off its parent's list and drop the two links' references. */
static void unlink_from_parent(struct kg_context *c)
{
	struct kg_context *p;
	bool was_linked = false;

	kg_lock(&c->lock);
	p = c->parent;
	c->parent = NULL;
	kg_unlock(&c->lock);
	if (!p)
		return;		/* the parent's cancellation unlinked it */
	kg_lock(&p->lock);
	if (c->linked) {
		if (c->sib_prev)
			c->sib_prev->sib_next = c->sib_next;
		else
			p->kids = c->sib_next;
		if (c->sib_next)
			c->sib_next->sib_prev = c->sib_prev;
		c->linked = false;
		was_linked = true;
	}
	kg_unlock(&p->lock);
	if (was_linked)
		ctx_put(c);	/* the parent's reference on c */
	ctx_put(p);		/* c's reference on its parent */
}

static void cancel(struct kg_context *c, int err, bool remove)
{
	struct kg_cancel_hook *h;
	struct kg_context *kids, *k, *next;

	kg_lock(&c->lock);
	if (atomic_load_explicit(&c->err, memory_order_relaxed)) {
		kg_unlock(&c->lock);
		if (remove)
			unlink_from_parent(c);
		return;
	}
	atomic_store_explicit(&c->err, err, memory_order_release);
	/* under the lock: a waiter taking its hook back waits for this */
	for (h = c->hooks; h; h = h->next)
		h->fn(h, err);
	c->hooks = NULL;
	kids = c->kids;
	c->kids = NULL;
	for (k = kids; k; k = k->sib_next)
		k->linked = false;
	kg_unlock(&c->lock);

	kg_chan_close(c->done);
	/*
	 * The timer's reference: ours if we disarmed it, or if it was armed
	 * but neither fired nor is armed any more: the runtime ended and
	 * orphaned it (kg_timer_cancel waits out a running callback, which
	 * sets fired first, so false and !fired mean exactly that).
	 */
	if (kg_timer_cancel(&c->timer) ||
	    (c->timer.fn && !atomic_load(&c->fired)))
		ctx_put(c);
	for (k = kids; k; k = next) {
		bool mine;

		next = k->sib_next;
		cancel(k, err, false);
		kg_lock(&k->lock);
		mine = k->parent == c;
		if (mine)
			k->parent = NULL;
		kg_unlock(&k->lock);
		if (mine)
			ctx_put(c);	/* k's reference on c */
		ctx_put(k);		/* c's list's reference on k */
	}
	if (remove)
		unlink_from_parent(c);
}

/* The deadline passed: cancel from a coroutine of its own (see above). */
static void deadline_co(void *arg)
{
	struct kg_context *c = arg;

	cancel(c, -ETIMEDOUT, true);
	ctx_put(c);		/* the timer's reference */
}

static uint64_t deadline_fire(struct kg_worker *w, struct kg_timer *t)
{
	struct kg_context *c = t->arg;

	if (kg_spawn_sched(w, deadline_co, c) < 0)
		return kg_deadline(kg_now_ns(), 1000000);	/* retry in 1 ms */
	atomic_store(&c->fired, true);
	return 0;
}

static struct kg_context *ctx_new(struct kg_context *parent)
{
	struct kg_context *c;

	if (!parent) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->done = kg_chan_make(0, 0);
	if (!c->done) {
		free(c);
		goto nomem;
	}
	atomic_store_explicit(&c->refs, 1, memory_order_relaxed);
	c->deadline = parent->deadline;
	c->timer.heap_idx = -1;
	return c;
nomem:
	errno = ENOMEM;
	return NULL;
}

/* Link c under parent, or cancel it at once if parent already is. */
static void link_to(struct kg_context *parent, struct kg_context *c)
{
	int err;

	if (parent == &background)
		return;
	kg_lock(&parent->lock);
	err = atomic_load_explicit(&parent->err, memory_order_relaxed);
	if (!err) {
		ctx_get(parent);
		ctx_get(c);
		c->parent = parent;
		c->sib_prev = NULL;
		c->sib_next = parent->kids;
		if (parent->kids)
			parent->kids->sib_prev = c;
		parent->kids = c;
		c->linked = true;
	}
	kg_unlock(&parent->lock);
	if (err)
		cancel(c, err, false);
}

kg_context_t *kg_context_with_cancel(kg_context_t *parent)
{
	struct kg_context *c = ctx_new(parent);

	if (c)
		link_to(parent, c);
	return c;
}

kg_context_t *kg_context_with_deadline(kg_context_t *parent,
				       uint64_t deadline_ns)
{
	struct kg_context *c;
	struct kg_rt *rt;
	int err;

	if (parent && parent->deadline <= deadline_ns)
		return kg_context_with_cancel(parent);	/* Go does the same */
	rt = kg_rt_current();
	if (parent && !rt) {
		errno = EPERM;
		return NULL;
	}
	c = ctx_new(parent);
	if (!c)
		return NULL;
	c->deadline = deadline_ns;
	c->rt = rt;
	link_to(parent, c);
	if (deadline_ns <= kg_now_ns()) {
		cancel(c, -ETIMEDOUT, false);
		return c;
	}
	c->timer.fn = deadline_fire;
	c->timer.arg = c;
	ctx_get(c);		/* the timer's */
	err = kg_timer_start(rt, &c->timer, deadline_ns);
	if (err) {
		c->timer.fn = NULL;	/* never armed: no timer reference */
		ctx_put(c);
		cancel(c, -ETIMEDOUT, true);	/* cannot keep the time */
		kg_context_free(c);
		errno = -err;
		return NULL;
	}
	return c;
}

kg_context_t *kg_context_with_timeout(kg_context_t *parent, uint64_t ns)
{
	return kg_context_with_deadline(parent, kg_deadline(kg_now_ns(), ns));
}

void kg_context_cancel(kg_context_t *c)
{
	if (c && c != &background)
		cancel(c, -ECANCELED, true);
}

void kg_context_free(kg_context_t *c)
{
	if (!c || c == &background)
		return;
	cancel(c, -ECANCELED, true);
	ctx_put(c);		/* the user's */
}

int kg_context_err(kg_context_t *c)
{
	/* acquire: pairs with cancel's release store */
	return c ? atomic_load_explicit(&c->err, memory_order_acquire)
		 : -EINVAL;
}

kg_chan_t *kg_context_done(kg_context_t *c)
{
	return c ? c->done : NULL;
}

uint64_t kg_context_deadline(kg_context_t *c)
{
	return c ? c->deadline : UINT64_MAX;
}

/* ------------------------------------------------------------------ */
/* A descriptor wait that a context cancels                            */
/* ------------------------------------------------------------------ */

struct fd_ctx_hook {
	struct kg_fdhook fh;		/* what fd.c calls */
	struct kg_cancel_hook ch;	/* what cancel() calls */
	struct kg_context *c;
	struct kg_fdwaiter *fw;
	bool hooked;
};

static void fd_ctx_cancelled(struct kg_cancel_hook *h, int err)
{
	struct fd_ctx_hook *x = (struct fd_ctx_hook *)
		((char *)h - offsetof(struct fd_ctx_hook, ch));

	x->hooked = false;	/* the list is being dropped */
	kg_fd_cancel(x->fw, err);
}

static void fd_ctx_armed(struct kg_fdhook *h, struct kg_fdwaiter *fw)
{
	struct fd_ctx_hook *x = (struct fd_ctx_hook *)h;
	struct kg_context *c = x->c;
	int err;

	x->fw = fw;
	kg_lock(&c->lock);
	err = atomic_load_explicit(&c->err, memory_order_relaxed);
	if (!err) {
		x->ch.fn = fd_ctx_cancelled;
		x->ch.next = c->hooks;
		c->hooks = &x->ch;
		x->hooked = true;
	}
	kg_unlock(&c->lock);
	if (err)
		kg_fd_cancel(fw, err);
}

static void fd_ctx_done(struct kg_fdhook *h)
{
	struct fd_ctx_hook *x = (struct fd_ctx_hook *)h;
	struct kg_context *c = x->c;
	struct kg_cancel_hook **pp;

	/* under the lock: a cancellation running our hook is waited out */
	kg_lock(&c->lock);
	if (x->hooked) {
		for (pp = &c->hooks; *pp != &x->ch; pp = &(*pp)->next)
			;
		*pp = x->ch.next;
		x->hooked = false;
	}
	kg_unlock(&c->lock);
}

static int fd_ctx_check(struct kg_fdhook *h)
{
	return kg_context_err(((struct fd_ctx_hook *)h)->c);
}

int kg_fd_wait_context(int fd, int events, kg_context_t *c)
{
	struct fd_ctx_hook x = {
		.fh = { fd_ctx_armed, fd_ctx_done, fd_ctx_check },
		.c = c,
	};
	int err;

	if (!c)
		return -EINVAL;
	err = kg_context_err(c);
	if (err)
		return err;
	if (c == &background)
		return kg_fd_wait_until(fd, events, UINT64_MAX, NULL);
	return kg_fd_wait_until(fd, events, c->deadline, &x.fh);
}
