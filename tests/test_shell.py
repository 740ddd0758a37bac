"""``cca-hil shell``: the real command on a real pty (prompt_toolkit line editing), and scripted.

A realm is built at the prompt with completion; ``save`` writes a sequence that
``cca-hil run`` replays on a fresh target and passes; history survives the process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from pty_harness import CTRL_C, CTRL_D, TAB, UP, PtyProcess

from cca_hil.profiles import build_target, load_profile
from cca_hil.sequences import load_sequence
from cca_hil.shell import Shell, ShellCompleter

CCA_HIL = [sys.executable, "-m", "cca_hil"]
PROMPT = "cca-hil model>"
"""The prompt as it appears once control sequences are removed (the line editor draws the space by moving)."""
START_TIMEOUT = 60.0
"""Seconds for a cold interpreter to start and show the prompt on a loaded machine."""


@pytest.fixture
def env(tmp_path: Path, process_guard: str) -> dict[str, str]:
    """The environment of the commands: history and runs under tmp_path, no developer overrides."""
    environment = dict(os.environ)
    environment["CCA_HIL_RUNS"] = str(tmp_path / "runs")
    environment["CCA_HIL_HISTORY"] = str(tmp_path / "state" / "history")
    environment.pop("CCA_HIL_PROFILE", None)
    return environment


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510  (the exit code is what is checked)
        [*CCA_HIL, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=180
    )


def command(term: PtyProcess, line: str, answer: str) -> None:
    """Type a line at the prompt, wait for ``answer`` and then for the next prompt.

    Keys typed before the line editor is back (the terminal in cooked mode between prompts)
    would meet the tty's own line discipline, as they would at a real terminal: so wait.
    """
    mark = term.mark()
    term.sendline(line)
    term.expect_in_order(answer, PROMPT, since=mark)


def test_a_realm_built_at_the_prompt_is_saved_as_a_sequence_that_run_replays(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with PtyProcess.spawn([*CCA_HIL, "shell"], env=env, cwd=tmp_path) as term:
        term.expect(PROMPT, timeout=START_TIMEOUT)
        command(term, "rd = alloc", "rd = 0x")
        command(term, "rtt = alloc", "rtt = 0x")
        # Tab offers both granule commands for `granule_`, and completes `granule_d` to the one.
        mark = term.mark()
        term.send("granule_" + TAB.decode())
        term.expect(re.compile(rb"granule_delegate\s+[\s\S]*granule_undelegate"), since=mark)
        term.send(CTRL_C)  # leave the line; a fresh prompt follows
        term.expect(PROMPT, since=mark)
        mark = term.mark()
        term.send("granule_d" + TAB.decode())
        # The editor draws only what changed: the completed rest of the word.
        term.expect("elegate", since=mark)
        command(term, " rd", "granule_delegate addr=rd")
        command(term, "delegate rtt", "→ success")
        # Tab completes structure fields and enumeration values: the call as accepted shows them.
        for keys, completed in (
            ("realm_create rd params.rtt_b", "ase="),
            ("rtt params.hash_a", "lgo="),
            ("sha2", "56"),
        ):
            mark = term.mark()
            term.send(keys + TAB.decode())
            term.expect(completed, since=mark)  # as a person types: on once the completion is there
        command(term, " params.vmid=1", "params.rtt_base=rtt params.hash_algo=sha256 params.vmid=1")
        command(term, "delegate rd", "error_input index 0")
        command(term, "realm_activate rd", "→ success")
        command(term, "rtt_read_entry rd 0 0", "state = unassigned")
        command(term, "save realm.yaml", "saved 6 step(s) and 2 granule(s)")
        assert "error:" not in term.text
        term.send(CTRL_D)
        assert term.wait() == 0
    saved = load_sequence(tmp_path / "realm.yaml")
    assert [s.command for s in saved.steps] == [
        "granule_delegate",
        "granule_delegate",
        "realm_create",
        "granule_delegate",
        "realm_activate",
        "rtt_read_entry",
    ]
    assert list(saved.granules) == ["rd", "rtt"]
    text = (tmp_path / "realm.yaml").read_text()
    assert "params: {hash_algo: sha256, vmid: 1, rtt_base: rtt}" in text
    # Outputs that do not depend on where the granules are become part of the expectation.
    assert "expect: {outputs: {walk_level: 0, state: unassigned, ripas: empty}}" in text
    done = run_cli(["run", "realm.yaml"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout


def test_history_is_kept_across_runs(tmp_path: Path, env: dict[str, str]) -> None:
    with PtyProcess.spawn([*CCA_HIL, "shell"], env=env, cwd=tmp_path) as term:
        term.expect(PROMPT, timeout=START_TIMEOUT)
        command(term, "version", "lower = 1.0")
        term.send(CTRL_D)
        assert term.wait() == 0
    assert "version" in Path(env["CCA_HIL_HISTORY"]).read_text()
    with PtyProcess.spawn([*CCA_HIL, "shell"], env=env, cwd=tmp_path) as term:
        term.expect(PROMPT, timeout=START_TIMEOUT)
        mark = term.mark()
        term.send(UP)  # the line of the earlier run comes back
        term.expect("version", since=mark)
        command(term, "", "lower = 1.0")
        command(term, "history", "1  version")
        term.send("exit\r")
        assert term.wait() == 0


def test_keys_typed_while_a_call_runs_reach_the_next_prompt_and_the_terminal_is_restored(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with PtyProcess.spawn([*CCA_HIL, "shell"], env=env, cwd=tmp_path) as term:
        before = term.termios()
        term.expect(PROMPT, timeout=START_TIMEOUT)
        term.sendline("version")
        # Typed while the answer is being printed, before the next prompt: the terminal is not
        # the line editor's then, and the keys must neither be echoed nor lost.
        term.expect("→ success")
        term.send(b"features\r" + CTRL_D)
        assert term.wait() == 0
        text = term.text
        assert "version req=0x10000" in text and "features index=0x0" in text
        assert text.index("version req=") < text.index("features index=")
        assert term.termios() == before


def test_a_history_file_that_cannot_be_written_is_exit_2_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "plain-file").write_text("")
    env["CCA_HIL_HISTORY"] = str(tmp_path / "plain-file" / "history")
    with PtyProcess.spawn([*CCA_HIL, "shell"], env=env, cwd=tmp_path) as term:
        assert term.wait() == 2
        lines = [line for line in term.text.splitlines() if line.strip()]
        assert len(lines) == 1, term.text
        assert lines[0].startswith("cca-hil: error: cannot keep the shell history there: ")
        assert "set $CCA_HIL_HISTORY to a writable file" in lines[0]


def test_bad_lines_are_one_red_line_each_and_the_shell_goes_on(tmp_path: Path, env: dict[str, str]) -> None:
    with PtyProcess.spawn([*CCA_HIL, "shell"], env=env, cwd=tmp_path) as term:
        term.expect(PROMPT, timeout=START_TIMEOUT)
        mark = term.mark()
        term.sendline("bogus 1")
        match = term.expect("error: unknown command 'bogus'; valid: ", since=mark, plain=False)
        assert b"\x1b[31m" in term.output[mark:][: match.start() + 10]  # red
        command(term, "delegate nowhere", "error: cannot read 'nowhere' as a number (granule_delegate addr)")
        command(term, "version", "→ success")
        term.send(CTRL_D)
        assert term.wait() == 0


def test_scripted_session_reads_lines_and_exits_2_after_a_bad_one(
    tmp_path: Path, env: dict[str, str]
) -> None:
    script = (
        "g = alloc\ndelegate g\nrtt_create g g+0x1000 0 3\nfrobnicate\nmeasurement_read 0\n"
        "save missing/out.yaml\nsave out.yaml\n"
    )
    done = run_cli(["shell"], env, tmp_path, stdin=script)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "> delegate g" in done.stdout and "→ success" in done.stdout
    assert done.stdout.count("error: ") == 3
    assert "error: measurement_read is an RSI command, made by a realm; valid: rsi measurement_read REC" in (
        done.stdout
    )
    assert "error: unknown command 'frobnicate'" in done.stdout
    assert "error: no such directory 'missing' (save missing/out.yaml)" in done.stdout
    text = (tmp_path / "out.yaml").read_text()
    assert "rtt: g + 0x1000" in text and "level: 3" in text
    replay = run_cli(["run", "out.yaml"], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_a_session_on_a_simulated_board_replays_on_the_model(tmp_path: Path, env: dict[str, str]) -> None:
    script = (
        "rd = alloc\nrtt = alloc\ndelegate rd\ndelegate rtt\n"
        "realm_create rd params.rtt_base=rtt params.vmid=3\nrealm_activate rd\n"
        "rtt_create rd rtt+0x1000 0 1\nsave board.yaml\n"
    )
    done = run_cli(["--profile", "board-sim", "shell"], env, tmp_path, stdin=script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rtt_create rd=rd rtt=rtt+0x1000 ipa=0x0 level=1" in done.stdout
    assert "saved 5 step(s)" in done.stdout
    replay = run_cli(["run", "board.yaml"], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "5 passed" in replay.stdout


REALM_WITH_RAM = """\
rd = alloc
rtt0 = alloc
rtt1 = alloc
rtt2 = alloc
rtt3 = alloc
data0 = alloc
src = alloc
rec = alloc
delegate rd
delegate rtt0
realm_create rd params.rtt_base=rtt0 params.vmid=1
delegate rtt1
rtt_create rd rtt1 0 1
delegate rtt2
rtt_create rd rtt2 0 2
delegate rtt3
rtt_create rd rtt3 0 3
rtt_init_ripas rd 0 0x1000
delegate data0
data_create rd data0 0 src measure
delegate rec
rec_create rd rec
realm_activate rd
"""
"""A realm with one RAM page at IPA 0 (where the realm keeps its RsiHostCall) and a REC."""


def test_rsi_calls_made_by_the_realm_are_decoded_recorded_and_replayed(
    tmp_path: Path, env: dict[str, str]
) -> None:
    script = REALM_WITH_RAM + "rsi measurement_read rec 0\nrsi version rec req=0x10000\n"
    script += "rsi measurement_read rec index=9\nsave rsi.yaml\n"
    done = run_cli(["shell"], env, tmp_path, stdin=script)
    assert done.returncode == 0, done.stdout + done.stderr
    # rec_create without aux: the shell delegated RMI_REC_AUX_COUNT granules, as the runner does.
    assert re.search(r"\(16 auxiliary granules delegated at 0x[0-9a-f]+…0x[0-9a-f]+\)", done.stdout)
    assert re.search(
        r"rsi measurement_read rec=rec index=0\n  → success\n    value = 0x[0-9a-f]{64}\n", done.stdout
    )
    assert "rsi version rec=rec req=0x10000\n  → success\n    lower = 0x10000\n" in done.stdout
    assert "rsi measurement_read rec=rec index=9\n  → error_input  (index_bound)\n    X0=0x1" in done.stdout
    text = (tmp_path / "rsi.yaml").read_text()
    assert "  - rsi: measurement_read\n    rec: rec\n    args: {index: 9}\n    expect: error_input\n" in text
    assert "num_aux" not in text and "aux:" not in text
    replay = run_cli(["run", "rsi.yaml"], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "18 passed" in replay.stdout


def test_an_rsi_call_whose_realm_cannot_make_its_host_call_is_shown_but_not_recorded(
    tmp_path: Path, env: dict[str, str]
) -> None:
    script = "rd = alloc\nrtt = alloc\nrec = alloc\ndelegate rd\ndelegate rtt\ndelegate rec\n"
    script += "realm_create rd params.rtt_base=rtt params.vmid=1\nrec_create rd rec\nrealm_activate rd\n"
    script += "rsi version rec\nsave norsi.yaml\n"
    done = run_cli(["shell"], env, tmp_path, stdin=script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not recorded: the realm then exited by" in done.stdout
    assert "saved 6 step(s)" in done.stdout
    assert run_cli(["run", "norsi.yaml"], env, tmp_path).returncode == 0


def test_bad_shell_option_is_exit_2_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    done = run_cli(["shell", "--frobnicate"], env, tmp_path, stdin="")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cca-hil: error: no such option"), done.stderr


# -- completion and recording on the model target, in process ----------------------------------------


@pytest.fixture
def shell() -> Iterator[Shell]:
    with build_target(load_profile("model")) as target:
        session = Shell(target)
        session.alloc("rd")
        session.alloc("data0")
        yield session


def completions(shell: Shell, text: str) -> list[str]:
    return [c.text for c in ShellCompleter(shell).get_completions(Document(text), CompleteEvent(True))]


def test_completion_offers_commands_inputs_fields_values_and_granules(shell: Shell) -> None:
    assert completions(shell, "granule_d") == ["granule_delegate"]
    assert completions(shell, "granule-u") == ["granule_undelegate"]
    assert completions(shell, "data_create ") == ["rd=", "data=", "ipa=", "src=", "flags=", "rd", "data0"]
    assert completions(shell, "data_create rd=rd d") == ["data=", "data0"]
    assert completions(shell, "data_create flags=") == ["measure", "no_measure", "rd", "data0"]
    assert "params.hash_algo=" in completions(shell, "realm_create rd params.h")
    assert completions(shell, "realm_create params.hash_algo=") == ["sha256", "sha512", "rd", "data0"]
    assert completions(shell, "delegate d") == ["data0"]
    assert "platform.non_memory" in completions(shell, "delegate addr=")
    assert completions(shell, "x = ") == ["alloc"]
    assert completions(shell, "help realm_a") == ["realm_activate"]
    assert completions(shell, "rsi measurement_r") == ["measurement_read"]
    assert completions(shell, "rsi measurement_read ") == ["rec=", "index=", "rd", "data0"]
    assert completions(shell, "rsi ipa_state_set rec=rd ripas=r") == ["ram"]
    assert completions(shell, "frob ") == []


def test_granule_names_are_checked_and_slots_are_distinct(shell: Shell) -> None:
    from cca_hil.errors import InputError

    assert shell.granules["data0"].pa - shell.granules["rd"].pa >= 0x10000
    assert shell.granules["rd"].pa % 0x10000 == 0
    for bad in ("rd", "on", "platform", "9x", "delegate"):
        with pytest.raises(InputError):
            shell.alloc(bad)


def test_saved_outputs_name_the_granules_the_rmm_hands_back(
    shell: Shell, tmp_path: Path, env: dict[str, str]
) -> None:
    for name in ("rtt0", "rtt1"):
        shell.alloc(name)
    for line in (
        "delegate rd",
        "delegate rtt0",
        "realm_create rd params.rtt_base=rtt0 params.vmid=1",
        "delegate rtt1",
        "rtt_create rd rtt1 0 1",
        "rtt_destroy rd 0 1",
        "rtt_destroy rd 0 1",
    ):
        shell.call(shell.words(line))
    destroyed, missing = shell.record[-2:]
    # The RTT comes back by its name; `top` is an IPA, the same wherever the granules are.
    assert destroyed.outputs["rtt"] == "rtt1" and set(destroyed.outputs) == {"rtt", "top"}
    assert (missing.status, missing.index, set(missing.outputs)) == ("error_rtt", 0, {"top"})
    shell.save(tmp_path / "fold.yaml")
    text = (tmp_path / "fold.yaml").read_text()
    assert re.search(r"expect: \{outputs: \{rtt: rtt1, top: 0x[0-9a-f]+\}\}", text), text
    assert re.search(r"expect: \{status: error_rtt, outputs: \{top: 0x[0-9a-f]+\}\}", text), text
    replay = run_cli(["run", "fold.yaml"], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
