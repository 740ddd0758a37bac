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

void port_realm_enter(uint64_t rec, uint64_t run, struct realm_page *shared, uint64_t regs[5])
{
	uint64_t r[SMC_REGS] = {RMI_REC_ENTER, rec, run};
	(void)shared; /* the payload reads and writes it itself, through its Unprotected IPA */
	/* Both sides map the page Normal Write-Back (mmu.c; the host's RTT_MAP_UNPROTECTED): coherent. */
	__asm__ volatile("dsb ish" : : : "memory");
	smc_call(r);
	for (unsigned i = 0; i < 5; i++)
		regs[i] = r[i];
}
