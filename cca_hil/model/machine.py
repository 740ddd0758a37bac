"""A whole modelled RME platform: encrypted memory, the GPT, the EL3 monitor and the RMM wired together.

Every access names who makes it — the Security state of the requester and the
PAS its translation selects (DDI0487 D9.1, rme-gpt-mec.md §1.3) — and passes
the granule protection check of the GPT in memory before it reaches memory,
under the encryption context of that PAS (and MECID). The host-side agent's
view is what :class:`Machine` offers at NS-EL2: SMCs, Non-secure loads and
stores that fault as the architecture says. The RMM sees memory through
:class:`RmmMemory`: granules it tracks through the Realm PAS, the Host's
through the Non-secure PAS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cca_hil.arch.esr import Esr, ExceptionClass, FaultStatus
from cca_hil.arch.gpt import GptFault, GptFaultKind
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.errors import GranuleProtectionFault
from cca_hil.model.crypto import EncryptionContext, MemoryEncryption
from cca_hil.model.gpt import GranuleProtection
from cca_hil.model.mec import MecidAllocator
from cca_hil.model.memory import NONSECURE, REALM, ROOT, SECURE, MemoryStore, PhysicalMemory
from cca_hil.model.monitor import Monitor, MonitorConfig
from cca_hil.model.platform import PlatformConfig
from cca_hil.model.rmm import Rmm
from cca_hil.targets.base import AccessOp, AccessResult, Fault

_SHIFT: Final = 12
_REALM_PAS: Final = Pas.REALM

# The syndrome of a GPF on an NS-EL2 load/store (SCR_EL3.GPF=0), for callers that build one themselves.
EC_DATA_ABORT_SAME_EL: Final = int(ExceptionClass.DATA_ABORT_SAME)
DFSC_GPF_ON_ACCESS: Final = int(FaultStatus.GPF)
"""Granule Protection Fault, not on a translation table walk (DDI0487 D24.2 ESR_ELx.DFSC)."""
DFSC_SYNC_EXTERNAL_ABORT: Final = int(FaultStatus.SYNC_EXTERNAL)
WNR: Final = 1 << 6


def data_abort_esr(dfsc: int, *, write: bool) -> int:
    """ESR for a synchronous data abort at NS-EL2 with fault status ``dfsc`` (DDI0487 D24.2.45)."""
    return Esr.data_abort(dfsc, same_el=True, wnr=write).value


WORLD_PAS: Final = {
    Pas.NONSECURE: frozenset({Pas.NONSECURE}),
    Pas.SECURE: frozenset({Pas.SECURE, Pas.NONSECURE}),
    Pas.REALM: frozenset({Pas.REALM, Pas.NONSECURE}),
    Pas.ROOT: frozenset({Pas.ROOT, Pas.REALM, Pas.SECURE, Pas.NONSECURE}),
}
"""The PAS each Security state's translation can name (DDI0487 D1.1, rme-gpt-mec.md §1.1)."""

_DEFAULT_CONTEXTS: Final = {Pas.NONSECURE: NONSECURE, Pas.SECURE: SECURE, Pas.ROOT: ROOT, Pas.REALM: REALM}

_PAS_BITS: Final = {Pas.SECURE: 0b00, Pas.NONSECURE: 0b01, Pas.ROOT: 0b10, Pas.REALM: 0b11}
"""NSE:NS of a PAS: bits 62 and 63 of MFAR_EL3 and of PA operands (rme-gpt-mec.md §1.2)."""


@dataclass(frozen=True, kw_only=True)
class AccessFault:
    """What an access that failed the granule protection check raised, and where (rme-gpt-mec.md §9).

    ``gpc`` is None for a synchronous External abort (no memory answered).
    """

    gpc: GptFault | None
    esr: Esr
    far: int
    target_el: int
    """Exception level the fault is taken to: the requester's EL for an abort, 3 for a GPC exception."""
    mfar: int | None = None
    """MFAR_EL3 of a GPC exception: PA[55:12] with the PAS in bits 63:62 (DDI0487 D24.2.136)."""

    @property
    def gpf(self) -> bool:
        """A granule protection fault (as opposed to a walk fault or an External abort)."""
        return self.gpc is not None and self.gpc.kind is GptFaultKind.GPF

    def describe(self) -> str:
        """One line: the GPC outcome, how it was reported and to which EL."""
        what = str(self.gpc) if self.gpc is not None else "synchronous external abort (no memory)"
        return f"{what}; {self.esr.describe()} to EL{self.target_el}"

    def as_fault(self) -> Fault:
        """The target interface's Fault record (a short description: it crosses the agent link)."""
        if self.gpc is None:
            text = "no memory"
        else:
            text = str(self.gpc).replace("granule protection fault", "GPF") + (
                " (to EL3)" if self.esr.is_gpc_exception else ""
            )
        return Fault(self.esr.ec, self.esr.value, self.far, gpf=self.gpc is not None, description=text)


class Machine:
    """The modelled platform built from a :class:`PlatformConfig`; deterministic from its seed."""

    def __init__(self, config: PlatformConfig | None = None) -> None:
        self.config = config or PlatformConfig()
        self.encryption = MemoryEncryption(self.config.seed) if self.config.encryption else None
        self.store = MemoryStore(self.encryption)
        """DRAM behind the memory protection engine; every access names its context."""
        self.memory = PhysicalMemory(self.store, NONSECURE)
        """Memory as a Non-secure bus master sees it (no GPC: callers check, as the debug MEM-AP does)."""
        self._boot_firmware()

    def _boot_firmware(self) -> None:
        """What the firmware sets up at boot: EL3's GPT and monitor, the MECID pool, a fresh RMM."""
        placement = self.config.gpt_placement()
        carveout = () if placement.carveout is None else (placement.carveout,)
        self.gpt = GranuleProtection(
            memory=self.store,
            regions=(*self.config.regions, *carveout),
            gpccr=placement.gpccr,
            gptbr=placement.gptbr,
            l1_base=placement.l1_base,
            features=self.config.gpt_features(),
        )
        self.monitor = Monitor(self.gpt, MonitorConfig(skip_tlbi=self.config.el3_skip_tlbi))
        self.mecids = MecidAllocator(self.config.mecid_bits) if self.config.mec else None
        self.rmm_memory = RmmMemory(self, self._rmm_context)
        """Memory as the RMM sees it."""
        self.rmm = Rmm(
            config=self.config.rmm,
            platform=self.config,
            memory=self.rmm_memory,
            gpt=self.gpt,
            monitor=self.monitor,
        )
        self.monitor.attach_rmm(self.rmm)

    def reset(self) -> None:
        """A warm reset: DRAM keeps its contents; TF-A builds the GPT again from the boot map and
        the RMM boots afresh (every granule back to its boot PAS, no realm, no delegation)."""
        self._boot_firmware()

    def smc(self, fid: int, *args: int) -> tuple[int, int, int, int, int]:
        """An SMC issued by the host at NS-EL2."""
        return self.monitor.smc(fid, args)

    # -- encryption contexts ------------------------------------------------------------

    def context(self, pas: Pas, mecid: int = 0) -> EncryptionContext:
        """The encryption context of (``pas``, ``mecid``) with its current key (DDI0487 D7.4.1)."""
        if pas is Pas.REALM and mecid and self.mecids is not None:
            return self.mecids.context(mecid)
        return _DEFAULT_CONTEXTS[pas]

    def realm_mecid(self, rd: int) -> int | None:
        """The MECID the RMM gives the realm whose RD is at ``rd`` (None: no such realm, or no FEAT_MEC)."""
        realm = self.rmm.realms.get(rd >> _SHIFT)
        if realm is None or self.mecids is None:
            return None
        return self.mecids.mecid_of(rd >> _SHIFT, realm, self.rmm.realms)

    def _rmm_context(self, pa: int) -> EncryptionContext:
        """Realm-PAS context of an RMM access: the realm the current RMI call is about, else MECID 0.

        TF-RMM maps a realm's granules through AMEC slots with MECID_A1_EL2 set to
        that realm's MECID while it executes a command on the realm (its RD or one
        of its RECs is the first argument) (rme-gpt-mec.md §7.7).
        """
        del pa
        call = self.monitor.current_call
        if self.mecids is None or call is None or not call[1]:
            return REALM
        first = call[1][0] >> _SHIFT
        rmm = self.rmm
        realm = rmm.realms.get(first)
        rd = first
        if realm is None:
            rec = rmm.recs.get(first)
            if rec is None:
                return REALM
            realm = rec.owner
            rd = realm.rd >> _SHIFT
        return self.mecids.context(self.mecids.mecid_of(rd, realm, rmm.realms))

    # -- accesses from any world ----------------------------------------------------------

    def check_access(
        self, pa: int, *, world: Pas, pas: Pas, write: bool, el: int = 2, fetch: bool = False
    ) -> AccessFault | None:
        """The granule protection check of one access and, if it fails, how the PE reports it (§4.3–4.5).

        ``fetch`` makes it an instruction fetch: an Instruction Abort (IFSC) instead of a Data Abort.
        """

        def abort(fsc: int) -> Esr:
            if fetch:
                return Esr.instruction_abort(fsc, same_el=True)
            return Esr.data_abort(fsc, same_el=True, wnr=write)

        if not 0 <= pa < self.config.pa_limit:
            # No PE generates such a PA; an agent asking for one gets the bus's answer.
            return AccessFault(gpc=None, esr=abort(FaultStatus.SYNC_EXTERNAL), far=pa, target_el=el)
        fault = self.gpt.fault(pa, pas, world)
        if fault is None:
            if self.gpt.region_of(pa) is None:
                return AccessFault(gpc=None, esr=abort(FaultStatus.SYNC_EXTERNAL), far=pa, target_el=el)
            return None
        at_el3 = world is Pas.ROOT or el == 3
        as_abort = fault.kind is GptFaultKind.GPF and (at_el3 or self.config.gpf_routing == "abort")
        if as_abort:
            return AccessFault(gpc=fault, esr=abort(FaultStatus.GPF), far=pa, target_el=3 if at_el3 else el)
        esr = Esr.gpc_exception(fault, wnr=write and not fetch, instruction=fetch)
        nse_ns = _PAS_BITS[pas]
        mfar = (nse_ns & 1) << 63 | (nse_ns >> 1) << 62 | pa & ((1 << 56) - 1) & ~0xFFF
        return AccessFault(gpc=fault, esr=esr, far=pa, target_el=3, mfar=mfar)

    def access(
        self,
        pa: int,
        op: AccessOp,
        *,
        world: Pas,
        pas: Pas | None = None,
        size: int = 8,
        value: int = 0,
        mecid: int = 0,
    ) -> AccessResult:
        """One load or store by ``world`` at its EL2 (EL3 for Root) to (``pa``, ``pas``); faults returned."""
        target = world if pas is None else pas
        if target not in WORLD_PAS[world]:
            raise ValueError(f"a {world.value} requester cannot name the {target.value} PAS")
        write = op == "write"
        fault = self.check_access(pa, world=world, pas=target, write=write, el=3 if world is Pas.ROOT else 2)
        if fault is not None:
            return AccessResult(fault=fault.as_fault())
        context = self.context(target, mecid)
        if write:
            self.store.write(pa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), context)
            return AccessResult(value=value)
        return AccessResult(value=int.from_bytes(self.store.read(pa, size, context), "little"))

    # -- Non-secure memory as the host sees it -----------------------------------

    def ns_read(self, pa: int, size: int) -> bytes:
        """Read through the NS PAS; a GPF on any granule raises GranuleProtectionFault."""
        self._check_range(pa, size, write=False)
        return self.store.read(pa, size, NONSECURE)

    def ns_write(self, pa: int, data: bytes) -> None:
        """Write through the NS PAS; a GPF on any granule raises GranuleProtectionFault (nothing written)."""
        self._check_range(pa, len(data), write=True)
        self.store.write(pa, data, NONSECURE)

    def ns_access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        """One probing NS load or store from NS-EL2; the fault, if any, is returned."""
        return self.access(pa, op, world=Pas.NONSECURE, size=size, value=value)

    def _check_range(self, pa: int, size: int, *, write: bool) -> None:
        granule = pa & ~(GRANULE_SIZE - 1)
        end = pa + max(size, 1)
        if pa < 0 or end > self.config.pa_limit:
            raise GranuleProtectionFault(max(pa, min(self.config.pa_limit, end - 1)), write=write)
        check = self.gpt.check
        while granule < end:
            if not check(granule, Pas.NONSECURE):
                raise GranuleProtectionFault(max(granule, pa), write=write)
            granule += GRANULE_SIZE

    # -- a debugger's view --------------------------------------------------------------

    def read_physical(self, pa: int, size: int, pas: Pas, mecid: int = 0) -> bytes:
        """What memory returns for (``pa``, ``pas``, ``mecid``) without a GPC: a debug read past the PoPA."""
        return self.store.read(pa, size, self.context(pas, mecid))


class RmmMemory(PhysicalMemory):
    """Memory as the RMM at R-EL2 sees it (RMM 1.0 A2.2): granules it tracks through the Realm PAS.

    TF-RMM maps a delegated granule with stage-1 NS=0 (Realm PAS) and the
    Host's buffers with NS=1 (Non-secure PAS); each access is then checked by
    the GPC as an access from Realm state. Its scrub writes zeros through the
    Realm PAS with MECID 0 (scrub method 0, rme-gpt-mec.md §7.7), on every way
    into DELEGATED. A wipe of a granule the GPT already gives back to the Host
    writes nothing: TF-RMM does not touch a granule after undelegating it
    (rmm-abi.md §3.1), so the Host observes what memory holds — the scrubbed
    granule's ciphertext decrypted with the Non-secure key, zero only on a
    platform without encryption (rme-gpt-mec.md §7.2).
    """

    __slots__ = ("_machine", "_realm_context", "_store")

    def __init__(self, machine: Machine, context: Callable[[int], EncryptionContext]) -> None:
        super().__init__(machine.store, REALM)
        self._machine = machine
        self._store = machine.store
        self._realm_context = context

    def _resolve(self, pa: int, *, write: bool) -> EncryptionContext:
        tracked = pa >> _SHIFT in self._machine.rmm.granules
        pas = Pas.REALM if tracked else Pas.NONSECURE
        if not self._machine.gpt.check(pa, pas, Pas.REALM):
            raise GranuleProtectionFault(pa, write=write)
        return self._realm_context(pa) if tracked else NONSECURE

    def _spans(self, pa: int, size: int) -> list[tuple[int, int]]:
        spans = []
        while size > 0:
            chunk = min(size, GRANULE_SIZE - (pa & (GRANULE_SIZE - 1)))
            spans.append((pa, chunk))
            pa += chunk
            size -= chunk
        return spans

    def read(self, pa: int, size: int) -> bytes:
        """Read through the PAS the RMM maps ``pa`` with."""
        return b"".join(
            self._store.read(at, n, self._resolve(at, write=False)) for at, n in self._spans(pa, size)
        )

    def read_granule(self, pa: int) -> bytes:
        """The whole granule containing ``pa``."""
        return self._store.read_granule(pa, self._resolve(pa, write=False))

    def write(self, pa: int, data: bytes) -> None:
        """Write through the PAS the RMM maps ``pa`` with."""
        view = memoryview(data)
        offset = 0
        for at, n in self._spans(pa, len(data)):
            self._store.write(at, view[offset : offset + n], self._resolve(at, write=True))
            offset += n

    def wipe(self, pa: int) -> None:
        """The RMM's scrub: zeros through the Realm PAS, MECID 0 (nothing once the granule is the Host's)."""
        machine = self._machine
        if pa >> _SHIFT not in machine.rmm.granules:
            return
        if machine.gpt.fault(pa, _REALM_PAS, _REALM_PAS) is not None:
            raise GranuleProtectionFault(pa, write=True)
        self._store.wipe(pa, REALM)  # MECID 0 (RMM_MECID), whose key EL3 never refreshes

    def is_zero(self, pa: int) -> bool:
        """True when the granule reads as zero through the RMM's mapping."""
        return self._store.is_zero(pa, self._resolve(pa, write=False))
