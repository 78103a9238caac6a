/* SPDX-License-Identifier: MIT */
/*
 * x86-64 (System V) coroutine context switch.
 *
 * void *kg_ctx_switch(void **save_sp, void *new_sp, void *arg)
 *   Saves the callee-saved registers (rbx, rbp, r12-r15), the SSE control
 *   and status register (MXCSR) and the x87 control word on the current
 *   stack, stores the stack pointer in *save_sp, loads new_sp and restores
 *   the same set from there. Returns arg, as handed over by the context that
 *   switched back to us: the scheduler passes its worker, so the resumed
 *   side can finish the switch without a thread-local lookup.
 *   Caller-saved registers need no saving: the call itself clobbers them.
 *
 * Frame on a switched-out stack, from the saved sp upwards:
 *   [sp+0] mxcsr (4 bytes) | x87 cw (2 bytes) | pad
 *   [sp+8] r15  [sp+16] r14  [sp+24] r13  [sp+32] r12  [sp+40] rbx
 *   [sp+48] rbp [sp+56] return address
 * kg_ctx_make (context.h) builds the same frame for a new coroutine with
 * the return address pointing at kg_ctx_entry and rbx holding the
 * coroutine's first C function.
 */
	.text
	.globl	kg_ctx_switch
	.hidden	kg_ctx_switch
	.type	kg_ctx_switch, @function
	.p2align 4
kg_ctx_switch:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$8, %rsp
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movq	%rsp, %rax
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	/*
	 * Loading MXCSR and the x87 control word is slow (microcoded);
	 * they almost never differ between coroutines, so load them only
	 * when the new context's saved values differ from ours (rax still
	 * points at the frame we just saved).
	 */
	movl	(%rsp), %ecx
	cmpl	(%rax), %ecx
	je	1f
	ldmxcsr	(%rsp)
1:	movzwl	4(%rsp), %ecx
	cmpw	4(%rax), %cx
	je	2f
	fldcw	4(%rsp)
2:	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	movq	%rdx, %rax
	/*
	 * A plain ret: every switch leaves from the same call site in the
	 * scheduler, so the return stack buffer's prediction is right; a
	 * pop + jmp would unbalance it and make every later ret miss.
	 */
	ret
	.cfi_endproc
	.size	kg_ctx_switch, .-kg_ctx_switch

/*
 * First instruction of every coroutine: kg_ctx_switch "returned" here with
 * the worker in rax and the entry function kg_ctx_make chose in rbx. rsp
 * is 16-byte aligned, so the call below enters it with the ABI's
 * alignment. The zero return address slot pushed by the call terminates
 * debugger and unwinder backtraces.
 */
	.globl	kg_ctx_entry
	.hidden	kg_ctx_entry
	.type	kg_ctx_entry, @function
	.p2align 4
kg_ctx_entry:
	.cfi_startproc
	.cfi_undefined rip
	xorl	%ebp, %ebp
	movq	%rax, %rdi
	call	*%rbx
	ud2
	.cfi_endproc
	.size	kg_ctx_entry, .-kg_ctx_entry

	.section .note.GNU-stack,"",@progbits
