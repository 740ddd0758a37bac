"""Realm execution: a scripted realm payload, and the RMM's handling of everything it does while a REC runs.

DESIGN.md "Realm execution in sequences": a realm does only what it is told.
Each RMI_REC_ENTER runs the actions staged for that REC, in order, until one
causes a REC exit; the rest stay with the caller (the sequence runner keeps
them queued for the next entry). With nothing left to do the realm takes a
physical IRQ, so the REC exits with reason IRQ.

What the RMM does with each action follows RMM 1.0 and rmm-abi.md:

* SMC: RSI commands (B5.3, §7) with every failure condition in the order of
  :mod:`cca_hil.arch.rsi_1_0`, PSCI (§8, RMM-checked failures before any
  exit), SMCCC_VERSION, and -1 for anything else (§6.4).
* Loads, stores and fetches go through the Realm's RTT (A5.3.1, §3.4): an
  ASSIGNED+RAM page is Realm memory, an ASSIGNED_NS page the Host's memory;
  EMPTY, beyond 2^w or a fetch from an Unprotected IPA inject an SEA; RAM not
  ASSIGNED and DESTROYED exit with a data/instruction abort, and an
  UNASSIGNED_NS access with a valid syndrome is an emulatable MMIO exit (§6.1).
* HVC injects UNDEFINED; WFI/WFE exit only when the entry asked to trap them;
  IRQ, FIQ and SError exit with their reason.

Who watches an action implements :class:`~cca_hil.model.realm.ActionObserver`:
``start()`` when the realm performed it, ``complete(registers)`` when the realm
sees its result — at once for calls the RMM completes, at the next run for
calls the Host completes (RIPAS change, Host call, PSCI). An access that
faulted without retiring (the PC was not advanced) is not started: run again,
it is retried, unless the Host emulated it or injected an SEA, in which case
the next run reports it complete.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cca_hil.arch import measurement
from cca_hil.arch.esr import ExceptionClass, FaultStatus
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import MASK64, HashAlgorithm, RecExitReason, Ripas
from cca_hil.arch.rsi_1_0 import (
    HOST_CALL_GPRS,
    HOST_CALL_SIZE,
    PSCI_VERSION_1_1,
    REALM_CONFIG_RPV_OFFSET,
    RIPAS_CHANGE_DESTROYED,
    RSI_1_0,
    RSI_VERSION_1_0,
    SMCCC_VERSION_1_2,
    SMCCC_VERSION_FID,
    WIDE_REGISTERS,
    PsciFunction,
    PsciStatus,
    RsiCommand,
    RsiStatus,
    is_psci,
    psci_features_supported,
    psci_function,
    registers_to_wide,
    wide_to_registers,
)
from cca_hil.arch.structs import RecEnterFlags, RecExit, rec_mpidr_index
from cca_hil.arch.token import HASH_ALGO_IDS, RealmClaims
from cca_hil.model.realm import (
    GPR_COUNT,
    ActionObserver,
    EmulatableAbort,
    InFlight,
    InjectedException,
    PsciRequest,
    Rec,
    TokenProgress,
)
from cca_hil.model.rtt import PAGE_LEVEL, Hipas, Rtt, entry_size

if TYPE_CHECKING:
    from cca_hil.model.realm import Realm
    from cca_hil.model.rmm import Rmm

GRANULE = 0x1000
SVE_HINT = 1 << 16
"""SMCCC 1.3 "no live SVE state" hint in a FID; the RMM ignores it (rmm-abi.md §1.1)."""
MAX_TOKEN_SIZE = 0x1000
"""Upper bound on the CCA token RSI_ATTESTATION_TOKEN_INIT reports (TF-RMM's default build)."""
VECTOR_SYNC_CURRENT_EL = 0x200
"""Offset of the "synchronous, current EL with SP_ELx" vector: where an injected exception lands."""

# Syndrome encodings come from the one table in arch/esr.py (DDI0487 D24.2.45).
EC_UNKNOWN = int(ExceptionClass.UNKNOWN)
EC_WFX = int(ExceptionClass.WFX)
EC_IABT_LOWER = int(ExceptionClass.INSTRUCTION_ABORT_LOWER)
EC_IABT_SAME = int(ExceptionClass.INSTRUCTION_ABORT_SAME)
EC_DABT_LOWER = int(ExceptionClass.DATA_ABORT_LOWER)
EC_DABT_SAME = int(ExceptionClass.DATA_ABORT_SAME)
EC_SERROR = int(ExceptionClass.SERROR)
ESR_IL = 1 << 25
ESR_ISV = 1 << 24
ESR_SSE = 1 << 21
ESR_SF = 1 << 15
ESR_WNR = 1 << 6
ESR_EA = 1 << 9
DFSC_TRANSLATION_L0 = int(FaultStatus.TRANSLATION_L0)
DFSC_SEA = int(FaultStatus.SYNC_EXTERNAL)
DFSC_GPF = int(FaultStatus.GPF)
_EXTERNAL_ABORTS = frozenset({0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x17})
"""Fault status codes of synchronous external aborts (on access and on translation-table walks)."""

ESR_MASK_EMULATABLE = (
    (0x3F << 26) | ESR_ISV | (0b11 << 22) | ESR_SF | (0b111 << 9) | (0b11 << 11) | ESR_WNR | 0x3F
)
"""What an emulatable data-abort exit reports: EC, ISV, SAS, SF, SET, FnV, EA, WnR, DFSC (not SSE/SRT/IL)."""
ESR_MASK_ABORT = (0x3F << 26) | (0b11 << 11) | (1 << 10) | ESR_EA | 0x3F
"""What any other abort exit reports: EC, SET, FnV, EA, DFSC (§6.1; TF-RMM also drops IL)."""
ESR_MASK_SERROR = (1 << 24) | (0b111 << 10) | ESR_EA | 0x3F
"""What an SError exit reports: IDS, AET, EA, DFSC (TF-RMM reports no EC here)."""
ESR_MASK_WFX = (0x3F << 26) | 1
"""What a WFx exit reports: EC and TI bit 0 (TF-RMM 1.0)."""
ESR_EL1_UNDEFINED = ESR_IL
"""ESR_EL1 of the UNDEFINED exception an HVC from a Realm gets (EC 0, IL 1; rmm-abi.md §6.4)."""
DEFAULT_SERROR_SYNDROME = (EC_SERROR << 26) | ESR_IL | (0b011 << 10) | 0x11
"""A restartable (AET UEO) asynchronous SError: what a bare ``serror`` action takes."""

_RSI_REGS = 4


# ---------------------------------------------------------------------------
# What the realm does
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmcCall:
    """``SMC #0`` with X0 = ``fid`` and X1.. = ``args``; ``writes`` are stores the realm makes first."""

    fid: int
    args: tuple[int, ...] = ()
    writes: tuple[tuple[int, bytes], ...] = ()
    """(IPA, bytes) the realm writes to its own memory before the call (e.g. its RsiHostCall)."""


@dataclass(frozen=True, slots=True)
class MemoryAccess:
    """A load or store the realm makes at ``ipa`` (ARM DDI0487 D24.2 data abort syndrome fields)."""

    ipa: int
    write: bool
    size: int = 8
    register: int = 1
    """Transfer register (SRT); 31 is XZR."""
    value: int = 0
    """Store data."""
    sign_extend: bool = False
    sixty_four: bool = True
    isv: bool = True
    """The instruction has a valid syndrome (a single load/store of a general-purpose register)."""
    far: int | None = None
    """The VA the realm used (FAR_EL2); the IPA when the realm runs with its MMU off."""
    dfsc: int | None = None
    """Fault status the hardware reports if the access faults; None: translation fault at the walk level."""
    set_bits: int = 0
    """ISS.SET of a synchronous external abort."""

    def syndrome(self, dfsc: int, *, protected: bool = True) -> int:
        """ESR_EL2 of this access taking a stage-2 data abort with status ``dfsc``."""
        esr = (EC_DABT_LOWER << 26) | ESR_IL | dfsc | (self.set_bits & 0b11) << 11
        if self.write:
            esr |= ESR_WNR
        if self.isv:
            esr |= ESR_ISV | (self.size.bit_length() - 1) << 22 | (self.register & 0x1F) << 16
            esr |= (ESR_SSE if self.sign_extend else 0) | (ESR_SF if self.sixty_four else 0)
        return esr


@dataclass(frozen=True, slots=True)
class InstructionFetch:
    """The realm branches to ``ipa`` (an instruction fetch that may fault)."""

    ipa: int


@dataclass(frozen=True, slots=True)
class Hvc:
    """``HVC #imm``: not a Host call; the RMM injects UNDEFINED (§6.4)."""

    imm: int = 0


@dataclass(frozen=True, slots=True)
class WaitFor:
    """WFI, or WFE when ``event``.

    Whether it traps is the Host's choice (``enter.flags.trap_wfi/trap_wfe``);
    ``trapped`` overrides that for a recording whose WFx trapped regardless.
    """

    event: bool = False
    trapped: bool | None = None


@dataclass(frozen=True, slots=True)
class SysregRead:
    """A trapped ``MRS Xt, <register>``."""

    name: str
    register: int = 1


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A physical IRQ (or FIQ) for the Host becomes pending while the realm runs."""

    fiq: bool = False


@dataclass(frozen=True, slots=True)
class SystemError:
    """An SError taken while the realm runs, with its ESR_EL2 syndrome."""

    esr: int = DEFAULT_SERROR_SYNDROME


@dataclass(frozen=True, slots=True)
class IrqLine:
    """A physical interrupt for the Host becomes pending (or is no longer pending) while the realm runs.

    Not an exception the realm takes: only interruptible RMM work notices it,
    which in RMM 1.0 is the signing in RSI_ATTESTATION_TOKEN_CONTINUE (§7.3).
    """

    pending: bool = True


RealmStep = (
    SmcCall | MemoryAccess | InstructionFetch | Hvc | WaitFor | SysregRead | Interrupt | SystemError | IrqLine
)


@dataclass(frozen=True, slots=True)
class Action:
    """One step of the payload and whoever wants to know its outcome."""

    step: RealmStep
    observer: ActionObserver | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """The access a REC last exited on without retiring, and its ESR_EL2 (for an injected SEA)."""

    observer: ActionObserver | None
    esr: int
    register: int


@dataclass(frozen=True, slots=True)
class RsiRecord:
    """An RSI command (or PSCI function, ``psci_<name>``) the realm issued and the failure condition it met.

    ``condition`` is None when the call met none of its conditions.
    """

    command: str
    condition: str | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How the realm goes on after an action: exit or not, PC advanced or not, result seen now or later."""

    exit: RecExit | None = None
    retired: bool = True
    """The realm is past the action (else the PC still points at it and it runs again)."""
    observed_now: bool = True
    registers: int = _RSI_REGS
    advance: bool = True
    """PC moves to the next instruction (False when an injected exception moved it to a vector)."""
    host_call_ipa: int | None = None
    condition: str | None = None
    """The PSCI failure condition the RMM found (rmm-abi.md §8), for the call's record."""


_DONE = _Outcome()
_QUIET = _Outcome(registers=0)
_EXCEPTION = _Outcome(registers=0, advance=False)


# ---------------------------------------------------------------------------
# The executor
# ---------------------------------------------------------------------------


@dataclass
class RealmExecution:
    """Runs RECs for the RMM: stages the payload's actions and carries them out on REC entry."""

    rmm: Rmm
    irq_pending: bool = False
    """A physical interrupt for the Host is pending: interruptible RMM work (token signing) stops."""
    max_token_size: int = MAX_TOKEN_SIZE
    staged: dict[int, list[Action]] = field(default_factory=dict)
    rsi_log: list[RsiRecord] = field(default_factory=list)
    """RSI commands and PSCI calls of the last REC entry, in order, with the condition each met."""

    def stage(self, rec_addr: int, actions: list[Action]) -> None:
        """The actions the realm performs when ``rec_addr`` is next entered (replacing earlier ones)."""
        self.staged[rec_addr] = list(actions)

    def run(self, rec: Rec, flags: int) -> RecExit:
        """Run ``rec`` after its entry was accepted and the last exit completed (RMM 1.0 A4.3)."""
        actions = self.staged.pop(rec.addr, [])
        self.rsi_log.clear()
        if not actions:
            # Nothing to do: the IRQ that ends every script is already pending, so the RMM returns
            # before entering the Realm (RMM 1.0 B3.3.15 allows it). What needs the Realm to run —
            # an SEA the Host asked for, the result of a call it made — waits for the next entry.
            return rec.exit_plain(RecExitReason.IRQ)
        emulated = (
            rec.emulatable_abort is not None
            and bool(flags & RecEnterFlags.EMUL_MMIO)
            and not flags & RecEnterFlags.INJECT_SEA
        )
        fault, rec.faulted = rec.faulted, None
        sea = rec.sea_pending
        if sea:
            rec.sea_pending = False
            esr = fault.esr if isinstance(fault, Fault) else (EC_DABT_LOWER << 26) | ESR_IL
            self._inject_sea(rec, esr)
        if isinstance(fault, Fault) and (emulated or sea) and actions:
            first = actions[0]
            if first.observer is not None and first.observer is fault.observer:
                # The faulting access is over: emulated (the RMM loaded the register) or answered by an SEA.
                actions.pop(0)
                first.observer.start()
                first.observer.complete((self._register(rec, fault.register),))
        flight, rec.in_flight = rec.in_flight, None
        if flight is not None and flight.observer is not None:
            flight.observer.complete(self._observed(rec, flight))
        for action in actions:
            outcome = self._perform(rec, action, flags)
            observer = action.observer
            if outcome.retired:
                if outcome.advance:
                    rec.pc = (rec.pc + 4) & MASK64
                if observer is not None:
                    observer.start()
                    if outcome.observed_now:
                        observer.complete(self._observed(rec, InFlight(observer, outcome.registers)))
                if not outcome.observed_now:
                    rec.in_flight = InFlight(observer, outcome.registers, outcome.host_call_ipa)
            if outcome.exit is not None:
                return outcome.exit
        return rec.exit_plain(RecExitReason.IRQ)

    # -- what the realm observes -------------------------------------------------------

    @staticmethod
    def _register(rec: Rec, index: int) -> int:
        return 0 if index == 31 else rec.gprs[index]

    def _observed(self, rec: Rec, flight: InFlight) -> tuple[int, ...]:
        registers = tuple(rec.gprs[: flight.registers])
        if flight.host_call_ipa is not None:
            pa = self.rmm.realm_ram_pa(rec.owner, flight.host_call_ipa)
            if pa is not None:
                gprs = struct.unpack("<31Q", self.rmm.memory.read(pa + 8, 8 * HOST_CALL_GPRS))
                return (registers[0], *gprs)
        return registers

    # -- dispatch ------------------------------------------------------------------------

    def _perform(self, rec: Rec, action: Action, flags: int) -> _Outcome:
        step = action.step
        if isinstance(step, SmcCall):
            return self._smc(rec, step, action)
        if isinstance(step, MemoryAccess):
            return self._access(rec, step, action)
        if isinstance(step, InstructionFetch):
            return self._fetch(rec, step, action)
        if isinstance(step, Hvc):
            self._inject(rec, ESR_EL1_UNDEFINED)
            return _EXCEPTION
        if isinstance(step, WaitFor):
            trap = RecEnterFlags.TRAP_WFE if step.event else RecEnterFlags.TRAP_WFI
            if step.trapped if step.trapped is not None else flags & trap:
                # TF-RMM advances the PC past the WFx before it exits (§6.1).
                esr = ((EC_WFX << 26) | int(step.event)) & ESR_MASK_WFX
                return _Outcome(exit=rec.exit_plain(RecExitReason.SYNC, esr=esr), registers=0)
            return _QUIET
        if isinstance(step, SysregRead):
            return self._sysreg(rec, step)
        if isinstance(step, IrqLine):
            self.irq_pending = step.pending
            return _Outcome(registers=0, advance=False)
        if isinstance(step, Interrupt):
            reason = RecExitReason.FIQ if step.fiq else RecExitReason.IRQ
            return _Outcome(exit=rec.exit_plain(reason), registers=0)
        # SError: the Host sees the syndrome's ISS only (TF-RMM), the realm carries on.
        exit_ = rec.exit_plain(RecExitReason.SERROR, esr=step.esr & ESR_MASK_SERROR)
        return _Outcome(exit=exit_, registers=0)

    def _sysreg(self, rec: Rec, step: SysregRead) -> _Outcome:
        """A trapped register read: the RMM emulates the ID registers; anything else is UNDEFINED.

        The modelled PE implements no optional feature a Realm could see through
        its ID registers, so every sanitised ID register reads as zero.
        """
        if step.name.upper().startswith("ID_"):
            if step.register != 31:
                rec.gprs[step.register] = 0
            return _Outcome(registers=0)
        self._inject(rec, ESR_EL1_UNDEFINED)
        return _EXCEPTION

    # -- memory ------------------------------------------------------------------------------

    @staticmethod
    def _inject(rec: Rec, esr_el1: int) -> None:
        """An exception the Realm takes at EL1 instead of a REC exit (VBAR_EL1 is 0 in the payload)."""
        rec.injected = InjectedException(VECTOR_SYNC_CURRENT_EL, esr_el1)
        rec.pc = VECTOR_SYNC_CURRENT_EL

    def _inject_sea(self, rec: Rec, esr: int, *, instruction: bool = False) -> None:
        """A synchronous external abort taken by the Realm itself, keeping the access's syndrome."""
        ec = EC_IABT_SAME if instruction else EC_DABT_SAME
        self._inject(rec, (ec << 26) | (esr & 0x03FF_FFC0) | ESR_EA | DFSC_SEA)

    def _access(self, rec: Rec, step: MemoryAccess, action: Action) -> _Outcome:
        realm = rec.owner
        ipa = step.ipa
        far = step.far if step.far is not None else ipa
        if ipa >= realm.ipa_top:
            self._inject_sea(rec, step.syndrome(DFSC_TRANSLATION_L0))
            return _EXCEPTION
        found = realm.walk(ipa, PAGE_LEVEL)
        entry = found.entry
        dfsc = step.dfsc if step.dfsc is not None else DFSC_TRANSLATION_L0 + found.level
        esr = step.syndrome(dfsc)
        hpfar = (ipa >> 12) << 4
        protected = ipa < realm.protected_top
        if dfsc in _EXTERNAL_ABORTS:
            # The Host hears of a synchronous external abort; the Realm takes it too (TF-RMM).
            rec.faulted = Fault(action.observer, esr, step.register)
            rec.sea_pending = True
            exit_ = rec.exit_data_abort(esr=esr & ESR_MASK_ABORT, hpfar=0, unprotected=False, emulatable=None)
            return _Outcome(exit=exit_, retired=False)
        if protected:
            if entry.ripas is Ripas.EMPTY:
                self._inject_sea(rec, esr)
                return _EXCEPTION
            if entry.state is Hipas.ASSIGNED and entry.ripas is Ripas.RAM:
                pa = entry.addr + (ipa & (entry_size(found.level) - 1))
                return self._load_store(rec, step, pa)
            rec.faulted = Fault(action.observer, esr, step.register)
            exit_ = rec.exit_data_abort(
                esr=esr & ESR_MASK_ABORT, hpfar=hpfar, unprotected=False, emulatable=None
            )
            return _Outcome(exit=exit_, retired=False)
        if entry.state is Hipas.ASSIGNED_NS:
            pa = entry.addr + (ipa & (entry_size(found.level) - 1))
            if not self.rmm.gpt.check(pa, Pas.NONSECURE):
                # The RMM does not check the GPT for ASSIGNED_NS: the Realm takes the GPF itself (§6.4).
                self._inject(rec, (EC_DABT_SAME << 26) | (esr & 0x03FF_FFC0) | DFSC_GPF)
                return _EXCEPTION
            return self._load_store(rec, step, pa)
        rec.faulted = Fault(action.observer, esr, step.register)
        if step.isv:
            abort = EmulatableAbort(
                write=step.write,
                register=step.register,
                size=step.size,
                sign_extend=step.sign_extend,
                sixty_four=step.sixty_four,
            )
            value = step.value & ((1 << (8 * step.size)) - 1) if step.write else 0
            exit_ = rec.exit_data_abort(
                esr=esr & ESR_MASK_EMULATABLE,
                hpfar=hpfar,
                far=far & (GRANULE - 1),
                unprotected=True,
                emulatable=abort,
                store_value=value,
            )
        else:
            exit_ = rec.exit_data_abort(
                esr=esr & ESR_MASK_ABORT,
                hpfar=hpfar,
                far=far & (GRANULE - 1),
                unprotected=True,
                emulatable=None,
            )
        return _Outcome(exit=exit_, retired=False)

    def _load_store(self, rec: Rec, step: MemoryAccess, pa: int) -> _Outcome:
        """An access that does not fault: Realm memory (or the Host's, through ASSIGNED_NS)."""
        memory = self.rmm.memory
        mask = (1 << (8 * step.size)) - 1
        if step.write:
            memory.write(pa, (step.value & mask).to_bytes(step.size, "little"))
        elif step.register != 31:
            value = int.from_bytes(memory.read(pa, step.size), "little")
            if step.sign_extend and value >> (8 * step.size - 1):
                value -= 1 << (8 * step.size)
            rec.gprs[step.register] = value & ((1 << (64 if step.sixty_four else 32)) - 1)
        return _Outcome(registers=0)

    def _fetch(self, rec: Rec, step: InstructionFetch, action: Action) -> _Outcome:
        realm = rec.owner
        ipa = step.ipa
        esr = (EC_IABT_LOWER << 26) | ESR_IL
        if ipa >= realm.protected_top:
            self._inject_sea(rec, esr | DFSC_TRANSLATION_L0, instruction=True)
            return _EXCEPTION
        found = realm.walk(ipa, PAGE_LEVEL)
        entry = found.entry
        if entry.ripas is Ripas.EMPTY:
            self._inject_sea(rec, esr, instruction=True)
            return _EXCEPTION
        if entry.state is Hipas.ASSIGNED and entry.ripas is Ripas.RAM:
            rec.pc = ipa
            return _Outcome(registers=0, advance=False)
        rec.faulted = Fault(action.observer, esr, 31)
        esr |= DFSC_TRANSLATION_L0 + found.level
        exit_ = rec.exit_data_abort(
            esr=esr & ESR_MASK_ABORT, hpfar=(ipa >> 12) << 4, unprotected=False, emulatable=None
        )
        return _Outcome(exit=exit_, retired=False)

    # -- SMC ------------------------------------------------------------------------------

    def _smc(self, rec: Rec, step: SmcCall, action: Action) -> _Outcome:
        for ipa, data in step.writes:
            pa = self.rmm.realm_ram_pa(rec.owner, ipa)
            if pa is not None and (pa & (GRANULE - 1)) + len(data) <= GRANULE:
                self.rmm.memory.write(pa, data)
        rec.gprs[0] = step.fid & MASK64
        for i, value in enumerate(step.args[: GPR_COUNT - 1]):
            rec.gprs[1 + i] = value & MASK64
        fid = step.fid & ~SVE_HINT
        command = RSI_1_0.by_fid.get(fid)
        if command is not None:
            outcome = self._rsi(rec, command)
            self.rmm.last_rsi_condition = self.rsi_log[-1].condition
            return outcome
        if is_psci(fid):
            outcome = self._psci(rec, fid)
            function = psci_function(fid)
            name = f"psci_{function.name}" if function is not None else "psci"
            self.rsi_log.append(RsiRecord(name, outcome.condition))
            self.rmm.last_rsi_condition = outcome.condition
            return outcome
        if fid == SMCCC_VERSION_FID:
            rec.gprs[0] = SMCCC_VERSION_1_2
            return _DONE
        rec.gprs[0] = PsciStatus.NOT_SUPPORTED.x0
        return _DONE

    # -- RSI ------------------------------------------------------------------------------

    def _ret(self, rec: Rec, command: RsiCommand, status: RsiStatus, *outputs: int) -> None:
        """X0 = status, X1..X3 = outputs or zero (TF-RMM zeroes them; X4 up are preserved)."""
        values = (*outputs, 0, 0, 0)
        rec.gprs[0] = int(status)
        rec.gprs[1:4] = [v & MASK64 for v in values[:3]]
        self.rsi_log.append(RsiRecord(command.name, None))

    def _fail(self, rec: Rec, command: RsiCommand, cond_id: str) -> _Outcome:
        cond = command.condition(cond_id)
        rec.gprs[0] = int(cond.status)
        rec.gprs[1:4] = [0, 0, 0]
        self.rsi_log.append(RsiRecord(command.name, cond.id))
        return _DONE

    def _rsi(self, rec: Rec, command: RsiCommand) -> _Outcome:
        handler = getattr(self, f"_rsi_{command.name}")
        outcome: _Outcome = handler(rec, command, tuple(rec.gprs[1:11]))
        return outcome

    def _rsi_version(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_VERSION (B5.3.10): SUCCESS iff the requested revision is compatible with 1.0."""
        req = x[0]
        ours = RSI_VERSION_1_0
        if req >> 31 == 0 and req >> 16 == ours >> 16 and (req & 0xFFFF) <= (ours & 0xFFFF):
            self._ret(rec, command, RsiStatus.SUCCESS, req, ours)
        else:
            self._ret(rec, command, RsiStatus.ERROR_INPUT, ours, ours)
        return _DONE

    def _rsi_features(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_FEATURES (B5.3.1): no feature register has a bit set in RSI 1.0."""
        self._ret(rec, command, RsiStatus.SUCCESS, 0)
        return _DONE

    def _rsi_measurement_read(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_MEASUREMENT_READ (B5.3.6): the RIM or a REM over X1..X8."""
        if x[0] > 4:
            return self._fail(rec, command, "index_bound")
        value = wide_to_registers(rec.owner.measurements[x[0]])
        self._ret(rec, command, RsiStatus.SUCCESS)
        rec.gprs[1 : 1 + WIDE_REGISTERS] = list(value)
        return _Outcome(registers=1 + WIDE_REGISTERS)

    def _rsi_measurement_extend(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_MEASUREMENT_EXTEND (B5.3.5): REM ← H(REM ‖ value[:size]) (rmm-abi.md §9.6, §12 #18)."""
        index, size = x[0], x[1]
        if not 1 <= index <= 4:
            return self._fail(rec, command, "index_bound")
        if size > 64:
            return self._fail(rec, command, "size_bound")
        realm = rec.owner
        value = registers_to_wide(x[2:10])
        realm.measurements[index] = measurement.rem_extend(
            realm.hash_algo, realm.measurements[index], value, size
        )
        self._ret(rec, command, RsiStatus.SUCCESS)
        return _DONE

    def _rsi_attestation_token_init(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_ATTESTATION_TOKEN_INIT (B5.3.3): a new token; measurements sampled now (rmm-abi.md §7.3)."""
        realm = rec.owner
        challenge = registers_to_wide(x[:WIDE_REGISTERS])
        rec.attestation = TokenProgress(challenge=challenge, claims=self._claims(realm, challenge))
        self._ret(rec, command, RsiStatus.SUCCESS, self.max_token_size)
        return _DONE

    def _claims(self, realm: Realm, challenge: bytes) -> bytes:
        """The Realm token's payload for ``realm`` now (RMM 1.0 A7.2.3.1)."""
        size = measurement.digest_size(realm.hash_algo)
        claims = RealmClaims(
            challenge=challenge,
            rpv=realm.rpv,
            public_key=self.rmm.attestation.rak_claim(),
            hash_algo=HASH_ALGO_IDS[HashAlgorithm(realm.hash_algo)],
            public_key_hash_algo="sha-256",
            rim=realm.measurements[0][:size],
            rems=tuple(m[:size] for m in realm.measurements[1:]),
        )
        return claims.encode()

    def _rsi_attestation_token_continue(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_ATTESTATION_TOKEN_CONTINUE (B5.3.2): the next part of the token into a Realm page."""
        addr, offset, size = x[0], x[1], x[2]
        realm = rec.owner
        if addr & (GRANULE - 1):
            return self._fail(rec, command, "addr_align")
        if offset >= GRANULE:
            return self._fail(rec, command, "offset_bound")
        if offset + size > MASK64:
            return self._fail(rec, command, "size_overflow")
        if offset + size > GRANULE:
            return self._fail(rec, command, "size_bound")
        if addr >= realm.protected_top:
            return self._fail(rec, command, "addr_bound")
        progress = rec.attestation
        if progress is None:
            return self._fail(rec, command, "state")
        page = self._rsi_page(rec, command, addr)
        if isinstance(page, _Outcome):
            return page
        if progress.token is None:
            if self.irq_pending:
                # Signing is interruptible: the Host's interrupt wins; the realm sees INCOMPLETE, 0 bytes.
                self._ret(rec, command, RsiStatus.INCOMPLETE, 0)
                return _Outcome(exit=rec.exit_plain(RecExitReason.IRQ), observed_now=False)
            attestation = self.rmm.attestation
            token = attestation.cca_token(attestation.sign_realm_token(progress.claims))
            if len(token) > self.max_token_size:
                rec.attestation = None
                return self._fail(rec, command, "unknown")
            progress.token = token
        token = progress.token
        chunk = token[progress.offset : progress.offset + size]
        self.rmm.memory.write(page + offset, chunk)
        progress.offset += len(chunk)
        if progress.offset < len(token):
            self._ret(rec, command, RsiStatus.INCOMPLETE, len(chunk))
        else:
            rec.attestation = None
            self._ret(rec, command, RsiStatus.SUCCESS, len(chunk))
        return _DONE

    def _rsi_page(self, rec: Rec, command: RsiCommand, ipa: int) -> int | _Outcome:
        """PA of the Realm page an RSI command writes, or how the command ends (rmm-abi.md §7.2, §12 #16).

        RIPAS EMPTY: RSI_ERROR_INPUT. RAM but not ASSIGNED, or DESTROYED: a REC
        exit with a synthetic stage-2 data abort, PC not advanced, so that the
        call is made again once the Host has mapped the page.
        """
        realm = rec.owner
        found = realm.walk(ipa, PAGE_LEVEL)
        entry = found.entry
        if entry.ripas is Ripas.EMPTY:
            self._fail(rec, command, "tf_rmm_ripas_empty")
            return _DONE
        if entry.state is Hipas.ASSIGNED and entry.ripas is Ripas.RAM:
            return entry.addr + (ipa & (entry_size(found.level) - 1) & ~(GRANULE - 1))
        self.rsi_log.append(RsiRecord(command.name, None))
        return _Outcome(exit=self.rmm.synthetic_abort(rec, ipa), retired=False)

    def _rsi_realm_config(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_REALM_CONFIG (B5.3.7): RsiRealmConfig into a Realm page (§5.4; §12 #17)."""
        addr = x[0]
        realm = rec.owner
        if addr & (GRANULE - 1):
            return self._fail(rec, command, "addr_align")
        if addr >= realm.protected_top:
            return self._fail(rec, command, "addr_bound")
        page = self._rsi_page(rec, command, addr)
        if isinstance(page, _Outcome):
            return page
        memory = self.rmm.memory
        if not self.rmm.quirk(17):
            # rmm-abi.md §12 #17: the spec's other bytes are zero; TF-RMM leaves them as they were.
            memory.write(page, bytes(GRANULE))
        memory.write(page, realm.ipa_width.to_bytes(8, "little") + bytes([int(realm.hash_algo)]))
        memory.write(page + REALM_CONFIG_RPV_OFFSET, realm.rpv)
        self._ret(rec, command, RsiStatus.SUCCESS)
        return _DONE

    def _rsi_ipa_state_set(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_IPA_STATE_SET (B5.3.9): ask the Host for a RIPAS change; REC exit RIPAS_CHANGE."""
        # The whole register is checked: bits above RsiRipas' 8 make it invalid too (TF-RMM).
        base, top, ripas, flags = x[0], x[1], x[2], x[3]
        if ripas not in (Ripas.EMPTY, Ripas.RAM):
            return self._fail(rec, command, "ripas_valid")
        if base & (GRANULE - 1):
            return self._fail(rec, command, "base_align")
        if top & (GRANULE - 1):
            return self._fail(rec, command, "top_align")
        if top <= base:
            return self._fail(rec, command, "size_valid")
        if top > rec.owner.protected_top:
            return self._fail(rec, command, "rgn_bound")
        self.rsi_log.append(RsiRecord(command.name, None))
        exit_ = rec.exit_ripas_change(
            base=base, top=top, ripas=Ripas(ripas), change_destroyed=bool(flags & RIPAS_CHANGE_DESTROYED)
        )
        return _Outcome(exit=exit_, observed_now=False)

    def _rsi_ipa_state_get(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_IPA_STATE_GET (B5.3.8): the RIPAS at ``base`` and how far it extends (same RTT, same level)."""
        base, top = x[0], x[1]
        realm = rec.owner
        if base & (GRANULE - 1):
            return self._fail(rec, command, "base_align")
        if top & (GRANULE - 1):
            return self._fail(rec, command, "end_align")
        if top <= base:
            return self._fail(rec, command, "size_valid")
        if top > realm.protected_top:
            return self._fail(rec, command, "rgn_bound")
        found = realm.walk(base, PAGE_LEVEL)
        ripas = found.entry.ripas
        size = entry_size(found.level)
        index = found.index
        end = base
        entries = found.rtt.entries
        while index < len(entries) and end < top and entries[index].ripas is ripas:
            if entries[index].state is Hipas.TABLE:
                break
            end = found.rtt.ipa_of(index) + size
            index += 1
        self._ret(rec, command, RsiStatus.SUCCESS, min(end, top), int(ripas))
        return _DONE

    def _rsi_host_call(self, rec: Rec, command: RsiCommand, x: tuple[int, ...]) -> _Outcome:
        """RSI_HOST_CALL (B5.3.4): RsiHostCall's imm and gprs go to the Host; REC exit HOST_CALL."""
        addr = x[0]
        if addr & (HOST_CALL_SIZE - 1):
            return self._fail(rec, command, "addr_align")
        if addr >= rec.owner.protected_top:
            return self._fail(rec, command, "addr_bound")
        page = self._rsi_page(rec, command, addr)
        if isinstance(page, _Outcome):
            return page
        pa = page + (addr & (GRANULE - 1))
        raw = self.rmm.memory.read(pa, HOST_CALL_SIZE)
        imm_slot = int.from_bytes(raw[:8], "little")
        # RsiHostCall.imm is a UInt16; TF-RMM carries 32 bits of its slot to the Host.
        imm = imm_slot & (0xFFFF_FFFF if self.rmm.tf_rmm else 0xFFFF)
        gprs = struct.unpack("<31Q", raw[8 : 8 + 8 * HOST_CALL_GPRS])
        self.rsi_log.append(RsiRecord(command.name, None))
        exit_ = rec.exit_host_call(ipa=addr, imm=imm, gprs=gprs)
        return _Outcome(exit=exit_, observed_now=False, host_call_ipa=addr)

    # -- PSCI -----------------------------------------------------------------------------

    def _psci_ret(self, rec: Rec, status: int) -> _Outcome:
        rec.gprs[0:4] = [status & MASK64, 0, 0, 0]
        return _DONE

    def _psci_fail(self, rec: Rec, function: PsciFunction, cond_id: str) -> _Outcome:
        """A failure the RMM detects before any exit: the condition's result, no REC exit (§8)."""
        cond = next(c for c in function.conditions if c.id == cond_id)
        self._psci_ret(rec, cond.result)
        return _Outcome(condition=cond.id)

    def _psci(self, rec: Rec, fid: int) -> _Outcome:
        """A Realm's PSCI call (rmm-abi.md §8): answered by the RMM, or forwarded to the Host."""
        function = psci_function(fid)
        realm = rec.owner
        x1, x2, x3 = rec.gprs[1], rec.gprs[2], rec.gprs[3]
        if function is None:
            return self._psci_ret(rec, PsciStatus.NOT_SUPPORTED)
        name = function.name
        if name == "version":
            return self._psci_ret(rec, PSCI_VERSION_1_1)
        if name == "features":
            supported = x1 in psci_features_supported()
            return self._psci_ret(rec, PsciStatus.SUCCESS if supported else PsciStatus.NOT_SUPPORTED)
        if name in ("cpu_suspend", "cpu_off"):
            self._psci_ret(rec, PsciStatus.SUCCESS)
            if name == "cpu_off":
                rec.runnable = False
            return _Outcome(exit=rec.exit_psci_notify(fid), observed_now=False)
        if name in ("system_off", "system_reset"):
            return _Outcome(exit=rec.exit_system_off(fid), observed_now=False)
        if name == "cpu_on":
            if x2 >= realm.protected_top:
                return self._psci_fail(rec, function, "entry")
            target = self._target(rec, x1)
            if target is None:
                return self._psci_fail(rec, function, "mpidr")
            if target == rec.mpidr:
                return self._psci_fail(rec, function, "runnable")
            request = PsciRequest(fid=fid, target_mpidr=target, entry=x2, context=x3)
            return _Outcome(exit=rec.exit_psci(request), observed_now=False)
        # affinity_info
        if x2 != 0:
            return self._psci_fail(rec, function, "target_bound")
        target = self._target(rec, x1)
        if target is None:
            return self._psci_fail(rec, function, "target_match")
        if target == rec.mpidr:
            return self._psci_ret(rec, PsciStatus.SUCCESS)
        return _Outcome(exit=rec.exit_psci(PsciRequest(fid=fid, target_mpidr=target)), observed_now=False)

    def _target(self, rec: Rec, mpidr: int) -> int | None:
        """The RmiRecMpidr of the REC a PSCI target names, None if it names none (§3.3, §12 #22).

        The Realm passes MPIDR_EL1's layout (Aff3 in bits 39:32). The spec
        wants an existing REC; TF-RMM only checks the index against the RECs
        created so far, so a destroyed REC's MPIDR still reaches the Host.
        """
        if mpidr & ~0xFF_00FF_FF0F:
            return None
        rmi = (mpidr & 0xFF_FF0F) | ((mpidr >> 32) & 0xFF) << 24
        realm = rec.owner
        if self.rmm.quirk(22):
            return rmi if rec_mpidr_index(rmi) < realm.rec_index else None
        return rmi if self.rmm.rec_of(realm, rmi) is not None else None


def first_ram_page(realm: Realm) -> int | None:
    """The lowest Protected IPA whose page the Realm can use (ASSIGNED with RIPAS RAM), if any."""

    def scan(rtt: Rtt) -> int | None:
        for index, entry in enumerate(rtt.entries):
            ipa = rtt.ipa_of(index)
            if ipa >= realm.protected_top:
                return None
            if entry.table is not None:
                found = scan(entry.table)
                if found is not None:
                    return found
            elif entry.state is Hipas.ASSIGNED and entry.ripas is Ripas.RAM:
                return ipa
        return None

    for start in realm.starts:
        found = scan(start)
        if found is not None:
            return found
    return None


HOST_CALL_SCRATCH_OFFSET = GRANULE - HOST_CALL_SIZE
"""Where the payload keeps an RsiHostCall no action placed: the last 256 bytes of its first RAM page."""


def default_host_call_ipa(realm: Realm) -> int:
    """Where a Host call that names no RsiHostCall keeps it: the end of the first RAM page (or of IPA 0)."""
    page = first_ram_page(realm)
    return (page if page is not None else 0) + HOST_CALL_SCRATCH_OFFSET
