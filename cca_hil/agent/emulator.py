"""The device side of the agent link, backed by the model: what the resident agent does, in Python.

It serves one byte stream at a time — a pty master, a TCP connection, an in-process
socketpair — and behaves like the firmware: boot text first, then frames; at most
one execution per request (a replay cache keyed by sequence number and CRC); NAK
for damaged input; no session before HELLO. It counts executions per sequence
number so tests can prove the at-most-once guarantee, and it can be told to die in
the middle of a call. It is also the reference the C agent (``tools/agent/``) follows.
"""

from __future__ import annotations

import importlib.util
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cca_hil.agent.protocol import (
    CRC_SIZE,
    HEADER_SIZE,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    RESPONSE,
    U64,
    AccessStep,
    AgentCaps,
    BatchReply,
    BatchStop,
    ErrorCode,
    FillStep,
    Frame,
    FrameDecoder,
    Garbage,
    Hello,
    HelloReply,
    InfoReply,
    LogLevel,
    LogRecord,
    MsgType,
    ProtocolError,
    ReadStep,
    RealmAction,
    RealmActionKind,
    RealmObservation,
    RealmRun,
    RealmRunReply,
    SmcStep,
    Step,
    StepResult,
    WriteStep,
    batch_result_room,
    decode_batch,
    decode_request,
    encode_error,
    encode_fault,
    encode_result,
    result_bound,
    sysreg_name,
)
from cca_hil.agent.streams import ByteStream, SocketStream
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.rsi_1_0 import HOST_CALL_GPRS, RSI_1_0
from cca_hil.errors import GranuleProtectionFault
from cca_hil.model.machine import DFSC_GPF_ON_ACCESS, EC_DATA_ABORT_SAME_EL, Machine, data_abort_esr
from cca_hil.model.realm import Realm, Rec
from cca_hil.model.realm_exec import Action as RealmExecAction
from cca_hil.model.realm_exec import Fault as RealmExecFault
from cca_hil.model.realm_exec import (
    Hvc,
    Interrupt,
    MemoryAccess,
    RealmStep,
    SmcCall,
    SysregRead,
    SystemError,
    WaitFor,
    default_host_call_ipa,
)
from cca_hil.targets.base import Fault
from cca_hil.targets.model import MMIO_REGISTER

BOOT_TEXT = (
    "NOTICE:  Booting Trusted Firmware\r\n"
    "NOTICE:  BL1: v2.10.0(release):cca-hil-model\r\n"
    "NOTICE:  BL1: Booting BL2\r\n"
    "NOTICE:  BL2: v2.10.0(release):cca-hil-model\r\n"
    "NOTICE:  BL2: Booting BL31\r\n"
    "NOTICE:  BL31: v2.10.0(release):cca-hil-model\r\n"
    "NOTICE:  BL31: RMM initialised, booting BL33\r\n"
    "cca-hil agent {major}.{minor} (emulator) boot {boot_id}: ready\r\n"
)
"""What the firmware prints before the agent speaks frames (TF-A NOTICE lines, then the agent banner)."""

REC_ENTER_FID = RMI_1_0["rec_enter"].fid
HOST_CALL_FID = RSI_1_0.by_name["host_call"].fid
BASE_CAPS = AgentCaps.SMC | AgentCaps.MEMORY | AgentCaps.ACCESS | AgentCaps.BATCH | AgentCaps.LOG
"""What every emulator can do; REALM and ATTESTATION depend on the machine (:func:`default_caps`)."""
MAX_FILL = 64 << 20
"""Largest FILL the emulator performs (the model's memory is sparse but not free)."""

DieMode = Literal["silent", "close"]


@dataclass(frozen=True, slots=True)
class _Cached:
    seq: int
    crc: int
    wire: bytes


class AgentEmulator:
    """The resident agent's behaviour over a byte stream, executing requests on a :class:`Machine`."""

    def __init__(
        self,
        machine: Machine | None = None,
        *,
        max_frame: int = 4096 + 64,
        replay_depth: int = 4,
        version: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR),
        caps: AgentCaps | None = None,
        boot_text: str = BOOT_TEXT,
        boot_id: int = 1,
        boot_delay: float = 0.0,
        gap: float = 0.05,
        die_after: int | None = None,
        die_mode: DieMode = "silent",
        name: str = "cca-hil agent emulator",
    ) -> None:
        self.machine = machine or Machine()
        self.max_frame = max_frame
        self.replay_depth = replay_depth
        self.version = version
        self.caps = default_caps(self.machine) if caps is None else caps
        """What HELLO_REPLY announces (default: :func:`default_caps` of the machine)."""
        self.boot_text = boot_text
        self.boot_id = boot_id
        self.boot_delay = boot_delay
        self.gap = gap
        self.die_after = die_after
        self.die_mode = die_mode
        self.name = name
        self.executions: Counter[tuple[int, int]] = Counter()
        """Executions per (session, sequence number); a count above one breaks at-most-once."""
        self.replays = 0
        self.naks_sent = 0
        self.session = 0
        """Sessions opened so far (never reset, so (session, seq) names one request for good)."""
        self.in_session = False
        """True once a HELLO has opened a session since the last boot."""
        self.dead = False
        self._limit = max_frame
        self._cache: deque[_Cached] = deque(maxlen=max(1, replay_depth))
        self._booted = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counters for tests -----------------------------------------------------------------------

    @property
    def executed(self) -> int:
        """Requests executed (HELLO not counted)."""
        return sum(self.executions.values())

    def duplicates(self) -> dict[tuple[int, int], int]:
        """(session, seq) pairs executed more than once: empty unless at-most-once was broken."""
        return {key: count for key, count in self.executions.items() if count > 1}

    # -- running ---------------------------------------------------------------------------------

    def start(self, stream: ByteStream) -> None:
        """Serve ``stream`` on a thread until :meth:`stop` or until the stream fails."""
        if self._thread is not None:
            raise RuntimeError("emulator already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self.serve, args=(stream,), name="agent-emulator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and join the thread (bounded)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"agent emulator did not stop within {timeout} s")

    def reboot(self) -> None:
        """The board resets: its firmware boots again (a fresh GPT and RMM on the machine; DRAM keeps
        its contents), the agent forgets its session and replay cache, and the boot text follows."""
        self.machine.reset()
        self.boot_id += 1
        self.in_session = False
        self._cache.clear()
        self.dead = False
        self._booted = False

    def serve(self, stream: ByteStream, stop: threading.Event | None = None) -> None:
        """Serve ``stream`` until ``stop`` (default: :meth:`stop`) is set or the stream fails (blocking)."""
        stop = stop or self._stop
        try:
            if not self._booted:
                self._boot(stream, stop, drain=True)
            self._loop(stream, stop)
        except (OSError, ValueError):
            # The host went away (socket closed, pty hung up): an agent just keeps waiting.
            return

    def _boot(self, stream: ByteStream, stop: threading.Event, *, drain: bool) -> None:
        if self.boot_delay:
            stop.wait(self.boot_delay)
        # Bytes that arrived before the agent ran (HELLOs sent too early) are gone, as from a reset UART.
        deadline = time.monotonic() + 1.0
        while drain and time.monotonic() < deadline:
            pending: int = getattr(stream, "in_waiting", 0)
            if not pending:
                break
            stream.read(pending)
        text = self.boot_text.format(major=self.version[0], minor=self.version[1], boot_id=self.boot_id)
        stream.write(text.encode())
        self._booted = True

    def _loop(self, stream: ByteStream, stop: threading.Event) -> None:
        decoder = FrameDecoder(self.max_frame)
        last = time.monotonic()
        while not stop.is_set():
            if not self._booted:
                self._boot(stream, stop, drain=False)
            data = stream.read(1)
            if data:
                more = getattr(stream, "in_waiting", 0)
                if more:
                    data += stream.read(more)
            now = time.monotonic()
            if data:
                last = now
                events = decoder.feed(data)
            elif decoder.in_frame and now - last >= self.gap:
                events = decoder.flush()
            else:
                continue
            if self.dead:
                continue
            for event in events:
                if isinstance(event, Garbage):
                    self.naks_sent += 1
                    stream.write(Frame(MsgType.NAK, 0).encode())
                elif isinstance(event, Frame):
                    died = self._handle(stream, event)
                    if died and self.die_mode == "close":
                        close = getattr(stream, "close", None)
                        if close is not None:
                            close()
                        return

    # -- requests --------------------------------------------------------------------------------

    def _handle(self, stream: ByteStream, frame: Frame) -> bool:
        """Answer one frame on ``stream``; True when the agent died doing it."""
        answer = self.respond(frame)
        if answer:
            stream.write(answer)
        return self.dead

    def respond(self, frame: Frame) -> bytes:
        """What the agent writes in answer to one valid frame (docs/agent-protocol.md §8); may be empty."""
        if self.dead or frame.type & RESPONSE:
            return b""
        if frame.type == MsgType.HELLO:
            answer = self._hello(frame).encode()
            if self.in_session:
                log = LogRecord(LogLevel.INFO, f"session {self.session} opened")
                answer += Frame(MsgType.LOG, self.session, log.encode()).encode()
            return answer
        if not self.in_session:
            return self._error(frame, ErrorCode.NO_SESSION, "no HELLO since boot").encode()
        crc = frame.crc
        for cached in self._cache:
            if cached.seq == frame.seq and cached.crc == crc:
                self.replays += 1
                return cached.wire
        dies = self.die_after is not None and self.executed >= self.die_after
        self.executions[(self.session, frame.seq)] += 1
        answer = self._execute(frame).encode()
        if dies:
            # Die in the middle of the call: it ran, the answer never leaves.
            self.dead = True
            return b"\r\nPANIC: agent: unexpected exception, halting\r\n"
        self._cache.append(_Cached(frame.seq, crc, answer))
        return answer

    def _hello(self, frame: Frame) -> Frame:
        try:
            hello = Hello.decode(frame.payload)
        except ProtocolError as exc:
            return Frame(MsgType.ERROR, frame.seq, encode_error(ErrorCode.MALFORMED, str(exc)))
        if hello.major == self.version[0]:
            # HELLO always runs: it is idempotent and starts a fresh session and replay cache.
            self.session += 1
            self.in_session = True
            self._cache.clear()
            self._limit = min(self.max_frame, max(hello.max_frame, 256))
        reply = HelloReply(
            major=self.version[0],
            minor=self.version[1],
            max_frame=self.max_frame,
            replay_depth=self.replay_depth,
            caps=self.caps,
            boot_id=self.boot_id,
            agent=self.name,
        )
        return Frame(MsgType.HELLO_REPLY, frame.seq, reply.encode())

    def _error(self, frame: Frame, code: ErrorCode, message: str) -> Frame:
        return Frame(MsgType.ERROR, frame.seq, encode_error(code, message))

    def _execute(self, frame: Frame) -> Frame:
        try:
            msg = MsgType(frame.type)
        except ValueError:
            return self._error(frame, ErrorCode.UNSUPPORTED, f"unknown request type {frame.type:#x}")
        needed = {
            MsgType.SMC: AgentCaps.SMC,
            MsgType.READ: AgentCaps.MEMORY,
            MsgType.WRITE: AgentCaps.MEMORY,
            MsgType.FILL: AgentCaps.MEMORY,
            MsgType.ACCESS: AgentCaps.ACCESS,
            MsgType.BATCH: AgentCaps.BATCH,
            MsgType.REALM_RUN: AgentCaps.REALM,
        }.get(msg)
        if needed is not None and not self.caps & needed:
            return self._error(frame, ErrorCode.UNSUPPORTED, f"{msg.name} is not supported by this agent")
        try:
            if msg is MsgType.INFO:
                return Frame(MsgType.INFO_REPLY, frame.seq, self._info().encode())
            if msg is MsgType.BATCH:
                return Frame(
                    MsgType.BATCH_REPLY, frame.seq, self._batch(decode_batch(frame.payload)).encode()
                )
            if msg is MsgType.REALM_RUN:
                return self._realm_run(frame, RealmRun.decode(frame.payload))
            if msg in (MsgType.SMC, MsgType.READ, MsgType.WRITE, MsgType.FILL, MsgType.ACCESS):
                step = decode_request(msg, frame.payload)
                problem = self._check(step)
                if problem:
                    return self._error(frame, ErrorCode.BAD_ARGUMENT, problem)
                outcome = self._run(step)
                if isinstance(outcome, Fault):
                    return Frame(MsgType.FAULT, frame.seq, encode_fault(outcome))
                return Frame(msg | RESPONSE, frame.seq, encode_result(step, outcome))
        except ProtocolError as exc:
            return self._error(frame, ErrorCode.MALFORMED, str(exc))
        return self._error(frame, ErrorCode.UNSUPPORTED, f"{msg.name} is not a request")

    def _realm_run(self, frame: Frame, run: RealmRun) -> Frame:
        """RMI_REC_ENTER with the model's realm payload performing the request's actions (§6.4).

        Exactly what :meth:`ModelTarget.realm_enter` does, with the wire's actions: each
        becomes the payload step the model runs, watched by an observer that notes when
        the realm began it and what it observed, for the reply.
        """
        rmm = self.machine.rmm
        rec = rmm.recs.get(run.rec_pa // GRANULE_SIZE)
        journal: list[tuple[_RealmObserver, tuple[int, ...]]] = []
        observers: list[_RealmObserver] = []
        if rec is not None and rec.addr == run.rec_pa:
            staged = [
                RealmExecAction(realm_step(action, rec.owner), observer)
                for observer, action in self._observers(rec, run.actions, journal)
            ]
            observers = [a.observer for a in staged if isinstance(a.observer, _RealmObserver)]
            rmm.realm_exec.stage(run.rec_pa, staged)
            # A call left in flight by an earlier request reports into this one, as index 0.
            flight = rec.in_flight
            if flight is not None and isinstance(flight.observer, _RealmObserver):
                flight.observer.rebind(0, journal)
        try:
            regs = self.machine.smc(REC_ENTER_FID, run.rec_pa, run.run_pa)
        finally:
            # A refused entry ran nothing: the actions stay with the host.
            rmm.realm_exec.staged.pop(run.rec_pa, None)
        started = sum(1 for o in observers if o.started)
        seen = tuple(RealmObservation(o.index, registers) for o, registers in journal)
        return Frame(MsgType.REALM_RUN_REPLY, frame.seq, RealmRunReply(tuple(regs), started, seen).encode())

    @staticmethod
    def _observers(
        rec: Rec, actions: tuple[RealmAction, ...], journal: list[tuple[_RealmObserver, tuple[int, ...]]]
    ) -> list[tuple[_RealmObserver, RealmAction]]:
        """One observer per action; an access the REC faulted on, sent again first, keeps its own.

        The model recognises the access it stopped at by its observer; the host sends that
        action again as the first one (it was not begun), so the same observer watches it.
        """
        out = []
        fault = rec.faulted
        faulted = fault.observer if isinstance(fault, RealmExecFault) else None
        for index, action in enumerate(actions, 1):
            observer: _RealmObserver | None = None
            if index == 1 and isinstance(faulted, _RealmObserver) and faulted.action == action:
                observer = faulted
                observer.rebind(index, journal)
            out.append((observer or _RealmObserver(index, action, journal), action))
        return out

    def _check(self, step: Step) -> str | None:
        if isinstance(step, ReadStep) and step.size + HEADER_SIZE + CRC_SIZE > self._limit:
            return f"read of {step.size} bytes does not fit a {self._limit}-byte frame"
        if isinstance(step, FillStep) and step.size > MAX_FILL:
            return f"fill of {step.size} bytes exceeds {MAX_FILL}"
        return None

    def _batch(self, steps: list[Step]) -> BatchReply:
        room = batch_result_room(self._limit)
        results: list[bytes] = []
        used = 0
        for step in steps:
            if used + result_bound(step) > room:
                return BatchReply(tuple(results), BatchStop.FULL)
            problem = self._check(step)
            if problem:
                return BatchReply(tuple(results), BatchStop.ERROR, error=(ErrorCode.BAD_ARGUMENT, problem))
            outcome = self._run(step)
            if isinstance(outcome, Fault):
                return BatchReply(tuple(results), BatchStop.FAULT, fault=outcome)
            encoded = encode_result(step, outcome)
            results.append(encoded)
            used += len(encoded)
        return BatchReply(tuple(results))

    def _run(self, step: Step) -> StepResult | Fault:
        """Execute one step on the machine; a faulting memory step returns its Fault."""
        machine = self.machine
        try:
            match step:
                case SmcStep():
                    regs = machine.smc(step.fid, *step.args)
                    return (tuple(regs) + (0,) * step.results)[: step.results]
                case ReadStep():
                    return machine.ns_read(step.pa, step.size)
                case WriteStep():
                    machine.ns_write(step.pa, step.data)
                    return None
                case FillStep():
                    machine.ns_write(step.pa, step.expand())
                    return None
                case AccessStep():
                    return machine.ns_access(
                        step.pa, "write" if step.write else "read", step.size, step.value
                    )
        except GranuleProtectionFault as gpf:
            esr = data_abort_esr(DFSC_GPF_ON_ACCESS, write=gpf.write)
            return Fault(EC_DATA_ABORT_SAME_EL, esr, gpf.pa, gpf=True, description="granule protection fault")
        raise AssertionError(f"unhandled step {step!r}")

    def _info(self) -> InfoReply:
        config = self.machine.config
        facts = (
            ("agent", self.name),
            ("model seed", str(config.seed)),
            ("RMM quirks", config.rmm.quirks),
        )
        return InfoReply(
            pa_bits=config.pa_bits,
            regions=config.regions,
            granule_pool=config.granule_pool,
            platform=tuple(config.platform_names().items()),
            facts=facts,
        )


class _RealmObserver:
    """Watches one action of a REALM_RUN request for the model's realm payload (an ActionObserver).

    ``start()`` marks the action begun; ``complete(registers)`` records what the realm
    observed in the journal of the request being answered, under the action's index
    there (0 once a later request carries the answer to a call left in flight).
    """

    __slots__ = ("_journal", "action", "index", "started")

    def __init__(
        self, index: int, action: RealmAction, journal: list[tuple[_RealmObserver, tuple[int, ...]]]
    ) -> None:
        self.index = index
        self.action = action
        self.started = False
        self._journal = journal

    def rebind(self, index: int, journal: list[tuple[_RealmObserver, tuple[int, ...]]]) -> None:
        """Report into another request's reply, as its action ``index``."""
        self.index = index
        self._journal = journal

    def start(self) -> None:
        """The realm performed the action."""
        self.started = True

    def complete(self, registers: Iterable[int]) -> None:
        """The realm observed the outcome: the registers that hold it."""
        self._journal.append((self, tuple(r & U64 for r in registers)))


def realm_step(action: RealmAction, realm: Realm) -> RealmStep:
    """What the model's realm payload executes for one wire action (as ``targets.model.realm_step`` does).

    Calls load exactly the registers the action carries (the others keep their values);
    a Host call first writes its RsiHostCall (imm, gprs) at its IPA, or at the payload's own
    when none is given; accesses and trapped register reads use X1.
    """
    kind = action.kind
    if kind in (RealmActionKind.RSI, RealmActionKind.PSCI, RealmActionKind.SMC):
        return SmcCall(action.fid, action.args)
    if kind is RealmActionKind.HOST_CALL:
        addr = action.addr if action.addr is not None else default_host_call_ipa(realm)
        gprs = action.args + (0,) * (HOST_CALL_GPRS - len(action.args))
        structure = struct.pack("<Q31Q", action.imm, *gprs)
        return SmcCall(HOST_CALL_FID, (addr,), writes=((addr, structure),))
    if kind is RealmActionKind.MMIO:
        return MemoryAccess(
            ipa=action.ipa, write=action.write, size=action.size, register=MMIO_REGISTER, value=action.value
        )
    if kind is RealmActionKind.HVC:
        return Hvc(action.imm)
    if kind in (RealmActionKind.WFI, RealmActionKind.WFE):
        return WaitFor(event=kind is RealmActionKind.WFE)
    if kind is RealmActionKind.SYSREG:
        return SysregRead(sysreg_name(action.fid), MMIO_REGISTER)
    if kind in (RealmActionKind.IRQ, RealmActionKind.FIQ):
        return Interrupt(fiq=kind is RealmActionKind.FIQ)
    assert kind is RealmActionKind.SERROR, kind
    return SystemError()


def default_caps(machine: Machine) -> AgentCaps:
    """What an agent on ``machine`` announces: REALM when its RMM runs realms, ATTESTATION when it signs.

    The model signs tokens with the optional ``attest`` dependencies (cbor2, cryptography), as
    the model target does; they are looked for, not imported.
    """
    caps = BASE_CAPS
    if getattr(machine.rmm, "realm_exec", None) is not None:
        caps |= AgentCaps.REALM
        if all(importlib.util.find_spec(name) is not None for name in ("cbor2", "cryptography")):
            caps |= AgentCaps.ATTESTATION
    return caps


class EmulatorServer:
    """A TCP stand-in for a board behind ser2net: 127.0.0.1 only, one connection at a time, one agent.

    The agent (and its machine) outlive connections, as a board does when the host reconnects.
    """

    def __init__(self, emulator: AgentEmulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The pySerial URL of the server: ``socket://127.0.0.1:PORT``."""
        host, port = self.address
        return f"socket://{host}:{port}"

    def start(self) -> None:
        """Accept and serve connections on a thread."""
        self._thread = threading.Thread(target=self._accept_loop, name="agent-emulator-server", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving, close the listener and join the thread (bounded)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self._listener.close()

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            stream = SocketStream(conn)
            try:
                self.emulator.serve(stream, self._stop)
            finally:
                stream.close()
