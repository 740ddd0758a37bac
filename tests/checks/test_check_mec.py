"""``check mec`` on the model: scrubbing always, encryption and MEC cases where the platform has them."""

from __future__ import annotations

from cca_hil.checks.cases import run_check
from cca_hil.checks.mec import mec_sections
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome, RunResult


def _run(profile: str, *overrides: str) -> RunResult:
    target = build_target(load_profile(profile, overrides))
    return run_check(target, mec_sections(target), command="check mec")


def test_every_case_holds_on_the_mec_model() -> None:
    result = _run("model-mec")
    steps = [step for seq in result.sequences for step in seq.steps]
    assert len(steps) == 15
    assert {step.outcome for step in steps} == {Outcome.PASSED}
    assert result.exit_code() == 0


def test_without_encryption_the_host_reads_zeros_and_the_encryption_cases_are_skipped_with_the_reason() -> (
    None
):
    result = _run("model")
    by_name = {seq.name: seq for seq in result.sequences}
    scrub = by_name["mec-scrub"]
    assert {step.status for step in scrub.steps} == {"zeros"}
    assert by_name["mec-encryption"].outcome is Outcome.SKIPPED
    assert "lacks encryption" in by_name["mec-encryption"].skipped_reason
    assert "lacks mec" in by_name["mec-realms"].skipped_reason
    assert result.exit_code() == 0


def test_with_encryption_the_host_reads_the_scrub_as_ciphertext() -> None:
    result = _run("model-mec")
    scrub = next(seq for seq in result.sequences if seq.name == "mec-scrub")
    assert {step.status for step in scrub.steps} == {"pseudo-random"}


def test_encryption_without_mec_runs_the_pas_cases_and_skips_the_realm_ones() -> None:
    result = _run("model", "model.encryption=true")
    outcomes = {seq.name: seq.outcome for seq in result.sequences}
    assert outcomes == {
        "mec-scrub": Outcome.PASSED,
        "mec-encryption": Outcome.PASSED,
        "mec-realms": Outcome.SKIPPED,
    }
