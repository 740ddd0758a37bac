"""Progress and liveness: a spinner or bar on an interactive terminal, nothing of it in a pipe or a log.

Slow operations (opening a board, running sequences over the agent link,
walking RTTs, starting an FVP) draw live status only when the output is a
terminal; piped output — a CI log — holds plain lines only. The terminal
side runs the command on a real pty (tests/pty_harness.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pty_harness import PtyProcess, strip_ansi

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tools" / "fvp-standin"
TIMEOUT = 300.0
SPINNER = re.compile("[\u2800-\u28ff]")
"""Braille dots: rich's spinner frames."""
BAR = "\u2501"
"""The heavy horizontal line rich draws progress bars with."""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_guard: str) -> Path:
    """A fresh current directory (its own runs root); every process it starts must end."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    env.pop("TERM", None)
    return env


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    """A command with stdout and stderr piped, as under CI."""
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
        check=False,
    )


def assert_clean(text: str) -> None:
    """No terminal control sequences, carriage returns, spinner frames or progress bars."""
    assert "\x1b" not in text, text
    assert "\r" not in text, text
    assert not SPINNER.search(text), text
    assert BAR not in text, text


def test_piped_output_of_slow_commands_holds_no_progress(workdir: Path) -> None:
    board = ("--profile", "board-sim")
    for args in (
        ("run", "realm-lifecycle"),
        (*board, "run", "realm-lifecycle"),
        (*board, "conformance", "--only", "granule_delegate"),
        (*board, "show", "granules", "--range", "0x90000000+64K"),
        (*board, "info"),
    ):
        proc = piped(*args)
        assert proc.returncode == 0, (args, proc.stdout + proc.stderr)
        assert_clean(proc.stdout + proc.stderr)
        assert proc.stdout.strip(), args


def test_fvp_start_piped_prints_plain_lines(workdir: Path) -> None:
    images = workdir / "firmware"
    images.mkdir()
    (images / "bl1.bin").write_bytes(b"\0" * 4096)
    (images / "fip.bin").write_bytes(b"\0" * 4096)
    fvp = ("--profile", "fvp-base-rme", "--set", f"fvp.binary={STANDIN}", "--set", f"fvp.images_dir={images}")
    start = piped(*fvp, "fvp", "start")
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert_clean(start.stdout + start.stderr)
        assert "FVP started" in start.stdout
    finally:
        stop = piped(*fvp, "fvp", "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert_clean(stop.stdout + stop.stderr)


def test_on_a_terminal_opening_a_board_spins_and_a_run_draws_a_bar(workdir: Path) -> None:
    argv = [sys.executable, "-m", "cca_hil", "--profile", "board-sim", "run", "realm-lifecycle"]
    with PtyProcess.spawn(argv, env=_env(), cwd=workdir) as term:
        term.expect("opening board-sim (serial)", timeout=TIMEOUT)
        assert term.wait(TIMEOUT) == 0, term.text
        raw = term.output.decode("utf-8", "replace")
    assert SPINNER.search(raw), raw
    assert "\r\x1b[2K" in raw  # the status line is redrawn in place
    assert BAR in raw, raw
    plain = strip_ansi(term.output).decode("utf-8", "replace")
    assert "PASS     realm-lifecycle" in plain and "PASSED (exit 0)" in plain


def test_on_a_terminal_a_refused_view_ends_its_status_with_one_line(workdir: Path) -> None:
    """show realms on a freshly booted board-sim: the opening spinner, then one clear error line."""
    argv = [sys.executable, "-m", "cca_hil", "--profile", "board-sim", "show", "realms", "--rd", "0x90000000"]
    with PtyProcess.spawn(argv, env=_env(), cwd=workdir) as term:
        term.expect("opening board-sim", timeout=TIMEOUT)
        code = term.wait(TIMEOUT)
    plain = strip_ansi(term.output).decode("utf-8", "replace")
    assert code == 2, plain
    errors = [line for line in plain.splitlines() if "cca-hil: error:" in line]
    assert len(errors) == 1 and "0x90000000 is not the RD of a realm" in errors[0], plain


def test_on_a_terminal_info_spins_while_the_board_boots(workdir: Path) -> None:
    argv = [sys.executable, "-m", "cca_hil", "--profile", "board-sim", "info"]
    with PtyProcess.spawn(argv, env=_env(), cwd=workdir) as term:
        term.expect("opening board-sim (serial)", timeout=TIMEOUT)
        term.expect("RMI version 1.0", timeout=TIMEOUT)
        assert term.wait(TIMEOUT) == 0, term.text
    assert SPINNER.search(term.output.decode("utf-8", "replace"))


def test_an_rtt_walk_counts_its_calls_on_a_terminal_only(workdir: Path) -> None:
    """show realms --rd on an FVP holding a realm: plain when piped; on a pty a live count of calls."""
    images = workdir / "firmware"
    images.mkdir()
    (images / "bl1.bin").write_bytes(b"\0" * 4096)
    (images / "fip.bin").write_bytes(b"\0" * 4096)
    fvp = ("--profile", "fvp-base-rme", "--set", f"fvp.binary={STANDIN}", "--set", f"fvp.images_dir={images}")
    assert piped(*fvp, "fvp", "start").returncode == 0
    try:
        built = piped(*fvp, "run", "realm-lifecycle", "--stop-before", "data_destroy_0", "--no-compare")
        assert built.returncode == 0, built.stdout + built.stderr
        walked = piped(*fvp, "show", "realms", "--rd", "0x90000000")
        assert walked.returncode == 0, walked.stdout + walked.stderr
        assert_clean(walked.stdout + walked.stderr)
        argv = [sys.executable, "-m", "cca_hil", *fvp, "show", "realms", "--rd", "0x90000000"]
        with PtyProcess.spawn(argv, env=_env(), cwd=workdir) as term:
            term.expect(re.compile(rb"walking RTTs with RMI_RTT_READ_ENTRY: \d+ calls"), timeout=TIMEOUT)
            term.expect("unassigned_ns", timeout=TIMEOUT)
            assert term.wait(TIMEOUT) == 0, term.text
    finally:
        assert piped(*fvp, "fvp", "stop").returncode == 0
    plain = strip_ansi(term.output).decode("utf-8", "replace")
    assert "source: RTT_READ_ENTRY walk through the agent" in plain
    assert "L3 0x0  assigned ripas=ram → PA 0x90050000" in plain
