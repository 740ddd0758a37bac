"""A board on a serial line (profile kind ``serial``): the agent on a UART reached by a pySerial URL.

The port is opened with pySerial's ``serial_for_url`` (reference
targets-transports.md §6): device paths (``/dev/ttyUSB0``), ``socket://host:port``
(ser2net and the like), ``rfc2217://host:port`` and ``ftdi://`` (pyftdi's
pySerial extension, registered only when such a URL is opened). A native port
is opened ``exclusive`` (flock, POSIX) so two cca-hil processes never share a
UART.

``launch:`` starts a program that stands in for the board — a simulated board
(``python -m cca_hil.tools.sim_board``), a ser2net, a QEMU — in its own process
group. Its first line on stdout is the URL of its port (unless ``url:`` names
one); everything else it prints goes to ``board.log`` in the run folder. It is
stopped with SIGTERM, then SIGKILL, when the target closes.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from cca_hil.agent.streams import ByteStream
from cca_hil.errors import ProfileError, TransportError
from cca_hil.power import POWER_PARAMS
from cca_hil.probe import PROBE_PARAMS
from cca_hil.targets.agent import LINK_PARAMS, AgentTarget

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

DEFAULT_BAUDRATE = 115200
BOARD_LOG = "board.log"
PYTHON_NAMES = ("python", "python3")
"""A ``launch:`` program of this name runs on the interpreter running cca-hil (so its packages import)."""

_READ_SLICE = 0.05
"""pySerial read timeout: how long the link's reader blocks before checking whether to stop."""
_WRITE_TIMEOUT = 5.0
"""Longest a write may block on a line that does not drain (flow control stuck, peer stalled)."""


class LaunchedBoard:
    """A board stand-in process: started in its own process group, its port URL read from stdout."""

    def __init__(self, argv: list[str], *, log_path: Path, timeout: float, stop_timeout: float) -> None:
        self.argv = argv
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self._log: IO[bytes] = log_path.open("ab", buffering=0)
        self._log.write(f"$ {shlex.join(argv)}\n".encode())
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log,
                # Its own group: Ctrl-C reaches cca-hil only, and the whole group is stopped at close.
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise TransportError(f"cannot start board program {argv[0]!r}: {exc}") from exc
        assert self._proc.stdout is not None
        self._stdout = self._proc.stdout
        self._pump: threading.Thread | None = None
        try:
            self.url = self._read_url(timeout)
        except BaseException:
            self.stop()
            raise
        self._pump = threading.Thread(target=self._copy_rest, name="board-stdout", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        """Process id (and process group id) of the board program."""
        return self._proc.pid

    def _read_url(self, timeout: float) -> str:
        fd = self._stdout.fileno()
        seen = bytearray()
        deadline = time.monotonic() + timeout
        while b"\n" not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"board program {self.argv[0]!r} printed no port URL within {timeout:g} s "
                    f"(see {self.log_path})"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                status = self._proc.wait(timeout=1.0)
                raise TransportError(
                    f"board program {self.argv[0]!r} exited with status {status} before printing its "
                    f"port URL; last output: {self._tail()!r}"
                )
            seen += chunk
        line, _, rest = bytes(seen).partition(b"\n")
        self._log.write(line + b"\n" + rest)
        return line.decode("utf-8", "replace").strip()

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:])
        return ""

    def _copy_rest(self) -> None:
        fd = self._stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self._log.write(chunk)

    def poll(self) -> int | None:
        """The exit status once the program has ended, else None."""
        return self._proc.poll()

    def stop(self) -> int | None:
        """SIGTERM to the group, bounded wait, SIGKILL; joins the output copy; idempotent."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=self.stop_timeout)
        # Whatever the leader left in its group (helpers) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(timeout=2.0)
        if self._pump is None or not self._pump.is_alive():
            self._stdout.close()
        self._log.close()
        return self._proc.returncode


def launch_argv(argv: list[Any]) -> list[str]:
    """The ``launch:`` argument list as run: ``python`` means this interpreter."""
    out = [str(a) for a in argv]
    if out and out[0] in PYTHON_NAMES:
        out[0] = sys.executable
    return out


def open_port(
    url: str, *, baudrate: int, exclusive: bool, rtscts: bool = False, xonxoff: bool = False
) -> Any:
    """A pySerial port for ``url`` (device path, ``socket://``, ``rfc2217://``, ``ftdi://``)."""
    import serial

    if url.startswith("ftdi://"):
        try:
            # pyftdi's pySerial extension adds the ftdi:// scheme to serial_for_url when imported.
            import pyftdi.serialext  # noqa: F401
        except ImportError as exc:
            raise TransportError(
                f"{url}: the ftdi:// scheme needs pyftdi (pip install 'cca-hil[probe]'): {exc}"
            ) from None
    options: dict[str, Any] = {
        "baudrate": baudrate,
        "timeout": _READ_SLICE,
        "rtscts": rtscts,
        "xonxoff": xonxoff,
    }
    if not url.startswith("rfc2217://"):
        # pySerial's RFC 2217 client refuses a write timeout (NotImplementedError); the others bound
        # a write to a stalled line.
        options["write_timeout"] = _WRITE_TIMEOUT
    if "://" not in url and os.name == "posix":
        # flock-based exclusivity exists for native ports on POSIX only (Windows ports are exclusive).
        options["exclusive"] = exclusive
    try:
        return serial.serial_for_url(url, **options)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise TransportError(f"cannot open serial port {url}: {exc}") from exc


class SerialTarget(AgentTarget):
    """A board whose agent talks on a UART reached through a pySerial URL (or a launched stand-in)."""

    kind: ClassVar[str] = "serial"

    PARAMS: ClassVar[dict[str, Any]] = {
        "url": str,
        "baudrate": int,
        "exclusive": bool,
        "rtscts": bool,
        "xonxoff": bool,
        "launch": list,
        "launch_timeout": float,
        "stop_timeout": float,
        "link": LINK_PARAMS,
        "probe": PROBE_PARAMS,
        "power": POWER_PARAMS,
    }

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        params = profile.params
        self.url: str | None = params.get("url")
        self.launch: list[str] = launch_argv(list(params.get("launch", [])))
        if not self.url and not self.launch:
            raise ProfileError(
                "a serial profile needs serial.url (or serial.launch, a program that prints one)",
                where=profile.source,
            )
        self.baudrate = int(params.get("baudrate", DEFAULT_BAUDRATE))
        if self.baudrate <= 0:
            raise ProfileError(f"serial.baudrate must be positive, got {self.baudrate}", where=profile.source)
        self.exclusive = bool(params.get("exclusive", True))
        self.rtscts = bool(params.get("rtscts", False))
        self.xonxoff = bool(params.get("xonxoff", False))
        self.launch_timeout = float(params.get("launch_timeout", 10.0))
        self.stop_timeout = float(params.get("stop_timeout", 5.0))
        self.board: LaunchedBoard | None = None
        self.port: Any = None
        self.port_url = self.url or ""

    def _connect(self, folder: Path) -> ByteStream:
        url = self.url
        if self.launch:
            self.board = LaunchedBoard(
                self.launch,
                log_path=folder / BOARD_LOG,
                timeout=self.launch_timeout,
                stop_timeout=self.stop_timeout,
            )
            url = url or self.board.url
        assert url is not None
        self.port = open_port(
            url, baudrate=self.baudrate, exclusive=self.exclusive, rtscts=self.rtscts, xonxoff=self.xonxoff
        )
        self.port_url = url
        stream: ByteStream = self.port
        return stream

    def _disconnect(self) -> None:
        port, self.port = self.port, None
        board, self.board = self.board, None
        try:
            if port is not None:
                port.close()
        finally:
            if board is not None:
                board.stop()

    def _facts(self) -> dict[str, str]:
        facts = {"serial port": f"{self.port_url} @ {self.baudrate} baud"}
        if self.board is not None:
            facts["board program"] = f"{shlex.join(self.board.argv)} (pid {self.board.pid})"
        return facts
