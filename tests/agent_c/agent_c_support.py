"""Build the C agent and boot it in QEMU for the tests of tests/agent_c/.

The tests need Debian's ``gcc-aarch64-linux-gnu`` and ``qemu-system-arm`` (and ``make``): without
them a test is skipped locally, and fails when ``CI`` is set, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

REPO = Path(__file__).resolve().parents[2]
AGENT_DIR = REPO / "tools" / "agent"
QEMU = "qemu-system-aarch64"
CROSS_GCC = "aarch64-linux-gnu-gcc"
QEMU_RAM = "1G"
BUILD_TIMEOUT = 600.0
"""Seconds for a make run: generous, the CI machine is small and busy."""


def require_tools(*tools: str) -> None:
    """Skip (locally) or fail (with CI set) unless every tool is on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)} (apt-get install gcc-aarch64-linux-gnu qemu-system-arm make)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the agent cannot be built or booted: {message}")
    pytest.skip(message)


def make(*targets: str) -> None:
    """Run make in tools/agent (output shown when it fails)."""
    require_tools("make")
    result = subprocess.run(
        ["make", "-C", str(AGENT_DIR), *targets],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def build_host_agent() -> Path:
    """``make host``: the protocol core built natively, for the shim."""
    require_tools("cc")
    make("host")
    binary = AGENT_DIR / "build" / "host" / "cca-hil-agent-host"
    assert binary.is_file()
    return binary


def build_host_agent_asan() -> Path:
    """``make host-asan``: the host build under AddressSanitizer and UBSan (a memory error aborts it)."""
    require_tools("cc")
    make("host-asan")
    binary = AGENT_DIR / "build" / "host-asan" / "cca-hil-agent-host"
    assert binary.is_file()
    return binary


def build_qemu_image() -> Path:
    """``make PLATFORM=qemu``: the kernel image QEMU boots."""
    require_tools(CROSS_GCC, QEMU)
    make("PLATFORM=qemu")
    image = AGENT_DIR / "build" / "qemu" / "agent.elf"
    assert image.is_file()
    return image


def build_realm_selftest_image() -> Path:
    """``make realm-selftest``: the QEMU image that runs the realm payload at EL1 under a stand-in RMM."""
    require_tools(CROSS_GCC, QEMU)
    make("realm-selftest")
    image = AGENT_DIR / "build" / "qemu-selftest" / "agent.elf"
    assert image.is_file()
    return image


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def qemu_agent(image: Path, *, virtualization: bool = True) -> Iterator[serial.SerialBase]:
    """QEMU virt with the agent as its kernel, its PL011 on a loopback TCP port, opened as socket://.

    QEMU runs in its own process group, killed (and reaped) on the way out whatever happens.
    """
    machine = "virt,virtualization=on" if virtualization else "virt"
    port = _free_port()
    argv = [
        QEMU,
        "-machine",
        machine,
        "-cpu",
        "max",
        "-m",
        QEMU_RAM,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
        "-kernel",
        str(image),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    port_handle: serial.SerialBase | None = None
    try:
        deadline = time.monotonic() + 60.0
        while port_handle is None:
            try:
                port_handle = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.05)
            except serial.SerialException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise AssertionError(f"QEMU did not open its serial port: {output}") from None
                time.sleep(0.1)
        yield port_handle
    finally:
        if port_handle is not None:
            port_handle.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def read_console(port: serial.SerialBase, until: bytes, timeout: float = 60.0) -> bytes:
    """Bytes from the port until ``until`` has arrived (or the timeout passed)."""
    data = b""
    deadline = time.monotonic() + timeout
    while until not in data and time.monotonic() < deadline:
        data += port.read(256)
    return data
