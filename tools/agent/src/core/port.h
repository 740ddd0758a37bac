/*
 * What the protocol core needs from where it runs. The bare-metal build (src/bm/) implements it
 * with the PL011, the SMC instruction and probing loads/stores under the exception vectors; the
 * host build (src/host/) forwards SMCs and memory accesses to the Python model through the shim.
 */
#ifndef AGENT_PORT_H
#define AGENT_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define SMC_REGS 18 /* X0..X17 (SMCCC v1.2) */

/* A synchronous exception taken by a memory access (the protocol's `fault` record). */
struct fault {
	uint8_t ec;
	uint64_t esr;
	uint64_t far;
	bool gpf;
	const char *description; /* NULL: described from the ESR (fault_description) */
};

/* Issue SMC #0 with X0..X17 from regs; X0..X17 after the call are stored back. */
void port_smc(uint64_t regs[SMC_REGS]);

/* Copy n bytes of physical memory; false (and *fault filled) if an access faulted. */
bool port_read(uint64_t pa, uint8_t *dst, size_t n, struct fault *fault);
bool port_write(uint64_t pa, const uint8_t *src, size_t n, struct fault *fault);
/* Fill n bytes with a pattern of plen (1..8) bytes repeated. */
bool port_fill(uint64_t pa, uint64_t n, const uint8_t *pattern, unsigned plen, struct fault *fault);
/* One load or store of 1 << size_log2 bytes; false (and *fault filled) if it faulted. */
bool port_access(uint64_t pa, bool store, unsigned size_log2, uint64_t *value, struct fault *fault);

/* Capabilities to announce (AGENT_CAP_*) and the INFO_REPLY payload of this platform. */
uint64_t port_caps(void);
void port_info(struct wbuf *w);
/* Name and build of the agent, for HELLO_REPLY. */
const char *port_agent_name(void);
/* Changes on every boot (HELLO_REPLY boot_id). */
uint64_t port_boot_id(void);

/*
 * Run a REC: RMI_REC_ENTER(rec, run) with the realm payload performing the actions staged in
 * `shared` (the shared page, src/core/realm.h). X0..X4 of the last RMI_REC_ENTER go to regs.
 */
struct realm_page;
void port_realm_enter(uint64_t rec, uint64_t run, struct realm_page *shared, uint64_t regs[5]);

/* Tell the execution counter (host build) that request `seq` is about to execute. */
void port_executing(uint32_t session, uint16_t seq);

#endif
