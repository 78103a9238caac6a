// SPDX-License-Identifier: MIT
/*
 * chan_storm - random select storms, seeded and replayable.
 *
 * 16 coroutines each do a run of random operations on 8 channels of
 * capacities 0, 0, 1, 1, 2, 4, 8 and 16: selects of 1-6 cases in which a
 * channel may appear twice, in either direction, often with a quit case;
 * timeouts of 0, 50 us, 2 ms or forever (a forever select always has a
 * kick case, which main pokes whenever nothing moved for a while); try
 * and timed sends and receives between them. main closes quit halfway.
 *
 * Every operation can end (a timeout, a kick or quit fires), so the storm
 * must finish; a watchdog reports a coroutine that stops moving, with the
 * operation it is in. Values name their sender, channel and the sender's
 * sequence number on that channel, so the checks are exact:
 *   - conservation: every value sent is received exactly once, in a
 *     receive or by main's drain of the buffers at the end, and nothing
 *     is received that was not sent;
 *   - per-sender order: a receiver sees each sender's values on a
 *     channel in the order they were sent.
 *
 * KG_STORM_SEED=N replays one seed (the operations each coroutine draws;
 * the interleaving is the scheduler's); KG_STORM_SEEDS=N runs N seeds
 * per variant (default 6), KG_STORM_OPS=N operations per coroutine.
 */
#define _GNU_SOURCE
#include <inttypes.h>

#include "harness.h"
#include "kg_test.h"

#define NCO 16
#define NCH 8
#define MAXCASES 8		/* 6 random + quit + kick */
#define US 1000ull
#define MS 1000000ull

static const size_t caps[NCH] = { 0, 0, 1, 1, 2, 4, 8, 16 };

enum op_kind { OP_SELECT, OP_TRY_SEND, OP_TRY_RECV, OP_SEND_TO, OP_RECV_TO };

struct storm {
	uint64_t seed;
	long ops;			/* per coroutine */
	kg_chan_t *ch[NCH];
	kg_chan_t *quit, *kick;
	/* recv_count[sender][ch][seq]: times value seq was received */
	_Atomic unsigned char *recv_count;
	uint32_t sent[NCO][NCH];	/* values each sender sent */
	_Atomic long progress;		/* operations finished, all */
	_Atomic int done;		/* coroutines finished */
	_Atomic long order_bad, unknown, bad_result;
	/* what each coroutine is doing, for the watchdog's report */
	struct {
		_Atomic long op;		/* operation number */
		_Atomic int kind;
		_Atomic int ncases;
		_Atomic int64_t timeout;
	} at[NCO];
};

static size_t count_index(const struct storm *s, uint32_t snd, uint32_t c,
			  uint32_t seq)
{
	return ((size_t)snd * NCH + c) * (size_t)s->ops + seq;
}

static uint64_t value_of(uint32_t snd, uint32_t c, uint32_t seq)
{
	return ((uint64_t)(snd + 1) << 40) | ((uint64_t)c << 32) | seq;
}

/* Record a received value; last[] is this receiver's view of the order. */
static void got(struct storm *s, uint32_t c, uint64_t v,
		int64_t last[NCO][NCH])
{
	uint32_t snd = (uint32_t)(v >> 40) - 1, vc = (uint32_t)(v >> 32) & 0xff;
	uint32_t seq = (uint32_t)v;

	if (snd >= NCO || vc != c || seq >= (uint64_t)s->ops) {
		atomic_fetch_add(&s->unknown, 1);
		return;
	}
	atomic_fetch_add(&s->recv_count[count_index(s, snd, c, seq)], 1);
	if (last) {
		if ((int64_t)seq <= last[snd][c])
			atomic_fetch_add(&s->order_bad, 1);
		last[snd][c] = seq;
	}
}

struct co_arg {
	struct storm *s;
	uint32_t id;
};

static int64_t pick_timeout(uint64_t *rng)
{
	switch (xorshift(rng) % 4) {
	case 0:
		return 0;
	case 1:
		return 50 * US;
	case 2:
		return 2 * MS;
	default:
		return -1;
	}
}

static void storm_select(struct storm *s, uint32_t id, uint64_t *rng,
			 uint32_t next[NCH], int64_t last[NCO][NCH])
{
	struct kg_case cs[MAXCASES];
	uint64_t vals[MAXCASES];
	int n = 1 + (int)(xorshift(rng) % 6), i, k, quit_at = -1,
	    kick_at = -1;
	int64_t timeout = pick_timeout(rng);

	for (i = 0; i < n; i++) {
		uint32_t c = (uint32_t)(xorshift(rng) % NCH);

		cs[i].ch = s->ch[c];
		cs[i].op = xorshift(rng) & 1 ? KG_SEND : KG_RECV;
		vals[i] = cs[i].op == KG_SEND ? value_of(id, c, next[c]) : 0;
		cs[i].elem = &vals[i];
	}
	if (xorshift(rng) % 3) {
		quit_at = n;
		cs[n].ch = s->quit;
		cs[n].op = KG_RECV;
		cs[n].elem = NULL;
		n++;
	}
	if (timeout < 0) {
		kick_at = n;
		cs[n].ch = s->kick;
		cs[n].op = KG_RECV;
		cs[n].elem = NULL;
		n++;
	}
	atomic_store(&s->at[id].ncases, n);
	atomic_store(&s->at[id].timeout, timeout);
	k = kg_select(cs, (size_t)n, timeout);
	if (k == -EAGAIN && timeout == 0)
		return;
	if (k == -ETIMEDOUT && timeout > 0)
		return;
	if (k < 0 || k >= n) {
		fprintf(stderr, "# coroutine %u: kg_select returned %d\n", id,
			k);
		atomic_fetch_add(&s->bad_result, 1);
		return;
	}
	if (k == quit_at) {
		if (cs[k].ok)	/* nothing is ever sent on quit */
			atomic_fetch_add(&s->bad_result, 1);
		return;
	}
	if (k == kick_at)
		return;
	for (i = 0; i < NCH; i++)
		if (cs[k].ch == s->ch[i])
			break;
	if (!cs[k].ok) {	/* no channel of the storm is closed */
		atomic_fetch_add(&s->bad_result, 1);
		return;
	}
	if (cs[k].op == KG_SEND) {
		if (vals[k] != value_of(id, (uint32_t)i, next[i]))
			atomic_fetch_add(&s->bad_result, 1);
		next[i]++;
	} else {
		got(s, (uint32_t)i, vals[k], last);
	}
}

static void storm_co(void *p)
{
	struct co_arg *a = p;
	struct storm *s = a->s;
	uint32_t id = a->id, next[NCH] = { 0 };
	uint64_t rng = s->seed * 0x9E3779B97F4A7C15ull + id + 1;
	int64_t last[NCO][NCH];
	long op;
	int i, j;

	for (i = 0; i < NCO; i++)
		for (j = 0; j < NCH; j++)
			last[i][j] = -1;
	for (op = 0; op < s->ops; op++) {
		uint32_t c = (uint32_t)(xorshift(&rng) % NCH);
		int kind = (int)(xorshift(&rng) % 10);
		uint64_t v = value_of(id, c, next[c]), to;
		int r;

		kind = kind < 6 ? OP_SELECT : kind < 7 ? OP_TRY_SEND :
		       kind < 8 ? OP_TRY_RECV : kind < 9 ? OP_SEND_TO :
		       OP_RECV_TO;
		to = xorshift(&rng) & 1 ? 50 * US : 2 * MS;
		atomic_store(&s->at[id].op, op);
		atomic_store(&s->at[id].kind, kind);
		switch (kind) {
		case OP_SELECT:
			storm_select(s, id, &rng, next, last);
			break;
		case OP_TRY_SEND:
		case OP_SEND_TO:
			r = kind == OP_TRY_SEND ?
				    kg_chan_try_send(s->ch[c], &v) :
				    kg_chan_send_timeout(s->ch[c], &v, to);
			if (r == 0)
				next[c]++;
			else if (r != -EAGAIN && r != -ETIMEDOUT)
				atomic_fetch_add(&s->bad_result, 1);
			break;
		default:
			r = kind == OP_TRY_RECV ?
				    kg_chan_try_recv(s->ch[c], &v) :
				    kg_chan_recv_timeout(s->ch[c], &v, to);
			if (r == 0)
				got(s, c, v, last);
			else if (r != -EAGAIN && r != -ETIMEDOUT)
				atomic_fetch_add(&s->bad_result, 1);
			break;
		}
		atomic_fetch_add_explicit(&s->progress, 1,
					  memory_order_relaxed);
	}
	memcpy(s->sent[id], next, sizeof(next));
	atomic_store(&s->at[id].op, -1);
	atomic_fetch_add(&s->done, 1);
}

static const char *kind_name(int k)
{
	static const char *const names[] = { "select", "try_send", "try_recv",
					     "send_timeout", "recv_timeout" };

	return k >= 0 && k < 5 ? names[k] : "?";
}

static uint64_t watchdog_ns(void)
{
	const char *m = getenv("KG_TEST_TIMEOUT_MULT");

	return 10000 * MS * (uint64_t)(m && atoi(m) > 0 ? atoi(m) : 1);
}

/* main: start the storm, poke kick while nothing moves, close quit
 * halfway, watch for a coroutine that stops, then drain and check. */
static void storm_main(void *p)
{
	struct storm *s = p;
	struct co_arg args[NCO];
	long total = s->ops * NCO, seen = -1;
	uint64_t last_move = kg_now_ns();
	bool quit_closed = false;
	uint32_t i;

	for (i = 0; i < NCO; i++) {
		args[i] = (struct co_arg){ s, i };
		CO_CHECK(kg_go(storm_co, &args[i]) > 0, "spawn");
	}
	while (atomic_load(&s->done) < NCO) {
		long now = atomic_load(&s->progress);

		kg_sleep(200 * US);
		if (!quit_closed && now >= total / 2) {
			kg_chan_close(s->quit);
			quit_closed = true;
		}
		if (now != seen) {
			seen = now;
			last_move = kg_now_ns();
			continue;
		}
		/* nothing moved in 200 us: free one select waiting forever */
		kg_chan_try_send(s->kick, NULL);
		if (kg_now_ns() - last_move > watchdog_ns()) {
			fprintf(stderr, "# seed %" PRIu64 ": no progress for "
				"%" PRIu64 " ms at %ld of %ld operations\n",
				s->seed, (uint64_t)(watchdog_ns() / MS), now,
				total);
			for (i = 0; i < NCO; i++)
				if (atomic_load(&s->at[i].op) >= 0)
					fprintf(stderr, "#   coroutine %u: "
						"operation %ld, %s, %d cases, "
						"timeout %" PRId64 "\n", i,
						atomic_load(&s->at[i].op),
						kind_name(atomic_load(
							&s->at[i].kind)),
						atomic_load(&s->at[i].ncases),
						atomic_load(&s->at[i].timeout));
			CO_CHECK(false, "storm stuck (seed %" PRIu64 ")",
				 s->seed);
			return;	/* the stuck ones are abandoned */
		}
	}
	/* what the buffers still hold */
	for (i = 0; i < NCH; i++) {
		uint64_t v;

		while (kg_chan_try_recv(s->ch[i], &v) == 0)
			got(s, i, v, NULL);
	}
}

static void storm_check(struct __test_metadata *_metadata, struct storm *s)
{
	long lost = 0, dup = 0, sent = 0;
	uint32_t snd, c, seq;

	for (snd = 0; snd < NCO; snd++)
		for (c = 0; c < NCH; c++)
			for (seq = 0; seq < (uint32_t)s->ops; seq++) {
				unsigned n = atomic_load(&s->recv_count[
					count_index(s, snd, c, seq)]);

				if (seq < s->sent[snd][c]) {
					sent++;
					lost += n == 0;
					dup += n > 1;
				} else if (n) {
					dup++;	/* received, never sent */
				}
			}
	if (lost || dup || s->unknown || s->order_bad || s->bad_result)
		TH_LOG("seed %" PRIu64 ": %ld sent, %ld lost, %ld duplicated "
		       "or invented, %ld unknown, %ld out of order, %ld bad "
		       "results", s->seed, sent, lost, dup,
		       atomic_load(&s->unknown), atomic_load(&s->order_bad),
		       atomic_load(&s->bad_result));
	ASSERT_EQ(0, lost);
	ASSERT_EQ(0, dup);
	ASSERT_EQ(0, atomic_load(&s->unknown));
	ASSERT_EQ(0, atomic_load(&s->order_bad));
	ASSERT_EQ(0, atomic_load(&s->bad_result));
	ASSERT_LT(0, sent);
}

static long env_long(const char *name, long dflt)
{
	const char *v = getenv(name);

	return v && atol(v) > 0 ? atol(v) : dflt;
}

FIXTURE(storm) {
};

FIXTURE_VARIANT(storm) {
	unsigned int procs;
};

FIXTURE_VARIANT_ADD(storm, procs1) { .procs = 1 };
FIXTURE_VARIANT_ADD(storm, procs2) { .procs = 2 };

FIXTURE_SETUP(storm) {}
FIXTURE_TEARDOWN(storm) {}

TEST_F_TIMEOUT(storm, seeds_finish_and_conserve, 600)
{
	long nseeds = env_long("KG_STORM_SEEDS", KG_TEST_SANITIZED ? 2 : 6);
	long ops = env_long("KG_STORM_OPS", scaled(20000, 10));
	const char *one = getenv("KG_STORM_SEED");
	uint64_t base = one ? strtoull(one, NULL, 0) : (uint64_t)time(NULL);
	long k;

	if (one)
		nseeds = 1;
	for (k = 0; k < nseeds; k++) {
		struct storm *s = calloc(1, sizeof(*s));
		uint32_t i;

		ASSERT_NONNULL(s);
		s->seed = base + (uint64_t)k;
		s->ops = ops;
		s->recv_count = calloc((size_t)NCO * NCH * (size_t)ops, 1);
		ASSERT_NONNULL(s->recv_count);
		for (i = 0; i < NCH; i++)
			ASSERT_NONNULL(s->ch[i] = kg_chan_make(sizeof(uint64_t),
								caps[i]));
		ASSERT_NONNULL(s->quit = kg_chan_make(0, 0));
		ASSERT_NONNULL(s->kick = kg_chan_make(0, 0));
		ASSERT_EQ(0, run_kg(storm_main, s, variant->procs));
		ASSERT_EQ(0, co_failures());
		storm_check(_metadata, s);
		for (i = 0; i < NCH; i++)
			kg_chan_free(s->ch[i]);
		kg_chan_free(s->quit);
		kg_chan_free(s->kick);
		free(s->recv_count);
		free(s);
	}
	TH_LOG("%ld seeds from %" PRIu64 ", %ld operations per coroutine",
	       nseeds, base, ops);
}

TEST_HARNESS_MAIN
