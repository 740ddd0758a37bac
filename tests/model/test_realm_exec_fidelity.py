"""The model's realm execution against TF-RMM's, register by register (tests/data/tfrmm-1.0-realm-directed).

The token the realm received is compared with TF-RMM's capture claim by claim
(signatures aside, which are randomised in TF-RMM).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tfrmm_replay import Replay, scenario_files

from cca_hil.model.realm_exec import MemoryAccess


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_tf_rmm_mode_matches_the_recorded_realm_execution(path: Path) -> None:
    replay = Replay(path).run()
    assert replay.compared > 0
    assert not replay.problems, "\n".join(replay.problems)


def test_the_recorded_data_set_is_complete() -> None:
    assert len(scenario_files()) == 25


def recorded_data_aborts() -> list[dict[str, Any]]:
    """Every data abort the recordings' realms took, with the ESR_EL2 the hardware would report."""
    events = []
    for path in scenario_files():
        events += [e for e in json.loads(path.read_text())["events"] if e.get("event") == "data_abort"]
    return events


@pytest.mark.parametrize(
    "event", recorded_data_aborts(), ids=lambda e: f"{e['access']}-{e['ipa']}-{e['esr_el2']}"
)
def test_the_payload_builds_the_syndrome_the_hardware_reports(event: dict[str, Any]) -> None:
    esr = int(event["esr_el2"], 16)
    access = MemoryAccess(
        ipa=int(event["ipa"], 16),
        write=event["access"] == "store",
        size=int(event["size"]),
        register=int(event["rt"]),
        sign_extend=bool(event.get("sign_extend", 0)),
        sixty_four=bool(esr & (1 << 15)),
        isv=bool(event.get("isv", 1)),
        set_bits=(esr >> 11) & 0b11,
    )
    assert access.syndrome(esr & 0x3F) == esr
