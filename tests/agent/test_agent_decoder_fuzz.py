"""The frame decoder against garbage, damage and console text: nothing escapes, nothing is lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.agent.protocol import EOF, SOF, Frame, FrameDecoder, Garbage, StreamEvent, Text

MAX_BODY = 512

frames = st.builds(Frame, st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=MAX_BODY - 7))
console_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00\x1e"), max_size=80).map(
    lambda s: s.encode()
)


def _feed(data: bytes, cuts: list[int]) -> list[StreamEvent]:
    decoder = FrameDecoder(MAX_BODY)
    events: list[StreamEvent] = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        events += decoder.feed(data[start:cut])
        start = max(start, cut)
    events += decoder.feed(data[start:])
    events += decoder.flush()
    return events


def _reassemble(events: list[StreamEvent]) -> bytes:
    """The input as the events account for it: console bytes and the decoded frames' wire form."""
    return b"".join(e.encode() if isinstance(e, Frame) else e.data for e in events)


def _console(events: list[StreamEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Text | Garbage))


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=8))
def test_random_bytes_never_raise_and_all_come_back_as_console(data: bytes, cuts: list[int]) -> None:
    events = _feed(data, cuts)
    decoded = [e for e in events if isinstance(e, Frame)]
    # A random frame passes CRC-32C with probability 2**-32: any frame seen here is really in the input.
    for frame in decoded:
        assert frame.encode()[1:] in data
    assert _reassemble(events) == data


@given(
    st.lists(st.one_of(frames, console_text), max_size=12),
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_frames_between_console_text_are_all_decoded_and_text_is_kept(
    parts: list[Frame | bytes], cuts: list[int]
) -> None:
    wire = b"".join(p.encode() if isinstance(p, Frame) else p for p in parts)
    events = _feed(wire, cuts)
    assert [e for e in events if isinstance(e, Frame)] == [p for p in parts if isinstance(p, Frame)]
    assert _console(events) == b"".join(p for p in parts if isinstance(p, bytes))
    assert not any(isinstance(e, Garbage) for e in events)
    assert _reassemble(events) == wire


@settings(max_examples=300)
@given(
    st.lists(frames, min_size=1, max_size=6),
    st.data(),
)
def test_damaged_frames_are_garbage_and_the_good_ones_after_them_still_decode(
    good: list[Frame], data: st.DataObject
) -> None:
    wire = bytearray()
    expected: list[Frame] = []
    for frame in good:
        encoded = bytearray(frame.encode())
        mutation = data.draw(st.sampled_from(["none", "flip", "drop", "dup", "truncate", "stray-sof"]))
        if mutation == "none":
            expected.append(frame)
        elif mutation == "stray-sof":
            # Console noise that looks like the start of a frame: the good frame must still come through.
            encoded[:0] = bytes((SOF,)) + data.draw(console_text)
            expected.append(frame)
        else:
            index = data.draw(st.integers(0, len(encoded) - 1))
            if mutation == "flip":
                encoded[index] ^= 1 << data.draw(st.integers(0, 7))
            elif mutation == "drop":
                del encoded[index]
            elif mutation == "dup":
                encoded.insert(index, encoded[index])
            else:
                # A frame cut short and closed (an agent that reset mid-frame, then printed).
                encoded = encoded[:index] + bytes((EOF,))
        wire += encoded
        wire += data.draw(console_text)
    events = _feed(bytes(wire), data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    assert _reassemble(events) == bytes(wire)
    decoded = [e for e in events if isinstance(e, Frame)]
    # Damage is detected (CRC-32C, COBS structure), every undamaged frame survives, nothing else appears.
    for frame in expected:
        assert frame in decoded
    for frame in decoded:
        assert frame in good


def test_unterminated_stray_sof_is_released_as_console_by_flush() -> None:
    decoder = FrameDecoder(MAX_BODY)
    assert decoder.feed(b"boot\x1eing") == [Text(b"boot")]
    assert decoder.in_frame
    assert decoder.flush() == [Garbage(b"\x1eing", "frame cut short by silence")]


def test_overlong_frame_restarts_at_the_next_sof_inside() -> None:
    decoder = FrameDecoder(64)
    frame = Frame(0x83, 7, b"\x01\x02")
    events = decoder.feed(b"\x1e" + b"A" * 200 + frame.encode())
    assert frame in events
    assert b"".join(e.data for e in events if isinstance(e, Text | Garbage)) == b"\x1e" + b"A" * 200
