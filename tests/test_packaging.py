"""A plain (non-editable) wheel carries the profiles, sequences and conformance suite."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_profiles_sequences_and_conformance(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("cca_hil-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data_dir in ("profiles", "sequences", "conformance"):
        shipped = {n for n in names if n.startswith(f"cca_hil/data/{data_dir}/") and n.endswith(".yaml")}
        in_tree = {
            f"cca_hil/data/{data_dir}/{p.name}" for p in (ROOT / "cca_hil/data" / data_dir).glob("*.yaml")
        }
        assert in_tree, f"no {data_dir} in the source tree"
        assert in_tree <= shipped, f"missing from the wheel: {sorted(in_tree - shipped)}"
    assert "cca_hil/py.typed" in names
