"""RMI_RTT_CREATE on the model (RMM 1.0 B3.3.17): conditions in order, unfolding, Int64 levels."""

from __future__ import annotations

import pytest
from rmm_host import Host

from cca_hil.arch.rmi import GranuleState, Ripas, RmiStatus, RttEntryState

INPUT = RmiStatus.ERROR_INPUT
RTT = RmiStatus.ERROR_RTT
L1 = 1 << 30
L2 = 1 << 21


def test_rtt_create_links_a_table_and_copies_the_parent_entry(host: Host) -> None:
    realm = host.realm()
    rtt = host.delegated()
    host.ok("rtt_create", rd=realm.rd, rtt=rtt, ipa=0x0, level=1)
    assert host.rmm.granule_state(rtt) is GranuleState.RTT
    assert host.read_entry(realm, 0x0, 0)[1:4] == (0, RttEntryState.TABLE, rtt)
    assert host.read_entry(realm, 5 * L1, 1)[1:] == (1, RttEntryState.UNASSIGNED, 0, Ripas.EMPTY)


def test_unfolding_an_assigned_ns_block_gives_contiguous_pages(host: Host) -> None:
    realm = host.realm()
    base = 1 << 39
    host.rtts(realm, base, 2)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=base, level=2, desc=0x8840_0000 | 0xC4)
    host.rtts(realm, base, 3)
    regs = host.read_entry(realm, base + 0x5000, 3)
    assert regs[1:] == (3, RttEntryState.ASSIGNED, 0x8840_5000 | 0xC4, Ripas.EMPTY)


def test_unfolding_an_unassigned_destroyed_entry_keeps_destroyed(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("rtt_destroy", rd=realm.rd, ipa=0x0, level=3)
    host.rtts(realm, 0x0, 3)
    assert host.read_entry(realm, 0x7000, 3)[4] == Ripas.DESTROYED


def test_rd_conditions(host: Host) -> None:
    realm = host.realm()
    rtt = host.delegated()
    host.fails(host.call("rtt_create", rd=realm.rd + 1, rtt=rtt, ipa=0, level=1), INPUT, "rd_align")
    host.fails(
        host.call("rtt_create", rd=host.names["non_memory"], rtt=rtt, ipa=0, level=1), INPUT, "rd_bound"
    )
    host.fails(host.call("rtt_create", rd=rtt, rtt=rtt, ipa=0, level=1), INPUT, "rd_state")


@pytest.mark.parametrize("level", [0, -1, 4, 0x7FFF_FFFF_FFFF_FFFF])
def test_level_not_below_start_or_beyond_3_is_level_bound(host: Host, level: int) -> None:
    realm = host.realm()
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.delegated(), ipa=0, level=level)
    host.fails(regs, INPUT, "level_bound")


def test_ipa_not_aligned_to_the_parent_entry_is_ipa_align(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.delegated(), ipa=L2, level=2)
    host.fails(regs, INPUT, "ipa_align")


def test_ipa_beyond_the_ipa_space_is_ipa_bound(host: Host) -> None:
    realm = host.realm(s2sz=40)
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.delegated(), ipa=1 << 40, level=1)
    host.fails(regs, INPUT, "ipa_bound")


def test_rtt_granule_conditions(host: Host) -> None:
    realm = host.realm()
    host.fails(
        host.call("rtt_create", rd=realm.rd, rtt=host.delegated() + 8, ipa=0, level=1), INPUT, "rtt_align"
    )
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.names["non_memory"], ipa=0, level=1)
    host.fails(regs, INPUT, "rtt_bound")
    host.fails(host.call("rtt_create", rd=realm.rd, rtt=host.ns(), ipa=0, level=1), INPUT, "rtt_state")
    host.fails(host.call("rtt_create", rd=realm.rd, rtt=realm.rd, ipa=0, level=1), INPUT, "rtt_state")


def test_missing_intermediate_table_is_rtt_walk_at_the_level_reached(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.delegated(), ipa=0, level=3)
    host.fails(regs, RTT, "rtt_walk", index=0)
    host.rtts(realm, 0x0, 1)
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.delegated(), ipa=0, level=3)
    host.fails(regs, RTT, "rtt_walk", index=1)


def test_existing_table_is_rtte_state_at_level_minus_1(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    regs = host.call("rtt_create", rd=realm.rd, rtt=host.delegated(), ipa=0, level=2)
    host.fails(regs, RTT, "rtte_state", index=1)


def test_level_bound_comes_before_rtt_checks(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_create", rd=realm.rd, rtt=host.ns(), ipa=0, level=9), INPUT, "level_bound")
