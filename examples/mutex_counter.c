// SPDX-License-Identifier: MIT
/*
 * mutex_counter - the Go tour's "sync.Mutex" (and Go by Example's
 * "Mutexes"), in kgreen.
 *
 *	// SafeCounter is safe to use concurrently.
 *	type SafeCounter struct {
 *		mu sync.Mutex
 *		v  map[string]int
 *	}
 *
 *	func (c *SafeCounter) Inc(key string) {
 *		c.mu.Lock()
 *		// Lock so only one goroutine at a time can access the map c.v.
 *		c.v[key]++
 *		c.mu.Unlock()
 *	}
 *
 *	func (c *SafeCounter) Value(key string) int {
 *		c.mu.Lock()
 *		defer c.mu.Unlock()
 *		return c.v[key]
 *	}
 *
 *	c := SafeCounter{v: make(map[string]int)}
 *	for i := 0; i < 1000; i++ {
 *		go c.Inc("somekey")
 *	}
 *	time.Sleep(time.Second)
 *	fmt.Println(c.Value("somekey"))
 *
 * Here 1000 coroutines each increment the counter twice, on every proc
 * (OS thread) the runtime has, so increments really do happen at the same
 * time. kg_mutex_lock parks a coroutine that finds the mutex held; it
 * never blocks its thread. To make the race easy to lose, Inc reads the
 * value, yields to other coroutines, and only then writes value + 1: without
 * the mutex most increments would be lost. With it the total is exactly 2000.
 *
 * The tour sleeps a second and hopes everyone is done; here a WaitGroup
 * says when they are. The program exits 1 if the count is wrong.
 */
#include <kgreen.h>
#include <stdio.h>

#define NCOROUTINES 1000
#define INCS 2			/* increments per coroutine */

/* A counter safe to use from many coroutines at once. */
struct safe_counter {
	kg_mutex_t mu;		/* protects v */
	long v;
};

static void inc(struct safe_counter *c)
{
	long v;

	kg_mutex_lock(&c->mu);
	/* only one coroutine at a time gets here */
	v = c->v;
	kg_yield();		/* let others run: they must wait for mu */
	c->v = v + 1;
	kg_mutex_unlock(&c->mu);
}

static long value(struct safe_counter *c)
{
	long v;

	kg_mutex_lock(&c->mu);
	v = c->v;
	kg_mutex_unlock(&c->mu);
	return v;
}

static struct safe_counter counter = { KG_MUTEX_INIT, 0 };
static kg_wg_t wg = KG_WG_INIT;

static void incrementer(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < INCS; i++)
		inc(&counter);
	kg_wg_done(&wg);
}

static long total;

static void main_co(void *arg)
{
	int i;

	(void)arg;
	kg_wg_add(&wg, NCOROUTINES);
	for (i = 0; i < NCOROUTINES; i++) {
		if (kg_go(incrementer, NULL) < 0) {
			fprintf(stderr, "mutex_counter: kg_go failed\n");
			kg_wg_done(&wg);
		}
	}
	kg_wg_wait(&wg);
	total = value(&counter);
	printf("somekey = %ld\n", total);
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "mutex_counter: kg_run failed\n");
		return 1;
	}
	if (total != NCOROUTINES * INCS) {
		fprintf(stderr, "mutex_counter: expected %d\n",
			NCOROUTINES * INCS);
		return 1;
	}
	return 0;
}
