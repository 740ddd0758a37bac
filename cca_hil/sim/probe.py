"""The simulated debug probe as pyOCD sees it: a ``DebugProbe`` on a :class:`~cca_hil.sim.dap.SimDap`.

This module is the ``pyocd.probe`` entry point (``ccasim``) and imports pyOCD
at its top, so only pyOCD's plugin loader should import it: importing it
before pyOCD would re-enter this module from pyOCD's own plugin scan. Code that
plugs simulated devices in uses :mod:`cca_hil.sim.dap`, which needs no pyOCD.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyocd.core import exceptions
from pyocd.core.plugin import Plugin
from pyocd.probe.debug_probe import DebugProbe

from cca_hil.sim.dap import PLUGIN_NAME, DapFault, DapNoAck, SimDap, connected_daps


class SimProbe(DebugProbe):  # type: ignore[misc]
    """pyOCD ``DebugProbe`` whose DAP register accesses land in a :class:`SimDap`."""

    @classmethod
    def get_all_connected_probes(
        cls, unique_id: str | None = None, is_explicit: bool = False
    ) -> list[SimProbe]:
        """Probes for every visible simulated debug port (pyOCD filters by ``unique_id`` itself)."""
        return [cls(dap) for dap in connected_daps()]

    @classmethod
    def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False) -> SimProbe | None:
        """The probe whose unique id matches exactly, or None."""
        for dap in connected_daps():
            if dap.unique_id == unique_id:
                return cls(dap)
        return None

    def __init__(self, dap: SimDap) -> None:
        super().__init__()
        self.dap = dap
        self._is_open = False
        self._protocol: DebugProbe.Protocol | None = None
        self._clock = 1_000_000.0

    @property
    def vendor_name(self) -> str:
        """The maker pyOCD shows."""
        return "cca-hil"

    @property
    def product_name(self) -> str:
        """What the probe is, with the memory APs it offers."""
        kinds = ", ".join(f"AP{i} {ap.kind.upper()}-AP" for i, ap in enumerate(self.dap.aps))
        return f"simulated SW-DP ({kinds})"

    @property
    def supported_wire_protocols(self) -> list[DebugProbe.Protocol]:
        """SWD only (DEFAULT selects it)."""
        return [DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD]

    @property
    def unique_id(self) -> str:
        """The simulated device's unique id."""
        return self.dap.unique_id

    @property
    def wire_protocol(self) -> DebugProbe.Protocol | None:
        """SWD once connected."""
        return self._protocol

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` was called without a matching :meth:`close`."""
        return self._is_open

    @property
    def capabilities(self) -> set[DebugProbe.Capability]:
        """None of the optional ones: pyOCD writes DP SELECT itself, as for a plain CMSIS-DAP probe."""
        return set()

    def open(self) -> None:
        """Open the (simulated) USB connection."""
        self._is_open = True

    def close(self) -> None:
        """Close it."""
        self._is_open = False

    def connect(self, protocol: DebugProbe.Protocol | None = None) -> None:
        """Select the wire protocol."""
        if protocol not in (None, DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD):
            raise exceptions.ProbeError(f"simulated probe supports SWD only, not {protocol}")
        self._protocol = DebugProbe.Protocol.SWD

    def disconnect(self) -> None:
        """Release the wire."""
        self._protocol = None

    def set_clock(self, frequency: float) -> None:
        """Remember the SWCLK frequency (the simulation does not depend on it)."""
        self._clock = float(frequency)

    def reset(self) -> None:
        """Pulse nRESET."""
        self.dap.system_reset()

    def assert_reset(self, asserted: bool) -> None:
        """Drive nRESET; releasing it completes a system reset."""
        if self.dap.reset_asserted and not asserted:
            self.dap.system_reset()
        self.dap.reset_asserted = asserted

    def is_reset_asserted(self) -> bool:
        """The nRESET level last driven."""
        return self.dap.reset_asserted

    def read_dp(self, addr: int, now: bool = True) -> int | Callable[[], int]:
        """Read a DP register (deferred when ``now`` is False)."""
        try:
            value = self.dap.read_dp(addr)
        except (DapFault, DapNoAck) as fault:
            return _fail(fault, now)
        return value if now else (lambda: value)

    def write_dp(self, addr: int, data: int) -> None:
        """Write a DP register."""
        try:
            self.dap.write_dp(addr, data)
        except (DapFault, DapNoAck) as fault:
            raise _transfer_error(fault) from None

    def read_ap(self, addr: int, now: bool = True) -> int | Callable[[], int]:
        """Read an AP register; a FAULT surfaces when the value is collected, as with a batching probe."""
        try:
            value = self.dap.read_ap(addr)
        except (DapFault, DapNoAck) as fault:
            return _fail(fault, now)
        return value if now else (lambda: value)

    def write_ap(self, addr: int, data: int) -> None:
        """Write an AP register."""
        try:
            self.dap.write_ap(addr, data)
        except (DapFault, DapNoAck) as fault:
            raise _transfer_error(fault) from None

    def read_ap_multiple(
        self, addr: int, count: int = 1, now: bool = True
    ) -> Sequence[int] | Callable[[], Sequence[int]]:
        """Read an AP register ``count`` times."""
        try:
            values = self.dap.read_ap_multiple(addr, count)
        except (DapFault, DapNoAck) as fault:
            return _fail(fault, now)
        return values if now else (lambda: values)

    def write_ap_multiple(self, addr: int, values: Sequence[int]) -> None:
        """Write an AP register once per value."""
        try:
            self.dap.write_ap_multiple(addr, values)
        except (DapFault, DapNoAck) as fault:
            raise _transfer_error(fault) from None


def _transfer_error(fault: DapFault | DapNoAck) -> exceptions.TransferError:
    if isinstance(fault, DapNoAck):
        return exceptions.TransferError(str(fault))
    return exceptions.TransferFaultError(str(fault), fault_address=fault.address)


def _fail(fault: DapFault | DapNoAck, now: bool) -> Callable[[], Any]:
    error = _transfer_error(fault)
    if now:
        raise error

    def collect() -> Any:
        raise error

    return collect


class SimProbePlugin(Plugin):  # type: ignore[misc]
    """pyOCD plugin entry (``pyocd.probe``: ``ccasim``) for the simulated debug probe."""

    def load(self) -> type[SimProbe]:
        """The probe class pyOCD registers."""
        return SimProbe

    @property
    def name(self) -> str:
        """Probe-type name, usable as ``ccasim:ID``."""
        return PLUGIN_NAME

    @property
    def description(self) -> str:
        """One line for ``pyocd list --plugins``."""
        return "cca-hil simulated SW-DP with MEM-APs on the RME platform model"
