"""The agent link's wire protocol: framing, CRC-32C, messages and their byte-exact encodings.

``docs/agent-protocol.md`` is the normative description; this module is its
reference implementation and is used by both ends in Python (the host session in
:mod:`cca_hil.agent.link` and the device side in :mod:`cca_hil.agent.emulator`).

On the wire a frame is ``SOF COBS(body) EOF`` with ``SOF = 0x1E`` (ASCII Record
Separator) and ``EOF = 0x00``. COBS removes every zero from the body, so ``EOF``
only ever ends a frame, and neither delimiter is printable console text; every
byte that is not part of a valid frame is console output. The body is
``type:u8 seq:u16le payload crc32c:u32le``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

from cca_hil.arch.pas import Pas
from cca_hil.targets.base import AccessResult, Fault, MemoryRegion

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0

SOF = 0x1E
"""Start of frame: ASCII Record Separator, never printed by firmware."""
EOF = 0x00
"""End of frame: the byte COBS removes from the body."""

HEADER_SIZE = 3
CRC_SIZE = 4
MIN_BODY = HEADER_SIZE + CRC_SIZE
BASE_MAX_FRAME = 256
"""Largest body either side must accept before the handshake has negotiated a limit."""
MAX_REGS = 18
"""X0..X17: the SMCCC v1.2 argument and result registers."""
MAX_ARGS = MAX_REGS - 1
SEQ_MODULO = 1 << 16
U64 = (1 << 64) - 1


class ProtocolError(ValueError):
    """A frame or payload that does not follow the protocol (the link turns it into AgentLinkError)."""


# -- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) ---------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F6_3B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (init and final XOR 0xFFFFFFFF; ``crc32c(b"123456789") == 0xE3069283``)."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFF_FFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFF_FFFF


# -- COBS (Cheshire & Baker, 1999) ---------------------------------------------------------------


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result holds no zero byte and is at most len/254+1 longer."""
    out = bytearray()
    pos = 0
    while True:
        zero = data.find(0, pos, pos + 254)
        if zero >= 0:
            out.append(zero - pos + 1)
            out += data[pos:zero]
            pos = zero + 1
            continue
        block = data[pos : pos + 254]
        if len(block) == 254:
            # A full block implies no zero after it; a (possibly empty) block must still follow.
            out.append(0xFF)
            out += block
            pos += 254
            continue
        out.append(len(block) + 1)
        out += block
        return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; ProtocolError on a zero byte or a code that overruns."""
    out = bytearray()
    index = 0
    length = len(data)
    while index < length:
        code = data[index]
        if code == 0:
            raise ProtocolError("zero byte inside a COBS block")
        end = index + code
        if end > length:
            raise ProtocolError("COBS code runs past the end of the frame")
        block = data[index + 1 : end]
        if 0 in block:
            raise ProtocolError("zero byte inside a COBS block")
        out += block
        index = end
        if code < 0xFF and index < length:
            out.append(0)
    return bytes(out)


def max_encoded_size(body_size: int) -> int:
    """Wire size bound of a frame whose body has ``body_size`` bytes (SOF, COBS, EOF)."""
    return body_size + body_size // 254 + 3


# -- varints -------------------------------------------------------------------------------------


def uvarint(value: int) -> bytes:
    """LEB128 encoding of an unsigned integer (7 bits a byte, least significant group first)."""
    if value < 0:
        raise ValueError(f"uvarint of negative value {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int) -> int:
    """Map a 64-bit register value, read as signed, to an unsigned integer (0, -1, 1, -2 → 0, 1, 2, 3)."""
    value &= U64
    signed = value - (1 << 64) if value >> 63 else value
    return ((signed << 1) ^ (signed >> 63)) & U64


def unzigzag(value: int) -> int:
    """Inverse of :func:`zigzag`, returning the register value as an unsigned 64-bit integer."""
    return ((value >> 1) ^ -(value & 1)) & U64


def reg(value: int) -> bytes:
    """Wire form of a 64-bit register: zigzag then LEB128 (so -1 is one byte)."""
    return uvarint(zigzag(value))


class Reader:
    """A cursor over a payload; every read past the end or out of range raises ProtocolError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return len(self._data) - self._pos

    def u8(self) -> int:
        """One unsigned byte."""
        if self._pos >= len(self._data):
            raise ProtocolError("payload ends early")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u32(self) -> int:
        """A little-endian 32-bit word."""
        return int.from_bytes(self.take(4), "little")

    def uvarint(self) -> int:
        """A LEB128 unsigned integer of at most 64 bits (10 bytes)."""
        value = 0
        for shift in range(0, 70, 7):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > U64:
                    raise ProtocolError("varint exceeds 64 bits")
                return value
        raise ProtocolError("varint longer than 10 bytes")

    def reg(self) -> int:
        """A register in its zigzag wire form."""
        return unzigzag(self.uvarint())

    def take(self, size: int) -> bytes:
        """Exactly ``size`` raw bytes."""
        if size < 0 or self._pos + size > len(self._data):
            raise ProtocolError("payload ends early")
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def rest(self) -> bytes:
        """Everything not yet consumed."""
        return self.take(self.remaining)

    def text(self) -> str:
        """A string: uvarint length and UTF-8 bytes."""
        raw = self.take(self.uvarint())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not UTF-8") from exc

    def end(self) -> None:
        """Require the payload to be consumed (trailing bytes are only allowed in HELLO, INFO)."""
        if self.remaining:
            raise ProtocolError(f"{self.remaining} unexpected trailing bytes")


def text(value: str) -> bytes:
    """Wire form of a string: uvarint length and UTF-8 bytes."""
    raw = value.encode("utf-8")
    return uvarint(len(raw)) + raw


# -- message types -------------------------------------------------------------------------------

RESPONSE = 0x80
"""Bit set in the type of a response; the response type is the request type with this bit."""


class MsgType(enum.IntEnum):
    """Frame types. Requests go host → agent; the agent answers REQUEST | 0x80, FAULT or ERROR."""

    HELLO = 0x01
    INFO = 0x02
    SMC = 0x03
    READ = 0x04
    WRITE = 0x05
    FILL = 0x06
    ACCESS = 0x07
    REALM_RUN = 0x08
    BATCH = 0x09

    HELLO_REPLY = 0x81
    INFO_REPLY = 0x82
    SMC_REPLY = 0x83
    READ_REPLY = 0x84
    WRITE_REPLY = 0x85
    FILL_REPLY = 0x86
    ACCESS_REPLY = 0x87
    REALM_RUN_REPLY = 0x88
    BATCH_REPLY = 0x89

    LOG = 0xC0
    """Unsolicited agent → host: a log record (level, text); never answered."""
    NAK = 0xFD
    """Agent → host: a frame arrived damaged; the host resends its outstanding request at once."""
    FAULT = 0xFE
    """Response: the request's memory access took a synchronous exception."""
    ERROR = 0xFF
    """Response: the request was not executed (code, message)."""


class ErrorCode(enum.IntEnum):
    """Why the agent refused a request (ERROR payload); a refused request was not executed."""

    UNSUPPORTED = 1
    MALFORMED = 2
    TOO_LARGE = 3
    NO_SESSION = 4
    BAD_ARGUMENT = 5
    VERSION = 6
    INTERNAL = 7


class AgentCaps(enum.IntFlag):
    """What the agent can do, announced in HELLO_REPLY."""

    SMC = 0x01
    MEMORY = 0x02
    ACCESS = 0x04
    REALM = 0x08
    BATCH = 0x10
    LOG = 0x20
    ATTESTATION = 0x40
    """Realms can obtain attestation tokens: the platform's RMM signs them (RMM 1.0 A7)."""


class LogLevel(enum.IntEnum):
    """Severity of a LOG record."""

    ERROR = 1
    WARNING = 2
    INFO = 3
    DEBUG = 4


# -- frames --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: type, sequence number and payload (CRC already checked)."""

    type: int
    seq: int
    payload: bytes = b""

    def body(self) -> bytes:
        """The unstuffed body: header, payload and CRC-32C."""
        head = bytes((self.type,)) + (self.seq % SEQ_MODULO).to_bytes(2, "little") + self.payload
        return head + crc32c(head).to_bytes(4, "little")

    def encode(self) -> bytes:
        """The frame as it goes on the wire."""
        return bytes((SOF,)) + cobs_encode(self.body()) + bytes((EOF,))

    @classmethod
    def from_body(cls, body: bytes) -> Frame:
        """Check length and CRC of an unstuffed body; ProtocolError if either is wrong."""
        if len(body) < MIN_BODY:
            raise ProtocolError(f"frame body of {len(body)} bytes is shorter than {MIN_BODY}")
        head, crc = body[:-CRC_SIZE], int.from_bytes(body[-CRC_SIZE:], "little")
        if crc32c(head) != crc:
            raise ProtocolError("CRC mismatch")
        return cls(head[0], int.from_bytes(head[1:3], "little"), bytes(head[3:]))

    @property
    def crc(self) -> int:
        """The frame's CRC-32C (the agent keys its replay cache on sequence number and this)."""
        return int.from_bytes(self.body()[-CRC_SIZE:], "little")


@dataclass(frozen=True, slots=True)
class Text:
    """Console bytes seen outside any frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that started like a frame but are not a valid one (kept as console output)."""

    data: bytes
    reason: str


StreamEvent = Frame | Text | Garbage


class FrameDecoder:
    """Splits a byte stream into console text, valid frames and garbage; resynchronises at every SOF.

    States: TEXT (bytes are console output; SOF opens a frame) and FRAME (bytes are
    collected until EOF, which closes the frame, or until the collected bytes exceed
    what a ``max_body`` frame can take). A damaged frame is searched for a good frame
    starting after one of its SOF bytes (a lost EOF, a stray SOF), and an over-long one
    restarts at the SOF inside it (docs/agent-protocol.md §3.2). Nothing is ever dropped:
    the concatenation of every Text and Garbage event's data is the input with the valid
    frames removed.
    """

    def __init__(self, max_body: int = BASE_MAX_FRAME) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._in_frame = False

    @property
    def in_frame(self) -> bool:
        """True while a frame has been opened and not yet closed."""
        return self._in_frame

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Consume ``data``; return the events it completes (text is returned as soon as it is seen)."""
        events: list[StreamEvent] = []
        pos = 0
        size = len(data)
        while pos < size:
            if not self._in_frame:
                sof = data.find(SOF, pos)
                stop = size if sof < 0 else sof
                # A delimiter outside a frame is what a frame whose SOF was lost leaves behind.
                eof = data.find(EOF, pos, stop)
                if eof >= 0:
                    if eof > pos:
                        events.append(Text(bytes(data[pos:eof])))
                    events.append(Garbage(bytes((EOF,)), "EOF outside a frame"))
                    pos = eof + 1
                    continue
                if stop > pos:
                    events.append(Text(bytes(data[pos:stop])))
                if sof < 0:
                    break
                self._in_frame = True
                self._buf.clear()
                pos = sof + 1
                continue
            eof = data.find(EOF, pos)
            stop = size if eof < 0 else eof
            limit = max_encoded_size(self.max_body) - 2
            room = limit - len(self._buf)
            if stop - pos > room:
                self._buf += data[pos : pos + room]
                pos += room
                events.append(self._overflow())
                continue
            self._buf += data[pos:stop]
            if eof < 0:
                break
            pos = eof + 1
            events.extend(self._close())
        return events

    def flush(self, reason: str = "frame cut short by silence") -> list[StreamEvent]:
        """End a frame that stopped arriving; its bytes come back as garbage."""
        if not self._in_frame:
            return []
        return [self._give_up(reason)]

    def _give_up(self, reason: str) -> Garbage:
        garbage = Garbage(bytes((SOF,)) + bytes(self._buf), reason)
        self._in_frame = False
        self._buf.clear()
        return garbage

    def _overflow(self) -> Garbage:
        """Too long for a frame: a stray SOF opened it, so restart at the next SOF inside, if any."""
        restart = self._buf.find(SOF)
        if restart < 0:
            return self._give_up("frame longer than the negotiated maximum")
        garbage = Garbage(
            bytes((SOF,)) + bytes(self._buf[:restart]), "frame longer than the negotiated maximum"
        )
        del self._buf[: restart + 1]
        return garbage

    def _close(self) -> list[StreamEvent]:
        raw = bytes(self._buf)
        self._in_frame = False
        self._buf.clear()
        try:
            return [self._decode(raw)]
        except ProtocolError as exc:
            problem = str(exc)
        # A damaged or stray SOF may have swallowed the start of a good frame: the good frame then
        # begins after one of the SOF bytes inside. A frame's own body may hold SOF bytes too, so
        # try them from the first, a bounded number of times.
        start = raw.find(SOF)
        for _ in range(RESYNC_CANDIDATES):
            if start < 0:
                break
            try:
                frame = self._decode(raw[start + 1 :])
            except ProtocolError:
                start = raw.find(SOF, start + 1)
                continue
            return [Garbage(bytes((SOF,)) + raw[:start], problem), frame]
        return [Garbage(bytes((SOF,)) + raw + bytes((EOF,)), problem)]

    def _decode(self, raw: bytes) -> Frame:
        body = cobs_decode(raw)
        if len(body) > self.max_body:
            raise ProtocolError(f"frame body of {len(body)} bytes exceeds {self.max_body}")
        return Frame.from_body(body)


RESYNC_CANDIDATES = 32
"""SOF bytes inside a damaged frame at which the decoder tries to find a good frame."""


# -- handshake -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO request: the host's protocol version and the largest frame body it accepts."""

    major: int = PROTOCOL_MAJOR
    minor: int = PROTOCOL_MINOR
    max_frame: int = 65536

    def encode(self) -> bytes:
        """Payload bytes."""
        return bytes((self.major, self.minor)) + uvarint(self.max_frame)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload; fields appended by later minor versions are ignored."""
        r = Reader(payload)
        return cls(r.u8(), r.u8(), r.uvarint())


@dataclass(frozen=True, slots=True)
class HelloReply:
    """HELLO_REPLY: the agent's version, limits, capabilities and identity (layout frozen across majors)."""

    major: int
    minor: int
    max_frame: int
    replay_depth: int
    caps: AgentCaps
    boot_id: int
    agent: str

    def encode(self) -> bytes:
        """Payload bytes."""
        return (
            bytes((self.major, self.minor))
            + uvarint(self.max_frame)
            + bytes((self.replay_depth,))
            + uvarint(int(self.caps))
            + uvarint(self.boot_id)
            + text(self.agent)
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload; fields appended by later minor versions are ignored."""
        r = Reader(payload)
        major, minor = r.u8(), r.u8()
        return cls(major, minor, r.uvarint(), r.u8(), AgentCaps(r.uvarint()), r.uvarint(), r.text())


REGION_KINDS: tuple[Literal["dram", "device", "rom", "sram"], ...] = ("dram", "device", "rom", "sram")
GPI_OF_PAS: dict[Pas, int] = {
    Pas.NONE: 0x0,
    Pas.SECURE: 0x8,
    Pas.NONSECURE: 0x9,
    Pas.ROOT: 0xA,
    Pas.REALM: 0xB,
    Pas.ANY: 0xF,
}
"""PAS on the wire as its GPT GPI encoding (DDI0487 D9.5.2), so the agent can use GPT values as they are."""
PAS_OF_GPI = {gpi: pas for pas, gpi in GPI_OF_PAS.items()}


@dataclass(frozen=True, slots=True)
class InfoReply:
    """INFO_REPLY: platform facts the agent was built with (memory map, granule pool, names, facts)."""

    pa_bits: int
    regions: tuple[MemoryRegion, ...]
    granule_pool: tuple[tuple[int, int], ...]
    platform: tuple[tuple[str, int], ...]
    facts: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        """Payload bytes."""
        out = bytearray((self.pa_bits,))
        out += uvarint(len(self.regions))
        for region in self.regions:
            out += text(region.name) + uvarint(region.base) + uvarint(region.size)
            out += bytes((REGION_KINDS.index(region.kind), GPI_OF_PAS[region.pas]))
        out += uvarint(len(self.granule_pool))
        for base, size in self.granule_pool:
            out += uvarint(base) + uvarint(size)
        out += uvarint(len(self.platform))
        for name, value in self.platform:
            out += text(name) + uvarint(value)
        out += uvarint(len(self.facts))
        for key, fact in self.facts:
            out += text(key) + text(fact)
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload; fields appended by later minor versions are ignored."""
        r = Reader(payload)
        pa_bits = r.u8()
        regions = []
        for _ in range(r.uvarint()):
            name, base, size, kind, gpi = r.text(), r.uvarint(), r.uvarint(), r.u8(), r.u8()
            if kind >= len(REGION_KINDS) or gpi not in PAS_OF_GPI:
                raise ProtocolError(f"region {name!r}: kind {kind} or GPI {gpi:#x} unknown")
            regions.append(MemoryRegion(name, base, size, REGION_KINDS[kind], PAS_OF_GPI[gpi]))
        pool = tuple((r.uvarint(), r.uvarint()) for _ in range(r.uvarint()))
        platform = tuple((r.text(), r.uvarint()) for _ in range(r.uvarint()))
        facts = tuple((r.text(), r.text()) for _ in range(r.uvarint()))
        return cls(pa_bits, tuple(regions), pool, platform, facts)


# -- steps: the operations SMC/READ/WRITE/FILL/ACCESS carry alone or inside BATCH -----------------


class StepOp(enum.IntEnum):
    """Operation of a step inside BATCH (low four bits of the step header byte)."""

    SMC = 1
    READ = 2
    WRITE = 3
    FILL = 4
    ACCESS = 5


SHAPE_REF = 0x10
"""Step header flag: the SMC's FID, argument count and result count are entry ``(header >> 5) & 3``
of the batch's shape table instead of following in the step."""
SHAPE_INDEX_SHIFT = 5
SHAPE_TABLE_SIZE = 4

ACCESS_WRITE = 0x80
ACCESS_SIZES = (1, 2, 4, 8)


@dataclass
class DeltaState:
    """What BATCH encoding refers back to; a lone request starts from a fresh state (all zero)."""

    shapes: list[tuple[int, int, int]] = field(default_factory=list)
    """(FID, argument count, result count) of recent SMC steps, newest first, at most four."""
    args: list[int] = field(default_factory=lambda: [0] * MAX_ARGS)
    """X1..X17 of the previous SMC step."""
    pa: int = 0
    """Address of the previous memory step."""

    def remember(self, shape: tuple[int, int, int]) -> None:
        """Put a shape that was sent in full at the front of the table."""
        self.shapes.insert(0, shape)
        del self.shapes[SHAPE_TABLE_SIZE:]


def _pa_delta(state: DeltaState, pa: int) -> bytes:
    delta = reg(pa - state.pa)
    state.pa = pa & U64
    return delta


def _read_pa(r: Reader, state: DeltaState) -> int:
    state.pa = (state.pa + r.reg()) & U64
    return state.pa


@dataclass(frozen=True, slots=True)
class SmcStep:
    """An SMC issued by the agent at NS-EL2: FID, X1..X17 (missing ones are zero), results wanted."""

    fid: int
    args: tuple[int, ...] = ()
    results: int = 5
    op: ClassVar[StepOp] = StepOp.SMC

    def __post_init__(self) -> None:
        if len(self.args) > MAX_ARGS:
            raise ValueError(f"an SMC takes at most {MAX_ARGS} arguments, got {len(self.args)}")
        if not 1 <= self.results <= MAX_REGS:
            raise ValueError(f"results must be 1..{MAX_REGS}, got {self.results}")
        if not 0 <= self.fid <= 0xFFFF_FFFF:
            raise ValueError(f"FID {self.fid:#x} is not a 32-bit value")

    def registers(self) -> list[int]:
        """X1..X17 as the agent loads them."""
        regs = [a & U64 for a in self.args]
        return regs + [0] * (MAX_ARGS - len(regs))

    def encode(self, state: DeltaState, *, batched: bool = False) -> bytes:
        """Step body; in a batch, arguments are deltas from the previous SMC step's registers."""
        regs = self.registers()
        nargs = max((i + 1 for i, value in enumerate(regs) if value), default=0)
        out = bytearray()
        shape = (self.fid, nargs, self.results)
        if batched and shape in state.shapes:
            flags = SHAPE_REF | (state.shapes.index(shape) << SHAPE_INDEX_SHIFT)
        else:
            flags = 0
            out += self.fid.to_bytes(4, "little") + bytes((nargs, self.results))
            state.remember(shape)
        for i in range(nargs):
            out += reg(regs[i] - state.args[i])
        state.args = regs
        return (bytes((self.op | flags,)) if batched else b"") + bytes(out)

    @classmethod
    def decode(cls, r: Reader, state: DeltaState, flags: int = 0) -> SmcStep:
        """Parse a step body (after the header byte in a batch)."""
        if flags & SHAPE_REF:
            index = (flags >> SHAPE_INDEX_SHIFT) & (SHAPE_TABLE_SIZE - 1)
            if index >= len(state.shapes):
                raise ProtocolError(f"SMC step refers to shape {index} of {len(state.shapes)} known")
            fid, nargs, nres = state.shapes[index]
        else:
            fid, nargs, nres = r.u32(), r.u8(), r.u8()
            if nargs > MAX_ARGS or not 1 <= nres <= MAX_REGS:
                raise ProtocolError(f"SMC with {nargs} arguments and {nres} results")
            state.remember((fid, nargs, nres))
        regs = [0] * MAX_ARGS
        for i in range(nargs):
            regs[i] = (state.args[i] + r.reg()) & U64
        state.args = regs
        return cls(fid, tuple(regs[:nargs]), nres)


@dataclass(frozen=True, slots=True)
class ReadStep:
    """Read ``size`` bytes of Non-secure memory at ``pa``."""

    pa: int
    size: int
    op: ClassVar[StepOp] = StepOp.READ

    def encode(self, state: DeltaState, *, batched: bool = False) -> bytes:
        """Step body; the address is a zigzag delta from the previous memory step's address."""
        head = bytes((self.op,)) if batched else b""
        return head + _pa_delta(state, self.pa) + uvarint(self.size)

    @classmethod
    def decode(cls, r: Reader, state: DeltaState, flags: int = 0) -> ReadStep:
        """Parse a step body."""
        return cls(_read_pa(r, state), r.uvarint())


@dataclass(frozen=True, slots=True)
class WriteStep:
    """Write ``data`` to Non-secure memory at ``pa``."""

    pa: int
    data: bytes
    op: ClassVar[StepOp] = StepOp.WRITE

    def encode(self, state: DeltaState, *, batched: bool = False) -> bytes:
        """Step body; a lone WRITE carries the data to the end of the payload, a batched one a length."""
        if batched:
            return bytes((self.op,)) + _pa_delta(state, self.pa) + uvarint(len(self.data)) + self.data
        return _pa_delta(state, self.pa) + self.data

    @classmethod
    def decode(cls, r: Reader, state: DeltaState, flags: int = 0, *, batched: bool = True) -> WriteStep:
        """Parse a step body."""
        pa = _read_pa(r, state)
        return cls(pa, r.take(r.uvarint()) if batched else r.rest())


@dataclass(frozen=True, slots=True)
class FillStep:
    """Fill ``size`` bytes at ``pa`` with ``pattern`` (1 to 8 bytes) repeated."""

    pa: int
    size: int
    pattern: bytes = b"\x00"
    op: ClassVar[StepOp] = StepOp.FILL

    def __post_init__(self) -> None:
        if not 1 <= len(self.pattern) <= 8:
            raise ValueError(f"a fill pattern has 1 to 8 bytes, got {len(self.pattern)}")

    def encode(self, state: DeltaState, *, batched: bool = False) -> bytes:
        """Step body."""
        head = bytes((self.op,)) if batched else b""
        return (
            head + _pa_delta(state, self.pa) + uvarint(self.size) + bytes((len(self.pattern),)) + self.pattern
        )

    @classmethod
    def decode(cls, r: Reader, state: DeltaState, flags: int = 0) -> FillStep:
        """Parse a step body."""
        pa, size, count = _read_pa(r, state), r.uvarint(), r.u8()
        if not 1 <= count <= 8:
            raise ProtocolError(f"fill pattern of {count} bytes")
        return cls(pa, size, r.take(count))

    def expand(self) -> bytes:
        """The bytes the fill writes."""
        reps = -(-self.size // len(self.pattern))
        return (self.pattern * reps)[: self.size]


@dataclass(frozen=True, slots=True)
class AccessStep:
    """One probing load or store of 1, 2, 4 or 8 bytes that may fault (the fault is a result)."""

    pa: int
    write: bool = False
    size: int = 8
    value: int = 0
    op: ClassVar[StepOp] = StepOp.ACCESS

    def __post_init__(self) -> None:
        if self.size not in ACCESS_SIZES:
            raise ValueError(f"access size must be one of {ACCESS_SIZES}, got {self.size}")

    def encode(self, state: DeltaState, *, batched: bool = False) -> bytes:
        """Step body: mode byte (bit 7 store, bits 1:0 log2 size), address delta, store value."""
        head = bytes((self.op,)) if batched else b""
        mode = ACCESS_SIZES.index(self.size) | (ACCESS_WRITE if self.write else 0)
        body = bytes((mode,)) + _pa_delta(state, self.pa)
        if self.write:
            body += uvarint(self.value & ((1 << (8 * self.size)) - 1))
        return head + body

    @classmethod
    def decode(cls, r: Reader, state: DeltaState, flags: int = 0) -> AccessStep:
        """Parse a step body."""
        mode = r.u8()
        if mode & ~(ACCESS_WRITE | 0x03):
            raise ProtocolError(f"access mode {mode:#x} has reserved bits set")
        size = ACCESS_SIZES[mode & 0x03]
        write = bool(mode & ACCESS_WRITE)
        pa = _read_pa(r, state)
        value = r.uvarint() if write else 0
        if value >> (8 * size):
            raise ProtocolError(f"store value {value:#x} wider than {size} bytes")
        return cls(pa, write, size, value)


Step = SmcStep | ReadStep | WriteStep | FillStep | AccessStep
StepResult = tuple[int, ...] | bytes | None | AccessResult | Fault
"""SMC: registers; READ: data; WRITE/FILL: None; ACCESS: AccessResult; a faulting memory step: Fault."""

STEP_TYPES: dict[StepOp, type[SmcStep | ReadStep | WriteStep | FillStep | AccessStep]] = {
    StepOp.SMC: SmcStep,
    StepOp.READ: ReadStep,
    StepOp.WRITE: WriteStep,
    StepOp.FILL: FillStep,
    StepOp.ACCESS: AccessStep,
}
MSG_OF_OP = {
    StepOp.SMC: MsgType.SMC,
    StepOp.READ: MsgType.READ,
    StepOp.WRITE: MsgType.WRITE,
    StepOp.FILL: MsgType.FILL,
    StepOp.ACCESS: MsgType.ACCESS,
}
OP_OF_MSG: dict[int, StepOp] = {int(msg): op for op, msg in MSG_OF_OP.items()}


def encode_request(step: Step) -> tuple[MsgType, bytes]:
    """A step as a lone request: its message type and payload."""
    return MSG_OF_OP[step.op], step.encode(DeltaState())


def decode_request(msg: int, payload: bytes) -> Step:
    """Parse the payload of a lone SMC/READ/WRITE/FILL/ACCESS request."""
    op = OP_OF_MSG.get(msg)
    if op is None:
        raise ProtocolError(f"message type {msg:#x} does not carry a step")
    r = Reader(payload)
    step: Step
    if op is StepOp.WRITE:
        step = WriteStep.decode(r, DeltaState(), batched=False)
    else:
        step = STEP_TYPES[op].decode(r, DeltaState())
    r.end()
    return step


def encode_regs(regs: Sequence[int], results: int) -> bytes:
    """X0..X(results-1) with trailing zero registers left out: count byte, then zigzag varints."""
    values = [r & U64 for r in regs[:results]]
    while values and values[-1] == 0:
        values.pop()
    return bytes((len(values),)) + b"".join(reg(v) for v in values)


def decode_regs(r: Reader, results: int) -> tuple[int, ...]:
    """Inverse of :func:`encode_regs`, padded back to ``results`` registers."""
    count = r.u8()
    if count > results:
        raise ProtocolError(f"{count} result registers for an SMC that asked for {results}")
    values = [r.reg() for _ in range(count)]
    return tuple(values + [0] * (results - count))


def encode_fault(fault: Fault) -> bytes:
    """Fault record: EC, ESR, FAR, flags (bit 0: granule protection fault), description (<= 64 bytes)."""
    description = fault.description.encode()[:MAX_DESCRIPTION].decode("utf-8", "ignore")
    return (
        bytes((fault.exception_class & 0x3F,))
        + uvarint(fault.esr)
        + uvarint(fault.far)
        + bytes((1 if fault.gpf else 0,))
        + text(description)
    )


def decode_fault(r: Reader) -> Fault:
    """Inverse of :func:`encode_fault`."""
    ec, esr, far, flags = r.u8(), r.uvarint(), r.uvarint(), r.u8()
    return Fault(ec, esr, far, gpf=bool(flags & 1), description=r.text())


def encode_result(step: Step, result: StepResult) -> bytes:
    """The result of a step that completed (a memory step's fault is not encoded here)."""
    match step:
        case SmcStep():
            assert isinstance(result, tuple)
            return encode_regs(result, step.results)
        case ReadStep():
            assert isinstance(result, bytes) and len(result) == step.size
            return result
        case AccessStep():
            assert isinstance(result, AccessResult)
            if result.fault is not None:
                return b"\x01" + encode_fault(result.fault)
            return b"\x00" + uvarint((result.value or 0) & U64)
        case _:
            return b""


def decode_result(step: Step, r: Reader) -> StepResult:
    """Inverse of :func:`encode_result` for the step it answers."""
    match step:
        case SmcStep():
            return decode_regs(r, step.results)
        case ReadStep():
            return r.take(step.size)
        case AccessStep():
            tag = r.u8()
            if tag == 1:
                return AccessResult(fault=decode_fault(r))
            if tag != 0:
                raise ProtocolError(f"access result tag {tag}")
            return AccessResult(value=r.uvarint())
        case _:
            return None


def result_bound(step: Step) -> int:
    """Largest encoded result of ``step`` (used to keep a batch reply inside the frame limit)."""
    match step:
        case SmcStep():
            return 1 + 10 * step.results
        case ReadStep():
            return step.size
        case AccessStep():
            return 1 + FAULT_BOUND
        case _:
            return 0


MAX_DESCRIPTION = 64
"""Longest fault description or error message in bytes (longer ones are cut)."""
FAULT_BOUND = 1 + 10 + 10 + 1 + 1 + MAX_DESCRIPTION
"""Largest fault record."""


def batch_result_room(limit: int) -> int:
    """Bytes a BATCH_REPLY under frame limit ``limit`` has for step results, whatever stops it."""
    return limit - HEADER_SIZE - CRC_SIZE - 10 - 1 - FAULT_BOUND


class BatchStop(enum.IntEnum):
    """How a batch ended (last byte group of BATCH_REPLY)."""

    COMPLETE = 0
    FAULT = 1
    ERROR = 2
    FULL = 3


def encode_batch(steps: Sequence[Step]) -> bytes:
    """BATCH payload: step count, then each step with its header byte, delta-coded."""
    state = DeltaState()
    return uvarint(len(steps)) + b"".join(step.encode(state, batched=True) for step in steps)


def decode_batch(payload: bytes) -> list[Step]:
    """Parse a BATCH payload."""
    r = Reader(payload)
    state = DeltaState()
    count = r.uvarint()
    if count > len(payload):
        raise ProtocolError(f"batch claims {count} steps in {len(payload)} bytes")
    steps: list[Step] = []
    for _ in range(count):
        head = r.u8()
        try:
            op = StepOp(head & 0x0F)
        except ValueError:
            raise ProtocolError(f"unknown step operation {head & 0x0F}") from None
        flags = head & 0xF0
        if flags & 0x80 or (flags and op is not StepOp.SMC) or (flags and not flags & SHAPE_REF):
            raise ProtocolError(f"step header {head:#x} has reserved bits set")
        steps.append(STEP_TYPES[op].decode(r, state, flags))
    r.end()
    return steps


@dataclass(frozen=True, slots=True)
class BatchReply:
    """BATCH_REPLY: results of the executed steps and why the batch ended."""

    results: tuple[bytes, ...]
    """Encoded results, one per executed step (decoded against the steps by :meth:`decode_results`)."""
    stop: BatchStop = BatchStop.COMPLETE
    fault: Fault | None = None
    error: tuple[int, str] | None = None

    def encode(self) -> bytes:
        """Payload bytes: executed count, results, stop code and its fault or error record."""
        out = uvarint(len(self.results)) + b"".join(self.results) + bytes((self.stop,))
        if self.stop is BatchStop.FAULT:
            assert self.fault is not None
            out += encode_fault(self.fault)
        elif self.stop is BatchStop.ERROR:
            assert self.error is not None
            out += encode_error(self.error[0], self.error[1])
        return out

    @staticmethod
    def decode_results(
        steps: Sequence[Step], payload: bytes
    ) -> tuple[list[StepResult], BatchStop, Fault | tuple[int, str] | None]:
        """Results of the executed steps, the stop code, and the fault or (code, message) that stopped it."""
        r = Reader(payload)
        executed = r.uvarint()
        if executed > len(steps):
            raise ProtocolError(f"batch reply reports {executed} results for {len(steps)} steps")
        results = [decode_result(step, r) for step in steps[:executed]]
        try:
            stop = BatchStop(r.u8())
        except ValueError:
            raise ProtocolError("unknown batch stop code") from None
        detail: Fault | tuple[int, str] | None = None
        if stop is BatchStop.FAULT:
            detail = decode_fault(r)
        elif stop is BatchStop.ERROR:
            detail = (r.u8(), r.text())
        if stop is not BatchStop.COMPLETE and executed >= len(steps):
            raise ProtocolError(f"batch stopped ({stop.name}) after its last step")
        r.end()
        return results, stop, detail


def encode_error(code: int, message: str) -> bytes:
    """ERROR payload: code and a message of at most 64 bytes."""
    return bytes((code,)) + text(message.encode()[:MAX_DESCRIPTION].decode("utf-8", "ignore"))


def decode_error(payload: bytes) -> tuple[int, str]:
    """Parse an ERROR payload into (code, message)."""
    r = Reader(payload)
    return r.u8(), r.text()


# -- realm execution -----------------------------------------------------------------------------


class RealmActionKind(enum.IntEnum):
    """What the realm payload does next (DESIGN.md "Realm execution in sequences")."""

    RSI = 1
    PSCI = 2
    SMC = 3
    HVC = 4
    MMIO = 5
    WFI = 6
    WFE = 7
    SYSREG = 8
    IRQ = 9
    FIQ = 10
    SERROR = 11
    HOST_CALL = 12


_CALL_KINDS = (RealmActionKind.RSI, RealmActionKind.PSCI, RealmActionKind.SMC)
MAX_REALM_ARGS = 30
"""X1..X30: the registers a realm call can load (the realm payload's SMC)."""
HOST_CALL_GPRS = 31
"""RsiHostCall.gprs[0..30] (RMM 1.0 B5.4.5)."""
MAX_OBSERVED = 1 + HOST_CALL_GPRS
"""Most registers a realm observes for one action: X0 and a Host call's 31 gprs."""
HOST_CALL_ADDR = 0x01
"""HOST_CALL flags bit 0: the RsiHostCall's IPA follows; else the payload uses its own scratch one."""

SYSREG_ENCODINGS: dict[str, tuple[int, int, int, int, int]] = {
    "MIDR_EL1": (3, 0, 0, 0, 0),
    "MPIDR_EL1": (3, 0, 0, 0, 5),
    "REVIDR_EL1": (3, 0, 0, 0, 6),
    "ID_AA64PFR0_EL1": (3, 0, 0, 4, 0),
    "ID_AA64PFR1_EL1": (3, 0, 0, 4, 1),
    "ID_AA64ZFR0_EL1": (3, 0, 0, 4, 4),
    "ID_AA64SMFR0_EL1": (3, 0, 0, 4, 5),
    "ID_AA64DFR0_EL1": (3, 0, 0, 5, 0),
    "ID_AA64DFR1_EL1": (3, 0, 0, 5, 1),
    "ID_AA64AFR0_EL1": (3, 0, 0, 5, 4),
    "ID_AA64AFR1_EL1": (3, 0, 0, 5, 5),
    "ID_AA64ISAR0_EL1": (3, 0, 0, 6, 0),
    "ID_AA64ISAR1_EL1": (3, 0, 0, 6, 1),
    "ID_AA64ISAR2_EL1": (3, 0, 0, 6, 2),
    "ID_AA64MMFR0_EL1": (3, 0, 0, 7, 0),
    "ID_AA64MMFR1_EL1": (3, 0, 0, 7, 1),
    "ID_AA64MMFR2_EL1": (3, 0, 0, 7, 2),
}
"""(op0, op1, CRn, CRm, op2) of the registers a realm commonly reads (DDI0487 D23, ID registers)."""

_GENERIC_SYSREG = re.compile(r"S([0-3])_([0-7])_C(\d{1,2})_C(\d{1,2})_([0-7])", re.IGNORECASE)
"""The assembler's generic name ``S<op0>_<op1>_C<n>_C<m>_<op2>`` for any register."""


def _pack_sysreg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


_SYSREG_NAMES = {_pack_sysreg(*f): name for name, f in SYSREG_ENCODINGS.items()}


def sysreg_encoding(name: str) -> int:
    """op0:op1:CRn:CRm:op2 of a register as in MRS bits [20:5]; ValueError for a name with none known."""
    fields_ = SYSREG_ENCODINGS.get(name.upper())
    if fields_ is None:
        match = _GENERIC_SYSREG.fullmatch(name)
        if match is None or int(match.group(3)) > 15 or int(match.group(4)) > 15:
            raise ValueError(
                f"system register {name!r} has no known encoding: use S<op0>_<op1>_C<n>_C<m>_<op2> "
                f"(known: {', '.join(SYSREG_ENCODINGS)})"
            )
        op0, op1, crn, crm, op2 = (int(match.group(i)) for i in range(1, 6))
        fields_ = (op0, op1, crn, crm, op2)
    return _pack_sysreg(*fields_)


def sysreg_name(encoding: int) -> str:
    """The register an encoding names: its name when known, else ``S<op0>_<op1>_C<n>_C<m>_<op2>``."""
    known = _SYSREG_NAMES.get(encoding)
    if known is not None:
        return known
    op0, op1 = (encoding >> 14) & 3, (encoding >> 11) & 7
    crn, crm, op2 = (encoding >> 7) & 15, (encoding >> 3) & 15, encoding & 7
    return f"S{op0}_{op1}_C{crn}_C{crm}_{op2}"


@dataclass(frozen=True, slots=True)
class RealmAction:
    """One action of the realm payload; which fields count depends on ``kind``."""

    kind: RealmActionKind
    fid: int = 0
    """RSI/PSCI/SMC: function identifier; SYSREG: op0:op1:CRn:CRm:op2 packed as in MRS bits [20:5]."""
    args: tuple[int, ...] = ()
    """RSI/PSCI/SMC: X1.., every one loaded, zeros too; HVC: X0..; HOST_CALL: RsiHostCall.gprs[0..]."""
    imm: int = 0
    """HVC and HOST_CALL immediate."""
    ipa: int = 0
    """MMIO: the address the realm accesses."""
    size: int = 8
    write: bool = False
    value: int = 0
    addr: int | None = None
    """HOST_CALL: IPA of the RsiHostCall the payload builds; None: its own (the end of its first RAM page)."""

    def encode(self) -> bytes:
        """Action bytes: kind, then the kind's fields (docs/agent-protocol.md §6.4)."""
        out = bytearray((self.kind,))
        if self.kind in _CALL_KINDS:
            if len(self.args) > MAX_REALM_ARGS:
                raise ValueError(f"a realm call loads up to {MAX_REALM_ARGS} registers, not {len(self.args)}")
            out += self.fid.to_bytes(4, "little") + bytes((len(self.args),))
            out += b"".join(reg(a) for a in self.args)
        elif self.kind is RealmActionKind.HVC:
            out += self.imm.to_bytes(2, "little") + bytes((len(self.args),))
            out += b"".join(reg(a) for a in self.args)
        elif self.kind is RealmActionKind.MMIO:
            out += AccessStep(self.ipa, self.write, self.size, self.value).encode(DeltaState())
        elif self.kind is RealmActionKind.SYSREG:
            out += self.fid.to_bytes(4, "little")
        elif self.kind is RealmActionKind.HOST_CALL:
            if len(self.args) > HOST_CALL_GPRS:
                raise ValueError(f"RsiHostCall has {HOST_CALL_GPRS} gprs, got {len(self.args)}")
            if self.addr is None:
                out.append(0)
            else:
                out += bytes((HOST_CALL_ADDR,)) + reg(self.addr)
            out += reg(self.imm) + bytes((len(self.args),)) + b"".join(reg(a) for a in self.args)
        return bytes(out)

    @classmethod
    def decode(cls, r: Reader) -> RealmAction:
        """Parse one action."""
        try:
            kind = RealmActionKind(r.u8())
        except ValueError:
            raise ProtocolError("unknown realm action kind") from None
        if kind in _CALL_KINDS:
            fid, count = r.u32(), r.u8()
            if count > MAX_REALM_ARGS:
                raise ProtocolError(f"realm call with {count} argument registers")
            return cls(kind, fid=fid, args=tuple(r.reg() for _ in range(count)))
        if kind is RealmActionKind.HVC:
            imm = int.from_bytes(r.take(2), "little")
            count = r.u8()
            if count > MAX_REGS:
                raise ProtocolError(f"HVC with {count} registers")
            return cls(kind, imm=imm, args=tuple(r.reg() for _ in range(count)))
        if kind is RealmActionKind.MMIO:
            acc = AccessStep.decode(r, DeltaState())
            return cls(kind, ipa=acc.pa, size=acc.size, write=acc.write, value=acc.value)
        if kind is RealmActionKind.SYSREG:
            encoding = r.u32()
            if encoding >> 16:
                raise ProtocolError(f"system register encoding {encoding:#x} wider than 16 bits")
            return cls(kind, fid=encoding)
        if kind is RealmActionKind.HOST_CALL:
            flags = r.u8()
            if flags & ~HOST_CALL_ADDR:
                raise ProtocolError(f"host call flags {flags:#x} have reserved bits set")
            addr = r.reg() if flags & HOST_CALL_ADDR else None
            imm, count = r.reg(), r.u8()
            if count > HOST_CALL_GPRS:
                raise ProtocolError(f"host call with {count} gprs")
            return cls(kind, imm=imm, addr=addr, args=tuple(r.reg() for _ in range(count)))
        return cls(kind)


@dataclass(frozen=True, slots=True)
class RealmRun:
    """REALM_RUN request: RMI_REC_ENTER(rec, run), the realm payload then performing ``actions`` in order.

    ``actions`` are the REC's actions the realm has not begun yet (the host keeps the queue); a
    call the realm was in the middle of at its last exit is completed first, by the agent.
    """

    rec_pa: int
    run_pa: int
    actions: tuple[RealmAction, ...] = ()

    def encode(self) -> bytes:
        """Payload bytes."""
        out = uvarint(self.rec_pa) + uvarint(self.run_pa) + uvarint(len(self.actions))
        return out + b"".join(a.encode() for a in self.actions)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload."""
        r = Reader(payload)
        rec, run, count = r.uvarint(), r.uvarint(), r.uvarint()
        if count > len(payload):
            raise ProtocolError(f"{count} realm actions in {len(payload)} bytes")
        actions = tuple(RealmAction.decode(r) for _ in range(count))
        r.end()
        return cls(rec, run, actions)


@dataclass(frozen=True, slots=True)
class RealmObservation:
    """What the realm saw as the result of one of its actions: the registers that hold it, X0 first.

    As many registers as the action has results (X0..X3 for most calls, X0..X8 for
    RSI_MEASUREMENT_READ, X0 and RsiHostCall.gprs for a Host call, the loaded register
    for an emulated MMIO load, none for an action without a result).
    """

    index: int
    """0: the call the realm was in the middle of when this REC last exited (its answer came with this
    entry); k >= 1: the k-th action of this REALM_RUN request."""
    regs: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.regs) > MAX_OBSERVED:
            raise ValueError(f"an observation holds at most {MAX_OBSERVED} registers, got {len(self.regs)}")


@dataclass(frozen=True, slots=True)
class RealmRunReply:
    """REALM_RUN_REPLY: X0..X4 of RMI_REC_ENTER, how many actions the realm began, what it observed."""

    regs: tuple[int, ...]
    started: int = 0
    """Actions of the request the realm began, in order; the rest stay queued on the host."""
    observations: tuple[RealmObservation, ...] = ()

    def encode(self) -> bytes:
        """Payload bytes."""
        out = encode_regs(self.regs, 5) + uvarint(self.started) + uvarint(len(self.observations))
        for obs in self.observations:
            out += uvarint(obs.index) + bytes((len(obs.regs),)) + encode_regs(obs.regs, len(obs.regs))
        return out

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload."""
        r = Reader(payload)
        regs = decode_regs(r, 5)
        started, count = r.uvarint(), r.uvarint()
        if count > len(payload):
            raise ProtocolError(f"{count} observations in {len(payload)} bytes")
        obs = []
        for _ in range(count):
            index, size = r.uvarint(), r.u8()
            if size > MAX_OBSERVED:
                raise ProtocolError(f"observation of {size} registers")
            obs.append(RealmObservation(index, decode_regs(r, size)))
        r.end()
        return cls(regs, started, tuple(obs))


# -- log -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRecord:
    """LOG payload: a severity and a line of text from the agent."""

    level: LogLevel
    message: str

    def encode(self) -> bytes:
        """Payload bytes."""
        return bytes((self.level,)) + text(self.message)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload (unknown levels read as DEBUG)."""
        r = Reader(payload)
        raw = r.u8()
        level = LogLevel(raw) if raw in LogLevel._value2member_map_ else LogLevel.DEBUG
        return cls(level, r.text())
