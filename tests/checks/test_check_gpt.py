"""``check gpt`` on the model: every case holds, syndromes are judged strictly, broken EL3 is caught."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cca_hil.arch.esr import Esr, FaultStatus
from cca_hil.arch.gpt import GptFault, GptFaultKind
from cca_hil.checks.cases import run_check
from cca_hil.checks.gpt import gpt_sections, judge
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome
from cca_hil.targets.base import AccessResult, Fault

GPF_L1 = GptFault(GptFaultKind.GPF, 1)


def _run(*overrides: str) -> dict[str, Outcome]:
    target = build_target(load_profile("model", overrides))
    result = run_check(target, gpt_sections(target), command="check gpt")
    return {step.name: step.outcome for seq in result.sequences for step in seq.steps}


@pytest.mark.parametrize("routing", ["abort", "el3"])
def test_every_case_holds_on_the_model(routing: str) -> None:
    outcomes = _run(f"model.gpf_routing={routing}")
    assert len(outcomes) > 100
    assert set(outcomes.values()) == {Outcome.PASSED}


def test_cases_are_named_after_their_rules() -> None:
    names = list(_run())
    for rule in ("R_DQPWS", "R_CPDSB", "R_JFFHB", "R_PYTGX", "R_RNNHCF", "B4.3.5", "B4.3.6", "D9.5"):
        assert any(name.startswith(rule) for name in names), rule


def test_the_matrix_covers_every_pas_world_and_operation() -> None:
    names = [n for n in _run() if n.startswith("R_DQPWS")]
    # 5 PAS (secure, nonsecure, realm, root, any) × 9 (world, PAS) pairs × load/store.
    assert len(names) == 5 * 9 * 2


def test_an_el3_that_skips_its_tlbi_fails_the_transition_cases() -> None:
    outcomes = _run("model.el3_skip_tlbi=true")
    stale = outcomes["D9.5 no stale GPI after RMI_GRANULE_DELEGATE returns (TLBI RPALOS)"]
    assert stale in (Outcome.FAILED, Outcome.ERROR)


def _gpf(esr: Esr, *, far: int = 0x9000_0000) -> AccessResult:
    return AccessResult(fault=Fault(esr.ec, esr.value, far, gpf=True))


def test_judge_accepts_the_architectural_abort() -> None:
    verdict = judge(_gpf(Esr.data_abort(FaultStatus.GPF, same_el=True)), GPF_L1, write=False)
    assert verdict.passed and verdict.observed == "gpf"


def test_judge_rejects_a_wrong_fault_status_wnr_or_exception_class() -> None:
    wrong_fsc = judge(_gpf(Esr.data_abort(FaultStatus.GPF_WALK_L3, same_el=True)), GPF_L1, write=False)
    wrong_wnr = judge(_gpf(Esr.data_abort(FaultStatus.GPF, same_el=True)), GPF_L1, write=True)
    wrong_ec = judge(_gpf(Esr.data_abort(FaultStatus.GPF, same_el=False)), GPF_L1, write=False)
    assert not any(v.passed for v in (wrong_fsc, wrong_wnr, wrong_ec))
    assert "WnR" in wrong_wnr.message and "EC" in wrong_ec.message


def test_judge_checks_the_gpcsc_of_a_gpc_exception() -> None:
    walk_fault = GptFault(GptFaultKind.WALK, 0)
    assert judge(_gpf(Esr.gpc_exception(walk_fault)), walk_fault, write=False).passed
    assert not judge(_gpf(Esr.gpc_exception(GPF_L1)), walk_fault, write=False).passed
    assert not judge(_gpf(Esr.data_abort(FaultStatus.GPF, same_el=True)), walk_fault, write=False).passed


def test_judge_fails_an_access_that_completes_where_the_gpt_forbids_it() -> None:
    verdict = judge(AccessResult(value=0), GPF_L1, write=False)
    assert not verdict.passed and "completed" in verdict.message


def test_a_board_behind_the_agent_link_runs_the_ns_cases_and_skips_the_rest_with_reasons(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # tools/sim-board runs on "python3" from PATH: make that this interpreter.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with build_target(load_profile("board-sim"), run_dir=tmp_path) as target:
        result = run_check(target, gpt_sections(target), command="check gpt")
    steps = [step for seq in result.sequences for step in seq.steps]
    ran = [step for step in steps if step.outcome is Outcome.PASSED]
    skipped = [step for step in steps if step.outcome is Outcome.SKIPPED]
    assert ran and skipped and len(ran) + len(skipped) == len(steps)
    assert all(", nonsecure world," in step.name for step in ran if step.name.startswith("R_DQPWS"))
    assert any("from the realm world" in step.message for step in skipped)
    assert result.exit_code() == 0
