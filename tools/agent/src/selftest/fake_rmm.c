/*
 * Realm self-test on QEMU (no RME there): this file stands in for bm/rec.c in the
 * `realm-selftest` image. REALM_RUN runs the real realm payload, but at EL1 of the same
 * machine: no RMM, no stage 2 (IPA = PA), SMCs from EL1 trapped to EL2 (HCR_EL2.TSC) and
 * answered here for the few RSI commands the test uses. It proves the payload's side of the
 * shared page on a real (emulated) CPU: decoding, begun counts, observations, the index 0 of a
 * call completed in a later entry, the Host call, and the end-of-entry Host call.
 *
 * Caches are ignored: EL1 runs with its MMU off (uncached), which QEMU does not model.
 */
#include "../bm/bm.h"
#include "../core/port.h"
#include "../core/realm.h"

#define EC_SMC64 0x17
#define RSI_VERSION 0xc4000190ull
#define RSI_HOST_CALL 0xc4000199ull
#define RSI_ABI_1_0 0x10000ull
#define SMC_NOT_SUPPORTED (~0ull)
#define SPSR_EL1H_MASKED 0x3c5ull
#define HCR_RW (1ull << 31)
#define HCR_TSC (1ull << 19)
#define RMI_ERROR_REC 3

struct selftest_realm {
	uint64_t x[31];
	uint64_t elr;
	uint64_t spsr;
};

uint64_t selftest_enter(struct selftest_realm *realm);

extern const uint8_t payload_image[], payload_image_end[];
static struct selftest_realm realm;
static bool loaded;

static void load_payload(struct realm_page *shared)
{
	uint8_t *dst = (uint8_t *)(uintptr_t)SELFTEST_PAYLOAD_IPA;
	for (const uint8_t *src = payload_image; src < payload_image_end; src++)
		*dst++ = *src;
	__asm__ volatile("dsb sy; ic iallu; dsb sy; isb" : : : "memory");
	realm.x[0] = (uint64_t)(uintptr_t)shared;
	realm.elr = SELFTEST_PAYLOAD_IPA;
	realm.spsr = SPSR_EL1H_MASKED;
	SYSREG_WRITE(hcr_el2, HCR_RW | HCR_TSC);
	SYSREG_WRITE(sctlr_el1, 0x30d00800ull); /* RES1 bits, MMU and caches off */
	__asm__ volatile("isb" : : : "memory");
	loaded = true;
}

void port_realm_enter(uint64_t rec, uint64_t run, struct realm_page *shared, uint64_t regs[5])
{
	(void)run;
	for (unsigned i = 0; i < 5; i++)
		regs[i] = 0;
	if (rec == 0) {
		regs[0] = RMI_ERROR_REC; /* a refused entry runs nothing */
		return;
	}
	if (!loaded)
		load_payload(shared);
	for (;;) {
		uint64_t esr = selftest_enter(&realm);
		if ((esr >> 26) != EC_SMC64)
			return; /* anything else ends the entry as a REC exit would */
		realm.elr += 4; /* a trapped SMC returns to the instruction after it */
		uint64_t fid = realm.x[0];
		if (fid == RSI_VERSION) {
			realm.x[0] = 0;
			realm.x[1] = RSI_ABI_1_0;
			realm.x[2] = RSI_ABI_1_0;
		} else if (fid == RSI_HOST_CALL) {
			realm.x[0] = 0; /* the realm sees success when it next runs */
			return;	/* REC exit: Host call */
		} else {
			realm.x[0] = SMC_NOT_SUPPORTED;
		}
	}
}
