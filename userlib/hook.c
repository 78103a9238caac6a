// SPDX-License-Identifier: MIT
/*
 * hook.c - libc's socket, pipe and sleep calls park the calling coroutine,
 * not its thread.
 *
 * libkgreen defines read, write, recv, send, accept, connect, poll, the
 * sleeps, close and the rest of the list below. The program's calls and
 * those of every shared library it uses (libcurl, libpq, hiredis) bind to
 * these definitions before libc's (the executable, and a library loaded
 * before libc, come first in the dynamic linker's search order); each
 * calls libc's own function, found with dlsym(RTLD_NEXT), unless a
 * coroutine would block in it. Then the coroutine waits in the poller
 * (fd.c) and its worker runs other coroutines meanwhile: no thread is
 * held, no handoff is needed.
 *
 * What the caller sees is the blocking call's behaviour, exactly:
 *  - Nothing changes a descriptor's flags for good. A socket call is made
 *    non-blocking for one call with MSG_DONTWAIT (read and write on a
 *    socket are recv and send with no flags); a call with no such flag
 *    (accept, a pipe's read and write) first asks poll(2) whether it
 *    would block; connect sets O_NONBLOCK for the one call and restores
 *    it. A child process or another program sharing the file never sees
 *    a flag it did not set.
 *  - The user's O_NONBLOCK (read with F_GETFL only when a call would
 *    block) makes EAGAIN final, as it was.
 *  - SO_RCVTIMEO / SO_SNDTIMEO bound the wait (read when a call first
 *    would block); expiry fails with EAGAIN, or EINPROGRESS for connect,
 *    as the kernel's does. A signal does not interrupt the wait (as with
 *    SA_RESTART): EINTR never comes from a parked call.
 *  - A blocking send or write on a stream socket sends everything, waiting
 *    between partial sends; recv with MSG_WAITALL waits for all of it.
 *  - close() from any thread ends the waits on that descriptor with EBADF
 *    (Go's "use of closed network connection"): kg_fd_close, whichever
 *    way the descriptor was waited on (these hooks, kg_fd_wait).
 *  - errno is untouched on success, and read and written through
 *    kg_errno_location: a parked call may resume on another thread.
 * Which descriptors: each number's kind (socket, other pollable, plain)
 * is learnt with fstat at its first use and kept until close() or a call
 * that makes a descriptor (socket, accept, pipe, dup...) forgets it. A kind
 * that went stale behind the hooks' back (a number closed by fclose and
 * reused by open) costs a syscall or a held thread: a "socket" that is
 * not one fails recv with ENOTSOCK and is looked at again; a "plain" one
 * that is pollable blocks in libc, as before; a send goes on until all is
 * sent whatever the socket's type. One answer can differ: a stream socket
 * on a number last known as a datagram socket's, read with MSG_WAITALL,
 * returns what the first read brings.
 * When: only in a coroutine, on a worker, outside a kg_blocking_begin/end
 * region (the region already says the call blocks), while the runtime runs
 * with its poller and the interposition on (KGREEN_INTERPOSE=0 or
 * KG_RUN_NO_INTERPOSE turn it off), and never in a child process forked
 * from a coroutine. Everything else goes straight to libc, and the kernel
 * backends' handoff covers whatever blocks there.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "hook.h"
#include "sched.h"
#include "sysmon.h"

#define HOOK __attribute__((visibility("default")))

/* errno of the thread running now (a parked call may have moved): glibc's
 * __errno_location is const, and the compiler may keep its first answer */
#define ERRNO (*kg_errno_location())

/* ------------------------------------------------------------------ */
/* libc's functions                                                   */
/* ------------------------------------------------------------------ */

#define KG_HOOKED(X)							\
	X(read, ssize_t, (int, void *, size_t))				\
	X(write, ssize_t, (int, const void *, size_t))			\
	X(readv, ssize_t, (int, const struct iovec *, int))		\
	X(writev, ssize_t, (int, const struct iovec *, int))		\
	X(recv, ssize_t, (int, void *, size_t, int))			\
	X(recvfrom, ssize_t, (int, void *, size_t, int,		\
			      struct sockaddr *, socklen_t *))		\
	X(recvmsg, ssize_t, (int, struct msghdr *, int))		\
	X(send, ssize_t, (int, const void *, size_t, int))		\
	X(sendto, ssize_t, (int, const void *, size_t, int,		\
			    const struct sockaddr *, socklen_t))	\
	X(sendmsg, ssize_t, (int, const struct msghdr *, int))		\
	X(accept, int, (int, struct sockaddr *, socklen_t *))		\
	X(accept4, int, (int, struct sockaddr *, socklen_t *, int))	\
	X(connect, int, (int, const struct sockaddr *, socklen_t))	\
	X(poll, int, (struct pollfd *, nfds_t, int))			\
	X(close, int, (int))						\
	X(socket, int, (int, int, int))					\
	X(socketpair, int, (int, int, int, int *))			\
	X(pipe, int, (int *))						\
	X(pipe2, int, (int *, int))					\
	X(dup, int, (int))						\
	X(dup2, int, (int, int))					\
	X(dup3, int, (int, int, int))					\
	X(sleep, unsigned int, (unsigned int))				\
	X(usleep, int, (useconds_t))					\
	X(nanosleep, int, (const struct timespec *, struct timespec *))	\
	X(clock_nanosleep, int, (clockid_t, int, const struct timespec *, \
				 struct timespec *))

#define X(name, ret, args) ret(*name) args;
static struct {
	KG_HOOKED(X)
} real;
#undef X

static pthread_once_t resolved = PTHREAD_ONCE_INIT;
/* set in a child forked while the runtime ran: it has one thread and no
 * scheduler, so everything goes to libc there (until it runs its own) */
static _Atomic bool forked;	/* relaxed: a flag, read by any thread */

static void *find(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f)
		kg_throw("libc's %s not found (a static executable cannot "
			 "link libkgreen)", name);
	return f;
}

static void after_fork_child(void)
{
	if (kg_rt_current())
		atomic_store_explicit(&forked, true, memory_order_relaxed);
}

static void resolve(void)
{
#define X(name, ret, args) real.name = (ret(*) args)find(#name);
	KG_HOOKED(X)
#undef X
	pthread_atfork(NULL, NULL, after_fork_child);
}

/* Every hook starts here: libc's functions may be needed before any
 * constructor ran (another library's constructor may call read). */
static inline void need(void)
{
	pthread_once(&resolved, resolve);
}

void kg_hooks_init(void)
{
	need();
	/* a runtime starts in this process */
	atomic_store_explicit(&forked, false, memory_order_relaxed);
}

/*
 * The calling coroutine's worker if its calls may park, else NULL: plain
 * threads, the scheduler itself, marked regions, no poller, turned off,
 * forked children.
 */
static struct kg_worker *served(void)
{
	struct kg_worker *w = kg_tls_worker;

	if (kg_likely(!w) || w->cur == &w->g0 || !w->rt->hooks ||
	    !w->rt->np || atomic_load_explicit(&forked, memory_order_relaxed))
		return NULL;
	return kg_sysmon_marked(w) ? NULL : w;
}

/* ------------------------------------------------------------------ */
/* What each descriptor number is                                     */
/* ------------------------------------------------------------------ */

enum {
	K_UNKNOWN = 0,
	K_PLAIN,	/* a regular file, directory, block device: libc */
	K_POLL,		/* a pipe, FIFO, terminal, eventfd...: poll first */
	/* sockets, MSG_DONTWAIT: */
	K_STREAM,	/* a send completes; MSG_WAITALL waits for all */
	K_DGRAM,	/* datagrams, raw: a send goes whole or fails */
	K_SEQPACKET,	/* records: write adds MSG_EOR, as write(2) does */
};

#define KIND_SHIFT 12
#define KIND_PAGES 1024		/* numbers up to 4 Mi; above: libc */

/* Process-wide, as descriptor numbers are; pages are never freed. */
static _Atomic(_Atomic uint8_t *) kinds[KIND_PAGES];

static _Atomic uint8_t *kind_slot(int fd, bool create)
{
	size_t pg = (size_t)fd >> KIND_SHIFT;
	_Atomic uint8_t *page, *fresh = NULL;

	if (fd < 0 || pg >= KIND_PAGES)
		return NULL;
	/* acquire: a page's zeroed bytes, seen before its address */
	page = atomic_load_explicit(&kinds[pg], memory_order_acquire);
	if (page || !create)
		return page ? &page[fd & ((1 << KIND_SHIFT) - 1)] : NULL;
	fresh = calloc(1u << KIND_SHIFT, 1);
	if (!fresh)
		return NULL;
	/* release: publish the zeroed page; a loser frees its own */
	if (!atomic_compare_exchange_strong_explicit(&kinds[pg], &page, fresh,
						     memory_order_acq_rel,
						     memory_order_acquire))
		free(fresh);
	else
		page = fresh;
	return &page[fd & ((1 << KIND_SHIFT) - 1)];
}

/* Forget what fd was (a call made or closed it). Relaxed: a kind is a
 * hint that every use checks (see the top). */
static void kind_forget(int fd)
{
	_Atomic uint8_t *k = kind_slot(fd, false);

	if (k)
		atomic_store_explicit(k, K_UNKNOWN, memory_order_relaxed);
}

static void kind_set(int fd, int kind)
{
	_Atomic uint8_t *k = kind_slot(fd, true);

	if (k)
		atomic_store_explicit(k, (uint8_t)kind, memory_order_relaxed);
}

static int kind_of(int fd)
{
	_Atomic uint8_t *k = kind_slot(fd, true);
	int kind = k ? atomic_load_explicit(k, memory_order_relaxed) : K_PLAIN;
	int saved = ERRNO, type = 0;
	socklen_t len = sizeof(type);
	struct stat st;

	if (kind != K_UNKNOWN)
		return kind;
	if (fstat(fd, &st)) {
		ERRNO = saved;
		return K_PLAIN;	/* not open: libc says so */
	}
	switch (st.st_mode & S_IFMT) {
	case S_IFSOCK:
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len))
			type = SOCK_DGRAM;	/* sends it will not split */
		kind = type == SOCK_STREAM ? K_STREAM :
		       type == SOCK_SEQPACKET ? K_SEQPACKET : K_DGRAM;
		break;
	case S_IFREG:
	case S_IFDIR:
	case S_IFBLK:
	case S_IFLNK:
		kind = K_PLAIN;
		break;
	default:		/* FIFO, character device, anonymous inode */
		kind = K_POLL;
	}
	ERRNO = saved;
	atomic_store_explicit(k, (uint8_t)kind, memory_order_relaxed);
	return kind;
}

static inline bool is_sock(int kind)
{
	return kind >= K_STREAM;
}

/* ------------------------------------------------------------------ */
/* Waiting                                                            */
/* ------------------------------------------------------------------ */

/*
 * One call's wait state: at its first would-block, whether the user made
 * the descriptor non-blocking and the socket's timeout (opt: SO_RCVTIMEO,
 * SO_SNDTIMEO, or 0 for none).
 */
struct waitst {
	int fd, events, opt;
	bool started;
	uint64_t deadline;
};

enum { W_AGAIN = 0, W_FAIL = 1, W_LIBC = 2 };

static uint64_t sock_timeout(int fd, int opt)
{
	struct timeval tv = { 0, 0 };
	socklen_t len = sizeof(tv);

	if (!opt || getsockopt(fd, SOL_SOCKET, opt, &tv, &len) ||
	    (tv.tv_sec <= 0 && tv.tv_usec <= 0))
		return UINT64_MAX;
	return kg_deadline(kg_now_ns(), (uint64_t)tv.tv_sec * 1000000000ull +
					(uint64_t)tv.tv_usec * 1000);
}

/*
 * The call would block (EAGAIN): W_AGAIN after waiting (try again),
 * W_FAIL with ERRNO set (EAGAIN: the user's O_NONBLOCK or the timeout;
 * EBADF: closed meanwhile), or W_LIBC: the poller cannot wait for this
 * descriptor, make the blocking call.
 */
static void waitst_init(struct waitst *ws, int fd, int kind, int events)
{
	*ws = (struct waitst){ .fd = fd, .events = events };
	if (is_sock(kind))
		ws->opt = events == KG_FD_READ ? SO_RCVTIMEO : SO_SNDTIMEO;
}

/* The user's descriptor is known to block: the call's deadline starts. */
static void waitst_start(struct waitst *ws)
{
	ws->deadline = sock_timeout(ws->fd, ws->opt);
	ws->started = true;
}

static int wait_ready(struct waitst *ws)
{
	int r;

	if (!ws->started) {
		int fl = fcntl(ws->fd, F_GETFL);

		if (fl < 0 || (fl & O_NONBLOCK)) {
			ERRNO = fl < 0 ? ERRNO : EAGAIN;
			return W_FAIL;
		}
		waitst_start(ws);
	}
	r = kg_fd_wait_until(ws->fd, ws->events, ws->deadline, NULL);
	switch (r) {
	case 0:
		return W_AGAIN;
	case -ETIMEDOUT:
		ERRNO = EAGAIN;
		return W_FAIL;
	case -EBADF:
		ERRNO = EBADF;
		return W_FAIL;
	default:
		return W_LIBC;
	}
}

/* Would a call on fd wait for events (poll with no timeout)? */
static bool not_ready(int fd, int events)
{
	struct pollfd p = { .fd = fd, .events = (short)events };
	int saved = ERRNO;
	bool idle = real.poll(&p, 1, 0) == 0;

	ERRNO = saved;
	return idle;
}

/* ------------------------------------------------------------------ */
/* Reading and writing                                                */
/* ------------------------------------------------------------------ */

/*
 * One transfer on a socket, or on a pollable descriptor, in whichever
 * form the user called: a buffer (read, recv, recvfrom) or a message
 * (readv, recvmsg), and the same for writing. op() makes the call once
 * with the flags given.
 */
struct xfer {
	int fd, flags;
	void *buf;
	size_t len;
	struct msghdr *msg;
	struct sockaddr *from;
	socklen_t *fromlen;
	const struct sockaddr *to;
	socklen_t tolen;
	ssize_t (*op)(struct xfer *x, int flags);
};

static ssize_t op_recv(struct xfer *x, int flags)
{
	return real.recvfrom(x->fd, x->buf, x->len, flags, x->from,
			     x->fromlen);
}

static ssize_t op_send(struct xfer *x, int flags)
{
	return real.sendto(x->fd, x->buf, x->len, flags, x->to, x->tolen);
}

static ssize_t op_recvmsg(struct xfer *x, int flags)
{
	return real.recvmsg(x->fd, x->msg, flags);
}

static ssize_t op_sendmsg(struct xfer *x, int flags)
{
	return real.sendmsg(x->fd, x->msg, flags);
}

static ssize_t op_read(struct xfer *x, int flags)
{
	(void)flags;
	return x->msg ? real.readv(x->fd, x->msg->msg_iov,
				   (int)x->msg->msg_iovlen) :
			real.read(x->fd, x->buf, x->len);
}

static ssize_t op_write(struct xfer *x, int flags)
{
	(void)flags;
	return x->msg ? real.writev(x->fd, x->msg->msg_iov,
				    (int)x->msg->msg_iovlen) :
			real.write(x->fd, x->buf, x->len);
}

/*
 * Once, as the blocking call: on a socket with MSG_DONTWAIT; on another
 * pollable descriptor after poll says it is ready (readiness lost to a
 * racing reader makes libc's call block, which the handoff covers).
 */
static ssize_t xfer_once(struct xfer *x, int kind, struct waitst *ws)
{
	int saved = ERRNO, w;
	ssize_t r;

	for (;;) {
		if (is_sock(kind)) {
			r = x->op(x, x->flags | MSG_DONTWAIT);
			if (r >= 0 || (ERRNO != EAGAIN && ERRNO != EWOULDBLOCK))
				break;
		} else if (!not_ready(x->fd, ws->events == KG_FD_READ ?
					     POLLIN : POLLOUT)) {
			r = x->op(x, x->flags);
			break;
		}
		w = wait_ready(ws);
		if (w == W_FAIL)
			return -1;
		if (w == W_LIBC) {
			r = x->op(x, x->flags);
			break;
		}
	}
	if (r >= 0)
		ERRNO = saved;
	return r;
}

static ssize_t xfer(struct xfer *x, int kind, int events)
{
	struct waitst ws;

	waitst_init(&ws, x->fd, kind, events);
	return xfer_once(x, kind, &ws);
}

/* Step a message's buffers past n bytes sent (iov: a copy it may edit). */
static void iov_skip(struct msghdr *m, size_t n)
{
	while (m->msg_iovlen && n >= m->msg_iov->iov_len) {
		n -= m->msg_iov->iov_len;
		m->msg_iov++;
		m->msg_iovlen--;
	}
	if (m->msg_iovlen) {
		m->msg_iov->iov_base = (char *)m->msg_iov->iov_base + n;
		m->msg_iov->iov_len -= n;
	}
}

static size_t msg_len(const struct msghdr *m)
{
	size_t n = 0, i;

	for (i = 0; i < m->msg_iovlen; i++)
		n += m->msg_iov[i].iov_len;
	return n;
}

/*
 * A transfer the blocking call completes: a send of everything, a recv
 * with MSG_WAITALL on a stream. Partial progress is returned when an
 * error or the timeout ends it, or at once if the user made the socket
 * non-blocking; an end of file ends a receive. (A datagram or record goes
 * whole at the first send or not at all: only a stream sends part, also
 * one whose number was known as a datagram socket's and was reused
 * behind the hooks' back.)
 */
static ssize_t xfer_all(struct xfer *x, int kind, int events)
{
	struct msghdr m;
	struct iovec small[8], *iov = small;
	size_t want = x->msg ? msg_len(x->msg) : x->len, done = 0;
	struct waitst ws;
	ssize_t r;
	int saved, fl;

	/* one wait state, so the socket's timeout bounds the whole call */
	waitst_init(&ws, x->fd, kind, events);
	r = xfer_once(x, kind, &ws);
	if (r <= 0 || (size_t)r >= want)
		return r;
	saved = ERRNO;
	fl = fcntl(x->fd, F_GETFL);
	if (fl < 0 || (fl & O_NONBLOCK)) {
		ERRNO = saved;
		return r;
	}
	if (!ws.started)
		waitst_start(&ws);	/* the user's descriptor blocks */
	if (x->msg) {
		m = *x->msg;
		if (m.msg_iovlen > 8)
			iov = malloc(m.msg_iovlen * sizeof(*iov));
		if (!iov) {
			ERRNO = saved;
			return r;	/* what was moved so far */
		}
		memcpy(iov, m.msg_iov, m.msg_iovlen * sizeof(*iov));
		m.msg_iov = iov;
		m.msg_control = NULL;	/* went with the first bytes */
		m.msg_controllen = 0;
		x->msg = &m;
	}
	/* the kernel's blocking send raises no SIGPIPE once it has sent some
	 * bytes: it returns the count */
	if (events == KG_FD_WRITE)
		x->flags |= MSG_NOSIGNAL;
	while (r > 0) {
		done += (size_t)r;
		if (done >= want)
			break;
		if (x->msg)
			iov_skip(x->msg, (size_t)r);
		else
			x->buf = (char *)x->buf + r, x->len -= (size_t)r;
		r = xfer_once(x, kind, &ws);
	}
	if (iov != small)
		free(iov);
	ERRNO = saved;		/* a failure after progress is not reported */
	return (ssize_t)done;
}

/* Receive: a stream's MSG_WAITALL waits for all of it. */
static ssize_t do_recv(struct xfer *x, int kind)
{
	if ((x->flags & MSG_WAITALL) && kind == K_STREAM)
		return xfer_all(x, kind, KG_FD_READ);
	return xfer(x, kind, KG_FD_READ);
}

/*
 * read, readv, write, writev (x: the buffer or the message) on a
 * descriptor of kind, which is not plain. On a socket they are recv and
 * send (write adds MSG_EOR on a SOCK_SEQPACKET one, as write(2) does; a
 * send completes); on another pollable descriptor, themselves after poll.
 * A socket call that fails with ENOTSOCK found the number's kind stale
 * (see the top): it is looked at anew and the call made again, with
 * errno as it was when the call began.
 */
static ssize_t rw(struct xfer *x, int kind, int events)
{
	bool rd = events == KG_FD_READ;
	int e0 = ERRNO;
	ssize_t r;

	if (!is_sock(kind)) {
		x->op = rd ? op_read : op_write;
		return xfer(x, kind, events);
	}
	if (rd) {
		x->op = x->msg ? op_recvmsg : op_recv;
		r = xfer(x, kind, events);
	} else {
		x->op = x->msg ? op_sendmsg : op_send;
		x->flags = kind == K_SEQPACKET ? MSG_EOR : 0;
		r = xfer_all(x, kind, events);
	}
	if (r >= 0 || ERRNO != ENOTSOCK)
		return r;
	kind_forget(x->fd);
	ERRNO = e0;
	kind = kind_of(x->fd);
	if (kind == K_PLAIN || is_sock(kind))
		return rd ? op_read(x, 0) : op_write(x, 0);
	return rw(x, kind, events);
}

HOOK ssize_t read(int fd, void *buf, size_t n)
{
	struct xfer x = { .fd = fd, .buf = buf, .len = n };
	int kind;

	need();
	/* (0 bytes: a datagram socket's recv would consume one) */
	if (!served() || !n || (kind = kind_of(fd)) == K_PLAIN)
		return real.read(fd, buf, n);
	return rw(&x, kind, KG_FD_READ);
}

HOOK ssize_t write(int fd, const void *buf, size_t n)
{
	struct xfer x = { .fd = fd, .buf = (void *)buf, .len = n };
	int kind;

	need();
	if (!served() || (kind = kind_of(fd)) == K_PLAIN)
		return real.write(fd, buf, n);
	return rw(&x, kind, KG_FD_WRITE);
}

HOOK ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov,
			    .msg_iovlen = cnt > 0 ? (size_t)cnt : 0 };
	struct xfer x = { .fd = fd, .msg = &m };
	int kind;

	need();
	if (!served() || cnt <= 0 || cnt > IOV_MAX || !msg_len(&m) ||
	    (kind = kind_of(fd)) == K_PLAIN)
		return real.readv(fd, iov, cnt);
	return rw(&x, kind, KG_FD_READ);
}

HOOK ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov,
			    .msg_iovlen = cnt > 0 ? (size_t)cnt : 0 };
	struct xfer x = { .fd = fd, .msg = &m };
	int kind;

	need();
	if (!served() || cnt <= 0 || cnt > IOV_MAX ||
	    (kind = kind_of(fd)) == K_PLAIN)
		return real.writev(fd, iov, cnt);
	return rw(&x, kind, KG_FD_WRITE);
}

/*
 * A socket call the hooks take: in a coroutine, on a socket, without the
 * caller's own MSG_DONTWAIT, and not one of those that never wait for
 * readiness the poller reports: MSG_ERRQUEUE (the error queue returns
 * EAGAIN when empty, never blocks), MSG_OOB (the urgent byte), nor a
 * MSG_PEEK that must wait for all (each retry would peek the same head).
 */
static int sock_kind(int fd, int flags)
{
	int kind;

	if (!served() || (flags & (MSG_DONTWAIT | MSG_ERRQUEUE | MSG_OOB)) ||
	    (flags & (MSG_PEEK | MSG_WAITALL)) == (MSG_PEEK | MSG_WAITALL))
		return 0;
	kind = kind_of(fd);
	return is_sock(kind) ? kind : 0;
}

HOOK ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	struct xfer x = { .fd = fd, .flags = flags, .buf = buf, .len = n,
			  .op = op_recv };
	int kind;

	need();
	if (!(kind = sock_kind(fd, flags)))
		return real.recv(fd, buf, n, flags);
	return do_recv(&x, kind);
}

HOOK ssize_t recvfrom(int fd, void *buf, size_t n, int flags,
		      struct sockaddr *from, socklen_t *fromlen)
{
	struct xfer x = { .fd = fd, .flags = flags, .buf = buf, .len = n,
			  .from = from, .fromlen = fromlen, .op = op_recv };
	int kind;

	need();
	if (!(kind = sock_kind(fd, flags)))
		return real.recvfrom(fd, buf, n, flags, from, fromlen);
	return do_recv(&x, kind);
}

HOOK ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct xfer x = { .fd = fd, .flags = flags, .msg = msg,
			  .op = op_recvmsg };
	int kind;

	need();
	/* MSG_WAITALL over a message: libc's blocking call does it */
	if (!msg || (flags & MSG_WAITALL) || !(kind = sock_kind(fd, flags)))
		return real.recvmsg(fd, msg, flags);
	return xfer(&x, kind, KG_FD_READ);
}

HOOK ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	struct xfer x = { .fd = fd, .flags = flags, .buf = (void *)buf,
			  .len = n, .op = op_send };
	int kind;

	need();
	if (!(kind = sock_kind(fd, flags)))
		return real.send(fd, buf, n, flags);
	return xfer_all(&x, kind, KG_FD_WRITE);
}

HOOK ssize_t sendto(int fd, const void *buf, size_t n, int flags,
		    const struct sockaddr *to, socklen_t tolen)
{
	struct xfer x = { .fd = fd, .flags = flags, .buf = (void *)buf,
			  .len = n, .to = to, .tolen = tolen,
			  .op = op_send };
	int kind;

	need();
	if (!(kind = sock_kind(fd, flags)))
		return real.sendto(fd, buf, n, flags, to, tolen);
	return xfer_all(&x, kind, KG_FD_WRITE);
}

HOOK ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct msghdr m;
	struct xfer x = { .fd = fd, .flags = flags, .msg = &m,
			  .op = op_sendmsg };
	int kind;

	need();
	if (!msg || msg->msg_iovlen > IOV_MAX ||
	    !(kind = sock_kind(fd, flags)))
		return real.sendmsg(fd, msg, flags);
	m = *msg;		/* a partial send edits the copy */
	return xfer_all(&x, kind, KG_FD_WRITE);
}

/* glibc's _FORTIFY_SOURCE versions: the same bound check, then the hook
 * (glibc's own would call its internal read, out of the hooks' reach). */
extern void __chk_fail(void) __attribute__((noreturn));

HOOK ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return read(fd, buf, n);
}

HOOK ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen,
			int flags)
{
	if (n > buflen)
		__chk_fail();
	return recv(fd, buf, n, flags);
}

HOOK ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen,
			    int flags, struct sockaddr *from,
			    socklen_t *fromlen)
{
	if (n > buflen)
		__chk_fail();
	return recvfrom(fd, buf, n, flags, from, fromlen);
}

/* ------------------------------------------------------------------ */
/* Connections                                                        */
/* ------------------------------------------------------------------ */

HOOK int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct waitst ws;
	int kind, r, on = 0, saved;
	socklen_t olen = sizeof(on);

	need();
	if (!served() || !is_sock(kind = kind_of(fd)))
		return real.accept4(fd, addr, len, flags);
	waitst_init(&ws, fd, kind, KG_FD_READ);
	saved = ERRNO;
	/* no per-call non-blocking accept: ask poll first */
	while (not_ready(fd, POLLIN)) {
		int w;

		/* not listening: libc fails at once (EINVAL), never waits */
		if (!ws.started &&
		    (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &olen) ||
		     !on))
			break;
		w = wait_ready(&ws);
		if (w == W_FAIL)
			return -1;
		if (w == W_LIBC)
			break;
	}
	ERRNO = saved;
	r = real.accept4(fd, addr, len, flags);
	if (r >= 0)
		kind_set(r, kind);
	return r;
}

HOOK int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	return accept4(fd, addr, len, 0);
}

/*
 * A blocking connect: made non-blocking for this one call (the socket is
 * not in use by anyone else while it connects), then a wait for writable
 * within SO_SNDTIMEO, and the result from SO_ERROR.
 */
HOOK int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct waitst ws;
	int fl, r, e, saved, kind, err = 0;
	socklen_t elen = sizeof(err);

	need();
	if (!served() || !is_sock(kind = kind_of(fd)))
		return real.connect(fd, addr, len);
	saved = ERRNO;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_NONBLOCK) ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK)) {
		ERRNO = saved;
		return real.connect(fd, addr, len);
	}
	r = real.connect(fd, addr, len);
	e = ERRNO;
	fcntl(fd, F_SETFL, fl);
	/* EALREADY: an earlier connect timed out (SO_SNDTIMEO) and goes on;
	 * a blocking connect waits for it as for its own */
	if (r == 0 || (e != EINPROGRESS && e != EAGAIN && e != EALREADY)) {
		ERRNO = r ? e : saved;
		return r;
	}
	if (e == EAGAIN)	/* a full AF_UNIX backlog: libc waits */
		return real.connect(fd, addr, len);
	waitst_init(&ws, fd, kind, KG_FD_WRITE);
	waitst_start(&ws);	/* the user's socket blocks */
	switch (wait_ready(&ws)) {
	case W_FAIL:
		if (ERRNO == EAGAIN)
			ERRNO = EINPROGRESS;	/* the kernel's timeout */
		return -1;
	case W_LIBC:
		/* cannot wait here: a poll(2) that blocks the thread */
		for (;;) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			if (real.poll(&p, 1, -1) >= 0 || ERRNO != EINTR)
				break;
		}
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen))
		return -1;
	if (err) {
		ERRNO = err;
		return -1;
	}
	ERRNO = saved;
	return 0;
}

/* ------------------------------------------------------------------ */
/* poll                                                               */
/* ------------------------------------------------------------------ */

#define POLL_READ (POLLIN | POLLRDNORM)
#define POLL_WRITE (POLLOUT | POLLWRNORM)

/*
 * Park until one of fds may be ready or the deadline: one descriptor
 * waiting on one side waits on it directly; anything else (several, both
 * sides, POLLPRI) through an epoll set of them all, itself readable when
 * one is. 0, or -1 to fall back to libc.
 */
static int poll_park(struct pollfd *fds, nfds_t n, uint64_t deadline)
{
	struct epoll_event ev;
	nfds_t i, j;
	int ep, r;

	if (n == 1 && fds[0].fd >= 0 &&
	    ((fds[0].events & ~POLL_READ) == 0 ||
	     (fds[0].events & ~POLL_WRITE) == 0) && fds[0].events) {
		r = kg_fd_wait_until(fds[0].fd, fds[0].events & POLL_READ ?
					KG_FD_READ : KG_FD_WRITE,
				     deadline, NULL);
		return r == 0 || r == -ETIMEDOUT || r == -EBADF ? 0 : -1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (fds[i].fd < 0)
			continue;
		for (j = 0; j < i && fds[j].fd != fds[i].fd; j++)
			;
		if (j < i)
			continue;	/* added with the union of its events */
		ev.events = 0;
		ev.data.u64 = 0;
		for (j = i; j < n; j++)
			if (fds[j].fd == fds[i].fd)
				ev.events |= (uint16_t)fds[j].events;
		/* a descriptor epoll refuses is one poll found not ready
		 * and cannot be (a regular file always is): skip it */
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i].fd, &ev);
	}
	r = kg_fd_wait_until(ep, KG_FD_READ, deadline, NULL);
	kg_fd_close(ep);	/* and forget its registration */
	return r == 0 || r == -ETIMEDOUT ? 0 : -1;
}

HOOK int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	uint64_t deadline;
	int saved, r;

	need();
	if (!served() || timeout == 0)
		return real.poll(fds, n, timeout);
	deadline = timeout < 0 ? UINT64_MAX :
		   kg_deadline(kg_now_ns(), (uint64_t)timeout * 1000000ull);
	if (n == 0) {
		if (timeout < 0) {
			/* forever: a sleep nobody ends, as poll's */
			for (;;)
				kg_sleep(UINT64_MAX / 2);
		}
		kg_sleep((uint64_t)timeout * 1000000ull);
		return 0;
	}
	saved = ERRNO;
	for (;;) {
		r = real.poll(fds, n, 0);
		if (r != 0 || kg_now_ns() >= deadline)
			return r;
		if (poll_park(fds, n, deadline)) {
			uint64_t now = kg_now_ns(), left;

			if (deadline == UINT64_MAX)
				return real.poll(fds, n, -1);
			left = deadline > now ? deadline - now : 0;
			return real.poll(fds, n, (int)((left + 999999) /
						       1000000));
		}
		ERRNO = saved;
	}
}

HOOK int __poll_chk(struct pollfd *fds, nfds_t n, int timeout,
		    size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		__chk_fail();
	return poll(fds, n, timeout);
}

/* ------------------------------------------------------------------ */
/* Closing and making descriptors                                     */
/* ------------------------------------------------------------------ */

/*
 * From any thread while the runtime runs: the waits on fd end with EBADF
 * first (kg_fd_close), then the number is closed.
 */
/*
 * Is fd a regular file, directory or block device (no poller waits on
 * one)? Asked of the kernel, not the cache: a number reused behind the
 * hooks' back (open, fopen) must not be taken for the socket it was.
 * Allocates nothing: close may be called from anywhere, sanitizer
 * runtimes' own symbolizers included (they open and close ELF files).
 */
static bool plain_file(int fd)
{
	struct stat st;
	int saved = ERRNO, type;

	type = fstat(fd, &st) ? 0 : st.st_mode & S_IFMT;
	ERRNO = saved;
	return type == S_IFREG || type == S_IFDIR || type == S_IFBLK;
}

HOOK int close(int fd)
{
	int r, saved;

	need();
	if (atomic_load_explicit(&forked, memory_order_relaxed) ||
	    !kg_rt_current() || plain_file(fd)) {
		r = real.close(fd);
	} else {
		/* kg_fd_close reads the runtime safely against its end */
		saved = ERRNO;
		r = kg_fd_close(fd);
		ERRNO = r ? -r : saved;
		r = r ? -1 : 0;
	}
	kind_forget(fd);
	return r;
}

/* Calls that make descriptors: the number's old kind is stale. */
static int made(int r)
{
	if (r >= 0)
		kind_forget(r);
	return r;
}

static int made2(int r, const int fds[2])
{
	if (r == 0) {
		kind_forget(fds[0]);
		kind_forget(fds[1]);
	}
	return r;
}

HOOK int socket(int domain, int type, int proto)
{
	need();
	return made(real.socket(domain, type, proto));
}

HOOK int socketpair(int domain, int type, int proto, int sv[2])
{
	need();
	return made2(real.socketpair(domain, type, proto, sv), sv);
}

HOOK int pipe(int fds[2])
{
	need();
	return made2(real.pipe(fds), fds);
}

HOOK int pipe2(int fds[2], int flags)
{
	need();
	return made2(real.pipe2(fds, flags), fds);
}

HOOK int dup(int fd)
{
	need();
	return made(real.dup(fd));
}

HOOK int dup2(int fd, int fd2)
{
	need();
	return made(real.dup2(fd, fd2));
}

HOOK int dup3(int fd, int fd2, int flags)
{
	need();
	return made(real.dup3(fd, fd2, flags));
}

/* ------------------------------------------------------------------ */
/* Sleeps                                                             */
/* ------------------------------------------------------------------ */

/* ns of a valid timespec, saturated; false if invalid */
static bool ts_ns(const struct timespec *ts, uint64_t *ns)
{
	if (ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000 || ts->tv_sec < 0)
		return false;
	if ((uint64_t)ts->tv_sec > (UINT64_MAX / 2) / 1000000000ull)
		*ns = UINT64_MAX / 2;
	else
		*ns = (uint64_t)ts->tv_sec * 1000000000ull +
		      (uint64_t)ts->tv_nsec;
	return true;
}

HOOK int nanosleep(const struct timespec *req, struct timespec *rem)
{
	uint64_t ns;

	need();
	if (!served() || !req || !ts_ns(req, &ns) || kg_sleep(ns))
		return real.nanosleep(req, rem);
	return 0;
}

HOOK int clock_nanosleep(clockid_t clk, int flags,
			 const struct timespec *req, struct timespec *rem)
{
	struct timespec now;
	uint64_t ns, at;

	need();
	if (!served() || !req || !ts_ns(req, &ns) ||
	    (clk != CLOCK_MONOTONIC && clk != CLOCK_REALTIME &&
	     clk != CLOCK_BOOTTIME) || (flags & ~TIMER_ABSTIME))
		return real.clock_nanosleep(clk, flags, req, rem);
	if (flags & TIMER_ABSTIME) {
		/* the time left now, on the kernel's clock asked for */
		if (clock_gettime(clk, &now) || !ts_ns(&now, &at))
			return real.clock_nanosleep(clk, flags, req, rem);
		ns = ns > at ? ns - at : 0;
	}
	if (kg_sleep(ns))
		return real.clock_nanosleep(clk, flags, req, rem);
	return 0;
}

HOOK int usleep(useconds_t us)
{
	need();
	if (!served() || kg_sleep((uint64_t)us * 1000ull))
		return real.usleep(us);
	return 0;
}

HOOK unsigned int sleep(unsigned int s)
{
	need();
	if (!served() || kg_sleep((uint64_t)s * 1000000000ull))
		return real.sleep(s);
	return 0;
}
