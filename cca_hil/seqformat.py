"""The sequence file format: loading, validation and compilation into steps (DESIGN.md "Sequence files").

Private to :mod:`cca_hil.sequences`, which re-exports the public names. Every
check happens here, at load time, so that a bad file fails with one line
naming ``file:line`` and the valid choices before any step runs; what can be
resolved statically is, and what cannot (granule addresses, ``platform.*``
values, saved outputs) is compiled to an :class:`Expr` that resolves with
one dictionary lookup per name.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cca_hil.arch import rsi_1_0 as rsi
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import MASK64, Param, Ripas, RmiCommand, RmiStatus, RttEntryState
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.rsi_1_0 import PsciStatus, RsiStatus
from cca_hil.arch.structs import MAX_REC_AUX, RecEnterFlags, RecExit
from cca_hil.errors import InputError, SequenceError
from cca_hil.model.platform import COMPAT_MODES, QUIRK_ROWS
from cca_hil.rmi_client import output_defined
from cca_hil.targets.base import PLATFORM_NAMES, Capability
from cca_hil.yamlio import LineDict, LineList, load_file, load_text

# ---------------------------------------------------------------------------
# Vocabulary the format needs beyond the RMI table (RMM 1.0 B5 RSI, PSCI 1.1).
# ---------------------------------------------------------------------------

RMI_STATUS_NAMES: dict[str, int] = {s.name.lower(): int(s) for s in RmiStatus}
"""RmiStatusCode by name; ``not_supported`` (SMCCC -1) is handled apart."""

RSI_STATUS_NAMES: dict[str, int] = {s.name.lower(): int(s) for s in RsiStatus}
"""RsiCommandReturnCode (RMM 1.0 B5.4.4)."""

PSCI_STATUS_NAMES: dict[str, int] = {s.name.lower(): int(s) for s in PsciStatus}
"""PsciReturnCode (PSCI 1.1, DEN0022 5.2.2), negative values as the signed X0."""

HASH_ALGO_NAMES = {"sha256": 0, "sha512": 1}
RIPAS_NAMES = {r.name.lower(): int(r) for r in Ripas if r is not Ripas.DEV}
RTT_STATE_NAMES = {s.name.lower(): int(s) for s in RttEntryState}
EXIT_REASON_NAMES = {
    "sync": 0,
    "irq": 1,
    "fiq": 2,
    "psci": 3,
    "ripas_change": 4,
    "host_call": 5,
    "serror": 6,
}
DATA_FLAG_NAMES = {"no_measure": 0, "measure": 1}
"""RmiDataMeasureContent in bit 0 of RmiDataFlags (RMM 1.0 B4.4.3)."""
REALM_FLAG_NAMES = {"lpa2": 1 << 0, "sve": 1 << 1, "pmu": 1 << 2}
REC_FLAG_NAMES = {"not_runnable": 0, "runnable": 1}
RESPONSE_NAMES = {"accept": 0, "reject": 1}


@dataclass(frozen=True, slots=True)
class RsiCommand:
    """An RSI command as a realm action or ``rsi:`` step: the arch command and its names in sequences."""

    command: rsi.RsiCommand
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    wide: frozenset[str]
    """Inputs/outputs that span several registers (64-byte values), compared as bytes."""

    @property
    def name(self) -> str:
        """The command's name in sequences (``measurement_read``)."""
        return self.command.name

    @property
    def fid(self) -> int:
        """SMC function identifier."""
        return self.command.fid

    @property
    def conditions(self) -> tuple[str, ...]:
        """Labels of the command's failure conditions, in evaluation order."""
        return tuple(cond.id for cond in self.command.conditions)


_PAYLOAD_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # The realm payload builds the RsiHostCall structure from imm/gprs (at addr when given) and
    # reads gprs back from it once the Host has answered (RMM 1.0 B5.4.5).
    "host_call": (("imm", "gprs"), ("gprs",)),
}
"""Inputs and outputs a command has in sequences beyond its registers: fields of a structure it points to."""


def _rsi_names(command: rsi.RsiCommand) -> RsiCommand:
    extra_in, extra_out = _PAYLOAD_FIELDS.get(command.name, ((), ()))
    params = (*command.inputs, *command.outputs)
    return RsiCommand(
        command=command,
        inputs=(*(p.name for p in command.inputs), *extra_in),
        outputs=(*(p.name for p in command.outputs), *extra_out),
        wide=frozenset(p.name for p in params if p.count > 1),
    )


RSI_COMMANDS: Mapping[str, RsiCommand] = {c.name: _rsi_names(c) for c in rsi.RSI_1_0.commands}
"""RSI 1.0 commands (RMM 1.0 B5.3) by name, from :data:`cca_hil.arch.rsi_1_0.RSI_1_0`."""

PSCI_FUNCTIONS: Mapping[str, tuple[int, tuple[str, ...]]] = {f.name: (f.fid, f.inputs) for f in rsi.PSCI_1_1}
"""PSCI functions a realm may call: (SMC64 FID where there is one, input names), from ``PSCI_1_1``."""

PSCI_CONDITIONS: Mapping[str, tuple[str, ...]] = {
    f.name: tuple(c.id for c in f.conditions) for f in rsi.PSCI_1_1
}
"""Labels of the PSCI failures the RMM detects itself, per function (rmm-abi.md §8)."""

REALM_ACTION_KINDS = ("rsi", "psci", "smc", "mmio", "hvc", "wfi", "wfe", "sysreg", "irq", "fiq", "serror")
_BARE_ACTIONS = ("hvc", "wfi", "wfe", "irq", "fiq", "serror")

STEP_KINDS = ("rmi", "rsi", "access", "check", "smc")
CHECKS = ("pas",)
PAS_NAMES = ("secure", "nonsecure", "realm", "root", "any", "none")
ACCESS_STATUSES = ("ok", "gpf", "fault")
TOP_LEVEL_KEYS = ("sequence", "description", "requires", "granules", "steps")
FEATURE_REQUIREMENTS: tuple[str, ...] = ("rmm-1.0", "lpa2", "sha512", "sve", "pmu")
"""``requires:`` items besides capabilities: facts of the target's RMM (RMI_VERSION, RMI_FEATURES[0])."""

_STEP_KEYS: dict[str, tuple[str, ...]] = {
    "rmi": ("rmi", "name", "args", "expect", "save", "condition", "realm", "compat"),
    "rsi": ("rsi", "rec", "name", "args", "expect", "save", "condition", "compat"),
    "access": ("access", "name", "args", "expect", "save", "compat"),
    "check": ("check", "name", "args", "expect", "compat"),
    "smc": ("smc", "name", "args", "expect", "save", "compat"),
}

COMPAT_VARIANT_KEYS = ("row", "expect", "condition")
"""Keys of one ``compat:`` variant of a step: the rmm-abi.md §12 row and the answer under it."""

# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(
    r"\s*(?:(?P<op>[+-])"
    r"|(?P<num>0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9][0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?))"
)
_INT_LITERAL = re.compile(r"\s*[+-]?\s*(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9][0-9_]*)\s*\Z")

VALUE_FORMS = "an integer, a granule name, NAME + N / NAME - N, platform.NAME or a saved name"


@dataclass(frozen=True, slots=True)
class Expr:
    """A value known only at run time: ``const`` plus or minus named values (granules, platform, saved)."""

    text: str
    const: int
    terms: tuple[tuple[int, str], ...]
    """(sign, name): name is a granule, ``platform.NAME`` or a saved output."""

    def resolve(self, env: Mapping[str, int]) -> int:
        """The value as a 64-bit register (KeyError names an unresolved term)."""
        value = self.const
        for sign, name in self.terms:
            value += sign * env[name]
        return value & MASK64

    def __str__(self) -> str:
        return self.text


Value = int | Expr
"""An int when the value is static (already masked to 64 bits), else an Expr."""


def resolve(value: Value, env: Mapping[str, int]) -> int:
    """The 64-bit value of a compiled value."""
    return value if type(value) is int else value.resolve(env)  # type: ignore[union-attr]


def _to_int(text: str) -> int | None:
    try:
        if re.match(r"[+-]?0[0-9]", text):
            return int(text, 10)  # a leading zero is still decimal here; int(text, 0) refuses it
        return int(text, 0)
    except ValueError:
        return None


def parse_int_literal(text: str) -> int | None:
    """``0x…``, ``0b…``, ``0o…`` or decimal (with ``_`` and a sign) as an int; None if it is not one."""
    if not _INT_LITERAL.match(text):
        return None
    return _to_int(text.replace(" ", "").replace("\t", ""))


def parse_value(raw: object, *, names: Collection[str], where: str, what: str = "value") -> Value:
    """Compile a value: an int, or text of terms joined by ``+``/``-`` (integers and known names)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise SequenceError(f"{what} must be {VALUE_FORMS}, got {type(raw).__name__} {raw!r}", where=where)
    if isinstance(raw, int):
        return raw & MASK64
    text = raw.strip()
    literal = parse_int_literal(text)
    if literal is not None:
        return literal & MASK64
    const = 0
    terms: list[tuple[int, str]] = []
    pos = 0
    sign = 1
    first = True
    expect_term = True
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise SequenceError(f"cannot read {what} {raw!r} (expected {VALUE_FORMS})", where=where)
        pos = match.end()
        op, num, name = match.group("op"), match.group("num"), match.group("name")
        if op is not None:
            if expect_term and not (first and sign == 1):
                raise SequenceError(f"cannot read {what} {raw!r}: two operators in a row", where=where)
            # Either the operator between two terms or a leading sign ("-0x10").
            sign = 1 if op == "+" else -1
            expect_term = True
            first = False
            continue
        if not expect_term:
            raise SequenceError(f"cannot read {what} {raw!r}: missing + or - between terms", where=where)
        first = False
        if num is not None:
            number = _to_int(num)
            if number is None:
                raise SequenceError(f"cannot read {what} {raw!r}: bad number {num!r}", where=where)
            const += sign * number
        else:
            assert name is not None
            if name not in names:
                raise SequenceError(
                    f"unknown name {name!r} in {what} {raw!r}",
                    where=where,
                    valid=sorted(names, key=lambda n: (n.startswith("platform."), n)),
                )
            terms.append((sign, name))
        sign = 1
        expect_term = False
    if expect_term:
        raise SequenceError(f"cannot read {what} {raw!r} (expected {VALUE_FORMS})", where=where)
    if not terms:
        return const & MASK64
    return Expr(text=text, const=const, terms=tuple(terms))


@dataclass(frozen=True, slots=True)
class Wide:
    """A multi-register value (RPV, measurement, challenge) as bytes in order.

    ``exact`` is False when it was written as a YAML integer, whose leading zero
    bytes are lost: it then matches a 32-, 48- or 64-byte value of that number.
    """

    data: bytes
    exact: bool = True

    def matches(self, actual: bytes) -> bool:
        """True when ``actual`` (zero-padded storage) holds this value."""
        if self.exact:
            n = len(self.data)
            return actual[:n] == self.data and not any(actual[n:])
        want = int.from_bytes(self.data, "big")
        for n in (32, 48, 64):
            if n <= len(actual) and int.from_bytes(actual[:n], "big") == want and not any(actual[n:]):
                return True
        return False

    def __str__(self) -> str:
        return "0x" + self.data.hex()


# ---------------------------------------------------------------------------
# Compiled sequences
# ---------------------------------------------------------------------------

StructKind = Literal["realm_params", "rec_params", "rec_run", "src"]


@dataclass(frozen=True, slots=True)
class StructSpec:
    """A structure argument given as a mapping: the runner writes it to a scratch NS granule."""

    kind: StructKind
    fields: Mapping[str, Any]
    """Field name → Value, tuple of Values (lists), dict index → Value (gprs), or bytes."""


Arg = Value | StructSpec


@dataclass(frozen=True, slots=True)
class Expect:
    """What a step expects: status (None: not checked), index, outputs, REC exit fields."""

    text: str
    status: str | None = "success"
    index: int | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    exit: Mapping[str, Any] = field(default_factory=dict)


NO_CHECK = Expect(text="", status=None)


@dataclass(frozen=True, slots=True)
class CompatVariant:
    """How a step is judged when the RMM answers one rmm-abi.md §12 row as a reference implementation does."""

    mode: str
    """The ``model.compat`` value the variant belongs to (``tf-rmm-1.0``)."""
    row: int
    """The §12 row that changes the answer."""
    expect: Expect
    """The answer under the variant (its text names the mode and row)."""
    condition: str | None
    line: int
    text: str
    """The variant's ``expect`` as written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """A compiled step: the fields every kind shares."""

    name: str
    line: int
    op: str
    command: str
    expect: Expect
    save: Mapping[str, str] = field(default_factory=dict)
    """Saved name → output name."""
    condition: str | None = None
    compat: tuple[CompatVariant, ...] = ()
    """The step's answer under reference-implementation behaviours (``compat:``), one per mode."""

    def variant(self, rows: Collection[int]) -> CompatVariant | None:
        """The variant that judges this step when the RMM answers ``rows`` of §12 as TF-RMM does."""
        return next((v for v in self.compat if v.row in rows), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealmActionSpec:
    """A compiled realm action of a ``rec_enter`` (or the one RSI call of an ``rsi:`` step)."""

    kind: str
    name: str
    fid: int | None
    args: Mapping[str, Any]
    expect: Expect
    save: Mapping[str, str]
    line: int
    label: str
    wide: frozenset[str] = frozenset()
    condition: str | None = None
    """The RSI/PSCI failure condition the action must meet (checked where the target reports it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RmiStep(Step):
    """``rmi: COMMAND``: one RMI call (``rec_enter`` may carry realm actions)."""

    rmi: RmiCommand
    args: tuple[tuple[str, Arg], ...]
    """(spec input name, value) in register order."""
    realm: tuple[RealmActionSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RsiStep(Step):
    """``rsi: COMMAND`` with ``rec:``: enter the REC, make one RSI call, exit by host call."""

    rec: Value
    action: RealmActionSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessStep(Step):
    """``access:``: one probing NS load or store."""

    access: Literal["read", "write"]
    addr: Value
    size: int
    value: Value


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStep(Step):
    """``check: pas``: the PAS the GPT gives a granule."""

    addr: Value


@dataclass(frozen=True, slots=True, kw_only=True)
class SmcStep(Step):
    """``smc: FID``: a raw SMC from the host world."""

    fid: int
    args: tuple[Value, ...]


@dataclass(frozen=True)
class Sequence:
    """A loaded, validated and compiled sequence file."""

    name: str
    source: str
    description: str = ""
    requires: tuple[str, ...] = ()
    granules: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    raw_steps: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    """The steps as written (plain YAML data), one per compiled step: divergence reproducers copy them."""

    def __len__(self) -> int:
        return len(self.steps)

    def judged_by(self, rows: Collection[int]) -> Sequence:
        """This sequence with each step that has a ``compat:`` variant for one of ``rows`` judged by it.

        ``rows``: the rmm-abi.md §12 rows on which the target's RMM is expected to answer as
        the reference implementation (TF-RMM) does rather than as the spec's recommended order.
        """
        steps = []
        for step in self.steps:
            variant = step.variant(rows)
            if variant is not None:
                step = replace(step, expect=variant.expect, condition=variant.condition)
            steps.append(step)
        return replace(self, steps=tuple(steps))


# ---------------------------------------------------------------------------
# The compiler
# ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """YAML data without line bookkeeping: plain dicts and lists (for writing back out)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


class _Compiler:
    """Turns the YAML tree of one file into a :class:`Sequence`; SequenceError at the first problem."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.granules: tuple[str, ...] = ()
        self.names: set[str] = {f"platform.{n}" for n in PLATFORM_NAMES}
        self.saved: set[str] = set()

    def at(self, line: int) -> str:
        return f"{self.source}:{line}"

    def error(self, what: str, line: int, valid: Collection[str] | None = None) -> SequenceError:
        return SequenceError(what, where=self.at(line), valid=valid)

    # -- containers -----------------------------------------------------------

    def mapping(self, value: object, what: str, line: int) -> LineDict:
        if not isinstance(value, LineDict):
            raise self.error(f"{what} must be a mapping, got {_type_name(value)}", line)
        return value

    def keys(self, data: LineDict, allowed: Collection[str], what: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.error(f"unknown key {key!r} in {what}", data.line_of(key), valid=list(allowed))

    def string(self, value: object, what: str, line: int) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{what} must be a non-empty string, got {_type_name(value)}", line)
        return value.strip()

    # -- values ---------------------------------------------------------------

    def value(self, raw: object, line: int, what: str) -> Value:
        return parse_value(raw, names=self.names, where=self.at(line), what=what)

    def enum(self, raw: object, choices: Mapping[str, int], line: int, what: str) -> Value:
        """A spec enumeration by lower-case name, or any value."""
        if isinstance(raw, str) and raw.strip().lower() in choices:
            return choices[raw.strip().lower()] & MASK64
        if isinstance(raw, str) and _IDENT.match(raw.strip()) and raw.strip() not in self.names:
            raise self.error(f"unknown {what} {raw!r}", line, valid=[*choices, "an integer"])
        return self.value(raw, line, what)

    def flags(self, raw: object, choices: Mapping[str, int], line: int, what: str) -> Value:
        """Flags: an int, a flag name, a list of names/ints, or ``a|b``."""
        if isinstance(raw, list):
            total = 0
            for item in raw:
                part = self.flags(item, choices, line, what)
                if isinstance(part, Expr):
                    raise self.error(f"{what}: list items must be flag names or integers", line)
                total |= part
            return total
        if isinstance(raw, str) and "|" in raw:
            return self.flags([p.strip() for p in raw.split("|")], choices, line, what)
        return self.enum(raw, choices, line, what)

    def wide(self, raw: object, line: int, what: str, size: int = 64) -> Wide | Value:
        """A 64-byte value: hex text (bytes in order), an integer (its big-endian bytes), or any value."""
        if isinstance(raw, int) and not isinstance(raw, bool):
            if raw < 0 or raw.bit_length() > 8 * size:
                raise self.error(f"{what} does not fit in {size} bytes", line)
            return Wide(raw.to_bytes(max(1, (raw.bit_length() + 7) // 8), "big"), exact=False)
        if isinstance(raw, str):
            text = raw.strip().lower().replace("_", "")
            digits = text.removeprefix("0x")
            if (text.startswith("0x") or text[:1].isdigit()) and re.fullmatch(r"[0-9a-f]+", digits):
                data = bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
                if len(data) > size:
                    raise self.error(f"{what} is longer than {size} bytes", line)
                return Wide(data)
        return self.value(raw, line, what)

    def indexed(self, raw: object, count: int, line: int, what: str) -> dict[int, Value]:
        """``gprs``-like fields: a list (from index 0) or a mapping index → value."""
        out: dict[int, Value] = {}
        if isinstance(raw, list):
            items = list(enumerate(raw))
        elif isinstance(raw, LineDict):
            items = []
            for key, item in raw.items():
                index = parse_int_literal(str(key))
                if index is None:
                    raise self.error(f"{what}: index {key!r} is not a number", raw.line_of(key))
                items.append((index, item))
        else:
            raise self.error(f"{what} must be a list or a mapping index: value, got {_type_name(raw)}", line)
        for index, item in items:
            if not 0 <= index < count:
                raise self.error(f"{what}: index {index} out of range 0..{count - 1}", line)
            out[index] = self.value(item, line, f"{what}[{index}]")
        return out

    # -- structures -----------------------------------------------------------

    def realm_params(self, data: LineDict) -> StructSpec:
        fields_: dict[str, Any] = {}
        allowed = (
            "flags",
            "s2sz",
            "sve_vl",
            "num_bps",
            "num_wps",
            "pmu_num_ctrs",
            "hash_algo",
            "rpv",
            "vmid",
            "rtt_base",
            "rtt_level_start",
            "rtt_num_start",
        )
        self.keys(data, allowed, "RmiRealmParams")
        for key, raw in data.items():
            line = data.line_of(key)
            if key == "flags":
                fields_[key] = self.flags(raw, REALM_FLAG_NAMES, line, "RmiRealmParams flags")
            elif key == "hash_algo":
                fields_[key] = self.enum(raw, HASH_ALGO_NAMES, line, "hash_algo")
            elif key == "rpv":
                fields_[key] = self.wide(raw, line, "rpv")
            else:
                fields_[key] = self.value(raw, line, key)
        return StructSpec("realm_params", fields_)

    def rec_params(self, data: LineDict) -> StructSpec:
        fields_: dict[str, Any] = {}
        self.keys(data, ("flags", "mpidr", "pc", "gprs", "num_aux", "aux"), "RmiRecParams")
        for key, raw in data.items():
            line = data.line_of(key)
            if key == "flags":
                fields_[key] = self.flags(raw, REC_FLAG_NAMES, line, "RmiRecParams flags")
            elif key == "gprs":
                fields_[key] = self.indexed(raw, 8, line, "gprs")
            elif key == "aux":
                if not isinstance(raw, list):
                    raise self.error(f"aux must be a list of granules, got {_type_name(raw)}", line)
                if len(raw) > MAX_REC_AUX:
                    raise self.error(f"aux lists at most {MAX_REC_AUX} granules, got {len(raw)}", line)
                fields_[key] = tuple(self.value(item, line, f"aux[{i}]") for i, item in enumerate(raw))
            else:
                fields_[key] = self.value(raw, line, key)
        return StructSpec("rec_params", fields_)

    def rec_enter_flags(self, raw: object, line: int) -> Value:
        if not isinstance(raw, LineDict):
            return self.flags(raw, RecEnterFlags.NAMES, line, "RmiRecEnter flags")
        self.keys(raw, tuple(RecEnterFlags.NAMES), "RmiRecEnter flags")
        total = 0
        for key, item in raw.items():
            bit = RecEnterFlags.NAMES[key]
            item_line = raw.line_of(key)
            if key == "ripas_response":
                set_ = self.enum(item, RESPONSE_NAMES, item_line, "ripas_response")
            elif isinstance(item, bool):
                set_ = int(item)
            else:
                set_ = self.value(item, item_line, key)
            if isinstance(set_, Expr) or set_ not in (0, 1):
                raise self.error(f"{key} must be 0 or 1 (or true/false)", item_line)
            total |= bit if set_ else 0
        return total

    def rec_run(self, data: LineDict) -> StructSpec:
        fields_: dict[str, Any] = {}
        self.keys(data, ("flags", "gprs", "gicv3_hcr", "gicv3_lrs"), "RmiRecEnter")
        for key, raw in data.items():
            line = data.line_of(key)
            if key == "flags":
                fields_[key] = self.rec_enter_flags(raw, line)
            elif key == "gprs":
                fields_[key] = self.indexed(raw, 31, line, "gprs")
            elif key == "gicv3_lrs":
                fields_[key] = self.indexed(raw, 16, line, "gicv3_lrs")
            else:
                fields_[key] = self.value(raw, line, key)
        return StructSpec("rec_run", fields_)

    def src_content(self, data: LineDict) -> StructSpec:
        self.keys(data, ("fill", "bytes"), "src contents")
        fields_: dict[str, Any] = {}
        if "fill" in data:
            fill = self.value(data["fill"], data.line_of("fill"), "fill")
            if isinstance(fill, Expr) or fill > 0xFF:
                raise self.error("fill must be a byte value 0..255", data.line_of("fill"))
            fields_["fill"] = fill
        if "bytes" in data:
            raw = data["bytes"]
            text = str(raw).strip().lower().removeprefix("0x").replace(" ", "").replace("_", "")
            if not re.fullmatch(r"([0-9a-f]{2})*", text) or len(text) > 2 * 4096:
                raise self.error("bytes must be hex text of at most 4096 bytes", data.line_of("bytes"))
            fields_["bytes"] = bytes.fromhex(text)
        return StructSpec("src", fields_)

    # -- expectations -----------------------------------------------------------

    def expect_text(self, raw: object) -> str:
        if isinstance(raw, Mapping):
            inner = ", ".join(f"{k}: {self.expect_text(v)}" for k, v in raw.items())
            return "{" + inner + "}"
        if isinstance(raw, list):
            return "[" + ", ".join(self.expect_text(v) for v in raw) + "]"
        if isinstance(raw, int) and not isinstance(raw, bool):
            return f"{raw:#x}" if raw > 9 or raw < 0 else str(raw)
        return str(raw)

    def status_name(self, raw: object, statuses: Collection[str], line: int, what: str) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in statuses:
            raise self.error(f"unknown {what} {raw!r}", line, valid=list(statuses))
        return raw.strip().lower()

    def rmi_expect(self, raw: object, command: RmiCommand, line: int) -> Expect:
        statuses = [*RMI_STATUS_NAMES, "not_supported"]
        if raw is None:
            return Expect(text="success")
        if isinstance(raw, str):
            return Expect(text=raw.strip(), status=self.status_name(raw, statuses, line, "status"))
        data = self.mapping(raw, "expect", line)
        allowed = (
            ("status", "index", "outputs", "exit")
            if command.name == "rec_enter"
            else ("status", "index", "outputs")
        )
        self.keys(data, allowed, f"expect of {command.name}")
        status = "success"
        if "status" in data:
            status = self.status_name(data["status"], statuses, data.line_of("status"), "status")
        index = None
        if "index" in data:
            if "status" not in data:
                raise self.error("expect: index needs a status", data.line_of("index"))
            index_value = self.value(data["index"], data.line_of("index"), "index")
            if isinstance(index_value, Expr) or index_value > 0xFF:
                raise self.error("expect: index must be a number 0..255", data.line_of("index"))
            index = index_value
        outputs: dict[str, Any] = {}
        if "outputs" in data:
            out_line = data.line_of("outputs")
            out_data = self.mapping(data["outputs"], "outputs", out_line)
            by_name = {o.name: o for o in command.outputs}
            status_enum = RmiStatus[status.upper()] if status in RMI_STATUS_NAMES else None
            for key, item in out_data.items():
                item_line = out_data.line_of(key)
                if key not in by_name:
                    raise self.error(
                        f"{command.name} has no output {key!r}",
                        item_line,
                        valid=list(by_name) or ["(none)"],
                    )
                output = by_name[key]
                if not output_defined(output, status_enum):
                    raise self.error(
                        f"output {key!r} of {command.name} is not defined when the status is {status}",
                        item_line,
                    )
                if output.type == "RmiRttEntryState":
                    outputs[key] = self.enum(item, RTT_STATE_NAMES, item_line, "state")
                elif output.type == "RmiRipas":
                    outputs[key] = self.enum(item, RIPAS_NAMES, item_line, "ripas")
                else:
                    outputs[key] = self.value(item, item_line, key)
        exit_: dict[str, Any] = {}
        if "exit" in data:
            exit_line = data.line_of("exit")
            if status != "success":
                raise self.error("expect: exit is only defined when rec_enter succeeds", exit_line)
            exit_ = self.exit_fields(self.mapping(data["exit"], "exit", exit_line))
        return Expect(text=self.expect_text(raw), status=status, index=index, outputs=outputs, exit=exit_)

    def exit_fields(self, data: LineDict) -> dict[str, Any]:
        names = list(RecExit.LAYOUT)
        out: dict[str, Any] = {}
        for key, item in data.items():
            line = data.line_of(key)
            if key not in RecExit.LAYOUT:
                raise self.error(f"unknown REC exit field {key!r}", line, valid=names)
            if key == "exit_reason":
                out[key] = self.enum(item, EXIT_REASON_NAMES, line, "exit_reason")
            elif key == "ripas_value":
                out[key] = self.enum(item, RIPAS_NAMES, line, "ripas_value")
            elif key == "gprs":
                out[key] = self.indexed(item, 31, line, "gprs")
            elif key == "gicv3_lrs":
                out[key] = self.indexed(item, 16, line, "gicv3_lrs")
            else:
                out[key] = self.value(item, line, key)
        return out

    def generic_expect(
        self,
        raw: object,
        *,
        statuses: Collection[str],
        outputs: Collection[str],
        line: int,
        what: str,
        default: str | None,
        wide: Collection[str] = (),
        implied: str | None = "success",
        enums: Mapping[str, Mapping[str, int]] | None = None,
    ) -> Expect:
        """Expect forms shared by rsi, psci, smc and access: a status name or {status, index, outputs}."""
        if raw is None:
            return Expect(text=default or "", status=default)
        if isinstance(raw, str):
            return Expect(text=raw.strip(), status=self.status_name(raw, statuses, line, f"{what} status"))
        data = self.mapping(raw, "expect", line)
        self.keys(data, ("status", "index", "outputs"), f"expect of {what}")
        status: str | None = implied
        if "status" in data:
            status = self.status_name(data["status"], statuses, data.line_of("status"), f"{what} status")
        index = None
        if "index" in data:
            index_value = self.value(data["index"], data.line_of("index"), "index")
            if isinstance(index_value, Expr) or "status" not in data:
                raise self.error("expect: index needs a status and a number", data.line_of("index"))
            index = index_value
        outs: dict[str, Any] = {}
        if "outputs" in data:
            out_data = self.mapping(data["outputs"], "outputs", data.line_of("outputs"))
            for key, item in out_data.items():
                item_line = out_data.line_of(key)
                if key not in outputs:
                    raise self.error(
                        f"{what} has no output {key!r}", item_line, valid=list(outputs) or ["(none)"]
                    )
                if enums and key in enums:
                    outs[key] = self.enum(item, enums[key], item_line, key)
                elif key in wide:
                    outs[key] = self.wide(item, item_line, key)
                else:
                    outs[key] = self.value(item, item_line, key)
        return Expect(text=self.expect_text(raw), status=status, index=index, outputs=outs)

    # -- save / condition -----------------------------------------------------

    def save(self, raw: object, outputs: Collection[str], line: int, what: str) -> dict[str, str]:
        if raw is None:
            return {}
        data = self.mapping(raw, "save", line)
        out: dict[str, str] = {}
        for new_name, output in data.items():
            item_line = data.line_of(new_name)
            if not _IDENT.match(new_name):
                raise self.error(f"save: {new_name!r} is not a name (letters, digits, _)", item_line)
            if new_name in self.granules:
                raise self.error(f"save: {new_name!r} is already a granule name", item_line)
            if not isinstance(output, str) or output not in outputs:
                raise self.error(
                    f"save: {what} has no output {output!r}",
                    item_line,
                    valid=list(outputs) or ["(none)"],
                )
            out[new_name] = output
        return out

    def remember(self, saved: Mapping[str, str]) -> None:
        # Saved names become usable by the steps after the one that saves them.
        self.saved.update(saved)
        self.names.update(saved)

    def condition(self, raw: object, labels: Collection[str], expect: Expect, line: int, what: str) -> str:
        if not isinstance(raw, str) or raw not in labels:
            raise self.error(
                f"{what} has no failure condition {raw!r}", line, valid=list(labels) or ["(none)"]
            )
        if expect.status in (None, "success"):
            raise self.error(f"condition {raw!r} needs an expect that is a failure status", line)
        return raw

    # -- steps ----------------------------------------------------------------

    def args_mapping(self, step: LineDict) -> LineDict:
        if "args" not in step or step["args"] is None:
            empty = LineDict()
            empty.line = step.line_of("args")
            empty.key_lines = {}
            return empty
        return self.mapping(step["args"], "args", step.line_of("args"))

    def rmi_step(self, step: LineDict, name: str, line: int) -> RmiStep:
        command_name = self.string(step["rmi"], "rmi", step.line_of("rmi"))
        command = RMI_1_0.by_name.get(command_name)
        if command is None:
            raise self.error(
                f"unknown RMI command {command_name!r}", step.line_of("rmi"), valid=list(RMI_1_0.by_name)
            )
        args = self.args_mapping(step)
        accepted: dict[str, str] = {}
        for param in command.inputs:
            for spelling in (param.name, *param.aliases):
                accepted[spelling] = param.name
        given: dict[str, tuple[object, int]] = {}
        for key, raw in args.items():
            key_line = args.line_of(key)
            if key not in accepted:
                raise self.error(f"{command.name} has no argument {key!r}", key_line, valid=list(accepted))
            spec_name = accepted[key]
            if spec_name in given:
                raise self.error(f"{command.name}: {key!r} names an argument already given", key_line)
            given[spec_name] = (raw, key_line)
        compiled: list[tuple[str, Arg]] = []
        for param in sorted(command.inputs, key=lambda p: p.reg):
            struct_kind = _STRUCT_INPUTS.get((command.name, param.name))
            if param.name not in given:
                if struct_kind in ("realm_params", "rec_params", "rec_run"):
                    compiled.append((param.name, StructSpec(struct_kind, {})))
                    continue
                raise self.error(
                    f"{command.name} needs argument {param.name!r}",
                    args.line,
                    valid=[p.name for p in command.inputs],
                )
            raw, key_line = given[param.name]
            compiled.append((param.name, self.rmi_arg(command, param, raw, key_line)))
        expect = self.rmi_expect(step.get("expect"), command, step.line_of("expect"))
        realm: tuple[RealmActionSpec, ...] = ()
        if "realm" in step:
            if command.name != "rec_enter":
                raise self.error("realm: actions belong to rmi: rec_enter", step.line_of("realm"))
            realm = self.realm_actions(step["realm"], step.line_of("realm"), name)
        condition = None
        if "condition" in step:
            labels = list(dict.fromkeys(c.label for c in command.conditions))
            condition = self.condition(
                step["condition"], labels, expect, step.line_of("condition"), command.name
            )
        save = self.save(
            step.get("save"), [o.name for o in command.outputs], step.line_of("save"), command.name
        )
        return RmiStep(
            name=name,
            line=line,
            op="rmi",
            command=command.name,
            expect=expect,
            save=save,
            condition=condition,
            rmi=command,
            args=tuple(compiled),
            realm=realm,
        )

    def rmi_arg(self, command: RmiCommand, param: Param, raw: object, line: int) -> Arg:
        struct_kind = _STRUCT_INPUTS.get((command.name, param.name))
        type_, name = param.type, param.name
        if struct_kind is not None and isinstance(raw, LineDict):
            if struct_kind == "realm_params":
                return self.realm_params(raw)
            if struct_kind == "rec_params":
                return self.rec_params(raw)
            if struct_kind == "rec_run":
                return self.rec_run(raw)
            return self.src_content(raw)
        if type_ == "RmiDataFlags":
            return self.flags(raw, DATA_FLAG_NAMES, line, "data flags")
        if type_ == "PsciReturnCode":
            return self.enum(raw, PSCI_STATUS_NAMES, line, "PSCI status")
        return self.value(raw, line, f"{command.name} {name}")

    def rsi_action(self, data: LineDict, line: int, label: str) -> RealmActionSpec:
        command_name = self.string(data["rsi"], "rsi", data.line_of("rsi"))
        command = RSI_COMMANDS.get(command_name)
        if command is None:
            raise self.error(
                f"unknown RSI command {command_name!r}", data.line_of("rsi"), valid=list(RSI_COMMANDS)
            )
        args = self.args_mapping(data)
        compiled: dict[str, Any] = {}
        for key, raw in args.items():
            key_line = args.line_of(key)
            if key not in command.inputs:
                raise self.error(
                    f"RSI {command.name} has no argument {key!r}", key_line, valid=list(command.inputs)
                )
            if key == "ripas":
                compiled[key] = self.enum(raw, RIPAS_NAMES, key_line, "ripas")
            elif key == "gprs":
                compiled[key] = self.indexed(raw, 31, key_line, "gprs")
            elif key in command.wide:
                compiled[key] = self.wide(raw, key_line, key)
            else:
                compiled[key] = self.value(raw, key_line, key)
        expect = self.generic_expect(
            data.get("expect"),
            statuses=RSI_STATUS_NAMES,
            outputs=command.outputs,
            line=data.line_of("expect"),
            what=f"RSI {command.name}",
            default="success",
            wide=command.wide,
            enums={"ripas": RIPAS_NAMES, "response": RESPONSE_NAMES},
        )
        save = self.save(data.get("save"), command.outputs, data.line_of("save"), f"RSI {command.name}")
        condition = None
        if "condition" in data:
            condition = self.condition(
                data["condition"],
                command.conditions,
                expect,
                data.line_of("condition"),
                f"RSI {command.name}",
            )
        return RealmActionSpec(
            kind="rsi",
            name=command.name,
            fid=command.fid,
            args=compiled,
            expect=expect,
            save=save,
            line=line,
            label=label,
            wide=command.wide,
            condition=condition,
        )

    def realm_actions(self, raw: object, line: int, step_name: str) -> tuple[RealmActionSpec, ...]:
        if not isinstance(raw, LineList):
            raise self.error(f"realm must be a list of actions, got {_type_name(raw)}", line)
        out: list[RealmActionSpec] = []
        for i, item in enumerate(raw):
            item_line = raw.line_of(i)
            label = f"{step_name}/{i + 1}"
            if isinstance(item, str):
                if item not in _BARE_ACTIONS:
                    raise self.error(f"unknown realm action {item!r}", item_line, valid=REALM_ACTION_KINDS)
                out.append(self.bare_action(item, None, item_line, label))
                continue
            data = self.mapping(item, "a realm action", item_line)
            kinds = [k for k in data if k in REALM_ACTION_KINDS]
            if len(kinds) != 1:
                raise self.error(
                    "a realm action names exactly one kind" + (f" (got {', '.join(kinds)})" if kinds else ""),
                    item_line,
                    valid=REALM_ACTION_KINDS,
                )
            kind = kinds[0]
            if kind == "rsi":
                self.keys(data, ("rsi", "args", "expect", "save", "condition"), "a realm rsi action")
                action = self.rsi_action(data, item_line, f"{label} rsi {data['rsi']}")
                self.remember(action.save)
                out.append(action)
            elif kind == "psci":
                out.append(self.psci_action(data, item_line, label))
            elif kind == "smc":
                self.keys(data, ("smc", "args", "expect", "save"), "a realm smc action")
                fid = self.fid(data["smc"], data.line_of("smc"))
                args = self.smc_args(data.get("args"), data.line_of("args"))
                expect = self.smc_expect(data.get("expect"), data.line_of("expect"), default=None)
                save = self.save(data.get("save"), _SMC_OUTPUTS, data.line_of("save"), "smc")
                self.remember(save)
                out.append(
                    RealmActionSpec(
                        kind="smc",
                        name=f"{fid:#x}",
                        fid=fid,
                        args={f"x{i + 1}": v for i, v in enumerate(args)},
                        expect=expect,
                        save=save,
                        line=item_line,
                        label=f"{label} smc {fid:#x}",
                    )
                )
            elif kind == "mmio":
                out.append(self.mmio_action(data, item_line, label))
            elif kind == "sysreg":
                self.keys(data, ("sysreg",), "a realm sysreg action")
                reg = self.string(data["sysreg"], "sysreg", item_line)
                if not _IDENT.match(reg):
                    raise self.error(f"sysreg {reg!r} is not a register name", item_line)
                out.append(
                    RealmActionSpec(
                        kind="sysreg",
                        name=reg,
                        fid=None,
                        args={},
                        expect=NO_CHECK,
                        save={},
                        line=item_line,
                        label=f"{label} sysreg {reg}",
                    )
                )
            else:
                self.keys(data, (kind,), f"a realm {kind} action")
                out.append(self.bare_action(kind, data[kind], item_line, label))
        return tuple(out)

    def bare_action(self, kind: str, raw: object, line: int, label: str) -> RealmActionSpec:
        args: dict[str, Any] = {}
        if kind == "hvc" and raw is not None:
            imm = self.value(raw, line, "hvc immediate")
            if isinstance(imm, Expr) or imm > 0xFFFF:
                raise self.error("hvc immediate must be a number 0..0xffff", line)
            args["imm"] = imm
        elif raw is not None and raw is not True and raw != {}:
            raise self.error(f"realm action {kind} takes no value, got {_type_name(raw)}", line)
        return RealmActionSpec(
            kind=kind,
            name=kind,
            fid=None,
            args=args,
            expect=NO_CHECK,
            save={},
            line=line,
            label=f"{label} {kind}",
        )

    def psci_action(self, data: LineDict, line: int, label: str) -> RealmActionSpec:
        self.keys(data, ("psci", "args", "expect", "save", "condition"), "a realm psci action")
        name = self.string(data["psci"], "psci", data.line_of("psci"))
        if name not in PSCI_FUNCTIONS:
            raise self.error(
                f"unknown PSCI function {name!r}", data.line_of("psci"), valid=list(PSCI_FUNCTIONS)
            )
        fid, inputs = PSCI_FUNCTIONS[name]
        args = self.args_mapping(data)
        compiled: dict[str, Any] = {}
        for key, raw in args.items():
            if key not in inputs:
                raise self.error(
                    f"PSCI {name} has no argument {key!r}",
                    args.line_of(key),
                    valid=list(inputs) or ["(none)"],
                )
            compiled[key] = self.value(raw, args.line_of(key), key)
        expect = self.generic_expect(
            data.get("expect"),
            statuses=PSCI_STATUS_NAMES,
            outputs=("result",),
            line=data.line_of("expect"),
            what=f"PSCI {name}",
            default=None,
            implied=None,
        )
        save = self.save(data.get("save"), ("result",), data.line_of("save"), f"PSCI {name}")
        self.remember(save)
        condition = None
        if "condition" in data:
            condition = self.condition(
                data["condition"], PSCI_CONDITIONS[name], expect, data.line_of("condition"), f"PSCI {name}"
            )
        return RealmActionSpec(
            kind="psci",
            name=name,
            fid=fid,
            args=compiled,
            expect=expect,
            save=save,
            line=line,
            label=f"{label} psci {name}",
            condition=condition,
        )

    def mmio_action(self, data: LineDict, line: int, label: str) -> RealmActionSpec:
        self.keys(data, ("mmio", "expect", "save"), "a realm mmio action")
        spec = self.mapping(data["mmio"], "mmio", data.line_of("mmio"))
        self.keys(spec, ("op", "ipa", "size", "value"), "mmio")
        op = spec.get("op")
        if op not in ("read", "write"):
            raise self.error(
                f"mmio op must be read or write, got {op!r}", spec.line_of("op"), valid=["read", "write"]
            )
        if "ipa" not in spec:
            raise self.error("mmio needs ipa", spec.line, valid=["op", "ipa", "size", "value"])
        args: dict[str, Any] = {"ipa": self.value(spec["ipa"], spec.line_of("ipa"), "ipa")}
        args["size"] = self.size(spec.get("size", 8), spec.line_of("size"))
        if "value" in spec:
            args["value"] = self.value(spec["value"], spec.line_of("value"), "value")
        expect = self.generic_expect(
            data.get("expect"),
            statuses=(),
            outputs=("value",),
            line=data.line_of("expect"),
            what="mmio",
            default=None,
            implied=None,
        )
        save = self.save(data.get("save"), ("value",), data.line_of("save"), "mmio")
        self.remember(save)
        return RealmActionSpec(
            kind="mmio",
            name=str(op),
            fid=None,
            args=args,
            expect=expect,
            save=save,
            line=line,
            label=f"{label} mmio {op}",
        )

    def size(self, raw: object, line: int) -> int:
        if raw not in (1, 2, 4, 8):
            raise self.error(f"size must be 1, 2, 4 or 8, got {raw!r}", line, valid=["1", "2", "4", "8"])
        assert isinstance(raw, int)
        return raw

    def rsi_step(self, step: LineDict, name: str, line: int) -> RsiStep:
        if "rec" not in step:
            raise self.error("an rsi: step needs rec: (the REC to enter)", line)
        rec = self.value(step["rec"], step.line_of("rec"), "rec")
        keys = ("rsi", "args", "expect", "save", "condition")
        inner = LineDict({k: v for k, v in step.items() if k in keys})
        inner.line = step.line
        inner.key_lines = dict(step.key_lines)
        action = self.rsi_action(inner, line, name)
        return RsiStep(
            name=name,
            line=line,
            op="rsi",
            command=action.name,
            expect=action.expect,
            save=action.save,
            condition=action.condition,
            rec=rec,
            action=action,
        )

    def access_step(self, step: LineDict, name: str, line: int) -> AccessStep:
        raw = step["access"]
        key_line = step.line_of("access")
        if isinstance(raw, LineDict):
            if "args" in step:
                raise self.error(
                    "give the access either as a mapping or with args, not both", step.line_of("args")
                )
            spec = raw
        else:
            spec = self.args_mapping(step)
            if raw not in ("read", "write"):
                raise self.error(f"unknown access {raw!r}", key_line, valid=["read", "write"])
        allowed = ("op", "addr", "size", "value") if isinstance(raw, LineDict) else ("addr", "size", "value")
        self.keys(spec, allowed, "access")
        op = spec.get("op", "read") if isinstance(raw, LineDict) else raw
        if op not in ("read", "write"):
            raise self.error(
                f"access op must be read or write, got {op!r}", spec.line_of("op"), valid=["read", "write"]
            )
        if "addr" not in spec:
            raise self.error("access needs addr", spec.line, valid=list(allowed))
        addr = self.value(spec["addr"], spec.line_of("addr"), "addr")
        size = self.size(spec.get("size", 8), spec.line_of("size"))
        value = self.value(spec.get("value", 0), spec.line_of("value"), "value")
        expect = self.generic_expect(
            step.get("expect"),
            statuses=ACCESS_STATUSES,
            outputs=("value",),
            line=step.line_of("expect"),
            what="access",
            default="ok",
            implied="ok",
        )
        save = self.save(step.get("save"), ("value",), step.line_of("save"), "access")
        return AccessStep(
            name=name,
            line=line,
            op="access",
            command=str(op),
            expect=expect,
            save=save,
            access="read" if op == "read" else "write",
            addr=addr,
            size=size,
            value=value,
        )

    def check_step(self, step: LineDict, name: str, line: int) -> CheckStep:
        check = step["check"]
        if check not in CHECKS:
            raise self.error(f"unknown check {check!r}", step.line_of("check"), valid=CHECKS)
        args = self.args_mapping(step)
        self.keys(args, ("addr",), "check pas")
        if "addr" not in args:
            raise self.error("check pas needs args: {addr: …}", args.line, valid=["addr"])
        addr = self.value(args["addr"], args.line_of("addr"), "addr")
        if "expect" not in step:
            raise self.error("check pas needs expect: a PAS name", line, valid=PAS_NAMES)
        raw = step["expect"]
        try:
            pas = Pas.parse(raw) if isinstance(raw, str) else None
        except ValueError:
            pas = None
        if pas is None:
            raise self.error(f"unknown PAS {raw!r}", step.line_of("expect"), valid=PAS_NAMES)
        return CheckStep(
            name=name,
            line=line,
            op="check",
            command="pas",
            expect=Expect(text=str(pas), status=str(pas)),
            addr=addr,
        )

    def fid(self, raw: object, line: int) -> int:
        value = self.value(raw, line, "smc function identifier")
        if isinstance(value, Expr) or value > 0xFFFF_FFFF:
            raise self.error(f"smc needs a 32-bit function identifier, got {raw!r}", line)
        return value

    def smc_args(self, raw: object, line: int) -> tuple[Value, ...]:
        if raw is None:
            return ()
        if isinstance(raw, LineList):
            if len(raw) > 17:
                raise self.error("smc takes at most 17 arguments (X1..X17)", line)
            return tuple(self.value(item, raw.line_of(i), f"x{i + 1}") for i, item in enumerate(raw))
        data = self.mapping(raw, "smc args (a list X1.. or a mapping x1: …)", line)
        regs: dict[int, Value] = {}
        valid = [f"x{i}" for i in range(1, 18)]
        for key, item in data.items():
            if key not in valid:
                raise self.error(f"unknown smc argument {key!r}", data.line_of(key), valid=valid)
            regs[int(key[1:])] = self.value(item, data.line_of(key), key)
        count = max(regs, default=0)
        return tuple(regs.get(i, 0) for i in range(1, count + 1))

    def smc_expect(self, raw: object, line: int, default: str | None) -> Expect:
        # {outputs: {x0: …}} checks X0 itself, so only outputs without x0 imply success.
        implied: str | None = "success"
        if isinstance(raw, LineDict) and isinstance(raw.get("outputs"), Mapping) and "x0" in raw["outputs"]:
            implied = None
        return self.generic_expect(
            raw,
            statuses=[*RMI_STATUS_NAMES, "not_supported"],
            outputs=_SMC_OUTPUTS,
            line=line,
            what="smc",
            default=default,
            implied=implied,
        )

    def smc_step(self, step: LineDict, name: str, line: int) -> SmcStep:
        fid = self.fid(step["smc"], step.line_of("smc"))
        args = self.smc_args(step.get("args"), step.line_of("args"))
        expect = self.smc_expect(step.get("expect"), step.line_of("expect"), default="success")
        save = self.save(step.get("save"), _SMC_OUTPUTS, step.line_of("save"), "smc")
        return SmcStep(
            name=name,
            line=line,
            op="smc",
            command=f"{fid:#x}",
            expect=expect,
            save=save,
            fid=fid,
            args=args,
        )

    # -- the file -------------------------------------------------------------

    def sequence(self, data: object) -> Sequence:
        if not isinstance(data, LineDict):
            raise self.error(
                f"a sequence file must be a YAML mapping, got {_type_name(data)}", 1, valid=TOP_LEVEL_KEYS
            )
        self.keys(data, TOP_LEVEL_KEYS, "the sequence")
        if "sequence" not in data:
            raise self.error("missing key 'sequence' (the sequence's name)", data.line, valid=TOP_LEVEL_KEYS)
        name = self.string(data["sequence"], "sequence", data.line_of("sequence"))
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise self.error("description must be text", data.line_of("description"))
        requires = self.requires(data.get("requires"), data.line_of("requires"))
        self.granules = self.granule_names(data.get("granules"), data.line_of("granules"))
        self.names.update(self.granules)
        if "steps" not in data:
            raise self.error("missing key 'steps'", data.line, valid=TOP_LEVEL_KEYS)
        raw_steps = data["steps"]
        if not isinstance(raw_steps, LineList):
            raise self.error(f"steps must be a list, got {_type_name(raw_steps)}", data.line_of("steps"))
        steps: list[Step] = []
        seen: dict[str, int] = {}
        for position, raw in enumerate(raw_steps, start=1):
            step = self.step(raw, position, raw_steps.line_of(position - 1))
            if step.name in seen:
                raise self.error(
                    f"duplicate step name {step.name!r} (first at line {seen[step.name]})", step.line
                )
            seen[step.name] = step.line
            steps.append(step)
            self.remember(step.save)
        return Sequence(
            name=name,
            source=self.source,
            description=description.strip(),
            requires=requires,
            granules=self.granules,
            steps=tuple(steps),
            raw_steps=tuple(_plain(raw) for raw in raw_steps),
        )

    def requires(self, raw: object, line: int) -> tuple[str, ...]:
        if raw is None:
            return ()
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise self.error(f"requires must be a list of capabilities, got {_type_name(raw)}", line)
        valid = (*Capability.ALL, *FEATURE_REQUIREMENTS)
        for item in items:
            if item not in valid:
                raise self.error(f"unknown capability {item!r}", line, valid=valid)
        return tuple(items)

    def granule_names(self, raw: object, line: int) -> tuple[str, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, LineList):
            raise self.error(f"granules must be a list of names, got {_type_name(raw)}", line)
        seen: set[str] = set()
        for i, item in enumerate(raw):
            item_line = raw.line_of(i)
            if not isinstance(item, str) or not _IDENT.match(item):
                raise self.error(f"granule name {item!r} is not a name (letters, digits, _)", item_line)
            if item == "platform":
                raise self.error("'platform' is reserved for platform.NAME values", item_line)
            if item in seen:
                raise self.error(f"granule {item!r} is listed twice", item_line)
            seen.add(item)
        return tuple(raw)

    def step(self, raw: object, position: int, line: int) -> Step:
        data = self.mapping(raw, f"step {position}", line)
        kinds = [k for k in STEP_KINDS if k in data]
        if len(kinds) != 1:
            unknown = [k for k in data if k not in {key for keys in _STEP_KEYS.values() for key in keys}]
            if unknown:
                raise self.error(
                    f"unknown key {unknown[0]!r} in step {position}",
                    data.line_of(unknown[0]),
                    valid=STEP_KINDS,
                )
            detail = f" (got {', '.join(kinds)})" if kinds else ""
            raise self.error(f"step {position} must name exactly one kind{detail}", line, valid=STEP_KINDS)
        kind = kinds[0]
        self.keys(
            data,
            _STEP_KEYS[kind],
            f"an {kind} step" if kind in ("rmi", "rsi", "access", "smc") else f"a {kind} step",
        )
        name = self.step_name(data, kind, position)
        if "compat" not in data:
            return self.kind_step(kind, data, name, line)
        plain = self.without(data, ("compat",))
        step = self.kind_step(kind, plain, name, line)
        variants = self.compat_variants(kind, plain, name, data["compat"], data.line_of("compat"))
        return replace(step, compat=variants)

    def kind_step(self, kind: str, data: LineDict, name: str, line: int) -> Step:
        if kind == "rmi":
            return self.rmi_step(data, name, line)
        if kind == "rsi":
            return self.rsi_step(data, name, line)
        if kind == "access":
            return self.access_step(data, name, line)
        if kind == "check":
            return self.check_step(data, name, line)
        return self.smc_step(data, name, line)

    @staticmethod
    def without(data: LineDict, keys: Collection[str]) -> LineDict:
        """A copy of ``data`` without ``keys``, keeping every line number."""
        copy = LineDict({k: v for k, v in data.items() if k not in keys})
        copy.line = data.line
        copy.key_lines = {k: v for k, v in data.key_lines.items() if k not in keys}
        return copy

    def compat_variants(
        self, kind: str, data: LineDict, name: str, raw: object, line: int
    ) -> tuple[CompatVariant, ...]:
        """``compat: {tf-rmm-1.0: {row: N, expect: …, condition: …}}``: the step judged another way."""
        modes = self.mapping(raw, "compat", line)
        variants = []
        for mode, spec_raw in modes.items():
            mode_line = modes.line_of(mode)
            if mode not in COMPAT_MODES or mode == "spec":
                valid = [m for m in COMPAT_MODES if m != "spec"]
                raise self.error(f"unknown compat mode {mode!r}", mode_line, valid=valid)
            spec = self.mapping(spec_raw, f"compat {mode}", mode_line)
            self.keys(spec, COMPAT_VARIANT_KEYS, f"compat {mode}")
            if "row" not in spec:
                raise self.error(f"compat {mode} needs row: (the rmm-abi.md §12 row it follows)", mode_line)
            row = spec["row"]
            if not isinstance(row, int) or isinstance(row, bool) or row not in QUIRK_ROWS:
                raise self.error(
                    f"compat {mode} row {row!r} is not a §12 row where TF-RMM departs from the spec",
                    spec.line_of("row"),
                    valid=[str(r) for r in QUIRK_ROWS],
                )
            # The variant is the same step with the variant's expect and condition: compile it as one.
            variant = self.without(data, ("expect", "condition"))
            for key in ("expect", "condition"):
                if key in spec:
                    variant[key] = spec[key]
                    variant.key_lines[key] = spec.line_of(key)
            compiled = self.kind_step(kind, variant, name, data.line)
            text = f"{compiled.expect.text or 'success'} ({mode}, rmm-abi §12 row {row})"
            variants.append(
                CompatVariant(
                    mode=str(mode),
                    row=row,
                    expect=replace(compiled.expect, text=text),
                    condition=compiled.condition,
                    line=mode_line,
                    text=compiled.expect.text or "success",
                )
            )
        return tuple(variants)

    def step_name(self, data: LineDict, kind: str, position: int) -> str:
        if "name" in data:
            return self.string(data["name"], "name", data.line_of("name"))
        command = data[kind]
        if kind == "smc":
            command = "smc"
        elif kind == "access":
            command = command.get("op", "read") if isinstance(command, Mapping) else command
        return f"{command}#{position}"


_STRUCT_INPUTS: dict[tuple[str, str], StructKind] = {
    ("realm_create", "params_ptr"): "realm_params",
    ("rec_create", "params_ptr"): "rec_params",
    ("rec_enter", "run_ptr"): "rec_run",
    ("data_create", "src"): "src",
}
"""Address inputs that may be given as a mapping the runner writes to NS memory."""

_SMC_OUTPUTS = tuple(f"x{i}" for i in range(18))


def load_sequence_text(text: str, *, source: str = "<text>") -> Sequence:
    """Load a sequence from YAML text (``source`` names it in errors)."""
    try:
        data = load_text(text, source=source)
    except SequenceError:
        raise
    except InputError as exc:
        raise SequenceError(exc.what, where=exc.where, valid=exc.valid) from exc
    return _Compiler(source).sequence(data)


def load_sequence(path: str | Path) -> Sequence:
    """Load, validate and compile a sequence file (SequenceError naming file:line on any problem)."""
    path = Path(path)
    try:
        data = load_file(path)
    except SequenceError:
        raise
    except InputError as exc:
        raise SequenceError(exc.what, where=exc.where, valid=exc.valid) from exc
    return _Compiler(str(path)).sequence(data)
