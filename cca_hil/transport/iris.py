"""A client for the Iris debug server of Arm's models: IrisRpc 1.0 over TCP, the ``IrisJson`` framing.

What is spoken here (reference targets-transports.md §1.5, from Arm's Iris
Developer Guide §3.2/§3.8): the client sends
``CONNECT / IrisRpc/1.0\\r\\nSupported-Formats: IrisJson\\r\\n\\r\\n`` and the
server answers ``IrisRpc/1.0 200 OK`` plus headers and an empty line; after
that every message is ``IrisJson:<decimal length>:<JSON-RPC 2.0 text>\\n``
(length in bytes, no leading zeros, at most 10 digits). Params are passed by
name. A request id is a uint64 with the caller's instId in bits 63:32 (0 before
it registers) and a counter in bits 31:0. Both sides may send requests: what
the server sends is queued in :attr:`IrisClient.server_requests` (bounded) and
answered with a JSON-RPC error, since this client subscribes to no events.

:class:`IrisCodec` is the sans-I/O framing (encode, and a decoder that accepts
its input split anywhere); :class:`IrisClient` is blocking and single-threaded,
and every wait in it has a deadline. Failures are :class:`IrisError`
(a :class:`~cca_hil.errors.TransportError`): refused or timed-out connections,
bad framing or handshakes, and JSON-RPC errors with their code and message.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from cca_hil.errors import TransportError

PROTOCOL: Final = "IrisRpc/1.0"
CONNECT_REQUEST: Final = b"CONNECT / IrisRpc/1.0\r\nSupported-Formats: IrisJson\r\n\r\n"
"""The client's opening: only ``IrisJson`` is offered, so the server never sends the binary format."""
PREFIX: Final = b"IrisJson:"
MAX_LENGTH_DIGITS: Final = 10
MAX_MESSAGE: Final = 64 << 20
"""The largest JSON text accepted from a peer (a guard against a corrupt length, not a protocol limit)."""
MAX_HEADER: Final = 4096
"""The largest handshake block (request or response, up to the empty line) accepted."""
DEFAULT_READ_CHUNK: Final = 4096
"""Bytes per ``memory_read``/``memory_write`` request unless the caller asks otherwise."""
SERVER_REQUESTS_KEPT: Final = 256

JSONRPC_METHOD_NOT_FOUND: Final = -32601


class IrisError(TransportError):
    """The Iris server could not be reached, broke the protocol, timed out or refused a call."""


class IrisTimeoutError(IrisError):
    """No answer (handshake or response) before the deadline."""


class IrisProtocolError(IrisError):
    """The peer sent something the IrisRpc 1.0 framing or handshake does not allow."""


class IrisCallError(IrisError):
    """A JSON-RPC error response: ``code`` and ``message`` as the server gave them."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        self.method = method
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"Iris {method} failed: error {code:#x} ({code}): {message}")


# -- framing --------------------------------------------------------------------------------------------


def encode_message(message: Any) -> bytes:
    """One ``IrisJson`` frame carrying ``message`` (compact JSON, UTF-8)."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%s%d:%s\n" % (PREFIX, len(text), text)


class IrisCodec:
    """Decodes ``IrisJson`` frames from bytes split anywhere; a violation raises IrisProtocolError.

    After an error the decoder stays broken (receivers close the connection on
    a bad frame, §1.5): every later :meth:`feed` raises the same error.
    """

    def __init__(self, *, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message
        self._broken: IrisProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Consume ``data``; the decoded JSON values of every frame it completes, in order."""
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        out: list[Any] = []
        try:
            while True:
                message = self._next()
                if message is _INCOMPLETE:
                    return out
                out.append(message)
        except IrisProtocolError as error:
            self._broken = error
            raise

    def _fail(self, what: str) -> IrisProtocolError:
        shown = bytes(self._buffer[:40])
        return IrisProtocolError(f"bad Iris frame: {what} (at {shown!r})")

    def _next(self) -> Any:
        buffer = self._buffer
        if not buffer:
            return _INCOMPLETE
        head = bytes(buffer[: len(PREFIX)])
        if not PREFIX.startswith(head):
            raise self._fail("unknown prefix (expected 'IrisJson:')")
        if len(head) < len(PREFIX):
            return _INCOMPLETE
        colon = buffer.find(b":", len(PREFIX), len(PREFIX) + MAX_LENGTH_DIGITS + 1)
        digits = bytes(buffer[len(PREFIX) : colon if colon >= 0 else len(PREFIX) + MAX_LENGTH_DIGITS + 1])
        if not digits.isdigit() and digits:
            raise self._fail("length is not a decimal number")
        if colon < 0:
            if len(digits) > MAX_LENGTH_DIGITS:
                raise self._fail(f"length longer than {MAX_LENGTH_DIGITS} digits")
            return _INCOMPLETE
        if not digits:
            raise self._fail("empty length")
        if len(digits) > 1 and digits[0:1] == b"0":
            raise self._fail("length with a leading zero")
        length = int(digits)
        if length > self._max:
            raise self._fail(f"length {length} above the limit of {self._max} bytes")
        start = colon + 1
        end = start + length
        if len(buffer) < end + 1:
            return _INCOMPLETE
        if buffer[end] != 0x0A:
            raise self._fail(f"no line feed after the {length}-byte JSON text")
        text = bytes(buffer[start:end])
        del buffer[: end + 1]
        try:
            return json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise IrisProtocolError(f"bad Iris frame: JSON text does not parse: {error}") from None


_INCOMPLETE: Final = object()


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    """What the server answered to CONNECT."""

    status: str
    headers: dict[str, str]

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats the server lists in ``Supported-Formats``."""
        raw = self.headers.get("supported-formats", "")
        return tuple(part.strip() for part in raw.split(",") if part.strip())


_STATUS_LINE = re.compile(r"^IrisRpc/1\.0 (\d{3})(?: (.*))?$")


def parse_handshake_reply(block: bytes) -> HandshakeReply:
    """Parse the server's answer to CONNECT (up to, not including, the empty line)."""
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise IrisProtocolError(f"Iris handshake answer is not ASCII: {block[:60]!r}") from None
    lines = text.split("\r\n")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise IrisProtocolError(f"not an IrisRpc/1.0 server: handshake answered {lines[0][:80]!r}")
    if match.group(1) != "200":
        raise IrisProtocolError(f"Iris server refused the connection: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise IrisProtocolError(f"bad header in the Iris handshake answer: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    reply = HandshakeReply(status=lines[0], headers=headers)
    if "IrisJson" not in reply.formats:
        raise IrisProtocolError(f"Iris server does not offer IrisJson (offers: {', '.join(reply.formats)})")
    return reply


# -- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IrisInstance:
    """One entry of ``instanceRegistry_getList``."""

    inst_id: int
    name: str


@dataclass(frozen=True, slots=True)
class MemorySpace:
    """One entry of ``memory_getMemorySpaces``."""

    space_id: int
    name: str
    min_addr: int = 0
    max_addr: int = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Resource:
    """One register from ``resource_getList``."""

    rsc_id: int
    name: str
    bit_width: int


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IrisProtocolError(f"Iris answer: {what} is not an integer: {value!r}")
    return value


def _pack(data: bytes) -> list[int]:
    padded = data + bytes(-len(data) % 8)
    return [int.from_bytes(padded[i : i + 8], "little") for i in range(0, len(padded), 8)]


def _unpack(words: Any, size: int, what: str) -> bytes:
    if not isinstance(words, list):
        raise IrisProtocolError(f"Iris answer: {what} data is not a list")
    values = [_int(w, f"{what} data word") for w in words]
    if any(not 0 <= v < 1 << 64 for v in values):
        raise IrisProtocolError(f"Iris answer: {what} data word outside uint64")
    out = b"".join(v.to_bytes(8, "little") for v in values)
    if len(out) < size:
        raise IrisProtocolError(f"Iris answer: {what} returned {len(out)} bytes, {size} asked for")
    return out[:size]


def spans(address: int, size: int, chunk: int) -> list[tuple[int, int, int]]:
    """How a transfer is cut into requests: (address, byteWidth, count) with byteWidth 8 where aligned.

    Each request carries at most ``chunk`` bytes (rounded down to whole u64s, at
    least 8); unaligned heads and short tails go as single bytes.
    """
    if size < 0 or address < 0:
        raise ValueError("address and size must not be negative")
    chunk = max(8, chunk - chunk % 8)
    out = []
    while size > 0:
        if address % 8 == 0 and size >= 8:
            count = min(size // 8, chunk // 8)
            out.append((address, 8, count))
            step = 8 * count
        else:
            step = min(size, chunk, (-address % 8) or size)
            out.append((address, 1, step))
        address += step
        size -= step
    return out


# -- the client -----------------------------------------------------------------------------------------


class IrisClient:
    """A blocking IrisRpc 1.0 client on one TCP connection; use :meth:`connect`."""

    def __init__(self, sock: socket.socket, *, address: tuple[str, int], timeout: float) -> None:
        self._sock: socket.socket | None = sock
        self.address = address
        self.timeout = timeout
        self.inst_id = 0
        self.inst_name: str | None = None
        self._codec = IrisCodec()
        self._counter = 0
        self._responses: dict[int, dict[str, Any]] = {}
        self._outstanding: set[int] = set()
        """Ids of calls in progress: only their answers are kept (late and unknown ones are dropped)."""
        self.server_requests: deque[dict[str, Any]] = deque(maxlen=SERVER_REQUESTS_KEPT)
        """Requests and notifications the server sent (callbacks, events), oldest first."""

    @classmethod
    def connect(
        cls, port: int, host: str = "127.0.0.1", *, timeout: float = 5.0, connect_timeout: float = 5.0
    ) -> Self:
        """Connect, send CONNECT and check the answer, all within ``connect_timeout`` seconds."""
        deadline = time.monotonic() + connect_timeout
        where = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except ConnectionRefusedError:
            raise IrisError(
                f"cannot connect to the Iris server at {where}: connection refused "
                "(is the model running with --iris-server, on this port?)"
            ) from None
        except TimeoutError:
            raise IrisTimeoutError(
                f"cannot connect to the Iris server at {where}: no answer within {connect_timeout:g} s"
            ) from None
        except OSError as error:
            raise IrisError(f"cannot connect to the Iris server at {where}: {error}") from None
        client = cls(sock, address=(host, port), timeout=timeout)
        try:
            client._handshake(deadline)
        except BaseException:
            client.close()
            raise
        return client

    def _handshake(self, deadline: float) -> HandshakeReply:
        self._send(CONNECT_REQUEST, deadline)
        received = bytearray()
        while True:
            end = received.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(received) > MAX_HEADER:
                raise IrisProtocolError(f"Iris handshake answer longer than {MAX_HEADER} bytes")
            received += self._recv(deadline, "handshake answer")
        reply = parse_handshake_reply(bytes(received[:end]))
        rest = bytes(received[end + 4 :])
        if rest:
            self._dispatch(self._codec.feed(rest))
        return reply

    # -- plumbing ---------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran or the connection failed."""
        return self._sock is None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise IrisError(f"the connection to the Iris server at {self._where} is closed")
        return self._sock

    @property
    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _send(self, data: bytes, deadline: float) -> None:
        sock = self._socket()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IrisTimeoutError(f"Iris server at {self._where}: deadline passed before sending")
        sock.settimeout(remaining)
        try:
            sock.sendall(data)
        except TimeoutError:
            self.close()
            raise IrisTimeoutError(f"Iris server at {self._where} stopped reading (send timed out)") from None
        except OSError as error:
            self.close()
            raise IrisError(f"Iris server at {self._where}: send failed: {error}") from None

    def _recv(self, deadline: float, waiting_for: str) -> bytes:
        sock = self._socket()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IrisTimeoutError(f"Iris server at {self._where}: no {waiting_for} in time")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise IrisTimeoutError(f"Iris server at {self._where}: no {waiting_for} in time") from None
        except OSError as error:
            self.close()
            raise IrisError(f"Iris server at {self._where}: receive failed: {error}") from None
        if not data:
            self.close()
            raise IrisError(f"Iris server at {self._where} closed the connection (waiting for {waiting_for})")
        return data

    def _dispatch(self, messages: list[Any]) -> None:
        for message in messages:
            if not isinstance(message, dict):
                raise IrisProtocolError(f"Iris message is not a JSON object: {str(message)[:80]}")
            if "method" in message:
                self.server_requests.append(message)
                if message.get("id") is not None:
                    refusal = {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {"code": JSONRPC_METHOD_NOT_FOUND, "message": "not handled by cca-hil"},
                    }
                    self._send(encode_message(refusal), time.monotonic() + self.timeout)
                continue
            ident = message.get("id")
            if not isinstance(ident, int) or isinstance(ident, bool):
                raise IrisProtocolError(f"Iris response without a usable id: {str(message)[:80]}")
            if ident in self._outstanding:
                self._responses[ident] = message

    def call(self, method: str, timeout: float | None = None, **params: Any) -> Any:
        """Call ``method`` with named ``params``; its result, or IrisCallError / IrisTimeoutError."""
        self._counter = (self._counter + 1) & 0xFFFF_FFFF
        ident = self.inst_id << 32 | self._counter
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": ident}
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._outstanding.add(ident)
        try:
            self._send(encode_message(request), deadline)
            while ident not in self._responses:
                data = self._recv(deadline, f"answer to {method}")
                try:
                    self._dispatch(self._codec.feed(data))
                except IrisProtocolError:
                    self.close()
                    raise
        finally:
            # A late answer to a call that timed out is dropped, never taken for another call's.
            self._outstanding.discard(ident)
        response = self._responses.pop(ident)
        if "error" in response:
            error = response["error"]
            if not isinstance(error, dict):
                raise IrisProtocolError(f"Iris {method}: malformed error {error!r}")
            code = error.get("code", 0)
            return_code = code if isinstance(code, int) else 0
            raise IrisCallError(method, return_code, str(error.get("message", "")), error.get("data"))
        if "result" not in response:
            raise IrisProtocolError(f"Iris {method}: response has neither result nor error")
        return response["result"]

    def close(self) -> None:
        """Close the connection (the server unregisters this client); idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------------------

    def register(self, name: str = "client.cca_hil") -> int:
        """``instanceRegistry_registerInstance`` (uniquified); later request ids carry the instId."""
        result = self.call("instanceRegistry_registerInstance", instName=name, uniquify=True)
        if not isinstance(result, dict):
            raise IrisProtocolError(f"Iris registerInstance answered {result!r}")
        self.inst_id = _int(result.get("instId"), "instId")
        self.inst_name = str(result.get("instName", name))
        return self.inst_id

    def instances(self) -> list[IrisInstance]:
        """Every instance the server lists (components, CPUs, clients)."""
        result = self.call("instanceRegistry_getList")
        if not isinstance(result, list):
            raise IrisProtocolError(f"Iris getList answered {str(result)[:80]}")
        return [IrisInstance(_int(i.get("instId"), "instId"), str(i.get("instName"))) for i in result]

    def memory_spaces(self, inst: int) -> list[MemorySpace]:
        """The memory spaces instance ``inst`` offers, as the server names them."""
        result = self.call("memory_getMemorySpaces", instId=inst)
        if not isinstance(result, list):
            raise IrisProtocolError(f"Iris getMemorySpaces answered {str(result)[:80]}")
        return [
            MemorySpace(
                space_id=_int(s.get("spaceId"), "spaceId"),
                name=str(s.get("name")),
                min_addr=_int(s.get("minAddr", 0), "minAddr"),
                max_addr=_int(s.get("maxAddr", (1 << 64) - 1), "maxAddr"),
            )
            for s in result
        ]

    def read(
        self, inst: int, space: int, address: int, size: int, *, chunk: int = DEFAULT_READ_CHUNK
    ) -> bytes:
        """``size`` bytes at ``address`` in memory space ``space`` of ``inst``, in requests of ``chunk``."""
        out = bytearray()
        for at, width, count in spans(address, size, chunk):
            result = self.call(
                "memory_read", instId=inst, spaceId=space, address=at, byteWidth=width, count=count
            )
            if not isinstance(result, dict):
                raise IrisProtocolError(f"Iris memory_read answered {str(result)[:80]}")
            if result.get("error"):
                raise IrisCallError(
                    "memory_read", 0, f"access error at {at:#x} (+{width * count} bytes): {result['error']}"
                )
            out += _unpack(result.get("data"), width * count, "memory_read")
        return bytes(out)

    def write(
        self, inst: int, space: int, address: int, data: bytes, *, chunk: int = DEFAULT_READ_CHUNK
    ) -> None:
        """Write ``data`` at ``address`` in memory space ``space`` of ``inst``, in requests of ``chunk``."""
        offset = 0
        for at, width, count in spans(address, len(data), chunk):
            piece = data[offset : offset + width * count]
            offset += width * count
            words = _pack(piece)
            result = self.call(
                "memory_write",
                instId=inst,
                spaceId=space,
                address=at,
                byteWidth=width,
                count=count,
                data=words,
            )
            if isinstance(result, dict) and result.get("error"):
                raise IrisCallError("memory_write", 0, f"access error at {at:#x}: {result['error']}")

    def resources(self, inst: int) -> list[Resource]:
        """The registers of ``inst`` (``resource_getList``)."""
        result = self.call("resource_getList", instId=inst)
        if not isinstance(result, list):
            raise IrisProtocolError(f"Iris resource_getList answered {str(result)[:80]}")
        return [
            Resource(
                _int(r.get("rscId"), "rscId"), str(r.get("name")), _int(r.get("bitWidth", 64), "bitWidth")
            )
            for r in result
        ]

    def read_registers(self, inst: int, rsc_ids: list[int]) -> list[int]:
        """The values of 64-bit-or-narrower registers ``rsc_ids`` of ``inst`` (``resource_read``)."""
        result = self.call("resource_read", instId=inst, rscIds=rsc_ids)
        if not isinstance(result, dict):
            raise IrisProtocolError(f"Iris resource_read answered {str(result)[:80]}")
        if result.get("error"):
            raise IrisCallError("resource_read", 0, f"register read failed: {result['error']}")
        data = result.get("data")
        if not isinstance(data, list) or len(data) < len(rsc_ids):
            raise IrisProtocolError(f"Iris resource_read returned {data!r} for {len(rsc_ids)} registers")
        return [_int(v, "register value") for v in data[: len(rsc_ids)]]
