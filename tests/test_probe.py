"""Debug probe access through pyOCD into the simulated SW-DP on the model (the ``ccasim`` plugin)."""

from __future__ import annotations

import io
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from intelhex import IntelHex
from rich.console import Console
from rich.progress import Progress
from test_images import elf64

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi_1_0 import GRANULE_DELEGATE
from cca_hil.errors import EXIT_BAD_INPUT, EXIT_TARGET, InputError, ProfileError, TargetError, TransportError
from cca_hil.model.machine import Machine
from cca_hil.probe import ProbeConfig, ProbeSession, list_debug_probes, list_devices, rich_progress
from cca_hil.sim.dap import ENV_PROBES, SimDap, SimMemAp, plugged

UID = "CCASIM-T1"
NS_DRAM = 0x8000_0000
SECURE_DRAM = 0xFC00_0000
RMM = 0xFDC0_0000
MiB = 1 << 20


@pytest.fixture
def machine() -> Machine:
    return Machine()


@pytest.fixture
def dap(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimDap]:
    monkeypatch.delenv(ENV_PROBES, raising=False)
    dap = SimDap.for_machine(UID, machine)
    with plugged(dap):
        yield dap


@pytest.fixture
def probe(dap: SimDap) -> Iterator[ProbeSession]:
    with ProbeSession(ProbeConfig(UID)) as session:
        yield session


def pattern(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# -- listing and opening ------------------------------------------------------------


def test_plugged_probe_is_listed_with_its_unique_id(dap: SimDap) -> None:
    listing = list_devices()
    probes = [d for d in listing.devices if d.kind == "debug-probe"]
    assert [p.unique_id for p in probes] == [UID]
    assert "AXI-AP" in probes[0].description


def test_pyocd_list_shows_a_probe_named_in_the_environment(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), ENV_PROBES: "CCASIM-ENV1,CCASIM-ENV2"}
    done = subprocess.run(
        [sys.executable, "-m", "pyocd", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "CCASIM-ENV1" in done.stdout
    assert "CCASIM-ENV2" in done.stdout
    assert "cca-hil simulated SW-DP" in done.stdout


def test_environment_probes_are_model_backed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PROBES, "CCASIM-ENV1")
    with ProbeSession(ProbeConfig("CCASIM-ENV1")) as session:
        session.write(NS_DRAM, b"hello")
        assert session.read(NS_DRAM, 5) == b"hello"
        # The model's GPT is attached: its Realm carve-out faults.
        with pytest.raises(TargetError, match="transfer fault"):
            session.write(RMM, b"x" * 4)


def test_wrong_unique_id_is_transport_error_listing_present_ids(dap: SimDap) -> None:
    with pytest.raises(TransportError) as info:
        ProbeSession(ProbeConfig("CCASIM-NOPE")).open()
    assert one_line(info.value) == f"no debug probe with unique id 'CCASIM-NOPE' (present: {UID})"
    assert info.value.exit_code == EXIT_TARGET


def test_missing_probe_says_none_are_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PROBES, raising=False)
    assert [p for p in list_debug_probes() if p.unique_id.startswith("CCASIM")] == []
    with pytest.raises(TransportError) as info:
        ProbeSession(ProbeConfig("CCASIM-T1")).open()
    assert "no debug probe with unique id 'CCASIM-T1'" in one_line(info.value)


def test_unknown_probe_type_prefix_is_transport_error(dap: SimDap) -> None:
    with pytest.raises(TransportError, match="unknown debug probe type 'bogus'"):
        ProbeSession(ProbeConfig("bogus:X")).open()


def test_plugin_prefix_selects_the_simulated_probe(dap: SimDap) -> None:
    with ProbeSession(ProbeConfig(f"ccasim:{UID}")) as session:
        session.write(NS_DRAM, b"\x5a" * 8)
    assert dap.memory.read(NS_DRAM, 8) == b"\x5a" * 8


def test_unpowered_target_is_transport_error_and_connects_once_powered(dap: SimDap) -> None:
    dap.powered = False
    with pytest.raises(TransportError) as info:
        ProbeSession(ProbeConfig(UID)).open()
    assert one_line(info.value).startswith(f"probe {UID} AP#0: cannot connect: Target not detected")
    assert info.value.exit_code == EXIT_TARGET
    dap.powered = True
    with ProbeSession(ProbeConfig(UID)) as session:
        assert session.pas is Pas.NONSECURE


def test_session_needs_no_core_and_closes_cleanly(dap: SimDap) -> None:
    session = ProbeSession(ProbeConfig(UID))
    session.open()
    session.open()
    assert session.is_open
    session.close()
    session.close()
    assert not session.is_open
    with pytest.raises(TransportError, match="session is not open"):
        session.read(NS_DRAM, 4)


# -- loading --------------------------------------------------------------------------


def test_16_mib_image_loads_through_pyocd_and_reads_back_identical(
    probe: ProbeSession, machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pattern(16 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    seen: list[tuple[str, int, int]] = []

    result = probe.load_file(
        path,
        address=NS_DRAM,
        regions=machine.config.regions,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )

    assert (result.bytes_loaded, result.segments, result.verified) == (16 * MiB, 1, True)
    assert probe.read(NS_DRAM, 16 * MiB) == data
    assert machine.memory.read(NS_DRAM, 16 * MiB) == data
    for phase in ("load", "verify"):
        steps = [done for p, done, total in seen if p == phase and total == 16 * MiB]
        assert steps == sorted(steps)
        assert steps[-1] == 16 * MiB
    # Library code never prints: rendering progress is the caller's business.
    assert capsys.readouterr() == ("", "")


def test_elf_segments_land_at_their_physical_addresses(
    probe: ProbeSession, machine: Machine, tmp_path: Path
) -> None:
    text, data = pattern(3000, seed=2), pattern(77, seed=3)
    path = tmp_path / "agent.elf"
    path.write_bytes(
        elf64(
            [(0x4000_0000, 0x8800_0000, text, len(text)), (0x4010_0000, 0x8810_0003, data, 0x1000)],
            entry=0x8800_0000,
        )
    )
    result = probe.load_file(path, regions=machine.config.regions)
    assert result.entry == 0x8800_0000
    assert machine.memory.read(0x8800_0000, len(text)) == text
    assert machine.memory.read(0x8810_0003, len(data)) == data
    # Nothing went to the virtual addresses, nor before or after an unaligned segment.
    assert machine.memory.read(0x4000_0000, 16) == bytes(16)
    assert machine.memory.read(0x8810_0000, 3) == bytes(3)
    assert machine.memory.read(0x8810_0003 + len(data), 4) == bytes(4)


def test_hex_records_land_at_their_addresses(probe: ProbeSession, machine: Machine, tmp_path: Path) -> None:
    hexfile = IntelHex()
    hexfile.frombytes(b"\x11\x22\x33\x44\x55", offset=0x8000_1001)
    hexfile.frombytes(pattern(1030, seed=4), offset=0x8010_03FE)
    path = tmp_path / "fw.hex"
    hexfile.write_hex_file(str(path))
    probe.load_file(path, regions=machine.config.regions)
    assert machine.memory.read(0x8000_1000, 7) == b"\x00\x11\x22\x33\x44\x55\x00"
    assert machine.memory.read(0x8010_03FE, 1030) == pattern(1030, seed=4)


def test_image_outside_the_memory_map_is_input_error_before_any_transfer(
    probe: ProbeSession, dap: SimDap, machine: Machine, tmp_path: Path
) -> None:
    path = tmp_path / "uart.bin"
    path.write_bytes(b"\x00" * 64)
    before = dap.counters.total
    with pytest.raises(InputError) as info:
        probe.load_file(path, address=0x1C09_0000, regions=machine.config.regions)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert one_line(info.value).startswith(f"{path}: segment 0x1c090000-0x1c09003f (64 bytes) is outside")
    assert dap.counters.total == before


def test_realm_image_is_refused_as_unreachable_by_the_probe(
    probe: ProbeSession, machine: Machine, tmp_path: Path
) -> None:
    path = tmp_path / "rmm.bin"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="lies in rmm, which a nonsecure access cannot reach"):
        probe.load_file(path, address=RMM, regions=machine.config.regions)


def test_verify_mismatch_names_the_first_differing_address(probe: ProbeSession, dap: SimDap) -> None:
    # Writes to this range complete but do not stick (ROM on the bus).
    dap.add_rom(NS_DRAM + 0x1234, 0x10)
    data = b"\xa5" * 0x4000
    with pytest.raises(TargetError) as info:
        probe.write(NS_DRAM, data)
        probe.verify(NS_DRAM, data)
    assert one_line(info.value) == f"probe {UID} AP#0: verify failed at 0x80001234: wrote 0xa5, read 0x00"
    assert info.value.exit_code == EXIT_TARGET


def test_no_verify_skips_the_read_back(probe: ProbeSession, dap: SimDap, tmp_path: Path) -> None:
    dap.add_rom(NS_DRAM, 0x10)
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x01" * 0x100)
    result = probe.load_file(path, address=NS_DRAM, verify=False)
    assert not result.verified
    with pytest.raises(TargetError, match="verify failed at 0x80000000"):
        probe.load_file(path, address=NS_DRAM, verify=True)


# -- faults and the PAS -------------------------------------------------------------------


def test_ap_transfer_fault_is_target_error_naming_the_block(
    probe: ProbeSession, dap: SimDap, machine: Machine
) -> None:
    dap.add_fault(NS_DRAM + 0x4100, 4)
    data = pattern(0x10000)
    with pytest.raises(TargetError) as info:
        probe.write(NS_DRAM, data)
    assert one_line(info.value) == (
        f"probe {UID} AP#0: transfer fault at 0x80004000-0x800043ff (nonsecure PAS) "
        "while writing 0x80000000+0x10000"
    )
    assert info.value.exit_code == EXIT_TARGET
    # Beats before the faulting one completed; pyOCD cleared the sticky error, so the probe still works.
    assert machine.memory.read(NS_DRAM, 0x4100) == data[:0x4100]
    assert machine.memory.read(NS_DRAM + 0x4100, 4) == bytes(4)
    probe.write(NS_DRAM + 0x8000, b"next")
    assert probe.read(NS_DRAM + 0x8000, 4) == b"next"


def test_read_fault_is_target_error(probe: ProbeSession, dap: SimDap) -> None:
    dap.add_fault(NS_DRAM + 0x20, 4)
    with pytest.raises(
        TargetError, match=r"transfer fault at 0x80000000-0x800000ff .* while reading 0x80000000\+0x100"
    ):
        probe.read(NS_DRAM, 0x100)


def test_probe_access_uses_the_non_secure_pas_and_the_live_gpt(probe: ProbeSession, machine: Machine) -> None:
    assert probe.pas is Pas.NONSECURE
    granule = NS_DRAM + 0x10_0000
    probe.write(granule, b"before")
    status = machine.smc(GRANULE_DELEGATE.fid, granule)[0]
    assert status == 0
    # Delegated to the Realm PAS: a Non-secure probe access now faults like any NS access would.
    with pytest.raises(TargetError, match=r"transfer fault .* \(nonsecure PAS\)"):
        probe.write(granule, b"after!")


def test_secure_pas_reaches_secure_memory_only(dap: SimDap, machine: Machine) -> None:
    with ProbeSession(ProbeConfig(UID, pas=Pas.SECURE)) as session:
        assert session.pas is Pas.SECURE
        session.write(SECURE_DRAM, b"secure")
        assert machine.memory.read(SECURE_DRAM, 6) == b"secure"
        with pytest.raises(TargetError, match=r"\(secure PAS\)"):
            session.write(NS_DRAM, b"ns!!")
        with pytest.raises(TargetError, match=r"\(secure PAS\)"):
            session.write(RMM, b"rmm!")


def test_secure_pas_needs_secure_debug(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PROBES, raising=False)
    ap = SimMemAp("axi", machine.memory, gpc=machine.gpt.check, secure_debug=False)
    with plugged(SimDap("CCASIM-NOSPIDEN", [ap])):
        with pytest.raises(TargetError, match="secure debug is disabled"):
            ProbeSession(ProbeConfig("CCASIM-NOSPIDEN", pas=Pas.SECURE)).open()
        with ProbeSession(ProbeConfig("CCASIM-NOSPIDEN")) as session:
            assert session.pas is Pas.NONSECURE
            session.write(NS_DRAM, b"ok")


def test_ahb_ap_selects_the_pas_through_hnonsec(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PROBES, raising=False)
    ap = SimMemAp("ahb", machine.memory, gpc=machine.gpt.check)
    with plugged(SimDap("CCASIM-AHB", [ap])):
        with ProbeSession(ProbeConfig("CCASIM-AHB", ap_kind="ahb")) as session:
            session.write(NS_DRAM + 1, b"odd")
        with ProbeSession(ProbeConfig("CCASIM-AHB", ap_kind="ahb", pas=Pas.SECURE)) as session:
            session.write(SECURE_DRAM, b"sec")
    assert machine.memory.read(NS_DRAM, 4) == b"\x00odd"
    assert machine.memory.read(SECURE_DRAM, 3) == b"sec"


def test_ap_kind_mismatch_is_target_error(dap: SimDap) -> None:
    with pytest.raises(TargetError) as info:
        ProbeSession(ProbeConfig(UID, ap_kind="ahb")).open()
    assert one_line(info.value) == (
        f"probe {UID} AP#0: the access port is AXI-AP but the profile's ap_kind is 'ahb' "
        "(present: AP#0 AXI-AP, AP#1 APB-AP)"
    )


def test_missing_ap_is_target_error(dap: SimDap) -> None:
    with pytest.raises(TargetError, match=r"AP#7: no such access port \(present: AP#0 AXI-AP, AP#1 APB-AP\)"):
        ProbeSession(ProbeConfig(UID, ap=7)).open()


def test_apb_ap_has_no_pas(dap: SimDap) -> None:
    with ProbeSession(ProbeConfig(UID, ap=1, ap_kind="apb")) as session:
        assert session.pas is None
        session.write(0x1000, b"dbg!")
        assert session.read(0x1000, 4) == b"dbg!"
    assert dap.memory.read(0x1000, 4) == bytes(4)  # the debug APB is not system memory


def test_addresses_beyond_32_bits_are_refused(probe: ProbeSession) -> None:
    with pytest.raises(TargetError, match="beyond the 32-bit address reach"):
        probe.write(0x8_8000_0000, b"\x00" * 4)


# -- files and reset ---------------------------------------------------------------------


def test_read_to_file_streams_unaligned_ranges(probe: ProbeSession, tmp_path: Path) -> None:
    data = pattern(200_003, seed=5)
    probe.write(NS_DRAM + 3, data)
    out = tmp_path / "dump.bin"
    seen: list[int] = []
    written = probe.read_to_file(NS_DRAM + 3, len(data), out, progress=lambda _p, done, _t: seen.append(done))
    assert written == len(data)
    assert out.read_bytes() == data
    assert seen[-1] == len(data)


def test_reset_pulses_nreset_through_the_probe(probe: ProbeSession, dap: SimDap) -> None:
    probe.write(NS_DRAM, b"keep")
    probe.reset()
    assert dap.resets == 1
    # A system reset leaves DRAM and the debug connection alone.
    assert probe.read(NS_DRAM, 4) == b"keep"


# -- configuration -------------------------------------------------------------------------


def test_probe_config_from_profile_params() -> None:
    config = ProbeConfig.from_params({"unique_id": "0240000034", "ap": 1, "ap_kind": "ahb", "pas": "ns"})
    assert config == ProbeConfig("0240000034", ap=1, ap_kind="ahb", pas=Pas.NONSECURE)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"unique_id": "X", "pas": "realm"}, "a MEM-AP reaches the Secure or Non-secure PAS only"),
        ({"unique_id": "X", "pas": "root"}, "a MEM-AP reaches the Secure or Non-secure PAS only"),
        ({"unique_id": "X", "ap_kind": "jtag"}, "is not a MEM-AP kind"),
        ({"unique_id": "X", "ap": 300}, "is not an APSEL"),
        ({}, "unique_id is required"),
    ],
)
def test_bad_probe_params_are_profile_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        ProbeConfig.from_params(params)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_rich_progress_gets_one_task_per_phase(probe: ProbeSession, tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    path = tmp_path / "img.bin"
    path.write_bytes(pattern(300_000))
    with Progress(console=console, auto_refresh=False) as progress:
        probe.load_file(path, address=NS_DRAM, progress=rich_progress(progress))
        tasks = {task.description: (task.completed, task.total) for task in progress.tasks}
    assert tasks == {"load": (300_000, 300_000), "verify": (300_000, 300_000)}
