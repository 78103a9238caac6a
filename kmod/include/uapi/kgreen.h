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
#endif

#define KG_ABI_VERSION		2

#define KG_MAX_WORKERS		1024
#define KG_MAX_PROCS		1024

/* kg_worker_slot.proc and kg_proc_slot.owner when nothing is held. */
#define KG_PROC_NONE		0xffffffffu
#define KG_OWNER_DETACHED	0xffffffffu

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
	__u64 __pad[4];
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
	 * thieves (userspace). Alone in its line: thieves write it.
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
	__u64 __pad[6];
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
static inline int kg_proc_has_work(const struct kg_shared *sh,
				   const struct kg_proc_slot *ps)
{
	return *(const volatile __u32 *)&ps->runq_tail !=
		       *(const volatile __u32 *)&ps->runq_head ||
	       *(const volatile __u64 *)&ps->runnext ||
	       *(const volatile __u32 *)&ps->timers ||
	       *(const volatile __u32 *)&sh->hdr.gq_len;
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
 * BPF programs count with atomic adds).
 */
struct kg_worker_stats {
	__u32 tid;		/* the worker's thread id */
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

#endif /* _UAPI_LINUX_KGREEN_H */
