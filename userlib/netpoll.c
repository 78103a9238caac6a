// SPDX-License-Identifier: MIT
/*
 * netpoll.c - the runtime's poller: which coroutines may go on because a
 * file descriptor became ready (Go's netpoll_epoll.go).
 *
 * The problem: a server's coroutines spend their lives waiting for
 * sockets. Each such wait must park the coroutine, not hold a thread, and
 * the scheduler must learn cheaply which waits are over: without a system
 * call per switch, and without a thread per descriptor.
 *
 * Chosen: one epoll set per runtime. A waiting coroutine registers its
 * descriptor with EPOLLONESHOT for the sides it waits on (fd.c), then
 * parks. The scheduler collects ready coroutines with kg_netpoll: without
 * waiting when it looks for work, or blocking, by the one parked worker
 * that watches timers and descriptors for the idle procs (kg_park_worker).
 *
 * Why one-shot, re-armed at each wait, rather than Go's edge-triggered
 * registration made once when the descriptor is opened: kgreen does not
 * open or close the descriptors it is handed. A number closed behind our
 * back and reused for another file must never leave a waiter on the new
 * file unwatched, nor wake it for the old one. Re-arming (EPOLL_CTL_MOD)
 * fails with ENOENT once the file this number was registered for is gone,
 * and the wait then registers the new one (EPOLL_CTL_ADD) under a new
 * sequence number; an event still queued for the old registration carries
 * the old number and is dropped. One epoll_ctl per wait is the price.
 *
 * Per descriptor number, a struct kg_pollfd (a two-level table, pages
 * never freed while the runtime lives, so an event can always be matched
 * against its record): a lock; per side (read, write) the committed
 * waiters, the count of waiters armed but not yet switched out (pending),
 * and ready, set when an event came while some were pending, which they
 * take at their commit; and the count of kg_fd_close calls, so that a
 * waiter armed before one ends with -EBADF, and of those under way, during
 * which a new wait ends so too (a registration it made on the number
 * still open would be dropped by the close). Every change to a record is
 * under its lock; lock order: a timer heap's lock, then a pollfd's (a
 * timeout runs under its heap's lock); never rt.lock under a pollfd's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "netpoll.h"

#define BREAK_TAG UINT64_MAX	/* the eventfd's epoll data */
#define POLL_BATCH 128

/*
 * Grow the process's descriptor table now, to what RLIMIT_NOFILE allows
 * (at most FD_RESERVE numbers: 64 Ki, half a megabyte of kernel memory).
 * The kernel doubles the table as numbers are used, and in a process with
 * several threads each growth waits for an RCU grace period (milliseconds)
 * while every thread that opens a descriptor meanwhile (socket, accept)
 * waits too: a server ramping up to thousands of connections would have
 * its workers blocked in the kernel together, and the handoff would start
 * a thread for each. Done here, before the workers exist, it waits for
 * nothing. Best effort: any failure leaves the table as it was.
 */
#define FD_RESERVE 65536

static void reserve_descriptors(int fd)
{
	struct rlimit rl;
	rlim_t n;
	int top;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur < 2)
		return;
	n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > FD_RESERVE ?
		    FD_RESERVE : rl.rlim_cur;
	top = fcntl(fd, F_DUPFD_CLOEXEC, (int)n - 1);
	if (top >= 0)
		kg_sys_close(top);
}

int kg_netpoll_init(struct kg_rt *rt)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = BREAK_TAG };
	struct kg_netpoll *np = calloc(1, sizeof(*np));

	if (!np)
		return -ENOMEM;
	np->epfd = epoll_create1(EPOLL_CLOEXEC);
	np->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (np->epfd < 0 || np->evfd < 0 ||
	    epoll_ctl(np->epfd, EPOLL_CTL_ADD, np->evfd, &ev)) {
		int err = -errno;

		if (np->epfd >= 0)
			kg_sys_close(np->epfd);
		if (np->evfd >= 0)
			kg_sys_close(np->evfd);
		free(np);
		return err;
	}
	reserve_descriptors(np->epfd);
	rt->np = np;
	return 0;
}

void kg_netpoll_destroy(struct kg_rt *rt)
{
	struct kg_netpoll *np = rt->np;
	uint32_t i;

	if (!np)
		return;
	kg_sys_close(np->epfd);
	kg_sys_close(np->evfd);
	for (i = 0; i < KG_POLL_PAGES; i++)
		free(atomic_load_explicit(&np->pages[i], memory_order_relaxed));
	free(np);
	rt->np = NULL;
}

struct kg_pollfd *kg_pollfd_get(struct kg_netpoll *np, int fd, bool create)
{
	uint32_t page = (uint32_t)fd >> KG_POLL_PAGE_SHIFT;
	struct kg_pollfd *p;

	if (fd < 0 || page >= KG_POLL_PAGES)
		return NULL;
	/* acquire: pairs with the release store of a zeroed page below */
	p = atomic_load_explicit(&np->pages[page], memory_order_acquire);
	if (!p && create) {
		kg_lock(&np->grow);
		p = atomic_load_explicit(&np->pages[page],
					 memory_order_relaxed);
		if (!p) {
			p = calloc((size_t)1 << KG_POLL_PAGE_SHIFT, sizeof(*p));
			if (p)
				atomic_store_explicit(&np->pages[page], p,
						      memory_order_release);
		}
		kg_unlock(&np->grow);
	}
	return p ? &p[fd & ((1 << KG_POLL_PAGE_SHIFT) - 1)] : NULL;
}

/* What to arm: the sides with waiters, except those just reported. */
static uint32_t wanted(struct kg_pollfd *pd, const bool skip[2])
{
	uint32_t ev = 0;

	if (!skip[0] && (pd->waiters[0] || pd->pending[0]))
		ev |= EPOLLIN | EPOLLRDHUP;
	if (!skip[1] && (pd->waiters[1] || pd->pending[1]))
		ev |= EPOLLOUT;
	return ev;
}

static int arm(struct kg_netpoll *np, int fd, struct kg_pollfd *pd,
	       uint32_t events)
{
	struct epoll_event ev = { .events = events | EPOLLONESHOT };
	int saved = errno;

	ev.data.u64 = (uint64_t)pd->seq << 32 | (uint32_t)fd;
	if (pd->registered) {
		if (!epoll_ctl(np->epfd, EPOLL_CTL_MOD, fd, &ev))
			return 0;
		if (errno != ENOENT)
			return -errno;
		/* the file we registered is gone: this number names another */
		pd->registered = false;
		errno = saved;	/* not a failure of the caller's */
	}
	pd->seq++;
	pd->ready[0] = pd->ready[1] = false;	/* about the old file */
	ev.data.u64 = (uint64_t)pd->seq << 32 | (uint32_t)fd;
	if (epoll_ctl(np->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	pd->registered = true;
	return 0;
}

int kg_pollfd_arm(struct kg_netpoll *np, int fd, struct kg_pollfd *pd)
{
	static const bool none[2];

	return arm(np, fd, pd, wanted(pd, none));
}

void kg_pollfd_forget(struct kg_netpoll *np, int fd, struct kg_pollfd *pd)
{
	int saved = errno;

	/* fails if the file is gone already: nothing to undo, errno kept */
	if (pd->registered && epoll_ctl(np->epfd, EPOLL_CTL_DEL, fd, NULL))
		errno = saved;
	pd->registered = false;
	pd->seq++;
}

/* Complete every committed waiter of side with res; append their
 * coroutines to *tail. pd locked. */
static struct kg_co **complete(struct kg_netpoll *np, struct kg_pollfd *pd,
			       int side, int res, struct kg_co **tail)
{
	struct kg_fdwaiter *fw;

	while ((fw = pd->waiters[side])) {
		pd->waiters[side] = fw->next;
		fw->linked = false;
		fw->done = true;
		fw->res = res;
		fw->co->next = NULL;
		*tail = fw->co;
		tail = &fw->co->next;
		atomic_fetch_sub_explicit(&np->nwait, 1, memory_order_relaxed);
	}
	if (pd->pending[side] && !res)
		pd->ready[side] = true;	/* for them, at their commit */
	return tail;
}

struct kg_co *kg_pollfd_close(struct kg_netpoll *np, int fd,
			      struct kg_pollfd *pd)
{
	struct kg_co *head = NULL, **tail = &head;

	tail = complete(np, pd, KG_SIDE_READ, -EBADF, tail);
	complete(np, pd, KG_SIDE_WRITE, -EBADF, tail);
	pd->closes++;		/* the pending ones see it at their commit */
	kg_pollfd_forget(np, fd, pd);
	return head;
}

struct kg_co *kg_netpoll(struct kg_netpoll *np, uint64_t timeout_ns)
{
	struct epoll_event evs[POLL_BATCH];
	struct kg_co *head = NULL, **tail = &head;
	int n, i;

	n = kg_epoll_wait(np->epfd, evs, POLL_BATCH, timeout_ns);
	atomic_store_explicit(&np->last, kg_now_ns(), memory_order_relaxed);
	for (i = 0; i < n; i++) {
		uint64_t tag = evs[i].data.u64;
		uint32_t e = evs[i].events;
		struct kg_pollfd *pd;
		bool fired[2];
		uint32_t again;
		int fd = (int)(uint32_t)tag;

		if (tag == BREAK_TAG) {
			uint64_t v;

			/*
			 * A wake-up for the watcher, which blocks in here:
			 * only it may take it. A poll that does not wait
			 * leaves it (level-triggered, it is seen again), or
			 * a watcher about to block would sleep through it.
			 */
			if (timeout_ns)
				while (kg_sys_read(np->evfd, &v, sizeof(v)) ==
				       sizeof(v))
					;
			continue;
		}
		pd = kg_pollfd_get(np, fd, false);
		if (!pd)
			continue;
		kg_lock(&pd->lock);
		if (pd->seq != (uint32_t)(tag >> 32) || !pd->registered) {
			kg_unlock(&pd->lock);	/* about a file gone since */
			continue;
		}
		fired[0] = e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
		fired[1] = e & (EPOLLOUT | EPOLLHUP | EPOLLERR);
		if (fired[0])
			tail = complete(np, pd, KG_SIDE_READ, 0, tail);
		if (fired[1])
			tail = complete(np, pd, KG_SIDE_WRITE, 0, tail);
		/* one-shot: the set is disarmed; waiters of the other side
		 * (or arriving since) still need it */
		again = wanted(pd, fired);
		if (again)
			arm(np, fd, pd, again);
		kg_unlock(&pd->lock);
	}
	return head;
}

void kg_netpoll_break(struct kg_netpoll *np)
{
	uint64_t one = 1;

	if (kg_sys_write(np->evfd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, a break is pending */
	}
}
