"""RMI_GRANULE_UNDELEGATE on the model (RMM 1.0 B3.3.11): every failure condition, success and scrubbing."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GranuleState, RmiStatus


def test_undelegate_returns_granule_to_ns(host: Host) -> None:
    addr = host.delegated()
    host.ok("granule_undelegate", addr=addr)
    assert host.rmm.granule_state(addr) is GranuleState.UNDELEGATED
    assert host.machine.gpt.pas_of(addr) is Pas.NONSECURE
    assert host.machine.ns_read(addr, 8) == bytes(8)


def test_undelegate_of_unaligned_address_is_gran_align(host: Host) -> None:
    host.fails(
        host.call("granule_undelegate", addr=host.delegated() + 8), RmiStatus.ERROR_INPUT, "gran_align"
    )


def test_undelegate_outside_dram_is_gran_bound(host: Host) -> None:
    regs = host.call("granule_undelegate", addr=host.names["non_memory"])
    host.fails(regs, RmiStatus.ERROR_INPUT, "gran_bound")


def test_undelegate_of_undelegated_granule_is_gran_state(host: Host) -> None:
    host.fails(host.call("granule_undelegate", addr=host.ns()), RmiStatus.ERROR_INPUT, "gran_state")


def test_undelegate_of_rd_rtt_rec_and_data_is_gran_state(host: Host) -> None:
    realm = host.realm()
    rec = host.rec(realm)
    data = host.data(realm, 0x1000)
    for addr in (realm.rd, realm.rtt_base, rec, data):
        host.fails(host.call("granule_undelegate", addr=addr), RmiStatus.ERROR_INPUT, "gran_state")


def test_undelegate_of_rec_aux_granule_is_gran_state(host: Host) -> None:
    realm = host.realm()
    rec = host.rec(realm)
    aux = host.rmm.rec_at(rec).aux[3]
    assert host.rmm.granule_state(aux) is GranuleState.REC_AUX
    host.fails(host.call("granule_undelegate", addr=aux), RmiStatus.ERROR_INPUT, "gran_state")
