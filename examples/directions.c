// SPDX-License-Identifier: MIT
/*
 * directions - Go by Example's "Channel Directions", in kgreen.
 *
 *	func ping(pings chan<- string, msg string) {
 *		pings <- msg
 *	}
 *
 *	func pong(pings <-chan string, pongs chan<- string) {
 *		msg := <-pings
 *		pongs <- msg
 *	}
 *
 *	func main() {
 *		pings := make(chan string, 1)
 *		pongs := make(chan string, 1)
 *		ping(pings, "passed message")
 *		pong(pings, pongs)
 *		fmt.Println(<-pongs)
 *	}
 *
 * A function that only sends on a channel takes a kg_sendch_t (Go's
 * chan<- T); one that only receives takes a kg_recvch_t (<-chan T).
 * kg_chan_sender() and kg_chan_receiver() make these views of a channel.
 * They are distinct struct types, so handing a receive-only channel to
 * kg_send() is a compile error, as in Go; build with
 * -DKG_EXAMPLE_WRONG_DIRECTION to see the compiler refuse it.
 *
 * Then the same two functions run as coroutines, ping-ponging a counter
 * between them over unbuffered channels, the way they are usually used.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;

/* Only sends on pings: it cannot receive from it. */
static void ping(kg_sendch_t pings, const char *msg)
{
	kg_send(pings, &msg);
#ifdef KG_EXAMPLE_WRONG_DIRECTION
	kg_recv(pings, &msg);	/* error: incompatible type */
#endif
}

/* Receives on pings, sends on pongs. */
static void pong(kg_recvch_t pings, kg_sendch_t pongs)
{
	const char *msg;

	kg_recv(pings, &msg);
	kg_send(pongs, &msg);
}

/* ---- the same roles as coroutines: a ball bounced ROUNDS times ---- */

#define ROUNDS 10

struct player {
	const char *name;
	kg_recvch_t in;		/* the ball arrives here */
	kg_sendch_t out;	/* and is hit back here */
	kg_wg_t *done;		/* counted down when the player leaves */
	int hits;
};

/* Receive the ball, count the hit, send it back; leave when "in" closes. */
static void player(void *p)
{
	struct player *pl = p;
	int ball;

	while (kg_recv(pl->in, &ball) == 0) {
		ball++;
		pl->hits++;
		printf("%s %d\n", pl->name, ball);
		if (ball == ROUNDS) {
			/* game over: close our side (closing belongs to the
			 * sender, as in Go); the other player's kg_recv
			 * then returns -EPIPE and it leaves too */
			kg_chan_close(pl->out.ch);
			break;
		}
		kg_send(pl->out, &ball);
	}
	kg_wg_done(pl->done);
}

static void main_co(void *arg)
{
	kg_chan_t *pings = kg_chan_make(sizeof(const char *), 1);
	kg_chan_t *pongs = kg_chan_make(sizeof(const char *), 1);
	kg_chan_t *to_a = kg_chan_make(sizeof(int), 0);
	kg_chan_t *to_b = kg_chan_make(sizeof(int), 0);
	kg_wg_t done = KG_WG_INIT;
	struct player a, b;
	const char *msg = NULL;
	int ball = 0;

	(void)arg;
	if (!pings || !pongs || !to_a || !to_b) {
		fprintf(stderr, "directions: kg_chan_make failed\n");
		failed = 1;
		return;
	}
	ping(kg_chan_sender(pings), "passed message");
	pong(kg_chan_receiver(pings), kg_chan_sender(pongs));
	kg_recv(kg_chan_receiver(pongs), &msg);
	printf("%s\n", msg);
	if (!msg || strcmp(msg, "passed message"))
		failed = 1;

	/* two coroutines: "ping" receives on to_a and hits to to_b */
	a = (struct player){ "ping", kg_chan_receiver(to_a),
			     kg_chan_sender(to_b), &done, 0 };
	b = (struct player){ "pong", kg_chan_receiver(to_b),
			     kg_chan_sender(to_a), &done, 0 };
	kg_wg_add(&done, 2);
	if (kg_go(player, &a) < 0 || kg_go(player, &b) < 0) {
		fprintf(stderr, "directions: kg_go failed\n");
		exit(1);	/* a or b may run on: do not return past them */
	}
	kg_send(kg_chan_sender(to_a), &ball);	/* serve */
	kg_wg_wait(&done);
	printf("ping hit %d, pong hit %d\n", a.hits, b.hits);
	if (a.hits != ROUNDS / 2 || b.hits != ROUNDS / 2)
		failed = 1;

	/* every coroutine that used them has finished: free the channels */
	kg_chan_free(pings);
	kg_chan_free(pongs);
	kg_chan_free(to_a);
	kg_chan_free(to_b);
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "directions: kg_run failed\n");
		return 1;
	}
	return failed;
}
