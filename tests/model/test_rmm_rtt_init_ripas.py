"""RMI_RTT_INIT_RIPAS on the model (RMM 1.0 B3.3.22): conditions in order, per-entry processing and RIM."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch import measurement
from cca_hil.arch.rmi import Ripas, RmiStatus, RttEntryState

INPUT = RmiStatus.ERROR_INPUT
REALM = RmiStatus.ERROR_REALM
RTT = RmiStatus.ERROR_RTT
L2 = 1 << 21


def test_init_ripas_makes_ram_and_measures_one_descriptor_per_entry(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    state = host.rmm.realm_at(realm.rd)
    rim = state.rim
    assert host.ok("rtt_init_ripas", rd=realm.rd, base=0x2000, top=0x4000)[1] == 0x4000
    for ipa in (0x2000, 0x3000):
        rim = measurement.rim_extend_ripas(state.hash_algo, rim, base=ipa, top=ipa + 0x1000)
        assert host.read_entry(realm, ipa, 3)[1:] == (3, RttEntryState.UNASSIGNED, 0, Ripas.RAM)
    assert state.rim == rim
    assert host.read_entry(realm, 0x4000, 3)[4] == Ripas.EMPTY


def test_a_level_2_entry_is_one_descriptor(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    state = host.rmm.realm_at(realm.rd)
    rim = state.rim
    assert host.ok("rtt_init_ripas", rd=realm.rd, base=L2, top=3 * L2)[1] == 3 * L2
    rim = measurement.rim_extend_ripas(state.hash_algo, rim, base=L2, top=2 * L2)
    assert state.rim == measurement.rim_extend_ripas(state.hash_algo, rim, base=2 * L2, top=3 * L2)


def test_processing_stops_at_the_end_of_the_rtt(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    assert host.ok("rtt_init_ripas", rd=realm.rd, base=L2 - 0x2000, top=2 * L2)[1] == L2


def test_size_valid_comes_first(host: Host) -> None:
    host.fails(host.call("rtt_init_ripas", rd=host.ns() + 1, base=0x2000, top=0x2000), INPUT, "size_valid")


def test_rd_conditions(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_init_ripas", rd=realm.rd + 1, base=0, top=0x1000), INPUT, "rd_align")
    host.fails(
        host.call("rtt_init_ripas", rd=host.names["non_memory"], base=0, top=0x1000), INPUT, "rd_bound"
    )
    host.fails(host.call("rtt_init_ripas", rd=realm.rtt_base, base=0, top=0x1000), INPUT, "rd_state")


def test_top_conditions(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0, top=0x1800), INPUT, "top_gran_align")
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0, top=(1 << 39) + 0x1000), INPUT, "top_bound")


def test_active_realm_is_realm_state(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("realm_activate", rd=realm.rd)
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0, top=0x1000), REALM, "realm_state")


def test_unaligned_top_wins_over_realm_state_in_both_modes(any_host: Host) -> None:
    # rmm-abi.md §12 #7: TF-RMM's (allowed) order in both modes.
    host = any_host
    realm = host.realm()
    host.ok("realm_activate", rd=realm.rd)
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0, top=0x1800), INPUT, "top_gran_align")


def test_base_not_aligned_to_the_walk_level_is_base_align(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0x1000, top=L2), RTT, "base_align", 2)


def test_base_not_granule_aligned_is_base_align_in_spec_mode(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0x10, top=0x1000), RTT, "base_align", 3)


def test_base_not_granule_aligned_is_an_input_error_in_tf_rmm_mode(tf_host: Host) -> None:
    # rmm-abi.md §12 #6
    realm = tf_host.realm()
    tf_host.rtts(realm, 0x0, 3)
    regs = tf_host.call("rtt_init_ripas", rd=realm.rd, base=0x10, top=0x1000)
    tf_host.fails(regs, INPUT, "tf_rmm_base_granule_align")


def test_assigned_entry_at_base_is_rtte_state(any_host: Host) -> None:
    host = any_host
    realm = host.realm()
    host.data(realm, 0x3000)
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0x3000, top=0x4000), RTT, "rtte_state", 3)


def test_entry_larger_than_the_range_is_no_progress(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    host.fails(host.call("rtt_init_ripas", rd=realm.rd, base=0x0, top=0x1000), RTT, "no_progress", 2)


def later_assigned_and_destroyed(host: Host) -> int:
    realm = host.realm()
    host.data(realm, 0x2000)
    host.data(realm, 0x4000)
    host.ok("data_destroy", rd=realm.rd, ipa=0x4000)
    return realm.rd


def test_spec_mode_processes_assigned_and_destroyed_entries_in_range(host: Host) -> None:
    rd = later_assigned_and_destroyed(host)
    assert host.ok("rtt_init_ripas", rd=rd, base=0x0, top=0x6000)[1] == 0x6000
    assert host.ok("rtt_read_entry", rd=rd, ipa=0x4000, level=3)[4] == Ripas.RAM


def test_tf_rmm_mode_stops_at_assigned_and_destroyed_entries(tf_host: Host) -> None:
    # rmm-abi.md §12 #8
    rd = later_assigned_and_destroyed(tf_host)
    assert tf_host.ok("rtt_init_ripas", rd=rd, base=0x0, top=0x6000)[1] == 0x2000
    assert tf_host.ok("rtt_init_ripas", rd=rd, base=0x3000, top=0x6000)[1] == 0x4000
    regs = tf_host.call("rtt_init_ripas", rd=rd, base=0x4000, top=0x6000)
    tf_host.fails(regs, RTT, "no_progress", 3)


def test_failed_init_leaves_the_rim_alone(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    rim = host.rmm.realm_at(realm.rd).rim
    host.call("rtt_init_ripas", rd=realm.rd, base=0x0, top=0x1000)
    assert host.rmm.realm_at(realm.rd).rim == rim
