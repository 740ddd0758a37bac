"""The model's realm execution against TF-RMM's, register by register (tests/data/tfrmm-1.0-realm-directed).

The token the realm received is compared with TF-RMM's capture claim by claim
(signatures aside, which are randomised in TF-RMM).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tfrmm_replay import Replay, scenario_files


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_tf_rmm_mode_matches_the_recorded_realm_execution(path: Path) -> None:
    replay = Replay(path).run()
    assert replay.compared > 0
    assert not replay.problems, "\n".join(replay.problems)


def test_the_recorded_data_set_is_complete() -> None:
    assert len(scenario_files()) == 25
