/*
 * The world switch of the realm self-test: run the realm payload at EL1 (no RMM, no stage 2)
 * until it takes an exception to EL2, then come back to the caller with its ESR.
 *
 * uint64_t selftest_enter(struct selftest_realm *realm): realm = {x[31], elr, spsr}.
 */
#include "../include/gprs.h"

	.text
	.global	selftest_enter
selftest_enter:
	/* Save what the C caller expects kept, and where to come back to. */
	push_callee_saved
	str	x0, [sp, #96]
	adrp	x1, selftest_vectors
	add	x1, x1, :lo12:selftest_vectors
	msr	vbar_el2, x1
	ldr	x1, [x0, #248]
	msr	elr_el2, x1
	ldr	x1, [x0, #256]
	msr	spsr_el2, x1
	isb
	mov	x30, x0
	load_x0_x30_from_x30
	eret

/* An exception from EL1: save the realm's registers, restore the agent's, return the ESR. */
realm_exit:
	stp	x0, x1, [sp, #-16]!		/* sp is still the agent's stack: borrow two slots */
	ldr	x0, [sp, #16 + 96]		/* the realm structure saved by selftest_enter */
	stp	x2, x3, [x0, #16]
	stp	x4, x5, [x0, #32]
	stp	x6, x7, [x0, #48]
	stp	x8, x9, [x0, #64]
	stp	x10, x11, [x0, #80]
	stp	x12, x13, [x0, #96]
	stp	x14, x15, [x0, #112]
	stp	x16, x17, [x0, #128]
	stp	x18, x19, [x0, #144]
	stp	x20, x21, [x0, #160]
	stp	x22, x23, [x0, #176]
	stp	x24, x25, [x0, #192]
	stp	x26, x27, [x0, #208]
	stp	x28, x29, [x0, #224]
	str	x30, [x0, #240]
	ldp	x2, x3, [sp], #16
	stp	x2, x3, [x0, #0]
	mrs	x1, elr_el2
	str	x1, [x0, #248]
	mrs	x1, spsr_el2
	str	x1, [x0, #256]
	adrp	x1, vectors
	add	x1, x1, :lo12:vectors
	msr	vbar_el2, x1
	isb
	mrs	x0, esr_el2
	pop_callee_saved
	ret

	.macro	ventry target
	.balign	0x80
	b	\target
	.endm

	.balign	0x800
selftest_vectors:
	ventry	selftest_unexpected	/* current EL, SP_EL0 */
	ventry	selftest_unexpected
	ventry	selftest_unexpected
	ventry	selftest_unexpected
	ventry	selftest_unexpected	/* current EL, SP_ELx */
	ventry	selftest_unexpected
	ventry	selftest_unexpected
	ventry	selftest_unexpected
	ventry	realm_exit		/* lower EL, AArch64: sync */
	ventry	realm_exit		/* irq */
	ventry	realm_exit		/* fiq */
	ventry	realm_exit		/* serror */
	ventry	selftest_unexpected	/* lower EL, AArch32 */
	ventry	selftest_unexpected
	ventry	selftest_unexpected
	ventry	selftest_unexpected

selftest_unexpected:
	mov	x0, #4
	mrs	x1, esr_el2
	mrs	x2, elr_el2
	mrs	x3, far_el2
	bl	bm_unexpected
	b	.
