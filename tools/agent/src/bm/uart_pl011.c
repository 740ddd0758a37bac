/*
 * PL011 UART, polled (PrimeCell UART (PL011) TRM DDI0183: DR 0x000, FR 0x018, CR 0x030).
 * The line settings are the firmware's (TF-A's console, QEMU's model needs none): the agent
 * only makes sure the UART, transmitter and receiver are enabled.
 */
#include "bm.h"

#ifndef UART_BASE
#error "UART_BASE must be given (make PLATFORM=fvp|qemu sets it)"
#endif

#define UART_DR 0x000
#define UART_FR 0x018
#define UART_CR 0x030
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
	if ((cr & want) != want)
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
