// SPDX-License-Identifier: MIT
/*
 * channels - the Go tour's "Channels" and "Buffered Channels", and the
 * classic sendData/getData pair, in kgreen.
 *
 * 1. Unbuffered: two coroutines each sum half of a slice and send the
 *    result on one channel; main receives both.
 *
 *	func sum(s []int, c chan int) {
 *		sum := 0
 *		for _, v := range s { sum += v }
 *		c <- sum // send sum to c
 *	}
 *	s := []int{7, 2, 8, -9, 4, 0}
 *	c := make(chan int)
 *	go sum(s[:len(s)/2], c)
 *	go sum(s[len(s)/2:], c)
 *	x, y := <-c, <-c // receive from c
 *	fmt.Println(x, y, x+y)
 *
 *    An unbuffered channel is a rendezvous: a send waits until a receiver
 *    takes the value. Which half finishes first is up to the scheduler, so
 *    the output is "-5 17 12" or "17 -5 12".
 *
 * 2. Buffered: make(chan int, 2) holds two values; sends wait only when it
 *    is full. In Go a third send in main would be "all goroutines are
 *    asleep - deadlock!"; here kg_chan_try_send shows it would block.
 *
 * 3. sendData/getData: one coroutine sends five city names, another prints
 *    them. Go's version sleeps a second in main and hopes getData is done;
 *    here sendData closes the channel (Go's close(ch)), getData stops when
 *    kg_chan_recv says -EPIPE (Go's `for s := range ch`), and tells main
 *    through a done channel.
 *
 * Channels carry fixed-size values, copied in and out: an int here, a
 * pointer to a constant string in part 3. The program checks its results
 * and exits 1 if one is wrong.
 */
#include <errno.h>
#include <kgreen.h>
#include <stdio.h>
#include <string.h>

static int failed;

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "channels: wrong: %s\n", what);
		failed = 1;
	}
}

/* ---- 1. unbuffered: sum a slice in two halves ---- */

struct sum_arg {
	const int *s;		/* the half to sum */
	size_t n;
	kg_chan_t *c;		/* where the sum goes */
};

static void sum(void *p)
{
	struct sum_arg *a = p;
	int total = 0;
	size_t i;

	for (i = 0; i < a->n; i++)
		total += a->s[i];
	kg_chan_send(a->c, &total);	/* c <- sum: waits for main */
}

static void unbuffered(void)
{
	static const int s[] = { 7, 2, 8, -9, 4, 0 };
	size_t half = sizeof(s) / sizeof(s[0]) / 2;
	kg_chan_t *c = kg_chan_make(sizeof(int), 0);	/* make(chan int) */
	/* the arguments live on our stack: we receive both sums, so both
	 * coroutines are done with them before we return */
	struct sum_arg lo = { s, half, c }, hi = { s + half, half, c };
	int x = 0, y = 0;

	if (!c || kg_go(sum, &lo) < 0 || kg_go(sum, &hi) < 0) {
		check(0, "setup");
		return;
	}
	kg_chan_recv(c, &x);		/* x, y := <-c, <-c */
	kg_chan_recv(c, &y);
	printf("%d %d %d\n", x, y, x + y);
	check(x + y == 12, "x + y == 12");
	check((x == -5 && y == 17) || (x == 17 && y == -5), "halves -5, 17");
	kg_chan_free(c);		/* nobody uses c any more */
}

/* ---- 2. buffered ---- */

static void buffered(void)
{
	kg_chan_t *ch = kg_chan_make(sizeof(int), 2); /* make(chan int, 2) */
	int v, a = 0, b = 0;

	if (!ch) {
		check(0, "setup");
		return;
	}
	v = 1;
	kg_chan_send(ch, &v);	/* ch <- 1: room in the buffer, no wait */
	v = 2;
	kg_chan_send(ch, &v);	/* ch <- 2 */
	printf("len %zu cap %zu\n", kg_chan_len(ch), kg_chan_cap(ch));
	check(kg_chan_len(ch) == 2 && kg_chan_cap(ch) == 2, "len 2 cap 2");
	/* a third send would wait for a receiver; try_ says so instead */
	v = 3;
	check(kg_chan_try_send(ch, &v) == -EAGAIN, "full: -EAGAIN");
	kg_chan_recv(ch, &a);	/* fmt.Println(<-ch) */
	printf("%d\n", a);
	kg_chan_recv(ch, &b);
	printf("%d\n", b);
	check(a == 1 && b == 2, "FIFO: 1 then 2");
	kg_chan_free(ch);
}

/* ---- 3. sendData / getData, with close ---- */

static const char *const cities[] = {
	"Washington", "Tripoli", "London", "Beijing", "Tokyo",
};
#define NCITIES (sizeof(cities) / sizeof(cities[0]))

struct data_arg {
	kg_chan_t *ch;		/* the cities, as const char * */
	kg_chan_t *done;	/* getData's "I'm finished" signal */
	char got[128];		/* what getData printed */
};

static void send_data(void *p)
{
	struct data_arg *a = p;
	size_t i;

	for (i = 0; i < NCITIES; i++)
		kg_chan_send(a->ch, &cities[i]); /* copies the pointer */
	kg_chan_close(a->ch);	/* no more values: receivers see -EPIPE */
}

static void get_data(void *p)
{
	struct data_arg *a = p;
	const char *input;

	/* for input := range ch: until closed and drained */
	while (kg_chan_recv(a->ch, &input) == 0) {
		printf("%s ", input);
		strncat(a->got, input, sizeof(a->got) - strlen(a->got) - 2);
		strcat(a->got, " ");
	}
	printf("\n");
	kg_chan_send(a->done, NULL);	/* element size 0: a pure signal */
}

static void send_get(void)
{
	struct data_arg a = { .got = "" };

	a.ch = kg_chan_make(sizeof(const char *), 0);	/* chan string */
	a.done = kg_chan_make(0, 0);			/* chan struct{} */
	if (!a.ch || !a.done || kg_go(send_data, &a) < 0 ||
	    kg_go(get_data, &a) < 0) {
		check(0, "setup");
		return;
	}
	kg_chan_recv(a.done, NULL);	/* <-done: getData has finished */
	check(!strcmp(a.got, "Washington Tripoli London Beijing Tokyo "),
	      "the five cities in order");
	kg_chan_free(a.ch);
	kg_chan_free(a.done);
}

static void main_co(void *arg)
{
	(void)arg;
	unbuffered();
	buffered();
	send_get();
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "channels: kg_run failed\n");
		return 1;
	}
	return failed;
}
