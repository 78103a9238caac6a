// SPDX-License-Identifier: MIT
/*
 * net_hook.c - libc's blocking socket, pipe and sleep calls park the
 * coroutine (userlib/hook.c), with the blocking call's behaviour.
 *
 * Most tests run on the sysmon backend with one proc and no marked
 * regions: a call that held the thread would stall the proc, so the
 * coroutine that must run meanwhile (the writer a reader waits for) could
 * not, and the waiting call's guard timeout (SO_RCVTIMEO) would end it
 * with EAGAIN instead. Each would-be hang is bounded that way.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull
#define THREAD_SLACK (KG_TEST_SANITIZED ? 16u : 8u)
#define GUARD_MS 2000

/* fortified entry points a -D_FORTIFY_SOURCE build calls instead */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen,
		       int flags, struct sockaddr *from, socklen_t *fromlen);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);

/* One proc, sysmon: a held thread stalls everything (see the top). */
static int run_one(void (*fn)(void *), void *arg)
{
	struct kg_config cfg = { .procs = 1, .backend = "sysmon" };

	return kg_run(fn, arg, &cfg);
}

static void set_timeo(int fd, int opt, unsigned int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

/* A blocking stream pair, with the guard on reads and writes. */
static void stream_pair(int sv[2])
{
	int i;

	CO_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0,
		 "socketpair");
	for (i = 0; i < 2; i++) {
		set_timeo(sv[i], SO_RCVTIMEO, GUARD_MS);
		set_timeo(sv[i], SO_SNDTIMEO, GUARD_MS);
	}
}

static bool blocking(int fd)
{
	return !(fcntl(fd, F_GETFL) & O_NONBLOCK);
}

/* ------------------------------------------------------------------ */
/* Reads park                                                         */
/* ------------------------------------------------------------------ */

static ssize_t rd_read(int fd, void *b, size_t n) { return read(fd, b, n); }
static ssize_t rd_chk(int fd, void *b, size_t n)
{
	return __read_chk(fd, b, n, n);
}
static ssize_t rd_recv(int fd, void *b, size_t n) { return recv(fd, b, n, 0); }
static ssize_t rd_recv_chk(int fd, void *b, size_t n)
{
	return __recv_chk(fd, b, n, n, 0);
}
static ssize_t rd_recvfrom(int fd, void *b, size_t n)
{
	return recvfrom(fd, b, n, 0, NULL, NULL);
}
static ssize_t rd_recvfrom_chk(int fd, void *b, size_t n)
{
	return __recvfrom_chk(fd, b, n, n, 0, NULL, NULL);
}
static ssize_t rd_readv(int fd, void *b, size_t n)
{
	struct iovec iov[2] = { { b, 1 }, { (char *)b + 1, n - 1 } };

	return readv(fd, iov, 2);
}
static ssize_t rd_recvmsg(int fd, void *b, size_t n)
{
	struct iovec iov = { b, n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	return recvmsg(fd, &m, 0);
}

static const struct reader {
	const char *name;
	ssize_t (*fn)(int fd, void *buf, size_t n);
} readers[] = {
	{ "read", rd_read },		{ "__read_chk", rd_chk },
	{ "recv", rd_recv },		{ "__recv_chk", rd_recv_chk },
	{ "recvfrom", rd_recvfrom },	{ "__recvfrom_chk", rd_recvfrom_chk },
	{ "readv", rd_readv },		{ "recvmsg", rd_recvmsg },
};

struct rd_job {
	const struct reader *r;
	int fd;
	_Atomic int state;	/* 0 started, 1 returned */
	ssize_t got;
	int err;
	char buf[16];
	kg_wg_t wg;
};

static void reader_co(void *p)
{
	struct rd_job *j = p;

	errno = 1234;		/* untouched by a call that succeeds */
	j->got = j->r->fn(j->fd, j->buf, sizeof(j->buf));
	j->err = errno;
	atomic_store(&j->state, 1);
	kg_wg_done(&j->wg);
}

static void reads_main(void *p)
{
	size_t i;

	(void)p;
	for (i = 0; i < sizeof(readers) / sizeof(readers[0]); i++) {
		struct rd_job j = { .r = &readers[i] };
		int sv[2];

		stream_pair(sv);
		j.fd = sv[0];
		kg_wg_add(&j.wg, 1);
		kg_go(reader_co, &j);
		kg_sleep(5 * MS);	/* the reader is parked by now */
		CO_CHECK(atomic_load(&j.state) == 0, "%s returned early",
			 j.r->name);
		CO_CHECK(write(sv[1], "hello", 5) == 5, "write");
		kg_wg_wait(&j.wg);
		CO_CHECK(j.got == 5 && !memcmp(j.buf, "hello", 5),
			 "%s: %zd errno %d", j.r->name, j.got, j.err);
		CO_CHECK(j.err == 1234, "%s changed errno to %d", j.r->name,
			 j.err);
		CO_CHECK(blocking(sv[0]), "%s left O_NONBLOCK", j.r->name);
		close(sv[0]);
		close(sv[1]);
	}
}

TEST(each_read_call_parks_the_coroutine)
{
	ASSERT_EQ(0, run_one(reads_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Writes park and complete                                           */
/* ------------------------------------------------------------------ */

#define BIG (1 << 20)

static ssize_t wr_write(int fd, const void *b, size_t n)
{
	return write(fd, b, n);
}
static ssize_t wr_send(int fd, const void *b, size_t n)
{
	return send(fd, b, n, 0);
}
static ssize_t wr_sendto(int fd, const void *b, size_t n)
{
	return sendto(fd, b, n, 0, NULL, 0);
}
static ssize_t wr_writev(int fd, const void *b, size_t n)
{
	struct iovec iov[3] = { { (void *)b, 100 },
				{ (char *)b + 100, n / 2 - 100 },
				{ (char *)b + n / 2, n - n / 2 } };

	return writev(fd, iov, 3);
}
static ssize_t wr_sendmsg(int fd, const void *b, size_t n)
{
	struct iovec iov[2] = { { (void *)b, n / 3 },
				{ (char *)b + n / 3, n - n / 3 } };
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };

	return sendmsg(fd, &m, 0);
}

static const struct writer {
	const char *name;
	ssize_t (*fn)(int fd, const void *buf, size_t n);
} writers[] = {
	{ "write", wr_write },	 { "send", wr_send },
	{ "sendto", wr_sendto }, { "writev", wr_writev },
	{ "sendmsg", wr_sendmsg },
};

struct wr_job {
	const struct writer *w;
	int fd;
	ssize_t put;
	int err;
	unsigned char *buf;
	kg_wg_t wg;
};

static void writer_co(void *p)
{
	struct wr_job *j = p;

	j->put = j->w->fn(j->fd, j->buf, BIG);
	j->err = errno;
	kg_wg_done(&j->wg);
}

static void writes_main(void *p)
{
	unsigned char *out = malloc(BIG), *in = malloc(BIG);
	size_t i, k;

	(void)p;
	for (k = 0; k < BIG; k++)
		out[k] = (unsigned char)(k * 7 + k / 4096);
	for (i = 0; i < sizeof(writers) / sizeof(writers[0]); i++) {
		struct wr_job j = { .w = &writers[i], .buf = out };
		size_t got = 0;
		int sv[2];

		stream_pair(sv);
		j.fd = sv[0];
		kg_wg_add(&j.wg, 1);
		kg_go(writer_co, &j);
		/* the reader's reads park too, between the writer's sends */
		while (got < BIG) {
			ssize_t n = read(sv[1], in + got, BIG - got);

			if (n <= 0)
				break;
			got += (size_t)n;
		}
		kg_wg_wait(&j.wg);
		CO_CHECK(j.put == BIG, "%s: %zd of %d (errno %d)", j.w->name,
			 j.put, BIG, j.err);
		CO_CHECK(got == BIG && !memcmp(in, out, BIG),
			 "%s: %zu bytes, intact %d", j.w->name, got,
			 got == BIG && !memcmp(in, out, BIG));
		CO_CHECK(blocking(sv[0]), "%s left O_NONBLOCK", j.w->name);
		close(sv[0]);
		close(sv[1]);
	}
	free(out);
	free(in);
}

TEST(each_write_call_sends_everything_parking_between)
{
	ASSERT_EQ(0, run_one(writes_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* O_NONBLOCK, timeouts, MSG_WAITALL, signals                         */
/* ------------------------------------------------------------------ */

static void nonblock_main(void *p)
{
	int sv[2], lfd, n = 0;
	char c, buf[65536];

	(void)p;
	CO_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0,
		 "socketpair");
	CO_CHECK(read(sv[0], &c, 1) == -1 && errno == EAGAIN, "read");
	CO_CHECK(recv(sv[0], &c, 1, 0) == -1 && errno == EAGAIN, "recv");
	/* a blocking socket, and the caller's own MSG_DONTWAIT */
	fcntl(sv[0], F_SETFL, 0);
	CO_CHECK(recv(sv[0], &c, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN,
		 "MSG_DONTWAIT");
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	memset(buf, 'x', sizeof(buf));
	while (write(sv[0], buf, sizeof(buf)) > 0 && n < 1000)
		n++;
	CO_CHECK(errno == EAGAIN, "full: errno %d after %d writes", errno, n);
	CO_CHECK(!blocking(sv[0]), "the user's O_NONBLOCK was lost");
	close(sv[0]);
	close(sv[1]);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	CO_CHECK(listen(lfd, 4) == 0, "listen");
	CO_CHECK(accept(lfd, NULL, NULL) == -1 && errno == EAGAIN, "accept");
	close(lfd);
}

TEST(o_nonblock_still_returns_eagain)
{
	ASSERT_EQ(0, run_one(nonblock_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static _Atomic int ticks;

static void ticker_co(void *p)
{
	int *stop = p;

	while (!*(volatile int *)stop) {
		kg_sleep(2 * MS);
		atomic_fetch_add(&ticks, 1);
	}
}

static void timeouts_main(void *p)
{
	int sv[2], lfd, stop = 0, t0;
	char buf[65536];
	uint64_t start;
	ssize_t r;

	(void)p;
	kg_go(ticker_co, &stop);
	stream_pair(sv);
	set_timeo(sv[0], SO_RCVTIMEO, 60);
	t0 = atomic_load(&ticks);
	start = kg_now_ns();
	r = read(sv[0], buf, 1);
	CO_CHECK(r == -1 && errno == EAGAIN, "read: %zd errno %d", r, errno);
	CO_CHECK(kg_now_ns() - start >= 55 * MS, "early: %llu ms",
		 (unsigned long long)((kg_now_ns() - start) / MS));
	CO_CHECK(atomic_load(&ticks) - t0 >= 5, "the ticker stalled (%d)",
		 atomic_load(&ticks) - t0);
	/* a send that times out after a partial send returns the part */
	set_timeo(sv[0], SO_SNDTIMEO, 60);
	memset(buf, 'y', sizeof(buf));
	r = send(sv[0], buf, sizeof(buf), 0);
	while (r == (ssize_t)sizeof(buf))
		r = send(sv[0], buf, sizeof(buf), 0);
	CO_CHECK((r > 0 && r < (ssize_t)sizeof(buf)) ||
		 (r == -1 && errno == EAGAIN), "send: %zd errno %d", r, errno);
	close(sv[0]);
	close(sv[1]);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	CO_CHECK(listen(lfd, 4) == 0, "listen");
	set_timeo(lfd, SO_RCVTIMEO, 30);
	CO_CHECK(accept(lfd, NULL, NULL) == -1 && errno == EAGAIN, "accept");
	close(lfd);
	stop = 1;
}

TEST(socket_timeouts_are_honoured)
{
	ASSERT_EQ(0, run_one(timeouts_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static void waitall_co(void *p)
{
	int *fd = p;
	char buf[100];
	ssize_t r = recv(*fd, buf, sizeof(buf), MSG_WAITALL);

	CO_CHECK(r == 100, "MSG_WAITALL: %zd", r);
}

static void sigusr(int sig)
{
	(void)sig;
}

static void waitall_main(void *p)
{
	struct sigaction sa = { .sa_handler = sigusr };	/* no SA_RESTART */
	char buf[50];
	int sv[2];

	(void)p;
	sigaction(SIGUSR1, &sa, NULL);
	stream_pair(sv);
	memset(buf, 'z', sizeof(buf));
	kg_go(waitall_co, &sv[0]);
	kg_sleep(5 * MS);
	CO_CHECK(write(sv[1], buf, 50) == 50, "first half");
	kg_sleep(5 * MS);
	/* a signal: the parked recv goes on waiting (never EINTR) */
	kill(getpid(), SIGUSR1);
	kg_sleep(5 * MS);
	CO_CHECK(write(sv[1], buf, 50) == 50, "second half");
	kg_sleep(5 * MS);
	close(sv[0]);
	close(sv[1]);
	signal(SIGUSR1, SIG_DFL);
}

TEST(msg_waitall_and_a_signal)
{
	ASSERT_EQ(0, run_one(waitall_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Close, half-close, reuse                                           */
/* ------------------------------------------------------------------ */

struct closing {
	int fd;
	ssize_t r;
	int err;
	kg_wg_t wg;
};

static void close_reader(void *p)
{
	struct closing *c = p;
	char b;

	c->r = read(c->fd, &b, 1);
	c->err = errno;
	kg_wg_done(&c->wg);
}

static void close_main(void *p)
{
	struct closing c = { 0 };
	int sv[2];

	(void)p;
	/* close from another coroutine: EBADF, as Go's closed connection */
	stream_pair(sv);
	c.fd = sv[0];
	kg_wg_add(&c.wg, 1);
	kg_go(close_reader, &c);
	kg_sleep(5 * MS);
	CO_CHECK(close(sv[0]) == 0, "close");
	kg_wg_wait(&c.wg);
	CO_CHECK(c.r == -1 && c.err == EBADF, "read: %zd errno %d", c.r,
		 c.err);
	close(sv[1]);

	/* the peer's shutdown(SHUT_WR): end of file */
	stream_pair(sv);
	c.fd = sv[0];
	kg_wg_add(&c.wg, 1);
	kg_go(close_reader, &c);
	kg_sleep(5 * MS);
	CO_CHECK(shutdown(sv[1], SHUT_WR) == 0, "shutdown");
	kg_wg_wait(&c.wg);
	CO_CHECK(c.r == 0, "after the peer's SHUT_WR: %zd errno %d", c.r,
		 c.err);

	/* its own shutdown(SHUT_RD) wakes the reader too */
	c.fd = sv[1];
	kg_wg_add(&c.wg, 1);
	kg_go(close_reader, &c);
	kg_sleep(5 * MS);
	CO_CHECK(shutdown(sv[1], SHUT_RD) == 0, "shutdown");
	kg_wg_wait(&c.wg);
	CO_CHECK(c.r == 0, "after SHUT_RD: %zd errno %d", c.r, c.err);
	close(sv[0]);
	close(sv[1]);
}

TEST(close_and_shutdown_end_a_parked_read)
{
	ASSERT_EQ(0, run_one(close_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static void reuse_main(void *p)
{
	struct closing c = { 0 };
	int a[2], b[2], pf[2], keep, round;
	FILE *f;
	char ch;

	(void)p;
	/*
	 * A waiter's number closed while its file lives on (a dup keeps
	 * it), then reused: data on the old file must never wake the new
	 * owner's wait. Closed through the hooks (the registration goes),
	 * then behind their back (a raw close: the old registration stays
	 * in epoll, and its events must be told apart).
	 */
	for (round = 0; round < 2; round++) {
		stream_pair(a);
		keep = dup(a[0]);
		c.fd = a[0];
		kg_wg_add(&c.wg, 1);
		kg_go(close_reader, &c);
		kg_sleep(5 * MS);
		if (round == 0) {
			close(a[0]);
			kg_wg_wait(&c.wg);
			CO_CHECK(c.r == -1 && c.err == EBADF, "closed: %zd %d",
				 c.r, c.err);
		} else {
			/* nobody ends this wait: feed it, then close raw */
			CO_CHECK(write(a[1], "1", 1) == 1, "write");
			kg_wg_wait(&c.wg);
			CO_CHECK(c.r == 1, "fed: %zd %d", c.r, c.err);
			syscall(SYS_close, a[0]);
		}
		stream_pair(b);
		CO_CHECK(b[0] == a[0] || b[1] == a[0], "number %d not reused",
			 a[0]);
		c.r = -2;
		kg_wg_add(&c.wg, 1);
		kg_go(close_reader, &c);
		kg_sleep(5 * MS);
		CO_CHECK(write(a[1], "o", 1) == 1, "old file: errno %d", errno);
		kg_sleep(10 * MS);
		CO_CHECK(c.r == -2, "round %d: woken by the old file (%zd)",
			 round, c.r);
		CO_CHECK(write(b[0] == a[0] ? b[1] : b[0], "n", 1) == 1,
			 "write");
		kg_wg_wait(&c.wg);
		CO_CHECK(c.r == 1, "new owner: %zd errno %d", c.r, c.err);
		close(keep);
		close(a[1]);
		close(b[0]);
		close(b[1]);
	}

	/* a number that was a regular file, closed behind the hooks' back
	 * (fclose), then a pipe: reads on the pipe park */
	f = fopen("/proc/self/status", "r");
	CO_CHECK(f && fread(&ch, 1, 1, f) == 1, "fopen");
	if (f) {
		int num = fileno(f);

		CO_CHECK(read(num, &ch, 1) == 1, "a file reads");
		fclose(f);
		CO_CHECK(pipe(pf) == 0, "pipe");
		CO_CHECK(pf[0] == num || pf[1] == num, "number reused");
		c.fd = pf[0];
		c.r = -2;
		kg_wg_add(&c.wg, 1);
		kg_go(close_reader, &c);
		kg_sleep(5 * MS);
		CO_CHECK(c.r == -2, "pipe read returned early: %zd", c.r);
		CO_CHECK(write(pf[1], "p", 1) == 1, "write");
		kg_wg_wait(&c.wg);
		CO_CHECK(c.r == 1, "pipe read: %zd errno %d", c.r, c.err);
		close(pf[0]);
		close(pf[1]);
	}
}

/* A socket's number closed behind the hooks' back and reused by open(2)
 * for a regular file: read and write still work on the file. */
static void stale_main(void *p)
{
	char buf[64], path[] = "/tmp/kgreen-net-hook-XXXXXX";
	int sv[2], fd, tmp = mkstemp(path);

	(void)p;
	CO_CHECK(tmp >= 0, "mkstemp");
	unlink(path);
	stream_pair(sv);
	CO_CHECK(write(sv[1], "s", 1) == 1 && read(sv[0], buf, 1) == 1,
		 "the socket is known as one");
	CO_CHECK(write(sv[0], "t", 1) == 1, "and written as one");
	syscall(SYS_close, sv[0]);
	snprintf(buf, sizeof(buf), "/proc/self/fd/%d", tmp);
	fd = open(buf, O_RDWR);
	CO_CHECK(fd == sv[0], "number %d not reused (%d)", sv[0], fd);
	errno = 4321;
	CO_CHECK(write(fd, "file", 4) == 4, "write: errno %d", errno);
	CO_CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");
	CO_CHECK(read(fd, buf, sizeof(buf)) == 4 && !memcmp(buf, "file", 4),
		 "read: errno %d", errno);
	CO_CHECK(errno == 4321, "errno %d", errno);
	close(fd);
	close(tmp);
	close(sv[1]);
}

TEST(a_stale_socket_number_reused_by_a_file)
{
	ASSERT_EQ(0, run_one(stale_main, NULL));
	ASSERT_EQ(0, co_failures());
}

TEST(a_reused_number_is_never_woken_by_its_old_file)
{
	ASSERT_EQ(0, run_one(reuse_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Pipes                                                              */
/* ------------------------------------------------------------------ */

static void pipe_writer(void *p)
{
	int *fd = p;
	char buf[4096];

	memset(buf, 'w', sizeof(buf));
	/* the pipe is full: this parks until the reader drains it */
	CO_CHECK(write(*fd, buf, sizeof(buf)) == sizeof(buf), "write");
}

static void pipes_main(void *p)
{
	char buf[65536];
	int pf[2], n = 0, fl;
	ssize_t r, got = 0;

	(void)p;
	CO_CHECK(pipe(pf) == 0, "pipe");
	fl = fcntl(pf[1], F_GETFL);
	fcntl(pf[1], F_SETFL, fl | O_NONBLOCK);
	memset(buf, 'f', sizeof(buf));
	while (write(pf[1], buf, 4096) == 4096 && n < 1000)
		n++;
	fcntl(pf[1], F_SETFL, fl);
	kg_go(pipe_writer, &pf[1]);
	kg_sleep(5 * MS);
	while (got < (ssize_t)(n + 1) * 4096) {
		r = read(pf[0], buf, sizeof(buf));
		if (r <= 0)
			break;
		got += r;
	}
	CO_CHECK(got == (ssize_t)(n + 1) * 4096, "got %zd of %d", got,
		 (n + 1) * 4096);
	close(pf[0]);
	close(pf[1]);
}

TEST(pipe_reads_and_writes_park)
{
	ASSERT_EQ(0, run_one(pipes_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* accept, connect                                                    */
/* ------------------------------------------------------------------ */

static struct sockaddr_in listening(int *lfd, int backlog)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	*lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CO_CHECK(bind(*lfd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind");
	CO_CHECK(listen(*lfd, backlog) == 0, "listen");
	getsockname(*lfd, (struct sockaddr *)&a, &len);
	return a;
}

static void acceptor_co(void *p)
{
	int *lfd = p, fd;
	char c;

	set_timeo(*lfd, SO_RCVTIMEO, GUARD_MS);
	fd = accept4(*lfd, NULL, NULL, SOCK_CLOEXEC);
	CO_CHECK(fd >= 0, "accept4: errno %d", errno);
	set_timeo(fd, SO_RCVTIMEO, GUARD_MS);
	CO_CHECK(read(fd, &c, 1) == 1 && c == 'a', "read");
	CO_CHECK(write(fd, "b", 1) == 1, "write");
	close(fd);
}

static void connect_main(void *p)
{
	struct sockaddr_in a;
	int lfd, fd, i, inprogress = 0, fds[16], nfds = 0;
	char c;

	(void)p;
	/* accept parks until the connection arrives */
	a = listening(&lfd, 16);
	kg_go(acceptor_co, &lfd);
	kg_sleep(5 * MS);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CO_CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
		 "connect: errno %d", errno);
	CO_CHECK(blocking(fd), "connect left O_NONBLOCK");
	set_timeo(fd, SO_RCVTIMEO, GUARD_MS);
	CO_CHECK(write(fd, "a", 1) == 1, "write");
	CO_CHECK(read(fd, &c, 1) == 1 && c == 'b', "read");
	close(fd);
	close(lfd);

	/* refused: the port has no listener now */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CO_CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1 &&
		 errno == ECONNREFUSED, "refused: errno %d", errno);
	close(fd);

	/* timing out: a listener that never accepts, its queue full, drops
	 * the handshakes; SO_SNDTIMEO ends connect with EINPROGRESS */
	a = listening(&lfd, 0);
	for (i = 0; i < 16 && !inprogress; i++) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		set_timeo(fd, SO_SNDTIMEO, 50);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1) {
			CO_CHECK(errno == EINPROGRESS, "errno %d", errno);
			inprogress = 1;
		}
		fds[nfds++] = fd;
	}
	CO_CHECK(inprogress, "no connect timed out in %d", i);
	while (nfds)
		close(fds[--nfds]);
	close(lfd);
}

TEST(accept_and_connect_park)
{
	ASSERT_EQ(0, run_one(connect_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* poll and the sleeps                                                */
/* ------------------------------------------------------------------ */

static void poke_co(void *p)
{
	int *fd = p;

	kg_sleep(10 * MS);
	CO_CHECK(write(*fd, "!", 1) == 1, "poke");
}

static void poll_main(void *p)
{
	struct pollfd one, two[3];
	int a[2], b[2], stop = 0, t0;
	uint64_t start;

	(void)p;
	kg_go(ticker_co, &stop);
	stream_pair(a);
	stream_pair(b);
	/* one descriptor */
	one = (struct pollfd){ .fd = a[0], .events = POLLIN };
	kg_go(poke_co, &a[1]);
	CO_CHECK(poll(&one, 1, GUARD_MS) == 1 && one.revents == POLLIN,
		 "poll one: revents %#x", one.revents);
	/* several, and the same descriptor twice, fortified */
	two[0] = (struct pollfd){ .fd = a[0], .events = POLLPRI };
	two[1] = (struct pollfd){ .fd = b[0], .events = POLLIN };
	two[2] = (struct pollfd){ .fd = b[0], .events = POLLRDHUP };
	kg_go(poke_co, &b[1]);
	CO_CHECK(__poll_chk(two, 3, GUARD_MS, sizeof(two)) == 1 &&
		 two[1].revents == POLLIN && !two[0].revents,
		 "poll three: %#x %#x %#x", two[0].revents, two[1].revents,
		 two[2].revents);
	/* a timeout, while the ticker runs */
	two[0].events = POLLIN;
	CO_CHECK(read(a[0], &t0, 1) == 1 && read(b[0], &t0, 1) == 1, "drain");
	t0 = atomic_load(&ticks);
	start = kg_now_ns();
	CO_CHECK(poll(two, 2, 40) == 0, "poll timeout");
	CO_CHECK(kg_now_ns() - start >= 39 * MS, "early");
	/* no descriptors: a sleep */
	CO_CHECK(poll(NULL, 0, 20) == 0, "poll(NULL, 0, 20)");
	CO_CHECK(atomic_load(&ticks) - t0 >= 5, "the ticker stalled (%d)",
		 atomic_load(&ticks) - t0);
	/* a closed descriptor: POLLNVAL at once */
	close(a[0]);
	one.fd = a[0];
	CO_CHECK(poll(&one, 1, -1) == 1 && one.revents == POLLNVAL,
		 "POLLNVAL: %#x", one.revents);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	stop = 1;
}

TEST(poll_parks)
{
	ASSERT_EQ(0, run_one(poll_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static void sleeps_main(void *p)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 }, now;
	int stop = 0, t0, i;
	uint64_t start;

	(void)p;
	kg_go(ticker_co, &stop);
	for (i = 0; i < 5; i++) {
		t0 = atomic_load(&ticks);
		start = kg_now_ns();
		switch (i) {
		case 0:
			CO_CHECK(usleep(20000) == 0, "usleep");
			break;
		case 1:
			CO_CHECK(nanosleep(&ts, NULL) == 0, "nanosleep");
			break;
		case 2:
			CO_CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &ts,
						 NULL) == 0, "relative");
			break;
		case 3:
			clock_gettime(CLOCK_MONOTONIC, &now);
			now.tv_nsec += 20 * 1000 * 1000;
			if (now.tv_nsec >= 1000000000) {
				now.tv_sec++;
				now.tv_nsec -= 1000000000;
			}
			CO_CHECK(clock_nanosleep(CLOCK_MONOTONIC,
						 TIMER_ABSTIME, &now,
						 NULL) == 0, "absolute");
			break;
		case 4:
			CO_CHECK(sleep(0) == 0, "sleep(0)");
			kg_sleep(20 * MS);
			break;
		}
		CO_CHECK(kg_now_ns() - start >= 19 * MS, "sleep %d early", i);
		CO_CHECK(atomic_load(&ticks) - t0 >= 3,
			 "sleep %d: the ticker stalled (%d)", i,
			 atomic_load(&ticks) - t0);
	}
	ts.tv_nsec = 2000000000;
	CO_CHECK(nanosleep(&ts, NULL) == -1 && errno == EINVAL, "EINVAL");
	CO_CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) == EINVAL,
		 "clock_nanosleep EINVAL");
	stop = 1;
}

TEST(sleeps_park)
{
	ASSERT_EQ(0, run_one(sleeps_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Where the hooks do not apply                                       */
/* ------------------------------------------------------------------ */

struct held {
	int fd;
	ssize_t r;
	int err;
};

static void held_reader(void *p)
{
	struct held *h = p;
	char c;

	h->r = read(h->fd, &c, 1);
	h->err = errno;
}

static void *plain_reader(void *p)
{
	held_reader(p);
	return NULL;
}

/* A read that holds its thread: the writer (same proc) cannot run before
 * the read's 60 ms timeout ends it. */
static void held_main(void *p)
{
	struct held h = { 0 };
	int sv[2];

	(void)p;
	stream_pair(sv);
	set_timeo(sv[0], SO_RCVTIMEO, 60);
	h.fd = sv[0];
	kg_go(held_reader, &h);
	kg_sleep(5 * MS);
	CO_CHECK(write(sv[1], "x", 1) == 1, "write");
	kg_sleep(5 * MS);
	CO_CHECK(h.r == -1 && h.err == EAGAIN,
		 "read did not hold its thread: %zd errno %d", h.r, h.err);
	close(sv[0]);
	close(sv[1]);
}

TEST(turned_off_by_environment_and_by_flag)
{
	struct kg_config cfg = { .procs = 1, .backend = "sysmon",
				 .flags = KG_RUN_NO_INTERPOSE };

	/* sysmon's time slice would take the held thread's proc after 10 ms
	 * (it looks like a coroutine that never switches) */
	setenv("KGREEN_SLICE", "off", 1);
	setenv("KGREEN_INTERPOSE", "0", 1);
	ASSERT_EQ(0, run_one(held_main, NULL));
	unsetenv("KGREEN_INTERPOSE");
	ASSERT_EQ(0, kg_run(held_main, NULL, &cfg));
	unsetenv("KGREEN_SLICE");
	ASSERT_EQ(0, co_failures());
}

static void marked_reader(void *p)
{
	kg_blocking_begin();
	held_reader(p);
	kg_blocking_end();
}

static void outside_main(void *p)
{
	struct held h = { 0 };
	pthread_t t;
	int sv[2];
	char c = 'q';

	(void)p;
	/* a plain thread blocks as ever; the data arrives later */
	stream_pair(sv);
	h.fd = sv[0];
	pthread_create(&t, NULL, plain_reader, &h);
	kg_sleep(20 * MS);
	CO_CHECK(h.r == 0, "plain thread returned early");
	CO_CHECK(write(sv[1], &c, 1) == 1, "write");
	pthread_join(t, NULL);
	CO_CHECK(h.r == 1, "plain thread: %zd errno %d", h.r, h.err);
	close(sv[0]);
	close(sv[1]);
	/* inside a marked region the call goes to libc: sysmon hands the
	 * proc on, so the writer runs, and the read returns its byte */
	stream_pair(sv);
	h.fd = sv[0];
	h.r = 0;
	kg_go(marked_reader, &h);
	kg_sleep(20 * MS);
	CO_CHECK(write(sv[1], &c, 1) == 1, "write");
	kg_sleep(20 * MS);
	CO_CHECK(h.r == 1, "marked read: %zd errno %d", h.r, h.err);
	close(sv[0]);
	close(sv[1]);
}

TEST(plain_threads_and_marked_regions_call_libc)
{
	ASSERT_EQ(0, run_one(outside_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* fork and exec from a coroutine                                     */
/* ------------------------------------------------------------------ */

static void fork_main(void *p)
{
	int pf[2], status = 0;
	char buf[8] = { 0 };
	pid_t pid;

	(void)p;
	CO_CHECK(pipe(pf) == 0, "pipe");
	pid = fork();
	if (pid == 0) {
		/* the child: one thread, no scheduler; the hooks call libc */
		struct timespec ts = { 0, 1000000 };

		close(pf[0]);
		nanosleep(&ts, NULL);
		if (write(pf[1], "hi", 2) != 2)
			_exit(1);
		close(pf[1]);
		execl("/bin/sh", "sh", "-c", "exit 3", (char *)NULL);
		_exit(2);
	}
	CO_CHECK(pid > 0, "fork");
	close(pf[1]);
	CO_CHECK(read(pf[0], buf, sizeof(buf)) == 2 && !strcmp(buf, "hi"),
		 "read from the child: %s", buf);
	CO_CHECK(read(pf[0], buf, sizeof(buf)) == 0, "EOF after exec");
	close(pf[0]);
	CO_CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		 WEXITSTATUS(status) == 3, "status %#x", status);
}

TEST(fork_and_exec_from_a_coroutine)
{
	ASSERT_EQ(0, run_one(fork_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Edge cases: what the blocking call does, exactly                   */
/* ------------------------------------------------------------------ */

static int race_src[2];
static _Atomic int race_stop;
static _Atomic long race_ebadf, race_calls;

/* A plain thread: its closes go through kg_fd_close too, in parallel
 * with the coroutines' waits (and without holding a proc). */
static void *race_closer(void *p)
{
	(void)p;
	while (!atomic_load(&race_stop)) {
		int d = dup(race_src[1]);

		close(d);
	}
	return NULL;
}

static void race_waiter(void *p)
{
	(void)p;
	while (!atomic_load(&race_stop)) {
		int d = dup(race_src[0]);
		char c;
		ssize_t r;
		struct timeval tv = { 0, 50 };	/* 50 us */

		setsockopt(d, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		r = recv(d, &c, 1, 0);
		/* EBADF on a descriptor still open is a lie */
		if (r < 0 && errno == EBADF && fcntl(d, F_GETFD) >= 0)
			atomic_fetch_add(&race_ebadf, 1);
		atomic_fetch_add(&race_calls, 1);
		close(d);
	}
}

/* Numbers closed and reused by other coroutines all the time (a server):
 * a wait on an open descriptor never fails with EBADF. */
static void race_main(void *p)
{
	pthread_t t[2];
	int i;

	(void)p;
	CO_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, race_src) == 0, "pair");
	for (i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, race_closer, NULL);
	for (i = 0; i < 3; i++)
		kg_go(race_waiter, NULL);
	kg_sleep(400 * MS);
	atomic_store(&race_stop, 1);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	kg_sleep(50 * MS);
	TH_LOG("%ld waits, %ld failed EBADF on an open descriptor",
	       atomic_load(&race_calls), atomic_load(&race_ebadf));
	CO_CHECK(atomic_load(&race_ebadf) == 0, "%ld spurious EBADF",
		 atomic_load(&race_ebadf));
	CO_CHECK(atomic_load(&race_calls) > 10, "%ld waits",
		 atomic_load(&race_calls));
	close(race_src[0]);
	close(race_src[1]);
}

TEST(closes_of_reused_numbers_never_fail_an_open_descriptor)
{
	struct kg_config cfg = { .procs = 2, .backend = "sysmon" };

	ASSERT_EQ(0, kg_run(race_main, NULL, &cfg));
	ASSERT_EQ(0, co_failures());
}

static void later_writer(void *p)
{
	int *fd = p;

	kg_sleep(20 * MS);
	CO_CHECK(write(*fd, "efgh", 4) == 4, "write");
}

static void never_wait_main(void *p)
{
	struct msghdr m = { 0 };
	char buf[16] = { 0 };
	struct iovec iov = { buf, sizeof(buf) };
	uint64_t t0 = kg_now_ns();
	int sv[2], u;
	ssize_t r;

	(void)p;
	/* accept on a socket that is not listening: EINVAL at once */
	stream_pair(sv);
	CO_CHECK(accept(sv[0], NULL, NULL) == -1 && errno == EINVAL,
		 "accept: errno %d", errno);
	/* the error queue: EAGAIN when empty, never a wait */
	u = socket(AF_INET, SOCK_DGRAM, 0);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	CO_CHECK(recvmsg(u, &m, MSG_ERRQUEUE) == -1 && errno == EAGAIN,
		 "MSG_ERRQUEUE: errno %d", errno);
	CO_CHECK(kg_now_ns() - t0 < 500 * MS, "they waited");
	close(u);
	/* MSG_PEEK | MSG_WAITALL goes to libc (a retry would peek the same
	 * bytes again): on an AF_UNIX stream, what is there, once */
	CO_CHECK(write(sv[1], "abcd", 4) == 4, "write");
	r = recv(sv[0], buf, 8, MSG_PEEK | MSG_WAITALL);
	CO_CHECK(r == 4 && !memcmp(buf, "abcd", 4), "peek: %zd '%.8s'", r,
		 buf);
	kg_go(later_writer, &sv[1]);
	r = recv(sv[0], buf, 8, MSG_WAITALL);
	CO_CHECK(r == 8 && !memcmp(buf, "abcdefgh", 8), "waitall: %zd '%.8s'",
		 r, buf);
	close(sv[0]);
	close(sv[1]);
}

TEST(calls_that_never_wait_do_not_park)
{
	ASSERT_EQ(0, run_one(never_wait_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static void again_main(void *p)
{
	struct sockaddr_in a;
	int lfd, fd = -1, fds[16], n = 0, r = 0, i;

	(void)p;
	/* a connect that timed out (SO_SNDTIMEO) goes on in the kernel; a
	 * second blocking connect on the socket waits for it (EALREADY is
	 * for non-blocking sockets) */
	a = listening(&lfd, 0);
	for (i = 0; i < 16; i++) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		set_timeo(fd, SO_SNDTIMEO, 50);
		fds[n++] = fd;
		r = connect(fd, (struct sockaddr *)&a, sizeof(a));
		if (r)
			break;
	}
	CO_CHECK(r == -1 && errno == EINPROGRESS, "first: %d errno %d", r,
		 errno);
	set_timeo(fd, SO_SNDTIMEO, 0);
	/* room in the queue: the handshake's retransmission completes */
	i = accept(lfd, NULL, NULL);
	CO_CHECK(i >= 0, "accept");
	if (i >= 0)
		close(i);
	r = connect(fd, (struct sockaddr *)&a, sizeof(a));
	CO_CHECK(r == 0, "second: errno %d", errno);
	while (n)
		close(fds[--n]);
	close(lfd);
}

TEST(a_second_blocking_connect_waits_for_the_first)
{
	ASSERT_EQ(0, run_one(again_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static _Atomic int sigpipes;

static void count_sigpipe(int sig)
{
	(void)sig;
	atomic_fetch_add(&sigpipes, 1);
}

static void short_reader(void *p)
{
	int *fd = p;
	char buf[65536];
	size_t got = 0;
	ssize_t n;

	while (got < sizeof(buf) &&
	       (n = read(*fd, buf, sizeof(buf) - got)) > 0)
		got += (size_t)n;
	close(*fd);
}

static void sigpipe_main(void *p)
{
	struct sigaction sa = { .sa_handler = count_sigpipe }, old;
	char *big = calloc(1, BIG);
	int sv[2];
	ssize_t r;

	(void)p;
	sigaction(SIGPIPE, &sa, &old);
	stream_pair(sv);
	kg_go(short_reader, &sv[1]);
	/* the peer closes after 64 KiB: the kernel's blocking send returns
	 * what it sent, with no SIGPIPE once some went */
	r = write(sv[0], big, BIG);
	CO_CHECK(r > 0 && r < BIG, "write: %zd errno %d", r, errno);
	CO_CHECK(atomic_load(&sigpipes) == 0, "%d SIGPIPE",
		 atomic_load(&sigpipes));
	/* the next one fails, as the kernel's does, with its signal */
	CO_CHECK(write(sv[0], big, 1) == -1 && errno == EPIPE, "EPIPE");
	CO_CHECK(atomic_load(&sigpipes) == 1, "%d SIGPIPE",
		 atomic_load(&sigpipes));
	sigaction(SIGPIPE, &old, NULL);
	close(sv[0]);
	free(big);
}

TEST(no_sigpipe_after_a_partial_send)
{
	ASSERT_EQ(0, run_one(sigpipe_main, NULL));
	ASSERT_EQ(0, co_failures());
}

static void connector_co(void *p)
{
	struct sockaddr_in *a = p;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	kg_sleep(10 * MS);
	CO_CHECK(connect(fd, (struct sockaddr *)a, sizeof(*a)) == 0,
		 "connect");
	kg_sleep(20 * MS);
	close(fd);
}

static void errno_main(void *p)
{
	struct pollfd pf[2];
	struct sockaddr_in a;
	int x[2], y[2], pp[2], lfd, fd;

	(void)p;
	stream_pair(x);
	stream_pair(y);
	pf[0] = (struct pollfd){ .fd = x[0], .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = y[0], .events = POLLIN };
	CO_CHECK(poll(pf, 2, 10) == 0, "poll");
	/* the numbers the poll's epoll set had are reused now */
	CO_CHECK(pipe(pp) == 0, "pipe");
	errno = 777;
	CO_CHECK(close(pp[0]) == 0 && close(pp[1]) == 0, "close");
	CO_CHECK(errno == 777, "close changed errno to %d", errno);
	a = listening(&lfd, 4);
	kg_go(connector_co, &a);
	errno = 778;
	fd = accept(lfd, NULL, NULL);
	CO_CHECK(fd >= 0 && errno == 778, "accept: %d errno %d", fd, errno);
	close(fd);
	close(lfd);
	close(x[0]);
	close(x[1]);
	close(y[0]);
	close(y[1]);
}

TEST(errno_is_kept_on_success)
{
	ASSERT_EQ(0, run_one(errno_main, NULL));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* At scale: idle connections in plain read() beside a ticker         */
/* ------------------------------------------------------------------ */

#define IDLE scaled(10000, 10)

static int (*idle_fds)[2];
static long idle_n;
static _Atomic long idle_done;

static void idle_co(void *p)
{
	long i = (long)(intptr_t)p;
	char c;

	CO_CHECK(read(idle_fds[i][0], &c, 1) == 0, "idle %ld", i);
	atomic_fetch_add(&idle_done, 1);
}

static void idle_main(void *p)
{
	long i, n = idle_n, tk_count = 0;
	uint64_t gap = 0;
	struct kg_stats st;

	(void)p;
	idle_fds = calloc((size_t)n, sizeof(*idle_fds));
	for (i = 0; i < n; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			       idle_fds[i])) {
			CO_CHECK(0, "socketpair %ld: errno %d", i, errno);
			n = i;
			break;
		}
		kg_go(idle_co, (void *)(intptr_t)i);
	}
	tk_count = tick_for(300 * MS, &gap);
	CO_CHECK(kg_stats(&st) == 0, "stats");
	TH_LOG("%ld coroutines in read(): %ld ticks in 300 ms, largest gap "
	       "%.1f ms, %u workers", n, tk_count, gap / 1e6, st.workers);
	CO_CHECK(tk_count >= 15, "%ld ticks", tk_count);
	CO_CHECK(st.workers <= st.procs + THREAD_SLACK, "%u workers",
		 st.workers);
	for (i = 0; i < n; i++)
		close(idle_fds[i][1]);	/* end of file for each reader */
	while (atomic_load(&idle_done) < n)
		kg_sleep(MS);
	for (i = 0; i < n; i++)
		close(idle_fds[i][0]);
	free(idle_fds);
}

TEST_TIMEOUT(ten_thousand_idle_reads_and_a_ticker, 120)
{
	struct rlimit rl = { 0, 0 };
	long need = 2 * IDLE + 64;

	idle_n = IDLE;
	raise_nofile(need);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need)
		idle_n = ((long)rl.rlim_cur - 64) / 2;	/* what it allows */
	if (idle_n < 1000)
		SKIP(return, "RLIMIT_NOFILE %llu: fewer than 1000 pairs",
		     (unsigned long long)rl.rlim_cur);
	ASSERT_EQ(0, run_kg(idle_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

TEST_HARNESS_MAIN
