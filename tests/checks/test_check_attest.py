"""``check attest`` and the token round trip it shares with ``token get``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cca_hil.arch.token import EcPublicKey, TokenError
from cca_hil.checks.attest import attest_sections, bundled_attestation_sequence, fetch_token, parse_iak
from cca_hil.checks.cases import run_check
from cca_hil.cli import app
from cca_hil.errors import InputError
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome
from cca_hil.targets.model import ModelTarget

runner = CliRunner()


def test_check_attest_passes_every_verification_check_on_the_model() -> None:
    with build_target(load_profile("model")) as target:
        result = run_check(target, attest_sections(target), command="check attest")
    (section,) = result.sequences
    names = [step.name for step in section.steps]
    assert names[0] == "attestation_flow"
    assert {"realm_alg", "realm_signature", "binding", "platform_signature", "challenge", "rim"} <= set(names)
    assert all(step.outcome is Outcome.PASSED for step in section.steps), [
        (s.name, s.message) for s in section.steps if s.outcome is not Outcome.PASSED
    ]
    assert result.exit_code() == 0


class _NoRealmModel(ModelTarget):
    """A model target that, like a board without realm support, cannot run realms."""

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities - {"realm_exec"}


def test_check_attest_is_skipped_with_the_reason_on_a_target_without_realms() -> None:
    target = _NoRealmModel(profile=load_profile("model"))
    result = run_check(target, attest_sections(target), command="check attest")
    (section,) = result.sequences
    assert section.outcome is Outcome.SKIPPED
    assert "realm_exec" in section.skipped_reason


def test_token_from_the_model_verifies_with_the_published_iak_as_pem(tmp_path: Path) -> None:
    with build_target(load_profile("model")) as target:
        run = fetch_token(target)
    assert run.verification.ok, run.verification.failed
    assert run.iak is not None
    pem = tmp_path / "iak.pem"
    pem.write_bytes(run.iak.to_pem())
    assert parse_iak(str(pem)) == run.iak
    assert EcPublicKey.from_pem(run.iak.to_pem()) == run.iak


def test_a_pem_that_is_not_a_key_is_one_clear_input_error(tmp_path: Path) -> None:
    pem = tmp_path / "bad.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InputError, match="bad IAK PEM"):
        parse_iak(str(pem))
    with pytest.raises(TokenError):
        EcPublicKey.from_pem(b"garbage")


def test_token_get_then_verify_with_pem_and_sequence_exits_zero(tmp_path: Path) -> None:
    token = tmp_path / "t.cbor"
    got = runner.invoke(app, ["--run-dir", str(tmp_path / "run"), "token", "get", "--out", str(token)])
    assert got.exit_code == 0, got.stdout + got.stderr
    iak = tmp_path / "t.iak.pem"
    assert iak.is_file()
    verified = runner.invoke(
        app,
        ["token", "verify", str(token), "--iak", str(iak), "--sequence", str(bundled_attestation_sequence())],
    )
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert "rim" in verified.stdout


def test_token_verify_rejects_rim_and_sequence_together(tmp_path: Path) -> None:
    token = tmp_path / "t.cbor"
    token.write_bytes(b"\xd9\x01\x8f")
    result = runner.invoke(app, ["token", "verify", str(token), "--rim", "00", "--sequence", "x.yaml"])
    assert result.exit_code == 2
    assert "either --rim or --sequence" in result.stderr


def test_check_attest_command_exits_zero_on_the_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--run-dir", str(tmp_path / "run"), "check", "attest"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


def test_token_get_with_a_challenge_puts_it_in_the_token(tmp_path: Path) -> None:
    token = tmp_path / "c.cbor"
    got = runner.invoke(
        app,
        ["--run-dir", str(tmp_path / "run"), "token", "get", "--challenge", "0123abcd", "--out", str(token)],
    )
    assert got.exit_code == 0, got.stdout + got.stderr
    right = runner.invoke(app, ["token", "verify", str(token), "--challenge", "0123abcd"])
    assert right.exit_code == 0, right.stdout
    wrong = runner.invoke(app, ["token", "verify", str(token), "--challenge", "0123abce"])
    assert wrong.exit_code == 1
    assert "challenge" in wrong.stdout


def test_a_challenge_longer_than_64_bytes_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "get", "--challenge", "00" * 65, "--out", str(tmp_path / "t.cbor")])
    assert result.exit_code == 2
    assert "at most 64 bytes" in result.stderr
