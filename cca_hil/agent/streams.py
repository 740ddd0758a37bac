"""Byte streams the link and the emulator run over, with pySerial's read/write/timeout contract.

``read(size)`` waits at most :attr:`timeout` seconds for the first byte and returns
what is available (up to ``size``), ``b""`` on timeout; a closed peer raises
ConnectionError, as pySerial's ``socket://`` handler raises SerialException (an
OSError) in the same case. ``in_waiting`` tells how many bytes can be read at once.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class ByteStream(Protocol):
    """What the agent link needs from a transport: a pySerial ``Serial`` satisfies it."""

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; ``b""`` after the stream's timeout with nothing to read."""
        ...

    def write(self, data: bytes, /) -> int | None:
        """Write all of ``data``."""
        ...


def _pending(fd: int) -> int:
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    count: int = struct.unpack("i", raw)[0]
    return count


_PYSERIAL_SOCKET = "serial.urlhandler.protocol_socket"
"""pySerial's ``socket://`` handler, whose ``in_waiting`` only says whether the socket is readable."""


def bytes_waiting(stream: object) -> int:
    """How many bytes ``stream`` can hand over at once without waiting (0 when unknown).

    pySerial's ``in_waiting``, except on its ``socket://`` handler, which answers 0 or 1 (a poll
    for readability): there the socket itself is asked (FIONREAD), so a reply arriving in one TCP
    segment is read in one call rather than two bytes at a time.
    """
    if type(stream).__module__ == _PYSERIAL_SOCKET and getattr(stream, "is_open", False):
        try:
            return _pending(stream.fileno())  # type: ignore[attr-defined]
        except (OSError, ValueError):
            pass  # closed under us: let the next read say so
    waiting: int = getattr(stream, "in_waiting", 0)
    return waiting


class FdStream:
    """A byte stream over a file descriptor: a pty master (the device side of a serial port), a pipe."""

    def __init__(self, fd: int, *, timeout: float = 0.05, write_timeout: float = 5.0) -> None:
        self.fd = fd
        self.timeout = timeout
        self.write_timeout = write_timeout

    @property
    def in_waiting(self) -> int:
        """Bytes readable without waiting."""
        return _pending(self.fd)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes, waiting at most ``timeout`` for the first."""
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            return b""
        try:
            data = os.read(self.fd, size)
        except OSError as exc:
            # A pty master reads EIO once every slave descriptor is closed.
            raise ConnectionError(f"fd {self.fd}: {exc.strerror}") from exc
        if not data:
            raise ConnectionError(f"fd {self.fd}: peer closed")
        return data

    def write(self, data: bytes, /) -> int:
        """Write all of ``data`` within ``write_timeout``."""
        view = memoryview(data)
        deadline = time.monotonic() + self.write_timeout
        while view:
            remaining = deadline - time.monotonic()
            _, ready, _ = select.select([], [self.fd], [], max(remaining, 0.0))
            if not ready:
                raise TimeoutError(f"fd {self.fd}: write blocked for {self.write_timeout} s")
            view = view[os.write(self.fd, view) :]
        return len(data)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SocketStream:
    """A byte stream over a connected socket (the device side of a ``socket://`` port, or a socketpair)."""

    def __init__(self, sock: socket.socket, *, timeout: float = 0.05, write_timeout: float = 5.0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.write_timeout = write_timeout

    @property
    def in_waiting(self) -> int:
        """Bytes readable without waiting."""
        return _pending(self.sock.fileno())

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes, waiting at most ``timeout`` for the first."""
        self.sock.settimeout(self.timeout)
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise ConnectionError(f"socket: {exc}") from exc
        if not data:
            raise ConnectionError("socket: peer closed")
        return data

    def write(self, data: bytes, /) -> int:
        """Write all of ``data`` within ``write_timeout``."""
        self.sock.settimeout(self.write_timeout)
        self.sock.sendall(data)
        return len(data)

    def close(self) -> None:
        """Shut down and close the socket (idempotent)."""
        if self.sock.fileno() >= 0:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


def stream_pair(*, timeout: float = 0.05) -> tuple[SocketStream, SocketStream]:
    """Two connected in-process streams (a socketpair): host end and device end."""
    left, right = socket.socketpair()
    return SocketStream(left, timeout=timeout), SocketStream(right, timeout=timeout)
