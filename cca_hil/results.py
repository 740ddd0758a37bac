"""The result document of a run and the event stream that builds it (DESIGN.md "Results and exit codes").

A run emits events (run start, sequence start, step result, sequence end, run
end) to observers; the rich table, JSON, JUnit and the run log are observers
(``cca_hil.report``). Nothing here renders or does I/O.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from cca_hil.errors import EXIT_FAILED, EXIT_OK, EXIT_TARGET


class Outcome(StrEnum):
    """How a step, a sequence or a run ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"
    DIVERGED = "diverged"
    """A hardware target answered differently from the model's prediction."""


_SEVERITY = {
    Outcome.PASSED: 0,
    Outcome.SKIPPED: 1,
    Outcome.FAILED: 2,
    Outcome.DIVERGED: 3,
    Outcome.ERROR: 4,
}


def worst(outcomes: Iterable[Outcome]) -> Outcome:
    """Outcome of a group: the most severe non-skipped one; ``skipped`` if all were; ``passed`` if empty."""
    items = list(outcomes)
    ran = [o for o in items if o is not Outcome.SKIPPED]
    if not ran:
        return Outcome.SKIPPED if items else Outcome.PASSED
    return max(ran, key=_SEVERITY.__getitem__)


def now() -> str:
    """Current UTC time as ISO 8601 with a Z suffix."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepResult:
    """One executed (or skipped) step: what was sent, what came back, what was expected, the verdict."""

    name: str
    op: str
    """Kind of step: ``rmi``, ``rsi``, ``access``, ``check``, ``smc`` …"""
    command: str
    """Command or check name (``granule_delegate``, ``pas`` …)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Arguments as sent (resolved addresses and register values)."""
    registers: tuple[int, ...] = ()
    """Raw X0.. returned."""
    status: str | None = None
    """Decoded status name (``success``, ``error_rtt`` …, ``gpf`` for accesses)."""
    index: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    """Decoded outputs by spec name."""
    condition: str | None = None
    """Spec label of the failure condition the target reported, where it can say (the model)."""
    expected: str = ""
    """The expectation in words, as written in the sequence."""
    outcome: Outcome = Outcome.PASSED
    message: str = ""
    """Why a step failed, was skipped or errored (empty when it passed)."""
    duration: float = 0.0
    """Seconds."""
    line: int | None = None
    """Line of the step in its sequence file."""
    predicted: dict[str, Any] | None = None
    """The model's prediction on hardware targets (registers, status, outputs)."""
    matched: bool | None = None
    """Whether the target matched the prediction (None when not compared)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (registers as hex strings, outcome as its name)."""
        data = asdict(self)
        data["registers"] = [f"{r:#x}" for r in self.registers]
        data["outcome"] = str(self.outcome)
        result: dict[str, Any] = _jsonable(data)
        return result


@dataclass
class SequenceResult:
    """All steps of one sequence run on one target."""

    name: str
    source: str
    description: str = ""
    steps: list[StepResult] = field(default_factory=list)
    started: str = ""
    ended: str = ""
    skipped_reason: str = ""
    """Set when the whole sequence was skipped (a required capability is missing)."""
    error: str = ""
    """Set when the sequence could not finish (target or transport error)."""

    @property
    def outcome(self) -> Outcome:
        """Worst step outcome; ``skipped`` if skipped as a whole; ``error`` if it broke off."""
        if self.error:
            return Outcome.ERROR
        if self.skipped_reason:
            return Outcome.SKIPPED
        return worst(s.outcome for s in self.steps)

    def counts(self) -> dict[str, int]:
        """Number of steps per outcome name."""
        out = {str(o): 0 for o in Outcome}
        for step in self.steps:
            out[str(step.outcome)] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "outcome": str(self.outcome),
            "started": self.started,
            "ended": self.ended,
            "skipped_reason": self.skipped_reason,
            "error": self.error,
            "counts": self.counts(),
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass
class RunResult:
    """The result document of one ``run``, ``check`` or ``conformance`` invocation."""

    target: str
    profile: str
    kind: str
    tool_version: str
    command: str = "run"
    started: str = field(default_factory=now)
    ended: str = ""
    sequences: list[SequenceResult] = field(default_factory=list)
    run_dir: str = ""
    error: str = ""
    """A target/transport error that ended the run early."""

    @property
    def outcome(self) -> Outcome:
        """Worst sequence outcome (``error`` if the run itself broke off)."""
        if self.error:
            return Outcome.ERROR
        return worst(s.outcome for s in self.sequences)

    def exit_code(self) -> int:
        """0 all held, 1 an expectation failed or diverged, 3 a target/transport error."""
        outcome = self.outcome
        if outcome is Outcome.ERROR:
            return EXIT_TARGET
        if outcome in (Outcome.FAILED, Outcome.DIVERGED):
            return EXIT_FAILED
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        """Steps per outcome name over all sequences."""
        out = {str(o): 0 for o in Outcome}
        for seq in self.sequences:
            for key, value in seq.counts().items():
                out[key] += value
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON result document."""
        return {
            "schema": "cca-hil-result/1",
            "command": self.command,
            "target": self.target,
            "profile": self.profile,
            "kind": self.kind,
            "tool_version": self.tool_version,
            "started": self.started,
            "ended": self.ended,
            "run_dir": self.run_dir,
            "outcome": str(self.outcome),
            "exit_code": self.exit_code(),
            "error": self.error,
            "counts": self.counts(),
            "sequences": [s.to_json() for s in self.sequences],
        }


class Observer(Protocol):
    """Something that follows a run as it happens (views, logs, live progress)."""

    def run_started(self, run: RunResult) -> None:
        """The run began; ``run`` has target/profile set and no sequences yet."""

    def sequence_started(self, sequence: SequenceResult, total_steps: int) -> None:
        """A sequence began."""

    def step_finished(self, sequence: SequenceResult, step: StepResult) -> None:
        """A step has its verdict (already appended to ``sequence.steps``)."""

    def sequence_finished(self, sequence: SequenceResult) -> None:
        """A sequence ended (passed, failed, skipped or broke off)."""

    def run_finished(self, run: RunResult) -> None:
        """The run ended; ``run.ended`` is set."""


class Events:
    """Fans events out to observers; an observer's failure never loses the others' output."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: Observer) -> None:
        """Subscribe one more observer."""
        self.observers.append(observer)

    def run_started(self, run: RunResult) -> None:
        for obs in self.observers:
            obs.run_started(run)

    def sequence_started(self, sequence: SequenceResult, total_steps: int) -> None:
        for obs in self.observers:
            obs.sequence_started(sequence, total_steps)

    def step_finished(self, sequence: SequenceResult, step: StepResult) -> None:
        for obs in self.observers:
            obs.step_finished(sequence, step)

    def sequence_finished(self, sequence: SequenceResult) -> None:
        for obs in self.observers:
            obs.sequence_finished(sequence)

    def run_finished(self, run: RunResult) -> None:
        for obs in self.observers:
            obs.run_finished(run)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, StrEnum):
        return str(value)
    return value
