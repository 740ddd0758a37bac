"""Check cases and how a check runs them: one StepResult per case, one SequenceResult per section.

A check (``check gpt``, ``check mec``) is a list of sections, each a list of
:class:`Case`; running them emits the same events a sequence run does
(``cca_hil.results``), so the rich table, JSON, JUnit and the run folder show
a check like any run (DESIGN.md "Results and exit codes"). A case whose
target lacks a capability is ``skipped`` with the reason; a target error makes
it ``error``; an expectation that does not hold makes it ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cca_hil import __version__
from cca_hil.errors import CapabilityError, TargetError, TransportError
from cca_hil.results import Events, Outcome, RunResult, SequenceResult, StepResult, now
from cca_hil.targets.base import Target


@dataclass(frozen=True)
class Verdict:
    """What one case observed, and whether that is what the architecture says."""

    passed: bool
    observed: str
    """The outcome in a word or two (``ok``, ``gpf``, ``ciphertext`` …): the step's status."""
    message: str = ""
    """Why it failed (or what was seen, for a pass worth explaining)."""
    outputs: Mapping[str, Any] = field(default_factory=dict)
    registers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Case:
    """One case: named after its architectural rule, with what it needs and what it expects."""

    name: str
    command: str
    expected: str
    run: Callable[[], Verdict]
    requires: tuple[str, ...] = ()
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Section:
    """A group of cases reported as one sequence; ``cases`` is called when the section starts."""

    name: str
    description: str
    cases: Callable[[], Sequence[Case]]
    requires: tuple[str, ...] = ()


def run_case(target: Target, case: Case) -> StepResult:
    """Run one case: its verdict, or skipped/error with the reason."""
    step = StepResult(
        name=case.name,
        op="check",
        command=case.command,
        args=dict(case.args),
        expected=case.expected,
    )
    missing = [cap for cap in case.requires if not target.has(cap)]
    if missing:
        step.outcome = Outcome.SKIPPED
        step.message = f"target {target.name!r} lacks {', '.join(missing)}"
        return step
    start = time.perf_counter()
    try:
        verdict = case.run()
    except CapabilityError as exc:
        step.outcome = Outcome.SKIPPED
        step.message = str(exc)
    except TransportError:
        raise
    except TargetError as exc:
        step.outcome = Outcome.ERROR
        step.message = str(exc)
    else:
        step.status = verdict.observed
        step.outputs = dict(verdict.outputs)
        step.registers = verdict.registers
        step.outcome = Outcome.PASSED if verdict.passed else Outcome.FAILED
        step.message = "" if verdict.passed else verdict.message
    step.duration = time.perf_counter() - start
    return step


def run_section(target: Target, section: Section, events: Events) -> SequenceResult:
    """Run a section's cases in order, as one sequence result."""
    result = SequenceResult(
        name=section.name, source=f"check:{section.name}", description=section.description, started=now()
    )
    missing = [cap for cap in section.requires if not target.has(cap)]
    cases: Sequence[Case] = ()
    if missing:
        result.skipped_reason = f"target {target.name!r} lacks {', '.join(missing)}"
    else:
        try:
            cases = section.cases()
        except CapabilityError as exc:
            result.skipped_reason = str(exc)
        except TargetError as exc:
            result.error = f"could not prepare the cases: {exc}"
    events.sequence_started(result, len(cases))
    for case in cases:
        step = run_case(target, case)
        result.steps.append(step)
        events.step_finished(result, step)
    result.ended = now()
    events.sequence_finished(result)
    return result


def run_check(
    target: Target, sections: Iterable[Section], *, command: str, events: Events | None = None
) -> RunResult:
    """Run every section of a check on ``target``; the run's result document."""
    events = events or Events()
    profile = target.profile
    run = RunResult(
        target=target.name,
        profile=profile.source if profile.source != "<built-in>" else profile.name,
        kind=target.kind,
        tool_version=__version__,
        command=command,
    )
    events.run_started(run)
    try:
        for section in sections:
            run.sequences.append(run_section(target, section, events))
    except TransportError as exc:
        run.error = str(exc)
    run.ended = now()
    events.run_finished(run)
    return run


def hexdump(data: bytes, limit: int = 16) -> str:
    """The first ``limit`` bytes as hex, for messages."""
    return data[:limit].hex() + ("…" if len(data) > limit else "")
