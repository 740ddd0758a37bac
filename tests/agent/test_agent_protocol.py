"""Known answers and round trips for the agent link's codecs (CRC-32C, COBS, varints, messages)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.agent.protocol import (
    EOF,
    MAX_ARGS,
    SOF,
    U64,
    AccessStep,
    AgentCaps,
    BatchReply,
    BatchStop,
    FillStep,
    Frame,
    FrameDecoder,
    HelloReply,
    InfoReply,
    MsgType,
    ProtocolError,
    Reader,
    ReadStep,
    RealmAction,
    RealmActionKind,
    RealmObservation,
    RealmRun,
    RealmRunReply,
    SmcStep,
    Step,
    WriteStep,
    cobs_decode,
    cobs_encode,
    crc32c,
    decode_batch,
    decode_request,
    encode_batch,
    encode_request,
    encode_result,
    max_encoded_size,
    reg,
    sysreg_encoding,
    sysreg_name,
    uvarint,
    zigzag,
)
from cca_hil.model.platform import PlatformConfig
from cca_hil.targets.base import AccessResult, Fault


def test_crc32c_check_value_is_the_catalogue_one() -> None:
    # CRC-32C/ISCSI in the CRC catalogue (Greg Cook): check=0xe3069283, and RFC 3720 B.4 all-zero vector.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        # Cheshire & Baker's examples (as listed on Wikipedia's COBS page).
        ("", "01"),
        ("00", "01 01"),
        ("00 00", "01 01 01"),
        ("00 11 00", "01 02 11 01"),
        ("11 22 00 33", "03 11 22 02 33"),
        ("11 22 33 44", "05 11 22 33 44"),
        ("11 00 00 00", "02 11 01 01 01"),
    ],
)
def test_cobs_known_answers(raw: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(raw)) == bytes.fromhex(encoded)
    assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)


def test_cobs_of_254_and_255_nonzero_bytes_splits_blocks() -> None:
    run = bytes(range(1, 255))
    assert cobs_encode(run) == b"\xff" + run + b"\x01"
    assert cobs_encode(bytes(range(256))[:255]) == b"\x01\xff" + run + b"\x01"
    assert cobs_encode(bytes(range(1, 256))) == b"\xff" + run + b"\x02\xff"


@given(st.binary(max_size=2000))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) + 2 <= max_encoded_size(len(data))
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("bad", ["00", "05 11 22", "03 11 00"])
def test_cobs_rejects_zero_bytes_and_overruns(bad: str) -> None:
    with pytest.raises(ProtocolError):
        cobs_decode(bytes.fromhex(bad))


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, "00"), (1, "02"), (U64, "01"), (U64 - 1, "03"), (0x1000, "80 40"), (0xC400_0150, "a0 85 80 c0 18")],
)
def test_register_wire_form_is_zigzag_leb128(value: int, wire: str) -> None:
    assert reg(value) == bytes.fromhex(wire)
    assert Reader(bytes.fromhex(wire)).reg() == value


@given(st.integers(min_value=0, max_value=U64))
def test_register_round_trip(value: int) -> None:
    r = Reader(reg(value))
    assert r.reg() == value
    assert r.remaining == 0
    assert zigzag(value) <= U64


def test_varint_longer_than_64_bits_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        Reader(uvarint(1 << 64)).uvarint()
    with pytest.raises(ProtocolError):
        Reader(b"\x80" * 11).uvarint()


@given(
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=0xFFFF),
    st.binary(max_size=300),
)
def test_frame_round_trip_through_the_decoder(kind: int, seq: int, payload: bytes) -> None:
    frame = Frame(kind, seq, payload)
    wire = frame.encode()
    assert wire[0] == SOF and wire[-1] == EOF and EOF not in wire[1:-1]
    assert FrameDecoder(max_body=400).feed(wire) == [frame]


registers = st.integers(min_value=0, max_value=U64)
addresses = st.integers(min_value=0, max_value=(1 << 52) - 1)
smc_steps = st.builds(
    SmcStep,
    st.integers(min_value=0, max_value=0xFFFF_FFFF),
    st.lists(registers, max_size=MAX_ARGS).map(tuple),
    st.integers(min_value=1, max_value=18),
)
access_steps = st.one_of(
    st.builds(AccessStep, addresses, st.just(False), st.sampled_from([1, 2, 4, 8])),
    st.sampled_from([1, 2, 4, 8]).flatmap(
        lambda size: st.builds(
            AccessStep, addresses, st.just(True), st.just(size), st.integers(0, (1 << (8 * size)) - 1)
        )
    ),
)
steps = st.one_of(
    smc_steps,
    st.builds(ReadStep, addresses, st.integers(min_value=0, max_value=4096)),
    st.builds(WriteStep, addresses, st.binary(max_size=64)),
    st.builds(FillStep, addresses, st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    access_steps,
)


def _canonical(step: Step) -> Step:
    """SMC arguments after the last non-zero one are not sent (the agent zeroes them)."""
    if isinstance(step, SmcStep):
        args = list(step.args)
        while args and args[-1] == 0:
            args.pop()
        return SmcStep(step.fid, tuple(args), step.results)
    return step


@given(steps)
def test_lone_request_round_trip(step: Step) -> None:
    msg, payload = encode_request(step)
    assert decode_request(msg, payload) == _canonical(step)


@given(st.lists(steps, max_size=40))
def test_batch_round_trip(batch: list[Step]) -> None:
    assert decode_batch(encode_batch(batch)) == [_canonical(s) for s in batch]


def test_batched_delegates_of_consecutive_granules_cost_three_bytes_each() -> None:
    delegates = [SmcStep(0xC400_0151, (0x8800_0000 + i * 0x1000,)) for i in range(10)]
    first = len(encode_batch(delegates[:1]))
    assert len(encode_batch(delegates)) - first == 9 * 3


def test_batch_reply_reports_the_fault_that_stopped_it() -> None:
    steps: list[Step] = [SmcStep(0xC400_0150, (0x10000,)), ReadStep(0xFDC0_0000, 8), SmcStep(0x8400_0000)]
    fault = Fault(0x25, 0x9600_0028, 0xFDC0_0000, gpf=True, description="GPT says realm")
    reply = BatchReply((encode_result(steps[0], (0, 0x10000, 0x10000, 0, 0)),), BatchStop.FAULT, fault=fault)
    results, stop, detail = BatchReply.decode_results(steps, reply.encode())
    assert results == [(0, 0x10000, 0x10000, 0, 0)]
    assert stop is BatchStop.FAULT
    assert detail == fault


def test_batch_reply_with_more_results_than_steps_is_malformed() -> None:
    reply = BatchReply((b"\x00", b"\x00")).encode()
    with pytest.raises(ProtocolError):
        BatchReply.decode_results([SmcStep(1)], reply)


def test_access_result_carries_value_or_fault() -> None:
    step = AccessStep(0x8000_0000)
    fault = Fault(0x25, 0x9600_0010, 0x1_0000_0000, gpf=False, description="no memory")
    for result in (AccessResult(value=0xDEAD_BEEF), AccessResult(fault=fault)):
        _, stop, _ = BatchReply.decode_results([step], BatchReply((encode_result(step, result),)).encode())
        assert stop is BatchStop.COMPLETE


def test_hello_reply_ignores_fields_a_later_minor_version_appends() -> None:
    reply = HelloReply(1, 7, 4160, 4, AgentCaps.SMC | AgentCaps.BATCH, 3, "agent")
    assert HelloReply.decode(reply.encode() + b"\x99\x01future") == reply


def test_info_round_trip_of_the_fvp_platform() -> None:
    config = PlatformConfig()
    info = InfoReply(
        config.pa_bits,
        config.regions,
        config.granule_pool,
        tuple(config.platform_names().items()),
        (("seed", "0"),),
    )
    assert InfoReply.decode(info.encode()) == info


def test_realm_run_round_trip_with_every_action_kind() -> None:
    actions = (
        RealmAction(RealmActionKind.RSI, fid=0xC400_0190, args=(0x10000,)),
        # A call loads exactly the registers it carries: trailing zeros are sent, not dropped.
        RealmAction(RealmActionKind.RSI, fid=0xC400_0192, args=(0,)),
        RealmAction(RealmActionKind.PSCI, fid=0x8400_0008),
        RealmAction(RealmActionKind.SMC, fid=0xC200_0000, args=(1, 0, 3, 0)),
        RealmAction(RealmActionKind.SMC, fid=0xC200_0000, args=tuple(range(1, 31))),
        RealmAction(RealmActionKind.HVC, imm=0xFEED, args=(7,)),
        RealmAction(RealmActionKind.MMIO, ipa=0x1000_0000, size=4, write=True, value=0xAA55),
        RealmAction(RealmActionKind.MMIO, ipa=0x80_0000_0000, size=1),
        RealmAction(RealmActionKind.SYSREG, fid=0xC020),
        RealmAction(RealmActionKind.HOST_CALL, imm=0x1_0000_0007, args=(1,) + (0,) * 29 + (U64,)),
        RealmAction(RealmActionKind.HOST_CALL, imm=3, addr=0x1100),
        *(RealmAction(k) for k in (RealmActionKind.WFI, RealmActionKind.WFE, RealmActionKind.IRQ)),
        *(RealmAction(k) for k in (RealmActionKind.FIQ, RealmActionKind.SERROR)),
    )
    run = RealmRun(0x8800_3000, 0x8800_4000, actions)
    assert RealmRun.decode(run.encode()) == run
    assert {a.kind for a in actions} == set(RealmActionKind)
    read_rim = RealmAction(RealmActionKind.RSI, fid=0xC400_0192, args=(0,))
    assert read_rim.encode() == bytes.fromhex("01 92 01 00 c4 01 00")
    # Observations keep their length: none, one loaded register, four, X0 and a Host call's 31 gprs.
    observed = ((), (0x1234_5678,), (0, 0x10000, 0x10000, 0), (0,) * 31 + (0x3030,))
    reply = RealmRunReply(
        (0, 0, 0, 0, 0), 4, tuple(RealmObservation(i, regs) for i, regs in enumerate(observed))
    )
    assert RealmRunReply.decode(reply.encode()) == reply
    with pytest.raises(ValueError, match="at most 32 registers"):
        RealmObservation(1, (0,) * 33)
    with pytest.raises(ValueError, match="up to 30 registers"):
        RealmAction(RealmActionKind.SMC, fid=0xC200_0000, args=(1,) * 31).encode()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (bytes.fromhex("00 00 01 0d"), "unknown realm action kind"),
        (bytes.fromhex("00 00 01 03 00 00 00 c2 1f"), "31 argument registers"),
        (bytes.fromhex("00 00 01 0c 02 00 00"), "reserved bits"),
        (bytes.fromhex("00 00 01 0c 00 00 20"), "32 gprs"),
        (bytes.fromhex("00 00 01 08 00 00 01 00"), "wider than 16 bits"),
    ],
)
def test_malformed_realm_runs_are_protocol_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        RealmRun.decode(payload)


def test_a_reply_observation_wider_than_a_host_call_is_malformed() -> None:
    with pytest.raises(ProtocolError, match="observation of 33 registers"):
        RealmRunReply.decode(bytes.fromhex("00 00 01 01 21 00"))


@given(st.binary(max_size=200))
def test_realm_run_decoders_raise_only_protocol_errors(payload: bytes) -> None:
    for decode in (RealmRun.decode, RealmRunReply.decode):
        try:
            decode(payload)
        except ProtocolError:
            pass


def test_system_register_names_and_encodings_round_trip() -> None:
    for name in ("ID_AA64PFR0_EL1", "MIDR_EL1", "S3_0_C15_C2_7"):
        assert sysreg_name(sysreg_encoding(name)) == name
    assert sysreg_name(sysreg_encoding("s3_0_c0_c4_0")) == "ID_AA64PFR0_EL1"
    with pytest.raises(ValueError, match="no known encoding"):
        sysreg_encoding("S3_0_C16_C0_0")


@given(st.binary(max_size=200), st.sampled_from([t for t in MsgType if t < 0x80 and t not in (1, 2, 8, 9)]))
def test_request_decoder_raises_only_protocol_errors(payload: bytes, msg: MsgType) -> None:
    try:
        decode_request(msg, payload)
    except ProtocolError:
        pass


@given(st.binary(max_size=300))
def test_batch_decoder_raises_only_protocol_errors(payload: bytes) -> None:
    try:
        decode_batch(payload)
    except ProtocolError:
        pass
