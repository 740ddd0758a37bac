"""RMI_RTT_SET_RIPAS on the model (RMM 1.0 B3.3.24): conditions in order and the RIPAS change round trip.

A REC gets its pending RIPAS change request through ``Rec.exit_ripas_change``,
the entry point realm execution uses when the Realm's RSI_IPA_STATE_SET exits.
"""

from __future__ import annotations

from rmm_host import Host, RealmHandle

from cca_hil.arch.rmi import RecState, Ripas, RmiStatus, RttEntryState
from cca_hil.arch.structs import RecEnter, RecEnterFlags, RecRun

INPUT = RmiStatus.ERROR_INPUT
REC = RmiStatus.ERROR_REC
RTT = RmiStatus.ERROR_RTT
L2 = 1 << 21


def active_realm(host: Host, *, ram_top: int = 0x8000) -> tuple[RealmHandle, int]:
    """An ACTIVE Realm with a level-3 table at 0, RAM below ``ram_top``, one REC."""
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("rtt_init_ripas", rd=realm.rd, base=0x0, top=ram_top)
    rec = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    return realm, rec


def request(
    host: Host, rec: int, base: int, top: int, ripas: Ripas, *, change_destroyed: bool = False
) -> None:
    host.rmm.rec_at(rec).exit_ripas_change(base=base, top=top, ripas=ripas, change_destroyed=change_destroyed)


def test_set_ripas_changes_entries_and_advances_ripas_addr(host: Host) -> None:
    realm, rec = active_realm(host)
    request(host, rec, 0x2000, 0x6000, Ripas.EMPTY)
    assert host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x2000, top=0x6000)[1] == 0x6000
    assert host.read_entry(realm, 0x5000, 3)[4] == Ripas.EMPTY
    assert host.read_entry(realm, 0x6000, 3)[4] == Ripas.RAM
    assert host.rmm.rec_at(rec).ripas_addr == 0x6000


def test_set_ripas_in_steps_must_continue_from_ripas_addr(host: Host) -> None:
    realm, rec = active_realm(host)
    request(host, rec, 0x0, 0x8000, Ripas.EMPTY)
    assert host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x0, top=0x3000)[1] == 0x3000
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x0, top=0x8000), INPUT, "base_bound")
    assert host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x3000, top=0x8000)[1] == 0x8000


def test_set_ripas_stops_at_the_end_of_the_rtt(host: Host) -> None:
    realm, rec = active_realm(host)
    request(host, rec, L2 - 0x2000, L2 + 0x2000, Ripas.RAM)
    assert host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=L2 - 0x2000, top=L2 + 0x2000)[1] == L2


def test_assigned_ram_page_can_become_empty(host: Host) -> None:
    realm = host.realm()
    data = host.data(realm, 0x1000)
    rec = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    request(host, rec, 0x1000, 0x2000, Ripas.EMPTY)
    host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x2000)
    assert host.read_entry(realm, 0x1000, 3)[1:] == (3, RttEntryState.ASSIGNED, data, Ripas.EMPTY)


def destroyed_page(host: Host) -> tuple[RealmHandle, int]:
    realm = host.realm()
    host.data(realm, 0x1000)
    host.ok("data_destroy", rd=realm.rd, ipa=0x1000)
    rec = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    return realm, rec


def test_destroyed_entry_blocks_without_change_destroyed(host: Host) -> None:
    realm, rec = destroyed_page(host)
    request(host, rec, 0x1000, 0x2000, Ripas.RAM)
    host.fails(
        host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x2000), RTT, "no_progress", 3
    )


def test_destroyed_entry_changes_with_change_destroyed(host: Host) -> None:
    realm, rec = destroyed_page(host)
    request(host, rec, 0x1000, 0x2000, Ripas.RAM, change_destroyed=True)
    host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x2000)
    assert host.read_entry(realm, 0x1000, 3)[4] == Ripas.RAM


def test_without_a_pending_request_every_call_is_an_input_error(host: Host) -> None:
    realm, rec = active_realm(host)
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x0, top=0x1000), INPUT, "top_bound")
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x2000), INPUT, "base_bound")


def test_rec_entry_closes_the_request_and_reports_progress_and_response(host: Host) -> None:
    realm, rec = active_realm(host, ram_top=0x1000)
    request(host, rec, 0x1000, 0x4000, Ripas.RAM)
    host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x2000)
    run = host.struct(RecRun(enter=RecEnter(flags=RecEnterFlags.RIPAS_RESPONSE)))
    host.ok("rec_enter", rec=rec, run=run)
    assert host.rmm.rec_at(rec).gprs[:3] == [0, 0x2000, 1]  # RSI_SUCCESS, new_base, RSI_REJECT
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x2000, top=0x3000), INPUT, "base_bound")


def test_accepted_partial_change_reports_accept(host: Host) -> None:
    realm, rec = active_realm(host, ram_top=0x1000)
    request(host, rec, 0x1000, 0x4000, Ripas.RAM)
    host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x2000)
    host.ok("rec_enter", rec=rec, run=host.struct(RecRun()))
    assert host.rmm.rec_at(rec).gprs[:3] == [0, 0x2000, 0]


def test_size_and_top_alignment_come_first(any_host: Host) -> None:
    # rmm-abi.md §12 #10: TF-RMM's (allowed) order in both modes, even with a foreign REC.
    host = any_host
    realm, _ = active_realm(host)
    other, foreign = active_realm(host)
    host.fails(
        host.call("rtt_set_ripas", rd=realm.rd, rec=foreign, base=0x2000, top=0x2000), INPUT, "size_valid"
    )
    regs = host.call("rtt_set_ripas", rd=realm.rd, rec=foreign, base=0x2000, top=0x2800)
    host.fails(regs, INPUT, "top_gran_align")
    assert other.rd != realm.rd


def test_rd_and_rec_conditions(host: Host) -> None:
    realm, rec = active_realm(host)
    _, foreign = active_realm(host)
    args = {"base": 0x0, "top": 0x1000}
    host.fails(host.call("rtt_set_ripas", rd=realm.rd + 1, rec=rec, **args), INPUT, "rd_align")
    host.fails(host.call("rtt_set_ripas", rd=host.names["non_memory"], rec=rec, **args), INPUT, "rd_bound")
    host.fails(host.call("rtt_set_ripas", rd=rec, rec=rec, **args), INPUT, "rd_state")
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec + 1, **args), INPUT, "rec_align")
    host.fails(
        host.call("rtt_set_ripas", rd=realm.rd, rec=host.names["non_memory"], **args), INPUT, "rec_bound"
    )
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=realm.rd, **args), INPUT, "rec_gran_state")
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=foreign, **args), REC, "rec_owner")


def test_top_beyond_the_request_is_top_bound(host: Host) -> None:
    realm, rec = active_realm(host)
    request(host, rec, 0x0, 0x2000, Ripas.EMPTY)
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x0, top=0x3000), INPUT, "top_bound")


def block_request(host: Host, ripas: Ripas) -> tuple[RealmHandle, int]:
    """A request at 0x1000 in a Realm whose walk stops at a level-2 entry of RIPAS ``ripas``."""
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    if ripas is Ripas.RAM:
        host.ok("rtt_init_ripas", rd=realm.rd, base=0x0, top=L2)
    rec = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    request(host, rec, 0x1000, 0x3000, Ripas.RAM)
    return realm, rec


def test_base_inside_a_block_to_change_is_base_align(any_host: Host) -> None:
    realm, rec = block_request(any_host, Ripas.EMPTY)
    regs = any_host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x3000)
    any_host.fails(regs, RTT, "base_align", 2)


def test_base_inside_a_block_that_already_has_the_ripas_progresses_in_spec_mode(host: Host) -> None:
    realm, rec = block_request(host, Ripas.RAM)
    assert host.ok("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x3000)[1] == 0x3000


def test_base_inside_a_block_that_already_has_the_ripas_is_base_align_in_tf_rmm_mode(tf_host: Host) -> None:
    # rmm-abi.md §12 #9
    realm, rec = block_request(tf_host, Ripas.RAM)
    regs = tf_host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x1000, top=0x3000)
    tf_host.fails(regs, RTT, "base_align", 2)


def test_block_crossing_top_is_no_progress(any_host: Host) -> None:
    host = any_host
    realm = host.realm()
    host.rtts(realm, 0x0, 2)
    rec = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    request(host, rec, 0x0, 0x1000, Ripas.RAM)
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x0, top=0x1000), RTT, "no_progress", 2)


def test_running_rec_is_rec_state(host: Host) -> None:
    realm, rec = active_realm(host)
    request(host, rec, 0x0, 0x1000, Ripas.EMPTY)
    # A REC is RUNNING only inside its own REC_ENTER, i.e. as seen from another CPU.
    host.rmm.rec_at(rec).state = RecState.RUNNING
    host.fails(host.call("rtt_set_ripas", rd=realm.rd, rec=rec, base=0x0, top=0x1000), REC, "rec_state")
