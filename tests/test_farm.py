"""``cca-hil farm run``: simulated boards in parallel worker processes, merged results, nothing left behind.

The farm runs as a real ``python -m cca_hil`` process; its workers are real
``cca-hil run`` processes and each ``board-sim`` board a real simulated board
process on a loopback port. A board is made to die mid-run by killing its
simulated-board process (found by the pid it logs in its run folder) while it
sits halted inside a request (``--die-after``), or by killing its worker.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from cca_hil.cli import resolve_sequence
from cca_hil.errors import InputError
from cca_hil.farm import complete_result, parse_boards, plan_of, run_from_json
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome, RunResult
from cca_hil.sequences import Runner, load_sequence

SEQUENCES = ("realm-lifecycle", "rtt-fold")
SIM_BOARD = "[python, -m, cca_hil.tools.sim_board, --tcp"
HALTING_BOARD = SIM_BOARD + ", --die-after, {n}]"
"""A board that halts in the middle of its request n+1 and stays silent until killed."""
PATIENT = "link.retries=1000"
"""A link that keeps retrying a halted board for much longer than any test waits: only the test ends it."""
FARM_TIMEOUT = 600.0
SLOW = 120.0
"""Bound of every wait on a loaded machine (never a timing assertion)."""


def planned_cases() -> dict[str, list[str]]:
    """Step names of every bundled sequence the tests run, by sequence."""
    plans = [plan_of(load_sequence(resolve_sequence(name))) for name in SEQUENCES]
    return {p.name: [s[0] for s in p.steps] for p in plans}


def farm_argv(folder: Path, *args: str, options: tuple[str, ...] = ()) -> list[str]:
    """``cca-hil [OPTIONS] --run-dir FOLDER farm run ARGS``."""
    return [sys.executable, "-m", "cca_hil", *options, "--run-dir", str(folder), "farm", "run", *args]


class Farm:
    """A farm process whose progress lines are read as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    def wait_line(self, pattern: str) -> re.Match[str]:
        """The first progress line matching ``pattern`` (read until it comes)."""
        regex = re.compile(pattern)
        for line in self.lines:
            if match := regex.search(line):
                return match
        assert self.proc.stdout is not None
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if match := regex.search(line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in {self.lines!r}")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=FARM_TIMEOUT)
        return self.proc.returncode, "".join(self.lines) + out, err


def wait_for(what: str, probe: Callable[[], object], farm: Farm) -> object:
    """Poll ``probe()`` until it returns something truthy (bounded; over if the farm ended)."""
    deadline = time.monotonic() + SLOW
    while time.monotonic() < deadline:
        if farm.proc.poll() is not None:
            raise AssertionError(
                f"the farm ended (status {farm.proc.returncode}) before {what}: {farm.finish()}"
            )
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def board_pid(folder: Path) -> int | None:
    """The simulated board's pid, from the line it logs into its board.log."""
    try:
        text = (folder / "board.log").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"sim-board: pid (\d+) serving", text)
    return int(match[1]) if match else None


def running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def halted(folder: Path) -> int | None:
    """The pid of a board's simulated board once the board has run a step (else None)."""
    return board_pid(folder) if steps_done(folder) else None


def steps_done(folder: Path) -> int:
    try:
        return (folder / "events.jsonl").read_text().count('"event":"step_finished"')
    except FileNotFoundError:
        return 0


def suites(junit: Path) -> dict[str, ET.Element]:
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    return {s.get("name", ""): s for s in root.findall("testsuite")}


def cases_by_sequence(suite: ET.Element) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for case in suite.findall("testcase"):
        _, _, sequence = case.get("classname", "").partition(".")
        out.setdefault(sequence, set()).add(case.get("name", ""))
    return out


@pytest.fixture
def quiet_env(process_guard: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """No leaked processes, and leases of this test kept in its own folder."""
    monkeypatch.setenv("CCA_HIL_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.delenv("CCA_HIL_PROFILE", raising=False)
    yield process_guard


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eight_boards_one_killed_mid_run_errors_while_seven_pass(quiet_env: str, tmp_path: Path) -> None:
    folder = tmp_path / "farm"
    junit, doc = tmp_path / "farm.xml", tmp_path / "farm.json"
    farm = Farm(
        farm_argv(
            folder,
            *SEQUENCES,
            "--profiles",
            "board-sim*8",
            "--board-set",
            f"board-sim-5:serial.launch={HALTING_BOARD.format(n=30)}",
            "--board-set",
            f"board-sim-5:{PATIENT}",
            "--junit",
            str(junit),
            "--json",
            str(doc),
        )
    )
    victim = folder / "board-sim-5"
    pid = wait_for("board-sim-5's simulated board", partial(halted, victim), farm)
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    code, out, err = farm.finish()

    assert code == 3, (out, err)
    assert "board-sim-5: error" in out
    planned = planned_cases()
    merged = suites(junit)
    assert sorted(merged) == [f"board-sim-{i}" for i in range(1, 9)]
    for name, suite in merged.items():
        # Every case of every board: the killed board's unrun steps are there too, as errors.
        by_sequence = cases_by_sequence(suite)
        for sequence, steps in planned.items():
            assert set(steps) <= by_sequence[sequence], (name, sequence)
        if name == "board-sim-5":
            assert int(suite.get("errors", "0")) > 0
            errors = [e for c in suite.findall("testcase") if (e := c.find("error")) is not None]
            assert any("not run: board board-sim-5 broke off" in (e.get("message") or "") for e in errors)
            system_out = suite.findtext("system-out") or ""
            assert "board.log" in system_out and "console.log" in system_out
        else:
            assert suite.get("errors") == "0" and suite.get("failures") == "0", name
            assert int(suite.get("tests", "0")) == sum(len(s) for s in planned.values())
    data = json.loads(doc.read_text())
    assert data["schema"] == "cca-hil-farm/1" and data["exit_code"] == 3
    states = {b["board"]: b["outcome"] for b in data["boards"]}
    assert states.pop("board-sim-5") == "error"
    assert set(states.values()) == {"passed"}
    # The merged files in the farm folder are the same documents.
    assert json.loads((folder / "farm.json").read_text())["counts"] == data["counts"]
    for i in range(1, 9):
        assert (folder / f"board-sim-{i}" / "events.jsonl").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_worker_killed_mid_run_is_an_error_and_its_board_program_is_swept(
    quiet_env: str, tmp_path: Path
) -> None:
    folder = tmp_path / "farm"
    farm = Farm(
        farm_argv(
            folder,
            *SEQUENCES,
            "--profiles",
            "board-sim,model",
            "--board-set",
            f"board-sim:serial.launch={HALTING_BOARD.format(n=20)}",
            "--board-set",
            f"board-sim:{PATIENT}",
        )
    )
    worker = int(farm.wait_line(r"board-sim: started \(pid (\d+)")[1])
    sim = wait_for(
        "the simulated board",
        partial(halted, folder / "board-sim"),
        farm,
    )
    os.kill(worker, signal.SIGKILL)
    code, out, err = farm.finish()

    assert code == 3, (out, err)
    assert "worker killed by SIGKILL" in out
    # The board program the dead worker launched did not outlive the farm (process_guard checks all).
    assert isinstance(sim, int) and not running(sim)
    merged = suites(folder / "farm.junit.xml")
    assert merged["model"].get("errors") == "0"
    planned = planned_cases()
    assert cases_by_sequence(merged["board-sim"]).keys() >= planned.keys()
    assert int(merged["board-sim"].get("errors", "0")) >= len(planned["rtt-fold"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_stops_every_board_and_still_writes_the_merged_results(
    quiet_env: str, tmp_path: Path
) -> None:
    folder = tmp_path / "farm"
    farm = Farm(
        farm_argv(
            folder,
            *SEQUENCES,
            "--profiles",
            "board-sim*2",
            options=("--set", f"serial.launch={HALTING_BOARD.format(n=20)}", "--set", PATIENT),
        )
    )
    for board in (folder / "board-sim-1", folder / "board-sim-2"):
        wait_for(board.name, partial(halted, board), farm)
    farm.proc.send_signal(signal.SIGTERM)
    code, out, err = farm.finish()

    assert code == 130, (out, err)
    assert out.strip().splitlines()[-1].endswith(f"— INTERRUPTED (exit 130) — results in {folder}"), out
    data = json.loads((folder / "farm.json").read_text())
    assert data["interrupted"] is True and data["exit_code"] == 130
    assert [b["outcome"] for b in data["boards"]] == ["error", "error"]
    assert all("interrupted" in b["error"] for b in data["boards"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_board_over_its_timeout_is_stopped_and_is_an_error(quiet_env: str, tmp_path: Path) -> None:
    folder = tmp_path / "farm"
    done = subprocess.run(
        farm_argv(
            folder,
            "rtt-fold",
            "--profiles",
            "board-sim,model",
            "--board-set",
            f"board-sim:serial.launch={HALTING_BOARD.format(n=20)}",
            "--board-set",
            f"board-sim:{PATIENT}",
            "--timeout",
            "3",
        ),
        capture_output=True,
        text=True,
        timeout=FARM_TIMEOUT,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    data = json.loads((folder / "farm.json").read_text())
    board, model = data["boards"]
    assert board["outcome"] == "error" and board["error"] == "timed out after 3 s"
    # Stopped with SIGINT: the worker ends as on Ctrl-C (130; killed by it, if still starting up).
    assert board["worker_exit"] in (130, -signal.SIGINT)
    assert model["outcome"] == "passed"


@pytest.mark.timeout(900)
def test_a_farm_folder_holding_an_earlier_run_is_refused(quiet_env: str, tmp_path: Path) -> None:
    folder = tmp_path / "farm"
    argv = farm_argv(folder, "rtt-fold", "--profiles", "model")
    first = subprocess.run(argv, capture_output=True, text=True, timeout=FARM_TIMEOUT, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    again = subprocess.run(argv, capture_output=True, text=True, timeout=FARM_TIMEOUT, check=False)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"cca-hil: error: holds an earlier run (farm.json); give a new folder (--run-dir {folder})"
    ]


@pytest.mark.timeout(900)
def test_a_failed_expectation_on_one_board_is_exit_1(quiet_env: str, tmp_path: Path) -> None:
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        "sequence: failing\nsteps:\n  - rmi: version\n    args: {req: 0x10000}\n    expect: error_input\n"
    )
    folder = tmp_path / "farm"
    done = subprocess.run(
        farm_argv(folder, "rtt-fold", str(failing), "--profiles", "model*2", "--jobs", "1"),
        capture_output=True,
        text=True,
        timeout=FARM_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "— FAILED (exit 1)" in done.stdout.splitlines()[-1]
    merged = suites(folder / "farm.junit.xml")
    assert [s.get("failures") for s in merged.values()] == ["1", "1"]
    # No live rendering in a log: plain lines, no cursor movement.
    assert "\x1b[" not in done.stdout


@pytest.mark.timeout(900)
def test_on_a_terminal_the_farm_draws_a_live_table(quiet_env: str, tmp_path: Path) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen(
        farm_argv(tmp_path / "farm", "rtt-fold", "--profiles", "model*2"),
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env={**os.environ, "COLUMNS": "140", "TERM": "xterm"},
    )
    os.close(child)
    output = bytearray()
    deadline = time.monotonic() + FARM_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.wait(timeout=SLOW) == 0
    text = output.decode(errors="replace")
    assert "\x1b[" in text  # drawn in place
    for column in ("board", "state", "current", "passed", "failed"):
        assert column in text
    assert "model-1" in text and "model-2" in text
    assert "farm run: 2 boards (2 passed)" in text


# -- reading results back, completing a broken-off board ------------------------------------------------


def model_run(*names: str) -> RunResult:
    """A real run of bundled sequences on the built-in model."""
    with build_target(load_profile("model")) as target:
        return Runner(target).run_all([load_sequence(resolve_sequence(n)) for n in names])


def test_a_result_document_reads_back_as_the_same_document() -> None:
    run = model_run(*SEQUENCES)
    document = run.to_json()
    assert run_from_json(json.loads(json.dumps(document))).to_json() == document


def test_a_broken_off_board_gets_every_planned_case_as_error() -> None:
    run = model_run(*SEQUENCES)
    plan = [plan_of(load_sequence(resolve_sequence(n))) for n in SEQUENCES]
    # As if the board died after the fifth step of its first sequence.
    del run.sequences[1:]
    done = run.sequences[0].steps[:5]
    run.sequences[0].steps = list(done)
    completed = complete_result(run, plan, "board X broke off: killed")
    assert [s.name for s in completed.sequences] == [p.name for p in plan]
    for sequence, planned in zip(completed.sequences, plan, strict=True):
        assert [s.name for s in sequence.steps] == [s[0] for s in planned.steps]
        assert sequence.error == "board X broke off: killed"
    first, second = completed.sequences
    assert first.steps[:5] == done
    unrun = [*first.steps[5:], *second.steps]
    assert {s.outcome for s in unrun} == {Outcome.ERROR}
    assert {s.message for s in unrun} == {"not run: board X broke off: killed"}
    assert completed.error == "board X broke off: killed" and completed.exit_code() == 3


# -- input ---------------------------------------------------------------------------------------------------


def test_boards_from_profiles_counts_and_board_overrides() -> None:
    boards = parse_boards(["board-sim*2,model", "profiles/x.yaml"], ["board-sim-2:link.retries=4"])
    assert [(b.id, b.profile, b.overrides) for b in boards] == [
        ("board-sim-1", "board-sim", ()),
        ("board-sim-2", "board-sim", ("link.retries=4",)),
        ("model", "model", ()),
        ("x", "profiles/x.yaml", ()),
    ]
    # Repeating a name is the same as counting it.
    assert [b.id for b in parse_boards(["model", "model"])] == ["model-1", "model-2"]


@pytest.mark.parametrize(
    ("profiles", "sets", "message"),
    [
        (["board-sim*0"], [], "a board count must be 1 or more"),
        ([" , "], [], "no boards given"),
        (["model"], ["nosuch:link.retries=1"], "no board called 'nosuch'"),
        (["model"], ["model-link.retries"], "expected BOARD:KEY=VALUE"),
    ],
)
def test_bad_board_lists_are_input_errors(profiles: list[str], sets: list[str], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_boards(profiles, sets)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["rtt-fold", "--profiles", "nosuch"], "unknown profile 'nosuch'"),
        (["rtt-fold", "--profiles", "model", "--board-set", "other:seed=1"], "no board called 'other'"),
        (
            ["rtt-fold", "--profiles", "board-sim", "--board-set", "board-sim:serial.nokey=1"],
            "board board-sim",
        ),
        (["nosuch-sequence", "--profiles", "model"], "unknown sequence 'nosuch-sequence'"),
        (["rtt-fold", "--profiles", "model", "--jobs", "0"], "--jobs must be 1 or more"),
        (["rtt-fold"], "missing option '--profiles'"),
    ],
)
def test_bad_input_is_exit_2_in_one_line_before_any_board_starts(
    quiet_env: str, tmp_path: Path, args: list[str], fragment: str
) -> None:
    folder = tmp_path / "farm"
    done = subprocess.run(farm_argv(folder, *args), capture_output=True, text=True, timeout=SLOW, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cca-hil: error:"), done.stderr
    assert fragment in lines[0]
    assert not folder.exists()
