// SPDX-License-Identifier: GPL-2.0-only
/*
 * kgreen.ko - the kernel module backend of kgreen's handoff protocol
 * (Documentation/kmod.md, Documentation/architecture.md).
 *
 * A kgreen process opens /dev/kgreen once and mmaps its shared state
 * (struct kg_shared, in pages this module owns). Each worker thread
 * registers itself with KG_IOC_REGISTER; the module then hangs a preempt
 * notifier on that thread. When the thread leaves its CPU to sleep (it was
 * dequeued, not preempted) outside the runtime's scheduler code, holding
 * a proc with work queued, the notifier detaches the proc with a
 * compare-and-swap on the shared page and queues a handoff record. An
 * irq_work, run once the runqueue lock is dropped, wakes a spare worker
 * sleeping in KG_IOC_WAIT, which returns with the record.
 *
 * Time slices. A per-process timer (soft hrtimer, every quarter slice while
 * a worker is on a CPU) looks at each worker's switch count
 * (kg_slice_due); when one coroutine has run a whole slice and its proc
 * has work, it sends an IPI to the worker's CPU, and the handler, which
 * interrupted the worker there, takes the proc as at a block: same CPU,
 * same rule, same record. The worker runs on without it.
 *
 * Nothing here touches user memory from the scheduler path: the shared
 * state is the module's own vmalloc area, also mapped into the process.
 * Userspace may write anything into it; the module range-checks every
 * index it reads there and only ever writes the fields the ABI gives it.
 *
 * Limits. Each open pins about 200 kB of kernel memory (the shared state
 * and the context), charged to the opener's memory cgroup; a user may hold
 * at most max_user_contexts of them (module parameter, like inotify's
 * max_user_instances; open fails with EMFILE beyond). The preempt
 * notifiers' static key is turned on at the first registration and stays
 * on until the module is unloaded, so no sequence of opens, registrations
 * and closes patches kernel text more than once.
 *
 * Lifetimes. A notifier is linked into its task's list, which only that
 * task may safely change (the scheduler walks it without a lock). So the
 * module unlinks a notifier only from the task itself: in
 * KG_IOC_UNREGISTER, or at the task's next registration when the old one
 * belongs to a closed file or a pre-exec address space. A notifier whose
 * file is closed stays linked, inert, on a live task. A task that exits
 * while registered has its
 * last context switch (TASK_DEAD) seen by the notifier, which hands the
 * worker to the reaper (irq_work, then a workqueue) to be freed: a dead
 * task's list is never walked again. The per-process context and its
 * pages live until the file is released and every worker is reaped, and
 * each context pins the module, so unloading is refused while any exists.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/irq_work.h>
#include <linux/kref.h>
#include <linux/llist.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <uapi/kgreen.h>

#ifndef CONFIG_PREEMPT_NOTIFIERS
#error "kgreen.ko needs a kernel with CONFIG_PREEMPT_NOTIFIERS (set by KVM)"
#endif

/*
 * Handoff records waiting for a spare. A proc is detached at most once
 * before userspace reattaches it, so a well-behaved process never has
 * more than KG_MAX_PROCS queued or in flight; a full queue means no detach
 * (the proc stays with its blocked worker), never a lost record. "Full"
 * counts the records a spare has taken but not yet delivered (ev_inflight):
 * their places stay reserved until the copy to userspace succeeds, so a
 * record whose copy failed always has its place to go back to.
 */
#define KG_EVQ_LEN	KG_MAX_PROCS

/* The shared state's pages: allocated, mapped and reported in this size. */
#define KG_SHARED_BYTES	PAGE_ALIGN(sizeof(struct kg_shared))

struct kg_ctx;

/*
 * One registered worker thread, as the module keeps it (libkgreen's own
 * struct kg_worker is the same thread's userspace side; shared with it is
 * only the slot sh->workers[index]).
 */
struct kg_kworker {
	struct preempt_notifier pn;
	struct kg_ctx *ctx;		/* holds a reference */
	struct task_struct *task;	/* holds a reference */
	u32 index;
	/*
	 * 1 while pn is on task's list. Cleared exactly once, by the task
	 * itself (unregister, a stale registration's drop) or at its
	 * TASK_DEAD switch: the one that clears it hands the worker to the
	 * reaper, which frees it after an RCU grace period (KG_IOC_KICK
	 * reads workers[] under RCU).
	 */
	atomic_t linked;
	bool kicked;			/* KG_IOC_KICK pending (ctx->wq.lock) */
	/* the notifier's own state, touched only on the task's switches */
	bool blocked;
	u64 blocked_at;
	struct llist_node reap;
	/* time slices: the timer's memory of the slot (kg_slice_due) */
	u64 slice_seen, slice_since;
	/* the IPI to the worker's CPU; ipi_busy is 1 from its sending to
	 * the end of its handler (the reaper waits for 0); ipi_switches:
	 * the switch count the timer saw when it sent it */
	call_single_data_t csd;
	atomic_t ipi_busy;
	u64 ipi_switches;
};

/* One open of /dev/kgreen: one process's workers and shared state. */
struct kg_ctx {
	struct kref ref;		/* the file + one per worker */
	struct mm_struct *mm;		/* the opener's (mmgrab'd): identity */
	pid_t tgid;			/* for debugfs */
	struct kg_shared *sh;		/* __vmalloc'd, mapped by userspace */
	bool closed;			/* the file was released */
	kuid_t uid;			/* the opener's: max_user_contexts */

	/* workers[]: written under lock, read under RCU */
	struct mutex lock;
	struct kg_kworker __rcu *workers[KG_MAX_WORKERS];
	u32 nworkers;
	/* 1 + highest index registered (the slice timer scans up to it) */
	u32 hi_worker;

	/*
	 * Time slices: the timer runs while slice_armed is 1; it stops when
	 * no worker is on a CPU, and a worker's switch in starts it again.
	 */
	struct hrtimer slice_timer;
	atomic_t slice_armed;

	/* the handoff record queue; taken in the scheduler, irqs off */
	raw_spinlock_t evlock;
	u32 ev_head, ev_tail, ev_inflight;
	struct kg_handoff_event ev[KG_EVQ_LEN];

	wait_queue_head_t wq;		/* spares in KG_IOC_WAIT */
	struct irq_work wake_work;	/* wakes them after the switch */

	struct list_head node;		/* kg_ctxs, until freed */

	atomic64_t registered, blocks, handoffs, idle_blocks, dropped;
	atomic64_t blocked_ns, taken, wake_ns_sum, wake_ns_max, preempts;
};

/* Every context from open to free (after release while workers remain). */
static LIST_HEAD(kg_ctxs);
static DEFINE_MUTEX(kg_ctxs_lock);

static unsigned int max_user_contexts = 128;
module_param(max_user_contexts, uint, 0644);
MODULE_PARM_DESC(max_user_contexts,
		 "contexts (opens of /dev/kgreen, about 200 kB each) a user may hold at once");

/* The static key's one count, taken at the first registration (kg_ctxs_lock). */
static bool kg_key_on;

/* Workers to free, from any context; drained by kg_reap_fn. */
static LLIST_HEAD(kg_reap_list);
static void kg_reap_fn(struct work_struct *work);
static DECLARE_WORK(kg_reap_work, kg_reap_fn);

static void kg_reap_irq_fn(struct irq_work *w)
{
	schedule_work(&kg_reap_work);
}

static DEFINE_IRQ_WORK(kg_reap_irq, kg_reap_irq_fn);

static struct dentry *kg_debugfs;

static void kg_ctx_free(struct kref *ref)
{
	struct kg_ctx *ctx = container_of(ref, struct kg_ctx, ref);

	/* a notifier may have queued the wake just before its last switch */
	irq_work_sync(&ctx->wake_work);
	/* no worker is left to start it again */
	hrtimer_cancel(&ctx->slice_timer);
	mutex_lock(&kg_ctxs_lock);
	list_del(&ctx->node);
	mutex_unlock(&kg_ctxs_lock);
	vfree(ctx->sh);
	mmdrop(ctx->mm);
	kvfree(ctx);
	module_put(THIS_MODULE);
}

static void kg_max64(atomic64_t *v, u64 x)
{
	s64 old = atomic64_read(v);

	while ((u64)old < x && !atomic64_try_cmpxchg(v, &old, x))
		;
}

/* Records queued (a racy read; the shared copy is userspace's to spoil). */
static u32 kg_queued(struct kg_ctx *ctx)
{
	return READ_ONCE(ctx->ev_tail) - READ_ONCE(ctx->ev_head);
}

/*
 * Detach proc p from kw, on kw's own CPU (its blocking switch, or the
 * slice's IPI that interrupted it): the one that passes the detach rule
 * queues the record. Interrupts are off; only the event lock (raw) is
 * taken. slice: taken at the end of a time slice, which needs a place in
 * hdr.slice_out and is counted in the slot's preempts. true if detached.
 */
static bool kg_detach(struct kg_kworker *kw, struct kg_ctx *ctx, u32 p,
		      u64 now, bool slice)
{
	struct kg_shared *sh = ctx->sh;
	struct kg_worker_slot *ws = &sh->workers[kw->index];
	struct kg_proc_slot *ps = &sh->procs[p];
	struct kg_handoff_event *ev;

	raw_spin_lock(&ctx->evlock);
	if (ctx->ev_tail - ctx->ev_head + ctx->ev_inflight >= KG_EVQ_LEN) {
		raw_spin_unlock(&ctx->evlock);
		atomic64_inc(&ctx->dropped);
		return false;
	}
	if (slice && !kg_slice_enter(sh)) {
		raw_spin_unlock(&ctx->evlock);
		return false;
	}
	/*
	 * Full barrier; pairs with the compare-and-swap of libkgreen's
	 * kg_proc_acquire() and kg_proc_release() (userlib/handoff.c):
	 * exactly one side wins the owner.
	 */
	if (cmpxchg(&ps->owner, kw->index, KG_OWNER_DETACHED) != kw->index) {
		if (slice)
			kg_slice_undo(sh);
		raw_spin_unlock(&ctx->evlock);
		return false;
	}
	/* counted before proc reads NONE: the worker reads it after */
	if (slice)
		WRITE_ONCE(ws->preempts, READ_ONCE(ws->preempts) + 1);
	WRITE_ONCE(ws->proc, KG_PROC_NONE);
	ev = &ctx->ev[ctx->ev_tail % KG_EVQ_LEN];
	ev->proc = p;
	ev->worker = kw->index;
	ev->ts_ns = now;
	WRITE_ONCE(ctx->ev_tail, ctx->ev_tail + 1);
	WRITE_ONCE(sh->hdr.kev_pending, ctx->ev_tail - ctx->ev_head);
	raw_spin_unlock(&ctx->evlock);
	atomic64_inc(slice ? &ctx->preempts : &ctx->handoffs);
	irq_work_queue(&ctx->wake_work);
	return true;
}

/*
 * A registered worker leaves its CPU, dequeued (asleep). Called from the
 * scheduler with the runqueue lock held and interrupts off: no sleeping,
 * no wake-ups (the irq_work does that), only the event lock (raw).
 */
static void kg_on_block(struct kg_kworker *kw, struct kg_ctx *ctx)
{
	struct kg_shared *sh = ctx->sh;
	struct kg_worker_slot *ws = &sh->workers[kw->index];
	u64 now = ktime_get_ns();
	u32 p;

	kw->blocked = true;
	kw->blocked_at = now;
	atomic64_inc(&ctx->blocks);
	WRITE_ONCE(ws->state, KG_WORKER_BLOCKED);
	WRITE_ONCE(ws->blocked_at_ns, now);
	WRITE_ONCE(ws->blocks, READ_ONCE(ws->blocks) + 1);

	/* on the worker's own CPU at its own switch, as the rule requires */
	switch (kg_detach_rule(sh, ws, &p)) {
	case KG_DETACH_YES:
		kg_detach(kw, ctx, p, now, false);
		return;
	case KG_DETACH_IDLE:
		atomic64_inc(&ctx->idle_blocks);
		return;
	default:
		return;
	}
}

/*
 * The slice's IPI, in the interrupt on the CPU where the timer saw kw run:
 * if it interrupted kw itself, program order makes kw's slot current here,
 * as at its switch. The count must still be the one the timer judged (a
 * switch meanwhile began a new slice, maybe of a KG_GO_NOPREEMPT
 * coroutine: the count carries that bit), and the rule decides.
 */
static void kg_slice_ipi(void *info)
{
	struct kg_kworker *kw = info;
	struct kg_ctx *ctx = kw->ctx;
	u32 p;

	if (current == kw->task && atomic_read(&kw->linked) &&
	    !READ_ONCE(ctx->closed) && current->mm == ctx->mm &&
	    READ_ONCE(ctx->sh->workers[kw->index].switches) ==
		    kw->ipi_switches &&
	    kg_detach_rule(ctx->sh, &ctx->sh->workers[kw->index], &p) ==
		    KG_DETACH_YES)
		kg_detach(kw, ctx, p, ktime_get_ns(), true);
	/* release: the reaper frees kw only after this */
	atomic_set_release(&kw->ipi_busy, 0);
}

/* The timer's period: a quarter slice, within [1 ms, 100 ms]. */
static ktime_t kg_slice_period(struct kg_ctx *ctx)
{
	u64 slice = READ_ONCE(ctx->sh->hdr.slice_ns);

	return ns_to_ktime(clamp_t(u64, slice / 4, NSEC_PER_MSEC,
				   100 * NSEC_PER_MSEC));
}

/* Whether a registered worker of ctx is on a CPU (RCU held). */
static bool kg_any_on_cpu(struct kg_ctx *ctx, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		struct kg_kworker *kw = rcu_dereference(ctx->workers[i]);

		if (kw && READ_ONCE(kw->task->on_cpu))
			return true;
	}
	return false;
}

/*
 * The slice timer (softirq, interrupts on): for each worker on a CPU whose
 * coroutine has run a whole slice with work waiting behind it (a racy look
 * from here), send the IPI that decides on the worker's CPU.
 */
static enum hrtimer_restart kg_slice_timer_fn(struct hrtimer *t)
{
	struct kg_ctx *ctx = container_of(t, struct kg_ctx, slice_timer);
	struct kg_shared *sh = ctx->sh;
	u32 i, n = min_t(u32, READ_ONCE(ctx->hi_worker), KG_MAX_WORKERS);
	u64 now = ktime_get_ns();
	bool running = false;

	if (READ_ONCE(ctx->closed) || !READ_ONCE(sh->hdr.slice_ns)) {
		atomic_set(&ctx->slice_armed, 0);
		return HRTIMER_NORESTART;
	}
	rcu_read_lock();
	for (i = 0; i < n; i++) {
		struct kg_kworker *kw = rcu_dereference(ctx->workers[i]);
		struct kg_worker_slot *ws = &sh->workers[i];
		u32 p;

		if (!kw || !atomic_read(&kw->linked) ||
		    !READ_ONCE(kw->task->on_cpu))
			continue;
		running = true;
		if (!kg_slice_due(sh, ws, &kw->slice_seen, &kw->slice_since,
				  now) ||
		    kg_detach_rule(sh, ws, &p) != KG_DETACH_YES ||
		    atomic_xchg(&kw->ipi_busy, 1))
			continue;
		/* ordered before the handler by the IPI's own barriers */
		kw->ipi_switches = kw->slice_seen;
		if (smp_call_function_single_async(task_cpu(kw->task),
						   &kw->csd))
			atomic_set(&kw->ipi_busy, 0);
	}
	if (!running) {
		/*
		 * Stop, unless a worker came onto a CPU meanwhile: its
		 * switch in (kg_slice_arm) either saw armed still 1 and left
		 * the timer to us, and then we see it on its CPU after our
		 * store and barrier, or it sees 0 and starts the timer.
		 */
		atomic_set(&ctx->slice_armed, 0);
		smp_mb();
		running = kg_any_on_cpu(ctx, n) &&
			  !atomic_xchg(&ctx->slice_armed, 1);
	}
	rcu_read_unlock();
	if (!running)
		return HRTIMER_NORESTART;
	hrtimer_forward_now(t, kg_slice_period(ctx));
	return HRTIMER_RESTART;
}

static void kg_slice_timer_init(struct hrtimer *t)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	hrtimer_setup(t, kg_slice_timer_fn, CLOCK_MONOTONIC,
		      HRTIMER_MODE_REL_SOFT);
#else
	hrtimer_init(t, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	t->function = kg_slice_timer_fn;
#endif
}

/* A worker of ctx is on a CPU: make sure the slice timer runs. */
static void kg_slice_arm(struct kg_ctx *ctx)
{
	/*
	 * A full barrier between the scheduler's store of on_cpu and the
	 * read of armed: pairs with the timer's stop, see there. The line is
	 * only read while the timer runs (no bouncing between CPUs); the
	 * exchange decides who starts it.
	 */
	if (!READ_ONCE(ctx->sh->hdr.slice_ns))
		return;
	smp_mb();
	if (atomic_read(&ctx->slice_armed) ||
	    atomic_xchg(&ctx->slice_armed, 1))
		return;
	hrtimer_start(&ctx->slice_timer, kg_slice_period(ctx),
		      HRTIMER_MODE_REL_SOFT);
}

/*
 * Hand kw, just unlinked (or on a dead task), to the reaper. in_sched:
 * from the scheduler (runqueue lock held), where only an irq_work may be
 * queued.
 */
static void kg_reap(struct kg_kworker *kw, bool in_sched)
{
	llist_add(&kw->reap, &kg_reap_list);
	if (in_sched)
		irq_work_queue(&kg_reap_irq);
	else
		schedule_work(&kg_reap_work);
}

/*
 * Whether t, switching out, leaves its CPU asleep rather than preempted or
 * yielding. The scheduler has already decided: a sleeping task was
 * dequeued (on_rq 0) before the switch. Since 6.12 the fair class may keep
 * a sleeper queued until its negative lag is spent (delayed dequeue,
 * EEVDF): on_rq stays 1 and se.sched_delayed says it sleeps. A task
 * running now never has sched_delayed set (its wake-up requeued it), so a
 * preempted task is never taken for a sleeper.
 */
static bool kg_switching_out_asleep(struct task_struct *t)
{
	if (!READ_ONCE(t->on_rq))
		return true;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	return READ_ONCE(t->se.sched_delayed);
#else
	return false;
#endif
}

static void kg_sched_out(struct preempt_notifier *pn, struct task_struct *next)
{
	struct kg_kworker *kw = container_of(pn, struct kg_kworker, pn);
	struct kg_ctx *ctx = kw->ctx;
	struct task_struct *t = current;

	/* preempted or yielding: still runnable, not blocked */
	if (!kg_switching_out_asleep(t))
		return;
	if (READ_ONCE(t->__state) == TASK_DEAD) {
		/* its last switch: the list is never walked again */
		if (atomic_xchg(&kw->linked, 0))
			kg_reap(kw, true);
		return;
	}
	/* after exec the thread runs another program: not ours any more */
	if (READ_ONCE(ctx->closed) || t->mm != ctx->mm)
		return;
	kg_on_block(kw, ctx);
}

/* Preemption off, interrupts on, no runqueue lock. */
static void kg_sched_in(struct preempt_notifier *pn, int cpu)
{
	struct kg_kworker *kw = container_of(pn, struct kg_kworker, pn);
	struct kg_ctx *ctx = kw->ctx;

	if (!READ_ONCE(ctx->closed))
		kg_slice_arm(ctx);
	if (!kw->blocked)
		return;
	kw->blocked = false;
	atomic64_add(ktime_get_ns() - kw->blocked_at, &ctx->blocked_ns);
	WRITE_ONCE(ctx->sh->workers[kw->index].state, KG_WORKER_RUNNING);
}

static struct preempt_ops kg_preempt_ops = {
	.sched_in = kg_sched_in,
	.sched_out = kg_sched_out,
};

static void kg_wake_fn(struct irq_work *w)
{
	struct kg_ctx *ctx = container_of(w, struct kg_ctx, wake_work);

	/* one spare per record (several may have queued meanwhile) */
	wake_up_nr(&ctx->wq, max_t(u32, kg_queued(ctx), 1));
}

static void kg_reap_fn(struct work_struct *work)
{
	struct llist_node *list = llist_del_all(&kg_reap_list);
	struct kg_kworker *kw, *tmp;

	if (!list)
		return;
	llist_for_each_entry(kw, list, reap) {
		struct kg_ctx *ctx = kw->ctx;

		mutex_lock(&ctx->lock);
		if (rcu_access_pointer(ctx->workers[kw->index]) == kw) {
			RCU_INIT_POINTER(ctx->workers[kw->index], NULL);
			ctx->nworkers--;
		}
		/* the start-up proof's slot is the last: do not scan to it */
		while (ctx->hi_worker &&
		       !rcu_access_pointer(ctx->workers[ctx->hi_worker - 1]))
			WRITE_ONCE(ctx->hi_worker, ctx->hi_worker - 1);
		mutex_unlock(&ctx->lock);
	}
	/* KG_IOC_KICK and the slice timer may still be looking at them */
	synchronize_rcu();
	llist_for_each_entry_safe(kw, tmp, list, reap) {
		/* an IPI sent before the grace period: let it finish */
		while (atomic_read_acquire(&kw->ipi_busy))
			cpu_relax();
		put_task_struct(kw->task);
		kref_put(&kw->ctx->ref, kg_ctx_free);
		kfree(kw);
	}
}

/* The task itself unlinks kw. */
static void kg_unlink_self(struct kg_kworker *kw)
{
	if (!atomic_xchg(&kw->linked, 0))
		return;
	preempt_disable();
	preempt_notifier_unregister(&kw->pn);
	preempt_enable();
	kg_reap(kw, false);
}

/* Contexts uid holds now, closed ones with live workers included. */
static unsigned int kg_user_contexts(kuid_t uid)
{
	struct kg_ctx *ctx;
	unsigned int n = 0;

	lockdep_assert_held(&kg_ctxs_lock);
	list_for_each_entry(ctx, &kg_ctxs, node)
		n += uid_eq(ctx->uid, uid);
	return n;
}

static int kg_open(struct inode *inode, struct file *file)
{
	struct kg_ctx *ctx;
	kuid_t uid = current_uid();

	if (!current->mm)
		return -EINVAL;
	ctx = kvzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	/* charged to the opener's memory cgroup; kg_mmap maps each page */
	ctx->sh = __vmalloc(KG_SHARED_BYTES,
			    GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!ctx->sh) {
		kvfree(ctx);
		return -ENOMEM;
	}
	kref_init(&ctx->ref);
	mmgrab(current->mm);
	ctx->mm = current->mm;
	ctx->tgid = task_tgid_nr(current);
	ctx->uid = uid;
	mutex_init(&ctx->lock);
	raw_spin_lock_init(&ctx->evlock);
	init_waitqueue_head(&ctx->wq);
	init_irq_work(&ctx->wake_work, kg_wake_fn);
	kg_slice_timer_init(&ctx->slice_timer);
	mutex_lock(&kg_ctxs_lock);
	if (kg_user_contexts(uid) >= READ_ONCE(max_user_contexts)) {
		mutex_unlock(&kg_ctxs_lock);
		pr_info_ratelimited("uid %u holds max_user_contexts (%u) contexts: open refused with EMFILE\n",
				    from_kuid(&init_user_ns, uid),
				    READ_ONCE(max_user_contexts));
		mmdrop(ctx->mm);
		vfree(ctx->sh);
		kvfree(ctx);
		return -EMFILE;
	}
	list_add_tail(&ctx->node, &kg_ctxs);
	/* the context outlives the file while workers remain: pin us */
	__module_get(THIS_MODULE);
	mutex_unlock(&kg_ctxs_lock);
	file->private_data = ctx;
	return 0;
}

static int kg_release(struct inode *inode, struct file *file)
{
	struct kg_ctx *ctx = file->private_data;

	/*
	 * Threads still registered keep their notifiers, now inert, until
	 * they exit (their TASK_DEAD switch reaps them) or register again
	 * (a stale registration is dropped then): only a task may unlink
	 * its own, and running module code in the task afterwards (a
	 * task_work) could race with the module's unloading.
	 */
	WRITE_ONCE(ctx->closed, true);
	kref_put(&ctx->ref, kg_ctx_free);
	return 0;
}

/* The caller must be a thread of the process that opened the device. */
static int kg_check_owner(struct kg_ctx *ctx)
{
	return current->mm == ctx->mm ? 0 : -EPERM;
}

/*
 * ptrace's and /proc/PID/mem's view of the mapping (get_user_pages refuses
 * VM_IO areas; where the architecture lacks CONFIG_HAVE_IOREMAP_PROT the
 * kernel never calls this, and process_vm_readv() never does: those see
 * EFAULT): a copy from or to the shared state, within this piece of the
 * mapping (a partial munmap or mprotect splits it: vm_pgoff says where a
 * piece starts), writes only where the mapping is writable. Each piece
 * holds the file, which holds the context.
 */
static int kg_vm_access(struct vm_area_struct *vma, unsigned long addr,
			void *buf, int len, int write)
{
	struct kg_ctx *ctx = vma->vm_private_data;
	unsigned long off = (vma->vm_pgoff << PAGE_SHIFT) + addr -
			    vma->vm_start;

	if (len <= 0 || off >= KG_SHARED_BYTES || addr >= vma->vm_end)
		return -EINVAL;
	if (write && !(vma->vm_flags & VM_WRITE))
		return -EACCES;
	len = min3((size_t)len, KG_SHARED_BYTES - off,
		   (size_t)(vma->vm_end - addr));
	if (write)
		memcpy((char *)ctx->sh + off, buf, len);
	else
		memcpy(buf, (char *)ctx->sh + off, len);
	return len;
}

static const struct vm_operations_struct kg_vm_ops = {
	.access = kg_vm_access,
};

static int kg_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct kg_ctx *ctx = file->private_data;
	int err = kg_check_owner(ctx);
	unsigned long off;

	if (err)
		return err;
	if (vma->vm_pgoff ||
	    vma->vm_end - vma->vm_start > KG_SHARED_BYTES)
		return -EINVAL;
	/* a private mapping would copy on write: the module would not see it */
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	/*
	 * A forked child gets nothing (VM_DONTCOPY), and keeps getting
	 * nothing: madvise(MADV_DOFORK) refuses VM_IO areas. The mapping
	 * cannot grow. ptrace (gdb) reads it through kg_vm_access.
	 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, VM_IO | VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_IO | VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP;
#endif
	vma->vm_ops = &kg_vm_ops;
	vma->vm_private_data = ctx;
	for (off = 0; off < vma->vm_end - vma->vm_start; off += PAGE_SIZE) {
		err = vm_insert_page(vma, vma->vm_start + off,
				     vmalloc_to_page((char *)ctx->sh + off));
		if (err)
			return err;
	}
	return 0;
}

/*
 * Copy the argument struct in: its first __u32 must be its size. Unknown
 * sizes are refused, so a struct can grow in a later ABI version.
 */
static int kg_copy_arg(void *dst, size_t size, void __user *src)
{
	u32 usize;

	if (get_user(usize, (u32 __user *)src))
		return -EFAULT;
	if (usize != size)
		return -EINVAL;
	if (copy_from_user(dst, src, size))
		return -EFAULT;
	return 0;
}

static long kg_ioc_info(void __user *uarg)
{
	struct kg_ioc_info a;
	int err = kg_copy_arg(&a, sizeof(a), uarg);

	if (err)
		return err;
	if (a.__pad)
		return -EINVAL;
	a.abi_version = KG_ABI_VERSION;
	a.shared_size = KG_SHARED_BYTES;
	a.max_workers = KG_MAX_WORKERS;
	a.max_procs = KG_MAX_PROCS;
	return copy_to_user(uarg, &a, sizeof(a)) ? -EFAULT : 0;
}

static int kg_get_worker_arg(struct kg_ioc_worker *a, void __user *uarg)
{
	int err = kg_copy_arg(a, sizeof(*a), uarg);

	if (err)
		return err;
	if (a->flags || a->__pad || a->worker >= KG_MAX_WORKERS)
		return -EINVAL;
	return 0;
}

/*
 * Whether the calling thread is registered (in any open context). A
 * registration whose file was closed, or made before the thread called
 * exec (another address space), is stale: it is dropped here, by the
 * thread itself, which is what makes unlinking safe.
 */
static bool kg_current_registered(void)
{
	struct kg_kworker *stale = NULL;
	struct preempt_notifier *pn;
	bool found = false;

	/* our own list: nobody else changes it, preemption keeps it still */
	preempt_disable();
	hlist_for_each_entry(pn, &current->preempt_notifiers, link) {
		struct kg_kworker *kw;

		if (pn->ops != &kg_preempt_ops)
			continue;
		kw = container_of(pn, struct kg_kworker, pn);
		if (kw->ctx->mm == current->mm && !READ_ONCE(kw->ctx->closed))
			found = true;
		else
			stale = kw;
	}
	preempt_enable();
	if (stale)
		kg_unlink_self(stale);
	return found;
}

static long kg_ioc_register(struct kg_ctx *ctx, void __user *uarg)
{
	struct kg_ioc_worker a;
	struct kg_kworker *kw;
	int err = kg_get_worker_arg(&a, uarg);

	if (err)
		return err;
	/* one registration per thread, in any context */
	if (kg_current_registered())
		return -EBUSY;
	kw = kzalloc(sizeof(*kw), GFP_KERNEL_ACCOUNT);
	if (!kw)
		return -ENOMEM;
	mutex_lock(&ctx->lock);
	if (rcu_access_pointer(ctx->workers[a.worker])) {
		mutex_unlock(&ctx->lock);
		kfree(kw);
		return -EBUSY;
	}
	kw->ctx = ctx;
	kref_get(&ctx->ref);
	kw->task = get_task_struct(current);
	kw->index = a.worker;
	atomic_set(&kw->linked, 1);
	INIT_CSD(&kw->csd, kg_slice_ipi, kw);
	preempt_notifier_init(&kw->pn, &kg_preempt_ops);
	/*
	 * The scheduler calls notifiers only while the static key counts
	 * some. The module takes one count at the first registration and
	 * gives it back at unload: turning the key on or off patches kernel
	 * text on every CPU, which no loop of opens, registrations and
	 * closes may repeat. Until the first registration a context switch
	 * costs what it costs without the module; after it, one test of
	 * the switching task's empty notifier list.
	 */
	mutex_lock(&kg_ctxs_lock);
	if (!kg_key_on) {
		preempt_notifier_inc();
		kg_key_on = true;
	}
	mutex_unlock(&kg_ctxs_lock);
	rcu_assign_pointer(ctx->workers[a.worker], kw);
	ctx->nworkers++;
	if (a.worker >= ctx->hi_worker)
		WRITE_ONCE(ctx->hi_worker, a.worker + 1);
	atomic64_inc(&ctx->registered);
	preempt_disable();
	preempt_notifier_register(&kw->pn);
	preempt_enable();
	mutex_unlock(&ctx->lock);
	kg_slice_arm(ctx);	/* we are on a CPU, and may stay there */
	return 0;
}

/* The calling task's kg_kworker at index, or NULL. RCU or ctx->lock held. */
static struct kg_kworker *kg_task_worker(struct kg_ctx *ctx, u32 index)
{
	struct kg_kworker *kw = rcu_dereference_check(ctx->workers[index],
					lockdep_is_held(&ctx->lock));

	return kw && kw->task == current ? kw : NULL;
}

static long kg_ioc_unregister(struct kg_ctx *ctx, void __user *uarg)
{
	struct kg_ioc_worker a;
	struct kg_kworker *kw;
	int err = kg_get_worker_arg(&a, uarg);

	if (err)
		return err;
	mutex_lock(&ctx->lock);
	kw = kg_task_worker(ctx, a.worker);
	if (!kw || !atomic_read(&kw->linked)) {
		mutex_unlock(&ctx->lock);
		return -ENOENT;
	}
	RCU_INIT_POINTER(ctx->workers[a.worker], NULL);
	ctx->nworkers--;
	mutex_unlock(&ctx->lock);
	kg_unlink_self(kw);
	return 0;
}

/*
 * Take the oldest record into *ev; its place stays reserved (ev_inflight)
 * until kg_delivered() or kg_untake() settles it.
 */
static bool kg_take(struct kg_ctx *ctx, struct kg_handoff_event *ev)
{
	bool got = false;

	raw_spin_lock_irq(&ctx->evlock);
	if (ctx->ev_head != ctx->ev_tail) {
		*ev = ctx->ev[ctx->ev_head % KG_EVQ_LEN];
		ctx->ev_inflight++;
		WRITE_ONCE(ctx->ev_head, ctx->ev_head + 1);
		WRITE_ONCE(ctx->sh->hdr.kev_pending,
			   ctx->ev_tail - ctx->ev_head);
		got = true;
	}
	raw_spin_unlock_irq(&ctx->evlock);
	return got;
}

/* The record kg_take took reached userspace: free its place. */
static void kg_delivered(struct kg_ctx *ctx)
{
	raw_spin_lock_irq(&ctx->evlock);
	ctx->ev_inflight--;
	raw_spin_unlock_irq(&ctx->evlock);
}

/*
 * Put back a record kg_take took (its copy to userspace failed), at the
 * head: its reserved place is free, since detaches count reserved places
 * as taken (kg_detach).
 */
static void kg_untake(struct kg_ctx *ctx, const struct kg_handoff_event *ev)
{
	raw_spin_lock_irq(&ctx->evlock);
	ctx->ev_inflight--;
	WRITE_ONCE(ctx->ev_head, ctx->ev_head - 1);
	ctx->ev[ctx->ev_head % KG_EVQ_LEN] = *ev;
	WRITE_ONCE(ctx->sh->hdr.kev_pending, ctx->ev_tail - ctx->ev_head);
	raw_spin_unlock_irq(&ctx->evlock);
	wake_up(&ctx->wq);
}

/* Consume kw's pending kick. */
static bool kg_kicked(struct kg_ctx *ctx, struct kg_kworker *kw)
{
	bool k;

	spin_lock_irq(&ctx->wq.lock);
	k = kw->kicked;
	kw->kicked = false;
	spin_unlock_irq(&ctx->wq.lock);
	return k;
}

static long kg_wait_event(struct kg_ctx *ctx, struct kg_kworker *kw,
			  u64 deadline, struct kg_handoff_event *ev)
{
	DEFINE_WAIT(wait);
	ktime_t expires;
	bool timed_out = false;
	long ret;

	/* a poll: it must not consume a kick meant for the next wait */
	if (!deadline)
		return kg_take(ctx, ev) ? 0 : -EAGAIN;
	if (deadline > KTIME_MAX)
		deadline = U64_MAX;	/* beyond ktime's range: none */
	expires = ns_to_ktime(deadline);
	for (;;) {
		/* exclusive: a record wakes one spare, not all of them */
		prepare_to_wait_exclusive(&ctx->wq, &wait, TASK_INTERRUPTIBLE);
		if (kg_take(ctx, ev)) {
			ret = 0;
			break;
		}
		if (kg_kicked(ctx, kw)) {
			ret = -EAGAIN;
			break;
		}
		if (signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		if (timed_out || (deadline != U64_MAX &&
				  ktime_get_ns() >= deadline)) {
			ret = -ETIMEDOUT;
			break;
		}
		if (deadline == U64_MAX)
			schedule();
		else if (!schedule_hrtimeout(&expires, HRTIMER_MODE_ABS))
			timed_out = true;
	}
	finish_wait(&ctx->wq, &wait);
	/* leaving without a record that woke us: pass the wake on */
	if (ret && kg_queued(ctx))
		wake_up(&ctx->wq);
	return ret;
}

static long kg_ioc_wait(struct kg_ctx *ctx, void __user *uarg)
{
	struct kg_ioc_wait a;
	struct kg_kworker *kw;
	u64 lat;
	long ret = kg_copy_arg(&a, sizeof(a), uarg);

	if (ret)
		return ret;
	if (a.flags || a.__pad || a.worker >= KG_MAX_WORKERS)
		return -EINVAL;
	/*
	 * Only the thread itself unregisters kw, and it is here: kw stays
	 * valid without RCU for the whole wait.
	 */
	rcu_read_lock();
	kw = kg_task_worker(ctx, a.worker);
	rcu_read_unlock();
	if (!kw)
		return -ENOENT;
	ret = kg_wait_event(ctx, kw, a.deadline_ns, &a.ev);
	if (ret)
		return ret;
	/* a record lost here would strand its proc: put it back */
	if (copy_to_user(&((struct kg_ioc_wait __user *)uarg)->ev, &a.ev,
			 sizeof(a.ev))) {
		kg_untake(ctx, &a.ev);
		return -EFAULT;
	}
	kg_delivered(ctx);
	lat = ktime_get_ns() - a.ev.ts_ns;
	atomic64_inc(&ctx->taken);
	atomic64_add(lat, &ctx->wake_ns_sum);
	kg_max64(&ctx->wake_ns_max, lat);
	return 0;
}

static long kg_ioc_kick(struct kg_ctx *ctx, void __user *uarg)
{
	struct kg_ioc_kick a;
	struct kg_kworker *kw;
	int err = kg_copy_arg(&a, sizeof(a), uarg);

	if (err)
		return err;
	if (a.worker >= KG_MAX_WORKERS)
		return -EINVAL;
	rcu_read_lock();
	kw = rcu_dereference(ctx->workers[a.worker]);
	if (kw) {
		spin_lock_irq(&ctx->wq.lock);
		kw->kicked = true;
		spin_unlock_irq(&ctx->wq.lock);
		/* waiters check their own flag; the others sleep again */
		wake_up_all(&ctx->wq);
	}
	rcu_read_unlock();
	return kw ? 0 : -ENOENT;
}

static void kg_fill_stats(struct kg_ctx *ctx, struct kg_ioc_stats *s)
{
	s->workers = READ_ONCE(ctx->nworkers);
	s->registered = atomic64_read(&ctx->registered);
	s->blocks = atomic64_read(&ctx->blocks);
	s->handoffs = atomic64_read(&ctx->handoffs);
	s->idle_blocks = atomic64_read(&ctx->idle_blocks);
	s->dropped = atomic64_read(&ctx->dropped);
	s->blocked_ns = atomic64_read(&ctx->blocked_ns);
	s->taken = atomic64_read(&ctx->taken);
	s->wake_ns_sum = atomic64_read(&ctx->wake_ns_sum);
	s->wake_ns_max = atomic64_read(&ctx->wake_ns_max);
	s->preempts = atomic64_read(&ctx->preempts);
}

static long kg_ioc_stats(struct kg_ctx *ctx, void __user *uarg)
{
	struct kg_ioc_stats s;
	int err = kg_copy_arg(&s, sizeof(s), uarg);

	if (err)
		return err;
	kg_fill_stats(ctx, &s);
	return copy_to_user(uarg, &s, sizeof(s)) ? -EFAULT : 0;
}

static long kg_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct kg_ctx *ctx = file->private_data;
	void __user *uarg = (void __user *)arg;
	int err = kg_check_owner(ctx);

	if (err)
		return err;
	switch (cmd) {
	case KG_IOC_INFO:
		return kg_ioc_info(uarg);
	case KG_IOC_REGISTER:
		return kg_ioc_register(ctx, uarg);
	case KG_IOC_UNREGISTER:
		return kg_ioc_unregister(ctx, uarg);
	case KG_IOC_WAIT:
		return kg_ioc_wait(ctx, uarg);
	case KG_IOC_KICK:
		return kg_ioc_kick(ctx, uarg);
	case KG_IOC_STATS:
		return kg_ioc_stats(ctx, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations kg_fops = {
	.owner = THIS_MODULE,
	.open = kg_open,
	.release = kg_release,
	.mmap = kg_mmap,
	.unlocked_ioctl = kg_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice kg_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = KG_DEV_NAME,
	.fops = &kg_fops,
	.mode = 0666,
};

static int kg_stats_show(struct seq_file *m, void *v)
{
	struct kg_ioc_stats s;
	struct kg_ctx *ctx;

	seq_puts(m, "tgid workers registered blocks handoffs idle_blocks dropped blocked_ns taken wake_ns_sum wake_ns_max preempts closed\n");
	mutex_lock(&kg_ctxs_lock);
	list_for_each_entry(ctx, &kg_ctxs, node) {
		kg_fill_stats(ctx, &s);
		/* closed: the file is released, registered threads live on
		 * (the tgid may be gone or reused) */
		seq_printf(m, "%d %u %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %d\n",
			   ctx->tgid, s.workers, s.registered, s.blocks,
			   s.handoffs, s.idle_blocks, s.dropped, s.blocked_ns,
			   s.taken, s.wake_ns_sum, s.wake_ns_max, s.preempts,
			   READ_ONCE(ctx->closed));
	}
	mutex_unlock(&kg_ctxs_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kg_stats);

static int __init kg_init(void)
{
	int err;

	err = misc_register(&kg_dev);
	if (err)
		return err;
	kg_debugfs = debugfs_create_dir(KG_DEV_NAME, NULL);
	debugfs_create_file("stats", 0444, kg_debugfs, NULL, &kg_stats_fops);
	return 0;
}

static void __exit kg_exit(void)
{
	debugfs_remove_recursive(kg_debugfs);
	misc_deregister(&kg_dev);
	/* every context is gone (each pinned us); let the reaper finish */
	irq_work_sync(&kg_reap_irq);
	flush_work(&kg_reap_work);
	/* no notifier is linked any more: the key's count goes back */
	if (kg_key_on)
		preempt_notifier_dec();
}

module_init(kg_init);
module_exit(kg_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kgreen: hand a blocked worker thread's coroutines to a spare");
MODULE_AUTHOR("The kgreen authors");
