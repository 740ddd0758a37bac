/*
 * The realm payload: entered at R-EL1 with the MMU off, X0 = the IPA of the page it shares with
 * the agent (RmiRecParams.gprs[0]). It runs the actions the agent stages there (payload.c).
 */
#include "../include/gprs.h"

	.section .text.entry, "ax"
	.global	_payload_start
_payload_start:
	msr	daifset, #0xf
	adrp	x1, __stack_top
	add	x1, x1, :lo12:__stack_top
	mov	sp, x1
	/* Zero .bss: the image the host measured into the realm may end before it. */
	adrp	x1, __bss_start
	add	x1, x1, :lo12:__bss_start
	adrp	x2, __bss_end
	add	x2, x2, :lo12:__bss_end
2:	cmp	x1, x2
	b.hs	3f
	str	xzr, [x1], #8
	b	2b
3:	adrp	x1, payload_vectors
	add	x1, x1, :lo12:payload_vectors
	msr	vbar_el1, x1
	isb
	bl	payload_main
1:	wfe
	b	1b

/*
 * R-EL1 vectors. The RMM injects exceptions into the realm (an SEA for an MMIO access the Host
 * did not emulate, UNDEFINED for HVC): the payload records ESR_EL1 and FAR_EL1, skips the
 * instruction and goes on. Interrupts are left masked on return.
 */
	.macro	ventry target
	.balign	0x80
	b	\target
	.endm

	.balign	0x800
	.global	payload_vectors
payload_vectors:
	.rept	4
	ventry	payload_sync
	ventry	payload_masked
	ventry	payload_masked
	ventry	payload_masked
	.endr

payload_sync:
	stp	x0, x1, [sp, #-16]!
	adrp	x0, payload_exception
	mrs	x1, esr_el1
	str	x1, [x0, :lo12:payload_exception]
	adrp	x0, payload_exception_far
	mrs	x1, far_el1
	str	x1, [x0, :lo12:payload_exception_far]
	mrs	x1, elr_el1
	add	x1, x1, #4
	msr	elr_el1, x1
	ldp	x0, x1, [sp], #16
	eret

payload_masked:
	stp	x0, x1, [sp, #-16]!
	mrs	x0, spsr_el1
	orr	x0, x0, #(0xf << 6)
	msr	spsr_el1, x0
	ldp	x0, x1, [sp], #16
	eret

/* void realm_smc(uint64_t regs[31]): X0..X30 from regs, SMC #0, X0..X30 back into regs. */
	.text
	.global	realm_smc
realm_smc:
	push_callee_saved
	str	x0, [sp, #96]
	mov	x30, x0
	load_x0_x30_from_x30
	smc	#0
	str	x30, [sp, #104]
	ldr	x30, [sp, #96]
	store_x0_x17 x30
	store_x18_x29 x30
	ldr	x0, [sp, #104]
	str	x0, [x30, #240]
	pop_callee_saved
	ret

/*
 * void realm_trampoline(uint64_t regs[18], void (*code)(void)): X0..X17 from regs, call the one
 * instruction written at `code` (HVC #imm, MRS X1 of a register named at run time), X0..X17 back.
 */
	.global	realm_trampoline
realm_trampoline:
	stp	x29, x30, [sp, #-32]!
	stp	x0, x18, [sp, #16]
	mov	x18, x1
	mov	x30, x0
	load_x0_x17 x30
	blr	x18
	ldr	x30, [sp, #16]
	store_x0_x17 x30
	ldr	x18, [sp, #24]
	ldp	x29, x30, [sp], #32
	ret
