"""Helpers of the agent link tests: the bench (an emulated agent on a stream pair) and the pty port."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from cca_hil.agent.emulator import AgentEmulator
from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.streams import ByteStream, FdStream, SocketStream

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


@dataclass
class PtyPort:
    """A pty pair: pySerial on the slave path (the host's view of a UART), the agent on the master."""

    serial: serial.Serial
    master: FdStream
    slave_fd: int
