"""The bundled conformance suite: cases for every failure condition of every RMI 1.0 and RSI 1.0 command.

The suite is a set of sequence files shipped with the package
(``cca_hil/data/conformance/<command>.yaml`` and ``<command>__<part>.yaml``),
so that every case can be read and rerun like any other sequence. Each file
builds the state its stimuli need and then issues them; a stimulus is a step
calling the file's command whose name says what it tests (RMM 1.0 B3.3 failure
condition tables, rmm-abi §0.1). The realm side has files of its own:
``rsi_<command>.yaml`` for the RSI commands (RMM 1.0 B5.3, rmm-abi §7.1) and
``rsi_psci_<function>.yaml`` for the PSCI failures the RMM detects itself
(§8); their stimuli are ``rsi:`` steps, or REC entries whose realm makes the
call once.

* ``<label>`` or ``<label>__<variant>``: one failure condition alone, with
  ``condition: <label>`` and the spec's exact ``expect``;
* ``order__<a>_before_<b>[__<variant>]``: both conditions hold and the spec
  states that ``a`` precedes ``b``;
* ``success[__<variant>]``: the positive path; ``answer__<variant>``: a defined
  answer of a command that has no failure conditions (RMI_VERSION).

Steps named ``setup__…`` and ``check__…`` build and read back state.
:func:`coverage` measures the suite against the command tables of
:data:`cca_hil.arch.rmi_1_0.RMI_1_0` and :mod:`cca_hil.arch.rsi_1_0`.
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
from cca_hil.arch.rsi_1_0 import PSCI_1_1, RSI_1_0
from cca_hil.errors import InputError
from cca_hil.seqformat import CompatVariant, RealmActionSpec, RmiStep, RsiStep
from cca_hil.sequences import Sequence, Step, load_sequence

PART_SEPARATOR = "__"
"""Separates a file's command from its part, and a case's label from its variant."""

NON_CASE_PREFIXES = ("setup", "check")
"""Step names starting ``setup__`` / ``check__`` build or read back state; they are not cases."""

CaseKind = Literal["condition", "order", "success", "answer"]
Abi = Literal["rmi", "rsi", "psci"]

REALM_PREFIX = "rsi_"
"""Suite files of calls a realm makes start with this: ``rsi_<command>``, ``rsi_psci_<function>``."""


@dataclass(frozen=True, slots=True)
class RealmCall:
    """An RSI command or a PSCI function the RMM answers, as the suite tests it."""

    name: str
    """The suite's name for it, which its files start with: ``rsi_ipa_state_get``, ``rsi_psci_cpu_on``."""
    abi: Literal["rsi", "psci"]
    function: str
    """The name a realm action gives it: ``ipa_state_get``, ``cpu_on``."""
    labels: tuple[str, ...]
    """Its failure conditions in evaluation order (rmm-abi.md §7.1, §8)."""


def realm_calls() -> tuple[RealmCall, ...]:
    """Every RSI 1.0 command, then every PSCI function with failures the RMM detects itself."""
    rsi = tuple(
        RealmCall(f"{REALM_PREFIX}{c.name}", "rsi", c.name, tuple(cond.id for cond in c.conditions))
        for c in RSI_1_0.commands
    )
    psci = tuple(
        RealmCall(f"{REALM_PREFIX}psci_{f.name}", "psci", f.name, tuple(cond.id for cond in f.conditions))
        for f in PSCI_1_1
        if f.conditions
    )
    return rsi + psci


SuiteCommand = RmiCommand | RealmCall


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
_TOKEN_FAILURE = (
    "needs the RMM to fail making the token (a signing failure, or a token larger than INIT promised); "
    "nothing a realm or the Host passes causes that"
)

UNREACHABLE: tuple[Unreachable, ...] = (
    Unreachable("rec_destroy", "rec_state", _SECOND_CPU),
    Unreachable("rec_enter", "rec_state", _SECOND_CPU),
    Unreachable("rtt_set_ripas", "rec_state", _SECOND_CPU),
    Unreachable("psci_complete", "tf_rmm_calling_running", _SECOND_CPU),
    Unreachable("rtt_create", "rtt_bound2", _HIGH_MEMORY),
    Unreachable("data_create", "data_bound2", _HIGH_MEMORY),
    Unreachable("data_create_unknown", "data_bound2", _HIGH_MEMORY),
    Unreachable("rsi_attestation_token_continue", "unknown", _TOKEN_FAILURE),
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
    abi: Abi = "rmi"
    """The interface the command belongs to: RMI, RSI, or PSCI in a realm."""

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


def suite_command_names(interface: RmiInterface = RMI_1_0) -> list[str]:
    """Names of everything the suite tests, in table order: RMI commands, then RSI commands and PSCI."""
    return [command.name for command in interface.commands] + [call.name for call in realm_calls()]


def conformance_files(interface: RmiInterface = RMI_1_0) -> list[Path]:
    """The suite's files in command-table order, each command's main file before its parts."""
    order = {name: index for index, name in enumerate(suite_command_names(interface))}
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
        names = suite_command_names(interface)
        unknown = sorted(wanted - set(names))
        if unknown:
            raise InputError(
                f"no RMI command {', '.join(repr(name) for name in unknown)} in the conformance suite, "
                "nor RSI command or realm PSCI function (rsi_…)",
                valid=names,
            )
        files = [path for path in files if command_of(path) in wanted]
    return [load_sequence(path) for path in files]


def labels_of(command: SuiteCommand) -> tuple[str, ...]:
    """The command's condition labels in recommended order, each once (TF-RMM splits share a label)."""
    if isinstance(command, RealmCall):
        return command.labels
    return tuple(dict.fromkeys(condition.label for condition in command.conditions))


def quirk_only(command: SuiteCommand) -> tuple[str, ...]:
    """Labels of RMI conditions that exist only in TF-RMM's behaviour (their spec answer is another one).

    None for the realm side: where the spec is silent (rmm-abi.md §12 row 16)
    TF-RMM's answer is the only one there is, so those cases assert it.
    """
    if isinstance(command, RealmCall):
        return ()
    return tuple(condition.label for condition in command.conditions if condition.quirk is not None)


def spec_orderings(command: SuiteCommand) -> tuple[tuple[str, str], ...]:
    """Every pair (a, b) such that the spec states a precedes b, in table order (none for RSI, §7.1)."""
    if isinstance(command, RealmCall):
        return ()
    pairs: dict[tuple[str, str], None] = {}
    for before, after in command.spec_precedes:
        for a in before:
            for b in after:
                pairs[a, b] = None
    return tuple(pairs)


def parse_case_name(command: SuiteCommand, name: str) -> tuple[CaseKind, str | None, str | None] | None:
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
    """True for a step that calls RMI ``command`` and is not named as set-up or read-back."""
    if step.op != "rmi" or step.command != command:
        return False
    return step.name.split(PART_SEPARATOR, 1)[0] not in NON_CASE_PREFIXES


def realm_stimulus(step: Step, call: RealmCall) -> tuple[RealmActionSpec, ...]:
    """The realm's calls of ``call`` in a step not named as set-up or read-back (none: not a stimulus)."""
    if step.name.split(PART_SEPARATOR, 1)[0] in NON_CASE_PREFIXES:
        return ()
    if isinstance(step, RsiStep):
        return (step.action,) if (call.abi, call.function) == ("rsi", step.command) else ()
    if isinstance(step, RmiStep):
        return tuple(a for a in step.realm if (a.kind, a.name) == (call.abi, call.function))
    return ()


class CaseNameError(InputError):
    """A stimulus of the suite is not named after what it tests."""


def cases_of(sequence: Sequence, command: SuiteCommand) -> list[Case]:
    """The stimuli of one suite file for ``command`` (CaseNameError for a name that says nothing)."""
    out: list[Case] = []
    for step in sequence.steps:
        condition = step.condition
        if isinstance(command, RealmCall):
            calls = realm_stimulus(step, command)
            if not calls:
                continue
            if len(calls) > 1:
                raise CaseNameError(
                    f"stimulus {step.name!r} makes {len(calls)} {command.function} calls: "
                    "a case makes one (name the others' steps setup__…)",
                    where=f"{sequence.source}:{step.line}",
                )
            condition = calls[0].condition
        elif not is_stimulus(step, command.name):
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
                condition=condition,
                source=sequence.source,
                line=step.line,
                requires=sequence.requires,
            )
        )
    return out


def suite_commands(interface: RmiInterface = RMI_1_0) -> dict[str, SuiteCommand]:
    """Everything the suite tests by its suite name: RMI commands, RSI commands, realm PSCI functions."""
    out: dict[str, SuiteCommand] = {command.name: command for command in interface.commands}
    out.update((call.name, call) for call in realm_calls())
    return out


def suite_cases(sequences: Iterable[Sequence], interface: RmiInterface = RMI_1_0) -> list[Case]:
    """Every stimulus of the loaded suite, each attributed to the command its file tests."""
    commands = suite_commands(interface)
    out: list[Case] = []
    for sequence in sequences:
        name = command_of(Path(sequence.source))
        if name not in commands:
            raise CaseNameError(
                f"{Path(sequence.source).name} is not named after the command it tests",
                where=sequence.source,
                valid=list(commands),
            )
        out.extend(cases_of(sequence, commands[name]))
    return out


def covers(case: Case, command: SuiteCommand) -> str | None:
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
    for command in suite_commands(interface).values():
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
            abi=command.abi if isinstance(command, RealmCall) else "rmi",
        )
    return rows


@dataclass(frozen=True, slots=True)
class CompatChange:
    """A case whose expectation a compatibility mode changes (a ``compat:`` variant, rmm-abi.md §12)."""

    sequence: str
    case: str
    where: str
    """``file:line`` of the case."""
    spec_text: str
    """What the case expects by the spec."""
    variant: CompatVariant


def compat_changes(sequences: Iterable[Sequence]) -> list[CompatChange]:
    """Every case of ``sequences`` with a ``compat:`` variant, in suite order."""
    changes = []
    for sequence in sequences:
        for step in sequence.steps:
            for variant in step.compat:
                changes.append(
                    CompatChange(
                        sequence=sequence.name,
                        case=step.name,
                        where=f"{Path(sequence.source).name}:{step.line}",
                        spec_text=step.expect.text or "success",
                        variant=variant,
                    )
                )
    return changes
