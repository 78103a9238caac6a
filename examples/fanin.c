// SPDX-License-Identifier: MIT
/*
 * fanin - fan-in with select, from Rob Pike's "Go Concurrency Patterns".
 *
 *	func boring(msg string, quit <-chan bool) <-chan string {
 *		c := make(chan string)
 *		go func() {
 *			for i := 0; ; i++ {
 *				select {
 *				case c <- fmt.Sprintf("%s %d", msg, i):
 *				case <-quit:
 *					return
 *				}
 *				time.Sleep(time.Duration(rand.Intn(1e3)) * time.Millisecond)
 *			}
 *		}()
 *		return c
 *	}
 *
 *	func fanIn(input1, input2 <-chan string) <-chan string {
 *		c := make(chan string)
 *		go func() {
 *			for {
 *				select {
 *				case s := <-input1: c <- s
 *				case s := <-input2: c <- s
 *				}
 *			}
 *		}()
 *		return c
 *	}
 *
 *	c := fanIn(boring("Joe", quit), boring("Ann", quit))
 *	timeout := time.After(5 * time.Second)
 *	for {
 *		select {
 *		case s := <-c:
 *			fmt.Println(s)
 *		case <-timeout:
 *			fmt.Println("You're both boring; I'm leaving.")
 *			return
 *		}
 *	}
 *
 * A generator is a function that starts a coroutine and returns the
 * channel it talks on. fanIn merges two of them: whoever is ready speaks.
 * kg_select is Go's select: an array of cases, each a channel and an
 * operation; it waits until one can proceed, does that one and returns
 * its index. kg_after is time.After: a channel that receives once, when
 * the time is up. Here the whole conversation lasts 200 ms.
 *
 * Stopping cleanly, which C needs before it can free the channels: main
 * closes quit. A closed channel is always ready to receive from, so every
 * select that has a quit case takes it, and the three coroutines return.
 *
 * The program checks that each speaker's messages arrive in order with no
 * gap ("Joe 0", "Joe 1", ...) and that both got to speak; it exits 1
 * otherwise.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000ull		/* nanoseconds in a millisecond */
#define TALK_MS 200

/* Messages travel by value: the text is copied into and out of the channel. */
struct msg {
	char who[8];
	int seq;
};

static kg_wg_t running = KG_WG_INIT;	/* coroutines not yet returned */

static void start(void (*fn)(void *), void *arg)
{
	kg_wg_add(&running, 1);
	if (kg_go(fn, arg) < 0) {
		fprintf(stderr, "fanin: kg_go failed\n");
		exit(1);
	}
}

static kg_chan_t *make_chan(size_t elem_size)
{
	kg_chan_t *c = kg_chan_make(elem_size, 0);

	if (!c) {
		fprintf(stderr, "fanin: kg_chan_make failed\n");
		exit(1);
	}
	return c;
}

/* ---- the generator ---- */

struct boring {
	kg_chan_t *c;		/* what it says */
	kg_recvch_t quit;
	const char *name;
	unsigned int seed;	/* for its random pauses */
};

static void boring_co(void *p)
{
	struct boring *b = p;
	struct msg m;
	int i;

	for (i = 0;; i++) {
		/* say the next line, unless told to quit first */
		struct kg_case cases[] = {
			{ .ch = b->c, .op = KG_SEND, .elem = &m },
			{ .ch = b->quit.ch, .op = KG_RECV },
		};

		snprintf(m.who, sizeof(m.who), "%s", b->name);
		m.seq = i;
		if (kg_select(cases, 2, -1) != 0) /* quit, or an error */
			break;
		kg_sleep((rand_r(&b->seed) % 20) * MS);	/* 0-19 ms */
	}
	kg_wg_done(&running);
}

/* boring("Joe", quit): start a speaker, return the channel to listen on. */
static kg_recvch_t boring(struct boring *b, const char *name, kg_recvch_t quit)
{
	b->c = make_chan(sizeof(struct msg));
	b->quit = quit;
	b->name = name;
	b->seed = (unsigned int)kg_now_ns() ^ (unsigned int)name[0];
	start(boring_co, b);
	return kg_chan_receiver(b->c);
}

/* ---- fan-in: merge two channels into one ---- */

struct fanin {
	kg_recvch_t in1, in2, quit;
	kg_chan_t *c;
};

static void fanin_co(void *p)
{
	struct fanin *f = p;
	struct msg m;

	for (;;) {
		/* receive from whichever input is ready, or quit */
		struct kg_case in[] = {
			{ .ch = f->in1.ch, .op = KG_RECV, .elem = &m },
			{ .ch = f->in2.ch, .op = KG_RECV, .elem = &m },
			{ .ch = f->quit.ch, .op = KG_RECV },
		};
		/* pass it on; main may have stopped listening: watch quit */
		struct kg_case out[] = {
			{ .ch = f->c, .op = KG_SEND, .elem = &m },
			{ .ch = f->quit.ch, .op = KG_RECV },
		};

		int r = kg_select(in, 3, -1);

		if (r < 0 || r == 2 || kg_select(out, 2, -1) != 0)
			break;
	}
	kg_wg_done(&running);
}

static kg_recvch_t fan_in(struct fanin *f, kg_recvch_t in1, kg_recvch_t in2,
			  kg_recvch_t quit)
{
	f->in1 = in1;
	f->in2 = in2;
	f->quit = quit;
	f->c = make_chan(sizeof(struct msg));
	start(fanin_co, f);
	return kg_chan_receiver(f->c);
}

/* ---- main: listen until the time is up ---- */

static int failed;

static void main_co(void *arg)
{
	kg_chan_t *quit = make_chan(0);	/* chan struct{}, only closed */
	struct boring joe, ann;
	struct fanin f;
	kg_recvch_t c;
	kg_chan_t *timeout;
	int next[2] = { 0, 0 };	/* next seq expected: Joe, Ann */
	struct msg m;

	(void)arg;
	c = fan_in(&f, boring(&joe, "Joe", kg_chan_receiver(quit)),
		   boring(&ann, "Ann", kg_chan_receiver(quit)),
		   kg_chan_receiver(quit));
	timeout = kg_after(TALK_MS * MS);
	if (!timeout) {
		fprintf(stderr, "fanin: kg_after failed\n");
		exit(1);
	}
	for (;;) {
		struct kg_case cases[] = {
			{ .ch = c.ch, .op = KG_RECV, .elem = &m },
			{ .ch = timeout, .op = KG_RECV }, /* time is up */
		};
		int i = kg_select(cases, 2, -1), k;

		if (i == 1) {
			printf("You're both boring; I'm leaving.\n");
			break;
		}
		if (i != 0) {
			fprintf(stderr, "fanin: kg_select: %d\n", i);
			failed = 1;
			break;
		}
		printf("%s %d\n", m.who, m.seq);
		k = !strcmp(m.who, "Ann");
		if (m.seq != next[k]) {
			fprintf(stderr, "fanin: %s %d, expected %d\n", m.who,
				m.seq, next[k]);
			failed = 1;
		}
		next[k] = m.seq + 1;
	}
	/* stop everyone, wait until they have, then free the channels */
	kg_chan_close(quit);
	kg_wg_wait(&running);
	kg_chan_free(timeout);
	kg_chan_free(f.c);
	kg_chan_free(joe.c);
	kg_chan_free(ann.c);
	kg_chan_free(quit);

	printf("heard Joe %d times, Ann %d times\n", next[0], next[1]);
	if (!next[0] || !next[1]) {
		fprintf(stderr, "fanin: both should have spoken\n");
		failed = 1;
	}
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "fanin: kg_run failed\n");
		return 1;
	}
	return failed;
}
