/* The agent's main loop on the target: banner, then frames on the PL011 until reset. */
#include "../core/proto.h"
#include "bm.h"

#define GAP_US 20000 /* silence that ends a partly received frame: ~230 characters at 115200 baud */

static struct agent agent;

uint64_t now_us(void)
{
	uint64_t freq = SYSREG_READ(cntfrq_el0);
	if (!freq)
		freq = 100000000;
	return SYSREG_READ(cntpct_el0) / (freq / 1000000 ? freq / 1000000 : 1);
}

static void put_hex(uint64_t v)
{
	char buf[24];
	struct text t;
	t_init(&t, buf, sizeof(buf));
	t_hex(&t, v);
	uart_puts(buf);
}

static void put_dec(uint64_t v)
{
	char buf[24];
	struct text t;
	t_init(&t, buf, sizeof(buf));
	t_dec(&t, v);
	uart_puts(buf);
}

void bm_wrong_el(uint64_t el);
void bm_wrong_el(uint64_t el)
{
	uart_puts("\r\ncca-hil agent: entered at EL");
	put_dec(el);
	uart_puts("; it must run at EL2 (BL33 from TF-A, or QEMU with virtualization=on): halting\r\n");
}

void bm_unexpected(uint64_t kind, uint64_t esr, uint64_t elr, uint64_t far);
void bm_unexpected(uint64_t kind, uint64_t esr, uint64_t elr, uint64_t far)
{
	static const char *const kinds[] = {"sync", "irq", "fiq", "serror"};
	static const char *const origins[] = {"EL2 with SP_EL0", "EL2", "a lower EL (AArch64)",
					      "a lower EL (AArch32)"};
	uart_puts("\r\nPANIC: agent: unexpected ");
	uart_puts(kinds[kind & 3]);
	uart_puts(" exception from ");
	uart_puts(origins[(kind >> 2) & 3]);
	uart_puts(" ESR=");
	put_hex(esr);
	uart_puts(" ELR=");
	put_hex(elr);
	uart_puts(" FAR=");
	put_hex(far);
	uart_puts(", halting\r\n");
}

void bm_main(void);
void bm_main(void)
{
	uart_init();
	mmu_enable();
	/* Bytes that arrived before the agent ran are dropped, as a reset UART drops them (§11). */
	while (uart_getc() >= 0)
		;
	uart_puts("cca-hil agent " AGENT_VERSION " (" AGENT_PLATFORM ") boot ");
	put_dec(port_boot_id());
	uart_puts(" at EL2: ready\r\n");

	agent_init(&agent);
	uint64_t last = now_us();
	for (;;) {
		enum rx_event ev;
		int c = uart_getc();
		if (c >= 0) {
			last = now_us();
			ev = rx_feed(&agent.rx, (uint8_t)c);
		} else if (agent.rx.in_frame && now_us() - last >= GAP_US) {
			ev = rx_silence(&agent.rx);
		} else {
			continue;
		}
		if (ev == RX_NONE)
			continue;
		const uint8_t *out;
		size_t len;
		agent_event(&agent, ev, &out, &len);
		uart_write(out, len);
	}
}
