"""GPT descriptor and GPI codecs against values written from the spec's bit layouts (DDI0487 D9.6)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.gpt import (
    ContigSize,
    Gpccr,
    Gpi,
    GptDescriptorError,
    GptFeatures,
    L0Block,
    L0Table,
    L1Contiguous,
    L1Granules,
    Pps,
    decode_l0,
    decode_l1,
    valid_gpis,
)
from cca_hil.arch.pas import Pas

FVP = Gpccr.decode(0x0001_3502)
RESERVED_GPIS = (0b0001, 0b0010, 0b0011, 0b1100, 0b1110)


def test_l0_block_all_access() -> None:
    assert decode_l0(0x0000_0000_0000_00F1, gpccr=FVP) == L0Block(Gpi.ANY)


def test_l0_table_points_at_its_l1_table() -> None:
    assert decode_l0(0x0000_0000_FFF2_0003, gpccr=FVP) == L0Table(0xFFF2_0000)


@pytest.mark.parametrize(
    ("value", "gpi", "contig"),
    [
        (0x191, Gpi.NONSECURE, ContigSize.MB_2),
        (0x291, Gpi.NONSECURE, ContigSize.MB_32),
        (0x391, Gpi.NONSECURE, ContigSize.MB_512),
        (0x181, Gpi.SECURE, ContigSize.MB_2),
        (0x2B1, Gpi.REALM, ContigSize.MB_32),
        (0x3A1, Gpi.ROOT, ContigSize.MB_512),
    ],
)
def test_l1_contiguous_descriptors_of_each_size(value: int, gpi: Gpi, contig: ContigSize) -> None:
    assert decode_l1(value, gpccr=FVP) == L1Contiguous(gpi, contig)


def test_contiguous_sizes_are_2_32_512_mb() -> None:
    assert [c.size for c in ContigSize] == [2 << 20, 32 << 20, 512 << 20]


def test_l1_granules_descriptor_field_i_is_granule_i() -> None:
    granules = decode_l1(0x9999_9999_9999_99B9, gpccr=FVP)
    assert isinstance(granules, L1Granules)
    assert granules.gpis[0] is Gpi.NONSECURE
    assert granules.gpis[1] is Gpi.REALM
    assert set(granules.gpis[2:]) == {Gpi.NONSECURE}


def test_uniform_granules_descriptors() -> None:
    assert decode_l1(0x9999_9999_9999_9999, gpccr=FVP) == L1Granules.uniform(Gpi.NONSECURE)
    assert decode_l1(0xFFFF_FFFF_FFFF_FFFF, gpccr=FVP) == L1Granules.uniform(Gpi.ANY)
    assert decode_l1(0, gpccr=FVP) == L1Granules.uniform(Gpi.NO_ACCESS)


@pytest.mark.parametrize("gpi", RESERVED_GPIS)
def test_l0_block_with_reserved_gpi_is_invalid(gpi: int) -> None:
    with pytest.raises(GptDescriptorError, match="reserved"):
        decode_l0(gpi << 4 | 0b0001, gpccr=FVP)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0x0000_0000_0000_0000, "neither Block"),
        (0x0000_0000_0000_01F1, "RES0"),  # block, bit 8 set
        (0x8000_0000_0000_00F1, "RES0"),
        (0x0000_0000_FFF2_0013, "RES0"),  # table, bits[11:4] not zero
        (0x0010_0000_FFF2_0003, "RES0"),  # table, bit 52 set
        (0x0000_0000_FFF2_1003, "not aligned"),  # 128 KB L1 tables need bits[16:12] zero
        (0x0000_0000_0000_0005, "neither Block"),
    ],
)
def test_invalid_l0_descriptors(value: int, why: str) -> None:
    with pytest.raises(GptDescriptorError, match=why) as info:
        decode_l0(value, gpccr=FVP)
    assert info.value.level == 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0x091, "Contig=0b00"),
        (0x591, "RES0"),  # bit 10 set
        (0x1_0000_0000_0191, "RES0"),
        (0x121, "reserved"),  # contiguous with reserved GPI 0b0010
        (0x9999_9999_9999_9929, "field 1 GPI 0b0010"),
        (0xC999_9999_9999_9999, "field 15 GPI 0b1100"),
        (0x9999_9999_9999_9E99, "field 2 GPI 0b1110"),
    ],
)
def test_invalid_l1_descriptors(value: int, why: str) -> None:
    with pytest.raises(GptDescriptorError, match=why) as info:
        decode_l1(value, gpccr=FVP)
    assert info.value.level == 1


def test_secure_gpi_needs_sel2() -> None:
    assert decode_l1(0x181, gpccr=FVP) == L1Contiguous(Gpi.SECURE, ContigSize.MB_2)
    with pytest.raises(GptDescriptorError):
        decode_l1(0x181, gpccr=FVP, features=GptFeatures(sel2=False))


@pytest.mark.parametrize(
    ("gpi", "enabled"),
    [
        (Gpi.NS_ONLY, replace(FVP, nso=True)),
        (Gpi.SYSTEM_AGENT, replace(FVP, sa=True)),
        (Gpi.NS_PROTECTED, replace(FVP, nsp=True)),
        (Gpi.NA6, replace(FVP, na6=True)),
        (Gpi.NA7, replace(FVP, na7=True)),
    ],
)
def test_gpc2_and_gdi_gpis_are_valid_only_when_their_gpccr_bit_is_set(gpi: Gpi, enabled: Gpccr) -> None:
    value = 0x9999_9999_9999_9990 | gpi.value
    with pytest.raises(GptDescriptorError, match="reserved"):
        decode_l1(value, gpccr=FVP)
    assert gpi in valid_gpis(enabled)
    granules = decode_l1(value, gpccr=enabled)
    assert isinstance(granules, L1Granules)
    assert granules.gpis[0] is gpi


def test_gpi_check_follows_gpicheck() -> None:
    assert Gpi.ANY.allows(Pas.REALM)
    assert not Gpi.NO_ACCESS.allows(Pas.ROOT)
    assert Gpi.REALM.allows(Pas.REALM)
    assert not Gpi.REALM.allows(Pas.NONSECURE)
    assert not Gpi.SYSTEM_AGENT.allows(Pas.NONSECURE)
    # NS-only: Non-secure PAS from Non-secure or Root state only.
    assert Gpi.NS_ONLY.allows(Pas.NONSECURE)
    assert Gpi.NS_ONLY.allows(Pas.NONSECURE, requester=Pas.ROOT)
    assert not Gpi.NS_ONLY.allows(Pas.NONSECURE, requester=Pas.REALM)
    assert not Gpi.NS_ONLY.allows(Pas.SECURE)


def test_gpi_pas_mapping() -> None:
    assert {gpi: gpi.pas for gpi in Gpi} == {
        Gpi.NO_ACCESS: Pas.NONE,
        Gpi.SYSTEM_AGENT: Pas.NONE,
        Gpi.NS_PROTECTED: Pas.NONE,
        Gpi.NA6: Pas.NONE,
        Gpi.NA7: Pas.NONE,
        Gpi.SECURE: Pas.SECURE,
        Gpi.NONSECURE: Pas.NONSECURE,
        Gpi.ROOT: Pas.ROOT,
        Gpi.REALM: Pas.REALM,
        Gpi.NS_ONLY: Pas.NONSECURE,
        Gpi.ANY: Pas.ANY,
    }


ALL_ENABLED = Gpccr(pps=Pps.TB_1, nso=True, sa=True, nsp=True, na6=True, na7=True)
gpis = st.sampled_from(Gpi)


@given(gpis)
def test_l0_block_round_trips(gpi: Gpi) -> None:
    assert decode_l0(L0Block(gpi).encode(), gpccr=ALL_ENABLED) == L0Block(gpi)


@given(st.integers(min_value=0, max_value=(1 << 23) - 1))
def test_l0_table_round_trips(table: int) -> None:
    address = table << 17  # 128 KB aligned, below 2^40
    assert decode_l0(L0Table(address).encode(), gpccr=ALL_ENABLED) == L0Table(address)


@given(gpis, st.sampled_from(ContigSize))
def test_l1_contiguous_round_trips(gpi: Gpi, contig: ContigSize) -> None:
    descriptor = L1Contiguous(gpi, contig)
    assert decode_l1(descriptor.encode(), gpccr=ALL_ENABLED) == descriptor


@given(st.lists(gpis, min_size=16, max_size=16))
def test_l1_granules_round_trip(fields: list[Gpi]) -> None:
    descriptor = L1Granules(tuple(fields))
    assert decode_l1(descriptor.encode(), gpccr=ALL_ENABLED) == descriptor


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_any_l1_value_decodes_to_itself_or_is_invalid(value: int) -> None:
    try:
        descriptor = decode_l1(value, gpccr=ALL_ENABLED)
    except GptDescriptorError:
        return
    assert descriptor.encode() == value
