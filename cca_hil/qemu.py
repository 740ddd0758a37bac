"""Launching QEMU (``qemu-system-aarch64``, machine ``virt``) with the resident agent as its kernel.

Facts used here (reference targets-transports.md §3): ``-machine
virt,virtualization=on`` implements EL2 and a non-Linux ``-kernel`` ELF starts
in the highest implemented EL, so the agent runs at EL2 (EL3 with
``secure=on``); PL011 UART0 is at ``0x0900_0000`` and is the first ``-serial``;
without EL3 firmware QEMU itself answers PSCI on the SMC conduit and returns
-1 for any other function ID (QEMU >= 7.0); FEAT_RME is the experimental CPU
property ``x-rme`` (QEMU >= 8.1) and needs TF-A + an RMM as ``-bios``.

The agent's UART is a TCP socket on 127.0.0.1 that cca-hil creates and binds
to a free port *before* QEMU starts and hands to QEMU as an inherited file
descriptor (``-chardev socket,fd=N,server=on,wait=on``): no port is guessed,
so two QEMUs never race for one, and with ``wait=on`` QEMU starts the guest
only once cca-hil is connected — the serial log holds the guest's output from
its first byte. ``nodelay=on`` turns Nagle off on QEMU's side: the agent's
PL011 hands QEMU a reply byte by byte, and Nagle plus the host's delayed ACK
cost about 40 ms per reply (measured: 45 ms → 1.2 ms per SMC round trip).

Layout of a run folder: ``qemu.cmdline`` (the argument list, shell-quoted),
``qemu.stdout.log`` / ``qemu.stderr.log`` (QEMU's own output, written as it
arrives) and ``uart0.log`` (the agent's UART, from the first byte). QEMU runs
in its own process group, is stopped with SIGTERM and, after a bounded wait,
SIGKILL; nothing it started outlives the run, and a cca-hil killed outright takes
QEMU with it (the kernel's parent-death signal, :func:`cca_hil.launch.parent_death_signal`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import cca_hil
from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.launch import GroupProcess, describe_exit
from cca_hil.transport.telnet import TerminalClient

DEFAULT_BINARY: Final = "qemu-system-aarch64"
"""Debian ships it in package ``qemu-system-arm``."""
INSTALL_HINT: Final = "Debian: apt-get install qemu-system-arm"

AGENT_IMAGE: Final = Path("tools") / "agent" / "build" / "qemu" / "agent.elf"
"""Where ``make -C tools/agent PLATFORM=qemu`` puts the agent, relative to the cca-hil checkout."""
AGENT_BUILD: Final = "make -C tools/agent PLATFORM=qemu"

DEFAULT_MACHINE: Final = "virt,virtualization=on"
"""EL2 implemented, no EL3: the agent is entered at EL2 and QEMU answers PSCI itself (§3.2, §3.4)."""
DEFAULT_CPU: Final = "max"
"""The default CPU of ``virt`` is the 32-bit cortex-a15 (§3.2)."""
DEFAULT_MEMORY: Final = "1G"

RME_MIN_VERSION: Final = (8, 1)
"""First release with the ``x-rme`` CPU property (§3.5)."""

CMDLINE_FILE: Final = "qemu.cmdline"
STDOUT_LOG: Final = "qemu.stdout.log"
STDERR_LOG: Final = "qemu.stderr.log"
SERIAL_LOG: Final = "uart0.log"
SERIAL_ID: Final = "agent_uart"
"""The chardev id of the agent's UART on QEMU's command line."""

_MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")
_TOKEN = re.compile(r"^[^\s]+$")
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")
_ERROR_EXIT: Final = 1
"""QEMU's exit status when it refuses its command line (bad option, property, CPU, image)."""

QEMU_PARAMS: dict[str, Any] = {
    "binary": str,
    "kernel": str,
    "bios": str,
    "machine": str,
    "cpu": str,
    "memory": str,
    "smp": int,
    "extra": list,
    "workdir": str,
    "timeouts": {"version": float, "connect": float, "shutdown": float, "kill": float},
}
"""The schema of a profile's ``qemu:`` section (the target class adds ``link:``)."""

_ERROR_KEYS: Final = (
    # QEMU prefixes an error about one option with "-option value:"; some name the thing instead.
    ("qemu.machine", re.compile(r"^-machine |machine|Property '[^']*-machine\.")),
    ("qemu.cpu", re.compile(r"^-cpu |CPU model|cpu")),
    ("qemu.memory", re.compile(r"^-m ")),
    ("qemu.smp", re.compile(r"^-smp |CPU topology|CPUs")),
    ("qemu.kernel", re.compile(r"^-kernel |kernel")),
    ("qemu.bios", re.compile(r"^-bios |ROM image|firmware|bios")),
    ("qemu.extra", re.compile(r"^-(?!machine |cpu |m |smp |kernel |bios )[a-z][\w-]*[ :]")),
)
"""Which profile key a line of QEMU's refusal points at (first matching patterns win the blame)."""


def checkout_root() -> Path:
    """The folder holding the ``cca_hil`` package: the checkout root for a clone or editable install."""
    return Path(cca_hil.__file__).resolve().parent.parent


def default_kernel() -> Path:
    """The agent image the ``qemu-virt`` profile boots when ``qemu.kernel`` is not set."""
    return checkout_root() / AGENT_IMAGE


# -- errors -------------------------------------------------------------------------------


class QemuExitedError(TransportError):
    """QEMU ended while cca-hil needed it; carries the exit status and its last output lines."""

    def __init__(self, what: str, *, returncode: int | None, tail: Iterable[str]) -> None:
        self.returncode = returncode
        self.tail = tuple(tail)
        shown = " | ".join(self.tail) if self.tail else "QEMU printed nothing"
        super().__init__(f"{what}; {describe_exit(returncode, 'QEMU')}; last output: {shown}")


class QemuRejectedError(ProfileError):
    """QEMU refused the command line the profile made (an option value, a CPU, a property, an image)."""


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QemuTimeouts:
    """Deadlines in seconds for each phase of a QEMU's life."""

    version: float = 20.0
    """``--version`` probe."""
    connect: float = 10.0
    """TCP connect to the agent's UART (QEMU holds the listening socket from the start)."""
    shutdown: float = 10.0
    """SIGTERM grace before SIGKILL."""
    kill: float = 5.0
    """After SIGKILL, until the process group is gone."""


@dataclass(frozen=True)
class QemuConfig:
    """Everything needed to launch one QEMU, from a profile's ``qemu:`` section."""

    binary: str = DEFAULT_BINARY
    kernel: Path | None = None
    """The agent (``-kernel``); None with a ``bios`` (the agent is BL33 inside the firmware image)."""
    kernel_is_default: bool = False
    """True when ``kernel`` is the built agent of this checkout (the profile named none)."""
    bios: Path | None = None
    """EL3 firmware (TF-A ``flash.bin``/``bl1.bin``) loaded with ``-bios``."""
    machine: str = DEFAULT_MACHINE
    cpu: str = DEFAULT_CPU
    memory: str = DEFAULT_MEMORY
    smp: int = 1
    extra_args: tuple[str, ...] = ()
    workdir: Path | None = None
    """QEMU's working directory; None: the run folder. TF-A's semihosting boot reads ``bl2.bin``… there."""
    timeouts: QemuTimeouts = QemuTimeouts()
    source: str = "<qemu config>"
    """Where this configuration came from, for error messages."""

    @classmethod
    def from_section(cls, section: Mapping[str, Any], *, where: str = "<qemu config>") -> QemuConfig:
        """Build and check a configuration from a ``qemu:`` section already validated against QEMU_PARAMS."""

        def fail(what: str, valid: Iterable[str] | None = None) -> ProfileError:
            return ProfileError(what, where=where, valid=valid)

        for key in ("binary", "machine", "cpu"):
            value = section.get(key)
            if value is not None and not _TOKEN.match(value):
                raise fail(f"qemu.{key} {value!r} must be one word without spaces")
        memory = section.get("memory", DEFAULT_MEMORY)
        if not _MEMORY.match(memory):
            raise fail(
                f"qemu.memory {memory!r} is not a size such as 512M or 2G (a number, then K, M, G or T)"
            )
        smp = section.get("smp", 1)
        if smp < 1:
            raise fail(f"qemu.smp must be 1 or more, got {smp}")
        extra = section.get("extra", [])
        for item in extra:
            if not isinstance(item, str | int | float) or isinstance(item, bool):
                raise fail(f"qemu.extra items are command-line arguments (strings), got {item!r}")
        bios = _path(section["bios"]) if section.get("bios") else None
        kernel: Path | None
        if section.get("kernel"):
            kernel, is_default = _path(section["kernel"]), False
        else:
            # With firmware the agent is BL33 inside the flash image; without, the built agent.
            kernel, is_default = (None, False) if bios is not None else (default_kernel(), True)
        values = asdict(QemuTimeouts()) | section.get("timeouts", {})
        for phase, value in values.items():
            if value <= 0:
                raise fail(f"qemu.timeouts.{phase} must be positive, got {value}")
        return cls(
            binary=section.get("binary") or DEFAULT_BINARY,
            kernel=kernel,
            kernel_is_default=is_default,
            bios=bios,
            machine=section.get("machine", DEFAULT_MACHINE),
            cpu=section.get("cpu", DEFAULT_CPU),
            memory=memory,
            smp=smp,
            extra_args=tuple(str(a) for a in extra),
            workdir=_path(section["workdir"]) if section.get("workdir") else None,
            timeouts=QemuTimeouts(**values),
            source=where,
        )

    @property
    def memory_bytes(self) -> int:
        """``memory`` in bytes (QEMU reads a number without a suffix as MiB)."""
        shift = {"K": 10, "M": 20, "G": 30, "T": 40}
        suffix = self.memory[-1]
        if suffix in shift:
            return int(self.memory[:-1]) << shift[suffix]
        return int(self.memory) << 20

    @property
    def rme(self) -> bool:
        """True when the CPU emulates FEAT_RME (``x-rme=on``, QEMU >= 8.1)."""
        return any(part.strip() in ("x-rme=on", "x-rme=true", "x-rme") for part in self.cpu.split(",")[1:])

    def check_images(self) -> None:
        """ProfileError naming the key (and the build command for the default agent) for a missing image."""
        if self.kernel is not None and not self.kernel.is_file():
            if self.kernel_is_default:
                raise ProfileError(
                    f"the QEMU agent image {self.kernel} is not built: run '{AGENT_BUILD}' in the "
                    "cca-hil checkout, or name an image with --set qemu.kernel=PATH",
                    where=self.source,
                )
            raise ProfileError(f"qemu.kernel {str(self.kernel)!r}: no such file", where=self.source)
        if self.bios is not None and not self.bios.is_file():
            raise ProfileError(f"qemu.bios {str(self.bios)!r}: no such file", where=self.source)
        if self.workdir is not None and not self.workdir.is_dir():
            raise ProfileError(f"qemu.workdir {str(self.workdir)!r}: no such directory", where=self.source)


def _path(text: str) -> Path:
    # Absolute, because QEMU runs in the run folder; relative paths mean the current directory.
    return Path(os.path.expanduser(text)).absolute()


def command_line(config: QemuConfig, *, binary: str, serial_fd: int) -> list[str]:
    """QEMU's argument list (never a shell string) with the agent's UART on inherited socket ``serial_fd``."""
    argv = [
        binary,
        "-machine",
        config.machine,
        "-cpu",
        config.cpu,
        "-m",
        config.memory,
        "-smp",
        str(config.smp),
        # No default devices, no monitor, no window, no host config files: only what is asked for.
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        f"socket,id={SERIAL_ID},fd={serial_fd},server=on,wait=on,nodelay=on",
        "-serial",
        f"chardev:{SERIAL_ID}",
    ]
    if config.bios is not None:
        argv += ["-bios", str(config.bios)]
    if config.kernel is not None:
        argv += ["-kernel", str(config.kernel)]
    argv += config.extra_args
    return argv


def find_binary(config: QemuConfig, *, env: Mapping[str, str] | None = None) -> Path:
    """The QEMU executable: a path (ProfileError when it is none) or a command name looked up on PATH."""
    environ = os.environ if env is None else env
    expanded = os.path.expanduser(config.binary)
    if "/" in expanded:
        path = Path(expanded)
        if path.is_file() and os.access(path, os.X_OK):
            return path.absolute()
        state = "not executable" if path.exists() else "no such file"
        raise ProfileError(f"qemu.binary {config.binary!r}: {state}", where=config.source)
    found = shutil.which(expanded, path=environ.get("PATH", os.defpath))
    if found is None:
        raise TargetError(
            f"{config.binary} is not on PATH ({INSTALL_HINT}; or --set qemu.binary=PATH, "
            f"profile {config.source})"
        )
    return Path(found)


def probe_version(binary: Path | str, *, timeout: float = 20.0) -> tuple[int, int, int]:
    """Run ``BINARY --version`` (bounded) and parse ``QEMU emulator version X.Y.Z``."""
    try:
        proc = subprocess.run(
            [str(binary), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TransportError(f"{binary} --version did not finish within {timeout:g} s") from None
    except OSError as error:
        raise TransportError(f"cannot run {binary} --version: {error}") from error
    text = proc.stdout.decode("utf-8", "replace")
    match = _VERSION.search(text)
    if match is None:
        raise TransportError(
            f"{binary} --version printed no 'QEMU emulator version X.Y' line "
            f"(status {proc.returncode}): {text.strip()[:300]!r}"
        )
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


# -- a running QEMU ----------------------------------------------------------------------------


def _listening_socket() -> socket.socket:
    """A TCP socket listening on a free loopback port, to be inherited by QEMU."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


class QemuProcess:
    """A running QEMU: its process group, output logs and the connected agent UART."""

    def __init__(
        self, config: QemuConfig, *, binary: Path, run_dir: Path, version: tuple[int, int, int]
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.version = version
        run_dir.mkdir(parents=True, exist_ok=True)
        listener = _listening_socket()
        try:
            self.serial_port: int = listener.getsockname()[1]
            self.argv = command_line(config, binary=str(binary), serial_fd=listener.fileno())
            (run_dir / CMDLINE_FILE).write_text(
                f"# agent UART: 127.0.0.1:{self.serial_port} (listening socket inherited as fd "
                f"{listener.fileno()})\n{shlex.join(self.argv)}\n",
                encoding="utf-8",
            )
            self._process = GroupProcess(
                self.argv,
                stdout_log=run_dir / STDOUT_LOG,
                stderr_log=run_dir / STDERR_LOG,
                cwd=config.workdir or run_dir,
                what="QEMU",
                pass_fds=(listener.fileno(),),
                kill_wait=config.timeouts.kill,
                # A QEMU whose cca-hil was killed would run its polling guest at full speed forever.
                die_with_parent=True,
            )
        finally:
            # QEMU holds its own copy: once it exits nobody listens, so a connect cannot hang on a
            # socket only this process keeps open.
            listener.close()
        self.pid = self._process.pid
        try:
            self.serial = TerminalClient(
                name="uart0",
                port=self.serial_port,
                log_path=run_dir / SERIAL_LOG,
                connect_timeout=config.timeouts.connect,
                peer_status=self.status,
            )
        except BaseException:
            self._process.close(grace=config.timeouts.shutdown, kill_wait=config.timeouts.kill)
            raise

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited, else None."""
        return self._process.returncode

    def status(self) -> str | None:
        """Exit status in words once QEMU has exited (waits briefly after the UART closes), else None."""
        if self._process.wait(1.0) is None:
            return None
        self._process.settle_output()
        return self._process.status()

    def exit_error(self, what: str) -> ProfileError | QemuExitedError:
        """The error for QEMU gone while it was needed: its refusal of the profile, or its exit."""
        returncode = self._process.wait(self.config.timeouts.shutdown)
        self._process.settle_output()
        errors = self._process.stderr_tail.lines()
        if returncode == _ERROR_EXIT and self.serial.received == 0 and errors:
            # QEMU refused its command line before the guest ran: bad profile values, not a crash.
            return rejected(errors, binary=self.argv[0], config=self.config, run_dir=self.run_dir)
        return QemuExitedError(what, returncode=returncode, tail=self._process.output_tail())

    def close(self) -> int | None:
        """Disconnect the UART and stop the process group: SIGTERM, bounded wait, SIGKILL; idempotent."""
        try:
            self.serial.close()
        finally:
            returncode = self._process.close(
                grace=self.config.timeouts.shutdown, kill_wait=self.config.timeouts.kill
            )
        return returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def rejected(errors: Iterable[str], *, binary: str, config: QemuConfig, run_dir: Path) -> QemuRejectedError:
    """A one-line ProfileError from QEMU's error lines, naming the profile keys they point at."""
    prefix = f"{Path(binary).name}: "
    lines = [
        line.removeprefix(prefix)
        for line in errors
        if "QEMU waiting for connection" not in line and "terminating on signal" not in line
    ]
    keys = [key for key, pattern in _ERROR_KEYS if any(pattern.search(line) for line in lines)]
    blame = f" (check {', '.join(dict.fromkeys(keys))})" if keys else ""
    return QemuRejectedError(
        f"QEMU refused the profile's command line{blame}: {' | '.join(lines) or '(no message)'} "
        f"[command in {run_dir / CMDLINE_FILE}]",
        where=config.source,
    )


def launch(config: QemuConfig, *, run_dir: Path, env: Mapping[str, str] | None = None) -> QemuProcess:
    """Check the images and the binary, then start QEMU with the agent's UART connected."""
    config.check_images()
    binary = find_binary(config, env=env)
    version = probe_version(binary, timeout=config.timeouts.version)
    if config.rme and version[:2] < RME_MIN_VERSION:
        raise ProfileError(
            f"qemu.cpu {config.cpu!r} asks for FEAT_RME (x-rme), which QEMU emulates from "
            f"{'.'.join(map(str, RME_MIN_VERSION))} on; {binary} is {'.'.join(map(str, version))}",
            where=config.source,
        )
    return QemuProcess(config, binary=binary, run_dir=run_dir, version=version)
