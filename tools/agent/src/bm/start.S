/*
 * Entry of the agent image (BL33 on an FVP or a board, the kernel of a QEMU machine).
 * It must be entered at EL2 (Non-secure EL2, as TF-A hands over to BL33 and QEMU's
 * virtualization=on starts a kernel): anywhere else it says so on the UART and halts.
 */
	.section .text.entry, "ax"
	.global _start
_start:
	/* Mask interrupts while we have no handlers of our own. */
	msr	daifset, #0xf
	adrp	x0, __stack_top
	add	x0, x0, :lo12:__stack_top
	mov	sp, x0
	/* Zero .bss (stack and page tables included) before any C runs. */
	adrp	x0, __bss_start
	add	x0, x0, :lo12:__bss_start
	adrp	x1, __bss_end
	add	x1, x1, :lo12:__bss_end
1:	cmp	x0, x1
	b.hs	2f
	str	xzr, [x0], #8
	b	1b
2:	mrs	x0, CurrentEL
	lsr	x0, x0, #2
	cmp	x0, #2
	b.ne	wrong_el
	adrp	x1, vectors
	add	x1, x1, :lo12:vectors
	msr	vbar_el2, x1
	isb
	bl	bm_main
	b	halt

wrong_el:
	/* x0 = the EL we were entered at; the UART works with the MMU off at any EL. */
	bl	bm_wrong_el
halt:
	wfe
	b	halt
