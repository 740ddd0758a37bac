"""The simulated board as a program: a pty or TCP port that behaves like a board's UART."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from cca_hil.agent.errors import AgentDisconnectedError, AgentVersionError
from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.profiles import build_target, load_profile
from cca_hil.targets.model import ModelTarget

ROOT = Path(__file__).resolve().parents[2]
SIM_BOARD = ROOT / "tools" / "sim-board"
FAST = LinkTimeouts(boot=10.0, handshake=0.3, request=1.0, bulk=2.0, gap=0.02)
VERSION = RMI_1_0["version"].fid
DELEGATE = RMI_1_0["granule_delegate"].fid
BANNER = b"cca-hil agent 1.0 (emulator) boot 1: ready"


class Board:
    """A running sim-board process and the URL it printed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SIM_BOARD), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().decode().strip()

    def port(self) -> serial.Serial:
        """The board's UART as a host opens it."""
        return serial.serial_for_url(self.url, baudrate=115200, timeout=0.05)

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and what the board printed on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err.decode()


@pytest.fixture
def start() -> Iterator[Callable[..., Board]]:
    """Start sim-boards; each is stopped (and its group killed) afterwards."""
    boards: list[Board] = []

    def make(*args: str) -> Board:
        board = Board(*args)
        boards.append(board)
        return board

    yield make
    for board in boards:
        board.stop()
        try:
            os.killpg(board.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def console_until(port: serial.Serial, marker: bytes) -> bytes:
    """What the board printed, up to and including ``marker`` (bounded by a few seconds)."""
    port.timeout = 5.0
    return port.read_until(marker)


def test_pty_board_prints_boot_text_then_serves_the_agent(start: Callable[..., Board]) -> None:
    board = start()
    assert board.url.startswith("/dev/pts/")
    with board.port() as port:
        text = console_until(port, BANNER)
        assert text.startswith(b"NOTICE:  Booting Trusted Firmware") and text.endswith(BANNER)
        with AgentLink(port, timeouts=FAST) as link:
            assert link.smc(VERSION, 0x10000)[:3] == (0, 0x10000, 0x10000)
            assert link.smc(DELEGATE, 0x9000_0000)[0] == 0
    # The board outlives the host's connection: a second host finds the same state, no reboot.
    with board.port() as port, AgentLink(port, timeouts=FAST) as link:
        assert link.hello().boot_id == 1
        assert link.smc(DELEGATE, 0x9000_0000)[0] != 0  # already delegated
    status, err = board.stop()
    assert status == 0
    assert "serving the agent on /dev/pts/" in err


def test_tcp_board_answers_as_the_model_of_its_seed(start: Callable[..., Board]) -> None:
    board = start("--tcp", "--seed", "5")
    assert board.url.startswith("socket://127.0.0.1:")
    model = build_target(load_profile("model", ["seed=5"]))
    assert isinstance(model, ModelTarget)
    with board.port() as port, AgentLink(port, timeouts=FAST) as link:
        facts = dict(link.info().facts)
        assert facts["model seed"] == "5"
        for fid, args in ((VERSION, (0x10000,)), (DELEGATE, (0x9000_0000,)), (DELEGATE, (0x9000_0000,))):
            assert link.smc(fid, *args) == model.smc(fid, *args)
    assert board.stop()[0] == 0


def test_board_side_noise_is_survived_by_the_link(start: Callable[..., Board]) -> None:
    board = start("--tcp", "--noise", "ber=1e-3,drop=1e-3", "--noise-seed", "3")
    with board.port() as port, AgentLink(port, timeouts=FAST, retries=16) as link:
        for _ in range(20):
            assert link.smc(VERSION, 0x10000)[:3] == (0, 0x10000, 0x10000)
        data = bytes(range(256)) * 8
        link.write(0x9000_0000, data)
        assert link.read(0x9000_0000, len(data)) == data


def test_die_after_halts_mid_request_and_close_mode_exits(start: Callable[..., Board]) -> None:
    board = start("--tcp", "--die-after", "1", "--die-mode", "close")
    with board.port() as port, AgentLink(port, timeouts=FAST, retries=1) as link:
        link.smc(VERSION, 0x10000)
        with pytest.raises(AgentDisconnectedError, match="connection to the agent lost"):
            link.smc(VERSION, 0x10000)
    board.proc.wait(timeout=10)
    status, err = board.stop()
    assert status == 3
    assert "agent died: dropping off the line" in err


def test_another_protocol_version_is_refused_by_the_host(start: Callable[..., Board]) -> None:
    board = start("--tcp", "--protocol", "2.1")
    with board.port() as port, pytest.raises(AgentVersionError, match=r"agent speaks link protocol 2\.1"):
        AgentLink(port, timeouts=FAST).open()


def test_bad_options_exit_with_status_2(tmp_path: Path) -> None:
    for args in (
        ["--noise", "ber=2"],
        ["--protocol", "x"],
        ["--profile", "fvp-base-rme"],
        ["--set", "bogus=1"],
    ):
        result = subprocess.run(
            [sys.executable, str(SIM_BOARD), *args], check=False, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        assert "error" in result.stderr
