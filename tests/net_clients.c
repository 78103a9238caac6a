// SPDX-License-Identifier: MIT
/*
 * net_clients.c - unmodified client libraries from Debian, used from many
 * coroutines: hiredis against a redis-server this test starts, and
 * libcurl against an HTTP server in the same runtime written the plain
 * way (blocking accept, read, write). The libraries' own socket, poll
 * and connect calls reach libkgreen's (userlib/hook.c): every request is
 * answered and the runtime keeps to a handful of threads.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "harness.h"
#include "kg_test.h"

#ifdef KG_HAVE_NETLIBS
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#endif

#define MS 1000000ull
/*
 * Threads: the procs plus room for the blocks the handoff covers: new
 * stacks' guards and malloc's growing heaps wait for the address space's
 * lock, and a library's buffers grown on another worker than the one that
 * allocated them wait for that arena's lock (performance.md, "Servers").
 * A quiet run takes procs + 4 to procs + 8; the bound leaves room for a
 * loaded machine, where those waits lengthen (a UBSan build on a busy CI
 * machine took procs + 34 once). Without the interposition the same run
 * takes a thread per waiting connection (972 for 1,000).
 */
#define THREAD_SLACK 64u

#ifdef KG_HAVE_NETLIBS

/* A free port on 127.0.0.1 (bound, read, released). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* ------------------------------------------------------------------ */
/* hiredis against redis-server                                       */
/* ------------------------------------------------------------------ */

#define REDIS_CLIENTS scaled(1000, 10)
#define REDIS_ROUNDS 10

static int redis_port;
static _Atomic long redis_ok;

static void redis_client(void *p)
{
	long id = (long)(intptr_t)p, got;
	redisContext *c = redisConnect("127.0.0.1", redis_port);
	redisReply *r;
	int i;

	CO_CHECK(c && !c->err, "client %ld: connect: %s", id,
		 c ? c->errstr : "no memory");
	for (i = 0; c && !c->err && i < REDIS_ROUNDS; i++) {
		r = redisCommand(c, "SET kgreen:%ld:%d %ld", id, i, id * 100 + i);
		CO_CHECK(r && r->type == REDIS_REPLY_STATUS, "SET %ld", id);
		freeReplyObject(r);
		r = redisCommand(c, "GET kgreen:%ld:%d", id, i);
		got = r && r->type == REDIS_REPLY_STRING ? atol(r->str) : -1;
		CO_CHECK(got == id * 100 + i, "GET %ld: %ld", id, got);
		freeReplyObject(r);
		r = redisCommand(c, "INCR kgreen:count");
		CO_CHECK(r && r->type == REDIS_REPLY_INTEGER, "INCR %ld", id);
		if (r && r->type == REDIS_REPLY_INTEGER)
			atomic_fetch_add(&redis_ok, 1);
		freeReplyObject(r);
	}
	if (c)
		redisFree(c);
}

static void redis_main(void *p)
{
	long i, n = REDIS_CLIENTS;
	struct kg_stats st;
	redisContext *c;
	redisReply *r;

	(void)p;
	for (i = 0; i < n; i++)
		kg_go(redis_client, (void *)(intptr_t)i);
	/* main returning would abandon them: wait for the count instead */
	for (i = 0; i < 30000 && atomic_load(&redis_ok) < n * REDIS_ROUNDS;
	     i++) {
		kg_sleep(MS);
		if (kg_stats(&st) == 0 && st.coroutines <= 1)
			break;
	}
	CO_CHECK(kg_stats(&st) == 0, "stats");
	c = redisConnect("127.0.0.1", redis_port);
	r = c ? redisCommand(c, "GET kgreen:count") : NULL;
	TH_LOG("%ld hiredis clients x %d rounds: %ld INCRs answered, "
	       "count %s, %u workers, %u procs, %llu handoffs", n,
	       REDIS_ROUNDS, atomic_load(&redis_ok),
	       r && r->str ? r->str : "?", st.workers, st.procs,
	       (unsigned long long)st.handoffs);
	CO_CHECK(atomic_load(&redis_ok) == n * REDIS_ROUNDS, "answered %ld",
		 atomic_load(&redis_ok));
	CO_CHECK(r && r->str && atol(r->str) == n * REDIS_ROUNDS, "count");
	CO_CHECK(st.workers <= st.procs + THREAD_SLACK, "%u workers",
		 st.workers);
	if (r)
		freeReplyObject(r);
	if (c)
		redisFree(c);
}

static const char *redis_server(void)
{
	static const char *const where[] = { "/usr/bin/redis-server",
					     "/usr/sbin/redis-server",
					     "/usr/local/bin/redis-server" };
	size_t i;

	for (i = 0; i < sizeof(where) / sizeof(where[0]); i++)
		if (!access(where[i], X_OK))
			return where[i];
	return NULL;
}

TEST_TIMEOUT(hiredis_from_a_thousand_coroutines, 120)
{
	const char *server = redis_server();
	char port[16];
	pid_t pid;
	int i, up = 0;

	if (!server)
		SKIP(return, "no redis-server (tools/install-deps build)");
	raise_nofile(4 * REDIS_CLIENTS + 64);
	redis_port = free_port();
	ASSERT_LT(0, redis_port);
	snprintf(port, sizeof(port), "%d", redis_port);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execl(server, server, "--port", port, "--bind", "127.0.0.1",
		      "--save", "", "--appendonly", "no", "--maxclients",
		      "10000", "--protected-mode", "no", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 500 && !up; i++) {
		redisContext *c = redisConnect("127.0.0.1", redis_port);

		up = c && !c->err;
		if (c)
			redisFree(c);
		if (!up)
			usleep(10000);
	}
	if (!up) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		SKIP(return, "redis-server did not start on port %d", redis_port);
	}
	EXPECT_EQ(0, run_kg(redis_main, NULL, 2));
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	ASSERT_EQ(0, co_failures());
}

/* ------------------------------------------------------------------ */
/* libcurl against a plain HTTP server in the same runtime            */
/* ------------------------------------------------------------------ */

#define CURL_CLIENTS scaled(300, 10)
#define CURL_ROUNDS 5

static int http_lfd;
static _Atomic long http_served, curl_ok;
static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
			    "Content-Type: text/plain\r\n\r\nhello";

/* One connection, keep-alive: a request ends at its blank line. */
static void http_conn(void *p)
{
	int fd = (int)(intptr_t)p;
	char buf[4096];
	size_t have = 0;
	ssize_t n;

	while ((n = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0) {
		char *end;

		have += (size_t)n;
		buf[have] = 0;
		while ((end = strstr(buf, "\r\n\r\n"))) {
			size_t used = (size_t)(end + 4 - buf);

			if (write(fd, reply, sizeof(reply) - 1) !=
			    (ssize_t)sizeof(reply) - 1)
				goto out;
			atomic_fetch_add(&http_served, 1);
			memmove(buf, buf + used, have - used + 1);
			have -= used;
		}
		if (have == sizeof(buf) - 1)
			break;	/* a request too large for this test */
	}
out:
	close(fd);
}

static void http_accept(void *p)
{
	int fd;

	(void)p;
	/* ends when main closes the listener: accept fails with EBADF */
	while ((fd = accept(http_lfd, NULL, NULL)) >= 0)
		kg_go(http_conn, (void *)(intptr_t)fd);
}

static size_t collect(char *data, size_t size, size_t n, void *user)
{
	char *body = user;
	size_t len = strlen(body), add = size * n;

	if (len + add < 64) {
		memcpy(body + len, data, add);
		body[len + add] = 0;
	}
	return add;
}

static void curl_client(void *p)
{
	char url[64], body[64];
	CURL *h = curl_easy_init();
	CURLcode rc;
	long code = 0;
	int i;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", (int)(intptr_t)p);
	CO_CHECK(h, "curl_easy_init");
	if (!h)
		return;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 20000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
	for (i = 0; i < CURL_ROUNDS; i++) {
		body[0] = 0;
		rc = curl_easy_perform(h);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
		CO_CHECK(rc == CURLE_OK && code == 200 && !strcmp(body, "hello"),
			 "round %d: %s, %ld, '%s'", i, curl_easy_strerror(rc),
			 code, body);
		if (rc == CURLE_OK && !strcmp(body, "hello"))
			atomic_fetch_add(&curl_ok, 1);
	}
	curl_easy_cleanup(h);
}

static void curl_main(void *p)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	long i, n = CURL_CLIENTS;
	struct kg_stats st;

	(void)p;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	http_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CO_CHECK(!bind(http_lfd, (struct sockaddr *)&a, sizeof(a)) &&
		 !listen(http_lfd, 4096) &&
		 !getsockname(http_lfd, (struct sockaddr *)&a, &len), "listen");
	kg_go(http_accept, NULL);
	for (i = 0; i < n; i++)
		kg_go(curl_client, (void *)(intptr_t)ntohs(a.sin_port));
	for (i = 0; i < 30000 && atomic_load(&curl_ok) < n * CURL_ROUNDS; i++)
		kg_sleep(MS);
	CO_CHECK(kg_stats(&st) == 0, "stats");
	TH_LOG("%ld libcurl clients x %d requests: %ld answered, %ld served, "
	       "%u workers, %u procs, %llu handoffs", n, CURL_ROUNDS,
	       atomic_load(&curl_ok), atomic_load(&http_served), st.workers,
	       st.procs, (unsigned long long)st.handoffs);
	CO_CHECK(atomic_load(&curl_ok) == n * CURL_ROUNDS, "answered %ld",
		 atomic_load(&curl_ok));
	CO_CHECK(st.workers <= st.procs + THREAD_SLACK, "%u workers",
		 st.workers);
	close(http_lfd);
}

TEST_TIMEOUT(libcurl_from_coroutines_against_a_plain_server, 120)
{
	raise_nofile(4 * CURL_CLIENTS + 64);
	ASSERT_EQ(0, (int)curl_global_init(CURL_GLOBAL_DEFAULT));
	EXPECT_EQ(0, run_kg(curl_main, NULL, 2));
	curl_global_cleanup();
	ASSERT_EQ(0, co_failures());
}

TEST_HARNESS_MAIN

#else

/* the whole suite needs the libraries: one skip line for prove */
int main(void)
{
	printf("1..0 # SKIP built without libhiredis-dev and "
	       "libcurl4-openssl-dev (tools/install-deps build)\n");
	return 0;
}

#endif /* KG_HAVE_NETLIBS */
