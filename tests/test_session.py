"""Bench sessions: model state carried across ``cca-hil rmi`` processes by a replayed journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import RealmParams
from cca_hil.errors import GranuleProtectionFault, InputError, TargetError
from cca_hil.profiles import load_profile
from cca_hil.rmi_client import RmiClient
from cca_hil.session import (
    Journal,
    JournaledTarget,
    Session,
    SessionError,
    SmcOp,
    StoreOp,
    WriteOp,
    load_journal,
    parse_rmi_call,
    perform,
    scratch_granules,
    session_path,
)

POOL = 0x9000_0000
DELEGATE = RMI_1_0["granule_delegate"].fid


def rmi(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``cca-hil rmi …`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", "rmi", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def rmi_json(*args: str, cwd: Path) -> dict[str, Any]:
    """``cca-hil rmi … --json`` in a fresh process, decoded."""
    proc = rmi(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def open_session(
    root: Path, *, name: str = "default", reset: bool = False, overrides: tuple[str, ...] = ()
) -> Any:
    return Session.open(
        name=name,
        root=root,
        profile=load_profile("model", overrides),
        profile_arg="model",
        overrides=overrides,
        reset=reset,
    )


# -- across processes ------------------------------------------------------------------------


def test_delegate_in_one_process_then_undelegate_in_another_succeeds(tmp_path: Path) -> None:
    first = rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    assert first["status"] == "success"
    second = rmi_json("granule-undelegate", "0x90000000", cwd=tmp_path)
    assert second["status"] == "success"
    assert second["condition"] is None


def test_delegate_twice_across_processes_is_error_input_gran_state(tmp_path: Path) -> None:
    assert rmi_json("granule_delegate", "addr=0x90000000", cwd=tmp_path)["status"] == "success"
    again = rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    assert again["status"] == "error_input"
    assert again["index"] == 0
    assert again["condition"] == "gran_state"
    proc = rmi("granule-delegate", "0x90000000", cwd=tmp_path)
    assert proc.returncode == 0
    assert "error_input" in proc.stdout and "gran_state" in proc.stdout


def test_a_realm_can_be_built_call_by_call(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    rmi_json("granule-delegate", "0x90010000", cwd=tmp_path)
    created = rmi_json(
        "realm-create",
        "0x90000000",
        "params.s2sz=40",
        "params.rtt_base=0x90010000",
        "params.hash_algo=sha256",
        cwd=tmp_path,
    )
    assert created["status"] == "success", created
    entry = rmi_json("rtt-read-entry", "0x90000000", "0", "0", cwd=tmp_path)
    assert entry["outputs"] == {"walk_level": 0, "state": "unassigned", "desc": "0x0", "ripas": "empty"}
    too_shallow = rmi_json("rtt-read-entry", "rd=0x90000000", "ipa=0", "level=-1", cwd=tmp_path)
    assert too_shallow["inputs"]["level"] == "-1"
    assert too_shallow["condition"] == "level_bound"


def test_history_lists_the_calls_of_the_session(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    proc = rmi("--history", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "granule_delegate(0x90000000)" in line]
    assert len(lines) == 2
    assert "success" in lines[0] and "gran_state" in lines[1]
    history = json.loads(rmi("--history", "--json", cwd=tmp_path).stdout)
    assert [op["op"] for op in history["operations"]] == ["smc", "smc"]


def test_reset_session_starts_from_a_fresh_model(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    again = rmi_json("--reset-session", "granule-delegate", "0x90000000", cwd=tmp_path)
    assert again["status"] == "success"
    assert again["journal"] == 1


def test_sessions_are_independent_by_name(tmp_path: Path) -> None:
    rmi_json("--session", "a", "granule-delegate", "0x90000000", cwd=tmp_path)
    other = rmi_json("--session", "b", "granule-delegate", "0x90000000", cwd=tmp_path)
    assert other["status"] == "success"
    assert (tmp_path / "cca-hil-runs" / "sessions" / "a.json").is_file()


def test_a_session_refuses_another_profile(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "cca_hil", "--set", "model.seed=9", "rmi", "version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "--reset-session" in proc.stderr and "--set model.seed=9" in proc.stderr


def test_a_journal_that_no_longer_replays_is_refused_with_the_way_out(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    path = tmp_path / "cca-hil-runs" / "sessions" / "default.json"
    document = json.loads(path.read_text())
    document["operations"][0]["result"][0] = "0x1"  # as if the model had answered differently back then
    path.write_text(json.dumps(document))
    proc = rmi("version", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "diverged at operation 1" in proc.stderr
    assert "granule_delegate(0x90000000)" in proc.stderr
    assert "cca-hil rmi --reset-session" in proc.stderr


def test_a_corrupt_session_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cca-hil-runs" / "sessions" / "default.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    proc = rmi("version", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not JSON" in proc.stderr and "--reset-session" in proc.stderr


# -- in process ------------------------------------------------------------------------


def test_replay_restores_thousands_of_operations(tmp_path: Path) -> None:
    count = 3000
    with open_session(tmp_path) as session:
        for i in range(count):
            session.target.smc(DELEGATE, POOL + i * 0x1000)
    with open_session(tmp_path) as session:
        assert session.replayed == count
        target = session.target
        assert target.gpt_pas(POOL + (count - 1) * 0x1000) is Pas.REALM
        assert target.gpt_pas(POOL + count * 0x1000) is Pas.NONSECURE
        assert target.smc(DELEGATE, POOL)[0] == 1
        assert target.rmi_condition == "gran_state"


def test_journal_records_writes_and_stores_but_not_reads_or_faulting_writes(tmp_path: Path) -> None:
    with open_session(tmp_path) as session:
        target = session.target
        target.write(POOL + 0x2000, b"\x01\x02" + bytes(100))
        target.read(POOL, 16)
        target.access(POOL + 0x3000, "read")
        target.access(POOL + 0x3000, "write", 8, 0xFEED)
        target.smc(DELEGATE, POOL)
        with pytest.raises(GranuleProtectionFault):
            target.write(POOL, b"x")
        kinds = [type(op) for op in session.new_operations()]
    assert kinds == [WriteOp, StoreOp, SmcOp]
    with open_session(tmp_path) as session:
        assert session.target.read(POOL + 0x2000, 3) == b"\x01\x02\x00"
        assert session.target.read(POOL + 0x3000, 8) == (0xFEED).to_bytes(8, "little")


def test_journal_round_trips_through_json(tmp_path: Path) -> None:
    journal = Journal(
        name="j",
        profile="model",
        kind="model",
        params={"seed": 3},
        operations=[
            SmcOp(DELEGATE, (POOL,), (1, 0, 0, 0, 0), "gran_state"),
            WriteOp(POOL, b"\x05" + bytes(4095)),
            StoreOp(POOL + 8, 4, 0xAB, faulted=True),
        ],
    )
    path = tmp_path / "j.json"
    path.write_text(json.dumps(journal.to_json()))
    again = load_journal(path)
    assert again is not None
    assert again.operations == journal.operations
    assert again.seed == 3
    assert len(json.dumps(journal.to_json())) < 1000  # trailing zeros of structures are not stored


def test_reset_of_a_journaled_target_empties_the_journal(tmp_path: Path) -> None:
    with open_session(tmp_path) as session:
        session.target.smc(DELEGATE, POOL)
        session.target.reset()
        assert isinstance(session.target, JournaledTarget)
        assert session.journal is not None and session.journal.operations == []
        assert session.target.smc(DELEGATE, POOL)[0] == 0


def test_session_names_cannot_leave_the_sessions_folder(tmp_path: Path) -> None:
    assert session_path(tmp_path, "bench-1.a") == tmp_path / "sessions" / "bench-1.a.json"
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(InputError):
            session_path(tmp_path, bad)


# -- parsing a bench call ------------------------------------------------------------------------


PLATFORM = {"ns_dram_base": 0x8000_0000, "non_memory": 0x1_0000_0000}


def test_arguments_are_positional_in_spec_order_or_named() -> None:
    call = parse_rmi_call("rtt-create", ["0x90000000", "ipa=0x1000", "0x90010000", "3"], platform=PLATFORM)
    assert call.command.name == "rtt_create"
    assert call.values == {"rd": 0x9000_0000, "ipa": 0x1000, "rtt": 0x9001_0000, "level": 3}


def test_command_names_take_hyphens_underscores_and_the_spec_prefix() -> None:
    for word in ("granule-delegate", "granule_delegate", "RMI_GRANULE_DELEGATE"):
        assert parse_rmi_call(word, ["1"], platform=PLATFORM).command.name == "granule_delegate"


def test_values_may_be_platform_names_and_negative() -> None:
    call = parse_rmi_call("rtt-read-entry", ["platform.ns_dram_base", "0", "-1"], platform=PLATFORM)
    assert call.values == {"rd": 0x8000_0000, "ipa": 0, "level": -1}
    with pytest.raises(InputError, match=r"unknown platform name 'platform\.nope'"):
        parse_rmi_call("rtt-read-entry", ["platform.nope", "0", "0"], platform=PLATFORM)


def test_structure_fields_build_the_structure_with_host_defaults() -> None:
    call = parse_rmi_call(
        "realm-create",
        [
            "rd=0x90000000",
            "params.s2sz=44",
            "params.rtt_base=0x90010000",
            "params.hash_algo=sha512",
            "params.flags=pmu",
        ],
        platform=PLATFORM,
    )
    params = call.structures["params_ptr"]
    assert isinstance(params, RealmParams)
    assert (params.s2sz, params.rtt_base, params.hash_algo, params.flags) == (44, 0x9001_0000, 1, 4)
    assert params.rtt_num_start == 1 and params.num_bps == 1


def test_a_structure_input_may_also_be_given_as_an_address() -> None:
    call = parse_rmi_call("realm-create", ["0x90000000", "params=platform.non_memory"], platform=PLATFORM)
    assert call.values["params_ptr"] == 0x1_0000_0000
    assert call.structures == {}


def test_inputs_given_twice_or_missing_are_refused() -> None:
    with pytest.raises(InputError, match="given twice"):
        parse_rmi_call("granule-delegate", ["1", "addr=2"], platform=PLATFORM)
    with pytest.raises(InputError, match="needs input 'params_ptr'"):
        parse_rmi_call("realm-create", ["0x90000000"], platform=PLATFORM)
    with pytest.raises(InputError, match="is no structure"):
        parse_rmi_call("granule-delegate", ["addr.x=1"], platform=PLATFORM)


def test_version_and_features_need_no_arguments() -> None:
    assert parse_rmi_call("version", [], platform=PLATFORM).values == {"req": 0x10000}
    assert parse_rmi_call("features", [], platform=PLATFORM).values == {"index": 0}


def test_structures_go_to_reachable_scratch_granules_at_the_top_of_the_pool(tmp_path: Path) -> None:
    with open_session(tmp_path) as session:
        target = session.target
        (base, size) = target.info().granule_pool[-1]
        top_granule = base + size - 0x1000
        assert target.smc(DELEGATE, top_granule)[0] == 0
        assert scratch_granules(target, 2, avoid=[top_granule - 0x1000]) == [
            top_granule - 0x2000,
            top_granule - 0x3000,
        ]
        call = parse_rmi_call("realm-create", ["0x90000000", "params.s2sz=40"], platform=PLATFORM)
        inputs, result = perform(call, RmiClient(target))
        assert inputs["params_ptr"] == top_granule - 0x1000
        assert result.condition == "rd_state"  # the params were readable: the RMM got as far as the RD
        assert RealmParams.unpack(target.read(inputs["params_ptr"], 0x1000)).s2sz == 40


def test_session_error_is_input_error() -> None:
    assert issubclass(SessionError, InputError)


def test_history_reads_the_journal_even_when_replay_would_diverge(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    path = tmp_path / "cca-hil-runs" / "sessions" / "default.json"
    document = json.loads(path.read_text())
    document["operations"][0]["result"][0] = "0x1"
    path.write_text(json.dumps(document))
    proc = rmi("--history", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "granule_delegate(0x90000000)" in proc.stdout


def test_bad_arguments_leave_the_session_untouched_even_with_reset(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    proc = rmi("--reset-session", "granule-delegate", "lots", cwd=tmp_path)
    assert proc.returncode == 2
    again = rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    assert again["condition"] == "gran_state"


def test_operations_that_reached_the_model_are_kept_when_the_command_fails(tmp_path: Path) -> None:
    with pytest.raises(GranuleProtectionFault), open_session(tmp_path) as session:
        session.target.smc(DELEGATE, POOL)
        session.target.write(POOL, b"boom")
    with open_session(tmp_path) as session:
        assert session.replayed == 1
        assert session.target.smc(DELEGATE, POOL)[0] == 1


def test_a_realm_built_and_entered_in_a_session_replays_in_the_next(tmp_path: Path) -> None:
    from cca_hil.rmi_client import GranuleAllocator, RealmBuilder

    with open_session(tmp_path) as session:
        client = RmiClient(session.target)
        allocator = GranuleAllocator.for_target(session.target)
        realm = RealmBuilder(client, allocator, data_granules=1, recs=1).build()
        run = allocator.granule()
        entered = client.rec_enter(realm.recs[0], run)
        journal = session.journal
        assert journal is not None
        recorded = len(journal.operations)
        assert isinstance(journal.operations[-1], SmcOp)
        assert journal.operations[-1].fid == RMI_1_0["rec_enter"].fid
    with open_session(tmp_path) as session:
        assert session.replayed == recorded
        client = RmiClient(session.target)
        # The realm exists in the rebuilt model: its RD cannot be delegated again, nor destroyed while live.
        assert client.granule_delegate(realm.rd).condition == "gran_state"
        assert client.realm_destroy(realm.rd).condition == "realm_live"
        with pytest.raises(TargetError, match="cannot be given actions"):
            session.target.realm_enter(realm.recs[0], run, ["anything"])
    assert entered.registers[0] == session.journal.operations[recorded - 1].result[0]


def test_quiet_bench_call_prints_one_line(tmp_path: Path) -> None:
    rmi_json("granule-delegate", "0x90000000", cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "cca_hil", "-q", "rmi", "granule-delegate", "0x90000000"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "granule_delegate: error_input index 0 (gran_state)\n"


def test_the_session_file_holds_one_operation_per_line(tmp_path: Path) -> None:
    with open_session(tmp_path) as session:
        for i in range(3):
            session.target.smc(DELEGATE, POOL + i * 0x1000)
    text = (tmp_path / "sessions" / "default.json").read_text()
    lines = [line for line in text.splitlines() if line.startswith('{"op":"smc"')]
    assert len(lines) == 3
    assert json.loads(text)["schema"] == "cca-hil-session/1"


def test_operations_after_a_reset_are_the_new_ones_and_are_kept_on_failure(tmp_path: Path) -> None:
    with open_session(tmp_path) as session:
        session.target.smc(DELEGATE, POOL)
    with pytest.raises(GranuleProtectionFault), open_session(tmp_path) as session:
        session.target.reset()
        session.target.smc(DELEGATE, POOL + 0x1000)
        assert [op.args for op in session.new_operations()] == [(POOL + 0x1000,)]
        session.target.write(POOL + 0x1000, b"boom")
    with open_session(tmp_path) as session:
        assert session.replayed == 1
        assert session.target.smc(DELEGATE, POOL)[0] == 0
