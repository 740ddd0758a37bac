/*
 * Realm entry on the target: RMI_REC_ENTER with the realm payload (src/payload/) executing the
 * actions the agent staged in the shared page.
 *
 * The payload finds the page at the IPA it was given in X0 when its REC was created
 * (RmiRecParams.gprs[0]); the host maps the page there as Unprotected IPA (RMI_RTT_MAP_UNPROTECTED
 * of the physical address INFO's "realm shared page" fact gives). When the payload has begun
 * every action and none made the REC exit, it says so with RSI_HOST_CALL(imm = REALM_DONE_IMM).
 * Any other exit (a Host call of the sequence, RIPAS change, PSCI, MMIO, an interrupt) ends the
 * entry too and is the host's to read from RecRun, as without the agent.
 */
#include "../core/port.h"
#include "../core/realm.h"
#include "bm.h"

#define RMI_REC_ENTER 0xc400015cull

/*
 * The payload runs with its MMU off, so it reads and writes the page uncached, while the agent's
 * mapping of it is Normal Write-Back (mmu.c): clean the page to the Point of Coherency before the
 * realm runs, and clean and invalidate it afterwards so the agent reads what the realm wrote.
 */
static void page_maintenance(const struct realm_page *page, bool invalidate)
{
	uint64_t line = 4u << (SYSREG_READ(ctr_el0) >> 16 & 0xf);
	uint64_t start = (uint64_t)(uintptr_t)page & ~(line - 1);
	uint64_t end = (uint64_t)(uintptr_t)page + sizeof(*page);
	for (uint64_t a = start; a < end; a += line) {
		if (invalidate)
			__asm__ volatile("dc civac, %0" : : "r"(a) : "memory");
		else
			__asm__ volatile("dc cvac, %0" : : "r"(a) : "memory");
	}
	__asm__ volatile("dsb sy" : : : "memory");
}

void port_realm_enter(uint64_t rec, uint64_t run, struct realm_page *shared, uint64_t regs[5])
{
	uint64_t r[SMC_REGS] = {RMI_REC_ENTER, rec, run};
	page_maintenance(shared, false);
	smc_call(r);
	page_maintenance(shared, true);
	for (unsigned i = 0; i < 5; i++)
		regs[i] = r[i];
}
