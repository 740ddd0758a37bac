"""RMI_RTT_DESTROY on the model (RMM 1.0 B3.3.18): conditions, the ``top`` output on every outcome."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.rmi import GranuleState, Ripas, RmiStatus, RttEntryState

INPUT = RmiStatus.ERROR_INPUT
RTT = RmiStatus.ERROR_RTT
L1 = 1 << 30
L2 = 1 << 21


def test_destroy_returns_the_rtt_and_leaves_unassigned_destroyed(host: Host) -> None:
    realm = host.realm()
    _, rtt2 = host.rtts(realm, 0x0, 2)
    regs = host.ok("rtt_destroy", rd=realm.rd, ipa=0x0, level=2)
    assert regs[1] == rtt2
    assert regs[2] == 1 << 39  # nothing live after entry 0: the end of the level-1 table
    assert host.rmm.granule_state(rtt2) is GranuleState.DELEGATED
    assert host.read_entry(realm, 0x0, 2)[1:] == (1, RttEntryState.UNASSIGNED, 0, Ripas.DESTROYED)


def test_destroy_top_skips_to_the_next_live_entry(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 5 * L2, 3)
    host.rtts(realm, 7 * L2, 3)
    assert host.ok("rtt_destroy", rd=realm.rd, ipa=5 * L2, level=3)[2] == 7 * L2


def test_destroy_of_unprotected_rtt_leaves_unassigned_ns(any_host: Host) -> None:
    # rmm-abi.md §12 #11 (spec silent): both modes follow TF-RMM.
    host = any_host
    realm = host.realm()
    base = 1 << 39
    host.rtts(realm, base, 1)
    host.ok("rtt_destroy", rd=realm.rd, ipa=base, level=1)
    assert host.rmm.realm_at(realm.rd).starts[0].entries[1].state.name == "UNASSIGNED_NS"


def test_input_failures_return_top_zero(host: Host) -> None:
    realm = host.realm()
    for args, cond in (
        ({"rd": realm.rd + 1, "ipa": 0, "level": 1}, "rd_align"),
        ({"rd": host.names["non_memory"], "ipa": 0, "level": 1}, "rd_bound"),
        ({"rd": host.ns(), "ipa": 0, "level": 1}, "rd_state"),
        ({"rd": realm.rd, "ipa": 0, "level": 0}, "level_bound"),
        ({"rd": realm.rd, "ipa": L2, "level": 2}, "ipa_align"),
        ({"rd": realm.rd, "ipa": 1 << 40, "level": 1}, "ipa_bound"),
    ):
        regs = host.call("rtt_destroy", **args)
        host.fails(regs, INPUT, cond)
        assert regs[1:3] == (0, 0)


def test_missing_table_is_rtt_walk_with_top_past_the_gap(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rtt_destroy", rd=realm.rd, ipa=0x0, level=3)
    host.fails(regs, RTT, "rtt_walk", index=0)
    assert regs[2] == 1 << 48  # walk_top of an empty level-0 table is its end (not clamped to 2^w)


def test_non_table_entry_is_rtte_state_with_walk_top(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 1)
    host.rtts(realm, 3 * L1, 2)
    regs = host.call("rtt_destroy", rd=realm.rd, ipa=0x0, level=2)
    host.fails(regs, RTT, "rtte_state", index=1)
    assert regs[2] == 3 * L1


def test_block_mapping_above_is_rtt_walk_with_top_equal_to_ipa(host: Host) -> None:
    realm = host.realm()
    base = 1 << 39
    host.rtts(realm, base, 2)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=base, level=2, desc=0x8840_0000)
    regs = host.call("rtt_destroy", rd=realm.rd, ipa=base + 0x1000 * 0, level=3)
    host.fails(regs, RTT, "rtte_state", index=2)
    assert regs[2] == base


def test_live_child_is_rtt_live_at_level_with_top_ipa(host: Host) -> None:
    realm = host.realm()
    host.data(realm, 0x3000)
    regs = host.call("rtt_destroy", rd=realm.rd, ipa=0x0, level=3)
    host.fails(regs, RTT, "rtt_live", index=3)
    assert regs[1:3] == (0, 0x0)
    regs = host.call("rtt_destroy", rd=realm.rd, ipa=0x0, level=2)
    host.fails(regs, RTT, "rtt_live", index=2)


def test_assigned_ns_entries_do_not_make_an_rtt_live(host: Host) -> None:
    realm = host.realm()
    base = 1 << 39
    host.rtts(realm, base, 3)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=base, level=3, desc=0x8840_0000)
    host.ok("rtt_destroy", rd=realm.rd, ipa=base, level=3)
