// SPDX-License-Identifier: MIT
/*
 * echo: a TCP echo server on 127.0.0.1, one coroutine per connection
 * doing non-blocking reads and writes with kg_fd_wait, under the load of
 * echoload (100, 1,000 and 10,000 connections of 64-byte round trips;
 * ECHO_SECONDS each, default 3). Go twin: go/echo, the same server with
 * net.Conn, under the same echoload. Prints per size: thousands of
 * requests/s, latency p50/p99/p99.9 (us), the peak number of threads,
 * RSS (kB) and the connections that never got an answer.
 *
 * Built with -DBENCH_PLAIN it is the echoplain benchmark: the same
 * server written the plain way, blocking sockets and blocking accept,
 * read and write, which libkgreen's own read, write and accept park
 * (Documentation/net.md). Go twin: the same go/echo.
 *
 * Built with -DBENCH_HTTP it is the http benchmark: each connection
 * answers keep-alive "GET /" requests with a 13-byte body, at 1,000
 * connections (echoload --http). Go twin: go/http, net/http's server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <kgreen.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

static int lfd;
static _Atomic int stop;
static _Atomic long peak_threads, peak_rss;

#ifndef BENCH_PLAIN
/* Write all of buf; 0, or -1 when the connection is done for. */
static int write_all(int fd, const char *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w > 0)
			off += (size_t)w;
		else if (!(w < 0 && errno == EAGAIN &&
			   !kg_fd_wait(fd, KG_FD_WRITE, -1)))
			return -1;
	}
	return 0;
}
#endif

#ifdef BENCH_HTTP
#define NAME "http"
static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			   "Content-Length: 13\r\n\r\nhello, world\n";

/* keep-alive: answer every request head (ends with an empty line) */
static void conn(void *p)
{
	int fd = (int)(intptr_t)p, one = 1;
	char buf[4096];
	size_t len = 0;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (;;) {
		char *eoh = memmem(buf, len, "\r\n\r\n", 4);
		ssize_t n;

		if (eoh) {
			size_t used = (size_t)(eoh + 4 - buf);

			memmove(buf, buf + used, len - used);
			len -= used;
			if (write_all(fd, resp, sizeof(resp) - 1))
				break;
			continue;
		}
		if (len == sizeof(buf))
			break;
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno != EAGAIN || kg_fd_wait(fd, KG_FD_READ, -1))
				break;
			continue;
		}
		len += (size_t)n;
	}
	kg_fd_close(fd);
}
#elif defined(BENCH_PLAIN)
#define NAME "echoplain"
/* what a C programmer writes without thinking of the runtime */
static void conn(void *p)
{
	int fd = (int)(intptr_t)p, one = 1;
	char buf[256];
	ssize_t n;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)n) != n)
			break;
	close(fd);
}
#else
#define NAME "echo"
static void conn(void *p)
{
	int fd = (int)(intptr_t)p, one = 1;
	char buf[256];

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n == 0)
			break;
		if (n < 0) {
			if (errno != EAGAIN || kg_fd_wait(fd, KG_FD_READ, -1))
				break;
			continue;
		}
		if (write_all(fd, buf, (size_t)n))
			break;
	}
	kg_fd_close(fd);
}
#endif

#ifdef BENCH_PLAIN
#define SOCK_MODE 0		/* blocking: libkgreen's calls park */
#else
#define SOCK_MODE SOCK_NONBLOCK
#endif

static void acceptor(void *p)
{
	(void)p;
	while (!atomic_load(&stop)) {
		int fd = accept4(lfd, NULL, NULL, SOCK_MODE | SOCK_CLOEXEC);

		if (fd >= 0) {
			if (kg_go(conn, (void *)(intptr_t)fd) < 0)
				close(fd);
			continue;
		}
		if (errno == EBADF)
			break;		/* closed: this size is over */
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) {
			if (kg_fd_wait(lfd, KG_FD_READ, 100 * 1000000LL) == -EBADF)
				break;
			continue;
		}
		if (errno == EMFILE || errno == ENFILE) {
			kg_sleep(1000000);	/* out of descriptors: back off */
			continue;
		}
		break;
	}
}

static void sampler(void *p)
{
	(void)p;
	while (!atomic_load(&stop)) {
		long t = proc_status("Threads:"), r = rss_kb();

		if (t > atomic_load(&peak_threads))
			atomic_store(&peak_threads, t);
		if (r > atomic_load(&peak_rss))
			atomic_store(&peak_rss, r);
		kg_sleep(20 * 1000000ull);
	}
}

/* echoload's path: beside this program. */
static void load_path(char *out, size_t len)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	self[n > 0 ? n : 0] = 0;
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	snprintf(out, len, "%s/echoload", self);
}

/* Run echoload against port; its output in out. */
static int run_load(int port, int conns, int secs, char *out, size_t len)
{
	char path[4200], sport[16], sconns[16], ssecs[16];
#ifdef BENCH_HTTP
	char mode[] = "--http";
	char *argv[] = { path, mode, sport, sconns, ssecs, NULL };
#else
	char *argv[] = { path, sport, sconns, ssecs, NULL };
#endif
	posix_spawn_file_actions_t fa;
	int pfd[2], status;
	size_t got = 0;
	pid_t pid;

	load_path(path, sizeof(path));
	snprintf(sport, sizeof(sport), "%d", port);
	snprintf(sconns, sizeof(sconns), "%d", conns);
	snprintf(ssecs, sizeof(ssecs), "%d", secs);
	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	if (posix_spawn(&pid, path, &fa, NULL, argv, environ)) {
		posix_spawn_file_actions_destroy(&fa);
		return -ENOENT;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t n = read(pfd[0], out + got, len - 1 - got);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EAGAIN &&
		    !kg_fd_wait(pfd[0], KG_FD_READ, -1))
			continue;
		break;
	}
	out[got] = 0;
	close(pfd[0]);
	while (waitpid(pid, &status, WNOHANG) == 0)
		kg_sleep(1000000);
	return 0;
}

static double field(const char *out, const char *key)
{
	const char *p = strstr(out, key);

	return p ? atof(p + strlen(key)) : -1;
}

static void one_size(int conns, int secs)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	char out[1024];
	int one = 1;

	atomic_store(&stop, 0);
	atomic_store(&peak_threads, 0);
	atomic_store(&peak_rss, 0);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_MODE | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(lfd, 65535) ||
	    getsockname(lfd, (struct sockaddr *)&addr, &alen)) {
		perror(NAME ": listen");
		exit(1);
	}
	kg_go(acceptor, NULL);
	kg_go(sampler, NULL);
	if (run_load(ntohs(addr.sin_port), conns, secs, out, sizeof(out))) {
		fprintf(stderr, NAME ": cannot run echoload\n");
		exit(1);
	}
	atomic_store(&stop, 1);
	kg_fd_close(lfd);
	printf(NAME "%d_kreqs %.1f\n", conns,
	       field(out, "requests ") / secs / 1000.0);
	printf(NAME "%d_p50_us %.0f\n", conns, field(out, "p50_us "));
	printf(NAME "%d_p99_us %.0f\n", conns, field(out, "p99_us "));
	printf(NAME "%d_p999_us %.0f\n", conns, field(out, "p999_us "));
	printf(NAME "%d_threads %ld\n", conns, atomic_load(&peak_threads));
	printf(NAME "%d_rss_kb %ld\n", conns, atomic_load(&peak_rss));
	printf(NAME "%d_unanswered %.0f\n", conns, field(out, "unanswered "));
	fflush(stdout);
	kg_sleep(200 * 1000000ull);	/* connections wind down */
}

static void bench_main(void *p)
{
	const char *s = getenv("ECHO_SECONDS");
	int secs = s && atoi(s) > 0 ? atoi(s) : 3;

	(void)p;
#ifdef BENCH_HTTP
	one_size(1000, secs);
#else
	one_size(100, secs);
	one_size(1000, secs);
	one_size(10000, secs);
#endif
}

int main(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	return kg_run(bench_main, NULL, NULL) ? 1 : 0;
}
