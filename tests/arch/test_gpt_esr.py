"""Syndromes of granule protection faults: aborts and GPC exceptions (DDI0487 D24.2.45, D24.2.47)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.esr import Esr, ExceptionClass, FaultStatus, gpf_fault_status
from cca_hil.arch.gpt import GptFault, GptFaultKind


def test_ns_el2_load_from_a_delegated_granule_is_data_abort_same_el_dfsc_0x28() -> None:
    esr = Esr.data_abort(FaultStatus.GPF, same_el=True)
    assert esr.value == 0x9600_0028  # EC 0x25, IL, DFSC 0x28
    assert esr.is_gpf
    assert esr.gpf_walk_level is None
    assert not esr.wnr


def test_store_sets_wnr() -> None:
    assert Esr.data_abort(FaultStatus.GPF, same_el=True, wnr=True).value == 0x9600_0068


def test_cache_maintenance_reports_cm_and_wnr() -> None:
    esr = Esr.data_abort(FaultStatus.GPF, same_el=True, cm=True)
    assert esr.value == 0x9600_0168
    assert esr.cm and esr.wnr


def test_branch_into_a_delegated_granule_is_instruction_abort_ifsc_0x28() -> None:
    esr = Esr.instruction_abort(FaultStatus.GPF, same_el=True)
    assert esr.value == 0x8600_0028
    assert esr.instruction
    assert esr.is_gpf


def test_guest_gpf_routed_to_el2_is_data_abort_from_lower_el() -> None:
    esr = Esr(0x9200_0028)
    assert esr.exception_class is ExceptionClass.DATA_ABORT_LOWER
    assert esr.is_gpf


@pytest.mark.parametrize(
    ("level", "code"), [(-2, 0x22), (-1, 0x23), (0, 0x24), (1, 0x25), (2, 0x26), (3, 0x27)]
)
def test_gpf_on_a_translation_table_walk_encodes_the_lookup_level(level: int, code: int) -> None:
    assert gpf_fault_status(level) == code
    esr = Esr.data_abort(gpf_fault_status(level), same_el=True)
    assert esr.gpf_walk_level == level


def test_gpf_walk_level_outside_the_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="level 4"):
        gpf_fault_status(4)


@pytest.mark.parametrize(
    ("fault", "value"),
    [
        (GptFault(GptFaultKind.GPF, 1), 0x7A03_4028),
        (GptFault(GptFaultKind.GPF, 0), 0x7A03_0028),
        (GptFault(GptFaultKind.WALK, 0), 0x7A01_0028),
        (GptFault(GptFaultKind.WALK, 1), 0x7A01_4028),
        (GptFault(GptFaultKind.ADDRESS_SIZE, 0), 0x7A00_0028),
        (GptFault(GptFaultKind.EXTERNAL_ABORT, 1), 0x7A05_4028),
    ],
)
def test_gpc_exception_carries_the_gpt_fault_in_gpcsc(fault: GptFault, value: int) -> None:
    esr = Esr.gpc_exception(fault)
    assert esr.value == value
    assert esr.exception_class is ExceptionClass.GPC
    assert esr.gpc_fault == fault
    assert esr.is_gpf is (fault.kind is GptFaultKind.GPF)


def test_gpc_exception_flags() -> None:
    esr = Esr.gpc_exception(GptFault(GptFaultKind.GPF, 1), instruction=True, s2ptw=True)
    assert esr.instruction and esr.s2ptw
    assert esr.describe() == "gpc, granule protection fault, level 1, gpf, ind, s2ptw"


def test_reserved_gpcsc_is_reported() -> None:
    with pytest.raises(ValueError, match="reserved"):
        _ = Esr(0x7A00_0028 | 0b000010 << 14).gpc_fault


def test_abort_fields_of_other_exception_classes_are_refused() -> None:
    smc = Esr(ExceptionClass.SMC64 << 26 | 1 << 25)
    assert not smc.is_gpf
    with pytest.raises(ValueError, match="not an abort"):
        _ = smc.wnr
    assert smc.describe() == "smc64, ISS 0x0"


def test_unknown_fault_status_survives_decoding() -> None:
    esr = Esr(0x9600_0035)
    assert esr.fault_status == 0x35
    assert not esr.is_gpf
    assert "FSC 0x35" in esr.describe()


@given(
    st.sampled_from(FaultStatus),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_data_abort_fields_round_trip(
    fsc: FaultStatus, same_el: bool, wnr: bool, cm: bool, s1ptw: bool
) -> None:
    esr = Esr(Esr.data_abort(fsc, same_el=same_el, wnr=wnr, cm=cm, s1ptw=s1ptw).value)
    assert esr.is_abort and not esr.instruction
    assert esr.fault_status == fsc
    assert (esr.wnr, esr.cm, esr.s1ptw) == (wnr or cm, cm, s1ptw)
    assert esr.exception_class is (
        ExceptionClass.DATA_ABORT_SAME if same_el else ExceptionClass.DATA_ABORT_LOWER
    )
    assert esr.il


@given(st.sampled_from(GptFaultKind), st.integers(0, 1), st.booleans(), st.booleans())
def test_gpc_exception_round_trips(kind: GptFaultKind, level: int, instruction: bool, wnr: bool) -> None:
    esr = Esr(Esr.gpc_exception(GptFault(kind, level), instruction=instruction, wnr=wnr).value)
    assert esr.gpc_fault == GptFault(kind, level)
    assert (esr.instruction, esr.wnr) == (instruction, wnr)
