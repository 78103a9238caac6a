// SPDX-License-Identifier: MIT
/*
 * pipeline - the Go blog's "Go Concurrency Patterns: Pipelines and
 * cancellation", in kgreen.
 *
 * A pipeline is a series of stages joined by channels; each stage is a
 * coroutine that receives from upstream, works, and sends downstream.
 *
 *	func gen(nums ...int) <-chan int {
 *		out := make(chan int)
 *		go func() {
 *			for _, n := range nums {
 *				out <- n
 *			}
 *			close(out)
 *		}()
 *		return out
 *	}
 *
 *	func sq(in <-chan int) <-chan int {
 *		out := make(chan int)
 *		go func() {
 *			for n := range in {
 *				out <- n * n
 *			}
 *			close(out)
 *		}()
 *		return out
 *	}
 *
 *	for n := range sq(sq(gen(2, 3))) {
 *		fmt.Println(n) // 16 then 81
 *	}
 *
 * The close propagates: gen closes its output when it runs out of numbers,
 * the first sq sees that (kg_recv returns -EPIPE: Go's range loop ends),
 * closes its own output, and so on to main.
 *
 * Fan-out, fan-in: several sq stages may read the same channel (each value
 * goes to one of them), and merge() joins their outputs into one channel,
 * closed once all of its inputs are (a WaitGroup counts them). With a fixed
 * number of workers this bounds the parallelism: part 3 squares 1..100 on
 * 4 workers.
 *
 * Freeing, which Go leaves to its collector: every channel made here is
 * remembered, every stage is counted in a WaitGroup, and main frees the
 * channels after the last stage has returned.
 *
 * The program checks each result and exits 1 if one is wrong.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- bookkeeping: start stages, make channels, free them at the end ---- */

static kg_wg_t stages = KG_WG_INIT;	/* stage coroutines still running */
static kg_chan_t *made[64];		/* every channel, for free_all() */
static int nmade;

static void start(void (*fn)(void *), void *arg)
{
	kg_wg_add(&stages, 1);
	if (kg_go(fn, arg) < 0) {
		fprintf(stderr, "pipeline: cannot start a stage\n");
		exit(1);
	}
}

/* A stage's arguments outlive the call that starts it: on the heap. */
static void *xmalloc(size_t size)
{
	void *p = malloc(size);

	if (!p) {
		fprintf(stderr, "pipeline: out of memory\n");
		exit(1);
	}
	return p;
}

/* make(chan int) */
static kg_chan_t *make_int_chan(void)
{
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);

	if (!c || nmade == (int)(sizeof(made) / sizeof(made[0]))) {
		fprintf(stderr, "pipeline: cannot make a channel\n");
		exit(1);
	}
	made[nmade++] = c;
	return c;
}

/* Wait until every stage has returned, then free every channel. */
static void free_all(void)
{
	kg_wg_wait(&stages);
	while (nmade)
		kg_chan_free(made[--nmade]);
}

/* ---- the stages ---- */

struct gen_arg {
	const int *nums;
	int n;
	kg_sendch_t out;
};

static void gen_co(void *p)
{
	struct gen_arg *a = p;
	int i;

	for (i = 0; i < a->n; i++)
		kg_send(a->out, &a->nums[i]);
	kg_chan_close(a->out.ch);	/* close(out) */
	free(a);
	kg_wg_done(&stages);
}

/* gen(nums...): a stage that sends nums, then closes its output. */
static kg_recvch_t gen(const int *nums, int n)
{
	kg_chan_t *out = make_int_chan();
	struct gen_arg *a = xmalloc(sizeof(*a));

	*a = (struct gen_arg){ nums, n, kg_chan_sender(out) };
	start(gen_co, a);
	return kg_chan_receiver(out);
}

struct sq_arg {
	kg_recvch_t in;
	kg_sendch_t out;
};

static void sq_co(void *p)
{
	struct sq_arg *a = p;
	int n;

	while (kg_recv(a->in, &n) == 0) {	/* for n := range in */
		n *= n;
		kg_send(a->out, &n);
	}
	kg_chan_close(a->out.ch);
	free(a);
	kg_wg_done(&stages);
}

/* sq(in): a stage that squares what it receives. */
static kg_recvch_t sq(kg_recvch_t in)
{
	kg_chan_t *out = make_int_chan();
	struct sq_arg *a = xmalloc(sizeof(*a));

	*a = (struct sq_arg){ in, kg_chan_sender(out) };
	start(sq_co, a);
	return kg_chan_receiver(out);
}

/* merge: one "output" coroutine per input copies it to out; a last one
 * closes out when they have all finished. */
struct merge {
	kg_sendch_t out;
	kg_wg_t wg;		/* output coroutines still copying */
};

struct output_arg {
	kg_recvch_t c;
	struct merge *m;
};

static void output_co(void *p)
{
	struct output_arg *a = p;
	int n;

	while (kg_recv(a->c, &n) == 0)
		kg_send(a->m->out, &n);
	kg_wg_done(&a->m->wg);
	free(a);
	kg_wg_done(&stages);
}

static void closer_co(void *p)
{
	struct merge *m = p;

	/* go func() { wg.Wait(); close(out) }() */
	kg_wg_wait(&m->wg);
	kg_chan_close(m->out.ch);
	free(m);
	kg_wg_done(&stages);
}

/* merge(cs...): everything received on cs[0..n) comes out of one channel. */
static kg_recvch_t merge(const kg_recvch_t *cs, int n)
{
	kg_chan_t *out = make_int_chan();
	struct merge *m = xmalloc(sizeof(*m));
	int i;

	*m = (struct merge){ kg_chan_sender(out), KG_WG_INIT };
	kg_wg_add(&m->wg, n);
	for (i = 0; i < n; i++) {
		struct output_arg *a = xmalloc(sizeof(*a));

		*a = (struct output_arg){ cs[i], m };
		start(output_co, a);
	}
	start(closer_co, m);
	return kg_chan_receiver(out);
}

/* ---- main ---- */

static int failed;

static void expect(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "pipeline: wrong: %s\n", what);
		failed = 1;
	}
}

#define NWORKERS 4
#define NNUMS 100

static void main_co(void *arg)
{
	static const int two_three[] = { 2, 3 };
	static int nums[NNUMS];
	kg_recvch_t in, c, cs[NWORKERS];
	int n, got[4], count = 0, i;
	long total = 0;

	(void)arg;
	/* 1. a straight pipeline: gen -> sq -> sq -> main */
	c = sq(sq(gen(two_three, 2)));
	while (kg_recv(c, &n) == 0) {
		printf("%d\n", n);
		if (count < 4)
			got[count] = n;
		count++;
	}
	expect(count == 2 && got[0] == 16 && got[1] == 81, "16 then 81");

	/* 2. fan-out to two sq stages reading the same channel, fan-in */
	in = gen(two_three, 2);
	cs[0] = sq(in);
	cs[1] = sq(in);
	count = 0;
	c = merge(cs, 2);
	while (kg_recv(c, &n) == 0) {
		printf("%d\n", n);
		if (count < 4)
			got[count] = n;
		count++;
	}
	expect(count == 2 && got[0] + got[1] == 13 &&
	       (got[0] == 4 || got[0] == 9), "4 and 9, in either order");

	/* 3. bounded parallelism: 1..100 squared by NWORKERS workers */
	for (i = 0; i < NNUMS; i++)
		nums[i] = i + 1;
	in = gen(nums, NNUMS);
	for (i = 0; i < NWORKERS; i++)
		cs[i] = sq(in);
	c = merge(cs, NWORKERS);
	count = 0;
	while (kg_recv(c, &n) == 0) {
		total += n;
		count++;
	}
	printf("sum of squares 1..%d on %d workers: %ld\n", NNUMS, NWORKERS,
	       total);
	expect(count == NNUMS && total == 338350,
	       "100 squares summing to 338350");

	free_all();
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "pipeline: kg_run failed\n");
		return 1;
	}
	return failed;
}
