/*
 * The realm payload (R-EL1): executes the actions the agent staged in the shared page
 * (docs/agent-protocol.md §6.4, src/core/realm.h) and writes back what it began and observed.
 *
 * Each action is decoded with the agent's own decoder from the page. Before performing one the
 * payload counts it as begun (`started`); when its result reaches the realm it appends an
 * observation record (index, n, regs) in REALM_RUN_REPLY's encoding. A call that exits to the
 * Host (Host call, RIPAS change, PSCI) returns here only on a later entry: if the agent has
 * staged a new request by then, the result is reported as index 0 of that request. With every
 * action begun, the payload ends the entry with RSI_HOST_CALL(REALM_DONE_IMM).
 *
 * With the MMU off every access is Device-nGnRnE and must be aligned: the page is read and
 * written a byte or an aligned word at a time, and the code is built with -mstrict-align.
 */
#include "../core/realm.h"
#include "../core/wire.h"

#define RSI_MEASUREMENT_READ 0xc4000192u
#define RSI_HOST_CALL 0xc4000199u
#define HOST_CALL_GPRS 31
#define INSN_MRS_X1 0xd5200001u /* MRS X1, <op0:op1:CRn:CRm:op2 in bits 20:5> */
#define INSN_HVC 0xd4000002u	/* HVC #<imm16 in bits 20:5> */
#define INSN_RET 0xd65f03c0u

void payload_main(volatile struct realm_page *page);
void realm_smc(uint64_t regs[31]);
void realm_trampoline(uint64_t regs[18], void (*code)(void));

/* ESR_EL1 and FAR_EL1 of the last exception injected into the realm (entry.S), for a debugger. */
volatile uint64_t payload_exception, payload_exception_far;

/* The realm's registers as it last had them: calls load only what an action gives. */
static uint64_t gprs[31];
/* The payload's own RsiHostCall (a Host call action without an address). */
static uint8_t host_call[256] __attribute__((aligned(256)));
static uint32_t code[2] __attribute__((aligned(64)));
/* The actions of the current request, copied out of the shared page. */
static uint8_t actions[REALM_ACTIONS_MAX];

static void copy_from(uint8_t *dst, const volatile uint8_t *src, size_t n)
{
	while (n--)
		*dst++ = *src++;
}

static void record(volatile struct realm_page *page, uint64_t index, const uint64_t *regs, unsigned n)
{
	uint8_t buf[REALM_OBS_RECORD_MAX];
	struct wbuf w;
	w_init(&w, buf, sizeof(buf));
	w_uvarint(&w, index);
	w_u8(&w, (uint8_t)n);
	w_regs(&w, regs, n);
	uint32_t at = page->obs_len;
	if (w.over || at + w.len > REALM_OBS_MAX)
		return;
	for (size_t i = 0; i < w.len; i++)
		page->obs[at + i] = buf[i];
	page->obs_len = at + (uint32_t)w.len;
	page->nobs = page->nobs + 1;
}

static void run_code(uint32_t insn, uint64_t regs[18])
{
	code[0] = insn;
	code[1] = INSN_RET;
	__asm__ volatile("dsb ish; ic ivau, %0; dsb ish; isb" : : "r"(code) : "memory");
	realm_trampoline(regs, (void (*)(void))(uintptr_t)code);
}

static void store64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t load64(const uint8_t *p)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* MMIO through X1 as the transfer register, so the syndrome names X1 (§6.4). */
static uint64_t mmio(const struct realm_action *a)
{
	uint64_t v = a->value;
	uint64_t ipa = a->ipa;
	if (a->store) {
		switch (a->size_log2) {
		case 0:
			__asm__ volatile("mov x1, %0; strb w1, [%1]" : : "r"(v), "r"(ipa) : "x1", "memory");
			break;
		case 1:
			__asm__ volatile("mov x1, %0; strh w1, [%1]" : : "r"(v), "r"(ipa) : "x1", "memory");
			break;
		case 2:
			__asm__ volatile("mov x1, %0; str w1, [%1]" : : "r"(v), "r"(ipa) : "x1", "memory");
			break;
		default:
			__asm__ volatile("mov x1, %0; str x1, [%1]" : : "r"(v), "r"(ipa) : "x1", "memory");
		}
		return 0;
	}
	switch (a->size_log2) {
	case 0:
		__asm__ volatile("ldrb w1, [%1]; mov %0, x1" : "=r"(v) : "r"(ipa) : "x1", "memory");
		break;
	case 1:
		__asm__ volatile("ldrh w1, [%1]; mov %0, x1" : "=r"(v) : "r"(ipa) : "x1", "memory");
		break;
	case 2:
		__asm__ volatile("ldr w1, [%1]; mov %0, x1" : "=r"(v) : "r"(ipa) : "x1", "memory");
		break;
	default:
		__asm__ volatile("ldr x1, [%1]; mov %0, x1" : "=r"(v) : "r"(ipa) : "x1", "memory");
	}
	return v;
}

/* Perform one action; the registers the realm observes go to obs (their count is returned). */
static unsigned perform(const struct realm_action *a, uint64_t obs[32])
{
	uint64_t regs[18];
	switch (a->kind) {
	case RA_RSI:
	case RA_PSCI:
	case RA_SMC:
		gprs[0] = a->fid;
		for (unsigned i = 0; i < a->nargs; i++)
			gprs[i + 1] = a->args[i];
		realm_smc(gprs);
		for (unsigned i = 0; i < 9; i++)
			obs[i] = gprs[i];
		return a->fid == RSI_MEASUREMENT_READ ? 9 : 4;
	case RA_HOST_CALL: {
		uint8_t *structure = host_call;
		uint64_t ipa = a->has_addr ? a->addr : (uint64_t)(uintptr_t)host_call;
		if (a->has_addr)
			structure = (uint8_t *)(uintptr_t)a->addr;
		store64(structure, a->imm);
		for (unsigned i = 0; i < HOST_CALL_GPRS; i++)
			store64(structure + 8 + 8 * i, i < a->nargs ? a->args[i] : 0);
		gprs[0] = RSI_HOST_CALL;
		gprs[1] = ipa;
		realm_smc(gprs);
		obs[0] = gprs[0];
		for (unsigned i = 0; i < HOST_CALL_GPRS; i++)
			obs[1 + i] = load64(structure + 8 + 8 * i);
		return 1 + HOST_CALL_GPRS;
	}
	case RA_HVC:
		for (unsigned i = 0; i < 18; i++)
			regs[i] = i < a->nargs ? a->args[i] : gprs[i];
		run_code(INSN_HVC | ((uint32_t)(a->imm & 0xffff) << 5), regs);
		for (unsigned i = 0; i < 18; i++)
			gprs[i] = regs[i];
		return 0;
	case RA_MMIO:
		obs[0] = mmio(a);
		gprs[1] = obs[0];
		return a->store ? 0 : 1;
	case RA_SYSREG:
		for (unsigned i = 0; i < 18; i++)
			regs[i] = gprs[i];
		run_code(INSN_MRS_X1 | (a->fid << 5), regs);
		gprs[1] = regs[1];
		obs[0] = regs[1];
		return 1;
	case RA_WFI:
		__asm__ volatile("dsb sy; wfi" : : : "memory");
		return 0;
	case RA_WFE:
		__asm__ volatile("wfe" : : : "memory");
		return 0;
	case RA_IRQ:
	case RA_FIQ:
	case RA_SERROR:
		/* Taken while the realm runs: the payload waits for the one the host arranged. */
		__asm__ volatile("dsb sy; wfi" : : : "memory");
		return 0;
	}
	return 0;
}

static uint32_t generation;
static uint32_t begun;
static struct rbuf reader;

/* Take the newest request's actions from the page. */
static void pick_up(volatile struct realm_page *page)
{
	generation = page->generation;
	page->seen = generation;
	uint32_t length = page->length <= REALM_ACTIONS_MAX ? page->length : REALM_ACTIONS_MAX;
	copy_from(actions, page->actions, length);
	r_init(&reader, actions, length);
	begun = 0;
}

static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
	while (n--)
		if (*a++ != *b++)
			return false;
	return true;
}

void payload_main(volatile struct realm_page *page)
{
	r_init(&reader, actions, 0);
	for (;;) {
		if (page->magic == REALM_PAGE_MAGIC && page->generation != generation)
			pick_up(page);
		struct realm_action a;
		size_t at = reader.pos;
		if (begun >= page->count || page->obs_len + REALM_OBS_RECORD_MAX > REALM_OBS_MAX ||
		    !realm_action_decode(&reader, &a)) {
			/* Everything begun (or no room to report more): end this entry. */
			gprs[0] = RSI_HOST_CALL;
			gprs[1] = (uint64_t)(uintptr_t)host_call;
			store64(host_call, REALM_DONE_IMM);
			realm_smc(gprs);
			continue;
		}
		uint8_t encoding[REALM_OBS_RECORD_MAX];
		size_t length = reader.pos - at;
		if (length > sizeof(encoding))
			length = sizeof(encoding);
		for (size_t i = 0; i < length; i++)
			encoding[i] = actions[at + i];
		begun++;
		page->started = begun;
		uint64_t obs[32];
		payload_exception = 0;
		unsigned n = perform(&a, obs);
		uint64_t index = begun;
		if (page->generation != generation) {
			/* The REC exited during the action and the agent has staged a newer request since. */
			pick_up(page);
			index = 0;
			/* An access that exited was not begun: the host sends it again first (§6.4). */
			struct realm_action again;
			size_t first = reader.pos;
			if (a.kind == RA_MMIO && page->count && realm_action_decode(&reader, &again) &&
			    reader.pos - first == length && same_bytes(actions + first, encoding, length)) {
				begun = 1;
				page->started = 1;
				index = 1;
			} else {
				r_init(&reader, actions, reader.len);
			}
		}
		if (n)
			record(page, index, obs, n);
	}
}
