"""The cca-hil pytest plugin (entry point ``pytest11``; docs/farm.md "The pytest plugin").

- ``--cca-profile NAME|PATH`` (repeatable; default ``model``): every test that uses a
  cca-hil fixture runs once per profile, with the profile name as its id;
  ``--cca-set KEY=VALUE`` overrides profile parameters as ``cca-hil --set`` does;
  ``--cca-lease-timeout SECONDS`` waits for a board someone else holds.
- Fixtures: ``cca_target`` (the opened target, under its lease), ``rmi`` (an
  :class:`~cca_hil.rmi_client.RmiClient` on it), ``model`` (a freshly booted built-in
  model configured from the target's facts: the oracle), ``run_sequence`` (run a
  sequence file or bundled sequence on the target; fails or skips the test as the
  sequence did), ``cca_profile`` (the loaded profile), ``cca_run_dir`` (the test's run folder).
- ``@pytest.mark.cca_requires("mec", "realm_exec", …)``: capabilities (and RMM
  features, as in a sequence's ``requires:``); a target without them skips the test, saying which.
- The run folder's logs (console, link trace, board program) and the sequences' step
  lines are attached to each test's report as sections ``Captured log cca <file> call``
  (``-rA``; JUnit ``<system-out>`` with ``-o junit_logging=log``), and the files' paths
  as ``user_properties`` (JUnit ``<property>``).
- Sequence files are collected as tests: a ``.yaml`` whose top level has ``sequence:``
  and ``steps:``, found in a directory named ``sequences`` (or given on the command
  line, or matching the ``cca_sequences`` ini globs) is one item per profile; every
  step is a line of the item's report section, a property, and the failure text.

Nothing here changes a test that uses none of it. cca-hil itself is imported only
when a fixture or a sequence item needs it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from cca_hil.profiles import Profile
    from cca_hil.results import SequenceResult
    from cca_hil.rmi_client import RmiClient
    from cca_hil.seqformat import Sequence
    from cca_hil.targets.base import Target
    from cca_hil.targets.model import ModelTarget

DEFAULT_PROFILE = "model"
MARKER = "cca_requires"
LOG_FILES = ("console.log", "link.trace.log", "board.log")
"""Run-folder logs attached to a test's report, when the test's target wrote them."""
LISTED_FILES = (*LOG_FILES, "events.jsonl", "result.json")
"""Run-folder files whose paths go into the report's ``user_properties`` (JUnit ``<property>``)."""
SECTION = "log cca"
"""Key of the report sections (titled ``Captured log cca … call``): pytest's JUnit writer takes
``Captured log…`` sections into ``<system-out>`` with ``-o junit_logging=log`` (or ``all``)."""
LOG_LIMIT = 64 * 1024
"""Largest tail of one log attached to a report (the whole file stays in the run folder)."""
SEQUENCE_KEYS = ("sequence", "steps")
"""Top-level keys that make a YAML file a sequence document."""


class RunSequence(Protocol):
    """The ``run_sequence`` fixture's type (for annotating tests)."""

    def __call__(
        self, sequence: str | Path, *, compare: bool | None = None, check: bool = True
    ) -> SequenceResult:
        """Run a sequence file or bundled sequence on the test's target."""
        ...


RUN_DIR_KEY = pytest.StashKey[Path]()
STEPS_KEY = pytest.StashKey[str]()
ATTACHED_KEY = pytest.StashKey[bool]()


# -- options -----------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's command-line options and ini settings."""
    group = parser.getgroup("cca-hil", "cca-hil targets")
    group.addoption(
        "--cca-profile",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="cca-hil target profile to run cca-hil tests on (repeatable; default: model).",
    )
    group.addoption(
        "--cca-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a profile parameter, as 'cca-hil --set' (repeatable).",
    )
    group.addoption(
        "--cca-lease-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Wait this long for a target another user holds (default: the profile's lease.timeout, 0).",
    )
    group.addoption(
        "--cca-run-dir",
        default=None,
        metavar="DIR",
        help="Keep each test's run folder (logs, events) under DIR (default: pytest's temporary folder).",
    )
    parser.addini(
        "cca_sequences",
        type="args",
        default=[],
        help="Globs of further YAML files collected as cca-hil sequences (besides */sequences/*.yaml).",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and check the profiles once, before anything is collected."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*capabilities): skip the test unless the cca-hil target has these capabilities "
        "or RMM features (e.g. 'realm_exec', 'mec', 'lpa2')",
    )
    if _profiles_requested(config):
        for name in _profile_names(config):
            _load_profile(config, name)


def _profiles_requested(config: pytest.Config) -> bool:
    return bool(config.getoption("cca_profile") or config.getoption("cca_set"))


def _profile_names(config: pytest.Config) -> list[str]:
    names: list[str] = list(config.getoption("cca_profile") or [])
    return list(dict.fromkeys(names)) or [DEFAULT_PROFILE]


def _load_profile(config: pytest.Config, name: str) -> Profile:
    """The profile with ``--cca-set`` and ``--cca-lease-timeout``; a bad one is a usage error (one line)."""
    from cca_hil.errors import InputError
    from cca_hil.profiles import load_profile

    overrides = list(config.getoption("cca_set") or [])
    timeout = config.getoption("cca_lease_timeout")
    if timeout is not None:
        if timeout < 0:
            raise pytest.UsageError(f"--cca-lease-timeout must be 0 or more seconds, got {timeout:g}")
        overrides.append(f"lease.timeout={timeout}")
    try:
        return load_profile(name, overrides)
    except InputError as exc:
        raise pytest.UsageError(f"--cca-profile {name}: {exc}") from None


def _profile_id(name: str) -> str:
    """A profile's test id: its name (the file stem for a path)."""
    return Path(name).stem if name.endswith((".yaml", ".yml")) or "/" in name else name


# -- parametrisation and the marker -------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses a cca-hil fixture once per ``--cca-profile``."""
    if "cca_profile" in metafunc.fixturenames:
        names = _profile_names(metafunc.config)
        metafunc.parametrize("cca_profile", names, ids=[_profile_id(n) for n in names], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a ``cca_requires`` marker naming no capability or feature cca-hil knows."""
    del config
    for item in items:
        for marker in item.iter_markers(MARKER):
            _requirements(marker, where=item.nodeid)


def _requirements(marker: pytest.Mark, *, where: str) -> tuple[str, ...]:
    from cca_hil.seqformat import FEATURE_REQUIREMENTS
    from cca_hil.targets.base import Capability

    valid = (*Capability.ALL, *FEATURE_REQUIREMENTS)
    names = tuple(str(a) for a in marker.args)
    for name in names:
        if name not in valid:
            raise pytest.UsageError(
                f"{where}: unknown capability {name!r} in @pytest.mark.{MARKER}; valid: {', '.join(valid)}"
            )
    return names


def _missing(target: Target, requirements: tuple[str, ...]) -> list[str]:
    """Which of ``requirements`` the target lacks (RMM features asked of its RMM, once)."""
    from cca_hil.seqformat import FEATURE_REQUIREMENTS

    missing = [r for r in requirements if r not in FEATURE_REQUIREMENTS and not target.has(r)]
    features = [r for r in requirements if r in FEATURE_REQUIREMENTS]
    if features:
        from cca_hil.shadow import read_rmm_facts

        facts = read_rmm_facts(target)
        missing += [r for r in features if not facts.provides(r)]
    return missing


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture
def cca_profile(request: pytest.FixtureRequest) -> Profile:
    """The cca-hil profile this test runs on (one of ``--cca-profile``, default ``model``)."""
    name = getattr(request, "param", None) or _profile_names(request.config)[0]
    return _load_profile(request.config, str(name))


@pytest.fixture
def cca_run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test's run folder: the target's logs and the sequences' events go here."""
    return _run_dir_for(request.node, tmp_path_factory)


def _run_dir_for(item: pytest.Item, factory: pytest.TempPathFactory) -> Path:
    if RUN_DIR_KEY in item.stash:
        return item.stash[RUN_DIR_KEY]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid.replace("::", "-"))[-120:].strip("_")
    base = item.config.getoption("cca_run_dir")
    if base is not None:
        folder = Path(base) / safe
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = factory.mktemp(safe[-60:] or "cca", numbered=True)
    item.stash[RUN_DIR_KEY] = folder
    return folder


@pytest.fixture
def cca_target(request: pytest.FixtureRequest, cca_profile: Profile, cca_run_dir: Path) -> Iterator[Target]:
    """The target of ``cca_profile``, opened under its lease; skipped if it lacks a marker's needs.

    A target that cannot be opened (busy, unreachable) errors the test with its one line.
    """
    from cca_hil.errors import CcaHilError
    from cca_hil.profiles import build_target

    with contextlib.ExitStack() as stack:
        try:
            target = stack.enter_context(build_target(cca_profile, run_dir=cca_run_dir))
        except CcaHilError as exc:
            pytest.fail(f"cannot open target {cca_profile.name!r}: {exc}", pytrace=False)
        requirements: tuple[str, ...] = ()
        for marker in request.node.iter_markers(MARKER):
            requirements += _requirements(marker, where=request.node.nodeid)
        missing = _missing(target, requirements)
        if missing:
            pytest.skip(f"target {target.name!r} lacks {', '.join(missing)}")
        yield target


@pytest.fixture
def rmi(cca_target: Target) -> RmiClient:
    """Typed RMI calls on the test's target."""
    from cca_hil.rmi_client import RmiClient

    return RmiClient(cca_target)


@pytest.fixture
def model(cca_target: Target) -> Iterator[ModelTarget]:
    """A freshly booted built-in model configured from the target's facts: what the target should answer."""
    from cca_hil.shadow import build_shadow, read_rmm_facts

    shadow = build_shadow(cca_target, cca_target.info(), read_rmm_facts(cca_target))
    with shadow:
        yield shadow


@pytest.fixture
def run_sequence(request: pytest.FixtureRequest, cca_target: Target, cca_run_dir: Path) -> RunSequence:
    """``run_sequence(file_or_name, compare=None, check=True)``: run one sequence on the test's target.

    With ``check`` the test fails when a step failed, diverged or broke off (the steps in the
    failure text) and is skipped when the target lacks what the sequence requires.
    """

    def run(sequence: str | Path, *, compare: bool | None = None, check: bool = True) -> SequenceResult:
        from cca_hil.cli import resolve_sequence
        from cca_hil.sequences import load_sequence

        loaded = load_sequence(resolve_sequence(str(sequence)))
        result = _run_one(cca_target, loaded, run_dir=cca_run_dir, compare=compare, item=request.node)
        if check:
            _judge(result)
        return result

    return run


# -- running a sequence -------------------------------------------------------------------------------------


class SequenceFailed(Exception):
    """A sequence run as a test ended failed, diverged or broken off."""

    def __init__(self, result: SequenceResult) -> None:
        self.result = result
        super().__init__(f"sequence {result.name!r} {result.outcome}")


def _run_one(
    target: Target, sequence: Sequence, *, run_dir: Path, compare: bool | None, item: pytest.Item
) -> SequenceResult:
    """Run ``sequence`` as ``cca-hil run`` does (compat rows, shadow model), steps into the item's report."""
    import io

    from rich.console import Console

    from cca_hil.report import ConsoleView, RunFolder, Verbosity
    from cca_hil.results import Events, SequenceResult
    from cca_hil.sequences import Runner
    from cca_hil.shadow import expected_quirk_rows

    rows = expected_quirk_rows(target.profile)
    if rows:
        sequence = sequence.judged_by(rows)
    buffer = io.StringIO()
    view = ConsoleView(
        Console(file=buffer, width=160, color_system=None, force_terminal=False), verbosity=Verbosity.VERBOSE
    )
    comparing = target.kind != "model" if compare is None else compare
    with RunFolder(run_dir) as folder:
        runner = Runner(target, events=Events([folder, view]), compare=comparing, run_dir=run_dir)
        run = runner.run_all([sequence], command="pytest")
    view.close()
    shown = item.stash.get(STEPS_KEY, "")
    item.stash[STEPS_KEY] = shown + buffer.getvalue()
    if run.sequences:
        result = run.sequences[0]
        for number, step in enumerate(result.steps, start=1):
            item.user_properties.append((f"cca step {number} {step.name}", str(step.outcome)))
        return result
    return SequenceResult(name=sequence.name, source=sequence.source, error=run.error or "did not run")


def _judge(result: SequenceResult) -> None:
    from cca_hil.results import Outcome

    outcome = result.outcome
    if outcome is Outcome.SKIPPED:
        pytest.skip(result.skipped_reason or "every step was skipped")
    if outcome in (Outcome.FAILED, Outcome.DIVERGED, Outcome.ERROR):
        raise SequenceFailed(result)


def _failure_text(result: SequenceResult) -> str:
    """The sequence's steps, one line each, the bad ones with where and why."""
    from cca_hil.report import failure_detail, step_location, step_verdict
    from cca_hil.results import Outcome

    lines = [f"sequence {result.name!r} ({result.source}) {result.outcome}"]
    if result.error:
        lines.append(f"error: {result.error}")
    for step in result.steps:
        lines.append(f"  {step.outcome!s:8} {step.name}  {step.op} {step.command}  → {step_verdict(step)}")
        if step.outcome in (Outcome.FAILED, Outcome.DIVERGED, Outcome.ERROR):
            lines.append(f"           {step_location(result, step)}: {failure_detail(step)}")
    return "\n".join(lines)


# -- sequences as test items --------------------------------------------------------------------------------


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A sequence document in a ``sequences`` folder, named as an argument or matching ``cca_sequences``."""
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    if not _wanted(file_path, parent.config) or not _is_sequence_document(file_path):
        return None
    collector: SequenceFile = SequenceFile.from_parent(parent, path=file_path)
    return collector


def _wanted(path: Path, config: pytest.Config) -> bool:
    if path.parent.name == "sequences":
        return True
    here = config.invocation_params.dir
    named = {(here / str(a).split("::")[0]).absolute() for a in config.args}
    if path.absolute() in named:
        return True
    globs: list[str] = config.getini("cca_sequences")
    relative = path.absolute().relative_to(config.rootpath) if path.is_relative_to(config.rootpath) else path
    return any(fnmatch.fnmatch(str(relative), pattern) for pattern in globs)


def _is_sequence_document(path: Path) -> bool:
    """Cheap look at the top-level keys: a sequence document names ``sequence:`` and ``steps:``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    keys = {m.group(1) for m in re.finditer(r"^([A-Za-z_]+)\s*:", text, flags=re.MULTILINE)}
    return all(key in keys for key in SEQUENCE_KEYS)


class SequenceFile(pytest.File):
    """A sequence YAML file: one :class:`SequenceItem` per profile."""

    def collect(self) -> Iterator[SequenceItem]:
        """Load (validate) the sequence; a bad one is a collection error with its file:line message."""
        from cca_hil.errors import InputError
        from cca_hil.sequences import load_sequence

        try:
            sequence = load_sequence(self.path)
        except InputError as exc:
            raise self.CollectError(str(exc)) from None
        for name in _profile_names(self.config):
            item: SequenceItem = SequenceItem.from_parent(
                self, name=f"{sequence.name}[{_profile_id(name)}]", sequence=sequence, profile_name=name
            )
            yield item


class SequenceItem(pytest.Item):
    """One sequence on one profile: its target opened under its lease, every step in the report."""

    def __init__(self, *, sequence: Sequence, profile_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sequence = sequence
        self.profile_name = profile_name
        self.fixturenames: list[str] = []
        """No fixtures: said for plugins that read every item's (labgrid's ``pytest_runtest_setup`` does)."""

    def runtest(self) -> None:
        """Open the target, run the sequence, pass, fail or skip as its outcome says."""
        from cca_hil.profiles import build_target

        profile = _load_profile(self.config, self.profile_name)
        # The factory behind the tmp_path fixtures (an item outside a function has no fixtures).
        factory: pytest.TempPathFactory = self.config._tmp_path_factory  # type: ignore[attr-defined]
        folder = _run_dir_for(self, factory)
        with build_target(profile, run_dir=folder) as target:
            result = _run_one(target, self.sequence, run_dir=folder, compare=None, item=self)
        _judge(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        """A failed sequence: its steps; a target error: its one line; anything else: pytest's traceback."""
        from cca_hil.errors import CcaHilError

        if isinstance(excinfo.value, SequenceFailed):
            return _failure_text(excinfo.value.result)
        if isinstance(excinfo.value, CcaHilError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the item comes from, for the report header."""
        return self.path, 0, f"sequence {self.sequence.name} on {self.profile_name}"


# -- logs into every report ---------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the test's step lines and run-folder logs when its call (or a failed setup) is reported.

    Added to the item before its report is made, they are in that report and in the later
    ones too (pytest's JUnit writer reads sections and properties from the teardown report).
    """
    if call.when == "call" or (call.when == "setup" and call.excinfo is not None):
        _attach(item, call.when)
    report: pytest.TestReport = yield
    return report


def _attach(item: pytest.Item, when: str) -> None:
    if ATTACHED_KEY in item.stash:
        return
    item.stash[ATTACHED_KEY] = True
    steps = item.stash.get(STEPS_KEY, "")
    if steps:
        item.add_report_section(when, f"{SECTION} steps", steps)
    folder = item.stash.get(RUN_DIR_KEY, None)
    if folder is None:
        return
    for name in LISTED_FILES:
        path = folder / name
        if path.is_file():
            if name in LOG_FILES:
                item.add_report_section(when, f"{SECTION} {name}", _tail(path))
            item.user_properties.append((f"cca {name}", str(path)))


def _tail(path: Path) -> str:
    data = path.read_bytes()
    if len(data) <= LOG_LIMIT:
        return data.decode("utf-8", "replace")
    skipped = len(data) - LOG_LIMIT
    return f"[… {skipped} bytes before; whole file: {path}]\n" + data[-LOG_LIMIT:].decode("utf-8", "replace")
