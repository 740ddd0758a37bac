"""RMI_REALM_ACTIVATE and RMI_REALM_DESTROY on the model (RMM 1.0 B3.3.5, B3.3.7)."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.rmi import GRANULE_SIZE, GranuleState, RealmState, RmiStatus

INPUT = RmiStatus.ERROR_INPUT
REALM = RmiStatus.ERROR_REALM


def test_activate_moves_new_realm_to_active(host: Host) -> None:
    realm = host.realm()
    host.ok("realm_activate", rd=realm.rd)
    assert host.rmm.realm_at(realm.rd).state is RealmState.ACTIVE


def test_activate_rd_checks_are_rd_align_rd_bound_rd_state(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("realm_activate", rd=realm.rd + 0x10), INPUT, "rd_align")
    host.fails(host.call("realm_activate", rd=host.names["pa_limit"]), INPUT, "rd_bound")
    host.fails(host.call("realm_activate", rd=realm.rtt_base), INPUT, "rd_state")
    host.fails(host.call("realm_activate", rd=host.delegated()), INPUT, "rd_state")


def test_activate_of_active_realm_is_realm_state(host: Host) -> None:
    realm = host.realm()
    host.ok("realm_activate", rd=realm.rd)
    host.fails(host.call("realm_activate", rd=realm.rd), REALM, "realm_state")


def test_activate_freezes_the_rim(host: Host) -> None:
    realm = host.realm()
    host.ok("realm_activate", rd=realm.rd)
    rim = host.rmm.realm_at(realm.rd).rim
    host.rtts(realm, 0x0, 3)
    data = host.delegated()
    host.fails(
        host.call("data_create", rd=realm.rd, data=data, ipa=0x0, src=host.ns(), flags=1),
        REALM,
        "realm_state",
    )
    assert host.rmm.realm_at(realm.rd).rim == rim


def test_destroy_returns_rd_and_starting_rtts_to_delegated_and_frees_vmid(host: Host) -> None:
    rtt = host.delegated(2, alignment=0x2000)
    realm = host.realm(rtt_level_start=1, rtt_num_start=2, rtt_base=rtt, vmid=900)
    host.ok("realm_destroy", rd=realm.rd)
    for addr in (realm.rd, rtt, rtt + GRANULE_SIZE):
        assert host.rmm.granule_state(addr) is GranuleState.DELEGATED
        host.ok("granule_undelegate", addr=addr)
    assert 900 not in host.rmm.vmids


def test_destroy_rd_checks_are_rd_align_rd_bound_rd_state(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("realm_destroy", rd=realm.rd + 1), INPUT, "rd_align")
    host.fails(host.call("realm_destroy", rd=host.names["non_memory"]), INPUT, "rd_bound")
    host.fails(host.call("realm_destroy", rd=host.ns()), INPUT, "rd_state")


def test_destroy_of_realm_with_a_rec_is_realm_live(host: Host) -> None:
    realm = host.realm()
    rec = host.rec(realm)
    host.fails(host.call("realm_destroy", rd=realm.rd), REALM, "realm_live")
    host.ok("rec_destroy", rec=rec)
    host.ok("realm_destroy", rd=realm.rd)


def test_destroy_of_realm_with_a_table_entry_is_realm_live(host: Host) -> None:
    realm = host.realm()
    assert len(host.rtts(realm, 0x0, 1)) == 1
    host.fails(host.call("realm_destroy", rd=realm.rd), REALM, "realm_live")
    host.ok("rtt_destroy", rd=realm.rd, ipa=0x0, level=1)
    host.ok("realm_destroy", rd=realm.rd)


def test_assigned_ns_block_in_a_starting_rtt_does_not_keep_the_realm_live(host: Host) -> None:
    realm = host.realm(s2sz=39, rtt_level_start=1)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=1 << 38, level=1, desc=0x8_0000_0000 | 0xC4)
    host.ok("realm_destroy", rd=realm.rd)


def test_destroy_is_allowed_in_every_realm_state(host: Host) -> None:
    new = host.realm()
    active = host.realm()
    host.ok("realm_activate", rd=active.rd)
    host.ok("realm_destroy", rd=new.rd)
    host.ok("realm_destroy", rd=active.rd)
