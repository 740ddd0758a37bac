"""The C agent's parsers against arbitrary input, under AddressSanitizer and UBSan.

Random bytes on the line and well-framed requests with random payloads (a valid CRC, so they
reach the parsers of every message) must never crash or hang the agent: each request gets exactly
one answer with its sequence number, garbage gets NAKs, and the agent answers a normal call after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import serial
from agent_c_support import build_host_agent_asan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cca_hil.agent.protocol import Frame, FrameDecoder, Hello, MsgType, SmcStep, encode_request
from cca_hil.model.machine import Machine
from cca_hil.tools.agent_shim import HostAgent

PSCI_VERSION = 0x8400_0000
ANSWER_WAIT = 60.0
"""Seconds an answer may take on a loaded machine (the sanitised agent is slower too)."""
FUZZED_TYPES = [t for t in range(0x100) if t not in (MsgType.FILL, MsgType.BATCH)]
"""Every type but FILL and BATCH, whose random sizes could make the model write up to 64 MiB."""


class Line:
    """The host end of the agent's pty, with a frame decoder."""

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port
        self.decoder = FrameDecoder(65536)

    def call(self, frame: Frame) -> Frame:
        """Send one request and return its answer (LOG frames skipped), resending it as the host does.

        The same bytes go again after a quiet second (what garbage before it may have damaged is
        NAKed, and a request the agent already ran is answered from its replay cache).
        """
        deadline = time.monotonic() + ANSWER_WAIT
        while time.monotonic() < deadline:
            self.port.write(frame.encode())
            resend = time.monotonic() + 1.0
            while time.monotonic() < resend:
                for event in self.decoder.feed(self.port.read(4096)):
                    if isinstance(event, Frame) and event.seq == frame.seq and event.type != MsgType.LOG:
                        return event
        raise AssertionError(f"no answer to {frame} within {ANSWER_WAIT} s")


@pytest.fixture(scope="module")
def line() -> Iterator[Line]:
    binary = build_host_agent_asan()
    with HostAgent(Machine(), binary=binary) as agent:
        port = serial.serial_for_url(agent.path, timeout=0.05)
        try:
            link = Line(port)
            assert link.call(Frame(MsgType.HELLO, 1, Hello().encode())).type == MsgType.HELLO_REPLY
            yield link
            assert agent.process.poll() is None, "the agent died"
        finally:
            port.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    msg=st.sampled_from(FUZZED_TYPES),
    seq=st.integers(2, 0xFFFF),
    payload=st.binary(max_size=300),
)
def test_a_request_with_any_payload_gets_one_answer_and_the_agent_lives(
    line: Line, msg: int, seq: int, payload: bytes
) -> None:
    frame = Frame(msg, seq, payload)
    if msg & 0x80:
        # Responses are ignored by the agent: prove it is still there with a normal call.
        line.port.write(frame.encode())
        frame = Frame(MsgType.SMC, seq ^ 1 or 2, encode_request(SmcStep(PSCI_VERSION))[1])
    if msg == MsgType.HELLO and (len(payload) < 2 or payload[0] != 1):
        # A HELLO of another major (or malformed) leaves no session: open one again afterwards.
        line.call(frame)
        frame = Frame(MsgType.HELLO, seq, Hello().encode())
    answer = line.call(frame)
    assert answer.seq == frame.seq
    assert answer.type in (frame.type | 0x80, MsgType.ERROR, MsgType.FAULT)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=600))
def test_garbage_on_the_line_never_stops_the_agent(line: Line, garbage: bytes) -> None:
    line.port.write(garbage)
    # Whatever the garbage left half-open, a silence ends it; then a normal call is answered.
    time.sleep(0.05)
    answer = line.call(Frame(MsgType.SMC, len(garbage), encode_request(SmcStep(PSCI_VERSION))[1]))
    assert answer.type == MsgType.SMC_REPLY
    assert answer.payload[0] >= 1
