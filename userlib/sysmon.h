/* SPDX-License-Identifier: MIT */
/* sysmon.h - the monitor thread: the backend without kernel help, and the
 * kernel backends' strand watch (sysmon.c). */
#ifndef KG_SYSMON_H
#define KG_SYSMON_H

#include "rt.h"

/* Start the monitor for rt's backend (none: a kernel backend without
 * membarrier); 0 or -ENOMEM. */
int kg_sysmon_start(struct kg_rt *rt);
/* Stop the monitor (idempotent); coroutines may still mark regions. */
void kg_sysmon_stop(struct kg_rt *rt);
/* Free its state: no worker of rt runs any more. */
void kg_sysmon_free(struct kg_rt *rt);
/* Is w's coroutine (the caller) inside kg_blocking_begin/end? */
bool kg_sysmon_marked(struct kg_worker *w);

#endif /* KG_SYSMON_H */
