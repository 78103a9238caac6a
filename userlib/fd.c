// SPDX-License-Identifier: MIT
/*
 * fd.c - waiting for a file descriptor: kg_fd_wait and kg_fd_close.
 *
 * A coroutine that waits for a descriptor parks; its worker goes on with
 * other coroutines. The poller (netpoll.c) reports the descriptor ready
 * and the scheduler makes the coroutine runnable. A plain thread waits in
 * ppoll(2). This is Go's pollDesc wait (runtime/netpoll.go), for
 * descriptors kgreen did not open: the caller keeps doing its own reads
 * and writes on a non-blocking descriptor and waits here on EAGAIN.
 *
 * A wait, on its coroutine's stack (struct kg_fdwaiter):
 *  1. Arm the timeout, if any (a timer heap's lock comes before a
 *     pollfd's, so before taking it).
 *  2. Under the pollfd's lock: wait for a kg_fd_close of the number under
 *     way to end, take an event that came for an earlier waiter still
 *     pending (ready); else note the closes so far, count itself pending
 *     and re-arm the descriptor's one-shot registration.
 *  3. Park. The commit, once the coroutine is switched out, takes the
 *     lock again: an event, close (the count moved) or timeout that came
 *     in between
 *     completes the wait at once (the coroutine is made runnable), else
 *     the waiter is linked on its side, where the poller, kg_fd_close or
 *     the timeout finds it. Whoever completes it (under the lock, once:
 *     done) makes it runnable, so it resumes exactly once.
 *  4. Resumed: cancel the timeout (which waits out a running callback,
 *     so nothing touches the record after the function returns).
 * A descriptor that epoll cannot watch (a regular file) is always ready,
 * as poll(2) says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "fd.h"
#include "timer.h"
#include "wait.h"

/*
 * A plain thread (or no poller): ppoll, retried on signals; with a hook,
 * in slices of at most 10 ms, asking it between them whether the wait
 * was cancelled (nothing can interrupt the ppoll itself).
 */
#define PLAIN_SLICE_NS (10 * 1000 * 1000ull)

static int plain_wait(int fd, int side, uint64_t deadline,
		      struct kg_fdhook *hook)
{
	struct pollfd p = { .fd = fd, .events = side ? POLLOUT : POLLIN };

	for (;;) {
		struct timespec ts, *tsp = NULL;
		uint64_t left = UINT64_MAX;
		int r;

		if (hook && (r = hook->check(hook)))
			return r;
		if (deadline != UINT64_MAX) {
			uint64_t now = kg_now_ns();

			left = deadline > now ? deadline - now : 0;
		}
		if (hook && left > PLAIN_SLICE_NS)
			left = PLAIN_SLICE_NS;
		if (left != UINT64_MAX) {
			ts = kg_timespec(left);
			tsp = &ts;
		}
		r = ppoll(&p, 1, tsp, NULL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0) {
			if (deadline != UINT64_MAX && kg_now_ns() >= deadline)
				return -ETIMEDOUT;
			continue;	/* a slice ended */
		}
		return p.revents & POLLNVAL ? -EBADF : 0;
	}
}

/* Make a list of coroutines (linked by next) runnable from here. */
static void wake_list(struct kg_co *co)
{
	while (co) {
		struct kg_co *next = co->next;

		kg_wake(co);
		co = next;
	}
}

/* Post-switch action: the coroutine is switched out. */
static void fd_commit(struct kg_worker *w, struct kg_co *prev, void *arg)
{
	struct kg_fdwaiter *fw = arg;
	struct kg_netpoll *np = w->rt->np;
	struct kg_pollfd *pd = kg_pollfd_get(np, fw->fd, false);
	int side = fw->side;

	kg_lock(&pd->lock);
	pd->pending[side]--;
	if (!fw->done && fw->closes != pd->closes) {
		fw->done = true;	/* kg_fd_close came in between */
		fw->res = -EBADF;
	} else if (!fw->done && pd->ready[side]) {
		fw->done = true;
		fw->res = 0;
	}
	if (!pd->pending[side])
		pd->ready[side] = false;	/* every pending one saw it */
	if (fw->done) {
		atomic_fetch_sub_explicit(&np->nwait, 1, memory_order_relaxed);
		kg_unlock(&pd->lock);
		kg_ready(w, prev, true);
		return;
	}
	fw->next = pd->waiters[side];
	pd->waiters[side] = fw;
	fw->linked = true;
	kg_unlock(&pd->lock);
}

/* Unlink fw from its side (pd locked, fw linked). */
static void unlink_waiter(struct kg_pollfd *pd, struct kg_fdwaiter *fw)
{
	struct kg_fdwaiter **pp = &pd->waiters[fw->side];

	while (*pp != fw)
		pp = &(*pp)->next;
	*pp = fw->next;
	fw->linked = false;
}

/*
 * End fw's wait with res if nothing has (a timeout, a cancellation).
 * True if the caller must make its coroutine runnable: it was linked; if
 * not, its commit has yet to run and sees done.
 */
static bool finish(struct kg_netpoll *np, struct kg_fdwaiter *fw, int res)
{
	struct kg_pollfd *pd = kg_pollfd_get(np, fw->fd, false);
	bool wake = false;

	kg_lock(&pd->lock);
	if (!fw->done) {
		fw->done = true;
		fw->res = res;
		if (fw->linked) {
			unlink_waiter(pd, fw);
			atomic_fetch_sub_explicit(&np->nwait, 1,
						  memory_order_relaxed);
			wake = true;
		}
	}
	kg_unlock(&pd->lock);
	return wake;
}

/* The deadline passed (scheduler mode on w, the heap's lock held). */
static uint64_t fd_timeout(struct kg_worker *w, struct kg_timer *t)
{
	struct kg_fdwaiter *fw = t->arg;

	if (finish(w->rt->np, fw, -ETIMEDOUT))
		kg_ready(w, fw->co, true);
	return 0;
}

/* kg_run is ending with co still waiting here (kg_co.abandon). */
static void fd_abandon(struct kg_co *co, int pass)
{
	struct kg_fdwaiter *fw = co->wait_rec;
	struct kg_pollfd *pd;

	if (pass || !co->rt->np)
		return;
	pd = kg_pollfd_get(co->rt->np, fw->fd, false);
	kg_lock(&pd->lock);
	if (fw->linked)
		unlink_waiter(pd, fw);
	kg_unlock(&pd->lock);
}

int kg_fd_wait_until(int fd, int events, uint64_t deadline,
		     struct kg_fdhook *hook)
{
	static const char *const reason[2] = { "fd read", "fd write" };
	struct kg_fdwaiter fw = { .fd = fd };
	struct kg_timer t = { .heap_idx = -1 };
	struct kg_worker *w;
	struct kg_netpoll *np;
	struct kg_pollfd *pd;
	struct kg_co *co;
	int err;

	if (events != KG_FD_READ && events != KG_FD_WRITE)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	fw.side = events == KG_FD_WRITE ? KG_SIDE_WRITE : KG_SIDE_READ;
	kg_note_caller();
	w = kg_worker_self();
	if (!w || w->cur == &w->g0 || !w->rt->np ||
	    (deadline != UINT64_MAX && deadline <= kg_now_ns()))
		return plain_wait(fd, fw.side, deadline, hook);
	np = w->rt->np;
	pd = kg_pollfd_get(np, fd, true);
	if (!pd)
		return fd >> KG_POLL_PAGE_SHIFT >= KG_POLL_PAGES ? -EINVAL :
								   -ENOMEM;
	co = w->cur;
	fw.co = co;
	if (deadline != UINT64_MAX) {
		t.fn = fd_timeout;
		t.arg = &fw;
		err = kg_timer_start(w->rt, &t, deadline);
		if (err)
			return err;
	}
	kg_lock(&pd->lock);
	while (pd->closing) {
		/*
		 * kg_fd_close is closing the number: arming now would register
		 * the file it is closing, and the close would drop that
		 * registration silently. Let it finish (a few instructions
		 * and a close(2)); then the number is closed (arming fails
		 * with EBADF) or names a file opened since, which is whose
		 * readiness the caller's next call will see. A wait armed
		 * before the close still ends -EBADF (closes moved).
		 */
		kg_unlock(&pd->lock);
		kg_yield();
		kg_lock(&pd->lock);
	}
	if (pd->ready[fw.side] && pd->registered) {
		/* an event for waiters still pending is news for us too */
		kg_unlock(&pd->lock);
		err = 0;
		goto out;
	}
	fw.closes = pd->closes;
	pd->pending[fw.side]++;
	err = kg_pollfd_arm(np, fd, pd);
	if (err) {
		pd->pending[fw.side]--;
		kg_unlock(&pd->lock);
		if (err == -EPERM)
			err = 0;	/* epoll cannot watch it: always ready */
		goto out;
	}
	atomic_fetch_add_explicit(&np->nwait, 1, memory_order_relaxed);
	kg_unlock(&pd->lock);

	/* from here kg_fd_cancel may complete the wait */
	if (hook)
		hook->armed(hook, &fw);
	kg_co_waiting(co, reason[fw.side], (const void *)(intptr_t)fd);
	co->wait_rec = &fw;
	co->abandon = fd_abandon;
	KG_PROBE3(fd_wait, co->id, fd, fw.side);
	kg_sched_park(fd_commit, &fw);
	co->abandon = NULL;
	co->wait_rec = NULL;
	if (hook)
		hook->done(hook);
	err = fw.res;
	KG_PROBE3(fd_done, co->id, fd, err);
out:
	if (t.fn)
		kg_timer_cancel(&t);
	return err;
}

int kg_fd_wait(int fd, int events, int64_t timeout_ns)
{
	uint64_t deadline = timeout_ns < 0 ? UINT64_MAX :
			    kg_deadline(kg_now_ns(), (uint64_t)timeout_ns);

	return kg_fd_wait_until(fd, events, deadline, NULL);
}

void kg_fd_cancel(struct kg_fdwaiter *fw, int err)
{
	if (finish(fw->co->rt->np, fw, err))
		kg_wake(fw->co);
}

/*
 * kg_fd_close calls that may be reading the runtime: kg_run's teardown
 * waits for none before it frees it (kg_fd_quiesce). A close counts
 * itself, then (a full fence between) reads the current runtime; kg_run
 * stores NULL there, then (a full fence between) reads this count: one
 * of the two sees the other's write, so either the close sees no runtime
 * or kg_run waits for it.
 */
static _Atomic uint32_t closers;

void kg_fd_quiesce(void)
{
	struct timespec nap = { 0, 50 * 1000 };

	atomic_thread_fence(memory_order_seq_cst);
	while (atomic_load(&closers))
		kg_sys_nanosleep(&nap, NULL);
}

static int fd_close(int fd)
{
	struct kg_rt *rt = kg_rt_current();
	struct kg_pollfd *pd;
	struct kg_co *woken;
	int err;

	if (!rt || !rt->np || !(pd = kg_pollfd_get(rt->np, fd, true)))
		return kg_sys_close(fd) ? -errno : 0;
	kg_lock(&pd->lock);
	woken = kg_pollfd_close(rt->np, fd, pd);
	pd->closing++;		/* until the number is closed */
	kg_unlock(&pd->lock);
	wake_list(woken);
	err = kg_sys_close(fd) ? -errno : 0;
	kg_lock(&pd->lock);
	pd->closing--;
	kg_unlock(&pd->lock);
	return err;
}

int kg_fd_close(int fd)
{
	int err;

	if (fd < 0)
		return -EBADF;
	atomic_fetch_add(&closers, 1);
	atomic_thread_fence(memory_order_seq_cst);
	err = fd_close(fd);
	/* release: its reads of the runtime come before kg_run's free */
	atomic_fetch_sub_explicit(&closers, 1, memory_order_release);
	return err;
}
