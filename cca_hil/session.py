"""Bench sessions: one-shot ``cca-hil rmi …`` calls that build on each other.

The in-process model lives only as long as one ``cca-hil`` process, so a bench
workflow (delegate a granule now, create a realm with it in the next command)
needs the model's state carried from one invocation to the next. A session
does that without serialising the model: it is a *journal* — the profile, its
resolved parameters (seed included) and the ordered host operations (SMCs with
their arguments, Non-secure memory writes and stores) — kept as JSON under
``<runs root>/sessions/<name>.json``. Opening a session builds a fresh model,
which is deterministic from its seed, and replays the journal; every replayed
SMC must return the X0 it returned when it was recorded, or the model's code
changed under the session and it is refused (start over with
``cca-hil rmi --reset-session``).

Targets that keep their own state between processes (an FVP, QEMU, a board)
need no journal: the state is in the target. For them :meth:`Session.open`
hands back the plain target and records nothing, and ``--history`` says so.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cca_hil import __version__
from cca_hil.arch.rmi import GRANULE_SIZE, MASK64, HashAlgorithm, Param, RmiCommand, to_signed64
from cca_hil.arch.rmi_1_0 import REC_ENTER, RMI_1_0
from cca_hil.arch.structs import RealmFlags, RealmParams, RecCreateFlags, RecParams, Structure
from cca_hil.errors import InputError, TargetError
from cca_hil.report import write_atomically
from cca_hil.results import now
from cca_hil.targets.base import AccessOp, AccessResult, Capability, Target, TargetInfo

if TYPE_CHECKING:
    from cca_hil.arch.pas import Pas
    from cca_hil.profiles import Profile
    from cca_hil.rmi_client import RmiClient, RmiResult

SCHEMA = "cca-hil-session/1"
DEFAULT_SESSION = "default"

JOURNALED_KINDS = frozenset({"model"})
"""Target kinds rebuilt from scratch by every process, whose state therefore lives in a journal."""

LOCK_TIMEOUT = 10.0
"""Seconds to wait for another ``cca-hil`` process that holds the same session."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SessionError(InputError):
    """A session journal cannot be used: unreadable, for another profile, or its replay diverged."""


@dataclass(frozen=True, slots=True)
class SmcOp:
    """An SMC the host issued, with the registers it got back and the condition the model named."""

    fid: int
    args: tuple[int, ...]
    result: tuple[int, ...]
    condition: str | None = None

    kind: ClassVar[str] = "smc"

    def to_json(self) -> dict[str, Any]:
        """JSON form (registers as hex strings)."""
        data: dict[str, Any] = {
            "op": self.kind,
            "fid": f"{self.fid:#x}",
            "args": [f"{a:#x}" for a in self.args],
            "result": [f"{r:#x}" for r in self.result],
        }
        if self.condition is not None:
            data["condition"] = self.condition
        return data


@dataclass(frozen=True, slots=True)
class WriteOp:
    """A Non-secure memory write by the host (structures handed to the RMM by address)."""

    pa: int
    data: bytes

    kind: ClassVar[str] = "write"

    def to_json(self) -> dict[str, Any]:
        """JSON form; trailing zero bytes are implied by ``size`` (structures are mostly zero)."""
        return {
            "op": self.kind,
            "pa": f"{self.pa:#x}",
            "size": len(self.data),
            "data": self.data.rstrip(b"\0").hex(),
        }


@dataclass(frozen=True, slots=True)
class StoreOp:
    """A probing Non-secure store (``access`` with op ``write``) and whether it faulted."""

    pa: int
    size: int
    value: int
    faulted: bool

    kind: ClassVar[str] = "store"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "op": self.kind,
            "pa": f"{self.pa:#x}",
            "size": self.size,
            "value": f"{self.value:#x}",
            "faulted": self.faulted,
        }


Operation = SmcOp | WriteOp | StoreOp


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"expected an integer, got {value!r}")
    return value if isinstance(value, int) else int(value, 0)


def operation_from_json(data: Mapping[str, Any]) -> Operation:
    """Decode one journal entry (KeyError/TypeError/ValueError on a malformed one)."""
    op = data["op"]
    if op == SmcOp.kind:
        condition = data.get("condition")
        return SmcOp(
            fid=_int(data["fid"]),
            args=tuple(_int(a) for a in data["args"]),
            result=tuple(_int(r) for r in data["result"]),
            condition=str(condition) if condition is not None else None,
        )
    if op == WriteOp.kind:
        size = _int(data["size"])
        return WriteOp(pa=_int(data["pa"]), data=bytes.fromhex(data["data"]).ljust(size, b"\0"))
    if op == StoreOp.kind:
        return StoreOp(
            pa=_int(data["pa"]),
            size=_int(data["size"]),
            value=_int(data["value"]),
            faulted=bool(data["faulted"]),
        )
    raise ValueError(f"unknown operation {op!r}")


@dataclass
class Journal:
    """What a session remembers: the target it was made for and the host operations, in order."""

    name: str
    profile: str
    """The profile as given on the command line (name or path)."""
    kind: str
    params: dict[str, Any]
    """The profile's resolved parameters (after overrides): the model is deterministic from these."""
    overrides: list[str] = field(default_factory=list)
    created: str = field(default_factory=now)
    updated: str = ""
    tool_version: str = __version__
    operations: list[Operation] = field(default_factory=list)

    @property
    def seed(self) -> int | None:
        """The model seed the session was made with."""
        seed = self.params.get("seed")
        return seed if isinstance(seed, int) else None

    def to_json(self) -> dict[str, Any]:
        """The session document."""
        return {
            "schema": SCHEMA,
            "name": self.name,
            "profile": self.profile,
            "kind": self.kind,
            "seed": self.seed,
            "params": self.params,
            "overrides": self.overrides,
            "created": self.created,
            "updated": self.updated,
            "tool_version": self.tool_version,
            "operations": [op.to_json() for op in self.operations],
        }

    def dumps(self) -> str:
        """The session document as text: an operation per line, so that it reads, diffs and writes well."""
        header = self.to_json()
        operations = header.pop("operations")
        head = json.dumps(header, indent=1)
        lines = ",\n".join(json.dumps(op, separators=(",", ":")) for op in operations)
        return f'{head[:-2]},\n "operations": [\n{lines}\n ]\n}}\n'

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Journal:
        """Decode a session document; anything malformed is a SessionError naming the file."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise SessionError(
                f"not a {SCHEMA} document; start over with `cca-hil rmi --reset-session`", where=where
            )
        try:
            operations: list[Operation] = []
            for index, entry in enumerate(data["operations"]):
                try:
                    operations.append(operation_from_json(entry))
                except (KeyError, TypeError, ValueError) as exc:
                    raise SessionError(
                        f"operation {index + 1} is malformed ({exc}); "
                        "start over with `cca-hil rmi --reset-session`",
                        where=where,
                    ) from exc
            return cls(
                name=str(data["name"]),
                profile=str(data["profile"]),
                kind=str(data["kind"]),
                params=dict(data["params"]),
                overrides=[str(o) for o in data.get("overrides", [])],
                created=str(data.get("created", "")),
                updated=str(data.get("updated", "")),
                tool_version=str(data.get("tool_version", "")),
                operations=operations,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(
                f"session document is malformed ({exc!s}); start over with `cca-hil rmi --reset-session`",
                where=where,
            ) from exc


class JournaledTarget(Target):
    """A target whose state-changing host operations are appended to a journal as they happen.

    Reads and probing loads change nothing and are not recorded. A reset
    empties the journal: the state after it is the freshly booted model.
    """

    kind: ClassVar[str] = "model"
    """The journaled kinds (JOURNALED_KINDS) are the model: results name the kind they ran on."""

    def __init__(self, inner: Target, journal: Journal) -> None:
        if inner.kind != self.kind:
            raise TypeError(f"only {self.kind} targets are journaled, not {inner.kind}")
        super().__init__(profile=inner.profile, run_dir=inner.run_dir)
        self.inner = inner
        self.journal = journal
        self.recorded: list[Operation] = []
        """Operations recorded through this object (since its last reset)."""
        self.was_reset = False

    def _record(self, op: Operation) -> None:
        self.journal.operations.append(op)
        self.recorded.append(op)

    @property
    def capabilities(self) -> frozenset[str]:
        return self.inner.capabilities

    def open(self) -> None:
        self.inner.open()
        super().open()

    def close(self) -> None:
        self.inner.close()
        super().close()

    def info(self) -> TargetInfo:
        return self.inner.info()

    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        result = self.inner.smc(fid, *args)
        self._record(SmcOp(fid, tuple(args), tuple(result), self.inner.rmi_condition))
        return result

    def read(self, pa: int, size: int) -> bytes:
        return self.inner.read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        # A write that faults raises before memory changes, so only completed writes are journaled.
        self.inner.write(pa, data)
        self._record(WriteOp(pa, bytes(data)))

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        result = self.inner.access(pa, op, size, value)
        if op == "write":
            self._record(StoreOp(pa, size, value, faulted=not result.ok))
        return result

    def gpt_pas(self, pa: int) -> Pas:
        return self.inner.gpt_pas(pa)

    @property
    def rmi_condition(self) -> str | None:
        return self.inner.rmi_condition

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Sequence[Any] = ()) -> tuple[int, ...]:
        if actions:
            # Realm actions are not plain data that a journal can hold; the bench stays at the RMI level.
            raise TargetError("a realm cannot be given actions in a bench session; use `cca-hil run`")
        result = self.inner.realm_enter(rec_pa, run_pa)
        # Journaled as the SMC it is; replay routes it back through realm_enter.
        self._record(SmcOp(REC_ENTER.fid, (rec_pa, run_pa), tuple(result), self.inner.rmi_condition))
        return result

    def reset(self) -> None:
        self.inner.reset()
        self.journal.operations.clear()
        self.recorded.clear()
        self.was_reset = True

    def replay(self) -> None:
        """Bring the wrapped target to the journal's state, checking every SMC's X0 as recorded."""
        inner = self.inner
        for number, op in enumerate(self.journal.operations, start=1):
            if isinstance(op, SmcOp):
                if op.fid == REC_ENTER.fid:
                    got = inner.realm_enter(op.args[0], op.args[1])
                else:
                    got = inner.smc(op.fid, *op.args)
                if got[0] != op.result[0]:
                    raise SessionError(
                        f"replaying session {self.journal.name!r} diverged at operation {number} "
                        f"({describe_smc(op)}): recorded X0={op.result[0]:#x}, now X0={got[0]:#x} — "
                        "the model changed since the session was recorded; "
                        "start over with `cca-hil rmi --reset-session`",
                        where=None,
                    )
            elif isinstance(op, WriteOp):
                inner.write(op.pa, op.data)
            else:
                inner.access(op.pa, "write", op.size, op.value)


def describe_smc(op: SmcOp) -> str:
    """``granule_delegate(0x88000000)`` for an RMI call, the FID in hex otherwise."""
    command = RMI_1_0.by_fid.get(op.fid)
    if command is None:
        return f"smc {op.fid:#x}({', '.join(f'{a:#x}' for a in op.args)})"
    params = sorted(command.inputs, key=lambda p: p.reg)
    shown = [show_input(p, a) for p, a in zip(params, op.args, strict=False)]
    return f"{command.name}({', '.join(shown)})"


def show_input(param: Param, value: int) -> str:
    """An input register as people write it: signed decimal for Int64 (levels), hex otherwise."""
    if param.type == "Int64":
        return str(to_signed64(value))
    return f"{value & MASK64:#x}"


def session_path(root: Path, name: str) -> Path:
    """Where the journal of session ``name`` lives under the runs root."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"bad session name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, no leading dot)",
            where="--session",
        )
    return root / "sessions" / f"{name}.json"


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``path``.lock so two bench processes never interleave one session."""
    from cca_hil import filelock

    lock_path = path.with_name(path.name + ".lock")

    def busy() -> TargetError:
        return TargetError(
            f"session {path.stem!r} is in use by another cca-hil process "
            f"(waited {timeout:g} s for {lock_path})"
        )

    with filelock.exclusive(lock_path, timeout, poll=0.05, on_timeout=busy):
        yield


class Session:
    """A named bench session: the target with the journal's state restored, saved again on close."""

    def __init__(self, *, name: str, path: Path, target: Target, journal: Journal | None) -> None:
        self.name = name
        self.path = path
        self.target = target
        self.journal = journal
        """None for targets that keep their own state (no journal needed)."""
        self.replayed = len(journal.operations) if journal is not None else 0

    @property
    def journaled(self) -> bool:
        """True when this session's state lives in a journal (the in-process model)."""
        return self.journal is not None

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        *,
        name: str,
        root: Path,
        profile: Profile,
        profile_arg: str,
        overrides: Sequence[str] = (),
        reset: bool = False,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> Iterator[Session]:
        """Open (or start) session ``name``: build the target, replay the journal, save it on exit.

        The journal is saved even when the command inside fails after reaching
        the model, so that the operations that did are not forgotten.
        """
        from cca_hil.profiles import build_target

        path = session_path(root, name)
        target = build_target(profile)
        if profile.kind not in JOURNALED_KINDS:
            with target:
                yield cls(name=name, path=path, target=target, journal=None)
            return
        with _locked(path, lock_timeout):
            journal = None if reset else load_journal(path)
            params = _normalised(profile.params)
            if journal is None:
                journal = Journal(
                    name=name,
                    profile=profile_arg,
                    kind=profile.kind,
                    params=params,
                    overrides=list(overrides),
                )
            elif journal.kind != profile.kind or journal.params != params:
                raise SessionError(
                    f"session {name!r} was recorded with profile {journal.profile!r}"
                    f"{_describe_overrides(journal.overrides)} and other parameters than "
                    f"{profile_arg!r}{_describe_overrides(overrides)}; use the same profile, "
                    "another --session NAME, or start over with --reset-session",
                    where=str(path),
                )
            journaled = JournaledTarget(target, journal)
            with journaled:
                journaled.replay()
                session = cls(name=name, path=path, target=journaled, journal=journal)
                try:
                    yield session
                except BaseException:
                    # Keep what reached the model; a command refused before it called anything
                    # (bad arguments) leaves the session as it was, even with --reset-session.
                    if session.changed:
                        session.save()
                    raise
                session.save()

    def save(self) -> None:
        """Write the journal (atomically); nothing to do for targets that keep their own state."""
        if self.journal is None:
            return
        self.journal.updated = now()
        write_atomically(self.path, self.journal.dumps())

    def new_operations(self) -> list[Operation]:
        """Operations this invocation added (since the last reset, if it made one)."""
        if isinstance(self.target, JournaledTarget):
            return list(self.target.recorded)
        return []

    @property
    def changed(self) -> bool:
        """True when this invocation changed the journal (recorded an operation or reset the target)."""
        return isinstance(self.target, JournaledTarget) and (
            bool(self.target.recorded) or self.target.was_reset
        )


def load_journal(path: Path) -> Journal | None:
    """The journal at ``path``, or None when the session does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SessionError(f"cannot read session: {exc}", where=str(path)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SessionError(
            f"session file is not JSON (line {exc.lineno}); start over with `cca-hil rmi --reset-session`",
            where=str(path),
        ) from exc
    return Journal.from_json(data, where=str(path))


def _normalised(params: Mapping[str, Any]) -> dict[str, Any]:
    # Compare as JSON sees them: tuples and lists, int keys and str keys look alike after a round trip.
    result: dict[str, Any] = json.loads(json.dumps(params))
    return result


def _describe_overrides(overrides: Sequence[str]) -> str:
    return "".join(f" --set {o}" for o in overrides)


# -- one RMI call at the bench ------------------------------------------------


@dataclass(frozen=True)
class BenchCall:
    """An RMI call as typed at the bench: the command, plain inputs, and structures to write first."""

    command: RmiCommand
    values: dict[str, int]
    """Inputs given as values, by the spec's input name."""
    structures: dict[str, Structure]
    """Inputs given as structure fields (``params.s2sz=40``), by the spec's input name."""

    def inputs(self, addresses: Mapping[str, int]) -> dict[str, int]:
        """Every input by spec name, structures replaced by the addresses they were written to."""
        return {**self.values, **addresses}


_STRUCTURES: dict[tuple[str, str], type[Structure]] = {
    ("realm_create", "params_ptr"): RealmParams,
    ("rec_create", "params_ptr"): RecParams,
}
"""Which address inputs point at a spec structure the bench can build from ``input.field=value``."""

_FIELD_NAMES: dict[tuple[type[Structure], str], dict[str, int]] = {
    (RealmParams, "flags"): {"lpa2": RealmFlags.LPA2, "sve": RealmFlags.SVE, "pmu": RealmFlags.PMU},
    (RealmParams, "hash_algo"): {a.name.lower(): int(a) for a in HashAlgorithm},
    (RecParams, "flags"): {"runnable": RecCreateFlags.RUNNABLE},
}
"""Names a structure field accepts besides integers (flags combine with ``|``)."""

_INPUT_NAMES: dict[str, dict[str, int]] = {
    "RmiDataFlags": {"no_measure": 0, "measure": 1},
}
"""Names an input of a given spec type accepts besides integers."""


_INPUT_DEFAULTS: dict[tuple[str, str], int] = {
    ("version", "req"): RMI_1_0.version,
    ("features", "index"): 0,
}
"""Inputs the bench fills in when left out: ask for the revision this tool speaks, feature register 0."""


BENCH_OPTIONS = ("--session", "--reset-session", "--history", "--json")
"""Options of ``cca-hil rmi`` (named when an unknown one is found among the call's words)."""


def _unknown_option(word: str, where: str) -> InputError:
    return InputError(f"unknown option {word.partition('=')[0]!r}", where=where, valid=BENCH_OPTIONS)


def rmi_command(word: str) -> RmiCommand:
    """The RMI 1.0 command a bench word names: ``granule-delegate``, ``granule_delegate``, ``RMI_VERSION``."""
    if word.startswith("--"):
        # The CLI passes unknown options through (levels are negative numbers); one came first.
        raise _unknown_option(word, "cca-hil rmi")
    key = word.strip().lower().replace("-", "_")
    key = key.removeprefix("rmi_")
    try:
        return RMI_1_0.by_name[key]
    except KeyError:
        raise InputError(
            f"unknown RMI command {word!r}",
            where="cca-hil rmi",
            valid=[c.name.replace("_", "-") for c in RMI_1_0.commands],
        ) from None


def parse_value(raw: str, *, where: str, names: Mapping[str, int], platform: Mapping[str, int]) -> int:
    """An integer (``0x…``, decimal, negative), a ``platform.NAME``, or one of ``names`` joined by ``|``."""
    text = raw.strip()
    try:
        return int(text, 0)
    except ValueError:
        pass
    if text.startswith("platform."):
        key = text.removeprefix("platform.")
        if key in platform:
            return platform[key]
        raise InputError(
            f"unknown platform name {text!r}", where=where, valid=[f"platform.{k}" for k in platform]
        )
    if names:
        total = 0
        for part in text.replace("+", "|").split("|"):
            key = part.strip().lower()
            if key not in names:
                raise InputError(f"cannot read {raw!r}", where=where, valid=[*names, "an integer"])
            total |= names[key]
        return total
    raise InputError(
        f"cannot read {raw!r} as a number", where=where, valid=["0x…", "decimal", "platform.NAME"]
    )


def _field_value(
    structure: type[Structure], name: str, raw: str, *, where: str, platform: Mapping[str, int]
) -> object:
    lay = structure.LAYOUT[name]
    if lay.size > 8:
        # A byte string field (RealmParams.rpv): hex digits, optionally 0x-prefixed.
        digits = raw.strip().removeprefix("0x").replace("_", "")
        try:
            value = bytes.fromhex(digits)
        except ValueError:
            raise InputError(f"cannot read {raw!r} as hex bytes", where=where) from None
        if len(value) > lay.size:
            raise InputError(f"{name} holds at most {lay.size} bytes, got {len(value)}", where=where)
        return value
    names = _FIELD_NAMES.get((structure, name), {})
    if lay.count > 1:
        items = [p for p in raw.split(",") if p.strip()]
        if len(items) > lay.count:
            raise InputError(f"{name} holds at most {lay.count} values, got {len(items)}", where=where)
        return tuple(parse_value(p, where=where, names=names, platform=platform) for p in items)
    return parse_value(raw, where=where, names=names, platform=platform)


def parse_rmi_call(word: str, words: Sequence[str], *, platform: Mapping[str, int]) -> BenchCall:
    """Parse ``COMMAND [ARG…]``: positional values in spec order, ``name=value``, ``params.field=value``."""
    command = rmi_command(word)
    here = f"cca-hil rmi {command.name.replace('_', '-')}"
    inputs = sorted(command.inputs, key=lambda p: p.reg)
    by_name = {alias: p for p in inputs for alias in (p.name, *p.aliases)}
    input_names = [p.name for p in inputs]
    values: dict[str, int] = {}
    fields_given: dict[str, dict[str, object]] = {}
    positional = iter(inputs)
    for raw in words:
        if raw.startswith("--"):
            raise _unknown_option(raw, here)
        key, sep, text = raw.partition("=")
        if not sep:
            param = next(positional, None)
            while param is not None and (param.name in values or param.name in fields_given):
                param = next(positional, None)
            if param is None:
                raise InputError(
                    f"too many arguments: {command.name} takes {len(inputs)}", where=here, valid=input_names
                )
            values[param.name] = parse_value(
                raw, where=f"{here} {param.name}", names=_INPUT_NAMES.get(param.type, {}), platform=platform
            )
            continue
        key = key.strip().lower().replace("-", "_")
        head, dot, field_name = key.partition(".")
        param = by_name.get(head)
        if param is None:
            raise InputError(f"{command.name} has no input {head!r}", where=here, valid=input_names)
        if param.name in values or (not dot and param.name in fields_given):
            raise InputError(f"{param.name} is given twice", where=here)
        if not dot:
            values[param.name] = parse_value(
                text, where=f"{here} {param.name}", names=_INPUT_NAMES.get(param.type, {}), platform=platform
            )
            continue
        structure = _STRUCTURES.get((command.name, param.name))
        if structure is None:
            raise InputError(f"{command.name} input {param.name!r} is no structure", where=here)
        known = [f.name for f in dataclass_fields(structure)]  # type: ignore[arg-type]
        if field_name not in known:
            raise InputError(
                f"{structure.__name__} has no field {field_name!r}", where=f"{here} {param.name}", valid=known
            )
        given = fields_given.setdefault(param.name, {})
        if field_name in given:
            raise InputError(f"{param.name}.{field_name} is given twice", where=here)
        given[field_name] = _field_value(
            structure, field_name, text, where=f"{here} {param.name}.{field_name}", platform=platform
        )
    structures: dict[str, Structure] = {}
    for name, given in fields_given.items():
        structure = _STRUCTURES[command.name, name]
        try:
            structures[name] = structure(**given)
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad {structure.__name__}: {exc}", where=f"{here} {name}") from exc
    for param in inputs:
        default = _INPUT_DEFAULTS.get((command.name, param.name))
        if default is not None and param.name not in values:
            values[param.name] = default
    missing = [p.name for p in inputs if p.name not in values and p.name not in structures]
    if missing:
        raise InputError(f"{command.name} needs input {missing[0]!r}", where=here, valid=input_names)
    return BenchCall(command=command, values=values, structures=structures)


SCRATCH_SEARCH = 64
"""How many granules below the top of the pool to try for a structure's scratch granule."""


def scratch_granules(target: Target, count: int, *, avoid: Iterable[int] = ()) -> list[int]:
    """NS granules to write structures into, taken from the top of the granule pool.

    The top end keeps them away from the addresses people type at the bench
    (which start at the bottom of the pool); a granule the host can no longer
    reach (it was delegated) or that the call names itself is passed over.
    """
    if count == 0:
        return []
    pool = target.info().granule_pool
    if not pool:
        raise TargetError(f"target {target.name!r} reports no granule pool for scratch structures")
    base, size = max(pool, key=lambda r: r[0] + r[1])
    top = (base + size) & ~(GRANULE_SIZE - 1)
    excluded = {a & ~(GRANULE_SIZE - 1) for a in avoid}
    probe = target.has(Capability.ACCESS)
    chosen: list[int] = []
    pa = top - GRANULE_SIZE
    while pa >= base and pa >= top - SCRATCH_SEARCH * GRANULE_SIZE and len(chosen) < count:
        if pa not in excluded and (not probe or target.access(pa, "read").ok):
            chosen.append(pa)
        pa -= GRANULE_SIZE
    if len(chosen) < count:
        raise TargetError(
            f"no Non-secure scratch granule left in the top {SCRATCH_SEARCH} granules of the pool "
            f"({top - SCRATCH_SEARCH * GRANULE_SIZE:#x}..{top:#x})"
        )
    return chosen


def perform(call: BenchCall, client: RmiClient) -> tuple[dict[str, int], RmiResult]:
    """Write the call's structures to scratch granules, make the call; the inputs as sent and the answer."""
    target = client.target
    scratch = scratch_granules(target, len(call.structures), avoid=call.values.values())
    addresses: dict[str, int] = {}
    for (name, structure), pa in zip(call.structures.items(), scratch, strict=True):
        client.write_struct(pa, structure)
        addresses[name] = pa
    inputs = call.inputs(addresses)
    return inputs, client.call(call.command, **inputs)
