"""The bundled RMI conformance suite: cases for every failure condition of every RMI 1.0 command.

The suite is a set of sequence files shipped with the package
(``cca_hil/data/conformance/<command>.yaml`` and ``<command>__<part>.yaml``),
so that every case can be read and rerun like any other sequence. Each file
builds the state its stimuli need and then issues them; a stimulus is a step
calling the file's command whose name says what it tests (RMM 1.0 B3.3 failure
condition tables, rmm-abi §0.1):

* ``<label>`` or ``<label>__<variant>``: one failure condition alone, with
  ``condition: <label>`` and the spec's exact ``expect``;
* ``order__<a>_before_<b>[__<variant>]``: both conditions hold and the spec
  states that ``a`` precedes ``b``;
* ``success[__<variant>]``: the positive path; ``answer__<variant>``: a defined
  answer of a command that has no failure conditions (RMI_VERSION).

Steps named ``setup__…`` and ``check__…`` build and read back state.
:func:`coverage` measures the suite against the command table of
:data:`cca_hil.arch.rmi_1_0.RMI_1_0`.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, NamedTuple

from cca_hil.arch.rmi import RmiCommand, RmiInterface
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.errors import InputError
from cca_hil.sequences import Sequence, Step, load_sequence

PART_SEPARATOR = "__"
"""Separates a file's command from its part, and a case's label from its variant."""

NON_CASE_PREFIXES = ("setup", "check")
"""Step names starting ``setup__`` / ``check__`` build or read back state; they are not cases."""

CaseKind = Literal["condition", "order", "success", "answer"]


class Unreachable(NamedTuple):
    """A failure condition no sequence can trigger, and why."""

    command: str
    label: str
    reason: str


_SECOND_CPU = (
    "needs the REC to be running on another CPU while this call is made; sequences are single-threaded"
)
_HIGH_MEMORY = (
    "needs a delegable granule at or above 2^48 (a 52-bit PA platform), which no platform.* name provides"
)

UNREACHABLE: tuple[Unreachable, ...] = (
    Unreachable("rec_destroy", "rec_state", _SECOND_CPU),
    Unreachable("rec_enter", "rec_state", _SECOND_CPU),
    Unreachable("rtt_set_ripas", "rec_state", _SECOND_CPU),
    Unreachable("psci_complete", "tf_rmm_calling_running", _SECOND_CPU),
    Unreachable("rtt_create", "rtt_bound2", _HIGH_MEMORY),
    Unreachable("data_create", "data_bound2", _HIGH_MEMORY),
    Unreachable("data_create_unknown", "data_bound2", _HIGH_MEMORY),
)
"""Conditions no sequence can reach on any target (docs/conformance.md, "Unreachable conditions")."""


@dataclass(frozen=True, slots=True)
class Case:
    """One stimulus of the suite: a step calling the command under test that is not set-up or read-back."""

    command: str
    name: str
    kind: CaseKind
    label: str | None
    """The condition a ``condition`` case is about, or the first condition of an ``order`` case."""
    second: str | None
    """The condition an ``order`` case's first condition precedes."""
    condition: str | None
    """The step's ``condition:`` key (what the model must report)."""
    source: str
    line: int
    requires: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """How completely the suite covers one command (RMM 1.0 B3.3 failure condition table)."""

    command: str
    conditions: tuple[str, ...]
    """Labels of the command's conditions in the spec table (recommended order)."""
    covered: tuple[str, ...]
    """Conditions with at least one case."""
    stimuli: int
    """Cases of every kind (single faults, orderings, positive paths, answers)."""
    realm_exec_stimuli: int
    """Of those, cases in files that need realm execution."""
    orderings: tuple[tuple[str, str], ...]
    """Pairs (a, b) the spec orders explicitly: a precedes b."""
    orderings_covered: tuple[tuple[str, str], ...]
    unreachable: tuple[str, ...]
    """Conditions no sequence can reach (see :data:`UNREACHABLE`)."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Conditions without a case, unreachable ones included."""
        return tuple(label for label in self.conditions if label not in self.covered)


def conformance_dir() -> Path:
    """Directory of the suite's sequence files shipped with the package."""
    return Path(str(resources.files("cca_hil") / "data" / "conformance"))


def command_of(path: Path) -> str:
    """The RMI command a suite file tests: its name up to the first ``__``."""
    return path.stem.split(PART_SEPARATOR, 1)[0]


def conformance_files(interface: RmiInterface = RMI_1_0) -> list[Path]:
    """The suite's files in command-table order, each command's main file before its parts."""
    order = {command.name: index for index, command in enumerate(interface.commands)}
    files = [path for path in conformance_dir().glob("*.yaml") if path.is_file()]
    return sorted(
        files, key=lambda p: (order.get(command_of(p), len(order)), p.stem != command_of(p), p.stem)
    )


def normalize_command(name: str) -> str:
    """A command name as the suite spells it: lower case, underscores (``rtt-create`` → ``rtt_create``)."""
    return name.strip().lower().replace("-", "_")


def conformance_sequences(only: Seq[str] | None = None, interface: RmiInterface = RMI_1_0) -> list[Sequence]:
    """The suite loaded and validated, for every command or only those named (hyphens or underscores)."""
    files = conformance_files(interface)
    if only is not None:
        wanted = {normalize_command(name) for name in only}
        unknown = sorted(wanted - {command.name for command in interface.commands})
        if unknown:
            raise InputError(
                f"no RMI command {', '.join(repr(name) for name in unknown)} in the conformance suite",
                valid=[command.name for command in interface.commands],
            )
        files = [path for path in files if command_of(path) in wanted]
    return [load_sequence(path) for path in files]


def labels_of(command: RmiCommand) -> tuple[str, ...]:
    """The command's condition labels in recommended order, each once (TF-RMM splits share a label)."""
    return tuple(dict.fromkeys(condition.label for condition in command.conditions))


def quirk_only(command: RmiCommand) -> tuple[str, ...]:
    """Labels of conditions that exist only in TF-RMM's behaviour (their spec answer is another condition)."""
    return tuple(condition.label for condition in command.conditions if condition.quirk is not None)


def spec_orderings(command: RmiCommand) -> tuple[tuple[str, str], ...]:
    """Every pair (a, b) such that the spec states a precedes b, in table order."""
    pairs: dict[tuple[str, str], None] = {}
    for before, after in command.spec_precedes:
        for a in before:
            for b in after:
                pairs[a, b] = None
    return tuple(pairs)


def parse_case_name(command: RmiCommand, name: str) -> tuple[CaseKind, str | None, str | None] | None:
    """What a stimulus name says it tests: (kind, label, second label); None if it is no case name."""
    head = name.split(PART_SEPARATOR, 1)[0]
    labels = labels_of(command)
    if head in ("success", "answer"):
        return ("success" if head == "success" else "answer"), None, None
    if head == "order":
        parts = name.split(PART_SEPARATOR)
        if len(parts) < 2:
            return None
        for a in labels:
            prefix = f"{a}_before_"
            if parts[1].startswith(prefix) and parts[1][len(prefix) :] in labels:
                return "order", a, parts[1][len(prefix) :]
        return None
    if head in labels:
        return "condition", head, None
    return None


def is_stimulus(step: Step, command: str) -> bool:
    """True for a step that calls ``command`` and is not named as set-up or read-back."""
    if step.op != "rmi" or step.command != command:
        return False
    return step.name.split(PART_SEPARATOR, 1)[0] not in NON_CASE_PREFIXES


class CaseNameError(InputError):
    """A stimulus of the suite is not named after what it tests."""


def cases_of(sequence: Sequence, command: RmiCommand) -> list[Case]:
    """The stimuli of one suite file for ``command`` (CaseNameError for a name that says nothing)."""
    out: list[Case] = []
    for step in sequence.steps:
        if not is_stimulus(step, command.name):
            continue
        parsed = parse_case_name(command, step.name)
        if parsed is None:
            raise CaseNameError(
                f"stimulus {step.name!r} is not named <label>[__variant], order__<a>_before_<b>, "
                "success[__variant] or answer__<variant>",
                where=f"{sequence.source}:{step.line}",
                valid=labels_of(command),
            )
        kind, label, second = parsed
        out.append(
            Case(
                command=command.name,
                name=step.name,
                kind=kind,
                label=label,
                second=second,
                condition=step.condition,
                source=sequence.source,
                line=step.line,
                requires=sequence.requires,
            )
        )
    return out


def suite_cases(sequences: Iterable[Sequence], interface: RmiInterface = RMI_1_0) -> list[Case]:
    """Every stimulus of the loaded suite, each attributed to the command its file tests."""
    out: list[Case] = []
    for sequence in sequences:
        name = command_of(Path(sequence.source))
        if name not in interface:
            raise CaseNameError(
                f"{Path(sequence.source).name} is not named after the RMI command it tests",
                where=sequence.source,
                valid=[command.name for command in interface.commands],
            )
        out.extend(cases_of(sequence, interface[name]))
    return out


def covers(case: Case, command: RmiCommand) -> str | None:
    """The condition a case covers: a single fault asserting its own condition, or a quirk-only situation."""
    if case.kind != "condition" or case.label is None:
        return None
    if case.label in quirk_only(command) or case.condition == case.label:
        return case.label
    return None


def coverage(
    sequences: Iterable[Sequence] | None = None, interface: RmiInterface = RMI_1_0
) -> dict[str, CoverageRow]:
    """Per command: conditions, those with a case, stimuli, orderings covered (default: the bundled suite)."""
    loaded = conformance_sequences(interface=interface) if sequences is None else list(sequences)
    cases = suite_cases(loaded, interface)
    rows: dict[str, CoverageRow] = {}
    for command in interface.commands:
        mine = [case for case in cases if case.command == command.name]
        covered = {label for case in mine if (label := covers(case, command)) is not None}
        ordered = {(case.label, case.second) for case in mine if case.kind == "order"}
        orderings = spec_orderings(command)
        labels = labels_of(command)
        rows[command.name] = CoverageRow(
            command=command.name,
            conditions=labels,
            covered=tuple(label for label in labels if label in covered),
            stimuli=len(mine),
            realm_exec_stimuli=sum(1 for case in mine if "realm_exec" in case.requires),
            orderings=orderings,
            orderings_covered=tuple(pair for pair in orderings if pair in ordered),
            unreachable=tuple(u.label for u in UNREACHABLE if u.command == command.name),
        )
    return rows
