// SPDX-License-Identifier: MIT
/*
 * echoload [--http] PORT CONNS SECONDS - the load the echo and http
 * benchmarks put on a server at 127.0.0.1:PORT (kgreen's servers and their
 * Go twins run the same one): CONNS connections, each sending a 64-byte
 * message (--http: "GET / HTTP/1.1" on a keep-alive connection), waiting
 * for the whole reply (--http: headers and Content-Length bytes of body),
 * and again, for SECONDS. One thread, plain epoll, so that its cost is the
 * same whichever server it measures. Prints
 *   requests N   (round trips completed)
 *   p50_us / p99_us / p999_us   (round-trip latency)
 *   unanswered N (connections that never got a reply: refused, reset,
 *                 or silent for the whole run)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define HIST 200000	/* latency buckets of 10 us up to 2 s, the last one open */

struct conn {
	int fd;
	uint32_t got;		/* bytes of the reply read */
	char buf[512];		/* --http: the reply so far */
	uint64_t sent_at;
	uint64_t replies;
	int state;		/* 0 connecting, 1 waiting reply, 2 dead */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t hist[HIST];
static uint64_t nlat;

static void record(uint64_t ns)
{
	uint64_t b = ns / 10000;

	hist[b < HIST ? b : HIST - 1]++;
	nlat++;
}

static double quantile(double q)
{
	uint64_t want = (uint64_t)(q * (double)nlat), seen = 0;
	int b;

	for (b = 0; b < HIST; b++) {
		seen += hist[b];
		if (seen > want)
			return (b + 1) * 10.0;
	}
	return HIST * 10.0;
}

static int http;
static const char get[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

static int send_msg(struct conn *c)
{
	static const char msg[MSG] = "kgreen echo benchmark";
	size_t len = http ? sizeof(get) - 1 : MSG;
	ssize_t n = write(c->fd, http ? get : msg, len);

	if (n != (ssize_t)len)
		return -1;	/* a short message always fits an empty socket */
	c->sent_at = now_ns();
	c->got = 0;
	c->state = 1;
	return 0;
}

/* --http: is c->buf (got bytes) a whole response? -1: malformed */
static int http_done(struct conn *c)
{
	char *eoh, *cl;

	c->buf[c->got] = 0;
	eoh = strstr(c->buf, "\r\n\r\n");
	if (!eoh)
		return c->got >= sizeof(c->buf) - 1 ? -1 : 0;
	cl = strcasestr(c->buf, "\r\nContent-Length:");
	if (!cl || cl > eoh)
		return -1;
	return c->got >= (uint32_t)(eoh + 4 - c->buf) +
				 strtoul(cl + 17, NULL, 10);
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct rlimit rl;
	struct epoll_event ev, evs[256];
	struct conn *cs;
	uint64_t until, requests = 0, unanswered = 0;
	int port, n, secs, ep, i, one = 1;

	if (argc == 5 && !strcmp(argv[1], "--http")) {
		http = 1;
		argv++;
		argc--;
	}
	if (argc != 4)
		return fprintf(stderr, "usage: echoload [--http] PORT CONNS "
			       "SECONDS\n"), 2;
	port = atoi(argv[1]);
	n = atoi(argv[2]);
	secs = atoi(argv[3]);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cs = calloc((size_t)n, sizeof(*cs));
	ep = epoll_create1(0);
	for (i = 0; i < n; i++) {
		struct conn *c = &cs[i];

		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (c->fd < 0) {
			c->state = 2;
			continue;
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) &&
		    errno != EINPROGRESS) {
			c->state = 2;
			continue;
		}
		ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
		ev.data.ptr = c;
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	until = now_ns() + (uint64_t)secs * 1000000000ull;
	while (now_ns() < until) {
		int k, m = epoll_wait(ep, evs, 256, 10);

		for (k = 0; k < m; k++) {
			struct conn *c = evs[k].data.ptr;
			char buf[MSG];
			ssize_t r;

			if (c->state == 2)
				continue;
			if (evs[k].events & (EPOLLERR | EPOLLHUP)) {
				c->state = 2;
				continue;
			}
			if (c->state == 0 && (evs[k].events & EPOLLOUT)) {
				if (send_msg(c))
					c->state = 2;
				continue;
			}
			while (c->state == 1 &&
			       (r = http ? read(c->fd, c->buf + c->got,
						sizeof(c->buf) - 1 - c->got)
					 : read(c->fd, buf, MSG - c->got)) > 0) {
				int done;

				c->got += (uint32_t)r;
				done = http ? http_done(c) : c->got == MSG;
				if (done < 0) {
					c->state = 2;
					break;
				}
				if (!done)
					continue;
				record(now_ns() - c->sent_at);
				c->replies++;
				requests++;
				if (send_msg(c))
					c->state = 2;
			}
			if (c->state == 1 && r == 0)
				c->state = 2;
		}
	}
	for (i = 0; i < n; i++) {
		if (!cs[i].replies)
			unanswered++;
		if (cs[i].fd >= 0)
			close(cs[i].fd);
	}
	printf("requests %llu\n", (unsigned long long)requests);
	printf("p50_us %.0f\np99_us %.0f\np999_us %.0f\n", quantile(0.50),
	       quantile(0.99), quantile(0.999));
	printf("unanswered %llu\n", (unsigned long long)unanswered);
	return 0;
}
