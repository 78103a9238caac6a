/* SPDX-License-Identifier: MIT */
/*
 * trace.h - the records bpf/trace.bpf.c sends kgreen-trace.
 */
#ifndef KGREEN_TRACE_H
#define KGREEN_TRACE_H

enum tr_type {
	TR_RUN = 1,	/* a: worker index, b: coroutine id (0: scheduler) */
	TR_HANDOFF,	/* a: proc, b: from worker, c: to worker (-1: any) */
	TR_BLOCK,	/* the thread left its CPU asleep; a: syscall or -1 */
	TR_ONCPU,	/* the thread got a CPU */
	TR_FDWAIT,	/* a: coroutine id, b: fd, c: 0 read, 1 write */
	TR_FDDONE,	/* a: coroutine id, b: fd, c: 0 ready or -errno */
	TR_PREEMPT,	/* a: worker, b: coroutine id, back from running off
			 * its proc after a time slice */
};

struct tr_event {
	__u64 ts;	/* CLOCK_MONOTONIC ns */
	__u32 type;	/* enum tr_type */
	__u32 tid;
	__s64 a, b, c;
};

#endif
