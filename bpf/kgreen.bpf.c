// SPDX-License-Identifier: Dual BSD/GPL
/*
 * kgreen.bpf.c - the BPF backend's kernel side of the handoff protocol
 * (Documentation/architecture.md, "The handoff protocol").
 *
 * At the blocking context switch of a registered worker thread (a
 * sched_switch whose previous task is not TASK_RUNNING and was not
 * preempted), on that worker's own CPU: if the worker is not in scheduler
 * code, holds a proc, and the proc has work queued, detach the proc with a
 * compare-and-swap on the shared state (the mmapable array map kg_shared)
 * and tell userspace through the ring buffer kg_events, where the standby
 * spare waits.
 *
 * Cost for other tasks: every program first compares the task's tgid with
 * the one kgreen process it serves (a constant set at load time), so a
 * task of another process pays one load and one compare per switch (or
 * system call, when the opt-in histogram is attached). Worker lookup is
 * O(1): the small hash kg_tids (thread id -> worker index), maintained by
 * userspace. Task local storage would save the hashing, but it can only
 * be created from a context that may allocate, which sched_switch (under
 * the runqueue lock) is not, and the histogram's sys_enter is opt-in.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "uapi/kgreen.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * The process served, as the kernel numbers it (its tgid in the initial
 * PID namespace, which is what task_struct holds): set by kg_register at
 * the first registration, 0 until then. Userspace cannot know it inside a
 * PID namespace (getpid() gives the namespace's number), so the kernel
 * side learns it from the registering thread itself.
 */
__u32 kg_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct kg_shared);
} kg_shared SEC(".maps");

/* thread id -> worker index, maintained by userspace */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KG_MAX_WORKERS);
	__type(key, __u32);
	__type(value, __u32);
} kg_tids SEC(".maps");

/* per thread, for the system call histogram */
struct kg_task_info {
	__u64 sys_start;	/* ns at sys_enter, 0 outside a syscall */
	__s64 sys_nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kg_task_info);
} kg_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KG_MAX_WORKERS);
	__type(key, __u32);
	__type(value, struct kg_worker_stats);
} kg_wstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct kg_syslat);
} kg_syslat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} kg_events SEC(".maps");

#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/*
 * kg_register: run by userspace with BPF_PROG_TEST_RUN on the thread that
 * becomes worker args[0] (args[1] 1) or stops being one (args[1] 0), so
 * that the ids it reads are the kernel's, whatever PID namespace the
 * process lives in: the kg_tids entry is keyed by the thread's kernel
 * tid, and the first registration sets kg_tgid. Returns that tid (0: the
 * caller is not of the process served).
 */
SEC("raw_tp")
int kg_register(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, tgid = (__u32)(id >> 32);
	__u32 w = (__u32)ctx->args[0];

	if (!kg_tgid)
		__sync_val_compare_and_swap(&kg_tgid, 0, tgid);
	if (kg_tgid != tgid || w >= KG_MAX_WORKERS)
		return 0;
	if (ctx->args[1])
		bpf_map_update_elem(&kg_tids, &tid, &w, BPF_ANY);
	else
		bpf_map_delete_elem(&kg_tids, &tid);
	return (int)tid;
}

/* The shared state and t's worker slot (index *wi), or NULL: not a worker. */
static __always_inline struct kg_worker_slot *
slot_of(struct task_struct *t, __u32 *wi, struct kg_shared **shp)
{
	__u32 zero = 0, tid = t->pid, w;
	__u32 *wp = bpf_map_lookup_elem(&kg_tids, &tid);
	struct kg_shared *sh;

	if (!wp)
		return NULL;	/* a thread of ours that is not a worker */
	w = *wp;
	if (w >= KG_MAX_WORKERS)
		return NULL;
	sh = bpf_map_lookup_elem(&kg_shared, &zero);
	if (!sh)
		return NULL;
	*wi = w;
	*shp = sh;
	return &sh->workers[w];
}

/*
 * Detach proc p from worker wi (slot ws), on that worker's own CPU: at its
 * blocking switch, or (slice) in a timer interrupt that interrupted it after
 * one coroutine ran for a whole time slice. true if detached.
 */
static __always_inline bool detach(struct kg_shared *sh,
				   struct kg_worker_slot *ws, __u32 wi, __u32 p,
				   __u64 now, bool slice)
{
	struct kg_handoff_event *ev;
	struct kg_proc_slot *ps = &sh->procs[p];

	/* reserve first: never detach a proc nobody would hear about */
	ev = bpf_ringbuf_reserve(&kg_events, sizeof(*ev), 0);
	if (!ev)
		return false;
	/* a place among the hogs out (hdr.slice_out), given back below
	 * if the proc is not ours to take after all */
	if (slice && !kg_slice_enter(sh)) {
		bpf_ringbuf_discard(ev, 0);
		return false;
	}
	/*
	 * Full barrier; pairs with the CAS of libkgreen's kg_proc_acquire()
	 * and kg_proc_release() (userlib/handoff.c): one side wins the owner.
	 */
	if (__sync_val_compare_and_swap(&ps->owner, wi, KG_OWNER_DETACHED) !=
	    wi) {
		if (slice)
			kg_slice_undo(sh);
		bpf_ringbuf_discard(ev, 0);
		return false;
	}
	/* counted before proc reads NONE: the worker reads it after */
	if (slice)
		WRITE_ONCE(ws->preempts, ws->preempts + 1);
	WRITE_ONCE(ws->proc, KG_PROC_NONE);
	ev->proc = p;
	ev->worker = wi;
	ev->ts_ns = now;
	/* the standby sleeps in epoll: wake it now, not at the next batch */
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
	return true;
}

/* prev, a worker, leaves its CPU to sleep: detach its proc if that pays. */
static __always_inline void on_block(struct task_struct *prev, __u64 now)
{
	struct kg_worker_stats *st;
	struct kg_worker_slot *ws;
	struct kg_shared *sh;
	__u32 wi, p;

	ws = slot_of(prev, &wi, &sh);
	if (!ws)
		return;
	/* single writer: only this worker's own switches write these */
	WRITE_ONCE(ws->state, KG_WORKER_BLOCKED);
	WRITE_ONCE(ws->blocked_at_ns, now);
	WRITE_ONCE(ws->blocks, ws->blocks + 1);
	st = bpf_map_lookup_elem(&kg_wstats, &wi);
	if (st)
		__sync_fetch_and_add(&st->blocks, 1);

	/* on the worker's own CPU at its own switch, as the rule requires */
	switch (kg_detach_rule(sh, ws, &p)) {
	case KG_DETACH_YES:
		break;
	case KG_DETACH_IDLE:
		if (st)
			__sync_fetch_and_add(&st->idle_blocks, 1);
		return;
	default:
		return;
	}
	if (detach(sh, ws, wi, p, now, false) && st)
		__sync_fetch_and_add(&st->handoffs, 1);
}

/* next, maybe a worker, gets a CPU: end its block, if it was one. */
static __always_inline void on_run(struct task_struct *next, __u64 now)
{
	struct kg_worker_stats *st;
	struct kg_worker_slot *ws;
	struct kg_shared *sh;
	__u32 wi;

	ws = slot_of(next, &wi, &sh);
	if (!ws)
		return;
	if (READ_ONCE(ws->state) != KG_WORKER_BLOCKED)
		return;
	WRITE_ONCE(ws->state, KG_WORKER_RUNNING);
	st = bpf_map_lookup_elem(&kg_wstats, &wi);
	if (st)
		__sync_fetch_and_add(&st->blocked_ns,
				     now - READ_ONCE(ws->blocked_at_ns));
}

SEC("tp_btf/sched_switch")
int BPF_PROG(kg_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	__u32 tgid = kg_tgid;
	bool block = tgid && prev->tgid == tgid && !preempt && prev_state != 0;
	bool run = tgid && next->tgid == tgid;
	__u64 now;

	if (!block && !run)
		return 0;
	now = bpf_ktime_get_ns();
	if (block)
		on_block(prev, now);
	if (run)
		on_run(next, now);
	return 0;
}

/*
 * A timer interrupt (hrtimer_expire_entry: among them the scheduler tick,
 * every 1/HZ s on each busy CPU), in the interrupt on the CPU it
 * interrupted: if that was a worker whose coroutine has run for a whole
 * slice (kg_slice_due) and whose proc has work, take the proc, as at a
 * block. The worker is interrupted on this CPU, so the detach rule's
 * program-order argument holds here as at its switch; it runs on without
 * its proc and finds it gone at its next kgreen call. A stable tracepoint
 * rather than the tick's function, whose name changed (scheduler_tick,
 * sched_tick) and which fentry may not be allowed to patch. Timers of
 * other processes pay one compare; soft timers run in ksoftirqd or after
 * a hard interrupt, where current is not a worker or is one interrupted.
 */
SEC("tp_btf/hrtimer_expire_entry")
int BPF_PROG(kg_tick, struct hrtimer *hrtimer, ktime_t *now_unused)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct kg_worker_slot *ws;
	struct kg_shared *sh;
	__u64 now;
	__u32 wi, p;

	if (!kg_tgid || t->tgid != kg_tgid)
		return 0;
	ws = slot_of(t, &wi, &sh);
	if (!ws)
		return 0;
	now = bpf_ktime_get_ns();
	if (!kg_slice_due(sh, ws, &ws->slice_switches, &ws->slice_since, now))
		return 0;
	if (kg_detach_rule(sh, ws, &p) != KG_DETACH_YES)
		return 0;
	detach(sh, ws, wi, p, now, true);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(kg_sys_enter, struct pt_regs *regs, long id)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct kg_task_info *ti;

	if (!kg_tgid || t->tgid != kg_tgid)
		return 0;
	ti = bpf_task_storage_get(&kg_task, t, 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ti)
		return 0;
	ti->sys_nr = id;
	ti->sys_start = bpf_ktime_get_ns();
	return 0;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kg_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct kg_syslat *h, zero = {};
	struct kg_task_info *ti;
	__u64 d, slot;
	__u32 nr;

	if (!kg_tgid || t->tgid != kg_tgid)
		return 0;
	ti = bpf_task_storage_get(&kg_task, t, 0, 0);
	if (!ti || !ti->sys_start || ti->sys_nr < 0)
		return 0;
	d = bpf_ktime_get_ns() - ti->sys_start;
	nr = (__u32)ti->sys_nr;
	ti->sys_start = 0;
	h = bpf_map_lookup_elem(&kg_syslat, &nr);
	if (!h) {
		bpf_map_update_elem(&kg_syslat, &nr, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&kg_syslat, &nr);
		if (!h)
			return 0;
	}
	slot = log2_u64(d);
	if (slot >= KG_SYSLAT_SLOTS)
		slot = KG_SYSLAT_SLOTS - 1;
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->total_ns, d);
	__sync_fetch_and_add(&h->log2_ns[slot], 1);
	/* a racy maximum is good enough for a histogram */
	if (d > READ_ONCE(h->max_ns))
		WRITE_ONCE(h->max_ns, d);
	return 0;
}
