"""RmmConfig as it enters from a profile: the quirk mode is validated where it enters."""

from __future__ import annotations

import pytest

from cca_hil.errors import ProfileError
from cca_hil.model.machine import Machine
from cca_hil.model.platform import QUIRK_MODES, PlatformConfig
from cca_hil.profiles import build_target, load_profile
from cca_hil.targets.model import ModelTarget


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


@pytest.mark.parametrize(
    ("field", "value"),
    [("aux_count", 17), ("max_recs_order", 0), ("gicv3_num_lrs", 16), ("vmid_bits", 12), ("s2sz", 64)],
)
def test_values_rmm_1_0_cannot_report_are_profile_errors(field: str, value: int) -> None:
    with pytest.raises(ProfileError, match=rf"rmm\.{field}"):
        PlatformConfig.from_params({"rmm": {field: value}})


@pytest.mark.parametrize(("name", "quirks"), [("model", "spec"), ("model-tfrmm", "tf-rmm")])
def test_bundled_model_profiles_build_an_rmm_in_their_mode(name: str, quirks: str) -> None:
    target = build_target(load_profile(name))
    assert isinstance(target, ModelTarget)
    assert target.machine.rmm.config.quirks == quirks


def test_a_bad_quirks_override_fails_where_the_profile_is_built() -> None:
    with pytest.raises(ProfileError, match="quirks"):
        build_target(load_profile("model", overrides=["rmm.quirks=tf_rmm"]))
