"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PROCESS_TAG = "CCA_HIL_TEST_PROCESS_TAG"
"""Environment variable that marks every process a test starts (children inherit it)."""


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``tag``: everything a test started, children too."""
    found = []
    needle = f"{PROCESS_TAG}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def process_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tag every process the test starts; none may be left afterwards (they are killed if so).

    Also makes ``python3`` on PATH this interpreter (tools/fvp-standin and tools/sim-board run
    on it) and clears the environment overrides a developer's shell may carry.
    """
    tag = uuid.uuid4().hex
    monkeypatch.setenv(PROCESS_TAG, tag)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for variable in ("CCA_HIL_SET", "CCA_HIL_FVP", "FVP_STANDIN_VERSION"):
        monkeypatch.delenv(variable, raising=False)
    yield tag
    leaked = tagged_processes(tag)
    for pid in leaked:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture(autouse=True, scope="session")
def _private_lease_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Leases taken by the suite live in a folder of this run, not in the user's ~/.cache.

    Tests that exercise leases set their own folder on top of this one.
    """
    before = os.environ.get("CCA_HIL_LEASE_DIR")
    os.environ["CCA_HIL_LEASE_DIR"] = str(tmp_path_factory.mktemp("leases"))
    yield
    if before is None:
        os.environ.pop("CCA_HIL_LEASE_DIR", None)
    else:
        os.environ["CCA_HIL_LEASE_DIR"] = before
