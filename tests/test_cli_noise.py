"""``--inject-noise``: farm diagnostics on the agent link, refused where there is no link."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _cca_hil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_noise_on_a_model_profile_is_bad_input_naming_the_kinds(tmp_path: Path) -> None:
    result = _cca_hil("--inject-noise", "ber=1e-4", "rmi", "version", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "has no agent link" in result.stderr
    assert "serial" in result.stderr
    assert "fvp" in result.stderr


def test_unknown_noise_parameter_lists_the_valid_ones(tmp_path: Path) -> None:
    result = _cca_hil("--inject-noise", "bogus=1", "run", "realm-lifecycle", cwd=tmp_path)
    assert result.returncode == 2
    assert "(--inject-noise)" in result.stderr
    assert "ber, drop, dup, delay" in result.stderr
    assert "Traceback" not in result.stderr


def test_board_sim_run_through_a_noisy_link_still_passes(tmp_path: Path) -> None:
    result = _cca_hil(
        "--profile",
        "board-sim",
        "--inject-noise",
        "ber=1e-4,drop=1e-3,dup=1e-3",
        "--set",
        "link.retries=24",
        # Generous bounds: this runs beside the rest of the suite on a 2-core CI machine.
        "--set",
        "serial.launch_timeout=60",
        "--set",
        "link.timeouts.request=5",
        "run",
        "realm-lifecycle",
        "--json",
        str(tmp_path / "out.json"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["outcome"] == "passed"
    assert document["counts"]["passed"] > 0
