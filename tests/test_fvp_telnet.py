"""Telnet negotiation and the terminal client, over real sockets (the server side is the test)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.errors import TransportError
from cca_hil.tools.fvp_standin import TELNET_HANDSHAKE, TELNET_REPLIES
from cca_hil.transport.telnet import (
    DO,
    DONT,
    IAC,
    SB,
    SE,
    WILL,
    WONT,
    TelnetNegotiator,
    TerminalClient,
    TerminalClosedError,
)

TEXT = b"NOTICE:  Booting Trusted Firmware\r\n\xff\xfe binary after the handshake\r\n"


def _triples(replies: bytes) -> set[tuple[int, int]]:
    assert len(replies) % 3 == 0
    assert all(replies[i] == IAC for i in range(0, len(replies), 3))
    return {(replies[i + 1], replies[i + 2]) for i in range(0, len(replies), 3)}


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_handshake_is_stripped_and_answered_however_it_is_split(cuts: list[int]) -> None:
    negotiator = TelnetNegotiator()
    payload, replies = b"", b""
    for piece in _split(TELNET_HANDSHAKE + TEXT, cuts):
        data, answer = negotiator.feed(piece)
        payload += data
        replies += answer
    assert payload == TEXT
    assert _triples(replies) == TELNET_REPLIES
    assert negotiator.transparent


def test_unknown_options_are_refused_and_repeats_not_answered_twice() -> None:
    negotiator = TelnetNegotiator()
    _, replies = negotiator.feed(bytes((IAC, WILL, 24, IAC, DO, 31, IAC, WILL, 24, IAC, DONT, 5)))
    assert replies == bytes((IAC, DONT, 24, IAC, WONT, 31, IAC, WONT, 5))
    _, again = negotiator.feed(bytes((IAC, WONT, 1)))
    assert again == bytes((IAC, DONT, 1))


def test_escaped_iac_and_subnegotiation_before_data() -> None:
    negotiator = TelnetNegotiator()
    payload, replies = negotiator.feed(bytes((IAC, SB, 24, 1, IAC, SE, IAC, IAC)) + b"x\xff")
    assert payload == b"\xffx\xff"
    assert replies == b""


def test_without_transparency_commands_are_stripped_everywhere() -> None:
    negotiator = TelnetNegotiator(transparent_after_handshake=False)
    payload, replies = negotiator.feed(b"ab" + bytes((IAC, WILL, 3)) + b"c" + bytes((IAC, IAC)))
    assert payload == b"abc\xff"
    assert replies == bytes((IAC, DO, 3))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A model-side listening socket on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(10)
        yield sock


def test_client_negotiates_captures_and_writes(listener: socket.socket, tmp_path: Path) -> None:
    port = listener.getsockname()[1]
    log = tmp_path / "uart0.log"
    with TerminalClient(name="terminal_0", port=port, mode="telnet", log_path=log) as client:
        server, _ = listener.accept()
        with server:
            server.settimeout(10)
            server.sendall(TELNET_HANDSHAKE[:4])
            server.sendall(TELNET_HANDSHAKE[4:] + TEXT[:10])
            replies = b""
            while len(replies) < 15:
                replies += server.recv(64)
            assert _triples(replies) == TELNET_REPLIES
            server.sendall(TEXT[10:])
            assert client.expect(b"after the handshake\r\n", timeout=10).group() == b"after the handshake\r\n"
            client.write(b"hello\n")
            assert server.recv(64) == b"hello\n"
        with pytest.raises(TerminalClosedError, match=r"terminal_0 .*closed by the model"):
            client.read(1, timeout=10)
    assert log.read_bytes() == TEXT


def test_read_times_out_empty_and_expect_names_what_it_saw(listener: socket.socket, tmp_path: Path) -> None:
    port = listener.getsockname()[1]
    with TerminalClient(
        name="terminal_1", port=port, log_path=tmp_path / "uart1.log", timeout=0.05
    ) as client:
        server, _ = listener.accept()
        with server:
            assert client.read() == b""
            server.sendall(b"INFO:    BL31: ready\r\n")
            with pytest.raises(TransportError, match=r"'SPSR' did not appear within 0\.2 s.*BL31: ready"):
                client.expect(b"SPSR", timeout=0.2)


def test_bounded_buffer_drops_oldest_but_the_log_keeps_everything(
    listener: socket.socket, tmp_path: Path
) -> None:
    port = listener.getsockname()[1]
    log = tmp_path / "uart3.log"
    with TerminalClient(name="terminal_3", port=port, log_path=log, max_buffer=64) as client:
        server, _ = listener.accept()
        with server:
            server.sendall(bytes(range(256)) * 4)
            client.expect(bytes(range(250, 256)), timeout=10)
        assert client.dropped > 0
    assert log.read_bytes() == bytes(range(256)) * 4


def test_connect_to_a_closed_port_fails_within_its_deadline(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError, match=rf"could not connect to 127\.0\.0\.1:{port} within 0\.3 s"):
        TerminalClient(name="terminal_0", port=port, log_path=tmp_path / "u.log", connect_timeout=0.3)
    assert not (tmp_path / "u.log").exists()
