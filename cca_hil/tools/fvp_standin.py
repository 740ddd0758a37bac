"""A stand-in for ``FVP_Base_RevC-2xAEMvA`` on the interface cca-hil uses, for tests without Arm's model.

What it does like the model (reference targets-transports.md §1.2–§1.4):
parses ``-C/--parameter NAME=VALUE``, ``--data INSTANCE=FILE@ADDRESS``,
``-a/--application``, ``--version``, ``--stat``, ``-Q/--quantum``,
``--cyclelimit``, ``--timelimit`` and ``-f FILE``; refuses unknown parameter
names and bad values with a message and a non-zero exit; binds
``bp.terminal_0`` … ``3`` on 127.0.0.1 from ``start_port`` upwards (taking the
next port when one is busy) and prints ``terminal_N: Listening for serial
connection on port P``; serves each terminal in ``raw`` or ``telnet`` mode
(telnet: five option commands on attach, replies checked, the simulation quits
on a wrong or missing reply, transparent afterwards); prints TF-A BL1/BL2/BL31
boot text on uart0, BL31's runtime console on uart1 and the RMM's on uart3;
then runs cca-hil's agent emulator on the agent UART when
``cca_hil.agent.emulator`` exists; stops on ``--timelimit``/``--cyclelimit``,
on EOT or a tag written to a UART configured with ``shutdown_on_eot`` /
``shutdown_tag``, and on the agent's PSCI SYSTEM_OFF when
``bp.ve_sysregs.exit_on_shutdown=1``; with ``-I/--iris-server`` serves an Iris
debug server (IrisRpc 1.0, ``IrisJson`` framing, §1.5) on 127.0.0.1 from
``--iris-port`` (default 7100, next free port upwards; 0 = any free port),
printing ``Iris server started listening to port N`` with
``-p/--print-port-number``: one instance per core with the four physical
memory spaces (``Physical Memory (Secure)``, ``(Non Secure)``, ``(Root)``,
``(Realm)``) backed by the platform model's memory through that PAS's
encryption context (``bp.mpe.enable=1`` turns encryption on), and the
``GPCCR_EL3``/``GPTBR_EL3`` registers. ``-A/--iris-allow-remote`` is accepted
but the server still binds loopback only (and says so on stderr).

What it does not do: simulate a CPU (no run control, breakpoints, virtual
memory spaces or core registers besides the GPC's through Iris), or reproduce the model's
messages byte for byte (the boot text is representative of TF-A and TF-RMM,
and error wording is ours). The telnet handshake bytes are our choice: the
real ones are undocumented (reference §9).

Test hooks are parameters in the ``standin.`` namespace (the real model would
reject them): ``crash_after=SECONDS``, ``crash_signal=NUM``,
``crash_status=N``, ``crash_on_byte=BYTE`` (agent UART receive side),
``hang=1`` (print the ports, then serve nothing and ignore SIGTERM),
``ignore_sigterm=1``, ``no_ports=1``, ``port_delay=SECONDS`` (ports after other
output), ``split_ports=1`` (each port line written in pieces),
``interleave=1`` (other stdout/stderr lines between port lines),
``spawn_child=1`` (a child process in the model's process group),
``agent_uart=N`` (default 0) and ``agent=0`` (no agent emulator).
``FVP_STANDIN_VERSION`` sets the release ``--version`` reports (default 11.27.19).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TypeVar

from cca_hil.transport.iris import IrisCodec, IrisProtocolError, encode_message

if TYPE_CHECKING:
    from cca_hil.arch.pas import Pas
    from cca_hil.model.machine import Machine

_P = TypeVar("_P")

MODEL_NAME = "FVP_Base_RevC-2xAEMvA"
DEFAULT_VERSION = "11.27.19"
VERSION_ENV = "FVP_STANDIN_VERSION"
TERMINALS = 4
CYCLES_PER_SECOND = 100_000_000
"""Nominal simulation rate used for ``--cyclelimit`` (the stand-in has no CPU to count cycles)."""

EXIT_USAGE = 1
IRIS_DEFAULT_PORT = 7100

# The telnet commands sent on attach and the replies a character-mode client gives.
_IAC, _DONT, _DO, _WONT, _WILL = 255, 254, 253, 252, 251
TELNET_HANDSHAKE = bytes(
    (_IAC, _WILL, 1, _IAC, _WILL, 3, _IAC, _DO, 3, _IAC, _DONT, 34, _IAC, _WILL, 0)
)  # WILL ECHO, WILL SGA, DO SGA, DONT LINEMODE, WILL BINARY
TELNET_REPLIES = frozenset(
    {(_DO, 1), (_DO, 3), (_WILL, 3), (_WONT, 34), (_DO, 0)}
)  # DO ECHO, DO SGA, WILL SGA, WONT LINEMODE, DO BINARY
TELNET_REPLY_TIMEOUT = 3.0


# -- parameters ------------------------------------------------------------------

_BOOL = "bool"
_INT = "int"
_STR = "str"
_MODE = "mode"

_CLUSTER = r"cluster[01]"
_PARAMETERS: tuple[tuple[str, str], ...] = (
    # Board: image loading, platform, terminals, UARTs (§1.2, §1.3).
    (r"bp\.secureflashloader\.fname", _STR),
    (r"bp\.flashloader[01]\.fname", _STR),
    (r"bp\.flashloader[01]\.fnameWrite", _STR),
    (r"bp\.refcounter\.non_arch_start_at_default", _BOOL),
    (r"bp\.refcounter\.use_real_time", _BOOL),
    (r"bp\.ve_sysregs\.exit_on_shutdown", _BOOL),
    (r"bp\.ve_sysregs\.mmbSiteDefault", _INT),
    (r"bp\.dram_size", _INT),
    (r"bp\.secure_memory", _BOOL),
    (r"bp\.has_rme", _BOOL),
    (r"bp\.vis\.disable_visualisation", _BOOL),
    (r"bp\.dram_metadata\.is_enabled", _BOOL),
    (r"bp\.terminal_[0-3]\.start_telnet", _BOOL),
    (r"bp\.terminal_[0-3]\.mode", _MODE),
    (r"bp\.terminal_[0-3]\.start_port", _INT),
    (r"bp\.terminal_[0-3]\.quiet", _BOOL),
    (r"bp\.terminal_[0-3]\.terminal_command", _STR),
    (r"bp\.pl011_uart[0-3]\.out_file", _STR),
    (r"bp\.pl011_uart[0-3]\.unbuffered_output", _BOOL),
    (r"bp\.pl011_uart[0-3]\.uart_enable", _BOOL),
    (r"bp\.pl011_uart[0-3]\.shutdown_on_eot", _BOOL),
    (r"bp\.pl011_uart[0-3]\.shutdown_tag", _STR),
    (r"bp\.pl011_uart[0-3]\.untimed_fifos", _BOOL),
    (r"bp\.(dmc|secureSRAM)\.fill[12]", _INT),
    # Memory protection engine (FEAT_MEC recipes).
    (r"bp\.mpe\.enable", _BOOL),
    (r"bp\.mpe\.block_size_in_bytes", _INT),
    (r"bp\.mpe\.corruption_strategy", _INT),
    (r"bp\.mpe\.ignore_mecid", _BOOL),
    (r"bp\.mpe\.(non_secure|secure|realm|root)_pas_enc_key", _INT),
    (r"bp\.mpe\.output_attributes_parameter_of_core", _STR),
    (r"pctl\.startup", _STR),
    (r"cache_state_modelled", _BOOL),
    # Per-cluster CPU features.
    (rf"{_CLUSTER}\.NUM_CORES", _INT),
    (rf"{_CLUSTER}\.PA_SIZE", _INT),
    (rf"{_CLUSTER}\.rme_support_level", _INT),
    (rf"{_CLUSTER}\.mec_support_level", _INT),
    (rf"{_CLUSTER}\.rme_mecid_width", _INT),
    (rf"{_CLUSTER}\.ecv_support_level", _INT),
    (rf"{_CLUSTER}\.gicv3\.cpuintf-mmap-access-level", _INT),
    (rf"{_CLUSTER}\.gicv3\.without-DS-support", _BOOL),
    (rf"{_CLUSTER}\.gicv4\.mask-virtual-interrupt", _BOOL),
    (rf"{_CLUSTER}\.has_arm_v8-[1-9]", _BOOL),
    (rf"{_CLUSTER}\.has_arm_v9-[0-9]", _BOOL),
    (rf"{_CLUSTER}\.has_(amu|branch_target_exception|rndr|brbe|16k_granule)", _BOOL),
    (rf"{_CLUSTER}\.has_v8_7_pmu_extension", _INT),
    (rf"{_CLUSTER}\.max_32bit_el", _INT),
    (rf"{_CLUSTER}\.stage12_tlb_size", _INT),
    (rf"{_CLUSTER}\.check_memory_attributes", _BOOL),
    (rf"{_CLUSTER}\.ish_is_osh", _BOOL),
    (rf"{_CLUSTER}\.restriction_on_speculative_execution(_aarch32)?", _INT),
    (rf"{_CLUSTER}\.output_attributes", _STR),
    (rf"{_CLUSTER}\.cpu[0-3]\.RVBAR", _INT),
    (rf"{_CLUSTER}\.cpu[0-3]\.semihosting-enable", _BOOL),
    # SMMUv3 RME personality.
    (r"pci\.pci_smmuv3\.mmu\.(SMMU_ROOT_IDR0|SMMU_ROOT_IIDR|root_register_page_offset)", _INT),
    (r"pci\.pci_smmuv3\.mmu\.(SMMU_IDR[0-5]|SMMU_AIDR|SMMU_S_IDR[1-3]|SMMU_R_MECIDR)", _INT),
    # Stand-in test hooks.
    (r"standin\.(crash_after|port_delay)", "float"),
    (r"standin\.(crash_signal|crash_status|crash_on_byte|agent_uart)", _INT),
    (r"standin\.(hang|ignore_sigterm|no_ports|split_ports|interleave|spawn_child|agent)", _BOOL),
)

_RENAMED: tuple[tuple[str, str, tuple[int, int]], ...] = (
    (rf"{_CLUSTER}\.has_rme", "rme_support_level", (11, 20)),
)
"""Parameters the emulated release no longer accepts (mirrors cca_hil.fvp.RENAMES)."""


def _parameter_kind(name: str, version: tuple[int, int]) -> str | None:
    for pattern, _, since in _RENAMED:
        if re.fullmatch(pattern, name):
            return None if version >= since else _BOOL
    for pattern, kind in _PARAMETERS:
        if re.fullmatch(pattern, name):
            return kind
    return None


def _convert(kind: str, text: str) -> bool | int | float | str:
    if kind == _BOOL:
        lowered = text.strip().lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
        raise ValueError("expected a boolean (0, 1, true, false)")
    if kind == _INT:
        return int(text.strip(), 0)
    if kind == "float":
        return float(text)
    if kind == _MODE and text not in ("telnet", "raw"):
        raise ValueError("expected telnet or raw")
    return text


class UsageError(Exception):
    """A command line the model refuses."""


@dataclass
class Options:
    """The parsed command line."""

    params: dict[str, bool | int | float | str] = field(default_factory=dict)
    data: list[tuple[str, Path, int]] = field(default_factory=list)
    applications: list[tuple[str, Path]] = field(default_factory=list)
    version: bool = False
    stat: bool = False
    quantum: int | None = None
    cyclelimit: int | None = None
    timelimit: float | None = None
    iris_server: bool = False
    iris_port: int = IRIS_DEFAULT_PORT
    print_port_number: bool = False
    iris_allow_remote: bool = False

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean parameter."""
        return bool(self.params.get(name, default))

    def number(self, name: str, default: float) -> float:
        """A numeric parameter."""
        value = self.params.get(name, default)
        assert isinstance(value, (int, float))
        return value

    def text(self, name: str, default: str) -> str:
        """A string parameter."""
        return str(self.params.get(name, default))


def _release(env: Mapping[str, str]) -> tuple[int, int, int]:
    text = env.get(VERSION_ENV, DEFAULT_VERSION)
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def parse_command_line(argv: Sequence[str], *, release: tuple[int, int, int]) -> Options:
    """Parse the model's options; UsageError names the offending argument."""
    options = Options()
    args = list(argv)
    i = 0

    def value_of(flag: str) -> str:
        nonlocal i
        if i + 1 >= len(args):
            raise UsageError(f"option {flag} requires an argument")
        i += 1
        return args[i]

    def add_parameter(assignment: str) -> None:
        name, eq, text = assignment.partition("=")
        if not eq:
            raise UsageError(f"parameter {assignment!r} must be NAME=VALUE")
        kind = _parameter_kind(name, release[:2])
        if kind is None:
            raise UsageError(f"{MODEL_NAME}: unknown parameter '{name}'")
        try:
            options.params[name] = _convert(kind, text)
        except ValueError as error:
            raise UsageError(
                f"{MODEL_NAME}: invalid value '{text}' for parameter '{name}': {error}"
            ) from None

    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")

        def take(flag: str = flag, eq: str = eq, inline: str = inline) -> str:
            return inline if eq else value_of(flag)

        if flag in ("-C", "--parameter"):
            add_parameter(take())
        elif flag == "--version":
            options.version = True
        elif flag == "--stat":
            options.stat = True
        elif flag in ("-Q", "--quantum"):
            options.quantum = _int_option(flag, take())
        elif flag == "--cyclelimit":
            options.cyclelimit = _int_option(flag, take())
        elif flag == "--timelimit":
            options.timelimit = float(_int_option(flag, take()))
        elif flag == "--data":
            options.data.append(_data_option(take()))
        elif flag in ("-I", "--iris-server"):
            options.iris_server = True
        elif flag == "--iris-port":
            options.iris_port = _int_option(flag, take())
            if not 0 <= options.iris_port < 65536:
                raise UsageError(f"option --iris-port: {options.iris_port} is not a TCP port")
        elif flag in ("-p", "--print-port-number"):
            options.print_port_number = True
        elif flag in ("-A", "--iris-allow-remote"):
            options.iris_allow_remote = True
        elif flag in ("-a", "--application"):
            instance, sep, file = take().partition("=")
            if not sep:
                raise UsageError(f"--application expects INSTANCE=FILE, got {instance!r}")
            options.applications.append((instance, Path(file)))
        elif flag == "-f":
            for line in _read_file(Path(take())).splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    add_parameter(line.replace(" ", ""))
        else:
            raise UsageError(f"unknown option '{arg}' (this stand-in implements {', '.join(KNOWN_OPTIONS)})")
        i += 1
    return options


KNOWN_OPTIONS = (
    "-C/--parameter",
    "--data",
    "-a/--application",
    "-f",
    "--version",
    "--stat",
    "-Q/--quantum",
    "--cyclelimit",
    "--timelimit",
    "-I/--iris-server",
    "--iris-port",
    "-p/--print-port-number",
    "-A/--iris-allow-remote",
)


def _int_option(flag: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"option {flag}: '{text}' is not a number") from None


def _data_option(text: str) -> tuple[str, Path, int]:
    instance, eq, rest = text.partition("=")
    file, at, address = rest.rpartition("@")
    if not eq or not at:
        raise UsageError(f"--data expects INSTANCE=FILE@ADDRESS, got '{text}'")
    if not re.fullmatch(r"cluster[01]\.cpu[0-3]", instance):
        raise UsageError(f"--data: unknown instance '{instance}'")
    return instance, Path(file), _int_option("--data", address)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error}") from None


# -- boot text ------------------------------------------------------------------

_BUILT = "Built : 10:21:52, Mar 18 2026"
_TFA = "v2.13.0(release):v2.13.0"


def boot_script(*, bl33: int) -> list[tuple[float, int, str]]:
    """(delay after start in s, UART, text) of TF-A + TF-RMM booting to BL33 (representative lines)."""
    return [
        (0.00, 0, "NOTICE:  Booting Trusted Firmware\r\n"),
        (0.00, 0, f"NOTICE:  BL1: {_TFA}\r\n"),
        (0.00, 0, f"NOTICE:  BL1: {_BUILT}\r\n"),
        (0.01, 0, "NOTICE:  BL1: Booting BL2\r\n"),
        (0.02, 0, f"NOTICE:  BL2: {_TFA}\r\n"),
        (0.02, 0, f"NOTICE:  BL2: {_BUILT}\r\n"),
        (0.03, 0, "NOTICE:  BL2: Booting BL31\r\n"),
        (0.04, 0, f"NOTICE:  BL31: {_TFA}\r\n"),
        (0.04, 0, f"NOTICE:  BL31: {_BUILT}\r\n"),
        (0.05, 3, "Booting RMM v.0.7.0(release) tf-rmm Built: Mar 18 2026 10:20:11 with GCC 13.3.1\r\n"),
        (0.05, 3, "RMM-EL3 Interface v.0.4\r\n"),
        (0.05, 3, "Boot Manifest Interface v.0.3\r\n"),
        (0.05, 3, "RMI ABI revision v1.0\r\n"),
        (0.05, 3, "RSI ABI revision v1.0\r\n"),
        (0.06, 1, "INFO:    BL31: RMM initialization done\r\n"),
        (0.06, 1, "INFO:    BL31: Preparing for EL3 exit to normal world\r\n"),
        (0.06, 1, f"INFO:    Entry point address = {bl33:#x}\r\n"),
        (0.06, 1, "INFO:    SPSR = 0x3c9\r\n"),
    ]


AGENT_START_DELAY = 0.07
"""Seconds after start at which BL31 enters BL33 (the agent)."""


# -- terminals -------------------------------------------------------------------


@dataclass
class _Client:
    sock: socket.socket
    handshake_deadline: float | None = None
    replies: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)


class Terminal:
    """One ``bp.terminal_N``: a listening socket, at most one client, and the UART's transmit queue."""

    def __init__(self, index: int, *, mode: str, start_port: int) -> None:
        self.index = index
        self.mode = mode
        self.listener, self.port = _bind_from(start_port)
        self.client: _Client | None = None
        self.pending = bytearray()
        """UART output produced while no client is attached (delivered on attach)."""

    @property
    def name(self) -> str:
        """The component instance name."""
        return f"terminal_{self.index}"


def _bind_from(start_port: int, *, backlog: int = 1) -> tuple[socket.socket, int]:
    port = start_port
    while port < 65536:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            port += 1
            continue
        sock.listen(backlog)
        sock.setblocking(False)
        return sock, port
    raise OSError(f"no free TCP port from {start_port}")


class ModelExit(Exception):
    """The simulation ends normally with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


PSCI_SYSTEM_OFF = 0x8400_0008
"""SMC32 PSCI SYSTEM_OFF: TF-A's FVP port answers it with a SYS_CFG shutdown write (§1.4)."""

AGENT_BANNER = "cca-hil agent {major}.{minor} (emulator) boot {boot_id}: ready\r\n"
"""What the agent prints once BL31 has entered it (TF-A's own lines come from the boot script)."""


class PoweredOff(Exception):
    """The agent called PSCI SYSTEM_OFF: the CPUs stop, the agent never answers again."""


def make_board(options: Options, system_off: Callable[[], None]) -> Machine | None:
    """The model behind the FVP's CPUs and memory (cca-hil's platform model), or None without it.

    ``bp.mpe.enable=1`` (the memory protection engine) turns per-PAS encryption on,
    so a granule read through a foreign PAS shows ciphertext.
    """
    try:
        from cca_hil.model.machine import Machine
        from cca_hil.model.platform import PlatformConfig, RmmConfig
    except ImportError:
        return None

    class Board(Machine):
        """The platform model, with the board's power controller for SYSTEM_OFF."""

        def smc(self, fid: int, *args: int) -> tuple[int, int, int, int, int]:
            if fid == PSCI_SYSTEM_OFF:
                system_off()
                raise PoweredOff
            return super().smc(fid, *args)

    mec = int(options.number("cluster0.mec_support_level", 0)) > 0
    pa_bits = int(options.number("cluster0.PA_SIZE", 48))
    encryption = options.flag("bp.mpe.enable")
    # The firmware stack an FVP runs has TF-RMM as its RMM: answer where TF-RMM departs from the
    # spec (rmm-abi.md §12) as it does, which is what an fvp profile's shadow model expects.
    rmm = RmmConfig(quirks="tf-rmm")
    return Board(PlatformConfig(mec=mec, pa_bits=pa_bits, encryption=encryption, rmm=rmm))


def agent_server(
    board: Machine, lock: threading.Lock
) -> Callable[[socket.socket, threading.Event], None] | None:
    """The device side of the agent UART (cca-hil's agent emulator on ``board``), or None without it.

    Each request runs under ``lock``, which the Iris server also takes: a debug
    read sees memory between two agent requests, never in the middle of one.
    """
    try:
        from cca_hil.agent.emulator import AgentEmulator
        from cca_hil.agent.protocol import Frame
        from cca_hil.agent.streams import SocketStream
    except ImportError:
        return None

    class LockedEmulator(AgentEmulator):
        """The emulator with each request serialised against debugger accesses."""

        def respond(self, frame: Frame) -> bytes:
            with lock:
                return super().respond(frame)

    emulator = LockedEmulator(board, boot_text=AGENT_BANNER)

    def serve(sock: socket.socket, stop: threading.Event) -> None:
        stream = SocketStream(sock)
        try:
            emulator.serve(stream, stop)
        except PoweredOff:
            # Without exit_on_shutdown the model keeps running with every CPU off: silence.
            stop.wait(3600.0)

    return serve


# -- Iris debug server ------------------------------------------------------------

IRIS_SPACES: Final = (
    ("Physical Memory (Secure)", "secure"),
    ("Physical Memory (Non Secure)", "nonsecure"),
    ("Physical Memory (Root)", "root"),
    ("Physical Memory (Realm)", "realm"),
)
"""Memory spaces each CPU instance offers (spaceId = index), with the PAS behind them (reference §1.5)."""
IRIS_REGISTERS: Final = ("GPCCR_EL3", "GPTBR_EL3")
"""Registers each CPU instance lists (rscId = index), read from the GPT the model's EL3 programmed."""
IRIS_MAX_TRANSFER: Final = 1 << 20
"""Largest ``memory_read``/``memory_write`` the stand-in serves in one call."""
IRIS_HANDSHAKE_LIMIT: Final = 4096

# Error codes: JSON-RPC's own for malformed calls; the Iris-level ones carry Iris's E_ names in the
# message, with numbers of our choosing (the real values are not in the reference).
JSONRPC_INVALID_REQUEST: Final = -32600
JSONRPC_METHOD_NOT_FOUND: Final = -32601
JSONRPC_INVALID_PARAMS: Final = -32602
E_UNKNOWN_INSTANCE_ID: Final = 0x1001
E_UNKNOWN_MEMORY_SPACE_ID: Final = 0x1002
E_MEMORY_ACCESS: Final = 0x1003
E_DATA_SIZE: Final = 0x1004
E_UNKNOWN_RESOURCE_ID: Final = 0x1005


class IrisCallFailed(Exception):
    """An Iris function's error answer: ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _IrisPeer:
    """One client connection: its handshake bytes until the empty line, then the frame decoder."""

    sock: socket.socket
    handshake: bytearray = field(default_factory=bytearray)
    codec: IrisCodec | None = None
    registered: list[int] = field(default_factory=list)


class IrisServer:
    """The model's Iris server (IrisRpc 1.0, ``IrisJson`` framing) over the platform model's memory.

    Served from the simulation's event loop on 127.0.0.1 only. Instances are the
    framework, the board component and one instance per core; each core offers
    the four physical memory spaces (one per PAS: reads and writes go through
    that PAS's encryption context, past the GPC, as a debugger's do) and the
    GPC registers. Clients register (uniquified names) and are unregistered when
    they disconnect.
    """

    def __init__(
        self,
        board: Machine,
        lock: threading.Lock,
        *,
        start_port: int,
        cores: Sequence[str],
        selector: selectors.BaseSelector,
    ) -> None:
        self.board = board
        self.lock = lock
        self.selector = selector
        if start_port == 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            sock.setblocking(False)
            self.listener, self.port = sock, int(sock.getsockname()[1])
        else:
            self.listener, self.port = _bind_from(start_port, backlog=8)
        self.instances: dict[int, str] = {
            0: "framework.GlobalInstance",
            1: "framework.SimulationEngine",
            2: f"component.{MODEL_NAME.replace('-', '_')}",
        }
        self.cpus: set[int] = set()
        for name in cores:
            inst = len(self.instances)
            self.instances[inst] = f"component.{MODEL_NAME.replace('-', '_')}.{name}"
            self.cpus.add(inst)
        self._next_inst = len(self.instances)
        self.peers: dict[socket.socket, _IrisPeer] = {}
        selector.register(self.listener, selectors.EVENT_READ, ("iris-listen", None))

    def accept(self) -> None:
        """Take a pending connection."""
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        peer = _IrisPeer(sock=sock)
        self.peers[sock] = peer
        self.selector.register(sock, selectors.EVENT_READ, ("iris-client", peer))

    def receive(self, peer: _IrisPeer) -> None:
        """Bytes from a client: the handshake, then frames; a protocol violation closes the connection."""
        try:
            data = peer.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(peer)
            return
        if peer.codec is None:
            peer.handshake += data
            end = peer.handshake.find(b"\r\n\r\n")
            if end < 0:
                if len(peer.handshake) > IRIS_HANDSHAKE_LIMIT:
                    self.drop(peer)
                return
            request = bytes(peer.handshake[:end]).decode("ascii", "replace").split("\r\n")
            rest = bytes(peer.handshake[end + 4 :])
            formats = [
                f.strip()
                for line in request[1:]
                if line.lower().startswith("supported-formats:")
                for f in line.partition(":")[2].split(",")
            ]
            if request[0] != "CONNECT / IrisRpc/1.0" or (formats and "IrisJson" not in formats):
                self._send(peer, b"IrisRpc/1.0 400 Bad Request\r\n\r\n")
                self.drop(peer)
                return
            peer.codec = IrisCodec()
            peer.handshake.clear()
            if not self._send(peer, b"IrisRpc/1.0 200 OK\r\nSupported-Formats: IrisJson\r\n\r\n"):
                return
            data = rest
        try:
            messages = peer.codec.feed(data)
        except IrisProtocolError:
            self.drop(peer)  # receivers close the connection on a bad frame (§1.5)
            return
        for message in messages:
            answer = self.answer(peer, message)
            if answer is not None and not self._send(peer, encode_message(answer)):
                return

    def answer(self, peer: _IrisPeer, message: object) -> dict[str, object] | None:
        """The response to one JSON-RPC message (None for notifications and for responses)."""
        if not isinstance(message, dict) or "method" not in message:
            return None  # a response to nothing we asked, or junk: nothing to answer
        ident = message.get("id")
        try:
            method = message["method"]
            params = message.get("params", {})
            if not isinstance(method, str):
                raise IrisCallFailed(JSONRPC_INVALID_REQUEST, "method is not a string")
            if not isinstance(params, dict):
                raise IrisCallFailed(JSONRPC_INVALID_PARAMS, "params must be passed by name (an object)")
            result = self.call(peer, method, params)
        except IrisCallFailed as failed:
            if ident is None:
                return None
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": failed.code, "message": failed.message}}
        if ident is None:
            return None
        return {"jsonrpc": "2.0", "id": ident, "result": result}

    def call(self, peer: _IrisPeer, method: str, params: dict[str, object]) -> object:
        """Run one Iris function."""
        if method == "instanceRegistry_registerInstance":
            name = _param(params, "instName", str)
            if name in self.instances.values():
                if not params.get("uniquify", False):
                    raise IrisCallFailed(JSONRPC_INVALID_PARAMS, f"E_instance_already_registered: {name}")
                n = 1
                while f"{name}_{n}" in self.instances.values():
                    n += 1
                name = f"{name}_{n}"
            inst = self._next_inst
            self._next_inst += 1
            self.instances[inst] = name
            peer.registered.append(inst)
            return {"instId": inst, "instName": name}
        if method == "instanceRegistry_getList":
            prefix = str(params.get("prefix", ""))
            return [
                {"instId": i, "instName": n}
                for i, n in sorted(self.instances.items())
                if n.startswith(prefix)
            ]
        if method == "memory_getMemorySpaces":
            self._cpu(params)
            top = self.board.config.pa_limit - 1
            return [
                {"spaceId": i, "name": name, "minAddr": 0, "maxAddr": top, "canonicalMsn": 0x1000 + i}
                for i, (name, _) in enumerate(IRIS_SPACES)
            ]
        if method == "memory_read":
            self._cpu(params)
            pas, address, size = self._transfer(params)
            with self.lock:
                data = self.board.read_physical(address, size, pas)
            return {"data": _pack_words(data)}
        if method == "memory_write":
            self._cpu(params)
            pas, address, size = self._transfer(params)
            words = _param(params, "data", list)
            if len(words) * 8 < size or not all(isinstance(w, int) and 0 <= w < 1 << 64 for w in words):
                raise IrisCallFailed(JSONRPC_INVALID_PARAMS, f"data must hold {size} bytes as uint64 words")
            raw = b"".join(int(w).to_bytes(8, "little") for w in words)[:size]
            with self.lock:
                self.board.store.write(address, raw, self.board.context(pas))
            return {}
        if method == "resource_getList":
            self._cpu(params)
            return [
                {"rscId": i, "name": name, "bitWidth": 64, "registerInfo": {}}
                for i, name in enumerate(IRIS_REGISTERS)
            ]
        if method == "resource_read":
            self._cpu(params)
            ids = _param(params, "rscIds", list)
            with self.lock:
                values = {0: self.board.gpt.gpccr.encode(), 1: self.board.gpt.gptbr.encode()}
            found: list[int] = []
            errors: list[object] = []
            for rsc in ids:
                if isinstance(rsc, int) and rsc in values:
                    found.append(values[rsc])
                else:
                    errors += [rsc, E_UNKNOWN_RESOURCE_ID]
            return {"data": found, "error": errors}
        raise IrisCallFailed(JSONRPC_METHOD_NOT_FOUND, f"E_function_not_supported_by_instance: {method}")

    def _cpu(self, params: dict[str, object]) -> int:
        inst = _param(params, "instId", int)
        if inst not in self.cpus:
            raise IrisCallFailed(E_UNKNOWN_INSTANCE_ID, f"E_unknown_instance_id: {inst} has no memory")
        return inst

    def _transfer(self, params: dict[str, object]) -> tuple[Pas, int, int]:
        from cca_hil.arch.pas import Pas

        space = _param(params, "spaceId", int)
        if not 0 <= space < len(IRIS_SPACES):
            raise IrisCallFailed(E_UNKNOWN_MEMORY_SPACE_ID, f"E_unknown_memory_space_id: {space}")
        address = _param(params, "address", int)
        width = _param(params, "byteWidth", int)
        count = _param(params, "count", int)
        if width not in (1, 2, 4, 8) or count < 0 or address < 0:
            raise IrisCallFailed(
                JSONRPC_INVALID_PARAMS, "byteWidth must be 1, 2, 4 or 8; count, address >= 0"
            )
        size = width * count
        if size > IRIS_MAX_TRANSFER:
            raise IrisCallFailed(
                E_DATA_SIZE, f"E_data_size: {size} bytes in one call (limit {IRIS_MAX_TRANSFER})"
            )
        if address + size > self.board.config.pa_limit:
            raise IrisCallFailed(
                E_MEMORY_ACCESS,
                f"E_memory_access: [{address:#x}, +{size:#x}) is outside the physical address space",
            )
        return Pas(IRIS_SPACES[space][1]), address, size

    def _send(self, peer: _IrisPeer, data: bytes) -> bool:
        # Bounded like the terminals: a client that stops reading is dropped, not waited for forever.
        peer.sock.settimeout(5.0)
        try:
            peer.sock.sendall(data)
        except OSError:
            self.drop(peer)
            return False
        finally:
            if peer.sock in self.peers:
                peer.sock.setblocking(False)
        return True

    def drop(self, peer: _IrisPeer) -> None:
        """Close a client connection and unregister the instances it registered."""
        if self.peers.pop(peer.sock, None) is None:
            return
        self.selector.unregister(peer.sock)
        peer.sock.close()
        for inst in peer.registered:
            self.instances.pop(inst, None)

    def close(self) -> None:
        """Close every connection and the listener."""
        for peer in list(self.peers.values()):
            self.drop(peer)
        self.selector.unregister(self.listener)
        self.listener.close()


def _param(params: dict[str, object], name: str, kind: type[_P]) -> _P:
    value = params.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IrisCallFailed(JSONRPC_INVALID_PARAMS, f"parameter {name} missing or not {kind.__name__}")
    return value


def _pack_words(data: bytes) -> list[int]:
    padded = data + bytes(-len(data) % 8)
    return [int.from_bytes(padded[i : i + 8], "little") for i in range(0, len(padded), 8)]


class Simulation:
    """The stand-in's event loop: terminals, boot text, agent plumbing, limits and test hooks."""

    def __init__(self, options: Options, *, out: IO[str], err: IO[str]) -> None:
        self.options = options
        self.out = out
        self.err = err
        self.selector = selectors.DefaultSelector()
        self.terminals: list[Terminal] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.started = time.monotonic()
        self.agent_uart = int(options.number("standin.agent_uart", 0))
        self.agent_sock: socket.socket | None = None
        self.agent_peer: socket.socket | None = None
        self.agent_thread: threading.Thread | None = None
        self.agent_stop = threading.Event()
        self.shutdown_requested = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self.lock = threading.Lock()
        """Serialises the agent's requests and the Iris server's accesses to the board."""
        self._board: Machine | None = None
        self.iris: IrisServer | None = None

    # -- output helpers --------------------------------------------------------

    def say(self, text: str, *, stream: IO[str] | None = None) -> None:
        """One line on the model's stdout (or ``stream``), flushed at once like the model's."""
        target = stream or self.out
        target.write(text + "\n")
        target.flush()

    def uart_write(self, index: int, data: bytes) -> None:
        """Bytes the firmware transmits on UART ``index``."""
        terminal = self.terminals[index]
        if terminal.client is not None and terminal.client.handshake_deadline is None:
            terminal.client.outbox += data
            self._flush(terminal)
        else:
            terminal.pending += data
        self._check_shutdown_triggers(index, data)

    def _check_shutdown_triggers(self, index: int, data: bytes) -> None:
        prefix = f"bp.pl011_uart{index}"
        if self.options.flag(f"{prefix}.shutdown_on_eot") and b"\x04" in data:
            raise ModelExit(0, f"{prefix}: end of transmission")
        tag = self.options.text(f"{prefix}.shutdown_tag", "")
        if tag and tag.encode() in data:
            raise ModelExit(0, f"{prefix}: shutdown tag")

    # -- set-up ---------------------------------------------------------------

    def open_terminals(self) -> None:
        """Bind every terminal (start_port, then upwards while busy)."""
        for n in range(TERMINALS):
            mode = self.options.text(f"bp.terminal_{n}.mode", "telnet")
            port = int(self.options.number(f"bp.terminal_{n}.start_port", 5000))
            terminal = Terminal(n, mode=mode, start_port=port)
            self.terminals.append(terminal)
            self.selector.register(terminal.listener, selectors.EVENT_READ, ("listen", terminal))
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

    def board(self) -> Machine | None:
        """The platform model behind CPUs and memory, built on first use (Iris at start, else the agent)."""
        if self._board is None:
            self._board = make_board(self.options, self._system_off)
        return self._board

    def _system_off(self) -> None:
        self.shutdown_requested.set()
        self._wake_w.send(b"\0")

    def open_iris(self) -> None:
        """Start the Iris server when ``-I`` was given (127.0.0.1 only, whatever ``-A`` says)."""
        opts = self.options
        if not opts.iris_server:
            return
        if opts.cyclelimit is not None:
            self.say(
                f"Warning: {MODEL_NAME}: command line option --cyclelimit ignored because --iris-server "
                "option specified",
                stream=self.err,
            )
            opts.cyclelimit = None
        board = self.board()
        if board is None:
            self.say(
                f"Error: {MODEL_NAME}: --iris-server: this stand-in needs cca_hil.model", stream=self.err
            )
            raise ModelExit(EXIT_USAGE, "no model for the Iris server")
        if opts.iris_allow_remote:
            self.say(
                f"Warning: {MODEL_NAME}: --iris-allow-remote: this stand-in serves Iris on 127.0.0.1 only",
                stream=self.err,
            )
        cores = [
            f"cluster{c}.cpu{n}" for c in (0, 1) for n in range(int(opts.number(f"cluster{c}.NUM_CORES", 4)))
        ]
        self.iris = IrisServer(
            board, self.lock, start_port=opts.iris_port, cores=cores, selector=self.selector
        )

    def announce(self) -> None:
        """Print the port lines and the image-loading lines, shaped by the port hooks."""
        opts = self.options
        loaded = self._loaded_lines()
        if opts.flag("standin.no_ports"):
            for line in loaded:
                self.say(line)
            return
        delay = opts.number("standin.port_delay", 0.0)
        if delay:
            for line in loaded:
                self.say(line)
            loaded = []
            time.sleep(delay)
        for terminal in self.terminals:
            line = f"{terminal.name}: Listening for serial connection on port {terminal.port}\n"
            if opts.flag("standin.split_ports"):
                # Pieces flushed separately so a reader sees the line across several reads.
                for piece in (line[:5], line[5:23], line[23:-3], line[-3:]):
                    self.out.write(piece)
                    self.out.flush()
                    time.sleep(0.01)
            else:
                self.out.write(line)
                self.out.flush()
            if opts.flag("standin.interleave"):
                self.say(f"Info: {MODEL_NAME}: {terminal.name}: {terminal.mode} mode")
                self.say(f"Warning: {MODEL_NAME}: {terminal.name} ready", stream=self.err)
        if self.iris is not None and opts.print_port_number:
            self.say(f"Iris server started listening to port {self.iris.port}")
        for line in loaded:
            self.say(line)

    def _loaded_lines(self) -> list[str]:
        lines = []
        for name in ("bp.secureflashloader.fname", "bp.flashloader0.fname", "bp.flashloader1.fname"):
            if name in self.options.params:
                path = Path(str(self.options.params[name]))
                size = max(1, path.stat().st_size // 1024)
                loader = name.rsplit(".", 1)[0]
                lines.append(
                    f"Info: {MODEL_NAME}: {loader}: FlashLoader: Loaded {size} kB from file '{path}'"
                )
        for instance, file, address in self.options.data:
            lines.append(f"Info: {MODEL_NAME}: {instance}: loaded '{file}' at {address:#x}")
        return lines

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` from the loop ``delay`` seconds after start."""
        self.timers.append((self.started + delay, action))
        self.timers.sort(key=lambda item: item[0])

    def plan(self) -> None:
        """Boot text, agent start, limits and crash hooks."""
        opts = self.options
        bl33 = next((address for _, _, address in opts.data), 0x8800_0000)
        for delay, uart, text in boot_script(bl33=bl33):
            self.schedule(delay, partial(self.uart_write, uart, text.encode()))
        self.schedule(AGENT_START_DELAY, self.start_agent)
        if "standin.crash_after" in opts.params:
            self.schedule(opts.number("standin.crash_after", 0.0), self.crash)
        if opts.timelimit is not None:
            self.schedule(opts.timelimit, lambda: self._raise(ModelExit(0, "time limit reached")))
        if opts.cyclelimit is not None:
            seconds = opts.cyclelimit / CYCLES_PER_SECOND
            self.schedule(seconds, lambda: self._raise(ModelExit(0, "cycle limit reached")))
        if opts.flag("standin.spawn_child"):
            # A helper process in the model's group, as some FVP plugins start; it must die with it.
            self.child = subprocess.Popen(
                [sys.executable, "-c", "import time\nwhile True: time.sleep(60)"], stdin=subprocess.DEVNULL
            )
            self.say(f"Info: {MODEL_NAME}: helper process {self.child.pid}")

    @staticmethod
    def _raise(error: ModelExit) -> None:
        raise error

    def crash(self) -> None:
        """Die at once the way the hooks say (a signal or an exit status), without any clean-up."""
        sig = int(self.options.number("standin.crash_signal", 0))
        status = int(self.options.number("standin.crash_status", 134))
        self.say("fvp-standin: simulated model crash", stream=self.err)
        self.out.flush()
        if sig:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            time.sleep(1.0)  # an uncatchable or delayed signal lands here; fall through to _exit
        os._exit(status)

    def start_agent(self) -> None:
        """Hand the agent UART to the agent emulator (BL31 has entered BL33)."""
        if not self.options.flag("standin.agent", True):
            return
        board = self.board()
        serve = None if board is None else agent_server(board, self.lock)
        if serve is None:
            return
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.agent_sock, self.agent_peer = ours, theirs
        self.selector.register(ours, selectors.EVENT_READ, ("agent", None))
        self.agent_thread = threading.Thread(
            target=serve, args=(theirs, self.agent_stop), name="agent", daemon=True
        )
        self.agent_thread.start()

    # -- loop -------------------------------------------------------------------

    def run(self) -> None:
        """Serve until an exit condition raises ModelExit."""
        while True:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, action = self.timers.pop(0)
                action()
            timeout = 0.5
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - now))
            deadlines = [
                t.client.handshake_deadline
                for t in self.terminals
                if t.client is not None and t.client.handshake_deadline is not None
            ]
            if deadlines:
                timeout = max(0.0, min(timeout, min(deadlines) - now))
            for key, _ in self.selector.select(timeout):
                kind, terminal = key.data
                if kind == "listen":
                    self._accept(terminal)
                elif kind == "client":
                    self._receive(terminal)
                elif kind == "agent":
                    self._from_agent()
                elif kind == "wake":
                    self._wake_r.recv(64)
                elif kind == "iris-listen" and self.iris is not None:
                    self.iris.accept()
                elif kind == "iris-client" and self.iris is not None:
                    self.iris.receive(terminal)
            if self.shutdown_requested.is_set() and self.options.flag("bp.ve_sysregs.exit_on_shutdown"):
                raise ModelExit(0, "PSCI SYSTEM_OFF")
            self._check_handshakes()

    def _accept(self, terminal: Terminal) -> None:
        try:
            sock, _ = terminal.listener.accept()
        except BlockingIOError:
            return
        if terminal.client is not None:
            # One client at a time, like the model's terminal.
            sock.close()
            return
        sock.setblocking(False)
        client = _Client(sock=sock)
        terminal.client = client
        self.selector.register(sock, selectors.EVENT_READ, ("client", terminal))
        if terminal.mode == "telnet":
            client.handshake_deadline = time.monotonic() + TELNET_REPLY_TIMEOUT
            client.outbox += TELNET_HANDSHAKE
        else:
            client.outbox += terminal.pending
            terminal.pending.clear()
        self._flush(terminal)

    def _receive(self, terminal: Terminal) -> None:
        client = terminal.client
        assert client is not None
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(terminal)
            return
        if client.handshake_deadline is not None:
            client.replies += data
            if len(client.replies) >= 3 * len(TELNET_REPLIES):
                self._finish_handshake(terminal)
            return
        if terminal.index == self.agent_uart:
            if "standin.crash_on_byte" in self.options.params and (
                int(self.options.number("standin.crash_on_byte", 0)) in data
            ):
                self.crash()
            self._to_agent(data)

    def _finish_handshake(self, terminal: Terminal) -> None:
        client = terminal.client
        assert client is not None
        raw = bytes(client.replies[: 3 * len(TELNET_REPLIES)])
        got = {(raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3) if raw[i] == _IAC}
        if got != TELNET_REPLIES:
            self.say(
                f"Error: {MODEL_NAME}: {terminal.name}: unexpected telnet negotiation reply {raw.hex()}; "
                "terminating simulation",
                stream=self.err,
            )
            raise ModelExit(1, "telnet handshake")
        client.handshake_deadline = None
        rest = client.replies[3 * len(TELNET_REPLIES) :]
        client.replies.clear()
        client.outbox += terminal.pending
        terminal.pending.clear()
        self._flush(terminal)
        if rest:
            self._deliver_rx(terminal, bytes(rest))

    def _deliver_rx(self, terminal: Terminal, data: bytes) -> None:
        if terminal.index == self.agent_uart:
            self._to_agent(data)

    def _to_agent(self, data: bytes) -> None:
        sock = self.agent_sock
        if sock is None:
            return
        # Bounded: an agent that stopped reading (powered off) must not freeze the terminals.
        sock.settimeout(5.0)
        try:
            sock.sendall(data)
        except OSError:
            pass
        finally:
            sock.setblocking(False)

    def _check_handshakes(self) -> None:
        now = time.monotonic()
        for terminal in self.terminals:
            client = terminal.client
            if (
                client is not None
                and client.handshake_deadline is not None
                and now >= client.handshake_deadline
            ):
                self.say(
                    f"Error: {MODEL_NAME}: {terminal.name}: no telnet negotiation reply within "
                    f"{TELNET_REPLY_TIMEOUT:g} s; terminating simulation",
                    stream=self.err,
                )
                raise ModelExit(1, "telnet handshake")

    def _from_agent(self) -> None:
        assert self.agent_sock is not None
        try:
            data = self.agent_sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(self.agent_sock)
            self.agent_sock.close()
            self.agent_sock = None
            return
        self.uart_write(self.agent_uart, data)

    def _flush(self, terminal: Terminal) -> None:
        client = terminal.client
        if client is None or not client.outbox:
            return
        # Blocking send with a bound: the loop must not spin, and a client that stops
        # reading is the same back-pressure the model exerts.
        client.sock.settimeout(5.0)
        try:
            client.sock.sendall(client.outbox)
        except OSError:
            self._drop(terminal)
            return
        finally:
            if terminal.client is not None:
                client.sock.setblocking(False)
        client.outbox.clear()

    def _drop(self, terminal: Terminal) -> None:
        client = terminal.client
        if client is None:
            return
        self.selector.unregister(client.sock)
        client.sock.close()
        terminal.client = None

    def close(self) -> None:
        """Release sockets, stop the agent thread (bounded), and end the helper child."""
        self.agent_stop.set()
        if self.agent_thread is not None:
            self.agent_thread.join(2.0)
        if self.agent_peer is not None:
            self.agent_peer.close()
        for terminal in self.terminals:
            self._drop(terminal)
            terminal.listener.close()
        if self.agent_sock is not None:
            self.agent_sock.close()
        if self.iris is not None:
            self.iris.close()
        self._wake_r.close()
        self._wake_w.close()
        self.selector.close()
        if self.child is not None:
            self.child.kill()
            self.child.wait(5.0)

    def statistics(self) -> str:
        """The ``--stat`` block printed at exit."""
        elapsed = time.monotonic() - self.started
        return (
            "\n--- FVP_Base_RevC_2xAEMvA statistics: -----------------------------------------\n"
            f"Simulated time                          : {elapsed:.6f}s\n"
            f"Wall clock time                         : {elapsed:.6f}s\n"
            f"Nominal cycles                          : {int(elapsed * CYCLES_PER_SECOND)}\n"
            "-------------------------------------------------------------------------------"
        )


def _hang() -> int:
    # A model that stopped responding: nothing served, SIGTERM ignored; only SIGKILL ends it.
    while True:
        time.sleep(60)


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Run the stand-in with the model's command line; returns the exit status."""
    environ = os.environ if env is None else env
    release = _release(environ)
    args = sys.argv[1:] if argv is None else list(argv)
    out, err = sys.stdout, sys.stderr
    try:
        options = parse_command_line(args, release=release)
        if options.version:
            out.write(
                f"Fast Models [{release[0]}.{release[1]}.{release[2]} (Mar 18 2026)]\n"
                "Copyright 2000-2026 ARM Limited.\nAll Rights Reserved.\n"
                "(cca-hil fvp-standin)\n"
            )
            return 0
        for name in ("bp.secureflashloader.fname", "bp.flashloader0.fname", "bp.flashloader1.fname"):
            if name in options.params and not Path(str(options.params[name])).is_file():
                raise UsageError(f"{name}: cannot open file '{options.params[name]}'")
        for _, file, _ in options.data:
            if not file.is_file():
                raise UsageError(f"--data: cannot open file '{file}'")
        for _, file in options.applications:
            if not file.is_file():
                raise UsageError(f"--application: cannot open file '{file}'")
    except UsageError as error:
        err.write(f"Error: {error}\n")
        err.flush()
        return EXIT_USAGE

    if options.flag("standin.ignore_sigterm") or options.flag("standin.hang"):
        # Before the ports are printed: a launcher may signal as soon as it has them.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sim = Simulation(options, out=out, err=err)
    status = 0
    try:
        sim.open_terminals()
        sim.open_iris()
        sim.announce()
        if options.flag("standin.hang"):
            return _hang()
        sim.plan()
        sim.run()
    except ModelExit as end:
        status = end.status
        if status == 0:
            sim.say(f"Info: {MODEL_NAME}: simulation terminated: {end}")
    finally:
        if options.stat and status == 0:
            sim.say(sim.statistics())
        sim.close()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
