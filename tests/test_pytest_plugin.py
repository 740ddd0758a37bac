"""The pytest plugin, driven as users drive it: real ``pytest`` processes on example tests and sequences."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "test_realm.py"
BUNDLED = sorted((REPO / "cca_hil" / "data" / "sequences").glob("*.yaml"))
PYTEST = Path(sys.executable).parent / "pytest"
"""The console script of this environment (the plugin is loaded through its entry point)."""
WAIT = 600.0


@pytest.fixture
def env(tmp_path: Path, process_guard: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment["CCA_HIL_LEASE_DIR"] = str(tmp_path / "leases")
    environment["CCA_HIL_RUNS"] = str(tmp_path / "runs")
    for variable in ("CCA_HIL_PROFILE", "CCA_HIL_LEASE_TIMEOUT", "PYTEST_ADDOPTS"):
        environment.pop(variable, None)
    return environment


def _pytest(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTEST), "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=WAIT,
        check=False,
    )


def _cases(junit: Path) -> dict[str, ET.Element]:
    return {case.attrib["name"]: case for case in ET.parse(junit).getroot().iter("testcase")}


def _outcome(case: ET.Element) -> str:
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


def _properties(case: ET.Element) -> dict[str, str]:
    return {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}


def test_example_passes_on_the_model_and_skips_mec_with_the_reason(
    env: dict[str, str], tmp_path: Path
) -> None:
    junit = tmp_path / "out.xml"
    result = _pytest(env, str(EXAMPLE), f"--junitxml={junit}", "-rs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = _cases(junit)
    assert all(name.endswith("[model]") for name in cases), sorted(cases)
    outcomes = {name: _outcome(case) for name, case in cases.items()}
    assert outcomes.pop("test_realms_get_their_own_mecid[model]") == "skipped"
    assert set(outcomes.values()) == {"passed"} and len(outcomes) == 5
    assert "target 'model' lacks mec" in result.stdout


def test_example_runs_once_per_profile_with_overrides(env: dict[str, str], tmp_path: Path) -> None:
    junit = tmp_path / "out.xml"
    result = _pytest(
        env,
        str(EXAMPLE),
        "--cca-profile=model",
        "--cca-profile=board-sim",
        "--cca-profile=model-mec",
        f"--junitxml={junit}",
        "-rs",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cases = _cases(junit)
    assert len(cases) == 18
    skipped = sorted(name for name, case in cases.items() if _outcome(case) == "skipped")
    assert skipped == ["test_realms_get_their_own_mecid[board-sim]", "test_realms_get_their_own_mecid[model]"]
    assert _outcome(cases["test_realms_get_their_own_mecid[model-mec]"]) == "passed"
    assert "target 'board-sim' lacks mec" in result.stdout
    # The board's console and link trace went into its tests' reports.
    props = _properties(cases["test_rmm_speaks_rmi_1_0[board-sim]"])
    assert Path(props["cca console.log"]).is_file() and Path(props["cca link.trace.log"]).is_file()
    assert "cca console.log" not in _properties(cases["test_rmm_speaks_rmi_1_0[model]"])


def test_cca_set_overrides_reach_the_target(env: dict[str, str], tmp_path: Path) -> None:
    result = _pytest(
        env, f"{EXAMPLE}::test_realms_get_their_own_mecid", "--cca-set=model.mec=true", "-rA", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_bundled_sequences_are_test_items_from_the_repo_root(env: dict[str, str], tmp_path: Path) -> None:
    junit = tmp_path / "out.xml"
    result = _pytest(
        env, "sequences/", "--cca-profile=model", "--cca-profile=board-sim", f"--junitxml={junit}", cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cases = _cases(junit)
    from cca_hil.sequences import load_sequence

    names = [load_sequence(path).name for path in BUNDLED]
    assert sorted(cases) == sorted(f"{n}[{p}]" for n in names for p in ("model", "board-sim"))
    assert {_outcome(case) for case in cases.values()} == {"passed"}
    lifecycle = load_sequence(REPO / "sequences" / "realm-lifecycle.yaml")
    steps = {
        k: v for k, v in _properties(cases["realm-lifecycle[board-sim]"]).items() if k.startswith("cca step")
    }
    assert list(steps) == [f"cca step {i} {s.name}" for i, s in enumerate(lifecycle.steps, start=1)]
    assert set(steps.values()) <= {"passed", "skipped"}


def test_a_failing_step_is_named_in_the_report(env: dict[str, str], tmp_path: Path) -> None:
    # No ini file here: every installed pytest plugin is active (labgrid's too, when installed).
    folder = tmp_path / "sequences"
    folder.mkdir()
    (folder / "twice.yaml").write_text(
        textwrap.dedent(
            """\
            sequence: delegate-twice
            requires: [rme]
            granules: [g]
            steps:
              - name: first
                rmi: granule_delegate
                args: {addr: g}
              - name: second_wrongly_expected_to_succeed
                rmi: granule_delegate
                args: {addr: g}
              - name: give_back
                rmi: granule_undelegate
                args: {addr: g}
            """
        )
    )
    junit = tmp_path / "out.xml"
    runs = tmp_path / "kept"
    options = (f"--junitxml={junit}", "-o", "junit_logging=log", f"--cca-run-dir={runs}")
    result = _pytest(env, "sequences", *options, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    [kept] = runs.iterdir()  # the item's run folder, kept where asked
    assert '"outcome":"failed"' in (kept / "events.jsonl").read_text()
    assert "twice.yaml:8: status error_input index 0 (gran_state), expected success" in result.stdout
    assert "failed   second_wrongly_expected_to_succeed" in result.stdout
    case = _cases(junit)["delegate-twice[model]"]
    failure = case.find("failure")
    assert failure is not None and "second_wrongly_expected_to_succeed" in (failure.text or "")
    assert _properties(case)["cca step 2 second_wrongly_expected_to_succeed"] == "failed"
    out = case.find("system-out")
    assert out is not None and "FAIL     second_wrongly_expected_to_succeed" in (out.text or "")


def test_only_sequence_documents_in_sequences_folders_are_collected(
    env: dict[str, str], tmp_path: Path
) -> None:
    bundled = BUNDLED[0]
    (tmp_path / "data").mkdir()
    shutil.copy(bundled, tmp_path / "data" / bundled.name)  # a sequence, but not in a sequences folder
    (tmp_path / "sequences").mkdir()
    shutil.copy(REPO / "profiles" / "model.yaml", tmp_path / "sequences" / "model.yaml")  # not a sequence
    shutil.copy(bundled, tmp_path / "sequences" / bundled.name)
    result = _pytest(env, "--collect-only", "-q", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected == [f"sequences/{bundled.name}::{bundled.stem}[model]"]
    # Named on the command line, a sequence file is collected wherever it is.
    named = _pytest(env, "--collect-only", "-q", f"data/{bundled.name}", cwd=tmp_path)
    assert f"data/{bundled.name}::{bundled.stem}[model]" in named.stdout
    # So is one matching an ini cca_sequences glob.
    (tmp_path / "pytest.ini").write_text("[pytest]\ncca_sequences = data/*.yaml\n")
    globbed = _pytest(env, "--collect-only", "-q", "data", cwd=tmp_path)
    assert f"data/{bundled.name}::{bundled.stem}[model]" in globbed.stdout


def test_a_broken_sequence_is_a_collection_error_naming_file_and_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "sequences").mkdir()
    (tmp_path / "sequences" / "typo.yaml").write_text(
        "sequence: typo\nsteps:\n  - rmi: granule_delegat\n    args: {addr: 0}\n"
    )
    result = _pytest(env, "sequences", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "typo.yaml:3" in result.stdout and "granule_delegat" in result.stdout
    assert "Traceback" not in result.stdout


def test_the_marker_skips_with_the_reason_and_refuses_unknown_names(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "test_caps.py").write_text(
        textwrap.dedent(
            """\
            import pytest

            @pytest.mark.cca_requires("rme", "mec")
            def test_needs_mec(cca_target):
                raise AssertionError("must not run on a target without mec")

            @pytest.mark.cca_requires("rme", "rmm-1.0")
            def test_needs_rme(rmi):
                assert rmi.version().ok

            def test_unrelated():
                assert True
            """
        )
    )
    result = _pytest(env, "-rs", "--strict-markers", "test_caps.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 1 skipped" in result.stdout
    assert "target 'model' lacks mec" in result.stdout
    assert "test_unrelated[" not in result.stdout
    (tmp_path / "test_caps.py").write_text(
        "import pytest\n\n@pytest.mark.cca_requires('warp_drive')\ndef test_x(cca_target):\n    pass\n"
    )
    bad = _pytest(env, "test_caps.py", cwd=tmp_path)
    assert bad.returncode == 4
    assert "unknown capability 'warp_drive'" in bad.stderr and "realm_exec" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_bad_profile_is_one_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = _pytest(env, "--cca-profile", "no-such-board", str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 4
    assert "--cca-profile no-such-board: unknown profile 'no-such-board'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_target_leased_by_someone_else_errors_the_test_naming_the_owner(
    env: dict[str, str], tmp_path: Path
) -> None:
    profile = tmp_path / "shared-model.yaml"
    profile.write_text("name: shared-model\nkind: model\nlease: {key: bench-model}\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom cca_hil.lease import LeaseStore\n"
            "with LeaseStore().acquire('bench-model', command='holder'):\n"
            "    print('held', flush=True)\n    sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = _pytest(env, f"--cca-profile={profile}", f"{EXAMPLE}::test_rmm_speaks_rmi_1_0", cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 error" in result.stdout
        assert "cannot open target 'shared-model': target 'bench-model' is leased by" in result.stdout
        assert f"pid {holder.pid}" in result.stdout and "Traceback" not in result.stdout
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()  # the holder gives the lease back
        holder.wait(timeout=WAIT)
        holder.stdout.close()
    again = _pytest(env, f"--cca-profile={profile}", f"{EXAMPLE}::test_rmm_speaks_rmi_1_0", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
