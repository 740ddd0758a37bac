"""A simulated board: cca-hil's agent emulator, backed by a freshly booted model, on a pty or a TCP port.

It behaves like a board on a UART as far as the host can tell: the first line on
stdout is where to reach it — the path of a pty slave (``/dev/pts/N``, opened by
the host like any serial device) or, with ``--tcp``, ``socket://127.0.0.1:PORT``
(like a ser2net port) — and when a host attaches, TF-A's boot text comes first,
then the agent's banner, then frames. The board (model and agent) outlives host
connections, as hardware does when the host reconnects.

Options for demos and failure tests: ``--seed``/``--profile``/``--set`` choose the
model, ``--noise`` damages the board's side of the line, ``--die-after N`` makes
the agent halt in the middle of its N+1-th request, ``--silent`` makes it print
its banner and never answer, ``--protocol`` makes it speak another link
version, ``--no-realm`` makes it an agent without a realm payload. Everything
but the URL line goes to stderr. SIGTERM or SIGINT ends it.

Run it as ``python -m cca_hil.tools.sim_board`` or ``tools/sim-board``.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import threading
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from cca_hil.agent.emulator import AgentEmulator, DieMode, default_caps
from cca_hil.agent.noise import NoiseSpec, NoisyStream
from cca_hil.agent.protocol import PROTOCOL_MAJOR, PROTOCOL_MINOR, AgentCaps
from cca_hil.agent.streams import ByteStream, FdStream, SocketStream
from cca_hil.errors import CcaHilError
from cca_hil.tools._signals import stop_on_signals

EXIT_USAGE = 2
EXIT_DIED = 3
"""Status when the agent died with ``--die-mode close`` (the board dropped off the line)."""

BOOT_DELAY = 0.2
"""Seconds from a host attaching to the first boot line: pySerial discards pending input while it
opens a port (a pty's ``tcflush``, ``socket://``'s drain), so text sent at once would be lost."""


@dataclass(frozen=True)
class BoardOptions:
    """What the simulated board is: model profile, line noise, failure modes, transport."""

    tcp: bool = False
    port: int = 0
    profile: str = "model"
    overrides: tuple[str, ...] = ()
    noise: NoiseSpec | None = None
    noise_seed: int = 0
    die_after: int | None = None
    die_mode: DieMode = "silent"
    silent: bool = False
    protocol: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR)
    realm: bool = True
    """Announce REALM_RUN (and ATTESTATION where the model signs tokens): realms run as on the model."""
    boot_delay: float | None = None


def _protocol(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MAJOR.MINOR") from None


def _noise(text: str) -> NoiseSpec:
    try:
        return NoiseSpec.parse(text)
    except CcaHilError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of the simulated board."""
    parser = argparse.ArgumentParser(
        prog="sim-board",
        description="A simulated Arm CCA board: the cca-hil agent emulator on a model, on a pty or TCP.",
    )
    parser.add_argument("--tcp", action="store_true", help="serve on 127.0.0.1 TCP instead of a pty")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    parser.add_argument("--profile", default="model", help="model profile of the board (default: model)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="model override"
    )
    parser.add_argument("--seed", type=int, help="model seed (same as --set seed=N)")
    parser.add_argument("--noise", type=_noise, help="damage on the board's side: ber=…,drop=…,dup=…")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--die-after", type=int, metavar="N", help="halt in the middle of request N+1")
    parser.add_argument(
        "--die-mode",
        choices=("silent", "close"),
        default="silent",
        help="when dying: fall silent, or drop off the line and exit (default silent)",
    )
    parser.add_argument("--silent", action="store_true", help="print the banner, never answer")
    parser.add_argument(
        "--protocol", type=_protocol, default=(PROTOCOL_MAJOR, PROTOCOL_MINOR), metavar="MAJOR.MINOR"
    )
    parser.add_argument(
        "--no-realm",
        dest="realm",
        action="store_false",
        help="announce no REALM_RUN, as an agent built without a realm payload",
    )
    parser.add_argument("--boot-delay", type=float, help="seconds from attach to the first boot line")
    return parser


def parse_options(argv: Sequence[str]) -> BoardOptions:
    """Board options from a command line (argparse exits with status 2 on a bad one)."""
    args = build_parser().parse_args(list(argv))
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return BoardOptions(
        tcp=args.tcp,
        port=args.port,
        profile=args.profile,
        overrides=tuple(overrides),
        noise=args.noise,
        noise_seed=args.noise_seed,
        die_after=args.die_after,
        die_mode=args.die_mode,
        silent=args.silent,
        protocol=args.protocol,
        realm=args.realm,
        boot_delay=args.boot_delay,
    )


def build_emulator(options: BoardOptions) -> AgentEmulator:
    """A freshly booted model of the chosen profile behind the agent emulator."""
    from cca_hil.errors import ProfileError
    from cca_hil.profiles import build_target, load_profile
    from cca_hil.targets.model import ModelTarget

    profile = load_profile(options.profile, options.overrides)
    target = build_target(profile)
    if not isinstance(target, ModelTarget):
        raise ProfileError(f"the board's profile must be of kind 'model', not {profile.kind!r}")
    # The machine the model target boots from the same profile: the board answers as the model does.
    machine = target.machine
    caps = default_caps(machine)
    if not options.realm:
        caps &= ~(AgentCaps.REALM | AgentCaps.ATTESTATION)
    delay = BOOT_DELAY if options.boot_delay is None else options.boot_delay
    emulator = AgentEmulator(
        machine,
        version=options.protocol,
        caps=caps,
        boot_delay=delay,
        die_after=options.die_after,
        die_mode=options.die_mode,
        name="cca-hil sim-board",
    )
    # A silent agent: the firmware booted and printed its banner, then the agent hung.
    emulator.dead = options.silent
    return emulator


class SimBoard:
    """Serves one agent emulator to whichever host attaches, until stopped."""

    def __init__(self, options: BoardOptions, *, log: IO[str] | None = None) -> None:
        self.options = options
        self.emulator = build_emulator(options)
        self._log = log or sys.stderr

    def say(self, text: str) -> None:
        """A line on the board's diagnostic output."""
        self._log.write(f"sim-board: {text}\n")
        self._log.flush()

    def _device(self, stream: ByteStream) -> ByteStream:
        if self.options.noise is None:
            return stream
        return NoisyStream(stream, self.options.noise, seed=self.options.noise_seed)

    def _died(self) -> bool:
        return self.emulator.dead and self.options.die_mode == "close" and not self.options.silent

    def serve(self, stop: threading.Event, announce: Callable[[str], None]) -> int:
        """Announce the URL, then serve hosts until ``stop``; the exit status."""
        if self.options.tcp:
            return self._serve_tcp(stop, announce)
        return self._serve_pty(stop, announce)

    def _serve_pty(self, stop: threading.Event, announce: Callable[[str], None]) -> int:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            path = os.ttyname(slave)
        finally:
            # No slave kept open here: the master then reports POLLHUP until a host opens the path.
            os.close(slave)
        stream = FdStream(master)
        try:
            announce(path)
            self.say(f"pid {os.getpid()} serving the agent on {path}")
            device = self._device(stream)
            while not stop.is_set():
                if not _pty_attached(master):
                    stop.wait(0.05)
                    continue
                self.emulator.serve(device, stop)
                if self._died():
                    self.say("agent died: dropping off the line")
                    return EXIT_DIED
            return 0
        finally:
            stream.close()

    def _serve_tcp(self, stop: threading.Event, announce: Callable[[str], None]) -> int:
        with socket.create_server(("127.0.0.1", self.options.port)) as listener:
            listener.settimeout(0.05)
            port = listener.getsockname()[1]
            announce(f"socket://127.0.0.1:{port}")
            self.say(f"pid {os.getpid()} serving the agent on 127.0.0.1:{port}")
            while not stop.is_set():
                try:
                    conn, peer = listener.accept()
                except TimeoutError:
                    continue
                self.say(f"host attached from {peer[0]}:{peer[1]}")
                stream = SocketStream(conn)
                try:
                    self.emulator.serve(self._device(stream), stop)
                finally:
                    stream.close()
                if self._died():
                    self.say("agent died: dropping off the line")
                    return EXIT_DIED
        return 0


def _pty_attached(master: int) -> bool:
    """True while some process has the pty's slave open (the master stops reporting hang-up)."""
    poller = select.poll()
    poller.register(master, select.POLLHUP)
    return not any(events & select.POLLHUP for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulated board until SIGTERM/SIGINT; the exit status."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        board = SimBoard(options)
    except CcaHilError as exc:
        sys.stderr.write(f"sim-board: error: {exc}\n")
        return EXIT_USAGE
    stop = stop_on_signals()

    def announce(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()

    status = board.serve(stop, announce)
    board.say(f"stopped (status {status})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
