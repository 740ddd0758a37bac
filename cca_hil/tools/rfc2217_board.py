"""A simulated board behind an RFC 2217 server, with a network power switch: a farm board as labgrid sees it.

What a lab's console server and PDU make of a board: the simulated board's
UART (the agent emulator on a fresh model, as ``sim_board --tcp`` serves it)
is reached through an RFC 2217 (Telnet COM-port control) server on
``127.0.0.1``, as ser2net serves a labgrid ``NetworkSerialPort``, and its power
through an HTTP switch in the ``simplerest`` form labgrid's ``NetworkPowerPort``
speaks (``GET /relay/INDEX/1`` on, ``…/0`` off, ``GET /relay/INDEX`` → ``1`` or
``0``). Switching power off makes the agent fall silent; switching it on boots
it again (its session is gone and the boot text comes again), as a board does.

The first line on stdout is the RFC 2217 URL (``rfc2217://127.0.0.1:PORT``), so
the program also works as a serial profile's ``launch:``; the second is the
power switch's URL template (``http://127.0.0.1:PORT/relay/{index}/{value}``).
Everything else goes to stderr. The options of ``sim_board`` (``--seed``,
``--noise``, ``--die-after`` …) choose the board; ``--port`` the RFC 2217 port,
``--power-port`` the switch's (0: any free one). SIGTERM or SIGINT ends it.

    python -m cca_hil.tools.rfc2217_board [--port N] [--power-port N] [sim-board options]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import re
import select
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from cca_hil.agent.emulator import AgentEmulator, EmulatorServer
from cca_hil.errors import CcaHilError
from cca_hil.tools._signals import stop_on_signals
from cca_hil.tools.sim_board import EXIT_USAGE, BoardOptions, build_emulator, parse_options

_RELAY = re.compile(r"^/relay/(?P<index>\d+)(?:/(?P<value>[01]))?/?$")


class PowerSwitch:
    """The board's power relay: off silences the agent, on boots it again."""

    def __init__(self, emulator: AgentEmulator) -> None:
        self.emulator = emulator
        self.on = True
        self._lock = threading.Lock()
        self.changes = 0

    def set(self, on: bool) -> None:
        """Switch power; switching on an unpowered board reboots its agent."""
        with self._lock:
            if on == self.on:
                return
            self.changes += 1
            self.on = on
            if on:
                self.emulator.reboot()
            else:
                self.emulator.dead = True


class _PowerHandler(http.server.BaseHTTPRequestHandler):
    """``simplerest``: ``GET /relay/INDEX/VALUE`` switches, ``GET /relay/INDEX`` reads (index 0 only)."""

    switch: PowerSwitch

    def do_GET(self) -> None:
        match = _RELAY.match(self.path)
        if match is None or match["index"] != "0":
            self.send_error(404, "expected /relay/0 or /relay/0/0|1")
            return
        if match["value"] is not None:
            self.switch.set(match["value"] == "1")
        body = b"1" if self.switch.on else b"0"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"rfc2217-board: power: {format % args}\n")


class Rfc2217Front:
    """Serves the board's UART to one RFC 2217 client at a time (pySerial's PortManager does the protocol)."""

    def __init__(self, uart_url: str, *, port: int = 0) -> None:
        self.uart_url = uart_url
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.05)

    @property
    def url(self) -> str:
        """``rfc2217://127.0.0.1:PORT``."""
        return f"rfc2217://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self, stop: threading.Event) -> None:
        """Accept clients until ``stop``; each gets the board's UART until it goes away."""
        while not stop.is_set():
            try:
                client, peer = self.listener.accept()
            except TimeoutError:
                continue
            sys.stderr.write(f"rfc2217-board: client attached from {peer[0]}:{peer[1]}\n")
            try:
                self._session(client, stop)
            finally:
                client.close()
        self.listener.close()

    def _session(self, client: socket.socket, stop: threading.Event) -> None:
        import serial
        import serial.rfc2217

        client.setblocking(True)
        # Frames go out in small pieces: without NODELAY each would wait for the peer's delayed ACK.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        uart = serial.serial_for_url(self.uart_url, baudrate=115200, timeout=0.05)
        lock = threading.Lock()
        done = threading.Event()

        class _Connection:
            """What the PortManager writes negotiation replies to."""

            @staticmethod
            def write(data: bytes) -> None:
                with lock:
                    client.sendall(data)

        manager = serial.rfc2217.PortManager(uart, _Connection())

        def to_client() -> None:
            while not done.is_set():
                try:
                    data = uart.read(uart.in_waiting or 1)
                    if data:
                        _Connection.write(b"".join(manager.escape(data)))
                except (OSError, serial.SerialException):
                    done.set()

        pump = threading.Thread(target=to_client, name="rfc2217-to-client", daemon=True)
        pump.start()
        try:
            while not stop.is_set() and not done.is_set():
                ready, _, _ = select.select([client], [], [], 0.05)
                if not ready:
                    continue
                data = client.recv(4096)
                if not data:
                    break
                uart.write(b"".join(manager.filter(data)))
        except (OSError, serial.SerialException):
            pass
        finally:
            done.set()
            pump.join(timeout=2.0)
            uart.close()


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, BoardOptions]:
    parser = argparse.ArgumentParser(
        prog="rfc2217-board",
        description="A simulated board behind an RFC 2217 server and a simplerest power switch (127.0.0.1).",
        epilog="Other options are sim-board's (--seed, --noise, --die-after …).",
    )
    parser.add_argument("--port", type=int, default=0, help="RFC 2217 port (default: any free one)")
    parser.add_argument("--power-port", type=int, default=0, help="power switch port (default: any free one)")
    ours, rest = parser.parse_known_args(list(argv))
    if "--tcp" in rest:
        rest.remove("--tcp")
    return ours, parse_options([*rest, "--tcp"])


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the board until SIGTERM/SIGINT; the exit status."""
    ours, options = _parse(sys.argv[1:] if argv is None else argv)
    try:
        emulator = build_emulator(options)
    except CcaHilError as exc:
        sys.stderr.write(f"rfc2217-board: error: {exc}\n")
        return EXIT_USAGE
    stop = stop_on_signals()

    switch = PowerSwitch(emulator)
    handler = type("PowerHandler", (_PowerHandler,), {"switch": switch})
    with contextlib.ExitStack() as stack:
        uart = stack.enter_context(EmulatorServer(emulator))
        power = http.server.ThreadingHTTPServer(("127.0.0.1", ours.power_port), handler)
        stack.callback(power.server_close)
        switching = threading.Thread(target=power.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        switching.start()
        stack.callback(power.shutdown)
        front = Rfc2217Front(uart.url, port=ours.port)
        power_port = power.server_address[1]
        sys.stdout.write(f"{front.url}\nhttp://127.0.0.1:{power_port}/relay/{{index}}/{{value}}\n")
        sys.stdout.flush()
        sys.stderr.write(f"rfc2217-board: serving {front.url}, power on port {power_port}\n")
        front.serve(stop)
    sys.stderr.write("rfc2217-board: stopped\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
