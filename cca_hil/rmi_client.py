"""Typed RMI calls and realm-building helpers over any :class:`~cca_hil.targets.base.Target`.

The client never knows which target it drives: it issues SMCs, reads and
writes Non-secure memory and decodes what comes back with the tables of
``cca_hil.arch.rmi_1_0`` (RMM 1.0 B4.3). :class:`GranuleAllocator` hands out
NS granules from the target's granule pool the way DESIGN.md "Sequence files"
lays them out (one 64 KiB slot per named granule); :class:`RealmBuilder`
builds and tears down a complete realm with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from cca_hil.arch.rmi import (
    GRANULE_SIZE,
    MASK64,
    SMCCC_NOT_SUPPORTED,
    HashAlgorithm,
    Output,
    Ripas,
    RmiCommand,
    RmiInterface,
    RmiStatus,
    RttEntryState,
    rtt_entry_size,
    status_name,
    unpack_return,
)
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import (
    MAX_REC_AUX,
    REC_RUN_EXIT_OFFSET,
    RealmParams,
    RecCreateFlags,
    RecExit,
    RecParams,
    Structure,
    rec_mpidr_for_index,
)
from cca_hil.errors import InputError, TargetError
from cca_hil.targets.base import Capability, Target

SLOT_SIZE = 0x10000
"""Each named granule starts its own 64 KiB slot (DESIGN.md "Sequence files")."""

GRANULES_PER_SLOT = SLOT_SIZE // GRANULE_SIZE

# Output types decoded to enumerations; every other output stays an int.
_OUTPUT_ENUMS: dict[str, type[IntEnum]] = {
    "RmiRttEntryState": RttEntryState,
    "RmiRipas": Ripas,
}


def _decode_output(output: Output, value: int) -> int:
    enum = _OUTPUT_ENUMS.get(output.type)
    if enum is None:
        return value
    try:
        return enum(value)
    except ValueError:
        # A target that reports an encoding the spec does not define is shown as the raw number.
        return value


def output_defined(output: Output, status: RmiStatus | None) -> bool:
    """True when the spec defines ``output`` for a call that ended with ``status`` (RMM 1.0 B4.3)."""
    if status is None:
        return False
    if output.valid == "always":
        return True
    if output.valid == "success_or_rtt_error":
        return status in (RmiStatus.SUCCESS, RmiStatus.ERROR_RTT)
    return status is RmiStatus.SUCCESS


@dataclass(frozen=True, slots=True)
class RmiResult:
    """The decoded answer to one RMI call: raw registers, status, index, outputs by spec name."""

    command: str
    registers: tuple[int, ...]
    status: RmiStatus | None
    """None when X0 is no RmiStatusCode (SMCCC NOT_SUPPORTED or an unknown encoding)."""
    index: int
    outputs: Mapping[str, int] = field(default_factory=dict)
    """Only the outputs the spec defines for this status; enumerations as IntEnum members."""
    condition: str | None = None
    """Spec label of the failure condition the target reported, where it can say (the model)."""

    @property
    def ok(self) -> bool:
        """True for RMI_SUCCESS."""
        return self.status is RmiStatus.SUCCESS

    @property
    def status_name(self) -> str:
        """``success``, ``error_rtt`` …, ``not_supported`` or ``unknown(0x…)``."""
        return status_name(self.registers[0]) if self.registers else "no_answer"

    def describe(self) -> str:
        """One line for people: command, status, index, condition."""
        text = f"{self.command}: {self.status_name}"
        if self.status not in (None, RmiStatus.SUCCESS):
            text += f" index {self.index}"
        if self.condition:
            text += f" ({self.condition})"
        return text


class RmiCallError(TargetError):
    """An RMI call that had to succeed (building or tearing down a realm) did not."""

    def __init__(self, result: RmiResult, inputs: Mapping[str, int]) -> None:
        self.result = result
        self.inputs = dict(inputs)
        shown = ", ".join(f"{k}={v:#x}" for k, v in self.inputs.items())
        super().__init__(f"{result.command}({shown}) failed: {result.describe()}")


class RmiClient:
    """Typed RMI calls over a Target: one generic :meth:`call` and a method per RMI 1.0 command."""

    def __init__(self, target: Target, *, interface: RmiInterface = RMI_1_0) -> None:
        self.target = target
        self.interface = interface
        # Register order of each command's inputs, resolved once (calls are on the hot path).
        self._layout: dict[str, tuple[tuple[str, ...], ...]] = {
            c.name: tuple((p.name, *p.aliases) for p in sorted(c.inputs, key=lambda p: p.reg))
            for c in interface.commands
        }

    # -- generic --------------------------------------------------------------

    def command(self, name: str) -> RmiCommand:
        """The command called ``name`` (spec name in lower case without prefix)."""
        try:
            return self.interface.by_name[name]
        except KeyError:
            raise InputError(f"unknown RMI command {name!r}", valid=sorted(self.interface.by_name)) from None

    def registers_for(self, command: RmiCommand, inputs: Mapping[str, int]) -> tuple[int, ...]:
        """X1.. for ``command`` from inputs given by spec name (or ``_ptr``-less alias)."""
        layout = self._layout[command.name]
        accepted = {alias for names in layout for alias in names}
        unknown = sorted(set(inputs) - accepted)
        if unknown:
            raise InputError(
                f"{command.name} has no input {unknown[0]!r}", valid=[names[0] for names in layout]
            )
        regs: list[int] = []
        for names in layout:
            given = [n for n in names if n in inputs]
            if not given:
                raise InputError(f"{command.name} needs input {names[0]!r}", valid=[n[0] for n in layout])
            if len(given) > 1:
                raise InputError(f"{command.name}: {' and '.join(given)} name the same input")
            regs.append(int(inputs[given[0]]) & MASK64)
        return tuple(regs)

    def call(self, command: str | RmiCommand, /, **inputs: int) -> RmiResult:
        """Issue an RMI command with inputs by spec name; decode the answer."""
        cmd = command if isinstance(command, RmiCommand) else self.command(command)
        return self.invoke(cmd, self.registers_for(cmd, inputs))

    def invoke(self, command: RmiCommand, args: Sequence[int]) -> RmiResult:
        """Issue ``command`` with X1.. already in register order; decode the answer."""
        if command.name == "rec_enter":
            return self.rec_enter(args[0], args[1])
        registers = tuple(self.target.smc(command.fid, *args))
        return self.decode(command, registers, self.target.rmi_condition)

    def raw(self, fid: int, *args: int) -> tuple[int, ...]:
        """Any SMC from the host world, undecoded: X0.. as the target returned them."""
        return tuple(self.target.smc(fid & MASK64, *(a & MASK64 for a in args)))

    @staticmethod
    def decode(command: RmiCommand, registers: tuple[int, ...], condition: str | None = None) -> RmiResult:
        """An RmiResult from the registers an RMI call returned (RMM 1.0 B4.4.2 return codes)."""
        x0 = registers[0] if registers else SMCCC_NOT_SUPPORTED
        status: RmiStatus | None = None
        index = 0
        if x0 != SMCCC_NOT_SUPPORTED and x0 >> 16 == 0:
            code, index = unpack_return(x0)
            try:
                status = RmiStatus(code)
            except ValueError:
                status = None
        outputs: dict[str, int] = {}
        for output in command.outputs:
            if output_defined(output, status) and output.reg < len(registers):
                outputs[output.name] = _decode_output(output, registers[output.reg])
        return RmiResult(
            command=command.name,
            registers=registers,
            status=status,
            index=index,
            outputs=outputs,
            condition=condition if status is not RmiStatus.SUCCESS else None,
        )

    # -- memory helpers -------------------------------------------------------

    def write_struct(self, pa: int, structure: Structure) -> None:
        """Write a spec structure (RealmParams, RecParams, RecRun …) to NS memory at ``pa``."""
        self.target.write(pa, structure.pack())

    def read_rec_exit(self, run_pa: int) -> RecExit:
        """The RmiRecExit half of the RecRun at ``run_pa`` (what the RMM wrote on REC exit)."""
        return RecExit.unpack(self.target.read(run_pa + REC_RUN_EXIT_OFFSET, RecExit.SIZE))

    # -- RMI 1.0 commands, one method each (RMM 1.0 B3.3) ---------------------

    def version(self, req: int = 0x10000) -> RmiResult:
        """RMI_VERSION: negotiate the interface revision."""
        return self.call("version", req=req)

    def features(self, index: int = 0) -> RmiResult:
        """RMI_FEATURES: read feature register ``index``."""
        return self.call("features", index=index)

    def granule_delegate(self, addr: int) -> RmiResult:
        """RMI_GRANULE_DELEGATE: move a granule from the NS PAS to the Realm PAS."""
        return self.call("granule_delegate", addr=addr)

    def granule_undelegate(self, addr: int) -> RmiResult:
        """RMI_GRANULE_UNDELEGATE: return a DELEGATED granule to the NS PAS."""
        return self.call("granule_undelegate", addr=addr)

    def realm_create(self, rd: int, params_ptr: int) -> RmiResult:
        """RMI_REALM_CREATE from the RmiRealmParams at ``params_ptr``."""
        return self.call("realm_create", rd=rd, params_ptr=params_ptr)

    def realm_activate(self, rd: int) -> RmiResult:
        """RMI_REALM_ACTIVATE: NEW → ACTIVE."""
        return self.call("realm_activate", rd=rd)

    def realm_destroy(self, rd: int) -> RmiResult:
        """RMI_REALM_DESTROY."""
        return self.call("realm_destroy", rd=rd)

    def rec_aux_count(self, rd: int) -> RmiResult:
        """RMI_REC_AUX_COUNT: auxiliary granules a REC of this realm needs."""
        return self.call("rec_aux_count", rd=rd)

    def rec_create(self, rd: int, rec: int, params_ptr: int) -> RmiResult:
        """RMI_REC_CREATE from the RmiRecParams at ``params_ptr``."""
        return self.call("rec_create", rd=rd, rec=rec, params_ptr=params_ptr)

    def rec_destroy(self, rec: int) -> RmiResult:
        """RMI_REC_DESTROY."""
        return self.call("rec_destroy", rec=rec)

    def rec_enter(self, rec: int, run_ptr: int, actions: Sequence[object] = ()) -> RmiResult:
        """RMI_REC_ENTER: through the target's realm execution where it has one, else a plain SMC.

        Realm actions need realm execution (CapabilityError without it); a bare
        entry on a target without it is an ordinary SMC (the model's RMM then
        exits at once, as RMM 1.0 B3.3.15 allows).
        """
        command = self.interface.by_name["rec_enter"]
        rec, run_ptr = rec & MASK64, run_ptr & MASK64
        if actions or self.target.has(Capability.REALM_EXEC):
            registers = tuple(self.target.realm_enter(rec, run_ptr, actions))
        else:
            registers = tuple(self.target.smc(command.fid, rec, run_ptr))
        return self.decode(command, registers, self.target.rmi_condition)

    def psci_complete(self, calling_rec: int, target_rec: int, status: int) -> RmiResult:
        """RMI_PSCI_COMPLETE: finish a PSCI request of ``calling_rec`` about ``target_rec``."""
        return self.call("psci_complete", calling_rec=calling_rec, target_rec=target_rec, status=status)

    def rtt_create(self, rd: int, rtt: int, ipa: int, level: int) -> RmiResult:
        """RMI_RTT_CREATE: add the level-``level`` RTT covering ``ipa``."""
        return self.call("rtt_create", rd=rd, rtt=rtt, ipa=ipa, level=level)

    def rtt_destroy(self, rd: int, ipa: int, level: int) -> RmiResult:
        """RMI_RTT_DESTROY: remove the level-``level`` RTT covering ``ipa``."""
        return self.call("rtt_destroy", rd=rd, ipa=ipa, level=level)

    def rtt_fold(self, rd: int, ipa: int, level: int) -> RmiResult:
        """RMI_RTT_FOLD: replace a homogeneous RTT by one entry of its parent."""
        return self.call("rtt_fold", rd=rd, ipa=ipa, level=level)

    def rtt_read_entry(self, rd: int, ipa: int, level: int) -> RmiResult:
        """RMI_RTT_READ_ENTRY: walk_level, state, desc, ripas of the entry for ``ipa``."""
        return self.call("rtt_read_entry", rd=rd, ipa=ipa, level=level)

    def rtt_map_unprotected(self, rd: int, ipa: int, level: int, desc: int) -> RmiResult:
        """RMI_RTT_MAP_UNPROTECTED: map NS memory at an unprotected IPA."""
        return self.call("rtt_map_unprotected", rd=rd, ipa=ipa, level=level, desc=desc)

    def rtt_unmap_unprotected(self, rd: int, ipa: int, level: int) -> RmiResult:
        """RMI_RTT_UNMAP_UNPROTECTED."""
        return self.call("rtt_unmap_unprotected", rd=rd, ipa=ipa, level=level)

    def data_create(self, rd: int, data: int, ipa: int, src: int, flags: int = 0) -> RmiResult:
        """RMI_DATA_CREATE: copy ``src`` into ``data`` mapped at ``ipa`` (flags 1: measure it)."""
        return self.call("data_create", rd=rd, data=data, ipa=ipa, src=src, flags=flags)

    def data_create_unknown(self, rd: int, data: int, ipa: int) -> RmiResult:
        """RMI_DATA_CREATE_UNKNOWN: map ``data`` at ``ipa`` with unknown contents."""
        return self.call("data_create_unknown", rd=rd, data=data, ipa=ipa)

    def data_destroy(self, rd: int, ipa: int) -> RmiResult:
        """RMI_DATA_DESTROY: unmap the data granule at ``ipa``."""
        return self.call("data_destroy", rd=rd, ipa=ipa)

    def rtt_init_ripas(self, rd: int, base: int, top: int) -> RmiResult:
        """RMI_RTT_INIT_RIPAS: set RIPAS RAM over [base, top) of a NEW realm."""
        return self.call("rtt_init_ripas", rd=rd, base=base, top=top)

    def rtt_set_ripas(self, rd: int, rec: int, base: int, top: int) -> RmiResult:
        """RMI_RTT_SET_RIPAS: complete a realm's RIPAS change request over [base, top)."""
        return self.call("rtt_set_ripas", rd=rd, rec=rec, base=base, top=top)


class GranulePoolExhausted(TargetError):
    """The target's granule pool has no room left for another slot."""


class GranuleAllocator:
    """Hands out NS granules from a target's granule pool: 64 KiB slots and single scratch granules.

    Allocation only moves forward: a granule handed out is never handed out
    again by the same allocator, because only its user knows whether it was
    left delegated.
    """

    def __init__(self, pool: Iterable[tuple[int, int]]) -> None:
        ranges: list[tuple[int, int]] = []
        for base, size in pool:
            start = -(-base // SLOT_SIZE) * SLOT_SIZE
            end = (base + size) // SLOT_SIZE * SLOT_SIZE
            if end > start:
                ranges.append((start, end))
        if not ranges:
            raise GranulePoolExhausted("the target's granule pool holds no whole 64 KiB slot")
        self._ranges = ranges
        self._range = 0
        self._next = ranges[0][0]
        self._scratch: list[int] = []
        self.slots_used = 0

    @classmethod
    def for_target(cls, target: Target) -> GranuleAllocator:
        """An allocator over ``target.info().granule_pool``."""
        return cls(target.info().granule_pool)

    @property
    def slots_left(self) -> int:
        """Whole 64 KiB slots not yet handed out."""
        left = (self._ranges[self._range][1] - self._next) // SLOT_SIZE
        return left + sum((end - start) // SLOT_SIZE for start, end in self._ranges[self._range + 1 :])

    def slot(self) -> int:
        """Base of a fresh 64 KiB slot (16 contiguous NS granules, 64 KiB aligned)."""
        while self._next >= self._ranges[self._range][1]:
            if self._range + 1 >= len(self._ranges):
                raise GranulePoolExhausted(
                    f"granule pool exhausted after {self.slots_used} slots of 64 KiB",
                )
            self._range += 1
            self._next = self._ranges[self._range][0]
        base = self._next
        self._next += SLOT_SIZE
        self.slots_used += 1
        return base

    def granule(self) -> int:
        """A single fresh NS granule (scratch granules share slots, 16 to a slot)."""
        if not self._scratch:
            base = self.slot()
            self._scratch = [base + i * GRANULE_SIZE for i in reversed(range(GRANULES_PER_SLOT))]
        return self._scratch.pop()

    def named(self, names: Iterable[str]) -> dict[str, int]:
        """A fresh slot for each name, in order."""
        return {name: self.slot() for name in names}


@dataclass(frozen=True)
class Realm:
    """What :class:`RealmBuilder` built: every granule it handed to the RMM, by role."""

    rd: int
    params: RealmParams
    rtts: tuple[tuple[int, int, int], ...]
    """(level, ipa, pa) of each RTT, the starting-level RTT first."""
    data: tuple[tuple[int, int], ...]
    """(ipa, pa) of each data granule."""
    recs: tuple[int, ...]
    aux: tuple[tuple[int, ...], ...]
    """Auxiliary granules of each REC."""

    def granules(self) -> tuple[int, ...]:
        """Every granule the realm uses (all of them delegated while it exists)."""
        out = [self.rd, *(pa for _, _, pa in self.rtts), *(pa for _, pa in self.data), *self.recs]
        for aux in self.aux:
            out.extend(aux)
        return tuple(out)


class RealmBuilder:
    """Builds a realm the way a host does (RMM 1.0 A2): RTTs, RIPAS, measured data, RECs, activation."""

    def __init__(
        self,
        client: RmiClient,
        allocator: GranuleAllocator,
        *,
        data_granules: int = 1,
        recs: int = 1,
        vmid: int = 1,
        s2sz: int = 40,
        hash_algo: HashAlgorithm = HashAlgorithm.SHA256,
        measure: bool = True,
        activate: bool = True,
    ) -> None:
        if data_granules < 0 or recs < 0:
            raise ValueError("data_granules and recs must not be negative")
        self.client = client
        self.allocator = allocator
        self.data_granules = data_granules
        self.recs = recs
        self.vmid = vmid
        self.s2sz = s2sz
        self.hash_algo = hash_algo
        self.measure = measure
        self.activate = activate

    def _ok(self, command: str, **args: int) -> RmiResult:
        result = self.client.call(command, **args)
        if not result.ok:
            raise RmiCallError(result, args)
        return result

    def _delegated(self, pa: int) -> int:
        self._ok("granule_delegate", addr=pa)
        return pa

    def build(self) -> Realm:
        """Create the realm; every call must succeed (RmiCallError names the one that did not)."""
        alloc = self.allocator
        rd = self._delegated(alloc.slot())
        rtt0 = self._delegated(alloc.slot())
        params = RealmParams(
            s2sz=self.s2sz,
            hash_algo=int(self.hash_algo),
            vmid=self.vmid,
            rtt_base=rtt0,
            rtt_level_start=0,
            rtt_num_start=1,
        )
        params_pa = alloc.granule()
        self.client.write_struct(params_pa, params)
        self._ok("realm_create", rd=rd, params_ptr=params_pa)

        top = self.data_granules * GRANULE_SIZE
        rtts: list[tuple[int, int, int]] = [(0, 0, rtt0)]
        for level in (1, 2, 3):
            # One table per span its parent entry covers, over [0, top) (at least the IPA 0 one).
            span = rtt_entry_size(level - 1)
            for ipa in range(0, max(top, 1), span):
                rtt = self._delegated(alloc.granule())
                self._ok("rtt_create", rd=rd, rtt=rtt, ipa=ipa, level=level)
                rtts.append((level, ipa, rtt))

        base = 0
        while base < top:
            out_top = self._ok("rtt_init_ripas", rd=rd, base=base, top=top).outputs["out_top"]
            if out_top <= base:
                raise TargetError(f"rtt_init_ripas(base={base:#x}, top={top:#x}) made no progress")
            base = out_top

        data: list[tuple[int, int]] = []
        if self.data_granules:
            src = alloc.granule()
            # A fixed, non-zero pattern: the measured content (and so the RIM) is reproducible.
            self.client.target.write(src, bytes(range(256)) * (GRANULE_SIZE // 256))
            flags = 1 if self.measure else 0
            for i in range(self.data_granules):
                pa = self._delegated(alloc.granule())
                self._ok("data_create", rd=rd, data=pa, ipa=i * GRANULE_SIZE, src=src, flags=flags)
                data.append((i * GRANULE_SIZE, pa))

        recs: list[int] = []
        auxes: list[tuple[int, ...]] = []
        if self.recs:
            num_aux = min(self._ok("rec_aux_count", rd=rd).outputs["aux_count"], MAX_REC_AUX)
            rec_params_pa = alloc.granule()
            for i in range(self.recs):
                rec = self._delegated(alloc.granule())
                aux = tuple(self._delegated(alloc.granule()) for _ in range(num_aux))
                rec_params = RecParams(
                    flags=RecCreateFlags.RUNNABLE,
                    mpidr=rec_mpidr_for_index(i),
                    num_aux=num_aux,
                    aux=aux,
                )
                self.client.write_struct(rec_params_pa, rec_params)
                self._ok("rec_create", rd=rd, rec=rec, params_ptr=rec_params_pa)
                recs.append(rec)
                auxes.append(aux)

        if self.activate:
            self._ok("realm_activate", rd=rd)
        return Realm(
            rd=rd, params=params, rtts=tuple(rtts), data=tuple(data), recs=tuple(recs), aux=tuple(auxes)
        )

    def destroy(self, realm: Realm, *, undelegate: bool = True) -> None:
        """Tear the realm down in host order and (by default) undelegate every granule it used."""
        for ipa, _ in reversed(realm.data):
            self._ok("data_destroy", rd=realm.rd, ipa=ipa)
        for rec in realm.recs:
            self._ok("rec_destroy", rec=rec)
        for level, ipa, _ in reversed(realm.rtts[1:]):
            self._ok("rtt_destroy", rd=realm.rd, ipa=ipa, level=level)
        self._ok("realm_destroy", rd=realm.rd)
        if undelegate:
            for pa in realm.granules():
                self._ok("granule_undelegate", addr=pa)
