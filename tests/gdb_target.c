// SPDX-License-Identifier: MIT
/*
 * gdb_target - a program for gdb.sh to stop in: named coroutines parked
 * in different places (a sleep, a channel receive, a WaitGroup, a socket
 * read), and one that spins and has lost its proc to the time slice; then
 * main calls gdb_target_ready(), where gdb's breakpoint is.
 * Run alone it just ends (main returning ends the runtime).
 */
#include <kgreen.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static kg_chan_t *ch;
static int sv[2] = { -1, -1 };
static kg_wg_t wg = KG_WG_INIT;

__attribute__((noinline)) void gdb_target_ready(void)
{
	__asm__ volatile("" ::: "memory");
}

static void sleeper(void *p)
{
	(void)p;
	kg_sleep(60ull * 1000000000);
}

__attribute__((noinline)) static void receive_one(void)
{
	int v;

	kg_chan_recv(ch, &v);
}

static void receiver(void *p)
{
	(void)p;
	receive_one();
}

static void waiter(void *p)
{
	(void)p;
	kg_wg_wait(&wg);
}

static void reader(void *p)
{
	(void)p;
	kg_fd_wait(sv[0], KG_FD_READ, -1);
}

static _Atomic int stop_hog;

/*
 * Spins without a kgreen call until main is done: after a time slice it
 * runs off its proc (a timer armed on that proc is work queued there, so
 * the slice takes it).
 */
static void hog(void *p)
{
	kg_chan_t *t = kg_after(60ull * 1000000000);

	(void)p;
	while (!__atomic_load_n(&stop_hog, __ATOMIC_RELAXED))
		;
	kg_chan_free(t);
}

static void spawn(void (*fn)(void *), const char *name)
{
	struct kg_spawn_opts o = { .name = name };

	if (kg_go_opts(fn, NULL, &o) <= 0)
		fprintf(stderr, "gdb_target: cannot spawn %s\n", name);
}

static void main_co(void *p)
{
	(void)p;
	ch = kg_chan_make(sizeof(int), 0);
	kg_wg_add(&wg, 1);
	spawn(sleeper, "sleeper");
	spawn(receiver, "receiver");
	spawn(waiter, "waiter");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0)
		spawn(reader, "reader");
	spawn(hog, "hog");
	kg_sleep(80 * 1000000);	/* they all park; the hog is preempted */
	gdb_target_ready();
	__atomic_store_n(&stop_hog, 1, __ATOMIC_RELAXED);
	printf("ready\n");
}

int main(void)
{
	struct kg_config cfg = { .procs = 2, .backend = "sysmon" };

	return kg_run(main_co, NULL, &cfg) ? 1 : 0;
}
