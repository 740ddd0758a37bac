"""``probe list``, ``load`` and ``power`` on a tiny root app mounting them; ``probe list`` in a subprocess.

The board is ``board-sim-probe`` (the simulated board and its simulated probe on
one in-process model) or a profile whose power control drives an emulated FTDI
chip on a virtual USB bus; pyOCD and pyftdi run their own code throughout.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from intelhex import IntelHex
from test_images import elf64
from typer.testing import CliRunner

from cca_hil.cli import app
from cca_hil.errors import EXIT_BAD_INPUT, EXIT_TARGET
from cca_hil.profiles import build_target, load_profile
from cca_hil.sim.dap import ENV_PROBES
from cca_hil.sim.ftdi import VirtualFtdi, plugged
from cca_hil.targets.serial import SerialTarget

PROFILE = "board-sim-probe"
PROBE_ID = "CCASIM-BOARD"
NS_DRAM = 0x9000_0000
RMM = 0xFDC0_0000
"""The RMM's carve-out: Realm PAS, which a Non-secure MEM-AP cannot reach."""
VA = 0xFFFF_0000_0000_0000
MiB = 1 << 20
POWER, RESET = 0, 1
TRACEBACK = "Traceback"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert TRACEBACK not in stderr
    assert lines[0].startswith("cca-hil: error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def no_environment_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PROBES, raising=False)
    monkeypatch.delenv("CCA_HIL_SET", raising=False)
    monkeypatch.delenv("CCA_HIL_PROFILE", raising=False)


def profile_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(textwrap.dedent(body))
    return path


# -- load through board-sim-probe ------------------------------------------------------------------------


def test_load_1_mib_then_the_agent_reads_it_back_identical(tmp_path: Path) -> None:
    """The probe and the agent share one memory: what the probe loaded, the agent reads."""
    data = random.Random(5).randbytes(MiB)
    image = tmp_path / "image.bin"
    image.write_bytes(data)
    target = build_target(load_profile(PROFILE), run_dir=tmp_path / "run")
    assert isinstance(target, SerialTarget)
    with target:
        seen: list[tuple[int, int]] = []
        target.load(image, NS_DRAM, progress=lambda done, total: seen.append((done, total)))
        assert target.read(NS_DRAM, MiB) == data
    assert seen[-1] == (2 * MiB, 2 * MiB)  # the write, then the read-back
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert target.last_load is not None and target.last_load.verified


def test_load_command_reports_the_probe_and_its_pas(tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(random.Random(6).randbytes(64 * 1024 + 3))
    code, out, err = invoke("--profile", PROFILE, "load", str(image), "--address", "0x90000000")
    assert code == 0, err
    assert f"loaded 65539 bytes in 1 segment(s) through probe {PROBE_ID} AP#0, verified" in out
    assert "probe accesses use the nonsecure PAS; Realm and Root are never reachable" in out
    # Not a terminal: plain progress lines, for the write and for the read-back.
    assert "writing: 65539/65539 bytes (100%)" in out
    assert "verifying: 65539/65539 bytes (100%)" in out


def test_no_verify_skips_the_read_back(tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(b"\xa5" * 4096)
    args = ("load", str(image), "--address", "0x90000000", "--no-verify")
    code, out, err = invoke("--profile", PROFILE, *args)
    assert code == 0, err
    assert "not verified" in out
    assert "verifying" not in out


def test_elf_and_hex_land_at_their_addresses(tmp_path: Path) -> None:
    text, rodata = random.Random(7).randbytes(5000), random.Random(8).randbytes(300)
    elf = tmp_path / "fw.elf"
    # Virtual addresses differ from the physical ones: the loader goes by p_paddr.
    loads = [(VA + 0x1000, NS_DRAM + 0x1000, text, len(text)), (VA + 0x8000, NS_DRAM + 0x8000, rodata, 400)]
    elf.write_bytes(elf64(loads))
    hexfile = IntelHex()
    hexfile.frombytes(b"hex-record-data!", offset=NS_DRAM + 0x20000)
    hexpath = tmp_path / "fw.hex"
    hexfile.write_hex_file(str(hexpath))

    target = build_target(load_profile(PROFILE))
    assert isinstance(target, SerialTarget)
    with target:
        target.load(elf)
        assert target.last_load is not None and target.last_load.segments == 2
        target.load(hexpath)
        assert target.read(NS_DRAM + 0x1000, len(text)) == text
        assert target.read(NS_DRAM + 0x8000, len(rodata)) == rodata
        assert target.read(NS_DRAM + 0x20000, 16) == b"hex-record-data!"


def test_elf_load_command_prints_the_entry_point(tmp_path: Path) -> None:
    elf = tmp_path / "fw.elf"
    elf.write_bytes(elf64([(NS_DRAM, NS_DRAM, b"\x1f\x20\x03\xd5" * 64, 256)], entry=NS_DRAM))
    code, out, err = invoke("--profile", PROFILE, "load", str(elf))
    assert code == 0, err
    assert f"entry point {NS_DRAM:#x}" in out


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b"\x7fELF\x02\x01\x01" + b"\0" * 9, (), "not a valid ELF file"),
        (b":10000000ZZ\n", (), "bad Intel HEX"),
        (b"raw", (), "a raw binary image needs a load address"),
        (b"raw", ("--address", "nowhere"), "'nowhere' is not an address"),
    ],
)
def test_bad_image_is_exit_2_in_one_line(
    tmp_path: Path, content: bytes, args: tuple[str, ...], message: str
) -> None:
    image = tmp_path / ("bad.hex" if content.startswith(b":") else "bad.bin")
    image.write_bytes(content)
    code, _out, err = invoke("--profile", PROFILE, "load", str(image), *args)
    assert code == EXIT_BAD_INPUT
    assert message in one_error_line(err)


def test_missing_image_file_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("--profile", PROFILE, "load", str(tmp_path / "nope.bin"), "--address", "0x90000000")
    assert code == EXIT_BAD_INPUT
    assert "cannot read image" in one_error_line(err)


def test_transfer_fault_is_exit_3_naming_the_address_and_pas(tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(b"\0" * 4096)
    code, _, err = invoke("--profile", PROFILE, "load", str(image), "--address", hex(RMM))
    assert code == EXIT_TARGET
    line = one_error_line(err)
    assert f"probe {PROBE_ID} AP#0: transfer fault at {RMM:#x}" in line
    assert "(nonsecure PAS)" in line


def test_profile_without_a_probe_cannot_load(tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(b"\0" * 16)
    code, _, err = invoke("--profile", "board-sim", "load", str(image), "--address", "0x90000000")
    assert code == EXIT_BAD_INPUT
    assert "has no debug probe to load through: add serial.probe.unique_id" in one_error_line(err)


@pytest.mark.parametrize(
    ("unique_id", "message"),
    [
        ("CCASIM-GONE", "no debug probe with unique id 'CCASIM-GONE' (no debug probes are attached)"),
        ("ccasim:CCASIM-NOPE", "no debug probe with unique id 'ccasim:CCASIM-NOPE'"),
    ],
)
def test_missing_probe_or_wrong_unique_id_is_exit_3_in_one_line(
    tmp_path: Path, unique_id: str, message: str
) -> None:
    path = profile_file(
        tmp_path,
        f"""\
        name: farm-board
        kind: serial
        serial:
          url: socket://127.0.0.1:9
          probe: {{unique_id: "{unique_id}"}}
        """,
    )
    image = tmp_path / "image.bin"
    image.write_bytes(b"\0" * 16)
    code, _out, err = invoke("--profile", str(path), "load", str(image), "--address", "0x90000000")
    assert code == EXIT_TARGET
    assert message in one_error_line(err)


# -- power --------------------------------------------------------------------------------------------------


class VirtualClock:
    """Time for the emulated chip's pin record; nothing here waits on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ftdi() -> Iterator[VirtualFtdi]:
    """A running board: its pulls hold the relay on and reset (active low) released.

    Each command is its own process opening the interface, and pyftdi resets the bit
    mode while opening (the lines show the pulls for that moment), so the pulls are
    the state every command starts from.
    """
    device = VirtualFtdi("ft232h", "FTCCA042", pulls=1 << POWER | 1 << RESET, clock=VirtualClock())
    with plugged(device):
        yield device


def power_profile(tmp_path: Path, url: str) -> Path:
    return profile_file(
        tmp_path,
        f"""\
        name: powered-board
        kind: serial
        serial:
          url: socket://127.0.0.1:9
          power:
            gpio:
              url: {url}
              power: {{pin: {POWER}, active: high}}
              reset: {{pin: {RESET}, active: low}}
            settle: {{"off": 0, power: 0, reset: 0}}
        """,
    )


def line_changes(device: VirtualFtdi) -> list[tuple[str, bool]]:
    """(function, active) for every change of the power and reset lines, in order."""
    out = []
    for before, after in itertools.pairwise(device.history()):
        if before.level(RESET) != after.level(RESET):
            out.append(("reset", not after.level(RESET)))
        if before.level(POWER) != after.level(POWER):
            out.append(("power", after.level(POWER)))
    return out


def test_power_cycle_drives_the_pins_in_the_configured_order(tmp_path: Path, ftdi: VirtualFtdi) -> None:
    code, out, err = invoke("--profile", str(power_profile(tmp_path, ftdi.url)), "power", "cycle")
    assert code == 0, err
    # Default order: hold reset, cut power, (off time), power, release reset once power has settled.
    assert line_changes(ftdi) == [("reset", True), ("power", False), ("power", True), ("reset", False)]
    # Each step is printed as it happens (the on half holds reset again, which is already held).
    assert out.splitlines() == [
        "power cycle: reset=on",
        "power cycle: power=off",
        "power cycle: wait@0",
        "power cycle: reset=on",
        "power cycle: power=on",
        "power cycle: reset=off",
        "power cycle: done",
    ]
    assert ftdi.history()[-1].driven == 1 << POWER | 1 << RESET  # left driven: the relay holds


def test_power_on_from_an_unpowered_board(tmp_path: Path) -> None:
    device = VirtualFtdi("ft232h", "FTCCA043", pulls=1 << RESET, clock=VirtualClock())
    with plugged(device):
        code, _out, err = invoke("--profile", str(power_profile(tmp_path, device.url)), "power", "on")
    assert code == 0, err
    assert line_changes(device) == [("reset", True), ("power", True), ("reset", False)]


def test_power_follows_the_profile_sequence(tmp_path: Path, ftdi: VirtualFtdi) -> None:
    path = power_profile(tmp_path, ftdi.url)
    path.write_text(path.read_text() + '    sequence:\n      "off": [power=off, reset=on]\n')
    code, _out, err = invoke("--profile", str(path), "power", "off")
    assert code == 0, err
    assert line_changes(ftdi) == [("power", False), ("reset", True)]


def test_power_on_a_profile_without_power_control_names_the_keys(tmp_path: Path) -> None:
    code, _out, err = invoke("--profile", PROFILE, "power", "cycle")
    assert code == EXIT_BAD_INPUT
    line = one_error_line(err)
    assert "profile 'board-sim-probe' has no power control: add serial.power.gpio" in line
    assert "serial.power.commands" in line


def test_power_interface_missing_is_exit_3(tmp_path: Path, ftdi: VirtualFtdi) -> None:
    code, _out, err = invoke(
        "--profile", str(power_profile(tmp_path, "ftdi://ftdi:232h:FTNOPE/1")), "power", "on"
    )
    assert code == EXIT_TARGET
    assert "no FTDI device at ftdi://ftdi:232h:FTNOPE/1" in one_error_line(err)


def test_unknown_power_action_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("--profile", PROFILE, "power", "sideways")
    assert code == EXIT_BAD_INPUT
    one_error_line(err)


# -- probe list ---------------------------------------------------------------------------------------------


def test_probe_list_shows_the_simulated_probe_and_ftdi_with_the_profile_roles(
    tmp_path: Path, ftdi: VirtualFtdi
) -> None:
    code, out, err = invoke("--profile", PROFILE, "probe", "list", "--json")
    assert code == 0, err
    document = json.loads(out)
    devices = {(d["kind"], d["unique_id"]): d for d in document["devices"]}
    assert devices[("debug-probe", PROBE_ID)]["profile_role"] == "probe"
    assert "simulated SW-DP" in devices[("debug-probe", PROBE_ID)]["description"]
    assert devices[("ftdi", "FTCCA042")]["url"] == ftdi.url


def test_probe_list_table_notes_an_absent_profile_probe(tmp_path: Path, ftdi: VirtualFtdi) -> None:
    path = power_profile(tmp_path, ftdi.url)
    path.write_text(path.read_text() + "  probe: {unique_id: FARM-PROBE-7}\n")
    code, out, err = invoke("--profile", str(path), "probe", "list")
    assert code == 0, err
    assert "FTCCA042" in out
    assert "note: the profile's probe FARM-PROBE-7 is not attached" in out
    assert "power interface" not in out  # the FTDI chip the profile names is there


def test_probe_list_in_a_subprocess_sees_probes_named_in_the_environment(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), ENV_PROBES: "CCASIM-ENV1,CCASIM-ENV2"}
    done = subprocess.run(
        [sys.executable, "-m", "cca_hil", "probe", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert TRACEBACK not in done.stderr
    document = json.loads(done.stdout)
    ids = [d["unique_id"] for d in document["devices"] if d["kind"] == "debug-probe"]
    assert ids == ["CCASIM-ENV1", "CCASIM-ENV2"]
    # Whatever this host's USB offers, a source that cannot be asked is a listed problem, not a crash.
    assert all(isinstance(p, str) and "\n" not in p for p in document["problems"])


def test_gpt_show_through_a_probe_says_why_the_gpt_is_out_of_reach() -> None:
    code, _, err = invoke("--profile", PROFILE, "gpt", "show")
    assert code == EXIT_TARGET
    line = one_error_line(err)
    assert "Root PAS" in line
    assert "MEM-AP" in line
    assert TRACEBACK not in err
