"""The agent's side of the protocol at the frame level: what any agent (the C one too) must answer.

These talk raw frames to the device end of a stream, as a conformance check of the
agent's rules in docs/agent-protocol.md §8 and §9.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.agent.emulator import AgentEmulator
from cca_hil.agent.protocol import (
    AccessStep,
    BatchReply,
    BatchStop,
    ErrorCode,
    FillStep,
    Frame,
    FrameDecoder,
    Hello,
    HelloReply,
    MsgType,
    ReadStep,
    SmcStep,
    Step,
    Text,
    WriteStep,
    decode_error,
    encode_batch,
    encode_request,
)
from cca_hil.agent.streams import SocketStream, stream_pair
from cca_hil.arch.rmi_1_0 import RMI_1_0

DELEGATE = RMI_1_0["granule_delegate"].fid
POOL = 0x9000_0000


class Wire:
    """The host end of a stream, speaking raw frames; every wait is bounded."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(65536)
        self.frames: list[Frame] = []

    def wait_for_boot(self, timeout: float = 2.0) -> None:
        """Read console text until the agent's banner says it is ready (earlier input is discarded)."""
        text = b""
        deadline = time.monotonic() + timeout
        while b"ready\r\n" not in text:
            if time.monotonic() > deadline:
                raise AssertionError(f"agent did not boot: {text!r}")
            text += b"".join(e.data for e in self.decoder.feed(self.stream.read(4096)) if isinstance(e, Text))

    def send(self, frame: Frame | bytes) -> None:
        self.stream.write(frame.encode() if isinstance(frame, Frame) else frame)

    def receive(self, timeout: float = 2.0) -> Frame:
        deadline = time.monotonic() + timeout
        while not self.frames:
            if time.monotonic() > deadline:
                raise AssertionError("no frame from the agent")
            self.frames += [e for e in self.decoder.feed(self.stream.read(4096)) if isinstance(e, Frame)]
        return self.frames.pop(0)

    def hello(self, seq: int = 1, major: int = 1) -> HelloReply:
        self.send(Frame(MsgType.HELLO, seq, Hello(major, 0, 65536).encode()))
        reply = self.receive()
        assert reply.type == MsgType.HELLO_REPLY and reply.seq == seq
        if reply.type == MsgType.HELLO_REPLY and major == 1:
            log = self.receive()
            assert log.type == MsgType.LOG
        return HelloReply.decode(reply.payload)


@pytest.fixture
def agent() -> Iterator[tuple[AgentEmulator, Wire]]:
    host, device = stream_pair(timeout=0.02)
    emulator = AgentEmulator(gap=0.02, max_frame=512)
    emulator.start(device)
    try:
        wire = Wire(host)
        wire.wait_for_boot()
        yield emulator, wire
    finally:
        emulator.stop()
        host.close()
        device.close()


def _delegate(seq: int, pa: int) -> Frame:
    msg, payload = encode_request(SmcStep(DELEGATE, (pa,)))
    return Frame(msg, seq, payload)


def test_requests_before_hello_are_refused_and_not_executed(agent: tuple[AgentEmulator, Wire]) -> None:
    emulator, wire = agent
    wire.send(_delegate(5, POOL))
    reply = wire.receive()
    assert (reply.type, reply.seq) == (MsgType.ERROR, 5)
    assert decode_error(reply.payload)[0] == ErrorCode.NO_SESSION
    assert emulator.executed == 0


def test_a_repeated_request_is_answered_from_the_cache_not_run_again(
    agent: tuple[AgentEmulator, Wire],
) -> None:
    emulator, wire = agent
    wire.hello()
    wire.send(_delegate(2, POOL))
    first = wire.receive()
    wire.send(_delegate(2, POOL))
    again = wire.receive()
    assert first == again and first.payload == b"\x00"
    assert emulator.executed == 1 and emulator.replays == 1


def test_same_seq_with_other_content_is_a_new_request(agent: tuple[AgentEmulator, Wire]) -> None:
    emulator, wire = agent
    wire.hello()
    wire.send(_delegate(2, POOL))
    wire.receive()
    wire.send(_delegate(2, POOL + 0x1000))
    assert wire.receive().payload == b"\x00"
    assert emulator.executions[(1, 2)] == 2 and emulator.replays == 0


def test_hello_empties_the_replay_cache(agent: tuple[AgentEmulator, Wire]) -> None:
    emulator, wire = agent
    wire.hello()
    wire.send(_delegate(2, POOL))
    wire.receive()
    wire.hello(seq=3)
    wire.send(_delegate(2, POOL))
    # Run again, in the new session: the granule is already delegated, so RMI_ERROR_INPUT.
    assert wire.receive().payload[0] == 1
    assert emulator.replays == 0


def test_garbage_is_answered_with_a_nak(agent: tuple[AgentEmulator, Wire]) -> None:
    emulator, wire = agent
    wire.hello()
    damaged = bytearray(_delegate(2, POOL).encode())
    damaged[6] ^= 0x04
    wire.send(bytes(damaged))
    assert wire.receive().type == MsgType.NAK
    wire.send(b"\x1e\x05\x01")  # cut short: the agent ends it after its gap
    assert wire.receive().type == MsgType.NAK
    assert emulator.executed == 0


def test_hello_of_another_major_version_gets_the_agents_version_and_no_session(
    agent: tuple[AgentEmulator, Wire],
) -> None:
    emulator, wire = agent
    reply = wire.hello(major=9)
    assert (reply.major, reply.minor) == (1, 0)
    assert not emulator.in_session


def test_unknown_type_and_malformed_payload_are_refused(agent: tuple[AgentEmulator, Wire]) -> None:
    _, wire = agent
    wire.hello()
    wire.send(Frame(0x3F, 4, b""))
    unknown = wire.receive()
    wire.send(Frame(MsgType.SMC, 5, b"\x51\x01"))
    malformed = wire.receive()
    assert decode_error(unknown.payload)[0] == ErrorCode.UNSUPPORTED
    assert decode_error(malformed.payload)[0] == ErrorCode.MALFORMED


def test_frames_with_the_response_bit_are_ignored(agent: tuple[AgentEmulator, Wire]) -> None:
    emulator, wire = agent
    wire.hello()
    wire.send(Frame(MsgType.SMC_REPLY, 7, b"\x00"))
    wire.send(_delegate(8, POOL))
    assert wire.receive().seq == 8
    assert emulator.executed == 1


def test_batch_that_cannot_fit_its_results_stops_full(agent: tuple[AgentEmulator, Wire]) -> None:
    _, wire = agent
    wire.hello()
    steps: list[Step] = [ReadStep(POOL + i * 0x1000, 200) for i in range(4)]
    wire.send(Frame(MsgType.BATCH, 2, encode_batch(steps)))
    reply = wire.receive()
    results, stop, _ = BatchReply.decode_results(steps, reply.payload)
    # A 512-byte frame has 407 bytes for results once a fault record is provided for: two reads.
    assert stop is BatchStop.FULL and len(results) == 2


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=120))
def test_every_request_gets_exactly_one_answer_with_its_seq(kind: int, seq: int, payload: bytes) -> None:
    emulator = AgentEmulator()
    emulator.respond(Frame(MsgType.HELLO, 0, Hello().encode()))
    answer = FrameDecoder(65536).feed(emulator.respond(Frame(kind, seq, payload)))
    if kind & 0x80:
        assert answer == []
        return
    assert len(answer) >= 1 and isinstance(answer[0], Frame)
    reply = answer[0]
    assert reply.seq == seq
    assert reply.type in {kind | 0x80, MsgType.FAULT, MsgType.ERROR}
    if reply.type == MsgType.ERROR:
        assert decode_error(reply.payload)[0] != ErrorCode.INTERNAL


any_address = st.one_of(
    st.integers(0, (1 << 64) - 1), st.sampled_from([0, 0x9000_0000, 0xFDC0_0000, 0xFFFF_F000])
)
valid_steps = st.one_of(
    st.builds(
        SmcStep, st.integers(0, 0xFFFF_FFFF), st.lists(st.integers(0, (1 << 64) - 1), max_size=17).map(tuple)
    ),
    st.builds(ReadStep, any_address, st.integers(0, 600)),
    st.builds(WriteStep, any_address, st.binary(max_size=64)),
    st.builds(FillStep, any_address, st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.builds(AccessStep, any_address, st.booleans(), st.sampled_from([1, 2, 4, 8])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_steps, min_size=1, max_size=5), st.booleans())
def test_well_formed_requests_anywhere_in_the_address_space_are_answered(
    steps: list[Step], batched: bool
) -> None:
    emulator = AgentEmulator(max_frame=1024)
    emulator.respond(Frame(MsgType.HELLO, 0, Hello().encode()))
    if batched:
        frames = [Frame(MsgType.BATCH, 1, encode_batch(steps))]
    else:
        frames = [
            Frame(msg, seq, payload) for seq, (msg, payload) in enumerate(map(encode_request, steps), 1)
        ]
    for frame in frames:
        reply = FrameDecoder(65536).feed(emulator.respond(frame))[0]
        assert isinstance(reply, Frame) and reply.seq == frame.seq
        if reply.type == MsgType.ERROR:
            assert decode_error(reply.payload)[0] == ErrorCode.BAD_ARGUMENT
