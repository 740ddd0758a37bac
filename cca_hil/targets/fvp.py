"""An Arm FVP as a target (kind ``fvp``): the model launched (or found running), the agent on its UART.

Opening launches the model through :class:`~cca_hil.fvp.FvpLauncher` into the
run folder (``fvp.cmdline``, ``fvp.stdout.log``, ``fvp.stderr.log``, one
``uartN.log`` per connected terminal, from the first byte), waits for the
agent's banner on the agent UART, then runs the agent link over that terminal.
A model that an earlier ``cca-hil fvp start`` left running is used instead when
its session file (``fvp-session.json``) is in the run folder or in the folder
that holds it (the runs root); it is left running at close.

The ``fvp:`` section is the launcher's (:data:`~cca_hil.fvp.FVP_PARAMS`) plus
the ``link:`` section every agent-driven kind accepts.

With ``fvp.iris: true`` the model runs its Iris debug server (loopback only)
and the target connects to it as well (:class:`IrisView`): debug-view physical
reads through any PAS (``read_physical``; ``encryption`` when the model's MPE is
on, ``bp.mpe.enable``) and the GPC registers and tables (``gpt_read``: ``gpt
show``, ``check: pas``). Without it those raise :class:`DebugServerDisabledError`
naming the profile key; everything else goes through the agent either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from cca_hil.agent.link import LinkTimeouts
from cca_hil.agent.streams import ByteStream
from cca_hil.arch.gpt import (
    Gpccr,
    Gptbr,
    GptDescriptorError,
    GptFeatures,
    L0Table,
    decode_l0,
    walk,
)
from cca_hil.arch.pas import Pas
from cca_hil.errors import CapabilityError, CcaHilError, TargetError
from cca_hil.fvp import FVP_PARAMS, IRIS_PORT, FvpConfig, FvpLauncher, FvpProcess, FvpSession, load_session
from cca_hil.targets.agent import LINK_PARAMS, AgentTarget
from cca_hil.targets.base import Capability
from cca_hil.transport.iris import IrisClient, IrisError, MemorySpace
from cca_hil.transport.telnet import TerminalClient

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

AGENT_BANNER = re.compile(rb"cca-hil agent [^\r\n]* ready")
"""What the agent prints once BL31 has entered it; frames may follow."""

SESSION_FILE = "fvp-session.json"

IRIS_KEY: Final = "fvp.iris"
"""The profile key that starts the model's Iris debug server."""
IRIS_CLIENT_NAME: Final = "client.cca_hil"
_PHYSICAL_SPACE = re.compile(r"^\s*physical\s+memory\s*\(\s*(?P<pas>[^)]*?)\s*\)\s*$", re.IGNORECASE)
_SPACE_PAS: Final = {
    "non secure": Pas.NONSECURE,
    "non-secure": Pas.NONSECURE,
    "nonsecure": Pas.NONSECURE,
    "secure": Pas.SECURE,
    "root": Pas.ROOT,
    "realm": Pas.REALM,
}
"""Which PAS a ``Physical Memory (…)`` space reads through. Root/Realm names are from a third-party
script (reference §1.5, unverified): spaces are matched by pattern and the listed names reported."""
_CPU_NAME = re.compile(r"\.cluster(\d+)\.cpu(\d+)$")


class DebugServerDisabledError(CapabilityError):
    """A debug-view operation on an FVP whose profile does not start the Iris server."""

    def __init__(self, capability: str, target: str) -> None:
        super().__init__(capability, target)
        self.args = (
            f"{self.args[0]}: the FVP's Iris debug server is not enabled "
            f"(set {IRIS_KEY}: true in the profile, or --set {IRIS_KEY}=true)",
        )


def space_pas(name: str) -> Pas | None:
    """The PAS a space named ``name`` reads through (``Physical Memory (Realm)`` → REALM), else None."""
    match = _PHYSICAL_SPACE.match(name)
    if match is None:
        return None
    return _SPACE_PAS.get(re.sub(r"\s+", " ", match.group("pas").lower()))


@dataclass
class IrisView:
    """The model seen through its Iris server: one core's physical memory spaces and GPC registers."""

    client: IrisClient
    cpu: int
    cpu_name: str
    spaces: dict[Pas, int]
    listed: tuple[MemorySpace, ...]
    """Every memory space the core listed, as named by the server (reported in the target's facts)."""
    registers: dict[str, int]
    """rscId of each register the view uses that the core lists (GPCCR_EL3, GPTBR_EL3)."""

    @classmethod
    def open(cls, port: int, *, timeout: float) -> IrisView:
        """Connect to 127.0.0.1:``port``, register, and find the first core with physical memory spaces."""
        client = IrisClient.connect(port, timeout=timeout, connect_timeout=timeout)
        try:
            client.register(IRIS_CLIENT_NAME)
            cores = sorted(
                (tuple(int(n) for n in m.groups()), i.inst_id, i.name)
                for i in client.instances()
                if (m := _CPU_NAME.search(i.name)) is not None
            )
            for _, inst, name in cores:
                listed = tuple(client.memory_spaces(inst))
                spaces = {pas: s.space_id for s in listed if (pas := space_pas(s.name)) is not None}
                if not spaces:
                    continue
                wanted = ("GPCCR_EL3", "GPTBR_EL3")
                try:
                    registers = {r.name: r.rsc_id for r in client.resources(inst) if r.name in wanted}
                except IrisError:
                    registers = {}
                return cls(client, inst, name, spaces, listed, registers)
            names = ", ".join(name for _, _, name in cores) or "none"
            raise TargetError(
                f"the Iris server on port {port} lists no core with physical memory (cores: {names})"
            )
        except BaseException:
            client.close()
            raise

    def read(self, pa: int, size: int, pas: Pas) -> bytes:
        """``size`` bytes at ``pa`` through ``pas``'s physical memory space."""
        space = self.spaces.get(pas)
        if space is None:
            listed = ", ".join(s.name for s in self.listed)
            raise TargetError(
                f"the Iris server lists no physical memory space for the {pas.value} PAS ({listed})"
            )
        return self.client.read(self.cpu, space, pa, size)

    @property
    def has_gpc_registers(self) -> bool:
        """True when the core lists both GPC registers."""
        return {"GPCCR_EL3", "GPTBR_EL3"} <= self.registers.keys() and Pas.ROOT in self.spaces

    def gpc_registers(self) -> tuple[int, int]:
        """GPCCR_EL3 and GPTBR_EL3 as the core holds them."""
        gpccr, gptbr = self.client.read_registers(
            self.cpu, [self.registers["GPCCR_EL3"], self.registers["GPTBR_EL3"]]
        )
        return gpccr, gptbr

    def close(self) -> None:
        """Close the connection (the server unregisters the client)."""
        self.client.close()


def session_file(run_dir: Path) -> Path | None:
    """The ``fvp start`` state file a target in ``run_dir`` uses: in the folder, else in its parent."""
    for folder in (run_dir, run_dir.parent):
        candidate = folder / SESSION_FILE
        if candidate.is_file():
            return candidate
    return None


class FvpTarget(AgentTarget):
    """FVP_Base_RevC-2xAEMvA with RME (or a stand-in), TF-A + RMM, the cca-hil agent as BL33."""

    kind: ClassVar[str] = "fvp"

    PARAMS: ClassVar[dict[str, Any]] = {**FVP_PARAMS, "link": LINK_PARAMS}

    DEFAULT_TIMEOUTS: ClassVar[LinkTimeouts] = LinkTimeouts(boot=120.0)
    """A model boots TF-A, the RMM and the agent in simulated time: allow it two minutes."""

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        section = {k: v for k, v in profile.params.items() if k != "link"}
        self.config = FvpConfig.from_section(section, where=profile.source)
        self.process: FvpProcess | None = None
        self.session: FvpSession | None = None
        self._terminal: TerminalClient | None = None
        self.iris: IrisView | None = None

    def _lease_identity(self) -> str | None:
        """A model left running by ``fvp start`` (its state file); a model this target launches is private."""
        state = session_file(self.run_dir) if self.run_dir is not None else None
        if state is None:
            return None
        try:
            running = load_session(state).is_running()
        except CcaHilError:
            return None  # a broken state file: opening reports it
        return f"fvp:{state.resolve()}" if running else None

    def _connect(self, folder: Path) -> ByteStream:
        state = session_file(folder)
        if state is not None:
            session = load_session(state)
            if session.is_running():
                stream = self._attach(session, folder)
                self._open_iris(session.ports)
                return stream
        self.process = FvpLauncher(self.config, run_dir=folder).start()
        self._open_iris(self.process.ports)
        terminal = self.process.agent_terminal
        # Frames only once the agent runs: TF-A's boot text before it is console, not line noise.
        match = terminal.expect(AGENT_BANNER, timeout=self.link_settings.timeouts.boot)
        self.console_write(match.string[: match.end()])
        return terminal

    def _open_iris(self, ports: Mapping[str, int]) -> None:
        if not self.config.iris:
            return
        port = ports.get(IRIS_PORT)
        if port is None:
            raise TargetError(f"{IRIS_KEY} is set but the model printed no Iris port (is -p honoured?)")
        self.iris = IrisView.open(int(port), timeout=self.config.timeouts.connect)

    def _attach(self, session: FvpSession, folder: Path) -> ByteStream:
        """Use a model that ``fvp start`` left running; its banner is long gone, HELLO finds the agent."""
        self.session = session
        self._terminal = session.terminal(
            session.agent_uart, log_dir=folder, connect_timeout=self.config.timeouts.connect
        )
        return self._terminal

    def _disconnect(self) -> None:
        iris, self.iris = self.iris, None
        terminal, self._terminal = self._terminal, None
        process, self.process = self.process, None
        try:
            if iris is not None:
                iris.close()
            if terminal is not None:
                terminal.close()
        finally:
            if process is not None:
                process.close()

    def _extra_capabilities(self) -> frozenset[str]:
        caps = {Capability.MEC} if self.config.mec else set()
        if self.iris is not None:
            if self.iris.has_gpc_registers:
                caps.add(Capability.GPT_READ)
            if self.encryption_enabled and {Pas.NONSECURE, Pas.REALM} <= self.iris.spaces.keys():
                caps.add(Capability.ENCRYPTION)
        return frozenset(caps)

    @property
    def encryption_enabled(self) -> bool:
        """True when the profile turns the model's memory protection engine on (``bp.mpe.enable``)."""
        value = self.config.param("bp.mpe.enable")
        return value is not None and value.strip().lower() in ("1", "true")

    # -- the debug view (Iris) --------------------------------------------------------------------

    def _iris(self, capability: str) -> IrisView:
        if self.iris is None:
            if not self.config.iris:
                raise DebugServerDisabledError(capability, self.name)
            raise TargetError(f"target {self.name!r} is not open")
        return self.iris

    def read_physical(self, pa: int, size: int, pas: Pas, mecid: int = 0) -> bytes:
        """A debug read through the Iris server's physical memory space for ``pas`` (past the GPC).

        The physical spaces carry no MECID: a read under another MECID than the
        default is not possible this way.
        """
        iris = self._iris(Capability.ENCRYPTION)
        if mecid:
            raise CapabilityError(
                f"{Capability.ENCRYPTION} under MECID {mecid} (Iris physical spaces)", self.name
            )
        return iris.read(pa, size, pas)

    def gpt_registers(self) -> tuple[int, int]:
        iris = self._iris(Capability.GPT_READ)
        if not iris.has_gpc_registers:
            raise CapabilityError(
                f"{Capability.GPT_READ} (the Iris core lists no GPCCR_EL3/GPTBR_EL3)", self.name
            )
        return iris.gpc_registers()

    def gpt_tables(self) -> dict[int, bytes]:
        """The L0 table GPTBR_EL3 names and every L1 table its Table descriptors point to, read as Root."""
        gpccr_value, gptbr_value = self.gpt_registers()
        iris = self._iris(Capability.GPT_READ)
        gpccr = Gpccr.decode(gpccr_value)
        geometry = gpccr.geometry
        l0_base = Gptbr.decode(gptbr_value).l0_address
        l0 = iris.read(l0_base, geometry.l0_table_size, Pas.ROOT)
        tables = {l0_base: l0}
        for index in range(geometry.l0_entries):
            value = int.from_bytes(l0[8 * index : 8 * index + 8], "little")
            try:
                descriptor = decode_l0(value, gpccr=gpccr, features=self._gpt_features())
            except GptDescriptorError:
                continue  # an invalid descriptor: the decoder reports it from the L0 bytes
            if isinstance(descriptor, L0Table) and descriptor.l1_address not in tables:
                tables[descriptor.l1_address] = iris.read(
                    descriptor.l1_address, geometry.l1_table_size, Pas.ROOT
                )
        return tables

    def gpt_pas(self, pa: int) -> Pas:
        """The PAS the GPT in memory gives ``pa``: a walk reading only its descriptors through Root."""
        gpccr, gptbr = self.gpt_registers()
        iris = self._iris(Capability.GPT_READ)

        def read64(address: int) -> int:
            return int.from_bytes(iris.read(address, 8, Pas.ROOT), "little")

        result = walk(pa, gpccr=gpccr, gptbr=gptbr, read64=read64, features=self._gpt_features())
        return Pas.NONE if result.pas == "fault" else Pas(result.pas)

    def _gpt_features(self) -> GptFeatures:
        return GptFeatures(pa_bits=self.info().pa_bits)

    def _facts(self) -> dict[str, str]:
        facts: dict[str, str] = {"agent UART": f"uart{self.config.agent_uart}"}
        if self.process is not None:
            facts["FVP"] = f"{self.process.argv[0]} (pid {self.process.pid}, started by this run)"
            facts["FVP version"] = str(self.process.version) if self.process.version else "not checked"
            ports = self.process.ports
        elif self.session is not None:
            facts["FVP"] = f"{self.session.argv[0]} (pid {self.session.pid}, session from 'fvp start')"
            ports = dict(self.session.ports)
        else:
            ports = {}
        facts["FVP ports"] = ", ".join(f"{name}={port}" for name, port in sorted(ports.items())) or "none"
        if self.iris is not None:
            facts["Iris"] = f"{self.iris.cpu_name} (instId {self.iris.cpu})"
            facts["Iris memory spaces"] = ", ".join(f"{s.space_id}={s.name}" for s in self.iris.listed)
        else:
            facts["Iris"] = f"not enabled ({IRIS_KEY}: true starts the debug server)"
        facts["FVP logs"] = str(self.folder)
        return facts
