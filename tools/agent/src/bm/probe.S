/*
 * Probing accesses and the SMC conduit.
 *
 * probe_load/probe_store arm `probe_recover` with their recovery label, perform exactly one
 * access, and disarm it. If the access takes a synchronous exception, the vector (vectors.S)
 * records ESR/FAR and resumes at the label, which returns 1; otherwise they return 0.
 */
#include "../include/gprs.h"

	.section .bss
	.balign	8
	.global	probe_recover, probe_esr, probe_far
probe_recover:	.quad	0
probe_esr:	.quad	0
probe_far:	.quad	0

	.text
	.macro	arm_probe
	adr	x9, 9f
	adrp	x10, probe_recover
	str	x9, [x10, :lo12:probe_recover]
	.endm
	.macro	disarm_probe
	adrp	x10, probe_recover
	str	xzr, [x10, :lo12:probe_recover]
	.endm

/* int probe_load(uint64_t pa, unsigned size_log2, uint64_t *out) */
	.global	probe_load
probe_load:
	arm_probe
	cmp	w1, #1
	b.lo	1f
	b.eq	2f
	cmp	w1, #2
	b.eq	4f
	ldr	x3, [x0]
	b	5f
1:	ldrb	w3, [x0]
	b	5f
2:	ldrh	w3, [x0]
	b	5f
4:	ldr	w3, [x0]
5:	disarm_probe
	str	x3, [x2]
	mov	w0, #0
	ret
9:	mov	w0, #1
	ret

/* int probe_store(uint64_t pa, unsigned size_log2, uint64_t value) */
	.global	probe_store
probe_store:
	arm_probe
	cmp	w1, #1
	b.lo	1f
	b.eq	2f
	cmp	w1, #2
	b.eq	4f
	str	x2, [x0]
	b	5f
1:	strb	w2, [x0]
	b	5f
2:	strh	w2, [x0]
	b	5f
4:	str	w2, [x0]
5:	dsb	sy
	disarm_probe
	mov	w0, #0
	ret
9:	mov	w0, #1
	ret

/* void smc_call(uint64_t regs[18]): X0..X17 in, X0..X17 out (SMCCC v1.2). */
	.global	smc_call
smc_call:
	stp	x29, x30, [sp, #-32]!
	stp	x0, x18, [sp, #16]
	mov	x18, x0
	load_x0_x17 x18
	smc	#0
	ldr	x18, [sp, #16]
	store_x0_x17 x18
	ldr	x18, [sp, #24]
	ldp	x29, x30, [sp], #32
	ret
