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

``probe:`` (a pyOCD debug probe, :mod:`cca_hil.probe`) gives the board ``load``
and ``reset``; ``power:`` (FTDI GPIO lines or commands, :mod:`cca_hil.power`)
gives ``power`` and, with a reset line or command, ``reset``. Neither needs the
agent: a board can be powered and loaded before anything on it answers. Both
are opened on first use and kept until the target closes. A reset or power
change while the agent link is open closes the link first and opens it again
afterwards (not after ``off``), since the agent reboots with the board.

``probe.sim_machine: shared`` (profile ``board-sim-probe``) simulates the board
and its probe on **one** model machine in this process: the agent emulator is
served on a loopback TCP port and a simulated SW-DP on the same machine is
plugged in for pyOCD, so what the probe writes the agent reads.
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from cca_hil.agent.streams import ByteStream
from cca_hil.arch.pas import Pas
from cca_hil.errors import ProfileError, TransportError
from cca_hil.power import POWER_PARAMS, PowerConfig, PowerController
from cca_hil.probe import PROBE_PARAMS, LoadResult, ProbeConfig, ProbeSession
from cca_hil.targets.agent import LINK_PARAMS, AgentTarget
from cca_hil.targets.base import Capability, PowerAction

if TYPE_CHECKING:
    from cca_hil.agent.emulator import AgentEmulator, EmulatorServer
    from cca_hil.model.machine import Machine
    from cca_hil.profiles import Profile
    from cca_hil.sim.dap import SimDap

DEFAULT_BAUDRATE = 115200
BOARD_LOG = "board.log"
PYTHON_NAMES = ("python", "python3")
"""A ``launch:`` program of this name runs on the interpreter running cca-hil (so its packages import)."""

_READ_SLICE = 0.05
"""pySerial read timeout: how long the link's reader blocks before checking whether to stop."""
_WRITE_TIMEOUT = 5.0
"""Longest a write may block on a line that does not drain (flow control stuck, peer stalled)."""

SIM_MACHINES = ("shared",)
"""Values of ``probe.sim_machine``: ``shared`` puts the simulated probe on the simulated board's machine."""
SERIAL_PROBE_PARAMS: Mapping[str, Any] = {**PROBE_PARAMS, "sim_machine": str}
"""A serial board's ``probe:`` section: :data:`~cca_hil.probe.PROBE_PARAMS` and ``sim_machine``."""


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


class SharedSimBoard:
    """A simulated board and its simulated debug probe on one model machine, in this process.

    The agent emulator (the board's firmware, as ``sim-board --tcp`` runs it) is
    served on a loopback TCP port, and a :class:`~cca_hil.sim.dap.SimDap` on the
    same machine is plugged in for pyOCD's enumeration under ``unique_id``: the
    probe's MEM-AP and the agent see one memory, through the machine's GPT.
    Pulsing nRESET through the probe reboots the board: the firmware builds a fresh GPT and RMM,
    the agent's session is gone and the boot text comes again; memory keeps its contents, as DRAM
    does.
    """

    def __init__(self, unique_id: str) -> None:
        from cca_hil.agent.emulator import EmulatorServer
        from cca_hil.sim.dap import SimDap, plugged
        from cca_hil.tools.sim_board import BoardOptions, build_emulator

        self.emulator: AgentEmulator = build_emulator(BoardOptions(tcp=True))
        self.dap: SimDap = SimDap.for_machine(unique_id, self.emulator.machine)
        self.dap.on_reset = self.emulator.reboot
        self._stack = contextlib.ExitStack()
        try:
            self.server: EmulatorServer = self._stack.enter_context(EmulatorServer(self.emulator))
            self._stack.enter_context(plugged(self.dap))
        except BaseException:
            self._stack.close()
            raise

    @property
    def machine(self) -> Machine:
        """The one model machine behind the agent and the probe."""
        return self.emulator.machine

    @property
    def url(self) -> str:
        """``socket://127.0.0.1:PORT`` of the agent's line."""
        return self.server.url

    def close(self) -> None:
        """Unplug the probe, stop serving the agent; idempotent and bounded."""
        self._stack.close()


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
        "probe": SERIAL_PROBE_PARAMS,
        "power": POWER_PARAMS,
    }

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        params = profile.params
        self.url: str | None = params.get("url")
        self.launch: list[str] = launch_argv(list(params.get("launch", [])))
        self.probe_config, self.sim_machine = _probe_config(params.get("probe"), where=profile.source)
        self.power_config = _power_config(params.get("power"), where=profile.source)
        if self.sim_machine is not None and (self.url or self.launch):
            raise ProfileError(
                "serial.probe.sim_machine: shared runs the simulated board in this process; "
                "drop serial.url and serial.launch",
                where=profile.source,
            )
        if not self.url and not self.launch and self.sim_machine is None:
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
        self.sim: SharedSimBoard | None = None
        self.last_load: LoadResult | None = None
        """What the last :meth:`load` did (bytes, segments, verified, entry point)."""
        self._probe: ProbeSession | None = None
        self._power: PowerController | None = None
        self._on_power_step: Callable[[str], None] | None = None

    # -- debug probe, power control, simulation ---------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the agent announced (once open), and ``load``/``reset``/``power`` as the profile allows."""
        return super().capabilities | self._board_capabilities()

    def _board_capabilities(self) -> frozenset[str]:
        caps: set[str] = set()
        if self.probe_config is not None:
            caps |= {Capability.LOAD, Capability.RESET}
        if self.power_config is not None:
            caps.add(Capability.POWER)
        if self._power_resets():
            caps.add(Capability.RESET)
        return frozenset(caps)

    def _power_resets(self) -> bool:
        """True when the power control has a reset line, sequence or command."""
        power = self.power_config
        return power is not None and bool(power.steps("reset") or "reset" in power.commands)

    def start_simulation(self) -> SharedSimBoard | None:
        """Boot the in-process simulated board and plug its probe in (``probe.sim_machine``); idempotent."""
        if self.sim is None and self.sim_machine is not None:
            assert self.probe_config is not None
            self.sim = SharedSimBoard(_plain_id(self.probe_config.unique_id))
        return self.sim

    def probe_session(self) -> ProbeSession:
        """The open debug-probe session (opened on first use, kept until :meth:`close`)."""
        self.require(Capability.LOAD)
        assert self.probe_config is not None
        if self._probe is None:
            self.start_simulation()
            session = ProbeSession(self.probe_config)
            session.open()
            self._probe = session
        return self._probe

    @property
    def probe_pas(self) -> Pas | None:
        """The PAS the open probe session's accesses use (None before a probe is opened)."""
        return self._probe.pas if self._probe is not None else None

    def _power_controller(self) -> PowerController:
        self.require(Capability.POWER)
        assert self.power_config is not None
        if self._power is None:
            controller = PowerController(self.power_config, on_step=self._power_step)
            controller.open()
            self._power = controller
        return self._power

    def _power_step(self, step: str) -> None:
        if self._on_power_step is not None:
            self._on_power_step(step)

    def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.close()

    def load(
        self,
        image: Path,
        address: int | None = None,
        *,
        verify: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Load an ELF/HEX/BIN image through the debug probe's MEM-AP (and read it back when ``verify``).

        The image is parsed before anything touches the board (InputError). With
        the agent link open, it is also checked against the memory map the agent
        reported, for the PAS the probe uses. Transfer faults and a read-back
        mismatch are TargetErrors. ``progress(done, total)`` counts the write and
        then the read-back.
        """
        from cca_hil.images import check_fits, load_image

        self.require(Capability.LOAD)
        assert self.probe_config is not None
        parsed = load_image(image, address=address)
        if self._opened:
            check_fits(parsed, self.info().regions, pas=self.probe_pas or self.probe_config.pas)
        session = self.probe_session()
        phases = 2 if verify else 1

        def step(phase: str, done: int, total: int) -> None:
            assert progress is not None
            progress(done + (total if phase == "verify" else 0), total * phases)

        self.last_load = session.load(parsed, verify=verify, progress=step if progress is not None else None)

    def reset(self) -> None:
        """Reset the board: the power controller's reset line (or command) when configured, else nRESET.

        An open agent link is closed first and opened again once the board has reset.
        """
        self.require(Capability.RESET)
        relink = self._opened
        if relink:
            super().close()
        if self._power_resets():
            self._power_controller().power("reset")
        else:
            self.probe_session().reset()
        if relink:
            self.open()

    def power(self, action: PowerAction, *, on_step: Callable[[str], None] | None = None) -> None:
        """Switch board power ``on``, ``off`` or ``cycle`` it; ``on_step(step)`` hears each step as it starts.

        An open agent link is closed first and, unless the board was switched
        off, opened again afterwards; an open probe session is closed when power goes.
        """
        self.require(Capability.POWER)
        relink = self._opened
        if relink:
            super().close()
        if action != "on":
            self._close_probe()
        self._on_power_step = on_step
        try:
            self._power_controller().power(action)
        finally:
            self._on_power_step = None
        if relink and action != "off":
            self.open()

    def close(self) -> None:
        """Close the agent link, the probe session, the power controller and the simulation; idempotent."""
        try:
            super().close()
        finally:
            try:
                self._close_probe()
            finally:
                power, self._power = self._power, None
                sim, self.sim = self.sim, None
                try:
                    if power is not None:
                        power.close()
                finally:
                    if sim is not None:
                        sim.close()

    def _lease_identity(self) -> str | None:
        """The board: its UART URL, else its probe, else its power interface; None when simulated here.

        A launched board program without ``url:`` is private to this process (it picks a free port).
        """
        if self.sim_machine is not None:
            return None
        if self.url:
            return f"serial:{self.url}"
        if self.probe_config is not None:
            return f"probe:{_plain_id(self.probe_config.unique_id)}"
        if self.power_config is not None and self.power_config.gpio_url:
            return f"power:{self.power_config.gpio_url}"
        return None

    # -- the agent's line ---------------------------------------------------------------------------------

    def _connect(self, folder: Path) -> ByteStream:
        url = self.url
        sim = self.start_simulation()
        if sim is not None:
            url = sim.url
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
        if self.probe_config is not None:
            cfg = self.probe_config
            facts["debug probe"] = f"{cfg.unique_id} AP#{cfg.ap} ({cfg.ap_kind}-ap, {cfg.pas} PAS)"
        if self.power_config is not None:
            power = self.power_config
            facts["power control"] = power.gpio_url or ", ".join(f"{a} command" for a in power.commands)
        if self.sim is not None:
            facts["simulation"] = "board and debug probe share one in-process model machine"
        return facts


def _plain_id(unique_id: str) -> str:
    """A probe unique id without pyOCD's ``type:`` prefix (``ccasim:ID`` → ``ID``)."""
    return unique_id.rpartition(":")[2]


def _probe_config(params: Mapping[str, Any] | None, *, where: str) -> tuple[ProbeConfig | None, str | None]:
    """The ``probe:`` section as a :class:`ProbeConfig` and its ``sim_machine`` (None: real hardware)."""
    if params is None:
        return None, None
    sim = params.get("sim_machine")
    if sim is not None and sim not in SIM_MACHINES:
        raise ProfileError(f"serial.probe.sim_machine {sim!r} is not known", where=where, valid=SIM_MACHINES)
    try:
        config = ProbeConfig.from_params(params, where="serial.probe")
    except ProfileError as exc:
        raise ProfileError(exc.what, where=exc.where or where, valid=exc.valid) from None
    return config, cast(str | None, sim)


def _power_config(params: Mapping[str, Any] | None, *, where: str) -> PowerConfig | None:
    """The ``power:`` section as a :class:`PowerConfig` (None when the profile has none)."""
    if params is None:
        return None
    try:
        return PowerConfig.from_params(params, where="serial.power")
    except ProfileError as exc:
        raise ProfileError(exc.what, where=exc.where or where, valid=exc.valid) from None
