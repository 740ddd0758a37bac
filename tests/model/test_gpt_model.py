"""The model's GPT: TF-A's tables in Root memory, the check on every access, GTSI transitions, the TLB."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.arch.esr import Esr, ExceptionClass, FaultStatus
from cca_hil.arch.gpt import Gpi, GptFault, GptFaultKind, decode_tables, granule_protection_check, walk
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE, GranuleState, RmiStatus
from cca_hil.arch.structs import RealmParams
from cca_hil.model.machine import Machine
from cca_hil.model.memory import ROOT
from cca_hil.model.monitor import (
    E_RMM_BAD_ADDR,
    E_RMM_BAD_PAS,
    E_RMM_OK,
    RMM_GTSI_DELEGATE,
    RMM_GTSI_UNDELEGATE,
)
from cca_hil.model.platform import PlatformConfig

DELEGATE = 0xC400_0151
UNDELEGATE = 0xC400_0152
REALM_CREATE = 0xC400_0158
REALM_DESTROY = 0xC400_0159
DRAM2 = 0x8_8000_1000
POOL = 0x9000_0000
SMC_UNK = (1 << 64) - 1


def _entry(machine: Machine, pa: int) -> int:
    found = machine.gpt.l1_entry(pa)
    assert found is not None
    return found[1]


def test_el3_programs_gpccr_and_gptbr_as_tf_a_on_fvp() -> None:
    gpt = Machine().gpt
    assert gpt.gpccr.encode() == 0x13502
    assert gpt.gptbr.encode() == 0x405E


def test_tables_in_root_memory_decode_to_the_memory_map() -> None:
    machine = Machine()
    pas_map = decode_tables(machine.gpt.gpccr, machine.gpt.gptbr, machine.gpt.tables())
    for region in machine.config.regions:
        for pa in (region.base, region.end - GRANULE_SIZE):
            assert pas_map.pas_at(pa) == region.pas, region.name


def test_the_l1_tables_are_handed_out_from_the_root_carve_out_in_layout_order() -> None:
    # rme-gpt-mec.md §6.3 without the PCI regions: L0 idx 2, 3, 34, 35.
    assert Machine().gpt.l1_tables == (0xFFF0_0000, 0xFFF2_0000, 0xFFF4_0000, 0xFFF6_0000)


def test_delegate_shatters_and_undelegate_fuses_as_the_worked_example() -> None:
    machine = Machine()
    boot = machine.gpt.tables()
    assert _entry(machine, DRAM2) == 0x391
    assert machine.smc(DELEGATE, DRAM2)[0] == RmiStatus.SUCCESS
    assert _entry(machine, DRAM2) == 0x9999_9999_9999_99B9
    assert _entry(machine, DRAM2 + (2 << 20)) == 0x191
    assert _entry(machine, DRAM2 + (32 << 20)) == 0x291
    assert machine.smc(UNDELEGATE, DRAM2)[0] == RmiStatus.SUCCESS
    assert machine.gpt.tables() == boot


def test_transitioned_lists_the_granules_whose_gpi_changed() -> None:
    machine = Machine()
    machine.smc(DELEGATE, POOL)
    machine.smc(DELEGATE, DRAM2)
    assert machine.gpt.transitioned() == {POOL: Pas.REALM, DRAM2: Pas.REALM}
    machine.smc(UNDELEGATE, POOL)
    assert machine.gpt.transitioned() == {DRAM2: Pas.REALM}


def test_ns_load_of_a_delegated_granule_is_a_data_abort_with_dfsc_0x28() -> None:
    machine = Machine()
    machine.smc(DELEGATE, POOL)
    result = machine.ns_access(POOL + 0x18, "read")
    assert result.fault is not None and result.fault.gpf
    esr = Esr(result.fault.esr)
    assert esr.exception_class is ExceptionClass.DATA_ABORT_SAME
    assert esr.fault_status == FaultStatus.GPF
    assert not esr.wnr
    assert result.fault.far == POOL + 0x18
    store = machine.ns_access(POOL, "write", 8, 1)
    assert store.fault is not None and Esr(store.fault.esr).wnr


def test_scr_el3_gpf_takes_the_fault_to_el3_with_gpcsc_and_mfar() -> None:
    machine = Machine(PlatformConfig(gpf_routing="el3"))
    machine.smc(DELEGATE, POOL)
    fault = machine.check_access(POOL, world=Pas.NONSECURE, pas=Pas.NONSECURE, write=False)
    assert fault is not None
    assert fault.esr.is_gpc_exception and fault.target_el == 3
    assert fault.esr.gpc_fault == GptFault(GptFaultKind.GPF, 1)
    assert fault.mfar == 1 << 63 | POOL  # NS=1, NSE=0: the Non-secure PAS
    realm = machine.check_access(0xFFC0_0000, world=Pas.REALM, pas=Pas.REALM, write=False)
    assert realm is not None and realm.mfar == 0b11 << 62 | 0xFFC0_0000


def test_a_fetch_from_a_delegated_granule_is_an_instruction_abort_with_ifsc_0x28() -> None:
    machine = Machine()
    machine.smc(DELEGATE, POOL)
    fault = machine.check_access(POOL, world=Pas.NONSECURE, pas=Pas.NONSECURE, write=False, fetch=True)
    assert fault is not None and fault.gpf
    assert fault.esr.exception_class is ExceptionClass.INSTRUCTION_ABORT_SAME
    assert fault.esr.fault_status == FaultStatus.GPF and fault.esr.instruction


def test_el3_takes_its_own_gpf_as_an_abort_whatever_scr_el3_gpf() -> None:
    machine = Machine(PlatformConfig(gpf_routing="el3"))
    fault = machine.check_access(POOL, world=Pas.ROOT, pas=Pas.ROOT, write=True)
    assert fault is not None and fault.esr.is_abort and fault.target_el == 3 and fault.esr.wnr


def test_accesses_above_the_pps_pass_for_ns_and_fault_at_level_0_for_realm() -> None:
    machine = Machine()
    above = 1 << 40
    ns = machine.check_access(above, world=Pas.NONSECURE, pas=Pas.NONSECURE, write=False)
    assert ns is not None and ns.gpc is None  # passed the GPC; no memory answers there
    realm = machine.check_access(above, world=Pas.REALM, pas=Pas.REALM, write=False)
    assert realm is not None and realm.gpc == GptFault(GptFaultKind.GPF, 0)


def test_a_skipped_tlbi_leaves_a_stale_gpi_that_tlbi_paallos_removes() -> None:
    machine = Machine(PlatformConfig(el3_skip_tlbi=True))
    assert machine.ns_access(POOL, "read").ok  # the TLB now holds GPI NS for the granule
    assert machine.monitor.gpt_transition_pas(POOL, GRANULE_SIZE, Gpi.REALM, caller=Pas.REALM) == 0
    assert machine.ns_access(POOL, "read").ok  # stale: the write without its TLBI is observable
    machine.gpt.tlbi_paallos()
    assert not machine.ns_access(POOL, "read").ok


def test_with_its_tlbi_the_first_access_after_delegation_faults() -> None:
    machine = Machine()
    assert machine.ns_access(POOL, "read").ok
    machine.smc(DELEGATE, POOL)
    assert not machine.ns_access(POOL, "read").ok


def test_gtsi_is_refused_to_the_normal_world() -> None:
    machine = Machine()
    assert machine.smc(RMM_GTSI_DELEGATE, POOL)[0] == SMC_UNK
    assert machine.gpt.pas_of(POOL) is Pas.NONSECURE


def test_gtsi_checks_as_gpt_transition_pas() -> None:
    monitor = Machine().monitor
    secure = PlatformConfig().first_granule(Pas.SECURE)
    assert monitor.rmm_call(RMM_GTSI_DELEGATE, secure) == E_RMM_BAD_PAS
    assert monitor.rmm_call(RMM_GTSI_UNDELEGATE, POOL) == E_RMM_BAD_PAS
    assert monitor.rmm_call(RMM_GTSI_DELEGATE, POOL + 8) == E_RMM_BAD_ADDR
    assert monitor.rmm_call(RMM_GTSI_DELEGATE, 0x1000) == E_RMM_BAD_ADDR  # an L0 Block region
    assert monitor.rmm_call(RMM_GTSI_DELEGATE, (1 << 40) - GRANULE_SIZE) == E_RMM_BAD_ADDR
    assert monitor.rmm_call(RMM_GTSI_DELEGATE, POOL) == E_RMM_OK
    assert monitor.rmm_call(RMM_GTSI_DELEGATE, POOL) == E_RMM_BAD_PAS


def test_a_platform_above_one_terabyte_gets_a_larger_pps_and_its_own_gpt_carve_out() -> None:
    base = PlatformConfig()
    high = replace(base.regions[-1], name="ns-dram-high", base=1 << 44, size=1 << 30)
    machine = Machine(replace(base, regions=(*base.regions, high)))
    assert machine.gpt.gpccr.pps.bits == 48
    assert machine.smc(DELEGATE, 1 << 44)[0] == RmiStatus.SUCCESS
    assert machine.gpt.pas_of(1 << 44) is Pas.REALM
    placement = machine.config.gpt_placement()
    assert placement.carveout is not None and machine.gpt.pas_of(placement.carveout.base) is Pas.ROOT


@settings(max_examples=60, deadline=None)
@given(
    corrupt=st.lists(
        st.tuples(
            st.integers(0, 0x1FFF), st.integers(0, (1 << 64) - 1) | st.sampled_from([0x391, 0x1B1, 0x99])
        ),
        max_size=6,
    ),
    probes=st.lists(
        st.tuples(
            st.integers(0x8000_0000, 0x1_0000_0000 - 1),
            st.sampled_from([Pas.NONSECURE, Pas.SECURE, Pas.REALM, Pas.ROOT]),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_every_check_agrees_with_the_architectural_check_on_the_same_bytes(
    corrupt: list[tuple[int, int]], probes: list[tuple[int, Pas]]
) -> None:
    machine = Machine()
    gpt = machine.gpt
    for index, value in corrupt:
        machine.store.write(0xFFF2_0000 + 8 * index, value.to_bytes(8, "little"), ROOT)
    gpt.tlbi_paallos()
    for pa, access in probes:
        expected = granule_protection_check(
            pa, access=access, gpccr=gpt.gpccr, gptbr=gpt.gptbr, read64=gpt.read64, features=gpt.features
        )
        assert gpt.fault(pa, access) == expected
        assert gpt.fault(pa, access) == expected  # the cached answer too
        result = walk(pa, gpccr=gpt.gpccr, gptbr=gpt.gptbr, read64=gpt.read64)
        assert gpt.cached(pa) == result.gpi


_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["delegate", "undelegate", "realm_destroy"]), st.integers(0, 5)),
        st.tuples(st.just("realm_create"), st.integers(0, 5), st.integers(0, 5)),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(actions=_ACTIONS)
def test_rmm_granule_state_and_gpt_bytes_never_disagree(actions: list[tuple[int | str, ...]]) -> None:
    machine = Machine()
    granules = [POOL + 0x1_0000 * i for i in range(5)] + [DRAM2]
    params = 0x9800_0000
    for action in actions:
        name, first = action[0], int(action[1])
        if name == "delegate":
            machine.smc(DELEGATE, granules[first])
        elif name == "undelegate":
            machine.smc(UNDELEGATE, granules[first])
        elif name == "realm_destroy":
            machine.smc(REALM_DESTROY, granules[first])
        else:
            rtt = granules[int(action[2])]
            fields = RealmParams(s2sz=40, hash_algo=0, vmid=first + 1, rtt_base=rtt, rtt_level_start=1)
            machine.ns_write(params, fields.pack())
            machine.smc(REALM_CREATE, granules[first], params)
        pas_map = decode_tables(machine.gpt.gpccr, machine.gpt.gptbr, machine.gpt.tables())
        for pa in granules:
            tracked = machine.rmm.granule_state(pa) is not GranuleState.UNDELEGATED
            assert (pas_map.pas_at(pa) is Pas.REALM) == tracked
            assert (machine.gpt.pas_of(pa) is Pas.REALM) == tracked
