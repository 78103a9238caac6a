/* SPDX-License-Identifier: MIT */
/*
 * hchan.h - the oracle channel (hchan.c): Go's lock-based hchan, with the
 * semantics and errors of the public kg_chan_* API. Internal: the test
 * suites run the same random schedules against it and the lock-free
 * channel and compare, and the benchmarks measure one beside the other.
 */
#ifndef KG_HCHAN_H
#define KG_HCHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kg_hchan kg_hchan_t;

struct kg_hcase {
	kg_hchan_t *ch;
	int op;			/* KG_SEND or KG_RECV */
	void *elem;
	bool ok;
};

kg_hchan_t *kg_hchan_make(size_t elem_size, size_t capacity);
void kg_hchan_free(kg_hchan_t *ch);
int kg_hchan_send(kg_hchan_t *ch, const void *elem);
int kg_hchan_recv(kg_hchan_t *ch, void *out);
int kg_hchan_try_send(kg_hchan_t *ch, const void *elem);
int kg_hchan_try_recv(kg_hchan_t *ch, void *out);
int kg_hchan_send_timeout(kg_hchan_t *ch, const void *elem, uint64_t ns);
int kg_hchan_recv_timeout(kg_hchan_t *ch, void *out, uint64_t ns);
int kg_hchan_close(kg_hchan_t *ch);
size_t kg_hchan_len(kg_hchan_t *ch);
size_t kg_hchan_cap(kg_hchan_t *ch);
size_t kg_hchan_elem_size(kg_hchan_t *ch);
int kg_hselect(struct kg_hcase *cases, size_t n, int64_t timeout_ns);

/*
 * Test hook (chan_model): when set, kg_select and kg_hselect poll their
 * cases in index order instead of a random one, so that on one proc both
 * make the same choices and the oracle can decide every result.
 */
extern int kg__select_in_order;

#endif /* KG_HCHAN_H */
