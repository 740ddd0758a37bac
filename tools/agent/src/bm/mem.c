/*
 * Memory access and the SMC conduit on the target: every load and store the host asks for is a
 * probing access (probe.S), so a synchronous abort becomes a reported fault and the agent goes on.
 */
#include "../core/port.h"
#include "bm.h"

#define EC_SHIFT 26
#define DFSC_GPF_FIRST 0x22
#define DFSC_GPF_LAST 0x28

static void fill_fault(struct fault *f)
{
	uint64_t esr = probe_esr;
	f->esr = esr;
	f->far = probe_far;
	f->description = NULL;
	f->ec = (uint8_t)((esr >> EC_SHIFT) & 0x3f);
	unsigned dfsc = (unsigned)(esr & 0x3f);
	f->gpf = (f->ec == 0x25 || f->ec == 0x24) && dfsc >= DFSC_GPF_FIRST && dfsc <= DFSC_GPF_LAST;
}

void port_smc(uint64_t regs[SMC_REGS])
{
	smc_call(regs);
}

bool port_access(uint64_t pa, bool store, unsigned size_log2, uint64_t *value, struct fault *fault)
{
	int faulted = store ? probe_store(pa, size_log2, *value) : probe_load(pa, size_log2, value);
	if (faulted)
		fill_fault(fault);
	return !faulted;
}

/* Accesses of the largest aligned size that fits; Device memory does not take unaligned ones. */
static unsigned chunk_log2(uint64_t pa, uint64_t left)
{
	unsigned k = 3;
	while (k && ((pa & ((1ull << k) - 1)) || left < (1ull << k)))
		k--;
	return k;
}

bool port_read(uint64_t pa, uint8_t *dst, size_t n, struct fault *fault)
{
	while (n) {
		unsigned k = chunk_log2(pa, n);
		uint64_t v;
		if (!port_access(pa, false, k, &v, fault))
			return false;
		for (unsigned i = 0; i < (1u << k); i++)
			*dst++ = (uint8_t)(v >> (8 * i));
		pa += 1u << k;
		n -= 1u << k;
	}
	return true;
}

bool port_write(uint64_t pa, const uint8_t *src, size_t n, struct fault *fault)
{
	while (n) {
		unsigned k = chunk_log2(pa, n);
		uint64_t v = 0;
		for (unsigned i = 0; i < (1u << k); i++)
			v |= (uint64_t)src[i] << (8 * i);
		if (!port_access(pa, true, k, &v, fault))
			return false;
		src += 1u << k;
		pa += 1u << k;
		n -= 1u << k;
	}
	return true;
}

bool port_fill(uint64_t pa, uint64_t n, const uint8_t *pattern, unsigned plen, struct fault *fault)
{
	uint64_t offset = 0;
	while (offset < n) {
		unsigned k = chunk_log2(pa + offset, n - offset);
		uint64_t v = 0;
		for (unsigned i = 0; i < (1u << k); i++)
			v |= (uint64_t)pattern[(offset + i) % plen] << (8 * i);
		if (!port_access(pa + offset, true, k, &v, fault))
			return false;
		offset += 1u << k;
	}
	return true;
}

void port_executing(uint32_t session, uint16_t seq)
{
	(void)session;
	(void)seq;
}
