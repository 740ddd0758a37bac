"""The host side of the agent link: a session with the resident agent over any byte stream.

One reader thread runs beside the caller, because console text must reach the log
as it arrives even while no call is in progress. It splits the stream into console
text (to the console sink, flushed at once) and frames (to the caller's inbox).
Calls are stop-and-wait: one request in flight, resent with the same sequence number
after a timeout, a damaged frame or a NAK, so the agent replays rather than re-runs
it. Every wait is bounded by a phase of :class:`LinkTimeouts`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from cca_hil.agent.errors import (
    AgentDisconnectedError,
    AgentRefusedError,
    AgentRestartedError,
    AgentTimeoutError,
    AgentVersionError,
    FrameTooLargeError,
    MemoryFaultError,
)
from cca_hil.agent.protocol import (
    BASE_MAX_FRAME,
    CRC_SIZE,
    HEADER_SIZE,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    RESPONSE,
    SEQ_MODULO,
    AccessStep,
    AgentCaps,
    BatchReply,
    BatchStop,
    DeltaState,
    ErrorCode,
    FillStep,
    Frame,
    FrameDecoder,
    Garbage,
    Hello,
    HelloReply,
    InfoReply,
    LogRecord,
    MsgType,
    ProtocolError,
    Reader,
    ReadStep,
    RealmAction,
    RealmRun,
    RealmRunReply,
    SmcStep,
    Step,
    StepResult,
    Text,
    WriteStep,
    batch_result_room,
    decode_error,
    decode_fault,
    decode_result,
    encode_batch,
    encode_request,
    result_bound,
)
from cca_hil.agent.streams import ByteStream, bytes_waiting
from cca_hil.errors import CapabilityError, GranuleProtectionFault
from cca_hil.resource import Resource
from cca_hil.targets.base import AccessOp, AccessResult, Capability, Fault

ConsoleSink = Callable[[bytes], object] | IO[bytes]
"""Where console text goes: a callable taking bytes, or a binary file (flushed after every write)."""

_WIRE_OVERHEAD = HEADER_SIZE + CRC_SIZE
_ADDRESS_BOUND = 10
"""Largest address field (a zigzag varint of a 64-bit delta)."""
_CONSOLE_TAIL = 2048


@dataclass(frozen=True, slots=True)
class LinkTimeouts:
    """Bounds on every wait of the link, by phase (like HTTPX's ``Timeout``); seconds."""

    boot: float = 10.0
    """From opening the link until the agent answers HELLO (covers a board still booting)."""
    handshake: float = 0.5
    """One HELLO attempt; HELLO is repeated until ``boot`` runs out."""
    request: float = 2.0
    """One attempt of an ordinary request (SMC, access, small batch)."""
    bulk: float = 5.0
    """One attempt of a request that carries a memory transfer or a realm run."""
    gap: float = 0.1
    """Silence that ends a partly received frame (treated as damaged: resend at once)."""

    def __post_init__(self) -> None:
        for name in ("boot", "handshake", "request", "bulk", "gap"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LinkTimeouts.{name} must be positive")


@dataclass(slots=True)
class LinkStats:
    """Counters of one link session, for traces, tests and the benchmark."""

    requests: int = 0
    resends: int = 0
    frames_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    garbage: int = 0
    naks: int = 0
    console_bytes: int = 0


_CAPABILITY_OF = {
    AgentCaps.MEMORY: Capability.MEMORY,
    AgentCaps.ACCESS: Capability.ACCESS,
    AgentCaps.REALM: Capability.REALM_EXEC,
    AgentCaps.ATTESTATION: Capability.ATTESTATION,
}

_DEAD = object()
_DAMAGED = object()
_MIN_CHUNK = 128
"""Smallest frame body a noisy line shrinks bulk transfers to."""
_BULK_RETRIES = 3
_GROW_AFTER = 16
"""Clean chunks in a row after which a shrunk chunk size doubles again."""


class AgentLink(Resource):
    """A session with the resident agent: handshake, then SMCs, memory, accesses, batches, realm runs."""

    def __init__(
        self,
        stream: ByteStream,
        *,
        timeouts: LinkTimeouts | None = None,
        retries: int = 8,
        console: ConsoleSink | None = None,
        trace: Callable[[str], object] | None = None,
        max_frame: int = 65536,
        name: str = "agent",
    ) -> None:
        self.stream = stream
        self.timeouts = timeouts or LinkTimeouts()
        self.retries = retries
        self.name = name
        self.max_frame = max_frame
        self.stats = LinkStats()
        self._console = console
        self._trace = trace
        self._inbox: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._write_lock = threading.Lock()
        # One call at a time: stop-and-wait has a single request in flight.
        self._call_lock = threading.RLock()
        self._seq = 0
        self._limit = BASE_MAX_FRAME
        self._hello: HelloReply | None = None
        self._info: InfoReply | None = None
        self._dead: BaseException | None = None
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._chunk = BASE_MAX_FRAME
        self._clean = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> HelloReply:
        """Start the reader and shake hands with the agent (phase ``boot``); idempotent."""
        if self._reader is None:
            # A pySerial port opened without a timeout would block the reader forever.
            if hasattr(self.stream, "timeout"):
                self.stream.timeout = min(self.timeouts.gap / 2, 0.05)
            self._stop.clear()
            self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-reader", daemon=True)
            self._reader.start()
        try:
            return self.hello()
        except BaseException:
            # A failed open leaves nothing running: `with AgentLink(...)` never reaches __exit__.
            self.close()
            raise

    def close(self) -> None:
        """Stop the reader (bounded wait); the stream itself belongs to the caller."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        self._stop.set()
        reader.join(timeout=max(1.0, 4 * self.timeouts.gap))

    # -- handshake and facts ---------------------------------------------------------------------

    @property
    def frame_limit(self) -> int:
        """Largest frame body either direction may carry (agreed in the handshake)."""
        return self._limit

    def hello(self) -> HelloReply:
        """The agent's HELLO_REPLY, shaking hands first if that has not happened yet."""
        if self._hello is not None:
            return self._hello
        if self._reader is None:
            return self.open()
        with self._call_lock:
            return self._hello or self._handshake()

    def _handshake(self) -> HelloReply:
        payload = Hello(PROTOCOL_MAJOR, PROTOCOL_MINOR, self.max_frame).encode()
        deadline = time.monotonic() + self.timeouts.boot
        seq = self._next_seq()
        wire = Frame(MsgType.HELLO, seq, payload).encode()
        attempts = 0
        self._drain()
        while (remaining := deadline - time.monotonic()) > 0:
            attempts += 1
            self._send(wire, f"HELLO seq={seq}")
            frame = self._await(seq, min(self.timeouts.handshake, remaining), early=False)
            if not isinstance(frame, Frame):
                continue
            if frame.type == MsgType.ERROR:
                code, message = self._error_of(frame)
                raise AgentRefusedError(f"{self.name}: agent refused HELLO: {message}", code=code, seq=seq)
            if frame.type != MsgType.HELLO_REPLY:
                raise self._unexpected(frame, MsgType.HELLO)
            # The first two bytes of HELLO_REPLY are the version in every major version.
            if len(frame.payload) >= 2 and frame.payload[0] != PROTOCOL_MAJOR:
                agent_version = (frame.payload[0], frame.payload[1])
                raise AgentVersionError(agent_version, (PROTOCOL_MAJOR, PROTOCOL_MINOR))
            try:
                reply = HelloReply.decode(frame.payload)
            except ProtocolError as exc:
                raise self._malformed(frame, exc) from exc
            self._limit = max(BASE_MAX_FRAME, min(self.max_frame, reply.max_frame))
            self._chunk = self._limit
            self._hello = reply
            self._log(
                f"session: agent {reply.agent!r} protocol {reply.major}.{reply.minor} "
                f"max_frame={reply.max_frame} caps={reply.caps!r} boot_id={reply.boot_id}"
            )
            return reply
        self._raise_if_dead()
        raise AgentTimeoutError(
            f"{self.name}: no agent answered HELLO within {self.timeouts.boot:g} s "
            f"(boot, {attempts} attempts)" + self._console_hint(),
            phase="boot",
            seq=seq,
            attempts=attempts,
        )

    def info(self) -> InfoReply:
        """Platform facts the agent reports (memory map, granule pool, ``platform.*`` names); cached."""
        if self._info is None:
            frame = self._transact(MsgType.INFO, b"", self.timeouts.request, "request")
            self._expect(frame, MsgType.INFO)
            try:
                self._info = InfoReply.decode(frame.payload)
            except ProtocolError as exc:
                raise self._malformed(frame, exc) from exc
        return self._info

    def capabilities(self) -> frozenset[str]:
        """Target capabilities (:class:`~cca_hil.targets.base.Capability`) the agent's HELLO announced.

        ``rme`` is not among them: whether an RMM answers is for RMI_VERSION to tell.
        """
        caps = self.hello().caps
        names = {Capability.CONSOLE}
        for flag, name in _CAPABILITY_OF.items():
            if caps & flag:
                names.add(name)
        return frozenset(names)

    def require(self, cap: AgentCaps, capability: str) -> None:
        """Raise CapabilityError unless the agent announced ``cap``."""
        if not self.hello().caps & cap:
            raise CapabilityError(capability, self.name)

    # -- operations ------------------------------------------------------------------------------

    def smc(self, fid: int, *args: int, results: int = 5) -> tuple[int, ...]:
        """An SMC issued by the agent at NS-EL2; X0..X(results-1) come back."""
        self.require(AgentCaps.SMC, Capability.RME)
        step = SmcStep(fid, tuple(args), results)
        value = self._single(step, self.timeouts.request, "request")
        assert isinstance(value, tuple)
        return value

    def read(self, pa: int, size: int) -> bytes:
        """Read Non-secure memory (GranuleProtectionFault on a GPF) in frames as large as the line allows."""
        self.require(AgentCaps.MEMORY, Capability.MEMORY)
        out = bytearray()
        while len(out) < size:
            length = min(self._chunk - _WIRE_OVERHEAD, size - len(out))
            value = self._bulk(ReadStep(pa + len(out), length))
            assert isinstance(value, bytes)
            out += value
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        """Write Non-secure memory (GranuleProtectionFault on a GPF) in frames as large as the line allows."""
        self.require(AgentCaps.MEMORY, Capability.MEMORY)
        offset = 0
        while offset < len(data):
            length = min(self._chunk - _WIRE_OVERHEAD - _ADDRESS_BOUND, len(data) - offset)
            self._bulk(WriteStep(pa + offset, data[offset : offset + length]))
            offset += length

    def _bulk(self, step: ReadStep | WriteStep) -> StepResult:
        """One chunk of a transfer; on a line too noisy for the chunk size, retry smaller pieces.

        Reads and writes of the same bytes are idempotent, so giving up on a damaged
        request and sending its first half under a new sequence number is safe.
        """
        before = self.stats.resends
        try:
            # Give up early while a smaller chunk could still get through; at the floor, use every retry.
            retries = self.retries if self._chunk <= _MIN_CHUNK else min(self.retries, _BULK_RETRIES)
            result = self._single(step, self.timeouts.bulk, "bulk", retries=retries)
        except AgentTimeoutError as exc:
            if not exc.damaged or self._chunk <= _MIN_CHUNK:
                raise
            self._chunk = max(_MIN_CHUNK, self._chunk // 2)
            self._clean = 0
            self._log(f"bulk: line damages {exc.attempts} attempts in a row, chunk now {self._chunk} B")
            if isinstance(step, ReadStep):
                return self._bulk(ReadStep(step.pa, min(step.size, self._chunk - _WIRE_OVERHEAD)))
            self._bulk(WriteStep(step.pa, step.data[: self._chunk - _WIRE_OVERHEAD - _ADDRESS_BOUND]))
            rest = step.data[self._chunk - _WIRE_OVERHEAD - _ADDRESS_BOUND :]
            if rest:
                self.write(step.pa + len(step.data) - len(rest), rest)
            return None
        if isinstance(step, ReadStep) and isinstance(result, bytes) and len(result) < step.size:
            raise self._malformed(Frame(MsgType.READ_REPLY, self._seq), ProtocolError("short read"))
        self._clean = 0 if self.stats.resends != before else self._clean + 1
        if self._clean >= _GROW_AFTER and self._chunk < self._limit:
            self._chunk = min(self._limit, self._chunk * 2)
            self._clean = 0
        return result

    def fill(self, pa: int, size: int, pattern: bytes = b"\x00") -> None:
        """Fill Non-secure memory with a repeated 1..8-byte pattern (one frame whatever the size)."""
        self.require(AgentCaps.MEMORY, Capability.MEMORY)
        self._single(FillStep(pa, size, pattern), self.timeouts.bulk, "bulk")

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        """One probing load or store that may fault; the fault is returned, not raised."""
        self.require(AgentCaps.ACCESS, Capability.ACCESS)
        result = self._single(AccessStep(pa, op == "write", size, value), self.timeouts.request, "request")
        assert isinstance(result, AccessResult)
        return result

    def realm_run(self, rec_pa: int, run_pa: int, actions: Sequence[RealmAction] = ()) -> RealmRunReply:
        """RMI_REC_ENTER through the agent, the realm payload performing ``actions`` (phase ``bulk``)."""
        self.require(AgentCaps.REALM, Capability.REALM_EXEC)
        payload = RealmRun(rec_pa, run_pa, tuple(actions)).encode()
        frame = self._transact(MsgType.REALM_RUN, payload, self.timeouts.bulk, "bulk")
        self._expect(frame, MsgType.REALM_RUN)
        try:
            return RealmRunReply.decode(frame.payload)
        except ProtocolError as exc:
            raise self._malformed(frame, exc) from exc

    def batch(self, steps: Sequence[Step]) -> list[StepResult]:
        """Run ``steps`` on the agent in as few frames as the limit allows; one result per executed step.

        The list ends early at a read/write/fill that faulted: its entry is the Fault and
        the steps after it were not executed.
        """
        self.require(AgentCaps.BATCH, "batch")
        results: list[StepResult] = []
        pending = list(steps)
        while pending:
            group = self._fit(pending)
            frame = self._transact(MsgType.BATCH, encode_batch(group), self.timeouts.bulk, "bulk")
            self._expect(frame, MsgType.BATCH)
            try:
                done, stop, detail = BatchReply.decode_results(group, frame.payload)
            except ProtocolError as exc:
                raise self._malformed(frame, exc) from exc
            results += done
            if stop is BatchStop.FAULT:
                assert isinstance(detail, Fault)
                results.append(detail)
                return results
            if stop is BatchStop.ERROR:
                assert isinstance(detail, tuple)
                code, message = detail
                raise AgentRefusedError(
                    f"{self.name}: batch step {len(results)} refused: {message}", code=code, seq=frame.seq
                )
            if stop is BatchStop.FULL and not done:
                raise FrameTooLargeError(result_bound(group[0]), self._limit, "batch step result")
            pending = pending[len(done) :]
        return results

    # -- request machinery -----------------------------------------------------------------------

    def _fit(self, steps: Sequence[Step]) -> list[Step]:
        """The longest prefix of ``steps`` whose request and worst-case reply fit in one frame."""
        room = self._limit - _WIRE_OVERHEAD - 5  # step count varint
        reply_room = batch_result_room(self._limit)
        state = DeltaState()
        group: list[Step] = []
        used = reply_used = 0
        for step in steps:
            size = len(step.encode(state, batched=True))
            bound = result_bound(step)
            if group and (used + size > room or reply_used + bound > reply_room):
                break
            if used + size > room:
                raise FrameTooLargeError(used + size + _WIRE_OVERHEAD, self._limit, "batch step")
            group.append(step)
            used += size
            reply_used += bound
        return group

    def _single(self, step: Step, timeout: float, phase: str, *, retries: int | None = None) -> StepResult:
        msg, payload = encode_request(step)
        frame = self._transact(msg, payload, timeout, phase, retries=retries)
        if frame.type == MsgType.FAULT:
            try:
                fault = decode_fault(Reader(frame.payload))
            except ProtocolError as exc:
                raise self._malformed(frame, exc) from exc
            write = isinstance(step, WriteStep | FillStep)
            if fault.gpf:
                raise GranuleProtectionFault(fault.far, write=write)
            raise MemoryFaultError(fault, write=write)
        self._expect(frame, msg)
        try:
            r = Reader(frame.payload)
            result = decode_result(step, r)
            r.end()
        except ProtocolError as exc:
            raise self._malformed(frame, exc) from exc
        return result

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_MODULO
        return self._seq

    def _transact(
        self, msg: MsgType, payload: bytes, timeout: float, phase: str, *, retries: int | None = None
    ) -> Frame:
        """Send one request until its answer arrives or the attempts run out; returns the answer."""
        with self._call_lock:
            return self._exchange(msg, payload, timeout, phase, retries)

    def _exchange(
        self, msg: MsgType, payload: bytes, timeout: float, phase: str, retries: int | None
    ) -> Frame:
        self.hello()
        seq = self._next_seq()
        frame = Frame(msg, seq, payload)
        size = len(payload) + _WIRE_OVERHEAD
        if size > self._limit:
            raise FrameTooLargeError(size, self._limit, f"{msg.name} request")
        wire = frame.encode()
        self._drain()
        self.stats.requests += 1
        attempts = (self.retries if retries is None else retries) + 1
        damaged = False
        for attempt in range(attempts):
            if attempt:
                self.stats.resends += 1
            self._send(wire, f"{msg.name} seq={seq} attempt={attempt + 1}")
            answer = self._await(seq, timeout, early=True)
            if answer is None or answer is _DAMAGED:
                damaged = damaged or answer is _DAMAGED
                continue
            assert isinstance(answer, Frame)
            if answer.type == MsgType.ERROR:
                code, message = self._error_of(answer)
                if code == ErrorCode.NO_SESSION:
                    self._hello = None
                    maybe = " (it may have run before the reset)" if attempt else " (it was not executed)"
                    raise AgentRestartedError(
                        f"{self.name}: agent was reset and lost the session during "
                        f"{msg.name} seq={seq}{maybe}" + self._console_hint()
                    )
                label = ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code)
                raise AgentRefusedError(
                    f"{self.name}: agent refused {msg.name}: {label}: {message}",
                    code=code,
                    seq=seq,
                )
            return answer
        self._raise_if_dead()
        raise AgentTimeoutError(
            f"{self.name}: agent stopped answering: no reply to {msg.name} seq={seq} "
            f"after {attempts} attempts of {timeout:g} s ({phase})" + self._console_hint(),
            phase=phase,
            seq=seq,
            attempts=attempts,
            damaged=damaged,
        )

    def _await(self, seq: int, timeout: float, *, early: bool) -> Frame | object | None:
        """The answer to ``seq``; None after the timeout, _DAMAGED on damage or a NAK when ``early``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self._inbox.get(timeout=remaining)
            except queue.Empty:
                return None
            if item is _DEAD:
                self._inbox.put(_DEAD)
                self._raise_if_dead()
            if isinstance(item, Garbage):
                # Damage seen on the way in: our answer may be what was damaged, so do not wait it out.
                if early:
                    return _DAMAGED
                continue
            assert isinstance(item, Frame)
            if item.type == MsgType.NAK:
                self.stats.naks += 1
                if early:
                    return _DAMAGED
                continue
            if item.seq == seq and item.type >= RESPONSE:
                return item
            self._log(f"stale frame type={item.type:#x} seq={item.seq} (waiting for {seq})")
        return None

    def _send(self, wire: bytes, what: str) -> None:
        self._raise_if_dead()
        self._log(f"tx {what} {len(wire)} B")
        try:
            with self._write_lock:
                self.stream.write(wire)
        except (OSError, ValueError) as exc:
            self._dead = exc
            raise AgentDisconnectedError(f"{self.name}: cannot write to the agent: {exc}") from exc
        self.stats.bytes_out += len(wire)

    def _drain(self) -> None:
        """Forget frames and damage left over from earlier exchanges (late replays, stale NAKs)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is _DEAD:
                self._inbox.put(_DEAD)
                return

    def _raise_if_dead(self) -> None:
        if self._dead is not None:
            raise AgentDisconnectedError(
                f"{self.name}: connection to the agent lost: {self._dead}" + self._console_hint()
            ) from self._dead

    # -- answers ---------------------------------------------------------------------------------

    def _expect(self, frame: Frame, request: MsgType) -> None:
        if frame.type != request | RESPONSE:
            raise self._unexpected(frame, request)

    def _unexpected(self, frame: Frame, request: MsgType) -> AgentRefusedError:
        name = MsgType(frame.type).name if frame.type in MsgType._value2member_map_ else f"{frame.type:#x}"
        return AgentRefusedError(
            f"{self.name}: agent answered {request.name} seq={frame.seq} with {name}",
            code=ErrorCode.MALFORMED,
            seq=frame.seq,
        )

    def _malformed(self, frame: Frame, exc: ProtocolError) -> AgentRefusedError:
        return AgentRefusedError(
            f"{self.name}: malformed reply type={frame.type:#x} seq={frame.seq}: {exc}",
            code=ErrorCode.MALFORMED,
            seq=frame.seq,
        )

    def _error_of(self, frame: Frame) -> tuple[int, str]:
        try:
            return decode_error(frame.payload)
        except ProtocolError as exc:
            raise self._malformed(frame, exc) from exc

    # -- the reader ------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = FrameDecoder(self.max_frame)
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                data = self.stream.read(1)
                if data:
                    more = bytes_waiting(self.stream)
                    if more:
                        data += self.stream.read(more)
            except (OSError, ValueError, TypeError) as exc:
                # pySerial raises SerialException (an OSError) for a closed socket or a vanished
                # device; a port closed under the reader raises TypeError/ValueError.
                if not self._stop.is_set():
                    self._dead = exc
                    self._log(f"reader: stream failed: {exc}")
                self._inbox.put(_DEAD)
                for event in decoder.flush("stream closed"):
                    self._dispatch(event)
                return
            now = time.monotonic()
            if data:
                last = now
                self.stats.bytes_in += len(data)
                events = decoder.feed(data)
            elif decoder.in_frame and now - last >= self.timeouts.gap:
                events = decoder.flush()
            else:
                continue
            for event in events:
                self._dispatch(event)

    def _dispatch(self, event: Frame | Text | Garbage) -> None:
        if isinstance(event, Text):
            self._to_console(event.data)
            return
        if isinstance(event, Garbage):
            self.stats.garbage += 1
            self._log(f"rx garbage ({event.reason}) {len(event.data)} B")
            # Whatever is not a valid frame is console output, even if it started like a frame.
            self._to_console(event.data, text=False)
            self._inbox.put(event)
            return
        self.stats.frames_in += 1
        if event.type == MsgType.LOG:
            try:
                record = LogRecord.decode(event.payload)
            except ProtocolError:
                return
            self._to_console(f"[agent {record.level.name.lower()}] {record.message}\n".encode())
            return
        self._inbox.put(event)

    def _to_console(self, data: bytes, *, text: bool = True) -> None:
        self.stats.console_bytes += len(data)
        if text:
            # Only text feeds error hints: damaged frames would make them unreadable.
            self._tail.append(data)
            self._tail_size += len(data)
            while self._tail_size - len(self._tail[0]) > _CONSOLE_TAIL:
                self._tail_size -= len(self._tail.popleft())
        sink = self._console
        if sink is None:
            return
        if callable(sink):
            sink(data)
        else:
            sink.write(data)
            sink.flush()

    @property
    def console_tail(self) -> bytes:
        """The last console output seen (about 2 KiB), for error messages."""
        return b"".join(self._tail)[-_CONSOLE_TAIL:]

    def _console_hint(self) -> str:
        lines = [
            line.strip()
            for line in self.console_tail.decode("utf-8", "replace").splitlines()
            if line.strip().isprintable() and line.strip()
        ]
        return f"; last console line: {lines[-1]!r}" if lines else "; the agent printed nothing"

    def _log(self, message: str) -> None:
        if self._trace is not None:
            self._trace(message)
