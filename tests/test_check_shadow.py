"""``cca-hil check shadow``: the differential harness's self-test, run as a user runs it (a subprocess).

On board-sim (the model behind the agent emulator over a real socket) the shadow must predict every
step; a board whose RMM answers one failure condition wrongly (the test-only fault switch) must make
the self-test fail, naming the divergences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cca_hil.checks.conformance import conformance_sequences

FAULT = "rmm.fault={command: granule_delegate, condition: gran_state, status: error_rec}"
FAULTY_BOARD = f'serial.launch=[python, -m, cca_hil.tools.sim_board, --tcp, --set, "{FAULT}"]'


def cca_hil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_on_board_sim_every_compared_step_matches(tmp_path: Path, process_guard: str) -> None:
    done = cca_hil("check", "shadow", "--json", "out.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert (result["command"], result["target"], result["kind"]) == ("check-shadow", "board-sim", "serial")
    assert result["counts"]["diverged"] == 0
    steps = [step for sequence in result["sequences"] for step in sequence["steps"]]
    compared = [step for step in steps if step["matched"] is not None]
    suite_steps = sum(len(s.steps) for s in conformance_sequences())
    assert len(compared) >= suite_steps - 100  # every step the board ran (a few are skipped: no GPT read)
    assert all(step["matched"] for step in compared)
    first = compared[0]
    assert first["predicted"]["registers"] == first["registers"]
    assert not list(tmp_path.rglob("divergence-*"))
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith(f"shadow self-test on board-sim: {len(compared)} steps compared")
    assert line.endswith("0 diverged — the shadow predicts the target exactly")


def test_a_board_answering_one_condition_wrongly_fails_the_self_test(
    tmp_path: Path, process_guard: str
) -> None:
    done = cca_hil(
        "--profile", "board-sim", "--set", FAULTY_BOARD, "check", "shadow", "--suite-only", cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "diverged — the shadow is not to be trusted here" in last
    diverged = int(last.split(" matched, ")[1].split(" diverged")[0])
    # every gran_state case of GRANULE_DELEGATE (a granule not UNDELEGATED) answers error_rec instead
    assert diverged >= 1
    assert "DIVERGED" in done.stdout or "diverged" in done.stdout
