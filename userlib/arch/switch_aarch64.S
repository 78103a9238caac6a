/* SPDX-License-Identifier: MIT */
/*
 * AArch64 (AAPCS64) coroutine context switch.
 *
 * void *kg_ctx_switch(void **save_sp, void *new_sp, void *arg)
 *   Saves the callee-saved registers (x19-x28, fp, lr, d8-d15) and FPCR
 *   (rounding mode, flush-to-zero: the floating-point control state) in a
 *   176-byte frame on the current stack, stores sp in *save_sp, switches to
 *   new_sp, restores the same set and returns arg (the scheduler's worker)
 *   through the restored lr.
 *
 * Frame, from the saved sp upwards:
 *   [0] x19 x20 [16] x21 x22 [32] x23 x24 [48] x25 x26 [64] x27 x28
 *   [80] x29 x30 [96] d8 d9 [112] d10 d11 [128] d12 d13 [144] d14 d15
 *   [160] fpcr [168] pad
 * kg_ctx_make (context.h) builds it for a new coroutine with x30 pointing
 * at kg_ctx_entry and x19 holding the coroutine's first C function.
 */
	.text
	.globl	kg_ctx_switch
	.hidden	kg_ctx_switch
	.type	kg_ctx_switch, %function
	.p2align 4
kg_ctx_switch:
	sub	sp, sp, #176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x9, fpcr
	str	x9, [sp, #160]
	mov	x10, sp
	str	x10, [x0]
	mov	sp, x1
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	/* writing FPCR can be slow: only when it differs */
	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:	add	sp, sp, #176
	mov	x0, x2
	ret
	.size	kg_ctx_switch, .-kg_ctx_switch

/*
 * First instruction of every coroutine: kg_ctx_switch "returned" here with
 * the worker in x0 and the entry function kg_ctx_make chose in x19. fp and
 * lr are zero, ending backtraces.
 */
	.globl	kg_ctx_entry
	.hidden	kg_ctx_entry
	.type	kg_ctx_entry, %function
	.p2align 4
kg_ctx_entry:
	mov	x29, #0
	mov	x30, #0
	blr	x19
	brk	#0
	.size	kg_ctx_entry, .-kg_ctx_entry

	.section .note.GNU-stack,"",%progbits
