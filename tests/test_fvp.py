"""The FVP launch layer against the FVP stand-in: real processes, real sockets, real signals."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.fvp import (
    FVP_PARAMS,
    FvpConfig,
    FvpExitedError,
    FvpLauncher,
    FvpNotFoundError,
    FvpProcess,
    FvpVersion,
    check_renames,
    command_line,
    find_binary,
    load_session,
    probe_version,
    start_session,
    stop_session,
)
from cca_hil.profiles import bundled_dir, validate
from cca_hil.transport.telnet import IAC, TerminalClosedError
from cca_hil.yamlio import load_file

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tools" / "fvp-standin"


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaked_processes(process_guard: str) -> str:
    """Every process a test here starts must be gone when it ends (tests/conftest.py)."""
    return process_guard


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder with stand-in firmware images (the stand-in only checks they exist and their size)."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bl1.bin").write_bytes(b"\x00" * 20 * 1024)
    (folder / "fip.bin").write_bytes(b"\x00" * 900 * 1024)
    (folder / "agent.bin").write_bytes(b"\x00" * 4096)
    return folder


@pytest.fixture
def make_config(images: Path) -> Callable[..., FvpConfig]:
    """An FvpConfig for the stand-in, from an ``fvp:`` section merged over a working default."""

    def make(section: dict[str, Any] | None = None) -> FvpConfig:
        base: dict[str, Any] = {
            "binary": str(STANDIN),
            "images_dir": str(images),
            "firmware": {"bl1": "bl1.bin", "fip": "fip.bin"},
            "timeouts": {"ports": 30.0, "shutdown": 5.0, "kill": 5.0, "version": 30.0},
        }
        merged = _merge(base, section or {})
        return FvpConfig.from_section(validate(merged, FVP_PARAMS, where="test", path="fvp"), where="test")

    return make


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., FvpProcess]]:
    """Start models through the real launcher; every one is closed at teardown."""
    started: list[FvpProcess] = []

    def start(config: FvpConfig, run_dir: Path | None = None) -> FvpProcess:
        process = FvpLauncher(config, run_dir=run_dir or tmp_path / "run").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# -- configuration and command line ---------------------------------------------------------


def test_command_line_is_an_argument_list_with_the_models_parameter_names(
    make_config: Callable[..., FvpConfig], images: Path
) -> None:
    config = make_config(
        {
            "data": ["cluster0.cpu0=agent.bin@0x88000000"],
            "params": {"cluster0.rme_support_level": 2, "bp": {"secure_memory": False}},
            "options": {"stat": True, "quantum": 1000, "cyclelimit": 5},
        }
    )
    argv = command_line(config)
    assert argv[0] == str(STANDIN)
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-C"]
    assert "cluster0.rme_support_level=2" in pairs
    assert "bp.secure_memory=0" in pairs
    assert f"bp.secureflashloader.fname={images / 'bl1.bin'}" in pairs
    assert f"bp.flashloader0.fname={images / 'fip.bin'}" in pairs
    for n in range(4):
        assert f"bp.terminal_{n}.start_telnet=0" in pairs
        assert f"bp.terminal_{n}.mode=raw" in pairs
    assert argv[argv.index("--data") + 1] == f"cluster0.cpu0={images / 'agent.bin'}@0x88000000"
    assert argv[argv.index("--quantum") + 1] == "1000"
    assert "--stat" in argv


def test_terminal_parameters_belong_under_terminals_not_params(make_config: Callable[..., FvpConfig]) -> None:
    with pytest.raises(ProfileError, match=r"fvp\.terminals\.terminal_N"):
        make_config({"params": {"bp.terminal_0.mode": "telnet"}})
    with pytest.raises(ProfileError, match=r"fvp\.firmware\.bl1"):
        make_config({"params": {"bp.secureflashloader.fname": "x.bin"}})


def test_bad_terminal_mode_lists_the_valid_ones(make_config: Callable[..., FvpConfig]) -> None:
    with pytest.raises(ProfileError, match=r"valid: raw, telnet"):
        make_config({"terminals": {"terminal_1": {"mode": "ssh"}}})


@pytest.mark.parametrize("name", ["fvp-base-rme", "fvp-base-rme-mec"])
def test_bundled_profile_runs_on_the_standin(
    name: str, images: Path, tmp_path: Path, launch: Callable[..., FvpProcess]
) -> None:
    data = load_file(bundled_dir() / f"{name}.yaml")
    section = validate(data["fvp"], FVP_PARAMS, where=name, path="fvp")
    section = _merge(section, {"binary": str(STANDIN), "images_dir": str(images)})
    config = FvpConfig.from_section(section, where=name)
    for _, path in config.images():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00" * 1024)
    fvp = launch(config)
    assert fvp.notices == ()
    fvp.terminal(0).expect(b"NOTICE:  BL31: Built", timeout=20)
    fvp.check()


# -- launching and reading terminals --------------------------------------------------------


def test_each_terminal_shows_its_boot_text_and_is_logged_from_the_first_byte(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess], tmp_path: Path
) -> None:
    fvp = launch(make_config({"terminals": {"terminal_2": {"connect": False}}}))
    assert sorted(fvp.terminals) == [0, 1, 3]
    assert set(fvp.ports) == {f"terminal_{n}" for n in range(4)}
    fvp.terminal(0).expect(b"NOTICE:  BL1: Booting BL2\r\n", timeout=20)
    fvp.terminal(0).expect(b"NOTICE:  BL2: Booting BL31\r\n", timeout=20)
    fvp.terminal(1).expect(b"Entry point address = 0x88000000", timeout=20)
    fvp.terminal(3).expect(b"Booting RMM v.", timeout=20)
    fvp.close()
    run = tmp_path / "run"
    assert (run / "uart0.log").read_bytes().startswith(b"NOTICE:  Booting Trusted Firmware\r\n")
    assert b"Booting RMM" in (run / "uart3.log").read_bytes()
    assert not (run / "uart2.log").exists()
    stdout = (run / "fvp.stdout.log").read_text()
    assert "terminal_0: Listening for serial connection on port" in stdout
    assert "FlashLoader: Loaded 900 kB" in stdout
    assert (run / "fvp.cmdline").read_text().startswith(str(STANDIN))


def test_terminal_not_connected_names_those_that_are(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    fvp = launch(make_config({"terminals": {"terminal_2": {"connect": False}}}))
    with pytest.raises(TargetError, match=r"terminal_2 is not connected \(connected: terminal_0, terminal_1"):
        fvp.terminal(2)


@pytest.mark.parametrize(
    "hooks",
    [
        {"standin.split_ports": True},
        {"standin.interleave": True},
        {"standin.port_delay": 0.5},
        {"standin.split_ports": True, "standin.interleave": True, "standin.port_delay": 0.2},
    ],
    ids=["split", "interleaved", "late", "all"],
)
def test_port_lines_are_found_however_they_arrive(
    hooks: dict[str, Any], make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    fvp = launch(make_config({"params": hooks}))
    stdout = fvp.stdout_log.read_text()
    for name, port in fvp.ports.items():
        assert f"{name}: Listening for serial connection on port {port}\n" in stdout
    fvp.terminal(0).expect(b"Booting Trusted Firmware", timeout=20)


def test_busy_start_port_is_skipped_and_the_printed_port_used(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        fvp = launch(make_config({"terminals": {"terminal_0": {"start_port": taken}}}))
        assert fvp.ports["terminal_0"] > taken
        fvp.terminal(0).expect(b"Booting Trusted Firmware", timeout=20)


def test_a_model_that_never_prints_ports_times_out_naming_its_last_lines(
    make_config: Callable[..., FvpConfig], tmp_path: Path
) -> None:
    config = make_config({"params": {"standin.no_ports": True}, "timeouts": {"ports": 1.0}})
    with pytest.raises(TransportError, match=r"printed no port for terminal_0.*within 1 s") as caught:
        FvpLauncher(config, run_dir=tmp_path / "run").start()
    assert "FlashLoader: Loaded" in str(caught.value)
    assert "FlashLoader" in (tmp_path / "run" / "fvp.stdout.log").read_text()


def test_unknown_parameter_is_rejected_by_the_model_and_reported(
    make_config: Callable[..., FvpConfig], tmp_path: Path
) -> None:
    config = make_config({"params": {"bp.no_such_thing": 1}})
    with pytest.raises(FvpExitedError, match=r"unknown parameter 'bp\.no_such_thing'") as caught:
        FvpLauncher(config, run_dir=tmp_path / "run").start()
    assert caught.value.returncode == 1
    assert "bp.no_such_thing" in (tmp_path / "run" / "fvp.stderr.log").read_text()


def test_missing_image_is_reported_before_launch(
    make_config: Callable[..., FvpConfig], tmp_path: Path
) -> None:
    config = make_config({"firmware": {"fip": "nowhere/fip.bin"}})
    with pytest.raises(TargetError, match=r"image not found.*fvp\.firmware\.fip: .*nowhere/fip\.bin"):
        FvpLauncher(config, run_dir=tmp_path / "run").start()


# -- model death and shutdown ---------------------------------------------------------------


def test_crash_mid_run_is_a_transport_error_with_status_and_logs_and_the_group_is_gone(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess], tmp_path: Path
) -> None:
    # The helper child inherits the model's pipes and survives the crash: only a group kill ends it.
    hooks = {
        "standin.crash_after": 2.0,
        "standin.crash_signal": int(signal.SIGSEGV),
        "standin.spawn_child": True,
    }
    fvp = launch(make_config({"params": hooks}))
    terminal = fvp.terminal(0)
    terminal.expect(b"NOTICE:  BL31: Built", timeout=20)
    with pytest.raises(TransportError, match=r"model killed by SIGSEGV") as caught:
        terminal.expect(b"this never comes", timeout=30)
    assert isinstance(caught.value, TerminalClosedError)
    assert "simulated model crash" in str(caught.value)
    with pytest.raises(FvpExitedError) as exited:
        fvp.check()
    assert exited.value.returncode == -signal.SIGSEGV
    fvp.close()
    assert _group_gone(fvp.pgid)
    assert b"Booting Trusted Firmware" in (tmp_path / "run" / "uart0.log").read_bytes()
    assert "simulated model crash" in (tmp_path / "run" / "fvp.stderr.log").read_text()


def test_crash_on_a_byte_sent_to_the_agent_uart(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    fvp = launch(make_config({"params": {"standin.crash_on_byte": 0xA5, "standin.crash_status": 3}}))
    fvp.terminal(1).expect(b"SPSR", timeout=20)
    fvp.agent_terminal.write(b"\xa5")
    with pytest.raises(TerminalClosedError, match=r"model exited with status 3"):
        fvp.agent_terminal.expect(b"never", timeout=30)


def test_a_hung_model_that_ignores_sigterm_is_killed(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    config = make_config(
        {"params": {"standin.hang": True}, "timeouts": {"shutdown": 0.5}, "terminals": {"terminal_0": {}}}
    )
    fvp = launch(config)
    assert fvp.close() == -signal.SIGKILL
    assert _group_gone(fvp.pgid)


def test_clean_stop_is_sigterm_to_the_group(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    fvp = launch(make_config({"params": {"standin.spawn_child": True}}))
    fvp.terminal(0).expect(b"Booting Trusted Firmware", timeout=20)
    assert fvp.close() == -signal.SIGTERM
    assert _group_gone(fvp.pgid)
    assert fvp.close() == -signal.SIGTERM  # idempotent


def test_time_limit_ends_the_run_with_status_zero_and_statistics(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    fvp = launch(make_config({"options": {"timelimit": 2, "stat": True}}))
    assert fvp.wait_exit(30) == 0
    fvp.close()
    stdout = fvp.stdout_log.read_text()
    assert "time limit reached" in stdout
    assert "statistics" in stdout


PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cca_hil.fvp import FvpConfig, FvpLauncher

    config = FvpConfig.from_section(
        {"binary": sys.argv[1], "images_dir": sys.argv[2], "firmware": {"bl1": "bl1.bin", "fip": "fip.bin"}}
    )
    with FvpLauncher(config, run_dir=Path(sys.argv[3])).start() as fvp:
        fvp.terminal(0).expect(b"Booting Trusted Firmware", timeout=30)
        print("ready", fvp.pgid, flush=True)
        while True:
            time.sleep(0.1)
    """
)


def test_ctrl_c_in_the_parent_stops_the_model_and_keeps_the_logs(images: Path, tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    run = tmp_path / "run"
    # Its own session, so the SIGINT below reaches the parent only, as a terminal's Ctrl-C reaches cca-hil.
    parent = subprocess.Popen(
        [sys.executable, str(script), str(STANDIN), str(images), str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with parent:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 60)
        line = parent.stdout.readline().decode() if ready else ""
        if not line.startswith("ready"):
            parent.kill()
            _, err = parent.communicate(timeout=10)
            pytest.fail(f"parent did not get ready: {line!r} {err.decode()[-2000:]}")
        pgid = int(line.split()[1])
        assert not _group_gone(pgid)
        parent.send_signal(signal.SIGINT)
        _, err = parent.communicate(timeout=60)
    assert parent.returncode != 0
    assert b"KeyboardInterrupt" in err
    assert _group_gone(pgid)
    assert (run / "uart0.log").read_bytes().startswith(b"NOTICE:  Booting Trusted Firmware")
    assert "Listening for serial connection" in (run / "fvp.stdout.log").read_text()


# -- binary lookup and releases ----------------------------------------------------------------


def test_missing_binary_names_every_place_looked(tmp_path: Path) -> None:
    config = FvpConfig(source="my-profile.yaml")
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(FvpNotFoundError) as caught:
        find_binary(config, env={"PATH": str(empty)})
    message = str(caught.value)
    assert "fvp.binary in my-profile.yaml (not set" in message
    assert "$CCA_HIL_FVP (not set)" in message
    assert "'FVP_Base_RevC-2xAEMvA' (not on PATH)" in message
    assert f"PATH: {empty}" in message
    assert caught.value.exit_code == 3


def test_explicit_binary_is_not_replaced_by_one_on_path(tmp_path: Path) -> None:
    config = FvpConfig(binary=str(tmp_path / "missing" / "FVP"), source="p.yaml")
    with pytest.raises(FvpNotFoundError, match=r"missing/FVP' \(no such file\)"):
        find_binary(config, env={"PATH": str(STANDIN.parent)})


def test_binary_found_through_environment_then_path(tmp_path: Path) -> None:
    assert find_binary(FvpConfig(), env={"CCA_HIL_FVP": str(STANDIN), "PATH": ""}) == STANDIN.resolve()
    fake = tmp_path / "FVP_Base_RevC-2xAEMvA"
    fake.symlink_to(STANDIN)
    assert find_binary(FvpConfig(), env={"PATH": str(tmp_path)}) == STANDIN.resolve()


def test_version_is_read_from_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert probe_version(STANDIN) == FvpVersion(11, 27, 19)
    monkeypatch.setenv("FVP_STANDIN_VERSION", "11.31.28")
    assert probe_version(STANDIN) == FvpVersion(11, 31, 28)


def test_version_parsing_accepts_the_usual_spellings() -> None:
    assert FvpVersion.parse("Fast Models [11.27.19 (Oct  2 2024)]") == FvpVersion(11, 27, 19)
    assert FvpVersion.parse("11.31 Build 28") == FvpVersion(11, 31, 28)
    assert FvpVersion.parse("11.27") == FvpVersion(11, 27, 0)
    assert str(FvpVersion(11, 31, 28)) == "11.31 build 28"


def test_renamed_parameter_only_warned_about_by_default(
    make_config: Callable[..., FvpConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config({"params": {"cluster0.has_rme": 1, "bp.has_rme": 1}})
    with caplog.at_level(logging.WARNING, logger="cca_hil.fvp"), pytest.raises(FvpExitedError):
        FvpLauncher(config, run_dir=tmp_path / "run").start()
    assert "'cluster0.has_rme' is known as 'cluster0.rme_support_level'" in caplog.text
    assert "bp.has_rme" not in caplog.text.replace("bp.has_rme (board level)", "")


def test_renamed_parameter_adapted_when_asked(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess], tmp_path: Path
) -> None:
    fvp = launch(make_config({"params": {"cluster0.has_rme": 1, "bp.has_rme": 1}, "adapt_params": True}))
    assert [n.replacement for n in fvp.notices] == ["cluster0.rme_support_level"]
    assert "cluster0.rme_support_level=2" in fvp.argv
    assert "bp.has_rme=1" in fvp.argv
    fvp.terminal(0).expect(b"Booting Trusted Firmware", timeout=20)


def test_old_releases_keep_the_old_parameter_name() -> None:
    params = (("cluster1.has_rme", "1"),)
    assert check_renames(params, FvpVersion(11, 16, 14), adapt=True) == (params, ())


# -- telnet terminals ------------------------------------------------------------------------


def test_telnet_mode_terminal_is_negotiated_and_the_log_holds_only_console_bytes(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess], tmp_path: Path
) -> None:
    fvp = launch(
        make_config({"terminals": {"terminal_0": {"mode": "telnet"}, "terminal_3": {"mode": "telnet"}}})
    )
    fvp.terminal(0).expect(b"NOTICE:  BL31: Built", timeout=20)
    fvp.terminal(3).expect(b"RSI ABI revision", timeout=20)
    fvp.check()
    fvp.close()
    assert bytes([IAC]) not in (tmp_path / "run" / "uart0.log").read_bytes()


def test_a_client_that_ignores_telnet_negotiation_makes_the_model_quit(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    fvp = launch(make_config({"terminals": {"terminal_2": {"mode": "telnet", "connect": False}}}))
    with socket.create_connection(("127.0.0.1", fvp.ports["terminal_2"]), timeout=10) as naive:
        assert naive.recv(3)[:1] == bytes([IAC])
        assert fvp.wait_exit(30) == 1
    assert "telnet negotiation" in fvp.stderr_log.read_text()


# -- the agent on its UART ------------------------------------------------------------------


def test_agent_answers_over_the_agent_uart_and_system_off_ends_the_run(
    make_config: Callable[..., FvpConfig], launch: Callable[..., FvpProcess]
) -> None:
    from cca_hil.agent.errors import AgentDisconnectedError
    from cca_hil.agent.link import AgentLink

    fvp = launch(make_config({"params": {"bp.ve_sysregs.exit_on_shutdown": True}}))
    with AgentLink(fvp.agent_terminal) as link:
        assert link.smc(0xC400_0150, 0x10000)[0] == 0  # RMI_VERSION
        with pytest.raises(AgentDisconnectedError, match=r"model exited with status 0"):
            link.smc(0x8400_0008)  # PSCI SYSTEM_OFF
    assert fvp.wait_exit(30) == 0


# -- sessions ---------------------------------------------------------------------------------


def test_session_start_use_stop_leaves_nothing_running(
    make_config: Callable[..., FvpConfig], tmp_path: Path
) -> None:
    run = tmp_path / "session"
    state = run / "fvp-session.json"
    session = start_session(make_config({"params": {"standin.spawn_child": True}}), run_dir=run)
    try:
        assert load_session(state) == session
        assert session.is_running()
        assert set(session.ports) == {f"terminal_{n}" for n in range(4)}
        with session.terminal(0) as terminal:
            terminal.expect(b"Booting Trusted Firmware", timeout=20)
        assert json.loads(state.read_text())["pgid"] == session.pgid
    finally:
        stopped = stop_session(state)
    assert stopped
    assert _group_gone(session.pgid)
    assert not state.exists()
    assert (run / "uart0.log").read_bytes().startswith(b"NOTICE:  Booting Trusted Firmware")
    with pytest.raises(TargetError, match=r"no FVP session recorded"):
        stop_session(state)


def test_a_second_session_start_is_refused_and_the_first_is_kept(
    make_config: Callable[..., FvpConfig], tmp_path: Path
) -> None:
    run = tmp_path / "session"
    state = run / "fvp-session.json"
    config = make_config()
    first = start_session(config, run_dir=run)
    try:
        ports = ", ".join(f"{name} {port}" for name, port in sorted(first.ports.items()))
        with pytest.raises(TargetError) as refused:
            start_session(config, run_dir=run)
        message = str(refused.value)
        assert f"already running (pid {first.pid}, ports: {ports};" in message
        assert str(state) in message
        # The first model is still the recorded one, and still runs.
        assert load_session(state) == first
        assert first.is_running()
    finally:
        assert stop_session(state)
    assert _group_gone(first.pgid)
    # Once it has stopped, a new session starts in its place.
    second = start_session(config, run_dir=run)
    try:
        assert second.pid != first.pid and load_session(state) == second
    finally:
        assert stop_session(state)
    assert _group_gone(second.pgid)


def test_a_stale_session_record_is_replaced(make_config: Callable[..., FvpConfig], tmp_path: Path) -> None:
    run = tmp_path / "session"
    state = run / "fvp-session.json"
    run.mkdir()
    state.write_text("{not json")
    session = start_session(make_config(), run_dir=run)
    try:
        assert load_session(state) == session
    finally:
        assert stop_session(state)
    assert _group_gone(session.pgid)


def test_session_never_signals_a_process_that_is_not_the_one_started(tmp_path: Path) -> None:
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    with bystander:
        state = tmp_path / "fvp-session.json"
        record = {
            "schema": "cca-hil-fvp-session/1",
            "pid": bystander.pid,
            "pgid": bystander.pid,
            "argv": ["FVP_Base_RevC-2xAEMvA"],
            "start_ticks": 1,  # not the bystander's start time: its pid was "reused"
            "ports": {},
            "logs": {"stdout": "x", "stderr": "y"},
            "run_dir": str(tmp_path),
            "started": "2026-01-01T00:00:00+00:00",
        }
        state.write_text(json.dumps(record))
        assert stop_session(state) is False
        assert bystander.poll() is None
        bystander.kill()


def test_session_start_failure_leaves_no_model_and_no_state(
    make_config: Callable[..., FvpConfig], tmp_path: Path
) -> None:
    run = tmp_path / "session"
    config = make_config({"params": {"standin.no_ports": True}, "timeouts": {"ports": 1.0}})
    with pytest.raises(TransportError, match=r"printed no port"):
        start_session(config, run_dir=run)
    assert not (run / "fvp-session.json").exists()
