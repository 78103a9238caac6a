/* SPDX-License-Identifier: MIT */
/*
 * netpoll.h - the runtime's poller (netpoll.c): one epoll set per runtime,
 * a record per file descriptor number, and the call the scheduler makes to
 * collect the coroutines whose descriptor became ready. Waiting itself
 * (parking a coroutine on a descriptor) is fd.c's, above the scheduler.
 */
#ifndef KG_NETPOLL_H
#define KG_NETPOLL_H

#include "rt.h"

enum { KG_SIDE_READ = 0, KG_SIDE_WRITE = 1 };

/*
 * One coroutine waiting on one side of a descriptor; on its stack for the
 * duration of the wait. Linked on its pollfd's side once committed (the
 * coroutine is switched out), under the pollfd's lock.
 */
struct kg_fdwaiter {
	struct kg_fdwaiter *next;
	struct kg_co *co;
	int fd;
	int side;
	int res;		/* 0: ready; -ETIMEDOUT; -EBADF (closed) */
	uint32_t closes;	/* its pollfd's closes when it armed */
	bool done;		/* res is final (pollfd lock) */
	bool linked;		/* on its pollfd's side list (pollfd lock) */
};

/*
 * A descriptor number's record. Created at the first wait on the number
 * and kept (at the same address) as long as the runtime: a stale epoll
 * event can always be matched against it, and is dropped by its seq.
 */
struct kg_pollfd {
	kg_lock_t lock;
	/* bumped at every new registration with epoll: an event carrying an
	 * older seq is about a file this number no longer names */
	uint32_t seq;
	bool registered;	/* epoll holds (this number, some file) */
	/* per side: waiters armed but not yet committed, an event that came
	 * for them, and the committed waiters */
	uint32_t pending[2];
	bool ready[2];
	struct kg_fdwaiter *waiters[2];
	/* kg_fd_close calls made (a waiter armed before one ends -EBADF),
	 * and those under way (a wait starting meanwhile waits for them to
	 * end: the number is still open, and a registration made now would
	 * be dropped silently by the close) */
	uint32_t closes, closing;
};

#define KG_POLL_PAGE_SHIFT 10
#define KG_POLL_PAGES 4096	/* descriptor numbers up to 4 Mi */

struct kg_netpoll {
	int epfd, evfd;
	/* coroutines waiting on descriptors (deadlock watch; polls are
	 * skipped while there are none) */
	_Atomic uint32_t nwait;
	_Atomic uint32_t blocked;	/* a worker blocks in epoll_wait */
	_Atomic uint64_t last;		/* kg_now_ns of the last poll */
	kg_lock_t grow;
	_Atomic(struct kg_pollfd *) pages[KG_POLL_PAGES];
};

int kg_netpoll_init(struct kg_rt *rt);
void kg_netpoll_destroy(struct kg_rt *rt);
/* fd's record (create: make it if missing); NULL: out of range or no
 * memory (create), or none yet. */
struct kg_pollfd *kg_pollfd_get(struct kg_netpoll *np, int fd, bool create);
/* Register interest in what pd's waiters want (pd locked); 0 or -errno:
 * -EPERM the descriptor cannot be polled (a regular file), -EBADF. */
int kg_pollfd_arm(struct kg_netpoll *np, int fd, struct kg_pollfd *pd);
/* Forget fd's registration (pd locked). */
void kg_pollfd_forget(struct kg_netpoll *np, int fd, struct kg_pollfd *pd);
/* fd is being closed (pd locked): complete its waiters with -EBADF
 * (returned linked through kg_co.next, for the caller to wake) and
 * forget its registration. */
struct kg_co *kg_pollfd_close(struct kg_netpoll *np, int fd,
			      struct kg_pollfd *pd);
/*
 * Collect the coroutines whose descriptors are ready, waiting up to
 * timeout_ns (0: do not wait; UINT64_MAX: until an event or a break).
 * Returns them linked through kg_co.next (their waits are complete: the
 * caller makes them runnable), or NULL.
 */
struct kg_co *kg_netpoll(struct kg_netpoll *np, uint64_t timeout_ns);
/* End a blocked kg_netpoll early (any thread). */
void kg_netpoll_break(struct kg_netpoll *np);

#endif /* KG_NETPOLL_H */
