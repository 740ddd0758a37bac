"""Fixtures: an emulated agent behind the three kinds of stream the link runs over."""

from __future__ import annotations

import os
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import serial

from cca_hil.agent.emulator import AgentEmulator, EmulatorServer
from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.streams import ByteStream, FdStream, SocketStream, stream_pair

FAST = LinkTimeouts(boot=5.0, handshake=0.2, request=0.5, bulk=1.0, gap=0.02)
"""Short bounds so that failure tests end quickly; correctness never depends on them."""


@dataclass
class Bench:
    """An emulator serving the device end of a stream pair, and the host end."""

    emulator: AgentEmulator
    host: SocketStream
    device: SocketStream
    console: list[bytes] = field(default_factory=list)

    def link(self, stream: ByteStream | None = None, **kwargs: object) -> AgentLink:
        """A link on the host end (or on ``stream`` wrapping it) with console capture and fast timeouts."""
        options: dict[str, object] = {"timeouts": FAST, "console": self.console.append}
        options.update(kwargs)
        return AgentLink(stream or self.host, **options)  # type: ignore[arg-type]


BenchFactory = Callable[..., Bench]


@pytest.fixture
def bench_factory() -> Iterator[BenchFactory]:
    """Build benches with custom emulators; everything is stopped and closed afterwards."""
    made: list[Bench] = []

    def make(emulator: AgentEmulator | None = None, *, start: bool = True) -> Bench:
        host, device = stream_pair(timeout=0.02)
        bench = Bench(emulator or AgentEmulator(gap=0.02), host, device)
        if start:
            bench.emulator.start(device)
        made.append(bench)
        return bench

    yield make
    for bench in made:
        bench.emulator.stop()
        bench.host.close()
        bench.device.close()


@pytest.fixture
def bench(bench_factory: BenchFactory) -> Bench:
    """A default emulator on an in-process stream pair."""
    return bench_factory()


@dataclass
class PtyPort:
    """A pty pair: pySerial on the slave path (the host's view of a UART), the agent on the master."""

    serial: serial.Serial
    master: FdStream
    slave_fd: int


@pytest.fixture
def pty_port() -> Iterator[PtyPort]:
    """A raw pty whose slave is opened through ``serial.serial_for_url`` like a real UART."""
    master, slave = os.openpty()
    tty.setraw(slave)
    port = serial.serial_for_url(os.ttyname(slave), baudrate=115200, timeout=0.05, exclusive=True)
    try:
        yield PtyPort(port, FdStream(master, timeout=0.02), slave)
    finally:
        port.close()
        os.close(slave)
        os.close(master)


@pytest.fixture
def tcp_agent() -> Iterator[EmulatorServer]:
    """An emulated board behind a TCP port on 127.0.0.1 (what ser2net offers)."""
    server = EmulatorServer(AgentEmulator(gap=0.02))
    server.start()
    try:
        yield server
    finally:
        server.close()
