"""Views of a run, each an Observer of the one event stream (DESIGN.md "Results and exit codes").

- :class:`ConsoleView` — live progress on a terminal, plain lines in a log;
  failures always shown with what differed and the sequence's file:line.
- :class:`RunFolder` — ``events.jsonl`` written line by line as steps finish
  (flushed, so a crash loses nothing) and ``result.json`` at the end.
- :class:`JsonReport` — the result document at ``--json PATH``, written atomically.
- :class:`JunitReport` — JUnit XML at ``--junit PATH``: a testsuite per sequence,
  a testcase per step.

No view recomputes what the result document already knows: counts, outcomes and
exit codes come from :mod:`cca_hil.results`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self
from xml.etree import ElementTree as ET

from cca_hil.results import Outcome, RunResult, SequenceResult, StepResult, now

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


LOG_WIDTH = 120
"""Width of tables when the output is a log rather than a terminal (``$COLUMNS`` overrides it)."""


class Verbosity(IntEnum):
    """How much a terminal view prints."""

    QUIET = 0
    """Only the final summary line."""
    NORMAL = 1
    """A line per sequence, failures, the summary."""
    VERBOSE = 2
    """A line per step as well."""


_LABEL = {
    Outcome.PASSED: "PASS",
    Outcome.FAILED: "FAIL",
    Outcome.SKIPPED: "SKIP",
    Outcome.ERROR: "ERROR",
    Outcome.DIVERGED: "DIVERGED",
}
_STYLE = {
    Outcome.PASSED: "green",
    Outcome.FAILED: "bold red",
    Outcome.SKIPPED: "yellow",
    Outcome.ERROR: "bold magenta",
    Outcome.DIVERGED: "bold red",
}


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def silence_stdout() -> None:
    """Point standard output at the null device once its reader went away (``cca-hil … | head``).

    Later writes, and the interpreter's final flush, then succeed quietly
    instead of raising BrokenPipeError all over again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def stdout_console() -> Console:
    """The console the views print to: colour on a terminal, plain text of a readable width in a log."""
    from rich.console import Console

    class _StdoutConsole(Console):
        def on_broken_pipe(self) -> None:
            # Rich would exit 1 ("an expectation failed"); instead the view falls silent and the
            # run, its files and its exit code carry on.
            self.quiet = True
            silence_stdout()

    if sys.stdout.isatty():
        return _StdoutConsole(highlight=False)
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else LOG_WIDTH
    return _StdoutConsole(highlight=False, width=width, no_color=True)


def result_document(run: RunResult) -> str:
    """The result document as JSON text: one line, so that json's C encoder writes even 10^5 steps at once."""
    return json.dumps(run.to_json(), separators=(",", ":")) + "\n"


def step_location(sequence: SequenceResult, step: StepResult) -> str:
    """``file:line`` of a step (the file alone when the line is unknown)."""
    return f"{sequence.source}:{step.line}" if step.line else sequence.source


def step_verdict(step: StepResult) -> str:
    """What came back, in words: ``error_input index 0 (gran_state)``."""
    text = step.status or "no answer"
    if step.index:
        text += f" index {step.index}"
    if step.condition:
        text += f" ({step.condition})"
    return text


def failure_detail(step: StepResult) -> str:
    """What differed: the runner's message, or expected vs got."""
    if step.message:
        return step.message
    return f"expected {step.expected or 'success'}, got {step_verdict(step)}"


def divergence_lines(step: StepResult) -> list[str]:
    """Target vs model, register by register (``*`` marks a register that differs); empty if not compared."""
    if step.predicted is None or step.matched is not False:
        return []
    model = [str(r) for r in step.predicted.get("registers", ())]
    target = [f"{r:#x}" for r in step.registers]
    width = max(len(model), len(target))
    cells_t: list[str] = []
    cells_m: list[str] = []
    for i in range(width):
        got = target[i] if i < len(target) else "-"
        want = model[i] if i < len(model) else "-"
        mark = "*" if got != want else ""
        cells_t.append(f"X{i}={got}{mark}")
        cells_m.append(f"X{i}={want}{mark}")
    status = step.predicted.get("status")
    index = step.predicted.get("index")
    predicted = f"{status}" + (f" index {index}" if index else "")
    return [
        f"target: {step_verdict(step):24} {' '.join(cells_t)}",
        f"model:  {predicted:24} {' '.join(cells_m)}",
    ]


def sequence_seconds(sequence: SequenceResult) -> float:
    """Time spent in the steps of a sequence."""
    return sum(s.duration for s in sequence.steps)


def summary_line(run: RunResult) -> str:
    """The one line a run ends with: counts, verdict, exit code, where the results are."""
    counts = run.counts()
    parts = [f"{counts[str(o)]} {o}" for o in Outcome if counts[str(o)] or o is Outcome.PASSED]
    steps = sum(counts.values())
    plural = "s" if len(run.sequences) != 1 else ""
    text = (
        f"{run.command}: {len(run.sequences)} sequence{plural}, {steps} steps: {', '.join(parts)}"
        f" — {str(run.outcome).upper()} (exit {run.exit_code()})"
    )
    if run.error:
        text += f" — {run.error}"
    if run.run_dir:
        text += f" — results in {run.run_dir}"
    return text


class ConsoleView:
    """The terminal view: live progress on a TTY, plain text in a log, failures always shown."""

    def __init__(self, console: Console, *, verbosity: Verbosity = Verbosity.NORMAL) -> None:
        self.console = console
        self.verbosity = verbosity
        self._progress: Progress | None = None
        self._tasks: dict[int, TaskID] = {}

    @property
    def live(self) -> bool:
        """True when progress is drawn in place (an interactive terminal, not quiet)."""
        return (
            self.console.is_terminal
            and not self.console.is_dumb_terminal
            and self.verbosity > Verbosity.QUIET
        )

    def _print(self, text: str, style: str | None = None) -> None:
        # Messages carry brackets and user text: never interpret them as markup, never wrap log lines.
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def run_started(self, run: RunResult) -> None:
        if self.verbosity > Verbosity.QUIET:
            self._print(f"{run.command} on {run.target} (profile {run.profile}, {run.kind})", "bold")
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()

    def sequence_started(self, sequence: SequenceResult, total_steps: int) -> None:
        if self.verbosity >= Verbosity.VERBOSE:
            self._print(f"{sequence.name} ({sequence.source}, {total_steps} steps)", "bold")
        if self._progress is not None:
            self._tasks[id(sequence)] = self._progress.add_task(sequence.name, total=total_steps or None)

    def step_finished(self, sequence: SequenceResult, step: StepResult) -> None:
        if self._progress is not None and id(sequence) in self._tasks:
            self._progress.advance(self._tasks[id(sequence)])
        if self.verbosity == Verbosity.QUIET:
            return
        bad = step.outcome in (Outcome.FAILED, Outcome.ERROR, Outcome.DIVERGED)
        if self.verbosity >= Verbosity.VERBOSE:
            line = (
                f"  {_LABEL[step.outcome]:8} {step.name}  {step.op} {step.command}  → {step_verdict(step)}"
                f"  [{step.duration * 1000:.1f} ms]"
            )
            self._print(line, _STYLE[step.outcome] if step.outcome is not Outcome.PASSED else None)
        elif bad:
            self._print(f"  {_LABEL[step.outcome]:8} {sequence.name} › {step.name}", _STYLE[step.outcome])
        if bad:
            self._print(f"           {step_location(sequence, step)}: {failure_detail(step)}")
            for line in divergence_lines(step):
                self._print(f"           {line}", _STYLE[Outcome.DIVERGED])
        elif step.outcome is Outcome.SKIPPED and self.verbosity >= Verbosity.VERBOSE and step.message:
            self._print(f"           skipped: {step.message}")

    def sequence_finished(self, sequence: SequenceResult) -> None:
        if self._progress is not None and id(sequence) in self._tasks:
            self._progress.remove_task(self._tasks.pop(id(sequence)))
        if self.verbosity == Verbosity.QUIET:
            return
        outcome = sequence.outcome
        counts = sequence.counts()
        shown = ", ".join(f"{counts[str(o)]} {o}" for o in Outcome if counts[str(o)])
        seconds = sequence_seconds(sequence)
        text = f"{_LABEL[outcome]:8} {sequence.name}  {shown or 'no steps'}  [{seconds:.3f} s]"
        if sequence.skipped_reason:
            text += f"  skipped: {sequence.skipped_reason}"
        if sequence.error:
            text += f"  error: {sequence.error}"
        self._print(text, _STYLE[outcome])

    def run_finished(self, run: RunResult) -> None:
        self.close()
        self._print(summary_line(run), None if self.verbosity == Verbosity.QUIET else _STYLE[run.outcome])

    def close(self) -> None:
        """Stop live progress (idempotent; called when a run breaks off too)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


class RunFolder:
    """The run folder: ``events.jsonl`` as the run happens, ``result.json`` when it ends."""

    EVENTS = "events.jsonl"
    RESULT = "result.json"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._events: IO[str] | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Create the folder and start the event log (idempotent)."""
        if self._events is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._events = (self.path / self.EVENTS).open("a", encoding="utf-8")

    def close(self) -> None:
        """Close the event log (idempotent)."""
        if self._events is not None:
            self._events.close()
            self._events = None

    def record(self, event: str, **fields: Any) -> None:
        """Append one event as a JSON line and flush it to the OS at once."""
        self.open()
        assert self._events is not None
        line = json.dumps({"event": event, "time": now(), **fields}, separators=(",", ":"))
        self._events.write(line + "\n")
        self._events.flush()

    def run_started(self, run: RunResult) -> None:
        run.run_dir = str(self.path)
        self.record(
            "run_started",
            command=run.command,
            target=run.target,
            profile=run.profile,
            kind=run.kind,
            tool_version=run.tool_version,
        )

    def sequence_started(self, sequence: SequenceResult, total_steps: int) -> None:
        self.record("sequence_started", sequence=sequence.name, source=sequence.source, steps=total_steps)

    def step_finished(self, sequence: SequenceResult, step: StepResult) -> None:
        self.record("step_finished", sequence=sequence.name, step=step.to_json())

    def sequence_finished(self, sequence: SequenceResult) -> None:
        self.record(
            "sequence_finished",
            sequence=sequence.name,
            outcome=str(sequence.outcome),
            counts=sequence.counts(),
            skipped_reason=sequence.skipped_reason,
            error=sequence.error,
        )

    def run_finished(self, run: RunResult) -> None:
        self.record("run_finished", outcome=str(run.outcome), exit_code=run.exit_code(), error=run.error)
        write_atomically(self.path / self.RESULT, result_document(run))
        self.close()


class _FinalOnly:
    """Base of the views that only act when the run has ended."""

    def run_started(self, run: RunResult) -> None:
        """Nothing to do until the end."""

    def sequence_started(self, sequence: SequenceResult, total_steps: int) -> None:
        """Nothing to do until the end."""

    def step_finished(self, sequence: SequenceResult, step: StepResult) -> None:
        """Nothing to do until the end."""

    def sequence_finished(self, sequence: SequenceResult) -> None:
        """Nothing to do until the end."""


class JsonReport(_FinalOnly):
    """Writes the result document (``RunResult.to_json()``) to a file when the run ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, run: RunResult) -> None:
        """Write the document atomically."""
        write_atomically(self.path, result_document(run))


class JunitReport(_FinalOnly):
    """Writes JUnit XML when the run ends: a testsuite per sequence, a testcase per step."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, run: RunResult) -> None:
        """Write the XML atomically."""
        tree = junit_tree(run)
        ET.indent(tree)
        text = ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=False)
        write_atomically(self.path, '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")


def _seconds(value: float) -> str:
    return f"{value:.6f}"


def junit_tree(run: RunResult) -> ET.ElementTree[ET.Element]:
    """The run as a JUnit XML tree (the schema Jenkins, GitLab and GitHub reporters read)."""
    root = ET.Element(
        "testsuites",
        {
            "name": f"cca-hil {run.command}",
            "tests": "0",
            "failures": "0",
            "errors": "0",
            "skipped": "0",
            "time": _seconds(sum(sequence_seconds(s) for s in run.sequences)),
        },
    )
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for sequence in run.sequences:
        suite = _suite(run, sequence)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    if run.error:
        suite = ET.SubElement(root, "testsuite", {"name": run.command, "tests": "1", "errors": "1"})
        suite.set("failures", "0")
        suite.set("skipped", "0")
        case = ET.SubElement(suite, "testcase", {"name": "run", "classname": run.command, "time": "0"})
        ET.SubElement(case, "error", {"message": run.error, "type": "target"}).text = run.error
        totals["tests"] += 1
        totals["errors"] += 1
    for key, value in totals.items():
        root.set(key, str(value))
    return ET.ElementTree(root)


def _junit_timestamp(iso: str) -> str:
    # The Ant JUnit schema's timestamp is a plain local-less date-time to the second (no zone, no fraction).
    return iso[:19]


def _suite(run: RunResult, sequence: SequenceResult) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        {
            "name": sequence.name,
            "timestamp": _junit_timestamp(sequence.started or run.started),
            "hostname": socket.gethostname(),
            "time": _seconds(sequence_seconds(sequence)),
            "file": sequence.source,
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("target", run.target),
        ("profile", run.profile),
        ("kind", run.kind),
        ("tool_version", run.tool_version),
    ):
        ET.SubElement(props, "property", {"name": name, "value": value})
    if sequence.description:
        ET.SubElement(props, "property", {"name": "description", "value": sequence.description})
    tally = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for step in sequence.steps:
        suite.append(_case(sequence, step))
        tally["tests"] += 1
        if step.outcome in (Outcome.FAILED, Outcome.DIVERGED):
            tally["failures"] += 1
        elif step.outcome is Outcome.ERROR:
            tally["errors"] += 1
        elif step.outcome is Outcome.SKIPPED:
            tally["skipped"] += 1
    # A sequence skipped or broken off as a whole still shows up as a case, or CI would not see it.
    if sequence.skipped_reason and not sequence.steps:
        case = ET.SubElement(
            suite, "testcase", {"name": sequence.name, "classname": sequence.name, "time": "0"}
        )
        ET.SubElement(case, "skipped", {"message": sequence.skipped_reason})
        tally["tests"] += 1
        tally["skipped"] += 1
    if sequence.error:
        case = ET.SubElement(
            suite,
            "testcase",
            {"name": f"{sequence.name} (sequence)", "classname": sequence.name, "time": "0"},
        )
        ET.SubElement(case, "error", {"message": sequence.error, "type": "target"}).text = sequence.error
        tally["tests"] += 1
        tally["errors"] += 1
    for key, count in tally.items():
        suite.set(key, str(count))
    return suite


def _case(sequence: SequenceResult, step: StepResult) -> ET.Element:
    attrs = {
        "name": step.name,
        "classname": sequence.name,
        "time": _seconds(step.duration),
        "file": sequence.source,
    }
    if step.line:
        attrs["line"] = str(step.line)
    case = ET.Element("testcase", attrs)
    where = step_location(sequence, step)
    if step.outcome in (Outcome.FAILED, Outcome.DIVERGED):
        detail = failure_detail(step)
        failure = ET.SubElement(case, "failure", {"message": detail, "type": str(step.outcome)})
        failure.text = _details(step, where)
    elif step.outcome is Outcome.ERROR:
        error = ET.SubElement(case, "error", {"message": step.message or "error", "type": "error"})
        error.text = _details(step, where)
    elif step.outcome is Outcome.SKIPPED:
        ET.SubElement(case, "skipped", {"message": step.message or "skipped"})
    return case


def _details(step: StepResult, where: str) -> str:
    data = step.to_json()
    lines = [
        failure_detail(step),
        f"at {where}",
        f"{step.op} {step.command} {json.dumps(data['args'])}",
        f"expected: {step.expected or 'success'}",
        f"got: {step_verdict(step)}",
        "registers: " + " ".join(data["registers"]),
    ]
    if step.outputs:
        lines.append(f"outputs: {json.dumps(data['outputs'])}")
    if step.predicted is not None:
        lines.append(f"model predicted: {json.dumps(data['predicted'])}")
        lines.extend(divergence_lines(step))
    return "\n".join(lines)
