"""``run --reset`` / ``farm run --reset``: each sequence on a freshly booted target.

A board reused from an earlier job still holds that job's realms and delegated granules (the GPT
and the RMM live until the firmware boots again). Resetting before each sequence — through the
model's own reset, a board's debug probe (nRESET) or power control — puts it back to boot state,
and the shadow model starts over with it, so a compared run stays in lockstep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cca_hil.arch.pas import Pas
from cca_hil.profiles import build_target, load_profile
from cca_hil.rmi_client import GranuleAllocator, RmiClient
from cca_hil.targets.model import ModelTarget

KEEPS_A_REALM = """\
sequence: keeps-a-realm
granules: [rd, rtt0]
steps:
  - {rmi: granule_delegate, args: {addr: rd}}
  - {rmi: granule_delegate, args: {addr: rtt0}}
  - rmi: realm_create
    args: {rd: rd, params: {s2sz: 39, rtt_base: rtt0, rtt_level_start: 1, rtt_num_start: 1, vmid: 5}}
"""


def cca_hil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "keep.yaml").write_text(KEEPS_A_REALM, encoding="utf-8")
    return tmp_path


def test_a_warm_reset_boots_the_firmware_again_and_keeps_dram() -> None:
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    machine = target.machine
    client = RmiClient(target)
    pool = GranuleAllocator.for_target(target)
    rd, ns = pool.slot(), pool.slot()
    machine.ns_write(ns, b"kept")
    assert client.granule_delegate(rd).ok and machine.gpt.pas_of(rd) is Pas.REALM
    machine.reset()
    assert machine.gpt.pas_of(rd) is Pas.NONSECURE
    assert machine.ns_read(ns, 4) == b"kept"
    assert client.granule_delegate(rd).ok  # the fresh RMM knows nothing of the earlier delegation


def test_on_the_model_a_second_run_of_a_sequence_needs_the_reset(workdir: Path) -> None:
    without = cca_hil("run", "keep.yaml", "keep.yaml", cwd=workdir)
    assert without.returncode == 1, without.stdout + without.stderr
    with_reset = cca_hil("run", "--reset", "keep.yaml", "keep.yaml", cwd=workdir)
    assert with_reset.returncode == 0, with_reset.stdout + with_reset.stderr


def test_a_board_reset_through_its_probe_between_sequences_stays_in_lockstep(
    workdir: Path, process_guard: str
) -> None:
    done = cca_hil(
        "--profile",
        "board-sim-probe",
        "run",
        "--reset",
        "keep.yaml",
        "keep.yaml",
        "--json",
        "r.json",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((workdir / "r.json").read_text())
    assert result["counts"] == {"passed": 6, "failed": 0, "skipped": 0, "error": 0, "diverged": 0}
    assert all(step["matched"] for sequence in result["sequences"] for step in sequence["steps"])


def test_a_target_that_cannot_reset_is_exit_2(workdir: Path, process_guard: str) -> None:
    done = cca_hil("--profile", "board-sim", "run", "--reset", "keep.yaml", cwd=workdir)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "target 'board-sim' cannot reset" in lines[0] and "(--reset)" in lines[0]


def test_farm_run_resets_every_board_before_each_sequence(workdir: Path, process_guard: str) -> None:
    done = cca_hil(
        "farm",
        "run",
        "keep.yaml",
        "keep.yaml",
        "--profiles",
        "board-sim-probe*2",
        "--reset",
        "--json",
        "f.json",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 boards (2 passed), 12 cases: 12 passed" in done.stdout
