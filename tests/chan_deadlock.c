// SPDX-License-Identifier: MIT
/*
 * chan_deadlock - when every coroutine waits on a channel or sync object
 * and nothing could wake one, the runtime says "all coroutines are asleep -
 * deadlock!" with where each waits, within 1 s, and kg_run returns
 * -EDEADLK. No false alarm while a worker is blocked in a system call, a
 * timer is armed, or a plain thread that uses kgreen objects is alive.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>

#include "harness.h"
#include "kg_test.h"

#define MS 1000000ull

static kg_chan_t *ch;

static void stuck_sender(void *p)
{
	(void)p;
	kg_chan_send(ch, NULL);
}

static void simple_main(void *p)
{
	int v;

	(void)p;
	kg_go_opts(stuck_sender, NULL,
		   &(struct kg_spawn_opts){ .name = "sender" });
	kg_chan_recv(kg_chan_make(sizeof(int), 0), &v);	/* never */
}

TEST(reported_with_where_each_waits)
{
	static char out[8192];
	unsigned int procs[] = { 1, 2 };
	uint64_t ms = 0;
	int i;

	for (i = 0; i < 2; i++) {
		ch = kg_chan_make(0, 0);
		ASSERT_EQ(-EDEADLK, run_kg_captured(simple_main, NULL, procs[i],
						  out, sizeof(out), &ms));
		ASSERT_NONNULL(strstr(out, "all coroutines are asleep - deadlock!"));
		ASSERT_NONNULL(strstr(out, "\"main\" [chan recv"));
		ASSERT_NONNULL(strstr(out, "\"sender\" [chan send"));
		ASSERT_GT(1000u, ms);
	}
}

static kg_wg_t wg;

static void select_and_wg_main(void *p)
{
	struct kg_case cs[2] = {
		{ kg_chan_make(0, 0), KG_RECV, NULL, false },
		{ kg_chan_make(0, 0), KG_SEND, NULL, false },
	};

	(void)p;
	kg_go(stuck_sender, NULL);
	kg_wg_add(&wg, 1);
	if (*(int *)p)
		kg_select(cs, 2, -1);
	else
		kg_wg_wait(&wg);
}

TEST(select_and_waitgroup_deadlocks)
{
	static char out[8192];
	uint64_t ms = 0;
	int sel;

	for (sel = 0; sel < 2; sel++) {
		ch = kg_chan_make(0, 0);
		wg = (kg_wg_t)KG_WG_INIT;
		ASSERT_EQ(-EDEADLK, run_kg_captured(select_and_wg_main, &sel, 2,
						  out, sizeof(out), &ms));
		ASSERT_NONNULL(strstr(out, "deadlock!"));
		if (sel)
			ASSERT_NONNULL(strstr(out, "[select"));
	}
}

static void empty_select_main(void *p)
{
	(void)p;
	kg_select(NULL, 0, -1);
}

TEST(empty_select_forever_is_a_deadlock)
{
	static char out[4096];
	uint64_t ms = 0;

	ASSERT_EQ(-EDEADLK, run_kg_captured(empty_select_main, NULL, 1, out,
					  sizeof(out), &ms));
	ASSERT_NONNULL(strstr(out, "select (no cases)"));
}

/* --- no false alarms --- */

static int pipefd[2];

static void *late_writer(void *p)
{
	(void)p;
	usleep(400 * 1000);
	if (write(pipefd[1], "x", 1) != 1)
		return (void *)1;
	return NULL;
}

static void blocking_reader(void *p)
{
	char c;

	/* blocks its worker in the kernel, holding its proc (a raw read:
	 * libc's would park in the poller, which net_fd covers) */
	CO_CHECK(syscall(SYS_read, pipefd[0], &c, 1) == 1, "read");
	CO_CHECK(kg_chan_send(p, NULL) == 0, "send");
}

static void syscall_main(void *p)
{
	kg_chan_t *c = kg_chan_make(0, 0);

	(void)p;
	kg_go(blocking_reader, c);
	CO_CHECK(kg_chan_recv(c, NULL) == 0, "recv");
}

TEST(no_alarm_while_a_worker_is_in_a_syscall)
{
	unsigned int procs;

	for (procs = 1; procs <= 2; procs++) {
		pthread_t t;

		ASSERT_EQ(0, pipe(pipefd));
		ASSERT_EQ(0, pthread_create(&t, NULL, late_writer, NULL));
		ASSERT_EQ(0, run_kg(syscall_main, NULL, procs));
		pthread_join(t, NULL);
		ASSERT_EQ(0, co_failures());
		close(pipefd[0]);
		close(pipefd[1]);
	}
}

static void late_sender(void *p)
{
	kg_sleep(300 * MS);
	kg_chan_send(p, NULL);
}

static void timer_main(void *p)
{
	kg_chan_t *c = kg_chan_make(0, 0), *a = kg_after(300 * MS);

	(void)p;
	kg_go(late_sender, c);
	CO_CHECK(kg_chan_recv(c, NULL) == 0, "recv after sleep");
	CO_CHECK(kg_chan_recv(a, NULL) == 0, "recv kg_after");
	kg_chan_free(a);
}

TEST(no_alarm_while_a_timer_is_armed)
{
	ASSERT_EQ(0, run_kg(timer_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void *slow_worker_thread(void *p)
{
	kg_chan_t **c = p;

	kg_chan_recv(c[0], NULL);	/* go */
	usleep(400 * 1000);		/* long computation */
	kg_chan_send(c[1], NULL);	/* result */
	return NULL;
}

static void thread_main(void *p)
{
	kg_chan_t *c[2] = { kg_chan_make(0, 0), kg_chan_make(0, 0) };
	pthread_t t;

	(void)p;
	pthread_create(&t, NULL, slow_worker_thread, c);
	CO_CHECK(kg_chan_send(c[0], NULL) == 0, "go");
	CO_CHECK(kg_chan_recv(c[1], NULL) == 0, "result");
	pthread_join(t, NULL);
}

TEST(no_alarm_while_a_plain_thread_computes)
{
	ASSERT_EQ(0, run_kg(thread_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

/*
 * A plain thread whose first kgreen call is kg_sleep: asleep in kgreen,
 * it may wake a coroutine afterwards (as Go's runtime counts a timer),
 * so the watch must not report while it sleeps, past its 100 ms.
 */
static kg_wg_t sleeper_wg;

static void *kg_sleeper_thread(void *p)
{
	(void)p;
	kg_sleep(400 * MS);
	kg_wg_done(&sleeper_wg);	/* wakes main */
	return NULL;
}

static void sleeper_main(void *p)
{
	pthread_t t;

	(void)p;
	kg_wg_add(&sleeper_wg, 1);
	CO_CHECK(pthread_create(&t, NULL, kg_sleeper_thread, NULL) == 0,
		 "thread");
	CO_CHECK(kg_wg_wait(&sleeper_wg) == 0, "wait");
	pthread_join(t, NULL);
}

TEST(no_alarm_while_a_plain_thread_sleeps_in_kg_sleep)
{
	sleeper_wg = (kg_wg_t)KG_WG_INIT;
	ASSERT_EQ(0, run_kg(sleeper_main, NULL, 2));
	ASSERT_EQ(0, co_failures());
}

static void ok_main(void *p)
{
	(void)p;
	kg_sleep(MS);
}

TEST(runtime_restarts_after_deadlock)
{
	static char out[4096];
	uint64_t ms = 0;

	ch = kg_chan_make(0, 0);
	ASSERT_EQ(-EDEADLK, run_kg_captured(simple_main, NULL, 2, out,
					  sizeof(out), &ms));
	ASSERT_EQ(0, run_kg(ok_main, NULL, 2));
}

TEST_HARNESS_MAIN
