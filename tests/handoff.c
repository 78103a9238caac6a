// SPDX-License-Identifier: MIT
/*
 * handoff.c - a worker that blocks in the kernel loses its proc to another
 * worker, so that the coroutines queued behind it run meanwhile.
 *
 * With 1 proc, coroutine A blocks in a plain system call or library call
 * while coroutine B waits in the same run queue. The bpf backend sees the
 * block in the kernel; sysmon sees it only when A marks the call with
 * kg_blocking_begin/end, and otherwise B waits for A (that difference is
 * what the kernel backends are for, and is tested too).
 */
#include "harness.h"
#include "kg_test.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

#define MS 1000000ull
#define RELEASE_AFTER (200 * MS)

enum mode { KERNEL, SYSMON_MARKED, SYSMON_PLAIN };
enum kind { K_READ, K_NANOSLEEP, K_FSYNC, K_MUTEX, K_FUTEX };

/*
 * The kernel backend under test: bpf, or kmod in the VM
 * (KG_TEST_KBACKEND=kmod, tools/vmcheck).
 */
static const char *kbackend(void)
{
	const char *b = getenv("KG_TEST_KBACKEND");

	return b && *b ? b : "bpf";
}

static const char *mode_backend(enum mode m)
{
	return m == KERNEL ? kbackend() : "sysmon";
}

/* Run fn under backend with procs procs; -ENODEV if it cannot serve. */
static int run_backend(void (*fn)(void *), void *arg, unsigned int procs,
		       const char *backend)
{
	struct kg_config cfg = { .procs = procs, .backend = backend };

	return kg_run(fn, arg, &cfg);
}

static void nothing(void *p)
{
	(void)p;
}

/* SKIP (with the runtime's reason on stderr) when it cannot serve here. */
#define NEED_KERNEL()                                                         \
	do {                                                                  \
		if (run_backend(nothing, NULL, 1, kbackend()) == -ENODEV)     \
			SKIP(return, "the %s backend cannot serve here "      \
				     "(reason above)", kbackend());           \
	} while (0)

/* ------------------------------------------------------------------ */
/* One blocking call, B queued behind it                               */
/* ------------------------------------------------------------------ */

struct scen {
	enum mode mode;
	enum kind kind;
	int pipefd[2];
	int filefd;
	pthread_mutex_t mutex;
	_Atomic uint32_t futex_word;
	_Atomic int locked;		/* the releaser holds the mutex */
	_Atomic uint64_t a_start, a_end, b_ran;
	long a_slept;		/* fsync: A's thread's voluntary switches in it */
	kg_wg_t wg;
	struct kg_stats st;	/* at the end */
};

static void *releaser(void *p)
{
	struct scen *s = p;
	struct timespec ts = { 0, 1000000 };

	if (s->kind == K_MUTEX) {
		pthread_mutex_lock(&s->mutex);
		atomic_store(&s->locked, 1);
	}
	while (!atomic_load(&s->a_start))
		nanosleep(&ts, NULL);
	ts.tv_nsec = (long)RELEASE_AFTER;
	nanosleep(&ts, NULL);
	switch (s->kind) {
	case K_READ:
		if (write(s->pipefd[1], "x", 1) != 1)
			abort();
		break;
	case K_MUTEX:
		pthread_mutex_unlock(&s->mutex);
		break;
	case K_FUTEX:
		atomic_store(&s->futex_word, 1);
		syscall(SYS_futex, &s->futex_word, FUTEX_WAKE_PRIVATE, 1, NULL,
			NULL, 0);
		break;
	default:
		break;
	}
	return NULL;
}

static void co_a(void *p)
{
	struct scen *s = p;
	struct timespec ts = { 0, (long)RELEASE_AFTER };
	char c;

	atomic_store(&s->a_start, kg_now_ns());
	if (s->mode == SYSMON_MARKED)
		kg_blocking_begin();
	switch (s->kind) {
	case K_READ:
		CO_CHECK(syscall(SYS_read, s->pipefd[0], &c, 1) == 1, "read");
		break;
	case K_NANOSLEEP:
		syscall(SYS_nanosleep, &ts, NULL);
		break;
	case K_FSYNC:
		if (s->filefd >= 0) {
			struct rusage r0, r1;

			/* on this thread: no kgreen call between the two */
			getrusage(RUSAGE_THREAD, &r0);
			CO_CHECK(fsync(s->filefd) == 0, "fsync");
			getrusage(RUSAGE_THREAD, &r1);
			s->a_slept = r1.ru_nvcsw - r0.ru_nvcsw;
		}
		break;
	case K_MUTEX:
		pthread_mutex_lock(&s->mutex);
		pthread_mutex_unlock(&s->mutex);
		break;
	case K_FUTEX:
		while (!atomic_load(&s->futex_word))
			syscall(SYS_futex, &s->futex_word, FUTEX_WAIT_PRIVATE,
				0, NULL, NULL, 0);
		break;
	}
	if (s->mode == SYSMON_MARKED)
		kg_blocking_end();
	atomic_store(&s->a_end, kg_now_ns());
	kg_wg_done(&s->wg);
}

static void co_b(void *p)
{
	struct scen *s = p;

	atomic_store(&s->b_ran, kg_now_ns());
	kg_wg_done(&s->wg);
}

static void scen_main(void *p)
{
	struct scen *s = p;
	pthread_t t;

	CO_CHECK(pthread_create(&t, NULL, releaser, s) == 0, "thread");
	while (s->kind == K_MUTEX && !atomic_load(&s->locked))
		kg_sleep(MS);
	kg_wg_add(&s->wg, 2);
	/* B first: A goes to runnext and runs first, B waits behind it */
	kg_go(co_b, s);
	kg_go(co_a, s);
	kg_wg_wait(&s->wg);
	pthread_join(t, NULL);
	CO_CHECK(kg_stats(&s->st) == 0, "stats");
}

/* Dirty a file so that fsync has to wait for the disk (-1: no file). */
static int dirty_file(void)
{
	static char buf[1 << 20];
	char path[] = "/var/tmp/kgreen-handoff-XXXXXX";
	char tpath[] = "/tmp/kgreen-handoff-XXXXXX";
	int fd = mkstemp(path), i;

	if (fd < 0) {
		fd = mkstemp(tpath);	/* a minimal system may lack /var/tmp */
		if (fd < 0)
			return -1;
		unlink(tpath);
	} else {
		unlink(path);
	}
	memset(buf, 'k', sizeof(buf));
	for (i = 0; i < 32; i++)
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			return -1;
	return fd;
}

FIXTURE(block) {
	struct scen s;
};

FIXTURE_VARIANT(block) {
	enum kind kind;
};

FIXTURE_VARIANT_ADD(block, read) { .kind = K_READ };
FIXTURE_VARIANT_ADD(block, nanosleep) { .kind = K_NANOSLEEP };
FIXTURE_VARIANT_ADD(block, fsync) { .kind = K_FSYNC };
FIXTURE_VARIANT_ADD(block, mutex) { .kind = K_MUTEX };
FIXTURE_VARIANT_ADD(block, futex) { .kind = K_FUTEX };

FIXTURE_SETUP(block)
{
	memset(&self->s, 0, sizeof(self->s));
	self->s.kind = variant->kind;
	pthread_mutex_init(&self->s.mutex, NULL);
	ASSERT_EQ(0, pipe(self->s.pipefd));
	self->s.filefd = -1;
	if (variant->kind == K_FSYNC)
		self->s.filefd = dirty_file();	/* -1: the test skips */
}

FIXTURE_TEARDOWN(block)
{
	close(self->s.pipefd[0]);
	close(self->s.pipefd[1]);
	if (self->s.filefd >= 0)
		close(self->s.filefd);
}

/* Run the scenario; 1 if the verdict means something, 0 to skip. */
static int run_scen(struct scen *s, enum mode mode, int *err)
{
	uint64_t blocked;

	s->mode = mode;
	*err = run_backend(scen_main, s, 1, mode_backend(mode));
	blocked = s->a_end - s->a_start;
	TH_LOG("A blocked %.1f ms; B ran %+.3f ms after A began; %llu "
	       "handoffs, %u workers, %llu parks", blocked / 1e6,
	       ((double)s->b_ran - (double)s->a_start) / 1e6,
	       (unsigned long long)s->st.handoffs, s->st.workers,
	       (unsigned long long)s->st.parks);
	if (s->kind == K_FSYNC)
		TH_LOG("A's thread slept %ld times in fsync", s->a_slept);
	/*
	 * fsync on a fast or caching device (a guest's tmpfs) may not block
	 * at all, and may still take milliseconds when the thread is
	 * preempted (an emulated guest): only a sleep in it (a voluntary
	 * switch of A's thread) that lasted is a block to hand off.
	 */
	return s->kind != K_FSYNC ||
	       (s->filefd >= 0 && blocked >= 5 * MS && s->a_slept > 0);
}

TEST_F(block, kernel_transparent)
{
	int err;

	NEED_KERNEL();
	if (!run_scen(&self->s, KERNEL, &err))
		SKIP(return, "fsync did not block here (or no file to dirty)");
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	ASSERT_NE(0ull, self->s.b_ran);
	/* B ran while A was still blocked */
	ASSERT_LT(self->s.b_ran, self->s.a_end);
}

/*
 * The same inside a PID namespace, where getpid() and gettid() are not the
 * kernel's ids (a container): the kernel side must still see the blocks.
 * A child unshares the namespace, its child (pid 1 there) runs the
 * scenario; exit 0 handed off, 1 not, 4 the backend cannot serve, 5 no
 * namespace could be made (needs CAP_SYS_ADMIN).
 */
static int scen_in_pidns(struct scen *s)
{
	pid_t c, g;
	int st, err;

	c = fork();
	if (c < 0)
		return -1;
	if (!c) {
		if (unshare(CLONE_NEWPID))
			_exit(5);
		g = fork();
		if (g < 0)
			_exit(1);
		if (!g) {
			if (!run_scen(s, KERNEL, &err))
				_exit(4);
			if (err == -ENODEV)
				_exit(4);
			_exit(!err && getpid() == 1 && s->b_ran &&
			      s->b_ran < s->a_end && s->st.handoffs ? 0 : 1);
		}
		if (waitpid(g, &st, 0) != g || !WIFEXITED(st))
			_exit(1);
		_exit(WEXITSTATUS(st));
	}
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

TEST_F(block, kernel_in_a_pid_namespace)
{
	int rc;

	NEED_KERNEL();
	rc = scen_in_pidns(&self->s);
	if (rc == 5)
		SKIP(return, "cannot make a PID namespace here (needs "
			     "CAP_SYS_ADMIN)");
	if (rc == 4)
		SKIP(return, "the %s backend cannot serve in a PID namespace "
			     "here, or fsync did not block (reason above)",
		     kbackend());
	ASSERT_EQ(0, rc);
}

TEST_F(block, sysmon_marked)
{
	int err;

	if (!run_scen(&self->s, SYSMON_MARKED, &err))
		SKIP(return, "fsync did not block here (or no file to dirty)");
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	ASSERT_NE(0ull, self->s.b_ran);
	ASSERT_LT(self->s.b_ran, self->s.a_end);
}

/*
 * Without kernel help nobody sees an unmarked block as a block; sysmon
 * sees a coroutine that has not switched for a time slice (10 ms) and
 * takes its proc as it would a CPU hog's: B runs a slice after A began.
 */
TEST_F(block, sysmon_unmarked_after_slice)
{
	int err;

	if (!run_scen(&self->s, SYSMON_PLAIN, &err))
		SKIP(return, "fsync did not block here (or no file to dirty)");
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	/* a slice and sysmon's look (longer under sanitizers) must fit */
	if (self->s.a_end - self->s.a_start < 50 * MS)
		SKIP(return, "A blocked only %.1f ms: too short to outlast a "
		     "time slice here",
		     (double)(self->s.a_end - self->s.a_start) / 1e6);
	ASSERT_NE(0ull, self->s.b_ran);
	ASSERT_LT(self->s.b_ran, self->s.a_end);
	ASSERT_GE(self->s.b_ran - self->s.a_start, 8 * MS);
}

/* ... and with time slices off, B waits for A. */
TEST_F(block, sysmon_unmarked_stalls_without_slices)
{
	int err, ok;

	setenv("KGREEN_SLICE", "off", 1);
	ok = run_scen(&self->s, SYSMON_PLAIN, &err);
	unsetenv("KGREEN_SLICE");
	if (!ok)
		SKIP(return, "fsync did not block here (or no file to dirty)");
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, co_failures());
	ASSERT_GE(self->s.b_ran, self->s.a_end);
}

/* ------------------------------------------------------------------ */
/* Many coroutines, a third of them blocking                           */
/* ------------------------------------------------------------------ */

static struct kg_stats stats_end;

/* 10,000; fewer under sanitizers (TSan counts coroutines as threads) */
#define MANY scaled(10000, 4)
static kg_chan_t *many_ch;
static _Atomic uint32_t many_futex;
static uint64_t many_seed;

static void many_co(void *p)
{
	uintptr_t id = (uintptr_t)p;
	uint64_t r = many_seed ^ (id * 0x9E3779B97F4A7C15ull);
	struct timespec ts;
	uint32_t v = (uint32_t)id;

	xorshift(&r);
	if (xorshift(&r) % 3 == 0) {
		switch (xorshift(&r) % 4) {
		case 0:
			ts.tv_sec = 0;
			ts.tv_nsec = (long)(xorshift(&r) % 500000);
			syscall(SYS_nanosleep, &ts, NULL);
			break;
		case 1:
			poll(NULL, 0, 1);
			break;
		case 2:
			ts.tv_sec = 0;
			ts.tv_nsec = 300000;
			syscall(SYS_futex, &many_futex, FUTEX_WAIT_PRIVATE, 0,
				&ts, NULL, 0);
			break;
		default:
			usleep(200);
			break;
		}
	}
	CO_CHECK(kg_chan_send(many_ch, &v) == 0, "send");
}

static void many_main(void *p)
{
	long n = MANY, i, dup = 0, got = 0;
	uint8_t *seen = calloc((size_t)n, 1);
	uint32_t v;

	(void)p;
	many_ch = kg_chan_make(sizeof(uint32_t), 64);
	for (i = 0; i < n; i++)
		CO_CHECK(kg_go(many_co, (void *)(uintptr_t)i) > 0, "go");
	for (i = 0; i < n; i++) {
		CO_CHECK(kg_chan_recv(many_ch, &v) == 0, "recv");
		if (v >= n)
			continue;
		dup += seen[v]++ != 0;
		got++;
	}
	CO_CHECK(got == n && dup == 0, "got %ld, duplicates %ld", got, dup);
	CO_CHECK(kg_stats(&stats_end) == 0, "stats");
	kg_chan_free(many_ch);
	free(seen);
}

/* The latency histogram agrees with itself and with the max. */
static void check_latency_stats(struct __test_metadata *_metadata,
				const struct kg_stats *st)
{
	ASSERT_LT(0ull, st->handoffs);
	ASSERT_LT(0ull, st->handoff_ns_p50);
	ASSERT_LE(st->handoff_ns_p50, st->handoff_ns_p99);
	ASSERT_LE(st->handoff_ns_p99, st->handoff_ns_max);
	ASSERT_LE(st->handoff_ns_p50, st->handoff_ns_sum / st->handoffs * 4);
}

TEST_TIMEOUT(many_block_kernel, 60)
{
	NEED_KERNEL();
	many_seed = harness_seed();
	ASSERT_EQ(0, run_backend(many_main, NULL, 2, kbackend()));
	ASSERT_EQ(0, co_failures());
	TH_LOG("%llu handoffs, %u worker threads, latency p50 %.1f us, "
	       "p99 %.1f us, max %.1f us",
	       (unsigned long long)stats_end.handoffs, stats_end.workers,
	       stats_end.handoff_ns_p50 / 1e3, stats_end.handoff_ns_p99 / 1e3,
	       stats_end.handoff_ns_max / 1e3);
	check_latency_stats(_metadata, &stats_end);
}

TEST_TIMEOUT(many_block_sysmon, 60)
{
	many_seed = harness_seed();
	ASSERT_EQ(0, run_backend(many_main, NULL, 2, "sysmon"));
	ASSERT_EQ(0, co_failures());
}

/*
 * Marked regions back to back on one proc with nothing queued, so that
 * sysmon reads the worker's slot, finds nothing to retake and leaves it:
 * under ThreadSanitizer, a slot field written plainly by the worker and
 * read by sysmon would be reported here.
 */
static void regions_main(void *p)
{
	struct timespec ts = { 0, 200 * 1000 };
	int i;

	(void)p;
	for (i = 0; i < 300; i++) {
		kg_blocking_begin();
		nanosleep(&ts, NULL);
		kg_blocking_end();
		kg_yield();
	}
}

TEST(sysmon_regions_back_to_back)
{
	ASSERT_EQ(0, run_backend(regions_main, NULL, 1, "sysmon"));
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* When not to hand off; the blocked worker's return; the standby      */
/* ------------------------------------------------------------------ */
/* Work that comes after every proc's worker blocked with nothing queued */
/* ------------------------------------------------------------------ */

/*
 * Both procs' workers block with nothing queued, so the kernel side
 * leaves each proc with its worker (an idle block). Then a plain thread
 * wakes main, which waits on a channel: main goes to the global queue,
 * with no proc idle and none whose worker will come back. The strand
 * watch (sysmon.c) must take one from a blocked worker; without it main
 * waits until a blocked call returns (here: the plain thread's rescue
 * after STRAND_GIVE_UP).
 */
#define STRAND_GIVE_UP (3000 * MS)

struct strand {
	int pipes[2][2];
	_Atomic int blocked;
	_Atomic uint64_t sent, got;
	kg_chan_t *ch;
	struct kg_stats st;
};

struct strand_blocker {
	struct strand *s;
	int fd;
};

static void strand_blocker(void *p)
{
	struct strand_blocker *b = p;
	uint64_t t0 = kg_now_ns();
	char c;

	/*
	 * Both run at once, one on each proc (spinning, not yielding:
	 * nothing may stay queued), so that each blocks with nothing
	 * queued behind it.
	 */
	atomic_fetch_add(&b->s->blocked, 1);
	while (atomic_load(&b->s->blocked) < 2 &&
	       kg_now_ns() - t0 < STRAND_GIVE_UP)
		;
	/* a raw call: no hook may park it, the worker itself blocks */
	syscall(SYS_read, b->fd, &c, 1);
}

static void *strand_waker(void *p)
{
	struct strand *s = p;
	uint64_t t0 = kg_now_ns();
	int v = 1, i;

	/* both blockers in their read, and their workers asleep a while */
	while (atomic_load(&s->blocked) < 2 && kg_now_ns() - t0 < STRAND_GIVE_UP)
		usleep(1000);
	usleep(50 * 1000);
	atomic_store(&s->sent, kg_now_ns());
	if (kg_chan_send(s->ch, &v))
		return NULL;
	while (!atomic_load(&s->got) &&
	       kg_now_ns() - atomic_load(&s->sent) < STRAND_GIVE_UP)
		usleep(1000);
	/* stranded (the test fails): let a blocker return, so that it ends */
	if (!atomic_load(&s->got))
		for (i = 0; i < 2; i++)
			(void)!write(s->pipes[i][1], "x", 1);
	return NULL;
}

static void strand_main(void *p)
{
	struct strand *s = p;
	struct strand_blocker b[2];
	pthread_t t;
	int v = 0, i;

	s->ch = kg_chan_make(sizeof(int), 1);
	CO_CHECK(s->ch != NULL, "chan");
	for (i = 0; i < 2; i++) {
		b[i] = (struct strand_blocker){ .s = s, .fd = s->pipes[i][0] };
		kg_go(strand_blocker, &b[i]);
	}
	CO_CHECK(pthread_create(&t, NULL, strand_waker, s) == 0, "thread");
	CO_CHECK(kg_chan_recv(s->ch, &v) == 0 && v == 1, "recv %d", v);
	if (!atomic_load(&s->got))
		atomic_store(&s->got, kg_now_ns());
	CO_CHECK(kg_stats(&s->st) == 0, "stats");
	pthread_join(t, NULL);
	/* release the blockers: their workers come back and find no proc */
	for (i = 0; i < 2; i++)
		CO_CHECK(write(s->pipes[i][1], "x", 1) == 1, "write");
	kg_chan_free(s->ch);
}

TEST_TIMEOUT(late_work_takes_an_idle_blocked_proc, 30)
{
	struct strand s = { .blocked = 0 };
	int i;

	NEED_KERNEL();
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, pipe(s.pipes[i]));
	ASSERT_EQ(0, run_backend(strand_main, &s, 2, kbackend()));
	ASSERT_EQ(0, co_failures());
	ASSERT_NE(0ull, atomic_load(&s.sent));
	TH_LOG("main ran %.1f ms after the plain thread woke it; %llu handoffs",
	       (double)(atomic_load(&s.got) - atomic_load(&s.sent)) / 1e6,
	       (unsigned long long)s.st.handoffs);
	/* the watch looks every 1 ms at first: a take takes two looks */
	ASSERT_LT(atomic_load(&s.got) - atomic_load(&s.sent), 500 * MS);
	ASSERT_LE(1ull, s.st.handoffs);
	for (i = 0; i < 2; i++) {
		close(s.pipes[i][0]);
		close(s.pipes[i][1]);
	}
}

/* ------------------------------------------------------------------ */

static kg_wg_t idle_wg;

static void sleeper(void *p)
{
	struct timespec ts = { 0, 30 * MS };

	(void)p;
	syscall(SYS_nanosleep, &ts, NULL);
	kg_wg_done(&idle_wg);
}

static void idle_main(void *p)
{
	(void)p;
	kg_wg_add(&idle_wg, 1);
	kg_go(sleeper, NULL);
	kg_wg_wait(&idle_wg);	/* nothing queued while the sleeper blocks */
	CO_CHECK(kg_stats(&stats_end) == 0, "stats");
}

TEST(no_handoff_when_nothing_queued)
{
	NEED_KERNEL();
	ASSERT_EQ(0, run_backend(idle_main, NULL, 1, kbackend()));
	ASSERT_EQ(0, co_failures());
	ASSERT_LT(0ull, stats_end.blocks);
	ASSERT_EQ(0ull, stats_end.handoffs);
}

struct rounds {
	int pipefd[2];
	_Atomic uint64_t a_start, b_ran;
	uint64_t worst;
	kg_chan_t *ping;
	kg_wg_t wg;
};

static void *round_writer(void *p)
{
	struct rounds *r = p;
	struct timespec ts = { 0, 50 * MS };

	nanosleep(&ts, NULL);
	if (write(r->pipefd[1], "x", 1) != 1)
		abort();
	return NULL;
}

static void child_co(void *p)
{
	kg_wg_t *wg = p;

	kg_yield();
	kg_wg_done(wg);
}

/* A: blocks in read, then goes on using the runtime on its new proc. */
static void round_a(void *p)
{
	struct rounds *r = p;
	kg_wg_t wg = KG_WG_INIT;
	int i, v = 0;
	char c;

	atomic_store(&r->a_start, kg_now_ns());
	CO_CHECK(syscall(SYS_read, r->pipefd[0], &c, 1) == 1, "read");
	for (i = 0; i < 100; i++)
		kg_yield();
	kg_wg_add(&wg, 10);
	for (i = 0; i < 10; i++)
		CO_CHECK(kg_go(child_co, &wg) > 0, "go");
	CO_CHECK(kg_wg_wait(&wg) == 0, "wait");
	CO_CHECK(kg_chan_send(r->ping, &v) == 0, "send");
	CO_CHECK(kg_sleep(MS) == 0, "sleep");
	kg_wg_done(&r->wg);
}

static void round_b(void *p)
{
	struct rounds *r = p;
	int v;

	atomic_store(&r->b_ran, kg_now_ns());
	CO_CHECK(kg_chan_recv(r->ping, &v) == 0, "recv");
	kg_wg_done(&r->wg);
}

static void rounds_main(void *p)
{
	struct rounds *r = p;
	int round;

	r->ping = kg_chan_make(sizeof(int), 0);
	for (round = 0; round < 5; round++) {
		pthread_t t;
		uint64_t lat;

		atomic_store(&r->b_ran, 0);
		CO_CHECK(pthread_create(&t, NULL, round_writer, r) == 0, "thr");
		kg_wg_add(&r->wg, 2);
		kg_go(round_b, r);
		kg_go(round_a, r);
		kg_wg_wait(&r->wg);
		pthread_join(t, NULL);
		lat = atomic_load(&r->b_ran) - atomic_load(&r->a_start);
		if (lat > r->worst)
			r->worst = lat;
	}
	kg_chan_free(r->ping);
	CO_CHECK(kg_stats(&stats_end) == 0, "stats");
}

/* Five handoffs in a row: each needs a standby, so each was replaced. */
TEST(blocked_worker_returns_and_standby_is_replaced)
{
	struct rounds r = { .wg = KG_WG_INIT };

	NEED_KERNEL();
	ASSERT_EQ(0, pipe(r.pipefd));
	ASSERT_EQ(0, run_backend(rounds_main, &r, 1, kbackend()));
	ASSERT_EQ(0, co_failures());
	TH_LOG("worst time for B to run after A blocked: %.3f ms",
	       r.worst / 1e6);
	ASSERT_LE(5ull, stats_end.handoffs);
	/* well before the 50 ms the writer waits */
	ASSERT_GT(40 * MS, r.worst);
	close(r.pipefd[0]);
	close(r.pipefd[1]);
}

/*
 * Spare workers are bounded: workers that park and wake all the time (a
 * timer-driven load, no blocking) start no threads beyond the procs', two
 * standbys and one in reserve, plus those out with a lost proc.
 */
static kg_wg_t bound_wg;

static void bound_sleeper(void *p)
{
	kg_sleep((uint64_t)(uintptr_t)p % 5 * MS);
	kg_wg_done(&bound_wg);
}

static void bound_main(void *p)
{
	long i, n = scaled(20000, 4);

	(void)p;
	kg_wg_add(&bound_wg, n);
	for (i = 0; i < n; i++)
		CO_CHECK(kg_go(bound_sleeper, (void *)(uintptr_t)i) > 0, "go");
	kg_wg_wait(&bound_wg);
	CO_CHECK(kg_stats(&stats_end) == 0, "stats");
}

TEST(spare_workers_are_bounded)
{
	NEED_KERNEL();
	ASSERT_EQ(0, run_backend(bound_main, NULL, 2, kbackend()));
	ASSERT_EQ(0, co_failures());
	TH_LOG("%u workers, %llu handoffs", stats_end.workers,
	       (unsigned long long)stats_end.handoffs);
	ASSERT_GE(2 + 3 + stats_end.handoffs, (unsigned long long)stats_end.workers);
}

/*
 * A forked child loads its own programs (the parent's serve the parent's
 * tgid only) and its blocks hand off too.
 */
TEST(forked_child_hands_off)
{
	struct scen s;
	pid_t pid;
	int st;

	NEED_KERNEL();	/* loads the programs in this process first */
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int err;

		memset(&s, 0, sizeof(s));
		s.kind = K_READ;
		pthread_mutex_init(&s.mutex, NULL);
		if (pipe(s.pipefd))
			_exit(3);
		run_scen(&s, KERNEL, &err);
		_exit(err ? 2 : co_failures() ? 3 :
		      s.b_ran && s.b_ran < s.a_end ? 0 : 4);
	}
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	ASSERT_TRUE(WIFEXITED(st));
	/* 4: B did not run while A was blocked */
	ASSERT_EQ(0, WEXITSTATUS(st));
}

/*
 * Go's exitsyscall, deferred to the next kgreen call: on 1 proc, A blocks
 * in read() and loses the proc to B; when read() returns, A runs without
 * a proc only until its next kgreen call (here a channel try-send), which
 * queues it for a proc. From then on A and B never run at once. (Without
 * that, A would run on as a second thread until it parked or yielded.)
 */
static atomic_int lp_conc, lp_phase, lp_bad, lp_done;
static int lp_pipe[2];
static kg_chan_t *lp_ch;

static void lp_section(void)
{
	uint64_t t0 = kg_now_ns();

	if (atomic_fetch_add(&lp_conc, 1) > 0 && atomic_load(&lp_phase) == 2)
		atomic_fetch_add(&lp_bad, 1);
	while (kg_now_ns() - t0 < 20000)
		;
	atomic_fetch_sub(&lp_conc, 1);
}

static void lp_b(void *p)
{
	(void)p;
	while (!atomic_load(&lp_done)) {
		lp_section();
		kg_yield();
	}
}

static void *lp_writer(void *p)
{
	struct timespec ts = { 0, 30 * MS };

	(void)p;
	nanosleep(&ts, NULL);
	if (write(lp_pipe[1], "x", 1) != 1)
		abort();
	return NULL;
}

static void lp_a(void *p)
{
	int i, one = 1;
	char c;

	(void)p;
	CO_CHECK(syscall(SYS_read, lp_pipe[0], &c, 1) == 1, "read");
	atomic_store(&lp_phase, 1);
	kg_chan_try_send(lp_ch, &one);	/* the next kgreen call */
	atomic_store(&lp_phase, 2);
	for (i = 0; i < 200; i++) {
		lp_section();
		kg_yield();
	}
	atomic_store(&lp_done, 1);
}

static void lp_main(void *p)
{
	pthread_t t;

	(void)p;
	lp_ch = kg_chan_make(sizeof(int), 1);
	CO_CHECK(pthread_create(&t, NULL, lp_writer, NULL) == 0, "thread");
	kg_go(lp_b, NULL);
	kg_go(lp_a, NULL);	/* runnext: A first */
	while (!atomic_load(&lp_done))
		kg_sleep(MS);
	pthread_join(t, NULL);
	CO_CHECK(kg_stats(&stats_end) == 0, "stats");
	kg_chan_free(lp_ch);
}

TEST(lost_proc_is_given_back_at_the_next_call)
{
	NEED_KERNEL();
	ASSERT_EQ(0, pipe(lp_pipe));
	ASSERT_EQ(0, run_backend(lp_main, NULL, 1, kbackend()));
	ASSERT_EQ(0, co_failures());
	int bad = atomic_load(&lp_bad);

	TH_LOG("%llu handoffs, %d overlaps after A's kgreen call",
	       (unsigned long long)stats_end.handoffs, bad);
	ASSERT_LE(1ull, stats_end.handoffs);
	/*
	 * Another handoff (a block the test did not make: a page fault
	 * that sleeps, under emulation) lets the two overlap again until
	 * the next kgreen call, as it should: only A's read counts here.
	 */
	if (stats_end.handoffs == 1)
		ASSERT_EQ(0, bad)
			TH_LOG("A and B ran at once after A's kgreen call");
	close(lp_pipe[0]);
	close(lp_pipe[1]);
}

/* ------------------------------------------------------------------ */
/* Choosing the backend                                                */
/* ------------------------------------------------------------------ */

static char backend_seen[16];

static void note_backend(void *p)
{
	(void)p;
	snprintf(backend_seen, sizeof(backend_seen), "%s", kg_backend_name());
}

TEST(bpf_failure_falls_back_to_sysmon)
{
	char out[4096];
	struct kg_config cfg = { .backend = "bpf" };

	setenv("KGREEN_BPF_FAIL", "1", 1);
	/* auto would pick the module where it is loaded */
	setenv("KGREEN_KMOD_DEV", "/nonexistent/kgreen", 1);
	unsetenv("KGREEN_BACKEND");
	ASSERT_EQ(0, run_kg_captured(note_backend, NULL, 1, out, sizeof(out),
				     NULL));
	ASSERT_STREQ("sysmon", backend_seen);
	ASSERT_NE(NULL, strstr(out, "using sysmon"));
	/* the reason: the simulated failure, or a build without BPF */
	ASSERT_TRUE(strstr(out, "simulated load failure") ||
		    strstr(out, "built without BPF support"));
	/* asked for by name, it fails with the reason */
	ASSERT_EQ(-ENODEV, kg_run(note_backend, NULL, &cfg));
	unsetenv("KGREEN_KMOD_DEV");
}

/*
 * A backend proves itself at start-up: one whose kernel side sees no block
 * (here simulated: KGREEN_BPF_FAIL=blind registers no thread for the
 * proof) is refused with the reason, never reported while doing nothing.
 */
TEST(bpf_that_sees_nothing_is_refused)
{
	char out[4096];

	setenv("KGREEN_BPF_FAIL", "blind", 1);
	setenv("KGREEN_KMOD_DEV", "/nonexistent/kgreen", 1);
	unsetenv("KGREEN_BACKEND");
	ASSERT_EQ(0, run_kg_captured(note_backend, NULL, 1, out, sizeof(out),
				     NULL));
	unsetenv("KGREEN_BPF_FAIL");
	unsetenv("KGREEN_KMOD_DEV");
	if (strstr(out, "no permission") || strstr(out, "no BTF") ||
	    strstr(out, "built without BPF support"))
		SKIP(return, "BPF cannot load here at all");
	ASSERT_STREQ("sysmon", backend_seen);
	ASSERT_NE(NULL, strstr(out, "did not see a deliberate block"))
		TH_LOG("output: %s", out);
}

/* Without /dev/kgreen auto says nothing about it; kmod by name fails. */
TEST(kmod_absent)
{
	char out[4096];

	setenv("KGREEN_KMOD_DEV", "/nonexistent/kgreen", 1);
	unsetenv("KGREEN_BACKEND");
	ASSERT_EQ(0, run_kg_captured(note_backend, NULL, 1, out, sizeof(out),
				     NULL));
	ASSERT_STRNE("kmod", backend_seen);
	ASSERT_EQ(NULL, strstr(out, "kmod"));
	setenv("KGREEN_BACKEND", "kmod", 1);
	ASSERT_EQ(-ENODEV, run_kg_captured(note_backend, NULL, 1, out,
					   sizeof(out), NULL));
	ASSERT_NE(NULL, strstr(out, "backend kmod is not available: no "
				    "/nonexistent/kgreen"));
	unsetenv("KGREEN_BACKEND");
	unsetenv("KGREEN_KMOD_DEV");
}

TEST(backend_from_environment)
{
	setenv("KGREEN_BACKEND", "sysmon", 1);
	ASSERT_EQ(0, kg_run(note_backend, NULL, NULL));
	ASSERT_STREQ("sysmon", backend_seen);
	setenv("KGREEN_BACKEND", "nonsense", 1);
	ASSERT_EQ(-EINVAL, kg_run(note_backend, NULL, NULL));
	unsetenv("KGREEN_BACKEND");
}

/* ------------------------------------------------------------------ */
/* The backends' matrix: each backend as root, as an unprivileged user */
/* and in a PID namespace (Documentation/backends.md's table)          */
/* ------------------------------------------------------------------ */

/*
 * USERNS: a rootless container, an unprivileged user's new user and PID
 * namespaces: all capabilities inside, none (CAP_BPF included) outside.
 */
enum who { ROOT, UNPRIV, PIDNS, USERNS };
static const char *const who_name[] = { "root", "unprivileged",
					"PID namespace",
					"rootless container" };

/* A cell's outcome, written by the child into shared memory. */
struct cell {
	int setup;		/* 0 ran; else the step that failed */
	int setup_errno;	/* and its errno */
	int err;		/* kg_run's */
	unsigned long long handoffs;
	double b_after_ms;	/* B ran this long after A blocked */
	int b_during_a;		/* B ran before A's call returned */
	char why[600];		/* the runtime's stderr */
};

/* In the child: become who, run the scenario on backend, fill *c. */
static void cell_child(struct cell *c, const char *backend, enum who who)
{
	struct scen s = { .kind = K_READ };
	pid_t g;

	if ((who == UNPRIV || who == USERNS) && getuid() == 0 &&
	    (setgroups(0, NULL) || setgid(65534) || setuid(65534))) {
		c->setup = 1;
		return;
	}
	if (who == PIDNS || who == USERNS) {
		int st;

		if (unshare(CLONE_NEWPID |
			    (who == USERNS ? CLONE_NEWUSER : 0))) {
			c->setup_errno = errno;
			c->setup = 2;
			return;
		}
		g = fork();
		if (g < 0) {
			c->setup = 3;
			return;
		}
		if (g) {
			if (waitpid(g, &st, 0) != g || !WIFEXITED(st) ||
			    WEXITSTATUS(st))
				c->setup = 4;
			return;
		}
		if (getpid() != 1)
			_exit(1);
	}
	if (pipe(s.pipefd)) {
		c->setup = 5;
		return;
	}
	pthread_mutex_init(&s.mutex, NULL);
	s.mode = strcmp(backend, "sysmon") ? KERNEL : SYSMON_MARKED;
	setenv("KGREEN_BACKEND", backend, 1);	/* this child's only */
	c->err = run_kg_captured(scen_main, &s, 1, c->why, sizeof(c->why),
				 NULL);
	c->handoffs = s.st.handoffs;
	c->b_during_a = s.b_ran && s.b_ran < s.a_end;
	c->b_after_ms = ((double)s.b_ran - (double)s.a_start) / 1e6;
	if (who == PIDNS || who == USERNS)
		_exit(0);
}

/*
 * Run one cell and check it: green (the backend served and handed off:
 * B ran while A was blocked) or, where expected here, refused with the
 * named reason (want_why). Its line, "matrix: ...", is what
 * Documentation/backends.md's table is made of.
 */
static void cell(struct __test_metadata *_metadata, const char *backend,
		 enum who who, const char *want_why)
{
	struct cell *c = mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct utsname u;
	pid_t pid;
	int st;

	ASSERT_NE(MAP_FAILED, c);
	if (who != UNPRIV && who != USERNS && getuid() != 0)
		SKIP(return, "not root: the %s cell needs root",
		     who_name[who]);
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		cell_child(c, backend, who);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	ASSERT_TRUE(WIFEXITED(st));
	uname(&u);
	if (c->setup == 2)
		SKIP(return, "cannot make a %s namespace here: %s",
		     who == USERNS ? "user" : "PID",
		     strerror(c->setup_errno));
	ASSERT_EQ(0, c->setup) TH_LOG("the child's setup step %d failed",
				      c->setup);
	if (!c->err)
		TH_LOG("matrix: %s | %s | %s | green: %llu handoffs, B ran "
		       "%.2f ms after A blocked", backend, u.release,
		       who_name[who], c->handoffs, c->b_after_ms);
	else
		TH_LOG("matrix: %s | %s | %s | refused: %s", backend,
		       u.release, who_name[who], strtok(c->why, "\n"));
	if (c->err && strstr(c->why, "built without BPF support"))
		SKIP(return, "this libkgreen has no BPF backend");
	if (want_why) {
		ASSERT_EQ(-ENODEV, c->err);
		ASSERT_NE(NULL, strstr(c->why, want_why))
			TH_LOG("expected a reason with \"%s\"", want_why);
	} else {
		ASSERT_EQ(0, c->err);
		ASSERT_LT(0ull, c->handoffs);
		ASSERT_TRUE(c->b_during_a);
	}
	munmap(c, sizeof(*c));
}

/*
 * kmod: green for every user wherever the module is loaded (the device is
 * 0666; each user is bounded by max_user_contexts), else refused.
 */
static const char *kmod_expect(void)
{
	const char *dev = getenv("KGREEN_KMOD_DEV");

	return access(dev && *dev ? dev : "/dev/kgreen", F_OK) ?
		       "the kgreen module is not loaded" : NULL;
}

TEST(matrix_kmod_root) { cell(_metadata, "kmod", ROOT, kmod_expect()); }
TEST(matrix_kmod_unprivileged)
{
	cell(_metadata, "kmod", UNPRIV, kmod_expect());
}
TEST(matrix_kmod_pid_namespace)
{
	cell(_metadata, "kmod", PIDNS, kmod_expect());
}
TEST(matrix_kmod_rootless_container)
{
	cell(_metadata, "kmod", USERNS, kmod_expect());
}

/*
 * bpf (where root can load it at all, and the library has it): green for
 * root, in a PID namespace too; an unprivileged user may
 * not load tracing programs (CAP_BPF and CAP_PERFMON in the initial user
 * namespace), nor may root of a rootless container: refused, named.
 */
#define NEED_BPF()                                                            \
	do {                                                                  \
		if (getuid() == 0 &&                                          \
		    run_backend(nothing, NULL, 1, "bpf") == -ENODEV)          \
			SKIP(return, "the bpf backend cannot serve here even " \
				     "as root (reason above)");               \
	} while (0)

TEST(matrix_bpf_root)
{
	NEED_BPF();
	cell(_metadata, "bpf", ROOT, NULL);
}
TEST(matrix_bpf_unprivileged)
{
	NEED_BPF();
	cell(_metadata, "bpf", UNPRIV, "no permission to load BPF");
}
TEST(matrix_bpf_pid_namespace)
{
	NEED_BPF();
	cell(_metadata, "bpf", PIDNS, NULL);
}
TEST(matrix_bpf_rootless_container)
{
	NEED_BPF();
	cell(_metadata, "bpf", USERNS, "in the initial user namespace");
}

/* sysmon: green everywhere (the blocking call is marked). */
TEST(matrix_sysmon_root) { cell(_metadata, "sysmon", ROOT, NULL); }
TEST(matrix_sysmon_unprivileged)
{
	cell(_metadata, "sysmon", UNPRIV, NULL);
}
TEST(matrix_sysmon_pid_namespace)
{
	cell(_metadata, "sysmon", PIDNS, NULL);
}
TEST(matrix_sysmon_rootless_container)
{
	cell(_metadata, "sysmon", USERNS, NULL);
}

TEST_HARNESS_MAIN
