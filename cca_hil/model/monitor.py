"""The modelled EL3 monitor: SMC routing from the Normal world, and the RMM-EL3 GTSI service.

TF-A's RMMD forwards the whole RMI window (SMC64 function numbers 0x150–0x18F)
to the RMM; the monitor answers SMCCC_VERSION and the PSCI queries itself and
returns SMCCC_NOT_SUPPORTED (-1, SMC_UNK) for anything else — including the
RMM-EL3 interface, which is only accepted from Realm state (rme-gpt-mec.md §6.4).

The RMM asks for PAS changes with RMM_GTSI_DELEGATE / RMM_GTSI_UNDELEGATE.
:meth:`Monitor.gpt_transition_pas` makes TF-A's checks in TF-A's order
(§6.5) and then runs TF-A's transition sequence (§5.4) on the table bytes:
shatter a Contiguous descriptor (TLBI RPALOS over the old block), rewrite the
GPI — through No-access first when undelegating — with a TLBI RPALOS after each
GPT write, DC CIPAPA of both PAS, and fuse back. The model's memory is
coherent at the PoPA, so the DC CIPAPA steps change no data and are only
counted; the TLBIs do matter, since the GPT keeps walk results the way a TLB
does: :attr:`MonitorConfig.skip_tlbi` leaves them out, for negative tests (§5.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from cca_hil.arch.gpt import Gpi
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE, SMCCC_NOT_SUPPORTED
from cca_hil.model.gpt import GranuleProtection

SMCCC_VERSION_FID = 0x8000_0000
SMCCC_ARCH_FEATURES_FID = 0x8000_0001
PSCI_VERSION_FID = 0x8400_0000
PSCI_FEATURES_FID = 0x8400_000A

SVE_HINT = 1 << 16
RMI_WINDOW = (0xC400_0150, 0xC400_018F)

RMM_GTSI_DELEGATE: Final = 0xC400_01B0
RMM_GTSI_UNDELEGATE: Final = 0xC400_01B1
"""RMM-EL3 interface FIDs (TF-A ``rmmd_svc.h``); x1 = granule PA, x0 = status."""

E_RMM_OK: Final = 0
E_RMM_UNK: Final = -1
E_RMM_BAD_ADDR: Final = -2
E_RMM_BAD_PAS: Final = -3
EINVAL: Final = -22
EPERM: Final = -1

_RUNTIME_GPIS: Final = frozenset(
    int(gpi) for gpi in (Gpi.NO_ACCESS, Gpi.SECURE, Gpi.NONSECURE, Gpi.ROOT, Gpi.ANY, Gpi.REALM)
)
"""Targets ``gpt_transition_pas`` accepts in an ENABLE_RMM build without GPC2/GDI (§6.5 check 2)."""
_RMMD_STATUS: Final = {0: E_RMM_OK, EINVAL: E_RMM_BAD_ADDR, EPERM: E_RMM_BAD_PAS}
"""RMMD's mapping of ``gpt_transition_pas`` errors to RMM-EL3 statuses."""

_NS, _RL, _S, _NA = int(Gpi.NONSECURE), int(Gpi.REALM), int(Gpi.SECURE), int(Gpi.NO_ACCESS)
_POLICY: Final = {
    Pas.REALM: frozenset({(_NS, _RL), (_RL, _NS)}),
    Pas.SECURE: frozenset({(_NS, _S), (_S, _NS)}),
}
"""current → target GPI encodings each caller's Security state may ask for (§6.5 check 6)."""
_NOTHING: Final[frozenset[tuple[int, int]]] = frozenset()
_REALM_POLICY: Final = _POLICY[Pas.REALM]


class SmcHandler(Protocol):
    """Something the monitor forwards SMCs to (the RMM)."""

    def handle(self, fid: int, args: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """Execute one SMC; return X0..X4."""
        ...


@dataclass(frozen=True)
class MonitorConfig:
    """Versions the monitor reports, and EL3 behaviour a negative test may break on purpose."""

    smccc_version: int = 0x10005
    psci_version: int = 0x10001
    skip_tlbi: bool = False
    """Leave out every TLBI after a GPT write (rme-gpt-mec.md §5.5): cached GPIs go stale."""


class Monitor:
    """EL3: routes Normal-world SMCs and performs granule PAS transitions for the RMM (GTSI)."""

    __slots__ = (
        "_gpt",
        "_protected_size",
        "_rmm",
        "_skip_tlbi",
        "cache_cleans",
        "config",
        "current_call",
        "tlb_invalidations",
        "transitions",
    )

    def __init__(self, gpt: GranuleProtection, config: MonitorConfig | None = None) -> None:
        self._gpt = gpt
        self._protected_size = gpt.gpccr.geometry.protected_size
        self._rmm: SmcHandler | None = None
        self.config = config or MonitorConfig()
        self._skip_tlbi = self.config.skip_tlbi
        self.transitions = 0
        """PAS transitions performed."""
        self.tlb_invalidations = 0
        """TLBI RPALOS operations issued."""
        self.cache_cleans = 0
        """DC CIPAPA passes over a granule issued."""
        self.current_call: tuple[int, tuple[int, ...]] | None = None
        """The Normal-world SMC being handled (FID, X1..), while the RMM runs it."""

    @property
    def maintenance(self) -> dict[str, int]:
        """Maintenance operations issued, by instruction."""
        return {"tlbi_rpalos": self.tlb_invalidations, "dc_cipapa": self.cache_cleans}

    def attach_rmm(self, rmm: SmcHandler) -> None:
        """Install the RMM that the RMI window is forwarded to."""
        self._rmm = rmm

    def smc(self, fid: int, args: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """An SMC from the Non-secure world; X0..X4 come back."""
        routed = fid & ~SVE_HINT
        if RMI_WINDOW[0] <= routed <= RMI_WINDOW[1] and self._rmm is not None:
            self.current_call = (routed, args)
            regs = self._rmm.handle(routed, args)
            self.current_call = None
            return regs
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

    def rmm_call(self, fid: int, *args: int) -> int:
        """An SMC from the RMM (Realm state) to EL3; X0 as a signed E_RMM_* status (TF-A rmmd_main.c)."""
        if fid in (RMM_GTSI_DELEGATE, RMM_GTSI_UNDELEGATE):
            pa = args[0] if args else 0
            target = Gpi.REALM if fid == RMM_GTSI_DELEGATE else Gpi.NONSECURE
            return _RMMD_STATUS[self.gpt_transition_pas(pa, GRANULE_SIZE, target, caller=Pas.REALM)]
        return E_RMM_UNK

    def gtsi_delegate(self, pa: int) -> bool:
        """RMM_GTSI_DELEGATE (NS → Realm) as :meth:`rmm_call` makes it; True on E_RMM_OK."""
        return not self.gpt_transition_pas(pa, GRANULE_SIZE, Gpi.REALM, caller=Pas.REALM)

    def gtsi_undelegate(self, pa: int) -> bool:
        """RMM_GTSI_UNDELEGATE (Realm → NS) as :meth:`rmm_call` makes it; True on E_RMM_OK."""
        return not self.gpt_transition_pas(pa, GRANULE_SIZE, Gpi.NONSECURE, caller=Pas.REALM)

    def gpt_transition_pas(self, base: int, size: int, target: Gpi, *, caller: Pas) -> int:
        """TF-A ``gpt_transition_pas``: its checks in order (§6.5), then the sequence of §5.4; 0 or -errno."""
        gpt = self._gpt
        if size != GRANULE_SIZE:
            return EINVAL
        target_gpi = int(target)
        if target_gpi not in _RUNTIME_GPIS:
            return EPERM
        if base < 0 or base + size > 1 << 64:
            return EINVAL
        # The very last granule below 2^PPS is refused too (strict <, rme-gpt-mec.md §10 #11).
        if base & (GRANULE_SIZE - 1) or not base + size < self._protected_size:
            return EINVAL
        slot = gpt.l1_slot(base)
        if slot is None:
            return EINVAL
        view, offset = slot
        value = int.from_bytes(view[offset : offset + 8], "little")
        # The current GPI: of a Contiguous descriptor, or the granule's field of a Granules descriptor.
        current = value >> 4 & 0xF if value & 0xF == 0b0001 else value >> (4 * (base >> 12 & 0xF)) & 0xF
        allowed = _REALM_POLICY if caller is Pas.REALM else _POLICY.get(caller, _NOTHING)
        if (current, target_gpi) not in allowed:
            return EPERM
        if value & 0xF == 0b0001:
            self._shatter(base, slot)
        if current == _NS:
            self._delegate(base, target_gpi, slot)
        else:
            self._undelegate(base, slot)
        self.transitions += 1
        return 0

    def _delegate(self, pa: int, target: int, slot: tuple[memoryview, int]) -> None:
        """TF-A ``gpt_delegate`` after the shatter: flush target, GPT write + TLBI, flush NS, fuse (§5.4)."""
        gpt = self._gpt
        # DC CIPAPA of the target PAS (nothing a previous owner left in caches survives), the GPT
        # write and its TLBI, then DC CIPAPA of the Non-secure PAS (dirty Host lines reach memory).
        gpt.set_gpi(pa, target, slot)
        self._tlbi(pa, GRANULE_SIZE)
        self._dc_cipapa(2)
        gpt.fuse(pa, slot)

    def _undelegate(self, pa: int, slot: tuple[memoryview, int]) -> None:
        """TF-A ``gpt_undelegate`` after the shatter: via No-access, flush both PAS, GPI NS, fuse (§5.4)."""
        gpt = self._gpt
        gpt.set_gpi(pa, _NA, slot)
        self._tlbi(pa, GRANULE_SIZE)
        self._dc_cipapa(2)  # source PAS (the RMM's scrub reaches memory), then Non-secure (no stale lines)
        gpt.set_gpi(pa, _NS, slot)
        self._tlbi(pa, GRANULE_SIZE)
        gpt.fuse(pa, slot)

    def _shatter(self, pa: int, slot: tuple[memoryview, int]) -> None:
        old = self._gpt.shatter(pa, slot)
        if old:
            self._tlbi(pa & ~(old - 1), old)

    def _tlbi(self, base: int, size: int) -> None:
        """TLBI RPALOS + DSB OSH, unless this EL3 is configured to forget it."""
        if self._skip_tlbi:
            return
        self.tlb_invalidations += 1
        self._gpt.tlbi_rpalos(base, size)

    def _dc_cipapa(self, times: int = 1) -> None:
        # Clean+invalidate the granule to the PoPA: nothing is held above it in the model.
        self.cache_cleans += times
