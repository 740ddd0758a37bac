"""Differential runs: a shadow model predicts every step of a board-sim run (docs/differential.md).

The boards here are real ``cca_hil.tools.sim_board`` processes on a local TCP port
(profile ``board-sim``): the host side talks to them through the agent link exactly
as to a farm board, and the shadow model is built from what the board reports.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from cca_hil.cli import app
from cca_hil.errors import EXIT_FAILED, EXIT_OK, EXIT_TARGET
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome
from cca_hil.sequences import Runner, load_sequence, load_sequence_text
from cca_hil.shadow import AbiMismatch, granule_view, read_rmm_facts, shadow_profile
from cca_hil.targets.model import ModelTarget

FAULT = "rmm.fault={command: granule_delegate, condition: gran_state, status: error_rec}"
FAULTY_BOARD = f'serial.launch=[python, -m, cca_hil.tools.sim_board, --tcp, --set, "{FAULT}"]'

DELEGATE_TWICE = """\
sequence: delegate-twice
granules: [g, h]
steps:
  - rmi: granule_delegate
    args: {addr: g}
  - name: again
    rmi: granule_delegate
    args: {addr: g}
    expect: error_input
  - rmi: granule_delegate
    args: {addr: h}
  - rmi: granule_undelegate
    args: {addr: h}
  - rmi: granule_undelegate
    args: {addr: g}
"""

cli = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory with no cca-hil environment overrides."""
    monkeypatch.chdir(tmp_path)
    for name in ("CCA_HIL_RUNS", "CCA_HIL_SET", "CCA_HIL_FVP", "CCA_HIL_PROFILES", "CCA_HIL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "twice.yaml").write_text(DELEGATE_TWICE)
    return tmp_path


# -- a faithful board: zero divergences ---------------------------------------------------------------


# (`cca-hil check shadow` runs the whole suite and the bundled sequences on board-sim with the
# shadow: tests/test_check_shadow.py holds it to zero divergences.)


# -- the fault switch: exactly one divergence, a reproducer that reproduces it -----------------------


def test_faulty_board_diverges_once_with_reproducer_and_exit_1(workdir: Path) -> None:
    args = ["--profile", "board-sim", "--set", FAULTY_BOARD, "--run-dir", "out"]
    result = cli.invoke(app, [*args, "run", "twice.yaml", "--json", "r.json", "--junit", "r.xml"])
    assert result.exit_code == EXIT_FAILED, result.output
    assert "DIVERGED" in result.output
    assert "X0=0x3*" in result.output and "X0=0x1*" in result.output
    doc = json.loads((workdir / "r.json").read_text())
    steps = doc["sequences"][0]["steps"]
    assert [s["outcome"] for s in steps] == ["passed", "diverged", "passed", "passed", "passed"]
    again = steps[1]
    assert again["matched"] is False and again["status"] == "error_rec"
    assert again["predicted"]["status"] == "error_input" and again["predicted"]["registers"][0] == "0x1"
    # Both: the target missed its expect (error_input) and departed from the model; diverged wins.
    assert "diverged from the model" in again["message"] and "failed its expect" in again["message"]
    assert all(s["matched"] is True for i, s in enumerate(steps) if i != 1)
    failures = ET.parse(workdir / "r.xml").getroot().iter("failure")
    assert [f.get("type") for f in failures] == ["diverged"]

    evidence = json.loads((workdir / "out" / "divergence-1.json").read_text())
    assert evidence["step"] == {"name": "again", "line": 6, "position": 2}
    assert evidence["target"]["status"] == "error_rec" and evidence["model"]["status"] == "error_input"
    granule = evidence["model_granules_after"][0]
    assert granule["state"] == "delegated" and granule["pas"] == "realm"
    assert int(granule["pa"], 0) == int(evidence["sent"]["addr"])
    assert not (workdir / "out" / "divergence-2.yaml").exists()

    reproducer = load_sequence(workdir / "out" / "divergence-1.yaml")
    assert [s.name for s in reproducer.steps] == ["granule_delegate#1", "again"]
    assert reproducer.steps[1].expect.status == "error_rec"
    again_run = cli.invoke(app, [*args[:-1], "out2", "run", "out/divergence-1.yaml"])
    assert again_run.exit_code == EXIT_FAILED, again_run.output
    assert "1 diverged" in again_run.output
    # The reproducer carries the board's answers as expectations: on the model it fails instead.
    on_model = cli.invoke(app, ["--run-dir", "out3", "run", "out/divergence-1.yaml"])
    assert on_model.exit_code == EXIT_FAILED and "1 failed" in on_model.output


def test_no_compare_and_stop_on_divergence(workdir: Path) -> None:
    args = ["--profile", "board-sim", "--set", FAULTY_BOARD]
    off = cli.invoke(app, [*args, "--run-dir", "a", "run", "twice.yaml", "--no-compare", "--json", "a.json"])
    assert off.exit_code == EXIT_FAILED  # only the expect fails: no model, no divergence
    steps = json.loads((workdir / "a.json").read_text())["sequences"][0]["steps"]
    assert [s["outcome"] for s in steps][1] == "failed" and all(s["matched"] is None for s in steps)
    stop = cli.invoke(
        app,
        [
            *args,
            "--run-dir",
            "b",
            "run",
            "twice.yaml",
            "twice.yaml",
            "--stop-on-divergence",
            "--json",
            "b.json",
        ],
    )
    doc = json.loads((workdir / "b.json").read_text())
    assert stop.exit_code == EXIT_FAILED
    assert len(doc["sequences"]) == 1 and len(doc["sequences"][0]["steps"]) == 2


# -- compat: the shadow's §12 rows -------------------------------------------------------------------

ROW6 = """\
sequence: init-ripas-unaligned-base
granules: [rd, rtt0, rtt1, rtt2, rtt3]
steps:
  - {rmi: granule_delegate, args: {addr: rd}}
  - {rmi: granule_delegate, args: {addr: rtt0}}
  - {rmi: realm_create, args: {rd: rd, params: {rtt_base: rtt0}}}
  - name: unaligned
    rmi: rtt_init_ripas
    args: {rd: rd, base: 0x800, top: 0x1000}
    expect: {status: error_rtt, index: 0}
"""


@pytest.mark.parametrize(
    ("overrides", "diverged"),
    [
        ([], False),  # board and shadow both answer the spec (#6: RTT error at the walk level)
        (["model.compat=tf-rmm-1.0"], True),  # shadow answers TF-RMM's INPUT for row 6
        (["model.compat=tf-rmm-1.0", "model.quirk_rows=[1, 5]"], False),  # row 6 switched back off
    ],
)
def test_compat_row_6_in_the_shadow(tmp_path: Path, overrides: list[str], diverged: bool) -> None:
    with build_target(load_profile("board-sim", overrides), run_dir=tmp_path) as target:
        result = Runner(target, compare=True).run(load_sequence_text(ROW6))
    step = result.steps[-1]
    assert step.status == "error_rtt"
    assert (step.outcome is Outcome.DIVERGED) is diverged
    assert step.predicted is not None
    assert step.predicted["status"] == ("error_input" if diverged else "error_rtt")


@pytest.mark.parametrize(
    ("rmm", "rows"),
    [
        ({"quirks": "spec"}, frozenset()),
        ({"quirks": "tf-rmm"}, frozenset({1, 5, 6, 8, 9, 12, 13, 17, 19, 22})),
        ({"quirks": "tf-rmm", "quirk_rows": [19]}, frozenset({19})),
        ({"quirks": "spec", "quirk_rows": [1, 6]}, frozenset({1, 6})),
    ],
)
def test_quirk_rows_select_rows(rmm: dict[str, object], rows: frozenset[int]) -> None:
    overrides = [f"rmm.{k}={v}" for k, v in rmm.items()]
    target = build_target(load_profile("model", overrides))
    assert isinstance(target, ModelTarget)
    machine = target.machine
    assert {r for r in range(1, 23) if machine.rmm.quirk(r)} == rows
    # Row 19: TF-RMM leaves the caller's X4 in place where the command has no X4 output.
    x4 = target.smc(0xC400_0151, 0x1, 0, 0, 0xABC)[4]
    assert x4 == (0xABC if 19 in rows else 0)


def test_model_compat_maps_to_tf_rmm_and_unknown_rows_are_refused() -> None:
    target = build_target(load_profile("model", ["model.compat=tf-rmm-1.0"]))
    assert isinstance(target, ModelTarget) and target.machine.rmm.quirk(6)
    from cca_hil.errors import ProfileError

    with pytest.raises(ProfileError, match="not a switchable"):
        build_target(load_profile("model", ["rmm.quirk_rows=[3]"]))
    with pytest.raises(ProfileError, match=r"model\.compat"):
        build_target(load_profile("model", ["model.compat=tf-rmm-9"]))


def test_fvp_shadow_defaults_to_tf_rmm_and_model_facts_are_copied() -> None:
    model = build_target(load_profile("model", ["rmm.sve=true", "rmm.sve_vl=3", "rmm.num_bps=2"]))
    assert isinstance(model, ModelTarget)
    fvp = build_target(load_profile("fvp-base-rme"))
    facts = read_rmm_facts(model)
    profile = shadow_profile(fvp, model.info(), facts)
    assert profile.params["compat"] == "tf-rmm-1.0"
    assert profile.params["rmm"]["sve"] is True and profile.params["rmm"]["sve_vl"] == 3
    assert profile.params["rmm"]["num_bps"] == 2
    board = build_target(load_profile("board-sim"))
    assert shadow_profile(board, model.info(), facts).params["compat"] == "spec"


# -- version awareness -------------------------------------------------------------------------------

VERSION_SEQ = """\
sequence: needs-{req}
requires: [{req}]
steps:
  - rmi: version
    args: {{req: 0x10000}}
    expect: {{outputs: {{lower: 0x10000}}}}
"""


@pytest.mark.parametrize(
    ("req", "overrides", "skipped"),
    [
        ("rmm-1.0", [], False),
        ("sve", [], True),
        ("sve", ["rmm.sve=true"], False),
        ("lpa2", [], True),
        ("pmu", ["rmm.pmu=false"], True),
        ("sha512", [], False),
        ("sha512", ["rmm.sha512=false"], True),
    ],
)
def test_requires_reads_the_rmm(req: str, overrides: list[str], skipped: bool) -> None:
    target = build_target(load_profile("model", overrides))
    result = Runner(target).run(load_sequence_text(VERSION_SEQ.format(req=req)))
    assert (result.outcome is Outcome.SKIPPED) is skipped
    if skipped:
        assert req in result.skipped_reason and "RMI 1.0" in result.skipped_reason


def test_an_rmm_2_0_is_one_clear_error() -> None:
    target = build_target(load_profile("model", ["rmm.version=0x20000"]))
    runner = Runner(target, compare=True)
    run = runner.run_all([load_sequence_text(DELEGATE_TWICE)])
    assert run.sequences == [] and run.exit_code() == EXIT_TARGET
    assert "RMI 2.0" in run.error and "implements RMI 1.0 only" in run.error
    with pytest.raises(AbiMismatch):
        runner.facts.check_abi("x")
    skipped = Runner(target).run(load_sequence_text(VERSION_SEQ.format(req="rmm-1.0")))
    assert "lacks rmm-1.0" in skipped.skipped_reason


def test_reproducer_text_is_a_sequence(tmp_path: Path) -> None:
    with build_target(load_profile("board-sim", [FAULTY_BOARD]), run_dir=tmp_path) as target:
        runner = Runner(target, compare=True)
        runner.run_all([load_sequence_text(textwrap.dedent(DELEGATE_TWICE))])
    assert runner.divergences == 1 and runner.reports == [tmp_path / "divergence-1.yaml"]
    text = runner.reports[0].read_text()
    assert text.startswith("# Reproducer of divergence 1: diverged from the model: status error_rec")
    assert load_sequence(runner.reports[0]).name == "delegate-twice-divergence-1"


def test_granule_view_names_state_pas_and_owner() -> None:
    text = """\
sequence: realm
granules: [rd, rtt0, rtt3, data, src, rec]
steps:
  - {rmi: granule_delegate, args: {addr: rd}}
  - {rmi: granule_delegate, args: {addr: rtt0}}
  - {rmi: realm_create, args: {rd: rd, params: {rtt_base: rtt0}}}
  - {rmi: granule_delegate, args: {addr: rec}}
  - {rmi: rec_create, args: {rd: rd, rec: rec, params: {}}}
"""
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    runner = Runner(target)
    result = runner.run(load_sequence_text(text))
    assert result.outcome is Outcome.PASSED
    rd = int(result.steps[0].args["addr"])
    rtt0 = int(result.steps[1].args["addr"])
    rec = int(result.steps[3].args["addr"])
    aux = int(result.steps[4].args["params"]["aux"][0], 0)
    view = {int(g["pa"], 0): g for g in granule_view(target, [rd, rtt0, rec, aux, rd + 0x10, 0x1000])}
    assert set(view) == {rd, rtt0, rec, aux}  # rd + 0x10 is rd's granule; 0x1000 is not delegable DRAM
    assert {pa: (g["state"], g["pas"]) for pa, g in view.items()} == {
        rd: ("rd", "realm"),
        rtt0: ("rtt", "realm"),
        rec: ("rec", "realm"),
        aux: ("rec_aux", "realm"),
    }
    assert {g["owner"] for g in view.values()} == {f"{rd:#x}"}


def test_compare_is_the_default_off_the_model_only(workdir: Path) -> None:
    board = cli.invoke(
        app,
        ["--profile", "board-sim", "--run-dir", "b", "conformance", "--only", "rtt_fold", "--json", "b.json"],
    )
    assert board.exit_code == EXIT_OK, board.output
    steps = [s for q in json.loads((workdir / "b.json").read_text())["sequences"] for s in q["steps"]]
    ran = [s for s in steps if s["outcome"] != "skipped"]
    assert ran and all(s["matched"] is True and s["predicted"] is not None for s in ran)
    model = cli.invoke(app, ["--run-dir", "m", "run", "twice.yaml", "--json", "m.json"])
    assert model.exit_code == EXIT_OK, model.output
    steps = json.loads((workdir / "m.json").read_text())["sequences"][0]["steps"]
    assert all(s["matched"] is None and s["predicted"] is None for s in steps)


def test_a_reproducer_carries_the_targets_outputs_and_replays_them(tmp_path: Path) -> None:
    import yaml

    from cca_hil.sequences import reproducer_document

    text = """\
sequence: outputs
granules: [rd, rtt0, rec, run]
steps:
  - {rmi: version, args: {req: 0x10000}}
  - {rmi: features, args: {index: 0}}
  - {rmi: granule_delegate, args: {addr: rd}}
  - {rmi: granule_delegate, args: {addr: rtt0}}
  - rmi: realm_create
    args: {rd: rd, params: {s2sz: 39, rtt_base: rtt0, rtt_level_start: 1, rtt_num_start: 1, vmid: 3}}
  - {rmi: rec_aux_count, args: {rd: rd}}
  - {name: read, rmi: rtt_read_entry, args: {rd: rd, ipa: 0x8000000000, level: 3}}
  - {name: walk, rmi: rtt_read_entry, args: {rd: rd, ipa: 0x0, level: 1}}
"""
    sequence = load_sequence_text(text)
    with build_target(load_profile("model")) as target:
        answers = Runner(target).run(sequence).steps
    document = reproducer_document(sequence, len(sequence.steps) - 1, answers, 1)
    by_name = {step.get("name", f"{step['rmi']}#{i}"): step for i, step in enumerate(document["steps"], 1)}
    # RMI_RTT_READ_ENTRY with an IPA beyond the realm's space: no outputs are defined for ERROR_INPUT
    assert by_name["read"]["expect"] == {"status": "error_input", "index": 0}
    assert by_name["walk"]["expect"]["outputs"] == {
        "walk_level": "0x1",
        "state": "unassigned",
        "desc": "0x0",
        "ripas": "empty",
    }
    assert by_name["rec_aux_count#6"]["expect"]["outputs"] == {"aux_count": "0x10"}
    assert document["steps"][0]["expect"]["outputs"] == {"lower": "0x10000", "higher": "0x10000"}
    path = tmp_path / "reproducer.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    with build_target(load_profile("model")) as target:
        replay = Runner(target).run(load_sequence(path))
    assert replay.outcome is Outcome.PASSED, [s.message for s in replay.steps if s.message]
    with build_target(load_profile("model", ["rmm.num_bps=2"])) as target:
        other = Runner(target).run(load_sequence(path))
    # a different feature register is caught by the replayed outputs
    assert [s.name for s in other.steps if s.outcome is Outcome.FAILED] == ["features#2"]


def test_an_fvp_running_tf_rmm_passes_the_suite_judged_by_its_rows_with_no_divergence(
    tmp_path: Path, process_guard: str
) -> None:
    # The FVP stand-in answers as TF-RMM (the RMM an FVP stack runs); an fvp profile's shadow and
    # the suite's compat: variants expect exactly that, so a compared run is clean.
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    images = tmp_path / "images"
    images.mkdir()
    for name in ("bl1.bin", "fip.bin"):
        (images / name).write_bytes(b"\0" * 64)
    env = {
        **os.environ,
        "CCA_HIL_FVP": str(root / "tools" / "fvp-standin"),
        "CCA_HIL_PROFILE": "fvp-base-rme",
        "CCA_HIL_SET": f"fvp.images_dir={images}",
        "COLUMNS": "200",
    }

    def cca_hil(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cca_hil", *args],
            check=False,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=600,
        )

    started = cca_hil("fvp", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        only = "realm_create,rtt_fold,rtt_init_ripas,rsi_psci_cpu_on"
        done = cca_hil("conformance", "--only", only, "--json", "out.json")
    finally:
        stopped = cca_hil("fvp", "stop")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert stopped.returncode == 0, stopped.stderr
    assert "4 cases judged by their tf-rmm-1.0 answer (rmm-abi.md §12 rows 1, 5, 6, 22)" in done.stdout
    result = json.loads((tmp_path / "out.json").read_text())
    steps = [step for sequence in result["sequences"] for step in sequence["steps"]]
    assert result["counts"]["diverged"] == 0 and result["counts"]["failed"] == 0
    assert all(step["matched"] for step in steps if step["outcome"] != "skipped")
