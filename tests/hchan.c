// SPDX-License-Identifier: MIT
/*
 * hchan.c - the oracle channel: Go's hchan design (a lock, a ring buffer,
 * two wait queues), kept as the model the lock-free channel (chan.c) is
 * tested against and measured beside. Same semantics, same errors; its
 * functions are kg_hchan_*, see hchan.h. It lives with the tests, not in
 * libkgreen: the suites and benchmarks that use it compile it in, built on
 * libkgreen's internal parkers and locks (userlib/wait.h, base.h), which
 * a static link resolves.
 *
 * A channel is a lock, a ring buffer of cap elements, and two FIFO queues
 * of waiting operations (sudogs): receivers waiting for a value and
 * senders waiting for room or a partner. Go's invariants hold here:
 *  - at least one of sendq and recvq is empty (apart from sudogs of
 *    operations already claimed elsewhere, which are skipped);
 *  - for a buffered channel: qcount > 0 implies recvq empty; qcount < cap
 *    implies sendq empty;
 *  - closed is set once, under the lock; after it both queues stay empty.
 *
 * An operation first tries to complete at once, under the lock: hand its
 * value straight to a waiting partner (no buffer round trip), else use the
 * buffer, else (blocking) queue a sudog and park. A sudog belongs to a
 * parker (wait.c); a party that dequeues it must win the parker's claim
 * CAS to complete it, so a select parked on many channels completes
 * exactly one case, and a timed-out wait completes none.
 *
 * select (Go's selectgo): lock every channel involved in address order
 * (deadlock-free, each lock once), poll the cases in a random order (the
 * uniform choice among ready cases), and if none is ready queue one sudog
 * per case and park; the post-switch commit unlocks them all. When
 * resumed, lock them all again and take the sudogs that were not taken.
 *
 * Locks: chan.lock protects everything in the channel except qcount's
 * lock-free reads (kg_hchan_len). It is never held across a switch except
 * through the park commit. Lock order: timer heap -> channel -> rt.lock;
 * channels among themselves by address.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wait.h"
#include "hchan.h"

struct kg_sudog {
	struct kg_sudog *next, *prev;	/* chan.lock (the queue it is on) */
	struct kg_parker *pk;
	void *elem;			/* value to send / where to receive */
	uint32_t idx;			/* case index; claims as idx + 1 */
	bool queued;			/* on a queue (chan.lock) */
	bool success;			/* set by the claimer: value moved */
};

struct sudog_q {
	struct kg_sudog *head, *tail;
};

struct kg_hchan {
	kg_lock_t lock;
	bool closed;
	size_t elem_size;
	size_t cap;
	_Atomic size_t qcount;		/* written under lock; read lock-free */
	size_t sendx, recvx;		/* ring indices */
	struct sudog_q recvq, sendq;
	char *buf;			/* cap * elem_size bytes */
};

/* ------------------------------------------------------------------ */
/* Wait queues (caller holds chan.lock)                                 */
/* ------------------------------------------------------------------ */

static void __enqueue(struct sudog_q *q, struct kg_sudog *sg)
{
	sg->next = NULL;
	sg->prev = q->tail;
	if (q->tail)
		q->tail->next = sg;
	else
		q->head = sg;
	q->tail = sg;
	sg->queued = true;
}

static void __remove(struct sudog_q *q, struct kg_sudog *sg)
{
	if (sg->prev)
		sg->prev->next = sg->next;
	else
		q->head = sg->next;
	if (sg->next)
		sg->next->prev = sg->prev;
	else
		q->tail = sg->prev;
	sg->next = sg->prev = NULL;
	sg->queued = false;
}

/*
 * First waiter whose operation we win. Sudogs of operations already
 * claimed (a select completed elsewhere, a timeout) are dropped: their
 * owners find them unqueued when they clean up.
 */
static struct kg_sudog *__dequeue(struct sudog_q *q)
{
	struct kg_sudog *sg;

	while ((sg = q->head)) {
		__remove(q, sg);
		if (kg_parker_claim(sg->pk, sg->idx + 1))
			return sg;
	}
	return NULL;
}

static inline void copy_elem(void *dst, const void *src, size_t n)
{
	if (n && dst)
		memcpy(dst, src, n);
}

static inline char *slot(kg_hchan_t *c, size_t i)
{
	return c->buf + i * c->elem_size;
}

/* ------------------------------------------------------------------ */
/* The immediate paths, shared by the plain operations and select       */
/* (caller holds chan.lock; *wake gets the partner to wake after unlock) */
/* ------------------------------------------------------------------ */

/* Try to send now: 1 sent, 0 would block, -EPIPE closed. */
static int __try_send(kg_hchan_t *c, const void *elem, struct kg_sudog **wake)
{
	struct kg_sudog *sg;
	size_t q;

	if (c->closed)
		return -EPIPE;
	sg = __dequeue(&c->recvq);
	if (sg) {
		/* a receiver waits: the buffer is empty, hand it over */
		copy_elem(sg->elem, elem, c->elem_size);
		sg->success = true;
		*wake = sg;
		return 1;
	}
	q = kg_load_relaxed(&c->qcount);
	if (q < c->cap) {
		copy_elem(slot(c, c->sendx), elem, c->elem_size);
		if (++c->sendx == c->cap)
			c->sendx = 0;
		kg_store_relaxed(&c->qcount, q + 1);
		return 1;
	}
	return 0;
}

/* Try to receive now: 1 received, 0 would block, -EPIPE closed+drained. */
static int __try_recv(kg_hchan_t *c, void *out, struct kg_sudog **wake)
{
	struct kg_sudog *sg;
	size_t q;

	sg = __dequeue(&c->sendq);
	if (sg) {
		if (c->cap == 0) {
			copy_elem(out, sg->elem, c->elem_size);
		} else {
			/*
			 * The buffer is full (a sender waits): take its head
			 * and put the sender's value at its tail, which is the
			 * same slot; FIFO order is kept.
			 */
			copy_elem(out, slot(c, c->recvx), c->elem_size);
			copy_elem(slot(c, c->recvx), sg->elem, c->elem_size);
			if (++c->recvx == c->cap)
				c->recvx = 0;
			c->sendx = c->recvx;
		}
		sg->success = true;
		*wake = sg;
		return 1;
	}
	q = kg_load_relaxed(&c->qcount);
	if (q > 0) {
		copy_elem(out, slot(c, c->recvx), c->elem_size);
		if (++c->recvx == c->cap)
			c->recvx = 0;
		kg_store_relaxed(&c->qcount, q - 1);
		return 1;
	}
	if (c->closed)
		return -EPIPE;
	return 0;
}

static void unlock_one(void *arg)
{
	kg_unlock(&((kg_hchan_t *)arg)->lock);
}

/* ------------------------------------------------------------------ */
/* Send and receive                                                    */
/* ------------------------------------------------------------------ */

enum { OP_SEND, OP_RECV };

/*
 * One send or receive. deadline: UINT64_MAX waits forever, 0 never waits
 * (try_), else the absolute kg_now_ns() limit. w: the calling worker when
 * in scheduler mode (timer callbacks), else NULL.
 */
static int chan_op(kg_hchan_t *c, int op, void *elem, uint64_t deadline,
		   struct kg_worker *w)
{
	struct kg_sudog *wake = NULL, sg;
	struct kg_parker pk;
	bool armed = false;
	int r;

	for (;;) {
		kg_lock(&c->lock);
		r = op == OP_SEND ? __try_send(c, elem, &wake) :
				    __try_recv(c, elem, &wake);
		if (r)
			break;
		if (deadline == 0) {
			r = -EAGAIN;
			break;
		}
		if (armed || deadline == UINT64_MAX)
			goto block;
		if (kg_now_ns() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		/* a coroutine's timeout is armed before the lock is taken */
		kg_unlock(&c->lock);
		kg_parker_init(&pk);
		if (!pk.co)
			goto block_locked;
		r = kg_parker_arm(&pk, deadline);
		if (r)
			return r;
		armed = true;
	}
	kg_unlock(&c->lock);
	if (armed)
		kg_parker_done(&pk);
	if (wake)
		kg_parker_wake(w, wake->pk);
	return r < 0 ? r : 0;

block_locked:
	kg_lock(&c->lock);
	r = op == OP_SEND ? __try_send(c, elem, &wake) :
			    __try_recv(c, elem, &wake);
	if (r) {
		kg_unlock(&c->lock);
		if (wake)
			kg_parker_wake(w, wake->pk);
		return r < 0 ? r : 0;
	}
	goto park;
block:
	if (!armed)
		kg_parker_init(&pk);
park:
	sg.pk = &pk;
	sg.elem = elem;
	sg.idx = 0;
	sg.success = false;
	__enqueue(op == OP_SEND ? &c->sendq : &c->recvq, &sg);
	kg_co_waiting(pk.co, op == OP_SEND ? "chan send" : "chan recv", c);
	kg_parker_wait(&pk, unlock_one, c, deadline);
	if (atomic_load_explicit(&pk.claim, memory_order_acquire) ==
	    KG_CLAIM_TIMEOUT) {
		kg_lock(&c->lock);
		if (sg.queued)
			__remove(op == OP_SEND ? &c->sendq : &c->recvq, &sg);
		kg_unlock(&c->lock);
		return -ETIMEDOUT;
	}
	/* claimed by a partner (moved the value) or by close (did not) */
	return sg.success ? 0 : -EPIPE;
}

static inline int check_send(kg_hchan_t *c, const void *elem)
{
	if (!c || (!elem && c->elem_size))
		return -EINVAL;
	return 0;
}

int kg_hchan_send(kg_hchan_t *c, const void *elem)
{
	int r = check_send(c, elem);

	return r ? r : chan_op(c, OP_SEND, (void *)elem, UINT64_MAX, NULL);
}

int kg_hchan_try_send(kg_hchan_t *c, const void *elem)
{
	int r = check_send(c, elem);

	return r ? r : chan_op(c, OP_SEND, (void *)elem, 0, NULL);
}

int kg_hchan_send_timeout(kg_hchan_t *c, const void *elem, uint64_t ns)
{
	int r = check_send(c, elem);

	if (r)
		return r;
	return chan_op(c, OP_SEND, (void *)elem,
		       ns ? kg_deadline(kg_now_ns(), ns) : 0, NULL);
}

int kg_hchan_recv(kg_hchan_t *c, void *out)
{
	return c ? chan_op(c, OP_RECV, out, UINT64_MAX, NULL) : -EINVAL;
}

int kg_hchan_try_recv(kg_hchan_t *c, void *out)
{
	return c ? chan_op(c, OP_RECV, out, 0, NULL) : -EINVAL;
}

int kg_hchan_recv_timeout(kg_hchan_t *c, void *out, uint64_t ns)
{
	if (!c)
		return -EINVAL;
	return chan_op(c, OP_RECV, out, ns ? kg_deadline(kg_now_ns(), ns) : 0,
		       NULL);
}

int kg_hchan_close(kg_hchan_t *c)
{
	struct kg_sudog *list = NULL, **tail = &list, *sg;

	if (!c)
		return -EINVAL;
	kg_lock(&c->lock);
	if (c->closed) {
		kg_unlock(&c->lock);
		return -EPIPE;
	}
	c->closed = true;
	/* every waiter fails: receivers see closed, senders -EPIPE */
	while ((sg = __dequeue(&c->recvq)) || (sg = __dequeue(&c->sendq))) {
		sg->success = false;
		/* wake in arrival order (FIFO), as the lock-free channel does */
		sg->next = NULL;
		*tail = sg;
		tail = &sg->next;
	}
	kg_unlock(&c->lock);
	while ((sg = list)) {
		list = sg->next;	/* sg may vanish once woken */
		kg_parker_wake(NULL, sg->pk);
	}
	return 0;
}

size_t kg_hchan_len(kg_hchan_t *c)
{
	return c ? kg_load_relaxed(&c->qcount) : 0;
}

size_t kg_hchan_cap(kg_hchan_t *c)
{
	return c ? c->cap : 0;
}

size_t kg_hchan_elem_size(kg_hchan_t *c)
{
	return c ? c->elem_size : 0;
}

kg_hchan_t *kg_hchan_make(size_t elem_size, size_t capacity)
{
	kg_hchan_t *c;
	size_t bytes;

	if (elem_size > KG_CHAN_ELEM_MAX ||
	    __builtin_mul_overflow(elem_size, capacity, &bytes) ||
	    bytes > ((size_t)1 << 48)) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	if (bytes) {
		c->buf = malloc(bytes);
		if (!c->buf) {
			free(c);
			errno = ENOMEM;
			return NULL;
		}
	}
	c->elem_size = elem_size;
	c->cap = capacity;
	return c;
}

void kg_hchan_free(kg_hchan_t *c)
{
	if (!c)
		return;
	kg_lock(&c->lock);
	if (c->recvq.head || c->sendq.head) {
		kg_unlock(&c->lock);
		/* freeing would leave them waiting on freed memory */
		fprintf(stderr, "kgreen: kg_hchan_free: operations still wait "
				"on channel %p; it is not freed\n", (void *)c);
		return;
	}
	kg_unlock(&c->lock);
	free(c->buf);
	free(c);
}

/* ------------------------------------------------------------------ */
/* Select                                                              */
/* ------------------------------------------------------------------ */

#define SELECT_STACK_CASES 8

struct select_ctx {
	struct kg_hcase *cases;
	uint32_t *lockorder;		/* active case indices by channel */
	uint32_t nactive;
};

static void select_lock(struct select_ctx *s)
{
	kg_hchan_t *prev = NULL;
	uint32_t i;

	for (i = 0; i < s->nactive; i++) {
		kg_hchan_t *c = s->cases[s->lockorder[i]].ch;

		if (c != prev)
			kg_lock(&c->lock);
		prev = c;
	}
}

static void select_unlock(void *arg)
{
	struct select_ctx *s = arg;
	kg_hchan_t *prev = NULL;
	uint32_t i;

	for (i = 0; i < s->nactive; i++) {
		kg_hchan_t *c = s->cases[s->lockorder[i]].ch;

		if (c != prev)
			kg_unlock(&c->lock);
		prev = c;
	}
}

static int by_chan(const void *a, const void *b, void *cases)
{
	uintptr_t x = (uintptr_t)((struct kg_hcase *)cases)[*(const uint32_t *)a].ch;
	uintptr_t y = (uintptr_t)((struct kg_hcase *)cases)[*(const uint32_t *)b].ch;

	return x < y ? -1 : x > y;
}

/* Lock order: active cases sorted by channel address. */
static void sort_lockorder(struct kg_hcase *cases, uint32_t *o, uint32_t n)
{
	uint32_t i, j;

	if (n > 16) {
		qsort_r(o, n, sizeof(*o), by_chan, cases);
		return;
	}
	for (i = 1; i < n; i++) {
		uint32_t v = o[i];

		for (j = i; j > 0 && (uintptr_t)cases[o[j - 1]].ch >
					     (uintptr_t)cases[v].ch; j--)
			o[j] = o[j - 1];
		o[j] = v;
	}
}

static int select_validate(struct kg_hcase *cases, size_t n, int64_t timeout)
{
	size_t i;

	if ((!cases && n) || n > KG_SELECT_MAX || timeout < -1)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		struct kg_hcase *k = &cases[i];

		if (k->op != KG_SEND && k->op != KG_RECV)
			return -EINVAL;
		if (k->ch && k->op == KG_SEND && !k->elem && k->ch->elem_size)
			return -EINVAL;
		k->ok = false;
	}
	return 0;
}

/*
 * Pass 1 of select, every channel locked: the first case in poll order
 * that can proceed now does, its index is returned and *r holds its
 * __try_ result; -1 if none can.
 */
static int __select_poll(struct kg_hcase *cases, const uint32_t *pollorder,
			 uint32_t nact, struct kg_sudog **wake, int *r)
{
	uint32_t i;

	for (i = 0; i < nact; i++) {
		struct kg_hcase *k = &cases[pollorder[i]];

		*r = k->op == KG_SEND ? __try_send(k->ch, k->elem, wake) :
					__try_recv(k->ch, k->elem, wake);
		if (*r)
			return (int)pollorder[i];
	}
	return -1;
}

int kg_hselect(struct kg_hcase *cases, size_t n, int64_t timeout)
{
	uint32_t stack_order[2 * SELECT_STACK_CASES];
	struct kg_sudog stack_sg[SELECT_STACK_CASES], *sgs = stack_sg;
	uint32_t *pollorder = stack_order, *lockorder;
	struct kg_sudog *wake = NULL;
	struct select_ctx s;
	struct kg_parker pk;
	uint64_t deadline;
	bool armed = false, pk_ready = false;
	uint32_t i, nact = 0, claim;
	int r = 0, chosen = -1;

	r = select_validate(cases, n, timeout);
	if (r)
		return r;
	for (i = 0; i < n; i++)
		nact += cases[i].ch != NULL;
	if (!nact)	/* nothing can be ready: wait as the real one does */
		return kg_select(NULL, 0, timeout);
	if (nact > SELECT_STACK_CASES) {
		pollorder = malloc(2 * nact * sizeof(*pollorder));
		sgs = malloc(nact * sizeof(*sgs));
		if (!pollorder || !sgs) {
			free(pollorder);
			free(sgs);
			return -ENOMEM;
		}
	}
	lockorder = pollorder + nact;
	deadline = timeout < 0 ? UINT64_MAX :
		   timeout == 0 ? 0 : kg_deadline(kg_now_ns(), (uint64_t)timeout);

	/* poll order: a uniformly random permutation (Fisher-Yates) */
	nact = 0;
	for (i = 0; i < n; i++) {
		uint32_t j;

		if (!cases[i].ch)
			continue;
		j = kg__select_in_order ? nact :
					  (uint32_t)(kg_fastrand() % (nact + 1));
		pollorder[nact] = pollorder[j];
		pollorder[j] = i;
		lockorder[nact] = i;
		nact++;
	}
	sort_lockorder(cases, lockorder, nact);
	s.cases = cases;
	s.lockorder = lockorder;
	s.nactive = nact;

	for (;;) {
		select_lock(&s);
		/* pass 1: the first ready case in poll order */
		chosen = __select_poll(cases, pollorder, nact, &wake, &r);
		if (chosen >= 0)
			goto done;
		if (deadline == 0) {
			r = -EAGAIN;
			goto done;
		}
		if (armed || deadline == UINT64_MAX)
			break;
		if (kg_now_ns() >= deadline) {
			r = -ETIMEDOUT;
			goto done;
		}
		select_unlock(&s);
		kg_parker_init(&pk);
		pk_ready = true;
		if (!pk.co) {
			select_lock(&s);
			/* a thread times out by itself: poll once more */
			chosen = __select_poll(cases, pollorder, nact, &wake,
					       &r);
			if (chosen >= 0)
				goto done;
			break;
		}
		r = kg_parker_arm(&pk, deadline);
		if (r)
			goto out;
		armed = true;
	}

	/* pass 2: queue a sudog on every channel, then park */
	if (!pk_ready)
		kg_parker_init(&pk);
	for (i = 0; i < nact; i++) {
		uint32_t ci = lockorder[i];
		struct kg_sudog *sg = &sgs[i];

		sg->pk = &pk;
		sg->elem = cases[ci].elem;
		sg->idx = ci;
		sg->success = false;
		__enqueue(cases[ci].op == KG_SEND ? &cases[ci].ch->sendq :
						    &cases[ci].ch->recvq, sg);
	}
	kg_co_waiting(pk.co, "select", cases[lockorder[0]].ch);
	kg_parker_wait(&pk, select_unlock, &s, deadline);

	/* pass 3: take back the sudogs nobody took */
	select_lock(&s);
	for (i = 0; i < nact; i++) {
		uint32_t ci = lockorder[i];

		if (sgs[i].queued)
			__remove(cases[ci].op == KG_SEND ? &cases[ci].ch->sendq :
							   &cases[ci].ch->recvq,
				 &sgs[i]);
	}
	select_unlock(&s);
	claim = atomic_load_explicit(&pk.claim, memory_order_acquire);
	if (claim == KG_CLAIM_TIMEOUT) {
		r = -ETIMEDOUT;
		goto out;
	}
	chosen = (int)claim - 1;
	for (i = 0; i < nact; i++) {
		if (lockorder[i] != (uint32_t)chosen)
			continue;
		if (cases[chosen].op == KG_SEND && !sgs[i].success)
			r = -EPIPE;	/* closed while we waited */
		else
			cases[chosen].ok = sgs[i].success;
		break;
	}
	if (r == 0)
		r = chosen;
	goto out;

done:
	select_unlock(&s);
	if (armed)
		kg_parker_done(&pk);
	if (wake)
		kg_parker_wake(NULL, wake->pk);
	if (chosen >= 0) {
		if (r < 0 && cases[chosen].op == KG_RECV) {
			r = chosen;	/* recv on closed: ready, ok = false */
		} else if (r > 0) {
			cases[chosen].ok = true;
			r = chosen;
		}
	}
out:
	if (sgs != stack_sg) {
		free(pollorder);
		free(sgs);
	}
	return r;
}

