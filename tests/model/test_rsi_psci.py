"""PSCI from a realm (rmm-abi.md §8): what the RMM answers itself, what it forwards, and RMI_PSCI_COMPLETE."""

from __future__ import annotations

import pytest
from realm_host import RunningRealm, running_realm
from rmm_host import Host

from cca_hil.arch.rmi import RealmState, RecExitReason, RmiStatus
from cca_hil.arch.rsi_1_0 import PSCI_1_1, PsciStatus
from cca_hil.model.realm_exec import SmcCall

VERSION, FEATURES, CPU_ON, CPU_OFF, AFFINITY_INFO = 0x84000000, 0x8400000A, 0xC4000003, 0x84000002, 0xC4000004


@pytest.fixture
def rr(any_host: Host) -> RunningRealm:
    return running_realm(any_host, recs=3)


def psci(rr: RunningRealm, fid: int, *args: int) -> tuple[int, ...]:
    """A PSCI call the RMM answers without an exit; X0..X3 as the realm sees them."""
    _, exit_, (recorder,) = rr.enter(SmcCall(fid, args))
    assert exit_.exit_reason == RecExitReason.IRQ
    assert recorder.registers is not None
    return recorder.registers


def test_psci_version_is_1_1(rr: RunningRealm) -> None:
    assert psci(rr, VERSION) == (0x10001, 0, 0, 0)


@pytest.mark.parametrize("function", [f for f in PSCI_1_1 if f.name != "version"], ids=lambda f: f.name)
def test_psci_features_reports_every_implemented_function(rr: RunningRealm, function: object) -> None:
    for fid in function.fids:  # type: ignore[attr-defined]
        assert psci(rr, FEATURES, fid)[0] == PsciStatus.SUCCESS


@pytest.mark.parametrize("queried", [VERSION, 0x84000005, 0xC4000190, 0x80000001])
def test_psci_features_of_other_functions_is_not_supported(rr: RunningRealm, queried: int) -> None:
    # TF-RMM's list has no PSCI_VERSION (rmm-abi.md §8).
    assert psci(rr, FEATURES, queried)[0] == PsciStatus.NOT_SUPPORTED.x0


@pytest.mark.parametrize("fid", [0x84000005, 0xC4000007, 0x8400001F])
def test_unimplemented_psci_functions_are_not_supported_without_exit(rr: RunningRealm, fid: int) -> None:
    assert psci(rr, fid)[0] == PsciStatus.NOT_SUPPORTED.x0


def test_smccc_version_is_1_2_and_other_smcs_return_minus_1(rr: RunningRealm) -> None:
    assert psci(rr, 0x80000000)[0] == 0x10002
    assert psci(rr, 0xC2000001)[0] == (1 << 64) - 1


@pytest.mark.parametrize(
    ("target", "entry", "status"),
    [
        (1, 1 << 39, PsciStatus.INVALID_ADDRESS),
        (7, 0x1000, PsciStatus.INVALID_PARAMETERS),
        (0x1_0000_0000, 0x1000, PsciStatus.INVALID_PARAMETERS),
        (0, 0x1000, PsciStatus.ALREADY_ON),
    ],
    ids=["entry-unprotected", "no-such-rec", "aff3-no-such-rec", "self"],
)
def test_cpu_on_failures_the_rmm_answers_itself(
    rr: RunningRealm, target: int, entry: int, status: PsciStatus
) -> None:
    assert psci(rr, CPU_ON, target, entry, 0x55)[0] == status.x0


def test_cpu_on_round_trip_starts_the_target_at_its_entry_with_the_context(rr: RunningRealm) -> None:
    _, exit_, (recorder,) = rr.enter(SmcCall(CPU_ON, (1, 0x2000, 0x77)))
    assert (exit_.exit_reason, exit_.gprs[0], exit_.gprs[1]) == (RecExitReason.PSCI, CPU_ON, 1)
    regs = rr.host.call("rec_enter", rec=rr.recs[0], run=rr.runs[rr.recs[0]])
    rr.host.fails(regs, RmiStatus.ERROR_REC, "rec_psci")
    rr.host.ok("psci_complete", calling_rec=rr.recs[0], target_rec=rr.recs[1], status=0)
    rr.enter(SmcCall(VERSION))
    assert recorder.registers == (PsciStatus.SUCCESS, 0, 0, 0)
    target = rr.rec(1)
    assert (target.runnable, target.pc, target.gprs[0]) == (True, 0x2000, 0x77)
    _, exit_, (asked,) = rr.enter(SmcCall(AFFINITY_INFO, (1, 0)))
    rr.host.ok("psci_complete", calling_rec=rr.recs[0], target_rec=rr.recs[1], status=0)
    rr.enter(SmcCall(VERSION))
    assert asked.registers == (0, 0, 0, 0)  # ON


def test_affinity_info_failures_and_self(rr: RunningRealm) -> None:
    assert psci(rr, AFFINITY_INFO, 1, 1)[0] == PsciStatus.INVALID_PARAMETERS.x0
    assert psci(rr, AFFINITY_INFO, 9, 0)[0] == PsciStatus.INVALID_PARAMETERS.x0
    assert psci(rr, AFFINITY_INFO, 0, 0)[0] == PsciStatus.SUCCESS


def test_affinity_info_of_an_off_rec_is_answered_off_after_psci_complete(rr: RunningRealm) -> None:
    _, exit_, (recorder,) = rr.enter(SmcCall(AFFINITY_INFO, (2, 0)))
    assert (exit_.exit_reason, exit_.gprs[1]) == (RecExitReason.PSCI, 2)
    rr.host.ok("psci_complete", calling_rec=rr.recs[0], target_rec=rr.recs[2], status=0)
    rr.enter(SmcCall(VERSION))
    assert recorder.registers == (PsciStatus.OFF, 0, 0, 0)


def test_cpu_off_makes_the_rec_not_runnable_until_another_turns_it_on(rr: RunningRealm) -> None:
    rr.enter(SmcCall(CPU_ON, (1, 0x1000, 0)))
    rr.host.ok("psci_complete", calling_rec=rr.recs[0], target_rec=rr.recs[1], status=0)
    _, exit_, (off,) = rr.enter(SmcCall(CPU_OFF), rec=1)
    assert (exit_.exit_reason, exit_.gprs[0]) == (RecExitReason.PSCI, CPU_OFF)
    regs = rr.host.call("rec_enter", rec=rr.recs[1], run=rr.runs[rr.recs[1]])
    rr.host.fails(regs, RmiStatus.ERROR_REC, "rec_runnable")
    rr.enter(SmcCall(CPU_ON, (1, 0x3000, 0x99)))
    rr.host.ok("psci_complete", calling_rec=rr.recs[0], target_rec=rr.recs[1], status=0)
    rr.enter(SmcCall(VERSION), rec=1)
    # The REC started afresh at the new entry point: its CPU_OFF never returned.
    assert off.started and off.registers is None
    assert rr.rec(1).gprs[0] == 0x10001


@pytest.mark.parametrize("fid", [0x84000008, 0x84000009], ids=["system_off", "system_reset"])
def test_system_off_and_reset_end_the_realm(rr: RunningRealm, fid: int) -> None:
    _, exit_, _ = rr.enter(SmcCall(fid))
    assert (exit_.exit_reason, exit_.gprs[0]) == (RecExitReason.PSCI, fid)
    assert rr.host.rmm.realm_at(rr.realm.rd).state is RealmState.SYSTEM_OFF
    regs = rr.host.call("rec_enter", rec=rr.recs[0], run=rr.runs[rr.recs[0]])
    rr.host.fails(regs, RmiStatus.ERROR_REALM, "system_off", index=1)


@pytest.mark.parametrize("fid", [0xC4000001, 0x84000001])
def test_cpu_suspend_exits_and_returns_success(rr: RunningRealm, fid: int) -> None:
    _, exit_, (recorder,) = rr.enter(SmcCall(fid, (0, 0x4000, 7)))
    assert (exit_.exit_reason, exit_.gprs[:4]) == (RecExitReason.PSCI, (fid, 0, 0, 0))
    rr.enter(SmcCall(VERSION))
    assert recorder.registers is not None and recorder.registers[0] == PsciStatus.SUCCESS


@pytest.mark.parametrize(("quirks", "exits"), [("spec", False), ("tf-rmm", True)])
def test_cpu_on_of_a_destroyed_rec_is_invalid_by_spec_and_forwarded_by_tf_rmm(
    quirks: str, exits: bool
) -> None:
    rr = running_realm(Host(quirks), recs=3)  # type: ignore[arg-type]
    rr.host.ok("rec_destroy", rec=rr.recs[2])
    _, exit_, (recorder,) = rr.enter(SmcCall(CPU_ON, (2, 0x1000, 0)))
    # rmm-abi.md §12 #22.
    assert (exit_.exit_reason == RecExitReason.PSCI) is exits
    if not exits:
        assert recorder.registers is not None
        assert recorder.registers[0] == PsciStatus.INVALID_PARAMETERS.x0
