"""``cca-hil show realms | granules | gpt`` end to end, and the views behind them.

Commands run as real processes in a fresh directory (their own runs root);
the hardware path (RMI_RTT_READ_ENTRY walks) runs through the simulated
board's real agent link and is compared with the model's own state.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from cca_hil.cli import resolve_sequence, stop_before
from cca_hil.profiles import build_target, load_profile
from cca_hil.sequences import Runner, load_sequence
from cca_hil.svg import Run, pas_map_svg
from cca_hil.targets.model import ModelTarget
from cca_hil.views import (
    SOURCE_MODEL,
    SOURCE_WALK,
    GranuleRun,
    RttRun,
    merge_granules,
    model_realms,
    walked_realms,
)

TIMEOUT = 300
STANDIN = Path(__file__).resolve().parent.parent / "tools" / "fvp-standin"
SVG = "{http://www.w3.org/2000/svg}"
STOP = "data_destroy_0"
"""The first teardown step of realm-lifecycle: stopping before it leaves the realm built."""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory with no cca-hil environment overrides."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cca_hil ARGS`` in the current directory, output piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    env["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )


def ok(*args: str) -> str:
    """Run a command that must succeed; its stdout."""
    proc = cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def bad_input(*args: str) -> str:
    """Run a command that must be refused as bad input: exit 2, one line on stderr, no traceback."""
    proc = cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cca-hil: error: "), proc.stderr
    return lines[0]


def lifecycle_in_session(name: str) -> dict[str, Any]:
    """Run realm-lifecycle up to its teardown in session ``name``; the run's JSON document."""
    ok("run", "realm-lifecycle", "--stop-before", STOP, "--session", name, "--json", "run.json")
    result: dict[str, Any] = json.loads(Path("run.json").read_text())
    return result


def step_args(result: dict[str, Any], step: str) -> dict[str, Any]:
    """The arguments a step of the run was sent."""
    for sequence in result["sequences"]:
        for entry in sequence["steps"]:
            if entry["name"] == step:
                args: dict[str, Any] = entry["args"]
                return args
    raise AssertionError(f"no step {step} in the run")


def as_int(value: Any) -> int:
    return value if isinstance(value, int) else int(str(value), 0)


# -- show realms -----------------------------------------------------------------------------------


def test_show_realms_after_the_lifecycle_stopped_before_teardown_prints_the_rtt_tree(workdir: Path) -> None:
    result = lifecycle_in_session("demo")
    assert result["sequences"][0]["steps"][-1]["name"] == "data0_is_realm_pas"
    rd = as_int(step_args(result, "realm_create")["rd"])
    data0 = as_int(step_args(result, "data_create_measured")["data"])
    rtt3 = as_int(step_args(result, "rtt_create_l3")["rtt"])

    out = ok("show", "realms", "--session", "demo")
    assert f"source: {SOURCE_MODEL}" in out
    assert f"RD {rd:#x}, state active, VMID 1, sha256" in out
    assert "├── L0 0x0  table → RTT" in out
    assert f"L2 0x0  table → RTT {rtt3:#x}" in out
    assert f"L3 0x0  assigned ripas=ram → PA {data0:#x}" in out
    assert "L3 0x2000–0x200000 ×510  unassigned ripas=empty" in out
    assert "L0 0x8000000000  unassigned_ns" in out
    # One REC with its auxiliary granules, and the RIM (32 bytes of SHA-256).
    assert "ready    yes" in out
    rim_line = next(line for line in out.splitlines() if line.strip().startswith("RIM "))
    assert len(rim_line.split()[1]) == 64


def test_show_realms_json_matches_the_granules_the_run_used(workdir: Path) -> None:
    result = lifecycle_in_session("j")
    data = json.loads(ok("show", "realms", "--session", "j", "--json"))
    assert data["source"] == SOURCE_MODEL
    (realm,) = data["realms"]
    assert as_int(realm["rd"]) == as_int(step_args(result, "realm_create")["rd"])
    assert as_int(realm["rtt_base"]) == as_int(step_args(result, "realm_create")["params"]["rtt_base"])
    assert realm["ipa_width"] == 40 and realm["rtt_level_start"] == 0
    (rec,) = realm["recs"]
    assert as_int(rec["addr"]) == as_int(step_args(result, "rec_create")["rec"])

    def leaves(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for run in runs:
            found += leaves(run["children"]) if run["state"] == "table" else [run]
        return found

    assigned = [r for r in leaves(realm["rtt"]) if r["state"] == "assigned"]
    assert [(r["ipa"], as_int(r["addr"]), r["ripas"]) for r in assigned] == [
        ("0x0", as_int(step_args(result, "data_create_measured")["data"]), "ram"),
        ("0x1000", as_int(step_args(result, "data_create_unknown")["data"]), "ram"),
    ]
    # The leaves tile the whole IPA space without gaps.
    spans = sorted((as_int(r["ipa"]), as_int(r["top"])) for r in leaves(realm["rtt"]))
    assert spans[0][0] == 0 and spans[-1][1] == 1 << 40
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_show_realms_of_a_fresh_session_says_there_are_none(workdir: Path) -> None:
    out = ok("show", "realms", "--session", "empty")
    assert "a freshly booted model" in out and "no realms" in out
    assert not (workdir / "cca-hil-runs" / "sessions" / "empty.json").exists()


def test_show_follows_bench_rmi_calls_in_the_default_session(workdir: Path) -> None:
    ok("rmi", "granule-delegate", "0x90000000")
    data = json.loads(ok("show", "granules", "--range", "0x90000000+16K", "--json"))
    assert data["state_source"] == SOURCE_MODEL
    assert [(r["start"], r["granules"], r["state"], r["pas"]) for r in data["runs"]] == [
        ("0x90000000", 1, "delegated", "realm"),
        ("0x90001000", 3, "undelegated", "nonsecure"),
    ]


def test_walk_through_the_board_sim_agent_equals_the_model_state(tmp_path: Path, process_guard: str) -> None:
    """RMI_RTT_READ_ENTRY walks over the agent link find the tree the model holds (bar what RMI hides)."""
    sequence = stop_before(load_sequence(resolve_sequence("realm-lifecycle")), STOP)
    model = ModelTarget(profile=load_profile("model"))
    with model:
        Runner(model).run_all([sequence])
        expected = model_realms(model.machine.rmm)
    calls: list[int] = []
    with build_target(load_profile("board-sim"), run_dir=tmp_path) as board:
        run = Runner(board).run_all([sequence])
        assert run.exit_code() == 0
        walked = walked_realms(board, [expected.realms[0].rd], progress=calls.append)
    assert walked.source == SOURCE_WALK and "not visible" not in walked.note
    (mine,) = walked.realms
    (theirs,) = expected.realms
    assert mine.rtt == theirs.rtt
    assert (mine.ipa_width, mine.rtt_level_start) == (40, 0)
    assert mine.state is None and mine.recs is None and mine.rim is None
    # The starting level and IPA width probes, then 2 + 3 × 512 entries.
    assert calls[-1] >= 2 + 3 * 512


# -- show granules -------------------------------------------------------------------------------------


def test_show_granules_merges_runs_and_names_state_and_pas(workdir: Path) -> None:
    result = lifecycle_in_session("g")
    out = ok("show", "granules", "--session", "g", "--range", "0x90000000..0x90100000")
    assert "state from model state, PAS from model state (GPT)" in out
    data = json.loads(ok("show", "granules", "--session", "g", "--range", "0x90000000..0x90100000", "--json"))
    runs = data["runs"]
    assert runs[0]["start"] == "0x90000000" and runs[-1]["end"] == "0x90100000"
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(runs))
    assert all((a["state"], a["pas"]) != (b["state"], b["pas"]) for a, b in itertools.pairwise(runs))
    by_start = {as_int(r["start"]): r for r in runs}
    rd = as_int(step_args(result, "realm_create")["rd"])
    assert (by_start[rd]["state"], by_start[rd]["pas"], by_start[rd]["granules"]) == ("rd", "realm", 1)
    data0 = as_int(step_args(result, "data_create_measured")["data"])
    assert (by_start[data0]["state"], by_start[data0]["pas"]) == ("data", "realm")
    assert {r["state"] for r in runs} == {"rd", "rtt", "data", "rec", "rec_aux", "undelegated"}
    assert {r["pas"] for r in runs if r["state"] == "undelegated"} == {"nonsecure"}


def test_merge_granules_joins_only_equal_neighbours() -> None:
    runs = [
        GranuleRun(0x1000, 0x2000, "data", "realm"),
        GranuleRun(0x2000, 0x3000, "data", "realm"),
        GranuleRun(0x3000, 0x4000, "rtt", "realm"),
        GranuleRun(0x5000, 0x6000, "rtt", "realm"),
    ]
    assert merge_granules(runs) == (
        GranuleRun(0x1000, 0x3000, "data", "realm"),
        GranuleRun(0x3000, 0x4000, "rtt", "realm"),
        GranuleRun(0x5000, 0x6000, "rtt", "realm"),
    )


# -- show gpt --svg ------------------------------------------------------------------------------------------


def test_show_gpt_svg_draws_every_run_with_axis_labels_and_a_legend(workdir: Path) -> None:
    lifecycle_in_session("pic")
    out = ok("show", "gpt", "--session", "pic", "--svg", "out.svg")
    assert "wrote out.svg" in out and "source: model state" in out
    pas_map = json.loads(ok("show", "gpt", "--session", "pic", "--json"))
    runs = [(as_int(r["start"]), as_int(r["end"]), r["pas"]) for r in pas_map["regions"]]
    assert ("realm" in {p for _, _, p in runs}) and len(runs) > 10

    root = ET.parse(workdir / "out.svg").getroot()
    assert root.tag == f"{SVG}svg"
    rects = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "run"]
    drawn = [(as_int(r.get("data-start")), as_int(r.get("data-end")), r.get("data-pas")) for r in rects]
    assert drawn == runs
    # The rectangles tile the band left to right, every one at least a pixel wide.
    xs = [(float(r.get("x", "0")), float(r.get("width", "0"))) for r in rects]
    assert all(w >= 1 for _, w in xs)
    assert all(abs(a[0] + a[1] - b[0]) < 0.02 for a, b in itertools.pairwise(xs))
    # Axis labels: run boundaries only, the first and the last always.
    labels = [as_int(t.text) for t in root.iter(f"{SVG}text") if t.get("class") == "address"]
    boundaries = {s for s, _, _ in runs} | {runs[-1][1]}
    assert set(labels) <= boundaries
    assert labels[0] == runs[0][0] and labels[-1] == runs[-1][1]
    assert labels == sorted(labels)
    # The legend names each PAS present once, with its run count.
    legend = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "legend-label"]
    present = {p for _, _, p in runs}
    assert {line.split(":")[0] for line in legend} == present
    realm_runs = sum(1 for _, _, p in runs if p == "realm")
    assert f"realm: {realm_runs} runs" in " ".join(legend)


def test_svg_of_a_single_run_has_both_ends_labelled() -> None:
    text = pas_map_svg([Run(0, 1 << 30, "nonsecure")], title="one <run> & more")
    root = ET.fromstring(text)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "address"]
    assert labels == ["0x0", "0x40000000"]
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}title").text == "one <run> & more"  # type: ignore[union-attr]


# -- bad input: one line, exit 2 ---------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_2(workdir: Path, process_guard: str) -> None:
    assert "--range 0x90000000" in bad_input("show", "granules", "--range", "0x90000000")
    assert "not a number" in bad_input("show", "granules", "--range", "0x9000zz+4K")
    assert "empty" in bad_input("show", "granules", "--range", "0x2000..0x1000")
    assert "--rd" in bad_input("show", "realms", "--rd", "banana")
    assert "no realm has its RD at 0x90000000" in bad_input("show", "realms", "--rd", "0x90000000")
    line = bad_input("--profile", "board-sim", "show", "realms")
    assert "--rd ADDR" in line
    line = bad_input("run", "realm-lifecycle", "--stop-before", "nope")
    assert "has no step 'nope'" in line and "valid: version, delegate_rd" in line
    assert "keeps its state on the target" in bad_input(
        "--profile", "board-sim", "run", "realm-lifecycle", "--session", "x"
    )
    assert "bad session name" in bad_input("show", "realms", "--session", "../x")
    line = bad_input("run", "attestation", "--session", "att")
    assert "step 'read_rim' of 'attestation' makes the realm act" in line and "attestation.yaml:" in line
    assert not (workdir / "cca-hil-runs" / "sessions" / "att.json").exists()
    line = bad_input("--profile", "board-sim", "show", "gpt", "--session", "demo")
    assert "keeps its state on the target" in line and "(--session demo)" in line


def test_rtt_runs_know_their_extent() -> None:
    run = RttRun(level=3, ipa=0x2000, count=510, state="unassigned", ripas="empty")
    assert run.top == 0x200000 and run.entry_size == 0x1000
    big = dataclasses.replace(run, level=1, ipa=0x40000000, count=511)
    assert big.top == 0x8000000000


# -- an FVP keeps its state between commands: walk it from the command line ------------------------------


def test_show_realms_on_an_fvp_walks_the_tree_the_model_holds(workdir: Path, process_guard: str) -> None:
    """run … --stop-before on the FVP stand-in, then show realms --rd: the walked tree is the model's."""
    lifecycle_in_session("reference")
    model = json.loads(ok("show", "realms", "--session", "reference", "--json"))["realms"][0]
    firmware = workdir / "firmware"
    firmware.mkdir()
    (firmware / "bl1.bin").write_bytes(b"\0" * 4096)
    (firmware / "fip.bin").write_bytes(b"\0" * 4096)
    fvp = (
        "--profile",
        "fvp-base-rme",
        "--set",
        f"fvp.binary={STANDIN}",
        "--set",
        f"fvp.images_dir={firmware}",
        "--set",
        "fvp.iris=true",
    )
    ok(*fvp, "fvp", "start")
    try:
        ok(*fvp, "run", "realm-lifecycle", "--stop-before", STOP, "--no-compare")
        walked = json.loads(ok(*fvp, "show", "realms", "--rd", model["rd"], "--json"))
        gpt = json.loads(ok(*fvp, "show", "granules", "--range", "0x90000000+64K", "--json"))
    finally:
        ok(*fvp, "fvp", "stop")
    assert walked["source"] == SOURCE_WALK
    (realm,) = walked["realms"]
    assert realm["rtt"] == model["rtt"]
    assert (realm["state"], realm["vmid"], realm["rim"], realm["recs"]) == (None, None, None, None)
    assert gpt["pas_source"] == "the target's GPT" and gpt["state_source"] is None
    assert [(r["start"], r["pas"]) for r in gpt["runs"]] == [
        ("0x90000000", "realm"),
        ("0x90001000", "nonsecure"),
    ]
