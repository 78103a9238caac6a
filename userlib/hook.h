/* SPDX-License-Identifier: MIT */
/*
 * hook.h - libc's socket, pipe and sleep calls made to park a coroutine
 * (hook.c). The hooks themselves are the libc names; this is what kg_run
 * calls (which also links hook.c in from the static library).
 */
#ifndef KG_HOOK_H
#define KG_HOOK_H

/* Find libc's functions now (idempotent; each hook also does it). */
void kg_hooks_init(void);

#endif /* KG_HOOK_H */
