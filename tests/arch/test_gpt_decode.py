"""Whole-table decoding into PAS maps, the TF-A style builder, and their agreement with the walk."""

from __future__ import annotations

import itertools
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cca_hil.arch.gpt import (
    FAULT,
    Gpccr,
    Gptbr,
    GptConfigError,
    GptDumpError,
    GptFeatures,
    L0GptSz,
    MapPas,
    PasMap,
    PasRegion,
    Pgs,
    Pps,
    build_tables,
    decode_tables,
    memory_reader,
    walk,
)
from cca_hil.arch.pas import Pas
from cca_hil.errors import EXIT_BAD_INPUT, exit_code_for

MB = 1 << 20
GB = 1 << 30
FVP_GPCCR = 0x0001_3502
FVP_GPTBR = 0x405E
FVP_L0 = 0x0405_E000
L1_TABLE = 0x20000
# §6.3: L1 tables in TF-A's PAS-array order, keyed by L0 index.
FVP_L1 = {2: 0xFFF0_0000, 3: 0xFFF2_0000, 34: 0xFFF4_0000, 35: 0xFFF6_0000, 1: 0xFFF8_0000}
FVP_L1 |= {256: 0xFFFA_0000, 257: 0xFFFC_0000, 258: 0xFFFE_0000}
NS_512MB, NS_32MB, S_2MB, RL_2MB, RT_2MB = 0x391, 0x291, 0x181, 0x1B1, 0x1A1
ANY_GRANULES = 0xFFFF_FFFF_FFFF_FFFF


def put(table: bytearray, index: int, value: int, count: int = 1) -> None:
    """Write ``count`` copies of a 64-bit little-endian descriptor from entry ``index``."""
    for i in range(index, index + count):
        struct.pack_into("<Q", table, 8 * i, value)


def fvp_tables() -> dict[int, bytes]:
    """TF-A's FVP GPT, entry by entry from the reference's §6.2/§6.3 (not from build_tables)."""
    l0 = bytearray(8 * 1024)
    put(l0, 0, 0xF1, 1024)
    for index, address in FVP_L1.items():
        put(l0, index, address | 0b0011)
    l1 = {index: bytearray(L1_TABLE) for index in FVP_L1}
    for table in l1.values():
        put(table, 0, ANY_GRANULES, L1_TABLE // 8)
    put(l1[1], 0x1000, NS_32MB, 8 * 512)  # PCI memory 1: 0x5000_0000, 8 x 32 MB
    put(l1[2], 0, NS_512MB, 2 * 8192)  # NS DRAM1 2-3 GB
    put(l1[3], 0, NS_512MB, 8192)  # NS DRAM1 0xC000_0000, 512 MB
    put(l1[3], 0x2000, NS_32MB, 14 * 512)  # 0xE000_0000, 14 x 32 MB
    put(l1[3], 0x3C00, S_2MB, 14 * 32)  # 0xFC00_0000 Secure, 14 x 2 MB
    put(l1[3], 0x3DC0, RL_2MB, 16 * 32)  # 0xFDC0_0000 Realm, 16 x 2 MB
    put(l1[3], 0x3FC0, RT_2MB, 2 * 32)  # 0xFFC0_0000 Root, 2 x 2 MB
    for index in (34, 35, 256, 257, 258):  # NS DRAM2 (first 2 GB), PCI memory 2 (3 GB)
        put(l1[index], 0, NS_512MB, 2 * 8192)
    return {FVP_L0: bytes(l0)} | {FVP_L1[index]: bytes(table) for index, table in l1.items()}


FVP_MAP = [
    (0x0, 0x5000_0000, Pas.ANY),
    (0x5000_0000, 0x6000_0000, Pas.NONSECURE),
    (0x6000_0000, 0x8000_0000, Pas.ANY),
    (0x8000_0000, 0xFC00_0000, Pas.NONSECURE),
    (0xFC00_0000, 0xFDC0_0000, Pas.SECURE),
    (0xFDC0_0000, 0xFFC0_0000, Pas.REALM),
    (0xFFC0_0000, 0x1_0000_0000, Pas.ROOT),
    (0x1_0000_0000, 0x8_8000_0000, Pas.ANY),
    (0x8_8000_0000, 0x9_0000_0000, Pas.NONSECURE),
    (0x9_0000_0000, 0x40_0000_0000, Pas.ANY),
    (0x40_0000_0000, 0x40_C000_0000, Pas.NONSECURE),
    (0x40_C000_0000, 1 << 40, Pas.ANY),
]


def runs_of(pas_map: PasMap) -> list[tuple[int, int, MapPas]]:
    return [(run.start, run.end, run.pas) for run in pas_map.runs]


def test_tfa_fvp_tables_decode_to_the_reference_pas_map() -> None:
    pas_map = decode_tables(FVP_GPCCR, FVP_GPTBR, fvp_tables())
    assert runs_of(pas_map) == FVP_MAP
    assert pas_map.unpredictable == ()


def test_tfa_fvp_pas_map_answers_point_queries() -> None:
    pas_map = decode_tables(FVP_GPCCR, FVP_GPTBR, fvp_tables())
    assert pas_map.pas_at(0xFDC0_5000) is Pas.REALM
    assert pas_map.pas_at(0xFFF0_0000) is Pas.ROOT
    assert pas_map.pas_at(0xFBFF_FFFF) is Pas.NONSECURE
    assert pas_map.pas_at(0x0000_1000) is Pas.ANY
    assert pas_map.pas_at(1 << 40) is Pas.NONSECURE  # above the PPS: only NS accesses pass


def test_pas_map_json_has_integer_fields_and_regions() -> None:
    document = decode_tables(FVP_GPCCR, FVP_GPTBR, fvp_tables()).to_json()
    assert json.loads(json.dumps(document)) == document
    assert {k: document[k] for k in ("gpccr", "gptbr", "pps_bits", "pgs", "l0gptsz_bits")} == {
        "gpccr": FVP_GPCCR,
        "gptbr": FVP_GPTBR,
        "pps_bits": 40,
        "pgs": 4096,
        "l0gptsz_bits": 30,
    }
    regions = document["regions"]
    assert isinstance(regions, list)
    assert len(regions) == len(FVP_MAP)
    assert regions[5] == {"start": 0xFDC0_0000, "end": 0xFFC0_0000, "pas": "realm"}


TFA_FVP_REGIONS = [
    PasRegion(0x8000_0000, 0xFC00_0000, Pas.NONSECURE, l1=True),  # ARM_PAS_KERNEL
    PasRegion(0xFC00_0000, 0xFDC0_0000, Pas.SECURE, l1=True),  # ARM_PAS_SECURE
    PasRegion(0xFDC0_0000, 0xFFC0_0000, Pas.REALM, l1=True),  # RMM + EL3-RMM shared buffer
    PasRegion(0xFFC0_0000, 0x1_0000_0000, Pas.ROOT, l1=True),  # EL3 DRAM + L1 GPTs
    PasRegion(0x8_8000_0000, 0x9_0000_0000, Pas.NONSECURE, l1=True),  # ARM_PAS_KERNEL_1
    PasRegion(0x5000_0000, 0x6000_0000, Pas.NONSECURE, l1=True),  # PCI memory 1
    PasRegion(0x40_0000_0000, 0x40_C000_0000, Pas.NONSECURE, l1=True),  # PCI memory 2
]


def test_builder_lays_out_the_fvp_tables_byte_for_byte_as_the_reference() -> None:
    built = build_tables(TFA_FVP_REGIONS, gpccr=FVP_GPCCR, gptbr=FVP_GPTBR, l1_base=0xFFF0_0000)
    assert built == fvp_tables()


def test_split_regions_fill_their_unaligned_tails_with_granules_but_keep_the_map() -> None:
    split = [*TFA_FVP_REGIONS[:2], PasRegion(0xFDC0_0000, 0xFFBF_F000, Pas.REALM, l1=True)]
    split += [PasRegion(0xFFBF_F000, 0xFFC0_0000, Pas.REALM, l1=True), *TFA_FVP_REGIONS[3:]]
    built = build_tables(split, gpccr=FVP_GPCCR, gptbr=FVP_GPTBR, l1_base=0xFFF0_0000)
    table = built[0xFFF2_0000]
    assert struct.unpack_from("<Q", table, 8 * 0x3FA0)[0] == 0xBBBB_BBBB_BBBB_BBBB  # 0xFFA0_0000
    assert struct.unpack_from("<Q", table, 8 * 0x3F9F)[0] == RL_2MB
    assert runs_of(decode_tables(FVP_GPCCR, FVP_GPTBR, built)) == FVP_MAP


def test_builder_uses_l0_blocks_for_whole_l0_regions_unless_asked_for_l1() -> None:
    layout = [(0, GB, "secure"), (GB, GB + 64 * 1024, "realm")]
    built = build_tables(layout, gpccr=FVP_GPCCR, gptbr=FVP_GPTBR)
    assert struct.unpack_from("<Q", built[FVP_L0], 0)[0] == 0x81
    assert len(built) == 2  # the L0 table and one L1 table for the second L0 region
    forced = build_tables([PasRegion(0, GB, Pas.SECURE, l1=True)], gpccr=FVP_GPCCR, gptbr=FVP_GPTBR)
    assert len(forced) == 2


def test_builder_fills_descending_contiguous_sizes_from_a_2mb_boundary() -> None:
    # 6 MB + 4 KB from 2 MB: granules would only be needed for the last 4 KB.
    built = build_tables([(2 * MB, 8 * MB + 0x1000, Pas.REALM)], gpccr=FVP_GPCCR, gptbr=FVP_GPTBR)
    table = built[min(a for a in built if a != FVP_L0)]
    entries = struct.unpack_from("<130Q", table, 0)
    assert entries[:32] == (ANY_GRANULES,) * 32
    assert entries[32:128] == (RL_2MB,) * 96
    assert entries[128] == 0xFFFF_FFFF_FFFF_FFFB
    assert entries[129] == ANY_GRANULES


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ([(0, 0x800, Pas.REALM)], "granule"),
        ([(0, 2 * MB, Pas.REALM), (MB, 4 * MB, Pas.ROOT)], "overlap"),
        ([(0, (1 << 40) + 0x1000, Pas.REALM)], "protected size"),
        ([(0x2000, 0x1000, Pas.REALM)], "empty"),
    ],
)
def test_builder_rejects_bad_layouts(layout: list[tuple[int, int, Pas]], match: str) -> None:
    with pytest.raises(GptConfigError, match=match):
        build_tables(layout, gpccr=FVP_GPCCR, gptbr=FVP_GPTBR)


def test_builder_places_l1_tables_after_the_l0_table_by_default() -> None:
    built = build_tables([(GB, GB + MB, Pas.REALM)], gpccr=FVP_GPCCR, gptbr=FVP_GPTBR)
    assert sorted(built) == [FVP_L0, 0x0406_0000]  # next 128 KB boundary after the 8 KB L0 table


@pytest.mark.parametrize(("l1_base", "match"), [(0x0406_1000, "not aligned"), (0x0404_0000, "overlaps")])
def test_builder_rejects_bad_l1_bases(l1_base: int, match: str) -> None:
    with pytest.raises(GptConfigError, match=match):
        build_tables([(GB, GB + MB, Pas.REALM)], gpccr=FVP_GPCCR, gptbr=FVP_GPTBR, l1_base=l1_base)


# -- dumps: a small GPT (4 GB PPS, 64 KB granules, 1 GB L0 regions) in one buffer

SMALL = Gpccr(pps=Pps.GB_4, pgs=Pgs.KB_64, l0gptsz=L0GptSz.GB_1)
SMALL_GPTBR = 0x1  # L0 table (32 bytes) at 0x1000
SMALL_L1 = (0x2000, 0x4000, 0x6000, 0x8000)  # 8 KB tables, 1024 entries of 1 MB


def small_dump() -> bytearray:
    """L0 at 0x1000: a Realm block, two tables, a Non-secure block; tables of mixed descriptors."""
    memory = bytearray(0xA000)
    put(memory, 0x1000 // 8, 0xB1)  # 0-1 GB Realm block
    put(memory, 0x1008 // 8, 0x2003)  # 1-2 GB -> table at 0x2000
    put(memory, 0x1010 // 8, 0x4003)  # 2-3 GB -> table at 0x4000
    put(memory, 0x1018 // 8, 0x91)  # 3-4 GB Non-secure block
    put(memory, 0x2000 // 8, 0x9999_9999_9999_9999, 1024)
    put(memory, 0x2000 // 8 + 2, 0x281, 32)  # entries 2..33: a 32 MB Secure block, misaligned!
    put(memory, 0x4000 // 8, 0x391, 512)  # 2 GB + 0: 512 MB Non-secure
    put(memory, 0x4000 // 8 + 512, 0xFFFF_FFFF_FFFF_FFBA, 512)  # Root granule 0, Realm 1, Any others
    return memory


def test_single_buffer_dump_decodes_with_its_base() -> None:
    pas_map = decode_tables(SMALL, SMALL_GPTBR, small_dump(), 0)
    assert pas_map.pas_at(0x1000) is Pas.REALM
    assert pas_map.pas_at(GB) is Pas.NONSECURE
    assert pas_map.pas_at(GB + 2 * MB) is Pas.SECURE
    assert pas_map.pas_at(2 * GB + 512 * MB) is Pas.ROOT
    assert pas_map.pas_at(2 * GB + 512 * MB + 0x10000) is Pas.REALM
    assert pas_map.pas_at(2 * GB + 512 * MB + 0x20000) is Pas.ANY
    assert pas_map.pas_at(3 * GB) is Pas.NONSECURE
    memory = small_dump()
    assert decode_tables(SMALL, SMALL_GPTBR, memory[0x1000:], 0x1000) == pas_map


def test_misprogrammed_contiguous_blocks_are_reported_with_each_pa_using_its_own_entry() -> None:
    pas_map = decode_tables(SMALL, SMALL_GPTBR, small_dump())
    # The 32 MB block entries sit at indices 2..33: both 32 MB blocks they touch disagree.
    assert pas_map.unpredictable == ((GB, GB + 32 * MB), (GB + 32 * MB, GB + 64 * MB))
    read64 = memory_reader(small_dump())
    assert walk(GB + 2 * MB, gpccr=SMALL, gptbr=SMALL_GPTBR, read64=read64, strict=True).unpredictable


def test_l1_table_wholly_outside_the_dump_is_an_error_or_a_fault_run() -> None:
    memory = small_dump()
    put(memory, 0x1018 // 8, 0x10_0000 | 0b0011)  # 3-4 GB -> a table nobody dumped
    with pytest.raises(GptDumpError, match=r"L1 table of L0 entry 3 .* not inside the dump"):
        decode_tables(SMALL, SMALL_GPTBR, memory)
    pas_map = decode_tables(SMALL, SMALL_GPTBR, memory, missing_l1="fault")
    assert pas_map.pas_at(3 * GB + 0x1234) == FAULT
    # The walk agrees: an External abort on the L1 fetch.
    assert walk(3 * GB, gpccr=SMALL, gptbr=SMALL_GPTBR, read64=memory_reader(memory)).pas == FAULT


@pytest.mark.parametrize(
    ("memory", "base", "match"),
    [
        (small_dump()[:0x5000], 0, "truncated"),
        (small_dump()[0x1008:], 0x1008, "level-0 table"),
        (small_dump()[0x1000:0x1010], 0x1000, "level-0 table"),
    ],
)
def test_bad_dumps_are_one_line_input_errors(memory: bytes, base: int, match: str) -> None:
    with pytest.raises(GptDumpError, match=match) as info:
        decode_tables(SMALL, SMALL_GPTBR, memory, base)
    assert "\n" not in str(info.value)
    assert exit_code_for(info.value) == EXIT_BAD_INPUT


def test_base_is_only_for_a_single_buffer() -> None:
    with pytest.raises(ValueError, match="base"):
        decode_tables(FVP_GPCCR, FVP_GPTBR, fvp_tables(), FVP_L0)


def test_dump_with_misaligned_gptbr_is_rejected() -> None:
    with pytest.raises(GptDumpError, match="GPTBR_EL3"):
        decode_tables(FVP_GPCCR, FVP_GPTBR + 1, fvp_tables())


def test_dump_with_reserved_gpccr_is_rejected() -> None:
    with pytest.raises(GptDumpError, match="PGS=0b11"):
        decode_tables(FVP_GPCCR | 0b11 << 14, FVP_GPTBR, fvp_tables())


def test_mixed_descriptors_apart_keep_their_own_first_granules() -> None:
    memory = small_dump()
    table = 0x2000 // 8
    put(memory, table, 0x9999_9999_9999_99B9)  # last granule Non-secure
    put(memory, table + 1, 0x181)  # Secure
    put(memory, table + 2, 0xB999_9999_9999_9999)  # first granule Non-secure again
    pas_map = decode_tables(SMALL, SMALL_GPTBR, memory)
    assert runs_of(pas_map)[:5] == [
        (0x0, GB, Pas.REALM),
        (GB, GB + 0x10000, Pas.NONSECURE),
        (GB + 0x10000, GB + 0x20000, Pas.REALM),
        (GB + 0x20000, GB + MB, Pas.NONSECURE),
        (GB + MB, GB + 2 * MB, Pas.SECURE),
    ]
    assert pas_map.pas_at(GB + 2 * MB) is Pas.NONSECURE
    assert pas_map.pas_at(GB + 3 * MB - 0x10000) is Pas.REALM


def test_invalid_l0_entries_and_l1_tables_above_pps_decode_as_fault() -> None:
    memory = small_dump()
    put(memory, 0x1000 // 8, 0x0)  # invalid L0 entry
    put(memory, 0x1018 // 8, (1 << 32) | 0b0011)  # table above the 4 GB PPS
    pas_map = decode_tables(SMALL, SMALL_GPTBR, memory)
    assert pas_map.pas_at(0) == FAULT
    assert pas_map.pas_at(3 * GB) == FAULT
    assert pas_map.pas_at(GB) is Pas.NONSECURE


def test_gdi_decoding_faults_both_entries_of_a_pair_with_an_invalid_entry() -> None:
    memory = small_dump()
    put(memory, 0x4000 // 8 + 513, 0x2)  # entry 513 invalid: its partner 512 goes too under GDI
    plain = decode_tables(SMALL, SMALL_GPTBR, memory)
    gdi = decode_tables(SMALL, SMALL_GPTBR, memory, features=GptFeatures(gdi=True))
    first_of_pair = 2 * GB + 512 * MB
    assert plain.pas_at(first_of_pair) is Pas.ROOT
    assert gdi.pas_at(first_of_pair) == FAULT
    assert plain.pas_at(first_of_pair + MB) == FAULT
    assert gdi.pas_at(first_of_pair + 2 * MB) is Pas.ROOT


# -- properties

GEOMETRIES = [
    Gpccr(pps=Pps.GB_4, pgs=Pgs.KB_4, l0gptsz=L0GptSz.GB_1),
    Gpccr(pps=Pps.GB_4, pgs=Pgs.KB_16, l0gptsz=L0GptSz.GB_1),
    Gpccr(pps=Pps.GB_4, pgs=Pgs.KB_64, l0gptsz=L0GptSz.GB_16),  # t < s: one L0 entry
    Gpccr(pps=Pps.GB_64, pgs=Pgs.KB_64, l0gptsz=L0GptSz.GB_16),
]
LAYOUT_GPTBR = Gptbr.for_table(0x8000_0000)
PAS_VALUES = [Pas.SECURE, Pas.NONSECURE, Pas.ROOT, Pas.REALM, Pas.ANY, Pas.NONE]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[Gpccr, list[PasRegion], list[tuple[int, int, MapPas]]]:
    """A geometry, regions (with gaps) cut at mixed alignments, and the PAS map they should give."""
    gpccr = draw(st.sampled_from(GEOMETRIES))
    geometry = gpccr.geometry
    size = geometry.protected_size
    units = [geometry.granule_size, geometry.l1_descriptor_span, 2 * MB, 32 * MB, 512 * MB, GB]
    cut = st.sampled_from(units).flatmap(lambda unit: st.integers(0, size // unit).map(lambda k: k * unit))
    cuts = sorted({0, size, *draw(st.lists(cut, max_size=12))})
    regions: list[PasRegion] = []
    expected: list[tuple[int, int, MapPas]] = []
    for start, end in itertools.pairwise(cuts):
        pas = draw(st.sampled_from([None, *PAS_VALUES]))
        if pas is not None:
            regions.append(PasRegion(start, end, pas, l1=draw(st.booleans())))
        expected.append((start, end, Pas.ANY if pas is None else pas))
    return gpccr, draw(st.permutations(regions)), expected


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.lists(st.integers(min_value=0, max_value=(1 << 37) - 1), max_size=20))
def test_built_tables_decode_to_their_layout_and_walk_the_same(
    case: tuple[Gpccr, list[PasRegion], list[tuple[int, int, MapPas]]], extra: list[int]
) -> None:
    gpccr, regions, expected = case
    tables = build_tables(regions, gpccr=gpccr, gptbr=LAYOUT_GPTBR)
    pas_map = decode_tables(gpccr, LAYOUT_GPTBR, tables)
    assert pas_map == PasMap.from_runs(expected, gpccr=gpccr, gptbr=LAYOUT_GPTBR)
    read64 = memory_reader(tables)
    granule = gpccr.geometry.granule_size
    probes = {pa for start, end, _ in expected for pa in (start, end - granule, start + granule, end)}
    for pa in sorted(probes | set(extra)):
        assert walk(pa, gpccr=gpccr, gptbr=LAYOUT_GPTBR, read64=read64).pas == pas_map.pas_at(pa), hex(pa)


# Random, mostly broken tables in the small geometry: every kind of L0 entry and L1 descriptor.
NIBBLES = st.sampled_from([0x0, 0x8, 0x9, 0xA, 0xB, 0xF, 0xD, 0x4, 0x5, 0x2, 0xC])
VALID_NIBBLES = st.sampled_from([0x8, 0x9, 0x9, 0x9, 0xB, 0xB, 0xF, 0x4])  # 0x4: SA, enabled below


def fields_to_value(fields: list[int]) -> int:
    return sum(gpi << (4 * i) for i, gpi in enumerate(fields))


l0_tables = st.sampled_from(SMALL_L1).map(lambda address: address | 0b0011)
l0_entries = st.one_of(
    l0_tables,
    l0_tables,
    l0_tables,
    NIBBLES.map(lambda gpi: gpi << 4 | 0b0001),
    st.sampled_from([0x3003, (1 << 32) | 0b0011, 0x10_0000 | 0b0011, 0x1F1, 0x0]),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
)
l1_values = st.one_of(
    st.tuples(st.integers(0, 3), NIBBLES, st.sampled_from([0, 0, 0, 1 << 10])).map(
        lambda c: c[2] | c[0] << 8 | c[1] << 4 | 0b0001
    ),
    NIBBLES.map(lambda gpi: gpi * 0x1111_1111_1111_1111),
    st.lists(VALID_NIBBLES, min_size=16, max_size=16).map(fields_to_value),
    st.lists(VALID_NIBBLES, min_size=16, max_size=16).map(fields_to_value),
    st.lists(NIBBLES, min_size=16, max_size=16).map(fields_to_value),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
)
l1_tables = st.lists(
    st.tuples(l1_values, st.sampled_from([1, 1, 1, 2, 3, 30, 32, 64, 512, 1024])), min_size=1, max_size=32
)


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(l0_entries, min_size=4, max_size=4),
    st.lists(l1_tables, min_size=4, max_size=4),
    st.booleans(),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=(1 << 33) - 1), max_size=40),
)
def test_decoder_agrees_with_the_walk_on_arbitrary_tables(
    l0: list[int], l1: list[list[tuple[int, int]]], gdi: bool, nso: bool, extra: list[int]
) -> None:
    memory = bytearray(0xA000)
    for index, value in enumerate(l0):
        put(memory, 0x1000 // 8 + index, value)
    for address, segments in zip(SMALL_L1, l1, strict=True):
        entry = 0
        for value, count in segments:
            count = min(count, 1024 - entry)
            put(memory, address // 8 + entry, value, count)
            entry += count
    gpccr = Gpccr(pps=Pps.GB_4, pgs=Pgs.KB_64, l0gptsz=L0GptSz.GB_1, nso=nso, sa=True)
    features = GptFeatures(gdi=gdi)
    pas_map = decode_tables(gpccr, SMALL_GPTBR, memory, features=features, missing_l1="fault")
    read64 = memory_reader(memory)
    # Both ends of every run, thinned to keep the example fast; hypothesis adds arbitrary PAs.
    edges = sorted({run.start for run in pas_map.runs} | {run.end - 0x10000 for run in pas_map.runs})
    for pa in sorted({*edges[:: max(1, len(edges) // 200)], *edges[-2:], *extra}):
        result = walk(pa, gpccr=gpccr, gptbr=SMALL_GPTBR, read64=read64, features=features, strict=True)
        assert result.pas == pas_map.pas_at(pa), (hex(pa), result.reason)
        if result.unpredictable:
            assert any(start <= pa < end for start, end in pas_map.unpredictable), hex(pa)
