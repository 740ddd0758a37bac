"""The simulated SW-DP at register level: DP power-up, SELECT, CSW, TAR wrap, byte lanes, sticky faults."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.pas import Pas
from cca_hil.model.machine import Machine
from cca_hil.model.memory import PhysicalMemory
from cca_hil.sim.dap import (
    ABORT_STKERRCLR,
    AP_BD0,
    AP_CSW,
    AP_DRW,
    AP_IDR,
    AP_TAR,
    CTRL_CDBGPWRUPACK,
    CTRL_CDBGPWRUPREQ,
    CTRL_CSYSPWRUPACK,
    CTRL_CSYSPWRUPREQ,
    CTRL_STICKYERR,
    DP_CTRL_STAT,
    DP_IDR_ABORT,
    DP_RDBUFF,
    DP_SELECT,
    DPIDR,
    DapFault,
    SimDap,
    SimMemAp,
)

WORD_INC = 0x2 | 0x10
AXI_NS = 1 << 29


def dap_with(ap: SimMemAp) -> SimDap:
    return SimDap("CCASIM-REG", [ap])


def select(dap: SimDap, apsel: int = 0, bank: int = 0) -> None:
    dap.write_dp(DP_SELECT, (apsel << 24) | bank)


def test_dp_idr_and_power_up_handshake() -> None:
    dap = SimDap("CCASIM-REG")
    assert dap.read_dp(DP_IDR_ABORT) == DPIDR
    assert (DPIDR >> 12) & 0xF == 2  # DPv2
    dap.write_dp(DP_CTRL_STAT, CTRL_CDBGPWRUPREQ | CTRL_CSYSPWRUPREQ)
    status = dap.read_dp(DP_CTRL_STAT)
    assert status & (CTRL_CDBGPWRUPACK | CTRL_CSYSPWRUPACK) == CTRL_CDBGPWRUPACK | CTRL_CSYSPWRUPACK
    dap.write_dp(DP_CTRL_STAT, CTRL_CDBGPWRUPREQ)
    assert dap.read_dp(DP_CTRL_STAT) & CTRL_CSYSPWRUPACK == 0


def test_select_picks_the_ap_and_bank() -> None:
    dap = SimDap("CCASIM-REG")
    select(dap, 0, 0xF0)
    assert dap.read_ap(AP_IDR & 0xC) == 0x0477_0004  # AXI-AP
    select(dap, 1, 0xF0)
    assert dap.read_ap(AP_IDR & 0xC) == 0x0477_0002  # APB-AP
    select(dap, 2, 0xF0)
    assert dap.read_ap(AP_IDR & 0xC) == 0  # no AP: reads as zero, which ends pyOCD's scan
    assert dap.read_dp(DP_RDBUFF) == 0


def test_tar_auto_increment_wraps_inside_the_1_kib_block() -> None:
    memory = PhysicalMemory()
    dap = dap_with(SimMemAp("axi", memory))
    select(dap)
    dap.write_ap(AP_CSW, WORD_INC | AXI_NS)
    dap.write_ap(AP_TAR, 0x8000_03FC)
    dap.write_ap(AP_DRW, 0x1111_1111)
    dap.write_ap(AP_DRW, 0x2222_2222)
    assert memory.read(0x8000_03FC, 4) == b"\x11" * 4
    # The second beat wrapped to the start of the block, not on to 0x80000400.
    assert memory.read(0x8000_0000, 4) == b"\x22" * 4
    assert memory.read(0x8000_0400, 4) == bytes(4)
    assert dap.read_ap(AP_TAR) == 0x8000_0004


@given(start=st.integers(0, 255), count=st.integers(1, 600))
def test_block_path_matches_single_beats(start: int, count: int) -> None:
    values = [(0x0101_0101 * (i % 251)) & 0xFFFF_FFFF for i in range(count)]
    fast, slow = PhysicalMemory(), PhysicalMemory()
    for memory, multiple in ((fast, True), (slow, False)):
        dap = dap_with(SimMemAp("axi", memory))
        select(dap)
        dap.write_ap(AP_CSW, WORD_INC | AXI_NS)
        dap.write_ap(AP_TAR, 0x8000_0000 + 4 * start)
        if multiple:
            dap.write_ap_multiple(AP_DRW, values)
        else:
            for value in values:
                dap.write_ap(AP_DRW, value)
    assert fast.read(0x8000_0000, 0x400) == slow.read(0x8000_0000, 0x400)
    assert fast.granules_in_use == 1  # everything stayed inside the wrap block


def test_unsupported_csw_size_reads_back_as_word_and_status_bits_are_read_only() -> None:
    dap = dap_with(SimMemAp("axi", PhysicalMemory(), secure_debug=True))
    select(dap)
    dap.write_ap(AP_CSW, 0x5 | 0x20)  # 256-bit, packed increment: neither implemented
    csw = dap.read_ap(AP_CSW)
    assert csw & 0x7 == 0x2
    assert csw & 0x30 == 0x10
    assert csw & (1 << 6)  # DeviceEn
    assert csw & (1 << 23)  # SDeviceEn
    dap.write_ap(AP_CSW, 0x1)
    assert dap.read_ap(AP_CSW) & 0x7 == 0x1


def test_byte_and_halfword_beats_use_their_byte_lanes() -> None:
    memory = PhysicalMemory()
    dap = dap_with(SimMemAp("axi", memory))
    select(dap)
    dap.write_ap(AP_CSW, 0x0 | 0x10 | AXI_NS)  # byte, single increment
    dap.write_ap(AP_TAR, 0x8000_0001)
    dap.write_ap(AP_DRW, 0x0000_AB00)  # lane 1
    dap.write_ap(AP_DRW, 0x00CD_0000)  # lane 2, TAR advanced by one
    dap.write_ap(AP_CSW, 0x1 | 0x10 | AXI_NS)  # halfword
    dap.write_ap(AP_TAR, 0x8000_0006)
    dap.write_ap(AP_DRW, 0xBEEF_0000)  # lane 2-3
    assert memory.read(0x8000_0000, 8) == bytes([0, 0xAB, 0xCD, 0, 0, 0, 0xEF, 0xBE])
    dap.write_ap(AP_CSW, 0x0 | 0x10 | AXI_NS)
    dap.write_ap(AP_TAR, 0x8000_0002)
    assert dap.read_ap(AP_DRW) == 0xCD << 16


def test_banked_data_registers_address_tar_plus_offset_without_increment() -> None:
    memory = PhysicalMemory()
    memory.write(0x8000_0010, bytes(range(16)))
    dap = dap_with(SimMemAp("axi", memory))
    select(dap)
    dap.write_ap(AP_CSW, WORD_INC | AXI_NS)
    dap.write_ap(AP_TAR, 0x8000_0014)
    select(dap, 0, 0x10)
    assert dap.read_ap((AP_BD0 + 8) & 0xC) == int.from_bytes(bytes(range(8, 12)), "little")
    select(dap)
    assert dap.read_ap(AP_TAR) == 0x8000_0014


def test_bus_error_sets_sticky_err_until_abort_clears_it() -> None:
    ap = SimMemAp("axi", PhysicalMemory(), faults=[(0x8000_0100, 4)])
    dap = dap_with(ap)
    select(dap)
    dap.write_ap(AP_CSW, WORD_INC | AXI_NS)
    dap.write_ap(AP_TAR, 0x8000_00F8)
    with pytest.raises(DapFault) as info:
        dap.write_ap_multiple(AP_DRW, [1, 2, 3, 4])
    assert info.value.address == 0x8000_0100
    assert dap.read_dp(DP_CTRL_STAT) & CTRL_STICKYERR
    # Every AP access is refused (FAULT) while the sticky flag is set, even a harmless one.
    with pytest.raises(DapFault):
        dap.read_ap(AP_CSW)
    dap.write_dp(DP_IDR_ABORT, ABORT_STKERRCLR)
    assert not dap.read_dp(DP_CTRL_STAT) & CTRL_STICKYERR
    assert dap.read_ap(AP_CSW) & 0x7 == 0x2
    # The two beats before the fault were written; the wire saw them plus the faulting one.
    assert ap.memory.read(0x8000_00F8, 8) == b"\x01\x00\x00\x00\x02\x00\x00\x00"
    assert dap.counters.faults == 2


def test_pas_comes_from_the_csw_and_meets_the_gpt() -> None:
    machine = Machine()
    ap = SimMemAp("axi", machine.memory, gpc=machine.gpt.check)
    dap = dap_with(ap)
    select(dap)
    dap.write_ap(AP_CSW, WORD_INC)  # AxPROT[1] clear: Secure
    assert ap.pas is Pas.SECURE
    dap.write_ap(AP_TAR, 0xFC00_0000)
    dap.write_ap(AP_DRW, 0x5EC)
    dap.write_ap(AP_CSW, WORD_INC | AXI_NS)
    assert ap.pas is Pas.NONSECURE
    dap.write_ap(AP_TAR, 0xFC00_0000)
    with pytest.raises(DapFault):
        dap.read_ap(AP_DRW)
    assert machine.memory.read(0xFC00_0000, 4) == (0x5EC).to_bytes(4, "little")


def test_ahb_ap_pas_is_hnonsec_and_apb_ap_has_none() -> None:
    ahb = SimMemAp("ahb", PhysicalMemory())
    ahb.write_csw(WORD_INC | (1 << 30))
    assert ahb.pas is Pas.NONSECURE
    ahb.write_csw(WORD_INC | AXI_NS)  # bit 29 means nothing on an AHB-AP
    assert ahb.pas is Pas.SECURE
    assert SimMemAp("apb", PhysicalMemory()).pas is None


def test_rom_ranges_accept_writes_and_keep_their_contents() -> None:
    memory = PhysicalMemory()
    memory.write(0x10, b"ROM!")
    ap = SimMemAp("axi", memory, rom=[(0x10, 4)])
    ap.write_csw(WORD_INC | AXI_NS)
    ap.tar = 0x8
    ap.block_write(b"\xff" * 16)
    assert memory.read(0x8, 16) == b"\xff" * 8 + b"ROM!" + b"\xff" * 4


def test_reset_line_pulses_count_and_call_back() -> None:
    seen: list[str] = []
    dap = SimDap("CCASIM-REG", on_reset=lambda: seen.append("reset"))
    dap.system_reset()
    assert (dap.resets, seen) == (1, ["reset"])


def test_unique_ids_with_a_colon_are_refused() -> None:
    with pytest.raises(ValueError, match="':' separates pyOCD's probe type"):
        SimDap("ccasim:X")
