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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cca_hil.agent.link import LinkTimeouts
from cca_hil.agent.streams import ByteStream
from cca_hil.fvp import FVP_PARAMS, FvpConfig, FvpLauncher, FvpProcess, FvpSession, load_session
from cca_hil.targets.agent import LINK_PARAMS, AgentTarget
from cca_hil.targets.base import Capability
from cca_hil.transport.telnet import TerminalClient

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

AGENT_BANNER = re.compile(rb"cca-hil agent [^\r\n]* ready")
"""What the agent prints once BL31 has entered it; frames may follow."""

SESSION_FILE = "fvp-session.json"


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

    def _connect(self, folder: Path) -> ByteStream:
        state = session_file(folder)
        if state is not None:
            session = load_session(state)
            if session.is_running():
                return self._attach(session, folder)
        self.process = FvpLauncher(self.config, run_dir=folder).start()
        terminal = self.process.agent_terminal
        # Frames only once the agent runs: TF-A's boot text before it is console, not line noise.
        match = terminal.expect(AGENT_BANNER, timeout=self.link_settings.timeouts.boot)
        self.console_write(match.string[: match.end()])
        return terminal

    def _attach(self, session: FvpSession, folder: Path) -> ByteStream:
        """Use a model that ``fvp start`` left running; its banner is long gone, HELLO finds the agent."""
        self.session = session
        self._terminal = session.terminal(
            session.agent_uart, log_dir=folder, connect_timeout=self.config.timeouts.connect
        )
        return self._terminal

    def _disconnect(self) -> None:
        terminal, self._terminal = self._terminal, None
        process, self.process = self.process, None
        try:
            if terminal is not None:
                terminal.close()
        finally:
            if process is not None:
                process.close()

    def _extra_capabilities(self) -> frozenset[str]:
        return frozenset({Capability.MEC}) if self.config.mec else frozenset()

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
        facts["FVP logs"] = str(self.folder)
        return facts
