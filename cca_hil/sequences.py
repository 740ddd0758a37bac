"""YAML sequences: load them, run them on any target, get a result document (DESIGN.md "Sequence files").

``load_sequence`` validates and compiles a file (every problem is a
SequenceError naming ``file:line`` and the valid choices, before anything
runs); :class:`Runner` executes compiled sequences on a target through the
RMI client, compares each answer with the step's ``expect`` and reports every
step to the event stream (``cca_hil.results``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml

from cca_hil import __version__
from cca_hil.arch.rmi import GRANULE_SIZE, MASK64, SMCCC_NOT_SUPPORTED, RmiStatus, status_name, to_signed64
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import (
    MAX_REC_AUX,
    RealmParams,
    RecCreateFlags,
    RecEnter,
    RecParams,
    rec_mpidr_for_index,
)
from cca_hil.errors import CapabilityError, TargetError, TransportError
from cca_hil.results import Events, Outcome, RunResult, SequenceResult, StepResult, now
from cca_hil.rmi_client import GranuleAllocator, RmiClient, RmiResult, output_defined
from cca_hil.seqformat import (
    EXIT_REASON_NAMES,
    FEATURE_REQUIREMENTS,
    PSCI_STATUS_NAMES,
    RIPAS_NAMES,
    RMI_STATUS_NAMES,
    RSI_COMMANDS,
    RSI_STATUS_NAMES,
    AccessStep,
    CheckStep,
    Expect,
    Expr,
    RealmActionSpec,
    RmiStep,
    RsiStep,
    Sequence,
    SmcStep,
    Step,
    StructSpec,
    Value,
    Wide,
    load_sequence,
    load_sequence_text,
    parse_value,
)
from cca_hil.shadow import (
    RecordingAllocator,
    ReplayAllocator,
    RmmFacts,
    addresses_in,
    build_shadow,
    granule_view,
    read_rmm_facts,
)
from cca_hil.targets.base import Capability, Target, TargetInfo
from cca_hil.targets.model import ModelTarget

__all__ = [
    "RealmAction",
    "Runner",
    "Sequence",
    "Step",
    "load_sequence",
    "load_sequence_text",
    "parse_value",
]

_REC_ENTER = "rec_enter"
_EXIT_NAMES = {v: k for k, v in EXIT_REASON_NAMES.items()}
_RIPAS_BY_VALUE = {v: k for k, v in RIPAS_NAMES.items()}


@dataclass(eq=False)
class RealmAction:
    """One thing a realm does during a REC entry, and what it observed (filled in by the target).

    The runner hands a target's ``realm_enter`` the queued actions of that REC
    in order. The target sets :attr:`started` on each action the realm performs
    and :attr:`result` (X0.. as the realm saw them) once the realm observes its
    outcome — at once for calls the RMM completes, on a later entry for calls
    that exit to the host. Actions not started stay queued for the next entry.
    """

    kind: str
    """One of ``seqformat.REALM_ACTION_KINDS``: ``rsi``, ``psci``, ``smc``, ``mmio``, ``hvc``, ``wfi`` …"""
    name: str
    """RSI/PSCI function name, ``read``/``write`` for mmio, register name for sysreg."""
    fid: int | None
    args: Mapping[str, Any]
    """Resolved arguments by name (ints; ``bytes`` for 64-byte values; ``{n: v}`` for gprs)."""
    spec: RealmActionSpec | None = field(default=None, repr=False)
    started: bool = False
    result: tuple[int, ...] | None = None
    condition: str | None = None
    """Spec label of the RSI/PSCI failure condition the RMM found, where the target can tell."""

    def start(self) -> None:
        """The realm performed this action."""
        self.started = True

    def complete(self, registers: Iterable[int], condition: str | None = None) -> None:
        """The realm observed the outcome: X0.. (X0 alone for actions with one result), and its condition."""
        self.started = True
        self.result = tuple(registers)
        self.condition = condition


class _Unresolved(Exception):
    """A step uses a saved name that an earlier step did not produce."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name!r} is not available: {reason}")


@dataclass
class _Session:
    """Per-sequence state: the value environment and the host-side bookkeeping a real host keeps."""

    env: dict[str, int]
    unresolved: dict[str, str] = field(default_factory=dict)
    scratch: dict[str, int] = field(default_factory=dict)
    written: dict[int, bytes] = field(default_factory=dict)
    recs_of_rd: dict[int, int] = field(default_factory=dict)
    aux_count: dict[int, int] = field(default_factory=dict)
    rec_aux: dict[int, list[int]] = field(default_factory=dict)
    realm_rtts: dict[int, list[int]] = field(default_factory=dict)
    spare: list[int] = field(default_factory=list)
    """Delegated granules the runner provided and nothing uses now: reused, and undelegated at the end."""
    run_of_rec: dict[int, int] = field(default_factory=dict)
    queued: dict[int, list[RealmAction]] = field(default_factory=dict)
    in_flight: dict[int, list[RealmAction]] = field(default_factory=dict)


@dataclass
class _Call:
    """What a step sent and got back, before comparison."""

    args: dict[str, Any] = field(default_factory=dict)
    registers: tuple[int, ...] = ()
    status: str | None = None
    index: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    condition: str | None = None
    problems: list[str] = field(default_factory=list)
    extra: list[StepResult] = field(default_factory=list)
    auto_aux: list[int] | None = None
    """Auxiliary granules the runner provided for a rec_create (reusable if the call fails)."""
    auto_rtts: list[int] | None = None
    """Starting-level RTTs the runner provided for a realm_create."""


def _fmt(value: object) -> str:
    if isinstance(value, IntEnum):
        return value.name.lower()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int):
        return f"{value:#x}" if value > 9 else str(value)
    return str(value)


def _shown(value: object) -> object:
    """A decoded output as results show it: enumerations by lower-case name."""
    if isinstance(value, IntEnum):
        return value.name.lower()
    return value


def _as_expect(answer: StepResult) -> object:
    """The target's answer written as a step's ``expect``: status, index and the command's outputs."""
    if answer.op in ("access", "check"):
        return answer.status
    expect: dict[str, Any] = {"status": answer.status}
    if answer.index is not None:
        expect["index"] = answer.index
    outputs = _expectable_outputs(answer)
    if outputs:
        expect["outputs"] = outputs
    return expect if len(expect) > 1 else answer.status


def _expectable_outputs(answer: StepResult) -> dict[str, Any]:
    """The outputs of an RMI or RSI answer that its command defines for the status it gave."""
    names: set[str] = set()
    if answer.op == "rmi" and answer.command in RMI_1_0.by_name:
        command = RMI_1_0.by_name[answer.command]
        status = RmiStatus[answer.status.upper()] if answer.status in RMI_STATUS_NAMES else None
        names = {o.name for o in command.outputs if output_defined(o, status)}
    elif answer.op == "rsi" and answer.status == "success" and answer.command in RSI_COMMANDS:
        names = set(RSI_COMMANDS[answer.command].outputs)
    return {name: _plain_output(value) for name, value in answer.outputs.items() if name in names}


def _plain_output(value: object) -> object:
    """An output as YAML writes it: enumerations by name, numbers in hex, bytes as hex text."""
    if isinstance(value, IntEnum):
        return value.name.lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, bytes):
        return "0x" + value.hex() if value else 0
    return value


def reproducer_document(
    sequence: Sequence, position: int, answers: list[StepResult], number: int
) -> dict[str, Any]:
    """The steps up to ``position`` with the target's answers as ``expect`` (a loadable sequence)."""
    steps: list[Any] = []
    for raw, answer in zip(sequence.raw_steps[: position + 1], answers, strict=False):
        step = dict(raw)
        if answer.outcome is not Outcome.SKIPPED and answer.status is not None:
            step["expect"] = _as_expect(answer)
        steps.append(step)
    document: dict[str, Any] = {
        "sequence": f"{sequence.name}-divergence-{number}",
        "description": f"Reproduces divergence {number} of {sequence.name} ({sequence.source}) "
        f"at step {answers[position].name!r}: run it on the same target with --compare.",
    }
    if sequence.requires:
        document["requires"] = list(sequence.requires)
    if sequence.granules:
        document["granules"] = list(sequence.granules)
    document["steps"] = steps
    return document


class Runner:
    """Runs compiled sequences on one target and reports every step (DESIGN.md "Results and exit codes").

    With ``compare`` a shadow model (:mod:`cca_hil.shadow`) runs every step in lockstep on the same
    granules and predicts its answer: each step result carries ``predicted`` and ``matched``, and a
    step whose answer differs from the prediction is ``diverged``. A step that both misses its
    ``expect`` and diverges is reported as ``diverged`` (its message names both): the divergence says
    where the fault lies — the target departs from the model — and ``diverged`` ranks above ``failed``.
    The first divergence of each sequence writes a reproducer and a report into ``run_dir``.
    """

    def __init__(
        self,
        target: Target,
        *,
        events: Events | None = None,
        compare: bool = False,
        stop_on_divergence: bool = False,
        run_dir: Path | None = None,
        reset_each: bool = False,
    ) -> None:
        self.target = target
        self.reset_each = reset_each
        """Reset the target before each sequence, so each starts from a freshly booted target."""
        self.events = events if events is not None else Events()
        self.client = RmiClient(target)
        self.compare = compare
        self.stop_on_divergence = stop_on_divergence
        self.run_dir = run_dir if run_dir is not None else target.run_dir
        self.divergences = 0
        """Steps (and realm results) that diverged from the model in this runner's runs."""
        self.reports: list[Path] = []
        """Reproducers written (``divergence-<n>.yaml``), one per sequence that diverged."""
        self._info: TargetInfo | None = None
        self._facts: RmmFacts | None = None
        self._allocator: GranuleAllocator | None = None
        self._shadow: Runner | None = None
        self._next_vmid = 1
        self._aux_count: int | None = None
        self._transport_broken = False
        self._stopped = False

    # -- target facts, fetched once -----------------------------------------

    @property
    def info(self) -> TargetInfo:
        """The target's facts (asked once per runner)."""
        if self._info is None:
            self._info = self.target.info()
        return self._info

    @property
    def facts(self) -> RmmFacts:
        """The target's RMI_VERSION answer and feature register 0 (asked once per runner)."""
        if self._facts is None:
            self._facts = read_rmm_facts(self.target)
        return self._facts

    @property
    def allocator(self) -> GranuleAllocator:
        """Granules for every sequence this runner runs, from the target's pool (logged when comparing)."""
        if self._allocator is None:
            pool = self.info.granule_pool
            self._allocator = RecordingAllocator(pool) if self.compare else GranuleAllocator(pool)
        return self._allocator

    @property
    def shadow(self) -> ModelTarget | None:
        """The shadow model predicting the target (None when not comparing or not yet built)."""
        if self._shadow is None:
            return None
        target = self._shadow.target
        assert isinstance(target, ModelTarget)
        return target

    def _ensure_shadow(self) -> Runner:
        """The shadow runner, built at first need: AbiMismatch when the target's RMI is not the model's."""
        if self._shadow is None:
            self.facts.check_abi(self.target.name)
            model = build_shadow(self.target, self.info, self.facts)
            shadow = Runner(model)
            allocator = self.allocator
            assert isinstance(allocator, RecordingAllocator)
            shadow._allocator = ReplayAllocator(allocator)
            self._shadow = shadow
        return self._shadow

    def reset(self) -> None:
        """Reset the target and start over what this runner knew of its state (the shadow too)."""
        self.target.reset()
        self._allocator = None
        self._shadow = None
        self._next_vmid = 1
        self._aux_count = None

    def _lacks(self, requirement: str) -> bool:
        if requirement in FEATURE_REQUIREMENTS:
            return not self.facts.provides(requirement)
        return not self.target.has(requirement)

    # -- public entry points ----------------------------------------------------

    def run_all(self, sequences: Iterable[Sequence], *, command: str = "run") -> RunResult:
        """Run sequences in order; a broken transport ends the run, a target error only its sequence."""
        profile = self.target.profile
        run = RunResult(
            target=self.target.name,
            profile=profile.source if profile.source != "<built-in>" else profile.name,
            kind=self.target.kind,
            tool_version=__version__,
            command=command,
        )
        self.events.run_started(run)
        try:
            if self.compare:
                self._ensure_shadow()
        except TargetError as exc:
            # One clear error (an RMM 2.0, a target that will not answer) instead of a cascade of divergences.
            run.error = f"cannot compare with the model: {exc}"
            sequences = ()
        for sequence in sequences:
            result = self.run(sequence)
            run.sequences.append(result)
            if result.error and self._transport_broken:
                run.error = result.error
                break
            if self._stopped:
                break
        run.ended = now()
        self.events.run_finished(run)
        return run

    def run(self, sequence: Sequence) -> SequenceResult:
        """Run one sequence; its result is complete whether it passed, failed, was skipped or broke off."""
        self._transport_broken = False
        result = SequenceResult(
            name=sequence.name,
            source=sequence.source,
            description=sequence.description,
            started=now(),
        )
        self.events.sequence_started(result, len(sequence.steps))
        try:
            if self.reset_each:
                self.reset()
            missing = [cap for cap in sequence.requires if self._lacks(cap)]
            shadow = self._ensure_shadow() if self.compare and not missing else None
            session = self._session(sequence) if not missing else None
            shadow_session = shadow._session(sequence) if shadow is not None else None
        except TargetError as exc:
            result.error = f"could not prepare the sequence: {exc}"
            self._transport_broken = isinstance(exc, TransportError)
        else:
            if missing:
                derived = [m for m in missing if m in FEATURE_REQUIREMENTS]
                why = f" (its RMM reports RMI {self.facts.describe_version()})" if derived else ""
                result.skipped_reason = f"target {self.target.name!r} lacks {', '.join(missing)}{why}"
            elif session is not None:
                self._steps(sequence, session, result, shadow_session)
                if not self._transport_broken:
                    self._tidy(session)
                    if shadow is not None and shadow_session is not None:
                        shadow._tidy(shadow_session)
        result.ended = now()
        self.events.sequence_finished(result)
        return result

    # -- running ------------------------------------------------------------------

    def _tidy(self, session: _Session) -> None:
        """Give the granules the runner delegated, and no realm uses any more, back to the NS world."""
        try:
            for pa in session.spare:
                self.client.granule_undelegate(pa)
        except TargetError:
            # Housekeeping after the verdicts: a failure here changes none of them.
            pass
        session.spare.clear()

    def _session(self, sequence: Sequence) -> _Session:
        env = {f"platform.{k}": v for k, v in self.info.platform.items()}
        env.update(self.allocator.named(sequence.granules))
        return _Session(env=env)

    def _steps(
        self,
        sequence: Sequence,
        session: _Session,
        result: SequenceResult,
        shadow_session: _Session | None = None,
    ) -> None:
        answers: list[StepResult] = []
        reported = False
        for position, step in enumerate(sequence.steps):
            started = time.perf_counter()
            call = _Call()
            outcome = Outcome.PASSED
            message = ""
            try:
                self._execute(step, session, call)
            except CapabilityError as exc:
                outcome, message = Outcome.SKIPPED, str(exc)
            except _Unresolved as exc:
                outcome, message = Outcome.SKIPPED, str(exc)
            except TargetError as exc:
                outcome, message = Outcome.ERROR, str(exc)
                result.error = f"step {step.name!r} (line {step.line}): {exc}"
                self._transport_broken = isinstance(exc, TransportError)
            else:
                if call.problems:
                    outcome, message = Outcome.FAILED, "; ".join(call.problems)
            if outcome is not Outcome.PASSED:
                self._forget(step, session, message)
            predicted: _Call | None = None
            if self._shadow is not None and shadow_session is not None:
                predicted = self._shadow._predict(step, shadow_session)
            step_result = StepResult(
                name=step.name,
                op=step.op,
                command=step.command,
                args=call.args,
                registers=call.registers,
                status=call.status,
                index=call.index,
                outputs=call.outputs,
                condition=call.condition,
                expected=step.expect.text,
                outcome=outcome,
                message=message,
                duration=time.perf_counter() - started,
                line=step.line,
            )
            diverged = False
            if predicted is not None:
                diverged = self._judge(step_result, predicted)
                for extra, model_extra in zip(call.extra, predicted.extra, strict=False):
                    diverged = self._judge_extra(extra, model_extra) or diverged
                for extra in call.extra[len(predicted.extra) :]:
                    extra.matched, extra.predicted = (
                        False,
                        {"error": "the model's realm did not observe this"},
                    )
                    extra.outcome, extra.message = (
                        Outcome.DIVERGED,
                        "diverged: the model predicts no such result",
                    )
                    diverged = True
            answers.append(step_result)
            if diverged:
                self.divergences += 1
                if not reported:
                    reported = True
                    self._report_divergence(sequence, position, answers, call, step_result)
            result.steps.append(step_result)
            self.events.step_finished(result, step_result)
            for extra in call.extra:
                result.steps.append(extra)
                self.events.step_finished(result, extra)
            if result.error:
                return
            if diverged and self.stop_on_divergence:
                self._stopped = True
                return

    # -- the shadow's side ----------------------------------------------------------

    def _predict(self, step: Step, session: _Session) -> _Call:
        """Run ``step`` on this (shadow) runner's model; the call as the model answered it."""
        call = _Call()
        try:
            self._execute(step, session, call)
        except (CapabilityError, _Unresolved, TargetError) as exc:
            call.problems.append(f"the model could not run the step: {exc}")
            call.status = None
            call.registers = ()
            call.outputs = {"error": str(exc)}
            self._forget(step, session, str(exc))
        else:
            if call.problems:
                self._forget(step, session, "; ".join(call.problems))
        return call

    @staticmethod
    def _answer(
        registers: tuple[int, ...], status: str | None, index: int | None, outputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """An answer as results show it; the fault's free-text description is not part of it."""
        return {
            "registers": [f"{r:#x}" for r in registers],
            "status": status,
            "index": index,
            "outputs": {k: _shown(v) for k, v in outputs.items() if k != "fault"},
        }

    @classmethod
    def _differences(cls, actual: dict[str, Any], predicted: dict[str, Any]) -> list[str]:
        out: list[str] = []
        if actual["status"] != predicted["status"]:
            out.append(f"status {actual['status']}, model {predicted['status']}")
        if actual["index"] != predicted["index"]:
            out.append(f"index {actual['index']}, model {predicted['index']}")
        ours, theirs = actual["registers"], predicted["registers"]
        for i in range(max(len(ours), len(theirs))):
            got = ours[i] if i < len(ours) else "-"
            want = theirs[i] if i < len(theirs) else "-"
            if got != want:
                out.append(f"X{i} {got}, model {want}")
        for name in sorted(set(actual["outputs"]) | set(predicted["outputs"])):
            got, want = actual["outputs"].get(name), predicted["outputs"].get(name)
            if got != want:
                out.append(f"{name} {_fmt(got)}, model {_fmt(want)}")
        return out

    def _judge(self, step_result: StepResult, model: _Call) -> bool:
        """Fill ``predicted``/``matched``; True when a step that ran on the target diverged."""
        predicted = self._answer(model.registers, model.status, model.index, model.outputs)
        step_result.predicted = predicted
        if step_result.outcome not in (Outcome.PASSED, Outcome.FAILED):
            return False
        actual = self._answer(
            step_result.registers, step_result.status, step_result.index, step_result.outputs
        )
        return self._verdict(step_result, self._differences(actual, predicted))

    def _judge_extra(self, extra: StepResult, model: StepResult) -> bool:
        """The same for a realm's observation of one action (model's observation in ``model``)."""
        predicted = self._answer(model.registers, model.status, model.index, model.outputs)
        extra.predicted = predicted
        actual = self._answer(extra.registers, extra.status, extra.index, extra.outputs)
        return self._verdict(extra, self._differences(actual, predicted))

    @staticmethod
    def _verdict(step_result: StepResult, differences: list[str]) -> bool:
        step_result.matched = not differences
        if not differences:
            return False
        failed = step_result.message if step_result.outcome is Outcome.FAILED else ""
        step_result.outcome = Outcome.DIVERGED
        step_result.message = "diverged from the model: " + "; ".join(differences)
        if failed:
            step_result.message += f" (and failed its expect: {failed})"
        return True

    def _report_divergence(
        self,
        sequence: Sequence,
        position: int,
        answers: list[StepResult],
        call: _Call,
        step_result: StepResult,
    ) -> None:
        """``divergence-<n>.yaml`` (a reproducer) and ``divergence-<n>.json`` (the evidence) in run_dir."""
        number = len(self.reports) + 1
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stem = self.run_dir / f"divergence-{number}"
        reproducer = reproducer_document(sequence, position, answers, number)
        stem.with_suffix(".yaml").write_text(
            f"# Reproducer of divergence {number}: {step_result.message}\n"
            + yaml.safe_dump(reproducer, sort_keys=False, width=110),
            encoding="utf-8",
        )
        shadow = self.shadow
        evidence = {
            "sequence": sequence.name,
            "source": sequence.source,
            "step": {"name": step_result.name, "line": step_result.line, "position": position + 1},
            "command": step_result.command,
            "sent": step_result.to_json()["args"],
            "target": self._answer(
                step_result.registers, step_result.status, step_result.index, step_result.outputs
            ),
            "model": step_result.predicted,
            "divergence": step_result.message,
            "model_granules_after": granule_view(shadow, addresses_in(call.args))
            if shadow is not None
            else [],
            "reproducer": stem.with_suffix(".yaml").name,
        }
        stem.with_suffix(".json").write_text(json.dumps(evidence, indent=2) + "\n", encoding="utf-8")
        self.reports.append(stem.with_suffix(".yaml"))
        step_result.message += f" [reproducer {stem.with_suffix('.yaml').name}]"

    @staticmethod
    def _forget(step: Step, session: _Session, reason: str) -> None:
        # A failed or skipped step's saves are not trustworthy: later users are skipped, not misled.
        for name in step.save:
            session.env.pop(name, None)
            session.unresolved[name] = f"step {step.name!r} did not produce it ({reason})"

    def _value(self, value: Value, session: _Session) -> int:
        if type(value) is int:
            return value
        try:
            return value.resolve(session.env)  # type: ignore[union-attr]
        except KeyError as exc:
            name = str(exc.args[0])
            raise _Unresolved(name, session.unresolved.get(name, "never saved")) from None

    def _execute(self, step: Step, session: _Session, call: _Call) -> None:
        if isinstance(step, RmiStep):
            self._rmi(step, session, call)
        elif isinstance(step, AccessStep):
            self._access(step, session, call)
        elif isinstance(step, CheckStep):
            self._check(step, session, call)
        elif isinstance(step, SmcStep):
            self._smc(step, session, call)
        elif isinstance(step, RsiStep):
            self._rsi(step, session, call)
        else:  # pragma: no cover - the compiler makes no other kinds
            raise TypeError(f"unknown step type {type(step).__name__}")

    # -- access, check, smc -------------------------------------------------------

    def _generic(
        self, step: Step, status: str | None, outputs: dict[str, Any], session: _Session, call: _Call
    ) -> None:
        call.status = status
        call.outputs = outputs
        expect = step.expect
        if expect.status is not None and status != expect.status:
            call.problems.append(f"{status}, expected {expect.status}")
        else:
            if expect.index is not None and call.index != expect.index:
                call.problems.append(f"index {call.index}, expected {expect.index}")
            for name, want in expect.outputs.items():
                self._compare_output(name, want, outputs, session, call.problems)
        self._save(step.save, outputs, session, call.problems)

    def _access(self, step: AccessStep, session: _Session, call: _Call) -> None:
        addr = self._value(step.addr, session)
        value = self._value(step.value, session)
        call.args.update(addr=addr, size=step.size)
        if step.access == "write":
            call.args["value"] = value
        result = self.target.access(addr, step.access, step.size, value)
        outputs: dict[str, Any] = {}
        if result.fault is not None:
            status = "gpf" if result.fault.gpf else "fault"
        else:
            status = "ok"
            if step.access == "read" and result.value is not None:
                outputs["value"] = result.value
        self._generic(step, status, outputs, session, call)
        if result.fault is not None:
            call.outputs.update(esr=result.fault.esr, far=result.fault.far, fault=result.fault.describe())

    def _check(self, step: CheckStep, session: _Session, call: _Call) -> None:
        addr = self._value(step.addr, session)
        call.args["addr"] = addr
        pas = self.target.gpt_pas(addr)
        self._generic(step, str(pas), {}, session, call)

    def _smc(self, step: SmcStep, session: _Session, call: _Call) -> None:
        args = [self._value(v, session) for v in step.args]
        call.args.update({f"x{i}": v for i, v in enumerate(args, start=1)})
        registers = tuple(self.target.smc(step.fid, *args))
        call.registers = registers
        x0 = registers[0] if registers else 0
        if x0 != SMCCC_NOT_SUPPORTED and x0 >> 16 == 0 and x0 & 0xFF:
            call.index = (x0 >> 8) & 0xFF
        self._generic(step, status_name(x0), {f"x{i}": r for i, r in enumerate(registers)}, session, call)

    # -- rmi ----------------------------------------------------------------------

    def _rmi(self, step: RmiStep, session: _Session, call: _Call) -> None:
        command = step.rmi
        if command.name == _REC_ENTER:
            self._rec_enter(step, session, call)
            return
        regs: list[int] = []
        sent = call.args
        try:
            for name, arg in step.args:
                if isinstance(arg, StructSpec):
                    value = self._structure(arg, session, sent, call)
                else:
                    value = self._value(arg, session)
                sent[name] = value
                regs.append(value)
            registers = tuple(self.target.smc(command.fid, *regs))
        except (TargetError, _Unresolved):
            # Granules provided for a call that never completed belong to nobody.
            session.spare.extend((call.auto_aux or []) + (call.auto_rtts or []))
            raise
        result = self.client.decode(command, registers, self.target.rmi_condition)
        self._record(step, result, call, session)
        self._bookkeep(step, result, sent, session, call)

    def _record(self, step: Step, result: RmiResult, call: _Call, session: _Session) -> None:
        call.registers = result.registers
        call.status = result.status_name
        call.condition = result.condition
        if result.status not in (None, RmiStatus.SUCCESS):
            call.index = result.index
        call.outputs = {k: _shown(v) for k, v in result.outputs.items()}
        expect = step.expect
        problems = call.problems
        if expect.status is not None and call.status != expect.status:
            got = call.status + (f" index {result.index}" if call.index is not None else "")
            if result.condition:
                got += f" ({result.condition})"
            problems.append(f"status {got}, expected {expect.status}")
        else:
            if expect.index is not None and result.index != expect.index:
                problems.append(f"index {result.index}, expected {expect.index}")
            for name, want in expect.outputs.items():
                self._compare_output(name, want, result.outputs, session, problems)
        if step.condition is not None and result.condition is not None and result.condition != step.condition:
            problems.append(f"condition {result.condition}, expected {step.condition}")
        self._save(step.save, result.outputs, session, problems)

    def _compare_output(
        self, name: str, want: Any, actual: Mapping[str, Any], session: _Session, problems: list[str]
    ) -> None:
        if name not in actual:
            problems.append(f"{name} not returned, expected {_fmt(want)}")
            return
        got = actual[name]
        if isinstance(want, Wide):
            data = got if isinstance(got, bytes) else int(got).to_bytes(8, "little")
            if not want.matches(data):
                problems.append(f"{name} {_fmt(data)}, expected {want}")
            return
        expected = self._value(want, session)
        if isinstance(got, bytes):
            if not Wide(
                expected.to_bytes(max(1, (expected.bit_length() + 7) // 8), "big"), exact=False
            ).matches(got):
                problems.append(f"{name} {_fmt(got)}, expected {_fmt(expected)}")
            return
        if int(got) & MASK64 != expected:
            shown = f"{_fmt(expected)} ({want})" if isinstance(want, Expr) else _fmt(expected)
            if isinstance(got, IntEnum):
                try:
                    shown = type(got)(expected).name.lower()
                except ValueError:
                    pass
            problems.append(f"{name} {_fmt(got)}, expected {shown}")

    @staticmethod
    def _save(
        save: Mapping[str, str], outputs: Mapping[str, Any], session: _Session, problems: list[str]
    ) -> None:
        for new_name, output in save.items():
            if output in outputs:
                value = outputs[output]
                session.env[new_name] = (
                    int.from_bytes(value, "big") if isinstance(value, bytes) else int(value) & MASK64
                )
                session.unresolved.pop(new_name, None)
            else:
                problems.append(f"cannot save {new_name}: no output {output!r} for this status")

    def _bookkeep(
        self, step: RmiStep, result: RmiResult, sent: Mapping[str, Any], session: _Session, call: _Call
    ) -> None:
        """What a host remembers after a call: REC counts per realm, which of its granules are in use."""
        name = step.rmi.name
        for provided, owners, key in (
            (call.auto_aux, session.rec_aux, "rec"),
            (call.auto_rtts, session.realm_rtts, "rd"),
        ):
            if provided is not None:
                if result.ok:
                    owners[sent[key]] = provided
                else:
                    session.spare.extend(provided)
        if not result.ok:
            return
        if name == "realm_create":
            session.recs_of_rd[sent["rd"]] = 0
        elif name == "rec_create":
            session.recs_of_rd[sent["rd"]] = session.recs_of_rd.get(sent["rd"], 0) + 1
        elif name == "rec_destroy":
            session.spare.extend(session.rec_aux.pop(sent["rec"], ()))
        elif name == "realm_destroy":
            session.spare.extend(session.realm_rtts.pop(sent["rd"], ()))

    # -- structures ----------------------------------------------------------------

    def _scratch(self, kind: str, session: _Session) -> int:
        pa = session.scratch.get(kind)
        if pa is None:
            pa = session.scratch[kind] = self.allocator.granule()
        return pa

    def _write(self, pa: int, data: bytes, session: _Session) -> None:
        # Hardware links are slow (4 KiB ≈ 0.35 s at 115200 baud): skip rewriting identical bytes.
        if session.written.get(pa) != data:
            self.target.write(pa, data)
            session.written[pa] = data

    def _provision(self, count: int, session: _Session) -> list[int]:
        """``count`` delegated granules the runner owns (reused ones first)."""
        out: list[int] = []
        while len(out) < count and session.spare:
            out.append(session.spare.pop())
        while len(out) < count:
            pa = self.allocator.granule()
            self._delegate(pa)
            out.append(pa)
        return out

    def _delegate(self, pa: int) -> None:
        result = self.client.granule_delegate(pa)
        if not result.ok:
            raise TargetError(f"could not delegate runner granule {pa:#x}: {result.describe()}")

    def _rec_aux_count(self, rd: int, session: _Session) -> int:
        count = session.aux_count.get(rd)
        if count is None:
            result = self.client.rec_aux_count(rd)
            if result.ok:
                count = self._aux_count = int(result.outputs["aux_count"])
                session.aux_count[rd] = count
            else:
                # A negative test's bad rd: pass what a host would have learnt from a good one.
                count = self._aux_count if self._aux_count is not None else MAX_REC_AUX
        return count

    def _structure(self, spec: StructSpec, session: _Session, sent: dict[str, Any], call: _Call) -> int:
        fields: dict[str, Any] = {}
        for key, raw in spec.fields.items():
            if isinstance(raw, dict):
                fields[key] = {i: self._value(v, session) for i, v in raw.items()}
            elif isinstance(raw, tuple):
                fields[key] = tuple(self._value(v, session) for v in raw)
            elif isinstance(raw, (Wide, bytes)):
                fields[key] = raw.data if isinstance(raw, Wide) else raw
            else:
                fields[key] = self._value(raw, session)
        if spec.kind == "realm_params":
            return self._realm_params(fields, session, sent, call)
        if spec.kind == "rec_params":
            return self._rec_params(fields, session, sent, call)
        if spec.kind == "src":
            pa = self._scratch("src", session)
            data = fields.get("bytes", b"")
            data = data.ljust(GRANULE_SIZE, bytes([fields.get("fill", 0)]))
            self._write(pa, data, session)
            sent["src_contents"] = {k: _fmt(v) for k, v in fields.items()}
            return pa
        raise AssertionError(f"structure {spec.kind} is written by rec_enter")  # pragma: no cover

    def _realm_params(
        self, fields: dict[str, Any], session: _Session, sent: dict[str, Any], call: _Call
    ) -> int:
        if "vmid" not in fields:
            fields["vmid"] = self._next_vmid
            self._next_vmid += 1
        if "rtt_base" not in fields:
            count = max(1, min(int(fields.get("rtt_num_start", 1)), 16))
            base = self.allocator.slot()
            rtts = [base + i * GRANULE_SIZE for i in range(count)]
            for pa in rtts:
                self._delegate(pa)
            call.auto_rtts = rtts
            fields["rtt_base"] = base
        if "rpv" in fields and isinstance(fields["rpv"], int):
            value = fields["rpv"]
            fields["rpv"] = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
        if "rtt_level_start" in fields:
            fields["rtt_level_start"] = to_signed64(fields["rtt_level_start"])
        params = RealmParams(**fields)
        pa = self._scratch("realm_params", session)
        self._write(pa, params.pack(), session)
        sent["params"] = {k: _fmt(v) for k, v in fields.items()}
        return pa

    def _rec_params(
        self, fields: dict[str, Any], session: _Session, sent: dict[str, Any], call: _Call
    ) -> int:
        rd = sent.get("rd", 0)
        fields.setdefault("flags", RecCreateFlags.RUNNABLE)
        if "mpidr" not in fields:
            fields["mpidr"] = rec_mpidr_for_index(session.recs_of_rd.get(rd, 0))
        if "gprs" in fields:
            gprs = fields["gprs"]
            fields["gprs"] = tuple(gprs.get(i, 0) for i in range(8))
        if "num_aux" not in fields:
            fields["num_aux"] = self._rec_aux_count(rd, session)
        if "aux" not in fields:
            aux = self._provision(min(int(fields["num_aux"]), MAX_REC_AUX), session)
            fields["aux"] = tuple(aux)
            call.auto_aux = aux
        params = RecParams(**fields)
        pa = self._scratch("rec_params", session)
        self._write(pa, params.pack(), session)
        sent["params"] = {
            k: ([_fmt(x) for x in v] if isinstance(v, tuple) else _fmt(v)) for k, v in fields.items()
        }
        return pa

    def _rec_enter_struct(self, spec: StructSpec, rec: int, session: _Session, sent: dict[str, Any]) -> int:
        fields: dict[str, Any] = {}
        for key, raw in spec.fields.items():
            if isinstance(raw, dict):
                count = 31 if key == "gprs" else 16
                values = {i: self._value(v, session) for i, v in raw.items()}
                fields[key] = tuple(values.get(i, 0) for i in range(count))
            else:
                fields[key] = self._value(raw, session)
        pa = session.run_of_rec.get(rec)
        if pa is None:
            pa = session.run_of_rec[rec] = self.allocator.granule()
        # Only the enter half: the exit half is the RMM's to write.
        self.target.write(pa, RecEnter(**fields).pack())
        sent["run"] = {
            k: ([_fmt(x) for x in v] if isinstance(v, tuple) else _fmt(v)) for k, v in fields.items()
        }
        return pa

    # -- realm execution ----------------------------------------------------------------

    def _require_realm(self) -> None:
        if not self.target.has(Capability.REALM_EXEC):
            raise CapabilityError(Capability.REALM_EXEC, self.target.name)

    def _action(self, spec: RealmActionSpec, session: _Session) -> RealmAction:
        args: dict[str, Any] = {}
        for key, raw in spec.args.items():
            if isinstance(raw, dict):
                args[key] = {i: self._value(v, session) for i, v in raw.items()}
            elif isinstance(raw, Wide):
                args[key] = raw.data
            else:
                args[key] = self._value(raw, session)
        return RealmAction(kind=spec.kind, name=spec.name, fid=spec.fid, args=args, spec=spec)

    def _enter(
        self, rec: int, run: int, new: list[RealmAction], session: _Session
    ) -> tuple[RmiResult, list[RealmAction]]:
        """REC entry with the REC's queued actions; the actions whose outcome the realm observed."""
        queue = session.queued.setdefault(rec, [])
        queue.extend(new)
        command = self.client.interface.by_name[_REC_ENTER]
        registers = tuple(self.target.realm_enter(rec, run, list(queue)))
        result = self.client.decode(command, registers, self.target.rmi_condition)
        flight = session.in_flight.setdefault(rec, [])
        flight.extend(a for a in queue if a.started)
        queue[:] = [a for a in queue if not a.started]
        done = [a for a in flight if a.result is not None]
        flight[:] = [a for a in flight if a.result is None]
        return result, done

    def _action_result(self, action: RealmAction, session: _Session) -> StepResult:
        """The realm's observation of one action, compared with the action's expect."""
        spec = action.spec
        assert spec is not None and action.result is not None
        registers = action.result
        problems: list[str] = []
        status, outputs = self._decode_action(action, registers)
        expect = spec.expect
        if expect.status is not None and status != expect.status:
            got = f"{status} ({action.condition})" if action.condition else status
            problems.append(f"status {got}, expected {expect.status}")
        else:
            for name, want in expect.outputs.items():
                self._compare_output(name, want, outputs, session, problems)
        # A target that cannot see inside its RMM reports no condition: the key is not checked there.
        if spec.condition is not None and action.condition is not None and action.condition != spec.condition:
            problems.append(f"condition {action.condition}, expected {spec.condition}")
        self._save(spec.save, outputs, session, problems)
        return StepResult(
            name=spec.label,
            op="realm",
            command=f"{spec.kind} {spec.name}" if spec.kind != spec.name else spec.kind,
            args={k: _fmt(v) if not isinstance(v, dict) else v for k, v in action.args.items()},
            registers=registers,
            status=status,
            outputs={k: _shown(v) for k, v in outputs.items()},
            condition=action.condition,
            expected=expect.text,
            outcome=Outcome.FAILED if problems else Outcome.PASSED,
            message="; ".join(problems),
            line=spec.line,
        )

    @staticmethod
    def _decode_action(action: RealmAction, registers: tuple[int, ...]) -> tuple[str | None, dict[str, Any]]:
        x0 = registers[0] if registers else 0
        if action.kind == "rsi":
            command = RSI_COMMANDS[action.name]
            names = {v: k for k, v in RSI_STATUS_NAMES.items()}
            status = names.get(x0, f"unknown({x0:#x})")
            outputs: dict[str, Any] = {}
            reg = 1
            for out in command.outputs:
                if out in command.wide:
                    data = b"".join(r.to_bytes(8, "little") for r in registers[reg : reg + 8])
                    outputs[out] = data
                    reg += 8
                elif reg < len(registers):
                    outputs[out] = registers[reg]
                    reg += 1
            return status, outputs
        if action.kind == "psci":
            signed = to_signed64(x0)
            names = {v: k for k, v in PSCI_STATUS_NAMES.items()}
            return names.get(signed, f"{x0:#x}"), {"result": x0}
        if action.kind == "smc":
            return status_name(x0), {f"x{i}": r for i, r in enumerate(registers)}
        return None, {"value": x0}

    def _rec_enter(self, step: RmiStep, session: _Session, call: _Call) -> None:
        # Realm actions need a target that runs realm payloads; a bare entry is an ordinary SMC
        # where the target has no realm execution (the model's RMM then exits at once, RMM 1.0 B3.3.15).
        realm_exec = self.target.has(Capability.REALM_EXEC)
        if step.realm and not realm_exec:
            raise CapabilityError(Capability.REALM_EXEC, self.target.name)
        sent = call.args
        rec_arg, run_arg = step.args[0][1], step.args[1][1]
        assert not isinstance(rec_arg, StructSpec)
        rec = self._value(rec_arg, session)
        sent["rec"] = rec
        if isinstance(run_arg, StructSpec):
            run = self._rec_enter_struct(run_arg, rec, session, sent)
        else:
            run = self._value(run_arg, session)
        sent["run_ptr"] = run
        if realm_exec:
            actions = [self._action(spec, session) for spec in step.realm]
            result, done = self._enter(rec, run, actions, session)
            call.extra.extend(self._action_result(a, session) for a in done if a.spec is not None)
        else:
            result = self.client.rec_enter(rec, run)
        self._record(step, result, call, session)
        if result.ok and step.expect.exit:
            self._check_exit(step.expect, run, session, call)

    def _check_exit(self, expect: Expect, run: int, session: _Session, call: _Call) -> None:
        rec_exit = self.client.read_rec_exit(run)
        for name, want in expect.exit.items():
            got = getattr(rec_exit, name)
            if isinstance(want, dict):
                for i, item in want.items():
                    value = self._value(item, session)
                    if got[i] != value:
                        call.problems.append(f"exit {name}[{i}] {_fmt(got[i])}, expected {_fmt(value)}")
                call.outputs[name] = {i: got[i] for i in want}
                continue
            value = self._value(want, session)
            call.outputs[name] = self._exit_shown(name, got)
            if got != value:
                call.problems.append(
                    f"exit {name} {self._exit_shown(name, got)}, expected {self._exit_shown(name, value)}"
                )

    @staticmethod
    def _exit_shown(name: str, value: int) -> object:
        if name == "exit_reason":
            return _EXIT_NAMES.get(value, value)
        if name == "ripas_value":
            return _RIPAS_BY_VALUE.get(value, value)
        return value

    def _rsi(self, step: RsiStep, session: _Session, call: _Call) -> None:
        self._require_realm()
        rec = self._value(step.rec, session)
        call.args["rec"] = rec
        run = session.run_of_rec.get(rec)
        if run is None:
            run = session.run_of_rec[rec] = self.allocator.granule()
        self.target.write(run, RecEnter().pack())
        action = self._action(step.action, session)
        # The shorthand's realm ends the entry with a Host call of its own, which no step checks.
        closing = RealmAction(kind="rsi", name="host_call", fid=RSI_COMMANDS["host_call"].fid, args={})
        call.args.update({k: _fmt(v) if not isinstance(v, dict) else v for k, v in action.args.items()})
        result, done = self._enter(rec, run, [action, closing], session)
        session.queued[rec] = [a for a in session.queued.get(rec, []) if a is not closing]
        call.extra.extend(
            self._action_result(a, session) for a in done if a.spec is not None and a is not action
        )
        if not result.ok:
            call.registers = result.registers
            call.status = result.status_name
            call.problems.append(f"rec_enter to run the RSI call failed: {result.describe()}")
            return
        if action.result is None:
            call.problems.append("the realm did not complete the RSI call in one entry")
            return
        observed = self._action_result(action, session)
        call.registers = action.result
        call.status = observed.status
        call.outputs = observed.outputs
        call.condition = observed.condition
        if observed.message:
            call.problems.append(observed.message)
        reason = self.client.read_rec_exit(run).exit_reason
        if reason != EXIT_REASON_NAMES["host_call"]:
            call.problems.append(
                f"the realm exited by {_EXIT_NAMES.get(reason, reason)}, not by its closing host call"
            )
