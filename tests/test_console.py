"""``cca-hil console`` driven as a person at the bench drives it: the real command on a real pty.

The targets are simulated boards (``cca_hil.tools.sim_board``) speaking the real
line: TF-A boot text, the agent banner, then agent-link frames.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pty_harness import ESCAPE, PtyProcess, strip_ansi

from cca_hil.agent.protocol import EOF, PROTOCOL_MAJOR, PROTOCOL_MINOR, SOF, Frame, Hello, MsgType
from cca_hil.console import ConsoleFilter

CCA_HIL = [sys.executable, "-m", "cca_hil"]
BOOT_FIRST = "NOTICE:  Booting Trusted Firmware"
BANNER = re.compile(rb"cca-hil agent \d+\.\d+ \(emulator\) boot \d+: ready")
LAUNCH_TIMEOUT = 60.0
"""Seconds for a cold interpreter to start and a board to boot on a loaded machine."""


def hello_frame(seq: int = 1) -> bytes:
    """A HELLO as a host sends it (the agent answers HELLO_REPLY with the same sequence number)."""
    return Frame(MsgType.HELLO, seq, Hello(PROTOCOL_MAJOR, PROTOCOL_MINOR, 4096).encode()).encode()


@pytest.fixture
def env(tmp_path: Path, process_guard: str) -> dict[str, str]:
    """The environment of the commands: runs under tmp_path, no developer overrides."""
    environment = dict(os.environ)
    environment["CCA_HIL_RUNS"] = str(tmp_path / "runs")
    environment.pop("CCA_HIL_PROFILE", None)
    return environment


class StandaloneBoard:
    """A sim-board on a fixed TCP URL that outlives every command, and a serial profile for it."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cca_hil.tools.sim_board", "--tcp"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], LAUNCH_TIMEOUT)
        assert ready, "sim-board printed no URL"
        self.url = self.proc.stdout.readline().decode().strip()
        assert self.url.startswith("socket://127.0.0.1:"), self.url
        self.profile = folder / "bench-board.yaml"
        self.profile.write_text(f"name: bench-board\nkind: serial\nserial:\n  url: {self.url}\n")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def board(tmp_path: Path, env: dict[str, str]) -> Iterator[StandaloneBoard]:
    """A standalone simulated board (started after the process guard, so it is tagged and checked)."""
    started = StandaloneBoard(tmp_path)
    yield started
    started.stop()


def spawn(args: list[str], env: dict[str, str], cwd: Path) -> PtyProcess:
    return PtyProcess.spawn([*CCA_HIL, *args], env=env, cwd=cwd)


# -- on a pty ---------------------------------------------------------------------------------------


def test_console_on_board_sim_shows_boot_text_and_ctrl_bracket_quits_restoring_the_terminal(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with spawn(["--profile", "board-sim", "console"], env, tmp_path) as term:
        before = term.termios()
        term.expect(BOOT_FIRST, timeout=LAUNCH_TIMEOUT)
        term.expect(BANNER)
        # While attached the terminal is raw: no echo, no line editing, Ctrl-C goes to the target.
        raw = term.termios()
        assert raw != before
        lflag = raw[3]
        assert isinstance(lflag, int)
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)
        term.send(ESCAPE)
        assert term.wait() == 0
        term.expect("connection closed (Ctrl-])")
        assert term.termios() == before
    # The board program the profile launched is gone with the console (the process guard checks it).


def test_console_leaves_a_standalone_board_usable_by_the_next_command(
    tmp_path: Path, env: dict[str, str], board: StandaloneBoard
) -> None:
    log = tmp_path / "console.txt"
    args = ["--profile", str(board.profile), "console", "--log", str(log), "--timestamps"]
    with spawn(args, env, tmp_path) as term:
        before = term.termios()
        term.expect(BANNER, timeout=LAUNCH_TIMEOUT)
        # A host's HELLO typed on the line: the agent's HELLO_REPLY is a frame, shown as one dim line.
        mark = term.mark()
        term.send(hello_frame(seq=7))
        term.expect("[frame seq=7 HELLO_REPLY", since=mark)
        term.send(ESCAPE)
        assert term.wait() == 0
        assert term.termios() == before
        assert bytes([SOF]) not in term.output
    text = log.read_text()
    assert re.search(r"^\[\s*\d+\.\d{3}\] NOTICE:  Booting Trusted Firmware", text, re.MULTILINE), text
    assert re.search(r"^\[\s*\d+\.\d{3}\] \[frame seq=7 HELLO_REPLY \d+ B\]", text, re.MULTILINE), text
    # The same board answers the next command, as hardware left attached would.
    done = subprocess.run(  # noqa: PLW1510  (the exit code is what is checked)
        [*CCA_HIL, "--profile", str(board.profile), "rmi", "version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "success" in done.stdout


def test_sigterm_ends_the_console_with_the_terminal_restored(
    tmp_path: Path, env: dict[str, str], board: StandaloneBoard
) -> None:
    with spawn(["--profile", str(board.profile), "console"], env, tmp_path) as term:
        before = term.termios()
        term.expect(BANNER, timeout=LAUNCH_TIMEOUT)
        term.proc.send_signal(signal.SIGTERM)
        assert term.wait() == 128 + signal.SIGTERM
        term.expect("connection closed (SIGTERM)")
        assert term.termios() == before


ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tools" / "fvp-standin"


def fvp_args(tmp_path: Path) -> list[str]:
    """The fvp-base-rme profile on the FVP stand-in, with dummy firmware images."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    (images / "bl1.bin").write_bytes(b"\0" * 20 * 1024)
    (images / "fip.bin").write_bytes(b"\0" * 900 * 1024)
    return ["-p", "fvp-base-rme", "--set", f"fvp.binary={STANDIN}", "--set", f"fvp.images_dir={images}"]


@pytest.mark.parametrize(
    ("select_args", "shown"),
    [
        ([], BANNER),  # the agent's UART by default: TF-A's boot text, then the agent
        (["--terminal", "terminal_3"], re.compile(rb"Booting RMM v\.[\s\S]*RMI ABI revision v1\.0")),
        (["--uart", "1"], re.compile(rb"BL31: Preparing for EL3 exit to normal world")),
    ],
    ids=["agent-uart", "terminal-by-name", "uart-by-number"],
)
def test_console_on_an_fvp_attaches_to_the_terminal_asked_for(
    tmp_path: Path, env: dict[str, str], select_args: list[str], shown: re.Pattern[bytes]
) -> None:
    with spawn([*fvp_args(tmp_path), "console", *select_args], env, tmp_path) as term:
        before = term.termios()
        term.expect(shown, timeout=LAUNCH_TIMEOUT)
        term.send(ESCAPE)
        assert term.wait() == 0
        assert term.termios() == before
    # The model launched for the console is stopped with it (the process guard checks it).


def test_console_on_an_fvp_session_leaves_the_model_running_for_the_next_command(
    tmp_path: Path, env: dict[str, str]
) -> None:
    fvp = fvp_args(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: PLW1510  (the exit code is what is checked)
            [*CCA_HIL, *fvp, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    started = cli("fvp", "start")
    assert started.returncode == 0, started.stderr
    try:
        with spawn([*fvp, "console", "--terminal", "terminal_3"], env, tmp_path) as term:
            term.expect(re.compile(rb"of the FVP session \(pid \d+\)"), timeout=LAUNCH_TIMEOUT)
            term.expect("RMI ABI revision v1.0")
            term.send(ESCAPE)
            assert term.wait() == 0
        version = cli("rmi", "version")
        assert version.returncode == 0, version.stderr
        assert "success" in version.stdout
    finally:
        stopped = cli("fvp", "stop")
    assert stopped.returncode == 0, stopped.stderr


def test_console_on_an_unconnected_fvp_terminal_is_exit_2_naming_the_connected_ones(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done = subprocess.run(  # noqa: PLW1510  (the exit code is what is checked)
        [*CCA_HIL, *fvp_args(tmp_path), "console", "--uart", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "cca-hil: error: terminal_2 is not connected in profile 'fvp-base-rme' "
        "(fvp.terminals.terminal_2.connect: false) (--uart); valid: 0, 1, 3"
    ]


ECHO_IMAGE = """\
    .global _start
_start:
    ldr     x1, =0x09000000         // virt's PL011 (uart0)
    adr     x2, banner
1:  ldrb    w3, [x2], #1
    cbz     w3, 2f
    str     w3, [x1]                // UARTDR
    b       1b
2:  ldr     w3, [x1, #0x18]         // UARTFR
    tbnz    w3, #4, 2b              // RXFE: nothing received
    ldr     w3, [x1]
    str     w3, [x1]                // every byte typed comes back
    b       2b
banner:
    .asciz  "echo image booted\r\n"
"""
"""A bare-metal image for QEMU virt: a banner, then every byte received is sent back."""


def needed(tool: str) -> str:
    """The tool's path; skipped without it, except in CI, whose .ci/run installs it."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed, and CI must run the QEMU tests (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def test_console_on_qemu_is_raw_both_ways(tmp_path: Path, env: dict[str, str]) -> None:
    needed("qemu-system-aarch64")
    gcc = needed("aarch64-linux-gnu-gcc")
    (tmp_path / "echo.S").write_text(ECHO_IMAGE)
    image = tmp_path / "echo.elf"
    subprocess.run(
        [gcc, "-nostdlib", "-static", "-Wl,-Ttext=0x40080000", "-o", str(image), str(tmp_path / "echo.S")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    args = ["-p", "qemu-virt", "--set", f"qemu.kernel={image}", "console"]
    with spawn(args, env, tmp_path) as term:
        before = term.termios()
        term.expect("echo image booted", timeout=LAUNCH_TIMEOUT)
        mark = term.mark()
        # Raw both ways: Ctrl-C and Ctrl-Z are bytes for the target, not signals for cca-hil.
        term.send(b"ping\x03\x1apong")
        term.expect(re.compile(rb"ping\x03\x1apong"), since=mark, plain=False)
        term.send(ESCAPE)
        assert term.wait() == 0
        assert term.termios() == before
    # QEMU, launched for the console, is stopped with it (the process guard checks it).


def test_a_hang_up_ends_the_console_and_stops_what_it_launched(tmp_path: Path, env: dict[str, str]) -> None:
    with spawn(["--profile", "board-sim", "console"], env, tmp_path) as term:
        term.expect(BANNER, timeout=LAUNCH_TIMEOUT)
        term.hangup()  # the terminal window is closed
        assert term.wait() == 128 + signal.SIGHUP
    # The board program the console launched went with it (the process guard checks it).


# -- piped, as a script drives it -------------------------------------------------------------------


def read_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float) -> bytes:
    """Read the process's stdout until ``pattern`` appears (bounded)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while pattern.search(seen) is None:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern.pattern!r} in {seen!r}"
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"output ended without {pattern.pattern!r}: {seen!r}"
            seen += chunk
    return seen


def read_to_end(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The rest of the process's stdout, up to its end (bounded)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"output did not end: {seen!r}"
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return seen
            seen += chunk


@pytest.mark.parametrize("hide", [False, True], ids=["summaries", "hidden"])
def test_piped_console_shows_frames_as_summaries_or_hides_them(
    tmp_path: Path, env: dict[str, str], hide: bool
) -> None:
    args = ["--profile", "board-sim", "console", *(["--hide-frames"] if hide else [])]
    proc = subprocess.Popen(
        [*CCA_HIL, *args],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        seen = read_until(proc, BANNER, LAUNCH_TIMEOUT)
        proc.stdin.write(hello_frame(seq=3))
        proc.stdin.flush()
        if not hide:
            seen += read_until(proc, re.compile(rb"\[frame seq=3 HELLO_REPLY \d+ B\]\r\n"), 60)
        # The end of the input ends the session once the line is quiet.
        proc.stdin.close()
        out = read_to_end(proc, 60)
        proc.wait(timeout=60)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            pipe.close()
    shown = seen + out
    assert proc.returncode == 0, err
    assert bytes([SOF]) not in shown and bytes([EOF]) not in shown
    assert b"\x1b[" not in shown  # no styling when stdout is no terminal
    assert (b"[frame" in shown) is not hide
    assert b"[agent info] session" in shown  # the agent's LOG frame is console text either way
    assert "connection closed (end of input)" in err


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["console"], "has no console"),
        (
            ["--profile", "board-sim", "console", "--uart", "2"],
            "one console line, not UART 2 (--uart); valid: 0",
        ),
        (
            ["--profile", "board-sim", "console", "--terminal", "uart9"],
            "unknown terminal 'uart9' (--terminal)",
        ),
        (["--profile", "board-sim", "console", "--uart", "1", "--terminal", "terminal_1"], "give one"),
        (["console", "--log", "."], "is a directory"),
        (["console", "--frobnicate"], "no such option"),
    ],
    ids=["model", "uart", "terminal", "both", "log-dir", "option"],
)
def test_bad_console_input_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    done = subprocess.run(  # noqa: PLW1510  (the exit code is what is checked)
        [*CCA_HIL, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cca-hil: error: ") and message in lines[0], lines[0]


# -- the filter (sans-I/O) ----------------------------------------------------------------------------


def test_filter_puts_a_frame_summary_on_a_line_of_its_own_with_timestamps() -> None:
    clock: Callable[[], float] = lambda: 1.5  # noqa: E731
    filt = ConsoleFilter(clock=clock, styled=True)
    frame = Frame(MsgType.SMC_REPLY, 9, b"\x00" * 5).encode()
    shown, logged = filt.feed(b"boot: half a line" + frame + b" rest\r\nnext\r\n")
    assert logged == (
        b"[     1.500] boot: half a line\r\n"
        b"[     1.500] [frame seq=9 SMC_REPLY 5 B]\r\n"
        b"[     1.500]  rest\r\n"
        b"[     1.500] next\r\n"
    )
    assert strip_ansi(shown) == logged and b"\x1b[2m" in shown


def test_filter_shows_a_frame_cut_short_as_damaged_after_silence() -> None:
    filt = ConsoleFilter()
    frame = Frame(MsgType.HELLO_REPLY, 1, b"x" * 20).encode()
    shown, _ = filt.feed(b"text " + frame[:10])
    assert shown == b"text " and filt.in_frame
    shown, _ = filt.flush()
    assert shown.startswith(b"\r\n[damaged frame 10 B:") and not filt.in_frame


text_chunks = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in (SOF, EOF)))


@given(
    st.lists(st.one_of(text_chunks, st.integers(0, 0xFFFF)), max_size=12),
    st.booleans(),
    st.integers(1, 7),
)
def test_filter_never_shows_frame_bytes_and_keeps_every_text_byte(
    pieces: list[bytes | int], hide: bool, cut: int
) -> None:
    wire = b"".join(
        p if isinstance(p, bytes) else Frame(MsgType.SMC_REPLY, p, b"\x01\x02").encode() for p in pieces
    )
    filt = ConsoleFilter(hide_frames=hide)
    shown = b""
    for start in range(0, len(wire), cut):  # the line delivers in arbitrary pieces
        shown += filt.feed(wire[start : start + cut])[0]
    shown += filt.flush()[0]
    assert SOF not in shown and filt.frames == sum(isinstance(p, int) for p in pieces)
    # What the terminal must show: every text byte as it came, each frame as a summary on a line of
    # its own (a line break first when the text before it stopped mid-line), or nothing when hidden.
    expected = b""
    line_start = True
    for piece in pieces:
        if isinstance(piece, bytes):
            expected += piece
            line_start = line_start if not piece else piece.endswith(b"\n")
        elif not hide:
            expected += (b"" if line_start else b"\r\n") + f"[frame seq={piece} SMC_REPLY 2 B]\r\n".encode()
            line_start = True
    assert shown == expected
