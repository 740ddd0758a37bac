/* Link the agent at LOAD_ADDR (the FVP's BL33 address, or where QEMU loads a kernel ELF). */
OUTPUT_FORMAT("elf64-littleaarch64")
OUTPUT_ARCH(aarch64)
ENTRY(_start)

SECTIONS
{
	. = LOAD_ADDR;
	__image_start = .;
	.text : {
		*(.text.entry)
		*(.text.vectors)
		*(.text*)
	}
	.rodata : ALIGN(8) { *(.rodata*) }
	.data : ALIGN(8) { *(.data*) }
	.bss (NOLOAD) : ALIGN(4096) {
		__bss_start = .;
		*(.bss*)
		*(COMMON)
		. = ALIGN(16);
		__stack_bottom = .;
		. += STACK_SIZE;
		__stack_top = .;
		. = ALIGN(8);
		__bss_end = .;
	}
	/DISCARD/ : { *(.comment) *(.note*) *(.eh_frame*) }
}
