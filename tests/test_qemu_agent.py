"""The qemu-virt profile end to end: the C agent cross-built, booted in real QEMU, driven by cca-hil.

QEMU 7.2 (Debian bookworm's qemu-system-arm) without EL3 firmware answers the
SMC conduit itself: PSCI_VERSION is 1.1 (0x10001), SMCCC_VERSION and every
other function ID -1 — so SMCCC 1.0 and no RMM. A load or store to an address
with no memory (platform.non_memory, 4 GiB with 1 GiB of RAM) is a bus decode
error, which QEMU raises as a synchronous external abort: observed ESR_EL2
0x97c38010 for the agent's 8-byte load (EC 0x25 data abort from EL2, IL, ISV,
SAS doubleword, SRT x3, SF, DFSC 0x10).

Needs make, aarch64-linux-gnu-gcc and qemu-system-aarch64: skipped where they
are missing, failing when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cca_hil.arch.esr import Esr, ExceptionClass, FaultStatus
from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED
from cca_hil.profiles import build_target, load_profile
from cca_hil.qemu import AGENT_BUILD, SERIAL_LOG, default_kernel
from cca_hil.targets.base import Capability
from cca_hil.targets.qemu import QemuTarget

pytestmark = [
    pytest.mark.slow,
    # The first test also builds the agent (make, cross gcc) on what may be a loaded two-core machine.
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "qemu-virt"
PSCI_VERSION_FID = 0x8400_0000
QEMU_PSCI_VERSION = 0x0001_0001
"""PSCI 1.1, what QEMU 7.2 answers (target/arm psci.c)."""
SCRATCH = 0x4200_0000
"""QEMU RAM well past the agent's image and the DTB."""
BUILD_TIMEOUT = 900.0
LINK = "link.timeouts={boot: 120, handshake: 2, request: 30, bulk: 60}"
"""Generous link bounds for QEMU on a loaded two-core machine."""


def require_tools(*tools: str) -> None:
    """Skip without the tools, but fail in CI (.ci/run installs them)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)} (apt-get install gcc-aarch64-linux-gnu qemu-system-arm make)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the QEMU target cannot be tested: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def agent_image() -> Path:
    """The agent built once per session with the command the missing-image error names."""
    require_tools("make", "aarch64-linux-gnu-gcc", "qemu-system-aarch64")
    command, _, rest = AGENT_BUILD.partition(" ")
    result = subprocess.run(
        [command, *rest.split()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    image = default_kernel()
    assert image.is_file(), image
    return image


@pytest.fixture(autouse=True)
def no_leaked_processes(process_guard: str) -> str:
    """No QEMU may outlive a test (tests/conftest.py)."""
    return process_guard


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    env["TMPDIR"] = str(cwd)  # the target's log folder lands in the test's folder
    env["CCA_HIL_RUNS"] = str(cwd / "runs")
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", "--profile", PROFILE, "--set", LINK, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def test_info_prints_the_psci_version_qemu_reports_and_no_rmm(tmp_path: Path, agent_image: Path) -> None:
    proc = _cli("info", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("qemu-virt (qemu)")
    assert "SMCCC 1.0, PSCI 1.1" in lines
    assert "no RMM: RMI_VERSION not supported" in lines
    assert "cca-hil agent 1.0 (qemu, bare metal)" in proc.stdout
    assert "qemu-system-aarch64" in proc.stdout
    # What the agent printed before the first frame is console, logged from its first byte.
    (folder,) = tmp_path.glob("cca-hil-qemu-*")
    assert (folder / SERIAL_LOG).read_bytes().startswith(b"cca-hil agent 1.0 (qemu) boot ")
    assert b"at EL2: ready" in (folder / "console.log").read_bytes()


def test_info_json_reports_the_versions_and_no_rme_capability(tmp_path: Path, agent_image: Path) -> None:
    proc = _cli("info", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["kind"] == "qemu"
    assert facts["psci_version"] == "1.1"
    assert facts["smccc_version"] == "1.0"
    assert facts["rmi_version"]["status"] == "not_supported"
    assert facts["rmi_features_0"] is None
    assert Capability.RME not in facts["capabilities"]
    assert Capability.ACCESS in facts["capabilities"]
    assert facts["platform"]["non_memory"] == "0x100000000"


def test_a_probe_of_no_memory_is_qemus_real_fault_and_the_agent_keeps_answering(
    tmp_path: Path, agent_image: Path
) -> None:
    profile = load_profile(PROFILE, [LINK])
    with build_target(profile, run_dir=tmp_path) as target:
        assert target.smc(PSCI_VERSION_FID)[0] == QEMU_PSCI_VERSION
        target.write(SCRATCH, (0x1122_3344_5566_7788).to_bytes(8, "little"))
        non_memory = target.info().platform["non_memory"]
        for op in ("read", "write"):
            result = target.access(non_memory, op, 8, 0x5A)
            assert result.fault is not None, op
            esr = Esr(result.fault.esr)
            assert esr.exception_class is ExceptionClass.DATA_ABORT_SAME, hex(esr.value)
            assert result.fault.exception_class == ExceptionClass.DATA_ABORT_SAME
            assert esr.fault_status == FaultStatus.SYNC_EXTERNAL, hex(esr.value)
            assert esr.wnr is (op == "write")
            assert result.fault.far == non_memory
            assert not result.fault.gpf
            # After the fault the agent still answers: an SMC, and memory as it was.
            assert target.smc(PSCI_VERSION_FID)[0] == QEMU_PSCI_VERSION
            assert target.read(SCRATCH, 8) == (0x1122_3344_5566_7788).to_bytes(8, "little")
        # QEMU forwards nothing to an RMM: RMI_VERSION is an unknown SMC.
        assert target.smc(0xC400_0150, 0x10000)[0] == SMCCC_NOT_SUPPORTED
        assert not target.has(Capability.RME)
        assert isinstance(target, QemuTarget)
        process = target.process
        assert process is not None
    assert process.returncode is not None, "closing the target stopped QEMU"


SEQUENCE = """\
sequence: qemu-probe
description: probing accesses to an address with no memory fault; the agent answers afterwards
steps:
  - name: load from no memory
    access: {op: read, addr: platform.non_memory}
    expect: fault
  - name: store to no memory
    access: {op: write, addr: platform.non_memory}
    expect: fault
  - name: rmi version after the faults
    rmi: version
    args: {req: 0x10000}
    expect: not_supported
"""


def test_a_sequence_probing_no_memory_passes_through_the_cli(tmp_path: Path, agent_image: Path) -> None:
    (tmp_path / "probe.yaml").write_text(SEQUENCE)
    proc = _cli("run", "probe.yaml", "--no-compare", "--json", "out.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    steps = [step for sequence in result["sequences"] for step in sequence["steps"]]
    assert [s["outcome"] for s in steps] == ["passed", "passed", "passed"]
    load, store = steps[0]["outputs"], steps[1]["outputs"]
    for outputs, write in ((load, False), (store, True)):
        esr = Esr(int(outputs["esr"]))
        assert esr.exception_class is ExceptionClass.DATA_ABORT_SAME
        assert esr.fault_status == FaultStatus.SYNC_EXTERNAL
        assert esr.wnr is write
        assert int(outputs["far"]) == 0x1_0000_0000


@pytest.mark.parametrize(
    ("machine", "el"), [("virt", 1), ("virt,secure=on,virtualization=on", 3)], ids=["el1", "el3"]
)
def test_a_machine_that_enters_the_agent_outside_el2_is_exit_2_naming_the_key(
    tmp_path: Path, agent_image: Path, machine: str, el: int
) -> None:
    proc = _cli("--set", f"qemu.machine={machine}", "info", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"cca-hil: error: the agent was entered at EL{el} but must run at EL2")
    assert "qemu.machine" in line and "virtualization=on" in line


def test_less_ram_than_the_agent_reports_is_exit_2_naming_qemu_memory(
    tmp_path: Path, agent_image: Path
) -> None:
    proc = _cli("--set", "qemu.memory=512M", "info", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "qemu.memory 512M ends at 0x60000000 but the agent reports DRAM" in line
    assert "QEMU_RAM_SIZE=0x20000000" in line
