"""The modelled EL3 monitor: SMC routing from the Normal world, and the GTSI delegate/undelegate service.

TF-A's RMMD forwards the whole RMI window (SMC64 function numbers 0x150–0x18F)
to the RMM; the monitor answers SMCCC_VERSION and the PSCI queries itself and
returns SMCCC_NOT_SUPPORTED (-1) for anything else. The RMM asks the monitor to
change a granule's PAS (RMM-EL3 interface GTSI_DELEGATE / GTSI_UNDELEGATE),
which only succeeds from NS to Realm and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED
from cca_hil.model.gpt import GranuleProtection

SMCCC_VERSION_FID = 0x8000_0000
SMCCC_ARCH_FEATURES_FID = 0x8000_0001
PSCI_VERSION_FID = 0x8400_0000
PSCI_FEATURES_FID = 0x8400_000A

SVE_HINT = 1 << 16
RMI_WINDOW = (0xC400_0150, 0xC400_018F)


class SmcHandler(Protocol):
    """Something the monitor forwards SMCs to (the RMM)."""

    def handle(self, fid: int, args: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """Execute one SMC; return X0..X4."""
        ...


@dataclass(frozen=True)
class MonitorConfig:
    """Versions the monitor reports to the Normal world."""

    smccc_version: int = 0x10005
    psci_version: int = 0x10001


class Monitor:
    """EL3: routes Normal-world SMCs and performs granule PAS transitions for the RMM."""

    __slots__ = ("_gpt", "_rmm", "config", "transitions")

    def __init__(self, gpt: GranuleProtection, config: MonitorConfig | None = None) -> None:
        self._gpt = gpt
        self._rmm: SmcHandler | None = None
        self.config = config or MonitorConfig()
        self.transitions = 0
        """PAS transitions performed (each one is a TLBI/DC-by-PA sequence on hardware)."""

    def attach_rmm(self, rmm: SmcHandler) -> None:
        """Install the RMM that the RMI window is forwarded to."""
        self._rmm = rmm

    def smc(self, fid: int, args: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """An SMC from the Non-secure world; X0..X4 come back."""
        routed = fid & ~SVE_HINT
        if RMI_WINDOW[0] <= routed <= RMI_WINDOW[1] and self._rmm is not None:
            return self._rmm.handle(routed, args)
        if routed == SMCCC_VERSION_FID:
            return (self.config.smccc_version, 0, 0, 0, args[3] if len(args) > 3 else 0)
        if routed == PSCI_VERSION_FID:
            return (self.config.psci_version, 0, 0, 0, args[3] if len(args) > 3 else 0)
        if routed == PSCI_FEATURES_FID:
            queried = args[0] if args else 0
            known = queried in (PSCI_VERSION_FID, PSCI_FEATURES_FID)
            return (0 if known else SMCCC_NOT_SUPPORTED, 0, 0, 0, 0)
        return (SMCCC_NOT_SUPPORTED, 0, 0, 0, 0)

    # -- RMM-EL3 interface -----------------------------------------------------

    def gtsi_delegate(self, pa: int) -> bool:
        """NS → Realm for one granule; refused (False) unless the granule is NS now."""
        if self._gpt.pas_of(pa) is not Pas.NONSECURE:
            return False
        self._gpt.set_pas(pa, Pas.REALM)
        self.transitions += 1
        return True

    def gtsi_undelegate(self, pa: int) -> bool:
        """Realm → NS for one granule; refused (False) unless the granule is Realm now."""
        if self._gpt.pas_of(pa) is not Pas.REALM:
            return False
        self._gpt.set_pas(pa, Pas.NONSECURE)
        self.transitions += 1
        return True
