"""Many boards at once: ``cca-hil farm run`` (issue 9 part 3; docs/farm.md "farm run").

A farm run is the same ``cca-hil run`` on every board of a list, each in its
own worker process (``python -m cca_hil --profile P --run-dir BOARD_FOLDER -q
run …``) and its own process session, at most ``jobs`` at a time. Boards are
profiles; a profile named several times is several boards (``board-sim*8``).

The parent follows each board by tailing the ``events.jsonl`` its run folder
gets as steps finish (:class:`~cca_hil.report.RunFolder`), shows a row per
board, and when a worker ends reads the board's ``result.json``. A board whose
worker died, or whose target broke off, has every case it did not run
reported as ``error`` with the board's logs attached, while the other boards
finish. The board results are merged into one document (``farm.json``) and
one JUnit file (``farm.junit.xml``, a testsuite per board) in the farm folder.

Nothing is left behind: every worker and everything it starts carries
``CCA_HIL_FARM_TAG`` in its environment; when a worker ends (or the farm is
interrupted), processes still carrying its tag are killed (Linux ``/proc``).
Workers are asked to stop with SIGINT (their targets close: a launched board
is stopped), then killed after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Protocol
from xml.etree import ElementTree as ET

from cca_hil.errors import EXIT_FAILED, EXIT_OK, EXIT_TARGET, InputError
from cca_hil.results import Outcome, RunResult, SequenceResult, StepResult, now, worst

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

FARM_TAG = "CCA_HIL_FARM_TAG"
"""Environment variable marking every process a board's worker started (children inherit it)."""
WORKER_LOG = "worker.log"
BOARD_JUNIT = "junit.xml"
FARM_JSON = "farm.json"
FARM_JUNIT = "farm.junit.xml"
LOG_FILES = (WORKER_LOG, "board.log", "console.log", "link.trace.log")
"""Logs of a board's folder attached to its results when it broke off (those that exist)."""
LOG_TAIL_LINES = 30
STOP_GRACE = 10.0
"""Seconds a worker has after SIGINT to close its target before it is killed."""
POLL_INTERVAL = 0.1
DEFAULT_BOARD_TIMEOUT = 3600.0
EXIT_INTERRUPTED = 130
"""Exit status of a farm run stopped by Ctrl-C or SIGTERM (as for any interrupted command)."""

_MULTIPLIER = re.compile(r"^(?P<name>.+?)\s*\*\s*(?P<count>\d+)$")


# -- the boards --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardSpec:
    """One board of a farm run: its id (also its folder name), profile and per-board overrides."""

    id: str
    profile: str
    overrides: tuple[str, ...] = ()


def _profile_stem(profile: str) -> str:
    stem = Path(profile).stem if profile.endswith((".yaml", ".yml")) or "/" in profile else profile
    return re.sub(r"[^A-Za-z0-9._+-]", "_", stem) or "board"


def parse_boards(profiles: Iterable[str], board_sets: Iterable[str] = ()) -> list[BoardSpec]:
    """Boards from ``--profiles`` items (``a,b``, ``a*3``) and ``--board-set ID:KEY=VALUE`` assignments.

    A profile named once is the board of its name; a profile named N times is
    the boards ``NAME-1`` … ``NAME-N`` in the order given.
    """
    names: list[str] = []
    for item in profiles:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            match = _MULTIPLIER.match(part)
            if match is None:
                names.append(part)
                continue
            count = int(match["count"])
            if count < 1:
                raise InputError(f"{part!r}: a board count must be 1 or more", where="--profiles")
            names.extend([match["name"].strip()] * count)
    if not names:
        raise InputError("no boards given", where="--profiles", valid=["NAME", "NAME,NAME", "NAME*N"])
    total = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    ids: list[tuple[str, str]] = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        stem = _profile_stem(name)
        ids.append((f"{stem}-{seen[name]}" if total[name] > 1 else stem, name))
    duplicated = sorted({i for i, _ in ids if [j for j, _ in ids].count(i) > 1})
    if duplicated:
        raise InputError(f"two boards would both be called {duplicated[0]!r}", where="--profiles")
    per_board: dict[str, list[str]] = {i: [] for i, _ in ids}
    for assignment in board_sets:
        board, sep, rest = assignment.partition(":")
        if not sep or "=" not in rest:
            raise InputError(
                f"bad board override {assignment!r}: "
                "expected BOARD:KEY=VALUE such as board-sim-2:link.retries=4",
                where="--board-set",
            )
        if board not in per_board:
            raise InputError(f"no board called {board!r}", where=f"--board-set {assignment}", valid=per_board)
        per_board[board].append(rest)
    return [BoardSpec(id=i, profile=name, overrides=tuple(per_board[i])) for i, name in ids]


@dataclass(frozen=True)
class PlannedSequence:
    """A sequence as loaded before the run: what every board will run (names of its steps, in order)."""

    name: str
    source: str
    description: str
    requires: tuple[str, ...]
    steps: tuple[tuple[str, str, str, int], ...]
    """(name, op, command, line) of each step."""


def plan_of(sequence: Any) -> PlannedSequence:
    """The plan of a compiled :class:`cca_hil.sequences.Sequence`."""
    return PlannedSequence(
        name=sequence.name,
        source=sequence.source,
        description=sequence.description,
        requires=tuple(sequence.requires),
        steps=tuple((s.name, s.op, s.command, s.line) for s in sequence.steps),
    )


# -- reading a board's results back ---------------------------------------------------------------------


def _int_register(text: Any) -> int:
    return int(str(text), 0)


def step_from_json(data: Mapping[str, Any]) -> StepResult:
    """A :class:`StepResult` from its ``to_json()`` form."""
    return StepResult(
        name=str(data["name"]),
        op=str(data.get("op", "")),
        command=str(data.get("command", "")),
        args=dict(data.get("args") or {}),
        registers=tuple(_int_register(r) for r in data.get("registers") or ()),
        status=data.get("status"),
        index=data.get("index"),
        outputs=dict(data.get("outputs") or {}),
        condition=data.get("condition"),
        expected=str(data.get("expected") or ""),
        outcome=Outcome(data.get("outcome", "error")),
        message=str(data.get("message") or ""),
        duration=float(data.get("duration") or 0.0),
        line=data.get("line"),
        predicted=data.get("predicted"),
        matched=data.get("matched"),
    )


def sequence_from_json(data: Mapping[str, Any]) -> SequenceResult:
    """A :class:`SequenceResult` from its ``to_json()`` form."""
    return SequenceResult(
        name=str(data["name"]),
        source=str(data.get("source", "")),
        description=str(data.get("description") or ""),
        steps=[step_from_json(s) for s in data.get("steps") or ()],
        started=str(data.get("started") or ""),
        ended=str(data.get("ended") or ""),
        skipped_reason=str(data.get("skipped_reason") or ""),
        error=str(data.get("error") or ""),
    )


def run_from_json(data: Mapping[str, Any]) -> RunResult:
    """A :class:`RunResult` from the result document (``cca-hil-result/1``)."""
    return RunResult(
        target=str(data.get("target", "")),
        profile=str(data.get("profile", "")),
        kind=str(data.get("kind", "")),
        tool_version=str(data.get("tool_version", "")),
        command=str(data.get("command", "run")),
        started=str(data.get("started") or ""),
        ended=str(data.get("ended") or ""),
        sequences=[sequence_from_json(s) for s in data.get("sequences") or ()],
        run_dir=str(data.get("run_dir") or ""),
        error=str(data.get("error") or ""),
    )


class BoardState(StrEnum):
    """Where a board is in the farm run."""

    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


@dataclass
class _EventTail:
    """Reads the complete lines appended to a board's ``events.jsonl`` since the last look."""

    path: Path
    offset: int = 0
    partial: bytes = b""

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        *lines, self.partial = data.split(b"\n")
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events


@dataclass
class Board:
    """One board during and after the farm run: its worker, what it is doing, and its result."""

    spec: BoardSpec
    folder: Path
    state: BoardState = BoardState.WAITING
    current: str = ""
    """``sequence › step`` being run."""
    counts: dict[str, int] = field(default_factory=lambda: {str(o): 0 for o in Outcome})
    pid: int | None = None
    exit_status: int | None = None
    """The worker's exit status (negative: the signal that killed it)."""
    error: str = ""
    """Why the board broke off (worker died, target error, timeout, interrupted)."""
    started: float = 0.0
    ended: float = 0.0
    result: RunResult | None = None
    tag: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    tail: _EventTail | None = None
    run_info: dict[str, Any] = field(default_factory=dict)
    sequences: list[SequenceResult] = field(default_factory=list)
    """Sequences as followed from the event log (what the board did, even if it dies)."""
    stop_requested: float | None = None

    @property
    def id(self) -> str:
        """The board's id (``board-sim-3``)."""
        return self.spec.id

    @property
    def elapsed(self) -> float:
        """Seconds since the worker started (to its end once it has ended)."""
        if not self.started:
            return 0.0
        return (self.ended or time.monotonic()) - self.started

    def follow(self, event: Mapping[str, Any]) -> None:
        """Take one event of the board's log into the live state."""
        kind = event.get("event")
        if kind == "run_started":
            self.state = BoardState.RUNNING
            self.run_info = dict(event)
        elif kind == "sequence_started":
            self.sequences.append(
                SequenceResult(
                    name=str(event.get("sequence", "")),
                    source=str(event.get("source", "")),
                    started=str(event.get("time", "")),
                )
            )
            self.current = str(event.get("sequence", ""))
        elif kind == "step_finished" and isinstance(event.get("step"), Mapping):
            step = step_from_json(event["step"])
            if self.sequences:
                self.sequences[-1].steps.append(step)
            self.counts[str(step.outcome)] += 1
            self.current = f"{event.get('sequence', '')} › {step.name}"
        elif kind == "sequence_finished" and self.sequences:
            last = self.sequences[-1]
            last.skipped_reason = str(event.get("skipped_reason") or "")
            last.error = str(event.get("error") or "")
            last.ended = str(event.get("time", ""))


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``CCA_HIL_FARM_TAG=tag`` (empty without ``/proc``)."""
    needle = f"{FARM_TAG}={tag}".encode()
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def sweep(tag: str, *, timeout: float = 5.0) -> list[int]:
    """Kill every process still carrying ``tag``; the pids that were found (bounded in time)."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = tagged_processes(tag)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.05)
    return killed


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def log_tails(folder: Path, *, lines: int = LOG_TAIL_LINES) -> dict[str, str]:
    """The last lines of each log in a board's folder, by file name (for a board that broke off).

    Control bytes (agent frames share the console's line) are shown as ``\\xNN``, which XML can carry.
    """
    out: dict[str, str] = {}
    for name in LOG_FILES:
        path = folder / name
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8", errors="replace")
            tail = "\n".join(text.rstrip("\n").splitlines()[-lines:])
            out[name] = xml_safe(tail)
    return out


def xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot carry shown as ``\\xNN``."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


# -- the views ------------------------------------------------------------------------------------------


class FarmView(Protocol):
    """Something that follows the boards of a farm run (the live table, progress lines)."""

    def started(self, boards: Sequence[Board]) -> None:
        """The farm run begins."""

    def changed(self, board: Board, what: str) -> None:
        """Something worth a line happened on ``board`` (``what`` says it in words)."""

    def tick(self, boards: Sequence[Board]) -> None:
        """Called a few times a second while boards run."""

    def finished(self, boards: Sequence[Board]) -> None:
        """Every board has ended."""


_STATE_STYLE = {
    BoardState.WAITING: "dim",
    BoardState.STARTING: "cyan",
    BoardState.RUNNING: "cyan",
    BoardState.STOPPING: "yellow",
    BoardState.PASSED: "green",
    BoardState.FAILED: "bold red",
    BoardState.ERROR: "bold magenta",
}


def board_table(boards: Sequence[Board]) -> Table:
    """One row per board: state, current step, pass/fail counts, time."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("board", "profile", "state", "current"):
        table.add_column(column, no_wrap=column != "current", overflow="ellipsis")
    for column in ("passed", "failed", "skipped", "error", "time"):
        table.add_column(column, justify="right", no_wrap=True)
    for board in boards:
        failed = board.counts["failed"] + board.counts["diverged"]
        table.add_row(
            board.id,
            board.spec.profile,
            f"[{_STATE_STYLE[board.state]}]{board.state}[/]",
            board.error if board.state is BoardState.ERROR and board.error else board.current,
            str(board.counts["passed"]),
            str(failed),
            str(board.counts["skipped"]),
            str(board.counts["error"]),
            f"{board.elapsed:.1f}s",
        )
    return table


class LiveView:
    """A rich Live table redrawn in place (an interactive terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None

    def started(self, boards: Sequence[Board]) -> None:
        from rich.live import Live

        self._live = Live(board_table(boards), console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def changed(self, board: Board, what: str) -> None:
        """The table shows it."""

    def tick(self, boards: Sequence[Board]) -> None:
        if self._live is not None:
            self._live.update(board_table(boards), refresh=True)

    def finished(self, boards: Sequence[Board]) -> None:
        if self._live is not None:
            self._live.update(board_table(boards), refresh=True)
            self._live.stop()
            self._live = None


class LineView:
    """Plain progress lines, one per thing that happened (a log, CI): no live rendering."""

    def __init__(self, write: Callable[[str], None], *, quiet: bool = False) -> None:
        self.write = write
        self.quiet = quiet

    def started(self, boards: Sequence[Board]) -> None:
        if not self.quiet:
            self.write(f"farm: {len(boards)} boards: {', '.join(b.id for b in boards)}")

    def changed(self, board: Board, what: str) -> None:
        if not self.quiet:
            self.write(f"{board.id}: {what}")

    def tick(self, boards: Sequence[Board]) -> None:
        """Nothing is redrawn in a log."""

    def finished(self, boards: Sequence[Board]) -> None:
        """The summary follows."""


# -- the farm -------------------------------------------------------------------------------------------


@dataclass
class FarmResult:
    """The merged result of a farm run: every board's result document and how each board ended."""

    boards: list[Board]
    started: str
    ended: str = ""
    folder: Path | None = None
    interrupted: bool = False

    @property
    def outcome(self) -> Outcome:
        """Worst board outcome."""
        return worst(self.board_outcome(b) for b in self.boards)

    @staticmethod
    def board_outcome(board: Board) -> Outcome:
        """How one board ended (``error`` when it broke off)."""
        if board.error or board.result is None:
            return Outcome.ERROR
        return board.result.outcome

    def exit_code(self) -> int:
        """3 if any board had a target error or died, else 1 if any case failed or diverged, else 0.

        130 when the farm run was interrupted (Ctrl-C, SIGTERM).
        """
        if self.interrupted:
            return EXIT_INTERRUPTED
        outcome = self.outcome
        if outcome is Outcome.ERROR:
            return EXIT_TARGET
        if outcome in (Outcome.FAILED, Outcome.DIVERGED):
            return EXIT_FAILED
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        """Cases per outcome over every board."""
        out = {str(o): 0 for o in Outcome}
        for board in self.boards:
            if board.result is not None:
                for key, value in board.result.counts().items():
                    out[key] += value
        return out

    def to_json(self) -> dict[str, Any]:
        """The merged result document (``cca-hil-farm/1``)."""
        return {
            "schema": "cca-hil-farm/1",
            "command": "farm run",
            "started": self.started,
            "ended": self.ended,
            "folder": str(self.folder) if self.folder else "",
            "outcome": str(self.outcome),
            "exit_code": self.exit_code(),
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "boards": [
                {
                    "board": b.id,
                    "profile": b.spec.profile,
                    "overrides": list(b.spec.overrides),
                    "folder": str(b.folder),
                    "state": str(b.state),
                    "outcome": str(self.board_outcome(b)),
                    "worker_exit": b.exit_status,
                    "seconds": round(b.elapsed, 3),
                    "error": b.error,
                    "logs": {name: str(b.folder / name) for name in LOG_FILES if (b.folder / name).exists()},
                    "result": b.result.to_json() if b.result is not None else None,
                }
                for b in self.boards
            ],
        }

    def junit(self) -> ET.ElementTree[ET.Element]:
        """JUnit XML: a testsuite per board, a testcase per case (classname ``BOARD.SEQUENCE``)."""
        from cca_hil.report import junit_tree

        root = ET.Element("testsuites", {"name": "cca-hil farm run"})
        totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
        seconds = 0.0
        for board in self.boards:
            suite = ET.SubElement(root, "testsuite", {"name": board.id, "time": f"{board.elapsed:.6f}"})
            props = ET.SubElement(suite, "properties")
            for name, text in (
                ("profile", board.spec.profile),
                ("folder", str(board.folder)),
                ("worker_exit", "" if board.exit_status is None else str(board.exit_status)),
                ("overrides", " ".join(board.spec.overrides)),
            ):
                ET.SubElement(props, "property", {"name": name, "value": text})
            tally = dict.fromkeys(totals, 0)
            if board.result is not None:
                for inner in junit_tree(board.result).getroot():
                    for case in inner.iter("testcase"):
                        case.set("classname", f"{board.id}.{case.get('classname', inner.get('name', ''))}")
                        suite.append(case)
                        tally["tests"] += 1
                        if case.find("failure") is not None:
                            tally["failures"] += 1
                        elif case.find("error") is not None:
                            tally["errors"] += 1
                        elif case.find("skipped") is not None:
                            tally["skipped"] += 1
            if board.error:
                tails = log_tails(board.folder)
                out = ET.SubElement(suite, "system-out")
                out.text = (
                    f"board {board.id} broke off: {board.error}\nrun folder: {board.folder}\n"
                    + "".join(f"\n--- {name} (last lines) ---\n{text}\n" for name, text in tails.items())
                )
            for key, value in tally.items():
                suite.set(key, str(value))
                totals[key] += value
            seconds += board.elapsed
        for key, value in totals.items():
            root.set(key, str(value))
        root.set("time", f"{seconds:.6f}")
        for element in root.iter():
            # Messages quote what boards printed; XML 1.0 cannot carry control characters.
            if element.text:
                element.text = xml_safe(element.text)
            for attribute, raw in element.attrib.items():
                element.set(attribute, xml_safe(raw))
        return ET.ElementTree(root)


def _not_run(name: str, op: str, command: str, line: int, why: str) -> StepResult:
    return StepResult(
        name=name, op=op, command=command, outcome=Outcome.ERROR, message=f"not run: {why}", line=line
    )


def complete_result(result: RunResult, plan: Sequence[PlannedSequence], why: str) -> RunResult:
    """Give every planned case the board did not run an ``error`` result saying ``why``.

    Sequences are matched by position (the runner runs them in order); within a
    sequence that broke off, the planned steps it has no result for are added.
    """
    for position, planned in enumerate(plan):
        if position < len(result.sequences):
            sequence = result.sequences[position]
            if sequence.skipped_reason and not sequence.error:
                continue
            done = {s.name for s in sequence.steps}
            missing = [s for s in planned.steps if s[0] not in done]
            if not missing:
                continue
            if not sequence.error:
                sequence.error = why
            sequence.steps.extend(_not_run(*s, why) for s in missing)
        else:
            result.sequences.append(
                SequenceResult(
                    name=planned.name,
                    source=planned.source,
                    description=planned.description,
                    steps=[_not_run(*s, why) for s in planned.steps],
                    error=why,
                )
            )
    if not result.error:
        result.error = why
    if not result.ended:
        result.ended = now()
    return result


@dataclass(frozen=True)
class FarmOptions:
    """How the workers run: the ``run`` options every board gets, parallelism, bounds."""

    sequences: tuple[Path, ...]
    plan: tuple[PlannedSequence, ...]
    jobs: int
    global_overrides: tuple[str, ...] = ()
    compare: bool | None = None
    reset: bool = False
    """Workers reset their board before each sequence (``run --reset``)."""
    inject_noise: str | None = None
    board_timeout: float = DEFAULT_BOARD_TIMEOUT
    stop_grace: float = STOP_GRACE
    python: str = sys.executable


class Farm:
    """Runs the boards' workers, at most ``jobs`` at a time, and merges their results."""

    def __init__(
        self, boards: Sequence[BoardSpec], *, folder: Path, options: FarmOptions, view: FarmView
    ) -> None:
        self.folder = folder
        self.options = options
        self.view = view
        self.boards = [Board(spec=spec, folder=folder / spec.id) for spec in boards]
        self._farm_tag = uuid.uuid4().hex
        self.result: FarmResult | None = None
        """The merged result, once :meth:`run` has begun (written even when interrupted)."""

    def check_fresh(self) -> None:
        """Refuse a farm folder holding an earlier farm run (its event logs would be read as this one's)."""
        earlier = [self.folder / FARM_JSON, *(b.folder / "events.jsonl" for b in self.boards)]
        for path in earlier:
            if path.exists():
                raise InputError(
                    f"holds an earlier run ({path.relative_to(self.folder)}); give a new folder",
                    where=f"--run-dir {self.folder}",
                )

    def worker_argv(self, board: Board) -> list[str]:
        """The worker's command line: this interpreter running ``cca-hil … run`` for one board."""
        opts = self.options
        argv = [opts.python, "-m", "cca_hil", "--profile", board.spec.profile]
        for assignment in (*opts.global_overrides, *board.spec.overrides):
            argv += ["--set", assignment]
        if opts.inject_noise:
            argv += ["--inject-noise", opts.inject_noise]
        argv += ["--run-dir", str(board.folder), "-q", "run", *(str(p) for p in opts.sequences)]
        argv += ["--junit", str(board.folder / BOARD_JUNIT)]
        if opts.compare is not None:
            argv.append("--compare" if opts.compare else "--no-compare")
        if opts.reset:
            argv.append("--reset")
        return argv

    # -- one board ------------------------------------------------------------------------------------

    def _start(self, board: Board) -> None:
        board.folder.mkdir(parents=True, exist_ok=True)
        board.tag = f"{self._farm_tag}-{board.id}"
        board.log = (board.folder / WORKER_LOG).open("ab", buffering=0)
        argv = self.worker_argv(board)
        board.log.write(f"$ {' '.join(argv)}\n".encode())
        env = dict(os.environ)
        env[FARM_TAG] = board.tag
        env.pop("CCA_HIL_PROFILE", None)
        board.state = BoardState.STARTING
        board.started = time.monotonic()
        board.tail = _EventTail(board.folder / "events.jsonl")
        try:
            board.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=board.log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C reaches the farm only, which stops its workers in order.
                start_new_session=True,
            )
        except OSError as exc:
            board.error = f"cannot start the worker: {exc}"
            self._finish(board)
            return
        board.pid = board.proc.pid
        self.view.changed(board, f"started (pid {board.pid}, folder {board.folder})")

    def _poll(self, board: Board) -> bool:
        """Follow the board's events; True once its worker has ended (and the board is finished)."""
        assert board.proc is not None and board.tail is not None
        for event in board.tail.new_events():
            board.follow(event)
            if event.get("event") == "sequence_finished":
                seq = board.sequences[-1] if board.sequences else None
                if seq is not None:
                    self.view.changed(board, _sequence_line(seq))
        if board.proc.poll() is None:
            if board.stop_requested is None and board.elapsed > self.options.board_timeout:
                board.error = f"timed out after {self.options.board_timeout:g} s"
                self._request_stop(board)
            elif board.stop_requested is not None and time.monotonic() - board.stop_requested > (
                self.options.stop_grace
            ):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(board.proc.pid, signal.SIGKILL)
            return False
        for event in board.tail.new_events():
            board.follow(event)
        self._finish(board)
        return True

    def _request_stop(self, board: Board) -> None:
        if board.proc is None or board.proc.poll() is not None or board.stop_requested is not None:
            return
        board.state = BoardState.STOPPING
        board.stop_requested = time.monotonic()
        # SIGINT: the worker's run ends as a Ctrl-C would end it, closing its target (and board program).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(board.proc.pid, signal.SIGINT)

    def _finish(self, board: Board) -> None:
        board.ended = time.monotonic()
        status = board.proc.returncode if board.proc is not None else None
        board.exit_status = status
        if board.log is not None:
            board.log.close()
            board.log = None
        if board.tag:
            leftovers = sweep(board.tag)
            if leftovers:
                with (board.folder / WORKER_LOG).open("a", encoding="utf-8") as log:
                    log.write(f"farm: killed processes left behind by the worker: {leftovers}\n")
        result = self._read_result(board)
        if not board.error:
            board.error = self._worker_problem(board, status, result)
        if board.error:
            if result is None:
                result = RunResult(
                    target=str(board.run_info.get("target") or board.spec.id),
                    profile=str(board.run_info.get("profile") or board.spec.profile),
                    kind=str(board.run_info.get("kind") or ""),
                    tool_version=str(board.run_info.get("tool_version") or ""),
                    sequences=board.sequences,
                    run_dir=str(board.folder),
                )
            why = f"board {board.id} broke off: {board.error} (logs in {board.folder})"
            result = complete_result(result, self.options.plan, why)
        board.result = result
        outcome = FarmResult.board_outcome(board)
        board.counts = result.counts() if result is not None else board.counts
        board.state = (
            BoardState.ERROR
            if outcome is Outcome.ERROR
            else BoardState.FAILED
            if outcome in (Outcome.FAILED, Outcome.DIVERGED)
            else BoardState.PASSED
        )
        board.current = ""
        shown = ", ".join(f"{n} {o}" for o, n in board.counts.items() if n)
        detail = f" — {board.error}" if board.error else ""
        self.view.changed(board, f"{board.state} ({shown or 'no cases'}; worker exit {status}){detail}")

    def _read_result(self, board: Board) -> RunResult | None:
        path = board.folder / "result.json"
        try:
            return run_from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            return None

    def _worker_problem(self, board: Board, status: int | None, result: RunResult | None) -> str:
        """Why a worker's run did not end normally ('' when it did)."""
        if result is not None:
            # result.json is written when the run has ended: whatever the exit status, the run finished.
            return result.error
        if status is not None and status < 0:
            with contextlib.suppress(ValueError):
                return f"worker killed by {signal.Signals(-status).name} before the run finished"
        last = _last_line(board.folder / WORKER_LOG)
        return f"worker exited with status {status} before the run finished" + (f": {last}" if last else "")

    # -- all boards -----------------------------------------------------------------------------------

    def run(self) -> FarmResult:
        """Run every board; Ctrl-C or SIGTERM stops the workers and still writes the merged results."""
        self.folder.mkdir(parents=True, exist_ok=True)
        result = self.result = FarmResult(boards=self.boards, started=now(), folder=self.folder)
        with _terminate_as_interrupt():
            self.view.started(self.boards)
            try:
                self._loop()
            except KeyboardInterrupt:
                result.interrupted = True
                # A second Ctrl-C must not cut the (bounded) shutdown short and leave workers behind.
                with _signals_ignored():
                    self._stop_all("interrupted")
                raise
            finally:
                result.ended = now()
                self.view.finished(self.boards)
                self.write(result)
        return result

    def _loop(self) -> None:
        waiting = list(self.boards)
        running: list[Board] = []
        while waiting or running:
            while waiting and len(running) < self.options.jobs:
                board = waiting.pop(0)
                self._start(board)
                if board.proc is not None:
                    running.append(board)
            running = [b for b in running if not self._poll(b)]
            self.view.tick(self.boards)
            if running:
                time.sleep(POLL_INTERVAL)

    def _stop_all(self, why: str) -> None:
        """Stop every worker (SIGINT, bounded grace, SIGKILL) and give unfinished boards their errors."""
        active = [b for b in self.boards if b.proc is not None and b.exit_status is None and not b.ended]
        for board in active:
            board.error = board.error or why
            self._request_stop(board)
        deadline = time.monotonic() + self.options.stop_grace
        for board in active:
            assert board.proc is not None
            try:
                board.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(board.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    board.proc.wait(timeout=5.0)
            self._poll(board)
        for board in self.boards:
            if not board.ended:
                board.error = board.error or (why if board.proc is not None else f"not started: {why}")
                self._finish(board)

    def write(self, result: FarmResult) -> None:
        """``farm.json`` and ``farm.junit.xml`` in the farm folder."""
        write_json(self.folder / FARM_JSON, result)
        write_junit(self.folder / FARM_JUNIT, result)


def write_junit(path: Path, result: FarmResult) -> None:
    """Write the merged JUnit XML atomically."""
    from cca_hil.report import write_atomically

    tree = result.junit()
    ET.indent(tree)
    text = ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=False)
    write_atomically(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")


def write_json(path: Path, result: FarmResult) -> None:
    """Write the merged result document atomically."""
    from cca_hil.report import write_atomically

    write_atomically(path, json.dumps(result.to_json(), separators=(",", ":")) + "\n")


def _sequence_line(sequence: SequenceResult) -> str:
    counts = sequence.counts()
    shown = ", ".join(f"{counts[str(o)]} {o}" for o in Outcome if counts[str(o)])
    text = f"{sequence.name}: {str(sequence.outcome).upper()} ({shown or 'no steps'})"
    if sequence.error:
        text += f" — {sequence.error}"
    return text


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if lines and not lines[-1].startswith("$ "):
            return lines[-1].strip()
    return ""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While the farm runs, SIGTERM ends it as Ctrl-C does (workers stopped, results written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the duration (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summary_line(result: FarmResult) -> str:
    """The one line a farm run ends with: boards by outcome, cases by outcome, verdict, exit code, folder."""
    by_board: dict[str, int] = {}
    for board in result.boards:
        key = str(FarmResult.board_outcome(board))
        by_board[key] = by_board.get(key, 0) + 1
    boards = ", ".join(f"{n} {o}" for o, n in by_board.items())
    counts = result.counts()
    cases = ", ".join(f"{counts[str(o)]} {o}" for o in Outcome if counts[str(o)] or o is Outcome.PASSED)
    verdict = "INTERRUPTED" if result.interrupted else str(result.outcome).upper()
    text = (
        f"farm run: {len(result.boards)} boards ({boards}), {sum(counts.values())} cases: {cases}"
        f" — {verdict} (exit {result.exit_code()})"
    )
    if result.folder is not None:
        text += f" — results in {result.folder}"
    return text
