"""The built-in model as a target: no hardware, same operations (profile ``model``)."""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE, RmiStatus
from cca_hil.arch.rsi_1_0 import HOST_CALL_GPRS, RSI_1_0, WIDE_REGISTERS, psci_function, wide_to_registers
from cca_hil.errors import InputError, TargetError
from cca_hil.model.attestation import AttestationConfig, PlatformAttestation
from cca_hil.model.machine import Machine
from cca_hil.model.platform import PlatformConfig
from cca_hil.model.realm import Realm
from cca_hil.model.realm_exec import (
    Action,
    Hvc,
    Interrupt,
    MemoryAccess,
    RealmStep,
    RsiRecord,
    SmcCall,
    SysregRead,
    SystemError,
    WaitFor,
    default_host_call_ipa,
)
from cca_hil.targets.base import (
    AccessOp,
    AccessResult,
    Capability,
    RealmActionLike,
    Target,
    TargetInfo,
)

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

RMI_VERSION_FID = 0xC400_0150
RMI_FEATURES_FID = 0xC400_0165
RMI_REC_ENTER_FID = 0xC400_015C
MMIO_REGISTER = 1
"""The payload's transfer register for MMIO loads and stores (and trapped register reads)."""

_REGION_SCHEMA = {"name": str, "base": int, "size": int, "kind": str, "pas": str}


class ModelTarget(Target):
    """The in-process RME platform model: an RMM that follows RMM 1.0, deterministic from a seed."""

    kind: ClassVar[str] = "model"

    PARAMS: ClassVar[dict[str, Any]] = {
        "seed": int,
        "pa_bits": int,
        "non_memory": int,
        "mec": bool,
        "mecid_bits": int,
        "encryption": bool,
        "gpf_routing": str,
        "gpt_pps_bits": int,
        "gpt_l0gptsz_bits": int,
        "gpt_l0_base": int,
        "gpt_l1_base": int,
        "el3_skip_tlbi": bool,
        "regions": list,
        "granule_pool": list,
        "attestation": {"keys": str, "platform_token": str},
        "compat": str,
        "rmm": {
            "version": int,
            "quirks": str,
            "quirk_rows": list,
            "fault": {"command": str, "condition": str, "status": str},
            "s2sz": int,
            "lpa2": bool,
            "sve": bool,
            "sve_vl": int,
            "num_bps": int,
            "num_wps": int,
            "pmu": bool,
            "pmu_num_ctrs": int,
            "sha256": bool,
            "sha512": bool,
            "gicv3_num_lrs": int,
            "max_recs_order": int,
            "aux_count": int,
            "vmid_bits": int,
            "gicv3_priority_bits": int,
            "gicv3_id_bits": int,
            "pa_bits_for_start_level_0": int,
        },
    }

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        params = {k: v for k, v in profile.params.items() if k != "attestation"}
        self.config = PlatformConfig.from_params({"name": profile.name, **params})
        self.attestation_config = AttestationConfig.from_params(dict(profile.params.get("attestation", {})))
        self.machine = self._machine()
        self._observers: dict[int, _ConditionObserver] = {}

    def _machine(self) -> Machine:
        """A freshly booted platform whose EL3 holds the attestation data the profile chose."""
        machine = Machine(self.config)
        machine.rmm.attestation = PlatformAttestation.build(
            seed=self.config.seed,
            config=self.attestation_config,
            platform_config=self.config.rmm.feature_register_0().to_bytes(8, "little"),
        )
        return machine

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {
            Capability.RME,
            Capability.ACCESS,
            Capability.MEMORY,
            Capability.GPT_READ,
            Capability.REALM_EXEC,
            Capability.LOAD,
            Capability.RESET,
        }
        if self.config.mec:
            caps.add(Capability.MEC)
        if self.config.encryption and importlib.util.find_spec("cryptography") is not None:
            caps.add(Capability.ENCRYPTION)
        # Tokens need the optional ``attest`` dependencies; look for them without importing them.
        if all(importlib.util.find_spec(name) is not None for name in ("cbor2", "cryptography")):
            caps.add(Capability.ATTESTATION)
        return frozenset(caps)

    def info(self) -> TargetInfo:
        version = self.machine.smc(RMI_VERSION_FID, 0x10000)
        features = self.machine.smc(RMI_FEATURES_FID, 0)
        rmm = self.config.rmm
        facts = {
            "model seed": str(self.config.seed),
            "RMM quirks": rmm.quirks,
            "RMI_FEATURES[0]": f"{features[1]:#x}",
            "REC aux granules": str(rmm.aux_count),
            "attestation keys": self.attestation_config.keys,
        }
        if Capability.ATTESTATION in self.capabilities:
            attestation = self.machine.rmm.attestation
            facts["IAK public key (P-384, x‖y)"] = (attestation.iak.x + attestation.iak.y).hex()
            facts["RAK public key (P-384, x‖y)"] = (attestation.rak.x + attestation.rak.y).hex()
        return TargetInfo(
            name=self.name,
            kind=self.kind,
            pa_bits=self.config.pa_bits,
            regions=self.config.regions,
            granule_pool=self.config.granule_pool,
            rmm_version=version[2]
            if (version[0] & 0xFF) in (RmiStatus.SUCCESS, RmiStatus.ERROR_INPUT)
            else None,
            capabilities=self.capabilities,
            platform=self.config.platform_names(),
            facts=facts,
        )

    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        return self.machine.monitor.smc(fid, args)

    def read(self, pa: int, size: int) -> bytes:
        return self.machine.ns_read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        self.machine.ns_write(pa, data)

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        return self.machine.ns_access(pa, op, size, value)

    def gpt_pas(self, pa: int) -> Pas:
        return self.machine.gpt.pas_of(pa)

    def gpt_registers(self) -> tuple[int, int]:
        gpt = self.machine.gpt
        return gpt.gpccr.encode(), gpt.gptbr.encode()

    def gpt_tables(self) -> dict[int, bytes]:
        return self.machine.gpt.tables()

    def access_from(
        self, world: Pas, pa: int, op: AccessOp, size: int = 8, value: int = 0, *, pas: Pas | None = None
    ) -> AccessResult:
        return self.machine.access(pa, op, world=world, pas=pas, size=size, value=value)

    def read_physical(self, pa: int, size: int, pas: Pas, mecid: int = 0) -> bytes:
        self.require(Capability.ENCRYPTION)
        return self.machine.read_physical(pa, size, pas, mecid)

    def realm_mecid(self, rd: int) -> int | None:
        self.require(Capability.MEC)
        return self.machine.realm_mecid(rd)

    @property
    def rmi_condition(self) -> str | None:
        return self.machine.rmm.last_condition

    @property
    def rsi_condition(self) -> str | None:
        """Spec label of the failure condition the realm's last RSI or PSCI call met (None on success)."""
        return self.machine.rmm.last_rsi_condition

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Sequence[Any] = ()) -> tuple[int, ...]:
        """RMI_REC_ENTER with the realm payload performing ``actions`` in order (RMM 1.0 B3.3.15)."""
        rmm = self.machine.rmm
        rec = rmm.recs.get(rec_pa // GRANULE_SIZE)
        if rec is not None and rec.addr == rec_pa:
            staged = [Action(realm_step(a, rec.owner), self._observer(a)) for a in actions]
            rmm.realm_exec.stage(rec_pa, staged)
        try:
            return self.machine.monitor.smc(RMI_REC_ENTER_FID, (rec_pa, run_pa))
        finally:
            # A refused entry ran nothing: the actions stay with the caller.
            rmm.realm_exec.staged.pop(rec_pa, None)

    def _observer(self, action: RealmActionLike) -> _ConditionObserver:
        """The one observer of ``action`` for as long as the realm may still report on it.

        The RMM recognises an access it faulted on by its observer's identity when
        the action is staged again, so each action keeps its observer across entries.
        """
        observers = self._observers
        for key in [k for k, o in observers.items() if o.completed]:
            del observers[key]
        observer = observers.get(id(action))
        if observer is None or observer.action is not action:
            observer = observers[id(action)] = _ConditionObserver(action, self.machine.rmm.realm_exec.rsi_log)
        return observer

    def read_realm(self, rec_pa: int, ipa: int, size: int) -> bytes:
        """What the realm of the REC at ``rec_pa`` holds at ``ipa`` (its own, ASSIGNED+RAM pages only).

        Only the model can look inside a realm; on hardware the realm payload
        would have to hand the bytes back. TargetError for a page the realm
        cannot read.
        """
        rmm = self.machine.rmm
        rec = rmm.recs.get(rec_pa // GRANULE_SIZE)
        if rec is None:
            raise TargetError(f"no REC at {rec_pa:#x}")
        out = bytearray()
        while len(out) < size:
            at = ipa + len(out)
            pa = rmm.realm_ram_pa(rec.owner, at)
            if pa is None:
                raise TargetError(f"the realm cannot read IPA {at:#x} (not ASSIGNED with RIPAS RAM)")
            chunk = min(size - len(out), GRANULE_SIZE - at % GRANULE_SIZE)
            # The RMM's view: a realm granule read through the realm's own encryption context.
            out += rmm.memory.read(pa, chunk)
        return bytes(out)

    def load(
        self,
        image: Path,
        address: int | None = None,
        *,
        verify: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Write an image into Non-secure memory through the GPT, as a loader at NS-EL2 would.

        The image is checked against the platform's loadable Non-secure regions
        first (InputError, nothing written); a granule the GPT has since taken
        from the Non-secure PAS raises GranuleProtectionFault, as a store would.
        """
        from cca_hil.images import check_fits, load_image

        parsed = load_image(image, address=address)
        check_fits(parsed, self.config.regions, pas=Pas.NONSECURE)
        total = parsed.size * (2 if verify else 1)
        done = 0
        for segment in parsed.segments:
            self.machine.ns_write(segment.address, segment.data)
            done += len(segment.data)
            if progress is not None:
                progress(done, total)
        if not verify:
            return
        for segment in parsed.segments:
            if self.machine.ns_read(segment.address, len(segment.data)) != segment.data:
                raise TargetError(f"{self.name}: read-back of {segment.describe()} differs from the image")
            done += len(segment.data)
            if progress is not None:
                progress(done, total)

    def reset(self) -> None:
        """A fresh boot: a new machine from the same configuration and seed."""
        self.machine = self._machine()
        self._observers.clear()


class _ConditionObserver:
    """Hands one action's RSI/PSCI failure condition, from the RMM's per-entry log, to the action.

    The RMM logs every RSI and PSCI call as it handles it and starts the action
    right after, so the log's last record is this action's; the realm may only
    observe the result on a later entry, by when the log has moved on.
    """

    __slots__ = ("_condition", "_log", "action", "completed")

    def __init__(self, action: RealmActionLike, log: list[RsiRecord]) -> None:
        self.action = action
        """The action, held so that its id stays its own while the target keeps this observer."""
        self.completed = False
        self._log = log
        self._condition: str | None = None

    def start(self) -> None:
        """The realm performed the action: note the condition its call met."""
        if self.action.kind in ("rsi", "psci") and self._log:
            self._condition = self._log[-1].condition
        self.action.start()

    def complete(self, registers: Iterable[int]) -> None:
        """The realm observed the outcome: pass it on with the condition."""
        self.completed = True
        self.action.complete(registers, condition=self._condition)


def realm_step(action: RealmActionLike, realm: Realm) -> RealmStep:
    """What the model's realm payload executes for one sequence action (DESIGN.md "Realm execution")."""
    kind, args = action.kind, action.args
    if kind == "rsi":
        return _rsi_step(action.name, args, realm)
    if kind in ("psci", "smc"):
        fid = action.fid
        if fid is None:
            raise InputError(f"realm {kind} action {action.name!r} has no function identifier")
        if kind == "psci":
            function = psci_function(fid)
            names = function.inputs if function is not None else ()
            return SmcCall(fid, tuple(int(args.get(n, 0)) for n in names))
        count = max((int(k[1:]) for k in args if k.startswith("x")), default=0)
        return SmcCall(fid, tuple(int(args.get(f"x{i}", 0)) for i in range(1, count + 1)))
    if kind == "mmio":
        write = action.name == "write"
        return MemoryAccess(
            ipa=int(args["ipa"]),
            write=write,
            size=int(args.get("size", 8)),
            register=MMIO_REGISTER,
            value=int(args.get("value", 0)),
        )
    if kind == "hvc":
        return Hvc(int(args.get("imm", 0)))
    if kind in ("wfi", "wfe"):
        return WaitFor(event=kind == "wfe")
    if kind == "sysreg":
        return SysregRead(action.name, MMIO_REGISTER)
    if kind in ("irq", "fiq"):
        return Interrupt(fiq=kind == "fiq")
    if kind == "serror":
        return SystemError()
    raise InputError(f"unknown realm action kind {kind!r}")


def _rsi_step(name: str, args: Any, realm: Realm) -> SmcCall:
    """An RSI call with its inputs in their registers; a Host call also writes its RsiHostCall first."""
    command = RSI_1_0.by_name.get(name)
    if command is None:
        raise InputError(f"unknown RSI command {name!r}", valid=list(RSI_1_0.by_name))
    if name == "host_call":
        addr = int(args["addr"]) if "addr" in args else default_host_call_ipa(realm)
        gprs = args.get("gprs", {})
        values = [int(gprs.get(i, 0)) for i in range(HOST_CALL_GPRS)]
        structure = struct.pack("<Q31Q", int(args.get("imm", 0)), *values)
        return SmcCall(command.fid, (addr,), writes=((addr, structure),))
    registers: dict[int, int] = {}
    for param in command.inputs:
        raw = args.get(param.name)
        if param.name == "size" and name == "measurement_extend" and raw is None:
            # An extension without a size hashes the whole value given (64 bytes when none is).
            value = args.get("value")
            raw = len(value) if isinstance(value, bytes) else 8 * WIDE_REGISTERS
        if param.count > 1:
            data = raw if isinstance(raw, bytes) else int(raw or 0).to_bytes(8, "little")
            for i, reg in enumerate(wide_to_registers(data, param.count)):
                registers[param.reg + i] = reg
        else:
            registers[param.reg] = int(raw or 0)
    top = max(registers, default=0)
    return SmcCall(command.fid, tuple(registers.get(i, 0) for i in range(1, top + 1)))
