/*
 * What the agent tells the host about the platform it was built for (INFO_REPLY, §6.2): the
 * memory map, the Non-secure DRAM the host may hand to the RMM, the sequence format's
 * `platform.*` names and free facts. PLATFORM_FVP follows TF-A's FVP Base RevC map with
 * ENABLE_RMM=1 (as the model's fvp-base-rme platform); PLATFORM_QEMU the QEMU virt machine.
 */
#include "../core/port.h"
#include "../core/proto.h"
#include "../core/realm.h"
#include "bm.h"

#define PAS_NONE 0x0
#define PAS_SECURE 0x8
#define PAS_NS 0x9
#define PAS_ROOT 0xa
#define PAS_REALM 0xb
#define PAS_ANY 0xf

enum region_kind { KIND_DRAM = 0, KIND_DEVICE = 1, KIND_ROM = 2, KIND_SRAM = 3 };

struct region {
	const char *name;
	uint64_t base;
	uint64_t size;
	uint8_t kind;
	uint8_t pas;
};

struct name_value {
	const char *name;
	uint64_t value;
};

#define STR_(x) #x
#define STR(x) STR_(x)

#if defined(PLATFORM_FVP)
const char platform_name[] = "fvp";
static const struct region regions[] = {
	{"trusted-rom", 0x00000000, 0x04000000, KIND_ROM, PAS_ANY},
	{"trusted-sram", 0x04000000, 0x00080000, KIND_SRAM, PAS_ANY},
	{"trusted-dram", 0x06000000, 0x02000000, KIND_DRAM, PAS_ANY},
	{"io", 0x08000000, 0x78000000, KIND_DEVICE, PAS_ANY},
	{"ns-dram1", 0x80000000, 0x7c000000, KIND_DRAM, PAS_NS},
	{"secure-tzc-dram", 0xfc000000, 0x01c00000, KIND_DRAM, PAS_SECURE},
	{"rmm", 0xfdc00000, 0x02000000, KIND_DRAM, PAS_REALM},
	{"el3-tzc-dram", 0xffc00000, 0x00300000, KIND_DRAM, PAS_ROOT},
	{"l1-gpt", 0xfff00000, 0x00100000, KIND_DRAM, PAS_ROOT},
	{"ns-dram2", 0x880000000, 0x80000000, KIND_DRAM, PAS_NS},
};
static const uint64_t pool[][2] = {{0x90000000, 0x6c000000}};
static const struct name_value names[] = {
	{"ns_dram_base", 0x80000000},	 {"non_memory", 0x100000000},
	{"secure_granule", 0xfc000000}, {"root_granule", 0xffc00000},
	{"realm_granule", 0xfdc00000},
};
const struct dram platform_dram[] = {{0x80000000, 0x80000000}, {0x880000000, 0x80000000}};
static const uint64_t caps = CAP_SMC | CAP_MEMORY | CAP_ACCESS | CAP_BATCH | CAP_LOG | CAP_REALM;
#elif defined(PLATFORM_QEMU)
#ifndef QEMU_RAM_SIZE
#define QEMU_RAM_SIZE 0x40000000
#endif
_Static_assert(0x40000000ull + QEMU_RAM_SIZE <= 0x100000000ull, "non_memory at 4 GiB must be no memory");
const char platform_name[] = "qemu";
static const struct region regions[] = {
	{"flash", 0x00000000, 0x08000000, KIND_ROM, PAS_ANY},
	{"io", 0x08000000, 0x38000000, KIND_DEVICE, PAS_ANY},
	{"dram", 0x40000000, QEMU_RAM_SIZE, KIND_DRAM, PAS_NS},
};
/* Past the agent's image (0x40080000) and the DTB QEMU may put at the start of RAM. */
static const uint64_t pool[][2] = {{0x41000000, QEMU_RAM_SIZE - 0x01000000}};
static const struct name_value names[] = {
	{"ns_dram_base", 0x40000000},
	{"non_memory", 0x100000000},
};
const struct dram platform_dram[] = {{0x40000000, QEMU_RAM_SIZE}};
#ifdef REALM_SELFTEST
/* The realm self-test runs the payload under a stand-in for the RMM (src/selftest/). */
static const uint64_t caps = CAP_SMC | CAP_MEMORY | CAP_ACCESS | CAP_BATCH | CAP_LOG | CAP_REALM;
#else
/* No RMM under QEMU here (no EL3 firmware): realms cannot run, so REALM is not announced. */
static const uint64_t caps = CAP_SMC | CAP_MEMORY | CAP_ACCESS | CAP_BATCH | CAP_LOG;
#endif
#else
#error "PLATFORM_FVP or PLATFORM_QEMU must be defined"
#endif

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
const unsigned platform_dram_count = COUNT(platform_dram);

static uint64_t boot_id;

uint64_t port_caps(void)
{
	return caps;
}

uint64_t port_boot_id(void)
{
	if (!boot_id)
		boot_id = (SYSREG_READ(cntpct_el0) & 0xffffffffu) | 1;
	return boot_id;
}

const char *port_agent_name(void)
{
	return "cca-hil agent " STR(PROTOCOL_MAJOR) "." STR(PROTOCOL_MINOR) " (" AGENT_PLATFORM ", bare metal)";
}

static unsigned pa_bits(void)
{
	static const unsigned bits[] = {32, 36, 40, 42, 44, 48, 52};
	unsigned parange = (unsigned)(SYSREG_READ(id_aa64mmfr0_el1) & 0xf);
	return parange < 7 ? bits[parange] : 48;
}

void port_info(struct wbuf *w)
{
	unsigned bits = pa_bits();
	w_u8(w, (uint8_t)bits);
	w_uvarint(w, COUNT(regions));
	for (unsigned i = 0; i < COUNT(regions); i++) {
		w_str(w, regions[i].name, 64);
		w_uvarint(w, regions[i].base);
		w_uvarint(w, regions[i].size);
		w_u8(w, regions[i].kind);
		w_u8(w, regions[i].pas);
	}
	w_uvarint(w, COUNT(pool));
	for (unsigned i = 0; i < COUNT(pool); i++) {
		w_uvarint(w, pool[i][0]);
		w_uvarint(w, pool[i][1]);
	}
	w_uvarint(w, COUNT(names) + 1);
	w_str(w, "pa_limit", 64);
	w_uvarint(w, 1ull << bits);
	for (unsigned i = 0; i < COUNT(names); i++) {
		w_str(w, names[i].name, 64);
		w_uvarint(w, names[i].value);
	}
	char page[24];
	struct text t;
	t_init(&t, page, sizeof(page));
	t_hex(&t, realm_page_address());
	w_uvarint(w, 4);
	w_str(w, "agent", 64);
	w_str(w, port_agent_name(), 64);
	w_str(w, "platform", 64);
	w_str(w, AGENT_PLATFORM, 64);
	w_str(w, "uart", 64);
	w_str(w, STR(UART_BASE), 64);
	w_str(w, "realm shared page", 64);
	w_str(w, page, 64);
}
