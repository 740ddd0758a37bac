"""ESR_ELx syndromes of aborts and granule protection check exceptions (DDI0487 D24.2.45–47).

What a target reports when an access takes a granule protection fault: an
Instruction/Data Abort whose fault status code says "GPF" (SCR_EL3.GPF = 0, the
TF-A default), or a GPC exception taken to EL3 (EC 0x1E) whose GPCSC says which
GPT fault it was. :class:`Esr` wraps the raw register value, so nothing a
target reports is lost, and builds the values the model reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cca_hil.arch.gpt import GptFault, GptFaultKind


class ExceptionClass(IntEnum):
    """ESR_ELx.EC values cca-hil meets (DDI0487 D24.2.45)."""

    UNKNOWN = 0x00
    WFX = 0x01
    HVC64 = 0x16
    SMC64 = 0x17
    SYSREG = 0x18
    GPC = 0x1E
    INSTRUCTION_ABORT_LOWER = 0x20
    INSTRUCTION_ABORT_SAME = 0x21
    DATA_ABORT_LOWER = 0x24
    DATA_ABORT_SAME = 0x25
    SERROR = 0x2F


class FaultStatus(IntEnum):
    """IFSC/DFSC (and a GPC exception's xFSC) codes, long-descriptor format (DDI0487 D24.2.45)."""

    ADDRESS_SIZE_L0 = 0x00
    ADDRESS_SIZE_L1 = 0x01
    ADDRESS_SIZE_L2 = 0x02
    ADDRESS_SIZE_L3 = 0x03
    TRANSLATION_L0 = 0x04
    TRANSLATION_L1 = 0x05
    TRANSLATION_L2 = 0x06
    TRANSLATION_L3 = 0x07
    ACCESS_FLAG_L1 = 0x09
    ACCESS_FLAG_L2 = 0x0A
    ACCESS_FLAG_L3 = 0x0B
    PERMISSION_L1 = 0x0D
    PERMISSION_L2 = 0x0E
    PERMISSION_L3 = 0x0F
    SYNC_EXTERNAL = 0x10
    SYNC_EXTERNAL_WALK_L0 = 0x14
    SYNC_EXTERNAL_WALK_L1 = 0x15
    SYNC_EXTERNAL_WALK_L2 = 0x16
    SYNC_EXTERNAL_WALK_L3 = 0x17
    ALIGNMENT = 0x21
    GPF_WALK_LEVEL_MINUS_2 = 0x22
    GPF_WALK_LEVEL_MINUS_1 = 0x23
    GPF_WALK_L0 = 0x24
    GPF_WALK_L1 = 0x25
    GPF_WALK_L2 = 0x26
    GPF_WALK_L3 = 0x27
    GPF = 0x28
    TLB_CONFLICT = 0x30


_ABORTS: Final = frozenset(
    {
        ExceptionClass.INSTRUCTION_ABORT_LOWER,
        ExceptionClass.INSTRUCTION_ABORT_SAME,
        ExceptionClass.DATA_ABORT_LOWER,
        ExceptionClass.DATA_ABORT_SAME,
    }
)
_INSTRUCTION_ABORTS: Final = frozenset(
    {ExceptionClass.INSTRUCTION_ABORT_LOWER, ExceptionClass.INSTRUCTION_ABORT_SAME}
)
_EC_SHIFT: Final = 26
_IL: Final = 1 << 25
_ISS_MASK: Final = (1 << 25) - 1
# ISS bits of an abort (D24.2.45) and of a GPC exception (D24.2.47).
_WNR, _S1PTW, _CM, _EA, _FNV = 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10
_VNCR, _IND, _S2PTW = 1 << 13, 1 << 20, 1 << 21
_GPCSC_SHIFT: Final = 14


def gpf_fault_status(walk_level: int | None = None) -> FaultStatus:
    """xFSC of a GPF: on the final access (None) or on a translation table walk at ``walk_level`` (-2..3)."""
    if walk_level is None:
        return FaultStatus.GPF
    if not -2 <= walk_level <= 3:
        raise ValueError(f"translation lookup level {walk_level} outside -2..3")
    return FaultStatus(FaultStatus.GPF_WALK_L0 + walk_level)


@dataclass(frozen=True)
class Esr:
    """An ESR_ELx value (ISS2 in bits [55:32]) with its abort and GPC exception fields (DDI0487 D24.2.45)."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise ValueError(f"ESR {self.value:#x} is not a 64-bit value")

    # -- builders

    @classmethod
    def data_abort(
        cls,
        fsc: int,
        *,
        same_el: bool,
        wnr: bool = False,
        cm: bool = False,
        s1ptw: bool = False,
        ea: bool = False,
    ) -> Esr:
        """A Data Abort with ISV = 0 (DDI0487 D24.2.45); CMOs and AT report WnR = 1."""
        ec = ExceptionClass.DATA_ABORT_SAME if same_el else ExceptionClass.DATA_ABORT_LOWER
        flags = (wnr or cm) * _WNR | s1ptw * _S1PTW | cm * _CM | ea * _EA
        return cls(ec << _EC_SHIFT | _IL | flags | _fsc(fsc))

    @classmethod
    def instruction_abort(cls, fsc: int, *, same_el: bool, s1ptw: bool = False, ea: bool = False) -> Esr:
        """An Instruction Abort (DDI0487 D24.2.45)."""
        ec = ExceptionClass.INSTRUCTION_ABORT_SAME if same_el else ExceptionClass.INSTRUCTION_ABORT_LOWER
        return cls(ec << _EC_SHIFT | _IL | s1ptw * _S1PTW | ea * _EA | _fsc(fsc))

    @classmethod
    def gpc_exception(
        cls,
        fault: GptFault,
        *,
        fsc: int = FaultStatus.GPF,
        instruction: bool = False,
        wnr: bool = False,
        cm: bool = False,
        s1ptw: bool = False,
        s2ptw: bool = False,
        vncr: bool = False,
    ) -> Esr:
        """A GPC exception to EL3, EC 0x1E, GPCSC from ``fault`` (DDI0487 D24.2.47, J1 TakeGPCException)."""
        flags = s2ptw * _S2PTW | instruction * _IND | vncr * _VNCR | cm * _CM | s1ptw * _S1PTW
        flags |= (wnr or cm) * _WNR
        iss = fault.gpcsc << _GPCSC_SHIFT | flags | _fsc(fsc)
        return cls(ExceptionClass.GPC << _EC_SHIFT | _IL | iss)

    # -- fields

    @property
    def ec(self) -> int:
        """ESR_ELx.EC, bits [31:26]."""
        return self.value >> _EC_SHIFT & 0x3F

    @property
    def exception_class(self) -> ExceptionClass | None:
        """EC as a known class, or None."""
        try:
            return ExceptionClass(self.ec)
        except ValueError:
            return None

    @property
    def il(self) -> bool:
        """Instruction length: 32-bit instruction."""
        return bool(self.value & _IL)

    @property
    def iss(self) -> int:
        """ESR_ELx.ISS, bits [24:0]."""
        return self.value & _ISS_MASK

    @property
    def iss2(self) -> int:
        """ESR_ELx.ISS2, bits [55:32]."""
        return self.value >> 32 & 0xFF_FFFF

    @property
    def is_abort(self) -> bool:
        """An Instruction or Data Abort."""
        return self.exception_class in _ABORTS

    @property
    def is_gpc_exception(self) -> bool:
        """A GPC exception (EC 0x1E)."""
        return self.exception_class is ExceptionClass.GPC

    @property
    def fault_status(self) -> int:
        """IFSC/DFSC/xFSC, ISS[5:0], of an abort or GPC exception."""
        self._require(self.is_abort or self.is_gpc_exception, "an abort or GPC exception")
        return self.value & 0x3F

    @property
    def is_gpf(self) -> bool:
        """A granule protection fault, as an abort or as a GPC exception."""
        if self.is_abort:
            return FaultStatus.GPF_WALK_LEVEL_MINUS_2 <= self.value & 0x3F <= FaultStatus.GPF
        return self.is_gpc_exception and self.gpc_fault.kind is GptFaultKind.GPF

    @property
    def gpf_walk_level(self) -> int | None:
        """Translation lookup level of a GPF on a table walk; None for a GPF on the final access."""
        status = self.fault_status
        if not FaultStatus.GPF_WALK_LEVEL_MINUS_2 <= status <= FaultStatus.GPF:
            raise ValueError(f"fault status {status:#04x} is not a granule protection fault")
        return None if status == FaultStatus.GPF else status - FaultStatus.GPF_WALK_L0

    @property
    def wnr(self) -> bool:
        """Write not Read (aborts and GPC exceptions)."""
        self._require(self.is_abort or self.is_gpc_exception, "an abort or GPC exception")
        return bool(self.value & _WNR)

    @property
    def s1ptw(self) -> bool:
        """The fault was on the stage 2 translation of a stage 1 walk."""
        self._require(self.is_abort or self.is_gpc_exception, "an abort or GPC exception")
        return bool(self.value & _S1PTW)

    @property
    def cm(self) -> bool:
        """The fault came from a cache maintenance or address translation instruction."""
        self._require(self.is_abort or self.is_gpc_exception, "an abort or GPC exception")
        return bool(self.value & _CM)

    @property
    def instruction(self) -> bool:
        """An instruction fetch: Instruction Abort, or InD of a GPC exception."""
        if self.is_gpc_exception:
            return bool(self.value & _IND)
        self._require(self.is_abort, "an abort or GPC exception")
        return self.exception_class in _INSTRUCTION_ABORTS

    @property
    def gpc_fault(self) -> GptFault:
        """The GPT fault a GPC exception reports: GPCSC, ISS[19:14] (DDI0487 D24.2.47)."""
        self._require(self.is_gpc_exception, "a GPC exception")
        gpcsc = self.value >> _GPCSC_SHIFT & 0x3F
        try:
            return GptFault(GptFaultKind(gpcsc >> 1), gpcsc & 1)
        except ValueError:
            raise ValueError(f"GPCSC {gpcsc:#08b} is reserved") from None

    @property
    def s2ptw(self) -> bool:
        """A GPC exception on a stage 2 translation table walk access."""
        self._require(self.is_gpc_exception, "a GPC exception")
        return bool(self.value & _S2PTW)

    def describe(self) -> str:
        """One line for people: class, fault and the flags that are set."""
        cls = self.exception_class
        name = cls.name.lower() if cls is not None else f"EC {self.ec:#04x}"
        if not (self.is_abort or self.is_gpc_exception):
            return f"{name}, ISS {self.iss:#x}"
        status = self.fault_status
        try:
            fault = FaultStatus(status).name.lower()
        except ValueError:
            fault = f"FSC {status:#04x}"
        parts = [name, fault]
        if self.is_gpc_exception:
            parts.insert(1, str(self.gpc_fault))
        flags = [flag for flag in ("wnr", "cm", "s1ptw") if getattr(self, flag)]
        if self.is_gpc_exception:
            flags += [
                flag for flag, bit in (("ind", _IND), ("s2ptw", _S2PTW), ("vncr", _VNCR)) if self.value & bit
            ]
        return ", ".join(parts + flags)

    def _require(self, condition: bool, what: str) -> None:
        if not condition:
            raise ValueError(f"ESR {self.value:#x} is not {what}")


def _fsc(fsc: int) -> int:
    if not 0 <= fsc <= 0x3F:
        raise ValueError(f"fault status {fsc:#x} does not fit in 6 bits")
    return fsc
