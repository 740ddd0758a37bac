/* The bare-metal side of the agent: UART, MMU, timer, probing accesses, the SMC conduit. */
#ifndef AGENT_BM_H
#define AGENT_BM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYSREG_READ(name)                                          \
	({                                                         \
		uint64_t value_;                                   \
		__asm__ volatile("mrs %0, " #name : "=r"(value_)); \
		value_;                                            \
	})
#define SYSREG_WRITE(name, v) __asm__ volatile("msr " #name ", %0" : : "r"((uint64_t)(v)) : "memory")

/* PL011 (the base address is the build parameter UART_BASE). */
void uart_init(void);
void uart_putc(uint8_t c);
void uart_write(const uint8_t *p, size_t n);
void uart_puts(const char *s);
/* A received byte, or -1 if none is waiting. */
int uart_getc(void);

/* Microseconds since boot from the generic timer. */
uint64_t now_us(void);

/* Identity map with the MMU on (src/bm/mmu.c: why). */
void mmu_enable(void);

/* Assembly (probe.S). */
int probe_load(uint64_t pa, unsigned size_log2, uint64_t *out);
int probe_store(uint64_t pa, unsigned size_log2, uint64_t value);
void smc_call(uint64_t regs[18]);
extern volatile uint64_t probe_esr, probe_far;

/* The platform this image was built for (platform.c). */
struct dram {
	uint64_t base;
	uint64_t size;
};
extern const struct dram platform_dram[];
extern const unsigned platform_dram_count;
extern const char platform_name[];

#endif
