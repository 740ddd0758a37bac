"""``cca-hil shell``: an interactive RMI/RSI session on any target, recorded as a sequence as it goes.

A line is a shell command or an RMI call as ``cca-hil rmi`` takes one (the
spec's command name with ``_`` or ``-``, inputs positional or ``name=value``,
structure fields ``params.s2sz=40``), where values may also name granules of
the session (``g``, ``g+0x1000``)::

    rd = alloc                       # a fresh Non-secure granule (own 64 KiB slot), called rd
    delegate rd                      # granule_delegate; also: undelegate
    realm_create rd params.rtt_base=rtt params.hash_algo=sha256
    rsi measurement_read rec 0       # the realm of REC rec makes an RSI call
    save realm.yaml                  # what was done, as a sequence `cca-hil run` replays

Every call is decoded (status, index, condition where the target knows it,
outputs by spec name, registers) and appended to the session's record; ``save``
writes the record as a sequence file whose granules are the session's names,
each call with the answer it got as ``expect``, checked by the sequence loader
before it is written. :class:`ShellCompleter` completes command names, input
names, structure fields, enumeration values and granule names.

This module does the work; :mod:`cca_hil.cli_shell` reads the lines (through
prompt_toolkit on a terminal, line by line otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from cca_hil.arch.rmi import (
    GRANULE_SIZE,
    HashAlgorithm,
    RecExitReason,
    RmiCommand,
    decode_version,
    to_signed64,
)
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import RealmParams, RecCreateFlags, RecParams, Structure
from cca_hil.errors import InputError, TargetError
from cca_hil.session import BenchCall, parse_rmi_call, parse_value, rmi_command, scratch_granules
from cca_hil.targets.base import PLATFORM_NAMES, Capability, Target

if TYPE_CHECKING:
    from rich.console import Console

    from cca_hil.rmi_client import RmiResult

SLOT = 0x10000
"""Each named granule starts its own 64 KiB slot, as a sequence's granules do (DESIGN.md)."""
SCRATCH_RESERVE = 64 * GRANULE_SIZE
"""The top of the pool is left to the structures a call writes (:func:`cca_hil.session.scratch_granules`)."""

ALIASES = {"delegate": "granule_delegate", "undelegate": "granule_undelegate"}
"""Short names the shell takes for RMI commands."""

BUILTINS: dict[str, str] = {
    "NAME = alloc": "allocate a fresh Non-secure granule and call it NAME",
    "rsi COMMAND REC ARG…": "enter REC; the realm makes the RSI call and leaves by a Host call",
    "granules": "list the session's named granules",
    "help [COMMAND]": "this list, or a command's inputs",
    "history": "the lines typed in earlier sessions and this one",
    "save FILE": "write what was done as a sequence that `cca-hil run FILE` replays",
    "exit": "leave the shell (also: quit, Ctrl-D)",
}
BUILTIN_WORDS = ("rsi", "granules", "help", "history", "save", "exit", "quit")

STRUCTURES: dict[tuple[str, str], type[Structure]] = {
    ("realm_create", "params_ptr"): RealmParams,
    ("rec_create", "params_ptr"): RecParams,
}
"""Address inputs the shell builds as structures from ``input.field=value`` (as ``cca-hil rmi`` does)."""

ALWAYS_SAVED: dict[type[Structure], tuple[str, ...]] = {
    RealmParams: ("vmid", "rtt_base"),
    RecParams: ("flags", "mpidr", "num_aux"),
}
"""Fields a saved sequence always states, because a sequence's default differs from the bench's."""

FIELD_VALUES: dict[tuple[type[Structure], str], tuple[str, ...]] = {
    (RealmParams, "flags"): ("lpa2", "sve", "pmu"),
    (RealmParams, "hash_algo"): ("sha256", "sha512"),
    (RecParams, "flags"): ("runnable",),
}
"""Names a structure field takes, offered by completion."""

INPUT_VALUES: dict[str, tuple[str, ...]] = {"RmiDataFlags": ("measure", "no_measure")}
"""Names an input of a spec type takes, offered by completion."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_GRANULE_EXPR = re.compile(
    r"(?P<name>[A-Za-z][A-Za-z0-9_]*)(?P<rest>(?:[+-](?:0[xX][0-9a-fA-F_]+|[0-9_]+))*)"
)
_TERM = re.compile(r"([+-])(0[xX][0-9a-fA-F_]+|[0-9_]+)")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
"""Words YAML reads as booleans or null: not usable as granule names in a sequence file."""


class ShellExit(Exception):
    """The user asked to leave."""


def command_names() -> list[str]:
    """RMI command names as the shell completes them (spec names in lower case), then the aliases."""
    return [c.name for c in RMI_1_0.commands] + sorted(ALIASES)


def resolve_command(word: str) -> RmiCommand:
    """The RMI command a word names: ``granule_delegate``, ``granule-delegate``, ``delegate``.

    Unknown: InputError listing the shell's commands.
    """
    key = word.lower().replace("-", "_")
    if key in ALIASES:
        return RMI_1_0.by_name[ALIASES[key]]
    try:
        return rmi_command(word)
    except InputError as exc:
        from cca_hil.seqformat import RSI_COMMANDS

        if key.removeprefix("rsi_") in RSI_COMMANDS:
            name = key.removeprefix("rsi_")
            raise InputError(
                f"{name} is an RSI command, made by a realm", valid=[f"rsi {name} REC …"], where=None
            ) from exc
        raise InputError(
            f"unknown command {word!r}", valid=[*BUILTIN_WORDS, *command_names()], where=None
        ) from exc


def _short(name: str) -> str:
    """The name a sequence file uses for an input: ``params`` for ``params_ptr``."""
    return name.removesuffix("_ptr")


@dataclass
class Granule:
    """A named Non-secure granule of the session."""

    name: str
    pa: int


@dataclass
class Recorded:
    """One call of the session, as a sequence step will say it."""

    command: str
    args: dict[str, Any]
    status: str
    index: int
    condition: str | None
    kind: str = "rmi"
    """``rmi``, or ``rsi`` for a call the realm made (then :attr:`rec` names the REC entered)."""
    rec: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    """Outputs the replay must give again (see :meth:`Shell._portable_outputs`)."""

    def expect(self) -> str | None:
        """The step's ``expect`` as a YAML flow value; None for plain success."""
        fields: dict[str, Any] = {}
        if self.status != "success":
            if not self.index and not self.outputs:
                return self.status
            fields["status"] = self.status
            if self.index:
                fields["index"] = self.index
        if self.outputs:
            fields["outputs"] = self.outputs
        return _flow(fields) if fields else None


@dataclass
class Shell:
    """The state of a shell session on one open target: named granules and the record of calls."""

    target: Target
    granules: dict[str, Granule] = field(default_factory=dict)
    record: list[Recorded] = field(default_factory=list)
    saved: int = 0
    """How many calls of the record the last ``save`` wrote."""

    def __post_init__(self) -> None:
        from cca_hil.rmi_client import RmiClient

        self.client = RmiClient(self.target)
        self._platform: Mapping[str, int] | None = None
        self._slots: set[int] = set()
        """64 KiB slots in use: named granules and REC auxiliary granules."""
        self.notes: list[str] = []
        """What the last call did besides the call itself (shown before its answer)."""

    @property
    def platform(self) -> Mapping[str, int]:
        """The target's ``platform.*`` values."""
        if self._platform is None:
            self._platform = dict(self.target.info().platform)
        return self._platform

    # -- granules ---------------------------------------------------------------------------------

    def alloc(self, name: str) -> Granule:
        """A fresh NS granule at the start of its own 64 KiB slot of the pool, called ``name``."""
        if not _NAME.fullmatch(name) or name.lower() in _YAML_WORDS or name == "platform":
            raise InputError(
                f"bad granule name {name!r}: a letter, then letters, digits or '_' (at most 32), "
                "not platform or a YAML word such as on/off/yes/no",
                where=f"{name} = alloc",
            )
        if name in self.granules:
            raise InputError(
                f"{name} already names granule {self.granules[name].pa:#x}", where=f"{name} = alloc"
            )
        if name in BUILTIN_WORDS or name.lower() in RMI_1_0.by_name or name.lower() in ALIASES:
            raise InputError(f"{name!r} is a command name; choose another", where=f"{name} = alloc")
        granule = Granule(name, self._free_slot())
        self.granules[name] = granule
        return granule

    def _free_slot(self) -> int:
        """The first 64 KiB slot of the pool not used yet whose first granule is Non-secure."""
        probe = self.target.has(Capability.ACCESS)
        for base, size in self.target.info().granule_pool:
            top = base + size - SCRATCH_RESERVE
            pa = (base + SLOT - 1) & ~(SLOT - 1)
            while pa + GRANULE_SIZE <= top:
                if pa not in self._slots and (not probe or self.target.access(pa, "read").ok):
                    self._slots.add(pa)
                    return pa
                pa += SLOT
        raise InputError("no free 64 KiB slot with a Non-secure granule left in the granule pool")

    def _aux_granules(self, rd: int) -> tuple[int, ...]:
        """RMI_REC_AUX_COUNT granules for a REC of realm ``rd``, in a fresh slot, delegated.

        What the sequence runner does for a ``rec_create`` whose params name no ``aux``:
        the saved step leaves them out, and the replay provides its own.
        """
        answer = self.client.call("rec_aux_count", rd=rd)
        if not answer.ok:
            return ()
        count = min(int(answer.outputs["aux_count"]), SLOT // GRANULE_SIZE)
        if not count:
            return ()
        base = self._free_slot()
        aux = tuple(base + i * GRANULE_SIZE for i in range(count))
        for pa in aux:
            delegated = self.client.call("granule_delegate", addr=pa)
            if not delegated.ok:
                raise TargetError(f"cannot delegate REC auxiliary granule {pa:#x}: {delegated.describe()}")
        return aux

    def name_of(self, pa: int) -> str | None:
        """``g`` or ``g+0x1000`` for an address in the slot of a named granule, else None."""
        for granule in self.granules.values():
            offset = pa - granule.pa
            if offset == 0:
                return granule.name
            if 0 < offset < SLOT:
                return f"{granule.name}+{offset:#x}"
        return None

    def _value_of(self, text: str) -> tuple[int, str] | None:
        """(address, normalised text) when ``text`` is a granule expression (``g``, ``g+0x1000``)."""
        match = _GRANULE_EXPR.fullmatch(text.strip())
        if match is None or match["name"] not in self.granules:
            return None
        value = self.granules[match["name"]].pa
        shown = match["name"]
        for sign, number in _TERM.findall(match["rest"]):
            amount = int(number.replace("_", ""), 0)
            value += amount if sign == "+" else -amount
            shown += f" {sign} {number}"
        return value, shown

    # -- lines ------------------------------------------------------------------------------------

    def words(self, line: str) -> list[str]:
        """The words of a line (shell quoting; ``#`` starts a comment)."""
        try:
            return shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"cannot split the line: {exc}") from None

    def call(self, words: Sequence[str]) -> tuple[BenchCall, dict[str, int], RmiResult]:
        """Parse and make one RMI call; record it. InputError before anything reaches the target."""
        command = resolve_command(words[0])
        symbols: dict[int, str] = {}
        given_fields: dict[str, list[str]] = {}
        rewritten: list[str] = []
        for word in words[1:]:
            key, sep, text = word.partition("=")
            if not sep:
                key, text = "", word
            head, dot, field_name = key.partition(".")
            if dot:
                given_fields.setdefault(head.lower().replace("-", "_"), []).append(field_name)
            items = []
            for item in text.split(","):
                found = self._value_of(item)
                if found is None:
                    items.append(item)
                else:
                    symbols[found[0]] = found[1]
                    items.append(hex(found[0]))
            value = ",".join(items)
            rewritten.append(f"{key}={value}" if sep else value)
        if command.name == "rec_create" and not any(w.lower().startswith("params") for w in rewritten):
            # As in a sequence, params may be left out: a REC with every field at its host default.
            rewritten.append("params.flags=runnable")
        try:
            call = parse_rmi_call(command.name, rewritten, platform=self.platform)
        except InputError as exc:
            valid = list(exc.valid) if exc.valid is not None else None
            if exc.what.startswith("cannot read") and valid is not None:
                valid += sorted(self.granules)
            # Said in the shell's words: `granule_delegate addr`, not `cca-hil rmi granule-delegate addr`.
            bench = f"cca-hil rmi {command.name.replace('_', '-')}"
            where = (exc.where or "").replace(bench, command.name) or None
            raise InputError(exc.what, where=where, valid=valid) from None
        self.notes = []
        implied: set[str] = set()
        params = call.structures.get("params_ptr")
        given = {*given_fields.get("params", ()), *given_fields.get("params_ptr", ())}
        if isinstance(params, RecParams) and not {"num_aux", "aux"} & given and "rd" in call.values:
            aux = self._aux_granules(call.values["rd"])
            if aux:
                params = dataclasses.replace(params, num_aux=len(aux), aux=aux)
                call = BenchCall(call.command, call.values, {**call.structures, "params_ptr": params})
                implied = {"num_aux", "aux"}
                self.notes.append(f"{len(aux)} auxiliary granules delegated at {aux[0]:#x}…{aux[-1]:#x}")
        # As `cca-hil rmi` does (session.perform), keeping the scratch structures off the named granules.
        avoid = [*call.values.values(), *(g.pa for g in self.granules.values())]
        addresses: dict[str, int] = {}
        scratch = scratch_granules(self.target, len(call.structures), avoid=avoid)
        for (name, structure), pa in zip(call.structures.items(), scratch, strict=True):
            self.client.write_struct(pa, structure)
            addresses[name] = pa
        inputs = call.inputs(addresses)
        result = self.client.call(call.command, **inputs)
        self.record.append(self._recorded(call, result, symbols, given_fields, implied))
        return call, inputs, result

    def _recorded(
        self,
        call: BenchCall,
        result: RmiResult,
        symbols: Mapping[int, str],
        given_fields: Mapping[str, list[str]],
        implied: set[str],
    ) -> Recorded:
        def shown(value: int, param_type: str = "") -> Any:
            if value in symbols:
                return symbols[value]
            if param_type == "Int64":
                return to_signed64(value)
            return value

        args: dict[str, Any] = {}
        for param in sorted(call.command.inputs, key=lambda p: p.reg):
            if param.name in call.values:
                args[_short(param.name)] = shown(call.values[param.name], param.type)
            elif param.name in call.structures:
                structure = call.structures[param.name]
                given = set(given_fields.get(param.name, ())) | set(given_fields.get(_short(param.name), ()))
                kind = type(structure)
                mapping: dict[str, Any] = {}
                for item in dataclass_fields(structure):  # type: ignore[arg-type]
                    if item.name in implied or (
                        item.name not in given and item.name not in ALWAYS_SAVED.get(kind, ())
                    ):
                        continue
                    raw = getattr(structure, item.name)
                    if (kind, item.name) == (RealmParams, "hash_algo") and raw in set(HashAlgorithm):
                        mapping[item.name] = HashAlgorithm(raw).name.lower()
                    elif (kind, item.name) == (RecParams, "flags") and raw in (0, RecCreateFlags.RUNNABLE):
                        mapping[item.name] = "runnable" if raw else "not_runnable"
                    elif isinstance(raw, bytes):
                        mapping[item.name] = "0x" + raw.hex()
                    elif isinstance(raw, tuple):
                        mapping[item.name] = [shown(int(v)) for v in raw]
                    else:
                        mapping[item.name] = shown(int(raw))
                args[_short(param.name)] = mapping
        return Recorded(
            command=call.command.name,
            args=args,
            status=result.status_name,
            index=result.index,
            condition=result.condition,
            outputs=self._portable_outputs(call.command, result),
        )

    def _portable_outputs(self, command: RmiCommand, result: RmiResult) -> dict[str, Any]:
        """The outputs a replay on a fresh target must give again: not those that depend on where it ran.

        Enumerations by name, versions and counts as numbers, IPAs as numbers, and a
        granule the RMM hands back (``rtt_destroy``'s ``rtt``) by its name. A
        descriptor, a feature register or a granule the session has no name for
        depends on the platform and the granules a run got, so it is left out.
        """
        types = {o.name: o.type for o in command.outputs}
        portable: dict[str, Any] = {}
        for name, value in result.outputs.items():
            kind = types[name]
            if isinstance(value, IntEnum):
                portable[name] = value.name.lower()
            elif kind in ("RmiInterfaceVersion", "UInt64", "Int64") or name in ("top", "out_top"):
                # Versions, counts, and the IPAs a walk reached: the same wherever the granules are.
                portable[name] = int(value)
            elif kind == "Address" and self.name_of(value) in self.granules:
                portable[name] = self.name_of(value)
        return portable

    # -- RSI calls, made by the realm ------------------------------------------------------------------

    def rsi(self, words: Sequence[str]) -> RsiAnswer:
        """``rsi COMMAND REC [ARG…]``: enter REC, the realm makes one RSI call and leaves by a Host call.

        What a sequence's ``rsi:`` step does; recorded as one.
        """
        from cca_hil.arch.structs import RecEnter
        from cca_hil.seqformat import RIPAS_NAMES, RSI_COMMANDS, RSI_STATUS_NAMES
        from cca_hil.sequences import RealmAction

        if not words:
            raise InputError("rsi needs a command", where="rsi", valid=list(RSI_COMMANDS))
        name = words[0].lower().replace("-", "_").removeprefix("rsi_")
        command = RSI_COMMANDS.get(name)
        if command is None:
            raise InputError(f"unknown RSI command {words[0]!r}", where="rsi", valid=list(RSI_COMMANDS))
        here = f"rsi {name}"
        inputs = [i for i in command.inputs if i != "gprs"]
        rec: tuple[int, Any] | None = None
        args: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        pending = iter(["rec", *inputs])
        for word in words[1:]:
            key, sep, text = word.partition("=")
            if not sep:
                key, text = next((k for k in pending if k != "rec" or rec is None), ""), word
                if not key:
                    raise InputError(f"too many arguments: {name} takes rec and {len(inputs)}", where=here)
            key = key.lower()
            if key != "rec" and key not in inputs:
                raise InputError(f"{name} has no input {key!r}", where=here, valid=["rec", *inputs])
            if key == "rec":
                rec = self._rsi_value(text, where=f"{here} rec", names={})
                continue
            if key in args:
                raise InputError(f"{key} is given twice", where=here)
            if key in command.wide:
                digits = text.strip().lower().removeprefix("0x").replace("_", "")
                try:
                    data = bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
                except ValueError:
                    raise InputError(f"cannot read {text!r} as hex bytes", where=f"{here} {key}") from None
                if len(data) > 64:
                    raise InputError(f"{key} holds at most 64 bytes, got {len(data)}", where=f"{here} {key}")
                args[key] = data
                shown[key] = "0x" + data.hex()
                continue
            names = RIPAS_NAMES if key == "ripas" else {}
            value, as_typed = self._rsi_value(text, where=f"{here} {key}", names=names)
            args[key], shown[key] = value, as_typed
        if rec is None:
            raise InputError(f"{name} needs rec: the REC to enter", where=here, valid=sorted(self.granules))
        self.target.require(Capability.REALM_EXEC)
        rec_pa, rec_shown = rec
        avoid = [rec_pa, *(g.pa for g in self.granules.values())]
        (run,) = scratch_granules(self.target, 1, avoid=avoid)
        self.target.write(run, RecEnter().pack())
        action = RealmAction(kind="rsi", name=name, fid=command.fid, args=args)
        closing = RealmAction(kind="rsi", name="host_call", fid=RSI_COMMANDS["host_call"].fid, args={})
        entry = self.client.decode(
            RMI_1_0.by_name["rec_enter"], tuple(self.target.realm_enter(rec_pa, run, [action, closing]))
        )
        if not entry.ok:
            raise TargetError(f"rec_enter of {rec_shown} to make the RSI call failed: {entry.describe()}")
        if action.result is None:
            raise TargetError(f"the realm of {rec_shown} did not complete {name} in one entry")
        registers = action.result
        statuses = {v: k for k, v in RSI_STATUS_NAMES.items()}
        status = statuses.get(registers[0], f"unknown({registers[0]:#x})")
        outputs: dict[str, int | bytes] = {}
        reg = 1
        for out in command.outputs:
            if out in command.wide:
                outputs[out] = b"".join(r.to_bytes(8, "little") for r in registers[reg : reg + 8])
                reg += 8
            elif reg < len(registers):
                outputs[out] = registers[reg]
                reg += 1
        exit_reason = self.client.read_rec_exit(run).exit_reason
        answer = RsiAnswer(name, rec_shown, shown, status, outputs, registers, action.condition)
        if exit_reason != RecExitReason.HOST_CALL:
            # A sequence's rsi: step requires the closing Host call; recorded, the replay would fail.
            known = exit_reason in set(RecExitReason)
            reason = RecExitReason(exit_reason).name.lower() if known else f"{exit_reason:#x}"
            return dataclasses.replace(
                answer,
                note=f"not recorded: the realm then exited by {reason}, not by its closing Host call "
                "(its RsiHostCall needs RAM: a data page at IPA 0)",
            )
        # Numbers only: a 64-byte value (a measurement, a token) is kept out of the expectation.
        numbers = {k: v for k, v in outputs.items() if isinstance(v, int)}
        self.record.append(
            Recorded(
                command=name,
                args=shown,
                status=status,
                index=0,
                condition=action.condition,
                kind="rsi",
                rec=rec_shown,
                outputs=numbers if status == "success" else {},
            )
        )
        return answer

    def _rsi_value(self, text: str, *, where: str, names: Mapping[str, int]) -> tuple[int, Any]:
        """(value, as a sequence writes it) of an RSI argument: a granule expression, a name or a number."""
        found = self._value_of(text)
        if found is not None:
            return found
        if text.strip().lower() in names:
            return names[text.strip().lower()], text.strip().lower()
        try:
            value = parse_value(text, where=where, names={}, platform=self.platform)
        except InputError as exc:
            valid = [*(exc.valid or ()), *names, *sorted(self.granules)]
            raise InputError(exc.what, where=where, valid=valid) from None
        return value, text.strip() if text.strip().startswith("platform.") else value

    # -- the record as a sequence ----------------------------------------------------------------------

    def sequence_text(self, name: str) -> str:
        """The session as a sequence file: its granules, each call with the answer it got."""
        lines = [
            f"sequence: {_scalar(name)}",
            "description: recorded by cca-hil shell",
            "requires: [rme]",
        ]
        if self.granules:
            lines.append(f"granules: [{', '.join(self.granules)}]")
        lines.append("steps:" if self.record else "steps: []")
        for step in self.record:
            lines.append(f"  - {step.kind}: {step.command}")
            if step.rec is not None:
                lines.append(f"    rec: {_scalar(step.rec)}")
            if step.args:
                lines.append(f"    args: {_flow(step.args)}")
            expect = step.expect()
            if expect is not None:
                lines.append(f"    expect: {expect}")
            if step.status != "success" and step.condition:
                lines.append(f"    condition: {step.condition}")
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> int:
        """Write the record to ``path`` as a sequence file, checked by the loader first; steps written."""
        from cca_hil.sequences import load_sequence_text

        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "shell"
        text = self.sequence_text(stem)
        load_sequence_text(text, source=str(path))
        if path.is_dir():
            raise InputError("is a directory, expected a file name", where=f"save {path}")
        if not path.parent.is_dir():
            raise InputError(f"no such directory {str(path.parent)!r}", where=f"save {path}")
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", where=f"save {path}") from exc
        self.saved = len(self.record)
        return self.saved


_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?: [+-] (?:0x[0-9a-fA-F_]+|[0-9_]+))*")


def _scalar(value: Any) -> str:
    """A YAML flow scalar: numbers in hex (small ones and negatives in decimal), words plain, else quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -1024 < value < 1024 else f"{value:#x}"
    text = str(value)
    if text.startswith("0x") and re.fullmatch(r"0x[0-9a-f]+", text):
        return text
    if _PLAIN_WORD.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _flow(value: Any) -> str:
    """A YAML flow collection (``{addr: rd}``, ``[a, b]``) or scalar."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


# -- showing answers -------------------------------------------------------------------------------


def show_output(value: int, type_name: str) -> str:
    """An output as people read it: enumerations by name, versions as MAJOR.MINOR, addresses in hex."""
    if isinstance(value, IntEnum):
        return value.name.lower()
    if type_name == "RmiInterfaceVersion":
        major, minor = decode_version(value)
        return f"{major}.{minor} ({value:#x})"
    if type_name in ("UInt64", "Int64"):
        return str(value)
    return f"{value:#x}"


def print_result(console: Console, shell: Shell, inputs: Mapping[str, int], result: RmiResult) -> None:
    """The call as sent (granules by name) and its decoded answer, coloured by status."""
    from rich.text import Text

    command = RMI_1_0.by_name[result.command]
    sent = Text(command.name, style="bold")
    for key, value in inputs.items():
        number = str(to_signed64(value)) if command.input(key).type == "Int64" else f"{value:#x}"
        shown = shell.name_of(value) or number
        sent.append(f" {_short(key)}=")
        sent.append(shown, style="cyan")
    console.print(sent)
    style = "bold green" if result.ok else "bold red"
    line = Text("  → ")
    line.append(result.status_name, style=style)
    if not result.ok and result.status is not None:
        line.append(f" index {result.index}")
    if result.condition:
        line.append(f"  ({result.condition})", style="yellow")
    console.print(line)
    types = {o.name: o.type for o in command.outputs}
    for name, value in result.outputs.items():
        out = Text(f"    {name} = ")
        out.append(show_output(value, types[name]), style="magenta")
        console.print(out)
    regs = " ".join(f"X{i}={r:#x}" for i, r in enumerate(result.registers))
    console.print(Text(f"    {regs}", style="dim"))


@dataclass(frozen=True)
class RsiAnswer:
    """What the realm observed of one RSI call."""

    command: str
    rec: str
    args: Mapping[str, Any]
    status: str
    outputs: Mapping[str, int | bytes]
    registers: tuple[int, ...]
    condition: str | None
    note: str | None = None
    """Why the call was not recorded, if it was not."""


def print_rsi(console: Console, shell: Shell, answer: RsiAnswer) -> None:
    """An RSI call as the realm made it and what it observed, coloured by status."""
    from rich.text import Text

    sent = Text(f"rsi {answer.command}", style="bold")
    sent.append(" rec=")
    sent.append(str(answer.rec), style="cyan")
    for key, value in answer.args.items():
        sent.append(f" {key}=")
        sent.append(_scalar(value), style="cyan")
    console.print(sent)
    line = Text("  → ")
    line.append(answer.status, style="bold green" if answer.status == "success" else "bold red")
    if answer.condition:
        line.append(f"  ({answer.condition})", style="yellow")
    console.print(line)
    # RSI defines outputs on success only (RMM 1.0 B5.3).
    for name, value in answer.outputs.items() if answer.status == "success" else ():
        out = Text(f"    {name} = ")
        # A 64-byte value holds a shorter digest zero-padded: shown without the padding.
        shown = "0x" + (value.rstrip(b"\0") or b"\0").hex() if isinstance(value, bytes) else f"{value:#x}"
        out.append(shown, style="magenta")
        console.print(out)
    regs = " ".join(f"X{i}={r:#x}" for i, r in enumerate(answer.registers[:5]))
    console.print(Text(f"    {regs}", style="dim"))
    if answer.note:
        console.print(Text(f"  {answer.note}", style="yellow"))


def command_help(command: RmiCommand) -> list[str]:
    """Lines describing one RMI command's inputs (and the fields of its structures)."""
    lines = [f"{command.name} ({command.spec_name}, FID {command.fid:#x})"]
    for param in sorted(command.inputs, key=lambda p: p.reg):
        text = f"  X{param.reg} {_short(param.name)}: {param.type}"
        structure = STRUCTURES.get((command.name, param.name))
        if structure is not None:
            names = [f.name for f in dataclass_fields(structure)]  # type: ignore[arg-type]
            text += f" — {_short(param.name)}.FIELD=VALUE, fields: {', '.join(names)}"
        elif param.type in INPUT_VALUES:
            text += f" ({' | '.join(INPUT_VALUES[param.type])})"
        lines.append(text)
    if command.outputs:
        lines.append("  outputs: " + ", ".join(o.name for o in command.outputs))
    return lines


# -- completion ------------------------------------------------------------------------------------


class ShellCompleter(Completer):
    """Completes what a line of the shell can hold at the cursor (prompt_toolkit Completer)."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """Completions for the word before the cursor."""
        before = document.text_before_cursor
        words = before.split()
        current = "" if not words or before[-1:].isspace() else words[-1]
        done = words if not current else words[:-1]
        if not done:
            yield from _matching(current, [*command_names(), *BUILTIN_WORDS])
            return
        head = done[0]
        if len(done) >= 2 and done[1] == "=":
            if len(done) == 2:
                yield from _matching(current, ["alloc"])
            return
        if head == "save" and len(done) == 1:
            yield from self._paths.get_completions(Document(current, len(current)), complete_event)
            return
        if head == "help":
            if len(done) == 1:
                yield from _matching(current, command_names())
            return
        if head == "rsi":
            yield from self._rsi(done[1:], current)
            return
        try:
            command = resolve_command(head)
        except InputError:
            return
        yield from self._arguments(command, done[1:], current)

    def _arguments(self, command: RmiCommand, done: Sequence[str], current: str) -> Iterator[Completion]:
        granules = list(self.shell.granules)
        given = {w.partition("=")[0].lower() for w in done if "=" in w}
        key, sep, value = current.partition("=")
        if sep:
            yield from _matching(value, self._values(command, key.lower()), start=-len(value))
            return
        names: list[str] = []
        for param in sorted(command.inputs, key=lambda p: p.reg):
            short = _short(param.name)
            structure = STRUCTURES.get((command.name, param.name))
            if structure is not None:
                for item in dataclass_fields(structure):  # type: ignore[arg-type]
                    if f"{short}.{item.name}" not in given:
                        names.append(f"{short}.{item.name}=")
            elif short not in given and param.name not in given:
                names.append(f"{short}=")
        yield from _matching(current, [*names, *granules])

    def _rsi(self, done: Sequence[str], current: str) -> Iterator[Completion]:
        from cca_hil.seqformat import RIPAS_NAMES, RSI_COMMANDS

        if not done:
            yield from _matching(current, list(RSI_COMMANDS))
            return
        command = RSI_COMMANDS.get(done[0].lower().replace("-", "_"))
        if command is None:
            return
        key, sep, value = current.partition("=")
        granules = list(self.shell.granules)
        if sep:
            choices = list(RIPAS_NAMES) if key == "ripas" else granules
            yield from _matching(value, choices, start=-len(value))
            return
        given = {w.partition("=")[0].lower() for w in done[1:] if "=" in w}
        names = [f"{n}=" for n in ("rec", *command.inputs) if n not in given and n != "gprs"]
        yield from _matching(current, [*names, *granules])

    def _values(self, command: RmiCommand, key: str) -> list[str]:
        head, _, field_name = key.partition(".")
        granules = list(self.shell.granules)
        platform = [f"platform.{n}" for n in PLATFORM_NAMES]
        for param in command.inputs:
            if head not in (param.name, *param.aliases):
                continue
            structure = STRUCTURES.get((command.name, param.name))
            if structure is not None and field_name:
                return [*FIELD_VALUES.get((structure, field_name), ()), *granules]
            return [*INPUT_VALUES.get(param.type, ()), *granules, *(platform if param.is_address else ())]
        return granules


def _matching(prefix: str, candidates: Iterable[str], *, start: int | None = None) -> Iterator[Completion]:
    key = prefix.lower().replace("-", "_")
    seen: set[str] = set()
    for candidate in candidates:
        if candidate in seen or not candidate.lower().startswith(key):
            continue
        seen.add(candidate)
        yield Completion(candidate, start_position=-len(prefix) if start is None else start)


# -- one line ---------------------------------------------------------------------------------------


@dataclass
class LineOutcome:
    """What became of a line: nothing to do, done, refused (bad input) or failed on the target."""

    kind: str = "done"
    """``empty``, ``done``, ``refused`` or ``failed``."""


def execute(
    shell: Shell, line: str, console: Console, *, history: Callable[[], Sequence[str]] = tuple
) -> LineOutcome:
    """Run one line of the shell, printing what it did; ShellExit for ``exit``/``quit``.

    ``history`` gives the lines of earlier sessions and this one, oldest first (for ``history``).

    Bad input is one red line (what, where, what is valid) and the shell goes
    on; so is a target error, which leaves the decision to stop to the user.
    """
    from rich.text import Text

    from cca_hil.errors import CcaHilError

    try:
        words = shell.words(line)
        if not words:
            return LineOutcome("empty")
        _run(shell, words, console, history)
    except InputError as exc:
        console.print(Text(f"error: {_one_line(exc)}", style="red"))
        return LineOutcome("refused")
    except CcaHilError as exc:
        console.print(Text(f"target error: {' '.join(str(exc).split())}", style="bold red"))
        return LineOutcome("failed")
    return LineOutcome("done")


def _one_line(exc: InputError) -> str:
    text = exc.what + (f" ({exc.where})" if exc.where else "")
    if exc.valid is not None:
        shown = list(exc.valid)
        more = f", … ({len(shown) - 24} more)" if len(shown) > 24 else ""
        text += f"; valid: {', '.join(shown[:24])}{more}" if shown else "; there are none"
    return " ".join(text.split())


def _run(shell: Shell, words: list[str], console: Console, history: Callable[[], Sequence[str]]) -> None:
    head = words[0]
    if len(words) >= 2 and words[1] == "=":
        if len(words) != 3 or words[2] != "alloc":
            raise InputError("a granule is made with `NAME = alloc`", where=" ".join(words), valid=["alloc"])
        granule = shell.alloc(head)
        console.print(f"{granule.name} = [cyan]{granule.pa:#x}[/cyan]", highlight=False)
        return
    if head in ("exit", "quit"):
        raise ShellExit
    if head == "help":
        _help(words[1:], console)
        return
    if head == "granules":
        if not shell.granules:
            console.print("no granules yet: NAME = alloc makes one", highlight=False)
        for granule in shell.granules.values():
            console.print(f"{granule.name} = [cyan]{granule.pa:#x}[/cyan]", highlight=False)
        return
    if head == "history":
        for number, entry in enumerate(history(), start=1):
            console.print(f"{number:5d}  {entry}", markup=False, highlight=False)
        return
    if head == "save":
        if len(words) != 2:
            raise InputError("save takes one file name", where=" ".join(words), valid=["save FILE"])
        path = Path(words[1]).expanduser()
        steps = shell.save(path)
        console.print(
            f"saved {steps} step(s) and {len(shell.granules)} granule(s) to {path}; "
            f"replay with: cca-hil run {shlex.quote(str(path))}",
            markup=False,
            highlight=False,
        )
        return
    if head == "rsi":
        answer = shell.rsi(words[1:])
        print_rsi(console, shell, answer)
        return
    _call, inputs, result = shell.call(words)
    for note in shell.notes:
        console.print(f"  ({note})", style="dim", markup=False, highlight=False)
    print_result(console, shell, inputs, result)


def _help(words: Sequence[str], console: Console) -> None:
    if words:
        for line in command_help(resolve_command(words[0])):
            console.print(line, markup=False, highlight=False)
        return
    for usage, text in BUILTINS.items():
        console.print(f"  [bold]{usage:<16}[/bold] {text}", highlight=False)
    console.print(
        "  [bold]COMMAND ARG…[/bold]     an RMI call: inputs in spec order, name=value or "
        "params.field=value; values are numbers, granule names (g, g+0x1000), platform.NAME "
        "or enumeration names",
        highlight=False,
    )
    console.print("  commands: " + ", ".join(command_names()), markup=False, highlight=False)
    console.print("  Tab completes commands, inputs, fields, values and granule names.", highlight=False)
