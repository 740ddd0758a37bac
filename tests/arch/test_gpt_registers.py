"""GPCCR_EL3 / GPTBR_EL3 codecs and GPT geometry (DDI0487 D24.2.56, D24.2.57, D9.7)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.gpt import (
    Cacheability,
    Gpccr,
    Gptbr,
    GptConfigError,
    GptGeometry,
    L0GptSz,
    Pgs,
    Pps,
    Shareability,
)
from cca_hil.errors import EXIT_BAD_INPUT, InputError, exit_code_for

TFA_FVP_GPCCR = 0x0001_3502
TFA_FVP_GPTBR = 0x405E


def test_tfa_fvp_gpccr_decodes_to_1tb_4kb_inner_shareable_write_back() -> None:
    gpccr = Gpccr.decode(TFA_FVP_GPCCR)
    assert gpccr.pps is Pps.TB_1
    assert gpccr.pgs is Pgs.KB_4
    assert gpccr.l0gptsz is L0GptSz.GB_1
    assert gpccr.irgn is Cacheability.WB_RA_WA
    assert gpccr.orgn is Cacheability.WB_RA_WA
    assert gpccr.sh is Shareability.INNER_SHAREABLE
    assert gpccr.gpc
    assert not (gpccr.gpcp or gpccr.nso or gpccr.appsaa or gpccr.sa or gpccr.nsp)


def test_tfa_fvp_gpccr_with_gpc2_sets_nso() -> None:
    assert Gpccr.decode(0x0009_3502).nso


def test_tfa_fvp_geometry_is_1024_l0_entries_and_128kb_l1_tables() -> None:
    geometry = Gpccr.decode(TFA_FVP_GPCCR).geometry
    assert (geometry.pps_bits, geometry.l0gptsz_bits, geometry.pgs_bits) == (40, 30, 12)
    assert geometry.l0_entries == 1024
    assert geometry.l0_table_size == 8 * 1024
    assert geometry.l1_entries == 16 * 1024
    assert geometry.l1_table_size == 128 * 1024
    assert geometry.l1_descriptor_span == 64 * 1024


def test_tfa_fvp_gptbr_points_at_the_top_of_trusted_sram() -> None:
    gptbr = Gptbr.decode(TFA_FVP_GPTBR)
    assert gptbr.l0_address == 0x0405_E000
    gptbr.check_alignment(Gpccr.decode(TFA_FVP_GPCCR).geometry)
    assert Gptbr.for_table(0x0405_E000) == gptbr


@pytest.mark.parametrize(
    ("l0gptsz", "pgs", "size"),
    [
        (L0GptSz.GB_1, Pgs.KB_4, 128 << 10),
        (L0GptSz.GB_1, Pgs.KB_16, 32 << 10),
        (L0GptSz.GB_1, Pgs.KB_64, 8 << 10),
        (L0GptSz.GB_16, Pgs.KB_4, 2 << 20),
        (L0GptSz.GB_16, Pgs.KB_16, 512 << 10),
        (L0GptSz.GB_16, Pgs.KB_64, 128 << 10),
        (L0GptSz.GB_64, Pgs.KB_4, 8 << 20),
        (L0GptSz.GB_64, Pgs.KB_16, 2 << 20),
        (L0GptSz.GB_64, Pgs.KB_64, 512 << 10),
        (L0GptSz.GB_512, Pgs.KB_4, 64 << 20),
        (L0GptSz.GB_512, Pgs.KB_16, 16 << 20),
        (L0GptSz.GB_512, Pgs.KB_64, 4 << 20),
    ],
)
def test_l1_table_size_follows_the_reference_table(l0gptsz: L0GptSz, pgs: Pgs, size: int) -> None:
    assert Gpccr(pps=Pps.TB_1, pgs=pgs, l0gptsz=l0gptsz).geometry.l1_table_size == size


@pytest.mark.parametrize("pps", list(Pps))
@pytest.mark.parametrize("l0gptsz", list(L0GptSz))
@pytest.mark.parametrize("pgs", list(Pgs))
def test_geometry_tiles_the_protected_space(pps: Pps, l0gptsz: L0GptSz, pgs: Pgs) -> None:
    geometry = Gpccr(pps=pps, pgs=pgs, l0gptsz=l0gptsz).geometry
    assert geometry.l0_entries * geometry.l0_region_size >= geometry.protected_size
    assert geometry.l1_entries * geometry.l1_descriptor_span == geometry.l0_region_size
    assert geometry.l1_descriptor_span == 16 * geometry.granule_size
    assert geometry.l1_table_size == 8 * geometry.l1_entries
    last = geometry.protected_size - 1
    assert geometry.l0_index(last) == geometry.l0_entries - 1
    assert geometry.l1_index(last) == geometry.l1_entries_reachable - 1
    assert geometry.gpi_index(last) == 15


def test_small_pps_has_one_l0_entry_and_a_4kb_aligned_table() -> None:
    geometry = GptGeometry(pps_bits=32, l0gptsz_bits=34, pgs_bits=12)
    assert geometry.l0_entries == 1
    assert geometry.l0_table_size == 8
    assert geometry.l0_alignment == 4096
    assert geometry.l0_index(0xFFFF_F000) == 0
    # Only 4 GB of the 16 GB L0 region is reachable.
    assert geometry.l1_entries_reachable == (1 << 32) >> 16


def test_pa_fields_split_as_the_reference_worked_example() -> None:
    geometry = Gpccr.decode(TFA_FVP_GPCCR).geometry
    assert geometry.l0_index(0xFDC0_5000) == 3
    assert geometry.l1_index(0xFDC0_5000) == 0x3DC0
    assert geometry.gpi_index(0x8_8000_1000) == 1


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (0x13507, "PPS=0b111"),
        (0x1F502, "PGS=0b11"),
        (0x11502, "SH=0b01"),
        (0x113502, "L0GPTSZ=0b0001"),
        (0x513502, "L0GPTSZ=0b0101"),
        (0xF13502, "L0GPTSZ=0b1111"),
    ],
)
def test_reserved_gpccr_encodings_name_the_field_and_the_valid_values(value: int, field: str) -> None:
    with pytest.raises(GptConfigError) as info:
        Gpccr.decode(value)
    message = str(info.value)
    assert field in message
    assert "reserved" in message
    assert "valid:" in message
    assert "\n" not in message


@pytest.mark.parametrize("bit", [3, 4, 29, 30, 63])
def test_gpccr_res0_bits_are_rejected(bit: int) -> None:
    with pytest.raises(GptConfigError, match="RES0"):
        Gpccr.decode(TFA_FVP_GPCCR | 1 << bit)


def test_non_cacheable_gpt_fetches_must_be_outer_shareable() -> None:
    non_cacheable_inner = 0x13002  # IRGN=ORGN=NC, SH=Inner
    with pytest.raises(GptConfigError, match="requires SH=0b10"):
        Gpccr.decode(non_cacheable_inner)
    assert Gpccr.decode(0x12002).sh is Shareability.OUTER_SHAREABLE


def test_config_errors_are_bad_input() -> None:
    with pytest.raises(InputError) as info:
        Gpccr.decode(0x1F502)
    assert exit_code_for(info.value) == EXIT_BAD_INPUT


def test_gptbr_high_bits_are_res0() -> None:
    with pytest.raises(GptConfigError, match="RES0"):
        Gptbr.decode(1 << 40 | TFA_FVP_GPTBR)


def test_misaligned_gptbr_names_the_required_alignment() -> None:
    geometry = Gpccr.decode(TFA_FVP_GPCCR).geometry  # 8 KB L0 table
    with pytest.raises(GptConfigError, match="0x2000-byte") as info:
        Gptbr.decode(0x405F).check_alignment(geometry)
    assert "GPTBR_EL3" in str(info.value)


gpccrs = st.builds(
    Gpccr,
    pps=st.sampled_from(Pps),
    pgs=st.sampled_from(Pgs),
    l0gptsz=st.sampled_from(L0GptSz),
    irgn=st.sampled_from(Cacheability),
    orgn=st.sampled_from([c for c in Cacheability if c is not Cacheability.NC]),
    sh=st.sampled_from(Shareability),
    gpc=st.booleans(),
    gpcp=st.booleans(),
    tbgpcd=st.booleans(),
    nso=st.booleans(),
    appsaa=st.booleans(),
    spad=st.booleans(),
    nspad=st.booleans(),
    rlpad=st.booleans(),
    sa=st.booleans(),
    nsp=st.booleans(),
    na6=st.booleans(),
    na7=st.booleans(),
)


@given(gpccrs)
def test_gpccr_encode_then_decode_round_trips(gpccr: Gpccr) -> None:
    assert Gpccr.decode(gpccr.encode()) == gpccr


@given(st.integers(min_value=0, max_value=(1 << 29) - 1) | st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_any_gpccr_value_either_decodes_to_itself_or_is_a_config_error(value: int) -> None:
    try:
        decoded = Gpccr.decode(value)
    except GptConfigError:
        return
    assert decoded.encode() == value


@given(st.integers(min_value=0, max_value=(1 << 40) - 1))
def test_gptbr_round_trips(baddr: int) -> None:
    assert Gptbr.decode(baddr).encode() == baddr
    assert Gptbr.decode(baddr).l0_address == baddr << 12


def test_importing_the_gpt_codecs_does_not_import_numpy() -> None:
    probe = "import sys, cca_hil.arch.gpt; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
