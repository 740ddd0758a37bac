/* Realm actions (docs/agent-protocol.md §6.4): parsed by the agent to check them, and by the payload to run them. */
#include "realm.h"

bool realm_action_decode(struct rbuf *r, struct realm_action *a)
{
	uint8_t kind = r_u8(r);
	a->kind = (enum realm_action_kind)kind;
	a->nargs = 0;
	a->has_addr = false;
	switch (kind) {
	case RA_RSI:
	case RA_PSCI:
	case RA_SMC:
		a->fid = r_u32(r);
		a->nargs = r_u8(r);
		if (a->nargs > 30)
			return false;
		for (unsigned i = 0; i < a->nargs; i++)
			a->args[i] = r_reg(r);
		break;
	case RA_HVC:
		a->imm = r_u16(r);
		a->nargs = r_u8(r);
		if (a->nargs > 18)
			return false;
		for (unsigned i = 0; i < a->nargs; i++)
			a->args[i] = r_reg(r);
		break;
	case RA_MMIO: {
		uint8_t mode = r_u8(r);
		if (mode & ~0x83u)
			return false;
		a->store = (mode & 0x80) != 0;
		a->size_log2 = mode & 3u;
		a->ipa = r_reg(r);
		a->value = a->store ? r_uvarint(r) : 0;
		if (a->size_log2 < 3 && (a->value >> (8u << a->size_log2)))
			return false;
		break;
	}
	case RA_SYSREG:
		a->fid = r_u32(r);
		if (a->fid >> 16)
			return false;
		break;
	case RA_HOST_CALL: {
		uint8_t flags = r_u8(r);
		if (flags & ~1u)
			return false;
		a->has_addr = flags & 1u;
		if (a->has_addr)
			a->addr = r_reg(r);
		a->imm = r_reg(r);
		a->nargs = r_u8(r);
		if (a->nargs > 31)
			return false;
		for (unsigned i = 0; i < a->nargs; i++)
			a->args[i] = r_reg(r);
		break;
	}
	case RA_WFI:
	case RA_WFE:
	case RA_IRQ:
	case RA_FIQ:
	case RA_SERROR:
		break;
	default:
		return false;
	}
	return !r->bad;
}
