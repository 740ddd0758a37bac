"""The command line end to end: typer's CliRunner in-process, real subprocesses for exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from cca_hil import __version__
from cca_hil.cli import app

PASSING = """\
sequence: delegate-basics
description: delegate and undelegate one granule
granules: [g]
steps:
  - rmi: granule_delegate
    args: {addr: g}
  - name: delegate-again
    rmi: granule_delegate
    args: {addr: g}
    expect: error_input
  - access: {op: read, addr: g}
    expect: gpf
  - rmi: granule_undelegate
    args: {addr: g}
"""

FAILING = """\
sequence: wrong-expectation
granules: [g]
steps:
  - rmi: granule_delegate
    args: {addr: g}
  - name: expects-success-wrongly
    rmi: granule_delegate
    args: {addr: g}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory with no cca-hil environment overrides."""
    monkeypatch.chdir(tmp_path)
    for name in ("CCA_HIL_RUNS", "CCA_HIL_SET", "CCA_HIL_FVP", "CCA_HIL_PROFILES", "CCA_HIL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pass.yaml").write_text(PASSING)
    (tmp_path / "fail.yaml").write_text(FAILING)
    return tmp_path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cca_hil`` in the current directory (a real process, real exit code)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


runner = CliRunner()


# -- global options ------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cca-hil {__version__}"


def test_help_lists_every_command_group() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "info",
        "profiles",
        "run",
        "rmi",
        "conformance",
        "measure",
        "token",
        "fvp",
        "probe",
        "load",
        "power",
    ):
        assert f" {command} " in result.stdout


# -- info ------------------------------------------------------------------------


def test_info_decodes_version_features_and_memory_map(workdir: Path) -> None:
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "RMI version 1.0" in out
    for field in ("S2SZ", "NUM_BPS", "HASH_SHA_256", "MAX_RECS_ORDER"):
        assert field in out
    assert "1023 RECs" in out
    assert "ns-dram1" in out and "nonsecure" in out and "realm" in out
    assert "0x90000000" in out  # the granule pool
    assert "platform.secure_granule" in out
    assert "gpt_read" in out


def test_info_json_carries_the_decoded_feature_fields(workdir: Path) -> None:
    result = runner.invoke(app, ["--set", "rmm.s2sz=44", "info", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rmi_version"] == {"status": "success", "lower": "1.0", "higher": "1.0"}
    assert data["features"]["S2SZ"] == 44
    regions = {r["name"]: r for r in data["regions"]}
    assert regions["ns-dram1"]["pas"] == "nonsecure"
    assert regions["rmm"]["current_pas"] == "realm"
    assert "rme" in data["capabilities"]


# -- profiles ------------------------------------------------------------------------


def test_profiles_list_shows_bundled_and_user_profiles_with_their_origin(workdir: Path) -> None:
    (workdir / "profiles").mkdir()
    (workdir / "profiles" / "bench.yaml").write_text(
        "name: bench\nkind: model\ndescription: my bench model\nmodel:\n  seed: 3\n"
    )
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "bundled" in lines["model"]
    assert "./profiles" in lines["bench"] and "my bench model" in lines["bench"]


def test_profiles_list_reports_a_broken_profile_without_failing(workdir: Path) -> None:
    (workdir / "profiles").mkdir()
    (workdir / "profiles" / "broken.yaml").write_text("name: broken\nkind: toaster\n")
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.stderr
    assert "invalid" in result.stdout and "toaster" in result.stdout
    assert "model-tfrmm" in result.stdout


def test_profiles_show_names_the_source_of_every_parameter(workdir: Path) -> None:
    result = runner.invoke(
        app, ["--set", "model.seed=7", "profiles", "show", "model"], env={"CCA_HIL_SET": "rmm.s2sz=44"}
    )
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "model.yaml" in rows["file:"]
    assert "0x7" not in rows["seed"] and " 7 " in rows["seed"] and "--set" in rows["seed"]
    assert " 44 " in rows["rmm.s2sz"] and "CCA_HIL_SET" in rows["rmm.s2sz"]
    assert "model.yaml:" in rows["rmm.quirks"]
    assert "target default" in rows["mec"]
    assert "CCA_HIL_FVP" in result.stdout


# -- run ------------------------------------------------------------------------


def test_run_of_a_passing_sequence_exits_0_and_fills_the_run_folder(workdir: Path) -> None:
    result = runner.invoke(app, ["--run-dir", "out", "run", "pass.yaml"])
    assert result.exit_code == 0, result.stderr
    assert "PASS" in result.stdout and "delegate-basics" in result.stdout
    events = [json.loads(line) for line in (workdir / "out" / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("step_finished") == 4
    document = json.loads((workdir / "out" / "result.json").read_text())
    assert document["outcome"] == "passed"
    assert document["exit_code"] == 0
    assert document["run_dir"] == "out"


def test_run_with_a_failed_expectation_exits_1_and_shows_what_differed(workdir: Path) -> None:
    result = runner.invoke(app, ["--run-dir", "out", "run", "pass.yaml", "fail.yaml"])
    assert result.exit_code == 1
    assert "wrong-expectation › expects-success-wrongly" in result.stdout
    assert "fail.yaml:6" in result.stdout
    assert "gran_state" in result.stdout


def test_run_writes_json_and_junit_that_parse_back(workdir: Path) -> None:
    result = runner.invoke(
        app, ["--run-dir", "out", "run", "pass.yaml", "fail.yaml", "--json", "r.json", "--junit", "r.xml"]
    )
    assert result.exit_code == 1
    document = json.loads((workdir / "r.json").read_text())
    assert document["schema"] == "cca-hil-result/1"
    assert [s["name"] for s in document["sequences"]] == ["delegate-basics", "wrong-expectation"]
    assert document["counts"]["failed"] == 1 and document["counts"]["passed"] == 5
    assert document == json.loads((workdir / "out" / "result.json").read_text())

    root = ET.parse(workdir / "r.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "1", "0")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["delegate-basics", "wrong-expectation"]
    cases = suites[1].findall("testcase")
    assert {c.get("classname") for c in cases} == {"wrong-expectation"}
    (failed,) = [c for c in cases if c.find("failure") is not None]
    assert failed.get("name") == "expects-success-wrongly"
    assert failed.get("line") == "6"
    failure = failed.find("failure")
    assert failure is not None
    assert "expected success" in failure.get("message", "")


def test_run_folder_defaults_to_a_timestamped_folder_under_cca_hil_runs(workdir: Path) -> None:
    result = runner.invoke(app, ["run", "pass.yaml"])
    assert result.exit_code == 0, result.stderr
    (folder,) = (workdir / "cca-hil-runs").iterdir()
    assert folder.name.endswith("Z-run")
    assert (folder / "events.jsonl").is_file() and (folder / "result.json").is_file()
    assert str(folder.relative_to(workdir)) in result.stdout


def test_runs_root_follows_cca_hil_runs(workdir: Path) -> None:
    result = runner.invoke(app, ["run", "pass.yaml"], env={"CCA_HIL_RUNS": str(workdir / "farm")})
    assert result.exit_code == 0, result.stderr
    assert len(list((workdir / "farm").glob("*-run/result.json"))) == 1
    assert not (workdir / "cca-hil-runs").exists()


def test_two_runs_in_the_same_instant_get_distinct_folders(workdir: Path) -> None:
    for _ in range(3):
        assert runner.invoke(app, ["run", "pass.yaml"]).exit_code == 0
    assert len(list((workdir / "cca-hil-runs").iterdir())) == 3


def test_quiet_prints_only_the_summary_line(workdir: Path) -> None:
    result = runner.invoke(app, ["-q", "--run-dir", "out", "run", "pass.yaml", "fail.yaml"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("run: 2 sequences, 6 steps: 5 passed, 1 failed") and "(exit 1)" in lines[0]


def test_verbose_prints_a_line_per_step(workdir: Path) -> None:
    result = runner.invoke(app, ["-v", "--run-dir", "out", "run", "pass.yaml"])
    assert result.exit_code == 0, result.stderr
    assert "delegate-again" in result.stdout
    assert "granule_undelegate" in result.stdout


def test_output_to_a_pipe_is_plain_text(workdir: Path) -> None:
    for args in (["run", "pass.yaml", "fail.yaml"], ["info"], ["rmi", "version"]):
        proc = cli(*args)
        assert proc.returncode in (0, 1), proc.stderr
        assert "\x1b[" not in proc.stdout


# -- exit codes in real processes ------------------------------------------------------------------------


def test_exit_codes_of_real_processes(workdir: Path) -> None:
    assert cli("run", "pass.yaml").returncode == 0
    assert cli("run", "fail.yaml").returncode == 1
    assert cli("run", "nothing-here.yaml").returncode == 2


def test_a_target_error_is_exit_3(workdir: Path) -> None:
    (workdir / "nopool.yaml").write_text("name: nopool\nkind: model\nmodel:\n  granule_pool: []\n")
    proc = cli("--profile", "./nopool.yaml", "run", "pass.yaml")
    assert proc.returncode == 3
    assert "granule pool" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = cli("--profile", "./nopool.yaml", "rmi", "realm-create", "0x90000000", "params.s2sz=40")
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cca-hil: error: ")
    assert "granule pool" in proc.stderr


def test_bundled_sequences_run_by_name(workdir: Path) -> None:
    result = runner.invoke(app, ["--run-dir", "out", "run", "realm-lifecycle"])
    assert result.exit_code == 0, result.stdout + result.stderr
    document = json.loads((workdir / "out" / "result.json").read_text())
    (sequence,) = document["sequences"]
    assert sequence["name"] == "realm-lifecycle"
    assert sequence["source"].endswith("realm-lifecycle.yaml")


def test_a_sequence_the_target_cannot_host_is_exit_3_and_logged(workdir: Path) -> None:
    (workdir / "nopool.yaml").write_text("name: nopool\nkind: model\nmodel:\n  granule_pool: []\n")
    result = runner.invoke(app, ["--profile", "./nopool.yaml", "--run-dir", "out", "run", "pass.yaml"])
    assert result.exit_code == 3
    events = [json.loads(line) for line in (workdir / "out" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "run_finished"
    assert events[-1]["exit_code"] == 3


def test_overrides_from_the_environment_are_blamed_on_the_environment(workdir: Path) -> None:
    result = runner.invoke(app, ["info"], env={"CCA_HIL_SET": "garbage"})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "cca-hil: error: bad override 'garbage': expected KEY=VALUE such as model.seed=7 (CCA_HIL_SET)"
    )


def first_line_then_hang_up(*args: str) -> tuple[str, int, str]:
    """Run cca-hil into a pipe, read one line and close the pipe (``| head -1``); line, exit code, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    with subprocess.Popen(
        [sys.executable, "-m", "cca_hil", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        code = proc.wait(timeout=120)
    return line, code, stderr


def test_a_reader_that_goes_away_does_not_change_the_run_or_its_exit_code(workdir: Path) -> None:
    # Hundreds of KiB of step lines, more than a pipe holds: the writer is still writing when we hang up.
    many = ["realm-lifecycle"] * 60
    for extra, expected in (([], 0), (["fail.yaml"], 1)):
        line, code, stderr = first_line_then_hang_up("-v", "--run-dir", "out", "run", *many, *extra)
        assert line.startswith("run on model")
        assert code == expected, stderr
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr
        document = json.loads((workdir / "out" / "result.json").read_text())
        assert document["counts"]["passed"] == 45 * 60 + len(extra)


def test_a_plain_json_printer_whose_reader_goes_away_exits_0(workdir: Path) -> None:
    from cca_hil.profiles import load_profile
    from cca_hil.session import Session

    with Session.open(
        name="default", root=workdir / "cca-hil-runs", profile=load_profile("model"), profile_arg="model"
    ) as session:
        # A history of about a MiB, more than a pipe holds: the writer is still writing when we hang up.
        for i in range(5000):
            session.target.smc(0xC400_0151, 0x9000_0000 + i * 0x1000)
    line, code, stderr = first_line_then_hang_up("rmi", "--history", "--json")
    assert line == "{\n"
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_no_compare_is_accepted_for_later_differential_runs(workdir: Path) -> None:
    result = runner.invoke(app, ["--run-dir", "out", "run", "pass.yaml", "--no-compare"])
    assert result.exit_code == 0, result.stderr


def test_profile_comes_from_cca_hil_profile_and_may_be_a_path(workdir: Path) -> None:
    (workdir / "tfrmm-like.yaml").write_text(
        "name: tfrmm-like\nkind: model\ndescription: quirky\nmodel:\n  rmm:\n    quirks: tf-rmm\n"
    )
    result = runner.invoke(app, ["info", "--json"], env={"CCA_HIL_PROFILE": "./tfrmm-like.yaml"})
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["target"] == "tfrmm-like"
    assert data["facts"]["RMM quirks"] == "tf-rmm"
    shown = runner.invoke(app, ["profiles", "show", "./tfrmm-like.yaml"])
    assert shown.exit_code == 0, shown.stderr
    assert "rmm.quirks" in shown.stdout and "tfrmm-like.yaml:6" in shown.stdout


# -- conformance ---------------------------------------------------------------------------------------


def test_conformance_passes_on_the_model_and_writes_json_and_junit(workdir: Path) -> None:
    result = runner.invoke(
        app, ["-q", "--run-dir", "out", "conformance", "--json", "c.json", "--junit", "c.xml"]
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("conformance: ")
    document = json.loads((workdir / "c.json").read_text())
    assert document["command"] == "conformance"
    commands = {
        s["source"].rsplit("/", 1)[-1].split("__")[0].removesuffix(".yaml") for s in document["sequences"]
    }
    assert {"granule_delegate", "realm_create", "rtt_create", "data_create"} <= commands
    root = ET.parse(workdir / "c.xml").getroot()
    assert root.get("failures") == "0" and int(root.get("tests", "0")) == sum(document["counts"].values())
    assert (workdir / "out" / "result.json").is_file()


def test_conformance_only_runs_the_named_commands(workdir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "--run-dir",
            "out",
            "conformance",
            "--only",
            "granule-delegate,granule_undelegate",
            "--only",
            "version",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    document = json.loads((workdir / "out" / "result.json").read_text())
    sources = sorted(Path(s["source"]).stem for s in document["sequences"])
    assert sources == ["granule_delegate", "granule_undelegate", "version"]


def test_conformance_only_of_an_unknown_command_is_bad_input(workdir: Path) -> None:
    result = runner.invoke(app, ["conformance", "--only", "granule-frobnicate"])
    assert result.exit_code == 2
    assert result.stderr.startswith("cca-hil: error: no RMI command 'granule_frobnicate'")
    assert "(--only)" in result.stderr and "granule_delegate" in result.stderr
    assert len(result.stderr.splitlines()) == 1
