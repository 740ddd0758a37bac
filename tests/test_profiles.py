"""Profiles: search order, validation where they enter, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cca_hil.errors import EXIT_BAD_INPUT, InputError, ProfileError
from cca_hil.profiles import available_profiles, build_target, load_profile
from cca_hil.targets.model import ModelTarget


def test_default_model_profile_builds_a_model_target() -> None:
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    assert target.info().rmm_version == 0x10000


def test_bundled_profiles_are_listed() -> None:
    names = available_profiles()
    assert {"model", "model-tfrmm"} <= set(names)


def test_unknown_profile_names_the_valid_ones() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("no-such-board")
    assert "unknown profile 'no-such-board'" in str(info.value)
    assert "model" in str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_unknown_key_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nkind: model\nmodel:\n  seed: 1\n  colour: blue\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert f"{path}:5" in message
    assert "unknown key 'model.colour'" in message
    assert "seed" in message


def test_wrong_type_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nkind: model\nmodel:\n  seed: lots\n")
    with pytest.raises(ProfileError, match=r"model\.seed must be int"):
        load_profile(str(path))


def test_unknown_kind_lists_kinds(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nkind: toaster\n")
    with pytest.raises(ProfileError, match=r"unknown target kind 'toaster' \(valid: .*model"):
        load_profile(str(path))


def test_set_override_reaches_the_model() -> None:
    profile = load_profile("model", ["model.seed=7", "rmm.quirks=tf-rmm"])
    assert profile.param("seed") == 7
    assert profile.param("rmm.quirks") == "tf-rmm"
    target = build_target(profile)
    assert isinstance(target, ModelTarget)
    assert target.config.seed == 7
    assert target.config.rmm.quirks == "tf-rmm"


def test_env_override_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCA_HIL_SET", "model.seed=11")
    assert load_profile("model").param("seed") == 11


def test_user_profile_directory_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.yaml").write_text("name: model\nkind: model\nmodel:\n  seed: 99\n")
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("CCA_HIL_PROFILES", str(tmp_path))
    assert load_profile("model").param("seed") == 99


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nkind: model\nmodel: {seed: [1\n")
    with pytest.raises(InputError) as info:
        load_profile(str(path))
    assert f"{path}:" in str(info.value)
    assert "YAML syntax error" in str(info.value)
