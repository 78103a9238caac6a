// SPDX-License-Identifier: MIT
/*
 * echo_server - a TCP echo server in kgreen: one coroutine per connection,
 * written the way Go writes it.
 *
 *	func handle(c net.Conn) {
 *		defer c.Close()
 *		buf := make([]byte, 4096)
 *		for {
 *			c.SetReadDeadline(time.Now().Add(10 * time.Second))
 *			n, err := c.Read(buf)
 *			if err != nil {
 *				return // EOF, or idle for 10 s
 *			}
 *			if _, err := c.Write(buf[:n]); err != nil {
 *				return
 *			}
 *		}
 *	}
 *
 *	func main() {
 *		ln, _ := net.Listen("tcp", "127.0.0.1:7000")
 *		for {
 *			c, err := ln.Accept()
 *			if err != nil {
 *				continue
 *			}
 *			go handle(c)
 *		}
 *	}
 *
 * The whole Go program, with the same self-test, is examples/go/echo_server
 * (examples.sh runs both).
 *
 * Here the sockets are non-blocking and each call that would block waits
 * in kg_fd_wait: the coroutine parks and its thread serves the others, so
 * 10,000 idle connections cost 10,000 small stacks, not 10,000 threads.
 * (Plain blocking accept, read and write park the same way, through
 * libkgreen's own: Documentation/net.md; this is the explicit form, for
 * code that manages its descriptors itself.)
 *
 *   echo_server [PORT]           serve 127.0.0.1:PORT (default 7000; 0:
 *                                any free port) until killed
 *   echo_server --selftest N     serve a free port, run N clients against
 *                                it (100 round trips each), check, exit
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <kgreen.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SEC 1000000000LL
#define IDLE_TIMEOUT (10 * SEC)

/* Read what is there, waiting up to timeout for something: like
 * net.Conn.Read with a deadline. n, 0 at EOF, or -errno. */
static ssize_t conn_read(int fd, void *buf, size_t len, int64_t timeout)
{
	for (;;) {
		ssize_t n = read(fd, buf, len);
		int err;

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		err = kg_fd_wait(fd, KG_FD_READ, timeout);
		if (err)
			return err;	/* -ETIMEDOUT, -EBADF */
	}
}

/* Write all of buf: like net.Conn.Write. 0 or -errno. */
static int conn_write(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		int err;

		if (n >= 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		err = kg_fd_wait(fd, KG_FD_WRITE, -1);
		if (err)
			return err;
	}
	return 0;
}

static void handle(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	ssize_t n;

	while ((n = conn_read(fd, buf, sizeof(buf), IDLE_TIMEOUT)) > 0)
		if (conn_write(fd, buf, (size_t)n))
			break;
	kg_fd_close(fd);
}

static int listen_on(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(fd, 4096)) {
		perror("echo_server: listen");
		exit(1);
	}
	return fd;
}

static int local_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	getsockname(fd, (struct sockaddr *)&a, &len);
	return ntohs(a.sin_port);
}

/* The accept loop; it ends when the listener is closed (kg_fd_close). */
static void serve(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			if (kg_go(handle, (void *)(intptr_t)fd) < 0)
				close(fd);
			continue;
		}
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) {
			if (kg_fd_wait(lfd, KG_FD_READ, -1) == -EBADF)
				return;	/* closed: stop serving */
			continue;
		}
		if (errno == EMFILE || errno == ENFILE) {
			kg_sleep(10 * 1000000);	/* out of descriptors */
			continue;
		}
		return;
	}
}

/* --selftest: clients against our own server */
static int port;
static kg_wg_t clients = KG_WG_INIT;
static _Atomic int failures;

static void client(void *arg)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int i, err = 0;
	socklen_t len = sizeof(err);
	char out[32], in[32];

	(void)arg;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    (errno != EINPROGRESS || kg_fd_wait(fd, KG_FD_WRITE, 5 * SEC) ||
	     getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err))
		goto fail;
	for (i = 0; i < 100; i++) {
		size_t got = 0;
		ssize_t n;

		snprintf(out, sizeof(out), "message %d from %p", i, (void *)&a);
		if (conn_write(fd, out, sizeof(out)))
			goto fail;
		while (got < sizeof(in)) {
			n = conn_read(fd, in + got, sizeof(in) - got, 5 * SEC);
			if (n <= 0)
				goto fail;
			got += (size_t)n;
		}
		if (memcmp(in, out, sizeof(in)))
			goto fail;
	}
	close(fd);
	kg_wg_done(&clients);
	return;
fail:
	atomic_fetch_add(&failures, 1);
	close(fd);
	kg_wg_done(&clients);
}

struct args {
	int port;
	int selftest;		/* clients to run, or 0 */
};

static void main_co(void *arg)
{
	struct args *a = arg;
	int lfd = listen_on(a->port), i;

	port = local_port(lfd);
	if (!a->selftest) {
		printf("echo_server: listening on 127.0.0.1:%d\n", port);
		fflush(stdout);
		serve((void *)(intptr_t)lfd);	/* until killed */
		return;
	}
	kg_go(serve, (void *)(intptr_t)lfd);
	kg_wg_add(&clients, a->selftest);
	for (i = 0; i < a->selftest; i++)
		kg_go(client, NULL);
	kg_wg_wait(&clients);
	kg_fd_close(lfd);	/* the accept loop ends */
	printf("%d clients x 100 round trips: %s\n", a->selftest,
	       atomic_load(&failures) ? "FAILED" : "ok");
}

int main(int argc, char **argv)
{
	struct args a = { .port = 7000 };

	if (argc == 3 && !strcmp(argv[1], "--selftest")) {
		a.port = 0;
		a.selftest = atoi(argv[2]) > 0 ? atoi(argv[2]) : 100;
	} else if (argc == 2) {
		a.port = atoi(argv[1]);
	} else if (argc != 1) {
		fprintf(stderr, "usage: echo_server [PORT] | --selftest N\n");
		return 2;
	}
	return kg_run(main_co, &a, NULL) || atomic_load(&failures);
}
