"""Bad input is exit 2 and one line on stderr, never a traceback (DESIGN.md "Results and exit codes")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cca_hil.cli import app

SEQUENCE_FILES = {
    "yaml-syntax.yaml": "sequence: x\nsteps: [\n  - rmi: version\n",
    "unknown-granule.yaml": (
        "sequence: x\ngranules: [g]\nsteps:\n  - rmi: granule_delegate\n    args: {addr: nosuch}\n"
    ),
    "duplicate-step.yaml": (
        "sequence: x\ngranules: [g]\nsteps:\n"
        "  - name: a\n    rmi: granule_delegate\n    args: {addr: g}\n"
        "  - name: a\n    rmi: granule_undelegate\n    args: {addr: g}\n"
    ),
    "unknown-command.yaml": "sequence: x\nsteps:\n  - rmi: granule_frobnicate\n",
    "ok.yaml": "sequence: ok\nsteps:\n  - rmi: version\n    args: {req: 0x10000}\n",
}

# (case id, arguments, words the one line must contain)
BAD_INPUT = [
    ("unknown-command", ["frobnicate"], ["no such command 'frobnicate'", "valid: ", "rmi"]),
    ("unknown-subcommand", ["profiles", "frob"], ["no such command 'frob'", "list, show"]),
    ("unknown-option", ["info", "--frob"], ["no such option: --frob", "--json"]),
    ("unknown-global-option", ["--frob", "info"], ["no such option: --frob", "--profile"]),
    ("missing-argument", ["run"], ["missing argument"]),
    ("option-needs-value", ["info", "--run-dir"], ["no such option"]),
    ("unknown-rmi-command", ["rmi", "frobnicate"], ["unknown RMI command 'frobnicate'", "granule-delegate"]),
    ("unknown-rmi-argument", ["rmi", "granule-delegate", "foo=1"], ["has no input 'foo'", "valid: addr"]),
    ("too-many-rmi-arguments", ["rmi", "granule-delegate", "0x1000", "0x2000"], ["too many arguments"]),
    ("unknown-rmi-option", ["rmi", "version", "--frob"], ["unknown option '--frob'", "--session"]),
    ("misspelt-rmi-option-first", ["rmi", "--sesion=x", "version"], ["unknown option '--sesion'"]),
    ("bad-value-type", ["rmi", "granule-delegate", "lots"], ["cannot read 'lots' as a number"]),
    ("bad-structure-field", ["rmi", "realm-create", "0x90000000", "params.colour=1"], ["no field 'colour'"]),
    ("bad-enum-name", ["rmi", "realm-create", "0", "params.hash_algo=md5"], ["cannot read 'md5'", "sha256"]),
    ("yaml-syntax-error", ["run", "yaml-syntax.yaml"], ["YAML syntax error", "yaml-syntax.yaml:3"]),
    ("missing-file", ["run", "missing.yaml"], ["no such sequence file", "missing.yaml"]),
    ("directory-not-file", ["run", "./"], ["is a directory"]),
    ("unknown-sequence-name", ["run", "no-such-sequence"], ["unknown sequence 'no-such-sequence'"]),
    (
        "unknown-granule-name",
        ["run", "unknown-granule.yaml"],
        ["unknown name 'nosuch'", "unknown-granule.yaml:5"],
    ),
    (
        "duplicate-step-name",
        ["run", "duplicate-step.yaml"],
        ["duplicate step name 'a'", "duplicate-step.yaml:7"],
    ),
    ("unknown-sequence-command", ["run", "unknown-command.yaml"], ["granule_frobnicate"]),
    ("unknown-profile", ["--profile", "bogus", "info"], ["unknown profile 'bogus'", "model-tfrmm"]),
    ("missing-profile-file", ["--profile", "./none.yaml", "info"], ["no such profile file"]),
    ("unknown-profile-shown", ["profiles", "show", "bogus"], ["unknown profile 'bogus'"]),
    ("bad-override", ["--set", "garbage", "info"], ["bad override 'garbage'", "--set"]),
    ("override-of-wrong-type", ["--set", "model.seed=lots", "info"], ["model.seed must be int"]),
    ("override-of-unknown-key", ["--set", "model.colour=1", "info"], ["unknown key 'model.colour'"]),
    ("verbose-and-quiet", ["-v", "-q", "info"], ["exclude each other"]),
    ("bad-session-name", ["rmi", "--session", "../up", "version"], ["bad session name"]),
    ("rmi-without-command", ["rmi"], ["missing RMI command"]),
    ("json-into-a-directory", ["run", "ok.yaml", "--json", "."], ["is a directory", "--json ."]),
    ("junit-under-a-file", ["run", "ok.yaml", "--junit", "ok.yaml/x.xml"], ["is not a directory", "--junit"]),
    (
        "run-dir-is-a-file",
        ["--run-dir", "ok.yaml", "run", "ok.yaml"],
        ["not a directory", "--run-dir ok.yaml"],
    ),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory holding the bad sequence files, no cca-hil environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("CCA_HIL_RUNS", "CCA_HIL_SET", "CCA_HIL_FVP", "CCA_HIL_PROFILES", "CCA_HIL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, text in SEQUENCE_FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _assert_one_clear_line(stderr: str, words: list[str]) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith("cca-hil: error: ")
    for word in words:
        assert word in line


@pytest.mark.parametrize(("case", "args", "words"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_exit_2_with_one_line_in_process(
    workdir: Path, case: str, args: list[str], words: list[str]
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (case, result.stdout, result.stderr)
    _assert_one_clear_line(result.stderr, words)
    assert not (workdir / "cca-hil-runs").exists() or not any(
        p.name.endswith("-run") for p in (workdir / "cca-hil-runs").iterdir()
    ), "bad input must be refused before a run folder is made"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


IN_A_PROCESS = [
    c
    for c in BAD_INPUT
    if c[0]
    in {
        "unknown-command",
        "unknown-option",
        "missing-argument",
        "yaml-syntax-error",
        "missing-file",
        "unknown-granule-name",
        "duplicate-step-name",
        "unknown-profile",
        "bad-value-type",
        "unknown-rmi-argument",
    }
]


@pytest.mark.parametrize(("case", "args", "words"), IN_A_PROCESS, ids=[c[0] for c in IN_A_PROCESS])
def test_bad_input_is_exit_2_with_one_line_in_a_real_process(
    workdir: Path, case: str, args: list[str], words: list[str]
) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    _assert_one_clear_line(proc.stderr, words)


def test_a_bad_sequence_among_good_ones_runs_nothing(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["run", "ok.yaml", "duplicate-step.yaml"])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_verbose_twice_adds_the_traceback_of_an_input_error(workdir: Path) -> None:
    proc = _cli("-vv", "run", "missing.yaml")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("cca-hil: error: no such sequence file")


def test_bare_group_shows_its_help_and_exits_2(workdir: Path) -> None:
    proc = _cli("profiles")
    assert proc.returncode == 2
    assert "list" in proc.stdout and "show" in proc.stdout
    assert "Traceback" not in proc.stderr
