"""Fixtures: an emulated agent behind the three kinds of stream the link runs over."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator

import pytest
import serial
from agent_support import Bench, BenchFactory, PtyPort

from cca_hil.agent.emulator import AgentEmulator, EmulatorServer
from cca_hil.agent.streams import FdStream, stream_pair


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
