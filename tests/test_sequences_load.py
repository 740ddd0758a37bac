"""Loading sequence files: valid ones compile, every bad input is one SequenceError naming file:line."""

from __future__ import annotations

import textwrap
from importlib import resources
from pathlib import Path

import pytest

from cca_hil.arch.rsi_1_0 import PSCI_1_1, RSI_1_0
from cca_hil.errors import EXIT_BAD_INPUT, SequenceError
from cca_hil.seqformat import (
    PSCI_FUNCTIONS,
    RSI_COMMANDS,
    AccessStep,
    CheckStep,
    Expr,
    RmiStep,
    Sequence,
    SmcStep,
    StructSpec,
    Wide,
)
from cca_hil.sequences import load_sequence, load_sequence_text

DIRECTED = Path(__file__).parent / "data" / "tfrmm-1.0-directed"
DIRECTED_FILES = sorted(DIRECTED.glob("*.yaml"))


def load(text: str) -> Sequence:
    return load_sequence_text(textwrap.dedent(text).lstrip("\n"), source="seq.yaml")


def load_error(text: str) -> SequenceError:
    with pytest.raises(SequenceError) as info:
        load(text)
    return info.value


# -- what must load ------------------------------------------------------------


def test_the_directed_tf_rmm_data_is_present() -> None:
    assert len(DIRECTED_FILES) == 26


@pytest.mark.parametrize("path", DIRECTED_FILES, ids=lambda p: p.stem)
def test_every_directed_tf_rmm_file_loads(path: Path) -> None:
    sequence = load_sequence(path)
    assert sequence.steps
    assert all(step.line > 0 for step in sequence.steps)
    assert sequence.source == str(path)


def test_the_directed_data_holds_2605_steps() -> None:
    assert sum(len(load_sequence(p)) for p in DIRECTED_FILES) == 2605


@pytest.mark.parametrize("name", ["realm-lifecycle", "rtt-fold", "unprotected-map"])
def test_bundled_sequences_ship_as_package_data_and_load(name: str) -> None:
    path = Path(str(resources.files("cca_hil") / "data" / "sequences" / f"{name}.yaml"))
    sequence = load_sequence(path)
    assert sequence.name == name
    assert sequence.requires == ("rme",)


def test_step_names_default_to_command_and_position() -> None:
    sequence = load_sequence_text(
        "sequence: s\nsteps:\n- rmi: version\n  args: {req: 0x10000}\n- smc: 0xc4000150\n"
        "- access: {op: write, addr: 0x9000_0000}\n- check: pas\n  args: {addr: 0}\n  expect: ns\n",
        source="s.yaml",
    )
    assert [s.name for s in sequence.steps] == ["version#1", "smc#2", "write#3", "pas#4"]
    assert [type(s) for s in sequence.steps] == [RmiStep, SmcStep, AccessStep, CheckStep]


def test_static_values_are_resolved_at_load_time() -> None:
    sequence = load(
        """
        sequence: s
        granules: [rd]
        steps:
          - rmi: rtt_read_entry
            args: {rd: rd + 0x10, ipa: "0x1000 + 0x20", level: -1}
        """
    )
    step = sequence.steps[0]
    assert isinstance(step, RmiStep)
    args = dict(step.args)
    assert args["rd"] == Expr(text="rd + 0x10", const=0x10, terms=((1, "rd"),))
    assert args["ipa"] == 0x1020
    assert args["level"] == 0xFFFF_FFFF_FFFF_FFFF


def test_structure_mappings_compile_enums_and_flags() -> None:
    sequence = load(
        """
        sequence: s
        granules: [rd, rtt0, rec, run]
        steps:
          - rmi: realm_create
            args:
              rd: rd
              params: {hash_algo: sha512, flags: [lpa2, pmu], rtt_base: rtt0, rpv: "0x0102"}
          - rmi: rec_create
            args: {rd: rd, rec: rec, params_ptr: {flags: runnable, gprs: {1: 5}}}
          - rmi: rec_enter
            args: {rec: rec, run: {flags: {ripas_response: reject, emul_mmio: true}}}
          - rmi: rec_enter
            args: {rec: rec, run: run + 0x10}
        """
    )
    steps = [step for step in sequence.steps if isinstance(step, RmiStep)]
    args = [dict(step.args) for step in steps]
    params, rec_params, run = args[0]["params_ptr"], args[1]["params_ptr"], args[2]["run_ptr"]
    assert isinstance(params, StructSpec)
    assert params.fields["hash_algo"] == 1
    assert params.fields["flags"] == 0b101
    assert params.fields["rpv"] == Wide(b"\x01\x02")
    assert isinstance(rec_params, StructSpec)
    assert rec_params.fields == {"flags": 1, "gprs": {1: 5}}
    assert isinstance(run, StructSpec)
    assert run.fields == {"flags": (1 << 4) | 1}
    assert isinstance(args[3]["run_ptr"], Expr)


def test_saved_names_are_usable_by_later_steps_only() -> None:
    load(
        """
        sequence: s
        steps:
          - rmi: version
            args: {req: 0x10000}
            save: {v: lower}
          - rmi: version
            args: {req: v}
        """
    )
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: version
            args: {req: v}
          - rmi: version
            args: {req: 0x10000}
            save: {v: lower}
        """
    )
    assert str(error).startswith("seq.yaml:4: unknown name 'v'")


# -- every class of bad input: file:line, what, the valid choices ----------------


def test_missing_file_is_a_sequence_error(tmp_path: Path) -> None:
    with pytest.raises(SequenceError, match=r"nope\.yaml: no such file"):
        load_sequence(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_the_line() -> None:
    error = load_error("sequence: s\nsteps:\n  - rmi: version\n    args: {req: 1\n")
    assert error.where == "seq.yaml:5"
    assert "YAML syntax error" in error.what
    assert error.exit_code == EXIT_BAD_INPUT


def test_duplicate_yaml_key_is_an_error() -> None:
    error = load_error("sequence: s\nsteps: []\nsteps: []\n")
    assert error.where == "seq.yaml:3"
    assert "duplicate key 'steps'" in error.what


def test_unknown_top_level_key() -> None:
    error = load_error("sequence: s\nsteps: []\nsetup: []\n")
    assert str(error) == (
        "seq.yaml:3: unknown key 'setup' in the sequence "
        "(valid: sequence, description, requires, granules, steps)"
    )


def test_missing_sequence_name() -> None:
    error = load_error("steps: []\n")
    assert error.what == "missing key 'sequence' (the sequence's name)"


def test_unknown_command_lists_the_rmi_commands() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: version
            args: {req: 1}
          - rmi: granule_delegat
            args: {addr: 0}
        """
    )
    assert error.where == "seq.yaml:5"
    assert error.what == "unknown RMI command 'granule_delegat'"
    assert error.valid is not None and "granule_delegate" in error.valid and "rtt_set_ripas" in error.valid


def test_unknown_argument_lists_the_commands_inputs_with_ptr_aliases() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: rec_create
            args: {rd: 0, rec: 0, parms: {}}
        """
    )
    assert str(error) == "seq.yaml:4: rec_create has no argument 'parms' (valid: rd, rec, params_ptr, params)"


def test_argument_given_twice_by_alias() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: realm_create
            args:
              rd: 0
              params: 0
              params_ptr: 0
        """
    )
    assert error.where == "seq.yaml:7"
    assert "names an argument already given" in error.what


def test_missing_argument_names_it() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: rtt_create
            args: {rd: 0, rtt: 0, ipa: 0}
        """
    )
    assert str(error) == "seq.yaml:4: rtt_create needs argument 'level' (valid: rd, rtt, ipa, level)"


def test_unknown_granule_name_lists_granules_then_platform_names() -> None:
    error = load_error(
        """
        sequence: s
        granules: [rd, rtt0]
        steps:
          - rmi: granule_delegate
            args: {addr: rtt1 + 0x1000}
        """
    )
    assert error.where == "seq.yaml:5"
    assert error.what == "unknown name 'rtt1' in granule_delegate addr 'rtt1 + 0x1000'"
    assert error.valid == (
        "rd",
        "rtt0",
        "platform.non_memory",
        "platform.ns_dram_base",
        "platform.pa_limit",
        "platform.realm_granule",
        "platform.root_granule",
        "platform.secure_granule",
    )


def test_unknown_platform_name() -> None:
    error = load_error("sequence: s\nsteps:\n  - rmi: granule_delegate\n    args: {addr: platform.nowhere}\n")
    assert error.what == "unknown name 'platform.nowhere' in granule_delegate addr 'platform.nowhere'"


def test_unknown_enumeration_value_lists_the_spec_names() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: realm_create
            args:
              rd: 0
              params:
                s2sz: 40
                hash_algo: sha384
        """
    )
    assert str(error) == "seq.yaml:8: unknown hash_algo 'sha384' (valid: sha256, sha512, an integer)"


def test_unknown_structure_field_lists_the_fields() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: rec_create
            args: {rd: 0, rec: 0, params: {flags: runnable, entry: 0}}
        """
    )
    assert error.what == "unknown key 'entry' in RmiRecParams"
    assert error.valid == ("flags", "mpidr", "pc", "gprs", "num_aux", "aux")


def test_unknown_flag_name() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - rmi: data_create
            args: {rd: 0, data: 0, ipa: 0, src: 0, flags: measured}
        """
    )
    assert str(error) == "seq.yaml:4: unknown data flags 'measured' (valid: no_measure, measure, an integer)"


def test_duplicate_step_name_names_both_lines() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - name: twice
            rmi: version
            args: {req: 1}
          - name: twice
            rmi: version
            args: {req: 1}
        """
    )
    assert str(error) == "seq.yaml:6: duplicate step name 'twice' (first at line 3)"


def test_default_name_clashing_with_an_explicit_one_is_a_duplicate() -> None:
    error = load_error(
        """
        sequence: s
        steps:
          - name: "version#2"
            rmi: version
            args: {req: 1}
          - rmi: version
            args: {req: 1}
        """
    )
    assert error.what == "duplicate step name 'version#2' (first at line 3)"


@pytest.mark.parametrize(
    ("snippet", "what"),
    [
        ("args: [1]", "args must be a mapping, got a list"),
        ("args: {req: 1.5}", "version req must be an integer, a granule name, NAME + N / NAME - N, "),
        ("args: {req: true}", "version req must be an integer"),
        ("args: {req: '0x10 +'}", "cannot read version req '0x10 +'"),
        ("args: {req: '1 2'}", "cannot read version req '1 2': missing + or - between terms"),
        ("args: {req: '1 + - 2'}", "cannot read version req '1 + - 2': two operators in a row"),
        ("args: {req: '0x1_'}", "cannot read version req '0x1_': bad number '0x1_'"),
        ("args: {req: 1}\n    expect: [success]", "expect must be a mapping, got a list"),
        ("args: {req: 1}\n    name: [a]", "name must be a non-empty string, got a list"),
    ],
)
def test_bad_types_name_the_line(snippet: str, what: str) -> None:
    error = load_error(f"sequence: s\nsteps:\n  - rmi: version\n    {snippet}\n")
    assert error.where is not None and error.where.startswith("seq.yaml:")
    assert error.what.startswith(what)


def test_steps_must_be_a_list() -> None:
    error = load_error("sequence: s\nsteps: {rmi: version}\n")
    assert str(error) == "seq.yaml:2: steps must be a list, got a mapping"


def test_step_without_a_kind_lists_the_kinds() -> None:
    error = load_error("sequence: s\nsteps:\n  - name: lonely\n")
    assert str(error) == "seq.yaml:3: step 1 must name exactly one kind (valid: rmi, rsi, access, check, smc)"


def test_step_with_two_kinds() -> None:
    error = load_error("sequence: s\nsteps:\n  - rmi: version\n    smc: 1\n")
    assert error.what == "step 1 must name exactly one kind (got rmi, smc)"


def test_unknown_step_key_lists_the_keys_of_that_kind() -> None:
    error = load_error("sequence: s\nsteps:\n  - rmi: version\n    arg: {req: 1}\n")
    assert str(error) == (
        "seq.yaml:4: unknown key 'arg' in an rmi step "
        "(valid: rmi, name, args, expect, save, condition, realm, compat)"
    )


def test_unknown_status_name() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: version\n    args: {req: 1}\n    expect: error_in_use\n"
    )
    assert str(error) == (
        "seq.yaml:5: unknown status 'error_in_use' "
        "(valid: success, error_input, error_realm, error_rec, error_rtt, not_supported)"
    )


def test_unknown_output_lists_the_commands_outputs() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: rtt_read_entry\n    args: {rd: 0, ipa: 0, level: 3}\n"
        "    expect:\n      outputs: {level: 3}\n"
    )
    assert (
        str(error)
        == "seq.yaml:6: rtt_read_entry has no output 'level' (valid: walk_level, state, desc, ripas)"
    )


def test_output_undefined_for_the_expected_status() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: rtt_destroy\n    args: {rd: 0, ipa: 0, level: 3}\n"
        "    expect: {status: error_input, outputs: {top: 0}}\n"
    )
    assert error.what == "output 'top' of rtt_destroy is not defined when the status is error_input"


def test_unknown_output_enumeration_value() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: rtt_read_entry\n    args: {rd: 0, ipa: 0, level: 3}\n"
        "    expect: {outputs: {ripas: dev}}\n"
    )
    assert str(error) == "seq.yaml:5: unknown ripas 'dev' (valid: empty, ram, destroyed, an integer)"


def test_index_without_status() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: rtt_create\n    args: {rd: 0, rtt: 0, ipa: 0, level: 3}\n"
        "    expect: {index: 2}\n"
    )
    assert error.what == "expect: index needs a status"


def test_unknown_condition_lists_the_commands_labels() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: granule_delegate\n    args: {addr: 0}\n"
        "    expect: error_input\n    condition: rd_state\n"
    )
    assert str(error) == (
        "seq.yaml:6: granule_delegate has no failure condition 'rd_state' "
        "(valid: gran_align, gran_bound, gran_state, gran_gpt)"
    )


def test_condition_labels_use_the_spec_label_of_tf_rmm_splits() -> None:
    load(
        """
        sequence: s
        steps:
          - rmi: rec_create
            args: {rd: 0, rec: 0, params: 0}
            expect: error_input
            condition: num_aux
        """
    )


def test_condition_with_a_success_expect_is_contradictory() -> None:
    error = load_error(
        "sequence: s\nsteps:\n  - rmi: granule_delegate\n    args: {addr: 0}\n    condition: gran_state\n"
    )
    assert error.what == "condition 'gran_state' needs an expect that is a failure status"


def test_unknown_capability() -> None:
    error = load_error("sequence: s\nrequires: [rme, warp_drive]\nsteps: []\n")
    assert error.where == "seq.yaml:2"
    assert error.what == "unknown capability 'warp_drive'"
    assert error.valid is not None and "realm_exec" in error.valid


def test_bad_granule_names() -> None:
    assert load_error("sequence: s\ngranules: [rd, rd]\nsteps: []\n").what == "granule 'rd' is listed twice"
    assert load_error("sequence: s\ngranules: [platform]\nsteps: []\n").what.startswith(
        "'platform' is reserved"
    )
    assert "is not a name" in load_error("sequence: s\ngranules: [2x]\nsteps: []\n").what


def test_save_of_an_unknown_output_and_over_a_granule() -> None:
    error = load_error("sequence: s\nsteps:\n  - rmi: version\n    args: {req: 1}\n    save: {v: lowest}\n")
    assert str(error) == "seq.yaml:5: save: version has no output 'lowest' (valid: lower, higher)"
    error = load_error(
        "sequence: s\ngranules: [v]\nsteps:\n  - rmi: version\n    args: {req: 1}\n    save: {v: lower}\n"
    )
    assert error.what == "save: 'v' is already a granule name"


def test_access_errors() -> None:
    assert load_error("sequence: s\nsteps:\n  - access: {op: poke, addr: 0}\n").what == (
        "access op must be read or write, got 'poke'"
    )
    assert load_error("sequence: s\nsteps:\n  - access: {op: read, addr: 0, size: 3}\n").valid == (
        "1",
        "2",
        "4",
        "8",
    )
    error = load_error("sequence: s\nsteps:\n  - access: {op: read, addr: 0}\n    expect: fault_gpf\n")
    assert str(error) == "seq.yaml:4: unknown access status 'fault_gpf' (valid: ok, gpf, fault)"


def test_check_errors() -> None:
    error = load_error("sequence: s\nsteps:\n  - check: gpt\n    args: {addr: 0}\n    expect: realm\n")
    assert str(error) == "seq.yaml:3: unknown check 'gpt' (valid: pas)"
    error = load_error("sequence: s\nsteps:\n  - check: pas\n    args: {addr: 0}\n    expect: normal\n")
    assert str(error) == "seq.yaml:5: unknown PAS 'normal' (valid: secure, nonsecure, realm, root, any, none)"


def test_smc_errors() -> None:
    assert "32-bit function identifier" in load_error("sequence: s\nsteps:\n  - smc: 0x1_0000_0000\n").what
    error = load_error("sequence: s\nsteps:\n  - smc: 0xc4000150\n    args: {x18: 0}\n")
    assert error.what == "unknown smc argument 'x18'"


def test_realm_action_errors() -> None:
    base = "sequence: s\nsteps:\n  - rmi: rec_enter\n    args: {rec: 0}\n    realm:\n"
    error = load_error(base + "      - rsi: measurement_reed\n")
    assert error.where == "seq.yaml:6"
    assert error.valid is not None and "measurement_read" in error.valid
    error = load_error(base + "      - psci: cpu_of\n")
    assert error.what == "unknown PSCI function 'cpu_of'"
    error = load_error(base + "      - nap\n")
    assert error.what == "unknown realm action 'nap'"
    error = load_error(base + "      - {rsi: version, psci: version}\n")
    assert error.what == "a realm action names exactly one kind (got rsi, psci)"
    error = load_error(
        base + "      - rsi: ipa_state_set\n        args: {base: 0, top: 0x1000, ripas: dev}\n"
    )
    assert str(error) == "seq.yaml:7: unknown ripas 'dev' (valid: empty, ram, destroyed, an integer)"
    error = load_error(base + "      - mmio: {op: read}\n")
    assert error.what == "mmio needs ipa"


def test_realm_actions_only_belong_to_rec_enter() -> None:
    error = load_error("sequence: s\nsteps:\n  - rmi: version\n    args: {req: 1}\n    realm: [wfi]\n")
    assert str(error) == "seq.yaml:5: realm: actions belong to rmi: rec_enter"


def test_exit_expectations_are_validated() -> None:
    base = "sequence: s\nsteps:\n  - rmi: rec_enter\n    args: {rec: 0}\n"
    error = load_error(base + "    expect: {exit: {exit_reason: timer}}\n")
    assert error.what == "unknown exit_reason 'timer'"
    error = load_error(base + "    expect: {exit: {reason: irq}}\n")
    assert error.what == "unknown REC exit field 'reason'"
    error = load_error(base + "    expect: {status: error_rec, exit: {exit_reason: irq}}\n")
    assert error.what == "expect: exit is only defined when rec_enter succeeds"


def test_rsi_step_needs_a_rec() -> None:
    error = load_error("sequence: s\nsteps:\n  - rsi: version\n    args: {req: 0x10000}\n")
    assert str(error) == "seq.yaml:3: an rsi: step needs rec: (the REC to enter)"


def test_rsi_and_psci_conditions_are_validated_against_the_arch_tables() -> None:
    step = "  - rsi: realm_config\n    rec: 0\n    args: {addr: 0x1008}\n    expect: error_input\n"
    error = load_error("sequence: s\nsteps:\n" + step + "    condition: addr_bond\n")
    assert error.what == "RSI realm_config has no failure condition 'addr_bond'"
    assert list(error.valid or ()) == ["addr_align", "addr_bound", "tf_rmm_ripas_empty"]
    action = "      - psci: cpu_on\n        expect: invalid_address\n        condition: target\n"
    error = load_error(f"sequence: s\nsteps:\n  - rmi: rec_enter\n    args: {{rec: 0}}\n    realm:\n{action}")
    assert error.what == "PSCI cpu_on has no failure condition 'target'"
    assert list(error.valid or ()) == ["entry", "mpidr", "runnable"]
    error = load_error("sequence: s\nsteps:\n  - rsi: version\n    rec: 0\n    condition: index_bound\n")
    assert list(error.valid or ()) == ["(none)"]


def test_an_rsi_condition_needs_a_failure_expect() -> None:
    action = "      - psci: cpu_on\n        condition: entry\n"
    error = load_error(f"sequence: s\nsteps:\n  - rmi: rec_enter\n    args: {{rec: 0}}\n    realm:\n{action}")
    assert error.what == "condition 'entry' needs an expect that is a failure status"


def test_rsi_and_psci_vocabulary_comes_from_the_arch_tables() -> None:
    assert set(RSI_COMMANDS) == set(RSI_1_0.by_name)
    for name, command in RSI_COMMANDS.items():
        assert command.fid == RSI_1_0.by_name[name].fid
        assert command.conditions == tuple(c.id for c in RSI_1_0.by_name[name].conditions)
    assert RSI_COMMANDS["measurement_read"].wide == frozenset({"value"})
    assert RSI_COMMANDS["host_call"].inputs == ("addr", "imm", "gprs")
    assert {name: fid for name, (fid, _) in PSCI_FUNCTIONS.items()} == {f.name: f.fid for f in PSCI_1_1}
    error = load_error("sequence: s\nsteps:\n  - rsi: token_init\n    rec: 0\n")
    assert error.valid is not None and "attestation_token_init" in error.valid
