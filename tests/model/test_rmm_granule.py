"""RMI_GRANULE_DELEGATE / UNDELEGATE on the model (RMM 1.0 B3.3.10, B3.3.11)."""

from __future__ import annotations

from cca_hil.arch.rmi import GranuleState, RmiStatus
from cca_hil.model.machine import Machine

DELEGATE = 0xC400_0151
UNDELEGATE = 0xC400_0152
POOL = 0x9000_0000


def test_delegate_then_undelegate_round_trips_state_and_pas() -> None:
    machine = Machine()
    assert machine.smc(DELEGATE, POOL)[0] == RmiStatus.SUCCESS
    assert machine.rmm.granule_state(POOL) is GranuleState.DELEGATED
    assert not machine.ns_access(POOL, "read").ok
    assert machine.smc(UNDELEGATE, POOL)[0] == RmiStatus.SUCCESS
    assert machine.rmm.granule_state(POOL) is GranuleState.UNDELEGATED
    assert machine.ns_access(POOL, "read").ok


def test_delegate_twice_is_gran_state() -> None:
    machine = Machine()
    machine.smc(DELEGATE, POOL)
    assert machine.smc(DELEGATE, POOL)[0] == RmiStatus.ERROR_INPUT
    assert machine.rmm.last_condition == "gran_state"


def test_delegate_of_secure_granule_is_gran_gpt() -> None:
    machine = Machine()
    secure = machine.config.platform_names()["secure_granule"]
    assert machine.smc(DELEGATE, secure)[0] == RmiStatus.ERROR_INPUT
    assert machine.rmm.last_condition == "gran_gpt"


def test_delegate_unaligned_is_gran_align_before_gran_bound() -> None:
    machine = Machine()
    assert machine.smc(DELEGATE, machine.config.non_memory + 8)[0] == RmiStatus.ERROR_INPUT
    assert machine.rmm.last_condition == "gran_align"
