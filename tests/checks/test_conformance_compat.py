"""The suite's ``compat:`` variants (rmm-abi.md §12): which cases a reference-implementation mode changes.

A case the spec and TF-RMM answer differently carries ``compat: {tf-rmm-1.0: {row: N, …}}``. These
tests hold the variants to the model itself: the cases whose answers change between a spec-mode
and a TF-RMM-mode model are exactly the cases with a variant, each row alone changes exactly its
own cases, and the variant states the answer TF-RMM's mode gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cca_hil.checks.conformance import compat_changes, conformance_sequences
from cca_hil.model.platform import QUIRK_ROWS
from cca_hil.profiles import Profile, build_target
from cca_hil.results import Outcome, StepResult
from cca_hil.sequences import Runner, Sequence, load_sequence_text
from cca_hil.shadow import compat_rows, expected_quirk_rows

Answers = dict[tuple[str, str], tuple[Any, ...]]


@pytest.fixture(scope="module")
def suite() -> list[Sequence]:
    return conformance_sequences()


def _answer(step: StepResult) -> tuple[Any, ...]:
    return (step.status, step.index, step.condition, json.dumps(step.outputs, sort_keys=True, default=str))


def answers(suite: list[Sequence], rmm: dict[str, Any]) -> Answers:
    """Every step's answer on a fresh model with these ``rmm`` settings (sequences not judged by variants)."""
    target = build_target(Profile(name="compat-test", kind="model", params={"rmm": rmm}))
    with target:
        result = Runner(target).run_all(suite, command="conformance")
    return {(Path(s.source).name, st.name): _answer(st) for s in result.sequences for st in s.steps}


def changed(a: Answers, b: Answers) -> set[tuple[str, str]]:
    """Cases answered differently; a realm action's observation (``case/1 psci cpu_on``) is its case's."""
    keys = {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
    return {(file, name.split("/")[0]) for file, name in keys}


def variant_cases(suite: list[Sequence], rows: set[int] | None = None) -> set[tuple[str, str]]:
    return {
        (c.where.split(":")[0], c.case)
        for c in compat_changes(suite)
        if rows is None or c.variant.row in rows
    }


@pytest.fixture(scope="module")
def spec_answers(suite: list[Sequence]) -> Answers:
    return answers(suite, {"quirks": "spec"})


def test_the_answers_change_between_spec_and_tf_rmm_exactly_at_the_cases_with_a_variant(
    suite: list[Sequence], spec_answers: Answers
) -> None:
    tf_rmm = answers(suite, {"quirks": "tf-rmm"})
    assert changed(spec_answers, tf_rmm) == variant_cases(suite)
    assert len(variant_cases(suite)) == 7


@pytest.mark.parametrize("row", sorted({c.variant.row for c in compat_changes(conformance_sequences())}))
def test_each_row_alone_changes_exactly_the_cases_its_variants_name(
    suite: list[Sequence], spec_answers: Answers, row: int
) -> None:
    only_row = answers(suite, {"quirks": "spec", "quirk_rows": [row]})
    assert changed(spec_answers, only_row) == variant_cases(suite, {row})


def test_the_suite_has_variants_for_rows_1_5_6_9_13_and_22(suite: list[Sequence]) -> None:
    # §12 rows 8, 12, 17 and 19 change nothing a conformance case asserts (tests/model name them).
    assert {c.variant.row for c in compat_changes(suite)} == {1, 5, 6, 9, 13, 22}


def test_judged_by_the_tf_rmm_rows_the_tf_rmm_model_passes_every_case(suite: list[Sequence]) -> None:
    rows = compat_rows("tf-rmm-1.0")
    target = build_target(Profile(name="tf", kind="model", params={"rmm": {"quirks": "tf-rmm"}}))
    with target:
        result = Runner(target).run_all([s.judged_by(rows) for s in suite], command="conformance")
    judged = [st for s in result.sequences for st in s.steps if "rmm-abi §12 row" in st.expected]
    assert len(judged) == 7
    assert all(st.outcome is Outcome.PASSED for st in judged)
    assert result.outcome is Outcome.PASSED


def test_judged_by_the_tf_rmm_rows_the_spec_model_fails_exactly_the_variant_cases(
    suite: list[Sequence],
) -> None:
    target = build_target(Profile(name="spec", kind="model", params={}))
    with target:
        result = Runner(target).run_all(
            [s.judged_by(compat_rows("tf-rmm-1.0")) for s in suite], command="conformance"
        )
    failed = {
        (Path(s.source).name, st.name)
        for s in result.sequences
        for st in s.steps
        if st.outcome is Outcome.FAILED
    }
    assert failed == variant_cases(suite)


@pytest.mark.parametrize(
    ("profile", "rows"),
    [
        (Profile(name="m", kind="model", params={}), set()),
        (Profile(name="m", kind="model", params={"rmm": {"quirks": "tf-rmm"}}), set(QUIRK_ROWS)),
        (Profile(name="m", kind="model", params={"rmm": {"quirk_rows": [5, 6]}}), {5, 6}),
        (Profile(name="m", kind="model", params={"compat": "tf-rmm-1.0"}), set(QUIRK_ROWS)),
        (Profile(name="f", kind="fvp", params={}), set(QUIRK_ROWS)),
        (Profile(name="f", kind="fvp", params={}, shadow={"compat": "spec"}), set()),
        (Profile(name="f", kind="fvp", params={}, shadow={"quirk_rows": [22]}), {22}),
        (Profile(name="s", kind="serial", params={}), set()),
    ],
)
def test_the_rows_a_profile_expects_follow_the_rmm_it_is_said_to_run(
    profile: Profile, rows: set[int]
) -> None:
    assert expected_quirk_rows(profile) == rows


# -- the sequence format -------------------------------------------------------------------------------

_STEP = (
    "steps:\n  - {name: d, rmi: granule_delegate, args: {addr: 0x88000000}, expect: success, compat: %s}\n"
)


def test_a_variant_compiles_like_the_step_with_its_expect_and_condition() -> None:
    sequence = load_sequence_text(
        "sequence: v\n" + _STEP % "{tf-rmm-1.0: {row: 1, expect: error_input}}", source="v.yaml"
    )
    (variant,) = sequence.steps[0].compat
    assert (variant.mode, variant.row, variant.expect.status, variant.text) == (
        "tf-rmm-1.0",
        1,
        "error_input",
        "error_input",
    )
    assert sequence.judged_by({1}).steps[0].expect.status == "error_input"
    assert sequence.judged_by({5}).steps[0].expect.status == "success"


@pytest.mark.parametrize(
    ("compat", "message"),
    [
        ("{tf-rmm-2.0: {row: 1}}", "unknown compat mode 'tf-rmm-2.0'"),
        ("{spec: {row: 1}}", "unknown compat mode 'spec'"),
        ("{tf-rmm-1.0: {expect: success}}", "compat tf-rmm-1.0 needs row:"),
        ("{tf-rmm-1.0: {row: 2}}", "row 2 is not a §12 row where TF-RMM departs from the spec"),
        ("{tf-rmm-1.0: {row: 1, expected: success}}", "unknown key 'expected' in compat tf-rmm-1.0"),
        ("{tf-rmm-1.0: {row: 1, expect: error_bogus}}", "error_bogus"),
        ("[tf-rmm-1.0]", "compat must be a mapping"),
    ],
)
def test_a_bad_variant_is_one_error_line_naming_the_file_and_line(
    tmp_path: Path, compat: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sequence: bad\n" + _STEP % compat, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "cca_hil", "run", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "bad.yaml:3" in lines[0], done.stderr


# -- the command line ----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_conformance_changes_lists_every_case_a_compat_mode_changes_and_runs_nothing(tmp_path: Path) -> None:
    done = _cli("--run-dir", str(tmp_path / "run"), "conformance", "--changes")
    assert done.returncode == 0, done.stderr
    assert "7 cases expect another answer under tf-rmm-1.0" in done.stdout
    for case in ("rtt_align__concatenated", "rtt_homo__level1_assigned_ns", "mpidr__destroyed_rec"):
        assert case in done.stdout
    assert not (tmp_path / "run").exists()


def test_conformance_on_the_tf_rmm_model_is_judged_by_its_rows_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = _cli(
        "--profile", "model-tfrmm", "conformance", "--only", "realm_create,rtt_fold", "--json", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 cases judged by their tf-rmm-1.0 answer (rmm-abi.md §12 rows 1, 5)" in done.stdout
    steps = {st["name"]: st for s in json.loads(out.read_text())["sequences"] for st in s["steps"]}
    assert steps["rtt_align__concatenated"]["expected"] == "success (tf-rmm-1.0, rmm-abi §12 row 1)"
    assert steps["rtt_align__concatenated"]["outcome"] == "passed"


def test_conformance_compat_spec_on_the_tf_rmm_model_fails_at_the_rows(tmp_path: Path) -> None:
    done = _cli("--profile", "model-tfrmm", "conformance", "--only", "realm_create", "--compat", "spec")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rtt_align__concatenated" in done.stdout and "judged by" not in done.stdout


def test_an_unknown_compat_mode_is_exit_2(tmp_path: Path) -> None:
    done = _cli("conformance", "--compat", "tf-rmm")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "cca-hil: error: unknown compat mode 'tf-rmm' (--compat); valid: spec, tf-rmm-1.0"
    )
