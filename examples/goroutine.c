// SPDX-License-Identifier: MIT
/*
 * goroutine - the Go tour's "Goroutines", in kgreen.
 *
 *	func say(s string) {
 *		for i := 0; i < 5; i++ {
 *			time.Sleep(100 * time.Millisecond)
 *			fmt.Println(s)
 *		}
 *	}
 *
 *	func main() {
 *		go say("world")
 *		say("hello")
 *	}
 *
 * kg_go(fn, arg) is Go's `go fn(arg)`: it starts a coroutine (a green
 * thread; Go calls it a goroutine) and returns at once. The two loops run
 * at the same time, so "hello" and "world" lines interleave. kg_sleep
 * parks only the calling coroutine; the OS thread runs the other one
 * meanwhile.
 *
 * One difference from the tour: a Go program ends when main returns, and
 * there the last "world" is often lost. Here main waits for the coroutine
 * with a WaitGroup (see waitgroup.c), so the counts are exact and the
 * program checks them: 5 "hello" and 5 "world".
 */
#include <kgreen.h>
#include <stdio.h>

#define MS 1000000ull		/* nanoseconds in a millisecond */
#define TIMES 5

static kg_wg_t wg = KG_WG_INIT;
static int said_hello, said_world;	/* each written by one coroutine */

/* Print s five times, 10 ms apart; count the lines in *said. */
static void say(const char *s, int *said)
{
	int i;

	for (i = 0; i < TIMES; i++) {
		kg_sleep(10 * MS);
		printf("%s\n", s);
		(*said)++;
	}
}

/* A coroutine's entry takes one void * argument: here, the word. */
static void say_world(void *arg)
{
	say(arg, &said_world);
	kg_wg_done(&wg);		/* tell main we are finished */
}

/* The first coroutine: kg_run runs it, and the program ends when it returns. */
static void main_co(void *arg)
{
	(void)arg;
	kg_wg_add(&wg, 1);
	if (kg_go(say_world, "world") < 0) {	/* go say("world") */
		fprintf(stderr, "goroutine: kg_go failed\n");
		return;
	}
	say("hello", &said_hello);		/* say("hello") */
	kg_wg_wait(&wg);	/* now said_world is final and visible */
}

int main(void)
{
	int err = kg_run(main_co, NULL, NULL);

	if (err) {
		fprintf(stderr, "goroutine: kg_run: %d\n", err);
		return 1;
	}
	printf("hello x%d, world x%d\n", said_hello, said_world);
	if (said_hello != TIMES || said_world != TIMES) {
		fprintf(stderr, "goroutine: expected %d of each\n", TIMES);
		return 1;
	}
	return 0;
}
