"""The modelled Realm Management Monitor: RMI 1.0 commands with every failure condition in order.

RMM 1.0 (DEN0137 1.0-rel0) part B. Each handler evaluates the conditions of
its command in the order of ``arch.rmi_1_0`` and reports the first that holds
by its spec label (:attr:`Rmm.last_condition`), so that results, tests and the
conformance suite all speak of ``rd_state`` or ``rtt_walk`` rather than of a
bare status code.
"""

from __future__ import annotations

from collections.abc import Callable

from cca_hil.arch.rmi import (
    GRANULE_SIZE,
    SMCCC_NOT_SUPPORTED,
    GranuleState,
    RmiCommand,
    RmiStatus,
    pack_return,
)
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.model.gpt import GranuleProtection
from cca_hil.model.memory import PhysicalMemory
from cca_hil.model.monitor import Monitor
from cca_hil.model.platform import PlatformConfig, RmmConfig

Regs = tuple[int, int, int, int, int]
Handler = Callable[[tuple[int, ...]], Regs]

_SHIFT = 12
_ALIGN = GRANULE_SIZE - 1
_SUCCESS: Regs = (0, 0, 0, 0, 0)


class Rmm:
    """RMI 1.0 state machine over the platform's memory and granule protection."""

    def __init__(
        self,
        *,
        config: RmmConfig,
        platform: PlatformConfig,
        memory: PhysicalMemory,
        gpt: GranuleProtection,
        monitor: Monitor,
    ) -> None:
        self.config = config
        self.platform = platform
        self.memory = memory
        self.gpt = gpt
        self.monitor = monitor
        self.interface = RMI_1_0
        self.granules: dict[int, GranuleState] = {}
        """State of every granule that is not UNDELEGATED, by granule index."""
        self._delegable = platform.delegable_ranges()
        self.last_condition: str | None = None
        """Spec label of the failure condition the last command reported (None on success)."""
        self.calls = 0
        self._handlers: dict[int, Handler] = {}
        self._fail_x0: dict[tuple[str, str], int] = {}
        for command in self.interface.commands:
            handler = getattr(self, f"_rmi_{command.name}", None)
            if handler is not None:
                self._handlers[command.fid] = handler
            for cond in command.conditions:
                if isinstance(cond.index, int):
                    self._fail_x0[command.name, cond.id] = pack_return(cond.status, cond.index)

    # -- dispatch ------------------------------------------------------------

    def handle(self, fid: int, args: tuple[int, ...]) -> Regs:
        """Execute one RMI call (X1.. in ``args``); return X0..X4."""
        self.calls += 1
        self.last_condition = None
        handler = self._handlers.get(fid)
        if handler is None:
            return (SMCCC_NOT_SUPPORTED, 0, 0, 0, 0)
        if len(args) < 6:
            args = (*args, *(0,) * (6 - len(args)))
        return handler(args)

    def _fail(self, command: RmiCommand, cond_id: str, *outputs: int, index: int | None = None) -> Regs:
        """X0..X4 for failure condition ``cond_id`` of ``command``; ``index`` when the rule is dynamic."""
        cond = command.condition(cond_id)
        self.last_condition = cond.label
        if index is None:
            x0 = self._fail_x0[command.name, cond.id]
        else:
            x0 = pack_return(cond.status, index)
        out = (*outputs, 0, 0, 0, 0)
        return (x0, out[0], out[1], out[2], out[3])

    # -- granule helpers -----------------------------------------------------

    def is_delegable(self, pa: int) -> bool:
        """PaIsDelegable: ``pa`` lies in DRAM the RMM tracks (RMM 1.0 A2.2.2)."""
        for base, end in self._delegable:
            if base <= pa < end:
                return True
        return False

    def granule_state(self, pa: int) -> GranuleState:
        """Abstract state of the granule containing ``pa``."""
        return self.granules.get(pa >> _SHIFT, GranuleState.UNDELEGATED)

    # -- RMI_VERSION / RMI_FEATURES ------------------------------------------

    def _rmi_version(self, args: tuple[int, ...]) -> Regs:
        """RMI_VERSION (B3.3.21): SUCCESS iff a supported revision is compatible with ``req``."""
        req = args[0]
        supported = self.config.version
        if req >> 31 == 0 and (req >> 16) == (supported >> 16) and (req & 0xFFFF) <= (supported & 0xFFFF):
            return (RmiStatus.SUCCESS, req, supported, 0, 0)
        return (RmiStatus.ERROR_INPUT, supported, supported, 0, 0)

    def _rmi_features(self, args: tuple[int, ...]) -> Regs:
        """RMI_FEATURES (B3.3.9): register 0 describes the implementation; others read as zero."""
        value = self.config.feature_register_0() if args[0] == 0 else 0
        return (RmiStatus.SUCCESS, value, 0, 0, 0)

    # -- granule delegation --------------------------------------------------

    def _rmi_granule_delegate(self, args: tuple[int, ...]) -> Regs:
        """RMI_GRANULE_DELEGATE (B3.3.10)."""
        addr = args[0]
        command = self.interface.by_name["granule_delegate"]
        if addr & _ALIGN:
            return self._fail(command, "gran_align")
        if not self.is_delegable(addr):
            return self._fail(command, "gran_bound")
        index = addr >> _SHIFT
        if index in self.granules:
            return self._fail(command, "gran_state")
        if not self.monitor.gtsi_delegate(addr):
            return self._fail(command, "gran_gpt")
        self.granules[index] = GranuleState.DELEGATED
        self.memory.wipe(addr)
        return _SUCCESS

    def _rmi_granule_undelegate(self, args: tuple[int, ...]) -> Regs:
        """RMI_GRANULE_UNDELEGATE (B3.3.11)."""
        addr = args[0]
        command = self.interface.by_name["granule_undelegate"]
        if addr & _ALIGN:
            return self._fail(command, "gran_align")
        if not self.is_delegable(addr):
            return self._fail(command, "gran_bound")
        index = addr >> _SHIFT
        if self.granules.get(index) is not GranuleState.DELEGATED:
            return self._fail(command, "gran_state")
        self.monitor.gtsi_undelegate(addr)
        del self.granules[index]
        self.memory.wipe(addr)
        return _SUCCESS
