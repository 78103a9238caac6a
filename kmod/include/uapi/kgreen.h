/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * kgreen shared-state ABI: the one header the kernel module, the BPF
 * programs and libkgreen all include.
 *
 * The handoff protocol (Documentation/architecture.md) needs one slot per
 * worker thread and one per proc in memory that both the kernel side and
 * userspace see: struct kg_shared, the value of the BPF backend's mmapable
 * array map kg_shared (one element), and the pages the kernel module lets
 * userspace mmap. Every field says who writes it and with what ordering.
 * Fields are __u32/__u64 only, padded explicitly, so the layout is the same
 * for a 64-bit kernel, BPF and userspace.
 */
#ifndef _UAPI_LINUX_KGREEN_H
#define _UAPI_LINUX_KGREEN_H

/* BPF programs get the types from vmlinux.h */
#ifndef __VMLINUX_H__
#include <linux/types.h>
#include <linux/ioctl.h>
#endif

#define KG_ABI_VERSION		3

#define KG_MAX_WORKERS		1024
#define KG_MAX_PROCS		1024

/* kg_worker_slot.proc and kg_proc_slot.owner when nothing is held. */
#define KG_PROC_NONE		0xffffffffu
#define KG_OWNER_DETACHED	0xffffffffu
/*
 * sysmon only (userspace): kg_worker_slot.proc | KG_PROC_ASK while the
 * monitor asks to take the worker's proc at the end of a time slice
 * (userlib/sysmon.c). Every value with this bit set is out of range for
 * the detach rule, so a kernel side never acts on one.
 */
#define KG_PROC_ASK		0x80000000u

/* kg_worker_slot.switches: the running coroutine must keep its proc */
#define KG_SWITCHES_NOPREEMPT	1ull

/* kg_worker_slot.state */
#define KG_WORKER_RUNNING	0
#define KG_WORKER_BLOCKED	1

/*
 * One per worker thread, one cache line: in_sched is stored at every
 * coroutine switch, so no two workers' slots may share a line.
 */
struct kg_worker_slot {
	/*
	 * 1 while the worker runs scheduler code holding a proc, 0 while it
	 * runs a coroutine. Written only by the worker itself, with plain
	 * stores and a compiler barrier; read by the kernel side on the same
	 * CPU at the worker's context switch (program order suffices, as for
	 * rseq).
	 */
	__u32 in_sched;
	/*
	 * Index of the proc the worker holds, or KG_PROC_NONE. Written by the
	 * worker when it acquires/releases a proc, and by the kernel side
	 * (to KG_PROC_NONE) after it detached the proc while the worker was
	 * blocked. The worker reads it at every scheduler entry.
	 */
	__u32 proc;
	__u32 state;		/* KG_WORKER_*, written by the kernel side */
	__u32 flags;		/* must be 0 */
	__u64 blocks;		/* kernel side: blocking switches seen */
	__u64 blocked_at_ns;	/* kernel side: when the current block began */
	/*
	 * Time slicing (kg_slice_due). switches: twice the coroutine switches
	 * on this worker, plus 1 while the running coroutine asked never to
	 * lose its proc to the slice (KG_SWITCHES_NOPREEMPT); written only by
	 * the worker, at each switch (relaxed stores). A value that stays the
	 * same for a slice means one coroutine has run that long.
	 */
	__u64 switches;
	__u32 __pad1;
	/* procs taken from this worker at the end of a slice; written by the
	 * side that takes them (kernel side, or sysmon), read by the worker */
	__u32 preempts;
	/* kernel side's own: switches last seen, and since when (ns) */
	__u64 slice_switches;
	__u64 slice_since;
};

/*
 * One per proc, two cache lines. The proc's run queue indices live here,
 * so the kernel side sees whether the proc has work without userspace
 * storing anything extra on its fast path: work is queued when
 * runq_tail != runq_head, runnext != 0 or timers != 0.
 */
struct kg_proc_slot {
	/*
	 * Ring head: advanced by compare-and-swap by the owner and by
	 * thieves (userspace; the only proc's owner, which has no thief,
	 * stores it). Alone in its line: thieves write it.
	 */
	__u32 runq_head;
	__u32 __pad0[15];
	/* Ring tail: written only by the owner (release store). */
	__u32 runq_tail;
	/*
	 * Worker index owning the proc, or KG_OWNER_DETACHED. Changed only by
	 * compare-and-swap (userspace and kernel side).
	 */
	__u32 owner;
	/* Opaque to the kernel; nonzero while a coroutine waits in runnext. */
	__u64 runnext;
	/* Timers armed on the proc; written under its timer heap's lock. */
	__u32 timers;
	__u32 flags;		/* must be 0 */
	__u64 __pad1[5];
};

struct kg_shared_hdr {
	__u32 version;		/* KG_ABI_VERSION, written by userspace */
	__u32 nprocs;		/* procs in use, written by userspace */
	/* Coroutines on the global run queue (userspace, under its lock). */
	__u32 gq_len;
	__u32 flags;		/* must be 0 */
	/*
	 * kmod backend only: handoff records queued in the module and not
	 * yet taken (KG_IOC_WAIT), written by the module under its event
	 * lock. A hint for a polling standby; 0 with the other backends.
	 */
	__u32 kev_pending;
	/*
	 * Time slicing, written by userspace before any worker registers:
	 * slice_hogs is how many workers may run a coroutine off their proc
	 * after a slice at once (each costs a thread until its coroutine
	 * makes a kgreen call); slice_ns the slice, 0 = off.
	 */
	__u32 slice_hogs;
	__u64 slice_ns;
	/* Workers out after a slice now: +1 by the side that takes a proc
	 * (compare-and-swap, never past slice_hogs), -1 by userspace when
	 * the worker comes back. */
	__u32 slice_out;
	__u32 __pad1;
	__u64 __pad[3];
};

/* The whole shared state; 64-byte aligned in every mapping. */
struct kg_shared {
	struct kg_shared_hdr hdr;
	struct kg_worker_slot workers[KG_MAX_WORKERS];
	struct kg_proc_slot procs[KG_MAX_PROCS];
};

/*
 * Whether proc slot ps of sh has work the kernel side should hand off:
 * coroutines queued locally or globally, or timers armed. The same test
 * for every backend; racy reads by design (a stale answer costs one
 * needless or one missed handoff, never correctness).
 */
/* A single load of x; userspace may define it as a relaxed atomic load. */
#ifndef KG_LOAD_ONCE
#define KG_LOAD_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#endif

static inline int kg_proc_has_work(const struct kg_shared *sh,
				   const struct kg_proc_slot *ps)
{
	return KG_LOAD_ONCE(ps->runq_tail) != KG_LOAD_ONCE(ps->runq_head) ||
	       KG_LOAD_ONCE(ps->runnext) || KG_LOAD_ONCE(ps->timers) ||
	       KG_LOAD_ONCE(sh->hdr.gq_len);
}

/*
 * The detach rule, the one test every backend applies to a worker that
 * blocks: detach its proc when the worker runs a coroutine (in_sched 0),
 * holds a proc in range (proc < hdr.nprocs and < KG_MAX_PROCS) and that
 * proc has work (kg_proc_has_work). A proc with nothing queued stays with
 * its blocked worker: moving it would only wake a spare for nothing.
 *
 * Why the reads are race-free: the kernel side applies the rule at the
 * worker's own blocking context switch, on the CPU the worker ran on. The
 * worker wrote in_sched and proc itself, on that CPU, before the switch,
 * and nothing else writes them while it runs (the kernel side writes proc
 * only at that same switch, after a YES): program order makes them
 * current, with no barrier and no atomic instruction, as for rseq. A
 * caller on another CPU (sysmon) needs its own reason that they hold
 * still. hdr.nprocs is written before any worker runs; the work hint is a
 * racy read by design (kg_proc_has_work). Userspace may write anything
 * here, so each index is range-checked before it is used; the one that
 * acts on a YES still takes the proc by compare-and-swap on its owner.
 *
 * *proc is written only when the answer is not KG_DETACH_NONE.
 */
/* What the kernel side (or sysmon) may do with a worker that blocks: */
#define KG_DETACH_NONE 0 /* nothing: in scheduler code, or holds no valid proc */
#define KG_DETACH_IDLE 1 /* it holds *proc, which has no work: leave it (an idle block) */
#define KG_DETACH_YES  2 /* detach *proc: it holds it and the proc has work */

static inline int kg_detach_rule(const struct kg_shared *sh,
				 const struct kg_worker_slot *ws, __u32 *proc)
{
	__u32 p;

	if (KG_LOAD_ONCE(ws->in_sched))
		return KG_DETACH_NONE;
	p = KG_LOAD_ONCE(ws->proc);
	/* each test alone, so that the BPF verifier sees p < KG_MAX_PROCS */
	if (p >= KG_MAX_PROCS)
		return KG_DETACH_NONE;
	if (p >= KG_LOAD_ONCE(sh->hdr.nprocs))
		return KG_DETACH_NONE;
	*proc = p;
	return kg_proc_has_work(sh, &sh->procs[p]) ? KG_DETACH_YES :
						     KG_DETACH_IDLE;
}

/*
 * Time slicing: whether the side that watches worker slot ws should take
 * its proc because one coroutine has run on it for a slice. It keeps its
 * own memory of the slot in *seen (switches last seen) and *since (when,
 * ns; a caller may set it to now to look again only a slice later); now
 * in ns. A YES still has to pass the detach rule (the proc has work, the
 * worker runs a coroutine) and take a place in hdr.slice_out
 * (kg_slice_enter). The same test for every backend: the BPF program in
 * the timer interrupt (its memory in ws->slice_*), kgreen.ko from a timer
 * and sysmon from its loop (their memory their own).
 */
static inline int kg_slice_due(const struct kg_shared *sh,
			       const struct kg_worker_slot *ws, __u64 *seen,
			       __u64 *since, __u64 now)
{
	__u64 slice = KG_LOAD_ONCE(sh->hdr.slice_ns);
	__u64 sw = KG_LOAD_ONCE(ws->switches);

	if (!slice)
		return 0;
	if (sw != *seen || !*since) {
		/* a switch since the last look: a new slice began */
		*seen = sw;
		*since = now;
		return 0;
	}
	/*
	 * Due until the count moves: a look that finds the proc with no work
	 * (or its take otherwise refused) leaves it due, so that work arriving
	 * later takes the proc at the next look, not a slice later.
	 */
	return now - *since >= slice && !(sw & KG_SWITCHES_NOPREEMPT);
}

/* Take a place in hdr.slice_out (1), or none is left (0). */
static inline int kg_slice_enter(struct kg_shared *sh)
{
	__u32 out = KG_LOAD_ONCE(sh->hdr.slice_out);

	if (out >= KG_LOAD_ONCE(sh->hdr.slice_hogs))
		return 0;
	return __sync_val_compare_and_swap(&sh->hdr.slice_out, out,
					   out + 1) == out;
}

/* Give back a place taken by kg_slice_enter that was not used. */
static inline void kg_slice_undo(struct kg_shared *sh)
{
	__sync_fetch_and_sub(&sh->hdr.slice_out, 1);
}

/*
 * A handoff record, kernel side to userspace (BPF ring buffer kg_events):
 * the kernel side detached proc from worker at ts_ns (CLOCK_MONOTONIC).
 */
struct kg_handoff_event {
	__u32 proc;
	__u32 worker;
	__u64 ts_ns;
};

/*
 * BPF backend only: per-worker counters (hash map kg_wstats, keyed by
 * worker index; userspace creates the entry when the worker registers, the
 * BPF programs count with atomic adds). The thread registers itself in
 * kg_tids by running the program kg_register (BPF_PROG_TEST_RUN), which
 * reads its ids as the kernel has them, whatever PID namespace it is in.
 */
struct kg_worker_stats {
	__u32 tid;		/* the worker's thread id, as the kernel numbers it */
	__u32 __pad;
	__u64 blocks;		/* blocking switches */
	__u64 handoffs;		/* blocks that detached the worker's proc */
	__u64 idle_blocks;	/* blocks with nothing queued: proc kept */
	__u64 blocked_ns;	/* total time off-CPU in blocking switches */
};

/*
 * BPF backend only: latency histogram of one system call (hash map
 * kg_syslat, keyed by syscall number), for every thread of the process.
 * log2_ns[i] counts calls that took [2^i, 2^(i+1)) ns.
 */
#define KG_SYSLAT_SLOTS 40
struct kg_syslat {
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
	__u64 log2_ns[KG_SYSLAT_SLOTS];
};

/*
 * The kernel module's device, /dev/kgreen (Documentation/kmod.md).
 *
 * A process opens it once and mmaps struct kg_shared from offset 0
 * (MAP_SHARED; the mapping is not inherited by fork). Each worker thread
 * registers itself; the module then watches that thread's context
 * switches and, when it blocks holding a proc with work queued, detaches
 * the proc and queues a struct kg_handoff_event, which a spare worker
 * takes with KG_IOC_WAIT. Every argument struct starts with its size
 * (the caller sets it to sizeof); reserved fields and flags must be 0.
 */
#define KG_DEV_NAME		"kgreen"
#define KG_IOC_MAGIC		0xb6

/* KG_IOC_INFO: what the module speaks. */
struct kg_ioc_info {
	__u32 size;		/* in: sizeof(struct kg_ioc_info) */
	__u32 abi_version;	/* out: KG_ABI_VERSION */
	__u32 shared_size;	/* out: bytes to mmap (page multiple) */
	__u32 max_workers;	/* out: KG_MAX_WORKERS */
	__u32 max_procs;	/* out: KG_MAX_PROCS */
	__u32 __pad;
};

/*
 * KG_IOC_REGISTER / KG_IOC_UNREGISTER: the calling thread becomes worker
 * slot `worker` of this process, or stops being it. Only the thread
 * itself registers and unregisters; a thread is registered at most once.
 * A thread that exits (or a process that closes the device) is
 * unregistered by the module.
 */
struct kg_ioc_worker {
	__u32 size;		/* sizeof(struct kg_ioc_worker) */
	__u32 worker;		/* slot index, < KG_MAX_WORKERS */
	__u32 flags;		/* must be 0 */
	__u32 __pad;
};

/*
 * KG_IOC_WAIT: the calling registered worker takes the oldest handoff
 * record, sleeping for one until deadline_ns (CLOCK_MONOTONIC; 0 = do
 * not sleep, ~0 = no deadline). Returns 0 with the record in ev;
 * -EAGAIN if the worker was kicked (KG_IOC_KICK) or deadline_ns is 0 and
 * nothing is queued; -ETIMEDOUT at the deadline; -EINTR on a signal.
 */
struct kg_ioc_wait {
	__u32 size;		/* sizeof(struct kg_ioc_wait) */
	__u32 worker;		/* the caller's slot index */
	__u32 flags;		/* must be 0 */
	__u32 __pad;
	__u64 deadline_ns;
	struct kg_handoff_event ev;	/* out */
};

/* KG_IOC_KICK: end (or pre-empt) worker's next KG_IOC_WAIT with -EAGAIN. */
struct kg_ioc_kick {
	__u32 size;		/* sizeof(struct kg_ioc_kick) */
	__u32 worker;
};

/* KG_IOC_STATS: this process's counters (also in debugfs kgreen/stats). */
struct kg_ioc_stats {
	__u32 size;		/* sizeof(struct kg_ioc_stats) */
	__u32 workers;		/* out: threads registered now */
	__u64 registered;	/* threads ever registered */
	__u64 blocks;		/* blocking switches of registered workers */
	__u64 handoffs;		/* blocks that detached the worker's proc */
	__u64 idle_blocks;	/* blocks with nothing queued: proc kept */
	__u64 dropped;		/* handoffs skipped: event queue full */
	__u64 blocked_ns;	/* total time workers spent blocked */
	__u64 taken;		/* records taken by KG_IOC_WAIT */
	__u64 wake_ns_sum;	/* detach to KG_IOC_WAIT returning it */
	__u64 wake_ns_max;
	__u64 preempts;		/* procs taken at the end of a time slice */
};

#define KG_IOC_INFO	  _IOWR(KG_IOC_MAGIC, 0x00, struct kg_ioc_info)
#define KG_IOC_REGISTER	  _IOW(KG_IOC_MAGIC, 0x01, struct kg_ioc_worker)
#define KG_IOC_UNREGISTER _IOW(KG_IOC_MAGIC, 0x02, struct kg_ioc_worker)
#define KG_IOC_WAIT	  _IOWR(KG_IOC_MAGIC, 0x03, struct kg_ioc_wait)
#define KG_IOC_KICK	  _IOW(KG_IOC_MAGIC, 0x04, struct kg_ioc_kick)
#define KG_IOC_STATS	  _IOWR(KG_IOC_MAGIC, 0x05, struct kg_ioc_stats)

#endif /* _UAPI_LINUX_KGREEN_H */
