// SPDX-License-Identifier: MIT
/*
 * chan_model - model-based random tests: the same random programs of
 * channel operations run on the lock-free channel (kg_chan_*) and on the
 * oracle (Go's hchan design, kg_hchan_*), on one proc where the schedule
 * is deterministic, and every result of every operation must match:
 * return codes, values received, lengths, who saw the close.
 *
 * Selects are among the operations: two or three cases over the two
 * channels, a channel named in both directions (then two selects may meet
 * on it), blocking or with a default. Both selects poll in case order
 * (kg__select_in_order), so that both choose alike; one case per channel
 * and direction, since Go's order among a select's duplicates on one
 * channel is its lock order, not the cases'. A select's send cases go to
 * unbuffered channels only (channel 0 is always unbuffered): a send that
 * parked on a full buffered channel and left (a select completed
 * elsewhere, a timeout) leaves a broken cell inside the buffer's window
 * until receivers pass it, one slot fewer meanwhile, where Go's buffer
 * keeps its capacity (Documentation/channels.md, limits).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>

#include "harness.h"
#include "kg_test.h"
#include "hchan.h"

#define NCO 6
#define NOPS 40
#define NCH 2

/* The two implementations behind one interface. */
struct impl {
	const char *name;
	void *(*make)(size_t, size_t);
	void (*free_)(void *);
	int (*send)(void *, const void *);
	int (*recv)(void *, void *);
	int (*try_send)(void *, const void *);
	int (*try_recv)(void *, void *);
	int (*close)(void *);
	size_t (*len)(void *);
	int (*select)(void *cases, size_t n, int64_t timeout);
};

static const struct impl lockfree = {
	"lock-free", (void *(*)(size_t, size_t))kg_chan_make,
	(void (*)(void *))kg_chan_free,
	(int (*)(void *, const void *))kg_chan_send,
	(int (*)(void *, void *))kg_chan_recv,
	(int (*)(void *, const void *))kg_chan_try_send,
	(int (*)(void *, void *))kg_chan_try_recv,
	(int (*)(void *))kg_chan_close,
	(size_t (*)(void *))kg_chan_len,
	(int (*)(void *, size_t, int64_t))kg_select,
};
static const struct impl oracle = {
	"oracle", (void *(*)(size_t, size_t))kg_hchan_make,
	(void (*)(void *))kg_hchan_free,
	(int (*)(void *, const void *))kg_hchan_send,
	(int (*)(void *, void *))kg_hchan_recv,
	(int (*)(void *, const void *))kg_hchan_try_send,
	(int (*)(void *, void *))kg_hchan_try_recv,
	(int (*)(void *))kg_hchan_close,
	(size_t (*)(void *))kg_hchan_len,
	(int (*)(void *, size_t, int64_t))kg_hselect,
};

/* struct kg_case and struct kg_hcase are laid out alike */
_Static_assert(sizeof(struct kg_case) == sizeof(struct kg_hcase) &&
		       offsetof(struct kg_case, elem) ==
			       offsetof(struct kg_hcase, elem) &&
		       offsetof(struct kg_case, ok) ==
			       offsetof(struct kg_hcase, ok),
	       "case layouts differ");

enum { OP_SEND, OP_RECV, OP_TRY_SEND, OP_TRY_RECV, OP_YIELD, OP_LEN,
       OP_SELECT, NOP };

#define MAXCASES 3

struct step {
	int op, ch;
	long val;
	/* OP_SELECT: ncases cases, case k on channel sch[k], sending if
	 * ssend[k] (the value val * 4 + k); blocking or with a default */
	int ncases, sch[MAXCASES], ssend[MAXCASES];
	bool nonblock;
};

struct program {
	size_t cap[NCH];
	struct step steps[NCO][NOPS];
	int main_yields;
};

struct trace {
	long res[NCO][NOPS][2];		/* return code, value */
	long start[NCO][NOPS], end[NCO][NOPS];	/* global order (debugging) */
	long clock;
	long closes[NCH];
	long final_len[NCH];
};

struct run {
	const struct impl *im;
	const struct program *pg;
	struct trace *tr;
	void *ch[NCH];
	kg_wg_t wg;
	int id[NCO];
	struct run *self;
};

static struct run *cur;

static void actor(void *p)
{
	int me = *(int *)p, i;
	struct run *r = cur;

	for (i = 0; i < NOPS; i++) {
		const struct step *s = &r->pg->steps[me][i];
		void *c = r->ch[s->ch];
		long v = -1, rc = 0;

		r->tr->start[me][i] = r->tr->clock++;
		switch (s->op) {
		case OP_SEND:
			rc = r->im->send(c, &s->val);
			break;
		case OP_RECV:
			rc = r->im->recv(c, &v);
			break;
		case OP_TRY_SEND:
			rc = r->im->try_send(c, &s->val);
			break;
		case OP_TRY_RECV:
			rc = r->im->try_recv(c, &v);
			break;
		case OP_YIELD:
			kg_yield();
			break;
		case OP_LEN:
			v = (long)r->im->len(c);
			break;
		case OP_SELECT: {
			struct kg_case cs[MAXCASES];
			long vals[MAXCASES], got[MAXCASES];
			int k;

			for (k = 0; k < s->ncases; k++) {
				vals[k] = s->val * 4 + k;
				got[k] = -1;
				cs[k] = (struct kg_case){
					r->ch[s->sch[k]],
					s->ssend[k] ? KG_SEND : KG_RECV,
					s->ssend[k] ? &vals[k] : &got[k], false
				};
			}
			rc = r->im->select(cs, (size_t)s->ncases,
					   s->nonblock ? 0 : -1);
			/* which case, and what it received (-2: closed) */
			if (rc >= 0 && !s->ssend[rc])
				v = cs[rc].ok ? got[rc] : -2;
			else if (rc >= 0)
				v = cs[rc].ok;
			if (rc >= 0) {
				r->tr->res[me][i][0] = 100 + rc;
				r->tr->res[me][i][1] = v;
				r->tr->end[me][i] = r->tr->clock++;
				continue;
			}
			break;
		}
		}
		r->tr->end[me][i] = r->tr->clock++;
		r->tr->res[me][i][0] = rc;
		r->tr->res[me][i][1] = rc ? -1 : v;
	}
	kg_wg_done(&r->wg);
}

static void model_main(void *p)
{
	struct run *r = p;
	int i;

	cur = r;
	kg_wg_add(&r->wg, NCO);
	for (i = 0; i < NCO; i++) {
		r->id[i] = i;
		kg_go(actor, &r->id[i]);
	}
	for (i = 0; i < r->pg->main_yields; i++)
		kg_yield();
	/* close both: every blocked operation ends, so all finish */
	for (i = 0; i < NCH; i++)
		r->tr->closes[i] = r->im->close(r->ch[i]);
	kg_wg_wait(&r->wg);
	for (i = 0; i < NCH; i++)
		r->tr->final_len[i] = (long)r->im->len(r->ch[i]);
}

static void gen(struct program *pg, unsigned int *seed)
{
	int i, j;
	long next = 1;

	/* one channel unbuffered at least: select sends go there */
	for (i = 0; i < NCH; i++)
		pg->cap[i] = i == 0 ? 0 : (size_t)(rand_r(seed) % 4);
	pg->main_yields = rand_r(seed) % 60;
	for (i = 0; i < NCO; i++)
		for (j = 0; j < NOPS; j++) {
			struct step *s = &pg->steps[i][j];

			s->op = rand_r(seed) % NOP;
			s->ch = rand_r(seed) % NCH;
			s->val = next++;
			if (s->op == OP_SELECT) {
				int k, used = 0;

				s->ncases = 2 + rand_r(seed) % 2;
				s->nonblock = rand_r(seed) % 3 == 0;
				for (k = 0; k < s->ncases; k++) {
					int slot;

					/* one case per channel and direction;
					 * sends only on unbuffered channels */
					do {
						s->sch[k] = rand_r(seed) % NCH;
						s->ssend[k] = rand_r(seed) % 2 &&
							      !pg->cap[s->sch[k]];
						slot = 1 << (s->sch[k] * 2 +
							     s->ssend[k]);
					} while (used & slot);
					used |= slot;
				}
			}
		}
}

static int run_once(const struct impl *im, const struct program *pg,
		    struct trace *tr)
{
	struct run r = { .im = im, .pg = pg, .tr = tr };
	int i, rc;

	memset(tr, 0, sizeof(*tr));
	for (i = 0; i < NCH; i++)
		r.ch[i] = im->make(sizeof(long), pg->cap[i]);
	/*
	 * One coroutine at a time, so that the logical clock orders the
	 * operations: sysmon, because with a kernel backend a coroutine whose
	 * proc was taken while it blocked (a page fault) runs on beside the
	 * proc's new worker until its next scheduler entry.
	 */
	kg__select_in_order = 1;
	rc = kg_run(model_main, &r,
		    &(struct kg_config){ .procs = 1, .backend = "sysmon" });
	kg__select_in_order = 0;
	for (i = 0; i < NCH; i++)
		im->free_(r.ch[i]);
	return rc;
}

TEST_TIMEOUT(same_results_as_the_oracle, 120)
{
	static struct program pg;
	static struct trace a, b;
	unsigned int seed = harness_seed();
	long n = scaled(400, 8), k;
	int i, j;

	for (k = 0; k < n; k++) {
		gen(&pg, &seed);
		ASSERT_EQ(0, run_once(&lockfree, &pg, &a));
		ASSERT_EQ(0, run_once(&oracle, &pg, &b));
		for (i = 0; i < NCO; i++)
			for (j = 0; j < NOPS; j++) {
				if (a.res[i][j][0] == b.res[i][j][0] &&
				    a.res[i][j][1] == b.res[i][j][1])
					continue;
				TH_LOG("program %ld: coroutine %d step %d (op %d "
				       "on ch %d, caps %zu/%zu): lock-free %ld/%ld, "
				       "oracle %ld/%ld", k, i, j,
				       pg.steps[i][j].op, pg.steps[i][j].ch,
				       pg.cap[0], pg.cap[1], a.res[i][j][0],
				       a.res[i][j][1], b.res[i][j][0],
				       b.res[i][j][1]);
				if (getenv("KG_MODEL_DUMP")) {
					int x, y;

					for (x = 0; x < NCO; x++)
						for (y = 0; y < NOPS; y++)
							fprintf(stderr, "# lf %4ld-%4ld or %4ld-%4ld co %d step %2d op %d ch %d val %3ld: lf %3ld/%3ld or %3ld/%3ld%s\n",
								a.start[x][y], a.end[x][y], b.start[x][y], b.end[x][y],
								x, y, pg.steps[x][y].op, pg.steps[x][y].ch, pg.steps[x][y].val,
								a.res[x][y][0], a.res[x][y][1], b.res[x][y][0], b.res[x][y][1],
								a.res[x][y][0] != b.res[x][y][0] || a.res[x][y][1] != b.res[x][y][1] ? "  <<<" : "");
					fprintf(stderr, "# main yields %d\n", pg.main_yields);
					for (x = 0; x < NCO; x++)
						for (y = 0; y < NOPS; y++) {
							const struct step *st = &pg.steps[x][y];

							if (st->op != OP_SELECT)
								continue;
							fprintf(stderr, "# select co %d step %d:%s", x, y, st->nonblock ? " default" : "");
							for (int q = 0; q < st->ncases; q++)
								fprintf(stderr, " %s ch%d", st->ssend[q] ? "send" : "recv", st->sch[q]);
							fprintf(stderr, "\n");
						}
				}
				ASSERT_TRUE(0);
			}
		for (i = 0; i < NCH; i++) {
			ASSERT_EQ(b.closes[i], a.closes[i]);
			ASSERT_EQ(b.final_len[i], a.final_len[i]);
		}
	}
	TH_LOG("%ld random programs agree", n);
}

TEST_HARNESS_MAIN
