"""A whole modelled RME platform: memory, granule protection, EL3 monitor and RMM wired together.

The host-side agent's view is what :class:`Machine` offers: SMCs from NS-EL2,
Non-secure loads and stores that pass through the granule protection check.
"""

from __future__ import annotations

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.errors import GranuleProtectionFault
from cca_hil.model.gpt import GranuleProtection
from cca_hil.model.memory import PhysicalMemory
from cca_hil.model.monitor import Monitor
from cca_hil.model.platform import PlatformConfig
from cca_hil.model.rmm import Rmm
from cca_hil.targets.base import AccessOp, AccessResult, Fault

# ESR_EL2 of a data abort taken at the current EL (NS-EL2): EC 0x25, IL 1.
EC_DATA_ABORT_SAME_EL = 0x25
DFSC_GPF_ON_ACCESS = 0x28
"""Granule Protection Fault, not on a translation table walk (DDI0487 D24.2 ESR_ELx.DFSC)."""
DFSC_SYNC_EXTERNAL_ABORT = 0x10
WNR = 1 << 6


def data_abort_esr(dfsc: int, *, write: bool) -> int:
    """ESR for a synchronous data abort at NS-EL2 with fault status ``dfsc``."""
    return (EC_DATA_ABORT_SAME_EL << 26) | (1 << 25) | (WNR if write else 0) | dfsc


class Machine:
    """The modelled platform built from a :class:`PlatformConfig`; deterministic from its seed."""

    def __init__(self, config: PlatformConfig | None = None) -> None:
        self.config = config or PlatformConfig()
        self.memory = PhysicalMemory()
        self.gpt = GranuleProtection(self.config.regions)
        self.monitor = Monitor(self.gpt)
        self.rmm = Rmm(
            config=self.config.rmm,
            platform=self.config,
            memory=self.memory,
            gpt=self.gpt,
            monitor=self.monitor,
        )
        self.monitor.attach_rmm(self.rmm)

    def smc(self, fid: int, *args: int) -> tuple[int, int, int, int, int]:
        """An SMC issued by the host at NS-EL2."""
        return self.monitor.smc(fid, args)

    # -- Non-secure memory as the host sees it -----------------------------------

    def ns_read(self, pa: int, size: int) -> bytes:
        """Read through the NS PAS; a GPF on any granule raises GranuleProtectionFault."""
        self._check_range(pa, size, write=False)
        return self.memory.read(pa, size)

    def ns_write(self, pa: int, data: bytes) -> None:
        """Write through the NS PAS; a GPF on any granule raises GranuleProtectionFault."""
        self._check_range(pa, len(data), write=True)
        self.memory.write(pa, data)

    def ns_access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        """One probing NS load or store; the fault, if any, is returned."""
        write = op == "write"
        if self.gpt.initial_pas(pa) is Pas.NONE and self.gpt.pas_of(pa) is Pas.NONE:
            esr = data_abort_esr(DFSC_SYNC_EXTERNAL_ABORT, write=write)
            fault = Fault(EC_DATA_ABORT_SAME_EL, esr, pa, gpf=False, description="no memory")
            return AccessResult(fault=fault)
        if not self.gpt.check(pa, Pas.NONSECURE):
            esr = data_abort_esr(DFSC_GPF_ON_ACCESS, write=write)
            pas = self.gpt.pas_of(pa)
            fault = Fault(EC_DATA_ABORT_SAME_EL, esr, pa, gpf=True, description=f"GPT says {pas}")
            return AccessResult(fault=fault)
        if write:
            self.memory.write(pa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
            return AccessResult(value=value)
        return AccessResult(value=int.from_bytes(self.memory.read(pa, size), "little"))

    def _check_range(self, pa: int, size: int, *, write: bool) -> None:
        granule = pa & ~(GRANULE_SIZE - 1)
        end = pa + max(size, 1)
        while granule < end:
            if not self.gpt.check(granule, Pas.NONSECURE):
                raise GranuleProtectionFault(max(granule, pa), write=write)
            granule += GRANULE_SIZE
