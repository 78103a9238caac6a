// SPDX-License-Identifier: MIT
/*
 * chan.c - channels and select without a channel lock.
 *
 * The problem: Go's channel (hchan.c, kept as the oracle) serializes every
 * operation on one lock, so senders and receivers on different cores
 * queue behind each other, and a worker preempted while holding the lock
 * stalls them all.
 *
 * The anchor: Koval, Alistarh, Elizarov, "Fast and Scalable Channels in
 * Kotlin Coroutines" (PPoPP 2023). A channel is an infinite array of
 * cells, indexed by two counters: the i-th send and the i-th receive meet
 * in cell i. Each operation takes its index with one fetch-and-add and
 * then negotiates the cell with its partner by compare-and-swap:
 *
 *   sender s                              receiver r
 *   EMPTY   -> BUFFERED (value stored)    BUFFERED -> DONE (value taken)
 *   EMPTY   -> waiter (parks)             EMPTY    -> waiter (parks)
 *   waiter  -> RESUMING -> DONE           waiter   -> RESUMING -> DONE
 *
 * A sender may leave its value (BUFFERED) without waiting when its
 * partner has arrived (s < R) or when the buffer has room (s < R + cap:
 * the cap cells ahead of the receivers are the buffer). Otherwise it
 * parks in the cell. A receiver r then "expands the buffer": the sender
 * parked in cell r + cap may now buffer, so it is resumed with its value
 * left in the cell (or, if it has not arrived, the cell is marked EB,
 * buffer granted). Only senders that found no room can need this, and
 * they say so first (eb_need): the receivers skip the expansion
 * otherwise, and a buffered value is taken without reading S, so that
 * producers and consumers that keep up with each other share no counter
 * line. A sender checks for room against a past value of R (r_seen)
 * before reading R itself. A receiver that finds its cell EMPTY while its
 * sender has already taken the index (r < S) breaks the cell (BROKEN)
 * after a short spin, and both sides move on to new indices: no one
 * waits for a thread that may be descheduled.
 *
 * Cells live in segments of 32, linked in a list. The channel keeps the
 * segment of the latest send and of the latest receive (hints, only moving
 * forward) and the list head; a segment behind both hints has been passed
 * by all senders and receivers and is retired with call_rcu (liburcu,
 * urcu-memb flavor: readers cost a per-thread counter update and no
 * fence, which suits short read-side sections taken on every operation,
 * and unlike QSBR it needs no quiescent-state calls from threads we do not
 * own). Every operation runs inside a read-side section that never spans
 * a coroutine switch: it ends before parking and restarts after.
 *
 * Parked operations are heap records (struct lf_op: a parker from wait.c
 * plus one lf_case per select case), reference-counted: one reference for
 * the owner and one per cell pointing at one of its cases. A party that
 * meets a case in a cell first takes the cell (waiter -> RESUMING, which
 * hands it the cell's reference), then races for the op's claim; the
 * winner moves the value and wakes the owner, a loser breaks the cell.
 * When its wait is over, the owner takes its cases out of the cells no
 * party took (case_withdraw; each parked case pins its segment so that
 * the owner can come back to it), gives the index back when it was the
 * last, moves the other side over BROKEN cells at its front, and removes
 * segments whose cells are all BROKEN from the middle of the list: what
 * a select leaves in the channels it did not take is returned at once,
 * as Go's select dequeues itself ("Pins" and seg_remove below).
 * A plain send or receive of a coroutine without a deadline has one
 * possible claimant, whoever takes its cell: it skips the count and the
 * claim race (struct lf_op, simple).
 *
 * select registers its cases one after another while its claim word says
 * REGISTERING: a party that meets one of them then breaks that cell and
 * flags the case (REREG), and the owner re-registers flagged cases before
 * opening the claim, so that a case completed during registration can
 * never collide with a value the owner takes directly from a later cell
 * (Kotlin's REREGISTER). A select that has a send and a receive case on
 * one unbuffered channel would meet itself in the cells; it waits in the
 * channel's bidir list instead ("Both directions" below).
 *
 * close sets the closed bit in the send counter (later sends fail at
 * once), then walks the cells no partner will reach: senders parked past
 * the receivers fail with -EPIPE, receivers parked past the last sender
 * see the channel closed, empty cells are broken so that operations in
 * flight move on and find the channel closed. Buffered values stay for
 * receivers to drain.
 *
 * Memory ordering: the counters are updated with seq_cst read-modify-
 * writes and read with seq_cst loads, so that "fetch my index, then read
 * the other counter" on both sides forms a Dekker pair (a receiver that
 * parks because r >= S is seen by the sender whose s == r, and close's
 * bit is seen by every receiver that arrives after close read R); so do
 * a sender's raising of eb_need before it reads R and a receiver's
 * fetch_add of R before it reads eb_need (may_buffer). Cell
 * states are published with release CAS and read with acquire, ordering
 * the value copy in the cell before BUFFERED and the case setup before
 * the waiter pointer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/*
 * liburcu's small read-side fast paths inline into the callers (they are
 * a few lines each; liburcu is LGPL-2.1 and permits this for
 * LGPL-compatible code such as this MIT library). Not under
 * ThreadSanitizer: liburcu's own protocol (plain accesses ordered by
 * membarrier) would be instrumented and reported as races.
 */
#ifndef __SANITIZE_THREAD__
#define _LGPL_SOURCE
#endif
#include <urcu/urcu-memb.h>

#include "timer.h"
#include "wait.h"

#define SEG_SHIFT 5
#define SEG_CELLS (1u << SEG_SHIFT)
#define SEG_MASK (SEG_CELLS - 1)
#define CLOSED_BIT (1ull << 63)
#define BREAK_SPINS 64

/*
 * Cell states; anything above C_RESUMING is a struct lf_case pointer,
 * with W_SEND set in its low bit for a sender (cases are 8-aligned), so
 * a party can tell a sender from a receiver without dereferencing it.
 */
enum {
	C_EMPTY = 0,
	C_BUFFERED = 1,		/* a value waits in the cell */
	C_DONE = 2,		/* the receiver took the value */
	C_BROKEN = 3,		/* abandoned: both sides move on */
	C_EB = 4,		/* buffer room granted before the sender came */
	C_RESUMING = 5,		/* a party is completing the waiter in it */
};
#define IS_WAITER(st) ((st) > C_RESUMING)
#define W_SEND ((uintptr_t)1)
#define W_CASE(st) ((struct lf_case *)((st) & ~(uintptr_t)7))
#define W_OF(k) ((uintptr_t)(k) | ((k)->is_send ? W_SEND : 0))

struct lf_seg {
	uint64_t id;
	_Atomic(struct lf_seg *) next;
	/*
	 * Owners of heap records with a case parked in one of our cells
	 * (PIN_COUNT), plus the state of our freeing: retired (unlinked, or
	 * the channel freed), the retiring grace period's callback found us
	 * pinned, freed. See seg_unpin.
	 */
	_Atomic uint32_t pins;
	_Atomic uint32_t withdrawn;	/* cells owners withdrew (a hint) */
	_Atomic uint32_t removed;	/* unlinked from the middle */
	struct rcu_head rcu;
	_Atomic uintptr_t cell[SEG_CELLS];
	_Alignas(16) char elems[];	/* SEG_CELLS * elem_size */
};

/* Claim word values besides 0, case index + 1 and KG_CLAIM_TIMEOUT. */
#define CLAIM_REG 0x40000000u		/* registering: parties must not win */
#define CLAIM_REREG 0x20000000u		/* ... and some case needs redoing */
#define IS_REG(v) (((v) & ~CLAIM_REREG) == CLAIM_REG)

enum { RES_NONE = 0, RES_VALUE, RES_CLOSED };

struct lf_op;

struct lf_case {
	struct lf_op *op;
	void *elem;			/* send: the value; recv: where it goes */
	uint32_t idx;			/* case index; claims as idx + 1 */
	bool is_send;
	_Atomic uint8_t result;		/* RES_*, set by the claim's winner */
	_Atomic uint8_t rereg;		/* broken while registering */
	kg_chan_t *ch;
	_Atomic uintptr_t *cell;	/* where it was installed last */
	struct lf_seg *seg;		/* its segment, pinned; NULL: none */
	/*
	 * A select with both directions on one unbuffered channel (see
	 * "Both directions" below): such a case never parks in a cell. The
	 * pair's receive case is its node in the channel's bidir list
	 * (bnext; linked under bidir_lock), twin its send case.
	 */
	bool bidir;
	_Atomic uint8_t linked;
	struct lf_case *twin, *bnext;
};

struct lf_op {
	_Atomic uint32_t refs;		/* owner + cells holding a case */
	uint32_t ncases;
	/*
	 * A single send or receive of a coroutine, without a deadline: the
	 * party that takes its cell is its only claimant (no other case, no
	 * timer, nobody else reaches the cell), and it touches the record
	 * no more once kg_parker_wake has handed the coroutine back. So
	 * refs is left alone (the owner frees the record after its wake) and
	 * the claim is stored, not raced for. Plain threads are never
	 * simple: their waker touches the parker after publishing WOKEN.
	 */
	bool simple;
	struct kg_parker pk;
	struct lf_case cases[];
};

struct chan_timer;

/*
 * Layout: what an operation reads on every call shares one line that is
 * never written after kg_chan_make; senders write the S line (the
 * counter, their segment hint, their copy of R), receivers the R line.
 * Taking a buffered value reads no S; buffering a value reads R only
 * when r_seen is too old. So a producer and a consumer that keep up meet
 * in the cells only, not on the counters.
 */
struct kg_chan {
	size_t elem_size;
	size_t cap;
	size_t seg_bytes;
	struct chan_timer *timer;	/* kg_after's timer, freed with us */
	struct rcu_head rcu;
	/* selects linked in bidir (read where an operation would wait) */
	_Atomic uint32_t nbidir;

	_Alignas(KG_CACHELINE) _Atomic uint64_t S;	/* sends; CLOSED_BIT */
	_Atomic(struct lf_seg *) send_seg;
	/*
	 * Some value R had (R only grows, so a lower bound of it for ever):
	 * a sender with s < r_seen + cap may buffer without reading R, whose
	 * line the receivers write on every operation.
	 */
	_Atomic uint64_t r_seen;

	_Alignas(KG_CACHELINE) _Atomic uint64_t R;	/* receives */
	_Atomic(struct lf_seg *) recv_seg;
	_Atomic(struct lf_seg *) eb_seg;	/* last buffer expansion's */

	/*
	 * The highest send index that looked for buffer room in R (see
	 * may_buffer): receivers r with r + cap <= eb_need expand the
	 * buffer over cell r + cap, the others need not. Written only by
	 * senders that find no room in r_seen, so mostly read-only.
	 */
	_Alignas(KG_CACHELINE) _Atomic uint64_t eb_need;

	_Alignas(KG_CACHELINE) _Atomic(struct lf_seg *) head;	/* oldest not
								 * retired */
	/*
	 * Selects waiting in both directions here (unbuffered only): their
	 * receive cases, oldest first. The lock protects the list and the
	 * cases' linked flags; nothing else is taken while holding it.
	 */
	kg_lock_t bidir_lock;
	struct lf_case *bidir;
	kg_lock_t seg_lock;		/* seg_remove's unlinks */
};

/* Results of one pass of an operation. */
enum { R_DONE, R_CLOSED, R_AGAIN, R_INSTALLED, R_NOMEM };

/* ------------------------------------------------------------------ */
/* RCU: every thread that touches segments is a registered reader      */
/* ------------------------------------------------------------------ */

static pthread_key_t rcu_key;
static pthread_once_t rcu_once = PTHREAD_ONCE_INIT;
static __thread bool rcu_registered KG_TLS;

static void rcu_thread_exit(void *v)
{
	(void)v;
	urcu_memb_unregister_thread();
	/* anything later in this thread's exit registers again, or frees */
	rcu_registered = false;
}

static void rcu_key_make(void)
{
	pthread_key_create(&rcu_key, rcu_thread_exit);
}

/*
 * Enter a read-side section. Out of line: a coroutine may resume on
 * another thread between two operations, and the thread-local flag must
 * be read on the thread running now. (kg_rcu_depth: base.h.)
 */
static __attribute__((noinline)) void lf_read_lock(void)
{
	if (kg_unlikely(!rcu_registered)) {
		pthread_once(&rcu_once, rcu_key_make);
		urcu_memb_register_thread();
		rcu_registered = true;
		pthread_setspecific(rcu_key, &rcu_registered);
	}
	urcu_memb_read_lock();
#ifdef KG_DEBUG_RCU
	kg_rcu_depth++;
#endif
}

static __attribute__((noinline)) void lf_read_unlock(void)
{
#ifdef KG_DEBUG_RCU
	if (--kg_rcu_depth < 0)
		kg_throw("lf_read_unlock: not in a read-side section");
#endif
	urcu_memb_read_unlock();
}

/* ------------------------------------------------------------------ */
/* Segments                                                            */
/* ------------------------------------------------------------------ */

static void seg_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct lf_seg, rcu));
}

/*
 * Pins. The owner of a heap record (a select, a timed operation, a plain
 * thread's) takes its cases out of their cells when its wait is over
 * (case_withdraw), so that what a select leaves in the channels it did
 * not take is returned at once, as Go's select dequeues its sudogs. A
 * segment may be retired while such an owner still has to come back to
 * it (a party in flight to the owner's cell holds the segment in its
 * read-side section, not the owner), so each parked case pins its
 * segment: a retired segment is freed only when no pin is left.
 *
 *   retire (seg_retire, kg_chan_free): set PIN_RETIRED; after a grace
 *   period (no party still reaches the segment) seg_try_free frees it if
 *   no pin is left, else marks PIN_CBDONE;
 *   unpin: the last pin of a PIN_CBDONE segment frees it (after another
 *   grace period: parties may still read it).
 * A pin is taken only inside a read-side section that found the segment,
 * so never on a segment whose grace period has ended. PIN_DEAD is set by
 * the one CAS that decides the free.
 */
#define PIN_RETIRED (1u << 31)
#define PIN_CBDONE (1u << 30)
#define PIN_DEAD (1u << 29)
#define PIN_COUNT(v) ((v) & (PIN_DEAD - 1))

static void seg_try_free(struct lf_seg *s)
{
	uint32_t v = atomic_load_explicit(&s->pins, memory_order_acquire);

	for (;;) {
		if (!PIN_COUNT(v)) {
			if (atomic_compare_exchange_weak_explicit(
				    &s->pins, &v, PIN_DEAD,
				    memory_order_acq_rel, memory_order_acquire)) {
				free(s);
				return;
			}
			continue;
		}
		if (atomic_compare_exchange_weak_explicit(
			    &s->pins, &v, v | PIN_CBDONE, memory_order_acq_rel,
			    memory_order_acquire))
			return;	/* the last unpin frees it */
	}
}

static void seg_try_free_rcu(struct rcu_head *h)
{
	seg_try_free(caa_container_of(h, struct lf_seg, rcu));
}

/* Retire s (no party reaches it any more): one caller schedules it. */
static void seg_retire_one(struct lf_seg *s)
{
	if (!(atomic_fetch_or(&s->pins, PIN_RETIRED) & PIN_RETIRED))
		urcu_memb_call_rcu(&s->rcu, seg_try_free_rcu);
}

static inline void seg_pin(struct lf_seg *s)
{
	atomic_fetch_add_explicit(&s->pins, 1, memory_order_relaxed);
}

static void seg_unpin(struct lf_seg *s)
{
	/* acq_rel: our accesses to the segment before its free */
	uint32_t v = atomic_fetch_sub_explicit(&s->pins, 1,
					       memory_order_acq_rel) - 1;

	if (v == (PIN_RETIRED | PIN_CBDONE) &&
	    atomic_compare_exchange_strong_explicit(&s->pins, &v, PIN_DEAD,
						    memory_order_acq_rel,
						    memory_order_acquire))
		urcu_memb_call_rcu(&s->rcu, seg_free_rcu);
}

static struct lf_seg *seg_new(kg_chan_t *c, uint64_t id)
{
	struct lf_seg *s;
	int tries;

	/*
	 * An index is already taken: the operation cannot give up without
	 * its partner possibly losing a value. Out of memory, wait for some.
	 */
	for (tries = 0; tries < 1000; tries++) {
		s = calloc(1, c->seg_bytes);
		if (s) {
			s->id = id;
			return s;
		}
		kg_sleep(1000000);
	}
	kg_throw("chan: no memory for a channel segment for 1 s");
}

/*
 * The segment with id, walking forward from start (which a caller loaded
 * before taking its index, so start->id <= id); created if missing.
 */
static __attribute__((noinline)) struct lf_seg *
seg_find_slow(kg_chan_t *c, struct lf_seg *s, uint64_t id)
{
	while (s->id < id) {
		/* acquire: pairs with the release CAS linking a new one */
		struct lf_seg *n = atomic_load_explicit(&s->next,
							memory_order_acquire);

		if (!n) {
			struct lf_seg *expect = NULL;

			n = seg_new(c, s->id + 1);
			if (!atomic_compare_exchange_strong_explicit(
				    &s->next, &expect, n, memory_order_acq_rel,
				    memory_order_acquire)) {
				free(n);
				n = expect;
			}
		}
		s = n;
	}
	return s;
}

/*
 * A hint was just moved to s: if s was removed from the middle of the
 * list meanwhile, move the hint on (seq_cst CAS, then the load of removed:
 * the Dekker pair with seg_remove's store of removed, then its hint
 * loads; one of the two moves the hint off).
 */
static void hint_settle(_Atomic(struct lf_seg *) *hint, struct lf_seg *s)
{
	while (atomic_load(&s->removed)) {
		struct lf_seg *n = atomic_load_explicit(&s->next,
							memory_order_acquire);

		if (!atomic_compare_exchange_strong(hint, &s, n))
			return;	/* moved by someone else: they settle it */
		s = n;
	}
}

/* Retire segments that every hint has left behind. */
static void seg_retire(kg_chan_t *c)
{
	for (;;) {
		struct lf_seg *h = atomic_load_explicit(&c->head,
							memory_order_acquire);
		uint64_t ms = atomic_load_explicit(&c->send_seg,
						   memory_order_acquire)->id;
		uint64_t mr = atomic_load_explicit(&c->recv_seg,
						   memory_order_acquire)->id;
		uint64_t m = ms < mr ? ms : mr;

		if (h->id >= m)
			return;
		/*
		 * The expansion hint lags while receivers skip expansions
		 * (lf_recv): move it off h before h is retired, so that no
		 * hint ever points at a retired segment. Forward only (a
		 * failed CAS means another party moved it; look again).
		 */
		if (c->cap) {
			struct lf_seg *e = atomic_load_explicit(
				&c->eb_seg, memory_order_acquire);

			if (e->id <= h->id) {
				struct lf_seg *n = atomic_load_explicit(
					&h->next, memory_order_acquire);

				if (atomic_compare_exchange_strong(&c->eb_seg,
								   &e, n))
					hint_settle(&c->eb_seg, n);
				continue;
			}
		}
		/* exactly one CAS moves head past h: one call_rcu per segment */
		struct lf_seg *n = atomic_load(&h->next);

		if (atomic_compare_exchange_strong(&c->head, &h, n)) {
			hint_settle(&c->head, n);
			seg_retire_one(h);
		}
	}
}

/* Move a hint forward to s (never back). */
static void hint_forward(kg_chan_t *c, _Atomic(struct lf_seg *) *hint,
			 struct lf_seg *s)
{
	struct lf_seg *cur = atomic_load_explicit(hint, memory_order_acquire);

	while (cur->id < s->id) {
		/* seq_cst: see hint_settle */
		if (atomic_compare_exchange_weak(hint, &cur, s)) {
			hint_settle(hint, s);
			seg_retire(c);
			return;
		}
	}
}

/*
 * Remove m from the middle of the list: every one of its cells is BROKEN
 * (withdrawn waiters, mostly: the selects of a loop naming a channel on
 * which a coroutine waits for ever keep landing behind it, and the front
 * cannot move past that waiter). A party that looks for a cell of m
 * afterwards finds a segment with a higher id, which means BROKEN, as
 * the cell was. Under seg_lock (removals only; walkers and appends take
 * no lock: an append links only at the tail, never m). Hints pointing at
 * m move to its successor (hint_settle on the other side). m is retired
 * like any segment: freed after a grace period, once unpinned. Inside a
 * read-side section.
 */
static void seg_remove(kg_chan_t *c, struct lf_seg *m)
{
	struct lf_seg *p, *n = atomic_load_explicit(&m->next,
						    memory_order_acquire);
	_Atomic(struct lf_seg *) *hints[] = { &c->head, &c->send_seg,
					      &c->recv_seg, &c->eb_seg };
	unsigned int i;

	if (!n)
		return;	/* the tail stays: appends link there */
	for (i = 0; i < SEG_CELLS; i++)
		if (atomic_load_explicit(&m->cell[i], memory_order_acquire) !=
		    C_BROKEN)
			return;
	kg_lock(&c->seg_lock);
	/*
	 * Hold every cell RESUMING while deciding, so that no index is given
	 * back into m (give_back_index checks removed while it holds its
	 * cell); parties that reach a cell meanwhile wait, then see BROKEN.
	 */
	for (i = 0; i < SEG_CELLS; i++) {
		uintptr_t st = C_BROKEN;

		if (!atomic_compare_exchange_strong(&m->cell[i], &st,
						    C_RESUMING))
			break;
	}
	if (i < SEG_CELLS) {
		while (i--)
			atomic_store_explicit(&m->cell[i], C_BROKEN,
					      memory_order_release);
		kg_unlock(&c->seg_lock);
		return;
	}
	/*
	 * m's successor again, under the lock: another removal may have
	 * unlinked the one we saw (it is retired, freed after a grace
	 * period): linking it back would leave a freed segment in the list.
	 * Not NULL: m was not the tail, and the tail is never removed.
	 */
	n = atomic_load_explicit(&m->next, memory_order_acquire);
	p = atomic_load_explicit(&c->head, memory_order_acquire);
	while (p && p->id < m->id) {
		struct lf_seg *q = atomic_load_explicit(&p->next,
							memory_order_acquire);

		if (q == m)
			break;
		p = q;
	}
	/* m must still be linked after p (not the head, not retired) */
	if (p && p != m && p->id < m->id && !atomic_load(&m->removed) &&
	    atomic_load_explicit(&p->next, memory_order_acquire) == m) {
		atomic_store(&m->removed, 1);
		/* release: m's successor is read through p from now on */
		atomic_store_explicit(&p->next, n, memory_order_release);
		for (i = 0; i < sizeof(hints) / sizeof(hints[0]); i++) {
			struct lf_seg *h = m;

			if (atomic_compare_exchange_strong(hints[i], &h, n))
				hint_settle(hints[i], n);
		}
		seg_retire_one(m);
	}
	for (i = 0; i < SEG_CELLS; i++)
		atomic_store_explicit(&m->cell[i], C_BROKEN,
				      memory_order_release);
	kg_unlock(&c->seg_lock);
}

/* seg_find's common case, inline: start is already the segment. */
static inline struct lf_seg *seg_find(kg_chan_t *c, struct lf_seg *s,
				      uint64_t id)
{
	return kg_likely(s->id == id) ? s : seg_find_slow(c, s, id);
}

/*
 * The segment of index i, from a hint loaded before i was taken. A hint
 * is behind its counter, except after an index was given back
 * (give_back_index: the counter went back, the hint stays): then walk
 * from the head. A segment with a higher id means i's was removed, or
 * retired after both sides passed i: the cell counts as BROKEN.
 */
static inline struct lf_seg *seg_of(kg_chan_t *c, struct lf_seg *hint,
				    uint64_t i)
{
	uint64_t id = i >> SEG_SHIFT;

	if (kg_unlikely(hint->id > id))
		hint = atomic_load_explicit(&c->head, memory_order_acquire);
	return seg_find(c, hint, id);
}

static inline char *cell_elem(kg_chan_t *c, struct lf_seg *s, uint64_t i)
{
	return s->elems + (i & SEG_MASK) * c->elem_size;
}

static inline void copy_elem(void *dst, const void *src, size_t n)
{
	if (!dst)
		return;
	/* word-sized elements (the common case) without a call */
	if (n == sizeof(uint64_t))
		memcpy(dst, src, sizeof(uint64_t));
	else if (n)
		memcpy(dst, src, n);
}

/* A cell held RESUMING by another party: it is a few instructions away. */
static uintptr_t wait_resolved(_Atomic uintptr_t *cell)
{
	uintptr_t st;
	int spins = 0;

	while ((st = atomic_load_explicit(cell, memory_order_acquire)) ==
	       C_RESUMING) {
		if (++spins < 256)
			kg_cpu_relax();
		else
			sched_yield();
	}
	return st;
}

/* ------------------------------------------------------------------ */
/* Operation records                                                   */
/* ------------------------------------------------------------------ */

/* Set up a record for the calling coroutine or thread, held by it. */
static void op_init(struct lf_op *op, uint32_t ncases, uint32_t claim)
{
	atomic_store_explicit(&op->refs, 1, memory_order_relaxed);
	op->ncases = ncases;
	op->simple = false;
	kg_parker_init(&op->pk);
	atomic_store_explicit(&op->pk.claim, claim, memory_order_relaxed);
}

/* A record on the heap: one that cells may hold after its owner left. */
static struct lf_op *op_new(uint32_t ncases, uint32_t claim)
{
	struct lf_op *op = malloc(sizeof(*op) + ncases * sizeof(op->cases[0]));

	if (op)
		op_init(op, ncases, claim);
	return op;
}


static inline void op_get(struct lf_op *op)
{
	atomic_fetch_add_explicit(&op->refs, 1, memory_order_relaxed);
}

static inline void op_put(struct lf_op *op)
{
	/* acq_rel: the last holder sees every other holder's accesses */
	if (atomic_fetch_sub_explicit(&op->refs, 1, memory_order_acq_rel) == 1)
		free(op);
}

static void case_init(struct lf_case *k, struct lf_op *op, uint32_t idx,
		      bool is_send, void *elem, kg_chan_t *c)
{
	k->op = op;
	k->elem = elem;
	k->idx = idx;
	k->is_send = is_send;
	k->ch = c;
	atomic_store_explicit(&k->result, RES_NONE, memory_order_relaxed);
	atomic_store_explicit(&k->rereg, 0, memory_order_relaxed);
	k->seg = NULL;
	k->bidir = false;
	atomic_store_explicit(&k->linked, 0, memory_order_relaxed);
	k->twin = k->bnext = NULL;
}

/*
 * A single operation's record, made when it is about to park. A simple
 * one (see struct lf_op) lives in the frame of its owner's chan_op: the
 * owner is the last to touch it, when its wait is over, so no malloc, no
 * count, and nothing for the heap to lose if the runtime ends before the
 * owner runs again.
 */
union lf_op1 {
	struct lf_op op;
	char room[sizeof(struct lf_op) + sizeof(struct lf_case)];
};

struct lazy_op {
	struct lf_op *op;
	union lf_op1 *frame;		/* the simple record's place */
	bool untimed;			/* no deadline: may be simple */
};

static struct lf_case *lazy_case(struct lazy_op *lazy, bool is_send,
				 void *elem, kg_chan_t *c)
{
	struct lf_op *op = &lazy->frame->op;

	op_init(op, 1, 0);
	if (lazy->untimed && op->pk.co) {
		op->simple = true;
	} else {
		op = op_new(1, 0);
		if (!op)
			return NULL;
	}
	case_init(&op->cases[0], op, 0, is_send, elem, c);
	lazy->op = op;
	return &op->cases[0];
}

/*
 * While k's owner registers, flag k for re-registration (see select).
 * Returns the claim word once it is not REGISTERING (nothing flagged).
 */
static uint32_t flag_rereg(struct lf_case *k)
{
	struct kg_parker *pk = &k->op->pk;
	uint32_t v = atomic_load_explicit(&pk->claim, memory_order_acquire);

	while (IS_REG(v)) {
		/* flag before bit: the owner reads flags after the bit */
		atomic_store_explicit(&k->rereg, 1, memory_order_relaxed);
		if (atomic_compare_exchange_weak_explicit(
			    &pk->claim, &v, CLAIM_REG | CLAIM_REREG,
			    memory_order_acq_rel, memory_order_acquire))
			return CLAIM_REG;
	}
	return v;
}

enum { CL_WON, CL_LOST };

/*
 * A party tries to win k's operation. While its owner is registering,
 * nobody may win: flag the case for re-registration and report a loss
 * (the caller breaks the cell).
 */
static int party_claim(struct lf_case *k)
{
	struct kg_parker *pk = &k->op->pk;
	uint32_t v = atomic_load_explicit(&pk->claim, memory_order_acquire);

	for (;;) {
		if (v == 0) {
			/* acq_rel: see the owner's setup; publish our moves */
			if (atomic_compare_exchange_weak_explicit(
				    &pk->claim, &v, k->idx + 1,
				    memory_order_acq_rel, memory_order_acquire))
				return CL_WON;
			continue;
		}
		/* flagged while registering, or decided: lost; opened
		 * meanwhile (0): try again */
		if (!IS_REG(v) || (v = flag_rereg(k)) != 0)
			return CL_LOST;
	}
}

/*
 * We took the cell (waiter -> RESUMING) holding case k, and with it the
 * cell's reference to k's op. Win the op, or break the cell. On a win,
 * copy n bytes src -> dst (the value), record the result, give the cell
 * its final state and wake the owner.
 */
static bool resolve(struct kg_worker *w, _Atomic uintptr_t *cell,
		    struct lf_case *k, uintptr_t final, uint8_t result,
		    void *dst, const void *src, size_t n)
{
	struct lf_op *op = k->op;
	bool simple = op->simple;

	if (simple) {
		/* the only claimant; the owner reads the claim after its
		 * wake, which orders it (the wake's acq_rel exchange) */
		atomic_store_explicit(&op->pk.claim, k->idx + 1,
				      memory_order_relaxed);
	} else if (party_claim(k) != CL_WON) {
		atomic_store_explicit(cell, C_BROKEN, memory_order_release);
		op_put(op);
		return false;
	}
	if (src)
		copy_elem(dst, src, n);
	atomic_store_explicit(&k->result, result, memory_order_relaxed);
	/* release: the value and result before the cell's final state */
	atomic_store_explicit(cell, final, memory_order_release);
	kg_parker_wake(w, &op->pk);
	/* a simple op may be gone (freed by its resumed owner) */
	if (!simple)
		op_put(op);
	return true;
}

/* ------------------------------------------------------------------ */
/* The cell protocols (inside a read-side section)                     */
/* ------------------------------------------------------------------ */

/*
 * Take the cell holding waiter *st (-> RESUMING), and with it the cell's
 * reference to the waiter's op. False (st reloaded) if the cell changed.
 * self: the taker's own op, if any: meeting it is a broken invariant
 * (a select's cases on a channel it names in both directions never park
 * in its cells).
 */
static bool take_waiter(_Atomic uintptr_t *cell, uintptr_t *st,
			const struct lf_case *self)
{
	if (!atomic_compare_exchange_weak_explicit(cell, st, C_RESUMING,
						   memory_order_acq_rel,
						   memory_order_acquire))
		return false;
	if (self && W_CASE(*st)->op == self->op)
		kg_throw("kg_select: a case met its own select");
	return true;
}

/*
 * Park case k in the cell, which holds *st (EMPTY or EB). The cell's
 * reference to k's op is taken first; release: k's setup (and a sender's
 * value in the cell) before the pointer. False (st reloaded) if the cell
 * changed meanwhile.
 */
static bool install(struct lf_seg *seg, _Atomic uintptr_t *cell,
		    uintptr_t *st, struct lf_case *k)
{
	bool simple = k->op->simple;

	/* a simple op keeps no count (see struct lf_op) */
	if (!simple)
		op_get(k->op);
	k->cell = cell;		/* for chan_abandon and case_withdraw */
	if (atomic_compare_exchange_strong_explicit(cell, st, W_OF(k),
						    memory_order_acq_rel,
						    memory_order_acquire)) {
		/* its owner comes back to the cell (case_withdraw); a simple
		 * op's owner never does */
		if (!simple) {
			seg_pin(seg);
			k->seg = seg;
		}
		return true;
	}
	if (!simple)
		op_put(k->op);
	return false;
}

/*
 * Move a counter (S for senders, R for receivers) over the cells at its
 * front that are BROKEN, as the next parties would: a cell whose waiter
 * was withdrawn needs nobody any more. Without this, a channel nobody
 * sends on keeps every cell the selects that named it withdrew, and its
 * segments could never be retired (the senders' hint never moves). R is
 * left to receivers on a buffered channel (each also expands the buffer).
 * Inside a read-side section.
 */
static void skip_broken_front(kg_chan_t *c, bool senders)
{
	_Atomic uint64_t *ctr = senders ? &c->S : &c->R;
	_Atomic(struct lf_seg *) *hint = senders ? &c->send_seg : &c->recv_seg;
	int n;

	if (!senders && c->cap)
		return;
	for (n = 0; n < 4 * (int)SEG_CELLS; n++) {
		/* the hint before the counter: its segment is at or before */
		struct lf_seg *h = atomic_load_explicit(hint,
							memory_order_acquire);
		struct lf_seg *seg = h;
		uint64_t i = atomic_load(ctr), id = i >> SEG_SHIFT;

		if (i & CLOSED_BIT)
			return;
		if (seg->id > id)	/* an index was given back: see seg_of */
			seg = atomic_load_explicit(&c->head,
						   memory_order_acquire);
		while (seg && seg->id < id)
			seg = atomic_load_explicit(&seg->next,
						   memory_order_acquire);
		if (!seg)
			return;
		if (seg->id == id) {
			/*
			 * Hold the cell RESUMING while we move the counter:
			 * its owner may be giving the index back (which
			 * turns the cell EMPTY again); one of us owns it.
			 */
			_Atomic uintptr_t *cell = &seg->cell[i & SEG_MASK];
			uintptr_t st = C_BROKEN;
			bool moved;

			if (!atomic_compare_exchange_strong(cell, &st,
							    C_RESUMING))
				return;
			/* seq_cst, as a party's fetch_add; fails if one
			 * came (it waits for the cell, then moves on) */
			moved = atomic_compare_exchange_strong(ctr, &i, i + 1);
			atomic_store_explicit(cell, C_BROKEN,
					      memory_order_release);
			if (!moved)
				return;
		} else if (!atomic_compare_exchange_strong(ctr, &i, i + 1)) {
			/* a higher id: i's segment was removed, all BROKEN */
			return;
		}
		/* as the party with index i would: the hint to its segment
		 * (segments behind both hints are retired) */
		if (seg != h)
			hint_forward(c, hint, seg);
	}
}

/*
 * k's cell, just withdrawn (BROKEN), was the last index of its side (a
 * sender's s == S - 1, a receiver's r == R - 1): give the index back, so
 * that a loop of selects naming a channel that never becomes ready reuses
 * one cell instead of growing the channel. The cell is held RESUMING
 * while we decide (parties that reach it wait), the index is returned
 * only if no partner has taken the same index yet (it may have seen the
 * cell BROKEN and moved on), and the cell is EMPTY again only if the
 * counter went back. A receiver's index is given back only when
 * unbuffered: R also bounds the buffer. Inside a read-side section.
 */
static void give_back_index(kg_chan_t *c, struct lf_seg *seg,
			    struct lf_case *k, uint64_t i)
{
	_Atomic uint64_t *mine = k->is_send ? &c->S : &c->R;
	_Atomic uint64_t *other = k->is_send ? &c->R : &c->S;
	uintptr_t st = C_BROKEN;
	uint64_t next = i + 1;

	/*
	 * Never back over a segment's end: a side's hint may already be in
	 * the next segment (an index there was taken, then given back), and
	 * hints must never be ahead of their counter's segment (seg_retire
	 * retires what is behind both hints).
	 */
	if ((!k->is_send && c->cap) || (i & SEG_MASK) == SEG_MASK ||
	    atomic_load_explicit(mine, memory_order_relaxed) != next)
		return;
	if (!atomic_compare_exchange_strong(k->cell, &st, C_RESUMING))
		return;
	/*
	 * seq_cst after the CAS: a partner that takes i from now waits (its
	 * first load of the cell is seq_cst too). A segment being removed
	 * holds all its cells RESUMING while it sets removed: if we hold
	 * ours now, it was removed before (stays BROKEN) or will see us.
	 */
	if (!atomic_load(&seg->removed) &&
	    (atomic_load(other) & ~CLOSED_BIT) <= i &&
	    atomic_compare_exchange_strong(mine, &next, i)) {
		atomic_store_explicit(k->cell, C_EMPTY, memory_order_release);
		return;
	}
	atomic_store_explicit(k->cell, C_BROKEN, memory_order_release);
}

/*
 * The owner's wait is over (or it re-registers k): take k out of the cell
 * it was parked in, unless a party took it (then the party drops the
 * cell's reference), and let go of its segment's pin. Only the owner
 * calls this, for a heap record.
 */
static void case_withdraw(struct lf_case *k)
{
	struct lf_seg *seg = k->seg;
	uintptr_t st = W_OF(k);

	if (!seg)
		return;
	k->seg = NULL;
	/*
	 * The segment is pinned; the channel is kept by the read-side
	 * section: kg_chan_free breaks every waiter's cell before its
	 * call_rcu, so a CAS that wins here came first.
	 */
	lf_read_lock();
	if (atomic_compare_exchange_strong_explicit(k->cell, &st, C_BROKEN,
						    memory_order_acq_rel,
						    memory_order_acquire)) {
		op_put(k->op);	/* the cell's; never the last (ours) */
		give_back_index(k->ch, seg, k, seg->id * SEG_CELLS +
				(uint64_t)(k->cell - seg->cell));
		/* a receiver's cell is met by a sender, and vice versa */
		skip_broken_front(k->ch, !k->is_send);
		/* once half its cells were withdrawn, see if all are BROKEN */
		if (atomic_fetch_add_explicit(&seg->withdrawn, 1,
					      memory_order_relaxed) + 1 >=
		    SEG_CELLS / 2)
			seg_remove(k->ch, seg);
	}
	lf_read_unlock();
	seg_unpin(seg);
}

static void op_withdraw(struct lf_op *op)
{
	uint32_t i;

	for (i = 0; i < op->ncases; i++)
		case_withdraw(&op->cases[i]);
}


/* ------------------------------------------------------------------ */
/* Both directions on one unbuffered channel                           */
/* ------------------------------------------------------------------ */

/*
 * A select with a send and a receive case on one unbuffered channel must
 * meet another party's receive or send, never its own (Go's TestSelfSelect:
 * two such selects meet each other). It cannot wait in the cells: waiting
 * receivers fill cells [S, R) and waiting senders cells [R, S), never both,
 * and its own two cases would meet in one cell. Go puts the one sudog in
 * both queues; here the select waits in a side list of the channel
 * instead, the bidir list (its receive case is the node, twin its send
 * case), and never parks in that channel's cells:
 *
 *   1. The select links its pair (bidir_lock) and raises nbidir (seq_cst),
 *      then tries both directions without parking (an operation that would
 *      park breaks its cell and moves on).
 *   2. Any other operation on the channel that would park or fail for want
 *      of a partner reads nbidir (seq_cst, after taking its index and
 *      reading the other counter) and, if it is not 0, looks in the list
 *      (bidir_meet): it gives up its own cell (EMPTY -> BROKEN) and claims
 *      an open select as a party would; if no select is open it parks (or
 *      fails) as usual, after flagging the selects still REGISTERING for
 *      re-registration, which tries both directions again and so finds it.
 *   3. A party that read nbidir == 0 did so before step 1's increment
 *      (the Dekker pair: index fetch_add, then nbidir load; nbidir
 *      fetch_add, then index fetch_add), so the select's tries, which
 *      walk the cells from the counters, reach that party's cell.
 *
 * Two selects registering at once: the lower address waits until the
 * higher one has opened its claim (so no cycle of waits), the higher one
 * flags the lower and moves on. The claimer of a select unlinks it; the
 * select unlinks its pairs when its wait is over (bidir_leave, in an RCU
 * read-side section: kg_chan_free unlinks what is left before freeing).
 * A linked pair holds a reference to its op. On a buffered channel one of
 * the two directions is always ready in a quiet moment, so the select
 * only retries its tries there and never links (and a value never skips
 * the buffer).
 */
enum { BM_NONE, BM_DONE, BM_CELL, BM_RETRY };

/* Unlink e, found at *pp (bidir_lock held); the caller drops its ref. */
static void bidir_unlink(kg_chan_t *c, struct lf_case **pp,
			 struct lf_case *e)
{
	*pp = e->bnext;
	e->bnext = NULL;
	atomic_store_explicit(&e->linked, 0, memory_order_release);
	atomic_fetch_sub(&c->nbidir, 1);
}

static void bidir_link(struct lf_case *node)
{
	kg_chan_t *c = node->ch;
	struct lf_case **pp;

	op_get(node->op);	/* the list's reference */
	kg_lock(&c->bidir_lock);
	for (pp = &c->bidir; *pp; pp = &(*pp)->bnext)
		;
	node->bnext = NULL;
	*pp = node;
	atomic_store_explicit(&node->linked, 1, memory_order_relaxed);
	/* seq_cst: before our tries take indices (step 3 above) */
	atomic_fetch_add(&c->nbidir, 1);
	kg_unlock(&c->bidir_lock);
}

/* op's wait is over: unlink its pairs that nobody unlinked. */
static void bidir_leave(struct lf_op *op)
{
	uint32_t i;

	for (i = 0; i < op->ncases; i++) {
		struct lf_case *k = &op->cases[i], *e, **pp;
		kg_chan_t *c = k->ch;
		bool put = false;

		if (!atomic_load_explicit(&k->linked, memory_order_acquire))
			continue;
		/*
		 * kg_chan_free may free c once nothing is linked: reading
		 * linked == 1 inside a read-side section keeps c until the
		 * section ends (it unlinks, then frees after a grace period).
		 */
		lf_read_lock();
		if (atomic_load_explicit(&k->linked, memory_order_acquire)) {
			kg_lock(&c->bidir_lock);
			for (pp = &c->bidir; (e = *pp); pp = &e->bnext)
				if (e == k) {
					bidir_unlink(c, pp, e);
					put = true;
					break;
				}
			kg_unlock(&c->bidir_lock);
		}
		lf_read_unlock();
		if (put)
			op_put(op);	/* never the last: the owner holds one */
	}
}

/*
 * An operation on unbuffered c would park or fail at *cell (EMPTY: no
 * partner has its index) and some select waits here in both directions:
 * meet one. BM_DONE: met, the value moved (elem: the value to send, or
 * where the received one goes). BM_CELL: the cell changed (*st reloaded).
 * BM_RETRY: our index was given up, take another. BM_NONE: go on as
 * without the list. k: the caller's case, if it has one (a select's own
 * pairs are skipped; a registering select waits for higher ones).
 */
static int bidir_meet(kg_chan_t *c, _Atomic uintptr_t *cell, uintptr_t *st,
		      bool is_send, void *elem, struct lf_case *k,
		      struct kg_worker *w)
{
	struct lf_op *self = k ? k->op : NULL;
	bool registering = self && IS_REG(atomic_load_explicit(
					   &self->pk.claim, memory_order_relaxed));

	for (;;) {
		struct lf_case *e, **pp, *stale = NULL, *m = NULL, *t = NULL;
		struct lf_op *wait_for = NULL;
		int ret = BM_NONE;
		uint32_t v;

		kg_lock(&c->bidir_lock);
		for (pp = &c->bidir; (e = *pp);) {
			if (e->op == self) {
				pp = &e->bnext;
				continue;
			}
			v = atomic_load_explicit(&e->op->pk.claim,
						 memory_order_acquire);
			if (v == 0) {
				m = e;
				break;
			}
			if (!IS_REG(v)) {
				/* decided elsewhere: unlink, put below */
				bidir_unlink(c, pp, e);
				e->bnext = stale;
				stale = e;
				continue;
			}
			if (registering && (uintptr_t)self < (uintptr_t)e->op) {
				wait_for = e->op;
				op_get(wait_for);
				break;
			}
			/* opened or decided meanwhile: look at it again */
			if (flag_rereg(is_send ? e : e->twin) != CLAIM_REG)
				continue;
			pp = &e->bnext;
		}
		if (m) {
			t = is_send ? m : m->twin;
			/* give our index up first: no partner may find us too */
			if (!atomic_compare_exchange_strong_explicit(
				    cell, st, C_BROKEN, memory_order_acq_rel,
				    memory_order_acquire))
				ret = BM_CELL;
			else if (party_claim(t) != CL_WON)
				ret = BM_RETRY;
			else {
				bidir_unlink(c, pp, m);
				ret = BM_DONE;
			}
		}
		kg_unlock(&c->bidir_lock);
		if (ret == BM_DONE) {
			/* the select waits for our wake: its elems stay */
			if (is_send)
				copy_elem(t->elem, elem, c->elem_size);
			else
				copy_elem(elem, t->elem, c->elem_size);
			atomic_store_explicit(&t->result, RES_VALUE,
					      memory_order_relaxed);
			kg_parker_wake(w, &m->op->pk);
			op_put(m->op);	/* the list's reference */
		}
		while ((e = stale)) {
			stale = e->bnext;
			e->bnext = NULL;
			op_put(e->op);
		}
		if (!wait_for)
			return ret;
		/* a select registering here: let it finish, then look again */
		for (int spins = 0;
		     IS_REG(atomic_load_explicit(&wait_for->pk.claim,
						 memory_order_acquire));)
			if (++spins < 256)
				kg_cpu_relax();
			else
				sched_yield();
		op_put(wait_for);
	}
}

/*
 * The buffer moved past cell e = r + cap: let its sender buffer. A parked
 * sender is resumed with its value staying in the cell.
 */
static void expand(kg_chan_t *c, struct lf_seg *from, uint64_t e,
		   struct kg_worker *w)
{
	/*
	 * Walk from the nearest segment at or before e's that a hint knows:
	 * the last expansion's (it lags while expansions are skipped), the
	 * senders' (e is behind S here, often in their segment) or our own
	 * (cap cells behind e). Every one was loaded inside this read-side
	 * section, so none is freed under us.
	 */
	struct lf_seg *h = atomic_load_explicit(&c->eb_seg,
						memory_order_acquire);
	struct lf_seg *hs = atomic_load_explicit(&c->send_seg,
						 memory_order_acquire);
	uint64_t eid = e >> SEG_SHIFT;
	struct lf_seg *s;

	if (h->id <= eid && h->id > from->id)
		from = h;
	if (hs->id <= eid && hs->id > from->id)
		from = hs;
	if (from->id > eid)
		return;	/* e's segment was removed: its cells are BROKEN */
	s = seg_find(c, from, eid);
	if (s->id != eid)
		return;
	hint_forward(c, &c->eb_seg, s);
	_Atomic uintptr_t *cell = &s->cell[e & SEG_MASK];
	uintptr_t st = atomic_load_explicit(cell, memory_order_acquire);

	for (;;) {
		if (st == C_EMPTY) {
			if (atomic_compare_exchange_weak_explicit(
				    cell, &st, C_EB, memory_order_acq_rel,
				    memory_order_acquire))
				return;
			continue;
		}
		if (st == C_RESUMING) {
			st = wait_resolved(cell);
			continue;
		}
		if (IS_WAITER(st) && (st & W_SEND)) {
			if (!take_waiter(cell, &st, NULL))
				continue;
			/* the value is in the cell already: it is buffered */
			resolve(w, cell, W_CASE(st), C_BUFFERED, RES_VALUE,
				NULL, NULL, 0);
			return;
		}
		return;	/* buffered, taken, broken, or a receiver waits */
	}
}

/*
 * May sender s leave its value in the buffer (s < R + cap)? First from
 * r_seen, a past value of R (R only grows: if it says yes, R does too),
 * then from R itself (unbuffered: R at once, seq_cst after our fetch_add
 * of S, the Dekker pair with a receiver's fetch_add of R then load of S).
 *
 * Before reading R, a buffered channel's sender raises eb_need to s
 * (seq_cst): with lf_recv's fetch_add of R then load of eb_need, a Dekker
 * pair. If our load of R misses receiver s - cap's increment, that
 * receiver's load of eb_need (later in the total order) sees s, and it
 * expands the buffer over our cell: a sender that parks for want of room
 * is always resumed. If our load sees the increment, we buffer here.
 */
static inline bool may_buffer(kg_chan_t *c, uint64_t s)
{
	uint64_t seen, need, r;

	/* unbuffered: a partner's arrival is news, R is read anyway */
	if (!c->cap)
		return s < atomic_load(&c->R);
	seen = atomic_load_explicit(&c->r_seen, memory_order_relaxed);
	if (s < seen + c->cap)
		return true;
	/* seq_cst max: a value >= s already there serves as well */
	need = atomic_load(&c->eb_need);
	while (need < s &&
	       !atomic_compare_exchange_weak(&c->eb_need, &need, s))
		;
	r = atomic_load(&c->R);
	/* relaxed, unordered with other senders: any value stored is one
	 * R had, so it stays a lower bound whoever writes last */
	if (r > seen)
		atomic_store_explicit(&c->r_seen, r, memory_order_relaxed);
	return s < r + c->cap;
}

/*
 * One send: take indices until the value moves (R_DONE), the channel is
 * closed (R_CLOSED), or it would have to wait: with k NULL, R_AGAIN; else
 * k is parked in a cell (R_INSTALLED).
 */
static int lf_send(kg_chan_t *c, const void *val, struct lf_case *k,
		   struct lazy_op *lazy, struct kg_worker *w)
{
	for (;;) {
		struct lf_seg *seg = atomic_load_explicit(&c->send_seg,
							  memory_order_acquire);
		uint64_t s = atomic_fetch_add(&c->S, 1);
		struct lf_seg *cur;
		_Atomic uintptr_t *cell;
		bool stored = false;
		uintptr_t st;

		if (s & CLOSED_BIT) {
			/* keep S at the last real send (kg_chan_len) */
			atomic_fetch_sub(&c->S, 1);
			return R_CLOSED;
		}
		cur = seg_of(c, seg, s);
		/* the hint is at seg already: only a new segment moves it */
		if (cur != seg)
			hint_forward(c, &c->send_seg, cur);
		seg = cur;
		/* a higher id: our cell's segment was removed, all BROKEN */
		if (kg_unlikely(seg->id != s >> SEG_SHIFT))
			continue;
		cell = &seg->cell[s & SEG_MASK];
		/* seq_cst, after our fetch_add: the Dekker pair with an
		 * index given back (hold the cell, then read S) */
		st = atomic_load(cell);
		for (;;) {
			if (st == C_EMPTY || st == C_EB) {
				if (!stored) {
					copy_elem(cell_elem(c, seg, s), val,
						  c->elem_size);
					stored = true;
				}
				if (st == C_EB || may_buffer(c, s)) {
					/* release: the value before BUFFERED */
					if (atomic_compare_exchange_weak_explicit(
						    cell, &st, C_BUFFERED,
						    memory_order_acq_rel,
						    memory_order_acquire))
						return R_DONE;
					continue;
				}
				/* seq_cst: after S's fetch_add and R's load */
				if (kg_unlikely(!c->cap &&
						atomic_load(&c->nbidir))) {
					int m = bidir_meet(c, cell, &st, true,
							   (void *)val, k, w);

					if (m == BM_DONE)
						return R_DONE;
					if (m == BM_CELL)
						continue;
					if (m == BM_RETRY)
						break;
				}
				if (!k && lazy)
					k = lazy_case(lazy, true, (void *)val, c);
				/* a select's pair never parks in a cell */
				if (!k || k->bidir) {
					if (atomic_compare_exchange_weak_explicit(
						    cell, &st, C_BROKEN,
						    memory_order_acq_rel,
						    memory_order_acquire))
						return lazy ? R_NOMEM : R_AGAIN;
					continue;
				}
				if (install(seg, cell, &st, k))
					return R_INSTALLED;
				continue;
			}
			if (st == C_RESUMING) {
				st = wait_resolved(cell);
				continue;
			}
			if (IS_WAITER(st) && !(st & W_SEND)) {
				struct lf_case *rk = W_CASE(st);

				if (!take_waiter(cell, &st, k))
					continue;
				/* a receiver waits: give it our value */
				if (resolve(w, cell, rk, C_DONE, RES_VALUE,
					    rk->elem, val, c->elem_size))
					return R_DONE;
			}
			if (IS_WAITER(st) && (st & W_SEND))
				kg_throw("chan: sender %p found in send cell "
					 "%llu", (void *)st,
					 (unsigned long long)s);
			break;	/* BROKEN, or the receiver left: next index */
		}
	}
}

/*
 * One receive, as lf_send: R_DONE with the value in out, R_CLOSED once
 * closed and drained, R_AGAIN / R_INSTALLED when it would wait.
 */
static int lf_recv(kg_chan_t *c, void *out, struct lf_case *k,
		   struct lazy_op *lazy, struct kg_worker *w)
{
	for (;;) {
		struct lf_seg *seg = atomic_load_explicit(&c->recv_seg,
							  memory_order_acquire);
		uint64_t r = atomic_fetch_add(&c->R, 1), sraw, s;
		uint64_t e = r + c->cap;
		struct lf_seg *cur;
		_Atomic uintptr_t *cell;
		uintptr_t st;
		int spins = 0;

		cur = seg_of(c, seg, r);
		/* the hint is at seg already: only a new segment moves it */
		if (cur != seg)
			hint_forward(c, &c->recv_seg, cur);
		seg = cur;
		/*
		 * Expand the buffer over cell e = r + cap only if its sender
		 * may have found no room: it raised eb_need to e before it
		 * read R (may_buffer; seq_cst, the Dekker pair with our
		 * fetch_add of R). Otherwise it sees our increment and
		 * buffers by itself: the cell needs no EB mark.
		 */
		if (c->cap && atomic_load(&c->eb_need) >= e)
			expand(c, seg, e, w);
		/* a higher id: our cell's segment was removed, all BROKEN */
		if (kg_unlikely(seg->id != r >> SEG_SHIFT))
			continue;
		cell = &seg->cell[r & SEG_MASK];
		/* seq_cst, after our fetch_add: see lf_send */
		st = atomic_load(cell);
		/*
		 * A buffered value needs nothing from S (its sender came:
		 * r < S), and not reading S on this path keeps S's line with
		 * the senders. Otherwise S, read after our fetch_add of R
		 * (seq_cst): the Dekker pair with close's fetch_or of S then
		 * load of R.
		 */
		if (st != C_BUFFERED) {
			sraw = atomic_load(&c->S);
			s = sraw & ~CLOSED_BIT;
			if ((sraw & CLOSED_BIT) && r >= s)
				return R_CLOSED;	/* no sender comes */
		}
		for (;;) {
			if (st == C_BUFFERED) {
				copy_elem(out, cell_elem(c, seg, r),
					  c->elem_size);
				atomic_store_explicit(cell, C_DONE,
						      memory_order_release);
				return R_DONE;
			}
			if (st == C_EMPTY || st == C_EB) {
				uint64_t now = atomic_load(&c->S);

				if (r < (now & ~CLOSED_BIT)) {
					/* our sender has its index: it is on
					 * the way, unless descheduled */
					if (++spins < BREAK_SPINS) {
						kg_cpu_relax();
						st = atomic_load_explicit(
							cell,
							memory_order_acquire);
						continue;
					}
					/* too late: break it, both move on */
					if (!atomic_compare_exchange_weak_explicit(
						    cell, &st, C_BROKEN,
						    memory_order_acq_rel,
						    memory_order_acquire))
						continue;
					break;
				}
				/* seq_cst: after R's fetch_add and S's load;
				 * closed, no select's send may meet us */
				if (kg_unlikely(!c->cap &&
						!(now & CLOSED_BIT) &&
						atomic_load(&c->nbidir))) {
					int m = bidir_meet(c, cell, &st, false,
							   out, k, w);

					if (m == BM_DONE)
						return R_DONE;
					if (m == BM_CELL)
						continue;
					if (m == BM_RETRY)
						break;
				}
				if (!k && lazy)
					k = lazy_case(lazy, false, out, c);
				/* a select's pair never parks in a cell */
				if (!k || k->bidir) {
					if (!atomic_compare_exchange_weak_explicit(
						    cell, &st, C_BROKEN,
						    memory_order_acq_rel,
						    memory_order_acquire))
						continue;
					if (lazy)
						return R_NOMEM;
					if (now & CLOSED_BIT)
						break;	/* retry: sees closed */
					return R_AGAIN;
				}
				if (install(seg, cell, &st, k))
					return R_INSTALLED;
				continue;
			}
			if (st == C_RESUMING) {
				st = wait_resolved(cell);
				continue;
			}
			if (IS_WAITER(st) && (st & W_SEND)) {
				struct lf_case *sk = W_CASE(st);

				if (!take_waiter(cell, &st, k))
					continue;
				/* a sender waits with its value in the cell */
				if (resolve(w, cell, sk, C_DONE, RES_VALUE, out,
					    cell_elem(c, seg, r), c->elem_size))
					return R_DONE;
			}
			if (IS_WAITER(st) && !(st & W_SEND))
				kg_throw("chan: receiver %p found in receive "
					 "cell %llu", (void *)st,
					 (unsigned long long)r);
			break;	/* BROKEN: next index */
		}
	}
}

/* ------------------------------------------------------------------ */
/* Send, receive, close                                                */
/* ------------------------------------------------------------------ */

static void unlock_none(void *arg)
{
	(void)arg;
}

static void chan_abandon(struct kg_co *co, int pass);

/*
 * Wait in op until a party or the deadline resolves it. Meanwhile our
 * coroutine names op, for chan_abandon if the runtime ends before we run
 * again. Only the owner writes co->abandon and co->wait_rec; only the
 * teardown, when no worker runs any more, reads them from elsewhere.
 */
static void op_wait(struct lf_op *op, uint64_t deadline)
{
	struct kg_co *co = op->pk.co;

	if (co) {
		co->wait_rec = op;
		co->abandon = chan_abandon;
	}
	kg_parker_wait(&op->pk, unlock_none, NULL, deadline);
	if (co)
		co->abandon = NULL;
}

/*
 * kg_run is ending and co, alive, never ran again after waiting in op
 * (main returned first: Go drops such goroutines too). Let go of what the
 * runtime holds for it, all in pass 0 (nobody is woken). A simple record
 * lives on co's stack, about to be unmapped: if no party took its cell,
 * the cell must not lead to it any more, so break the cell (a party would
 * move past it). The cell's segment is still there: a segment holding a
 * waiter is never unlinked, and kg_chan_free refuses a channel that has
 * one. A record on the heap is given up as if timed out and withdrawn
 * from the cells and bidir lists that still hold it, as its owner would
 * have done, and our reference to it goes. A value a party already moved
 * is spent with co. No thread may be using the channel meanwhile.
 */
static void chan_abandon(struct kg_co *co, int pass)
{
	struct lf_op *op = co->wait_rec;

	if (pass != 0)
		return;
	if (!op->simple) {
		kg_parker_claim(&op->pk, KG_CLAIM_TIMEOUT);
		kg_parker_done(&op->pk);
		op_withdraw(op);
		bidir_leave(op);
		op_put(op);
		return;
	}
	if (atomic_load_explicit(&op->pk.claim, memory_order_acquire) == 0) {
		struct lf_case *k = &op->cases[0];
		uintptr_t st = W_OF(k);

		lf_read_lock();
		atomic_compare_exchange_strong(k->cell, &st, C_BROKEN);
		lf_read_unlock();
	}
}

/*
 * Could a send (is_send) or a receive complete on c now, by the counters?
 * False means it could not at one moment during the call: the counter
 * the other side raises is read second (a receive is not ready while
 * R >= S: no value buffered, no sender parked; a send while S >= R + cap:
 * no room, no receiver parked). Closed counts as ready (the operation
 * ends at once). A select waiting in both directions (nbidir) is not in
 * the counters: the caller tries instead.
 */
static inline bool chan_ready(kg_chan_t *c, bool is_send)
{
	uint64_t s, r;

	if (is_send) {
		s = atomic_load(&c->S);
		r = atomic_load(&c->R);
		return (s & CLOSED_BIT) || s < r + c->cap;
	}
	r = atomic_load(&c->R);
	s = atomic_load(&c->S);
	return (s & CLOSED_BIT) || r < s;
}

/*
 * One send or receive. deadline: 0 never waits (try_), UINT64_MAX waits
 * forever, else the kg_now_ns() limit.
 */
static int chan_op(kg_chan_t *c, bool is_send, void *elem, uint64_t deadline,
		   struct kg_worker *w)
{
	bool timed = deadline != 0 && deadline != UINT64_MAX;
	int would_wait = timed ? -ETIMEDOUT : -EAGAIN;
	union lf_op1 frame;
	struct lazy_op lazy = { NULL, &frame, deadline == UINT64_MAX };
	struct lf_op *op;
	uint32_t claim;
	uint8_t res;
	int r;

	/* w: called by the runtime itself (a timer firing on a worker) */
	if (!w)
		kg_note_caller();
	if (timed && kg_now_ns() >= deadline)
		deadline = 0;	/* already passed: one try */
	if (deadline == 0 && !atomic_load(&c->nbidir)) {
		/* cheap checks first: a try that would fail takes no index
		 * (not while a select waits in the bidir list: it may meet) */
		if (!chan_ready(c, is_send))
			return would_wait;
	}
	lf_read_lock();
	r = is_send ? lf_send(c, elem, NULL, deadline ? &lazy : NULL, w) :
		      lf_recv(c, elem, NULL, deadline ? &lazy : NULL, w);
	lf_read_unlock();
	/*
	 * A record made for a park whose install lost its CAS, after which
	 * the operation finished another way: no cell holds it, only we do.
	 */
	if (kg_unlikely(r != R_INSTALLED && lazy.op && !lazy.op->simple))
		op_put(lazy.op);
	switch (r) {
	case R_DONE:
		return 0;
	case R_CLOSED:
		return -EPIPE;
	case R_AGAIN:
		return would_wait;
	case R_NOMEM:
		return -ENOMEM;
	}
	/* parked in a cell */
	op = lazy.op;
	kg_co_waiting(op->pk.co, is_send ? "chan send" : "chan recv", c);
	/* a simple op has no deadline: arming it cannot fail */
	if (kg_parker_arm(&op->pk, deadline) &&
	    kg_parker_claim(&op->pk, KG_CLAIM_TIMEOUT)) {
		op_withdraw(op);
		op_put(op);
		return -ENOMEM;
	}
	op_wait(op, deadline);
	claim = atomic_load_explicit(&op->pk.claim, memory_order_acquire);
	res = atomic_load_explicit(&op->cases[0].result, memory_order_relaxed);
	/* a simple op's taker is done with it: it goes with our frame; a
	 * heap record leaves the cell no party took (timed out) */
	if (!op->simple) {
		op_withdraw(op);
		op_put(op);
	}
	if (claim == KG_CLAIM_TIMEOUT)
		return -ETIMEDOUT;
	return res == RES_VALUE ? 0 : -EPIPE;
}

static inline int check_send(kg_chan_t *c, const void *elem)
{
	if (!c || (!elem && c->elem_size))
		return -EINVAL;
	return 0;
}

int kg_chan_send(kg_chan_t *c, const void *elem)
{
	int r = check_send(c, elem);

	return r ? r : chan_op(c, true, (void *)elem, UINT64_MAX, NULL);
}

int kg_chan_try_send(kg_chan_t *c, const void *elem)
{
	int r = check_send(c, elem);

	return r ? r : chan_op(c, true, (void *)elem, 0, NULL);
}

int kg_chan_send_timeout(kg_chan_t *c, const void *elem, uint64_t ns)
{
	int r = check_send(c, elem);

	if (r)
		return r;
	return chan_op(c, true, (void *)elem,
		       ns ? kg_deadline(kg_now_ns(), ns) : 0, NULL);
}

int kg_chan_recv(kg_chan_t *c, void *out)
{
	return c ? chan_op(c, false, out, UINT64_MAX, NULL) : -EINVAL;
}

int kg_chan_try_recv(kg_chan_t *c, void *out)
{
	return c ? chan_op(c, false, out, 0, NULL) : -EINVAL;
}

int kg_chan_recv_timeout(kg_chan_t *c, void *out, uint64_t ns)
{
	if (!c)
		return -EINVAL;
	return chan_op(c, false, out, ns ? kg_deadline(kg_now_ns(), ns) : 0,
		       NULL);
}

/*
 * The segment holding index i, walking from the list head (closing and
 * freeing only: the head is never past a cell a partner may still reach).
 */
static struct lf_seg *seg_at(kg_chan_t *c, struct lf_seg *from, uint64_t i)
{
	if (!from)
		from = atomic_load_explicit(&c->head, memory_order_acquire);
	return seg_find(c, from, i >> SEG_SHIFT);
}

/*
 * c was just closed: the selects waiting in both directions here complete
 * their receive case, closed (as Go's closechan releases the receivers
 * first); one still registering is flagged and sees the bit in its tries.
 */
static void bidir_close(kg_chan_t *c)
{
	struct lf_case *e, **pp, *won = NULL, *stale = NULL;

	kg_lock(&c->bidir_lock);
	for (pp = &c->bidir; (e = *pp);) {
		if (flag_rereg(e) == CLAIM_REG) {
			pp = &e->bnext;
			continue;
		}
		/* open (claimed now for its receive) or decided elsewhere */
		bool mine = party_claim(e) == CL_WON;

		bidir_unlink(c, pp, e);
		e->bnext = mine ? won : stale;
		*(mine ? &won : &stale) = e;
	}
	kg_unlock(&c->bidir_lock);
	while ((e = won)) {
		won = e->bnext;
		e->bnext = NULL;
		atomic_store_explicit(&e->result, RES_CLOSED,
				      memory_order_relaxed);
		kg_parker_wake(NULL, &e->op->pk);
		op_put(e->op);
	}
	while ((e = stale)) {
		stale = e->bnext;
		e->bnext = NULL;
		op_put(e->op);
	}
}

/*
 * Closing releases every waiter, and each lives on its own stack, a page
 * apart: a TLB and cache miss each, where a million parked receivers spent
 * 85% of the close on one load (their op's). A prefetch that misses the
 * TLB waits for its page walk, so, as runq_prefetch does, the loop starts
 * the misses 4 at a time, for the waiters 4..7 cells on (in the next
 * segment at a segment's end), and they overlap. A hint only: a cell may
 * change before the loop reaches it. Inside the read-side section, which
 * keeps the next segment from being freed.
 */
static inline void close_prefetch(struct lf_seg *seg, uint64_t i,
				  uint64_t hi)
{
	uint64_t j = i + 4, k;

	if (i & 3 || j >= hi)
		return;
	if (j >> SEG_SHIFT != seg->id) {
		seg = atomic_load_explicit(&seg->next, memory_order_acquire);
		if (!seg || seg->id != j >> SEG_SHIFT)
			return;
	}
	for (k = j; k < j + 4 && k < hi; k++) {
		uintptr_t st = atomic_load_explicit(&seg->cell[k & SEG_MASK],
						    memory_order_relaxed);

		if (IS_WAITER(st))
			__builtin_prefetch(W_CASE(st), 1);
	}
}

int kg_chan_close(kg_chan_t *c)
{
	struct lf_seg *seg = NULL;
	uint64_t sraw, rnow, lo, hi, i;

	if (!c)
		return -EINVAL;
	kg_note_caller();
	lf_read_lock();
	/* seq_cst: the bit before reading R; pairs with lf_recv's fetch_add
	 * of R then load of S */
	sraw = atomic_fetch_or(&c->S, CLOSED_BIT);
	if (sraw & CLOSED_BIT) {
		lf_read_unlock();
		return -EPIPE;
	}
	rnow = atomic_load(&c->R);
	lo = rnow < sraw ? rnow : sraw;
	hi = rnow < sraw ? sraw : rnow;
	/*
	 * [lo, hi) holds the cells no partner will reach: senders past the
	 * receivers (they fail), receivers past the last sender (closed).
	 * Buffered values stay; empty cells break so that operations in
	 * flight move on and see the channel closed.
	 */
	for (i = lo; i < hi; i++) {
		_Atomic uintptr_t *cell;
		uintptr_t st;

		seg = seg_at(c, seg, i);
		if (seg->id != i >> SEG_SHIFT)
			continue;	/* removed: BROKEN */
		close_prefetch(seg, i, hi);
		cell = &seg->cell[i & SEG_MASK];
		st = atomic_load_explicit(cell, memory_order_acquire);
		for (;;) {
			if (st == C_EMPTY || st == C_EB) {
				if (atomic_compare_exchange_weak_explicit(
					    cell, &st, C_BROKEN,
					    memory_order_acq_rel,
					    memory_order_acquire))
					break;
				continue;
			}
			if (st == C_RESUMING) {
				st = wait_resolved(cell);
				continue;
			}
			if (IS_WAITER(st)) {
				if (!take_waiter(cell, &st, NULL))
					continue;
				resolve(NULL, cell, W_CASE(st), C_BROKEN,
					RES_CLOSED, NULL, NULL, 0);
			}
			break;
		}
	}
	/* seq_cst, after the bit: a select that links later sees it */
	if (!c->cap && atomic_load(&c->nbidir))
		bidir_close(c);
	lf_read_unlock();
	return 0;
}

/*
 * Values buffered now: BUFFERED cells can only lie in [R, R + cap), so
 * count them there (O(cap); senders that failed or left cells behind
 * make S - R no measure of it).
 */
size_t kg_chan_len(kg_chan_t *c)
{
	struct lf_seg *seg;
	uint64_t r, s, end, i;
	size_t n = 0;

	if (!c || !c->cap)
		return 0;
	lf_read_lock();
	/* the hint before R: its segment is at or before R's */
	seg = atomic_load_explicit(&c->recv_seg, memory_order_acquire);
	r = atomic_load(&c->R);
	s = atomic_load(&c->S) & ~CLOSED_BIT;
	end = s < r + c->cap ? s : r + c->cap;
	for (i = r; i < end; i++) {
		seg = seg_of(c, seg, i);
		if (seg->id != i >> SEG_SHIFT)
			continue;	/* removed: BROKEN */
		n += atomic_load_explicit(&seg->cell[i & SEG_MASK],
					  memory_order_acquire) == C_BUFFERED;
	}
	lf_read_unlock();
	return n;
}

size_t kg_chan_cap(kg_chan_t *c)
{
	return c ? c->cap : 0;
}

size_t kg_chan_elem_size(kg_chan_t *c)
{
	return c ? c->elem_size : 0;
}

kg_chan_t *kg_chan_make(size_t elem_size, size_t capacity)
{
	kg_chan_t *c;
	struct lf_seg *s0;
	size_t bytes;

	if (elem_size > KG_CHAN_ELEM_MAX || capacity > ((size_t)1 << 48) ||
	    __builtin_mul_overflow(elem_size, capacity, &bytes) ||
	    bytes > ((size_t)1 << 48)) {
		errno = EINVAL;
		return NULL;
	}
	c = aligned_alloc(KG_CACHELINE, (sizeof(*c) + KG_CACHELINE - 1) &
						~(size_t)(KG_CACHELINE - 1));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->elem_size = elem_size;
	c->cap = capacity;
	c->seg_bytes = sizeof(struct lf_seg) + SEG_CELLS * elem_size;
	s0 = calloc(1, c->seg_bytes);
	if (!s0) {
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	atomic_store(&c->send_seg, s0);
	atomic_store(&c->recv_seg, s0);
	atomic_store(&c->eb_seg, s0);
	atomic_store(&c->head, s0);
	return c;
}

static void chan_timer_stop(struct chan_timer *ct);

static void chan_free_rcu(struct rcu_head *h)
{
	kg_chan_t *c = caa_container_of(h, kg_chan_t, rcu);
	struct lf_seg *s = atomic_load(&c->head), *n;

	/* after a grace period: pinned segments go with their last unpin */
	for (; s; s = n) {
		n = atomic_load(&s->next);
		if (!(atomic_fetch_or(&s->pins, PIN_RETIRED) & PIN_RETIRED))
			seg_try_free(s);
	}
	free(c);
}

/*
 * kg_chan_free's part of the bidir list: refuse (true) while a select
 * waits in it, else unlink the pairs of selects whose wait is over but
 * that have not left yet (they see linked == 0 and touch c no more).
 */
static bool bidir_free(kg_chan_t *c)
{
	struct lf_case *e, *stale;
	uint32_t v;

	kg_lock(&c->bidir_lock);
	for (e = c->bidir; e; e = e->bnext) {
		v = atomic_load_explicit(&e->op->pk.claim,
					 memory_order_acquire);
		if (v == 0 || IS_REG(v)) {
			kg_unlock(&c->bidir_lock);
			fprintf(stderr, "kgreen: kg_chan_free: a select still "
				"waits on channel %p; it is not freed\n",
				(void *)c);
			return true;
		}
	}
	stale = c->bidir;
	for (e = stale; e; e = e->bnext)
		atomic_store_explicit(&e->linked, 0, memory_order_release);
	c->bidir = NULL;
	atomic_store(&c->nbidir, 0);
	kg_unlock(&c->bidir_lock);
	while ((e = stale)) {
		stale = e->bnext;
		e->bnext = NULL;
		op_put(e->op);
	}
	return false;
}

/*
 * Free c, or refuse (-EBUSY, c untouched and usable: a timer channel's
 * timer still runs, so its waiter is still woken) while an operation
 * waits on it.
 */
static int chan_free(kg_chan_t *c)
{
	struct lf_seg *s;
	int pass, i;

	if (bidir_free(c))
		return -EBUSY;
	lf_read_lock();
	/* pass 0: refuse while an operation still waits; pass 1: drop the
	 * references cells hold on abandoned (timed-out, lost) operations */
	for (pass = 0; pass < 2; pass++) {
		/*
		 * Not refused: stop the timer now (outside the read-side
		 * section: the cancel waits out a callback running now).
		 * Refused, the timer runs on and still wakes the waiter.
		 */
		if (pass == 1 && c->timer) {
			lf_read_unlock();
			chan_timer_stop(c->timer);
			lf_read_lock();
		}
		for (s = atomic_load(&c->head); s; s = atomic_load(&s->next)) {
			for (i = 0; i < (int)SEG_CELLS; i++) {
				uintptr_t st = atomic_load(&s->cell[i]);
				uint32_t v;

				if (!IS_WAITER(st))
					continue;
				v = atomic_load(&W_CASE(st)->op->pk.claim);
				if (pass == 0 && (v == 0 || IS_REG(v))) {
					lf_read_unlock();
					fprintf(stderr,
						"kgreen: kg_chan_free: operations "
						"still wait on channel %p; it is "
						"not freed\n", (void *)c);
					return -EBUSY;
				}
				/* (a simple op's cell keeps no reference; the
				 * owner may be withdrawing it: one CAS wins) */
				if (pass == 1) {
					struct lf_op *op = W_CASE(st)->op;

					if (atomic_compare_exchange_strong(
						    &s->cell[i], &st,
						    C_BROKEN) &&
					    !op->simple)
						op_put(op);
				}
			}
		}
	}
	lf_read_unlock();
	/* operations that just finished may still be inside their read-side
	 * sections, touching segments: free after a grace period */
	urcu_memb_call_rcu(&c->rcu, chan_free_rcu);
	return 0;
}

void kg_chan_free(kg_chan_t *c)
{
	if (c)
		chan_free(c);
}

/* ------------------------------------------------------------------ */
/* Select                                                              */
/* ------------------------------------------------------------------ */

#define SELECT_STACK_CASES 8

/*
 * Test hook (tests/chan_model.c): nonzero makes kg_select poll its cases
 * in order instead of at random, so that a model can predict it.
 */
int kg__select_in_order;

static int select_validate(struct kg_case *cases, size_t n, int64_t timeout)
{
	size_t i;

	if ((!cases && n) || n > KG_SELECT_MAX || timeout < -1)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		struct kg_case *k = &cases[i];

		if (k->op != KG_SEND && k->op != KG_RECV)
			return -EINVAL;
		if (k->ch && k->op == KG_SEND && !k->elem && k->ch->elem_size)
			return -EINVAL;
		k->ok = false;
	}
	return 0;
}

/* Nothing can ever be ready: wait out the timeout (or forever). */
static int select_none(int64_t timeout)
{
	struct kg_parker pk;
	uint64_t deadline;
	int r;

	if (timeout == 0)
		return -EAGAIN;
	deadline = timeout < 0 ? UINT64_MAX :
				 kg_deadline(kg_now_ns(), (uint64_t)timeout);
	kg_parker_init(&pk);
	r = kg_parker_arm(&pk, deadline);
	if (r)
		return r;
	kg_co_waiting(pk.co, "select (no cases)", NULL);
	kg_parker_wait(&pk, unlock_none, NULL, deadline);
	return -ETIMEDOUT;
}

/* Does some channel have both a send and a receive case? */
static bool both_directions(struct kg_case *cases, uint32_t *order,
			    uint32_t nact)
{
	uint32_t i, j;

	for (i = 0; i < nact; i++)
		for (j = i + 1; j < nact; j++)
			if (cases[order[i]].ch == cases[order[j]].ch &&
			    cases[order[i]].op != cases[order[j]].op)
				return true;
	return false;
}

/* Try the cases in poll order without waiting: index, -EPIPE, -EAGAIN. */
static int select_try(struct kg_case *cases, uint32_t *order, uint32_t nact)
{
	uint32_t i;

	for (i = 0; i < nact; i++) {
		struct kg_case *k = &cases[order[i]];
		int r = chan_op(k->ch, k->op == KG_SEND, k->elem, 0, NULL);

		if (r == 0) {
			k->ok = true;
			return (int)order[i];
		}
		if (r == -EPIPE)
			return k->op == KG_RECV ? (int)order[i] : -EPIPE;
	}
	return -EAGAIN;
}

/*
 * A select with a default found no case ready, one channel at a time. Go
 * looks at all of them at once (under their locks): default only if, at
 * one moment, none was ready (TestNonblockSelectRace: c2 becomes ready
 * after its try, c1 stops being ready before its try). So confirm with a
 * double collect of the counters: read every channel's S and R twice;
 * if no case looked ready and nothing moved in between, that moment
 * existed. A case that looks ready is tried again (a bounded number of
 * rounds: under constant traffic, default is as good an answer as Go's
 * own scheduler would give a moment later). The proof assumes counters
 * only grow; an index given back (give_back_index) lowers one, so changes
 * that undo themselves on two channels between the collects could, in
 * principle, hide a moment: it needs parked operations withdrawing on
 * both at just those times.
 */
static int select_default(struct kg_case *cases, uint32_t *order,
			  uint32_t nact)
{
	uint64_t stack_snap[2 * SELECT_STACK_CASES], *snap = stack_snap;
	int round, r = -EAGAIN;
	uint32_t i;

	if (nact > SELECT_STACK_CASES) {
		snap = malloc(2 * nact * sizeof(*snap));
		if (!snap)
			return -EAGAIN;	/* the tries said so */
	}
	for (round = 0; round < 4; round++) {
		bool again = false, same = true;

		for (i = 0; i < nact && !again; i++) {
			kg_chan_t *c = cases[order[i]].ch;

			if (atomic_load(&c->nbidir) ||
			    chan_ready(c, cases[order[i]].op == KG_SEND))
				again = true;
			snap[2 * i] = atomic_load(&c->S);
			snap[2 * i + 1] = atomic_load(&c->R);
		}
		if (!again) {
			for (i = 0; i < nact && same; i++) {
				kg_chan_t *c = cases[order[i]].ch;

				same = snap[2 * i] == atomic_load(&c->S) &&
				       snap[2 * i + 1] == atomic_load(&c->R);
			}
			if (same)
				break;	/* none was ready, all at once */
		}
		r = select_try(cases, order, nact);
		if (r != -EAGAIN)
			break;
	}
	if (snap != stack_snap)
		free(snap);
	return r;
}

static int by_chan_dir(const void *a, const void *b, void *arg)
{
	const struct lf_op *op = arg;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	const struct lf_case *x = &op->cases[i], *y = &op->cases[j];

	if (x->ch != y->ch)
		return (uintptr_t)x->ch < (uintptr_t)y->ch ? -1 : 1;
	if (x->is_send != y->is_send)
		return x->is_send ? 1 : -1;
	return i < j ? -1 : 1;	/* poll order within a direction */
}

/*
 * Mark the cases of channels named in both directions (op->cases are in
 * poll order). On each such channel the first receive and the first send
 * in poll order become the pair (receive: the list node, twins of each
 * other); the channel's other cases are bidir too but stand aside (no
 * twin): the pair speaks for them, as a duplicate case of a ready channel
 * would never be the only way to it. idx: nact scratch entries. Returns
 * whether any channel has both directions.
 */
static bool mark_pairs(struct lf_op *op, uint32_t *idx, uint32_t nact)
{
	uint32_t i, j, k;
	bool any = false;

	for (i = 0; i < nact; i++)
		idx[i] = i;
	qsort_r(idx, nact, sizeof(*idx), by_chan_dir, op);
	for (i = 0; i < nact; i = j) {
		struct lf_case *first = &op->cases[idx[i]], *snd = NULL;

		for (j = i + 1; j < nact && op->cases[idx[j]].ch == first->ch;
		     j++)
			if (!snd && op->cases[idx[j]].is_send)
				snd = &op->cases[idx[j]];
		if (first->is_send || !snd)
			continue;	/* one direction only */
		any = true;
		for (k = i; k < j; k++)
			op->cases[idx[k]].bidir = true;
		first->twin = snd;
		snd->twin = first;
	}
	return any;
}

/*
 * Register case k (its op is REGISTERING). Returns its index + 1 if it
 * completed at once (the op is then claimed for it; a receive that found
 * the channel closed too), -EPIPE for a send on a closed channel (claimed
 * too), 0 if parked in a cell or, for a pair's case, if it would wait.
 */
static int select_register(struct lf_op *op, struct lf_case *k,
			   struct kg_case *uc)
{
	int r;

	lf_read_lock();
	r = k->is_send ? lf_send(k->ch, k->elem, k, NULL, NULL) :
			 lf_recv(k->ch, k->elem, k, NULL, NULL);
	lf_read_unlock();
	if (r == R_INSTALLED || r == R_AGAIN)
		return 0;
	/* done or closed while registering: nobody else can have won (the
	 * claim says REGISTERING), take it for this case */
	atomic_store_explicit(&op->pk.claim, k->idx + 1, memory_order_release);
	if (r == R_DONE) {
		uc->ok = true;
		return (int)k->idx + 1;
	}
	return k->is_send ? -EPIPE : (int)k->idx + 1;	/* closed: !ok */
}

/*
 * Register a pair (node: its receive case; node->twin its send case), as
 * select_register: on an unbuffered channel link it in the bidir list,
 * then try both directions once, in a random order; on a buffered one
 * retry until one completes (one is ready whenever the channel is quiet).
 */
static int select_register_pair(struct lf_op *op, struct lf_case *node,
				struct kg_case *cases)
{
	kg_chan_t *c = node->ch;
	int spins = 0;

	if (!c->cap &&
	    !atomic_load_explicit(&node->linked, memory_order_relaxed))
		bidir_link(node);
	for (;;) {
		struct lf_case *first =
			kg__select_in_order ?
				(node->idx < node->twin->idx ? node : node->twin) :
			kg_fastrand() & 1 ? node : node->twin;
		struct lf_case *k = first;
		int r, i;

		if (!c->cap) {
			r = select_register(op, first, &cases[first->idx]);
			if (!r)
				r = select_register(op, first->twin,
						    &cases[first->twin->idx]);
			return r;
		}
		/*
		 * Buffered: plain tries, whose first look at the counters
		 * takes no index when the case cannot go (a try that took
		 * one would break a cell inside the buffer and shrink it
		 * until receivers pass). Nobody can win us while we are
		 * REGISTERING: a try that goes is this case's.
		 */
		for (i = 0; i < 2; i++, k = k->twin) {
			r = chan_op(c, k->is_send, k->elem, 0, NULL);
			if (r != 0 && r != -EPIPE)
				continue;
			atomic_store_explicit(&op->pk.claim, k->idx + 1,
					      memory_order_release);
			if (r == 0) {
				cases[k->idx].ok = true;
				return (int)k->idx + 1;
			}
			return k->is_send ? -EPIPE : (int)k->idx + 1;
		}
		if (++spins < 64)
			kg_cpu_relax();
		else
			sched_yield();
	}
}

/* Register case k, or the pair it belongs to: as select_register. */
static int select_register_any(struct lf_op *op, struct lf_case *k,
			       struct kg_case *cases)
{
	/* again after a party broke its cell: let go of that one first */
	case_withdraw(k);
	if (!k->bidir)
		return select_register(op, k, &cases[k->idx]);
	if (!k->twin)
		return 0;	/* stands aside: its channel's pair speaks */
	return select_register_pair(op, k->is_send ? k->twin : k, cases);
}

int kg_select(struct kg_case *cases, size_t n, int64_t timeout)
{
	uint32_t stack_order[2 * SELECT_STACK_CASES], *order = stack_order;
	uint32_t *scratch, i, nact = 0, claim;
	struct lf_op *op = NULL;
	uint64_t deadline;
	bool pairs;
	int r;

	r = select_validate(cases, n, timeout);
	if (r)
		return r;
	kg_note_caller();
	for (i = 0; i < n; i++)
		nact += cases[i].ch != NULL;
	if (!nact)
		return select_none(timeout);
	if (nact > SELECT_STACK_CASES) {
		order = malloc(2 * nact * sizeof(*order));
		if (!order)
			return -ENOMEM;
	}
	scratch = order + nact;
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
		order[nact] = order[j];
		order[j] = i;
		nact++;
	}
	/* pass 1: the first ready case in poll order */
	r = select_try(cases, order, nact);
	if (r == -EAGAIN && deadline == 0 && nact > 1)
		r = select_default(cases, order, nact);
	if (r != -EAGAIN || deadline == 0)
		goto out;

	/* pass 2: register every case, in poll order, while REGISTERING */
	op = op_new(nact, CLAIM_REG);
	if (!op) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nact; i++) {
		struct kg_case *uc = &cases[order[i]];

		case_init(&op->cases[i], op, order[i], uc->op == KG_SEND,
			  uc->elem, uc->ch);
	}
	pairs = (nact > 16 || both_directions(cases, order, nact)) &&
		mark_pairs(op, scratch, nact);
	for (i = 0; i < nact; i++) {
		/* a pair registers once, through its node (receive case) */
		if (op->cases[i].bidir && op->cases[i].is_send)
			continue;
		r = select_register_any(op, &op->cases[i], cases);
		if (r) {
			r = r < 0 ? r : r - 1;
			goto done_early;
		}
	}
	/*
	 * Open the claim. Parties that met a case meanwhile broke its cell
	 * (or flagged its pair) and flagged it (REREG): register those
	 * again, still REGISTERING.
	 */
	for (;;) {
		uint32_t v = CLAIM_REG;

		/* acq_rel: pairs with party_claim's flag-then-bit CAS */
		if (atomic_compare_exchange_strong_explicit(
			    &op->pk.claim, &v, 0, memory_order_acq_rel,
			    memory_order_acquire))
			break;
		atomic_store_explicit(&op->pk.claim, CLAIM_REG,
				      memory_order_seq_cst);
		for (i = 0; i < nact; i++) {
			struct lf_case *k = &op->cases[i];

			if (!atomic_exchange_explicit(&k->rereg, 0,
						      memory_order_acquire))
				continue;
			/* a pair is tried whole: its twin's flag is covered */
			if (k->bidir && k->twin)
				atomic_store_explicit(&k->twin->rereg, 0,
						      memory_order_relaxed);
			r = select_register_any(op, k, cases);
			if (r) {
				r = r < 0 ? r : r - 1;
				goto done_early;
			}
		}
	}
	kg_co_waiting(op->pk.co, "select", cases[order[0]].ch);
	/* registered: order is not needed any more (nor kept while we wait) */
	if (order != stack_order) {
		free(order);
		order = stack_order;
	}
	if (kg_parker_arm(&op->pk, deadline) &&
	    kg_parker_claim(&op->pk, KG_CLAIM_TIMEOUT)) {
		r = -ENOMEM;
		goto done_early;
	}
	op_wait(op, deadline);
	claim = atomic_load_explicit(&op->pk.claim, memory_order_acquire);
	if (claim == KG_CLAIM_TIMEOUT) {
		r = -ETIMEDOUT;
	} else {
		struct kg_case *uc = &cases[claim - 1];
		uint8_t res = 0;

		for (i = 0; i < nact; i++)
			if (op->cases[i].idx == claim - 1)
				res = atomic_load_explicit(&op->cases[i].result,
							   memory_order_relaxed);
		if (res == RES_VALUE) {
			uc->ok = true;
			r = (int)(claim - 1);
		} else {
			r = uc->op == KG_SEND ? -EPIPE : (int)(claim - 1);
		}
	}
done_early:
	/* take our cases out of the cells no party took, and the lists */
	op_withdraw(op);
	if (pairs)
		bidir_leave(op);
	op_put(op);
out:
	if (order != stack_order)
		free(order);
	return r;
}

/* ------------------------------------------------------------------ */
/* Timer channels                                                      */
/* ------------------------------------------------------------------ */

struct chan_timer {
	struct kg_timer t;
	kg_chan_t *ch;
	uint64_t period;		/* 0: fire once (kg_after) */
	struct kg_rt *rt;
};

struct kg_ticker {
	struct chan_timer ct;
};

/*
 * Timer callback (scheduler mode, heap lock held): deliver the time
 * without waiting; a full channel drops the tick, as Go's do.
 */
static uint64_t chan_timer_fire(struct kg_worker *w, struct kg_timer *t)
{
	struct chan_timer *ct = t->arg;
	uint64_t now = kg_now_ns(), next;

	chan_op(ct->ch, true, &now, 0, w);
	if (!ct->period)
		return 0;
	next = t->when + ct->period;
	if (next <= now)	/* fell behind: skip the missed ticks */
		next = kg_deadline(now, ct->period);
	return next;
}

static struct chan_timer *chan_timer_new(uint64_t ns, uint64_t period)
{
	struct kg_rt *rt = kg_rt_current();
	struct chan_timer *ct;
	int err;

	if (!rt) {
		errno = EPERM;
		return NULL;
	}
	ct = calloc(1, sizeof(struct kg_ticker));
	if (!ct) {
		errno = ENOMEM;
		return NULL;
	}
	ct->ch = kg_chan_make(sizeof(uint64_t), 1);
	if (!ct->ch) {
		free(ct);
		errno = ENOMEM;
		return NULL;
	}
	ct->ch->timer = ct;
	ct->period = period;
	ct->rt = rt;
	ct->t.heap_idx = -1;
	ct->t.fn = chan_timer_fire;
	ct->t.arg = ct;
	err = kg_timer_start(rt, &ct->t, kg_deadline(kg_now_ns(), ns));
	if (err) {
		ct->ch->timer = NULL;
		kg_chan_free(ct->ch);
		free(ct);
		errno = -err;
		return NULL;
	}
	return ct;
}

/* Disarm and free the timer (its channel is freed by the caller). */
static void chan_timer_stop(struct chan_timer *ct)
{
	kg_timer_cancel(&ct->t);
	ct->ch->timer = NULL;
	free(ct);
}

kg_chan_t *kg_after(uint64_t ns)
{
	struct chan_timer *ct = chan_timer_new(ns, 0);

	return ct ? ct->ch : NULL;
}

kg_ticker_t *kg_ticker_make(uint64_t ns)
{
	if (!ns) {
		errno = EINVAL;
		return NULL;
	}
	return (kg_ticker_t *)chan_timer_new(ns, ns);
}

kg_chan_t *kg_ticker_chan(kg_ticker_t *t)
{
	return t ? t->ct.ch : NULL;
}

int kg_ticker_reset(kg_ticker_t *t, uint64_t ns)
{
	struct kg_rt *rt = kg_rt_current();

	if (!t || !ns)
		return -EINVAL;
	if (!rt || rt != t->ct.rt)
		return -EPERM;
	kg_timer_cancel(&t->ct.t);
	t->ct.period = ns;
	return kg_timer_start(rt, &t->ct.t, kg_deadline(kg_now_ns(), ns));
}

int kg_ticker_stop(kg_ticker_t *t)
{
	if (!t)
		return -EINVAL;
	return chan_free(t->ct.ch);	/* stops and frees the timer too */
}
