// SPDX-License-Identifier: MIT
/*
 * skynet - the skynet benchmark: a tree where every node spawns 10
 * children until there are 1,000,000 leaves; each leaf returns its number,
 * each node the sum of its children. Results travel through a per-node
 * slot array and a WaitGroup (the same in the Go twin, go/skynet).
 * Prints "skynet_ms <ms>" and checks the sum (499999500000).
 */
#include <kgreen.h>
#include <stdio.h>
#include <stdlib.h>

struct node {
	long num, size;
	long *result;
	kg_wg_t *done;
};

static void skynet(void *arg)
{
	struct node *nd = arg;
	struct node kids[10];
	long results[10], sum = 0, i;
	kg_wg_t wg = KG_WG_INIT;

	if (nd->size == 1) {
		*nd->result = nd->num;
		kg_wg_done(nd->done);
		return;
	}
	kg_wg_add(&wg, 10);
	for (i = 0; i < 10; i++) {
		kids[i].num = nd->num + i * (nd->size / 10);
		kids[i].size = nd->size / 10;
		kids[i].result = &results[i];
		kids[i].done = &wg;
		if (kg_go(skynet, &kids[i]) < 0) {
			fprintf(stderr, "skynet: kg_go failed\n");
			exit(1);
		}
	}
	kg_wg_wait(&wg);
	for (i = 0; i < 10; i++)
		sum += results[i];
	*nd->result = sum;
	kg_wg_done(nd->done);
}

static void main_co(void *arg)
{
	kg_wg_t wg = KG_WG_INIT;
	long result = 0;
	struct node root = { 0, 1000000, &result, &wg };
	uint64_t t0 = kg_now_ns(), t1;

	(void)arg;
	kg_wg_add(&wg, 1);
	kg_go(skynet, &root);
	kg_wg_wait(&wg);
	t1 = kg_now_ns();
	printf("skynet_ms %.1f\n", (double)(t1 - t0) / 1e6);
	if (result != 499999500000L) {
		fprintf(stderr, "skynet: wrong sum %ld\n", result);
		exit(1);
	}
}

int main(void)
{
	return kg_run(main_co, NULL, NULL) ? 1 : 0;
}
