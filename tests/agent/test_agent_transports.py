"""The link over the streams it meets in a lab: a UART (pty + pySerial) and a TCP port (``socket://``)."""

from __future__ import annotations

import pytest
import serial
from agent_support import FAST, PtyPort

from cca_hil.agent.emulator import AgentEmulator, EmulatorServer
from cca_hil.agent.errors import AgentDisconnectedError
from cca_hil.agent.link import AgentLink
from cca_hil.agent.noise import NoisyStream
from cca_hil.agent.protocol import SmcStep
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.model.machine import Machine

DELEGATE = RMI_1_0["granule_delegate"].fid
UNDELEGATE = RMI_1_0["granule_undelegate"].fid
VERSION = RMI_1_0["version"].fid
POOL = 0x9000_0000


def test_round_trip_over_a_pty_opened_with_serial_for_url(pty_port: PtyPort) -> None:
    emulator = AgentEmulator(gap=0.02)
    console: list[bytes] = []
    emulator.start(pty_port.master)
    try:
        with AgentLink(pty_port.serial, timeouts=FAST, console=console.append, name="pty") as link:
            assert link.smc(VERSION, 0x10000)[:3] == (0, 0x10000, 0x10000)
            assert link.smc(DELEGATE, POOL)[0] == 0
            data = bytes(range(256)) * 20
            link.write(POOL + 0x1000, data)
            assert link.read(POOL + 0x1000, len(data)) == data
            assert (
                link.batch([SmcStep(DELEGATE, (POOL + 0x2000 * i,)) for i in range(1, 50)])
                == [(0, 0, 0, 0, 0)] * 49
            )
    finally:
        emulator.stop()
    assert b"Booting Trusted Firmware" in b"".join(console)
    assert not emulator.duplicates()


def test_round_trip_over_a_tcp_port_like_ser2net(tcp_agent: EmulatorServer) -> None:
    oracle = Machine()
    assert tcp_agent.address[0] == "127.0.0.1"
    port = serial.serial_for_url(tcp_agent.url, timeout=0.05)
    try:
        with AgentLink(port, timeouts=FAST, name="tcp") as link:
            for i in range(20):
                fid, arg = (DELEGATE, POOL + (i // 2) * 0x1000) if i % 3 else (VERSION, 0x10000)
                assert link.smc(fid, arg) == oracle.smc(fid, arg)
            assert dict(link.info().platform) == oracle.config.platform_names()
    finally:
        port.close()


def test_reconnecting_to_the_board_keeps_its_state_and_opens_a_new_session(tcp_agent: EmulatorServer) -> None:
    for attempt in range(2):
        port = serial.serial_for_url(tcp_agent.url, timeout=0.05)
        try:
            with AgentLink(port, timeouts=FAST) as link:
                # The second delegate of the same granule fails: the board kept its state.
                assert (link.smc(DELEGATE, POOL)[0] & 0xFF == 0) == (attempt == 0)
        finally:
            port.close()
    assert tcp_agent.emulator.session == 2


def test_agent_closing_the_connection_mid_call_is_a_disconnect_error() -> None:
    with EmulatorServer(AgentEmulator(die_after=1, die_mode="close", gap=0.02)) as server:
        port = serial.serial_for_url(server.url, timeout=0.05)
        try:
            link = AgentLink(port, timeouts=FAST)
            with link:
                assert link.smc(VERSION, 0x10000)[0] == 0
                with pytest.raises(AgentDisconnectedError, match="connection to the agent lost"):
                    link.smc(DELEGATE, POOL)
        finally:
            port.close()


def test_noisy_uart_keeps_at_most_once(pty_port: PtyPort) -> None:
    emulator = AgentEmulator(gap=0.02)
    emulator.start(pty_port.master)
    noisy = NoisyStream(pty_port.serial, "ber=1e-4,drop=1e-3,dup=1e-3", seed=5)
    try:
        with AgentLink(noisy, timeouts=FAST, name="noisy-pty") as link:
            for i in range(300):
                pa = POOL + (i // 2) * 0x1000
                assert link.smc(DELEGATE if i % 2 == 0 else UNDELEGATE, pa)[0] == 0
    finally:
        emulator.stop()
    assert emulator.executed == 300
    assert not emulator.duplicates()


def test_a_pyserial_socket_says_how_many_bytes_wait_not_just_whether_some_do() -> None:
    # pySerial's socket:// in_waiting polls readability (0 or 1); the link reads what the socket
    # really holds, so a reply in one TCP segment is taken in one read rather than two bytes a turn.
    import socket
    import time

    from cca_hil.agent.streams import bytes_waiting

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = serial.serial_for_url(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=0.05)
        peer, _ = server.accept()
        with peer, port:
            assert bytes_waiting(port) == 0
            peer.sendall(bytes(range(256)) * 4)
            deadline = time.monotonic() + 10
            while bytes_waiting(port) < 1024 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (port.in_waiting, bytes_waiting(port)) == (1, 1024)
            assert port.read(bytes_waiting(port)) == bytes(range(256)) * 4
            assert bytes_waiting(port) == 0
