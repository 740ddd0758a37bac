"""Leases on shared targets: real processes contend for one simulated board on a TCP port."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cca_hil.errors import InputError
from cca_hil.lease import LeaseBusyError, LeaseInfo, LeaseStore
from cca_hil.profiles import build_target, load_profile

WAIT = 120.0
"""Generous bound for anything a loaded machine does (never a timing assertion)."""

HOLDER = r"""
import sys
from cca_hil.lease import LeaseStore
from cca_hil.profiles import build_target, load_profile

mode, arg = sys.argv[1], sys.argv[2]
if mode == "target":
    with build_target(load_profile(arg)) as target:
        print("held", target.lease.key if target.lease else None, flush=True)
        sys.stdin.readline()
    print("released", flush=True)
else:
    lease = LeaseStore().acquire(
        arg, heartbeat_interval=float(sys.argv[3]), stale_after=float(sys.argv[4]), command="holder"
    )
    print("held", lease.key, flush=True)
    sys.stdin.readline()
    lease.release()
    print("lost" if lease.lost else "released", flush=True)
"""


def _line(proc: subprocess.Popen[str], timeout: float = WAIT) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no line from the process in time"
    return proc.stdout.readline().strip()


@pytest.fixture
def env(tmp_path: Path, process_guard: str) -> dict[str, str]:
    """Environment of every process in a test: its own lease directory and runs folder."""
    environment = dict(os.environ)
    environment["CCA_HIL_LEASE_DIR"] = str(tmp_path / "leases")
    environment["CCA_HIL_RUNS"] = str(tmp_path / "runs")
    environment.pop("CCA_HIL_LEASE_TIMEOUT", None)
    return environment


@pytest.fixture
def board(tmp_path: Path, env: dict[str, str]) -> Iterator[Path]:
    """A simulated board serving its UART on a TCP port, and a user profile of kind serial naming it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cca_hil.tools.sim_board", "--tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        url = _line(proc)
        assert url.startswith("socket://127.0.0.1:")
        profile = tmp_path / "board.yaml"
        profile.write_text(f"name: rack-board\nkind: serial\nserial:\n  url: {url}\n")
        yield profile
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
        assert proc.stdout is not None
        proc.stdout.close()


def _holder(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    """Let a holder release (a line on stdin) and return what it said last."""
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    last = _line(proc)
    proc.wait(timeout=WAIT)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    return last


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=WAIT)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=WAIT,
        check=False,
    )


def test_second_user_of_a_board_fails_at_once_naming_the_owner(
    board: Path, env: dict[str, str], tmp_path: Path
) -> None:
    holder = _holder(env, "target", str(board))
    try:
        held = _line(holder)
        assert held.startswith("held serial:socket://127.0.0.1:")
        result = _cli(env, "--profile", str(board), "info", cwd=tmp_path)
        assert result.returncode == 3
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"pid {holder.pid} on {socket.gethostname()}" in lines[0]
        assert "is leased by" in lines[0] and "since" in lines[0]
        assert "--lease-timeout" in lines[0]
    finally:
        assert _finish(holder) == "released"
    # Released: the next user gets the board.
    assert _cli(env, "--profile", str(board), "info", cwd=tmp_path).returncode == 0


def test_a_waiting_user_gets_the_board_when_the_holder_releases(
    board: Path, env: dict[str, str], tmp_path: Path
) -> None:
    holder = _holder(env, "target", str(board))
    assert _line(holder).startswith("held ")
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cca_hil",
            "--profile",
            str(board),
            "--lease-timeout",
            "300",
            "info",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        # The waiter is waiting (its lease attempt is logged), not failing.
        assert waiter.stderr is not None
        ready, _, _ = select.select([waiter.stderr], [], [], WAIT)
        assert ready
        assert "waiting" in waiter.stderr.readline()
        assert waiter.poll() is None
    finally:
        assert _finish(holder) == "released"
    out, err = waiter.communicate(timeout=WAIT)
    assert waiter.returncode == 0, err
    assert json.loads(out)["target"] == "rack-board"


def test_a_holder_killed_with_sigkill_is_recovered_by_the_next_user_at_once(
    board: Path, env: dict[str, str], tmp_path: Path
) -> None:
    holder = _holder(env, "target", str(board))
    key = _line(holder).split(" ", 1)[1]
    _kill(holder)  # SIGKILL: no cleanup ran, the lease file stays behind
    store = LeaseStore(Path(env["CCA_HIL_LEASE_DIR"]))
    left = store.read(key)
    assert left is not None and left.pid == holder.pid
    listed = json.loads(_cli(env, "lease", "list", "--json", cwd=tmp_path).stdout)
    assert [(x["key"], x["state"]) for x in listed["leases"]] == [(key, "stale")]
    assert "has ended" in listed["leases"][0]["stale_reason"]
    # No timeout given: a dead holder on this host is recovered without waiting.
    result = _cli(env, "--profile", str(board), "info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recovered from" in result.stderr and f"pid {holder.pid}" in result.stderr
    assert store.read(key) is None


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _stop_outside_the_guard(proc: subprocess.Popen[str], lock: Path) -> None:
    """SIGSTOP ``proc`` at a moment it is not inside a heartbeat (holding the key's lock file)."""
    with lock.open("a") as handle:
        for _ in range(1000):
            os.kill(proc.pid, signal.SIGSTOP)
            while _state(proc.pid) != "T":  # the signal is delivered asynchronously
                time.sleep(0.01)
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.01)
                continue
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return
    raise AssertionError("the holder never left its lock file")


def test_a_holder_that_stops_heart_beating_is_recovered_and_does_not_remove_the_new_lease(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCA_HIL_LEASE_DIR", env["CCA_HIL_LEASE_DIR"])
    holder = _holder(env, "store", "bench-3", "0.5", "5")
    assert _line(holder) == "held bench-3"
    store = LeaseStore()
    _stop_outside_the_guard(holder, store.directory / "bench-3.lock")  # alive, but silent
    try:
        with pytest.raises(LeaseBusyError, match=f"pid {holder.pid}"):
            store.acquire("bench-3", timeout=0)  # its last heartbeat is recent: busy
        lease = store.acquire("bench-3", timeout=WAIT)
        try:
            assert "no heartbeat" in lease.info.recovered
            assert f"pid {holder.pid}" in lease.info.recovered
        finally:
            os.kill(holder.pid, signal.SIGCONT)
        # The old holder wakes up: its heartbeat finds the lease taken and gives up on it.
        assert _finish(holder) == "lost"
        current = store.read("bench-3")
        assert current is not None and current.token == lease.info.token
        lease.release()
        assert store.read("bench-3") is None
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            _kill(holder)


def test_only_one_of_many_racing_users_recovers_a_dead_holders_lease(
    env: dict[str, str], tmp_path: Path
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=WAIT)
    store = LeaseStore(Path(env["CCA_HIL_LEASE_DIR"]))
    store.directory.mkdir(parents=True)
    now = time.time()
    ghost = LeaseInfo(
        key="shared-board", owner="ghost", pid=dead.pid, host=socket.gethostname(), since=now,
        heartbeat=now, command="gone", token="ghost",
    )  # fmt: skip
    store.path_for("shared-board").write_text(json.dumps(ghost.to_json()))
    racers = [_holder(env, "store", "shared-board", "0.5", "60") for _ in range(4)]
    try:
        outcomes = []
        for racer in racers:
            assert racer.stdout is not None
            ready, _, _ = select.select([racer.stdout], [], [], WAIT)
            assert ready
            outcomes.append(racer.stdout.readline().strip())
            if not outcomes[-1]:
                racer.wait(timeout=WAIT)
        winners = [r for r, said in zip(racers, outcomes, strict=True) if said == "held shared-board"]
        assert len(winners) == 1, outcomes
        losers = [r for r in racers if r not in winners]
        for loser in losers:
            assert loser.wait(timeout=WAIT) != 0  # LeaseBusyError: the winner holds it
        info = store.read("shared-board")
        assert info is not None and info.pid == winners[0].pid and "ghost" in info.recovered
        assert _finish(winners[0]) == "released"
    finally:
        for racer in racers:
            if racer.poll() is None:
                _kill(racer)
            for stream in (racer.stdin, racer.stdout):
                if stream is not None and not stream.closed:
                    stream.close()


def test_lease_break_refuses_a_live_lease_unless_forced(env: dict[str, str], tmp_path: Path) -> None:
    holder = _holder(env, "store", "bench-9", "0.5", "60")
    try:
        assert _line(holder) == "held bench-9"
        table = _cli(env, "lease", "list", cwd=tmp_path)
        assert table.returncode == 0
        assert "bench-9" in table.stdout and "live" in table.stdout and str(holder.pid) in table.stdout
        refused = _cli(env, "lease", "break", "bench-9", cwd=tmp_path)
        assert refused.returncode == 3
        assert f"pid {holder.pid}" in refused.stderr and "--force" in refused.stderr
        forced = _cli(env, "lease", "break", "bench-9", "--force", cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert "broke lease 'bench-9'" in forced.stdout
        assert json.loads(_cli(env, "lease", "list", "--json", cwd=tmp_path).stdout)["leases"] == []
    finally:
        # The holder's heartbeat finds its lease gone: it does not write it back.
        assert _finish(holder) == "lost"


def test_lease_break_of_an_unknown_key_is_bad_input_naming_the_leases(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCA_HIL_LEASE_DIR", env["CCA_HIL_LEASE_DIR"])
    with LeaseStore().acquire("board-a", command="test"):
        result = _cli(env, "lease", "break", "board-b", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no lease on 'board-b'" in result.stderr and "valid: board-a" in result.stderr
    with pytest.raises(InputError):
        LeaseStore().break_lease("board-a")


def test_stale_when_the_pid_was_reused_or_is_a_zombie(tmp_path: Path) -> None:
    here = socket.gethostname()
    now = time.time()
    mine = LeaseInfo(
        key="k", owner="me", pid=os.getpid(), host=here, since=now, heartbeat=now, command="", token="t"
    )
    assert mine.stale_reason() is None
    reused = dataclasses.replace(mine, pid_start="1")  # our pid, but another process's start time
    assert "has ended" in (reused.stale_reason() or "")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:  # an exited, not yet reaped child: a zombie
        if _state(child.pid) == "Z":
            break
        time.sleep(0.05)
    zombie = dataclasses.replace(mine, pid=child.pid, pid_start=None)
    assert "has ended" in (zombie.stale_reason() or "")
    child.wait(timeout=WAIT)
    elsewhere = dataclasses.replace(mine, host="another-host", heartbeat=now - 100)
    assert "no heartbeat" in (elsewhere.stale_reason() or "")
    assert dataclasses.replace(mine, host="another-host").stale_reason() is None
    # Same host name, another PID namespace (a container): its pid says nothing here.
    container = dataclasses.replace(mine, pid=child.pid, machine="another-boot/4026531836")
    assert container.stale_reason() is None
    assert "no heartbeat" in (dataclasses.replace(container, heartbeat=now - 100).stale_reason() or "")


def test_a_damaged_lease_file_is_recovered_at_once(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    store.path_for("board").write_text("{not json")
    [damaged] = store.list()
    assert damaged.stale_reason() == "the lease file is unreadable"
    with store.acquire("board", command="test") as lease:
        assert "the lease file is unreadable" in lease.info.recovered
        assert store.read("board") == lease.info


def test_private_targets_take_no_lease_and_a_profile_can_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCA_HIL_LEASE_DIR", str(tmp_path / "leases"))
    with build_target(load_profile("model")) as model:
        assert model.lease is None
    with build_target(load_profile("model", ["lease.key=bench-model"])) as named:
        assert named.lease is not None and named.lease.key == "bench-model"
        assert [i.key for i in LeaseStore().list()] == ["bench-model"]
        with pytest.raises(LeaseBusyError, match="bench-model"):
            build_target(load_profile("model", ["lease.key=bench-model"])).__enter__()
    assert LeaseStore().list() == []
    assert build_target(load_profile("board-sim")).lease_key() is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "lease.timeout=-1"], "lease.timeout must be 0 or more"),
        (["--set", "lease.color=red"], "unknown key 'lease.color'"),
        (["--lease-timeout", "soon"], "--lease-timeout"),
    ],
)
def test_bad_lease_settings_are_one_line_exit_2(
    args: list[str], fragment: str, env: dict[str, str], tmp_path: Path
) -> None:
    result = _cli(env, *args, "info", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and fragment in result.stderr


def test_power_takes_the_boards_lease_without_opening_its_link(env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "switched"
    profile = tmp_path / "powered.yaml"
    profile.write_text(
        "name: powered\nkind: serial\nserial:\n  url: socket://127.0.0.1:9\n"
        f"  power:\n    commands:\n      'on': [touch, '{marker}']\n      'off': ['true']\n"
    )
    holder = _holder(env, "store", "serial:socket://127.0.0.1:9", "0.5", "60")
    try:
        assert _line(holder) == "held serial:socket://127.0.0.1:9"
        refused = _cli(env, "--profile", str(profile), "power", "on", cwd=tmp_path)
        assert refused.returncode == 3
        assert f"pid {holder.pid}" in refused.stderr
        assert not marker.exists()
    finally:
        assert _finish(holder) == "released"
    done = _cli(env, "--profile", str(profile), "power", "on", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists()
    assert LeaseStore(Path(env["CCA_HIL_LEASE_DIR"])).list() == []


def test_an_fvp_start_session_is_leased_by_its_session_file(tmp_path: Path, process_guard: str) -> None:
    from cca_hil.fvp import FvpSession

    model = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        session = FvpSession(
            pid=model.pid, pgid=model.pid, argv=("FVP_Base_RevC-2xAEMvA",), start_ticks=None, ports={},
            stdout_log="", stderr_log="", run_dir=str(tmp_path), started="",
        )  # fmt: skip
        state = tmp_path / "fvp-session.json"
        state.write_text(json.dumps(session.to_json()))
        run = tmp_path / "20261129T120000.000Z-run"  # a run folder beside the session, as `run` makes
        run.mkdir()
        attached = build_target(load_profile("fvp-base-rme"), run_dir=run)
        assert attached.lease_key() == f"fvp:{state.resolve()}"
        # Without the session folder, the target launches a model of its own: private, no lease.
        assert build_target(load_profile("fvp-base-rme"), run_dir=tmp_path / "x" / "y").lease_key() is None
    finally:
        model.kill()
        model.wait(timeout=WAIT)
    assert attached.lease_key() is None  # the session's model has gone
