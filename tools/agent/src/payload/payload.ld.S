/* The realm payload, linked at the IPA where the host puts its image in the realm (PAYLOAD_IPA). */
OUTPUT_FORMAT("elf64-littleaarch64")
OUTPUT_ARCH(aarch64)
ENTRY(_payload_start)

SECTIONS
{
	. = PAYLOAD_IPA;
	.text : {
		*(.text.entry)
		*(.text*)
	}
	.rodata : ALIGN(8) { *(.rodata*) }
	.data : ALIGN(64) { *(.data*) }
	.bss : ALIGN(4096) {
		__bss_start = .;
		*(.bss*)
		*(COMMON)
		. = ALIGN(16);
		. += 0x4000;
		__stack_top = .;
		__bss_end = .;
	}
	/DISCARD/ : { *(.comment) *(.note*) *(.eh_frame*) }
}
