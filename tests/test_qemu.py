"""The QEMU launch layer against real qemu-system-aarch64: real processes, sockets and signals.

Until the agent boots, a tiny bare-metal test image (assembled here with the
aarch64 cross toolchain) stands in for it: it prints a line with the EL it was
entered at on the PL011 and then echoes what it receives. Tests that need QEMU
or the cross toolchain skip where they are missing, and fail when ``CI`` is set.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cca_hil.errors import ProfileError, TargetError
from cca_hil.profiles import build_target, load_profile
from cca_hil.qemu import (
    AGENT_BUILD,
    CMDLINE_FILE,
    RME_MIN_VERSION,
    SERIAL_LOG,
    STDERR_LOG,
    QemuConfig,
    QemuProcess,
    QemuRejectedError,
    command_line,
    default_kernel,
    launch,
    probe_version,
)
from cca_hil.transport.telnet import TerminalClosedError

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "qemu-virt"

TEST_IMAGE_SOURCE = r"""
    .global _start
    .text
_start:
    ldr     x1, =0x09000000         // PL011 UART0 of virt
    adr     x2, banner
1:  ldrb    w3, [x2], #1
    cbz     w3, 2f
    str     w3, [x1]                // UARTDR
    b       1b
2:  mrs     x3, CurrentEL
    ubfx    x3, x3, #2, #2
    add     w3, w3, #'0'
    str     w3, [x1]
    mov     w3, #'\n'
    str     w3, [x1]
3:  ldr     w3, [x1, #0x18]         // UARTFR
    tbnz    w3, #4, 3b              // RXFE: nothing received yet
    ldr     w3, [x1]
    str     w3, [x1]                // echo
    b       3b
banner:
    .asciz  "qemu test image at EL"
"""
BANNER = b"qemu test image at EL"


def require_tool(name: str) -> str:
    """The tool's path; skip without it, but fail in CI (.ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI must run the QEMU tests (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(autouse=True)
def no_leaked_processes(process_guard: str) -> str:
    """Every process a test here starts must be gone when it ends (tests/conftest.py)."""
    return process_guard


@pytest.fixture(scope="session")
def test_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The echoing test image as an ELF linked above the DTB QEMU puts at the start of RAM."""
    gcc = require_tool("aarch64-linux-gnu-gcc")
    folder = tmp_path_factory.mktemp("qemu-image")
    source = folder / "image.S"
    source.write_text(TEST_IMAGE_SOURCE)
    image = folder / "image.elf"
    subprocess.run(
        [
            gcc,
            "-nostdlib",
            "-static",
            "-Wl,-Ttext=0x40080000",
            "-Wl,--build-id=none",
            "-o",
            str(image),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return image


@pytest.fixture
def qemu() -> str:
    """The qemu-system-aarch64 on PATH."""
    return require_tool("qemu-system-aarch64")


def make_config(image: Path | None, **section: Any) -> QemuConfig:
    """A configuration for the test image with generous timeouts for a loaded host."""
    base: dict[str, Any] = {"timeouts": {"connect": 30.0, "shutdown": 30.0, "kill": 30.0, "version": 60.0}}
    if image is not None:
        base["kernel"] = str(image)
    base.update(section)
    return QemuConfig.from_section(base, where="test")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# -- configuration and command line --------------------------------------------------------------


def test_bundled_profile_boots_the_agent_at_el2_on_virt() -> None:
    profile = load_profile(PROFILE)
    config = QemuConfig.from_section(profile.params)
    argv = command_line(config, binary="qemu-system-aarch64", serial_fd=7)
    assert argv[argv.index("-machine") + 1] == "virt,virtualization=on"
    assert argv[argv.index("-cpu") + 1] == "max"
    assert argv[argv.index("-kernel") + 1] == str(default_kernel())
    # nodelay=on: without it QEMU's Nagle and the host's delayed ACK cost ~40 ms per reply.
    assert "socket,id=agent_uart,fd=7,server=on,wait=on,nodelay=on" in argv
    assert argv[argv.index("-serial") + 1] == "chardev:agent_uart"
    assert "-bios" not in argv
    assert default_kernel() == ROOT / "tools" / "agent" / "build" / "qemu" / "agent.elf"


def test_with_firmware_and_no_kernel_the_agent_is_bl33_inside_it(tmp_path: Path) -> None:
    config = make_config(None, bios=str(tmp_path / "flash.bin"), cpu="max,x-rme=on")
    argv = command_line(config, binary="q", serial_fd=3)
    assert argv[argv.index("-bios") + 1] == str(tmp_path / "flash.bin")
    assert "-kernel" not in argv
    assert config.rme
    assert not make_config(None).rme


def test_a_missing_default_agent_names_the_build_command(tmp_path: Path) -> None:
    config = QemuConfig(kernel=tmp_path / "agent.elf", kernel_is_default=True, source="qemu-virt.yaml")
    with pytest.raises(ProfileError, match="is not built") as info:
        config.check_images()
    assert AGENT_BUILD in str(info.value)
    assert info.value.exit_code == 2


BAD_VALUES = [
    ("memory", ["qemu.memory=1Q"], ["qemu.memory '1Q'", "512M"]),
    ("smp", ["qemu.smp=0"], ["qemu.smp must be 1 or more"]),
    ("machine-with-space", ["qemu.machine=virt secure=on"], ["qemu.machine", "one word"]),
    ("timeout", ["qemu.timeouts.shutdown=-1"], ["qemu.timeouts.shutdown must be positive"]),
    ("unknown-key", ["qemu.colour=blue"], ["unknown key 'qemu.colour'", "valid: ", "kernel"]),
    ("wrong-type", ["qemu.smp=many"], ["qemu.smp must be int"]),
    (
        "missing-kernel",
        ["qemu.kernel=no-such-agent.elf"],
        ["qemu.kernel", "no-such-agent.elf", "no such file"],
    ),
    ("missing-bios", ["qemu.bios=no-such-flash.bin"], ["qemu.bios", "no such file"]),
    ("binary-path", ["qemu.binary=./no/qemu"], ["qemu.binary './no/qemu': no such file"]),
    ("missing-workdir", ["qemu.workdir=no-such-dir"], ["qemu.workdir", "no-such-dir", "no such directory"]),
]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    env["CCA_HIL_RUNS"] = str(cwd / "runs")
    return subprocess.run(
        [sys.executable, "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def _one_clear_line(stderr: str, words: list[str]) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cca-hil: error: "), stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(("case", "sets", "words"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_profile_values_are_exit_2_with_one_line(
    tmp_path: Path, case: str, sets: list[str], words: list[str]
) -> None:
    # Every value is refused before QEMU would start: a placeholder image is enough.
    (tmp_path / "agent.elf").write_bytes(b"\0")
    args = ["--profile", PROFILE]
    if case != "missing-kernel":
        args += ["--set", "qemu.kernel=agent.elf"]
    for assignment in sets:
        args += ["--set", assignment]
    proc = _cli(*args, "info", cwd=tmp_path)
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    _one_clear_line(proc.stderr, words)


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (["qemu.cpu=cortex-z99"], ["check qemu.cpu", "cortex-z99"]),
        (["qemu.machine=virt,colour=blue"], ["check qemu.machine", "colour"]),
        (["qemu.extra=[-frobnicate]"], ["check qemu.extra", "-frobnicate: invalid option"]),
    ],
    ids=["cpu", "machine-property", "extra-option"],
)
def test_values_qemu_refuses_are_exit_2_naming_the_key(
    tmp_path: Path, qemu: str, test_image: Path, sets: list[str], words: list[str]
) -> None:
    args = ["--profile", PROFILE, "--set", f"qemu.kernel={test_image}"]
    for assignment in sets:
        args += ["--set", assignment]
    proc = _cli(*args, "info", cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    _one_clear_line(proc.stderr, ["QEMU refused the profile's command line", *words])


def test_a_qemu_not_on_path_is_a_target_error_naming_the_package(tmp_path: Path) -> None:
    config = make_config(tmp_path / "image.elf", binary="no-such-qemu-system-aarch64")
    (tmp_path / "image.elf").write_bytes(b"\0")
    with pytest.raises(TargetError, match=r"no-such-qemu-system-aarch64 is not on PATH .*qemu-system-arm"):
        launch(config, run_dir=tmp_path / "run")


# -- lifecycle -------------------------------------------------------------------------------------


def test_guest_output_is_logged_from_its_first_byte(tmp_path: Path, qemu: str, test_image: Path) -> None:
    run = tmp_path / "run"
    with launch(make_config(test_image), run_dir=run) as process:
        match = process.serial.expect(re.compile(re.escape(BANNER) + rb"(\d)\n"), timeout=60)
        assert match.group(1) == b"2", "virtualization=on without secure=on enters a -kernel ELF at EL2"
        assert process.returncode is None
    assert (run / SERIAL_LOG).read_bytes().startswith(BANNER + b"2\n")
    cmdline = (run / CMDLINE_FILE).read_text()
    assert f"127.0.0.1:{process.serial_port}" in cmdline and "server=on,wait=on" in cmdline
    # QEMU held the guest until cca-hil was connected (wait=on): it said so on stderr.
    assert "waiting for connection" in (run / STDERR_LOG).read_text()


def test_the_serial_line_carries_bytes_both_ways(tmp_path: Path, qemu: str, test_image: Path) -> None:
    with launch(make_config(test_image), run_dir=tmp_path) as process:
        process.serial.expect(BANNER, timeout=60)
        process.serial.write(b"ping\x1e\x00\xff")
        process.serial.expect(b"ping\x1e\x00\xff", timeout=60)
    assert (tmp_path / SERIAL_LOG).read_bytes().endswith(b"ping\x1e\x00\xff")


def test_close_stops_the_whole_process_group(tmp_path: Path, qemu: str, test_image: Path) -> None:
    process = launch(make_config(test_image), run_dir=tmp_path)
    try:
        process.serial.expect(BANNER, timeout=60)
    finally:
        returncode = process.close()
    # QEMU ends on SIGTERM by itself ("terminating on signal 15"), exit status 0.
    assert returncode == 0
    assert group_gone(process.pid)
    assert "terminating on signal 15" in (tmp_path / STDERR_LOG).read_text()
    assert process.close() == 0, "close is idempotent"


def test_a_qemu_that_does_not_stop_on_sigterm_is_killed(
    tmp_path: Path, qemu: str, test_image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(test_image, timeouts={"shutdown": 0.5, "kill": 30.0, "connect": 30.0})
    process = launch(config, run_dir=tmp_path)
    try:
        process.serial.expect(BANNER, timeout=60)
        # A stopped process keeps SIGTERM pending: a hung emulator.
        os.kill(process.pid, signal.SIGSTOP)
    finally:
        with caplog.at_level(logging.WARNING, logger="cca_hil.launch"):
            returncode = process.close()
    assert returncode == -signal.SIGKILL
    assert group_gone(process.pid)
    assert "ignored SIGTERM" in caplog.text


def test_qemu_killed_under_the_link_is_reported_with_its_status(
    tmp_path: Path, qemu: str, test_image: Path
) -> None:
    with launch(make_config(test_image), run_dir=tmp_path) as process:
        process.serial.expect(BANNER, timeout=60)
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(TerminalClosedError, match="QEMU killed by SIGKILL"):
            process.serial.expect(b"never printed", timeout=60)
        error = process.exit_error("QEMU went away")
    assert not isinstance(error, QemuRejectedError)
    assert "QEMU killed by SIGKILL" in str(error)


def test_a_failed_start_leaves_no_process(tmp_path: Path, qemu: str, test_image: Path) -> None:
    profile = load_profile(
        PROFILE, [f"qemu.kernel={test_image}", "qemu.cpu=cortex-z99", "link.timeouts.boot=60"]
    )
    target = build_target(profile, run_dir=tmp_path)
    with pytest.raises(QemuRejectedError, match="cortex-z99"):
        target.open()
    assert (tmp_path / CMDLINE_FILE).is_file()
    # The autouse process guard checks that no QEMU is left.


def test_process_ids_are_reported_while_running(tmp_path: Path, qemu: str, test_image: Path) -> None:
    process = QemuProcess(make_config(test_image), binary=Path(qemu), run_dir=tmp_path, version=(0, 0, 0))
    try:
        assert not group_gone(process.pid)
        assert process.status() is None
    finally:
        process.close()
    status = process.status()
    assert status is not None and "QEMU exited with status 0" in status


def test_an_image_that_never_prints_the_agent_banner_is_a_clear_target_error(
    tmp_path: Path, qemu: str, test_image: Path
) -> None:
    profile = load_profile(PROFILE, [f"qemu.kernel={test_image}", "link.timeouts.boot=3"])
    target = build_target(profile, run_dir=tmp_path)
    with pytest.raises(TargetError, match="no agent banner") as info:
        target.open()
    assert info.value.exit_code == 3
    assert "link.timeouts.boot" in str(info.value)
    assert "qemu test image at EL2" in str(info.value), "the last output is shown"


LAUNCHER = """\
import sys
import time
from pathlib import Path
from cca_hil.qemu import QemuConfig, launch

config = QemuConfig.from_section({"kernel": sys.argv[1], "timeouts": {"connect": 60.0, "version": 60.0}})
process = launch(config, run_dir=Path(sys.argv[2]))
process.serial.expect(b"qemu test image", timeout=120)
print(process.pid, flush=True)
sys.stdin.read()  # until the test kills this process
"""


def test_a_qemu_whose_cca_hil_is_killed_outright_stops_too(
    tmp_path: Path, qemu: str, test_image: Path
) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(test_image), str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None and launcher.stdin is not None
    try:
        qemu_pid = int(launcher.stdout.readline())
        assert not group_gone(qemu_pid)
    finally:
        # SIGKILL: no close(), no finally, no atexit in the launcher can run.
        launcher.kill()
        launcher.wait(timeout=60)
        launcher.stdout.close()
        launcher.stdin.close()
    # The kernel sends QEMU SIGTERM (PR_SET_PDEATHSIG); wait for that, bounded.
    deadline = time.monotonic() + 120.0
    while not group_gone(qemu_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_gone(qemu_pid), "QEMU outlived the cca-hil that started it"


def test_rme_on_a_qemu_without_it_is_exit_2_naming_the_release(tmp_path: Path, qemu: str) -> None:
    version = probe_version(qemu, timeout=60)
    if version[:2] >= RME_MIN_VERSION:
        pytest.skip(f"this QEMU ({version}) emulates RME")
    (tmp_path / "agent.elf").write_bytes(b"\0")
    proc = _cli(
        "--profile",
        PROFILE,
        "--set",
        "qemu.kernel=agent.elf",
        "--set",
        "qemu.cpu=max,x-rme=on",
        "info",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    _one_clear_line(
        proc.stderr, ["qemu.cpu 'max,x-rme=on' asks for FEAT_RME", "from 8.1 on", ".".join(map(str, version))]
    )


def test_qemu_runs_in_the_run_folder_or_the_given_workdir(
    tmp_path: Path, qemu: str, test_image: Path
) -> None:
    workdir = tmp_path / "images"
    workdir.mkdir()
    for config, expected in (
        (make_config(test_image), tmp_path / "run"),
        (make_config(test_image, workdir=str(workdir)), workdir),
    ):
        with launch(config, run_dir=tmp_path / "run") as process:
            process.serial.expect(BANNER, timeout=60)
            assert Path(f"/proc/{process.pid}/cwd").resolve() == expected.resolve()
