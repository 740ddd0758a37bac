"""RMI_REC_ENTER on the model (RMM 1.0 B3.3.15): every entry check in order, the exit written to RecRun.

Realm execution is not modelled yet: a valid entry exits at once with IRQ, as
RMM 1.0 allows. Pending exits are set up through the ``Rec.exit_*`` entry
points realm execution will call.
"""

from __future__ import annotations

import pytest
from rmm_host import Host, RealmHandle

from cca_hil.arch.rmi import RecExitReason, RecState, RmiStatus
from cca_hil.arch.structs import RecEnter, RecEnterFlags, RecExit, RecRun
from cca_hil.model.realm import EmulatableAbort

INPUT = RmiStatus.ERROR_INPUT
REALM = RmiStatus.ERROR_REALM
REC = RmiStatus.ERROR_REC
LR_PENDING = 1 << 62
DABT_UNPROTECTED_ESR = (0x24 << 26) | (1 << 24) | 0x07


def ready(host: Host) -> tuple[RealmHandle, int]:
    realm = host.realm()
    rec = host.rec(realm, pc=0x1000)
    host.ok("realm_activate", rd=realm.rd)
    return realm, rec


def run_with(host: Host, **enter: object) -> int:
    return host.struct(RecRun(enter=RecEnter(**enter)))  # type: ignore[arg-type]


def exit_of(host: Host, run: int) -> RecExit:
    return RecRun.unpack(host.machine.ns_read(run, 0x1000)).exit


def test_valid_entry_exits_with_irq_and_reports_the_gic_state(host: Host) -> None:
    _, rec = ready(host)
    lrs = (LR_PENDING | 27, LR_PENDING | 8192) + (0,) * 14
    run = run_with(host, gicv3_hcr=(1 << 1) | (1 << 14), gicv3_lrs=lrs)
    host.ok("rec_enter", rec=rec, run=run)
    reported = exit_of(host, run)
    assert reported.exit_reason == RecExitReason.IRQ
    assert (reported.esr, reported.far, reported.hpfar) == (0, 0, 0)
    assert reported.gicv3_hcr == (1 << 1) | (1 << 14)
    assert reported.gicv3_lrs == lrs
    assert host.rmm.rec_at(rec).state is RecState.READY


def test_run_pointer_conditions(host: Host) -> None:
    _, rec = ready(host)
    host.fails(host.call("rec_enter", rec=rec, run=host.ns() + 8), INPUT, "run_align")
    host.fails(host.call("rec_enter", rec=rec, run=host.names["non_memory"]), INPUT, "run_bound")
    for addr in (host.delegated(), host.names["secure_granule"]):
        host.fails(host.call("rec_enter", rec=rec, run=addr), INPUT, "run_pas")


def test_rec_granule_conditions(host: Host) -> None:
    realm, rec = ready(host)
    run = run_with(host)
    host.fails(host.call("rec_enter", rec=rec + 0x10, run=run), INPUT, "rec_align")
    host.fails(host.call("rec_enter", rec=host.names["pa_limit"], run=run), INPUT, "rec_bound")
    host.fails(host.call("rec_enter", rec=realm.rd, run=run), INPUT, "rec_gran_state")
    aux = host.rmm.rec_at(rec).aux[0]
    host.fails(host.call("rec_enter", rec=aux, run=run), INPUT, "rec_gran_state")


def test_run_checks_come_before_rec_checks(host: Host) -> None:
    host.fails(host.call("rec_enter", rec=host.ns() + 1, run=host.ns() + 1), INPUT, "run_align")


def test_running_rec_is_rec_state(host: Host) -> None:
    _, rec = ready(host)
    # RUNNING is only observable from another CPU while the REC's own REC_ENTER executes.
    host.rmm.rec_at(rec).state = RecState.RUNNING
    host.fails(host.call("rec_enter", rec=rec, run=run_with(host)), REC, "rec_state")


def test_rec_of_a_new_realm_is_realm_new_index_0(host: Host) -> None:
    realm = host.realm()
    rec = host.rec(realm)
    regs = host.call("rec_enter", rec=rec, run=run_with(host))
    host.fails(regs, REALM, "realm_new", 0)
    assert regs[0] == 0x002


def test_rec_of_a_system_off_realm_is_system_off_index_1(host: Host) -> None:
    _, rec = ready(host)
    host.rmm.rec_at(rec).exit_system_off(0x8400_0008)
    regs = host.call("rec_enter", rec=rec, run=run_with(host))
    host.fails(regs, REALM, "system_off", 1)
    assert regs[0] == 0x102


def test_not_runnable_rec_is_rec_runnable(host: Host) -> None:
    realm = host.realm()
    host.rec(realm, mpidr=0)
    off = host.rec(realm, mpidr=1, runnable=False)
    host.ok("realm_activate", rd=realm.rd)
    host.fails(host.call("rec_enter", rec=off, run=run_with(host)), REC, "rec_runnable")


@pytest.mark.parametrize("hcr", [1 << 8, 1 << 13, 1 << 31, 0x1F << 27])
def test_non_host_hcr_bit_is_rec_gicv3(host: Host, hcr: int) -> None:
    _, rec = ready(host)
    host.fails(host.call("rec_enter", rec=rec, run=run_with(host, gicv3_hcr=hcr)), REC, "rec_gicv3")


@pytest.mark.parametrize(
    "lr",
    [
        LR_PENDING | (1 << 61) | 30,  # HW
        LR_PENDING | (1 << 32) | 30,  # pINTID without HW
        LR_PENDING | (1 << 48) | 30,  # priority bit below the implemented ones
        LR_PENDING | 1020,  # special INTID
        LR_PENDING | 5000,  # neither SPI/PPI/SGI nor LPI
        LR_PENDING | (1 << 16),  # LPI beyond the ID bits
    ],
    ids=["hw", "pintid", "priority", "special", "gap", "lpi_range"],
)
def test_invalid_list_register_is_rec_gicv3(host: Host, lr: int) -> None:
    _, rec = ready(host)
    lrs = (0, lr) + (0,) * 14
    host.fails(host.call("rec_enter", rec=rec, run=run_with(host, gicv3_lrs=lrs)), REC, "rec_gicv3")


def test_duplicate_vintid_is_rec_gicv3(host: Host) -> None:
    _, rec = ready(host)
    lrs = (LR_PENDING | 40, LR_PENDING | 40) + (0,) * 14
    host.fails(host.call("rec_enter", rec=rec, run=run_with(host, gicv3_lrs=lrs)), REC, "rec_gicv3")


def test_list_registers_beyond_the_implemented_ones_are_ignored() -> None:
    host = Host(gicv3_num_lrs=3)
    _, rec = ready(host)
    lrs = (0,) * 4 + (LR_PENDING | (1 << 61),) + (0,) * 11
    run = run_with(host, gicv3_lrs=lrs)
    host.ok("rec_enter", rec=rec, run=run)
    assert exit_of(host, run).gicv3_lrs == (0,) * 16


def test_inject_sea_without_an_unprotected_abort_is_rejected_in_both_modes(any_host: Host) -> None:
    # rmm-abi.md §12 #14 (spec silent): TF-RMM's check in both modes.
    _, rec = ready(any_host)
    regs = any_host.call("rec_enter", rec=rec, run=run_with(any_host, flags=RecEnterFlags.INJECT_SEA))
    any_host.fails(regs, REC, "tf_rmm_inject_sea")


def test_emul_mmio_without_an_emulatable_abort_is_rec_mmio(host: Host) -> None:
    _, rec = ready(host)
    regs = host.call("rec_enter", rec=rec, run=run_with(host, flags=RecEnterFlags.EMUL_MMIO))
    host.fails(regs, REC, "rec_mmio")


def test_emulated_mmio_load_completes_the_instruction(host: Host) -> None:
    _, rec_addr = ready(host)
    rec = host.rmm.rec_at(rec_addr)
    abort = EmulatableAbort(write=False, register=5, size=2, sign_extend=True)
    rec.exit_data_abort(esr=DABT_UNPROTECTED_ESR, hpfar=0x8000_0000 >> 8, unprotected=True, emulatable=abort)
    gprs = (0x1_8001,) + (0,) * 30
    run = run_with(host, flags=RecEnterFlags.EMUL_MMIO, gprs=gprs)
    host.ok("rec_enter", rec=rec_addr, run=run)
    assert rec.gprs[5] == 0xFFFF_FFFF_FFFF_8001
    assert rec.pc == 0x1004
    assert rec.emulatable_abort is None
    regs = host.call("rec_enter", rec=rec_addr, run=run)
    host.fails(regs, REC, "rec_mmio")


def test_inject_sea_after_an_unprotected_abort_is_accepted_and_ignores_emul_mmio(host: Host) -> None:
    _, rec_addr = ready(host)
    rec = host.rmm.rec_at(rec_addr)
    abort = EmulatableAbort(write=True, register=1, size=8)
    rec.exit_data_abort(esr=DABT_UNPROTECTED_ESR, hpfar=0, unprotected=True, emulatable=abort)
    run = run_with(host, flags=RecEnterFlags.INJECT_SEA | RecEnterFlags.EMUL_MMIO)
    host.ok("rec_enter", rec=rec_addr, run=run)
    assert rec.sea_pending
    assert rec.pc == 0x1000


def test_host_call_answer_is_written_into_the_realms_rsi_host_call(host: Host) -> None:
    realm = host.realm()
    data = host.data(realm, 0x3000)
    rec_addr = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    rec = host.rmm.rec_at(rec_addr)
    rec.exit_host_call(ipa=0x3100, imm=0x12, gprs=[1, 2, 3])
    gprs = tuple(range(100, 131))
    host.ok("rec_enter", rec=rec_addr, run=run_with(host, gprs=gprs))
    page = host.machine.memory.read_granule(data)
    assert page[0x108:0x110] == (100).to_bytes(8, "little")
    assert page[0x1F8:0x200] == (130).to_bytes(8, "little")
    assert rec.host_call_pending is None
    assert rec.gprs[0] == 0


def test_host_call_to_an_unmapped_page_exits_with_a_stage_2_abort(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("rtt_init_ripas", rd=realm.rd, base=0x0, top=0x8000)
    rec_addr = host.rec(realm)
    host.ok("realm_activate", rd=realm.rd)
    rec = host.rmm.rec_at(rec_addr)
    rec.exit_host_call(ipa=0x5000, imm=0, gprs=[])
    run = run_with(host)
    host.ok("rec_enter", rec=rec_addr, run=run)
    reported = exit_of(host, run)
    assert reported.exit_reason == RecExitReason.SYNC
    assert reported.esr == (0x24 << 26) | 0x07
    assert reported.hpfar == 0x5000 >> 8
    assert rec.host_call_pending == 0x5000


def test_entry_writes_only_the_exit_half_of_rec_run(host: Host) -> None:
    _, rec = ready(host)
    run = run_with(host, gprs=tuple(range(1, 32)))
    before = host.machine.ns_read(run, 0x800)
    host.ok("rec_enter", rec=rec, run=run)
    assert host.machine.ns_read(run, 0x800) == before
