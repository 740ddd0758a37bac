"""``token get | show | verify | measure`` through typer's CliRunner, on an app that mounts ``token_app``."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
import typer
from typer.testing import CliRunner

from cca_hil.checks.attest import bundled_attestation_sequence
from cca_hil.cli_token import token_app
from cca_hil.measure import measure_sequence
from cca_hil.profiles import build_target, load_profile
from cca_hil.sequences import load_sequence
from cca_hil.targets.model import ModelTarget


def app() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(token_app)
    return root


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app(), list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token.cbor"
    code, output = invoke("token", "get", "--out", str(path))
    assert code == 0, output
    return path


def model_iak() -> str:
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    iak = target.machine.rmm.attestation.iak
    return (iak.x + iak.y).hex()


def test_get_writes_a_token_that_verifies_against_the_model_iak_and_the_offline_rim(token_file: Path) -> None:
    rim = measure_sequence(load_sequence(bundled_attestation_sequence()))[0].digest.hex()
    code, output = invoke("token", "verify", str(token_file), "--iak", model_iak(), "--rim", rim)
    assert code == 0, output
    assert "platform_signature" in output and "verifies" in output


def test_show_json_lists_the_realm_claims(token_file: Path) -> None:
    code, output = invoke("token", "show", str(token_file), "--json")
    assert code == 0
    shown = json.loads(output)
    assert shown["realm"]["profile"] == "tag:arm.com,2023:realm#1.0.0"
    assert shown["realm"]["challenge"].startswith("c0ffee")
    assert len(shown["realm"]["rems"]) == 4


def test_show_renders_a_table(token_file: Path) -> None:
    code, output = invoke("token", "show", str(token_file))
    assert code == 0
    assert "personalization_value" in output


def test_verify_of_a_token_with_a_broken_signature_exits_1_naming_the_check(
    token_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.cbor"
    data = bytearray(token_file.read_bytes())
    data[-1] ^= 0xFF
    broken.write_bytes(bytes(data))
    code, output = invoke("token", "verify", str(broken))
    assert code == 1
    assert "FAILED realm_signature" in output


def test_verify_with_another_challenge_exits_1_naming_challenge(token_file: Path) -> None:
    code, output = invoke("token", "verify", str(token_file), "--challenge", "00" * 64)
    assert code == 1
    assert "FAILED challenge" in output


def test_verify_of_a_file_that_is_not_a_token_names_the_tag_check(tmp_path: Path) -> None:
    path = tmp_path / "not-a-token.cbor"
    path.write_bytes(cbor2.dumps({"hello": 1}))
    code, output = invoke("token", "verify", str(path))
    assert code == 1
    assert "FAILED tag" in output


def test_measure_prints_the_rim_the_realm_will_have() -> None:
    code, output = invoke("token", "measure", str(bundled_attestation_sequence()), "--json")
    assert code == 0
    (row,) = json.loads(output)
    expected = measure_sequence(load_sequence(bundled_attestation_sequence()))[0]
    assert row["rim"] == expected.digest.hex()
    assert row["activated"] is True


def test_a_missing_token_file_is_an_input_error(tmp_path: Path) -> None:
    from cca_hil.errors import InputError

    with pytest.raises(InputError, match="cannot read the token"):
        invoke("token", "show", str(tmp_path / "nothing.cbor"))
