// SPDX-License-Identifier: MIT
/*
 * detach_rule - kg_detach_rule(), the test every backend applies to a
 * worker that blocks (kmod/include/uapi/kgreen.h), driven directly on a
 * struct kg_shared in memory: each reason to do nothing, the idle block,
 * and each kind of work that makes a detach.
 */
#include "harness.h"

/* as libkgreen reads the shared state: relaxed atomic loads */
#define KG_LOAD_ONCE(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#include <uapi/kgreen.h>

#define NPROCS 4u
#define WORKER 5u
#define PROC 2u
/* what kg_detach_rule must leave alone when it answers NONE */
#define UNTOUCHED 0xdeadbeefu

/* A runtime with NPROCS procs; worker WORKER runs a coroutine on PROC. */
static struct kg_shared *shared_new(void)
{
	struct kg_shared *sh = aligned_alloc(64, sizeof(*sh));
	unsigned int i;

	if (!sh)
		return NULL;
	memset(sh, 0, sizeof(*sh));
	sh->hdr.version = KG_ABI_VERSION;
	sh->hdr.nprocs = NPROCS;
	for (i = 0; i < KG_MAX_WORKERS; i++)
		sh->workers[i].proc = KG_PROC_NONE;
	for (i = 0; i < KG_MAX_PROCS; i++)
		sh->procs[i].owner = KG_OWNER_DETACHED;
	/* a ring that has wrapped: equal indices, still empty */
	for (i = 0; i < NPROCS; i++)
		sh->procs[i].runq_head = sh->procs[i].runq_tail = 1000 + i;
	sh->workers[WORKER].proc = PROC;
	sh->procs[PROC].owner = WORKER;
	return sh;
}

/* Give proc p one coroutine queued locally. */
static void queue_one(struct kg_shared *sh, unsigned int p)
{
	sh->procs[p].runq_tail++;
}

static int rule(const struct kg_shared *sh, unsigned int worker, __u32 *proc)
{
	*proc = UNTOUCHED;
	return kg_detach_rule(sh, &sh->workers[worker], proc);
}

FIXTURE(rule) {
	struct kg_shared *sh;
};

FIXTURE_VARIANT(rule) {};

FIXTURE_SETUP(rule)
{
	self->sh = shared_new();
	ASSERT_NONNULL(self->sh);
}

FIXTURE_TEARDOWN(rule)
{
	free(self->sh);
}

TEST(answers_are_distinct)
{
	ASSERT_EQ(0, KG_DETACH_NONE);
	ASSERT_NE(KG_DETACH_NONE, KG_DETACH_IDLE);
	ASSERT_NE(KG_DETACH_NONE, KG_DETACH_YES);
	ASSERT_NE(KG_DETACH_IDLE, KG_DETACH_YES);
}

/* The one answer that detaches, against which the others differ by one field. */
TEST_F(rule, work_queued_detaches)
{
	__u32 p;

	queue_one(self->sh, PROC);
	ASSERT_EQ(KG_DETACH_YES, rule(self->sh, WORKER, &p));
	ASSERT_EQ(PROC, p);
}

TEST_F(rule, in_scheduler_code_is_none)
{
	__u32 p;

	queue_one(self->sh, PROC);
	self->sh->workers[WORKER].in_sched = 1;
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(UNTOUCHED, p);
	/* any nonzero value: userspace may store what it likes */
	self->sh->workers[WORKER].in_sched = 0x80000000u;
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(UNTOUCHED, p);
	self->sh->workers[WORKER].in_sched = 0;
	ASSERT_EQ(KG_DETACH_YES, rule(self->sh, WORKER, &p));
}

TEST_F(rule, no_proc_is_none)
{
	__u32 p;

	/* work everywhere, the global queue too: still nothing to detach */
	queue_one(self->sh, PROC);
	self->sh->hdr.gq_len = 3;
	self->sh->workers[WORKER].proc = KG_PROC_NONE;
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(UNTOUCHED, p);
	/* a worker never registered has KG_PROC_NONE too */
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER + 1, &p));
	ASSERT_EQ(UNTOUCHED, p);
}

TEST_F(rule, proc_at_or_past_nprocs_is_none)
{
	__u32 p;

	queue_one(self->sh, NPROCS);
	self->sh->workers[WORKER].proc = NPROCS;
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(UNTOUCHED, p);
	self->sh->workers[WORKER].proc = KG_MAX_PROCS - 1;
	queue_one(self->sh, KG_MAX_PROCS - 1);
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(UNTOUCHED, p);
	/* no procs at all */
	self->sh->hdr.nprocs = 0;
	self->sh->workers[WORKER].proc = 0;
	queue_one(self->sh, 0);
	ASSERT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(UNTOUCHED, p);
	/* the last proc in range does detach */
	self->sh->hdr.nprocs = NPROCS;
	self->sh->workers[WORKER].proc = NPROCS - 1;
	queue_one(self->sh, NPROCS - 1);
	ASSERT_EQ(KG_DETACH_YES, rule(self->sh, WORKER, &p));
	ASSERT_EQ(NPROCS - 1, p);
}

/* Past the array, whatever hdr.nprocs claims (userspace may lie). */
TEST_F(rule, proc_at_or_past_max_procs_is_none)
{
	static const __u32 bad[] = {
		KG_MAX_PROCS, KG_MAX_PROCS + 1, 0x7fffffffu, KG_PROC_NONE - 1,
	};
	static const __u32 nprocs[] = {
		KG_MAX_PROCS, KG_MAX_PROCS + 1, 0xffffffffu,
	};
	unsigned int i, j;
	__u32 p;

	queue_one(self->sh, PROC);
	self->sh->hdr.gq_len = 1;
	for (j = 0; j < sizeof(nprocs) / sizeof(nprocs[0]); j++) {
		self->sh->hdr.nprocs = nprocs[j];
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			self->sh->workers[WORKER].proc = bad[i];
			EXPECT_EQ(KG_DETACH_NONE, rule(self->sh, WORKER, &p))
				TH_LOG("proc %u, nprocs %u", bad[i], nprocs[j]);
			EXPECT_EQ(UNTOUCHED, p);
		}
		/* the array's last slot is in range when nprocs allows it */
		self->sh->workers[WORKER].proc = KG_MAX_PROCS - 1;
		EXPECT_EQ(KG_DETACH_YES, rule(self->sh, WORKER, &p))
			TH_LOG("nprocs %u", nprocs[j]);
		EXPECT_EQ((__u32)KG_MAX_PROCS - 1, p);
	}
}

TEST_F(rule, no_work_is_idle)
{
	__u32 p;

	ASSERT_EQ(KG_DETACH_IDLE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(PROC, p);
	/* another proc's work is not this proc's */
	queue_one(self->sh, PROC + 1);
	self->sh->procs[PROC + 1].runnext = 1;
	self->sh->procs[PROC + 1].timers = 1;
	ASSERT_EQ(KG_DETACH_IDLE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(PROC, p);
	/* neither is the header's kernel-module hint */
	self->sh->hdr.kev_pending = 5;
	ASSERT_EQ(KG_DETACH_IDLE, rule(self->sh, WORKER, &p));
	/* an empty ring at index 0 and at the wrap of the indices */
	self->sh->procs[PROC].runq_head = self->sh->procs[PROC].runq_tail = 0;
	ASSERT_EQ(KG_DETACH_IDLE, rule(self->sh, WORKER, &p));
	self->sh->procs[PROC].runq_head = 0xffffffffu;
	self->sh->procs[PROC].runq_tail = 0xffffffffu;
	ASSERT_EQ(KG_DETACH_IDLE, rule(self->sh, WORKER, &p));
	ASSERT_EQ(PROC, p);
}

/* Each kind of work alone makes a detach. */
enum work { RUNQ, RUNQ_WRAPPED, RUNQ_STOLEN, RUNNEXT, TIMERS, GLOBAL };

FIXTURE(work) {
	struct kg_shared *sh;
};

FIXTURE_VARIANT(work) {
	enum work kind;
};

FIXTURE_VARIANT_ADD(work, runq) { .kind = RUNQ };
/* tail wrapped past 2^32, head not yet */
FIXTURE_VARIANT_ADD(work, runq_wrapped) { .kind = RUNQ_WRAPPED };
/* head ahead of tail (a racy read may see that): unequal is work */
FIXTURE_VARIANT_ADD(work, runq_head_ahead) { .kind = RUNQ_STOLEN };
FIXTURE_VARIANT_ADD(work, runnext) { .kind = RUNNEXT };
FIXTURE_VARIANT_ADD(work, timers) { .kind = TIMERS };
FIXTURE_VARIANT_ADD(work, global_queue) { .kind = GLOBAL };

FIXTURE_SETUP(work)
{
	struct kg_proc_slot *ps;

	self->sh = shared_new();
	ASSERT_NONNULL(self->sh);
	ps = &self->sh->procs[PROC];
	switch (variant->kind) {
	case RUNQ:
		ps->runq_tail++;
		break;
	case RUNQ_WRAPPED:
		ps->runq_head = 0xffffffffu;
		ps->runq_tail = 0;
		break;
	case RUNQ_STOLEN:
		ps->runq_head = ps->runq_tail + 1;
		break;
	case RUNNEXT:
		ps->runnext = 1ull << 40;	/* opaque, any nonzero value */
		break;
	case TIMERS:
		ps->timers = 1;
		break;
	case GLOBAL:
		self->sh->hdr.gq_len = 1;
		break;
	}
}

FIXTURE_TEARDOWN(work)
{
	free(self->sh);
}

TEST_F(work, detaches)
{
	__u32 p = UNTOUCHED;

	ASSERT_EQ(KG_DETACH_YES, kg_detach_rule(self->sh,
						&self->sh->workers[WORKER],
						&p));
	ASSERT_EQ(PROC, p);
	/* the same work, seen from scheduler code: nothing */
	self->sh->workers[WORKER].in_sched = 1;
	p = UNTOUCHED;
	ASSERT_EQ(KG_DETACH_NONE, kg_detach_rule(self->sh,
						 &self->sh->workers[WORKER],
						 &p));
	ASSERT_EQ(UNTOUCHED, p);
}

TEST_HARNESS_MAIN
