"""``fvp start | ports | stop`` through the sub-app, with the FVP stand-in: a round trip leaves nothing."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cca_hil.cli import Settings
from cca_hil.cli_fvp import fvp_app
from cca_hil.errors import InputError, TargetError
from cca_hil.profiles import build_target, load_profile

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tools" / "fvp-standin"


@pytest.fixture(autouse=True)
def no_leaked_processes(process_guard: str) -> str:
    """Every process a test here starts must be gone when it ends (tests/conftest.py)."""
    return process_guard


@pytest.fixture
def app() -> typer.Typer:
    """A tiny root app with the fvp sub-app, as the lead's cli.py adds it."""
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Root."""

    root.add_typer(fvp_app, name="fvp")
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Global options: the fvp-base-rme profile on the stand-in, runs root in tmp_path."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "bl1.bin").write_bytes(b"\0" * 20 * 1024)
    (images / "fip.bin").write_bytes(b"\0" * 900 * 1024)
    return Settings(
        profile="fvp-base-rme",
        overrides=(
            f"fvp.binary={STANDIN}",
            f"fvp.images_dir={images}",
            "fvp.timeouts={version: 30, ports: 30, connect: 5, shutdown: 5, kill: 5}",
        ),
        run_dir=tmp_path / "runs",
        verbose=0,
        quiet=False,
    )


def group_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` as another program (pgrep) sees them."""
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


def test_start_ports_stop_round_trip_leaves_nothing_running(
    app: typer.Typer, settings: Settings, tmp_path: Path
) -> None:
    runner = CliRunner()
    started = runner.invoke(app, ["fvp", "start", "--json"], obj=settings, catch_exceptions=False)
    assert started.exit_code == 0, started.output
    session = json.loads(started.output)
    state = tmp_path / "runs" / "fvp-session.json"
    try:
        assert session["state_file"] == str(state) and state.is_file()
        assert set(session["ports"]) == {
            "terminal_0",
            "terminal_1",
            "terminal_3",
        }  # terminal_2: connect false
        assert str(session["pid"]) in group_members(session["pgid"])

        shown = runner.invoke(app, ["fvp", "ports"], obj=settings, catch_exceptions=False)
        assert shown.exit_code == 0
        agent_port = session["ports"]["terminal_0"]
        assert f"terminal_0: 127.0.0.1:{agent_port}  (agent)" in shown.output
        assert f"pid {session['pid']}" in shown.output

        # A command's run folder in the runs root uses the running model.
        profile = load_profile(settings.profile, settings.overrides)
        with build_target(profile, run_dir=tmp_path / "runs" / "20260101T000000Z-run") as target:
            assert target.smc(0xC400_0150, 0x10000)[:3] == (0, 0x10000, 0x10000)
            assert "session from 'fvp start'" in target.info().facts["FVP"]
        assert str(session["pid"]) in group_members(session["pgid"])
    finally:
        stopped = runner.invoke(app, ["fvp", "stop"], obj=settings, catch_exceptions=False)
    assert stopped.exit_code == 0
    assert f"FVP (pid {session['pid']}) stopped" in stopped.output
    # CliRunner ran `fvp start` in this process, so the model is our child and its exit leaves a
    # zombie for us to reap (after a real `cca-hil fvp start` the parent is gone and init reaps it).
    with contextlib.suppress(ChildProcessError):  # unless `fvp stop` reaped it already
        os.waitpid(session["pid"], 0)
    assert group_members(session["pgid"]) == []
    assert not state.exists()
    assert (tmp_path / "runs" / "fvp-session" / "fvp.stdout.log").stat().st_size > 0

    after = runner.invoke(app, ["fvp", "ports"], obj=settings)
    assert isinstance(after.exception, TargetError)
    assert "no FVP session recorded" in str(after.exception)


def test_fvp_commands_need_an_fvp_profile(app: typer.Typer, settings: Settings) -> None:
    model = Settings(profile="model", overrides=(), run_dir=settings.run_dir, verbose=0, quiet=False)
    result = CliRunner().invoke(app, ["fvp", "start"], obj=model)
    assert isinstance(result.exception, InputError)
    assert "fvp commands need an FVP profile" in str(result.exception)


def test_a_second_start_is_refused_while_the_first_runs(app: typer.Typer, settings: Settings) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["fvp", "start"], obj=settings, catch_exceptions=False).exit_code == 0
    try:
        again = runner.invoke(app, ["fvp", "start"], obj=settings)
        assert isinstance(again.exception, TargetError)
        assert "already running" in str(again.exception)
    finally:
        assert runner.invoke(app, ["fvp", "stop"], obj=settings, catch_exceptions=False).exit_code == 0
