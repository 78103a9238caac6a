// SPDX-License-Identifier: MIT
/*
 * http_server - a small HTTP/1.1 server in kgreen: keep-alive, one
 * coroutine per connection, a deadline per request. Go's version:
 *
 *	func main() {
 *		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
 *			fmt.Fprintf(w, "hello from %s\n", r.URL.Path)
 *		})
 *		srv := &http.Server{Addr: "127.0.0.1:8080",
 *			ReadTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
 *		srv.ListenAndServe()
 *	}
 *
 * The whole Go program, with the same self-test, is examples/go/http_server
 * (examples.sh runs both).
 *
 * Each connection reads requests (a request line and headers; a body of
 * Content-Length bytes is read and dropped), answers each with 200 and a
 * short text, and keeps the connection open unless the client says
 * "Connection: close" (or speaks HTTP/1.0 without keep-alive). A request
 * must arrive whole within 10 s of its first byte, and a connection may
 * stay idle 30 s between requests: a context per request carries its
 * deadline into every wait (kg_fd_wait_context).
 *
 *   http_server [PORT]          serve 127.0.0.1:PORT (default 8080; 0:
 *                               any free port) until killed
 *   http_server --selftest N    serve a free port, run N keep-alive
 *                               clients (100 requests each), check, exit
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <kgreen.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define SEC 1000000000ull
#define READ_TIMEOUT (10 * SEC)
#define IDLE_TIMEOUT (30 * SEC)
#define BUF 8192

struct conn {
	int fd;
	char buf[BUF];
	size_t len;		/* bytes in buf */
};

/* More bytes into c->buf, waiting as ctx allows. n, 0 at EOF, -errno. */
static ssize_t fill(struct conn *c, kg_context_t *ctx)
{
	for (;;) {
		ssize_t n = read(c->fd, c->buf + c->len, BUF - c->len);
		int err;

		if (n >= 0) {
			c->len += (size_t)n;
			return n;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		err = kg_fd_wait_context(c->fd, KG_FD_READ, ctx);
		if (err)
			return err;
	}
}

static int send_all(int fd, const char *p, size_t len)
{
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
		err = kg_fd_wait(fd, KG_FD_WRITE, (int64_t)READ_TIMEOUT);
		if (err)
			return err;
	}
	return 0;
}

/* The value of header name in [h, end), or NULL. */
static const char *header(const char *h, const char *end, const char *name)
{
	size_t n = strlen(name);

	while (h < end) {
		const char *eol = memchr(h, '\n', (size_t)(end - h));

		if (!eol)
			break;
		if ((size_t)(eol - h) > n && !strncasecmp(h, name, n) &&
		    h[n] == ':') {
			h += n + 1;
			while (*h == ' ' || *h == '\t')
				h++;
			return h;
		}
		h = eol + 1;
	}
	return NULL;
}

/*
 * Serve one request whose head (request line and headers) is the first
 * head_len bytes of c->buf. Returns 1 to keep the connection, 0 to close
 * it, -errno on error.
 */
static int serve_one(struct conn *c, size_t head_len, kg_context_t *ctx)
{
	const char *end = c->buf + head_len, *v, *sp;
	char path[256], resp[512], body[300];
	bool http10, keep;
	size_t clen = 0, blen, rlen;
	int err;

	/* "GET /path HTTP/1.1" */
	sp = memchr(c->buf, ' ', head_len);
	if (!sp)
		return -EPROTO;
	if (sscanf(sp + 1, "%255s", path) != 1)
		return -EPROTO;
	http10 = memmem(c->buf, head_len, "HTTP/1.0\r", 9) != NULL;
	v = header(c->buf, end, "Connection");
	keep = http10 ? v && !strncasecmp(v, "keep-alive", 10)
		      : !(v && !strncasecmp(v, "close", 5));
	v = header(c->buf, end, "Content-Length");
	if (v)
		clen = strtoul(v, NULL, 10);
	/* drop the body */
	memmove(c->buf, c->buf + head_len, c->len - head_len);
	c->len -= head_len;
	while (c->len < clen && c->len < BUF) {
		ssize_t n = fill(c, ctx);

		if (n <= 0)
			return n ? (int)n : 0;
	}
	if (clen > c->len)
		return -E2BIG;	/* a body larger than the buffer: not here */
	memmove(c->buf, c->buf + clen, c->len - clen);
	c->len -= clen;

	blen = (size_t)snprintf(body, sizeof(body), "hello from %s\n", path);
	rlen = (size_t)snprintf(resp, sizeof(resp),
				"HTTP/1.1 200 OK\r\n"
				"Content-Type: text/plain; charset=utf-8\r\n"
				"Content-Length: %zu\r\n%s\r\n%s",
				blen, keep ? "" : "Connection: close\r\n", body);
	err = send_all(c->fd, resp, rlen);
	return err ? err : keep;
}

static void handle(void *arg)
{
	struct conn *c = calloc(1, sizeof(*c));
	kg_context_t *bg = kg_context_background();

	c->fd = (int)(intptr_t)arg;
	for (;;) {
		/* idle until the next request starts, then 10 s to read it */
		kg_context_t *idle = kg_context_with_timeout(bg, IDLE_TIMEOUT);
		kg_context_t *req = NULL;
		char *eoh;
		int r = 1;

		while (!(eoh = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
			ssize_t n;

			if (c->len == BUF) {
				r = -E2BIG;	/* headers too large */
				break;
			}
			if (c->len && !req)
				req = kg_context_with_timeout(bg, READ_TIMEOUT);
			n = fill(c, req ? req : idle);
			if (n <= 0) {
				r = n ? (int)n : 0;
				break;
			}
		}
		if (r == 1) {
			if (!req)
				req = kg_context_with_timeout(bg, READ_TIMEOUT);
			r = serve_one(c, (size_t)(eoh + 4 - c->buf), req);
		}
		kg_context_free(req);
		kg_context_free(idle);
		if (r != 1)
			break;
	}
	kg_fd_close(c->fd);
	free(c);
}

static void serve(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;

		if (fd >= 0) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof(one));
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
			kg_sleep(10 * 1000000);
			continue;
		}
		return;
	}
}

/* --selftest: keep-alive clients against our own server */
static int port;
static kg_wg_t clients = KG_WG_INIT;
static _Atomic int failures;

static void client(void *arg)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	long id = (long)(intptr_t)arg;
	struct conn *c = calloc(1, sizeof(*c));
	int i, err = 0;
	socklen_t len = sizeof(err);

	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    (errno != EINPROGRESS ||
	     kg_fd_wait(fd, KG_FD_WRITE, (int64_t)(5 * SEC)) ||
	     getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err))
		goto fail;
	c->fd = fd;
	for (i = 0; i < 100; i++) {
		char req[128], want[64], *eoh;
		kg_context_t *ctx = kg_context_with_timeout(
			kg_context_background(), 5 * SEC);
		int n = snprintf(req, sizeof(req),
				 "GET /c%ld/%d HTTP/1.1\r\nHost: x\r\n%s\r\n",
				 id, i, i == 99 ? "Connection: close\r\n" : "");
		bool ok = !send_all(fd, req, (size_t)n);

		/* the whole response: headers, then the 16-19 byte body */
		snprintf(want, sizeof(want), "hello from /c%ld/%d\n", id, i);
		while (ok && (!(eoh = memmem(c->buf, c->len, "\r\n\r\n", 4)) ||
			      c->len < (size_t)(eoh + 4 - c->buf) +
					       strlen(want)))
			ok = fill(c, ctx) > 0;
		kg_context_free(ctx);
		if (!ok || strncmp(c->buf, "HTTP/1.1 200 OK\r\n", 17) ||
		    memcmp(eoh + 4, want, strlen(want)))
			goto fail;
		c->len = 0;
	}
	close(fd);
	free(c);
	kg_wg_done(&clients);
	return;
fail:
	atomic_fetch_add(&failures, 1);
	close(fd);
	free(c);
	kg_wg_done(&clients);
}

static int listen_on(int p)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	a.sin_port = htons((uint16_t)p);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(fd, 4096)) {
		perror("http_server: listen");
		exit(1);
	}
	getsockname(fd, (struct sockaddr *)&a, &len);
	port = ntohs(a.sin_port);
	return fd;
}

struct args {
	int port;
	int selftest;
};

static void main_co(void *arg)
{
	struct args *a = arg;
	int lfd = listen_on(a->port);
	long i;

	if (!a->selftest) {
		printf("http_server: listening on http://127.0.0.1:%d/\n", port);
		fflush(stdout);
		serve((void *)(intptr_t)lfd);
		return;
	}
	kg_go(serve, (void *)(intptr_t)lfd);
	kg_wg_add(&clients, a->selftest);
	for (i = 0; i < a->selftest; i++)
		kg_go(client, (void *)(intptr_t)i);
	kg_wg_wait(&clients);
	kg_fd_close(lfd);
	printf("%d keep-alive clients x 100 requests: %s\n", a->selftest,
	       atomic_load(&failures) ? "FAILED" : "ok");
}

int main(int argc, char **argv)
{
	struct args a = { .port = 8080 };

	if (argc == 3 && !strcmp(argv[1], "--selftest")) {
		a.port = 0;
		a.selftest = atoi(argv[2]) > 0 ? atoi(argv[2]) : 100;
	} else if (argc == 2) {
		a.port = atoi(argv[1]);
	} else if (argc != 1) {
		fprintf(stderr, "usage: http_server [PORT] | --selftest N\n");
		return 2;
	}
	return kg_run(main_co, &a, NULL) || atomic_load(&failures);
}
