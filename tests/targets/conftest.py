"""Fixtures for targets behind the agent link: leak checks, the suite and the model's results."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_target_support import AGENT_CAPS, TAG, all_sequences, run_profile, runnable, tagged_processes

from cca_hil.results import RunResult
from cca_hil.sequences import Sequence


@pytest.fixture(autouse=True)
def no_leaked_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tag every process a test starts; none may be left afterwards (they are killed if so)."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    # tools/fvp-standin and tools/sim-board run on "python3" from PATH: make that this interpreter.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CCA_HIL_SET", raising=False)
    monkeypatch.delenv("CCA_HIL_FVP", raising=False)
    yield tag
    leaked = tagged_processes(tag)
    for pid in leaked:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture(scope="session")
def sequences() -> list[Sequence]:
    """Conformance suite + bundled samples, loaded once."""
    return all_sequences()


@pytest.fixture(scope="session")
def model_result(sequences: list[Sequence]) -> RunResult:
    """The reference: the sequences the agent emulator can run, on the built-in model."""
    return run_profile("model", sequences=runnable(sequences, AGENT_CAPS))
