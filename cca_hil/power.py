"""Board power, reset and boot-mode control: pyftdi GPIO lines or external commands, in a configured order.

A profile's ``power:`` section names, per function (``power`` relay, ``reset``,
``boot`` mode strap), an FTDI GPIO line and its active level, the settle
delays, and optionally the order of steps per action. Actions are ``on``,
``off``, ``cycle`` and ``reset``. Instead of (or beside) GPIO lines, each action
can run an external command given as an argument list (a PDU client, a USB
hub switch)::

    power:
      gpio:
        url: ftdi://ftdi:232h:FT0FMF6V/1
        power: {pin: 0, active: high}
        reset: {pin: 1, active: low}
        boot: {pin: 2, active: high}
      boot_mode: true              # boot strap level while powering on (true = active)
      settle: {off: 2.0, power: 0.5, reset: 0.1, boot: 0.01}
      sequence:                    # optional; the defaults are shown by `steps()`
        on: [reset=on, boot=on@0.01, power=on@0.5, reset=off]
      commands:
        cycle: [pdudaemon-client, --port, "3", reboot]
      timeout: 10

A step is ``FUNCTION=on|off[@SECONDS]`` (``on`` is the function's active
level; the seconds are waited after the change) or ``wait@SECONDS``.

pyftdi resets an interface's bit mode when it opens it, so the lines show the
board's pull levels for the few milliseconds of opening; the controller then
drives exactly what it read back, and :meth:`PowerController.close` leaves the
lines driven (``freeze``) so a relay holds after the process ends. Keep one
controller open for a whole session to avoid reopening.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast

from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.resource import Resource

PowerFunction = Literal["power", "reset", "boot"]
PowerAction = Literal["on", "off", "cycle", "reset"]
FUNCTIONS: tuple[PowerFunction, ...] = ("power", "reset", "boot")
ACTIONS: tuple[PowerAction, ...] = ("on", "off", "cycle", "reset")
MAX_SETTLE = 600.0
"""Longest settle delay accepted (seconds): every wait is bounded."""

_LINE_SCHEMA = MappingProxyType({"pin": int, "active": str})
POWER_PARAMS: Mapping[str, Any] = MappingProxyType(
    {
        "gpio": MappingProxyType(
            {"url": str, "power": _LINE_SCHEMA, "reset": _LINE_SCHEMA, "boot": _LINE_SCHEMA}
        ),
        "boot_mode": bool,
        "settle": MappingProxyType({"off": float, "power": float, "reset": float, "boot": float}),
        "sequence": MappingProxyType(dict.fromkeys(ACTIONS, list)),
        "commands": MappingProxyType(dict.fromkeys(ACTIONS, list)),
        "timeout": float,
    }
)
"""Profile schema of a ``power:`` section (see :func:`cca_hil.profiles.validate`)."""

_STEP = re.compile(
    r"^\s*(?:(?P<function>power|reset|boot)\s*=\s*(?P<level>on|off)|(?P<wait>wait))\s*(?:@\s*(?P<s>[0-9.]+))?\s*$"
)


@dataclass(frozen=True, slots=True)
class Line:
    """One GPIO line of the FTDI interface and the level that means "active"."""

    pin: int
    active_low: bool = False

    def level(self, active: bool) -> bool:
        """The electrical level for the function being active or not."""
        return active != self.active_low


@dataclass(frozen=True, slots=True)
class Step:
    """Drive a function active/inactive (``function`` None: only wait), then wait ``settle`` seconds."""

    function: PowerFunction | None
    active: bool = False
    settle: float = 0.0

    def __str__(self) -> str:
        change = "wait" if self.function is None else f"{self.function}={'on' if self.active else 'off'}"
        return f"{change}@{self.settle:g}" if self.settle or self.function is None else change

    @classmethod
    def parse(cls, text: str, *, where: str) -> Step:
        """Parse ``FUNCTION=on|off[@SECONDS]`` or ``wait@SECONDS``."""
        match = _STEP.match(str(text))
        if match is None:
            raise ProfileError(
                f"bad power step {text!r}: expected FUNCTION=on|off[@SECONDS] or wait@SECONDS",
                where=where,
                valid=FUNCTIONS,
            )
        settle = _settle(float(match["s"]) if match["s"] else 0.0, where=where)
        if match["wait"]:
            return cls(None, settle=settle)
        return cls(cast(PowerFunction, match["function"]), match["level"] == "on", settle)


@dataclass(frozen=True, slots=True)
class Settle:
    """Settle delays in seconds: off time in a cycle, after power on, reset pulse, boot strap setup."""

    off: float = 1.0
    power: float = 0.1
    reset: float = 0.05
    boot: float = 0.01


def _settle(value: float, *, where: str) -> float:
    if not 0.0 <= value <= MAX_SETTLE:
        raise ProfileError(f"settle delay {value} s is outside 0..{MAX_SETTLE:g} s", where=where)
    return value


@dataclass(frozen=True)
class PowerConfig:
    """How a board's power, reset and boot mode are switched."""

    gpio_url: str | None = None
    lines: Mapping[PowerFunction, Line] = field(default_factory=dict)
    boot_mode: bool | None = None
    settle: Settle = Settle()
    sequences: Mapping[PowerAction, tuple[Step, ...]] = field(default_factory=dict)
    commands: Mapping[PowerAction, tuple[str, ...]] = field(default_factory=dict)
    timeout: float = 30.0
    """Bound on each external command."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, where: str = "power") -> PowerConfig:
        """Build from a validated profile section; inconsistent settings are ProfileErrors."""
        gpio = params.get("gpio") or {}
        url = gpio.get("url")
        lines: dict[PowerFunction, Line] = {}
        for function in FUNCTIONS:
            spec = gpio.get(function)
            if spec is None:
                continue
            pin, active = spec.get("pin"), str(spec.get("active", "high")).lower()
            if not isinstance(pin, int) or not 0 <= pin <= 7:
                raise ProfileError(f"{where}.gpio.{function}.pin must be 0-7 (bit-bang port), got {pin!r}")
            if active not in ("high", "low"):
                raise ProfileError(f"{where}.gpio.{function}.active {active!r}", valid=("high", "low"))
            lines[function] = Line(pin, active_low=active == "low")
        pins = [line.pin for line in lines.values()]
        if len(set(pins)) != len(pins):
            raise ProfileError(f"{where}.gpio: two functions share one pin ({sorted(pins)})")
        if lines and not url:
            raise ProfileError(f"{where}.gpio.url is required with GPIO lines (see `cca-hil probe list`)")
        if url and not str(url).startswith("ftdi://"):
            raise ProfileError(f"{where}.gpio.url {url!r} is not an ftdi:// URL")
        settle_params = params.get("settle") or {}
        settle = Settle(
            **{k: _settle(float(v), where=f"{where}.settle.{k}") for k, v in settle_params.items()}
        )
        sequences = {
            cast(PowerAction, action): tuple(Step.parse(s, where=f"{where}.sequence.{action}") for s in steps)
            for action, steps in (params.get("sequence") or {}).items()
        }
        for action, steps in sequences.items():
            for step in steps:
                if (
                    step.function is not None
                    and step.function not in lines
                    and not (step.function == "power" and {"on", "off"} <= set(params.get("commands") or {}))
                ):
                    raise ProfileError(
                        f"{where}.sequence.{action} drives {step.function!r}, which has no GPIO line",
                        valid=sorted(lines),
                    )
        commands: dict[PowerAction, tuple[str, ...]] = {}
        for action, argv in (params.get("commands") or {}).items():
            if not argv or not all(isinstance(a, str | int | float) for a in argv):
                raise ProfileError(f"{where}.commands.{action} must be a non-empty list of arguments")
            commands[cast(PowerAction, action)] = tuple(str(a) for a in argv)
        if "power" not in lines and not {"on", "off"} <= set(commands) and "cycle" not in commands:
            raise ProfileError(f"{where}: needs gpio.power, or commands for on and off (or cycle)")
        timeout = float(params.get("timeout", 30.0))
        if not 0 < timeout <= MAX_SETTLE:
            raise ProfileError(f"{where}.timeout {timeout} s is outside 0..{MAX_SETTLE:g} s")
        boot_mode = params.get("boot_mode")
        if boot_mode is not None and "boot" not in lines:
            raise ProfileError(f"{where}.boot_mode needs a gpio.boot line")
        return cls(url, lines, boot_mode, settle, sequences, commands, timeout)

    def steps(self, action: PowerAction) -> tuple[Step, ...]:
        """The steps ``action`` performs: the profile's sequence, else the default order."""
        if action in self.sequences:
            return self.sequences[action]
        has = self.lines.__contains__
        strap = (Step("boot", bool(self.boot_mode), self.settle.boot),) if self.boot_mode is not None else ()
        if action == "on":
            return (
                *((Step("reset", True),) if has("reset") else ()),
                *strap,
                Step("power", True, self.settle.power),
                *((Step("reset", False),) if has("reset") else ()),
            )
        if action == "off":
            return (*((Step("reset", True),) if has("reset") else ()), Step("power", False))
        if action == "cycle":
            return (*self.steps("off"), Step(None, settle=self.settle.off), *self.steps("on"))
        if not has("reset"):
            return ()
        return (*strap, Step("reset", True, self.settle.reset), Step("reset", False))


class PowerController(Resource):
    """Performs power actions on one board; open it once and keep it for the session."""

    def __init__(
        self,
        config: PowerConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._on_step = on_step
        self._gpio: Any = None
        self._latch = 0

    @property
    def name(self) -> str:
        """What is being switched, for messages."""
        return f"power control {self.config.gpio_url}" if self.config.gpio_url else "power control"

    def open(self) -> None:
        """Open the FTDI interface (if any) and take over its lines without changing their levels."""
        if self._gpio is not None or not self.config.lines:
            return
        from pyftdi.ftdi import FtdiError
        from pyftdi.gpio import GpioAsyncController, GpioException
        from pyftdi.usbtools import UsbToolsError

        url = cast(str, self.config.gpio_url)
        mask = 0
        for line in self.config.lines.values():
            mask |= 1 << line.pin
        gpio = GpioAsyncController()
        try:
            # All inputs first: read what the board sees, latch exactly that, then drive it.
            gpio.configure(url, direction=0x00)
            self._latch = int(gpio.read())
            gpio.write(self._latch)
            gpio.set_direction(mask, mask)
        except (OSError, ValueError, FtdiError, UsbToolsError, GpioException) as error:
            gpio.close(freeze=True)
            raise TransportError(f"{self.name}: {_ftdi_problem(url, error)}") from error
        self._gpio = gpio

    def close(self) -> None:
        """Release the interface, leaving the lines driven (a relay keeps its state); idempotent."""
        gpio, self._gpio = self._gpio, None
        if gpio is not None:
            gpio.close(freeze=True)

    # -- actions ----------------------------------------------------------------------------

    def power(self, action: PowerAction) -> None:
        """Perform ``on``, ``off``, ``cycle`` or ``reset``."""
        if action not in ACTIONS:
            raise TargetError(f"unknown power action {action!r} (valid: {', '.join(ACTIONS)})")
        own_line = "reset" if action == "reset" else "power"
        if (
            action not in self.config.sequences
            and action in self.config.commands
            and own_line not in self.config.lines
        ):
            # A command for the whole action (a PDU's reboot) where no line can do it.
            self._run(action, self.config.commands[action])
            return
        steps = self.config.steps(action)
        if not steps:
            raise TargetError(f"{self.name}: no way to {action} (no reset line and no command for it)")
        self.open()
        for step in steps:
            self._do(step, action)

    def on(self) -> None:
        """Power the board on (reset held until power has settled)."""
        self.power("on")

    def off(self) -> None:
        """Power the board off."""
        self.power("off")

    def cycle(self) -> None:
        """Off, wait the off time, on."""
        self.power("cycle")

    def reset(self) -> None:
        """Pulse the reset line (with the boot strap set first, when configured)."""
        self.power("reset")

    def _do(self, step: Step, action: PowerAction) -> None:
        if self._on_step is not None:
            self._on_step(str(step))
        if step.function is not None:
            line = self.config.lines.get(step.function)
            if line is not None:
                self._drive(line, step.active)
            else:
                # Without a GPIO line, the power function falls back to the on/off commands.
                fallback: PowerAction = "on" if step.active else "off"
                if step.function != "power" or fallback not in self.config.commands:
                    raise TargetError(f"{self.name}: no GPIO line or command to switch {step} ({action})")
                self._run(action, self.config.commands[fallback])
        if step.settle:
            self._sleep(step.settle)

    def _drive(self, line: Line, active: bool) -> None:
        from pyftdi.ftdi import FtdiError

        bit = 1 << line.pin
        self._latch = (self._latch | bit) if line.level(active) else (self._latch & ~bit)
        try:
            self._gpio.write(self._latch)
        except (OSError, FtdiError) as error:
            raise TransportError(f"{self.name}: GPIO write failed: {error}") from error

    def _run(self, action: str, argv: tuple[str, ...]) -> None:
        command = shlex.join(argv)
        if self._on_step is not None:
            self._on_step(f"run {command}")
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.config.timeout, check=False
            )
        except FileNotFoundError:
            raise TransportError(f"power {action}: command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise TransportError(
                f"power {action}: {command} did not finish within {self.config.timeout:g} s"
            ) from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            detail = f": {lines[-1]}" if lines else ""
            raise TransportError(f"power {action}: {command} exited with status {done.returncode}{detail}")


def _ftdi_problem(url: str, error: BaseException) -> str:
    text = str(error) or type(error).__name__
    lowered = text.lower()
    # pyftdi words it "Device not found", "No such device" or "No USB device with S/N …".
    if "device" in lowered and ("not found" in lowered or lowered.startswith("no ")):
        try:
            from cca_hil.probe import list_ftdi_devices

            present = [d.url for d in list_ftdi_devices() if d.url]
        except TransportError:
            present = []
        where = f"present: {', '.join(present)}" if present else "no FTDI devices found"
        return f"no FTDI device at {url} ({where})"
    return text
