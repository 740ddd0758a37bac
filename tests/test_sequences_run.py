"""Running sequences on the model: verdicts, messages, saved values, host defaults, skips and errors."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence as Seq
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cca_hil import __version__
from cca_hil.arch.pas import Pas
from cca_hil.arch.structs import RecExit
from cca_hil.errors import EXIT_FAILED, EXIT_OK, EXIT_TARGET, TargetError, TransportError
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Events, Outcome, RunResult, SequenceResult, StepResult
from cca_hil.seqformat import Sequence
from cca_hil.sequences import RealmAction, Runner, load_sequence, load_sequence_text
from cca_hil.targets.base import Capability, Target
from cca_hil.targets.model import ModelTarget

DIRECTED = Path(__file__).parent / "data" / "tfrmm-1.0-directed"
BUNDLED = ("realm-lifecycle", "rtt-fold", "unprotected-map")

REALM_SETUP = """
  - rmi: granule_delegate
    args: {addr: rd}
  - rmi: granule_delegate
    args: {addr: rtt0}
  - rmi: realm_create
    args: {rd: rd, params: {rtt_base: rtt0}}
"""


def model(profile: str = "model") -> ModelTarget:
    target = build_target(load_profile(profile))
    assert isinstance(target, ModelTarget)
    return target


def seq(text: str, name: str = "seq.yaml") -> Sequence:
    return load_sequence_text(textwrap.dedent(text).lstrip("\n"), source=name)


def run(text: str, target: Target | None = None) -> SequenceResult:
    return Runner(target or model()).run(seq(text))


def with_realm(granules: str, steps: str) -> str:
    """A sequence that creates realm ``rd`` (RTT ``rtt0``) and then runs ``steps``."""
    extra = textwrap.indent(textwrap.dedent(steps).strip("\n"), "  ")
    return f"sequence: s\ngranules: [{granules}]\nsteps:{REALM_SETUP}{extra}\n"


def by_name(result: SequenceResult) -> dict[str, StepResult]:
    return {step.name: step for step in result.steps}


# -- whole files ---------------------------------------------------------------


@pytest.mark.parametrize("profile", ["model", "model-tfrmm"])
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sequence_passes_on_the_model(name: str, profile: str) -> None:
    path = Path(str(resources.files("cca_hil") / "data" / "sequences" / f"{name}.yaml"))
    result = Runner(model(profile)).run(load_sequence(path))
    failures = [f"{s.name}: {s.message}" for s in result.steps if s.outcome is not Outcome.PASSED]
    assert failures == []
    assert result.outcome is Outcome.PASSED


@pytest.mark.parametrize("path", sorted(DIRECTED.glob("*.yaml")), ids=lambda p: p.stem)
def test_directed_tf_rmm_file_passes_on_the_tf_rmm_model(path: Path) -> None:
    # Each file was recorded on a freshly booted RMM, so each gets a fresh model.
    result = Runner(model("model-tfrmm")).run(load_sequence(path))
    failures = [
        f"{s.name} (line {s.line}): {s.message}" for s in result.steps if s.outcome is not Outcome.PASSED
    ]
    assert failures == []


def test_a_wrong_expectation_in_a_bundled_sequence_fails_it() -> None:
    path = Path(str(resources.files("cca_hil") / "data" / "sequences" / "rtt-fold.yaml"))
    text = path.read_text().replace("expect: {outputs: {rtt: rtt3}}", "expect: {outputs: {rtt: rtt2}}")
    result = Runner(model()).run(load_sequence_text(text, source="rtt-fold.yaml"))
    failed = [s for s in result.steps if s.outcome is Outcome.FAILED]
    assert [s.name for s in failed] == ["fold_homogeneous_table"]
    assert failed[0].message.startswith("rtt 0x")
    assert failed[0].message.endswith("(rtt2)")


# -- step results ------------------------------------------------------------------


def test_step_result_carries_what_was_sent_returned_and_expected() -> None:
    target = model()
    result = run(
        """
        sequence: s
        granules: [g]
        steps:
          - rmi: granule_delegate
            args: {addr: g}
          - name: again
            rmi: granule_delegate
            args: {addr: g}
            expect: {status: error_input, index: 0}
            condition: gran_state
        """,
        target,
    )
    first, again = result.steps
    pa = first.args["addr"]
    assert target.gpt_pas(pa) is Pas.REALM
    assert (first.name, first.op, first.command, first.status, first.outcome) == (
        "granule_delegate#1",
        "rmi",
        "granule_delegate",
        "success",
        Outcome.PASSED,
    )
    assert first.registers[0] == 0
    assert first.expected == "success"
    assert first.line == 4
    assert again.args == {"addr": pa}
    assert (again.status, again.index, again.condition) == ("error_input", 0, "gran_state")
    assert again.expected == "{status: error_input, index: 0}"
    assert again.outcome is Outcome.PASSED
    assert again.line == 6
    assert all(step.duration >= 0 for step in result.steps)


def test_unexpected_status_says_what_came_back() -> None:
    result = run(
        """
        sequence: s
        granules: [g]
        steps:
          - rmi: granule_delegate
            args: {addr: g + 1}
        """
    )
    (step,) = result.steps
    assert step.outcome is Outcome.FAILED
    assert step.message == "status error_input index 0 (gran_align), expected success"
    assert result.outcome is Outcome.FAILED


def test_output_mismatch_names_the_output_and_both_values() -> None:
    result = run(
        """
        sequence: s
        steps:
          - rmi: version
            args: {req: 0x10000}
            expect: {outputs: {lower: 0x10000, higher: 0x20000}}
        """
    )
    assert result.steps[0].message == "higher 0x10000, expected 0x20000"
    assert result.steps[0].outputs == {"lower": 0x10000, "higher": 0x10000}


def test_enumerated_outputs_are_compared_and_shown_by_name() -> None:
    result = run(
        with_realm(
            "rd, rtt0",
            """
              - rmi: rtt_read_entry
                args: {rd: rd, ipa: 0, level: 0}
                expect: {outputs: {walk_level: 0, state: assigned, ripas: empty}}
            """,
        )
    )
    step = result.steps[-1]
    assert step.outputs["state"] == "unassigned"
    assert step.message == "state unassigned, expected assigned"


def test_condition_mismatch_fails_even_when_the_status_matches() -> None:
    result = run(
        """
        sequence: s
        granules: [g]
        steps:
          - rmi: granule_delegate
            args: {addr: g}
          - rmi: granule_delegate
            args: {addr: g}
            expect: error_input
            condition: gran_gpt
        """
    )
    assert result.steps[1].message == "condition gran_state, expected gran_gpt"


def test_expected_failure_of_a_succeeding_call_fails() -> None:
    result = run(
        """
        sequence: s
        granules: [g]
        steps:
          - rmi: granule_delegate
            args: {addr: g}
            expect: error_input
        """
    )
    assert result.steps[0].message == "status success, expected error_input"


# -- values ----------------------------------------------------------------------------


def test_saved_outputs_feed_later_steps() -> None:
    result = run(
        with_realm(
            "rd, rtt0, rtt1",
            """
              - rmi: granule_delegate
                args: {addr: rtt1}
              - rmi: rtt_create
                args: {rd: rd, rtt: rtt1, ipa: 0, level: 1}
              - rmi: rtt_read_entry
                args: {rd: rd, ipa: 0, level: 0}
                expect: {outputs: {state: table}}
                save: {table: desc}
              - rmi: rtt_destroy
                args: {rd: rd, ipa: 0, level: 1}
                expect: {outputs: {rtt: table}}
              - rmi: granule_undelegate
                args: {addr: table}
            """,
        )
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    assert result.steps[-1].args["addr"] == result.steps[4].args["rtt"]


def test_a_step_using_a_value_a_failed_step_did_not_save_is_skipped() -> None:
    result = run(
        """
        sequence: s
        granules: [rd]
        steps:
          - name: read
            rmi: rtt_read_entry
            args: {rd: rd, ipa: 0, level: 3}
            save: {entry: desc}
          - name: use
            rmi: granule_delegate
            args: {addr: entry}
        """
    )
    read, use = result.steps
    assert read.outcome is Outcome.FAILED
    assert use.outcome is Outcome.SKIPPED
    assert use.message.startswith("'entry' is not available: step 'read' did not produce it")


def test_platform_names_resolve_to_the_targets_values() -> None:
    target = model()
    result = run(
        """
        sequence: s
        steps:
          - rmi: granule_delegate
            args: {addr: platform.secure_granule}
            expect: error_input
            condition: gran_gpt
          - rmi: granule_delegate
            args: {addr: platform.non_memory}
            expect: error_input
            condition: gran_bound
          - check: pas
            args: {addr: platform.root_granule}
            expect: root
        """,
        target,
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    assert result.steps[1].args["addr"] == target.info().platform["non_memory"]


def test_named_granules_sit_at_distinct_64k_slots_of_the_pool() -> None:
    result = run(
        """
        sequence: s
        granules: [a, b]
        steps:
          - access: {op: write, addr: a + 0xf000, value: 1}
          - access: {op: read, addr: b}
        """
    )
    a = result.steps[0].args["addr"] - 0xF000
    b = result.steps[1].args["addr"]
    assert a % 0x10000 == 0
    assert b == a + 0x10000


# -- access, check, smc ----------------------------------------------------------------


def test_access_and_check_observe_delegation() -> None:
    result = run(
        """
        sequence: s
        granules: [g]
        steps:
          - access: {op: write, addr: g, value: 0x1234, size: 4}
          - access: {op: read, addr: g, size: 4}
            expect: {outputs: {value: 0x1234}}
          - rmi: granule_delegate
            args: {addr: g}
          - access: {op: read, addr: g}
            expect: gpf
          - check: pas
            args: {addr: g}
            expect: realm
          - access: {op: read, addr: g}
            expect: ok
        """
    )
    outcomes = [s.outcome for s in result.steps]
    assert outcomes == [Outcome.PASSED] * 5 + [Outcome.FAILED]
    assert result.steps[-1].message == "gpf, expected ok"
    assert result.steps[3].status == "gpf"


def test_smc_step_checks_registers_and_unknown_fids() -> None:
    result = run(
        """
        sequence: s
        steps:
          - smc: 0xc4000150
            args: [0x10000]
            expect: {outputs: {x1: 0x10000, x2: 0x10000}}
            save: {higher: x2}
          - smc: 0xc40001ff
            expect: not_supported
          - smc: 0xc4000150
            args: {x1: higher}
            expect: {outputs: {x0: 0}}
        """
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    assert result.steps[2].args == {"x1": 0x10000}


# -- host defaults for structures ------------------------------------------------------------


def test_realm_and_rec_params_take_host_defaults() -> None:
    target = model()
    result = run(
        """
        sequence: s
        granules: [rd, rec0, rec1]
        steps:
          - rmi: granule_delegate
            args: {addr: rd}
          - rmi: realm_create
            args: {rd: rd}
          - rmi: granule_delegate
            args: {addr: rec0}
          - rmi: rec_create
            args: {rd: rd, rec: rec0}
          - rmi: granule_delegate
            args: {addr: rec1}
          - rmi: rec_create
            args: {rd: rd, rec: rec1, params: {flags: not_runnable}}
        """,
        target,
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    params = result.steps[1].args["params"]
    assert params["vmid"] == "1"
    rtt_base = int(params["rtt_base"], 16)
    assert target.gpt_pas(rtt_base) is Pas.REALM
    rec0, rec1 = result.steps[3].args["params"], result.steps[5].args["params"]
    assert (rec0["mpidr"], rec1["mpidr"]) == ("0", "1")
    assert rec0["num_aux"] == "0x10"
    assert len(rec0["aux"]) == 16
    assert not set(rec0["aux"]) & set(rec1["aux"])


def test_aux_granules_of_a_failed_rec_create_are_reused() -> None:
    result = run(
        """
        sequence: s
        granules: [rd, rec0]
        steps:
          - rmi: granule_delegate
            args: {addr: rd}
          - rmi: realm_create
            args: {rd: rd}
          - rmi: rec_create
            args: {rd: rd, rec: rec0}
            expect: error_input
            condition: rec_state
          - rmi: granule_delegate
            args: {addr: rec0}
          - rmi: rec_create
            args: {rd: rd, rec: rec0}
        """
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    assert sorted(result.steps[2].args["params"]["aux"]) == sorted(result.steps[4].args["params"]["aux"])


def test_a_structure_given_as_a_value_is_passed_as_an_address() -> None:
    result = run(
        """
        sequence: s
        granules: [rd, pgran]
        steps:
          - rmi: granule_delegate
            args: {addr: rd}
          - rmi: realm_create
            args: {rd: rd, params: pgran + 1}
            expect: error_input
            condition: params_align
        """
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    step = result.steps[1]
    assert step.args["params_ptr"] % 0x10000 == 1


def test_data_create_source_contents_are_written_by_the_runner() -> None:
    target = model()
    result = run(
        with_realm(
            "rd, rtt0, rtt1, rtt2, rtt3, d",
            """
              - rmi: granule_delegate
                args: {addr: rtt1}
              - rmi: rtt_create
                args: {rd: rd, rtt: rtt1, ipa: 0, level: 1}
              - rmi: granule_delegate
                args: {addr: rtt2}
              - rmi: rtt_create
                args: {rd: rd, rtt: rtt2, ipa: 0, level: 2}
              - rmi: granule_delegate
                args: {addr: rtt3}
              - rmi: rtt_create
                args: {rd: rd, rtt: rtt3, ipa: 0, level: 3}
              - rmi: granule_delegate
                args: {addr: d}
              - rmi: data_create
                args: {rd: rd, data: d, ipa: 0, src: {bytes: "c0ffee", fill: 0x5a}, flags: measure}
            """,
        ),
        target,
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    src = result.steps[-1].args["src"]
    assert target.read(src, 5) == bytes.fromhex("c0ffee5a5a")


# -- realm execution ------------------------------------------------------------------------


ACTIVE_REALM = """
sequence: s
granules: [rd, rec0]
steps:
  - rmi: granule_delegate
    args: {addr: rd}
  - rmi: realm_create
    args: {rd: rd}
  - rmi: granule_delegate
    args: {addr: rec0}
  - rmi: rec_create
    args: {rd: rd, rec: rec0}
  - rmi: realm_activate
    args: {rd: rd}
"""


def test_rec_enter_without_realm_actions_runs_and_checks_the_exit() -> None:
    result = run(
        ACTIVE_REALM
        + """
  - name: enter
    rmi: rec_enter
    args: {rec: rec0, run: {flags: {trap_wfi: 1}}}
    expect: {exit: {exit_reason: irq}}
  - name: enter_expecting_host_call
    rmi: rec_enter
    args: {rec: rec0}
    expect: {exit: {exit_reason: host_call, imm: 0}}
"""
    )
    steps = by_name(result)
    assert steps["enter"].outcome is Outcome.PASSED
    assert steps["enter"].outputs["exit_reason"] == "irq"
    assert steps["enter"].args["run"]["flags"] == "4"
    assert steps["enter_expecting_host_call"].message == "exit exit_reason irq, expected host_call"


class _NoRealmModel(ModelTarget):
    """A model that, like a target without a realm payload, cannot run realms."""

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities - {Capability.REALM_EXEC}

    realm_enter = Target.realm_enter


def no_realm_model() -> ModelTarget:
    return _NoRealmModel(profile=load_profile("model"))


def test_realm_actions_and_rsi_steps_are_skipped_without_realm_execution() -> None:
    result = run(
        ACTIVE_REALM
        + """
  - name: enter
    rmi: rec_enter
    args: {rec: rec0}
    realm:
      - rsi: measurement_read
        args: {index: 0}
    expect: {exit: {exit_reason: host_call}}
  - name: rsi_version
    rsi: version
    rec: rec0
    args: {req: 0x10000}
    expect: {outputs: {lower: 0x10000}}
""",
        no_realm_model(),
    )
    steps = by_name(result)
    for name in ("enter", "rsi_version"):
        assert steps[name].outcome is Outcome.SKIPPED
        assert steps[name].message == "target 'model' does not provide 'realm_exec'"
    assert result.outcome is Outcome.PASSED


def test_missing_required_capability_skips_the_whole_sequence() -> None:
    result = run(
        "sequence: s\nrequires: [rme, realm_exec]\nsteps:\n  - rmi: version\n    args: {req: 0x10000}\n",
        no_realm_model(),
    )
    assert result.outcome is Outcome.SKIPPED
    assert result.skipped_reason == "target 'model' lacks realm_exec"
    assert result.steps == []


class _NoGptModel(ModelTarget):
    """A model that, like most boards, cannot read its GPT."""

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities - {Capability.GPT_READ}

    gpt_pas = Target.gpt_pas


def test_a_check_the_target_cannot_do_is_skipped_with_the_reason() -> None:
    target = _NoGptModel(profile=load_profile("model"))
    result = run(
        "sequence: s\nsteps:\n  - check: pas\n    args: {addr: 0x9000_0000}\n    expect: ns\n", target
    )
    assert result.steps[0].outcome is Outcome.SKIPPED
    assert result.steps[0].message == "target 'model' does not provide 'gpt_read'"


# -- errors and the run ----------------------------------------------------------------------


class _BrokenModel(ModelTarget):
    """A model behind a link that fails on one function identifier (a stand-in for a broken agent)."""

    broken_fid = 0xC400_0152
    error: type[TargetError] = TargetError

    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        if fid == self.broken_fid:
            raise self.error(f"agent did not answer SMC {fid:#x}")
        return super().smc(fid, *args)


class _DeadLinkModel(_BrokenModel):
    error = TransportError


UNDELEGATE = """
sequence: {name}
granules: [g]
steps:
  - rmi: granule_delegate
    args: {{addr: g}}
  - rmi: granule_undelegate
    args: {{addr: g}}
  - rmi: granule_delegate
    args: {{addr: g}}
"""

VERSION = "sequence: fine\nsteps:\n  - rmi: version\n    args: {req: 0x10000}\n"


def test_target_error_ends_the_sequence_with_error_and_the_run_goes_on() -> None:
    runner = Runner(_BrokenModel(profile=load_profile("model")))
    result = runner.run_all([seq(UNDELEGATE.format(name="broken")), seq(VERSION)])
    broken, fine = result.sequences
    assert [s.outcome for s in broken.steps] == [Outcome.PASSED, Outcome.ERROR]
    assert broken.steps[1].message == "agent did not answer SMC 0xc4000152"
    assert broken.error == "step 'granule_undelegate#2' (line 6): agent did not answer SMC 0xc4000152"
    assert broken.outcome is Outcome.ERROR
    assert fine.outcome is Outcome.PASSED
    assert result.error == ""
    assert result.exit_code() == EXIT_TARGET


def test_transport_error_ends_the_run() -> None:
    runner = Runner(_DeadLinkModel(profile=load_profile("model")))
    result = runner.run_all([seq(UNDELEGATE.format(name="broken")), seq(VERSION)])
    assert [s.name for s in result.sequences] == ["broken"]
    assert result.error.endswith("agent did not answer SMC 0xc4000152")
    assert result.exit_code() == EXIT_TARGET


def test_run_all_fills_the_result_document() -> None:
    result = Runner(model()).run_all([seq(VERSION)], command="conformance")
    assert (result.target, result.kind, result.command, result.tool_version) == (
        "model",
        "model",
        "conformance",
        __version__,
    )
    assert result.ended
    assert result.exit_code() == EXIT_OK
    failing = Runner(model()).run_all([seq(VERSION.replace("0x10000", "0x20000") + "    expect: success\n")])
    assert failing.exit_code() == EXIT_FAILED


class _Recorder:
    """An observer that writes down the events it sees."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def run_started(self, run: RunResult) -> None:
        self.seen.append("run_started")

    def sequence_started(self, sequence: SequenceResult, total_steps: int) -> None:
        self.seen.append(f"sequence_started {sequence.name} {total_steps}")

    def step_finished(self, sequence: SequenceResult, step: StepResult) -> None:
        assert sequence.steps[-1] is step
        self.seen.append(f"step {step.name} {step.outcome}")

    def sequence_finished(self, sequence: SequenceResult) -> None:
        self.seen.append(f"sequence_finished {sequence.outcome}")

    def run_finished(self, run: RunResult) -> None:
        self.seen.append("run_finished")


def test_events_follow_the_run_in_order() -> None:
    recorder = _Recorder()
    Runner(model(), events=Events([recorder])).run_all([seq(VERSION)])
    assert recorder.seen == [
        "run_started",
        "sequence_started fine 1",
        "step version#1 passed",
        "sequence_finished passed",
        "run_finished",
    ]


def test_each_sequence_gets_fresh_granules_on_the_same_target() -> None:
    runner = Runner(model())
    first = runner.run(seq(UNDELEGATE.format(name="one")))
    second = runner.run(seq(UNDELEGATE.format(name="two")))
    assert first.outcome is Outcome.PASSED
    assert second.outcome is Outcome.PASSED
    assert first.steps[0].args["addr"] != second.steps[0].args["addr"]


class _ScriptedRealmModel(ModelTarget):
    """The model with a stand-in realm payload (as an agent has): RSI_VERSION and RSI_HOST_CALL only."""

    def __init__(self) -> None:
        super().__init__(profile=load_profile("model"))
        self.host_calls: dict[int, RealmAction] = {}

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities | {Capability.REALM_EXEC}

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Seq[Any] = ()) -> tuple[int, ...]:
        registers = self.smc(0xC400_015C, rec_pa, run_pa)
        if registers[0] != 0:
            return registers
        waiting = self.host_calls.pop(rec_pa, None)
        if waiting is not None:
            waiting.complete((0,))
        for action in actions:
            if (action.kind, action.name) == ("rsi", "version"):
                action.complete((0, 0x10000, 0x10000))
            elif (action.kind, action.name) == ("rsi", "host_call"):
                action.start()
                self.host_calls[rec_pa] = action
                self.write(run_pa + 0x800, RecExit(exit_reason=5, imm=action.args.get("imm", 0)).pack())
                break
            else:
                break
        return registers


def test_realm_actions_run_in_order_and_resume_on_the_next_entry() -> None:
    result = run(
        ACTIVE_REALM
        + """
  - name: enter
    rmi: rec_enter
    args: {rec: rec0}
    realm:
      - rsi: version
        args: {req: 0x10000}
        expect: {outputs: {lower: 0x10000, higher: 0x20000}}
      - rsi: host_call
        args: {imm: 0x33}
      - rsi: version
        args: {req: 0x10000}
        save: {v: lower}
    expect: {exit: {exit_reason: host_call, imm: 0x33}}
  - name: resume
    rmi: rec_enter
    args: {rec: rec0}
  - name: use_saved
    rmi: version
    args: {req: v}
""",
        _ScriptedRealmModel(),
    )
    names = [(s.name, s.op, s.outcome) for s in result.steps[5:]]
    assert names == [
        ("enter", "rmi", Outcome.PASSED),
        ("enter/1 rsi version", "realm", Outcome.FAILED),
        ("resume", "rmi", Outcome.PASSED),
        ("enter/2 rsi host_call", "realm", Outcome.PASSED),
        ("enter/3 rsi version", "realm", Outcome.PASSED),
        ("use_saved", "rmi", Outcome.PASSED),
    ]
    assert result.steps[6].message == "higher 0x10000, expected 0x20000"
    assert result.steps[6].line == 19
    assert result.steps[5].outputs == {"exit_reason": "host_call", "imm": 0x33}


def test_rsi_shorthand_enters_calls_and_leaves_by_host_call() -> None:
    target = _ScriptedRealmModel()
    result = run(
        ACTIVE_REALM
        + """
  - name: rsi_version
    rsi: version
    rec: rec0
    args: {req: 0x10000}
    expect: {outputs: {lower: 0x10000, higher: 0x10000}}
  - name: next_entry
    rmi: rec_enter
    args: {rec: rec0}
  - name: rsi_version_wrong
    rsi: version
    rec: rec0
    args: {req: 0x10000}
    expect: error_state
""",
        target,
    )
    steps = by_name(result)
    assert [s.name for s in result.steps[5:]] == ["rsi_version", "next_entry", "rsi_version_wrong"]
    assert steps["rsi_version"].outcome is Outcome.PASSED
    assert steps["rsi_version"].outputs == {"lower": 0x10000, "higher": 0x10000}
    assert steps["next_entry"].outcome is Outcome.PASSED
    assert steps["rsi_version_wrong"].message == "status success, expected error_state"


def test_granules_the_runner_delegated_go_back_once_nothing_uses_them() -> None:
    target = model()
    result = run(
        """
        sequence: s
        granules: [rd, rec0, rec1]
        steps:
          - rmi: granule_delegate
            args: {addr: rd}
          - rmi: realm_create
            args: {rd: rd}
          - rmi: granule_delegate
            args: {addr: rec0}
          - rmi: rec_create
            args: {rd: rd, rec: rec0}
          - rmi: rec_destroy
            args: {rec: rec0}
          - rmi: realm_destroy
            args: {rd: rd}
          - rmi: granule_delegate
            args: {addr: rd}
            expect: error_input
          - rmi: granule_delegate
            args: {addr: rec1}
          - rmi: realm_create
            args: {rd: rd}
          - rmi: rec_create
            args: {rd: rd, rec: rec1}
        """,
        target,
    )
    assert result.outcome is Outcome.PASSED, [f"{s.name}: {s.message}" for s in result.steps if s.message]
    first_rtt = int(result.steps[1].args["params"]["rtt_base"], 16)
    first_aux = [int(a, 16) for a in result.steps[3].args["params"]["aux"]]
    live_rtt = int(result.steps[8].args["params"]["rtt_base"], 16)
    live_aux = [int(a, 16) for a in result.steps[9].args["params"]["aux"]]
    freed = {first_rtt, *first_aux}
    assert set(live_aux) <= freed  # reused rather than delegating more
    assert all(target.gpt_pas(pa) is Pas.REALM for pa in [live_rtt, *live_aux])
    assert all(target.gpt_pas(pa) is Pas.NONSECURE for pa in freed - set(live_aux))


def test_realm_lifecycle_leaves_every_granule_it_used_nonsecure() -> None:
    target = model()
    path = Path(str(resources.files("cca_hil") / "data" / "sequences" / "realm-lifecycle.yaml"))
    result = Runner(target).run(load_sequence(path))
    steps = by_name(result)
    delegated = [
        s.args["addr"] for s in result.steps if s.command == "granule_delegate" and s.status == "success"
    ]
    aux = [int(pa, 16) for pa in steps["rec_create"].args["params"]["aux"]]
    assert len(delegated) == 9
    assert len(aux) == 16
    assert [str(target.gpt_pas(pa)) for pa in delegated + aux] == ["nonsecure"] * 25


# -- RSI and PSCI failure conditions ------------------------------------------------------------

RUNNING_REALM = """
sequence: s
granules: [rd, rtt0, rtt1, rtt2, rtt3, data0, rec0]
steps:
  - {rmi: granule_delegate, args: {addr: rd}}
  - {rmi: granule_delegate, args: {addr: rtt0}}
  - {rmi: realm_create, args: {rd: rd, params: {s2sz: 40, rtt_base: rtt0, rtt_level_start: 0}}}
  - {rmi: granule_delegate, args: {addr: rtt1}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt1, ipa: 0, level: 1}}
  - {rmi: granule_delegate, args: {addr: rtt2}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt2, ipa: 0, level: 2}}
  - {rmi: granule_delegate, args: {addr: rtt3}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt3, ipa: 0, level: 3}}
  - {rmi: granule_delegate, args: {addr: data0}}
  - {rmi: data_create, args: {rd: rd, data: data0, ipa: 0, src: {fill: 0}, flags: measure}}
  - {rmi: granule_delegate, args: {addr: rec0}}
  - {rmi: rec_create, args: {rd: rd, rec: rec0, params: {flags: runnable}}}
  - {rmi: realm_activate, args: {rd: rd}}
"""
"""An active realm whose REC can run: one RAM page at IPA 0, where the rsi: shorthand keeps its Host call."""


def test_rsi_step_condition_is_checked_against_the_label_the_model_reports() -> None:
    result = run(
        RUNNING_REALM
        + """
  - name: right
    rsi: ipa_state_get
    rec: rec0
    args: {base: 0x1008, top: 0x2000}
    expect: error_input
    condition: base_align
  - name: wrong
    rsi: ipa_state_get
    rec: rec0
    args: {base: 0x1000, top: 0x2008}
    expect: error_input
    condition: base_align
  - name: wrong_status
    rsi: measurement_read
    rec: rec0
    args: {index: 5}
"""
    )
    steps = by_name(result)
    assert (steps["right"].outcome, steps["right"].condition) == (Outcome.PASSED, "base_align")
    assert steps["wrong"].outcome is Outcome.FAILED
    assert steps["wrong"].condition == "end_align"
    assert steps["wrong"].message == "condition end_align, expected base_align"
    assert steps["wrong_status"].message == "status error_input (index_bound), expected success"


def test_realm_action_conditions_are_checked_per_action() -> None:
    result = run(
        RUNNING_REALM
        + """
  - name: enter
    rmi: rec_enter
    args: {rec: rec0}
    realm:
      - rsi: measurement_extend
        args: {index: 1, size: 65}
        expect: error_input
        condition: size_bound
      - rsi: measurement_extend
        args: {index: 0, size: 65}
        expect: error_input
        condition: size_bound
      - psci: cpu_on
        args: {target_cpu: 7, entry_point_address: 0x1000}
        expect: invalid_parameters
        condition: mpidr
      - psci: affinity_info
        args: {target_affinity: 0, lowest_affinity_level: 1}
        expect: invalid_parameters
        condition: target_match
      - psci: version
"""
    )
    actions = [s for s in result.steps if s.op == "realm"]
    assert [(s.outcome, s.condition) for s in actions] == [
        (Outcome.PASSED, "size_bound"),
        (Outcome.FAILED, "index_bound"),
        (Outcome.PASSED, "mpidr"),
        (Outcome.FAILED, "target_bound"),
        (Outcome.PASSED, None),
    ]
    assert actions[1].message == "condition index_bound, expected size_bound"
    assert actions[3].message == "condition target_bound, expected target_match"


class _BlindAction:
    """An action as a target that cannot see inside its RMM hands it back: results, no condition."""

    def __init__(self, action: RealmAction) -> None:
        self.action = action
        self.kind, self.name, self.fid, self.args = action.kind, action.name, action.fid, action.args

    def start(self) -> None:
        self.action.start()

    def complete(self, registers: Any, condition: str | None = None) -> None:
        self.action.complete(registers)


class _BlindRealmModel(ModelTarget):
    """A model whose realm results come back without failure conditions, like a board's agent."""

    def __init__(self) -> None:
        super().__init__(profile=load_profile("model"))
        self.blind: dict[int, _BlindAction] = {}

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Seq[Any] = ()) -> tuple[int, ...]:
        # One stand-in per action for its whole life, as the realm payload tracks actions by identity.
        wrapped = [self.blind.setdefault(id(a), _BlindAction(a)) for a in actions]
        return super().realm_enter(rec_pa, run_pa, wrapped)


def test_a_target_that_cannot_tell_the_condition_ignores_the_key() -> None:
    result = run(
        RUNNING_REALM
        + """
  - name: wrong_label
    rsi: ipa_state_get
    rec: rec0
    args: {base: 0x1000, top: 0x2008}
    expect: error_input
    condition: base_align
""",
        _BlindRealmModel(),
    )
    step = by_name(result)["wrong_label"]
    assert (step.outcome, step.status, step.condition) == (Outcome.PASSED, "error_input", None)
