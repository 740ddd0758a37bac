/*
 * The memory model: an identity map at EL2 with the MMU and caches on.
 *
 * Why not MMU off: with SCTLR_EL2.M = 0 every data access is Device-nGnRnE and uncached,
 * while TF-A and the RMM reach the same Non-secure granules (RmiRealmParams, RecRun, data
 * sources) through cacheable mappings. Mismatched attributes on shared memory need cache
 * maintenance by both sides (DDI0487 B2.8), which the RMM does not do for the host. With an
 * identity map, DRAM is Normal Write-Back Inner Shareable — the attributes the firmware
 * expects of the Normal world — and everything else is Device-nGnRnE, so a probing access to
 * a device or to no memory at all is one access on the bus and faults as the platform makes
 * it fault (QEMU: a synchronous external abort). Virtual = physical, so addresses in the
 * protocol are used as they are.
 *
 * Tables: 4 KiB granule, 48-bit VA (TCR_EL2.T0SZ = 16, walks start at level 0), level-1
 * 1 GiB blocks for the first MAP_L0_ENTRIES × 512 GiB of PA space. A DRAM region of the
 * platform (bm.h platform_dram) makes its 1 GiB blocks Normal.
 */
#include "bm.h"

#define MAP_L0_ENTRIES 4
#define DESC_TABLE 0x3ull
#define DESC_BLOCK 0x1ull
#define ATTR_DEVICE (0ull << 2) /* MAIR index 0: Device-nGnRnE */
#define ATTR_NORMAL (1ull << 2) /* MAIR index 1: Normal WB RA WA */
#define SH_INNER (3ull << 8)
#define AF (1ull << 10)
#define XN (1ull << 54)
#define GIB (1ull << 30)

static uint64_t l0[512] __attribute__((aligned(4096)));
static uint64_t l1[MAP_L0_ENTRIES][512] __attribute__((aligned(4096)));

extern uint8_t __image_start[], __bss_end[];

static bool is_dram(uint64_t base)
{
	for (unsigned i = 0; i < platform_dram_count; i++) {
		const struct dram *d = &platform_dram[i];
		if (base + GIB > d->base && base < d->base + d->size)
			return true;
	}
	return false;
}

static unsigned pa_range_bits(void)
{
	static const unsigned bits[] = {32, 36, 40, 42, 44, 48, 52};
	unsigned parange = (unsigned)(SYSREG_READ(id_aa64mmfr0_el1) & 0xf);
	return parange < 7 ? bits[parange] : 48;
}

void mmu_enable(void)
{
	unsigned pa_bits = pa_range_bits();
	static const unsigned ps_bits[] = {32, 36, 40, 42, 44, 48};
	unsigned want = pa_bits < 48 ? pa_bits : 48;
	unsigned ps = 0;
	while (ps < 5 && ps_bits[ps] < want)
		ps++;
	uint64_t limit = 1ull << want;

	for (unsigned i = 0; i < MAP_L0_ENTRIES; i++) {
		if ((uint64_t)i * 512 * GIB >= limit)
			break;
		l0[i] = (uint64_t)(uintptr_t)l1[i] | DESC_TABLE;
		for (unsigned j = 0; j < 512; j++) {
			uint64_t base = ((uint64_t)i * 512 + j) * GIB;
			if (base >= limit)
				break;
			uint64_t attrs = is_dram(base) ? (ATTR_NORMAL | SH_INNER) : (ATTR_DEVICE | XN);
			l1[i][j] = base | attrs | AF | DESC_BLOCK;
		}
	}

	/* The image and tables were written with the caches off: drop any stale lines over them. */
	uint64_t line = 4u << (SYSREG_READ(ctr_el0) >> 16 & 0xf);
	for (uint64_t a = (uint64_t)(uintptr_t)__image_start & ~(line - 1); a < (uint64_t)(uintptr_t)__bss_end;
	     a += line)
		__asm__ volatile("dc ivac, %0" : : "r"(a) : "memory");
	__asm__ volatile("dsb sy; ic iallu; tlbi alle2; dsb sy; isb" : : : "memory");

	SYSREG_WRITE(mair_el2, 0xff00ull);
	uint64_t tcr = 16ull /* T0SZ */ | (1ull << 8) /* IRGN0 WB */ | (1ull << 10) /* ORGN0 WB */ |
		       (3ull << 12) /* SH0 inner */ | ((uint64_t)ps << 16) | (1ull << 23) | (1ull << 31);
	SYSREG_WRITE(tcr_el2, tcr);
	SYSREG_WRITE(ttbr0_el2, (uint64_t)(uintptr_t)l0);
	__asm__ volatile("isb" : : : "memory");
	uint64_t sctlr = SYSREG_READ(sctlr_el2);
	sctlr |= (1ull << 0) | (1ull << 2) | (1ull << 12); /* M, C, I */
	sctlr &= ~((1ull << 1) | (1ull << 19) | (1ull << 25)); /* A, WXN, EE */
	SYSREG_WRITE(sctlr_el2, sctlr);
	__asm__ volatile("isb" : : : "memory");
}
