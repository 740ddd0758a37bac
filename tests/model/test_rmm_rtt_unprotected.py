"""RMI_RTT_MAP_UNPROTECTED / RMI_RTT_UNMAP_UNPROTECTED on the model (RMM 1.0 B3.3.21, B3.3.23)."""

from __future__ import annotations

import pytest
from rmm_host import Host

from cca_hil.arch.rmi import Ripas, RmiStatus, RttEntryState

INPUT = RmiStatus.ERROR_INPUT
RTT = RmiStatus.ERROR_RTT
BASE = 1 << 39
L2 = 1 << 21
NS = 0x8800_0000


def test_map_then_unmap_round_trips(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, BASE, 3)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=BASE + 0x3000, level=3, desc=NS | 0xC4)
    assert host.read_entry(realm, BASE + 0x3000, 3)[1:] == (3, RttEntryState.ASSIGNED, NS | 0xC4, Ripas.EMPTY)
    regs = host.ok("rtt_unmap_unprotected", rd=realm.rd, ipa=BASE + 0x3000, level=3)
    assert regs[1] == BASE + L2  # walk_top after the change: end of the level-3 table
    assert host.read_entry(realm, BASE + 0x3000, 3)[2] == RttEntryState.UNASSIGNED


def test_map_of_a_level_2_block(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, BASE, 2)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=BASE + L2, level=2, desc=0x8820_0000 | 0x04)
    assert host.read_entry(realm, BASE + L2, 2)[1:4] == (2, RttEntryState.ASSIGNED, 0x8820_0004)


@pytest.mark.parametrize("level", [0, -1, 4])
def test_map_level_outside_1_to_3_is_level_bound_before_rd(host: Host, level: int) -> None:
    regs = host.call("rtt_map_unprotected", rd=host.ns() + 1, ipa=BASE, level=level, desc=NS)
    host.fails(regs, INPUT, "level_bound")


def test_map_rd_conditions(host: Host) -> None:
    host.fails(
        host.call("rtt_map_unprotected", rd=host.ns() + 1, ipa=BASE, level=3, desc=NS), INPUT, "rd_align"
    )
    regs = host.call("rtt_map_unprotected", rd=host.names["non_memory"], ipa=BASE, level=3, desc=NS)
    host.fails(regs, INPUT, "rd_bound")
    host.fails(host.call("rtt_map_unprotected", rd=host.ns(), ipa=BASE, level=3, desc=NS), INPUT, "rd_state")


@pytest.mark.parametrize("bits", [0x1, 0x2, 0x300, 0x400, 0x800, 1 << 50, 1 << 54, 1 << 63, 0b100 << 2])
def test_desc_with_non_host_bits_or_reserved_memattr_is_attr_valid(host: Host, bits: int) -> None:
    realm = host.realm()
    regs = host.call("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=3, desc=NS | 0xC0 | bits)
    host.fails(regs, INPUT, "attr_valid")


def test_output_address_not_aligned_to_level_is_addr_align(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=2, desc=NS + 0x1000)
    host.fails(regs, INPUT, "addr_align")


def test_output_address_beyond_48_bits_without_lpa2_is_addr_bound(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=3, desc=1 << 48)
    host.fails(regs, INPUT, "addr_bound")


def test_map_ipa_conditions(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_map_unprotected", rd=realm.rd, ipa=BASE + 0x800, level=3, desc=NS)
    host.fails(regs, INPUT, "ipa_align")
    host.fails(
        host.call("rtt_map_unprotected", rd=realm.rd, ipa=0x5000, level=3, desc=NS), INPUT, "ipa_bound"
    )
    host.fails(
        host.call("rtt_map_unprotected", rd=realm.rd, ipa=1 << 40, level=3, desc=NS), INPUT, "ipa_bound"
    )


def test_map_walk_conditions(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=3, desc=NS), RTT, "rtt_walk", 0)
    host.rtts(realm, BASE, 3)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=3, desc=NS)
    regs = host.call("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=3, desc=NS)
    host.fails(regs, RTT, "rtte_state", 3)


def test_unmap_input_failures_have_top_zero(host: Host) -> None:
    realm = host.realm()
    for args, cond in (
        ({"rd": realm.rd, "ipa": BASE, "level": 0}, "level_bound"),
        ({"rd": realm.rd + 1, "ipa": BASE, "level": 3}, "rd_align"),
        ({"rd": host.names["non_memory"], "ipa": BASE, "level": 3}, "rd_bound"),
        ({"rd": host.ns(), "ipa": BASE, "level": 3}, "rd_state"),
        ({"rd": realm.rd, "ipa": BASE + 8, "level": 3}, "ipa_align"),
        ({"rd": realm.rd, "ipa": 0x0, "level": 3}, "ipa_bound"),
    ):
        regs = host.call("rtt_unmap_unprotected", **args)
        host.fails(regs, INPUT, cond)
        assert regs[1] == 0


def test_unmap_of_a_missing_table_is_rtt_walk_with_walk_top(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_unmap_unprotected", rd=realm.rd, ipa=BASE, level=3)
    host.fails(regs, RTT, "rtt_walk", 0)
    assert regs[1] == 1 << 48


def test_unmap_of_unmapped_entry_is_rtte_state_with_top_past_it(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, BASE, 3)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=BASE + 0x9000, level=3, desc=NS)
    regs = host.call("rtt_unmap_unprotected", rd=realm.rd, ipa=BASE + 0x2000, level=3)
    host.fails(regs, RTT, "rtte_state", 3)
    assert regs[1] == BASE + 0x9000


def test_unmap_below_a_block_is_rtt_walk_with_top_equal_to_ipa(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, BASE, 2)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=BASE, level=2, desc=0x8820_0000)
    regs = host.call("rtt_unmap_unprotected", rd=realm.rd, ipa=BASE + 0x1000, level=3)
    host.fails(regs, RTT, "rtt_walk", 2)
    assert regs[1] == BASE + 0x1000
