/*
 * EL2 exception vectors. A synchronous exception taken while a probing access is armed
 * (probe_recover != 0: probe.S) is turned into a result: ESR_EL2 and FAR_EL2 are saved, and
 * execution resumes at the probe's recovery label with every register as it was. Anything
 * else is unexpected: the registers are reported on the UART and the agent halts.
 */
	.macro	ventry target
	.balign	0x80
	b	\target
	.endm

	.macro	unexpected kind
unexpected_\kind:
	sub	sp, sp, #(32 * 8)
	stp	x0, x1, [sp, #0]
	stp	x2, x3, [sp, #16]
	mov	x0, #\kind
	mrs	x1, esr_el2
	mrs	x2, elr_el2
	mrs	x3, far_el2
	bl	bm_unexpected
	b	.
	.endm

	.section .text.vectors, "ax"
	.balign	0x800
	.global	vectors
vectors:
	ventry	unexpected_0	/* current EL, SP_EL0: sync */
	ventry	unexpected_1	/* irq */
	ventry	unexpected_2	/* fiq */
	ventry	unexpected_3	/* serror */
	ventry	sync_current	/* current EL, SP_ELx: sync */
	ventry	unexpected_5
	ventry	unexpected_6
	ventry	unexpected_7
	ventry	unexpected_8	/* lower EL, AArch64 */
	ventry	unexpected_9
	ventry	unexpected_10
	ventry	unexpected_11
	ventry	unexpected_12	/* lower EL, AArch32 */
	ventry	unexpected_13
	ventry	unexpected_14
	ventry	unexpected_15

sync_current:
	stp	x0, x1, [sp, #-16]!
	adrp	x0, probe_recover
	ldr	x1, [x0, :lo12:probe_recover]
	cbz	x1, 1f
	str	xzr, [x0, :lo12:probe_recover]
	msr	elr_el2, x1
	mrs	x1, esr_el2
	adrp	x0, probe_esr
	str	x1, [x0, :lo12:probe_esr]
	mrs	x1, far_el2
	adrp	x0, probe_far
	str	x1, [x0, :lo12:probe_far]
	ldp	x0, x1, [sp], #16
	eret
1:	ldp	x0, x1, [sp], #16
	b	unexpected_4

	unexpected 0
	unexpected 1
	unexpected 2
	unexpected 3
	unexpected 4
	unexpected 5
	unexpected 6
	unexpected 7
	unexpected 8
	unexpected 9
	unexpected 10
	unexpected 11
	unexpected 12
	unexpected 13
	unexpected 14
	unexpected 15
