"""The FVP stand-in's command line and exit behaviour, run as the program it is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tools" / "fvp-standin"


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the stand-in to completion (bounded)."""
    return subprocess.run(
        [sys.executable, str(STANDIN), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_version_prints_the_fast_models_line() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert re.match(r"Fast Models \[11\.27\.19 \(", done.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-C", "bp.no_such=1"], "unknown parameter 'bp.no_such'"),
        (["-C", "cluster2.NUM_CORES=4"], "unknown parameter 'cluster2.NUM_CORES'"),
        (["-C", "bp.secure_memory=maybe"], "invalid value 'maybe' for parameter 'bp.secure_memory'"),
        (["-C", "bp.terminal_0.mode=ssh"], "invalid value 'ssh' for parameter 'bp.terminal_0.mode'"),
        (["-C", "bp.dram_size"], "must be NAME=VALUE"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["--quantum"], "option --quantum requires an argument"),
        (["--data", "cluster0.cpu0=nothing.bin@0x88000000"], "--data: cannot open file 'nothing.bin'"),
        (["--data", "gpu0=x.bin@0x0"], "--data: unknown instance 'gpu0'"),
        (
            ["-C", "bp.secureflashloader.fname=/nonexistent/bl1.bin"],
            "cannot open file '/nonexistent/bl1.bin'",
        ),
    ],
)
def test_bad_command_lines_are_refused_with_a_message(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Listening for serial connection" not in done.stdout


def test_parameter_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# comment\nbp.secure_memory = 0\n\nstandin.agent=0\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("bp.secure_memory=0\nbp.typo=1\n")
    assert run("-f", str(good), "--cyclelimit", "1000").returncode == 0
    done = run("-f", str(bad))
    assert done.returncode == 1
    assert "unknown parameter 'bp.typo'" in done.stderr


def test_has_rme_on_the_cluster_is_refused_by_releases_that_renamed_it() -> None:
    new = run("-C", "cluster0.has_rme=1", env={"FVP_STANDIN_VERSION": "11.27.19"})
    assert "unknown parameter 'cluster0.has_rme'" in new.stderr
    old = run("-C", "cluster0.has_rme=1", "--cyclelimit", "1000", env={"FVP_STANDIN_VERSION": "11.16.14"})
    assert old.returncode == 0, old.stderr


def test_cycle_limit_ends_the_simulation_with_statistics() -> None:
    done = run("--cyclelimit", "20000000", "--stat", "-C", "standin.agent=0")
    assert done.returncode == 0
    ports = re.findall(r"^terminal_(\d): Listening for serial connection on port (\d+)$", done.stdout, re.M)
    assert [n for n, _ in ports] == ["0", "1", "2", "3"]
    assert "cycle limit reached" in done.stdout
    assert "statistics" in done.stdout


def test_shutdown_tag_on_a_uart_ends_the_simulation() -> None:
    done = run("-C", "bp.pl011_uart1.shutdown_tag=SPSR", "-C", "standin.agent=0")
    assert done.returncode == 0
    assert "bp.pl011_uart1: shutdown tag" in done.stdout
