"""RSI 1.0 in the model RMM (RMM 1.0 B5.3, rmm-abi.md §7): outputs, and every failure condition in order."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realm_host import RAM_TOP, Recorder, RunningRealm, rsi, running_realm
from rmm_host import Host

from cca_hil.arch import measurement
from cca_hil.arch.rmi import GRANULE_SIZE, HashAlgorithm, RecExitReason, Ripas
from cca_hil.arch.rsi_1_0 import RSI_1_0, RsiResponse, RsiStatus, registers_to_wide
from cca_hil.arch.structs import RecEnterFlags
from cca_hil.arch.token import Expectations, verify
from cca_hil.model.realm_exec import IrqLine

PROTECTED_TOP = 1 << 39
"""First Unprotected IPA of an s2sz-40 realm."""
UNASSIGNED_RAM_PAGE = 0x6000
"""RIPAS RAM (below RAM_TOP) but no DATA granule: RSI pages there exit with a synthetic abort."""
EMPTY_PAGE = 0x10000


@pytest.fixture
def rr(any_host: Host) -> RunningRealm:
    return running_realm(any_host)


def call(rr: RunningRealm, name: str, **args: int | bytes) -> Recorder:
    """One RSI call the RMM completes itself: the realm sees the result, then ends its script (IRQ)."""
    regs, exit_, (recorder,) = rr.enter(rsi(name, **args))
    assert regs[0] == 0
    assert exit_.exit_reason == RecExitReason.IRQ
    assert recorder.registers is not None
    return recorder


def fails(rr: RunningRealm, recorder: Recorder, condition: str) -> None:
    """The call failed with ``condition``'s status and label; X1..X3 are zero (rmm-abi.md §1.3)."""
    command = RSI_1_0.by_fid[_last_fid(rr)]
    assert recorder.x0 == command.condition(condition).status
    assert rr.host.rmm.last_rsi_condition == condition
    assert recorder.registers is not None
    assert recorder.registers[1:4] == (0, 0, 0)


def _last_fid(rr: RunningRealm) -> int:
    (record,) = rr.host.rmm.realm_exec.rsi_log
    return RSI_1_0.by_name[record.command].fid


# -- RSI_VERSION, RSI_FEATURES ------------------------------------------------------------------------


def test_version_1_0_is_supported_with_lower_and_higher_1_0(rr: RunningRealm) -> None:
    seen = call(rr, "version", req=0x10000)
    assert seen.registers is not None
    assert seen.registers[:3] == (RsiStatus.SUCCESS, 0x10000, 0x10000)
    assert rr.host.rmm.last_rsi_condition is None


@pytest.mark.parametrize("req", [0x20000, 0x10001, 0x8001_0000])
def test_version_other_than_1_0_is_error_input_reporting_1_0(rr: RunningRealm, req: int) -> None:
    seen = call(rr, "version", req=req)
    assert seen.registers is not None
    assert seen.registers[:3] == (RsiStatus.ERROR_INPUT, 0x10000, 0x10000)


def test_features_are_all_zero_in_rsi_1_0(rr: RunningRealm) -> None:
    seen = call(rr, "features", index=3)
    assert seen.registers is not None
    assert seen.registers[:2] == (RsiStatus.SUCCESS, 0)


# -- measurements ---------------------------------------------------------------------------------------


def test_measurement_read_of_index_0_is_the_rim_over_x1_to_x8(rr: RunningRealm) -> None:
    seen = call(rr, "measurement_read", index=0)
    assert seen.registers is not None
    assert registers_to_wide(seen.registers[1:9]) == rr.host.rmm.realm_at(rr.realm.rd).rim


def test_measurement_read_of_index_5_fails_index_bound(rr: RunningRealm) -> None:
    fails(rr, call(rr, "measurement_read", index=5), "index_bound")


@pytest.mark.parametrize(
    ("index", "size", "condition"),
    [(0, 32, "index_bound"), (5, 32, "index_bound"), (1, 65, "size_bound"), (0, 65, "index_bound")],
    ids=["rim", "index5", "size65", "index_before_size"],
)
def test_measurement_extend_failure_conditions_in_order(
    rr: RunningRealm, index: int, size: int, condition: str
) -> None:
    fails(rr, call(rr, "measurement_extend", index=index, size=size, value=b"\x01" * 64), condition)


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64])
def test_measurement_extend_hashes_exactly_size_bytes_of_the_value(rr: RunningRealm, size: int) -> None:
    value = bytes(range(64))
    call(rr, "measurement_extend", index=2, size=size, value=value)
    rem = rr.host.rmm.realm_at(rr.realm.rd).measurements[2]
    # rmm-abi.md §9.6 / §12 #18: H(old digest || value[:size]), stored zero-padded.
    assert rem == hashlib.sha256(bytes(32) + value[:size]).digest() + bytes(32)
    seen = call(rr, "measurement_read", index=2)
    assert seen.registers is not None
    assert registers_to_wide(seen.registers[1:9]) == rem


def test_measurement_extend_uses_the_realm_hash_algorithm(any_host: Host) -> None:
    rr = running_realm(any_host, hash_algo=1)
    call(rr, "measurement_extend", index=4, size=64, value=b"\xaa" * 64)
    expected = measurement.rem_extend(HashAlgorithm.SHA512, bytes(64), b"\xaa" * 64, 64)
    assert rr.host.rmm.realm_at(rr.realm.rd).measurements[4] == expected


# -- attestation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "offset", "size", "condition"),
    [
        (0x2008, 0, 0x100, "addr_align"),
        (0x2008, 0x1000, 0x100, "addr_align"),
        (0x2000, 0x1000, 0, "offset_bound"),
        (0x2000, 0x800, (1 << 64) - 0x100, "size_overflow"),
        (0x2000, 0xFFF, 2, "size_bound"),
        (PROTECTED_TOP, 0, 0x100, "addr_bound"),
        (1 << 40, 0, 0x100, "addr_bound"),
        (EMPTY_PAGE, 0, 0x100, "tf_rmm_ripas_empty"),
    ],
)
def test_token_continue_failure_conditions_in_order(
    rr: RunningRealm, addr: int, offset: int, size: int, condition: str
) -> None:
    call(rr, "attestation_token_init", challenge=b"\x01" * 64)
    fails(rr, call(rr, "attestation_token_continue", addr=addr, offset=offset, size=size), condition)


def test_token_continue_before_init_fails_state_after_the_parameter_checks(rr: RunningRealm) -> None:
    fails(rr, call(rr, "attestation_token_continue", addr=0x2000, offset=0, size=0x100), "state")
    fails(rr, call(rr, "attestation_token_continue", addr=0x2001, offset=0, size=0x100), "addr_align")


def test_token_is_delivered_in_chunks_and_verifies(rr: RunningRealm) -> None:
    challenge = bytes(range(64))
    init = call(rr, "attestation_token_init", challenge=challenge)
    assert init.registers is not None
    assert init.registers[:2] == (RsiStatus.SUCCESS, 0x1000)
    chunks = []
    offset = 0
    while True:
        seen = call(rr, "attestation_token_continue", addr=0x2000, offset=offset, size=0x100)
        assert seen.registers is not None
        status, length = seen.registers[:2]
        chunks.append(rr.read(0x2000 + offset, length))
        offset += length
        if status == RsiStatus.SUCCESS:
            break
        assert status == RsiStatus.INCOMPLETE and length == 0x100
    token = b"".join(chunks)
    realm = rr.host.rmm.realm_at(rr.realm.rd)
    report = verify(
        token,
        iak=rr.host.rmm.attestation.iak,
        expect=Expectations(challenge=challenge, rim=realm.rim[:32], rak=rr.host.rmm.attestation.rak),
    )
    assert report.ok, report.checks
    fails(rr, call(rr, "attestation_token_continue", addr=0x2000, offset=0, size=0x100), "state")


def test_measurements_in_the_token_are_sampled_at_init(rr: RunningRealm) -> None:
    call(rr, "attestation_token_init", challenge=b"\x02" * 64)
    call(rr, "measurement_extend", index=1, size=64, value=b"\x03" * 64)
    seen = call(rr, "attestation_token_continue", addr=0x2000, offset=0, size=0x1000)
    assert seen.registers is not None and seen.registers[0] == RsiStatus.SUCCESS
    report = verify(rr.read(0x2000, seen.registers[1]), expect=Expectations(rems=[bytes(32)] * 4))
    assert report.ok, report.checks


def test_token_continue_to_a_ram_page_without_data_exits_with_a_synthetic_abort_and_is_retried(
    rr: RunningRealm,
) -> None:
    call(rr, "attestation_token_init", challenge=b"\x04" * 64)
    step = rsi("attestation_token_continue", addr=UNASSIGNED_RAM_PAGE, offset=0, size=0x100)
    pc = rr.rec().pc
    regs, exit_, (recorder,) = rr.enter(step)
    assert regs[0] == 0
    # rmm-abi.md §7.2: EC 0x24, DFSC translation fault at level 3, HPFAR = IPA >> 8, PC not advanced.
    assert (exit_.exit_reason, exit_.esr, exit_.hpfar, exit_.far) == (RecExitReason.SYNC, 0x90000007, 0x60, 0)
    assert not recorder.started
    assert rr.rec().pc == pc


def test_token_signing_interrupted_by_a_host_irq_exits_irq_and_the_realm_sees_incomplete_0(
    rr: RunningRealm,
) -> None:
    call(rr, "attestation_token_init", challenge=b"\x05" * 64)
    _, exit_, (_, recorder) = rr.enter(
        IrqLine(pending=True), rsi("attestation_token_continue", addr=0x2000, offset=0, size=0x100)
    )
    assert exit_.exit_reason == RecExitReason.IRQ
    assert recorder.started and recorder.seen() is None
    rr.host.rmm.realm_exec.irq_pending = False
    rr.enter(rsi("features"))
    seen = recorder.seen()
    assert seen is not None
    assert seen[:2] == (RsiStatus.INCOMPLETE, 0)


def test_token_larger_than_the_maximum_fails_unknown(rr: RunningRealm) -> None:
    rr.host.rmm.realm_exec.max_token_size = 0x100
    call(rr, "attestation_token_init", challenge=b"\x06" * 64)
    fails(rr, call(rr, "attestation_token_continue", addr=0x2000, offset=0, size=0x1000), "unknown")


# -- REALM_CONFIG ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "condition"),
    [(0x1008, "addr_align"), (PROTECTED_TOP, "addr_bound"), (EMPTY_PAGE, "tf_rmm_ripas_empty")],
)
def test_realm_config_failure_conditions(rr: RunningRealm, addr: int, condition: str) -> None:
    fails(rr, call(rr, "realm_config", addr=addr), condition)


def test_realm_config_writes_ipa_width_hash_algo_and_rpv(any_host: Host) -> None:
    rpv = bytes(range(64))
    rr = running_realm(any_host)
    rr.host.rmm.realm_at(rr.realm.rd).rpv = rpv
    assert call(rr, "realm_config", addr=0x3000).x0 == RsiStatus.SUCCESS
    assert rr.read(0x3000, 9) == (40).to_bytes(8, "little") + b"\x00"
    assert rr.read(0x3200, 64) == rpv


@pytest.mark.parametrize(("quirks", "kept"), [("spec", False), ("tf-rmm", True)])
def test_realm_config_bytes_outside_its_fields_are_zero_by_spec_and_kept_by_tf_rmm(
    quirks: str, kept: bool
) -> None:
    rr = running_realm(Host(quirks))  # type: ignore[arg-type]
    rr.enter(rsi("features"))  # the realm runs once; then it writes its own page
    page = rr.data[0x3000]
    rr.host.rmm.memory.write(page + 0x100, b"\x5a" * 8)
    call(rr, "realm_config", addr=0x3000)
    # rmm-abi.md §12 #17.
    assert (rr.read(0x3100, 8) == b"\x5a" * 8) is kept


# -- IPA_STATE_SET / IPA_STATE_GET -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "top", "ripas", "condition"),
    [
        (0x8000, 0x9000, 2, "ripas_valid"),
        (0x8000, 0x9000, 0x100, "ripas_valid"),
        (0x8001, 0x8000, 7, "ripas_valid"),
        (0x8001, 0x8000, 1, "base_align"),
        (0x8000, 0x9001, 1, "top_align"),
        (0x9000, 0x9000, 1, "size_valid"),
        (0x9000, 0x8000, 1, "size_valid"),
        (PROTECTED_TOP - 0x1000, PROTECTED_TOP + 0x1000, 1, "rgn_bound"),
    ],
)
def test_ipa_state_set_failure_conditions_in_order(
    rr: RunningRealm, base: int, top: int, ripas: int, condition: str
) -> None:
    fails(rr, call(rr, "ipa_state_set", base=base, top=top, ripas=ripas, flags=0), condition)


@pytest.mark.parametrize(
    ("ripas", "progress", "reject", "response"),
    [
        (Ripas.RAM, 0x9000, True, RsiResponse.REJECT),
        (Ripas.RAM, 0xA000, True, RsiResponse.ACCEPT),
        (Ripas.RAM, 0x9000, False, RsiResponse.ACCEPT),
        (Ripas.EMPTY, 0x9000, True, RsiResponse.ACCEPT),
    ],
    ids=["ram-partial-reject", "ram-complete-reject", "ram-partial-accept", "empty-reject-ignored"],
)
def test_ipa_state_set_round_trip_reports_new_base_and_response(
    rr: RunningRealm, ripas: Ripas, progress: int, reject: bool, response: RsiResponse
) -> None:
    base = 0x8000 if ripas is Ripas.RAM else 0x0
    top = base + 0x2000
    _, exit_, (recorder,) = rr.enter(rsi("ipa_state_set", base=base, top=top, ripas=ripas, flags=0))
    assert (exit_.exit_reason, exit_.ripas_base, exit_.ripas_top, exit_.ripas_value) == (
        RecExitReason.RIPAS_CHANGE,
        base,
        top,
        ripas,
    )
    assert recorder.started and recorder.seen() is None
    rr.host.ok("rtt_set_ripas", rd=rr.realm.rd, rec=rr.recs[0], base=base, top=base + progress - 0x8000)
    flags = RecEnterFlags.RIPAS_RESPONSE if reject else 0
    rr.enter(rsi("features"), flags=flags)
    seen = recorder.seen()
    assert seen is not None
    # rmm-abi.md §6.2: X1 = how far the Host got, X2 = REJECT only for RAM with partial progress.
    assert seen[:4] == (RsiStatus.SUCCESS, base + progress - 0x8000, response, 0)


@pytest.mark.parametrize(
    ("base", "top", "condition"),
    [
        (0x1001, 0x2000, "base_align"),
        (0x1001, 0x1000, "base_align"),
        (0x1000, 0x2001, "end_align"),
        (0x2000, 0x1000, "size_valid"),
        (PROTECTED_TOP - 0x1000, PROTECTED_TOP + 0x1000, "rgn_bound"),
    ],
)
def test_ipa_state_get_failure_conditions_in_order(
    rr: RunningRealm, base: int, top: int, condition: str
) -> None:
    fails(rr, call(rr, "ipa_state_get", base=base, top=top), condition)


@pytest.mark.parametrize(
    ("base", "top", "out_top", "ripas"),
    [
        (0x0, 0x100000, RAM_TOP, Ripas.RAM),
        (0x1000, 0x3000, 0x3000, Ripas.RAM),
        (RAM_TOP, 0x100000, 0x100000, Ripas.EMPTY),
        (0x200000, 0x400000, 0x400000, Ripas.EMPTY),
    ],
    ids=["ram-run", "capped-at-top", "empty-to-table-end", "level-2-block"],
)
def test_ipa_state_get_reports_the_ripas_at_base_and_how_far_it_extends(
    rr: RunningRealm, base: int, top: int, out_top: int, ripas: Ripas
) -> None:
    seen = call(rr, "ipa_state_get", base=base, top=top)
    assert seen.registers is not None
    assert seen.registers[:3] == (RsiStatus.SUCCESS, out_top, ripas)


# -- HOST_CALL ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "condition"),
    [
        (0x1180, "addr_align"),
        (0x1008, "addr_align"),
        (PROTECTED_TOP, "addr_bound"),
        (EMPTY_PAGE, "tf_rmm_ripas_empty"),
    ],
)
def test_host_call_failure_conditions(rr: RunningRealm, addr: int, condition: str) -> None:
    fails(rr, call(rr, "host_call", addr=addr), condition)


def write_host_call(rr: RunningRealm, ipa: int, imm: int, gprs: list[int]) -> None:
    page = ipa & ~(GRANULE_SIZE - 1)
    rr.host.rmm.memory.write(rr.data[page] + ipa - page, struct.pack("<Q31Q", imm, *gprs))


@pytest.mark.parametrize(("quirks", "imm"), [("spec", 0x5678), ("tf-rmm", 0xABCD5678)])
def test_host_call_round_trip_carries_imm_and_all_31_registers(quirks: str, imm: int) -> None:
    rr = running_realm(Host(quirks))  # type: ignore[arg-type]
    gprs = [0x1000 + i for i in range(31)]
    write_host_call(rr, 0x1100, 0xFFFF_FFFF_ABCD_5678, gprs)
    _, exit_, (recorder,) = rr.enter(rsi("host_call", addr=0x1100))
    assert exit_.exit_reason == RecExitReason.HOST_CALL
    assert list(exit_.gprs) == gprs
    # RsiHostCall.imm is a UInt16; TF-RMM carries 32 bits of the slot.
    raw_imm = struct.unpack_from("<Q", rr.host.machine.memory.read(rr.runs[rr.recs[0]] + 0xE00, 8))[0]
    assert raw_imm == imm
    answer = [0x5000 + i for i in range(31)]
    rr.enter(rsi("features"), gprs=answer)
    assert recorder.registers == (RsiStatus.SUCCESS, *answer)
    assert struct.unpack("<31Q", rr.read(0x1108, 8 * 31)) == tuple(answer)


def test_host_call_to_a_ram_page_without_data_exits_with_a_synthetic_abort(rr: RunningRealm) -> None:
    _, exit_, (recorder,) = rr.enter(rsi("host_call", addr=UNASSIGNED_RAM_PAGE + 0x100))
    assert (exit_.exit_reason, exit_.esr, exit_.hpfar) == (RecExitReason.SYNC, 0x90000007, 0x61)
    assert not recorder.started


@given(base_page=st.integers(min_value=0, max_value=0x3FF), pages=st.integers(min_value=1, max_value=0x400))
@settings(max_examples=60, deadline=None)
def test_ipa_state_get_always_makes_progress_without_passing_top(base_page: int, pages: int) -> None:
    rr = running_realm(Host("spec"), pages=1)
    base = base_page * GRANULE_SIZE
    top = base + pages * GRANULE_SIZE
    seen = call(rr, "ipa_state_get", base=base, top=top)
    assert seen.registers is not None
    # RMM 1.0 B5.3.8: base < out_top <= top, and the RIPAS reported is the one at base.
    assert base < seen.registers[1] <= top
    assert seen.registers[2] == (Ripas.RAM if base < RAM_TOP else Ripas.EMPTY)
