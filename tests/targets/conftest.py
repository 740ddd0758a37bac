"""Fixtures for targets behind the agent link: leak checks, the suite and the model's results."""

from __future__ import annotations

import pytest
from agent_target_support import AGENT_CAPS, all_sequences, run_profile, runnable

from cca_hil.results import RunResult
from cca_hil.sequences import Sequence


@pytest.fixture(autouse=True)
def no_leaked_processes(process_guard: str) -> str:
    """Every process a test here starts must be gone when it ends (tests/conftest.py)."""
    return process_guard


@pytest.fixture(scope="session")
def sequences() -> list[Sequence]:
    """Conformance suite + bundled samples, loaded once."""
    return all_sequences()


@pytest.fixture(scope="session")
def model_result(sequences: list[Sequence]) -> RunResult:
    """The reference: the sequences the agent emulator can run, on the built-in model."""
    return run_profile("model", sequences=runnable(sequences, AGENT_CAPS))
