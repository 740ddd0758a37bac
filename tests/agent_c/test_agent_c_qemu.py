"""The bare-metal agent, cross-built with -Wall -Wextra -Werror, boots in QEMU and speaks the protocol.

QEMU (virt, ``-cpu max``, virtualization=on) enters the kernel at EL2 without EL3 firmware and
answers SMCs itself: PSCI is implemented, every other FID returns -1 (so RMI is NOT_SUPPORTED).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_c_support import build_qemu_image, qemu_agent, read_console

from cca_hil.agent.errors import MemoryFaultError
from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.protocol import AgentCaps, FillStep, ReadStep, SmcStep, WriteStep
from cca_hil.arch.esr import Esr, ExceptionClass, FaultStatus
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.targets.base import AccessOp

PSCI_VERSION = 0x8400_0000
SMCCC_NOT_SUPPORTED = (1 << 64) - 1
SCRATCH = 0x4200_0000
"""QEMU RAM (1 GiB at 0x40000000) well past the agent's image."""
NO_MEMORY = 0x1_0000_0000
"""Nothing at 4 GiB on virt with 1 GiB of RAM: the bus answers with a decode error."""
TIMEOUTS = LinkTimeouts(boot=60.0, handshake=1.0, request=10.0, bulk=20.0)
"""Generous: QEMU on a loaded 2-core machine."""


@pytest.fixture(scope="module")
def image() -> Path:
    return build_qemu_image()


def test_agent_boots_at_el2_prints_its_banner_and_answers_psci_version(
    process_guard: str, image: Path
) -> None:
    console: list[bytes] = []
    with qemu_agent(image) as port, AgentLink(port, timeouts=TIMEOUTS, console=console.append) as link:
        hello = link.hello()
        assert hello.major == 1
        assert "bare metal" in hello.agent
        assert hello.caps & (AgentCaps.SMC | AgentCaps.MEMORY | AgentCaps.ACCESS | AgentCaps.BATCH)
        assert not hello.caps & AgentCaps.REALM
        version = link.smc(PSCI_VERSION)
        # QEMU 7.x implements PSCI 1.1 (major in bits 31:16, minor in 15:0); at least 1.0 anyway.
        assert version[0] >> 16 == 1
        assert link.smc(RMI_1_0["version"].fid)[0] == SMCCC_NOT_SUPPORTED
    text = b"".join(console)
    assert b"cca-hil agent 1.0 (qemu) boot " in text
    assert b"at EL2: ready" in text


def test_memory_write_read_fill_and_batch_on_qemu_ram(process_guard: str, image: Path) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(10_000))
    with qemu_agent(image) as port, AgentLink(port, timeouts=TIMEOUTS) as link:
        info = link.info()
        assert any(r.base == 0x4000_0000 and r.kind == "dram" for r in info.regions)
        assert dict(info.platform)["non_memory"] == NO_MEMORY
        link.write(SCRATCH + 1, data)  # unaligned start: byte accesses until aligned
        assert link.read(SCRATCH + 1, len(data)) == data
        link.fill(SCRATCH, 64, b"\xaa\x55\x01")
        assert link.read(SCRATCH, 7) == b"\xaa\x55\x01\xaa\x55\x01\xaa"
        results = link.batch(
            [
                WriteStep(SCRATCH + 0x100, b"batch"),
                SmcStep(PSCI_VERSION, results=1),
                ReadStep(SCRATCH + 0x100, 5),
                FillStep(SCRATCH + 0x200, 8, b"\x11"),
                ReadStep(SCRATCH + 0x200, 8),
            ]
        )
        assert results[2] == b"batch"
        assert results[4] == b"\x11" * 8
        assert isinstance(results[1], tuple) and results[1][0] >> 16 == 1


def test_probe_of_no_memory_is_a_fault_with_qemus_syndrome_and_the_agent_keeps_answering(
    process_guard: str,
    image: Path,
) -> None:
    with qemu_agent(image) as port, AgentLink(port, timeouts=TIMEOUTS) as link:
        link.write(SCRATCH, (0x1122334455667788).to_bytes(8, "little"))
        probes: tuple[tuple[int, AccessOp], ...] = ((8, "read"), (4, "write"), (1, "read"))
        for size, op in probes:
            result = link.access(NO_MEMORY + 0x40, op, size, 0x5A)
            assert result.fault is not None, (size, op)
            esr = Esr(result.fault.esr)
            # A data abort taken at EL2 from EL2, a synchronous external abort (QEMU's decode error).
            assert esr.exception_class is ExceptionClass.DATA_ABORT_SAME
            assert result.fault.exception_class == ExceptionClass.DATA_ABORT_SAME
            assert esr.fault_status == FaultStatus.SYNC_EXTERNAL
            assert esr.wnr is (op == "write")
            assert result.fault.far == NO_MEMORY + 0x40
            assert not result.fault.gpf
            assert result.fault.description == "synchronous external abort"
            # Resumed: the agent answers the next request, with memory as it was.
            assert link.access(SCRATCH, "read", 8).value == 0x1122334455667788
        assert link.smc(PSCI_VERSION)[0] >> 16 == 1


def test_read_of_no_memory_answers_fault_and_nothing_else_changes(process_guard: str, image: Path) -> None:
    with qemu_agent(image) as port, AgentLink(port, timeouts=TIMEOUTS) as link:
        with pytest.raises(MemoryFaultError) as err:
            link.read(NO_MEMORY, 64)
        assert "synchronous external abort" in str(err.value)
        assert link.smc(PSCI_VERSION)[0] >> 16 == 1


def test_agent_entered_at_el1_says_so_and_halts(process_guard: str, image: Path) -> None:
    # Without virtualization=on QEMU starts the kernel at EL1: the agent must refuse, not run.
    with qemu_agent(image, virtualization=False) as port:
        text = read_console(port, b"halting")
    assert b"cca-hil agent: entered at EL1; it must run at EL2" in text
    assert b"ready" not in text
