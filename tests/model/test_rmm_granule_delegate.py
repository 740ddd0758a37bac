"""RMI_GRANULE_DELEGATE on the model (RMM 1.0 B3.3.10): every failure condition, success and scrubbing."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GranuleState, RmiStatus


def test_delegate_moves_granule_to_realm_pas_and_delegated(host: Host) -> None:
    addr = host.ns()
    host.ok("granule_delegate", addr=addr)
    assert host.rmm.granule_state(addr) is GranuleState.DELEGATED
    assert host.machine.gpt.pas_of(addr) is Pas.REALM


def test_delegate_scrubs_the_host_contents(host: Host) -> None:
    addr = host.ns()
    host.write(addr, b"\xa5" * 64)
    host.ok("granule_delegate", addr=addr)
    assert host.machine.memory.is_zero(addr)


def test_delegate_of_unaligned_address_is_gran_align(host: Host) -> None:
    host.fails(host.call("granule_delegate", addr=host.ns() + 0x800), RmiStatus.ERROR_INPUT, "gran_align")


def test_delegate_outside_dram_is_gran_bound(host: Host) -> None:
    for addr in (host.names["non_memory"], host.names["pa_limit"], 0x0800_0000):
        host.fails(host.call("granule_delegate", addr=addr), RmiStatus.ERROR_INPUT, "gran_bound")


def test_delegate_of_delegated_granule_is_gran_state(host: Host) -> None:
    addr = host.delegated()
    host.fails(host.call("granule_delegate", addr=addr), RmiStatus.ERROR_INPUT, "gran_state")


def test_delegate_of_secure_or_root_granule_is_gran_gpt(host: Host) -> None:
    for name in ("secure_granule", "root_granule", "realm_granule"):
        host.fails(host.call("granule_delegate", addr=host.names[name]), RmiStatus.ERROR_INPUT, "gran_gpt")


def test_gran_align_is_checked_before_gran_bound(host: Host) -> None:
    regs = host.call("granule_delegate", addr=host.names["non_memory"] + 1)
    host.fails(regs, RmiStatus.ERROR_INPUT, "gran_align")
