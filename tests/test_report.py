"""Result views as observers of one event stream: console, run folder, JSON, JUnit."""

from __future__ import annotations

import io
import json
from pathlib import Path
from xml.etree import ElementTree as ET

from rich.console import Console

from cca_hil.report import (
    ConsoleView,
    JsonReport,
    JunitReport,
    RunFolder,
    Verbosity,
    junit_tree,
    summary_line,
)
from cca_hil.results import Events, Outcome, RunResult, SequenceResult, StepResult


def _step(name: str, outcome: Outcome, *, line: int, message: str = "") -> StepResult:
    return StepResult(
        name=name,
        op="rmi",
        command="granule_delegate",
        args={"addr": 0x9000_0000},
        registers=(1, 0, 0, 0, 0) if outcome is Outcome.FAILED else (0, 0, 0, 0, 0),
        status="error_input" if outcome is Outcome.FAILED else "success",
        index=0,
        condition="gran_state" if outcome is Outcome.FAILED else None,
        expected="success",
        outcome=outcome,
        message=message,
        duration=0.001,
        line=line,
    )


def _replay(events: Events, *, with_failure: bool = True) -> RunResult:
    """Drive the observers through a small run the way the runner does."""
    run = RunResult(target="model", profile="model", kind="model", tool_version="0.1.0")
    events.run_started(run)
    good = SequenceResult(name="good", source="good.yaml", started="2026-01-01T00:00:00.123Z")
    events.sequence_started(good, 2)
    for i, name in enumerate(("first", "second")):
        step = _step(name, Outcome.PASSED, line=4 + i)
        good.steps.append(step)
        events.step_finished(good, step)
    events.sequence_finished(good)
    run.sequences.append(good)
    bad = SequenceResult(name="bad", source="bad.yaml")
    events.sequence_started(bad, 2)
    outcomes = [Outcome.FAILED, Outcome.SKIPPED] if with_failure else [Outcome.PASSED, Outcome.SKIPPED]
    for i, outcome in enumerate(outcomes):
        message = (
            "status error_input index 0 (gran_state), expected success" if outcome is Outcome.FAILED else ""
        )
        if outcome is Outcome.SKIPPED:
            message = "target 'model' does not provide 'realm_exec'"
        step = _step(f"b{i}", outcome, line=9 + i, message=message)
        bad.steps.append(step)
        events.step_finished(bad, step)
    events.sequence_finished(bad)
    run.sequences.append(bad)
    skipped = SequenceResult(name="needs-mec", source="mec.yaml", skipped_reason="target 'model' lacks mec")
    events.sequence_started(skipped, 0)
    events.sequence_finished(skipped)
    run.sequences.append(skipped)
    run.ended = "2026-01-01T00:00:00.000Z"
    events.run_finished(run)
    return run


def _console(*, terminal: bool = False) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120, highlight=False), buffer


def test_console_view_shows_failures_with_location_and_what_differed() -> None:
    console, buffer = _console()
    _replay(Events([ConsoleView(console, verbosity=Verbosity.NORMAL)]))
    out = buffer.getvalue()
    assert "FAIL     bad › b0" in out
    assert "bad.yaml:9: status error_input index 0 (gran_state), expected success" in out
    assert "PASS     good  2 passed" in out
    assert "SKIP     needs-mec" in out and "lacks mec" in out
    assert "first" not in out  # passing steps are not listed without -v
    assert (
        out.rstrip().splitlines()[-1].startswith("run: 3 sequences, 4 steps: 2 passed, 1 failed, 1 skipped")
    )


def test_console_view_verbose_lists_every_step() -> None:
    console, buffer = _console()
    _replay(Events([ConsoleView(console, verbosity=Verbosity.VERBOSE)]))
    out = buffer.getvalue()
    for name in ("first", "second", "b0", "b1"):
        assert f" {name}  rmi granule_delegate" in out
    assert "skipped: target 'model' does not provide 'realm_exec'" in out


def test_console_view_quiet_prints_only_the_summary() -> None:
    console, buffer = _console()
    run = _replay(Events([ConsoleView(console, verbosity=Verbosity.QUIET)]))
    assert buffer.getvalue().splitlines() == [summary_line(run)]


def test_console_view_on_a_pipe_writes_no_escape_sequences() -> None:
    console, buffer = _console(terminal=False)
    _replay(Events([ConsoleView(console, verbosity=Verbosity.VERBOSE)]))
    assert "\x1b" not in buffer.getvalue()


def test_console_view_on_a_terminal_draws_live_progress_and_colour() -> None:
    console, buffer = _console(terminal=True)
    view = ConsoleView(console, verbosity=Verbosity.NORMAL)
    assert view.live
    _replay(Events([view]))
    assert "\x1b[" in buffer.getvalue()


def test_summary_line_states_counts_verdict_and_exit_code() -> None:
    run = _replay(Events())
    assert summary_line(run) == ("run: 3 sequences, 4 steps: 2 passed, 1 failed, 1 skipped — FAILED (exit 1)")
    run.run_dir = "runs/x"
    assert summary_line(run).endswith("— results in runs/x")


def test_run_folder_writes_each_event_as_it_happens(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    events = Events([folder])
    run = RunResult(target="model", profile="model", kind="model", tool_version="0.1.0")
    events.run_started(run)
    sequence = SequenceResult(name="s", source="s.yaml")
    events.sequence_started(sequence, 1)
    step = _step("only", Outcome.PASSED, line=3)
    sequence.steps.append(step)
    events.step_finished(sequence, step)
    # Before the run ends (a crash now would lose nothing already reported): the lines are on disk.
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == [
        "run_started",
        "sequence_started",
        "step_finished",
    ]
    assert json.loads(lines[-1])["step"]["name"] == "only"
    assert not (tmp_path / "run" / "result.json").exists()
    assert run.run_dir == str(tmp_path / "run")
    events.sequence_finished(sequence)
    run.sequences.append(sequence)
    events.run_finished(run)
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == run.to_json()


def test_json_report_is_the_result_document_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "result.json"
    run = _replay(Events([JsonReport(path)]))
    assert json.loads(path.read_text()) == run.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_junit_has_a_suite_per_sequence_and_a_case_per_step(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    _replay(Events([JunitReport(path)]))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "5",
        "1",
        "0",
        "2",
    )
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["good", "bad", "needs-mec"]
    bad = suites["bad"]
    assert (bad.get("tests"), bad.get("failures"), bad.get("skipped")) == ("2", "1", "1")
    cases = bad.findall("testcase")
    assert [c.get("classname") for c in cases] == ["bad", "bad"]
    failure = cases[0].find("failure")
    assert failure is not None
    assert failure.get("message") == "status error_input index 0 (gran_state), expected success"
    assert failure.text is not None and "at bad.yaml:9" in failure.text and "registers: 0x1" in failure.text
    skipped = cases[1].find("skipped")
    assert skipped is not None and "realm_exec" in skipped.get("message", "")
    (whole,) = suites["needs-mec"].findall("testcase")
    assert whole.find("skipped") is not None
    assert suites["good"].get("timestamp") == "2026-01-01T00:00:00"
    properties = {p.get("name"): p.get("value") for p in bad.iter("property")}
    assert properties["target"] == "model"


def test_junit_reports_a_sequence_that_broke_off_as_an_error() -> None:
    run = RunResult(target="board", profile="board", kind="serial", tool_version="0.1.0")
    broken = SequenceResult(name="broken", source="b.yaml", error="agent link timed out")
    broken.steps.append(_step("first", Outcome.PASSED, line=3))
    run.sequences.append(broken)
    run.error = "agent link timed out"
    root = junit_tree(run).getroot()
    assert root.get("errors") == "2"
    messages = [e.get("message") for e in root.iter("error")]
    assert messages == ["agent link timed out", "agent link timed out"]
    assert run.exit_code() == 3
