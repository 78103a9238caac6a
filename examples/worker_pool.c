// SPDX-License-Identifier: MIT
/*
 * worker_pool - Go by Example's "Worker Pools", in kgreen.
 *
 *	func worker(id int, jobs <-chan int, results chan<- int) {
 *		for j := range jobs {
 *			fmt.Println("worker", id, "started  job", j)
 *			time.Sleep(time.Second)
 *			fmt.Println("worker", id, "finished job", j)
 *			results <- j * 2
 *		}
 *	}
 *
 *	func main() {
 *		const numJobs = 5
 *		jobs := make(chan int, numJobs)
 *		results := make(chan int, numJobs)
 *		for w := 1; w <= 3; w++ {
 *			go worker(w, jobs, results)
 *		}
 *		for j := 1; j <= numJobs; j++ {
 *			jobs <- j
 *		}
 *		close(jobs)
 *		for a := 1; a <= numJobs; a++ {
 *			<-results
 *		}
 *	}
 *
 * Three workers share one jobs channel: each job goes to exactly one of
 * them. Closing jobs ends every worker's loop once the jobs are drained.
 * Each job "works" 100 ms (Go by Example: a second), so five jobs on
 * three workers take about 200 ms, not 500.
 *
 * C has no garbage collector: the channels are freed at the end, once no
 * worker can touch them any more. A worker that sent its last result may
 * still be about to call kg_recv(jobs) and see it closed, so main waits
 * for the workers with a WaitGroup before kg_chan_free.
 *
 * The program checks that each job was done once (results 2, 4, ..., 10)
 * and that the jobs overlapped in time; it exits 1 otherwise.
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

#define MS 1000000ull		/* nanoseconds in a millisecond */
#define NUM_JOBS 5
#define NUM_WORKERS 3
#define JOB_MS 100

struct worker_arg {
	int id;
	kg_recvch_t jobs;	/* <-chan int: only received from */
	kg_sendch_t results;	/* chan<- int: only sent to */
	kg_wg_t *running;
};

static void worker(void *p)
{
	struct worker_arg *w = p;
	int j, r;

	while (kg_recv(w->jobs, &j) == 0) {	/* for j := range jobs */
		printf("worker %d started  job %d\n", w->id, j);
		kg_sleep(JOB_MS * MS);
		printf("worker %d finished job %d\n", w->id, j);
		r = j * 2;
		kg_send(w->results, &r);
	}
	kg_wg_done(w->running);
}

static int failed;

static void main_co(void *arg)
{
	kg_chan_t *jobs = kg_chan_make(sizeof(int), NUM_JOBS);
	kg_chan_t *results = kg_chan_make(sizeof(int), NUM_JOBS);
	struct worker_arg w[NUM_WORKERS];
	kg_wg_t running = KG_WG_INIT;
	int seen[NUM_JOBS + 1] = { 0 };
	uint64_t t0 = kg_now_ns(), ms;
	int i, j, r;

	(void)arg;
	if (!jobs || !results) {
		fprintf(stderr, "worker_pool: kg_chan_make failed\n");
		exit(1);
	}
	/* start the workers: they wait for jobs */
	kg_wg_add(&running, NUM_WORKERS);
	for (i = 0; i < NUM_WORKERS; i++) {
		w[i] = (struct worker_arg){ i + 1, kg_chan_receiver(jobs),
					    kg_chan_sender(results), &running };
		if (kg_go(worker, &w[i]) < 0) {
			fprintf(stderr, "worker_pool: kg_go failed\n");
			exit(1);
		}
	}
	/* send the jobs, then close: "that's all the work" */
	for (j = 1; j <= NUM_JOBS; j++)
		kg_chan_send(jobs, &j);
	kg_chan_close(jobs);
	/* collect the results */
	for (i = 0; i < NUM_JOBS; i++) {
		kg_chan_recv(results, &r);
		if (r % 2 || r < 2 || r > 2 * NUM_JOBS || seen[r / 2]++) {
			fprintf(stderr, "worker_pool: unexpected result %d\n", r);
			failed = 1;
		}
	}
	ms = (kg_now_ns() - t0) / MS;
	kg_wg_wait(&running);	/* every worker has left its loop */
	kg_chan_free(jobs);
	kg_chan_free(results);

	printf("%d jobs done by %d workers in %llu ms (%d ms of work)\n",
	       NUM_JOBS, NUM_WORKERS, (unsigned long long)ms,
	       NUM_JOBS * JOB_MS);
	/* two rounds of sleeps: 200 ms; 5 rounds would mean no overlap */
	if (ms >= (NUM_JOBS - 1) * JOB_MS) {
		fprintf(stderr, "worker_pool: jobs did not run in parallel\n");
		failed = 1;
	}
}

int main(void)
{
	if (kg_run(main_co, NULL, NULL)) {
		fprintf(stderr, "worker_pool: kg_run failed\n");
		return 1;
	}
	return failed;
}
