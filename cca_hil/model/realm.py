"""Realm and REC objects of the modelled RMM: attributes, measurements and the REC's pending requests.

RMM 1.0 A2.1 (Realm attributes, liveness), A2.3 (REC attributes), A7.1
(measurements), and what a REC exit leaves pending until the next REC entry.
The RMM's command handlers (``model/rmm.py``) own the state transitions; the
methods here are the small, documented entry points realm execution uses to
leave a REC in the state a REC exit leaves it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cca_hil.arch.measurement import MEASUREMENT_SIZE, MEASUREMENT_SLOTS
from cca_hil.arch.rmi import HashAlgorithm, RealmState, RecExitReason, RecState, Ripas
from cca_hil.arch.structs import RecExit
from cca_hil.model.rtt import Rtt, Walk, walk

GPR_COUNT = 31

PSCI_AFFINITY_INFO_FIDS = frozenset({0x8400_0004, 0xC400_0004})
PSCI_CPU_ON_FIDS = frozenset({0x8400_0003, 0xC400_0003})


@dataclass(frozen=True, slots=True)
class PsciRequest:
    """A Realm's PSCI_CPU_ON or PSCI_AFFINITY_INFO that the Host must complete (RMM 1.0 B5, PSCI)."""

    fid: int
    target_mpidr: int
    """The target as the Realm passed it (RmiRecMpidr layout, as the RMM reports it in exit.gprs[1])."""
    entry: int = 0
    """CPU_ON entry point (Realm X2)."""
    context: int = 0
    """CPU_ON context id (Realm X3)."""

    @property
    def is_cpu_on(self) -> bool:
        """True for PSCI_CPU_ON (SMC32 or SMC64)."""
        return self.fid in PSCI_CPU_ON_FIDS


class ActionObserver(Protocol):
    """Whoever wants to know what became of one realm action (the sequence runner's RealmAction)."""

    def start(self) -> None:
        """The realm performed the action (it retired, or the REC exited because of it)."""
        ...

    def complete(self, registers: Iterable[int]) -> None:
        """The realm observed the action's outcome: X0.. (or the one register an access loaded)."""
        ...


@dataclass(frozen=True, slots=True)
class InFlight:
    """A realm call that exited to the Host and whose result the realm sees when the REC next runs."""

    observer: ActionObserver | None
    registers: int = 4
    """How many of X0.. the realm observes (9 for the commands whose output spans X1..X8)."""
    host_call_ipa: int | None = None
    """IPA of the RsiHostCall of an RSI_HOST_CALL: the realm also observes the gprs the RMM wrote back."""


@dataclass(slots=True)
class TokenProgress:
    """RSI attestation state of a REC (RMM 1.0 B5.3.2/3): IN_PROGRESS while this exists."""

    challenge: bytes
    claims: bytes
    """The Realm token's payload, built (measurements sampled) at RSI_ATTESTATION_TOKEN_INIT."""
    token: bytes | None = None
    """The CCA token once the first TOKEN_CONTINUE signed it."""
    offset: int = 0
    """Bytes of the token already delivered."""


@dataclass(frozen=True, slots=True)
class InjectedException:
    """An exception the RMM injected into the Realm instead of a REC exit (vector offset, ESR_EL1)."""

    vector: int
    esr_el1: int


@dataclass(frozen=True, slots=True)
class EmulatableAbort:
    """An emulatable data abort at an Unprotected IPA that the REC exited with (RMM 1.0 A4.3).

    ``register`` is the transfer register (31 = XZR); for a load the Host's
    ``enter.gprs[0]`` lands there, masked to ``size`` bytes and sign-extended
    when ``sign_extend``.
    """

    write: bool
    register: int
    size: int
    sign_extend: bool = False
    sixty_four: bool = True


@dataclass(slots=True, kw_only=True)
class Rec:
    """A Realm Execution Context (RMM 1.0 A2.3): register state, runnability and pending exit state."""

    addr: int
    owner: Realm
    mpidr: int
    pc: int
    gprs: list[int]
    runnable: bool
    aux: tuple[int, ...]
    state: RecState = RecState.READY
    emulatable_abort: EmulatableAbort | None = None
    """Set by an emulatable data-abort exit, cleared by every other exit."""
    unprotected_abort: bool = False
    """The last exit was a data abort at an Unprotected IPA (where TF-RMM lets the Host inject an SEA)."""
    psci_pending: PsciRequest | None = None
    ripas_addr: int = 0
    ripas_top: int = 0
    ripas_value: Ripas = Ripas.EMPTY
    ripas_destroyed: bool = False
    """RSI_IPA_STATE_SET asked with RSI_CHANGE_DESTROYED."""
    sea_pending: bool = False
    """The Host asked (enter.flags.inject_sea) for an SEA to be injected when the REC next runs."""
    host_call_pending: int | None = None
    """IPA of the RsiHostCall of a Host call awaiting the Host's answer."""
    entries: int = 0
    """How many times the REC was entered successfully."""
    in_flight: InFlight | None = None
    """The realm call awaiting the Host (RIPAS change, Host call, PSCI), observed at the next run."""
    faulted: object | None = None
    """The realm action whose abort the REC last exited with (PC not advanced; retried unless resolved)."""
    attestation: TokenProgress | None = None
    injected: InjectedException | None = None
    """The last exception the RMM injected into the Realm (observable only on the model)."""

    @property
    def ripas_change_pending(self) -> bool:
        """A RIPAS change request is open (between its REC exit and the next REC entry)."""
        return self.ripas_top != 0

    # -- what a REC exit leaves pending (called by realm execution) -------------

    def exit_ripas_change(self, *, base: int, top: int, ripas: Ripas, change_destroyed: bool) -> RecExit:
        """The Realm's RSI_IPA_STATE_SET was accepted: record the request, describe the exit."""
        self.ripas_addr = base
        self.ripas_top = top
        self.ripas_value = ripas
        self.ripas_destroyed = change_destroyed
        self._clear_abort()
        return RecExit(
            exit_reason=RecExitReason.RIPAS_CHANGE, ripas_base=base, ripas_top=top, ripas_value=ripas
        )

    def exit_psci(self, request: PsciRequest) -> RecExit:
        """The Realm issued CPU_ON / AFFINITY_INFO for another REC: pending until RMI_PSCI_COMPLETE."""
        self.psci_pending = request
        self._clear_abort()
        self._close_ripas_change()
        gprs = (request.fid, request.target_mpidr) + (0,) * (GPR_COUNT - 2)
        return RecExit(exit_reason=RecExitReason.PSCI, gprs=gprs)

    def exit_psci_notify(self, fid: int) -> RecExit:
        """The Realm issued PSCI_CPU_SUSPEND or PSCI_CPU_OFF: the Host is told, nothing is pending (§8)."""
        self._clear_abort()
        self._close_ripas_change()
        return RecExit(exit_reason=RecExitReason.PSCI, gprs=(fid,) + (0,) * (GPR_COUNT - 1))

    def exit_system_off(self, fid: int) -> RecExit:
        """The Realm issued PSCI_SYSTEM_OFF or SYSTEM_RESET: it is off for good (RMM 1.0 A2.1.5)."""
        self.owner.state = RealmState.SYSTEM_OFF
        self._clear_abort()
        self._close_ripas_change()
        return RecExit(exit_reason=RecExitReason.PSCI, gprs=(fid,) + (0,) * (GPR_COUNT - 1))

    def exit_host_call(self, *, ipa: int, imm: int, gprs: Sequence[int]) -> RecExit:
        """The Realm issued RSI_HOST_CALL with its RsiHostCall at ``ipa``."""
        self.host_call_pending = ipa
        self._clear_abort()
        self._close_ripas_change()
        padded = tuple(gprs[:GPR_COUNT]) + (0,) * (GPR_COUNT - len(gprs[:GPR_COUNT]))
        return RecExit(exit_reason=RecExitReason.HOST_CALL, imm=imm, gprs=padded)

    def exit_data_abort(
        self,
        *,
        esr: int,
        hpfar: int,
        far: int = 0,
        unprotected: bool,
        emulatable: EmulatableAbort | None,
        store_value: int = 0,
    ) -> RecExit:
        """A stage-2 abort the Host must see; ``emulatable`` when the Host may emulate it (A4.3).

        ``store_value`` is the data of an emulatable store, reported in ``exit.gprs[0]``.
        """
        self._close_ripas_change()
        self.unprotected_abort = unprotected
        self.emulatable_abort = emulatable
        gprs = (store_value,) + (0,) * (GPR_COUNT - 1)
        return RecExit(exit_reason=RecExitReason.SYNC, esr=esr, far=far, hpfar=hpfar, gprs=gprs)

    def exit_plain(self, reason: RecExitReason, *, esr: int = 0) -> RecExit:
        """An exit that leaves nothing pending (IRQ, FIQ, SError, WFx …); ``esr`` for SError and WFx."""
        self._clear_abort()
        self._close_ripas_change()
        return RecExit(exit_reason=reason, esr=esr)

    def _clear_abort(self) -> None:
        self.emulatable_abort = None
        self.unprotected_abort = False

    def _close_ripas_change(self) -> None:
        self.ripas_addr = 0
        self.ripas_top = 0


@dataclass(slots=True, kw_only=True)
class Realm:
    """A Realm (RMM 1.0 A2.1): its parameters, state, starting RTTs, REC bookkeeping and measurements."""

    rd: int
    state: RealmState
    ipa_width: int
    hash_algo: HashAlgorithm
    lpa2: bool
    vmid: int
    rpv: bytes
    rtt_base: int
    rtt_level_start: int
    rtt_num_start: int
    starts: tuple[Rtt, ...]
    measurements: list[bytes] = field(default_factory=lambda: [bytes(MEASUREMENT_SIZE)] * MEASUREMENT_SLOTS)
    """Index 0 the RIM, 1..4 the REMs, each 64 bytes (A7.1)."""
    rec_index: int = 0
    """Index the next REC must carry (A2.3.3); never decremented."""
    num_recs: int = 0
    sve_vl: int = 0
    num_bps: int = 0
    num_wps: int = 0
    pmu_num_ctrs: int = 0
    flags: int = 0

    @property
    def rim(self) -> bytes:
        """The Realm Initial Measurement (64 bytes, digest zero-padded)."""
        return self.measurements[0]

    @property
    def protected_top(self) -> int:
        """First Unprotected IPA: 2^(w-1)."""
        return 1 << (self.ipa_width - 1)

    @property
    def ipa_top(self) -> int:
        """First IPA past the Realm's IPA space: 2^w."""
        return 1 << self.ipa_width

    def is_live(self) -> bool:
        """A2.1.4: the Realm owns a REC, or a starting RTT has an ASSIGNED or TABLE entry."""
        return self.num_recs > 0 or any(rtt.is_live() for rtt in self.starts)

    def walk(self, ipa: int, level: int) -> Walk:
        """RttWalk(rd, ipa, level) over this Realm's tables (RMM 1.0)."""
        return walk(self.starts, self.rtt_level_start, ipa, level)
