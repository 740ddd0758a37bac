"""QEMU ``virt`` as a target (kind ``qemu``): the agent as QEMU's kernel at EL2, its UART on loopback TCP.

Opening launches QEMU through :func:`cca_hil.qemu.launch` into the run folder
(``qemu.cmdline``, ``qemu.stdout.log``, ``qemu.stderr.log``, ``uart0.log`` from
the first byte), waits for the agent's banner, then runs the agent link over
the UART. Closing stops QEMU's process group (SIGTERM, then SIGKILL).

On a QEMU without RME (``-machine virt,virtualization=on -cpu max``, no
firmware) QEMU itself answers PSCI and SMCCC_VERSION on the SMC conduit and
every other function ID with -1: RMI_VERSION is not supported, so the target
has no ``rme`` capability. With ``-cpu max,x-rme=on`` (QEMU >= 8.1), ``secure=on``
and TF-A + an RMM as ``qemu.bios``, the same target drives a real RMM.

The ``qemu:`` section is the launcher's (:data:`~cca_hil.qemu.QEMU_PARAMS`) plus
the ``link:`` section every agent-driven kind accepts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from cca_hil.agent.link import LinkTimeouts
from cca_hil.agent.streams import ByteStream
from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.qemu import QEMU_PARAMS, SERIAL_LOG, QemuConfig, QemuProcess, launch
from cca_hil.targets.agent import LINK_PARAMS, AgentTarget
from cca_hil.transport.telnet import TerminalClosedError

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

AGENT_BOOT: Final = re.compile(
    rb"(?P<ready>cca-hil agent [^\r\n]* ready)"
    rb"|cca-hil agent: entered at EL(?P<el>\d)[^\r\n]*\r?\n"
    rb"|(?P<panic>PANIC: agent: [^\r\n]*\r?\n)"
)
"""What the agent prints once it runs (the banner, as BL33 on an FVP; frames may follow), or why it halted."""


RAM_BASE: Final = 0x4000_0000
"""Where ``virt`` puts RAM (one of its two stable addresses, reference §3.1)."""


class QemuTarget(AgentTarget):
    """QEMU aarch64 ``virt`` with the cca-hil agent as the kernel (or as BL33 behind TF-A + RMM)."""

    kind: ClassVar[str] = "qemu"

    PARAMS: ClassVar[dict[str, Any]] = {**QEMU_PARAMS, "link": LINK_PARAMS}

    DEFAULT_TIMEOUTS: ClassVar[LinkTimeouts] = LinkTimeouts(boot=60.0)
    """The bare agent boots in milliseconds, TF-A + RMM in seconds; a loaded host is slower still."""

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        section = {k: v for k, v in profile.params.items() if k != "link"}
        self.config = QemuConfig.from_section(section, where=profile.source)
        self.process: QemuProcess | None = None

    def _connect(self, folder: Path) -> ByteStream:
        self.process = launch(self.config, run_dir=folder)
        serial = self.process.serial
        # Frames only once the agent runs: firmware's boot text before it is console, not line noise.
        boot = self.link_settings.timeouts.boot
        try:
            match = serial.expect(AGENT_BOOT, timeout=boot)
        except TerminalClosedError:
            raise self.process.exit_error("QEMU exited before the agent's banner") from None
        except TransportError:
            log = folder / SERIAL_LOG
            tail = log.read_bytes()[-200:] if log.is_file() else b""
            raise TransportError(
                f"QEMU ran but no agent banner ('cca-hil agent … ready') came within {boot:g} s "
                f"(link.timeouts.boot); is {self.config.kernel or self.config.bios} the cca-hil agent? "
                f"last output on uart0: {tail!r} (all of it in {log})"
            ) from None
        self.console_write(match.string[: match.end()])
        if match.group("el") is not None:
            # -kernel enters at the highest EL QEMU implements (§3.2): EL1 without virtualization=on,
            # EL3 with secure=on and no firmware.
            raise ProfileError(
                f"the agent was entered at EL{match.group('el').decode()} but must run at EL2: "
                f"qemu.machine {self.config.machine!r} needs virtualization=on (and, with secure=on, "
                "EL3 firmware as qemu.bios)",
                where=self.profile.source,
            )
        if match.group("panic") is not None:
            raise TargetError(
                f"the agent halted while booting: {match.group('panic').decode(errors='replace').strip()}"
            )
        return serial

    def open(self) -> None:
        """Launch QEMU, reach the agent, and check its memory map against the RAM QEMU was given."""
        if self._opened:
            return
        super().open()
        try:
            self._check_memory()
        except BaseException:
            self.close()
            raise

    def _check_memory(self) -> None:
        ram = (RAM_BASE, RAM_BASE + self.config.memory_bytes)
        for region in self.info().regions:
            if region.kind == "dram" and region.base >= ram[0] and region.end > ram[1]:
                # The agent's map is built in (QEMU_RAM_SIZE); QEMU's RAM is the profile's.
                raise ProfileError(
                    f"qemu.memory {self.config.memory} ends at {ram[1]:#x} but the agent reports DRAM "
                    f"{region.name!r} up to {region.end:#x}: give QEMU at least "
                    f"{(region.end - RAM_BASE) >> 20}M, or build the agent with QEMU_RAM_SIZE="
                    f"{self.config.memory_bytes:#x}",
                    where=self.profile.source,
                )

    def _disconnect(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.close()

    def _facts(self) -> dict[str, str]:
        config = self.config
        facts = {
            "QEMU machine": config.machine,
            "QEMU cpu": config.cpu,
            "QEMU memory": config.memory,
            "agent image": str(config.kernel) if config.kernel is not None else "BL33 in the firmware image",
        }
        if config.bios is not None:
            facts["firmware"] = str(config.bios)
        if self.process is not None:
            process = self.process
            facts["QEMU"] = f"{process.argv[0]} {'.'.join(map(str, process.version))} (pid {process.pid})"
            facts["agent UART"] = f"127.0.0.1:{process.serial_port} (uart0, PL011 0x9000000)"
            if config.extra_args:
                facts["QEMU extra arguments"] = shlex.join(config.extra_args)
        facts["QEMU logs"] = str(self.folder)
        return facts
