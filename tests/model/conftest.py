"""Fixtures for the model RMM tests: a fresh Host per test, per quirk mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rmm_host import Host


@pytest.fixture
def host() -> Iterator[Host]:
    """A Host on a fresh strict-spec model."""
    yield Host("spec")


@pytest.fixture
def tf_host() -> Iterator[Host]:
    """A Host on a fresh model answering as TF-RMM."""
    yield Host("tf-rmm")


@pytest.fixture(params=["spec", "tf-rmm"])
def any_host(request: pytest.FixtureRequest) -> Iterator[Host]:
    """A Host on a fresh model, once per quirk mode (for behaviour both modes share)."""
    yield Host(request.param)
