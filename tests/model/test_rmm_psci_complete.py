"""RMI_PSCI_COMPLETE on the model (RMM 1.0 B3.3.4): conditions in order and every completion case.

A REC gets its pending PSCI request through ``Rec.exit_psci``, the entry
point realm execution uses when the Realm's PSCI_CPU_ON / AFFINITY_INFO exits.
"""

from __future__ import annotations

from rmm_host import Host, RealmHandle

from cca_hil.arch.rmi import RecState, RmiStatus
from cca_hil.arch.structs import RecRun
from cca_hil.model.realm import PsciRequest

INPUT = RmiStatus.ERROR_INPUT
CPU_ON = 0xC400_0003
AFFINITY_INFO = 0xC400_0004
SUCCESS = 0
DENIED = (1 << 64) - 3
ALREADY_ON = (1 << 64) - 4
OFF = 1


def two_recs(host: Host, *, second_runnable: bool = False) -> tuple[RealmHandle, int, int]:
    realm = host.realm()
    caller = host.rec(realm, mpidr=0, pc=0x1000)
    target = host.rec(realm, mpidr=1, runnable=second_runnable)
    host.ok("realm_activate", rd=realm.rd)
    return realm, caller, target


def cpu_on(host: Host, caller: int, *, target_mpidr: int = 1) -> None:
    host.rmm.rec_at(caller).exit_psci(PsciRequest(CPU_ON, target_mpidr, entry=0x8000, context=0xC0FFEE))


def test_cpu_on_success_resets_and_starts_the_target(host: Host) -> None:
    _, caller, target = two_recs(host)
    victim = host.rmm.rec_at(target)
    victim.gprs[7] = 0x77
    cpu_on(host, caller)
    host.ok("psci_complete", calling_rec=caller, target_rec=target, status=SUCCESS)
    assert (victim.runnable, victim.pc, victim.gprs[0], victim.gprs[7]) == (True, 0x8000, 0xC0FFEE, 0)
    calling = host.rmm.rec_at(caller)
    assert calling.gprs[:4] == [SUCCESS, 0, 0, 0]
    assert calling.psci_pending is None


def test_cpu_on_success_keeps_target_registers_in_tf_rmm_mode(tf_host: Host) -> None:
    # rmm-abi.md §12 #12
    _, caller, target = two_recs(tf_host)
    tf_host.rmm.rec_at(target).gprs[7] = 0x77
    cpu_on(tf_host, caller)
    tf_host.ok("psci_complete", calling_rec=caller, target_rec=target, status=SUCCESS)
    assert tf_host.rmm.rec_at(target).gprs[7] == 0x77


def test_cpu_on_of_a_running_target_answers_already_on(host: Host) -> None:
    _, caller, target = two_recs(host, second_runnable=True)
    cpu_on(host, caller)
    host.ok("psci_complete", calling_rec=caller, target_rec=target, status=SUCCESS)
    assert host.rmm.rec_at(caller).gprs[0] == ALREADY_ON


def test_cpu_on_denied_by_the_host(host: Host) -> None:
    _, caller, target = two_recs(host)
    cpu_on(host, caller)
    host.ok("psci_complete", calling_rec=caller, target_rec=target, status=DENIED)
    assert host.rmm.rec_at(caller).gprs[0] == DENIED
    assert not host.rmm.rec_at(target).runnable


def test_affinity_info_reports_on_and_off(host: Host) -> None:
    realm = host.realm()
    caller = host.rec(realm, mpidr=0)
    off = host.rec(realm, mpidr=1, runnable=False)
    on = host.rec(realm, mpidr=2)
    host.ok("realm_activate", rd=realm.rd)
    for target, mpidr, answer in ((off, 1, OFF), (on, 2, SUCCESS)):
        host.rmm.rec_at(caller).exit_psci(PsciRequest(AFFINITY_INFO, mpidr))
        host.ok("psci_complete", calling_rec=caller, target_rec=target, status=SUCCESS)
        assert host.rmm.rec_at(caller).gprs[0] == answer


def test_same_rec_twice_is_alias(host: Host) -> None:
    _, caller, _ = two_recs(host)
    host.fails(host.call("psci_complete", calling_rec=caller, target_rec=caller, status=0), INPUT, "alias")


def test_calling_granule_conditions(host: Host) -> None:
    realm, caller, target = two_recs(host)
    cpu_on(host, caller)
    for addr, cond in (
        (caller + 8, "calling_align"),
        (host.names["non_memory"], "calling_bound"),
        (realm.rd, "calling_state"),
    ):
        host.fails(host.call("psci_complete", calling_rec=addr, target_rec=target, status=0), INPUT, cond)


def test_target_granule_conditions(host: Host) -> None:
    realm, caller, target = two_recs(host)
    cpu_on(host, caller)
    for addr, cond in (
        (target + 8, "target_align"),
        (host.names["non_memory"], "target_bound"),
        (realm.rd, "target_state"),
    ):
        host.fails(host.call("psci_complete", calling_rec=caller, target_rec=addr, status=0), INPUT, cond)


def test_calling_rec_without_a_request_is_pending(host: Host) -> None:
    _, caller, target = two_recs(host)
    host.fails(host.call("psci_complete", calling_rec=caller, target_rec=target, status=0), INPUT, "pending")


def test_target_of_another_realm_is_owner(host: Host) -> None:
    _, caller, _ = two_recs(host)
    _, _, foreign = two_recs(host)
    cpu_on(host, caller)
    host.fails(host.call("psci_complete", calling_rec=caller, target_rec=foreign, status=0), INPUT, "owner")


def test_target_with_another_mpidr_is_target(host: Host) -> None:
    realm = host.realm()
    caller = host.rec(realm, mpidr=0)
    host.rec(realm, mpidr=1, runnable=False)
    third = host.rec(realm, mpidr=2, runnable=False)
    host.ok("realm_activate", rd=realm.rd)
    cpu_on(host, caller, target_mpidr=1)
    host.fails(host.call("psci_complete", calling_rec=caller, target_rec=third, status=0), INPUT, "target")


def test_other_status_values_are_status(host: Host) -> None:
    _, caller, target = two_recs(host)
    cpu_on(host, caller)
    for status in (1, (1 << 64) - 1, (1 << 64) - 2, ALREADY_ON):
        host.fails(
            host.call("psci_complete", calling_rec=caller, target_rec=target, status=status), INPUT, "status"
        )
    assert host.rmm.rec_at(caller).psci_pending is not None


def test_denied_for_affinity_info_is_status(host: Host) -> None:
    _, caller, target = two_recs(host)
    host.rmm.rec_at(caller).exit_psci(PsciRequest(AFFINITY_INFO, 1))
    host.fails(
        host.call("psci_complete", calling_rec=caller, target_rec=target, status=DENIED), INPUT, "status"
    )


def test_denied_for_a_running_target_changes_nothing_in_spec_mode(host: Host) -> None:
    _, caller, target = two_recs(host, second_runnable=True)
    cpu_on(host, caller)
    host.fails(
        host.call("psci_complete", calling_rec=caller, target_rec=target, status=DENIED), INPUT, "status"
    )
    calling = host.rmm.rec_at(caller)
    assert calling.psci_pending is not None
    assert calling.gprs[0] == 0


def test_denied_for_a_running_target_answers_already_on_in_tf_rmm_mode(tf_host: Host) -> None:
    # rmm-abi.md §12 #13
    _, caller, target = two_recs(tf_host, second_runnable=True)
    cpu_on(tf_host, caller)
    regs = tf_host.call("psci_complete", calling_rec=caller, target_rec=target, status=DENIED)
    tf_host.fails(regs, INPUT, "status")
    calling = tf_host.rmm.rec_at(caller)
    assert calling.psci_pending is None
    assert calling.gprs[0] == ALREADY_ON


def test_pending_psci_blocks_rec_enter_until_completed(host: Host) -> None:
    _, caller, target = two_recs(host)
    cpu_on(host, caller)
    run = host.struct(RecRun())
    host.fails(host.call("rec_enter", rec=caller, run=run), RmiStatus.ERROR_REC, "rec_psci")
    host.ok("psci_complete", calling_rec=caller, target_rec=target, status=SUCCESS)
    host.ok("rec_enter", rec=caller, run=run)
    host.ok("rec_enter", rec=target, run=run)


def test_running_calling_rec_is_an_input_error(host: Host) -> None:
    _, caller, target = two_recs(host)
    cpu_on(host, caller)
    # A REC is RUNNING only inside its own REC_ENTER, i.e. as seen from another CPU.
    host.rmm.rec_at(caller).state = RecState.RUNNING
    regs = host.call("psci_complete", calling_rec=caller, target_rec=target, status=SUCCESS)
    host.fails(regs, INPUT, "tf_rmm_calling_running")
