"""RMI_REC_AUX_COUNT on the model (RMM 1.0 B3.3.14)."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.rmi import RmiStatus


def test_aux_count_is_the_configured_constant(host: Host) -> None:
    assert host.ok("rec_aux_count", rd=host.realm().rd)[1] == 16


def test_aux_count_follows_configuration() -> None:
    host = Host(aux_count=4)
    assert host.ok("rec_aux_count", rd=host.realm().rd)[1] == 4


def test_aux_count_rd_checks_are_rd_align_rd_bound_rd_state(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rec_aux_count", rd=realm.rd + 4), RmiStatus.ERROR_INPUT, "rd_align")
    host.fails(host.call("rec_aux_count", rd=host.names["non_memory"]), RmiStatus.ERROR_INPUT, "rd_bound")
    host.fails(host.call("rec_aux_count", rd=realm.rtt_base), RmiStatus.ERROR_INPUT, "rd_state")
