"""The serial target through board-sim: real sim-board processes on ptys and TCP, opened by pySerial."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
import serial.rfc2217
from agent_target_support import (
    AGENT_CAPS,
    FAST_LINK,
    ROOT,
    assert_identical,
    assert_same_results,
    run_profile,
    runnable,
)

from cca_hil.agent.errors import (
    AgentDisconnectedError,
    AgentTimeoutError,
    AgentVersionError,
)
from cca_hil.errors import AgentLinkError, ProfileError, TargetError, TransportError
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import RunResult
from cca_hil.sequences import Sequence
from cca_hil.targets.serial import SerialTarget

PTY_BOARD = "serial.launch=[python, -m, cca_hil.tools.sim_board]"
"""board-sim on a pty instead of TCP: the target opens /dev/pts/N like any serial device."""


def board(overrides: list[str], run_dir: Path) -> SerialTarget:
    """A board-sim target (not opened)."""
    target = build_target(load_profile("board-sim", overrides), run_dir=run_dir)
    assert isinstance(target, SerialTarget)
    return target


@pytest.fixture(scope="module")
def socket_result(sequences: list[Sequence], tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_profile("board-sim", run_dir=tmp_path_factory.mktemp("socket"), sequences=sequences)


@pytest.fixture(scope="module")
def pty_result(sequences: list[Sequence], tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_profile("board-sim", [PTY_BOARD], run_dir=tmp_path_factory.mktemp("pty"), sequences=sequences)


# -- the suite, over each transport, equals the model ----------------------------------------------


@pytest.mark.slow
def test_suite_and_samples_over_socket_equal_the_model(
    socket_result: RunResult, model_result: RunResult
) -> None:
    counts = assert_same_results(socket_result, model_result, AGENT_CAPS)
    print(f"\nsocket:// vs model: {counts}")
    assert counts["steps"] > 1000
    assert socket_result.exit_code() == model_result.exit_code() == 0


@pytest.mark.slow
def test_suite_and_samples_over_a_pty_equal_the_model(pty_result: RunResult, model_result: RunResult) -> None:
    counts = assert_same_results(pty_result, model_result, AGENT_CAPS)
    print(f"\npty vs model: {counts}")
    assert counts["steps"] > 1000


@pytest.mark.slow
def test_pty_and_socket_give_identical_results_and_skips(
    pty_result: RunResult, socket_result: RunResult
) -> None:
    assert_identical(pty_result, socket_result)
    # Realms run through the agent as on the model: no sequence is skipped, and realm actions were run.
    assert not [s.name for s in pty_result.sequences if s.skipped_reason]
    realm_steps = [step for s in pty_result.sequences for step in s.steps if step.op in ("realm", "rsi")]
    assert len(realm_steps) > 100
    assert {"attestation", "conformance-rec-enter-realm-exec"} <= {s.name for s in pty_result.sequences}
    # The GPT is not readable through the agent: `check: pas` steps are skipped, saying why.
    gpt_skips = [
        step
        for s in pty_result.sequences
        for step in s.steps
        if "does not provide 'gpt_read'" in step.message
    ]
    assert gpt_skips and all(step.op == "check" for step in gpt_skips)


@pytest.mark.slow
@pytest.mark.timeout(400)  # ~1.4 MB and 8,700 requests through a line that damages 1 frame in 3
def test_suite_through_a_noisy_line_still_equals_the_model(sequences: list[Sequence], tmp_path: Path) -> None:
    overrides = [
        "link.noise=ber=1e-4,drop=1e-3,dup=1e-3",
        "link.noise_seed=7",
        # A noisy line needs more attempts per frame than a clean one; that is what the setting is for.
        "link.retries=24",
        "link.timeouts={boot: 10, handshake: 0.3, request: 0.3, bulk: 0.6, gap: 0.02}",
    ]
    # Realm entries through noise are covered, faster, by test_agent_target.py's noisy every-action run:
    # the realm sequences here would add a fifth to a run that is the longest of the suite already.
    # The two bulk files (2,055 REC_CREATEs filling a realm, 1,571 steps folding every block size)
    # repeat one command each and are three quarters of the steps: every command is still here.
    bulk = ("conformance-rec-create-num-recs", "conformance-rtt-fold-blocks")
    plain = [s for s in sequences if "realm_exec" not in s.requires and s.name not in bulk]
    want = run_profile("model", sequences=runnable(plain, AGENT_CAPS))
    target = board(overrides, tmp_path)
    with target:
        from cca_hil.sequences import Runner

        result = Runner(target).run_all(plain, command="conformance")
        assert target.link is not None
        stats = target.link.stats
        assert target.info().facts["injected noise"].startswith("ber=0.0001,drop=0.001,dup=0.001")
    counts = assert_same_results(result, want, AGENT_CAPS)
    print(f"\nnoisy socket:// vs model: {counts}; {stats}")
    assert stats.resends > 0 and stats.garbage > 0


def test_a_board_without_a_realm_payload_skips_the_realm_sequences_saying_why(
    sequences: list[Sequence], tmp_path: Path
) -> None:
    needing = [s for s in sequences if "realm_exec" in s.requires]
    assert needing
    launch = "serial.launch=[python, -m, cca_hil.tools.sim_board, --tcp, --no-realm]"
    with board([launch], tmp_path) as target:
        assert not target.has("realm_exec") and not target.has("attestation")
        from cca_hil.sequences import Runner

        result = Runner(target).run_all(needing, command="conformance")
    assert [s.name for s in result.sequences] == [s.name for s in needing]
    for sequence in result.sequences:
        head, _, lacked = sequence.skipped_reason.partition(" lacks ")
        assert head == "target 'board-sim'"
        assert "realm_exec" in lacked.split(", ")


# -- facts and operations ------------------------------------------------------------------------------


def test_info_comes_from_the_handshake_and_matches_the_model(tmp_path: Path) -> None:
    model = build_target(load_profile("model"))
    with board(
        ["serial.launch=[python, -m, cca_hil.tools.sim_board, --tcp, --seed, '3']"], tmp_path
    ) as target:
        info = target.info()
    want = model.info()
    assert (info.pa_bits, info.regions, info.granule_pool) == (want.pa_bits, want.regions, want.granule_pool)
    assert dict(info.platform) == dict(want.platform)
    assert info.rmm_version == want.rmm_version == 0x10000
    assert info.kind == "serial" and info.name == "board-sim"
    assert info.capabilities == AGENT_CAPS
    assert info.facts["model seed"] == "3"
    assert info.facts["serial port"].startswith("socket://127.0.0.1:")
    assert "sim_board" in info.facts["board program"]


def test_logs_are_in_the_run_folder_from_the_first_byte(tmp_path: Path) -> None:
    with board([], tmp_path) as target:
        target.smc(0xC400_0150, 0x10000)
    console = (tmp_path / "console.log").read_bytes()
    assert console.startswith(b"NOTICE:  Booting Trusted Firmware")
    assert b"cca-hil agent 1.0 (emulator) boot 1: ready" in console
    trace = (tmp_path / "link.trace.log").read_text()
    assert "tx HELLO" in trace and "tx SMC" in trace
    board_log = (tmp_path / "board.log").read_text()
    assert "cca_hil.tools.sim_board" in board_log and "socket://127.0.0.1:" in board_log


def test_close_is_idempotent_and_operations_after_it_are_refused(tmp_path: Path) -> None:
    target = board([], tmp_path)
    target.open()
    target.open()
    assert target.board is not None
    pid = target.board.pid
    target.close()
    target.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(TargetError, match="is not open"):
        target.smc(0xC400_0150, 0x10000)


# -- an agent that breaks its promises -------------------------------------------------------------


def test_silent_agent_is_a_link_error_at_open_with_the_console_on_disk(tmp_path: Path) -> None:
    overrides = [
        "serial.launch=[python, -m, cca_hil.tools.sim_board, --tcp, --silent]",
        "link.timeouts={boot: 1.5, handshake: 0.3}",
    ]
    target = board(overrides, tmp_path)
    with pytest.raises(AgentTimeoutError, match=r"no agent answered HELLO within 1.5 s") as caught:
        target.open()
    assert isinstance(caught.value, AgentLinkError) and caught.value.exit_code == 3
    assert "ready" in str(caught.value)  # the last console line is in the message
    assert b"cca-hil agent 1.0 (emulator) boot 1: ready" in (tmp_path / "console.log").read_bytes()
    assert target.board is None  # the board program was stopped


@pytest.mark.parametrize("transport", ["--tcp", "pty"])
def test_agent_dying_mid_call_is_a_link_error_with_its_panic_logged(transport: str, tmp_path: Path) -> None:
    argv = ["python", "-m", "cca_hil.tools.sim_board", "--die-after", "3"]
    if transport == "--tcp":
        argv.append("--tcp")
    overrides = [f"serial.launch=[{', '.join(argv)}]", FAST_LINK, "link.retries=2"]
    with board(overrides, tmp_path) as target:
        # open() asked INFO and RMI_VERSION: two requests; the third runs, the fourth never answers.
        target.read(0x9000_0000, 16)
        with pytest.raises(
            AgentTimeoutError, match=r"no reply to SMC .* after 3 attempts of 1 s \(request\)"
        ):
            target.smc(0xC400_0150, 0x10000)
    assert b"PANIC: agent: unexpected exception, halting" in (tmp_path / "console.log").read_bytes()


def test_agent_dropping_off_the_line_is_a_disconnect(tmp_path: Path) -> None:
    argv = "[python, -m, cca_hil.tools.sim_board, --tcp, --die-after, '2', --die-mode, close]"
    target = board([f"serial.launch={argv}", FAST_LINK], tmp_path)
    with target, pytest.raises(AgentDisconnectedError, match="connection to the agent lost"):
        target.smc(0xC400_0150, 0x10000)  # open() made two requests: INFO and RMI_VERSION
    assert "agent died: dropping off the line" in (tmp_path / "board.log").read_text()


def test_wrong_protocol_version_is_refused_with_the_console_on_disk(tmp_path: Path) -> None:
    argv = "[python, -m, cca_hil.tools.sim_board, --tcp, --protocol, '2.0']"
    target = board([f"serial.launch={argv}", FAST_LINK], tmp_path)
    with pytest.raises(
        AgentVersionError, match=r"agent speaks link protocol 2.0, this host speaks 1\."
    ) as caught:
        target.open()
    assert caught.value.exit_code == 3
    assert b"cca-hil agent 2.0 (emulator) boot 1: ready" in (tmp_path / "console.log").read_bytes()


# -- ports, URLs and launching ------------------------------------------------------------------------


def sim_board(*args: str) -> Iterator[str]:
    """A sim-board started directly: the URL it printed, until the generator is closed."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "sim-board"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().decode().strip()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.fixture
def sim_board_pty() -> Iterator[str]:
    """A sim-board on a pty: its slave path."""
    yield from sim_board()


@pytest.fixture
def sim_board_tcp() -> Iterator[str]:
    """A sim-board on a TCP port: its socket:// URL."""
    yield from sim_board("--tcp")


def test_a_device_path_is_opened_exclusively(sim_board_pty: str, tmp_path: Path) -> None:
    first = board([f"serial.url={sim_board_pty}", "serial.launch=[]"], tmp_path / "a")
    second = board([f"serial.url={sim_board_pty}", "serial.launch=[]"], tmp_path / "b")
    with first:
        assert first.smc(0xC400_0150, 0x10000)[0] == 0
        with pytest.raises(TransportError, match=f"cannot open serial port {sim_board_pty}"):
            second.open()
    # Released at close: the next host gets the port and the same board, which did not reboot.
    with second:
        assert second.info().facts["agent boot id"] == "1"
    assert not (tmp_path / "b" / "console.log").read_bytes().count(b"Booting Trusted Firmware")


class Rfc2217Server:
    """A one-connection RFC 2217 server in front of a serial port, as pySerial's rfc2217_server example.

    It stands for a farm's ser2net in RFC 2217 mode: the board's UART on one side (here a
    sim-board's network UART: a pty has no modem lines for the port manager to poll), a TCP
    client that negotiates COM-port control on the other.
    """

    def __init__(self, device: str) -> None:
        self.serial = serial.serial_for_url(device, baudrate=115200, timeout=0.05)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.alive = threading.Event()
        self.alive.set()
        self.lock = threading.Lock()
        self.client: socket.socket | None = None
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def write(self, data: bytes) -> None:
        """Called by the PortManager for negotiation replies, and for serial data."""
        assert self.client is not None
        with self.lock:
            self.client.sendall(data)

    def _serve(self) -> None:
        self.listener.settimeout(5.0)
        self.client, _ = self.listener.accept()
        # Blocking sends: a send timeout could cut a frame in half when the client reads slowly.
        self.client.setblocking(True)
        manager = serial.rfc2217.PortManager(self.serial, self)
        to_client = threading.Thread(target=self._to_client, args=(manager,), daemon=True)
        to_client.start()
        self.threads.append(to_client)
        while self.alive.is_set():
            ready, _, _ = select.select([self.client], [], [], 0.05)
            if not ready:
                continue
            try:
                data = self.client.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.serial.write(b"".join(manager.filter(data)))

    def _to_client(self, manager: serial.rfc2217.PortManager) -> None:
        while self.alive.is_set():
            try:
                data = self.serial.read(self.serial.in_waiting or 1)
                if data:
                    self.write(b"".join(manager.escape(data)))
            except OSError:
                return

    def close(self) -> None:
        """Stop both directions and close everything (bounded)."""
        self.alive.clear()
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=5.0)
        if self.client is not None:
            self.client.close()
        self.listener.close()
        self.serial.close()


# pySerial 3.5's rfc2217 client names its reader with Thread.setDaemon()/setName(), deprecated in 3.10.
@pytest.mark.filterwarnings(r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning")
def test_an_rfc2217_url_reaches_the_agent_through_a_com_port_server(
    sim_board_tcp: str, tmp_path: Path
) -> None:
    server = Rfc2217Server(sim_board_tcp)
    try:
        url = f"rfc2217://127.0.0.1:{server.port}?ign_set_control"
        target = board([f"serial.url={url}", "serial.launch=[]", FAST_LINK], tmp_path)
        with target:
            assert target.info().facts["serial port"] == f"{url} @ 115200 baud"
            assert target.smc(0xC400_0150, 0x10000)[:3] == (0, 0x10000, 0x10000)
            data = bytes(range(256)) * 16  # 0xFF included: escaped and unescaped by RFC 2217 framing
            target.write(0x9000_0000, data)
            assert target.read(0x9000_0000, len(data)) == data
    finally:
        server.close()


def test_a_launched_program_that_prints_no_url_is_a_transport_error(tmp_path: Path) -> None:
    silent = "[python, -c, 'import time; time.sleep(30)']"
    target = board([f"serial.launch={silent}", "serial.launch_timeout=0.5"], tmp_path)
    with pytest.raises(TransportError, match=r"printed no port URL within 0.5 s"):
        target.open()


def test_a_launched_program_that_exits_reports_its_status_and_output(tmp_path: Path) -> None:
    failing = "[python, -m, cca_hil.tools.sim_board, --profile, fvp-base-rme]"
    target = board([f"serial.launch={failing}"], tmp_path)
    with pytest.raises(
        TransportError, match=r"exited with status 2 before printing its port URL.*kind 'model'"
    ):
        target.open()


def test_an_unreachable_socket_url_is_a_transport_error(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    target = board([f"serial.url=socket://127.0.0.1:{port}", "serial.launch=[]"], tmp_path)
    with pytest.raises(TransportError, match=f"cannot open serial port socket://127.0.0.1:{port}"):
        target.open()
    assert (tmp_path / "console.log").exists()


def test_ftdi_url_without_pyftdi_names_the_missing_package(tmp_path: Path) -> None:
    # A fresh interpreter in which pyftdi cannot be imported, as after a plain `pip install cca-hil`.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pyftdi"] = None
        from cca_hil.errors import TransportError
        from cca_hil.targets.serial import open_port
        try:
            open_port("ftdi://ftdi:2232h/2", baudrate=115200, exclusive=True)
        except TransportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "the ftdi:// scheme needs pyftdi (pip install 'cca-hil[probe]')" in out.stdout


def test_ftdi_url_registers_pyftdi_and_reports_a_missing_device() -> None:
    from cca_hil.targets.serial import open_port

    with pytest.raises(TransportError, match=r"cannot open serial port ftdi://ftdi:0x6666:0x6666/1"):
        open_port("ftdi://ftdi:0x6666:0x6666/1", baudrate=115200, exclusive=True)


def test_importing_the_serial_target_imports_neither_pyserial_nor_pyftdi() -> None:
    script = (
        "import sys, cca_hil.cli, cca_hil.targets.serial, cca_hil.targets.fvp\n"
        "print(sorted(m for m in ('serial', 'pyftdi', 'pyocd', 'usb') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# -- profile validation ----------------------------------------------------------------------------------


def test_bundled_board_profiles_validate() -> None:
    sim = load_profile("board-sim")
    template = load_profile("board-template")
    assert sim.kind == template.kind == "serial"
    assert template.param("probe.unique_id") and template.param("url") == "/dev/ttyUSB0"
    assert template.param("link.timeouts.boot") == 60.0


def test_unknown_serial_key_lists_the_valid_ones() -> None:
    with pytest.raises(ProfileError, match=r"unknown key 'serial.baud'.*valid: baudrate, exclusive"):
        load_profile("board-sim", ["serial.baud=9600"])


def test_bad_noise_spec_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"link.noise: noise parameter 'jitter=1'.*valid: ber, drop, dup"):
        build_target(load_profile("board-sim", ["link.noise=jitter=1"]), run_dir=tmp_path)


def test_a_serial_profile_needs_a_url_or_a_program(tmp_path: Path) -> None:
    profile = tmp_path / "bare.yaml"
    profile.write_text("kind: serial\nserial:\n  baudrate: 115200\n")
    with pytest.raises(ProfileError, match=r"needs serial.url \(or serial.launch"):
        build_target(load_profile(str(profile)))


def test_the_cli_runs_on_board_sim_out_of_the_box(tmp_path: Path) -> None:
    run = tmp_path / "run"
    options = ["--profile", "board-sim", "--run-dir", str(run), "-q"]
    command = ["conformance", "--only", "granule_delegate", "--json", str(tmp_path / "result.json")]
    result = subprocess.run(
        [sys.executable, "-m", "cca_hil", *options, *command],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "result.json").read_text())
    assert document["kind"] == "serial"
    assert (run / "console.log").read_bytes().startswith(b"NOTICE:  Booting Trusted Firmware")
    assert "sim_board" in (run / "board.log").read_text()
