"""The byte-level examples in docs/agent-protocol.md are what the encoder produces (the doc cannot drift).

Run this file as a script to print every example block, e.g. after a deliberate change:
``python tests/agent/test_agent_doc_examples.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cca_hil.agent.protocol import (
    AgentCaps,
    BatchReply,
    ErrorCode,
    Frame,
    FrameDecoder,
    Hello,
    HelloReply,
    LogLevel,
    LogRecord,
    MsgType,
    RealmAction,
    RealmActionKind,
    RealmObservation,
    RealmRun,
    RealmRunReply,
    SmcStep,
    WriteStep,
    encode_batch,
    encode_error,
    encode_fault,
    encode_request,
    encode_result,
)
from cca_hil.targets.base import Fault

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent-protocol.md"
DELEGATE = 0xC400_0151
DELEGATES = [SmcStep(DELEGATE, (0x8800_0000 + i * 0x1000,)) for i in range(3)]
REALM_RUN = RealmRun(
    0x8800_3000,
    0x8800_4000,
    (
        RealmAction(RealmActionKind.RSI, fid=0xC400_0190, args=(0x10000,)),
        RealmAction(RealmActionKind.HOST_CALL, imm=0x33, args=(5,)),
        RealmAction(RealmActionKind.WFI),
    ),
)
"""RSI_VERSION(1.0), a Host call (imm 0x33, gprs[0] = 5) in the payload's own RsiHostCall, then WFI."""
GPF = Fault(0x25, 0x9600_0028, 0xFDC0_0000, gpf=True, description="")


def _frame(msg: MsgType, seq: int, payload: bytes) -> Frame:
    return Frame(msg, seq, payload)


EXAMPLES: dict[str, Frame] = {
    "hello": _frame(MsgType.HELLO, 1, Hello(1, 0, 65536).encode()),
    "hello-reply": _frame(
        MsgType.HELLO_REPLY,
        1,
        HelloReply(1, 0, 4160, 4, AgentCaps.SMC | AgentCaps.MEMORY | AgentCaps.ACCESS, 7, "agent").encode(),
    ),
    "smc": _frame(MsgType.SMC, 2, encode_request(DELEGATES[0])[1]),
    "smc-reply-success": _frame(MsgType.SMC_REPLY, 2, encode_result(DELEGATES[0], (0, 0, 0, 0, 0))),
    "smc-reply-error": _frame(MsgType.SMC_REPLY, 3, encode_result(DELEGATES[0], (1, 0, 0, 0, 0))),
    "write": _frame(MsgType.WRITE, 4, encode_request(WriteStep(0x8800_1000, b"\x00\x11\x22\x33"))[1]),
    "write-reply": _frame(MsgType.WRITE_REPLY, 4, b""),
    "fault": _frame(MsgType.FAULT, 5, encode_fault(GPF)),
    "batch": _frame(MsgType.BATCH, 6, encode_batch(DELEGATES)),
    "batch-reply": _frame(
        MsgType.BATCH_REPLY,
        6,
        BatchReply(tuple(encode_result(s, (0, 0, 0, 0, 0)) for s in DELEGATES)).encode(),
    ),
    "realm-run": _frame(MsgType.REALM_RUN, 7, REALM_RUN.encode()),
    "realm-run-reply": _frame(
        MsgType.REALM_RUN_REPLY,
        7,
        RealmRunReply((0, 0, 0, 0, 0), 2, (RealmObservation(1, (0, 0x10000, 0x10000, 0)),)).encode(),
    ),
    "error": _frame(MsgType.ERROR, 9, encode_error(ErrorCode.NO_SESSION, "no HELLO")),
    "nak": _frame(MsgType.NAK, 0, b""),
    "log": _frame(MsgType.LOG, 1, LogRecord(LogLevel.INFO, "hi").encode()),
}


def _hex(data: bytes, label: str) -> str:
    lines = []
    for start in range(0, len(data), 16):
        prefix = label if start == 0 else " " * len(label)
        lines.append(prefix + " ".join(f"{b:02x}" for b in data[start : start + 16]))
    return "\n".join(lines)


def render(name: str) -> str:
    """The example block for ``name`` as it appears in the document."""
    frame = EXAMPLES[name]
    return _hex(frame.body(), "body: ") + "\n" + _hex(frame.encode(), "wire: ")


_BLOCK = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```text\n(.*?)\n```", re.S)


def _documented() -> dict[str, str]:
    return dict(_BLOCK.findall(DOC.read_text(encoding="utf-8")))


def test_every_example_is_in_the_document_once() -> None:
    names = [name for name, _ in _BLOCK.findall(DOC.read_text(encoding="utf-8"))]
    assert sorted(names) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_documented_bytes_are_what_the_encoder_produces(name: str) -> None:
    assert _documented().get(name) == render(name), f"update the doc block:\n{render(name)}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_documented_wire_bytes_decode_back_to_the_frame(name: str) -> None:
    wire_lines = _documented()[name].split("wire: ", 1)[1]
    wire = bytes.fromhex(" ".join(wire_lines.split()))
    assert FrameDecoder(8192).feed(wire) == [EXAMPLES[name]]


if __name__ == "__main__":
    for example in EXAMPLES:
        print(f"<!-- example: {example} -->\n```text\n{render(example)}\n```\n")
