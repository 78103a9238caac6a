// SPDX-License-Identifier: MIT
/*
 * kmod.c - userspace half of the kernel module backend (kmod/kgreen.c,
 * Documentation/kmod.md): open /dev/kgreen, map the shared state the
 * module owns, register worker threads, and let standbys sleep in the
 * module until it hands them a proc.
 *
 * Opened once per process, at the first kg_run that wants it, and kept
 * open until the process exits (the module unregisters what is left when
 * the file is closed). A forked child opens its own: the parent's mapping
 * is not inherited and the module refuses the parent's file to the child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"

static struct {
	pthread_mutex_t lock;		/* opening */
	pid_t pid;			/* the process it was opened for */
	int err;			/* 0 open; else why[] says why not */
	char why[200];
	int fd;
	struct kg_shared *shared;	/* the module's pages */
	size_t shared_len;
} K = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1 };

static const struct kg_evops kmod_ops;

/* The device; KGREEN_KMOD_DEV names another path (tests). */
static const char *dev_path(void)
{
	const char *p = getenv("KGREEN_KMOD_DEV");

	return p && *p ? p : "/dev/" KG_DEV_NAME;
}

/* fmt has two %s: the device's path, then arg. */
static int fail(int err, const char *fmt, const char *arg)
{
	snprintf(K.why, sizeof(K.why), fmt, dev_path(), arg);
	if (K.shared)
		munmap(K.shared, K.shared_len);
	if (K.fd >= 0)
		kg_sys_close(K.fd);
	K.shared = NULL;
	K.fd = -1;
	K.err = err;
	return err;
}

/* The calling thread becomes worker slot index, or stops being it. */
static int prove_reg(uint32_t index, bool add)
{
	struct kg_ioc_worker a = { .size = sizeof(a), .worker = index };

	return ioctl(K.fd, add ? KG_IOC_REGISTER : KG_IOC_UNREGISTER, &a) ?
		       -errno : 0;
}

/*
 * Whether this process is out of file descriptors (EMFILE from open is
 * then its own limit, not the module's per-user one).
 */
static bool fd_limit_reached(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return errno == EMFILE;
	kg_sys_close(fd);
	return false;
}

static int kmod_load(void)
{
	struct kg_ioc_info info = { .size = sizeof(info) };
	char buf[80], why[sizeof(K.why)];	/* fail() formats into K.why */
	void *p;

	K.fd = open(dev_path(), O_RDWR | O_CLOEXEC);
	if (K.fd < 0) {
		if (errno == ENOENT)	/* the usual case: say it plainly */
			return fail(-ENOENT, "no %s: the kgreen module is not "
				    "loaded (modprobe kgreen)%s", "");
		if (errno == EACCES || errno == EPERM)
			return fail(-ENODEV, "no permission to open %s%s", "");
		if (errno == EMFILE && !fd_limit_reached())
			return fail(-ENODEV, "%s refused this user another "
				    "context: it holds max_user_contexts "
				    "already (/sys/module/kgreen/parameters/"
				    "max_user_contexts)%s", "");
		return fail(-ENODEV, "cannot open %s: %s", strerror(errno));
	}
	if (ioctl(K.fd, KG_IOC_INFO, &info))
		return fail(-ENODEV, "%s does not answer KG_IOC_INFO: %s",
			    strerror(errno));
	if (info.abi_version != KG_ABI_VERSION) {
		snprintf(buf, sizeof(buf), "%u, libkgreen %u",
			 info.abi_version, KG_ABI_VERSION);
		return fail(-ENODEV, "%s speaks ABI version %s", buf);
	}
	if (info.shared_size < sizeof(struct kg_shared))
		return fail(-ENODEV, "%s offers too small a shared state%s",
			    "");
	K.shared_len = info.shared_size;
	p = mmap(NULL, K.shared_len, PROT_READ | PROT_WRITE, MAP_SHARED, K.fd,
		 0);
	if (p == MAP_FAILED)
		return fail(-ENODEV, "cannot map %s: %s", strerror(errno));
	K.shared = p;
	if (kg_backend_prove(K.shared, prove_reg, why, sizeof(why)))
		return fail(-ENODEV, "%s: %s", why);
	K.err = 0;
	K.why[0] = 0;
	return 0;
}

int kg_kmod_open(struct kg_shared **shared, const struct kg_evops **ops,
		 char *why, size_t whylen)
{
	int err;

	pthread_mutex_lock(&K.lock);
	if (K.pid != getpid()) {
		/*
		 * First use, or a forked child: the parent's mapping was not
		 * inherited (nothing to unmap) and its file serves only the
		 * parent; drop our reference to it.
		 */
		if (K.fd >= 0)
			kg_sys_close(K.fd);
		K.fd = -1;
		K.shared = NULL;
		K.pid = getpid();
		kmod_load();
	}
	err = K.err;
	if (err) {
		snprintf(why, whylen, "%s", K.why);
	} else {
		*shared = K.shared;
		*ops = &kmod_ops;
	}
	pthread_mutex_unlock(&K.lock);
	return err;
}

static int worker_ioctl(struct kg_worker *w, unsigned long cmd)
{
	struct kg_ioc_worker a = { .size = sizeof(a), .worker = w->index };

	return ioctl(K.fd, cmd, &a) ? -errno : 0;
}

/*
 * Per worker (kg_worker.be): a record KG_IOC_WAIT returned to it, not yet
 * handled (it is the worker's own: the module handed it to this waiter).
 */
struct kmod_waiter {
	struct kg_handoff_event ev;
	bool full;
};

/* w's waiter (kg_worker.be), made at its registration; 0 or -ENOMEM. */
static int waiter_make(struct kg_worker *w)
{
	if (!w->be)
		w->be = calloc(1, sizeof(struct kmod_waiter));
	return w->be ? 0 : -ENOMEM;
}

static int kmod_worker_add(struct kg_worker *w)
{
	int err = waiter_make(w);

	if (err)
		return err;
	((struct kmod_waiter *)w->be)->full = false;
	return worker_ioctl(w, KG_IOC_REGISTER);
}

static void kmod_worker_free(struct kg_worker *w)
{
	free(w->be);
	w->be = NULL;
}

static void kmod_worker_del(struct kg_worker *w)
{
	int err = worker_ioctl(w, KG_IOC_UNREGISTER);

	if (err)
		kg_debug("worker %u: KG_IOC_UNREGISTER: %s", w->index,
			 strerror(-err));
}

/* Take one record, sleeping until deadline (0: not at all); 0 or -errno. */
static int take(struct kg_worker *w, uint64_t deadline,
		struct kg_handoff_event *ev)
{
	struct kg_ioc_wait a = {
		.size = sizeof(a),
		.worker = w->index,
		.deadline_ns = deadline,
	};

	if (ioctl(K.fd, KG_IOC_WAIT, &a))
		return -errno;
	*ev = a.ev;
	return 0;
}

static int kmod_events(struct kg_worker *w, kg_event_fn fn, void *arg)
{
	struct kmod_waiter *kw = w->be;
	struct kg_handoff_event ev;
	int n = 0;

	if (kw->full) {
		kw->full = false;
		fn(arg, &kw->ev);
		n++;
	}
	/* a poll (deadline 0) leaves a pending kick for the next wait */
	while (__atomic_load_n(&K.shared->hdr.kev_pending, __ATOMIC_RELAXED) &&
	       !take(w, 0, &ev)) {
		fn(arg, &ev);
		n++;
	}
	return n;
}

static int kmod_waiter_open(struct kg_worker *w)
{
	return waiter_make(w);	/* made already: w is registered */
}

/*
 * Sleep in the module. A record it returns is w's to handle first: it is
 * kept in w->be for the events call that follows (kg_park_worker also
 * passes it on if w leaves the standby role instead: kmod_held).
 */
static void kmod_wait(struct kg_worker *w, uint64_t deadline)
{
	struct kmod_waiter *kw = w->be;

	if (kw->full)
		return;
	if (!deadline)
		deadline = 1;	/* 0 means "do not sleep" to the module */
	if (!take(w, deadline, &kw->ev))
		kw->full = true;
	/* -EAGAIN kicked, -ETIMEDOUT, -EINTR: the caller looks again */
}

static void kmod_kick(struct kg_worker *w)
{
	struct kg_ioc_kick a = { .size = sizeof(a), .worker = w->index };

	if (ioctl(K.fd, KG_IOC_KICK, &a))
		kg_debug("worker %u: KG_IOC_KICK: %s", w->index,
			 strerror(errno));
}

static bool kmod_pending(void)
{
	/* a hint the module keeps current under its event lock */
	return __atomic_load_n(&K.shared->hdr.kev_pending, __ATOMIC_RELAXED);
}

static bool kmod_held(struct kg_worker *w)
{
	return ((struct kmod_waiter *)w->be)->full;
}

static const struct kg_evops kmod_ops = {
	.worker_add = kmod_worker_add,
	.worker_del = kmod_worker_del,
	.worker_free = kmod_worker_free,
	.held = kmod_held,
	.events = kmod_events,
	.waiter_open = kmod_waiter_open,
	.wait = kmod_wait,
	.kick = kmod_kick,
	.pending = kmod_pending,
};
