"""RMI_REC_DESTROY on the model (RMM 1.0 B3.3.13)."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.rmi import GranuleState, RecState, RmiStatus

INPUT = RmiStatus.ERROR_INPUT


def test_rec_destroy_returns_rec_and_aux_to_delegated_wiped(host: Host) -> None:
    realm = host.realm()
    rec_addr = host.rec(realm)
    aux = host.rmm.rec_at(rec_addr).aux
    host.ok("rec_destroy", rec=rec_addr)
    for addr in (rec_addr, *aux):
        assert host.rmm.granule_state(addr) is GranuleState.DELEGATED
        assert host.machine.memory.is_zero(addr)
    state = host.rmm.realm_at(realm.rd)
    assert (state.num_recs, state.rec_index) == (0, 1)


def test_rec_conditions_are_rec_align_rec_bound_rec_gran_state(host: Host) -> None:
    realm = host.realm()
    rec = host.rec(realm)
    aux = host.rmm.rec_at(rec).aux[0]
    host.fails(host.call("rec_destroy", rec=rec + 0x100), INPUT, "rec_align")
    host.fails(host.call("rec_destroy", rec=host.names["non_memory"]), INPUT, "rec_bound")
    for addr in (aux, realm.rd, realm.rtt_base, host.delegated(), host.ns()):
        host.fails(host.call("rec_destroy", rec=addr), INPUT, "rec_gran_state")


def test_running_rec_is_rec_state(host: Host) -> None:
    realm = host.realm()
    rec_addr = host.rec(realm)
    rec = host.rmm.rec_at(rec_addr)
    # A REC is RUNNING only inside its own REC_ENTER, i.e. on another CPU in a multi-threaded world.
    rec.state = RecState.RUNNING
    host.fails(host.call("rec_destroy", rec=rec_addr), RmiStatus.ERROR_REC, "rec_state")


def test_rec_destroy_works_in_every_realm_state(host: Host) -> None:
    realm = host.realm()
    first = host.rec(realm, mpidr=0)
    second = host.rec(realm, mpidr=1)
    host.ok("rec_destroy", rec=first)
    host.ok("realm_activate", rd=realm.rd)
    host.ok("rec_destroy", rec=second)
    host.ok("realm_destroy", rd=realm.rd)
