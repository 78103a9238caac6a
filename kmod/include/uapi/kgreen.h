/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * kgreen shared-state ABI: the one header the kernel module, the BPF
 * programs and libkgreen all include.
 *
 * The handoff protocol (Documentation/architecture.md) needs one slot per
 * worker thread and one per proc in memory that both the kernel side and
 * userspace see. Every field says who writes it and with what ordering.
 * Fields are __u32/__u64 only, padded explicitly, so the layout is the same
 * for a 64-bit kernel, BPF and userspace.
 */
#ifndef _UAPI_LINUX_KGREEN_H
#define _UAPI_LINUX_KGREEN_H

#include <linux/types.h>

#define KG_ABI_VERSION		1

#define KG_MAX_WORKERS		1024
#define KG_MAX_PROCS		1024

/* kg_worker_slot.proc and kg_proc_slot.owner when nothing is held. */
#define KG_PROC_NONE		0xffffffffu
#define KG_OWNER_DETACHED	0xffffffffu

/* kg_worker_slot.state */
#define KG_WORKER_RUNNING	0
#define KG_WORKER_BLOCKED	1

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
};

struct kg_proc_slot {
	/*
	 * Worker index owning the proc, or KG_OWNER_DETACHED. Changed only by
	 * compare-and-swap (userspace and kernel side).
	 */
	__u32 owner;
	/*
	 * Work hint: coroutines queued plus timers pending on the proc.
	 * Written by the owner with relaxed stores; the kernel side skips a
	 * detach when it reads 0.
	 */
	__u32 work_hint;
	__u32 flags;		/* must be 0 */
	__u32 __pad;
};

#endif /* _UAPI_LINUX_KGREEN_H */
