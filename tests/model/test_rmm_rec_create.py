"""RMI_REC_CREATE on the model (RMM 1.0 B3.3.12): conditions in recommended order, REC index, RIM."""

from __future__ import annotations

import pytest
from rmm_host import Host

from cca_hil.arch import measurement
from cca_hil.arch.rmi import GranuleState, RecState, RmiStatus
from cca_hil.arch.structs import RecParams

INPUT = RmiStatus.ERROR_INPUT
REALM = RmiStatus.ERROR_REALM


def aux_params(host: Host, aux: list[int], *, mpidr: int = 0, num_aux: int = 16) -> int:
    """RmiRecParams with an explicit aux list."""
    return host.struct(RecParams(flags=1, mpidr=mpidr, num_aux=num_aux, aux=tuple(aux)))


def test_rec_create_makes_rec_and_aux_granules_and_counts_the_rec(host: Host) -> None:
    realm = host.realm()
    rec_addr = host.delegated()
    host.ok("rec_create", rd=realm.rd, rec=rec_addr, params=host.rec_params(pc=0x8000))
    rec = host.rmm.rec_at(rec_addr)
    assert host.rmm.granule_state(rec_addr) is GranuleState.REC
    assert all(host.rmm.granule_state(a) is GranuleState.REC_AUX for a in rec.aux)
    assert len(rec.aux) == 16
    assert (rec.pc, rec.runnable, rec.state, rec.psci_pending) == (0x8000, True, RecState.READY, None)
    state = host.rmm.realm_at(realm.rd)
    assert (state.rec_index, state.num_recs) == (1, 1)


def test_runnable_rec_extends_the_rim_and_non_runnable_does_not(host: Host) -> None:
    realm = host.realm()
    state = host.rmm.realm_at(realm.rd)
    before = state.rim
    host.rec(realm, mpidr=0, pc=0x1000)
    image = measurement.rec_params_image(flags=1, pc=0x1000, gprs=[0] * 8)
    assert state.rim == measurement.rim_extend_rec(state.hash_algo, before, rec_image=image)
    after_first = state.rim
    host.rec(realm, mpidr=1, runnable=False)
    assert state.rim == after_first


def test_params_pointer_conditions(host: Host) -> None:
    realm = host.realm()
    rec = host.delegated()
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=host.rec_params() + 8), INPUT, "params_align"
    )
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=host.names["non_memory"]), INPUT, "params_bound"
    )
    host.fails(host.call("rec_create", rd=realm.rd, rec=rec, params=host.delegated()), INPUT, "params_pas")


def test_more_than_16_aux_is_num_aux_before_anything_else(host: Host) -> None:
    realm = host.realm()
    regs = host.call("rec_create", rd=realm.rd + 1, rec=host.ns(), params=host.rec_params(num_aux=17))
    host.fails(regs, INPUT, "num_aux")
    assert host.rmm.last_condition == "num_aux"


def test_aux_list_conditions_in_order(host: Host) -> None:
    realm = host.realm()
    rec = host.delegated()
    aux = [host.delegated() for _ in range(16)]
    bad = list(aux)
    bad[3] += 0x10
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=aux_params(host, bad)), INPUT, "aux_align"
    )
    bad = list(aux)
    bad[15] = host.ns()
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=aux_params(host, bad)), INPUT, "aux_state"
    )
    bad = list(aux)
    bad[5] = realm.rd
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=aux_params(host, bad)), INPUT, "aux_state"
    )
    bad = list(aux)
    bad[7] = bad[2]
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=aux_params(host, bad)), INPUT, "aux_alias"
    )
    bad = list(aux)
    bad[0] = rec
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=rec, params=aux_params(host, bad)), INPUT, "aux_alias"
    )
    assert all(host.rmm.granule_state(a) is GranuleState.DELEGATED for a in aux)


def test_rec_granule_conditions(host: Host) -> None:
    realm = host.realm()
    params = host.rec_params()
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=host.delegated() + 1, params=params), INPUT, "rec_align"
    )
    host.fails(
        host.call("rec_create", rd=realm.rd, rec=host.names["pa_limit"], params=params), INPUT, "rec_bound"
    )
    host.fails(host.call("rec_create", rd=realm.rd, rec=host.ns(), params=params), INPUT, "rec_state")
    host.fails(host.call("rec_create", rd=realm.rd, rec=realm.rd, params=params), INPUT, "rec_state")


def test_rd_conditions_including_rd_equal_to_rec(host: Host) -> None:
    realm = host.realm()
    params = host.rec_params()
    rec = host.delegated()
    host.fails(host.call("rec_create", rd=realm.rd + 2, rec=rec, params=params), INPUT, "rd_align")
    host.fails(
        host.call("rec_create", rd=host.names["non_memory"], rec=rec, params=params), INPUT, "rd_bound"
    )
    host.fails(host.call("rec_create", rd=rec, rec=rec, params=params), INPUT, "rd_state")


def test_realm_at_the_rec_limit_is_num_recs() -> None:
    host = Host(max_recs_order=1)
    realm = host.realm()
    host.rec(realm, mpidr=0)
    regs = host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=host.rec_params(mpidr=1))
    host.fails(regs, REALM, "num_recs")


def test_rec_of_active_realm_is_realm_state(host: Host) -> None:
    realm = host.realm()
    host.ok("realm_activate", rd=realm.rd)
    regs = host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=host.rec_params())
    host.fails(regs, REALM, "realm_state")


def test_bad_aux_list_is_reported_before_realm_state(any_host: Host) -> None:
    # rmm-abi.md §12 #2: both modes follow TF-RMM's (allowed) order.
    host = any_host
    realm = host.realm()
    host.ok("realm_activate", rd=realm.rd)
    aux = [host.delegated() for _ in range(16)]
    aux[4] = host.ns()
    regs = host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=aux_params(host, aux))
    host.fails(regs, INPUT, "aux_state")


@pytest.mark.parametrize("mpidr", [1, 0x10, 0x100, 0xF0, 1 << 32])
def test_first_rec_with_index_other_than_0_is_mpidr_index(host: Host, mpidr: int) -> None:
    realm = host.realm()
    regs = host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=host.rec_params(mpidr=mpidr))
    host.fails(regs, INPUT, "mpidr_index")


def test_rec_index_is_not_reused_after_rec_destroy(host: Host) -> None:
    realm = host.realm()
    first = host.rec(realm, mpidr=0)
    host.ok("rec_destroy", rec=first)
    regs = host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=host.rec_params(mpidr=0))
    host.fails(regs, INPUT, "mpidr_index")
    host.rec(realm, mpidr=1)


def test_aff1_follows_aff0_15_in_index_order(host: Host) -> None:
    realm = host.realm()
    for index in range(16):
        host.rec(realm, mpidr=index)
    host.rec(realm, mpidr=0x100)


@pytest.mark.parametrize("num_aux", [0, 15])
def test_num_aux_other_than_aux_count_is_num_aux(host: Host, num_aux: int) -> None:
    realm = host.realm()
    regs = host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=host.rec_params(num_aux=num_aux))
    host.fails(regs, INPUT, "num_aux")


def test_num_aux_with_high_bits_is_num_aux_in_spec_mode(host: Host) -> None:
    realm = host.realm()
    aux = [host.delegated() for _ in range(16)]
    params = aux_params(host, aux, num_aux=0xFFFF_FFFF_0000_0010)
    host.fails(host.call("rec_create", rd=realm.rd, rec=host.delegated(), params=params), INPUT, "num_aux")


def test_num_aux_is_read_as_32_bits_in_tf_rmm_mode(tf_host: Host) -> None:
    realm = tf_host.realm()
    aux = [tf_host.delegated() for _ in range(16)]
    params = aux_params(tf_host, aux, num_aux=0xFFFF_FFFF_0000_0010)
    tf_host.ok("rec_create", rd=realm.rd, rec=tf_host.delegated(), params=params)
