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
_PA_END: Final = 1 << 64


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
        "_pgs",
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
        self._pgs = gpt.gpccr.geometry.pgs_bits
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
        return not self._transition_granule(pa, _RL, _REALM_POLICY)

    def gtsi_undelegate(self, pa: int) -> bool:
        """RMM_GTSI_UNDELEGATE (Realm → NS) as :meth:`rmm_call` makes it; True on E_RMM_OK."""
        return not self._transition_granule(pa, _NS, _REALM_POLICY)

    def gpt_transition_pas(self, base: int, size: int, target: Gpi, *, caller: Pas) -> int:
        """TF-A ``gpt_transition_pas``: its checks in order (§6.5), then the sequence of §5.4; 0 or -errno."""
        if size != GRANULE_SIZE:
            return EINVAL
        target_gpi = int(target)
        if target_gpi not in _RUNTIME_GPIS:
            return EPERM
        return self._transition_granule(
            base, target_gpi, _REALM_POLICY if caller is Pas.REALM else _POLICY.get(caller, _NOTHING)
        )

    def _transition_granule(self, base: int, target: int, allowed: frozenset[tuple[int, int]]) -> int:
        """``gpt_transition_pas`` of one granule to the runtime GPI ``target``, from its address checks on.

        ``allowed`` is the caller's (current, target) policy. TF-A's ``gpt_delegate`` and
        ``gpt_undelegate`` (§5.4) are written out here rather than split into helpers: this is the
        body of every RMI_GRANULE_(UN)DELEGATE, and each step is one descriptor operation.
        """
        if base < 0 or base + GRANULE_SIZE > _PA_END:
            return EINVAL
        # The very last granule below 2^PPS is refused too (strict <, rme-gpt-mec.md §10 #11).
        if base & (GRANULE_SIZE - 1) or not base + GRANULE_SIZE < self._protected_size:
            return EINVAL
        gpt = self._gpt
        slot = gpt.l1_slot(base)
        if slot is None:
            return EINVAL
        _, entries, index = slot
        value = entries[index]
        # The current GPI: of a Contiguous descriptor, or the granule's field of a Granules descriptor.
        contiguous = value & 0xF == 0b0001
        current = value >> 4 & 0xF if contiguous else value >> (4 * (base >> 12 & 0xF)) & 0xF
        if (current, target) not in allowed:
            return EPERM
        skip_tlbi = self._skip_tlbi
        if contiguous:
            old = gpt.shatter(base, slot)
            if old and not skip_tlbi:
                self.tlb_invalidations += 1
                gpt.tlbi_rpalos(base & ~(old - 1), old)
            value = entries[index]
            if value & 0xF == 0b0001:  # a reserved Contig field: nothing was shattered
                raise ValueError(f"the L1 entry of {base:#x} is Contiguous: shatter it first")
        # The GPI writes below are GranuleProtection.set_gpi on the Granules descriptor just read.
        shift = 4 * (base >> self._pgs & 0xF)
        others = value & ~(0xF << shift)
        if current == _NS:
            # gpt_delegate: DC CIPAPA of the target PAS (nothing a previous owner left in caches
            # survives), the GPT write and its TLBI, then DC CIPAPA of the Non-secure PAS (dirty Host
            # lines reach memory), fuse.
            entries[index] = others | target << shift
            if not skip_tlbi:
                self.tlb_invalidations += 1
                gpt.tlbi_rpalos(base, GRANULE_SIZE)
            self.cache_cleans += 2
        else:
            # gpt_undelegate: GPI No-access + TLBI, DC CIPAPA of the source PAS (the RMM's scrub
            # reaches memory) then of the Non-secure PAS (no stale lines), GPI NS + TLBI, fuse.
            # Nothing walks the GPT between the two writes (EL3 runs the sequence to its end), so
            # dropping the granule once, after both, leaves the TLB as TF-A's two TLBIs do; both
            # are counted.
            entries[index] = others | _NA << shift
            self.cache_cleans += 2
            entries[index] = others | _NS << shift
            if not skip_tlbi:
                self.tlb_invalidations += 2
                gpt.tlbi_rpalos(base, GRANULE_SIZE)
        gpt.fuse(base, slot)
        self.transitions += 1
        return 0
