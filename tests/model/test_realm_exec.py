"""Realm execution (RMM 1.0 A4.3, rmm-abi.md §6): the scripted payload, REC exits, completions on re-entry."""

from __future__ import annotations

import pytest
from realm_host import Recorder, RunningRealm, rsi, running_realm
from rmm_host import Host

from cca_hil.arch.rmi import GRANULE_SIZE, RecExitReason, RmiStatus
from cca_hil.arch.structs import RecEnter, RecEnterFlags
from cca_hil.model.realm_exec import (
    Action,
    Hvc,
    InstructionFetch,
    Interrupt,
    MemoryAccess,
    SysregRead,
    SystemError,
    WaitFor,
    default_host_call_ipa,
    first_ram_page,
)
from cca_hil.profiles import build_target, load_profile
from cca_hil.sequences import Runner, load_sequence_text

MMIO = 0x80_0000_1000
"""An Unprotected IPA of an s2sz-40 realm with nothing mapped: accesses are emulatable."""


@pytest.fixture
def rr(any_host: Host) -> RunningRealm:
    realm = running_realm(any_host)
    # Unprotected RTTs down to level 3, so that MMIO faults are level-3 translation faults.
    any_host.rtts(realm.realm, MMIO, 3)
    return realm


# -- the script ----------------------------------------------------------------------------------------


def test_actions_run_in_order_until_one_exits_and_the_rest_are_not_started(rr: RunningRealm) -> None:
    _, exit_, (first, host_call, after) = rr.enter(
        rsi("version", req=0x10000), rsi("host_call", addr=0x1000), rsi("features")
    )
    assert exit_.exit_reason == RecExitReason.HOST_CALL
    assert first.registers is not None and first.registers[0] == 0
    assert host_call.started and host_call.registers is None
    assert not after.started


def test_with_nothing_to_do_the_rec_exits_irq_and_results_wait_for_the_next_run(rr: RunningRealm) -> None:
    _, _, (host_call,) = rr.enter(rsi("host_call", addr=0x1000))
    _, exit_, _ = rr.enter(gprs=[0xAB])
    assert exit_.exit_reason == RecExitReason.IRQ
    assert host_call.seen() is None
    rr.enter(rsi("features"))
    seen = host_call.seen()
    assert seen is not None and seen[:2] == (0, 0xAB)


def test_a_completed_rsi_call_advances_the_pc_and_keeps_x4_and_up(rr: RunningRealm) -> None:
    rec = rr.rec()
    rec.gprs[4:8] = [4, 5, 6, 7]
    pc = rec.pc
    rr.enter(rsi("version", req=0x10000))
    assert rec.pc == pc + 4
    assert rec.gprs[4:8] == [4, 5, 6, 7]


def test_default_host_call_structure_lives_at_the_end_of_the_first_ram_page(rr: RunningRealm) -> None:
    realm = rr.host.rmm.realm_at(rr.realm.rd)
    assert first_ram_page(realm) == 0
    assert default_host_call_ipa(realm) == GRANULE_SIZE - 0x100


# -- memory accesses --------------------------------------------------------------------------------------


def test_emulated_mmio_load_lands_masked_in_the_register_and_the_access_completes(rr: RunningRealm) -> None:
    load = Action(MemoryAccess(ipa=MMIO + 0x10, write=False, size=4, register=3), Recorder())
    _, exit_, _ = rr.enter(load)
    assert (exit_.exit_reason, exit_.esr, exit_.far, exit_.hpfar) == (
        RecExitReason.SYNC,
        0x91808007,
        0x010,
        (MMIO >> 12) << 4,
    )
    assert isinstance(load.observer, Recorder) and not load.observer.started
    rr.enter(load, flags=RecEnterFlags.EMUL_MMIO, gprs=[0x8765_4321_1234_5678])
    assert load.observer.registers == (0x1234_5678,)
    assert rr.rec().gprs[3] == 0x1234_5678


def test_mmio_store_reports_its_data_masked_to_the_access_size(rr: RunningRealm) -> None:
    _, exit_, _ = rr.enter(
        MemoryAccess(ipa=MMIO, write=True, size=2, register=4, value=0x1122_3344_5566_7788)
    )
    assert (exit_.esr, exit_.gprs[0]) == (0x91408047, 0x7788)


def test_sign_extended_mmio_load_is_extended_by_the_rmm_not_reported_to_the_host(rr: RunningRealm) -> None:
    load = Action(MemoryAccess(ipa=MMIO, write=False, size=1, register=5, sign_extend=True), Recorder())
    _, exit_, _ = rr.enter(load)
    assert not exit_.esr & (1 << 21)
    rr.enter(load, flags=RecEnterFlags.EMUL_MMIO, gprs=[0x80])
    assert rr.rec().gprs[5] == (1 << 64) - 0x80


def test_mmio_answered_with_an_sea_is_over_for_the_realm(rr: RunningRealm) -> None:
    load = Action(MemoryAccess(ipa=MMIO, write=False, register=6), Recorder())
    rr.enter(load)
    rr.enter(load, flags=RecEnterFlags.INJECT_SEA)
    rec = rr.rec()
    assert isinstance(load.observer, Recorder) and load.observer.registers is not None
    assert rec.injected is not None and rec.injected.esr_el1 & 0x3F == 0x10
    assert rec.pc == 0x200


def test_mmio_neither_emulated_nor_answered_is_retried(rr: RunningRealm) -> None:
    load = Action(MemoryAccess(ipa=MMIO, write=False), Recorder())
    rr.enter(load)
    _, exit_, _ = rr.enter(load)
    assert exit_.exit_reason == RecExitReason.SYNC
    assert isinstance(load.observer, Recorder) and not load.observer.started


def test_loads_and_stores_to_realm_ram_do_not_exit(rr: RunningRealm) -> None:
    _, exit_, _ = rr.enter(
        MemoryAccess(ipa=0x2008, write=True, size=8, value=0xFEED_F00D),
        MemoryAccess(ipa=0x2008, write=False, size=4, register=9),
    )
    assert exit_.exit_reason == RecExitReason.IRQ
    assert rr.rec().gprs[9] == 0xFEED_F00D
    assert rr.read(0x2008, 8) == (0xFEED_F00D).to_bytes(8, "little")


def test_an_unprotected_page_mapped_to_host_memory_reads_the_hosts_bytes(rr: RunningRealm) -> None:
    host = rr.host
    ns = host.ns()
    host.write(ns, (0x1234).to_bytes(8, "little"))
    host.rtts(rr.realm, MMIO, 3)
    host.ok("rtt_map_unprotected", rd=rr.realm.rd, ipa=MMIO, level=3, desc=ns)
    _, exit_, _ = rr.enter(MemoryAccess(ipa=MMIO, write=False, register=2))
    assert exit_.exit_reason == RecExitReason.IRQ
    assert rr.rec().gprs[2] == 0x1234


@pytest.mark.parametrize("ipa", [0x10000, 1 << 40], ids=["ripas-empty", "beyond-ipa-space"])
def test_access_to_empty_or_out_of_range_ipa_injects_an_sea_without_exit(rr: RunningRealm, ipa: int) -> None:
    _, exit_, _ = rr.enter(MemoryAccess(ipa=ipa, write=False, register=7))
    assert exit_.exit_reason == RecExitReason.IRQ
    assert rr.rec().injected is not None
    assert rr.rec().pc == 0x200


def test_access_to_ram_without_data_exits_with_a_non_emulatable_abort(rr: RunningRealm) -> None:
    _, exit_, _ = rr.enter(MemoryAccess(ipa=0x5000, write=False, register=7))
    assert (exit_.exit_reason, exit_.esr, exit_.far, exit_.hpfar) == (RecExitReason.SYNC, 0x90000007, 0, 0x50)
    run = rr.runs[rr.recs[0]]
    rr.host.write(run, RecEnter(flags=RecEnterFlags.EMUL_MMIO).pack())
    regs = rr.host.call("rec_enter", rec=rr.recs[0], run=run)
    rr.host.fails(regs, RmiStatus.ERROR_REC, "rec_mmio")


def test_instruction_fetch_from_ram_without_data_exits_and_from_unprotected_ipa_injects(
    rr: RunningRealm,
) -> None:
    _, exit_, _ = rr.enter(InstructionFetch(0x6000))
    assert (exit_.exit_reason, exit_.esr, exit_.hpfar) == (RecExitReason.SYNC, 0x80000007, 0x60)
    _, exit_, _ = rr.enter(InstructionFetch(MMIO))
    assert exit_.exit_reason == RecExitReason.IRQ
    assert rr.rec().injected is not None


# -- traps and interrupts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "flag", "esr"),
    [(False, RecEnterFlags.TRAP_WFI, 0x04000000), (True, RecEnterFlags.TRAP_WFE, 0x04000001)],
    ids=["wfi", "wfe"],
)
def test_wfx_exits_only_when_the_host_traps_it(rr: RunningRealm, event: bool, flag: int, esr: int) -> None:
    _, exit_, _ = rr.enter(WaitFor(event=event))
    assert exit_.exit_reason == RecExitReason.IRQ
    pc = rr.rec().pc
    _, exit_, (wait,) = rr.enter(WaitFor(event=event), flags=flag)
    assert (exit_.exit_reason, exit_.esr) == (RecExitReason.SYNC, esr)
    assert rr.rec().pc == pc + 4
    assert wait.started


def test_hvc_is_undefined_in_a_realm(rr: RunningRealm) -> None:
    _, exit_, (hvc,) = rr.enter(Hvc(0x12))
    assert exit_.exit_reason == RecExitReason.IRQ
    injected = rr.rec().injected
    assert injected is not None and (injected.vector, injected.esr_el1) == (0x200, 0x02000000)
    assert hvc.registers == ()


def test_id_register_reads_are_answered_by_the_rmm(rr: RunningRealm) -> None:
    rr.rec().gprs[13] = 0x5555
    _, exit_, _ = rr.enter(SysregRead("ID_AA64PFR0_EL1", 13))
    assert exit_.exit_reason == RecExitReason.IRQ
    assert rr.rec().gprs[13] == 0


@pytest.mark.parametrize(("fiq", "reason"), [(False, RecExitReason.IRQ), (True, RecExitReason.FIQ)])
def test_interrupts_exit_with_their_reason_and_no_syndrome(rr: RunningRealm, fiq: bool, reason: int) -> None:
    _, exit_, (interrupt, after) = rr.enter(Interrupt(fiq=fiq), rsi("features"))
    assert (exit_.exit_reason, exit_.esr) == (reason, 0)
    assert interrupt.started and not after.started


def test_serror_reports_only_its_iss(rr: RunningRealm) -> None:
    _, exit_, _ = rr.enter(SystemError(0xBE000C11))
    assert (exit_.exit_reason, exit_.esr) == (RecExitReason.SERROR, 0xC11)


# -- through the sequence runner ---------------------------------------------------------------------------

SEQUENCE = """
sequence: realm-exec
requires: [realm_exec]
granules: [rd, rtt0, rtt1, rtt2, rtt3, data0, rec0]
steps:
  - {rmi: granule_delegate, args: {addr: rd}}
  - {rmi: granule_delegate, args: {addr: rtt0}}
  - {rmi: realm_create, args: {rd: rd, params: {s2sz: 40, rtt_base: rtt0, rtt_level_start: 0}}}
  - {rmi: granule_delegate, args: {addr: rtt1}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt1, ipa: 0, level: 1}}
  - {rmi: granule_delegate, args: {addr: rtt2}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt2, ipa: 0, level: 2}}
  - {rmi: granule_delegate, args: {addr: rtt3}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt3, ipa: 0, level: 3}}
  - {rmi: rtt_init_ripas, args: {rd: rd, base: 0, top: 0x8000}}
  - {rmi: granule_delegate, args: {addr: data0}}
  - {rmi: data_create, args: {rd: rd, data: data0, ipa: 0, src: {fill: 0}, flags: measure}}
  - {rmi: granule_delegate, args: {addr: rec0}}
  - {rmi: rec_create, args: {rd: rd, rec: rec0, params: {flags: runnable}}}
  - {rmi: realm_activate, args: {rd: rd}}
  - name: first_entry
    rmi: rec_enter
    args: {rec: rec0, run: {}}
    realm:
      - rsi: version
        args: {req: 0x10000}
        expect: {outputs: {lower: 0x10000, higher: 0x10000}}
      - mmio: {op: read, ipa: 0x8000000040, size: 2}
        expect: {outputs: {value: 0xbeef}}
      - rsi: ipa_state_set
        args: {base: 0x8000, top: 0xa000, ripas: ram, flags: 0}
        expect: {outputs: {new_base: 0xa000, response: accept}}
    expect: {exit: {exit_reason: sync, far: 0x40}}
  - name: emulate
    rmi: rec_enter
    args: {rec: rec0, run: {flags: {emul_mmio: 1}, gprs: {0: 0xbeef}}}
    expect: {exit: {exit_reason: ripas_change, ripas_base: 0x8000, ripas_top: 0xa000, ripas_value: ram}}
  - {rmi: rtt_set_ripas, args: {rd: rd, rec: rec0, base: 0x8000, top: 0xa000}}
  - name: resume
    rmi: rec_enter
    args: {rec: rec0, run: {}}
    realm:
      - rsi: host_call
        args: {imm: 0xfeed, gprs: {0: 7}}
        expect: {outputs: {gprs: 0x99}}
    expect: {exit: {exit_reason: host_call, imm: 0xfeed, gprs: {0: 7}}}
  - name: answer
    rmi: rec_enter
    args: {rec: rec0, run: {gprs: {0: 0x99}}}
    realm:
      - psci: version
        expect: {outputs: {result: 0x10001}}
    expect: {exit: {exit_reason: irq}}
  - name: shorthand
    rsi: measurement_read
    rec: rec0
    args: {index: 5}
    expect: error_input
"""


def test_a_sequence_drives_the_realm_through_exits_and_every_expectation_holds() -> None:
    with build_target(load_profile("model")) as target:
        result = Runner(target).run(load_sequence_text(SEQUENCE))
    problems = [(s.name, s.message) for s in result.steps if s.outcome.value != "passed"]
    assert not problems and not result.error
    realm_rows = [s.name for s in result.steps if s.op == "realm"]
    assert len(realm_rows) == 5
