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
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cca_hil import __version__
from cca_hil.errors import InputError, TargetError
from cca_hil.report import write_atomically
from cca_hil.results import now
from cca_hil.targets.base import AccessOp, AccessResult, Target, TargetInfo

if TYPE_CHECKING:
    from cca_hil.arch.pas import Pas
    from cca_hil.profiles import Profile

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

    def __init__(self, inner: Target, journal: Journal) -> None:
        super().__init__(profile=inner.profile, run_dir=inner.run_dir)
        self.inner = inner
        self.journal = journal

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
        self.journal.operations.append(SmcOp(fid, tuple(args), tuple(result), self.inner.rmi_condition))
        return result

    def read(self, pa: int, size: int) -> bytes:
        return self.inner.read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        # A write that faults raises before memory changes, so only completed writes are journaled.
        self.inner.write(pa, data)
        self.journal.operations.append(WriteOp(pa, bytes(data)))

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        result = self.inner.access(pa, op, size, value)
        if op == "write":
            self.journal.operations.append(StoreOp(pa, size, value, faulted=not result.ok))
        return result

    def gpt_pas(self, pa: int) -> Pas:
        return self.inner.gpt_pas(pa)

    @property
    def rmi_condition(self) -> str | None:
        return self.inner.rmi_condition

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Sequence[Any] = ()) -> tuple[int, ...]:
        # Realm actions are not plain data that a journal can hold; bench sessions stay at the RMI level.
        raise TargetError("realm execution is not available in a bench session; use `cca-hil run`")

    def reset(self) -> None:
        self.inner.reset()
        self.journal.operations.clear()

    def replay(self) -> None:
        """Bring the wrapped target to the journal's state, checking every SMC's X0 as recorded."""
        inner = self.inner
        for number, op in enumerate(self.journal.operations, start=1):
            if isinstance(op, SmcOp):
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
    from cca_hil.arch.rmi_1_0 import RMI_1_0

    command = RMI_1_0.by_fid.get(op.fid)
    if command is None:
        return f"smc {op.fid:#x}({', '.join(f'{a:#x}' for a in op.args)})"
    shown = [f"{a:#x}" for a in op.args[: len(command.inputs)]]
    return f"{command.name}({', '.join(shown)})"


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
    import fcntl

    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TargetError(
                        f"session {path.stem!r} is in use by another cca-hil process "
                        f"(waited {timeout:g} s for {lock_path})"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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

        The journal is saved even when the command inside fails, so that the
        operations that did reach the model are not forgotten.
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
                finally:
                    session.save()

    def save(self) -> None:
        """Write the journal (atomically); nothing to do for targets that keep their own state."""
        if self.journal is None:
            return
        self.journal.updated = now()
        write_atomically(self.path, json.dumps(self.journal.to_json(), indent=1) + "\n")

    def new_operations(self) -> list[Operation]:
        """Operations this invocation added (after the replayed ones)."""
        if self.journal is None:
            return []
        return self.journal.operations[self.replayed :]


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
