/* The realm payload's flat image, carried inside the self-test agent. */
	.section .rodata
	.balign	16
	.global	payload_image, payload_image_end
payload_image:
	.incbin	PAYLOAD_BIN
payload_image_end:
