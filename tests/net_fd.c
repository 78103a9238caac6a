// SPDX-License-Identifier: MIT
/*
 * net_fd.c - waiting for descriptors: kg_fd_wait parks the coroutine, not
 * the thread; timeouts, close while waiting, a number reused after close,
 * many idle connections beside a ticker, plain threads, bad input, the
 * deadlock watch, main returning with waiters, and an echo server on
 * 127.0.0.1 with its clients in the same runtime.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

/*
 * The thread bound a server must keep: the procs plus a few threads for
 * the blocks the handoff covers (a loopback write that waits for the
 * socket lock, an mmap for a new stack).  Sanitizer runtimes add blocks of
 * their own (TSan's internal mutexes sleep in futex), each of which the
 * handoff rightly covers with another thread, so they get more room.
 */
#define THREAD_SLACK (KG_TEST_SANITIZED ? 16u : 8u)

static int pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		       sv))
		return -errno;
	return 0;
}

/* read() that waits in kg_fd_wait on EAGAIN; -errno, 0 at EOF. */
static ssize_t co_read(int fd, void *buf, size_t n, int64_t timeout)
{
	for (;;) {
		ssize_t r = read(fd, buf, n);
		int err;

		if (r >= 0)
			return r;
		if (errno != EAGAIN)
			return -errno;
		err = kg_fd_wait(fd, KG_FD_READ, timeout);
		if (err)
			return err;
	}
}

static int co_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t r = write(fd, p, n);
		int err;

		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r < 0 && errno != EAGAIN)
			return -errno;
		err = kg_fd_wait(fd, KG_FD_WRITE, -1);
		if (err)
			return err;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* One proc: a read wait parks the coroutine, the worker runs others    */
/* ------------------------------------------------------------------ */

static int sv[2];
static _Atomic long spins;
static _Atomic int reader_done;
static _Atomic pid_t reader_tid;

/*
 * The system call thread tid is blocked in (/proc/self/task/TID/syscall:
 * its number, "running", or -1 if it is not in one), or -2 where /proc
 * cannot say.
 */
static long thread_syscall(pid_t tid)
{
	char path[64], buf[256];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -2;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -2;
	buf[n] = 0;
	return strncmp(buf, "running", 7) ? strtol(buf, NULL, 10) : -1;
}

static void reader(void *p)
{
	char c = 0;

	(void)p;
	atomic_store(&reader_tid, gettid());
	CO_CHECK(co_read(sv[0], &c, 1, -1) == 1, "read");
	CO_CHECK(c == 'x', "got %c", c);
	atomic_store(&reader_done, 1);
}

static void parks_main(void *p)
{
	struct kg_stats st;
	long sc;

	(void)p;
	CO_CHECK(pair(sv) == 0, "socketpair");
	CO_CHECK(kg_go(reader, NULL) > 0, "go");
	/* on the one proc, this runs only if the reader parked */
	while (atomic_load(&spins) < 1000) {
		atomic_fetch_add(&spins, 1);
		kg_yield();
	}
	CO_CHECK(!atomic_load(&reader_done), "reader ran early");
	/*
	 * And the reader's thread is not the one waiting: it runs main (the
	 * usual case), or is anywhere but in read() (its proc was handed on
	 * for another reason, a sanitizer's lock say, and it parked since).
	 */
	sc = atomic_load(&reader_tid) == gettid()
		     ? -1 : thread_syscall(atomic_load(&reader_tid));
	CO_CHECK(sc != SYS_read, "the reader's thread is blocked in read()");
	if (sc == -2)
		printf("# /proc/self/task/TID/syscall unreadable: thread check "
		       "skipped\n");
	CO_CHECK(write(sv[1], "x", 1) == 1, "write");
	while (!atomic_load(&reader_done))
		kg_sleep(MS);
	CO_CHECK(kg_stats(&st) == 0, "stats");
	/*
	 * No block to hand off, in a plain build. Under a sanitizer a worker
	 * may also block in the sanitizer's own locks and page faults, with
	 * main queued (a real handoff, 5 to 15% of ASan runs): there the
	 * thread check above is the proof.
	 */
	CO_CHECK(KG_TEST_SANITIZED || st.handoffs == 0,
		 "the wait blocked a worker: %llu handoffs (%llu at a slice's "
		 "end)", (unsigned long long)st.handoffs,
		 (unsigned long long)st.preemptions);
	close(sv[0]);
	close(sv[1]);
}

TEST(read_wait_parks_the_coroutine)
{
	ASSERT_EQ(0, run_kg(parks_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(1, atomic_load(&reader_done));
}

/* ------------------------------------------------------------------ */
/* Write waits, timeouts, close while waiting                           */
/* ------------------------------------------------------------------ */

static _Atomic int writer_res = 1;

static void writer(void *p)
{
	static char big[1 << 16];

	(void)p;
	atomic_store(&writer_res, co_write_all(sv[1], big, sizeof(big)));
}

static void write_main(void *p)
{
	char buf[4096];
	long drained = 0, filled = 0;
	ssize_t r;

	(void)p;
	CO_CHECK(pair(sv) == 0, "socketpair");
	/* fill the send buffer until the write would block */
	while ((r = write(sv[1], buf, sizeof(buf))) > 0)
		filled += r;
	CO_CHECK(errno == EAGAIN, "errno %d", errno);
	CO_CHECK(kg_go(writer, NULL) > 0, "go");
	kg_sleep(20 * MS);
	CO_CHECK(atomic_load(&writer_res) == 1, "writer did not wait");
	/* everything: what filled the buffer, then the writer's 64 KiB (its
	 * last bytes may come before it says it is done) */
	while (drained < filled + (1 << 16)) {
		r = co_read(sv[0], buf, sizeof(buf), 5000 * (int64_t)MS);
		CO_CHECK(r > 0, "read %zd", r);
		if (r <= 0)
			break;
		drained += r;
	}
	while (atomic_load(&writer_res) == 1)
		kg_sleep(MS);
	CO_CHECK(atomic_load(&writer_res) == 0, "writer: %d",
		 atomic_load(&writer_res));
	CO_CHECK(drained > 0, "drained");
	close(sv[0]);
	close(sv[1]);
}

TEST(write_wait_resumes_when_the_peer_drains)
{
	ASSERT_EQ(0, run_kg(write_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void timeout_main(void *p)
{
	uint64_t t0;
	int r, i;

	(void)p;
	CO_CHECK(pair(sv) == 0, "socketpair");
	for (i = 0; i < 3; i++) {
		t0 = kg_now_ns();
		r = kg_fd_wait(sv[0], KG_FD_READ, 20 * (int64_t)MS);
		CO_CHECK(r == -ETIMEDOUT, "wait: %d", r);
		CO_CHECK(kg_now_ns() - t0 >= 20 * MS, "woke early");
		CO_CHECK(kg_now_ns() - t0 < 1000 * MS, "woke late");
	}
	/* 0: only look */
	CO_CHECK(kg_fd_wait(sv[0], KG_FD_READ, 0) == -ETIMEDOUT, "look");
	CO_CHECK(kg_fd_wait(sv[1], KG_FD_WRITE, 0) == 0, "writable");
	/* ready before the deadline */
	CO_CHECK(write(sv[1], "y", 1) == 1, "write");
	CO_CHECK(kg_fd_wait(sv[0], KG_FD_READ, 1000 * (int64_t)MS) == 0,
		 "ready");
	close(sv[0]);
	close(sv[1]);
}

TEST(wait_times_out)
{
	ASSERT_EQ(0, run_kg(timeout_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

static _Atomic int closed_res = 1;

static void closed_waiter(void *p)
{
	(void)p;
	atomic_store(&closed_res, kg_fd_wait(sv[0], KG_FD_READ, -1));
}

static void close_main(void *p)
{
	(void)p;
	CO_CHECK(pair(sv) == 0, "socketpair");
	CO_CHECK(kg_go(closed_waiter, NULL) > 0, "go");
	kg_sleep(10 * MS);
	CO_CHECK(atomic_load(&closed_res) == 1, "waiter did not wait");
	CO_CHECK(kg_fd_close(sv[0]) == 0, "close");
	while (atomic_load(&closed_res) == 1)
		kg_sleep(MS);
	CO_CHECK(atomic_load(&closed_res) == -EBADF, "waiter: %d",
		 atomic_load(&closed_res));
	CO_CHECK(kg_fd_close(sv[0]) == -EBADF, "closed twice");
	close(sv[1]);
}

TEST(close_while_waiting_returns_ebadf)
{
	ASSERT_EQ(0, run_kg(close_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* kg_fd_close racing a wait that is arming                             */
/* ------------------------------------------------------------------ */

/*
 * A waiter arms on a; a closer closes a with kg_fd_close at a random
 * moment around it, then waits on the closed number itself (which once
 * wiped the close's mark for the first waiter). The waiter must end with
 * -EBADF every time, never sleep to its timeout.
 */
#define RACES scaled(5000, 10)
static _Atomic int race_go, race_res, race_in;
static int race_fd;
static kg_wg_t race_wg = KG_WG_INIT;

static void race_spin(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

static void race_waiter(void *p)
{
	atomic_fetch_add(&race_in, 1);
	while (!atomic_load(&race_go))
		kg_yield();
	race_spin((unsigned)(uintptr_t)p);
	atomic_store(&race_res,
		     kg_fd_wait(race_fd, KG_FD_READ, 300 * (int64_t)MS));
	kg_wg_done(&race_wg);
}

static void race_closer(void *p)
{
	atomic_fetch_add(&race_in, 1);
	while (!atomic_load(&race_go))
		kg_yield();
	race_spin((unsigned)(uintptr_t)p);
	kg_fd_close(race_fd);
	kg_fd_wait(race_fd, KG_FD_WRITE, 10 * (int64_t)MS);
	kg_wg_done(&race_wg);
}

static void race_main(void *p)
{
	uint64_t r = harness_seed() | 1;
	long i, lost = 0, other = 0, reused = 0;
	int s[2];

	(void)p;
	/*
	 * The runtime's own descriptors (a standby's epoll set) are made
	 * as its workers start: let that happen first, or one could take a
	 * number the closer just closed before the waiter waits on it (a
	 * reuse a program racing its own close cannot rule out either).
	 */
	kg_sleep(50 * MS);
	for (i = 0; i < RACES; i++) {
		CO_CHECK(pair(s) == 0, "socketpair");
		race_fd = s[0];
		atomic_store(&race_go, 0);
		atomic_store(&race_in, 0);
		atomic_store(&race_res, 1);
		kg_wg_add(&race_wg, 2);
		kg_go(race_waiter, (void *)(uintptr_t)(xorshift(&r) % 3000));
		kg_go(race_closer, (void *)(uintptr_t)(xorshift(&r) % 3000));
		while (atomic_load(&race_in) < 2)
			kg_yield();
		atomic_store(&race_go, 1);
		kg_wg_wait(&race_wg);
		if (atomic_load(&race_res) != -EBADF) {
			char path[64], what[128];

			/*
			 * A wait that began after the close may find the
			 * number taken again (here by the runtime's own
			 * epoll set for a new standby): no wait can tell,
			 * and it is not what this checks.
			 */
			snprintf(path, sizeof(path), "/proc/self/fd/%d",
				 race_fd);
			if (readlink(path, what, sizeof(what)) >= 0)
				reused++;
			else if (atomic_load(&race_res) == -ETIMEDOUT)
				lost++;
			else
				other++;
		}
		close(s[1]);
	}
	CO_CHECK(lost == 0 && other == 0, "%ld of %ld waits outlived their "
		 "close, %ld ended otherwise (%ld numbers reused)", lost, RACES,
		 other, reused);
}

TEST_TIMEOUT(a_close_ends_a_wait_that_is_arming, 120)
{
	ASSERT_EQ(0, run_kg(race_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* A number reused after a close behind the runtime's back              */
/* ------------------------------------------------------------------ */

static void reuse_main(void *p)
{
	int a[2], b[2], keep, num;
	char c;

	(void)p;
	CO_CHECK(pair(a) == 0 && pair(b) == 0, "socketpairs");
	num = a[0];
	/* register num for file A */
	CO_CHECK(kg_fd_wait(num, KG_FD_READ, 5 * (int64_t)MS) == -ETIMEDOUT,
		 "first wait");
	/* A stays alive through keep; num now names B's reading end */
	keep = dup(num);
	CO_CHECK(dup2(b[0], num) == num, "dup2");
	/* A becomes readable: its old registration must wake nobody */
	CO_CHECK(write(a[1], "a", 1) == 1, "write A");
	CO_CHECK(kg_fd_wait(num, KG_FD_READ, 50 * (int64_t)MS) == -ETIMEDOUT,
		 "woken for the old file");
	/* and B, the file num names now, is watched */
	CO_CHECK(write(b[1], "b", 1) == 1, "write B");
	CO_CHECK(co_read(num, &c, 1, 1000 * (int64_t)MS) == 1 && c == 'b',
		 "read B");
	close(keep);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	close(num);
}

TEST(a_reused_number_wakes_only_for_its_new_file)
{
	ASSERT_EQ(0, run_kg(reuse_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Many idle connections and a ticker that keeps ticking                */
/* ------------------------------------------------------------------ */

#define IDLE scaled(2000, 4)
static int (*idle_fds)[2];
static _Atomic long idle_woken;

static void idle_waiter(void *p)
{
	long i = (long)(intptr_t)p;
	char c;

	CO_CHECK(co_read(idle_fds[i][0], &c, 1, -1) == 1, "read %ld", i);
	atomic_fetch_add(&idle_woken, 1);
}

static void idle_main(void *p)
{
	struct kg_stats st;
	uint64_t t0, gap = 0;
	long i, n = IDLE, ticks;

	(void)p;
	idle_fds = calloc((size_t)n, sizeof(*idle_fds));
	for (i = 0; i < n; i++) {
		CO_CHECK(pair(idle_fds[i]) == 0, "socketpair %ld", i);
		CO_CHECK(kg_go(idle_waiter, (void *)(intptr_t)i) > 0, "go");
	}
	ticks = tick_for(200 * MS, &gap);
	CO_CHECK(kg_stats(&st) == 0, "stats");
	TH_LOG("%ld idle connections: %ld ticks in 200 ms, largest gap %.1f ms, "
	       "%u workers", n, ticks, gap / 1e6, st.workers);
	CO_CHECK(ticks >= 10, "%ld ticks", ticks);
	CO_CHECK(st.workers <= st.procs + THREAD_SLACK, "%u workers",
		 st.workers);
	CO_CHECK(atomic_load(&idle_woken) == 0, "woken early");
	for (i = 0; i < n; i++)
		CO_CHECK(write(idle_fds[i][1], "z", 1) == 1, "write %ld", i);
	t0 = kg_now_ns();
	while (atomic_load(&idle_woken) < n && kg_now_ns() - t0 < 10000 * MS)
		kg_sleep(MS);
	CO_CHECK(atomic_load(&idle_woken) == n, "%ld of %ld woken",
		 atomic_load(&idle_woken), n);
	for (i = 0; i < n; i++) {
		close(idle_fds[i][0]);
		close(idle_fds[i][1]);
	}
	free(idle_fds);
}

TEST(many_idle_connections_and_a_ticker)
{
	raise_nofile(2 * IDLE + 64);
	ASSERT_EQ(0, run_kg(idle_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* Plain threads, bad input                                             */
/* ------------------------------------------------------------------ */

static void *plain_thread(void *p)
{
	int s[2], f;
	uint64_t t0 = kg_now_ns();

	(void)p;
	CO_CHECK(pair(s) == 0, "socketpair");
	CO_CHECK(kg_fd_wait(s[0], KG_FD_READ, 10 * (int64_t)MS) == -ETIMEDOUT,
		 "timeout");
	CO_CHECK(kg_now_ns() - t0 >= 10 * MS, "early");
	CO_CHECK(write(s[1], "p", 1) == 1, "write");
	CO_CHECK(kg_fd_wait(s[0], KG_FD_READ, -1) == 0, "ready");
	CO_CHECK(kg_fd_wait(s[1], KG_FD_WRITE, -1) == 0, "writable");
	close(s[0]);
	close(s[1]);
	CO_CHECK(kg_fd_wait(s[0], KG_FD_READ, -1) == -EBADF, "closed");
	f = open("/proc/self/status", O_RDONLY);
	CO_CHECK(kg_fd_wait(f, KG_FD_READ, -1) == 0, "regular file");
	close(f);
	return NULL;
}

TEST(plain_threads_wait_in_ppoll)
{
	pthread_t t;

	ASSERT_EQ(0, pthread_create(&t, NULL, plain_thread, NULL));
	pthread_join(t, NULL);
	ASSERT_EQ(0, co_failures());
}

static void bad_main(void *p)
{
	char path[] = "/tmp/kg-net-fd-XXXXXX";
	int s[2], f;

	(void)p;
	CO_CHECK(pair(s) == 0, "socketpair");
	CO_CHECK(kg_fd_wait(s[0], 0, -1) == -EINVAL, "no events");
	CO_CHECK(kg_fd_wait(s[0], KG_FD_READ | KG_FD_WRITE, -1) == -EINVAL,
		 "both");
	CO_CHECK(kg_fd_wait(s[0], 4, -1) == -EINVAL, "unknown");
	CO_CHECK(kg_fd_wait(-1, KG_FD_READ, -1) == -EBADF, "negative");
	CO_CHECK(kg_fd_wait(INT32_MAX, KG_FD_READ, -1) == -EINVAL ||
			 kg_fd_wait(INT32_MAX, KG_FD_READ, -1) == -EBADF,
		 "huge");
	CO_CHECK(kg_fd_close(-1) == -EBADF, "close -1");
	f = mkstemp(path);
	CO_CHECK(f >= 0, "mkstemp");
	unlink(path);
	/* a regular file: epoll cannot watch it, poll calls it ready */
	CO_CHECK(kg_fd_wait(f, KG_FD_READ, -1) == 0, "file read");
	CO_CHECK(kg_fd_wait(f, KG_FD_WRITE, -1) == 0, "file write");
	close(f);
	/* not open: ppoll says POLLNVAL, epoll EBADF */
	CO_CHECK(kg_fd_wait(f, KG_FD_READ, -1) == -EBADF, "closed fd");
	close(s[0]);
	close(s[1]);
}

TEST(bad_input_is_refused)
{
	ASSERT_EQ(0, run_kg(bad_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* The deadlock watch, main returning                                   */
/* ------------------------------------------------------------------ */

static void *late_writer(void *p)
{
	usleep(300 * 1000);
	if (write(*(int *)p, "w", 1) != 1)
		atomic_fetch_add(&kg_test_failures, 1);
	return NULL;
}

static void nodeadlock_main(void *p)
{
	pthread_t t;
	char c;

	(void)p;
	CO_CHECK(pair(sv) == 0, "socketpair");
	/* a thread that uses no kgreen object: only the fd wakes main */
	pthread_create(&t, NULL, late_writer, &sv[1]);
	CO_CHECK(co_read(sv[0], &c, 1, -1) == 1, "read");
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
}

TEST(a_descriptor_wait_is_not_a_deadlock)
{
	ASSERT_EQ(0, run_kg(nodeadlock_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void forever_waiter(void *p)
{
	kg_fd_wait(*(int *)p, KG_FD_READ, -1);
	CO_CHECK(0, "woken after main returned");
}

static void leave_main(void *p)
{
	int i;

	(void)p;
	CO_CHECK(pair(sv) == 0, "socketpair");
	for (i = 0; i < 4; i++)
		kg_go(forever_waiter, &sv[0]);
	kg_sleep(10 * MS);
}

TEST(main_returns_while_coroutines_wait_on_descriptors)
{
	uint64_t t0 = kg_now_ns();

	ASSERT_EQ(0, run_kg(leave_main, NULL, 2));
	ASSERT_GT(1000 * MS, kg_now_ns() - t0);
	close(sv[0]);
	close(sv[1]);
	/* the runtime can start again and its waits work */
	ASSERT_EQ(0, run_kg(timeout_main, NULL, 1));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* An echo server and its clients, on 127.0.0.1                         */
/* ------------------------------------------------------------------ */

#define CONNS scaled(200, 4)
#define ROUNDS 50
static int lfd;
static struct sockaddr_in addr;
static _Atomic long echoed, clients_ok;
static kg_wg_t clients_wg = KG_WG_INIT;

static void echo_conn(void *p)
{
	int fd = (int)(intptr_t)p;
	char buf[64];
	ssize_t n;

	while ((n = co_read(fd, buf, sizeof(buf), 5000 * (int64_t)MS)) > 0) {
		if (co_write_all(fd, buf, (size_t)n))
			break;
		atomic_fetch_add(&echoed, 1);
	}
	close(fd);
}

static void acceptor(void *p)
{
	long n = 0;

	(void)p;
	while (n < CONNS) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN ||
			    kg_fd_wait(lfd, KG_FD_READ, 5000 * (int64_t)MS))
				break;
			continue;
		}
		kg_go(echo_conn, (void *)(intptr_t)fd);
		n++;
	}
	CO_CHECK(n == CONNS, "accepted %ld", n);
}

static void client(void *p)
{
	char out[64], in[64];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r, i, one = 1, err = 0;
	socklen_t len = sizeof(err);

	(void)p;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	if (r && errno == EINPROGRESS) {
		r = kg_fd_wait(fd, KG_FD_WRITE, 5000 * (int64_t)MS);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
		r = r ? r : -err;
	}
	CO_CHECK(r == 0, "connect: %d", r);
	for (i = 0; r == 0 && i < ROUNDS; i++) {
		size_t got = 0;

		memset(out, 'a' + i % 26, sizeof(out));
		r = co_write_all(fd, out, sizeof(out));
		while (!r && got < sizeof(in)) {
			ssize_t n = co_read(fd, in + got, sizeof(in) - got,
					    5000 * (int64_t)MS);

			if (n <= 0)
				r = n ? (int)n : -EPIPE;
			else
				got += (size_t)n;
		}
		CO_CHECK(r == 0 && !memcmp(in, out, sizeof(in)),
			 "round %d: %d", i, r);
	}
	if (r == 0)
		atomic_fetch_add(&clients_ok, 1);
	close(fd);
	kg_wg_done(&clients_wg);
}

static void echo_main(void *p)
{
	struct kg_stats st;
	socklen_t len = sizeof(addr);
	long i;
	int one = 1;

	(void)p;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CO_CHECK(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) == 0,
		 "bind");
	CO_CHECK(listen(lfd, 4096) == 0, "listen");
	getsockname(lfd, (struct sockaddr *)&addr, &len);
	kg_go(acceptor, NULL);
	kg_wg_add(&clients_wg, (int)CONNS);
	for (i = 0; i < CONNS; i++)
		kg_go(client, NULL);
	kg_wg_wait(&clients_wg);
	CO_CHECK(kg_stats(&st) == 0, "stats");
	TH_LOG("%ld connections x %d round trips: %ld echoed, %u workers, "
	       "%llu handoffs (%llu at the end of a time slice)", CONNS,
	       ROUNDS, atomic_load(&echoed), st.workers,
	       (unsigned long long)st.handoffs,
	       (unsigned long long)st.preemptions);
	CO_CHECK(atomic_load(&clients_ok) == CONNS, "%ld of %ld clients",
		 atomic_load(&clients_ok), CONNS);
	CO_CHECK(st.workers <= st.procs + THREAD_SLACK, "%u workers",
		 st.workers);
	close(lfd);
}

TEST_TIMEOUT(echo_server_and_clients_in_one_runtime, 60)
{
	raise_nofile(4 * CONNS + 64);
	ASSERT_EQ(0, run_kg(echo_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

TEST_HARNESS_MAIN
