"""The GPT walk and granule protection check for one PA, in DDI0487 Table D9-2 priority order.

Tables here are sparse dictionaries of 64-bit words written from the spec's
bit layouts; reading an absent word is an External abort on the GPT fetch.
"""

from __future__ import annotations

import pytest

from cca_hil.arch.gpt import (
    Gpccr,
    Gpi,
    GptFault,
    GptFaultKind,
    GptFeatures,
    GptFetchAbort,
    Pps,
    granule_protection_check,
    walk,
)
from cca_hil.arch.pas import Pas

GPCCR = 0x0001_3502  # TF-A FVP: PPS 1 TB, PGS 4 KB, L0GPTSZ 1 GB, GPC on
GPTBR = 0x405E
L0 = 0x0405_E000
L1_IDX3 = 0xFFF2_0000  # L1 table of L0 entry 3 (3-4 GB)
L1_IDX34 = 0xFFF4_0000  # L1 table of L0 entry 34 (NS DRAM2)
DELEGATED = 0x8_8000_1000
REALM_CARVEOUT = 0xFDC0_5000


class Words:
    """Root-PAS memory as a sparse map of 8-byte words; absent words abort like a bus with nothing there."""

    def __init__(self, words: dict[int, int]) -> None:
        self.words = dict(words)
        self.reads: list[int] = []

    def __call__(self, pa: int) -> int:
        self.reads.append(pa)
        try:
            return self.words[pa]
        except KeyError:
            raise GptFetchAbort(pa) from None


def fvp_words() -> dict[int, int]:
    """The entries of the reference's worked example (§3.8): L0[3], L0[34] and the L1 entries used."""
    words = {L0 + 8 * i: 0xF1 for i in range(1024)}
    words[L0 + 8 * 3] = L1_IDX3 | 0b0011
    words[L0 + 8 * 34] = L1_IDX34 | 0b0011
    # L1[3] index 0x3DC0 (PA 0xFDC0_0000): the 2 MB Realm block, every one of its 32 entries.
    for i in range(32):
        words[L1_IDX3 + 8 * (0x3DC0 + i)] = 0x1B1
    # L1[34] index 0: the granules descriptor after delegating 0x8_8000_1000.
    words[L1_IDX34] = 0x9999_9999_9999_99B9
    return words


def gpc(
    pa: int,
    access: Pas,
    words: dict[int, int],
    *,
    gpccr: int = GPCCR,
    gptbr: int = GPTBR,
    requester: Pas | None = None,
) -> GptFault | None:
    return granule_protection_check(
        pa, access=access, gpccr=gpccr, gptbr=gptbr, read64=Words(words), requester=requester
    )


def test_worked_example_realm_carveout_is_a_level_1_contiguous_realm_entry() -> None:
    memory = Words(fvp_words())
    result = walk(REALM_CARVEOUT, gpccr=GPCCR, gptbr=GPTBR, read64=memory)
    assert memory.reads == [0x0405_E018, 0xFFF3_EE00]
    assert result.gpi is Gpi.REALM
    assert result.level == 1
    assert result.pas is Pas.REALM
    assert result.descriptor == 0x1B1
    assert result.descriptor_address == 0xFFF3_EE00


def test_worked_example_ns_load_from_realm_granule_is_gpf_level_1() -> None:
    assert gpc(REALM_CARVEOUT, Pas.NONSECURE, fvp_words()) == GptFault(GptFaultKind.GPF, 1)
    assert gpc(REALM_CARVEOUT, Pas.REALM, fvp_words()) is None


def test_delegated_granule_uses_its_own_nibble_and_neighbours_stay_ns() -> None:
    words = fvp_words()
    assert walk(DELEGATED, gpccr=GPCCR, gptbr=GPTBR, read64=Words(words)).gpi is Gpi.REALM
    for neighbour in (DELEGATED - 0x1000, DELEGATED + 0x1000, DELEGATED + 0xE000):
        assert walk(neighbour, gpccr=GPCCR, gptbr=GPTBR, read64=Words(words)).gpi is Gpi.NONSECURE
    assert gpc(DELEGATED, Pas.NONSECURE, words) == GptFault(GptFaultKind.GPF, 1)
    assert gpc(DELEGATED - 0x1000, Pas.NONSECURE, words) is None


def test_l0_block_gives_its_gpi_at_level_0() -> None:
    result = walk(0x1000, gpccr=GPCCR, gptbr=GPTBR, read64=Words(fvp_words()))
    assert (result.gpi, result.level, result.pas) == (Gpi.ANY, 0, Pas.ANY)
    words = fvp_words() | {L0: 0x81}  # secure L0 block over 0-1 GB
    assert gpc(0x1000, Pas.NONSECURE, words) == GptFault(GptFaultKind.GPF, 0)


def test_contiguous_walk_reads_the_pas_own_entry_not_the_first_of_the_block() -> None:
    memory = Words(fvp_words())
    walk(0xFDC0_0000 + 0x1F_F000, gpccr=GPCCR, gptbr=GPTBR, read64=memory)
    assert memory.reads[-1] == L1_IDX3 + 8 * (0x3DC0 + 31)


def test_contiguous_block_with_disagreeing_entries_is_flagged_when_strict() -> None:
    words = fvp_words()
    words[L1_IDX3 + 8 * (0x3DC0 + 7)] = 0x191  # one entry rewritten without shattering
    strict = walk(REALM_CARVEOUT, gpccr=GPCCR, gptbr=GPTBR, read64=Words(words), strict=True)
    assert strict.unpredictable
    assert strict.gpi is Gpi.REALM  # permissive: the PA's own entry
    assert not walk(
        REALM_CARVEOUT, gpccr=GPCCR, gptbr=GPTBR, read64=Words(fvp_words()), strict=True
    ).unpredictable


# -- PA above the PPS (R_CPDSB, R_JFFHB, R_PBPSH)


def test_pa_above_pps_is_not_looked_up() -> None:
    memory = Words(fvp_words())
    result = walk(1 << 40, gpccr=GPCCR, gptbr=GPTBR, read64=memory)
    assert result.above_pps
    assert result.pas is Pas.NONSECURE
    assert memory.reads == []


@pytest.mark.parametrize(
    ("access", "faults"), [(Pas.NONSECURE, False), (Pas.SECURE, True), (Pas.REALM, True)]
)
def test_pa_above_pps_passes_ns_and_gpfs_others_at_level_0(access: Pas, faults: bool) -> None:
    expected = GptFault(GptFaultKind.GPF, 0) if faults else None
    assert gpc((1 << 40) + 0x1000, access, fvp_words()) == expected


def test_appsaa_lets_every_pas_above_pps_pass() -> None:
    assert gpc(1 << 40, Pas.ROOT, fvp_words(), gpccr=GPCCR | 1 << 24) is None


# -- priority order


def test_gpc_disabled_checks_nothing() -> None:
    assert gpc(REALM_CARVEOUT, Pas.NONSECURE, {}, gpccr=GPCCR & ~(1 << 16)) is None


def test_invalid_configuration_is_a_walk_fault_at_level_0_before_anything_else() -> None:
    reserved_pgs = GPCCR | 0b11 << 14
    assert gpc(1 << 40, Pas.SECURE, {}, gpccr=reserved_pgs) == GptFault(GptFaultKind.WALK, 0)
    result = walk(0x1000, gpccr=reserved_pgs, gptbr=GPTBR, read64=Words({}))
    assert result.fault == GptFault(GptFaultKind.WALK, 0)
    assert "PGS" in result.reason


def test_pps_larger_than_the_pa_size_is_an_invalid_configuration() -> None:
    result = walk(0x1000, gpccr=GPCCR, gptbr=GPTBR, read64=Words({}), features=GptFeatures(pa_bits=36))
    assert result.fault == GptFault(GptFaultKind.WALK, 0)


def test_pas_disable_bits_fault_before_the_pps_check() -> None:
    nspad = GPCCR | 1 << 6
    assert gpc(1 << 40, Pas.NONSECURE, fvp_words(), gpccr=nspad) == GptFault(GptFaultKind.GPF, 0)
    assert gpc(0x1000, Pas.REALM, fvp_words(), gpccr=GPCCR | 1 << 5) == GptFault(GptFaultKind.GPF, 0)
    assert gpc(0x1000, Pas.SECURE, fvp_words(), gpccr=GPCCR | 1 << 7) == GptFault(GptFaultKind.GPF, 0)
    assert gpc(0x1000, Pas.ROOT, fvp_words(), gpccr=GPCCR | 0b111 << 5) is None  # Root is never disabled


def test_l0_table_base_above_pps_is_an_address_size_fault() -> None:
    above = (1 << 40) >> 12
    assert gpc(0x1000, Pas.NONSECURE, fvp_words(), gptbr=above) == GptFault(GptFaultKind.ADDRESS_SIZE, 0)


def test_gptbr_low_bits_below_the_table_alignment_are_ignored() -> None:
    result = walk(REALM_CARVEOUT, gpccr=GPCCR, gptbr=GPTBR | 1, read64=Words(fvp_words()))
    assert result.gpi is Gpi.REALM


def test_l0_fetch_abort_is_an_external_abort_at_level_0() -> None:
    assert gpc(0x1000, Pas.NONSECURE, {}) == GptFault(GptFaultKind.EXTERNAL_ABORT, 0)


def test_invalid_l0_entry_is_a_walk_fault_at_level_0() -> None:
    words = fvp_words() | {L0: 0x0}
    result = walk(0x1000, gpccr=GPCCR, gptbr=GPTBR, read64=Words(words))
    assert result.fault == GptFault(GptFaultKind.WALK, 0)
    assert result.pas == "fault"
    assert result.descriptor_address == L0


def test_l0_table_address_above_pps_is_an_address_size_fault_after_validity() -> None:
    words = fvp_words() | {L0 + 8 * 3: 0x100_0000_0000 | 0b0011}
    assert gpc(REALM_CARVEOUT, Pas.REALM, words) == GptFault(GptFaultKind.ADDRESS_SIZE, 0)
    misaligned_and_above = fvp_words() | {L0 + 8 * 3: 0x100_0000_1000 | 0b0011}
    assert gpc(REALM_CARVEOUT, Pas.REALM, misaligned_and_above) == GptFault(GptFaultKind.WALK, 0)


def test_misaligned_l1_table_address_is_a_walk_fault_at_level_0() -> None:
    words = fvp_words() | {L0 + 8 * 3: 0xFFF2_1003}
    assert gpc(REALM_CARVEOUT, Pas.REALM, words) == GptFault(GptFaultKind.WALK, 0)


def test_l1_fetch_abort_is_an_external_abort_at_level_1() -> None:
    words = fvp_words()
    del words[L1_IDX3 + 8 * 0x3DC0]
    assert gpc(0xFDC0_0000, Pas.REALM, words) == GptFault(GptFaultKind.EXTERNAL_ABORT, 1)


@pytest.mark.parametrize("value", [0x091, 0x591, 0x121, 0x9999_9999_9999_9929])
def test_invalid_l1_entry_is_a_walk_fault_at_level_1(value: int) -> None:
    words = fvp_words() | {L1_IDX3 + 8 * 0x3DC0: value}
    assert gpc(0xFDC0_0000, Pas.REALM, words) == GptFault(GptFaultKind.WALK, 1)


def test_reserved_field_anywhere_in_a_granules_descriptor_faults_every_granule_of_it() -> None:
    words = fvp_words() | {L1_IDX34: 0x2999_9999_9999_9999}  # field 15 reserved
    assert gpc(DELEGATED - 0x1000, Pas.NONSECURE, words) == GptFault(GptFaultKind.WALK, 1)


def test_gdi_checks_both_entries_of_the_16_byte_pair() -> None:
    words = fvp_words() | {L1_IDX34 + 8: 0x0000_0000_0000_0021}  # partner of entry 0 invalid
    assert walk(DELEGATED, gpccr=GPCCR, gptbr=GPTBR, read64=Words(words)).gpi is Gpi.REALM
    with_gdi = walk(DELEGATED, gpccr=GPCCR, gptbr=GPTBR, read64=Words(words), features=GptFeatures(gdi=True))
    assert with_gdi.fault == GptFault(GptFaultKind.WALK, 1)


def test_ns_only_granule_refuses_non_secure_pas_from_realm_state() -> None:
    nso = GPCCR | 1 << 19
    words = fvp_words() | {L1_IDX34: 0x9999_9999_9999_99D9}
    assert gpc(DELEGATED, Pas.NONSECURE, words, gpccr=nso) is None
    assert gpc(DELEGATED, Pas.NONSECURE, words, gpccr=nso, requester=Pas.ROOT) is None
    assert gpc(DELEGATED, Pas.NONSECURE, words, gpccr=nso, requester=Pas.REALM) == GptFault(
        GptFaultKind.GPF, 1
    )
    # Without GPCCR_EL3.NSO the encoding is reserved.
    assert gpc(DELEGATED, Pas.NONSECURE, words) == GptFault(GptFaultKind.WALK, 1)


@pytest.mark.parametrize(
    ("fault", "gpcsc"),
    [
        (GptFault(GptFaultKind.ADDRESS_SIZE, 0), 0b000000),
        (GptFault(GptFaultKind.WALK, 0), 0b000100),
        (GptFault(GptFaultKind.WALK, 1), 0b000101),
        (GptFault(GptFaultKind.GPF, 0), 0b001100),
        (GptFault(GptFaultKind.GPF, 1), 0b001101),
        (GptFault(GptFaultKind.EXTERNAL_ABORT, 0), 0b010100),
        (GptFault(GptFaultKind.EXTERNAL_ABORT, 1), 0b010101),
    ],
)
def test_gpcsc_encoding(fault: GptFault, gpcsc: int) -> None:
    assert fault.gpcsc == gpcsc


@pytest.mark.parametrize("pa", [-1, 1 << 56])
def test_walk_refuses_values_that_are_not_physical_addresses(pa: int) -> None:
    with pytest.raises(ValueError, match="not a physical address"):
        walk(pa, gpccr=GPCCR, gptbr=GPTBR, read64=Words({}))


def test_access_must_name_one_of_the_four_pas() -> None:
    with pytest.raises(ValueError, match="four PAS"):
        granule_protection_check(0, access=Pas.ANY, gpccr=Gpccr(pps=Pps.GB_4), gptbr=1, read64=Words({}))
