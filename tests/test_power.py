"""Power control through pyftdi into the emulated FTDI bridge, and through external commands.

Delays are checked on the emulated chip's recorded pin changes, stamped by a
virtual clock that only the controller's sleep advances: no real time is measured.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyftdi.usbtools import UsbTools

from cca_hil.errors import EXIT_BAD_INPUT, EXIT_TARGET, ProfileError, TargetError, TransportError
from cca_hil.power import POWER_PARAMS, PowerConfig, PowerController, Step
from cca_hil.probe import list_devices, list_ftdi_devices
from cca_hil.profiles import validate
from cca_hil.sim.dap import ENV_PROBES, SimDap
from cca_hil.sim.dap import plugged as plugged_daps
from cca_hil.sim.ftdi import VirtualFtdi, plugged

POWER, RESET, BOOT = 0, 1, 2
LINES = {"power": POWER, "reset": RESET, "boot": BOOT}


class VirtualClock:
    """Time that moves only when the controller sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def ftdi(clock: VirtualClock) -> Iterator[VirtualFtdi]:
    # The board pulls reset (active low) up and the relay and boot strap down: off, not in reset.
    device = VirtualFtdi("ft232h", "FTCCA001", pulls=1 << RESET, clock=clock)
    with plugged(device):
        yield device


def config(url: str, **extra: Any) -> PowerConfig:
    params: dict[str, Any] = {
        "gpio": {
            "url": url,
            "power": {"pin": POWER, "active": "high"},
            "reset": {"pin": RESET, "active": "low"},
            "boot": {"pin": BOOT, "active": "high"},
        },
        "settle": {"off": 2.0, "power": 0.5, "reset": 0.1, "boot": 0.01},
    }
    params.update(extra)
    return PowerConfig.from_params(validate(params, POWER_PARAMS, where="board.yaml", path="power"))


def events(
    device: VirtualFtdi, active_low: Mapping[str, bool], interface: int = 1
) -> list[tuple[float, str, bool]]:
    """(time, function, active) for every change of a configured line's level."""
    out = []
    history = device.history(interface)
    for before, after in itertools.pairwise(history):
        for function, pin in LINES.items():
            if before.level(pin) != after.level(pin):
                out.append((after.time, function, after.level(pin) != active_low[function]))
    return out


ACTIVE_LOW = {"power": False, "reset": True, "boot": False}


def test_cycle_drives_the_lines_in_order_with_the_settle_delays(
    ftdi: VirtualFtdi, clock: VirtualClock
) -> None:
    with PowerController(config(ftdi.url, boot_mode=True), sleep=clock.sleep) as controller:
        controller.on()
        start, seen = clock.now, len(events(ftdi, ACTIVE_LOW))
        controller.cycle()
    cycle = [(t - start, f, a) for t, f, a in events(ftdi, ACTIVE_LOW)[seen:]]
    assert cycle == [
        (0.0, "reset", True),  # reset held before power goes
        (0.0, "power", False),
        # The off time, then the boot strap's setup time (the strap is still set), then power.
        (pytest.approx(2.01), "power", True),
        (pytest.approx(2.51), "reset", False),  # released after power has settled
    ]


def test_on_sets_the_boot_strap_before_power_and_releases_reset_last(
    ftdi: VirtualFtdi, clock: VirtualClock
) -> None:
    with PowerController(config(ftdi.url, boot_mode=True), sleep=clock.sleep) as controller:
        controller.on()
    assert events(ftdi, ACTIVE_LOW) == [
        (0.0, "reset", True),
        (0.0, "boot", True),
        (pytest.approx(0.01), "power", True),
        (pytest.approx(0.51), "reset", False),
    ]
    assert [str(s) for s in controller.config.steps("on")] == [
        "reset=on",
        "boot=on@0.01",
        "power=on@0.5",
        "reset=off",
    ]


def test_opening_takes_over_the_lines_without_changing_them(ftdi: VirtualFtdi, clock: VirtualClock) -> None:
    with PowerController(config(ftdi.url), sleep=clock.sleep):
        pass
    assert events(ftdi, ACTIVE_LOW) == []
    assert ftdi.history()[-1].driven == 0b111


def test_lines_stay_driven_after_close(ftdi: VirtualFtdi, clock: VirtualClock) -> None:
    with PowerController(config(ftdi.url), sleep=clock.sleep) as controller:
        controller.on()
    assert ftdi.levels() & 0b111 == 0b011  # power on, reset released, boot low
    assert ftdi.history()[-1].driven == 0b111


def test_reset_pulses_the_reset_line_for_the_configured_time(ftdi: VirtualFtdi, clock: VirtualClock) -> None:
    with PowerController(config(ftdi.url), sleep=clock.sleep) as controller:
        controller.on()
        start, seen = clock.now, len(events(ftdi, ACTIVE_LOW))
        controller.reset()
    pulse = [(t - start, f, a) for t, f, a in events(ftdi, ACTIVE_LOW)[seen:]]
    assert pulse == [(0.0, "reset", True), (pytest.approx(0.1), "reset", False)]


def test_profile_sequence_sets_the_order(ftdi: VirtualFtdi, clock: VirtualClock) -> None:
    cfg = config(ftdi.url, sequence={"on": ["power=on@0.25", "wait@1", "reset=on@0.05", "reset=off"]})
    with PowerController(cfg, sleep=clock.sleep) as controller:
        controller.on()
    assert events(ftdi, ACTIVE_LOW) == [
        (0.0, "power", True),
        (pytest.approx(1.25), "reset", True),
        (pytest.approx(1.30), "reset", False),
    ]


def test_active_low_power_relay(clock: VirtualClock) -> None:
    device = VirtualFtdi("ft232h", "FTCCA002", pulls=0xFF, clock=clock)
    with plugged(device):
        params = {"gpio": {"url": device.url, "power": {"pin": 3, "active": "low"}}}
        cfg = PowerConfig.from_params(params)
        with PowerController(cfg, sleep=clock.sleep) as controller:
            controller.on()
            assert not device.levels() >> 3 & 1
            controller.off()
            assert device.levels() >> 3 & 1


def test_second_interface_of_a_dual_chip(clock: VirtualClock) -> None:
    device = VirtualFtdi("ft2232h", "FTCCA003", clock=clock)
    with plugged(device):
        url = "ftdi://ftdi:2232h:FTCCA003/2"
        cfg = PowerConfig.from_params({"gpio": {"url": url, "power": {"pin": 0, "active": "high"}}})
        with PowerController(cfg, sleep=clock.sleep) as controller:
            controller.on()
    assert device.levels(2) & 1
    assert device.history(1) == []


def test_ftdi_interfaces_are_listed_with_urls(clock: VirtualClock) -> None:
    with plugged(VirtualFtdi("ft232h", "FTCCA001"), VirtualFtdi("ft2232h", "FTCCA003")):
        urls = sorted(d.url for d in list_ftdi_devices() if d.url)
    # pyftdi names the FT2232H "2232" in the URLs it builds; both spellings open the device.
    assert urls == [
        "ftdi://ftdi:2232:FTCCA003/1",
        "ftdi://ftdi:2232:FTCCA003/2",
        "ftdi://ftdi:232h:FTCCA001/1",
    ]


def test_missing_ftdi_device_is_transport_error_naming_present_urls(ftdi: VirtualFtdi) -> None:
    url = "ftdi://ftdi:232h:NOPE/1"
    with pytest.raises(TransportError) as info:
        PowerController(config(url)).open()
    message = str(info.value)
    assert message == f"power control {url}: no FTDI device at {url} (present: {ftdi.url})"
    assert info.value.exit_code == EXIT_TARGET


# -- external commands -----------------------------------------------------------------------


def appender(log: Path, word: str) -> list[str]:
    return [sys.executable, "-c", f"open({str(log)!r}, 'a').write({word!r} + '\\n')"]


def test_commands_per_action_run_in_order_with_the_off_time(tmp_path: Path, clock: VirtualClock) -> None:
    log = tmp_path / "pdu.log"
    cfg = PowerConfig.from_params(
        {
            "commands": {"on": appender(log, "on"), "off": appender(log, "off")},
            "settle": {"off": 3.0, "power": 0.2},
        }
    )
    PowerController(cfg, sleep=clock.sleep).cycle()
    assert log.read_text().split() == ["off", "on"]
    assert clock.sleeps == [3.0, 0.2]


def test_cycle_command_is_used_when_there_is_no_power_line(tmp_path: Path, clock: VirtualClock) -> None:
    log = tmp_path / "pdu.log"
    cfg = PowerConfig.from_params({"commands": {"cycle": appender(log, "reboot")}})
    PowerController(cfg, sleep=clock.sleep).power("cycle")
    assert log.read_text().split() == ["reboot"]
    with pytest.raises(TargetError, match="no GPIO line or command to switch power=on"):
        PowerController(cfg, sleep=clock.sleep).power("on")


def test_failing_command_is_transport_error_with_its_last_stderr_line(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('warming up\\nport 3: no such outlet\\n'); sys.exit(4)",
    ]
    cfg = PowerConfig.from_params({"commands": {"on": argv, "off": argv}})
    with pytest.raises(TransportError) as info:
        PowerController(cfg).on()
    assert str(info.value).endswith("exited with status 4: port 3: no such outlet")
    assert "\n" not in str(info.value)


def test_missing_command_is_transport_error() -> None:
    cfg = PowerConfig.from_params({"commands": {"cycle": ["/nonexistent/pdu-client", "reboot"]}})
    with pytest.raises(TransportError, match="power cycle: command not found: /nonexistent/pdu-client"):
        PowerController(cfg).cycle()


def test_hanging_command_is_bounded_by_the_timeout() -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    cfg = PowerConfig.from_params({"commands": {"cycle": argv}, "timeout": 0.5})
    with pytest.raises(TransportError, match=r"did not finish within 0\.5 s"):
        PowerController(cfg).cycle()


def test_reset_without_a_line_or_command_is_target_error(tmp_path: Path) -> None:
    cfg = PowerConfig.from_params({"commands": {"cycle": appender(tmp_path / "l", "x")}})
    with pytest.raises(TargetError, match="no way to reset"):
        PowerController(cfg).reset()


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gpio": {"url": "ftdi:///1", "power": {"pin": 9}}}, "pin must be 0-7"),
        ({"gpio": {"url": "ftdi:///1", "power": {"pin": 1}, "reset": {"pin": 1}}}, "share one pin"),
        ({"gpio": {"url": "ftdi:///1", "power": {"pin": 1, "active": "up"}}}, "active 'up'"),
        ({"gpio": {"power": {"pin": 1}}}, "gpio.url is required"),
        ({"gpio": {"url": "/dev/ttyUSB0", "power": {"pin": 1}}}, "not an ftdi:// URL"),
        (
            {"gpio": {"url": "ftdi:///1", "power": {"pin": 1}}, "sequence": {"on": ["power=up"]}},
            "bad power step",
        ),
        (
            {"gpio": {"url": "ftdi:///1", "power": {"pin": 1}}, "sequence": {"on": ["boot=on"]}},
            "has no GPIO line",
        ),
        ({"gpio": {"url": "ftdi:///1", "power": {"pin": 1}}, "settle": {"off": 9999.0}}, "outside 0..600 s"),
        ({"gpio": {"url": "ftdi:///1", "power": {"pin": 1}}, "boot_mode": True}, "needs a gpio.boot line"),
        ({"commands": {"on": ["pdu", "on"]}}, "needs gpio.power, or commands for on and off"),
        ({"commands": {"cycle": []}}, "must be a non-empty list"),
    ],
)
def test_bad_power_profiles_are_profile_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        PowerConfig.from_params(validate(params, POWER_PARAMS, where="board.yaml", path="power"))
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_unknown_power_key_is_rejected_by_the_schema() -> None:
    with pytest.raises(ProfileError, match=r"unknown key 'power\.gpio\.relay'"):
        validate({"gpio": {"relay": {"pin": 0}}}, POWER_PARAMS, where="board.yaml", path="power")


def test_step_text_round_trips() -> None:
    for text in ("power=on@0.5", "reset=off", "wait@2", "boot=on@0.01"):
        assert str(Step.parse(text, where="x")) == text


def test_probe_list_shows_debug_probes_and_ftdi_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PROBES, raising=False)
    with plugged(VirtualFtdi("ft232h", "FTCCA001")), plugged_daps(SimDap("CCASIM-L1")):
        listing = list_devices()
    assert listing.problems == ()
    assert [(d.kind, d.unique_id, d.url) for d in listing.devices] == [
        ("debug-probe", "CCASIM-L1", None),
        ("ftdi", "FTCCA001", "ftdi://ftdi:232h:FTCCA001/1"),
    ]
    assert listing.devices[1].description == "Single RS232-HS"


def test_probe_list_reports_a_source_it_cannot_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    # pyftdi pointed at a USB backend module that has no bus: what a host without libusb looks like.
    monkeypatch.setattr(UsbTools, "BACKENDS", ("cca_hil.sim.ftdi",))
    UsbTools.flush_cache()
    listing = list_devices()
    assert listing.problems == (
        "pyftdi cannot enumerate USB devices: No backend available (is libusb-1.0 installed?)",
    )
