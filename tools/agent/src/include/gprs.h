/*
 * Moving general-purpose registers to and from a uint64_t array (assembly only).
 *
 * The array holds X<n> at byte offset 8 * n, as the SMC conduit (X0..X17, SMCCC v1.2) and a
 * realm's register file (X0..X30) are passed between C and assembly. The base register must not
 * be one of the registers moved.
 */
#ifndef AGENT_GPRS_H
#define AGENT_GPRS_H

#ifdef __ASSEMBLY__

/* X0..X17 from [base, #0 .. #136]. */
.macro load_x0_x17 base
	ldp	x0, x1, [\base, #0]
	ldp	x2, x3, [\base, #16]
	ldp	x4, x5, [\base, #32]
	ldp	x6, x7, [\base, #48]
	ldp	x8, x9, [\base, #64]
	ldp	x10, x11, [\base, #80]
	ldp	x12, x13, [\base, #96]
	ldp	x14, x15, [\base, #112]
	ldp	x16, x17, [\base, #128]
.endm

/* X0..X17 to [base, #0 .. #136]. */
.macro store_x0_x17 base
	stp	x0, x1, [\base, #0]
	stp	x2, x3, [\base, #16]
	stp	x4, x5, [\base, #32]
	stp	x6, x7, [\base, #48]
	stp	x8, x9, [\base, #64]
	stp	x10, x11, [\base, #80]
	stp	x12, x13, [\base, #96]
	stp	x14, x15, [\base, #112]
	stp	x16, x17, [\base, #128]
.endm

/* X18..X29 from [base, #144 .. #232]. */
.macro load_x18_x29 base
	ldp	x18, x19, [\base, #144]
	ldp	x20, x21, [\base, #160]
	ldp	x22, x23, [\base, #176]
	ldp	x24, x25, [\base, #192]
	ldp	x26, x27, [\base, #208]
	ldp	x28, x29, [\base, #224]
.endm

/* X18..X29 to [base, #144 .. #232]. */
.macro store_x18_x29 base
	stp	x18, x19, [\base, #144]
	stp	x20, x21, [\base, #160]
	stp	x22, x23, [\base, #176]
	stp	x24, x25, [\base, #192]
	stp	x26, x27, [\base, #208]
	stp	x28, x29, [\base, #224]
.endm

/* X0..X30 from the array at X30 (X30 itself last, from #240). */
.macro load_x0_x30_from_x30
	load_x0_x17 x30
	load_x18_x29 x30
	ldr	x30, [x30, #240]
.endm

/*
 * A 112-byte frame for assembly called from C: X29, X30 and the callee-saved X19..X28 at
 * [sp, #0 .. #88]; [sp, #96 .. #111] are the function's own two scratch slots.
 */
.macro push_callee_saved
	stp	x29, x30, [sp, #-112]!
	stp	x19, x20, [sp, #16]
	stp	x21, x22, [sp, #32]
	stp	x23, x24, [sp, #48]
	stp	x25, x26, [sp, #64]
	stp	x27, x28, [sp, #80]
.endm

.macro pop_callee_saved
	ldp	x19, x20, [sp, #16]
	ldp	x21, x22, [sp, #32]
	ldp	x23, x24, [sp, #48]
	ldp	x25, x26, [sp, #64]
	ldp	x27, x28, [sp, #80]
	ldp	x29, x30, [sp], #112
.endm

#endif /* __ASSEMBLY__ */
#endif /* AGENT_GPRS_H */
