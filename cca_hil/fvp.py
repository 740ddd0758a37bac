"""Launching Arm FVPs: configuration, command line, process lifetime, terminal ports and sessions.

Facts used here (reference targets-transports.md §1): RME is enabled on
``FVP_Base_RevC-2xAEMvA`` through ``-C`` parameters; firmware goes in with
``bp.secureflashloader.fname`` (BL1) and ``bp.flashloader0.fname`` (FIP),
raw images with ``--data INSTANCE=FILE@ADDRESS``; each ``bp.terminal_N``
prints ``terminal_N: Listening for serial connection on port P`` on stdout
(interleaved with other output, ports auto-incremented when busy, so they are
always parsed, never assumed); terminals opened by a program use
``mode=raw`` and ``start_telnet=0``; the model is stopped with SIGTERM and,
after a bounded wait, SIGKILL.

Layout of a run folder: ``fvp.cmdline`` (the argument list, shell-quoted for
people), ``fvp.stdout.log`` / ``fvp.stderr.log`` (the model's own output,
written as it arrives) and ``uartN.log`` (each connected terminal, from its
first byte).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.launch import OutputPump as _Pump
from cca_hil.launch import describe_exit, stop_group, wait_group_gone
from cca_hil.launch import group_exists as _group_exists
from cca_hil.launch import signal_group as _killpg
from cca_hil.transport.telnet import TERMINAL_MODES, TerminalClient, TerminalMode

logger = logging.getLogger(__name__)

DEFAULT_BINARY = "FVP_Base_RevC-2xAEMvA"
"""The model cca-hil's FVP profiles target; RME is enabled on it by parameters (§1.1)."""

BINARY_ENV = "CCA_HIL_FVP"
"""Environment variable naming the FVP binary (profiles.py also folds it into ``fvp.binary``)."""

TERMINAL_COUNT = 4
"""FVP Base has ``bp.terminal_0`` … ``bp.terminal_3`` wired to ``bp.pl011_uart0`` … ``3`` (§1.3)."""

PORT_LINE = re.compile(rb"^(?P<name>\S+): Listening for serial connection on port (?P<port>\d+)\s*$")
"""The line each terminal prints on the model's stdout (same shape as meta-arm runfvp's regex)."""

IRIS_LINE = re.compile(rb"^Iris server started listening to port (?P<port>\d+)\s*$")
"""What ``-p/--print-port-number`` prints for the Iris debug server (§1.5)."""
IRIS_PORT = "iris"
"""The name the Iris server's port is recorded under, next to the terminals'."""

VERSION_LINE = re.compile(r"Fast Models \[(\d+)\.(\d+)\.(\d+)")
"""``--version`` prints ``Fast Models [11.x.y (date)]`` (LAVA matches ``Fast Models[^\\n]+``)."""

IMAGE_PARAMS = {
    "bl1": "bp.secureflashloader.fname",
    "fip": "bp.flashloader0.fname",
    "flash1": "bp.flashloader1.fname",
}
"""``fvp.firmware`` keys and the parameters that load them (§1.2)."""

TERMINAL_PARAM = re.compile(r"^bp\.terminal_\d+\.(start_telnet|mode|start_port)$")

FVP_PARAMS: dict[str, Any] = {
    "binary": str,
    "version": str,
    "images_dir": str,
    "firmware": dict.fromkeys(IMAGE_PARAMS, str),
    "data": list,
    "application": list,
    "terminals": {
        f"terminal_{n}": {"mode": str, "start_port": int, "connect": bool} for n in range(TERMINAL_COUNT)
    },
    "agent_uart": int,
    "iris": bool,
    "params": dict,
    "options": {
        "stat": bool,
        "quantum": int,
        "cyclelimit": int,
        "timelimit": int,
        "extra": list,
    },
    "adapt_params": bool,
    "check_version": bool,
    "timeouts": {
        "version": float,
        "ports": float,
        "connect": float,
        "shutdown": float,
        "kill": float,
    },
}
"""The schema of a profile's ``fvp:`` section (a target class exposes it as ``PARAMS``)."""


# -- errors ----------------------------------------------------------------


class FvpNotFoundError(TargetError):
    """The FVP binary is in none of the places cca-hil looks; ``looked`` lists them."""

    def __init__(self, looked: Iterable[str]) -> None:
        self.looked = tuple(looked)
        super().__init__("FVP binary not found; looked at: " + "; ".join(self.looked))


class FvpExitedError(TransportError):
    """The model exited while cca-hil needed it; carries the exit status and the last output lines."""

    def __init__(self, what: str, *, returncode: int | None, tail: Iterable[str]) -> None:
        self.returncode = returncode
        self.tail = tuple(tail)
        super().__init__(f"{what}; {describe_status(returncode)}; {_format_tail(self.tail)}")


def describe_status(returncode: int | None) -> str:
    """People's words for a Popen return code (negative = killed by a signal)."""
    return describe_exit(returncode, "model")


def _format_tail(lines: tuple[str, ...]) -> str:
    if not lines:
        return "the model printed nothing"
    return "last model output: " + " | ".join(lines)


# -- configuration -----------------------------------------------------------


@dataclass(frozen=True, order=True)
class FvpVersion:
    """A Fast Models release: 11.31 build 28 is ``FvpVersion(11, 31, 28)``."""

    major: int
    minor: int
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> FvpVersion:
        """From ``--version`` output, ``11.27``, ``11.27.19`` or ``11.31 Build 28``."""
        match = VERSION_LINE.search(text) or re.search(r"(\d+)\.(\d+)(?:(?:\.|\s+[Bb]uild\s+)(\d+))?", text)
        if match is None:
            raise ValueError(f"no Fast Models version in {text[:200]!r}")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor} build {self.build}" if self.build else f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class FvpTimeouts:
    """Deadlines in seconds for each phase of an FVP's life (HTTPX-style named phases)."""

    version: float = 20.0
    """``--version`` probe."""
    ports: float = 60.0
    """From spawn until every terminal to connect has printed its port."""
    connect: float = 5.0
    """TCP connect to one terminal."""
    shutdown: float = 10.0
    """SIGTERM grace before SIGKILL (meta-arm's runner waits 10 s)."""
    kill: float = 5.0
    """After SIGKILL, until the process group is gone."""


@dataclass(frozen=True)
class TerminalConfig:
    """One ``bp.terminal_N``: mode, first port tried, and whether cca-hil connects to it."""

    index: int
    mode: TerminalMode = "raw"
    start_port: int = 5000
    connect: bool = True

    @property
    def name(self) -> str:
        """The instance name the model prints (``terminal_0``)."""
        return f"terminal_{self.index}"

    @property
    def log_name(self) -> str:
        """File name of this terminal's capture in the run folder."""
        return f"uart{self.index}.log"


@dataclass(frozen=True)
class DataLoad:
    """A ``--data INSTANCE=FILE@ADDRESS`` raw image preload."""

    instance: str
    file: str
    address: int

    @classmethod
    def parse(cls, text: str) -> DataLoad:
        """From ``cluster0.cpu0=agent.bin@0x88000000``."""
        instance, eq, rest = text.partition("=")
        file, at, address = rest.rpartition("@")
        if not eq or not at or not instance or not file:
            raise ValueError(f"bad --data {text!r}: expected INSTANCE=FILE@ADDRESS")
        return cls(instance=instance, file=file, address=int(address, 0))


@dataclass(frozen=True)
class ParamNotice:
    """A parameter the profile uses that the running release names differently."""

    parameter: str
    replacement: str
    version: FvpVersion
    note: str
    adapted: bool

    def describe(self) -> str:
        """One line for people."""
        action = "renamed to" if self.adapted else "is known as"
        return f"FVP {self.version}: parameter {self.parameter!r} {action} {self.replacement!r} ({self.note})"


@dataclass(frozen=True)
class ParamRename:
    """A parameter renamed in some Fast Models release."""

    old: re.Pattern[str]
    new: str
    """Replacement template for ``old.sub``."""
    since: FvpVersion
    values: Mapping[str, str]
    """Old value → new value, where the encodings differ."""
    note: str

    def apply(self, name: str, value: str) -> tuple[str, str] | None:
        """The (new name, new value) for an old-style parameter, or None when it does not match."""
        if not self.old.fullmatch(name):
            return None
        return self.old.sub(self.new, name), self.values.get(value, value)


RENAMES: tuple[ParamRename, ...] = (
    ParamRename(
        old=re.compile(r"(cluster\d+)\.has_rme"),
        new=r"\1.rme_support_level",
        # The reference dates clusterN.has_rme=1 to the 2021 (TF-A 2.6) RME instructions and
        # shows only rme_support_level in every configuration for the 11.2x/11.3x releases
        # cca-hil targets; it pins no exact release, so 11.20 is the earliest we claim.
        since=FvpVersion(11, 20),
        # Every reference configuration enables RME with level 2; the meaning of other
        # levels is undocumented, so only on/off are translated.
        values={"1": "2", "0": "0"},
        note="FEAT_RME on the PE; bp.has_rme (board level) is a different parameter and unchanged",
    ),
)
"""Parameter renames per release (reference targets-transports.md §1.2)."""


def check_renames(
    params: Iterable[tuple[str, str]],
    version: FvpVersion,
    *,
    adapt: bool,
    renames: Iterable[ParamRename] = RENAMES,
) -> tuple[tuple[tuple[str, str], ...], tuple[ParamNotice, ...]]:
    """Params for ``version`` (renamed when ``adapt``) and a notice per renamed parameter used."""
    rules = [rule for rule in renames if version >= rule.since]
    out: list[tuple[str, str]] = []
    notices: list[ParamNotice] = []
    for name, value in params:
        for rule in rules:
            renamed = rule.apply(name, value)
            if renamed is None:
                continue
            notices.append(
                ParamNotice(
                    parameter=name, replacement=renamed[0], version=version, note=rule.note, adapted=adapt
                )
            )
            if adapt:
                name, value = renamed
            break
        out.append((name, value))
    return tuple(out), tuple(notices)


def param_text(value: object) -> str:
    """A parameter value as the model's command line spells it (booleans as 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    # ``--set fvp.params.bp.secure_memory=1`` arrives as nested mappings; YAML files usually
    # spell the dotted name as one key. Both mean the same parameter.
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


@dataclass(frozen=True)
class FvpConfig:
    """Everything needed to launch one FVP, from a profile's ``fvp:`` section."""

    binary: str | None = None
    """Path or command name; None means ``$CCA_HIL_FVP``, then :data:`DEFAULT_BINARY` on PATH."""
    version: FvpVersion | None = None
    """The release the profile's parameters were written for."""
    images_dir: Path = Path(".")
    """Relative image paths are resolved against this directory."""
    firmware: Mapping[str, str] = field(default_factory=dict)
    """``bl1``/``fip``/``flash1`` → file (see :data:`IMAGE_PARAMS`)."""
    data: tuple[DataLoad, ...] = ()
    applications: tuple[str, ...] = ()
    """``--application INSTANCE=ELF`` arguments."""
    terminals: tuple[TerminalConfig, ...] = tuple(
        TerminalConfig(index=n, start_port=5000 + n) for n in range(TERMINAL_COUNT)
    )
    agent_uart: int = 0
    """The UART the resident agent talks on (BL33 owns uart0 after BL31 hands over, §1.3)."""
    iris: bool = False
    """Start the Iris debug server (``-I -p --iris-port 0``, loopback only) for debug-view memory reads."""
    params: tuple[tuple[str, str], ...] = ()
    """``-C name=value`` parameters in profile order."""
    stat: bool = False
    quantum: int | None = None
    cyclelimit: int | None = None
    timelimit: int | None = None
    extra_args: tuple[str, ...] = ()
    adapt_params: bool = False
    """Rename parameters the running release knows by another name instead of only warning."""
    check_version: bool = True
    """Run ``--version`` before launching, to check parameter names against the release."""
    timeouts: FvpTimeouts = FvpTimeouts()
    source: str = "<fvp config>"
    """Where this configuration came from, for error messages."""

    @classmethod
    def from_section(cls, section: Mapping[str, Any], *, where: str = "<fvp config>") -> FvpConfig:
        """Build and check a configuration from an ``fvp:`` section already validated against FVP_PARAMS."""

        def fail(what: str, valid: Iterable[str] | None = None) -> ProfileError:
            return ProfileError(what, where=where, valid=valid)

        version = None
        if "version" in section:
            try:
                version = FvpVersion.parse(str(section["version"]))
            except ValueError:
                raise fail(f"fvp.version {section['version']!r} is not a release such as 11.27") from None

        firmware = dict(section.get("firmware", {}))

        data: list[DataLoad] = []
        for item in section.get("data", []):
            try:
                data.append(DataLoad.parse(str(item)))
            except ValueError as error:
                raise fail(f"fvp.data: {error}") from None
        applications = tuple(str(item) for item in section.get("application", []))
        for app in applications:
            if "=" not in app:
                raise fail(f"fvp.application {app!r}: expected INSTANCE=FILE")

        terminals: list[TerminalConfig] = []
        given = section.get("terminals", {})
        for n in range(TERMINAL_COUNT):
            entry = given.get(f"terminal_{n}", {})
            mode = entry.get("mode", "raw")
            if mode not in TERMINAL_MODES:
                raise fail(f"fvp.terminals.terminal_{n}.mode {mode!r}", valid=TERMINAL_MODES)
            port = entry.get("start_port", 5000 + n)
            if not 0 < port < 65536:
                raise fail(f"fvp.terminals.terminal_{n}.start_port {port} is not a TCP port")
            terminals.append(
                TerminalConfig(index=n, mode=mode, start_port=port, connect=entry.get("connect", True))
            )

        agent_uart = section.get("agent_uart", 0)
        if not 0 <= agent_uart < TERMINAL_COUNT:
            raise fail(f"fvp.agent_uart {agent_uart}", valid=[str(n) for n in range(TERMINAL_COUNT)])
        if not terminals[agent_uart].connect:
            raise fail(f"fvp.agent_uart is {agent_uart} but terminal_{agent_uart} has connect: false")

        params: dict[str, str] = {}
        for name, value in _flatten(section.get("params", {})):
            if TERMINAL_PARAM.match(name):
                raise fail(f"fvp.params.{name}: set terminals under fvp.terminals.terminal_N instead")
            for key, image_param in IMAGE_PARAMS.items():
                if name == image_param:
                    raise fail(f"fvp.params.{name}: give the image as fvp.firmware.{key} instead")
            params[name] = param_text(value)

        options = section.get("options", {})
        timeouts = FvpTimeouts(**section.get("timeouts", {}))
        for phase, value in vars(timeouts).items():
            if value <= 0:
                raise fail(f"fvp.timeouts.{phase} must be positive, got {value}")

        return cls(
            binary=section.get("binary"),
            version=version,
            images_dir=Path(os.path.expanduser(section.get("images_dir", "."))),
            firmware=firmware,
            data=tuple(data),
            applications=applications,
            terminals=tuple(terminals),
            agent_uart=agent_uart,
            iris=section.get("iris", False),
            params=tuple(params.items()),
            stat=options.get("stat", False),
            quantum=options.get("quantum"),
            cyclelimit=options.get("cyclelimit"),
            timelimit=options.get("timelimit"),
            extra_args=tuple(str(a) for a in options.get("extra", [])),
            adapt_params=section.get("adapt_params", False),
            check_version=section.get("check_version", True),
            timeouts=timeouts,
            source=where,
        )

    def image_path(self, file: str) -> Path:
        """An image file resolved against :attr:`images_dir`, absolute (the model runs in the run folder)."""
        path = Path(os.path.expanduser(file))
        return (path if path.is_absolute() else self.images_dir / path).absolute()

    def images(self) -> list[tuple[str, Path]]:
        """(profile key, path) of every image the command line names."""
        found = [(f"fvp.firmware.{key}", self.image_path(file)) for key, file in self.firmware.items()]
        found += [(f"fvp.data[{i}]", self.image_path(d.file)) for i, d in enumerate(self.data)]
        for i, app in enumerate(self.applications):
            found.append((f"fvp.application[{i}]", self.image_path(app.partition("=")[2])))
        return found

    def param(self, name: str) -> str | None:
        """The value of ``-C name=…`` as it will be passed, or None when the profile does not set it."""
        return dict(self.params).get(name)

    def _level(self, feature: str) -> int:
        # The feature counts as present when every cluster the profile configures has it.
        levels = [
            int(value, 0) for name, value in self.params if re.fullmatch(rf"cluster\d+\.{feature}", name)
        ]
        return min(levels) if levels else 0

    @property
    def rme(self) -> bool:
        """True when the profile enables FEAT_RME on the PEs (``clusterN.rme_support_level``)."""
        return self._level("rme_support_level") > 0 or self._level("has_rme") > 0

    @property
    def mec(self) -> bool:
        """True when the profile enables FEAT_MEC on the PEs (``clusterN.mec_support_level``)."""
        return self._level("mec_support_level") > 0

    @property
    def connected_terminals(self) -> tuple[TerminalConfig, ...]:
        """Terminals cca-hil connects to (their ports must be printed before launch completes)."""
        return tuple(t for t in self.terminals if t.connect)


def command_line(config: FvpConfig, *, binary: str | None = None) -> list[str]:
    """The model's argument list (never a shell string); ``binary`` replaces the configured one."""
    argv = [binary or config.binary or DEFAULT_BINARY]
    for name, value in config.params:
        argv += ["-C", f"{name}={value}"]
    for terminal in config.terminals:
        prefix = f"bp.{terminal.name}"
        # start_telnet=0 on every terminal: the model must never pop up xterms on a farm host.
        argv += ["-C", f"{prefix}.start_telnet=0"]
        argv += ["-C", f"{prefix}.mode={terminal.mode}"]
        argv += ["-C", f"{prefix}.start_port={terminal.start_port}"]
    for key, file in config.firmware.items():
        argv += ["-C", f"{IMAGE_PARAMS[key]}={config.image_path(file)}"]
    for load in config.data:
        argv += ["--data", f"{load.instance}={config.image_path(load.file)}@{load.address:#x}"]
    for app in config.applications:
        instance, _, file = app.partition("=")
        argv += ["--application", f"{instance}={config.image_path(file)}"]
    if config.iris:
        argv += ["-I", "-p", "--iris-port", "0"]
    if config.stat:
        argv.append("--stat")
    if config.quantum is not None:
        argv += ["--quantum", str(config.quantum)]
    if config.cyclelimit is not None:
        argv += ["--cyclelimit", str(config.cyclelimit)]
    if config.timelimit is not None:
        argv += ["--timelimit", str(config.timelimit)]
    argv += config.extra_args
    return argv


# -- binary and release --------------------------------------------------------


def find_binary(config: FvpConfig, *, env: Mapping[str, str] | None = None) -> Path:
    """The FVP executable: ``fvp.binary`` (profile, ``--set``), ``$CCA_HIL_FVP``, then PATH."""
    environ = os.environ if env is None else env
    search_path = environ.get("PATH", os.defpath)
    looked: list[str] = []

    def lookup(candidate: str, origin: str) -> Path | None:
        expanded = os.path.expanduser(candidate)
        if os.sep in expanded or "/" in expanded:
            path = Path(expanded)
            if path.is_file() and os.access(path, os.X_OK):
                return path.resolve()
            state = "not executable" if path.exists() else "no such file"
            looked.append(f"{origin} {candidate!r} ({state})")
            return None
        found = shutil.which(expanded, path=search_path)
        if found:
            return Path(found).resolve()
        looked.append(f"{origin} {candidate!r} (not on PATH)")
        return None

    if config.binary:
        # An explicit choice is never silently replaced by another model found elsewhere.
        found = lookup(config.binary, f"fvp.binary in {config.source} (or --set fvp.binary / ${BINARY_ENV})")
    else:
        looked.append(f"fvp.binary in {config.source} (not set; --set fvp.binary=PATH sets it)")
        found = None
        from_env = environ.get(BINARY_ENV)
        if from_env:
            found = lookup(from_env, f"${BINARY_ENV}")
        else:
            looked.append(f"${BINARY_ENV} (not set)")
        if found is None:
            found = lookup(DEFAULT_BINARY, "default")
    if found is None:
        dirs = [d for d in search_path.split(os.pathsep) if d]
        looked.append("PATH: " + (os.pathsep.join(dirs) or "(empty)"))
        raise FvpNotFoundError(looked)
    return found


def probe_version(binary: Path | str, *, timeout: float = 20.0) -> FvpVersion:
    """Run ``BINARY --version`` (bounded) and parse the Fast Models release it prints."""
    try:
        proc = subprocess.Popen(
            [str(binary), "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as error:
        raise TransportError(f"cannot run {binary} --version: {error}") from error
    with proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5.0)
            raise TransportError(f"{binary} --version did not finish within {timeout:g} s") from None
    text = out.decode("utf-8", "replace")
    try:
        return FvpVersion.parse(text)
    except ValueError:
        raise TransportError(
            f"{binary} --version printed no 'Fast Models [x.y.z]' line "
            f"(status {proc.returncode}): {text.strip()[:300]!r}"
        ) from None


# -- output capture and port discovery -------------------------------------------


_MAX_LINE = 4096
"""Longest unterminated output kept while waiting for its newline."""


class PortLineParser:
    """Finds terminal port lines in model output fed in arbitrary pieces; keeps the last lines."""

    def __init__(self, *, keep: int = 20) -> None:
        self.ports: dict[str, int] = {}
        self.tail: deque[str] = deque(maxlen=keep)
        self._partial = bytearray()

    def feed(self, data: bytes) -> dict[str, int]:
        """Consume output; returns the ports first seen in it."""
        self._partial += data
        found: dict[str, int] = {}
        *lines, rest = self._partial.split(b"\n")
        # A model spewing bytes without newlines must not grow this without bound; a port
        # line is short, so only the end of an overlong line can still become one.
        self._partial = bytearray(rest[-_MAX_LINE:])
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.strip():
                self.tail.append(line.decode("utf-8", "replace"))
            match = PORT_LINE.match(line) or IRIS_LINE.match(line)
            if match is not None:
                named = "name" in match.re.groupindex
                name = match.group("name").decode("ascii", "replace") if named else IRIS_PORT
                if name not in self.ports:
                    self.ports[name] = found[name] = int(match.group("port"))
        return found

    def last_lines(self) -> tuple[str, ...]:
        """The last complete lines seen, plus any unterminated line."""
        lines = list(self.tail)
        if self._partial.strip():
            lines.append(self._partial.decode("utf-8", "replace"))
        return tuple(lines)


class FvpProcess:
    """A running model: its process group, output logs, terminal ports and connected terminals."""

    def __init__(
        self,
        *,
        config: FvpConfig,
        argv: list[str],
        run_dir: Path,
        version: FvpVersion | None = None,
        notices: tuple[ParamNotice, ...] = (),
    ) -> None:
        self.config = config
        self.argv = argv
        self.run_dir = run_dir
        self.version = version
        self.notices = notices
        self.stdout_log = run_dir / "fvp.stdout.log"
        self.stderr_log = run_dir / "fvp.stderr.log"
        self.terminals: dict[int, TerminalClient] = {}
        self.started = datetime.now(UTC)
        self._cond = threading.Condition()
        self._stdout = PortLineParser()
        self._stderr = PortLineParser()
        self._closed = False
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "fvp.cmdline").write_text(shlex.join(argv) + "\n", encoding="utf-8")
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=run_dir,
                # Own session and process group: Ctrl-C at the terminal reaches only cca-hil, which
                # then stops the model deliberately, and the whole group can be signalled at once.
                start_new_session=True,
            )
        except OSError as error:
            raise TransportError(f"cannot start {argv[0]}: {error}") from error
        self.pid = self._proc.pid
        self.pgid = self._proc.pid
        assert self._proc.stdout is not None and self._proc.stderr is not None
        pumps: list[_Pump] = []
        try:
            pumps.append(_Pump(self._proc.stdout, self.stdout_log, self._feed_stdout))
            pumps.append(_Pump(self._proc.stderr, self.stderr_log, self._feed_stderr))
        except BaseException:
            # No log, no model: a model nobody captures must not be left running.
            _killpg(self.pgid, signal.SIGKILL)
            self._proc.wait(config.timeouts.kill)
            for pump in pumps:
                pump.join(config.timeouts.kill)
            self._proc.stdout.close()
            self._proc.stderr.close()
            raise
        self._pumps = (pumps[0], pumps[1])

    def _feed_stdout(self, data: bytes) -> None:
        with self._cond:
            if self._stdout.feed(data):
                self._cond.notify_all()

    def _feed_stderr(self, data: bytes) -> None:
        with self._cond:
            self._stderr.feed(data)

    # -- state ---------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        """Terminal name → TCP port, as printed by the model so far."""
        with self._cond:
            return dict(self._stdout.ports)

    @property
    def returncode(self) -> int | None:
        """The exit status once the model has exited (negative: killed by that signal), else None."""
        return self._proc.poll()

    def output_tail(self) -> tuple[str, ...]:
        """The last lines the model printed (stdout, then stderr)."""
        with self._cond:
            out = self._stdout.last_lines()
            err = self._stderr.last_lines()
        return out + tuple(f"stderr: {line}" for line in err)

    def _exited(self, what: str) -> FvpExitedError:
        # The pipes may still hold the model's last words; give the pumps a moment to log them.
        for pump in self._pumps:
            pump.done.wait(1.0)
        return FvpExitedError(what, returncode=self._proc.poll(), tail=self.output_tail())

    def check(self) -> None:
        """Raise FvpExitedError if the model is no longer running."""
        if self._proc.poll() is not None:
            raise self._exited("the FVP stopped")

    def status(self) -> str | None:
        """Exit status in words once the model has exited (waits briefly after a terminal closes)."""
        try:
            self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None
        tail = " | ".join(self.output_tail()[-5:])
        return f"{describe_status(self._proc.returncode)}; last model output: {tail or '(none)'}"

    # -- start-up ------------------------------------------------------------

    def wait_for_ports(self, names: Iterable[str], timeout: float) -> dict[str, int]:
        """Wait until every named terminal printed its port; FvpExitedError/TransportError otherwise."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = wanted - self._stdout.ports.keys()
                if not missing:
                    return {name: self._stdout.ports[name] for name in sorted(wanted)}
                if self._proc.poll() is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = self.output_tail()
                    raise TransportError(
                        f"the FVP printed no port for {', '.join(sorted(missing))} within {timeout:g} s "
                        f"(pid {self.pid}); {_format_tail(tail)}"
                    )
                # Bounded slices: the model may exit without closing its pipes (a child holds them).
                self._cond.wait(min(remaining, 0.2))
        raise self._exited(f"the FVP exited before printing the port of {', '.join(sorted(missing))}")

    def connect_terminals(self) -> None:
        """Connect to every terminal the configuration marks ``connect``, capturing each to uartN.log."""
        for terminal in self.config.connected_terminals:
            port = self.ports[terminal.name]
            self.terminals[terminal.index] = TerminalClient(
                name=terminal.name,
                port=port,
                mode=terminal.mode,
                log_path=self.run_dir / terminal.log_name,
                connect_timeout=self.config.timeouts.connect,
                peer_status=self.status,
            )

    def terminal(self, index: int) -> TerminalClient:
        """The connected terminal of UART ``index``."""
        try:
            return self.terminals[index]
        except KeyError:
            raise TargetError(
                f"terminal_{index} is not connected (connected: "
                f"{', '.join(f'terminal_{i}' for i in sorted(self.terminals)) or 'none'})"
            ) from None

    @property
    def agent_terminal(self) -> TerminalClient:
        """The terminal of the UART the resident agent talks on."""
        return self.terminal(self.config.agent_uart)

    # -- end -----------------------------------------------------------------

    def wait_exit(self, timeout: float) -> int:
        """Wait for the model to end by itself (e.g. PSCI SYSTEM_OFF with exit_on_shutdown)."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TransportError(f"the FVP (pid {self.pid}) did not exit within {timeout:g} s") from None

    def close(self) -> int | None:
        """Disconnect terminals and stop the process group: SIGTERM, bounded wait, SIGKILL; idempotent."""
        if self._closed:
            return self._proc.returncode
        self._closed = True
        timeouts = self.config.timeouts
        try:
            for terminal in self.terminals.values():
                terminal.close()
            self._stop_group(timeouts.shutdown, timeouts.kill)
        except KeyboardInterrupt:
            # A second Ctrl-C while shutting down means "now": no grace period.
            _killpg(self.pgid, signal.SIGKILL)
            self._wait_group_gone(timeouts.kill)
            raise
        finally:
            for pump in self._pumps:
                pump.join(2.0)
            # Popen.__exit__/__del__ would warn about a process we did not wait for.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.1)
        return self._proc.returncode

    def _stop_group(self, grace: float, kill_wait: float) -> None:
        stop_group(self._proc, self.pgid, grace=grace, kill_wait=kill_wait, what="FVP")

    def _wait_group_gone(self, timeout: float) -> bool:
        return wait_group_gone(self._proc, self.pgid, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FvpLauncher:
    """Turns an :class:`FvpConfig` into a running, connected :class:`FvpProcess`."""

    def __init__(self, config: FvpConfig, *, run_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self._env = env

    def prepare(self) -> tuple[list[str], FvpVersion | None, tuple[ParamNotice, ...]]:
        """Find the binary, check images, read the release and adapt parameters: (argv, version, notices)."""
        config = self.config
        binary = find_binary(config, env=self._env)
        missing = [f"{key}: {path}" for key, path in config.images() if not path.is_file()]
        if missing:
            raise TargetError(f"FVP image not found ({config.source}): {'; '.join(missing)}")
        version = None
        notices: tuple[ParamNotice, ...] = ()
        if config.check_version:
            version = probe_version(binary, timeout=config.timeouts.version)
            params, notices = check_renames(config.params, version, adapt=config.adapt_params)
            config = replace(config, params=params)
            for notice in notices:
                logger.warning("%s", notice.describe())
            if config.version is not None and (version.major, version.minor) != (
                config.version.major,
                config.version.minor,
            ):
                logger.info("profile written for FVP %s, running %s", config.version, version)
        return command_line(config, binary=str(binary)), version, notices

    def start(self) -> FvpProcess:
        """Launch, wait for the terminal ports, connect the terminals; stops the model on any failure."""
        argv, version, notices = self.prepare()
        process = FvpProcess(
            config=self.config, argv=argv, run_dir=self.run_dir, version=version, notices=notices
        )
        try:
            names = [t.name for t in self.config.connected_terminals]
            if self.config.iris:
                names.append(IRIS_PORT)
            process.wait_for_ports(names, self.config.timeouts.ports)
            process.connect_terminals()
        except BaseException:
            # KeyboardInterrupt included: the model never outlives a failed start.
            process.close()
            raise
        return process


# -- sessions: a model that outlives one cca-hil command (``fvp start`` / ``fvp stop``) --

SESSION_SCHEMA = "cca-hil-fvp-session/1"


@dataclass(frozen=True)
class FvpSession:
    """What ``fvp start`` records so that later commands can find, use and stop the model."""

    pid: int
    pgid: int
    argv: tuple[str, ...]
    start_ticks: int | None
    """The process start time in clock ticks since boot (Linux), to recognise the very same process."""
    ports: Mapping[str, int]
    stdout_log: str
    stderr_log: str
    run_dir: str
    started: str
    agent_uart: int = 0
    terminal_modes: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "schema": SESSION_SCHEMA,
            "pid": self.pid,
            "pgid": self.pgid,
            "argv": list(self.argv),
            "start_ticks": self.start_ticks,
            "ports": dict(self.ports),
            "logs": {"stdout": self.stdout_log, "stderr": self.stderr_log},
            "run_dir": self.run_dir,
            "started": self.started,
            "agent_uart": self.agent_uart,
            "terminal_modes": dict(self.terminal_modes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FvpSession:
        """From :meth:`to_json` output; KeyError/TypeError/ValueError on anything else."""
        if data.get("schema") != SESSION_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SESSION_SCHEMA!r}")
        return cls(
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            argv=tuple(str(a) for a in data["argv"]),
            start_ticks=None if data["start_ticks"] is None else int(data["start_ticks"]),
            ports={str(k): int(v) for k, v in data["ports"].items()},
            stdout_log=str(data["logs"]["stdout"]),
            stderr_log=str(data["logs"]["stderr"]),
            run_dir=str(data["run_dir"]),
            started=str(data["started"]),
            agent_uart=int(data.get("agent_uart", 0)),
            terminal_modes={str(k): str(v) for k, v in data.get("terminal_modes", {}).items()},
        )

    def is_running(self) -> bool:
        """True when the recorded process still exists and is the same process (pid, group, start time)."""
        return _same_process(self)

    def terminal(
        self, index: int, *, log_dir: Path | None = None, connect_timeout: float = 5.0
    ) -> TerminalClient:
        """Connect to terminal ``index`` of the session's model; capture appends to uartN.log."""
        name = f"terminal_{index}"
        if name not in self.ports:
            raise TargetError(
                f"the FVP session has no port for {name} (has: {', '.join(sorted(self.ports))})"
            )
        mode = self.terminal_modes.get(name, "raw")
        return TerminalClient(
            name=name,
            port=self.ports[name],
            mode="telnet" if mode == "telnet" else "raw",
            log_path=(log_dir or Path(self.run_dir)) / f"uart{index}.log",
            connect_timeout=connect_timeout,
            peer_status=lambda: None if self.is_running() else "the FVP session's model is gone",
        )


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time), or None where /proc is unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may contain spaces and parentheses.
    fields = text.rpartition(")")[2].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rpartition(")")[2].split()[0] == "Z"


def _reap(pid: int) -> None:
    # The model is our child only when the same process started and stops it (tests,
    # benchmarks); otherwise init reaps it and waitpid reports ChildProcessError.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _same_process(session: FvpSession) -> bool:
    _reap(session.pid)
    try:
        if os.getpgid(session.pid) != session.pgid:
            return False
    except ProcessLookupError:
        return False
    if _is_zombie(session.pid):
        return False
    ticks = _start_ticks(session.pid)
    return session.start_ticks is None or ticks == session.start_ticks


def default_session_path(run_dir: Path) -> Path:
    """Where ``fvp start`` records the session of a run folder."""
    return run_dir / "fvp-session.json"


def start_session(config: FvpConfig, *, run_dir: Path, state_path: Path | None = None) -> FvpSession:
    """Launch a model that outlives this process, wait for its ports and record it in ``state_path``.

    The model writes straight to the log files (no pipes: this process may exit
    first). Terminals are not connected; callers connect with
    :meth:`FvpSession.terminal` when they need one.
    """
    state_path = state_path or default_session_path(run_dir)
    running = _running_session(state_path)
    if running is not None:
        listed = ", ".join(f"{name} {port}" for name, port in sorted(running.ports.items())) or "none"
        raise TargetError(
            f"an FVP session is already running (pid {running.pid}, ports: {listed}; recorded in "
            f"{state_path}); stop it first with 'cca-hil fvp stop'"
        )
    argv, _, _ = FvpLauncher(config, run_dir=run_dir).prepare()
    run_dir.mkdir(parents=True, exist_ok=True)
    stdout_log = run_dir / "fvp.stdout.log"
    stderr_log = run_dir / "fvp.stderr.log"
    (run_dir / "fvp.cmdline").write_text(shlex.join(argv) + "\n", encoding="utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        # posix_spawn rather than Popen: no Popen object is left behind to warn about a
        # child this process deliberately does not wait for.
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(stdout_log), flags, 0o644),
                (os.POSIX_SPAWN_OPEN, 2, str(stderr_log), flags, 0o644),
            ],
            setsid=True,
        )
    except OSError as error:
        raise TransportError(f"cannot start {argv[0]}: {error}") from error
    session = FvpSession(
        pid=pid,
        pgid=pid,
        argv=tuple(argv),
        start_ticks=_start_ticks(pid),
        ports={},
        stdout_log=str(stdout_log),
        stderr_log=str(stderr_log),
        run_dir=str(run_dir),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        agent_uart=config.agent_uart,
        terminal_modes={t.name: t.mode for t in config.terminals},
    )
    try:
        wanted = [t.name for t in config.connected_terminals] + ([IRIS_PORT] if config.iris else [])
        ports = _tail_for_ports(session, wanted, config.timeouts.ports)
    except BaseException:
        _stop_recorded(session, config.timeouts.shutdown, config.timeouts.kill)
        raise
    session = replace(session, ports=ports)
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(session.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, state_path)
    return session


def _running_session(state_path: Path) -> FvpSession | None:
    """The session recorded in ``state_path`` if its model still runs.

    A missing or unreadable record, or one whose model has gone, is no session:
    a new start replaces it.
    """
    if not state_path.exists():
        return None
    try:
        existing = load_session(state_path)
    except TargetError:
        return None
    return existing if existing.is_running() else None


def _tail_for_ports(session: FvpSession, names: list[str], timeout: float) -> dict[str, int]:
    parser = PortLineParser()
    deadline = time.monotonic() + timeout
    with open(session.stdout_log, "rb") as log:
        while True:
            parser.feed(log.read())
            if all(name in parser.ports for name in names):
                return {name: parser.ports[name] for name in names}
            if not session.is_running():
                parser.feed(log.read())
                err = Path(session.stderr_log).read_text(errors="replace").splitlines()[-10:]
                raise FvpExitedError(
                    "the FVP exited before printing its ports",
                    returncode=None,
                    tail=(*parser.last_lines(), *(f"stderr: {line}" for line in err)),
                )
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"the FVP printed no port for {', '.join(n for n in names if n not in parser.ports)} "
                    f"within {timeout:g} s; {_format_tail(parser.last_lines())}"
                )
            time.sleep(0.02)


def load_session(state_path: Path) -> FvpSession:
    """The session recorded in ``state_path``; TargetError when there is none or it is unreadable."""
    try:
        data = json.loads(state_path.read_text(encoding="utf-8"))
        return FvpSession.from_json(data)
    except FileNotFoundError:
        raise TargetError(f"no FVP session recorded at {state_path} (start one with 'fvp start')") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise TargetError(f"unreadable FVP session file {state_path}: {error}") from error


def stop_session(state_path: Path, *, shutdown: float = 10.0, kill: float = 5.0) -> bool:
    """Stop the recorded model and forget the session; True when a running model was stopped.

    Only the recorded group is signalled, and only while its leader is the very
    process that was started (same pid, process group and start time).
    """
    session = load_session(state_path)
    stopped = _stop_recorded(session, shutdown, kill)
    state_path.unlink(missing_ok=True)
    return stopped


def _stop_recorded(session: FvpSession, shutdown: float, kill: float) -> bool:
    if not session.is_running():
        return False
    _killpg(session.pgid, signal.SIGTERM)
    if _wait_recorded_gone(session, shutdown):
        return True
    _killpg(session.pgid, signal.SIGKILL)
    if not _wait_recorded_gone(session, kill):
        raise TransportError(f"the FVP process group {session.pgid} survived SIGKILL for {kill:g} s")
    return True


def _wait_recorded_gone(session: FvpSession, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(session.pid)
        if not _group_exists(session.pgid) or (
            _is_zombie(session.pid) and not _others_in_group(session.pgid, session.pid)
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _others_in_group(pgid: int, leader: int) -> bool:
    """True when a live process other than ``leader`` is in group ``pgid`` (Linux /proc scan)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return _group_exists(pgid)
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == leader:
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
