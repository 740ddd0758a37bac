"""``cca-hil console``: a terminal attached to a target's console line, both ways, raw.

The line is the one the agent link runs on (a board's UART, an FVP terminal,
QEMU's uart0), so it carries console text and protocol frames together. What the target sends
goes through the link's own :class:`~cca_hil.agent.protocol.FrameDecoder`: text
is written to the terminal byte for byte, a frame never is — it becomes a dim
one-line summary (``[frame seq=3 HELLO_REPLY 25 B]``) or nothing
(``hide_frames``); the agent's LOG frames are shown as the link logs them
(``[agent info] …``). What the user types goes to the target unchanged, except
the escape key, Ctrl-] (as in telnet), which ends the session.

On a terminal, stdin is put in raw mode for the session (Ctrl-C goes to the
target, not to cca-hil) and restored on every way out: the escape key, the
target closing the line, an exception, SIGTERM or SIGHUP. With stdin not a
terminal (a script pipes keys in) nothing is changed, and the end of the input
ends the session once the target has been quiet for :data:`QUIET_AFTER_EOF`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from cca_hil.agent.protocol import (
    BASE_MAX_FRAME,
    Frame,
    FrameDecoder,
    Garbage,
    LogRecord,
    MsgType,
    ProtocolError,
    Text,
)
from cca_hil.agent.streams import ByteStream
from cca_hil.errors import InputError, TransportError
from cca_hil.resource import Resource

if TYPE_CHECKING:
    from cca_hil.profiles import Profile
    from cca_hil.targets.agent import AgentTarget
    from cca_hil.targets.fvp import FvpTarget
    from cca_hil.targets.qemu import QemuTarget

ESCAPE = 0x1D
"""Ctrl-]: ends the session (telnet's escape character)."""
ESCAPE_NAME = "Ctrl-]"
GAP = 0.1
"""Silence that ends a partly received frame: its bytes are then shown as damaged (as the link does)."""
QUIET_AFTER_EOF = 0.5
"""With piped input: seconds of silence from the target, after the input ended, that end the session."""
READ_SLICE = 0.01
"""Seconds a read of the line waits for more bytes (pySerial's timeout): the latency of an echo."""
READ_CHUNK = 65536
"""Most bytes taken from the line at once."""
MAX_FRAME = 65536
"""Largest frame body the console recognises (the link's largest)."""
CONSOLE_LOG = "console.log"
TERMINAL_COUNT = 4
"""UARTs a console can name on an FVP (``bp.terminal_0`` … ``bp.terminal_3``)."""

_DIM = b"\x1b[2m"
_RESET = b"\x1b[0m"


# -- what the terminal shows -----------------------------------------------------------------------


def frame_summary(frame: Frame) -> str:
    """One line for a frame: ``[frame seq=3 HELLO_REPLY 25 B]``."""
    try:
        name = MsgType(frame.type).name
    except ValueError:
        name = f"type {frame.type:#04x}"
    return f"[frame seq={frame.seq} {name} {len(frame.payload)} B]"


@dataclass
class ConsoleFilter:
    """Turns the bytes a target sends into what the terminal and the log show (sans-I/O).

    :meth:`feed` returns pairs of (terminal bytes, log bytes): text as it came
    (with a time prefix at each line start when ``clock`` is given), frames as
    summary lines (dim on the terminal when ``styled``) unless ``hide_frames``.
    """

    hide_frames: bool = False
    styled: bool = False
    clock: Callable[[], float] | None = None
    """Seconds since attach, for ``--timestamps``; None: no time prefix."""
    max_frame: int = MAX_FRAME

    def __post_init__(self) -> None:
        self._decoder = FrameDecoder(max(self.max_frame, BASE_MAX_FRAME))
        self._at_line_start = True
        self.frames = 0
        """Frames seen (shown or hidden)."""

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended."""
        return self._decoder.in_frame

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """What the terminal and the log show for ``data``."""
        return self._render(self._decoder.feed(data))

    def flush(self) -> tuple[bytes, bytes]:
        """After :data:`GAP` of silence: a frame cut short is shown as damaged."""
        return self._render(self._decoder.flush())

    def _render(self, events: list[Frame | Text | Garbage]) -> tuple[bytes, bytes]:
        shown = bytearray()
        logged = bytearray()
        for event in events:
            if isinstance(event, Text):
                text = self._stamped(event.data)
                shown += text
                logged += text
                continue
            if isinstance(event, Frame):
                self.frames += 1
                if event.type == MsgType.LOG:
                    line = _log_line(event)
                elif self.hide_frames:
                    continue
                else:
                    line = frame_summary(event)
            else:
                if self.hide_frames:
                    continue
                line = f"[damaged frame {len(event.data)} B: {event.reason}]"
            plain = self._summary_line(line)
            shown += _DIM + plain + _RESET if self.styled else plain
            logged += plain
        return bytes(shown), bytes(logged)

    def _summary_line(self, line: str) -> bytes:
        # A summary stands on a line of its own, whatever the text around it did.
        start = b"" if self._at_line_start else b"\r\n"
        self._at_line_start = True
        return start + self._stamped(line.encode() + b"\r\n")

    def _stamped(self, data: bytes) -> bytes:
        if not data:
            return data
        if self.clock is None:
            self._at_line_start = data.endswith(b"\n")
            return data
        out = bytearray()
        for piece in data.splitlines(keepends=True):
            if self._at_line_start:
                out += f"[{self.clock():10.3f}] ".encode()
            out += piece
            self._at_line_start = piece.endswith(b"\n")
        return bytes(out)


def _log_line(frame: Frame) -> str:
    try:
        record = LogRecord.decode(frame.payload)
    except ProtocolError:
        return frame_summary(frame)
    return f"[agent {record.level.name.lower()}] {record.message}"


# -- the line to the target -------------------------------------------------------------------------


class ConsoleLine(Resource):
    """The target's console line, opened for a console session: a byte stream and what it is."""

    def __init__(self, profile: Profile, *, uart: int | None, folder: Path) -> None:
        self.profile = profile
        self.uart = uart
        self.folder = folder
        self.stream: ByteStream | None = None
        self.description = ""
        self._closers: list[Callable[[], object]] = []

    def open(self) -> ByteStream:
        """Reach the line (launching the board program or the model when the profile says so)."""
        if self.stream is not None:
            return self.stream
        from cca_hil.profiles import build_target
        from cca_hil.targets.agent import AgentTarget
        from cca_hil.targets.fvp import FvpTarget
        from cca_hil.targets.qemu import QemuTarget

        target = build_target(self.profile, run_dir=self.folder)
        try:
            # A console is a user of the target like any other: it holds the target's lease meanwhile.
            target.take_lease()
            self._closers.append(target.release_lease)
            if isinstance(target, FvpTarget):
                self.stream = self._open_fvp(target)
            elif isinstance(target, QemuTarget):
                self.stream = self._open_qemu(target)
            elif isinstance(target, AgentTarget):
                self.stream = self._open_agent_line(target)
            else:
                raise InputError(
                    f"profile {self.profile.name!r} (kind {target.kind}) has no console: the built-in "
                    "model runs in this process and prints nothing; a board (kind serial), an FVP or "
                    "QEMU has one",
                    where="cca-hil console",
                    valid=["--profile board-sim", "a serial, fvp or qemu profile"],
                )
        except BaseException:
            self.close()
            raise
        return self.stream

    def _open_agent_line(self, target: AgentTarget) -> ByteStream:
        """The line the kind's agent link runs on, reached the way the target reaches it.

        ``_connect`` is the kind's one way to its agent's line (a board's UART, with
        the board program launched or the simulation started; QEMU launched and
        its UART connected); the console then holds that line instead of a link.
        """
        from cca_hil.targets.serial import SerialTarget

        if self.uart not in (None, 0):
            raise InputError(
                f"a target of kind {target.kind} has one console line, not UART {self.uart}",
                where="--uart",
                valid=["0"],
            )
        self._closers.append(target.close)
        stream = target._connect(self.folder)
        if isinstance(target, SerialTarget):
            self.description = f"{target.port_url} @ {target.baudrate} baud"
        else:
            self.description = f"the agent's line of the {target.kind} target"
        return stream

    def _open_qemu(self, target: QemuTarget) -> ByteStream:
        """QEMU launched for the session (stopped after it), its UART from the first byte it printed."""
        from cca_hil.qemu import launch

        if self.uart not in (None, 0):
            raise InputError(
                f"QEMU virt has one UART here, not UART {self.uart}", where="--uart", valid=["0"]
            )
        process = launch(target.config, run_dir=self.folder)
        self._closers.append(process.close)
        self.description = f"uart0 of {process.argv[0]} (pid {process.pid}, stopped on exit)"
        return process.serial

    def _open_fvp(self, target: FvpTarget) -> ByteStream:
        from cca_hil.fvp import FvpLauncher, load_session
        from cca_hil.targets.fvp import session_file

        config = target.config
        index = config.agent_uart if self.uart is None else self.uart
        names = [t.name for t in config.terminals]
        if not 0 <= index < len(config.terminals):
            raise InputError(f"the FVP has no UART {index}", where="--uart", valid=[str(i) for i in range(4)])
        state = session_file(self.folder)
        if state is not None:
            session = load_session(state)
            if session.is_running():
                terminal = session.terminal(
                    index, log_dir=self.folder, connect_timeout=config.timeouts.connect
                )
                self._closers.append(terminal.close)
                self.description = f"{names[index]} of the FVP session (pid {session.pid})"
                return terminal
        connected = [t.index for t in config.connected_terminals]
        if index not in connected:
            raise InputError(
                f"{names[index]} is not connected in profile {self.profile.name!r} "
                f"(fvp.terminals.{names[index]}.connect: false)",
                where="--uart",
                valid=[str(i) for i in connected],
            )
        process = FvpLauncher(config, run_dir=self.folder).start()
        self._closers.append(process.close)
        self.description = f"{names[index]} of {process.argv[0]} (pid {process.pid}, stopped on exit)"
        return process.terminal(index)

    def close(self) -> None:
        """Close the line and stop what was launched for it, newest first; idempotent."""
        closers, self._closers = self._closers, []
        self.stream = None
        errors: list[BaseException] = []
        for closer in reversed(closers):
            try:
                closer()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def uart_of(uart: int | None, terminal: str | None) -> int | None:
    """The UART index from ``--uart N`` or ``--terminal terminal_N`` (they exclude each other)."""
    if terminal is None:
        return uart
    if uart is not None:
        raise InputError("--uart and --terminal name the same thing; give one", where="cca-hil console")
    names = [f"terminal_{i}" for i in range(TERMINAL_COUNT)]
    if terminal not in names:
        raise InputError(f"unknown terminal {terminal!r}", where="--terminal", valid=names)
    return names.index(terminal)


# -- the user's terminal ----------------------------------------------------------------------------


class Hangup(Exception):
    """SIGTERM or SIGHUP arrived: end the session as the escape key does, terminal restored."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def hangup_ends_session() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Hangup` so every cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hangup(signum: int, frame: FrameType | None) -> None:
        raise Hangup(signum)

    previous = {signum: signal.signal(signum, hangup) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Raw mode on ``fd`` while inside (True), restored on every way out; nothing when it is no terminal."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        # After a hang-up the terminal may be gone: then there is nothing left to restore.
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# -- a session ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleOptions:
    """How a console session shows the line."""

    hide_frames: bool = False
    timestamps: bool = False
    log: Path | None = None
    """``--log FILE``: what the terminal shows, without styling, appended as it arrives."""


@dataclass
class ConsoleOutcome:
    """How a session ended."""

    reason: str
    """``Ctrl-]`` (the escape key), ``end of input`` or ``closed by the target``."""
    bytes_in: int = 0
    bytes_out: int = 0
    frames: int = 0


class _Output:
    """The terminal (stdout) and the logs: written as bytes arrive, never buffered."""

    def __init__(self, fd: int, logs: list[IO[bytes]]) -> None:
        self.fd = fd
        self.logs = logs
        self.lock = threading.Lock()

    def write(self, shown: bytes, logged: bytes) -> None:
        with self.lock:
            view = memoryview(shown)
            while view:
                view = view[os.write(self.fd, view) :]
            for log in self.logs:
                if logged:
                    log.write(logged)


def run_console(
    stream: ByteStream,
    *,
    options: ConsoleOptions,
    stdin_fd: int,
    stdout_fd: int,
    folder: Path | None = None,
) -> ConsoleOutcome:
    """Copy the line to ``stdout_fd`` (through :class:`ConsoleFilter`) and ``stdin_fd`` to the line.

    Returns when the escape key is typed or the input ends (piped) and the line
    goes quiet; TransportError when the target closes the line. Wrap it in
    :func:`hangup_ends_session` so that SIGTERM/SIGHUP leave it through every cleanup.
    """
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        logs: list[IO[bytes]] = []
        if folder is not None:
            logs.append(stack.enter_context((folder / CONSOLE_LOG).open("ab", buffering=0)))
        if options.log is not None:
            try:
                logs.append(stack.enter_context(options.log.open("ab", buffering=0)))
            except OSError as exc:
                raise InputError(
                    f"cannot open the log file: {exc.strerror}", where=f"--log {options.log}"
                ) from exc
        raw = stack.enter_context(raw_terminal(stdin_fd))
        out = _Output(stdout_fd, logs)
        filt = ConsoleFilter(
            hide_frames=options.hide_frames,
            styled=os.isatty(stdout_fd) and "NO_COLOR" not in os.environ,
            clock=(lambda: time.monotonic() - start) if options.timestamps else None,
        )
        pump = _LinePump(stream, filt, out)
        pump.start()
        try:
            reason = _copy_keys(pump, stdin_fd, raw=raw)
        finally:
            pump.stop()
        if pump.failure is not None and reason == "closed by the target":
            raise TransportError(f"the console line was closed by the target: {pump.failure}")
        return ConsoleOutcome(
            reason=reason,
            bytes_in=pump.bytes_in,
            bytes_out=pump.bytes_out,
            frames=filt.frames,
        )


class _LinePump:
    """The reader beside the keyboard: the line's bytes to the terminal as they arrive."""

    def __init__(self, stream: ByteStream, filt: ConsoleFilter, out: _Output) -> None:
        self.stream = stream
        self.filt = filt
        self.out = out
        self.failure: BaseException | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_data = time.monotonic()
        self._stop = threading.Event()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-line", daemon=True)

    def start(self) -> None:
        if hasattr(self.stream, "timeout"):
            # pySerial's read(n) returns early only when its timeout runs out: a short one keeps
            # typed echoes prompt while a busy line still comes in large pieces.
            self.stream.timeout = READ_SLICE
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def send(self, data: bytes) -> None:
        try:
            self.stream.write(data)
        except (OSError, ValueError) as exc:
            self.failure = exc
            self.ended.set()
            return
        self.bytes_out += len(data)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self.stream.read(READ_CHUNK)
                if data:
                    self.bytes_in += len(data)
                    self.last_data = time.monotonic()
                    self.out.write(*self.filt.feed(data))
                elif self.filt.in_frame and time.monotonic() - self.last_data >= GAP:
                    self.out.write(*self.filt.flush())
        except (OSError, ValueError, TypeError) as exc:
            # pySerial raises SerialException (an OSError) for a closed socket or a vanished device.
            if not self._stop.is_set():
                self.failure = exc
        finally:
            self.out.write(*self.filt.flush())
            self.ended.set()


def _copy_keys(pump: _LinePump, fd: int, *, raw: bool) -> str:
    """Keys to the line until the escape key, the end of piped input (then quiet) or the line's end."""
    eof_at: float | None = None
    while True:
        if pump.ended.is_set():
            return "closed by the target"
        if eof_at is not None:
            if time.monotonic() - max(eof_at, pump.last_data) >= QUIET_AFTER_EOF:
                return "end of input"
            time.sleep(GAP / 2)
            continue
        ready, _, _ = select.select([fd], [], [], GAP)
        if not ready:
            continue
        try:
            data = os.read(fd, 1024)
        except OSError as exc:
            if raw:
                raise TransportError(f"cannot read the terminal: {exc.strerror}") from exc
            data = b""
        if not data:
            eof_at = time.monotonic()
            continue
        escape = data.find(ESCAPE)
        if escape >= 0:
            if escape:
                pump.send(data[:escape])
            return ESCAPE_NAME
        pump.send(data)


def stdin_fd() -> int:
    """The file descriptor of standard input."""
    return sys.stdin.fileno()


def stdout_fd() -> int:
    """The file descriptor of standard output (flushed first, so nothing Python buffered comes late)."""
    sys.stdout.flush()
    return sys.stdout.fileno()
