"""RmmConfig as it enters from a profile: the quirk mode is validated where it enters."""

from __future__ import annotations

import pytest

from cca_hil.errors import ProfileError
from cca_hil.model.machine import Machine
from cca_hil.model.platform import QUIRK_MODES, PlatformConfig


def test_default_quirk_mode_is_spec() -> None:
    assert PlatformConfig.from_params({}).rmm.quirks == "spec"


@pytest.mark.parametrize("mode", QUIRK_MODES)
def test_known_quirk_modes_reach_the_rmm(mode: str) -> None:
    config = PlatformConfig.from_params({"rmm": {"quirks": mode}})
    assert Machine(config).rmm.tf_rmm is (mode == "tf-rmm")


@pytest.mark.parametrize("mode", ["tfrmm", "TF-RMM", "", "strict"])
def test_unknown_quirk_mode_is_a_profile_error_naming_the_valid_ones(mode: str) -> None:
    with pytest.raises(ProfileError, match=r"rmm\.quirks") as excinfo:
        PlatformConfig.from_params({"rmm": {"quirks": mode}})
    assert excinfo.value.valid == ("spec", "tf-rmm")
    assert excinfo.value.exit_code == 2
