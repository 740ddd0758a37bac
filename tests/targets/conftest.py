"""Fixtures for targets behind the agent link: leak checks, the suite and the model's results."""

from __future__ import annotations

import pytest
from agent_target_support import AGENT_CAPS, all_sequences, run_profile, runnable

from cca_hil.results import RunResult
from cca_hil.sequences import Sequence
from cca_hil.shadow import compat_rows


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


@pytest.fixture(scope="session")
def tfrmm_model_result(sequences: list[Sequence]) -> RunResult:
    """The reference for an FVP, whose firmware runs TF-RMM: the model answering as TF-RMM.

    The sequences are judged by their tf-rmm-1.0 ``compat:`` variants, as a run on an fvp profile is.
    """
    judged = [s.judged_by(compat_rows("tf-rmm-1.0")) for s in runnable(sequences, AGENT_CAPS)]
    return run_profile("model-tfrmm", sequences=judged)
