// SPDX-License-Identifier: MIT
/*
 * waitgroup - Go by Example's "WaitGroups", in kgreen.
 *
 *	func worker(id int) {
 *		fmt.Printf("Worker %d starting\n", id)
 *		time.Sleep(time.Second)
 *		fmt.Printf("Worker %d done\n", id)
 *	}
 *
 *	func main() {
 *		var wg sync.WaitGroup
 *		for i := 1; i <= 5; i++ {
 *			wg.Add(1)
 *			go func() {
 *				defer wg.Done()
 *				worker(i)
 *			}()
 *		}
 *		wg.Wait()
 *	}
 *
 * A WaitGroup counts work in flight: kg_wg_add before starting each
 * coroutine (not inside it, or kg_wg_wait might see zero too early),
 * kg_wg_done when one finishes, kg_wg_wait until the count is back to
 * zero. Waiting parks the coroutine; the workers' sleeps overlap, so five
 * 50 ms workers take about 50 ms.
 *
 * C has no closures: the worker's id travels in the void * argument. The
 * program checks that every worker started and finished before
 * kg_wg_wait returned, and exits 1 otherwise.
 */
#include <kgreen.h>
#include <stdint.h>
#include <stdio.h>

#define MS 1000000ull		/* nanoseconds in a millisecond */
#define NWORKERS 5

static kg_wg_t wg = KG_WG_INIT;
/* started[i], finished[i]: written by worker i, read by main after the wait */
static int started[NWORKERS + 1], finished[NWORKERS + 1];

static void worker(int id)
{
	printf("Worker %d starting\n", id);
	started[id] = 1;
	kg_sleep(50 * MS);		/* expensive work */
	printf("Worker %d done\n", id);
	finished[id] = 1;
}

/* go func() { defer wg.Done(); worker(i) }() */
static void worker_co(void *arg)
{
	worker((int)(intptr_t)arg);
	kg_wg_done(&wg);
}

static int failed;

static void main_co(void *arg)
{
	int i;

	(void)arg;
	for (i = 1; i <= NWORKERS; i++) {
		kg_wg_add(&wg, 1);
		if (kg_go(worker_co, (void *)(intptr_t)i) < 0) {
			kg_wg_done(&wg);	/* it will never run */
			fprintf(stderr, "waitgroup: kg_go failed\n");
			failed = 1;
		}
	}
	kg_wg_wait(&wg);	/* every kg_wg_done happened before */
	for (i = 1; i <= NWORKERS; i++) {
		if (!started[i] || !finished[i]) {
			fprintf(stderr, "waitgroup: worker %d not finished\n", i);
			failed = 1;
		}
	}
	if (!failed)
		printf("all %d workers done\n", NWORKERS);
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "waitgroup: kg_run failed\n");
		return 1;
	}
	return failed;
}
