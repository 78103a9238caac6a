// SPDX-License-Identifier: Dual BSD/GPL
/*
 * trace.bpf.c - kgreen-trace's kernel side: what one kgreen process's
 * threads and coroutines do, as records in a ring buffer.
 *
 *  - USDT kgreen:co_run and kgreen:handoff, libkgreen's static probes
 *    (nops until attached): which coroutine each worker runs, and which
 *    procs move between workers;
 *  - sched_switch: the process's threads leaving their CPU asleep (with
 *    the system call they sleep in, from sys_enter) and getting one back.
 *
 * Every program first compares the task's tgid with the traced one.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>
#include "trace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 tr_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} tr_events SEC(".maps");

/* thread id -> the system call it is in */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __s64);
} tr_sys SEC(".maps");

static __always_inline void emit(__u32 type, __u32 tid, __s64 a, __s64 b,
				 __s64 c)
{
	struct tr_event *e = bpf_ringbuf_reserve(&tr_events, sizeof(*e), 0);

	if (!e)
		return;		/* full: the tool reports lost records */
	e->ts = bpf_ktime_get_ns();
	e->type = type;
	e->tid = tid;
	e->a = a;
	e->b = b;
	e->c = c;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline bool ours(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == tr_tgid;
}

SEC("usdt")
int BPF_USDT(tr_co_run, int worker, long co)
{
	if (ours())
		emit(TR_RUN, (__u32)bpf_get_current_pid_tgid(), worker, co, 0);
	return 0;
}

SEC("usdt")
int BPF_USDT(tr_handoff, int proc, int from, int to)
{
	if (ours())
		emit(TR_HANDOFF, (__u32)bpf_get_current_pid_tgid(), proc, from,
		     to);
	return 0;
}

SEC("usdt")
int BPF_USDT(tr_fd_wait, long co, int fd, int dir)
{
	if (ours())
		emit(TR_FDWAIT, (__u32)bpf_get_current_pid_tgid(), co, fd,
		     dir);
	return 0;
}

SEC("usdt")
int BPF_USDT(tr_preempted, int worker, long co)
{
	if (ours())
		emit(TR_PREEMPT, (__u32)bpf_get_current_pid_tgid(), worker, co,
		     0);
	return 0;
}

SEC("usdt")
int BPF_USDT(tr_fd_done, long co, int fd, int res)
{
	if (ours())
		emit(TR_FDDONE, (__u32)bpf_get_current_pid_tgid(), co, fd,
		     res);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(tr_sys_enter, struct pt_regs *regs, long id)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__s64 nr = id;

	if (ours())
		bpf_map_update_elem(&tr_sys, &tid, &nr, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(tr_sys_exit, struct pt_regs *regs, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (ours())
		bpf_map_delete_elem(&tr_sys, &tid);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tr_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	__u32 tgid = tr_tgid;

	if (prev->tgid == tgid && !preempt && prev_state) {
		__u32 tid = prev->pid;
		__s64 *nr = bpf_map_lookup_elem(&tr_sys, &tid);

		emit(TR_BLOCK, tid, nr ? *nr : -1, 0, 0);
	}
	if (next->tgid == tgid)
		emit(TR_ONCPU, next->pid, 0, 0, 0);
	return 0;
}
