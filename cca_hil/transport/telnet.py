"""TCP clients for the UART terminals of simulation models, in raw or telnet mode.

An FVP ``TelnetTerminal`` (``bp.terminal_N``) listens on a TCP port. In ``raw``
mode the bytes pass unmodified; in ``telnet`` mode the model sends a few 3-byte
telnet option commands when a client attaches, checks the replies, quits the
simulation when a reply is wrong, and is a transparent pipe afterwards (it does
not escape 0xFF). See reference targets-transports.md §1.3; the exact commands
are not documented (§9), so :class:`TelnetNegotiator` answers any option the
way an interactive telnet client in character mode does.

A :class:`TerminalClient` drains its socket in a reader thread from the moment
it connects: every byte is appended to a log file as it arrives (nothing is lost
when the model crashes) and kept in a bounded buffer for :meth:`read` and
:meth:`expect`. A reader thread is needed because an unread terminal can stall
the model, whether or not anyone is consuming its output yet.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Self

from cca_hil.errors import TransportError

TerminalMode = Literal["raw", "telnet"]
TERMINAL_MODES: tuple[TerminalMode, ...] = ("raw", "telnet")

# RFC 854 command bytes.
IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
SE = 240

# RFC 856 BINARY, RFC 857 ECHO, RFC 858 SUPPRESS-GO-AHEAD: the options a
# character-mode client accepts; everything else is refused.
OPT_BINARY = 0
OPT_ECHO = 1
OPT_SGA = 3
OPT_LINEMODE = 34

_ACCEPT_WILL = frozenset({OPT_BINARY, OPT_ECHO, OPT_SGA})
"""Options we let the server perform (answer DO)."""
_ACCEPT_DO = frozenset({OPT_BINARY, OPT_SGA})
"""Options we agree to perform ourselves (answer WILL)."""

_READ_SLICE = 0.1
"""Seconds a reader thread blocks in recv() before it checks whether it was asked to stop."""


class TelnetNegotiator:
    """Sans-I/O telnet option handling: strips commands from received bytes and produces replies.

    With ``transparent_after_handshake`` (the FVP's behaviour) only the commands
    that precede the first data byte are interpreted; after that every byte,
    0xFF included, is data.
    """

    def __init__(self, *, transparent_after_handshake: bool = True) -> None:
        self._transparent_after = transparent_after_handshake
        self._transparent = False
        self._state = "data"
        self._command = 0
        # Per-option state (RFC 1143 in spirit): reply only when our answer changes, so
        # a server that repeats a request does not start an acknowledgement loop.
        self._him: dict[int, bool] = {}
        self._us: dict[int, bool] = {}
        self.commands_seen = 0

    @property
    def transparent(self) -> bool:
        """True once the handshake is over and every byte is passed through."""
        return self._transparent

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Process received bytes; returns (payload for the application, replies to send)."""
        if self._transparent:
            return data, b""
        payload = bytearray()
        replies = bytearray()
        for index, byte in enumerate(data):
            if self._transparent:
                payload += data[index:]
                break
            state = self._state
            if state == "data":
                if byte == IAC:
                    self._state = "iac"
                else:
                    payload.append(byte)
                    if self._transparent_after:
                        self._transparent = True
            elif state == "iac":
                if byte == IAC:
                    payload.append(IAC)
                    self._state = "data"
                elif byte in (WILL, WONT, DO, DONT):
                    self._command = byte
                    self._state = "option"
                elif byte == SB:
                    self._state = "sb"
                else:
                    # NOP, GA, AYT … carry no option byte; nothing to answer.
                    self.commands_seen += 1
                    self._state = "data"
            elif state == "option":
                replies += self._answer(self._command, byte)
                self.commands_seen += 1
                self._state = "data"
            elif state == "sb":
                if byte == IAC:
                    self._state = "sb_iac"
            elif state == "sb_iac":
                self._state = "data" if byte == SE else "sb"
        return bytes(payload), bytes(replies)

    def _answer(self, command: int, option: int) -> bytes:
        if command == WILL:
            enable = option in _ACCEPT_WILL
            if self._him.get(option) == enable:
                return b""
            self._him[option] = enable
            return bytes((IAC, DO if enable else DONT, option))
        if command == WONT:
            if self._him.get(option) is False:
                return b""
            self._him[option] = False
            return bytes((IAC, DONT, option))
        if command == DO:
            enable = option in _ACCEPT_DO
            if self._us.get(option) == enable:
                return b""
            self._us[option] = enable
            return bytes((IAC, WILL if enable else WONT, option))
        # DONT
        if self._us.get(option) is False:
            return b""
        self._us[option] = False
        return bytes((IAC, WONT, option))


class TerminalClosedError(TransportError, ConnectionError):
    """The model closed the terminal (or the connection failed); an OSError too, as pySerial's errors are."""


class TerminalClient:
    """A connected model terminal: captured to a log from the first byte, readable with deadlines.

    It follows pySerial's read/write/timeout contract (``read(size)`` waits at
    most :attr:`timeout` for the first byte, ``in_waiting``), so the agent link
    runs over it as over a serial port.
    """

    def __init__(
        self,
        *,
        name: str,
        port: int,
        log_path: Path,
        mode: TerminalMode = "raw",
        host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
        max_buffer: int = 1 << 20,
        timeout: float = 1.0,
        peer_status: Callable[[], str | None] | None = None,
    ) -> None:
        if mode not in TERMINAL_MODES:
            raise ValueError(f"terminal mode {mode!r} (valid: {', '.join(TERMINAL_MODES)})")
        self.name = name
        self.port = port
        self.mode: TerminalMode = mode
        self.log_path = log_path
        self.timeout = timeout
        """Seconds :meth:`read` waits for the first byte (never None: every wait has a deadline)."""
        self._peer_status = peer_status
        self._max_buffer = max_buffer
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._eof = False
        self._error: Exception | None = None
        self.received = 0
        """Payload bytes received so far (telnet commands excluded)."""
        self.dropped = 0
        """Bytes dropped from the in-memory buffer because nobody read them (the log keeps them)."""
        self._negotiator = TelnetNegotiator() if mode == "telnet" else None
        self._sock = self._connect(host, port, connect_timeout)
        try:
            self._log: BinaryIO = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError:
            self._sock.close()
            raise
        self._reader = threading.Thread(target=self._run, name=f"terminal-{name}", daemon=True)
        self._reader.start()

    def _connect(self, host: str, port: int, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        # The model prints the port once it listens, but a busy host may still refuse the
        # first attempt; retry until the connect phase's deadline.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"{self.name}: could not connect to {host}:{port} within {timeout:g} s: {last}"
                ) from last
            try:
                sock = socket.create_connection((host, port), timeout=remaining)
            except OSError as error:
                last = error
                time.sleep(min(0.05, max(remaining, 0.0)))
                continue
            sock.settimeout(_READ_SLICE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

    # -- reader thread -----------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    chunk = self._sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as error:
                    if not self._stop.is_set():
                        self._error = error
                    break
                if not chunk:
                    break
                try:
                    self._deliver(chunk)
                except (OSError, ValueError, TransportError) as error:
                    # A telnet reply that cannot be sent, or a log closed under a reader that
                    # outlived close(): the connection is over either way.
                    if not self._stop.is_set():
                        self._error = error
                    break
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _deliver(self, chunk: bytes) -> None:
        payload = chunk
        if self._negotiator is not None:
            payload, replies = self._negotiator.feed(chunk)
            if replies:
                self._send(replies, timeout=5.0)
        if not payload:
            return
        # Log first: a crash right after this line must not lose what the model printed.
        self._log.write(payload)
        with self._cond:
            self.received += len(payload)
            self._buffer += payload
            excess = len(self._buffer) - self._max_buffer
            if excess > 0:
                del self._buffer[:excess]
                self.dropped += excess
            self._cond.notify_all()

    # -- public interface --------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the model's end of the connection is open."""
        with self._cond:
            return not self._eof

    @property
    def in_waiting(self) -> int:
        """Bytes readable without waiting."""
        with self._cond:
            return len(self._buffer)

    def _ended(self) -> TerminalClosedError:
        status = self._peer_status() if self._peer_status is not None else None
        reason = f"{self._error}" if self._error is not None else "connection closed by the model"
        text = f"{self.name} (port {self.port}): {reason}"
        if status:
            text += f"; {status}"
        return TerminalClosedError(text)

    def read(self, size: int = 1, timeout: float | None = None) -> bytes:
        """Up to ``size`` bytes, waiting at most ``timeout`` (default :attr:`timeout`) s for the first.

        Returns b"" when nothing arrived in time; raises TerminalClosedError once
        the connection has ended and everything received was read.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while not self._buffer:
                if self._eof:
                    raise self._ended()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                self._cond.wait(remaining)
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Wait until ``pattern`` appears in the unread output; consumes through the end of the match."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                # Search a snapshot: the match must not point into a buffer that is then trimmed.
                match = regex.search(bytes(self._buffer))
                if match is not None:
                    del self._buffer[: match.end()]
                    return match
                if self._eof:
                    error = self._ended()
                    raise TerminalClosedError(
                        f"{error} before {regex.pattern!r} appeared; last output: {self._tail()!r}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(
                        f"{self.name}: {regex.pattern!r} did not appear within {timeout:g} s; "
                        f"last output: {self._tail()!r}"
                    )
                self._cond.wait(remaining)

    def _tail(self, size: int = 200) -> bytes:
        return bytes(self._buffer[-size:])

    def write(self, data: bytes, /, timeout: float = 5.0) -> int:
        """Send all of ``data`` to the model's UART receive side within ``timeout`` seconds."""
        with self._cond:
            if self._eof:
                raise self._ended()
        self._send(data, timeout=timeout)
        return len(data)

    def _send(self, data: bytes, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        with self._write_lock:
            while view:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"{self.name}: write of {len(data)} bytes timed out after {timeout:g} s"
                    )
                try:
                    sent = self._sock.send(view)
                except TimeoutError:
                    continue
                except OSError as error:
                    raise TerminalClosedError(f"{self.name}: write failed: {error}") from error
                view = view[sent:]

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect, stop the reader within ``timeout`` seconds, close the log; idempotent."""
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout)
        self._sock.close()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
