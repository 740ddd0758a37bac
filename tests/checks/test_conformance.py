"""The bundled conformance suite (RMI and RSI): passes on the strict-spec model, covers every condition."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from cca_hil.arch.rmi_1_0 import RMI_1_0, RTT_CREATE
from cca_hil.arch.rsi_1_0 import PSCI_1_1, RSI_1_0
from cca_hil.checks.conformance import (
    UNREACHABLE,
    CaseNameError,
    CoverageRow,
    RealmCall,
    command_of,
    conformance_files,
    conformance_sequences,
    coverage,
    labels_of,
    parse_case_name,
    quirk_only,
    realm_calls,
    spec_orderings,
    suite_cases,
    suite_command_names,
    suite_commands,
)
from cca_hil.errors import InputError
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome, RunResult
from cca_hil.sequences import Runner, Sequence, load_sequence_text

ACS_STIMULI = 389
"""Stimuli the Arm RMM ACS (v1.0_REL0_12.24) has for the RMI commands."""


def run_suite(sequences: list[Sequence], profile: str) -> tuple[RunResult, float]:
    """The suite on a freshly booted model target, and the wall time of the run."""
    target = build_target(load_profile(profile))
    with target:
        started = time.perf_counter()
        result = Runner(target).run_all(sequences, command="conformance")
        return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def suite() -> list[Sequence]:
    started = time.perf_counter()
    sequences = conformance_sequences()
    print(f"\nconformance suite: {len(sequences)} files loaded in {time.perf_counter() - started:.3f} s")
    return sequences


@pytest.fixture(scope="module")
def rows(suite: list[Sequence]) -> dict[str, CoverageRow]:
    return coverage(suite)


def comment_block(path: Path, line: int) -> str:
    """The comments of a step: on its own lines and in the block above it (set-up steps skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    own = [lines[line - 1]]
    below = line
    while below < len(lines) and lines[below].startswith("    "):
        own.append(lines[below])
        below += 1
    above: list[str] = []
    index = line - 2
    while index >= 0:
        text = lines[index]
        if text.strip().startswith("#"):
            above.append(text.strip())
        elif text.startswith("    "):
            # The last line of a multi-line step: find where that step starts.
            start = index
            while start > 0 and lines[start].startswith("    "):
                start -= 1
            if "name: setup__" not in "\n".join(lines[start : index + 1]):
                break
            index = start
        elif "name: setup__" not in text:
            break
        index -= 1
    return "\n".join(above + own)


def test_whole_suite_passes_on_the_strict_spec_model(suite: list[Sequence]) -> None:
    result, seconds = run_suite(suite, "model")
    steps = sum(len(s.steps) for s in result.sequences)
    print(f"conformance suite on the model: {steps} steps in {seconds:.3f} s")
    assert not result.error
    capabilities = build_target(load_profile("model")).capabilities
    problems = []
    for sequence, done in zip(suite, result.sequences, strict=True):
        missing = [cap for cap in sequence.requires if cap not in capabilities]
        if missing:
            # Skipped as a whole, with the reason: never silently passing.
            assert done.skipped_reason and all(cap in done.skipped_reason for cap in missing), done.source
            assert not done.steps
            continue
        assert not done.skipped_reason and not done.error, done.source
        for step in done.steps:
            if step.outcome is Outcome.PASSED or (step.outcome is Outcome.SKIPPED and step.message):
                continue
            problems.append(f"{done.source}:{step.line} {step.name}: {step.outcome} {step.message}")
    assert not problems, "\n".join(problems)
    assert result.exit_code() == 0


def test_every_condition_has_a_case_unless_no_sequence_can_reach_it(rows: dict[str, CoverageRow]) -> None:
    unreachable = {(u.command, u.label) for u in UNREACHABLE}
    missing = [
        f"{row.command}.{label}"
        for row in rows.values()
        for label in row.missing
        if (row.command, label) not in unreachable
    ]
    assert not missing, "conditions without a case: " + ", ".join(missing)


def test_every_rsi_and_realm_psci_condition_has_a_case(suite: list[Sequence]) -> None:
    # Straight from the arch tables, so that a command the suite's own list forgot is still counted.
    wanted = {(f"rsi_{c.name}", cond.id) for c in RSI_1_0.commands for cond in c.conditions}
    wanted |= {(f"rsi_psci_{f.name}", cond.id) for f in PSCI_1_1 for cond in f.conditions}
    unreachable = {(u.command, u.label) for u in UNREACHABLE}
    have = {(case.command, case.label) for case in suite_cases(suite) if case.kind == "condition"}
    asserted = {(case.command, case.condition) for case in suite_cases(suite)}
    missing = sorted(wanted - have - unreachable)
    assert not missing, "RSI/PSCI conditions without a case: " + ", ".join(
        f"{c}.{label}" for c, label in missing
    )
    assert not (wanted - asserted - unreachable), "cases that do not assert their condition"
    # rmm-abi.md §7.1 lists 26 RSI conditions (three of them TF-RMM rows), §8 five PSCI failures.
    assert len(wanted) == 31


def test_unreachable_conditions_are_real_conditions_that_have_no_case(rows: dict[str, CoverageRow]) -> None:
    commands = suite_commands()
    for entry in UNREACHABLE:
        assert entry.label in labels_of(commands[entry.command]), entry
        assert entry.label not in rows[entry.command].covered, (
            f"{entry} has a case now: drop it from UNREACHABLE"
        )
        assert entry.reason


def test_coverage_table_counts_every_command(rows: dict[str, CoverageRow]) -> None:
    assert list(rows) == [command.name for command in RMI_1_0.commands] + [
        call.name for call in realm_calls()
    ]
    assert [row.command for row in rows.values() if row.abi == "rsi"] == [
        f"rsi_{command.name}" for command in RSI_1_0.commands
    ]
    print(f"\n{'command':32} conditions  stimuli  (realm_exec)  orderings")
    for row in rows.values():
        print(
            f"{row.command:32} {len(row.covered):4}/{len(row.conditions):<4} {row.stimuli:8}  "
            f"({row.realm_exec_stimuli:3})        {len(row.orderings_covered):3}/{len(row.orderings)}"
        )
        assert set(row.orderings_covered) <= set(row.orderings)
        assert row.stimuli > 0, f"{row.command} has no case"
        if row.abi != "rmi":
            # No RSI command or realm PSCI function states an ordering (rmm-abi.md §7.1); all run realms.
            assert row.orderings == () and row.realm_exec_stimuli == row.stimuli
    for abi in ("rmi", "rsi", "psci"):
        mine = [row for row in rows.values() if row.abi == abi]
        covered = sum(len(row.covered) for row in mine)
        total = sum(len(row.conditions) for row in mine)
        stimuli = sum(row.stimuli for row in mine)
        print(f"{'total ' + abi:32} {covered:4}/{total:<4} {stimuli:8}")


def test_realms_of_different_files_use_different_vmids() -> None:
    # The files run one after another on one target: a VMID taken by an earlier file's realm would
    # turn a later file's set-up into a vmid_valid failure.
    owner: dict[int, str] = {}
    for path in conformance_files():
        for step in yaml.safe_load(path.read_text(encoding="utf-8"))["steps"]:
            params = step.get("args", {}).get("params")
            if step.get("rmi") != "realm_create" or "expect" in step or not isinstance(params, dict):
                continue
            vmid = int(params["vmid"])
            assert owner.setdefault(vmid, path.name) == path.name, (
                f"vmid {vmid} in {owner[vmid]} and {path.name}"
            )
    assert len(owner) > len(RMI_1_0.commands)


def test_suite_has_at_least_as_many_stimuli_as_the_acs(rows: dict[str, CoverageRow]) -> None:
    assert sum(row.stimuli for row in rows.values() if row.abi == "rmi") >= ACS_STIMULI


def test_every_stimulus_is_named_after_what_it_tests(suite: list[Sequence]) -> None:
    cases = suite_cases(suite)
    commands = suite_commands()
    for case in cases:
        command = commands[case.command]
        where = f"{case.source}:{case.line} {case.name}"
        if case.kind == "condition":
            assert case.label in labels_of(command), where
            if isinstance(command, RealmCall):
                # The realm side has no spec answer to assert instead: the case asserts its own label.
                assert case.condition == case.label, where
            elif case.label in quirk_only(command):
                # A TF-RMM-only condition: the strict-spec case asserts the condition the spec answers with.
                assert case.condition is not None and case.condition != case.label, where
            else:
                assert case.condition == case.label, where
        elif case.kind == "order":
            assert (case.label, case.second) in spec_orderings(command), where
            assert case.condition == case.label, where
        else:
            assert case.condition is None, where


def test_suite_has_a_file_for_every_rmi_and_rsi_command() -> None:
    files = conformance_files()
    commands = suite_command_names()
    assert {command_of(path) for path in files} == set(commands)
    assert {path.stem for path in files} >= set(commands)
    main_files = [path.stem for path in files if path.stem == command_of(path)]
    assert main_files == commands


def test_only_takes_command_names_with_hyphens_or_underscores() -> None:
    sequences = conformance_sequences(["rtt-create", "granule_delegate", "REC-ENTER", "rsi-host-call"])
    assert {command_of(Path(s.source)) for s in sequences} == {
        "rtt_create",
        "granule_delegate",
        "rec_enter",
        "rsi_host_call",
    }
    assert any("realm_exec" in s.requires for s in sequences)


def test_only_with_an_unknown_command_lists_the_valid_names() -> None:
    with pytest.raises(InputError) as caught:
        conformance_sequences(["rtt_crate"])
    assert "rtt_crate" in str(caught.value)
    assert caught.value.valid is not None and "rtt_create" in caught.value.valid


def test_case_names_split_labels_that_contain_underscores() -> None:
    assert parse_case_name(RTT_CREATE, "order__rd_state_before_rtt_walk") == ("order", "rd_state", "rtt_walk")
    assert parse_case_name(RTT_CREATE, "order__level_bound_before_rtte_state__x") == (
        "order",
        "level_bound",
        "rtte_state",
    )
    assert parse_case_name(RTT_CREATE, "rtt_walk__level1") == ("condition", "rtt_walk", None)
    assert parse_case_name(RTT_CREATE, "success__unfold_ram") == ("success", None, None)
    assert parse_case_name(RTT_CREATE, "order__rd_state_before_gran_gpt") is None
    assert parse_case_name(RTT_CREATE, "gran_align__1") is None


def test_a_stimulus_not_named_after_a_condition_is_reported_with_its_line() -> None:
    text = """
sequence: misnamed
granules: [g]
steps:
  - {name: setup__delegate, rmi: granule_delegate, args: {addr: g}}
  - {name: delegate_twice, rmi: granule_delegate, args: {addr: g}, expect: error_input}
"""
    sequence = load_sequence_text(text, source="granule_delegate.yaml")
    with pytest.raises(CaseNameError) as caught:
        suite_cases([sequence])
    assert "granule_delegate.yaml:6" in str(caught.value)
    assert "gran_state" in str(caught.value)


def test_a_suite_file_not_named_after_a_command_is_refused() -> None:
    sequence = load_sequence_text("sequence: stray\nsteps: []\n", source="rtt_crate.yaml")
    with pytest.raises(CaseNameError) as caught:
        suite_cases([sequence])
    assert caught.value.valid is not None and "rtt_create" in caught.value.valid


def test_a_case_asserting_another_condition_fails_on_the_model() -> None:
    path = next(p for p in conformance_files() if p.stem == "granule_delegate")
    case = "{name: gran_gpt__root, rmi: granule_delegate, args: {addr: platform.root_granule}, "
    text = path.read_text(encoding="utf-8").replace(
        case + "condition: gran_gpt", case + "condition: gran_state"
    )
    result, _ = run_suite([load_sequence_text(text, source=str(path))], "model")
    failed = [step for step in result.sequences[0].steps if step.outcome is Outcome.FAILED]
    assert [step.name for step in failed] == ["gran_gpt__root"]
    assert "condition gran_gpt, expected gran_state" in failed[0].message


def test_on_the_tf_rmm_model_only_cases_tagged_with_a_spec_vs_tf_rmm_row_fail(suite: list[Sequence]) -> None:
    result, _ = run_suite(suite, "model-tfrmm")
    failed = [
        (Path(done.source), step)
        for done in result.sequences
        for step in done.steps
        if step.outcome is not Outcome.PASSED
    ]
    untagged = [
        f"{path}:{step.line} {step.name}"
        for path, step in failed
        if step.line is None or "§12 row" not in comment_block(path, step.line)
    ]
    assert not untagged, "cases failing on TF-RMM's behaviour without a §12 row: " + ", ".join(untagged)
    # The strict-spec answers the suite asserts do differ from TF-RMM's somewhere (§12 rows 1, 5, 6).
    assert len(failed) >= 3


def test_an_rsi_case_asserting_another_condition_fails_on_the_model() -> None:
    path = next(p for p in conformance_files() if p.stem == "rsi_ipa_state_get")
    case = "{name: end_align, rsi: ipa_state_get, rec: rec0, args: {base: 0x1000, top: 0x2008}, "
    text = path.read_text(encoding="utf-8").replace(
        case + "condition: end_align", case + "condition: base_align"
    )
    result, _ = run_suite([load_sequence_text(text, source=str(path))], "model")
    failed = [step for step in result.sequences[0].steps if step.outcome is Outcome.FAILED]
    assert [step.name for step in failed] == ["end_align"]
    assert failed[0].message == "condition end_align, expected base_align"


def test_a_psci_case_asserting_another_condition_fails_on_the_model() -> None:
    path = next(p for p in conformance_files() if p.stem == "rsi_psci_cpu_on")
    text = path.read_text(encoding="utf-8")
    start = text.index("  - name: mpidr__no_rec")
    text = text[:start] + text[start:].replace("condition: mpidr", "condition: entry", 1)
    result, _ = run_suite([load_sequence_text(text, source=str(path))], "model")
    failed = [step for step in result.sequences[0].steps if step.outcome is Outcome.FAILED]
    assert [step.name for step in failed] == ["mpidr__no_rec/1 psci cpu_on"]
    assert failed[0].message == "condition mpidr, expected entry"


def test_a_realm_stimulus_makes_one_call_of_its_command() -> None:
    text = """
sequence: two_calls
steps:
  - name: entry
    rmi: rec_enter
    args: {rec: 0}
    realm:
      - {psci: cpu_on, expect: invalid_address, condition: entry}
      - {psci: cpu_on, expect: invalid_address, condition: entry}
"""
    sequence = load_sequence_text(text, source="rsi_psci_cpu_on.yaml")
    with pytest.raises(CaseNameError) as caught:
        suite_cases([sequence])
    assert "rsi_psci_cpu_on.yaml:4" in str(caught.value)
    assert "makes 2 cpu_on calls" in str(caught.value)
