/*
 * REALM_RUN (docs/agent-protocol.md §6.4) and the page the agent shares with its realm payload.
 *
 * The agent copies the request's actions, in their wire encoding, into the shared page and
 * bumps `generation`; the realm payload (src/payload/, at R-EL1) executes them in order and
 * writes what it begins and observes back into the same page, in the reply's own encoding.
 * The layout is fixed and little-endian: the host build's shim (cca_hil/tools/agent_shim.py)
 * reads and writes the same bytes.
 */
#ifndef AGENT_REALM_H
#define AGENT_REALM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define REALM_PAGE_MAGIC 0x52414343u /* "CCAR" */
#define REALM_PAGE_SIZE 8192
#define REALM_ACTIONS_MAX 4064
#define REALM_OBS_MAX 4000
/* Largest observation record: index, n, count, 32 registers. */
#define REALM_OBS_RECORD_MAX (10 + 1 + 1 + 32 * 10)
/* RSI_HOST_CALL immediate with which the payload says "this entry's actions are done". */
#define REALM_DONE_IMM 0xcca0u

struct realm_page {
	uint32_t magic;
	uint32_t generation; /* agent: bumped for every REALM_RUN */
	uint32_t count;	     /* agent: actions in `actions` */
	uint32_t length;     /* agent: bytes of `actions` */
	uint32_t started;    /* payload: actions of this generation begun */
	uint32_t nobs;	     /* payload: observation records in `obs` */
	uint32_t obs_len;    /* payload: bytes of `obs` */
	uint32_t seen;	     /* payload: the generation it last picked up */
	uint8_t actions[REALM_ACTIONS_MAX];
	uint8_t obs[REALM_OBS_MAX];
	uint8_t reserved[REALM_PAGE_SIZE - 32 - REALM_ACTIONS_MAX - REALM_OBS_MAX];
};

_Static_assert(sizeof(struct realm_page) == REALM_PAGE_SIZE, "realm page layout");

enum realm_action_kind {
	RA_RSI = 1,
	RA_PSCI = 2,
	RA_SMC = 3,
	RA_HVC = 4,
	RA_MMIO = 5,
	RA_WFI = 6,
	RA_WFE = 7,
	RA_SYSREG = 8,
	RA_IRQ = 9,
	RA_FIQ = 10,
	RA_SERROR = 11,
	RA_HOST_CALL = 12,
};

/* One action parsed (what the payload executes). */
struct realm_action {
	enum realm_action_kind kind;
	uint32_t fid; /* calls; SYSREG: encoding */
	uint8_t nargs;
	uint64_t args[31];
	uint64_t imm;
	bool has_addr;
	uint64_t addr;
	uint64_t ipa;
	bool store;
	unsigned size_log2;
	uint64_t value;
};

/* Parse one action (§6.4); false if malformed. Shared by the agent (checking) and the payload. */
bool realm_action_decode(struct rbuf *r, struct realm_action *a);

/* Physical address of the shared page (identity map on the target), for INFO's facts. */
uint64_t realm_page_address(void);

/*
 * REALM_RUN: parse, stage in the shared page, enter the REC, write REALM_RUN_REPLY's payload.
 * Returns 0 (reply written) or the ERROR code of a refusal, with its message in msg.
 */
int realm_run(const uint8_t *payload, size_t n, struct wbuf *reply, char *msg, size_t cap);

#endif
