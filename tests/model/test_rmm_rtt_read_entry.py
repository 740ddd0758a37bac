"""RMI_RTT_READ_ENTRY on the model (RMM 1.0 B3.3.20): conditions and the four outputs of every entry state."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.rmi import Ripas, RmiStatus, RttEntryState

INPUT = RmiStatus.ERROR_INPUT
UNPROTECTED = 1 << 39


def test_walk_that_stops_early_is_not_an_error(host: Host) -> None:
    realm = host.realm()
    assert host.read_entry(realm, 0x0, 3)[1:] == (0, RttEntryState.UNASSIGNED, 0, Ripas.EMPTY)


def test_outputs_for_table_assigned_unassigned_and_ns_entries(host: Host) -> None:
    realm = host.realm()
    rtt1, rtt2, rtt3 = host.rtts(realm, 0x0, 3)
    data = host.data(realm, 0x2000)
    assert host.read_entry(realm, 0x0, 1)[1:] == (1, RttEntryState.TABLE, rtt2, Ripas.EMPTY)
    assert host.read_entry(realm, 0x2000, 3)[1:] == (3, RttEntryState.ASSIGNED, data, Ripas.RAM)
    host.ok("data_destroy", rd=realm.rd, ipa=0x2000)
    assert host.read_entry(realm, 0x2000, 3)[1:] == (3, RttEntryState.UNASSIGNED, 0, Ripas.DESTROYED)
    host.rtts(realm, UNPROTECTED, 3)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=UNPROTECTED, level=3, desc=0x8800_0000 | 0x84)
    assert host.read_entry(realm, UNPROTECTED, 3)[1:] == (3, RttEntryState.ASSIGNED, 0x8800_0084, Ripas.EMPTY)
    assert host.read_entry(realm, UNPROTECTED + 0x1000, 3)[1:] == (
        3,
        RttEntryState.UNASSIGNED,
        0,
        Ripas.EMPTY,
    )
    assert rtt1 != rtt3


def test_assigned_destroyed_reports_its_address(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("rtt_destroy", rd=realm.rd, ipa=0x0, level=3)
    host.rtts(realm, 0x0, 3)
    data = host.delegated()
    host.ok("data_create_unknown", rd=realm.rd, data=data, ipa=0x4000)
    assert host.read_entry(realm, 0x4000, 3)[1:] == (3, RttEntryState.ASSIGNED, data, Ripas.DESTROYED)


def test_level_minus_1_is_reported_as_int64(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_read_entry", rd=realm.rd, ipa=0, level=-1), INPUT, "level_bound")


def test_input_conditions(host: Host) -> None:
    realm = host.realm(s2sz=39, rtt_level_start=1)
    host.fails(host.call("rtt_read_entry", rd=realm.rd + 1, ipa=0, level=1), INPUT, "rd_align")
    host.fails(host.call("rtt_read_entry", rd=host.names["pa_limit"], ipa=0, level=1), INPUT, "rd_bound")
    host.fails(host.call("rtt_read_entry", rd=realm.rtt_base, ipa=0, level=1), INPUT, "rd_state")
    host.fails(host.call("rtt_read_entry", rd=realm.rd, ipa=0, level=0), INPUT, "level_bound")
    host.fails(host.call("rtt_read_entry", rd=realm.rd, ipa=0, level=4), INPUT, "level_bound")
    host.fails(host.call("rtt_read_entry", rd=realm.rd, ipa=0x1000, level=2), INPUT, "ipa_align")
    host.fails(host.call("rtt_read_entry", rd=realm.rd, ipa=1 << 39, level=1), INPUT, "ipa_bound")


def test_x4_is_an_output_even_in_tf_rmm_mode(tf_host: Host) -> None:
    realm = tf_host.realm()
    regs = tf_host.machine.smc(0xC400_0161, realm.rd, 0, 0, 0xDEAD)
    assert regs == (0, 0, 0, 0, 0)
