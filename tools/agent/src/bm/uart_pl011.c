/*
 * PL011 UART, polled (PrimeCell UART (PL011) TRM DDI0183: DR 0x000, FR 0x018, CR 0x030).
 * The baud rate is the firmware's (TF-A's console; QEMU's model has none). The agent makes sure
 * the UART, transmitter, receiver and FIFOs are on: TF-A's console enables the FIFOs, nothing
 * does under QEMU, whose PL011 then takes one received byte per turn of its I/O loop.
 */
#include "bm.h"

#ifndef UART_BASE
#error "UART_BASE must be given (make PLATFORM=fvp|qemu sets it)"
#endif

#define UART_DR 0x000
#define UART_FR 0x018
#define UART_LCR_H 0x02c
#define UART_CR 0x030
#define FR_BUSY (1u << 3)
#define LCR_H_FEN (1u << 4)
#define LCR_H_WLEN_8 (3u << 5)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define CR_UARTEN (1u << 0)
#define CR_TXE (1u << 8)
#define CR_RXE (1u << 9)

static inline volatile uint32_t *uart_reg(uint64_t offset)
{
	return (volatile uint32_t *)(uintptr_t)((uint64_t)UART_BASE + offset);
}

void uart_init(void)
{
	uint32_t cr = *uart_reg(UART_CR);
	uint32_t want = CR_UARTEN | CR_TXE | CR_RXE;
	uint32_t lcr = *uart_reg(UART_LCR_H);
	if (!(lcr & LCR_H_FEN)) {
		/* The line control register may only change while the UART is disabled and idle. */
		while (*uart_reg(UART_FR) & FR_BUSY)
			;
		*uart_reg(UART_CR) = cr & ~CR_UARTEN;
		*uart_reg(UART_LCR_H) = lcr | LCR_H_FEN | LCR_H_WLEN_8;
	}
	if ((cr & want) != want || !(lcr & LCR_H_FEN))
		*uart_reg(UART_CR) = cr | want;
}

void uart_putc(uint8_t c)
{
	while (*uart_reg(UART_FR) & FR_TXFF)
		;
	*uart_reg(UART_DR) = c;
}

void uart_write(const uint8_t *p, size_t n)
{
	while (n--)
		uart_putc(*p++);
}

void uart_puts(const char *s)
{
	while (*s)
		uart_putc((uint8_t)*s++);
}

int uart_getc(void)
{
	if (*uart_reg(UART_FR) & FR_RXFE)
		return -1;
	return (int)(*uart_reg(UART_DR) & 0xff);
}
