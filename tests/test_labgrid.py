"""The ``labgrid`` target kind against a real labgrid coordinator and exporter on loopback.

The farm here is real labgrid (``labgrid.remote.coordinator``, ``labgrid.remote.exporter``,
``labgrid-client``) exporting simulated boards: each board is
``cca_hil.tools.rfc2217_board`` — the agent emulator behind an RFC 2217 server
(the exported ``NetworkSerialPort``) and a ``simplerest`` power switch (the
exported ``NetworkPowerPort``). cca-hil runs as a real process; after every way
a run can end, ``labgrid-client`` must show the place free.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

SLOW = 120.0
"""Bound of every wait on a loaded machine (never a timing assertion)."""
CLIENT = [sys.executable, "-m", "labgrid.remote.client"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Lab:
    """A coordinator, an exporter and the simulated boards it exports, all on 127.0.0.1."""

    folder: Path
    address: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)
    power: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], marker: str) -> Path:
        """Start a process (output to ``NAME.log``) and wait until its output shows ``marker``."""
        log_path = self.folder / f"{name}.log"
        log = log_path.open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            argv, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        deadline = time.monotonic() + SLOW
        while marker not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, f"{name} exited: {log_path.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"{name} never said {marker!r}"
            time.sleep(0.05)
        return log_path

    def board(self, name: str, *options: str) -> tuple[int, str]:
        """A simulated board behind RFC 2217: its port and its power switch URL template."""
        log = self.start(name, [sys.executable, "-m", "cca_hil.tools.rfc2217_board", *options], "serving")
        url, power = log.read_text().splitlines()[:2]
        return int(url.rpartition(":")[2]), power

    def client(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLIENT, "-x", self.address, *args],
            capture_output=True,
            text=True,
            timeout=SLOW,
            check=False,
            env={**os.environ, **(env or {})},
        )

    def acquired(self, place: str) -> str:
        """Who holds ``place`` according to ``labgrid-client show`` ('None' when it is free)."""
        shown = self.client("-p", place, "show")
        assert shown.returncode == 0, shown.stderr
        match = re.search(r"^\s*acquired: (.*)$", shown.stdout, re.MULTILINE)
        assert match is not None, shown.stdout
        return match[1].strip()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self.logs:
            log.close()


@pytest.fixture
def lab(process_guard: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """Places ``board1`` (a board with power), ``halting`` (a board that halts in request 21) and
    ``ghost`` (a serial port nobody listens on), exported by one exporter to a fresh coordinator."""
    for variable in ("LG_COORDINATOR", "LG_PLACE", "LG_ENV", "LG_PROXY", "LG_HOSTNAME", "LG_USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CCA_HIL_LEASE_DIR", str(tmp_path / "leases"))
    folder = tmp_path / "lab"
    folder.mkdir()
    lab = Lab(folder=folder, address=f"127.0.0.1:{free_port()}")
    try:
        lab.start(
            "coordinator",
            [sys.executable, "-m", "labgrid.remote.coordinator", "-l", lab.address],
            "Coordinator ready",
        )
        boards = {"board1": lab.board("board1"), "halting": lab.board("halting", "--die-after", "20")}
        exports = []
        for name, (port, power) in boards.items():
            exports.append(
                f"{name}:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {port}\n    speed: 115200\n"
                f"  NetworkPowerPort:\n    model: simplerest\n    host: '{power}'\n    index: 0\n"
            )
        exports.append(f"ghost:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {free_port()}\n")
        (folder / "exports.yaml").write_text("".join(exports))
        lab.start(
            "exporter",
            [
                sys.executable,
                "-m",
                "labgrid.remote.exporter",
                "-c",
                lab.address,
                "-n",
                "cca-test",
                "--hostname",
                "127.0.0.1",
                "exports.yaml",
            ],
            "connected to coordinator",
        )
        for place in ("board1", "halting", "ghost"):
            for command in (("create",), ("add-match", f"cca-test/{place}/*")):
                done = lab.client("-p", place, *command)
                assert done.returncode == 0, done.stderr
        yield lab
    finally:
        lab.stop()


def profile(lab: Lab, place: str, *, coordinator: bool = True) -> Path:
    path = lab.folder / f"lg-{place}.yaml"
    address = f"  coordinator: {lab.address}\n" if coordinator else ""
    path.write_text(
        f"name: lg-{place}\nkind: labgrid\ndescription: {place} of the test farm\n"
        f"labgrid:\n  place: {place}\n{address}  power_delay: 0.2\n"
        "  link:\n    timeouts: {boot: 10, handshake: 0.5, request: 1, bulk: 5, gap: 0.1}\n    retries: 2\n"
    )
    return path


def cca_hil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        timeout=SLOW * 2,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sequence_runs_through_the_coordinator_and_the_place_is_released(lab: Lab, tmp_path: Path) -> None:
    assert lab.acquired("board1") == "None"
    run_dir = tmp_path / "run"
    done = cca_hil(
        "--profile",
        str(profile(lab, "board1")),
        "--run-dir",
        str(run_dir),
        "run",
        "rtt-fold",
        "realm-lifecycle",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run: 2 sequences" in done.stdout and "PASSED (exit 0)" in done.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["kind"] == "labgrid" and result["counts"]["error"] == 0
    assert lab.acquired("board1") == "None"
    # The coordinator's lock is what keeps two users apart: held by someone else, the run cannot start.
    held = lab.client("-p", "board1", "acquire", env={"LG_USERNAME": "someone"})
    assert held.returncode == 0, held.stderr
    busy = cca_hil("--profile", str(profile(lab, "board1")), "run", "rtt-fold")
    assert busy.returncode == 3
    assert busy.stderr.strip().splitlines() == [
        f"cca-hil: error: labgrid place 'board1' is acquired by {socket.gethostname()}/someone"
    ]
    assert lab.acquired("board1").endswith("/someone")
    # Held by this very host and user (a run killed outright): the message says how to let go.
    assert lab.client("-p", "board1", "release", "--kick").returncode == 0
    assert lab.client("-p", "board1", "acquire").returncode == 0
    mine = cca_hil("--profile", str(profile(lab, "board1")), "run", "rtt-fold")
    assert mine.returncode == 3
    assert f"'labgrid-client -x {lab.address} -p board1 release'" in mine.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_power_cycle_reboots_the_board_through_its_power_resource(lab: Lab) -> None:
    path = str(profile(lab, "board1", coordinator=False))
    env = {"LG_COORDINATOR": lab.address}
    cycled = cca_hil("--profile", path, "power", "cycle", env=env)
    assert cycled.returncode == 0, cycled.stdout + cycled.stderr
    assert lab.acquired("board1") == "None"
    info = cca_hil("--profile", path, "info", "--json", env=env)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)["facts"]
    # The board booted once at start and again when the switch turned it back on.
    assert facts["agent boot id"] == "2"
    assert facts["power control"] == "NetworkPowerPort"
    assert "board1 on " + lab.address in facts["labgrid place"]
    log = (lab.folder / "board1.log").read_text()
    assert "GET /relay/0/0" in log and "GET /relay/0/1" in log
    assert lab.acquired("board1") == "None"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_port_that_will_not_open_still_releases_the_place(lab: Lab) -> None:
    done = cca_hil("--profile", str(profile(lab, "ghost")), "run", "rtt-fold")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot open serial port rfc2217://127.0.0.1:" in done.stderr
    assert lab.acquired("ghost") == "None"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_board_that_stops_answering_and_an_interrupted_run_release_the_place(
    lab: Lab, tmp_path: Path
) -> None:
    path = str(profile(lab, "halting"))
    # The agent halts inside request 21; interrupted while it waits, the run still releases the place.
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cca_hil", "--profile", path, "--run-dir", str(run_dir)),
            *("--set", "link.retries=1000", "run", "rtt-fold"),  # waits on the halted agent until interrupted
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + SLOW
    events = run_dir / "events.jsonl"
    while not (events.exists() and '"step_finished"' in events.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=SLOW)
    assert proc.returncode == 130
    assert lab.acquired("halting") == "None"
    # Still halted: the next run's link gives up, the run is exit 3, and the place is free again.
    stopped = cca_hil("--profile", path, "run", "rtt-fold")
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "agent stopped answering" in stopped.stderr + stopped.stdout
    assert lab.acquired("halting") == "None"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_farm_run_over_a_labgrid_place_and_a_simulated_board(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "farm"
    done = cca_hil(
        "--run-dir",
        str(folder),
        "farm",
        "run",
        "rtt-fold",
        "--profiles",
        f"{profile(lab, 'board1')},board-sim",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((folder / "farm.json").read_text())
    assert [(b["board"], b["outcome"]) for b in data["boards"]] == [
        ("lg-board1", "passed"),
        ("board-sim", "passed"),
    ]
    assert data["boards"][0]["result"]["kind"] == "labgrid"
    assert (folder / "lg-board1" / "labgrid.log").is_file()
    assert lab.acquired("board1") == "None"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("labgrid:\n  coordinator: 127.0.0.1:1\n", "a labgrid profile needs labgrid.place"),
        ("labgrid:\n  place: p\n  timeout: 0\n", "labgrid.timeout must be positive"),
        ("labgrid:\n  place: p\n  serial: x\n", "unknown key 'labgrid.serial'"),
    ],
)
def test_a_bad_labgrid_profile_is_exit_2_in_one_line(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "lg.yaml"
    path.write_text(f"name: lg\nkind: labgrid\n{body}")
    done = cca_hil("--profile", str(path), "run", "rtt-fold")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr


def test_an_unreachable_coordinator_is_exit_3_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "lg.yaml"
    path.write_text(
        f"name: lg\nkind: labgrid\nlabgrid:\n  place: p\n  coordinator: 127.0.0.1:{free_port()}\n"
    )
    done = cca_hil("--profile", str(path), "run", "rtt-fold")
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"cca-hil: error: labgrid coordinator {path.read_text().split('coordinator: ')[1].strip()}: "
        "connect: Could not connect to coordinator"
    ]
