"""Boards with a debug probe and power control: ``load``, ``reset`` and ``power`` on the target interface.

``board-sim-probe`` runs the simulated board and its simulated probe on one
in-process model; power control drives an emulated FT232H on a virtual USB bus.
The model target's own ``load`` (an NS-EL2 loader through the GPT) is here too.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cca_hil.errors import CapabilityError, GranuleProtectionFault, InputError, ProfileError, TargetError
from cca_hil.profiles import build_target, load_profile
from cca_hil.sim.dap import ENV_PROBES
from cca_hil.sim.ftdi import VirtualFtdi, plugged
from cca_hil.targets.base import Capability
from cca_hil.targets.model import ModelTarget
from cca_hil.targets.serial import SerialTarget

PROFILE = "board-sim-probe"
NS_DRAM = 0x9000_0000
RMM = 0xFDC0_0000
POWER, RESET = 0, 1
BOARD_CAPS = {Capability.LOAD, Capability.RESET, Capability.POWER}


class VirtualClock:
    """Time for the emulated chip's pin record; nothing waits on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_environment_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PROBES, raising=False)


@pytest.fixture
def ftdi() -> Iterator[VirtualFtdi]:
    device = VirtualFtdi("ft232h", "FTCCA077", pulls=1 << POWER | 1 << RESET, clock=VirtualClock())
    with plugged(device):
        yield device


def power_overrides(url: str, *, reset_line: bool = True) -> list[str]:
    out = [
        f"power.gpio.url={url}",
        f"power.gpio.power={{pin: {POWER}, active: high}}",
        'power.settle={"off": 0, power: 0, reset: 0}',
    ]
    if reset_line:
        out.append(f"power.gpio.reset={{pin: {RESET}, active: low}}")
    return out


def board(overrides: list[str] | None = None, run_dir: Path | None = None) -> SerialTarget:
    target = build_target(load_profile(PROFILE, overrides or []), run_dir=run_dir)
    assert isinstance(target, SerialTarget)
    return target


def line_changes(device: VirtualFtdi) -> list[tuple[str, bool]]:
    out = []
    for before, after in itertools.pairwise(device.history()):
        if before.level(RESET) != after.level(RESET):
            out.append(("reset", not after.level(RESET)))
        if before.level(POWER) != after.level(POWER):
            out.append(("power", after.level(POWER)))
    return out


def image(tmp_path: Path, data: bytes, name: str = "image.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- capabilities -------------------------------------------------------------------------------------


def test_board_capabilities_follow_the_profile_sections(ftdi: VirtualFtdi) -> None:
    plain = build_target(load_profile("board-sim"))
    assert not BOARD_CAPS & plain.capabilities
    with pytest.raises(CapabilityError, match="'load'"):
        plain.load(Path("x.bin"), NS_DRAM)
    # Known before the agent link is open: a board can be powered and loaded before it answers.
    assert BOARD_CAPS & board().capabilities == {Capability.LOAD, Capability.RESET}
    powered = board(power_overrides(ftdi.url))
    assert powered.capabilities >= BOARD_CAPS


def test_power_without_a_reset_line_still_resets_through_the_probe(ftdi: VirtualFtdi) -> None:
    target = board(power_overrides(ftdi.url, reset_line=False))
    with target:
        target.reset()
        assert target.sim is not None and target.sim.dap.resets == 1
    assert line_changes(ftdi) == []


# -- load, reset, power on the shared simulated board ---------------------------------------------------


def test_probe_reset_reboots_the_agent_and_the_link_comes_back(tmp_path: Path) -> None:
    target = board(run_dir=tmp_path)
    with target:
        target.load(image(tmp_path, b"kept across reset" * 100), NS_DRAM)
        assert target.sim is not None
        boot = target.sim.emulator.boot_id
        target.reset()
        assert target.sim.dap.resets == 1
        assert target.sim.emulator.boot_id == boot + 1  # the agent booted again
        assert target.info().facts["agent boot id"] == str(boot + 1)  # and the link shook hands anew
        assert target.read(NS_DRAM, 17) == b"kept across reset"  # DRAM keeps its contents


def test_reset_uses_the_power_reset_line_when_configured(tmp_path: Path, ftdi: VirtualFtdi) -> None:
    target = board(power_overrides(ftdi.url), run_dir=tmp_path)
    with target:
        target.reset()
        assert target.sim is not None and target.sim.dap.resets == 0
        assert target.read(NS_DRAM, 4) == bytes(4)  # the link was opened again
    assert line_changes(ftdi) == [("reset", True), ("reset", False)]


def test_power_cycle_with_the_link_open_relinks(tmp_path: Path, ftdi: VirtualFtdi) -> None:
    target = board(power_overrides(ftdi.url), run_dir=tmp_path)
    steps: list[str] = []
    with target:
        target.power("cycle", on_step=steps.append)
        assert target.read(NS_DRAM, 4) == bytes(4)
        target.power("off")
        assert target.link is None  # switched off: no agent to talk to
    assert steps == ["reset=on", "power=off", "wait@0", "reset=on", "power=on", "reset=off"]
    assert line_changes(ftdi) == [
        ("reset", True),
        ("power", False),
        ("power", True),
        ("reset", False),
        ("reset", True),
        ("power", False),
    ]


def test_image_outside_reachable_memory_is_refused_before_the_probe_opens(tmp_path: Path) -> None:
    """With the agent's memory map at hand, an image for Realm memory never reaches the wire."""
    target = board()
    with target:
        with pytest.raises(InputError, match="which a nonsecure access cannot reach"):
            target.load(image(tmp_path, b"\0" * 4096), RMM)
        assert target.probe_pas is None  # no probe session was opened


def test_read_back_mismatch_is_a_target_error(tmp_path: Path) -> None:
    target = board()
    with target:
        assert target.sim is not None
        target.sim.dap.add_rom(NS_DRAM, 0x1000)  # writes complete, the contents stay
        with pytest.raises(TargetError, match=f"verify failed at {NS_DRAM:#x}"):
            target.load(image(tmp_path, b"\xff" * 64), NS_DRAM)


def test_close_unplugs_the_simulated_probe(tmp_path: Path) -> None:
    from cca_hil.probe import list_debug_probes

    target = board()
    target.load(image(tmp_path, b"x" * 8), NS_DRAM)
    assert "CCASIM-BOARD" in [p.unique_id for p in list_debug_probes()]
    target.close()
    target.close()
    assert "CCASIM-BOARD" not in [p.unique_id for p in list_debug_probes()]


# -- profile errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["url=socket://127.0.0.1:9"], "sim_machine: shared runs the simulated board in this process"),
        (["probe.sim_machine=elsewhere"], "serial.probe.sim_machine 'elsewhere' is not known"),
        (["probe.pas=realm"], "serial.probe.pas 'realm': a MEM-AP reaches the Secure or Non-secure PAS only"),
        (["power.timeout=3"], "serial.power: needs gpio.power"),
    ],
)
def test_bad_board_sections_are_profile_errors_naming_the_file(overrides: list[str], message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        board(overrides)
    assert "board-sim-probe.yaml" in str(info.value)


# -- the model target ---------------------------------------------------------------------------------------


def test_model_load_writes_ns_memory_through_the_gpt(tmp_path: Path) -> None:
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    assert target.has(Capability.LOAD)
    data = random.Random(3).randbytes(3 * 4096 + 5)
    seen: list[tuple[int, int]] = []
    target.load(image(tmp_path, data), NS_DRAM, progress=lambda done, total: seen.append((done, total)))
    assert target.read(NS_DRAM, len(data)) == data
    assert seen == [(len(data), 2 * len(data)), (2 * len(data), 2 * len(data))]
    with pytest.raises(InputError, match="which a nonsecure access cannot reach"):
        target.load(image(tmp_path, b"\0" * 16, "realm.bin"), RMM)


def test_model_load_faults_where_the_gpt_took_the_granule(tmp_path: Path) -> None:
    from cca_hil.arch.rmi_1_0 import GRANULE_DELEGATE

    target = build_target(load_profile("model"))
    granule = NS_DRAM + 0x10_0000
    assert target.smc(GRANULE_DELEGATE.fid, granule)[0] == 0
    with pytest.raises(GranuleProtectionFault):
        target.load(image(tmp_path, b"\1" * 8192), granule - 4096, verify=False)
