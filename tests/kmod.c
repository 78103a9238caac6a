// SPDX-License-Identifier: MIT
/*
 * kmod.c - kgreen.ko, tested through its device (Documentation/kmod.md).
 *
 * Runs inside the VM (tools/vmcheck) where the module is loaded; every
 * test SKIPs where /dev/kgreen is missing. The protocol tests drive the
 * module directly, as libkgreen does, with threads standing in for
 * workers; the last tests run libkgreen on the kmod backend and compare
 * its counts with the module's. After each test the kernel log is
 * checked by the VM runner (a WARNING, BUG or oops fails the run).
 */
#include "harness.h"
#include "kg_test.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <uapi/kgreen.h>

#define DEV "/dev/kgreen"
#define MS 1000000ull

#define NEED_DEV()                                                            \
	do {                                                                  \
		if (access(DEV, R_OK | W_OK))                                 \
			SKIP(return, DEV " is not here (the module is not "   \
				     "loaded; tools/vmcheck loads it)");      \
	} while (0)

static int dev_open(void)
{
	return open(DEV, O_RDWR | O_CLOEXEC);
}

static struct kg_shared *dev_map(int fd)
{
	void *p = mmap(NULL, sizeof(struct kg_shared), PROT_READ | PROT_WRITE,
		       MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* ioctl's result as 0 or -errno */
static int ioc(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) ? -errno : 0;
}

static int reg(int fd, unsigned int idx)
{
	struct kg_ioc_worker a = { .size = sizeof(a), .worker = idx };

	return ioc(fd, KG_IOC_REGISTER, &a);
}

static int unreg(int fd, unsigned int idx)
{
	struct kg_ioc_worker a = { .size = sizeof(a), .worker = idx };

	return ioc(fd, KG_IOC_UNREGISTER, &a);
}

static int wait_ev(int fd, unsigned int idx, uint64_t deadline,
		   struct kg_handoff_event *ev)
{
	struct kg_ioc_wait a = {
		.size = sizeof(a), .worker = idx, .deadline_ns = deadline,
	};
	int r = ioc(fd, KG_IOC_WAIT, &a);

	if (!r && ev)
		*ev = a.ev;
	return r;
}

static int kick(int fd, unsigned int idx)
{
	struct kg_ioc_kick a = { .size = sizeof(a), .worker = idx };

	return ioc(fd, KG_IOC_KICK, &a);
}

static int stats(int fd, struct kg_ioc_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	return ioc(fd, KG_IOC_STATS, s);
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
			       (long)(ns % 1000000000u) };

	syscall(SYS_nanosleep, &ts, NULL);
}

/* The debugfs line of process pid: 1 found (fields in *s), 0 not. */
static int debugfs_stats(pid_t pid, struct kg_ioc_stats *s)
{
	FILE *f = fopen("/sys/kernel/debug/kgreen/stats", "r");
	char line[512];
	int found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v[11];
		int p;

		if (sscanf(line, "%d %llu %llu %llu %llu %llu %llu %llu %llu "
			   "%llu %llu %llu", &p, &v[0], &v[1], &v[2], &v[3],
			   &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
			   &v[10]) == 12 &&
		    p == pid) {
			s->workers = (uint32_t)v[0];
			s->registered = v[1];
			s->blocks = v[2];
			s->handoffs = v[3];
			s->idle_blocks = v[4];
			s->dropped = v[5];
			s->taken = v[7];
			s->preempts = v[10];
			found = 1;
		}
	}
	fclose(f);
	return found;
}

/*
 * Wait until the module holds no references (every file released and
 * every context reaped); its count, or -1 if it cannot be read.
 */
static int module_refs_settle(void)
{
	int i, n = -1;

	for (i = 0; i < 200; i++) {
		FILE *f = fopen("/sys/module/kgreen/refcnt", "r");

		if (!f || fscanf(f, "%d", &n) != 1)
			n = -1;
		if (f)
			fclose(f);
		if (n <= 0)
			return n;
		sleep_ns(10 * MS);
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* The ABI: every argument checked                                     */
/* ------------------------------------------------------------------ */

TEST(info)
{
	struct kg_ioc_info info = { .size = sizeof(info) };
	int fd;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ioc(fd, KG_IOC_INFO, &info));
	ASSERT_EQ((uint32_t)KG_ABI_VERSION, info.abi_version);
	ASSERT_LE(sizeof(struct kg_shared), info.shared_size);
	ASSERT_EQ(0u, info.shared_size % (uint32_t)getpagesize());
	ASSERT_EQ((uint32_t)KG_MAX_WORKERS, info.max_workers);
	ASSERT_EQ((uint32_t)KG_MAX_PROCS, info.max_procs);
	close(fd);
}

TEST(bad_arguments)
{
	struct kg_ioc_worker w = { .size = sizeof(w) };
	struct kg_ioc_info info = { .size = sizeof(info) - 4 };
	struct kg_ioc_wait wt = { .size = sizeof(wt) };
	struct kg_ioc_kick k = { .size = sizeof(k) };
	void *p;
	int fd;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	/* sizes */
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_INFO, &info));
	info.size = 0xffffffff;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_INFO, &info));
	w.size = sizeof(w) + 8;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_REGISTER, &w));
	/* pointers */
	ASSERT_EQ(-EFAULT, ioc(fd, KG_IOC_INFO, NULL));
	ASSERT_EQ(-EFAULT, ioc(fd, KG_IOC_REGISTER, (void *)16));
	ASSERT_EQ(-EFAULT, ioc(fd, KG_IOC_WAIT, (void *)-4096L));
	/* flags, reserved fields, indices */
	w.size = sizeof(w);
	w.flags = 1;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_REGISTER, &w));
	w.flags = 0;
	w.__pad = 1;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_REGISTER, &w));
	w.__pad = 0;
	w.worker = KG_MAX_WORKERS;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_REGISTER, &w));
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_UNREGISTER, &w));
	wt.worker = KG_MAX_WORKERS;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_WAIT, &wt));
	wt.worker = 0;
	wt.flags = 2;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_WAIT, &wt));
	k.worker = 0xffffffff;
	ASSERT_EQ(-EINVAL, ioc(fd, KG_IOC_KICK, &k));
	/* nobody registered */
	ASSERT_EQ(-ENOENT, unreg(fd, 0));
	ASSERT_EQ(-ENOENT, wait_ev(fd, 0, 0, NULL));
	ASSERT_EQ(-ENOENT, kick(fd, 0));
	/* unknown commands */
	ASSERT_EQ(-ENOTTY, ioc(fd, _IO(KG_IOC_MAGIC, 0x7f), NULL));
	ASSERT_EQ(-ENOTTY, ioc(fd, 0x5401 /* TCGETS */, &w));
	/* mappings: shared only, from 0, no larger than the state */
	p = mmap(NULL, sizeof(struct kg_shared), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE, fd, 0);
	ASSERT_EQ(MAP_FAILED, p);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096);
	ASSERT_EQ(MAP_FAILED, p);
	p = mmap(NULL, sizeof(struct kg_shared) + (1 << 20), PROT_READ,
		 MAP_SHARED, fd, 0);
	ASSERT_EQ(MAP_FAILED, p);
	ASSERT_EQ(EINVAL, errno);
	close(fd);
}

static void *register_other(void *arg)
{
	int fd = *(int *)arg;

	return (void *)(intptr_t)reg(fd, 3);
}

TEST(one_registration_per_thread_and_slot)
{
	pthread_t t;
	void *r;
	int fd, fd2;

	NEED_DEV();
	fd = dev_open();
	fd2 = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_LE(0, fd2);
	ASSERT_EQ(0, reg(fd, 3));
	ASSERT_EQ(-EBUSY, reg(fd, 4));		/* this thread, again */
	ASSERT_EQ(-EBUSY, reg(fd2, 3));		/* in another context too */
	ASSERT_EQ(0, pthread_create(&t, NULL, register_other, &fd));
	pthread_join(t, &r);
	ASSERT_EQ(-EBUSY, (int)(intptr_t)r);	/* slot 3 is taken */
	ASSERT_EQ(-ENOENT, unreg(fd, 4));
	ASSERT_EQ(0, unreg(fd, 3));
	ASSERT_EQ(-ENOENT, unreg(fd, 3));
	ASSERT_EQ(0, reg(fd2, 3));		/* free again, anywhere */
	ASSERT_EQ(0, unreg(fd2, 3));
	close(fd);
	close(fd2);
}

TEST_TIMEOUT(register_unregister_10000, 120)
{
	struct kg_ioc_stats s;
	long i, n = 10000;
	int fd;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, reg(fd, (unsigned int)(i % KG_MAX_WORKERS)));
		ASSERT_EQ(0, unreg(fd, (unsigned int)(i % KG_MAX_WORKERS)));
	}
	ASSERT_EQ(0, stats(fd, &s));
	ASSERT_EQ((uint64_t)n, s.registered);
	close(fd);
}

/* ------------------------------------------------------------------ */
/* The protocol, driven by hand                                        */
/* ------------------------------------------------------------------ */

struct blocker {
	int fd;
	struct kg_shared *sh;
	unsigned int idx;
	uint32_t in_sched;	/* what the slot says while it blocks */
	uint32_t proc;		/* the proc it says it holds */
	int reg_err;
	_Atomic int ready;
};

/* Worker idx holding b->proc, blocking 20 ms in nanosleep. */
static void *blocker_thread(void *arg)
{
	struct blocker *b = arg;
	struct kg_worker_slot *ws = &b->sh->workers[b->idx];

	b->reg_err = reg(b->fd, b->idx);
	ws->in_sched = b->in_sched;
	ws->proc = b->proc;
	if (b->proc < KG_MAX_PROCS)
		__atomic_store_n(&b->sh->procs[b->proc].owner, b->idx,
				 __ATOMIC_SEQ_CST);
	atomic_store(&b->ready, 1);
	sleep_ns(20 * MS);
	if (!b->reg_err)
		b->reg_err = unreg(b->fd, b->idx);
	return NULL;
}

static void run_blocker(struct blocker *b)
{
	pthread_t t;

	pthread_create(&t, NULL, blocker_thread, b);
	pthread_join(t, NULL);
}

FIXTURE(proto)
{
	int fd;
	struct kg_shared *sh;
	struct blocker b;
};

FIXTURE_VARIANT(proto) {
	int unused;
};

FIXTURE_SETUP(proto)
{
	self->fd = -1;
	NEED_DEV();
	self->fd = dev_open();
	ASSERT_LE(0, self->fd);
	self->sh = dev_map(self->fd);
	ASSERT_NE(NULL, self->sh);
	self->sh->hdr.version = KG_ABI_VERSION;
	self->sh->hdr.nprocs = 1;
	/* the spare (this thread, worker 0) holds nothing; proc 0 is free */
	self->sh->workers[0].proc = KG_PROC_NONE;
	self->sh->workers[0].in_sched = 1;
	self->sh->procs[0].owner = KG_OWNER_DETACHED;
	self->sh->procs[1].owner = KG_OWNER_DETACHED;
	self->b = (struct blocker){ .fd = self->fd, .sh = self->sh,
				    .idx = 1 };
	/* this thread is worker 0, the spare */
	ASSERT_EQ(0, reg(self->fd, 0));
}

FIXTURE_TEARDOWN(proto)
{
	if (self->fd >= 0) {
		unreg(self->fd, 0);
		close(self->fd);
	}
}

TEST_F(proto, blocked_worker_with_work_loses_its_proc)
{
	struct kg_handoff_event ev;
	struct kg_ioc_stats s;
	uint64_t t0 = kg_now_ns();

	self->sh->procs[0].runq_tail = 1;	/* one coroutine queued */
	run_blocker(&self->b);
	ASSERT_EQ(0, self->b.reg_err);
	ASSERT_EQ(0, wait_ev(self->fd, 0, kg_now_ns() + 1000 * MS, &ev));
	ASSERT_EQ(0u, ev.proc);
	ASSERT_EQ(1u, ev.worker);
	ASSERT_LE(t0, ev.ts_ns);
	ASSERT_EQ(KG_OWNER_DETACHED, self->sh->procs[0].owner);
	ASSERT_EQ(KG_PROC_NONE, self->sh->workers[1].proc);
	ASSERT_LE(1ull, self->sh->workers[1].blocks);
	/* exactly one record: the proc was detached once */
	ASSERT_EQ(-EAGAIN, wait_ev(self->fd, 0, 0, &ev));
	ASSERT_EQ(0u, self->sh->hdr.kev_pending);
	ASSERT_EQ(0, stats(self->fd, &s));
	ASSERT_EQ(1ull, s.handoffs);
	ASSERT_EQ(1ull, s.taken);
	ASSERT_LE(1ull, s.blocks);
	ASSERT_LT(0ull, s.blocked_ns);
}

TEST_F(proto, nothing_queued_means_no_handoff)
{
	struct kg_ioc_stats s;

	run_blocker(&self->b);
	ASSERT_EQ(0, self->b.reg_err);
	ASSERT_EQ(-EAGAIN, wait_ev(self->fd, 0, 0, NULL));
	ASSERT_EQ(1u, self->sh->procs[0].owner);
	ASSERT_EQ(0u, self->sh->workers[1].proc);
	ASSERT_EQ(0, stats(self->fd, &s));
	ASSERT_EQ(0ull, s.handoffs);
	ASSERT_LE(1ull, s.idle_blocks);
}

TEST_F(proto, scheduler_code_is_never_interrupted)
{
	self->sh->procs[0].runq_tail = 1;
	self->b.in_sched = 1;
	run_blocker(&self->b);
	ASSERT_EQ(-EAGAIN, wait_ev(self->fd, 0, 0, NULL));
	ASSERT_EQ(1u, self->sh->procs[0].owner);
}

TEST_F(proto, garbage_in_the_shared_state_is_ignored)
{
	struct kg_shared *sh = self->sh;
	struct kg_ioc_stats st;
	int n = 0;

	/* absurd counts: the module trusts none of them */
	sh->hdr.nprocs = 0xffffffff;
	sh->hdr.kev_pending = 12345;
	sh->hdr.gq_len = 0xffffffff;	/* "work queued" */
	/* a proc index out of range: no record, no crash */
	self->b.proc = 0xfffffffe;
	run_blocker(&self->b);
	ASSERT_EQ(0, self->b.reg_err);
	self->b.proc = KG_MAX_PROCS;
	run_blocker(&self->b);
	/* in range (nprocs is huge): one real handoff */
	self->b.proc = 1;
	run_blocker(&self->b);
	while (wait_ev(self->fd, 0, 0, NULL) == 0)
		n++;
	ASSERT_EQ(1, n);
	ASSERT_EQ(0, stats(self->fd, &st));
	ASSERT_EQ(1ull, st.handoffs);
	ASSERT_EQ(0u, sh->hdr.kev_pending);	/* rewritten by the module */
}

TEST_F(proto, wait_times_out_and_kicks_end_it)
{
	uint64_t t0 = kg_now_ns();

	ASSERT_EQ(-ETIMEDOUT, wait_ev(self->fd, 0, t0 + 30 * MS, NULL));
	ASSERT_LE(t0 + 30 * MS, kg_now_ns());
	/* a kick before the wait ends the next wait... */
	ASSERT_EQ(0, kick(self->fd, 0));
	/* ...a poll does not consume it... */
	ASSERT_EQ(-EAGAIN, wait_ev(self->fd, 0, 0, NULL));
	t0 = kg_now_ns();
	ASSERT_EQ(-EAGAIN, wait_ev(self->fd, 0, UINT64_MAX, NULL));
	ASSERT_GT(t0 + 500 * MS, kg_now_ns());
	/* ...and is consumed by it */
	ASSERT_EQ(-ETIMEDOUT, wait_ev(self->fd, 0, kg_now_ns() + 5 * MS, NULL));
}

static void on_alarm(int sig)
{
	(void)sig;
}

TEST_F(proto, a_signal_ends_a_wait)
{
	struct sigaction sa = { .sa_handler = on_alarm };

	sigaction(SIGALRM, &sa, NULL);	/* no SA_RESTART */
	alarm(1);
	ASSERT_EQ(-EINTR, wait_ev(self->fd, 0, UINT64_MAX, NULL));
}

/* ------------------------------------------------------------------ */
/* Teardown in every order                                             */
/* ------------------------------------------------------------------ */

static void *register_and_exit(void *arg)
{
	int fd = *(int *)arg;
	static _Atomic unsigned int next = 10;

	reg(fd, 10 + atomic_fetch_add(&next, 1) % 500);
	sleep_ns(MS);	/* a few switches */
	return NULL;	/* never unregisters */
}

/* Wait until the module's worker count for fd reaches want (reaped). */
static int workers_settle(int fd, uint32_t want)
{
	struct kg_ioc_stats s;
	int i;

	for (i = 0; i < 200; i++) {
		if (stats(fd, &s) || s.workers == want)
			return (int)s.workers;
		sleep_ns(10 * MS);
	}
	return (int)s.workers;
}

TEST(thread_exits_while_registered)
{
	pthread_t t[8];
	int fd, i;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	for (i = 0; i < 8; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, register_and_exit,
					    &fd));
	for (i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ(0, workers_settle(fd, 0));
	close(fd);
	ASSERT_EQ(0, module_refs_settle());
}

struct live {
	int fd;
	_Atomic int stop, registered;
};

static void *register_and_live(void *arg)
{
	struct live *l = arg;
	static _Atomic unsigned int next = 40;

	if (!reg(l->fd, atomic_fetch_add(&next, 1)))
		atomic_fetch_add(&l->registered, 1);
	while (!atomic_load(&l->stop))
		sleep_ns(MS);	/* blocks and wakes, after the close too */
	return NULL;
}

TEST(file_closed_while_workers_live)
{
	struct live l = { 0 };
	struct kg_shared *sh;
	pthread_t t[4];
	int i;

	NEED_DEV();
	l.fd = dev_open();
	ASSERT_LE(0, l.fd);
	sh = dev_map(l.fd);
	ASSERT_NE(NULL, sh);
	for (i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, register_and_live, &l);
	while (atomic_load(&l.registered) < 4)
		sleep_ns(MS);
	sh->hdr.nprocs = 1;
	sh->procs[0].runq_tail = 1;
	close(l.fd);		/* the mapping keeps the file open */
	sleep_ns(20 * MS);
	munmap(sh, sizeof(*sh));	/* now it is released */
	sleep_ns(20 * MS);		/* the threads unlink themselves */
	/* a new context for the same threads' process works */
	l.fd = dev_open();
	ASSERT_LE(0, l.fd);
	ASSERT_EQ(0, reg(l.fd, 0));
	ASSERT_EQ(0, unreg(l.fd, 0));
	atomic_store(&l.stop, 1);
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	close(l.fd);
	/* the first context too is gone: its threads exited */
	ASSERT_EQ(0, module_refs_settle());
	ASSERT_EQ(0, debugfs_stats(getpid(), &(struct kg_ioc_stats){ 0 }));
}

/*
 * A registration whose file is closed stays, inert, on its live thread
 * (only the thread may unlink it); the thread's next registration, in
 * a new file, drops it, and then nothing of the old file remains.
 */
TEST(closed_file_registration_dropped_at_the_next)
{
	struct kg_ioc_stats s;
	int fd;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, reg(fd, 5));
	close(fd);
	sleep_ns(10 * MS);	/* switches with the inert notifier */
	fd = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, reg(fd, 5));
	ASSERT_EQ(0, stats(fd, &s));
	ASSERT_EQ(1u, s.workers);
	ASSERT_EQ(0, unreg(fd, 5));
	close(fd);
	ASSERT_EQ(0, module_refs_settle());
}

TEST(forked_child_gets_nothing)
{
	struct kg_shared *sh;
	pid_t pid;
	int fd, st;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	sh = dev_map(fd);
	ASSERT_NE(NULL, sh);
	ASSERT_EQ(0, reg(fd, 0));
	sh->hdr.nprocs = 7;
	/*
	 * madvise(MADV_DOFORK) would undo VM_DONTCOPY, and the child would
	 * read and write the parent's shared state: refused (VM_IO).
	 */
	EXPECT_EQ(-1, madvise(sh, sizeof(*sh), MADV_DOFORK));
	EXPECT_EQ(EINVAL, errno);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		unsigned char vec;

		/* the mapping is not inherited */
		if (mincore(sh, 4096, &vec) == 0 || errno != ENOMEM)
			_exit(10);
		/* the parent's file steers nothing here */
		if (reg(fd, 1) != -EPERM || unreg(fd, 0) != -EPERM ||
		    kick(fd, 0) != -EPERM || dev_map(fd))
			_exit(11);
		/* the child has its own context, nothing registered */
		close(fd);
		fd = dev_open();
		sh = dev_map(fd);
		if (fd < 0 || !sh || sh->hdr.nprocs != 0)
			_exit(12);
		if (unreg(fd, 0) != -ENOENT || reg(fd, 0) || unreg(fd, 0))
			_exit(13);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(0, WEXITSTATUS(st));
	ASSERT_EQ(7u, sh->hdr.nprocs);
	ASSERT_EQ(0, unreg(fd, 0));
	close(fd);
}

/*
 * exec with the device open: with O_CLOEXEC the file closes and the
 * thread unlinks itself; without, the new program inherits a file that
 * refuses it (another address space) and a notifier that ignores it.
 */
TEST(exec_while_registered)
{
	int cloexec;

	NEED_DEV();
	for (cloexec = 0; cloexec < 2; cloexec++) {
		pid_t pid = fork();
		int st;

		ASSERT_LE(0, pid);
		if (pid == 0) {
			int fd = open(DEV, O_RDWR | (cloexec ? O_CLOEXEC : 0));
			char arg[16];

			if (fd < 0 || !dev_map(fd) || reg(fd, 0))
				_exit(20);
			snprintf(arg, sizeof(arg), "%d", cloexec ? -1 : fd);
			execl("/proc/self/exe", "kmod", "--exec-check", arg,
			      (char *)NULL);
			_exit(21);
		}
		ASSERT_EQ(pid, waitpid(pid, &st, 0));
		ASSERT_TRUE(WIFEXITED(st));
		ASSERT_EQ(0, WEXITSTATUS(st)) TH_LOG("cloexec %d", cloexec);
	}
}

/* The exec'd program: the inherited fd (or -1) must refuse it. */
static int exec_check(int fd)
{
	int i;

	for (i = 0; i < 20; i++)
		sleep_ns(MS);	/* switches with the old notifier */
	if (fd >= 0 && (reg(fd, 1) != -EPERM || dev_map(fd)))
		return 30;
	fd = dev_open();	/* a fresh context works */
	if (fd < 0 || reg(fd, 0) || unreg(fd, 0))
		return 31;
	return 0;
}

/* A child that works the protocol with 3 threads until it is killed. */
static void churn_child(void)
{
	struct blocker b[3];
	struct kg_shared *sh;
	pthread_t t;
	int fd = dev_open(), i;

	sh = fd >= 0 ? dev_map(fd) : NULL;
	if (!sh || reg(fd, 0))
		_exit(1);
	sh->hdr.nprocs = 1;
	sh->workers[0].proc = KG_PROC_NONE;
	for (;;) {
		for (i = 0; i < 3; i++) {
			b[i] = (struct blocker){ .fd = fd, .sh = sh,
						 .idx = 1 + (unsigned int)i };
			sh->procs[0].runq_tail++;
			pthread_create(&t, NULL, blocker_thread, &b[i]);
			pthread_detach(t);
		}
		while (!wait_ev(fd, 0, kg_now_ns() + 5 * MS, NULL))
			;
	}
}

TEST_TIMEOUT(sigkill_100_processes, 120)
{
	unsigned int seed = harness_seed();
	pid_t pids[100];
	int i, st, fd;

	NEED_DEV();
	for (i = 0; i < 100; i++) {
		pids[i] = fork();
		ASSERT_LE(0, pids[i]);
		if (pids[i] == 0)
			churn_child();
		/* killed at a random point: before or during the churn */
		sleep_ns((uint64_t)(rand_r(&seed) % 8000) * 1000);
		kill(pids[i], SIGKILL);
	}
	for (i = 0; i < 100; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &st, 0));
		ASSERT_TRUE(WIFSIGNALED(st) ||
			    (WIFEXITED(st) && WEXITSTATUS(st) == 0));
	}
	/* every context goes away */
	for (i = 0; i < 100; i++) {
		struct kg_ioc_stats s;
		int j, left = 0;

		for (j = 0; j < 100; j++)
			left += debugfs_stats(pids[j], &s) == 1;
		if (!left)
			break;
		sleep_ns(20 * MS);
	}
	ASSERT_GT(100, i) TH_LOG("contexts of killed processes remain");
	ASSERT_EQ(0, module_refs_settle());
	/* and the device still works */
	fd = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, reg(fd, 0));
	ASSERT_EQ(0, unreg(fd, 0));
	close(fd);
}

/* ------------------------------------------------------------------ */
/* Fuzz                                                                */
/* ------------------------------------------------------------------ */

TEST_TIMEOUT(ioctl_fuzz, 240)
{
	static const unsigned long cmds[] = {
		KG_IOC_INFO, KG_IOC_REGISTER, KG_IOC_UNREGISTER, KG_IOC_WAIT,
		KG_IOC_KICK, KG_IOC_STATS,
	};
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { { 0, 2000 }, { 0, 2000 } };
	unsigned int seed = harness_seed();
	long i, n = scaled(100000, 4);
	int r;
	union {
		uint64_t q[16];
		uint32_t w[32];
	} buf;
	int fd, fd2;

	NEED_DEV();
	fd = dev_open();
	fd2 = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, dev_map(fd2));
	/* a wait the fuzz happens to make valid ends by a signal */
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	for (i = 0; i < n; i++) {
		unsigned int x = (unsigned int)rand_r(&seed);
		unsigned long cmd;
		void *arg;
		size_t j;

		switch (x % 4) {
		case 0:		/* a real command, size maybe right */
			cmd = cmds[(x >> 2) % 6];
			break;
		case 1:		/* a real command with a bent size or dir */
			cmd = cmds[(x >> 2) % 6] ^ (1ul << ((x >> 5) % 32));
			break;
		case 2:		/* our magic, any number */
			cmd = _IOC((x >> 2) & 3, KG_IOC_MAGIC, (x >> 4) & 0xff,
				   (x >> 12) & 0x3fff);
			break;
		default:
			cmd = (unsigned long)rand_r(&seed) << 1 ^ x;
			break;
		}
		for (j = 0; j < 16; j++)
			buf.q[j] = (uint64_t)rand_r(&seed) % 4 == 0 ?
					   (uint64_t)rand_r(&seed) : 0;
		/* sizes right most of the time, small indices */
		if ((x >> 8) % 3)
			buf.w[0] = _IOC_SIZE(cmd);
		if ((x >> 10) % 2)
			buf.w[1] %= 8;
		if ((x >> 14) % 8 == 0)
			buf.q[2] = 0;	/* a wait's deadline: poll */
		switch ((x >> 17) % 8) {
		case 0:
			arg = NULL;
			break;
		case 1:
			arg = (void *)(uintptr_t)rand_r(&seed);
			break;
		case 2:
			arg = (void *)(-(intptr_t)(x % 8192));
			break;
		default:
			arg = &buf;
			break;
		}
		ioctl((x >> 20) % 2 ? fd : fd2, cmd, arg);
	}
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	/* the device still behaves */
	r = reg(fd2, 700);
	ASSERT_TRUE(r == 0 || r == -EBUSY);
	close(fd);
	close(fd2);
	TH_LOG("%ld calls", n);
}

/* ------------------------------------------------------------------ */
/* libkgreen on the kmod backend                                       */
/* ------------------------------------------------------------------ */

static kg_wg_t mix_wg;
static struct kg_stats mix_stats;

static void mix_blocker(void *p)
{
	(void)p;
	sleep_ns(2 * MS);	/* raw: the module must notice */
	kg_wg_done(&mix_wg);
}

static void mix_spinner(void *p)
{
	uint64_t t = kg_now_ns();

	(void)p;
	while (kg_now_ns() - t < 200000)
		;
	kg_wg_done(&mix_wg);
}

static void mix_main(void *p)
{
	int i;

	(void)p;
	kg_wg_add(&mix_wg, 200);
	for (i = 0; i < 100; i++) {
		kg_go(mix_blocker, NULL);
		kg_go(mix_spinner, NULL);
	}
	kg_wg_wait(&mix_wg);
	kg_sleep(50 * MS);	/* the standbys take the last records */
	CO_CHECK(kg_stats(&mix_stats) == 0, "stats");
	CO_CHECK(!strcmp(kg_backend_name(), "kmod"), "backend %s",
		 kg_backend_name());
}

TEST_TIMEOUT(module_counts_match_the_runtime, 120)
{
	struct kg_config cfg = { .procs = 2, .backend = "kmod" };
	struct kg_ioc_stats s = { 0 };

	NEED_DEV();
	ASSERT_EQ(0, kg_run(mix_main, NULL, &cfg));
	ASSERT_EQ(0, co_failures());
	ASSERT_EQ(1, debugfs_stats(getpid(), &s));
	TH_LOG("runtime: %llu handoffs (%llu at a slice's end); module: %llu "
	       "blocks, %llu handoffs, %llu preempts, %llu taken, %llu idle",
	       (unsigned long long)mix_stats.handoffs,
	       (unsigned long long)mix_stats.preemptions,
	       (unsigned long long)s.blocks, (unsigned long long)s.handoffs,
	       (unsigned long long)s.preempts, (unsigned long long)s.taken,
	       (unsigned long long)s.idle_blocks);
	ASSERT_LT(0ull, s.handoffs);
	/*
	 * Every record the module queued was taken, and counted once: at a
	 * block (handoffs) or at the end of a slice (preempts; the emulated
	 * guest can stretch a 200 us spin past 10 ms).
	 */
	ASSERT_EQ(s.handoffs + s.preempts, s.taken);
	ASSERT_EQ(s.handoffs + s.preempts, mix_stats.handoffs);
	ASSERT_EQ(s.preempts, mix_stats.preemptions);
	ASSERT_EQ(0ull, s.dropped);
	/* the runtime unregistered its workers as they left */
	ASSERT_EQ(0u, s.workers);
}

/* ------------------------------------------------------------------ */
/* Holes an unprivileged user could use                                */
/* ------------------------------------------------------------------ */

/* ptrace's view of the shared state (/proc/PID/mem, what gdb reads). */
TEST(proc_mem_reads_the_shared_state)
{
	struct kg_shared *sh;
	uint32_t n = 0;
	int fd, mem;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	sh = dev_map(fd);
	ASSERT_NE(NULL, sh);
	sh->hdr.nprocs = 9;
	mem = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, mem);
	ASSERT_EQ(4, pread(mem, &n, 4, (off_t)(uintptr_t)&sh->hdr.nprocs));
	ASSERT_EQ(9u, n);
	n = 11;
	ASSERT_EQ(4, pwrite(mem, &n, 4, (off_t)(uintptr_t)&sh->hdr.nprocs));
	ASSERT_EQ(11u, sh->hdr.nprocs);
	/* split the mapping: each piece shows its own part, and a piece
	 * mapped read-only refuses writes */
	ASSERT_EQ(0, mprotect(sh, 4096, PROT_READ));
	sh->procs[KG_MAX_PROCS - 1].owner = 42;
	ASSERT_LT(4096ul, (unsigned long)((char *)&sh->procs[KG_MAX_PROCS - 1] -
					  (char *)sh));
	ASSERT_EQ(4, pread(mem, &n, 4,
			   (off_t)(uintptr_t)&sh->procs[KG_MAX_PROCS - 1].owner));
	ASSERT_EQ(42u, n);
	ASSERT_EQ(-1, pwrite(mem, &n, 4, (off_t)(uintptr_t)&sh->hdr.nprocs));
	ASSERT_EQ(11u, sh->hdr.nprocs);
	close(mem);
	munmap(sh, sizeof(*sh));
	close(fd);
}

#define TRACEFS "/sys/kernel/tracing"

static int write_file(const char *path, const char *text, int flags)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags);
	ssize_t w;

	if (fd < 0)
		return -errno;
	w = write(fd, text, strlen(text));
	close(fd);
	return w == (ssize_t)strlen(text) ? 0 : -EIO;
}

/* Add (or remove) kprobe event kgreen_test/SYM on kernel function SYM. */
static int kprobe_event(const char *sym, bool add)
{
	char buf[256];

	if (add) {
		snprintf(buf, sizeof(buf), "p:kgreen_test/%s %s\n", sym, sym);
		if (write_file(TRACEFS "/kprobe_events", buf, O_APPEND))
			return -1;
		snprintf(buf, sizeof(buf),
			 TRACEFS "/events/kgreen_test/%s/enable", sym);
		return write_file(buf, "1", 0);
	}
	snprintf(buf, sizeof(buf), TRACEFS "/events/kgreen_test/%s/enable",
		 sym);
	write_file(buf, "0", 0);
	snprintf(buf, sizeof(buf), "-:kgreen_test/%s\n", sym);
	return write_file(TRACEFS "/kprobe_events", buf, O_APPEND);
}

/* Hits of kprobe event SYM so far (kprobe_profile), or -1. */
static long kprobe_hits(const char *sym)
{
	FILE *f = fopen(TRACEFS "/kprobe_profile", "r");
	char line[256], name[128];
	unsigned long hits, missed;
	long n = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%127s %lu %lu", name, &hits, &missed) == 3 &&
		    (!strcmp(name, sym) || (strchr(name, '/') &&
					     !strcmp(strchr(name, '/') + 1, sym))))
			n = (long)hits;
	fclose(f);
	return n;
}

/*
 * The preempt notifiers' static key: turning it on or off patches kernel
 * text on every CPU. A loop of open, register (by a thread that exits),
 * close, each context freed before the next, must not turn it off and on
 * again each time: the module takes its count once and keeps it until
 * unloaded. Counted with kprobes on preempt_notifier_inc and _dec.
 */
TEST_TIMEOUT(static_key_not_toggled_by_a_loop, 180)
{
	long inc0, dec0, inc, dec;
	int i, fd;

	NEED_DEV();
	if (getuid() || access(TRACEFS "/kprobe_events", W_OK))
		SKIP(return, "no kprobe events here (root and tracefs needed)");
	ASSERT_EQ(0, module_refs_settle());
	ASSERT_EQ(0, kprobe_event("preempt_notifier_inc", true));
	ASSERT_EQ(0, kprobe_event("preempt_notifier_dec", true));
	inc0 = kprobe_hits("preempt_notifier_inc");
	dec0 = kprobe_hits("preempt_notifier_dec");
	for (i = 0; i < 40; i++) {
		pthread_t t;

		fd = dev_open();
		ASSERT_LE(0, fd);
		ASSERT_EQ(0, pthread_create(&t, NULL, register_and_exit, &fd));
		pthread_join(t, NULL);
		close(fd);
		/* the context is reaped: with a count per context, the key
		 * would go to zero here */
		ASSERT_EQ(0, module_refs_settle());
	}
	inc = kprobe_hits("preempt_notifier_inc") - inc0;
	dec = kprobe_hits("preempt_notifier_dec") - dec0;
	kprobe_event("preempt_notifier_inc", false);
	kprobe_event("preempt_notifier_dec", false);
	TH_LOG("40 contexts: preempt_notifier_inc %ld times, _dec %ld times",
	       inc, dec);
	ASSERT_LE(0, inc0);
	ASSERT_LE(0, dec0);
	ASSERT_GE(1, inc);
	ASSERT_EQ(0, dec);
}

#define MAXCTX "/sys/module/kgreen/parameters/max_user_contexts"

static void limit_main(void *arg)
{
	(void)arg;
}

/*
 * Child of per_user_context_limit, as uid 65534: opens up to the limit,
 * then is refused with EMFILE; a closed context whose thread still lives
 * counts; libkgreen's kmod backend says why it is refused. sync: a pipe
 * pair to let the parent (root, another user) open its own meanwhile.
 */
static int limit_child(int limit, int to_parent, int from_parent)
{
	struct live l = { 0 };
	int fds[64], i, rc = 0;
	char buf[512] = "";
	pthread_t t;

	if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
		return 20;
	for (i = 0; i < limit; i++)
		if ((fds[i] = dev_open()) < 0)
			return 21;
	if (dev_open() != -1 || errno != EMFILE)
		return 22;
	/* the parent, another user, is not limited by our contexts */
	if (write(to_parent, "x", 1) != 1 || read(from_parent, buf, 1) != 1)
		return 23;
	/* a thread registered in a context whose file is closed */
	l.fd = fds[0];
	pthread_create(&t, NULL, register_and_live, &l);
	while (!atomic_load(&l.registered))
		sleep_ns(MS);
	close(fds[0]);
	sleep_ns(20 * MS);
	if (dev_open() != -1 || errno != EMFILE)
		rc = 24;
	/* libkgreen names the limit */
	setenv("KGREEN_BACKEND", "kmod", 1);	/* this child's only */
	if (run_kg_captured(limit_main, NULL, 1, buf, sizeof(buf), NULL) !=
		    -ENODEV &&
	    !rc)
		rc = 25;
	if (!strstr(buf, "max_user_contexts"))
		rc = rc ? rc : 26;
	/* the thread leaves, its context is freed: room again */
	atomic_store(&l.stop, 1);
	pthread_join(t, NULL);
	for (i = 0; i < 200; i++) {
		int fd = dev_open();

		if (fd >= 0) {
			close(fd);
			break;
		}
		sleep_ns(10 * MS);
	}
	if (i == 200 && !rc)
		rc = 27;
	return rc;
}

TEST_TIMEOUT(per_user_context_limit, 120)
{
	char old[32] = "";
	int up[2], down[2], fds[4], i, st, n;
	pid_t pid;
	FILE *f;

	NEED_DEV();
	f = fopen(MAXCTX, "r");
	ASSERT_NE(NULL, f) TH_LOG(MAXCTX " is missing");
	ASSERT_NE(NULL, fgets(old, sizeof(old), f));
	fclose(f);
	ASSERT_EQ(128, atoi(old));	/* the default */
	if (getuid())
		SKIP(return, "root is needed to set the limit and change user");
	ASSERT_EQ(0, module_refs_settle());
	ASSERT_EQ(0, write_file(MAXCTX, "4", 0));
	ASSERT_EQ(0, pipe(up));
	ASSERT_EQ(0, pipe(down));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(limit_child(4, up[1], down[0]));
	n = 0;
	if (read(up[0], &st, 1) == 1) {
		for (i = 0; i < 4; i++)
			n += (fds[i] = dev_open()) >= 0;
		for (i = 0; i < 4; i++)
			if (fds[i] >= 0)
				close(fds[i]);
	}
	ASSERT_EQ(1, write(down[1], "x", 1));
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	write_file(MAXCTX, old, 0);
	ASSERT_EQ(4, n) TH_LOG("root was refused: the limit is not per user");
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(0, WEXITSTATUS(st)) TH_LOG("step %d of the child failed",
					     WEXITSTATUS(st));
	ASSERT_EQ(0, module_refs_settle());
}

/*
 * No record lost at any queue depth. A forging process fills the queue
 * (one record per proc, KG_MAX_PROCS of them); a spare takes one, and its
 * copy to userspace stalls (a userfaultfd write-protect fault) while one
 * more detach is forged, then fails (the page is gone): the record must go
 * back to the queue, so the refused place must have been kept for it.
 * Every record queued is then taken: handoffs == taken.
 */
struct depth {
	int fd;
	struct kg_shared *sh;
	_Atomic unsigned int want, done, detached;
	_Atomic int stop;
	struct kg_ioc_wait *arg;
	_Atomic int wait_err, wait_done;
};

/* Worker 1: forge a detach of proc done % KG_MAX_PROCS, want times. */
static void *depth_blocker(void *p)
{
	struct depth *d = p;
	struct kg_worker_slot *ws = &d->sh->workers[1];
	uint64_t b0;
	int tries;

	if (reg(d->fd, 1))
		return NULL;
	while (!atomic_load(&d->stop)) {
		unsigned int i = atomic_load(&d->done);
		uint32_t pr = i % KG_MAX_PROCS;

		if (i == atomic_load(&d->want)) {
			sleep_ns(MS);	/* in_sched: never a detach */
			continue;
		}
		ws->proc = pr;
		__atomic_store_n(&d->sh->procs[pr].owner, 1, __ATOMIC_SEQ_CST);
		ws->in_sched = 0;
		/* one block the module sees (a short sleep may not block) */
		b0 = ws->blocks;
		for (tries = 0; ws->blocks == b0 && tries < 1000; tries++)
			sleep_ns(100000);
		ws->in_sched = 1;
		ws->proc = KG_PROC_NONE;
		if (__atomic_load_n(&d->sh->procs[pr].owner,
				    __ATOMIC_SEQ_CST) == KG_OWNER_DETACHED)
			atomic_fetch_add(&d->detached, 1);
		__atomic_store_n(&d->sh->procs[pr].owner, KG_OWNER_DETACHED,
				 __ATOMIC_SEQ_CST);
		atomic_fetch_add(&d->done, 1);
	}
	unreg(d->fd, 1);
	return NULL;
}

/* Worker 2: a spare whose copy of the record stalls, then fails. */
static void *depth_waiter(void *p)
{
	struct depth *d = p;

	if (reg(d->fd, 2)) {
		atomic_store(&d->wait_err, -999);
	} else {
		atomic_store(&d->wait_err, ioc(d->fd, KG_IOC_WAIT, d->arg));
		unreg(d->fd, 2);
	}
	atomic_store(&d->wait_done, 1);
	return NULL;
}

static void depth_forge(struct depth *d, unsigned int n)
{
	unsigned int want = atomic_load(&d->want) + n;
	int i;

	atomic_store(&d->want, want);
	for (i = 0; i < 30000 && atomic_load(&d->done) < want; i++)
		sleep_ns(MS);
}

TEST_TIMEOUT(no_record_lost_at_queue_depth, 180)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register ureg = { 0 };
	struct uffdio_writeprotect wp = { 0 };
	struct uffd_msg msg;
	struct depth d = { 0 };
	struct kg_ioc_stats s;
	struct pollfd pfd;
	pthread_t tb, tw;
	unsigned int i, forged;
	int uffd, n = 0;
	void *page;

	NEED_DEV();
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		SKIP(return, "no userfaultfd here: %s", strerror(errno));
	if (ioctl(uffd, UFFDIO_API, &api) ||
	    !(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
		close(uffd);
		SKIP(return, "userfaultfd has no write-protect mode here");
	}
	d.fd = dev_open();
	ASSERT_LE(0, d.fd);
	d.sh = dev_map(d.fd);
	ASSERT_NE(NULL, d.sh);
	d.sh->hdr.version = KG_ABI_VERSION;
	d.sh->hdr.nprocs = KG_MAX_PROCS;
	for (i = 0; i < KG_MAX_PROCS; i++) {
		d.sh->procs[i].owner = KG_OWNER_DETACHED;
		d.sh->procs[i].runq_tail = 1;	/* work queued everywhere */
	}
	for (i = 0; i < 3; i++) {
		d.sh->workers[i].in_sched = 1;
		d.sh->workers[i].proc = KG_PROC_NONE;
	}
	ASSERT_EQ(0, reg(d.fd, 0));	/* this thread drains */
	ASSERT_EQ(0, pthread_create(&tb, NULL, depth_blocker, &d));

	/* a full queue: one record per proc */
	depth_forge(&d, KG_MAX_PROCS);
	ASSERT_EQ((unsigned int)KG_MAX_PROCS, atomic_load(&d.done));
	ASSERT_EQ((unsigned int)KG_MAX_PROCS, atomic_load(&d.detached));
	ASSERT_EQ((unsigned int)KG_MAX_PROCS, d.sh->hdr.kev_pending);

	/* the spare's argument, in a write-protected page */
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, page);
	d.arg = page;
	*d.arg = (struct kg_ioc_wait){ .size = sizeof(*d.arg), .worker = 2,
				       .deadline_ns = kg_now_ns() + 5000 * MS };
	ureg.range.start = (uintptr_t)page;
	ureg.range.len = 4096;
	ureg.mode = UFFDIO_REGISTER_MODE_WP;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_REGISTER, &ureg)) TH_LOG("%s",
								  strerror(errno));
	wp.range = ureg.range;
	wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_WRITEPROTECT, &wp));
	ASSERT_EQ(0, pthread_create(&tw, NULL, depth_waiter, &d));

	/* the spare took a record and stalls writing it out */
	pfd = (struct pollfd){ .fd = uffd, .events = POLLIN };
	ASSERT_EQ(1, poll(&pfd, 1, 10000)) TH_LOG("the copy never faulted");
	ASSERT_EQ((ssize_t)sizeof(msg), read(uffd, &msg, sizeof(msg)));
	ASSERT_EQ(UFFD_EVENT_PAGEFAULT, msg.event);
	ASSERT_EQ((unsigned int)KG_MAX_PROCS - 1, d.sh->hdr.kev_pending);

	/* one more detach now: its place is the record in flight's */
	forged = atomic_load(&d.detached);
	depth_forge(&d, 1);
	forged = atomic_load(&d.detached) - forged;

	/* the copy fails: the page is gone */
	ASSERT_EQ(0, munmap(page, 4096));
	close(uffd);
	pthread_join(tw, NULL);
	ASSERT_EQ(-EFAULT, atomic_load(&d.wait_err));

	/* drain: every record queued comes out */
	while (wait_ev(d.fd, 0, 0, NULL) == 0)
		n++;
	atomic_store(&d.stop, 1);
	pthread_join(tb, NULL);
	ASSERT_EQ(0, stats(d.fd, &s));
	TH_LOG("forged %u detaches, %u taken; the one beside the record in "
	       "flight: %s; module: %llu handoffs, %llu taken, %llu refused "
	       "(queue full)", KG_MAX_PROCS + 1, n,
	       forged ? "detached" : "refused",
	       (unsigned long long)s.handoffs, (unsigned long long)s.taken,
	       (unsigned long long)s.dropped);
	ASSERT_EQ(s.handoffs, s.taken);
	ASSERT_EQ((unsigned long long)n, s.taken);
	ASSERT_EQ(0u, forged);
	ASSERT_EQ(0u, d.sh->hdr.kev_pending);
	unreg(d.fd, 0);
	munmap(d.sh, sizeof(*d.sh));
	close(d.fd);
}

/*
 * A worker that sleeps right after its turn on a CPU it shares with a
 * busy thread is, on kernels with delayed dequeue (EEVDF, 6.12 and
 * later), often left queued as it sleeps: each such sleep is still a
 * block the module must see.
 */
struct dq {
	int fd;
	struct kg_shared *sh;
	_Atomic int stop;
	int sleeps, reg_err;
	long slept;		/* voluntary switches: sleeps that blocked */
	uint64_t blocks;	/* the module's count over the same span */
};

static void pin_cpu0(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(0, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void *dq_hog(void *p)
{
	struct dq *d = p;

	pin_cpu0();
	while (!atomic_load(&d->stop))
		;
	return NULL;
}

static void *dq_sleeper(void *p)
{
	struct dq *d = p;
	int i;

	struct rusage r0, r1;
	uint64_t b0;

	pin_cpu0();
	d->reg_err = reg(d->fd, 1);
	/* under emulation a short sleep may not block (its timer expired
	 * first): the thread's voluntary switches say which did */
	b0 = d->sh->workers[1].blocks;
	getrusage(RUSAGE_THREAD, &r0);
	for (i = 0; i < 60 && !d->reg_err; i++) {
		uint64_t t = kg_now_ns();

		while (kg_now_ns() - t < 3 * MS)	/* a busy turn */
			;
		sleep_ns(MS);
		d->sleeps++;
	}
	getrusage(RUSAGE_THREAD, &r1);
	d->blocks = d->sh->workers[1].blocks - b0;
	d->slept = r1.ru_nvcsw - r0.ru_nvcsw;
	if (!d->reg_err)
		unreg(d->fd, 1);
	return NULL;
}

TEST_TIMEOUT(sleep_after_a_busy_turn_is_a_block, 120)
{
	struct dq d = { 0 };
	pthread_t th, ts;

	NEED_DEV();
	d.fd = dev_open();
	ASSERT_LE(0, d.fd);
	d.sh = dev_map(d.fd);
	ASSERT_NE(NULL, d.sh);
	d.sh->workers[1].in_sched = 1;	/* count blocks, detach nothing */
	d.sh->workers[1].proc = KG_PROC_NONE;
	ASSERT_EQ(0, pthread_create(&th, NULL, dq_hog, &d));
	ASSERT_EQ(0, pthread_create(&ts, NULL, dq_sleeper, &d));
	pthread_join(ts, NULL);
	atomic_store(&d.stop, 1);
	pthread_join(th, NULL);
	ASSERT_EQ(0, d.reg_err);
	TH_LOG("%d sleeps after a busy turn, %ld blocked (voluntary "
	       "switches), %llu blocks seen", d.sleeps, d.slept,
	       (unsigned long long)d.blocks);
	ASSERT_LE(d.sleeps / 2, d.slept);
	ASSERT_LE((uint64_t)d.slept, d.blocks);
	munmap(d.sh, sizeof(*d.sh));
	close(d.fd);
}

/* ------------------------------------------------------------------ */
/* The module's own life                                               */
/* ------------------------------------------------------------------ */

TEST(unload_refused_while_in_use)
{
	int fd;

	NEED_DEV();
	fd = dev_open();
	ASSERT_LE(0, fd);
	ASSERT_NE(0, syscall(SYS_delete_module, "kgreen", O_NONBLOCK));
	ASSERT_TRUE(errno == EWOULDBLOCK || errno == EBUSY);
	close(fd);
}

/* Last: KG_KMOD_KO names the module file to load again (tools/vmcheck). */
TEST_TIMEOUT(load_unload_100, 240)
{
	const char *ko = getenv("KG_KMOD_KO");
	int i, fd, ko_fd;

	NEED_DEV();
	if (!ko)
		SKIP(return, "KG_KMOD_KO does not name kgreen.ko");
	ko_fd = open(ko, O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, ko_fd);
	for (i = 0; i < 100; i++) {
		/* the last context is reaped asynchronously */
		ASSERT_EQ(0, module_refs_settle());
		ASSERT_EQ(0, syscall(SYS_delete_module, "kgreen", O_NONBLOCK))
			TH_LOG("unload %d: %s", i, strerror(errno));
		ASSERT_NE(0, access(DEV, F_OK));
		ASSERT_EQ(0, syscall(SYS_finit_module, ko_fd, "", 0))
			TH_LOG("load %d: %s", i, strerror(errno));
		fd = dev_open();
		ASSERT_LE(0, fd);
		if (i % 2) {
			ASSERT_EQ(0, reg(fd, (unsigned int)i));
			ASSERT_EQ(0, unreg(fd, (unsigned int)i));
		} else {	/* a thread that exits registered */
			pthread_t t;

			ASSERT_EQ(0, pthread_create(&t, NULL,
						    register_and_exit, &fd));
			pthread_join(t, NULL);
		}
		close(fd);
	}
	close(ko_fd);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--exec-check"))
		return exec_check(atoi(argv[2]));
	/* the whole suite needs the module: one skip line for prove */
	if (argc == 1 && access(DEV, R_OK | W_OK)) {
		printf("1..0 # SKIP " DEV " is not here (the module is not "
		       "loaded; make vmcheck runs this suite in a VM)\n");
		return 0;
	}
	return test_harness_run(argc, argv);
}
