"""Granule Protection Tables: register and descriptor codecs, the architectural walk, a fast decoder.

DDI0487 D9 (FEAT_RME). Everything here works on the architectural bytes: the
same L0/L1 tables that TF-A builds on an FVP or a board decode here, and a
table built by :func:`build_tables` walks the same on hardware.

Three layers, bottom-up:

* scalar codecs — :class:`Gpccr`, :class:`Gptbr`, :class:`GptGeometry`,
  :class:`Gpi` and the L0/L1 descriptor classes — pure Python;
* :func:`walk` and :func:`granule_protection_check` — the walk for one PA in
  the architecture's fault priority order (DDI0487 Table D9-2), pure Python;
* :func:`decode_tables` — a whole table set turned into a :class:`PasMap` of
  maximal runs, vectorised with numpy (imported only there), and its inverse
  :func:`build_tables`, which lays tables out the way TF-A's GPT library does.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, TypeVar

from cca_hil.arch.pas import Pas
from cca_hil.errors import InputError, TargetError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""Raw memory as read from a target or a dump file."""

MapPas: TypeAlias = Pas | Literal["fault"]
"""What a GPT says about a PA: the PAS that may access it, or ``"fault"`` when the walk faults there."""

FAULT: Final = "fault"

_MASK64: Final = (1 << 64) - 1
_UNIFORM: Final = 0x1111_1111_1111_1111  # multiplying a nibble by this repeats it 16 times


# --------------------------------------------------------------------------------------------------
# Errors


class GptConfigError(InputError):
    """GPCCR_EL3 / GPTBR_EL3 (or a table layout) holds a reserved or inconsistent value (DDI0487 R_JWCSM)."""


class GptDescriptorError(InputError):
    """A GPT descriptor is invalid: reserved encoding or RES0 bit set (DDI0487 D9.6, R_XNKFZ)."""

    def __init__(self, what: str, *, level: int, value: int) -> None:
        self.level = level
        self.value = value
        super().__init__(what, where=f"L{level} descriptor {value:#018x}")


class GptDumpError(InputError):
    """A memory dump cannot be decoded as a GPT: truncated, misaligned, or not covering the tables."""


class GptFetchAbort(TargetError):
    """Raised by a ``read64`` callable when no memory answers at that PA (External abort on a GPT fetch)."""

    def __init__(self, pa: int) -> None:
        self.pa = pa
        super().__init__(f"no memory at {pa:#x} for a GPT fetch")


# --------------------------------------------------------------------------------------------------
# GPCCR_EL3 / GPTBR_EL3 encodings


class Pps(IntEnum):
    """GPCCR_EL3.PPS: protected physical address size (DDI0487 D24.2.56)."""

    GB_4 = 0b000
    GB_64 = 0b001
    TB_1 = 0b010
    TB_4 = 0b011
    TB_16 = 0b100
    TB_256 = 0b101
    PB_4 = 0b110

    @property
    def bits(self) -> int:
        """t: the protected PA size in bits."""
        return (32, 36, 40, 42, 44, 48, 52)[self.value]


class Pgs(IntEnum):
    """GPCCR_EL3.PGS: physical granule size; note the non-monotonic encoding (DDI0487 D24.2.56)."""

    KB_4 = 0b00
    KB_64 = 0b01
    KB_16 = 0b10

    @property
    def bits(self) -> int:
        """p: the granule size in bits."""
        return (12, 16, 14)[self.value]


class L0GptSz(IntEnum):
    """GPCCR_EL3.L0GPTSZ: bytes covered by one L0 entry, fixed by the implementation (DDI0487 D24.2.56)."""

    GB_1 = 0b0000
    GB_16 = 0b0100
    GB_64 = 0b0110
    GB_512 = 0b1001

    @property
    def bits(self) -> int:
        """s: bits of PA covered by one L0 entry."""
        return 30 + self.value


class Cacheability(IntEnum):
    """GPCCR_EL3.IRGN / ORGN: cacheability of GPT fetches (DDI0487 D24.2.56)."""

    NC = 0b00
    WB_RA_WA = 0b01
    WT_RA_NWA = 0b10
    WB_RA_NWA = 0b11


class Shareability(IntEnum):
    """GPCCR_EL3.SH: shareability of GPT fetches; 0b01 is reserved (DDI0487 D24.2.56)."""

    NON_SHAREABLE = 0b00
    OUTER_SHAREABLE = 0b10
    INNER_SHAREABLE = 0b11


_Field = TypeVar("_Field", bound=IntEnum)


def _field_choices(enum: type[IntEnum], width: int) -> list[str]:
    def label(name: str) -> str:
        unit, _, size = name.partition("_")
        return f"{size} {unit}" if size.isdigit() else name.lower().replace("_", " ")

    return [f"{m.value:#0{width + 2}b} ({label(m.name)})" for m in enum]


def _decode_field(enum: type[_Field], raw: int, name: str, width: int, where: str) -> _Field:
    try:
        return enum(raw)
    except ValueError:
        raise GptConfigError(
            f"{name}={raw:#0{width + 2}b} is reserved", where=where, valid=_field_choices(enum, width)
        ) from None


# bit positions of the single-bit GPCCR_EL3 fields, DDI0487 D24.2.56
_GPCCR_FLAGS: Final = {
    "rlpad": 5,
    "nspad": 6,
    "spad": 7,
    "gpc": 16,
    "gpcp": 17,
    "tbgpcd": 18,
    "nso": 19,
    "appsaa": 24,
    "sa": 25,
    "nsp": 26,
    "na6": 27,
    "na7": 28,
}
# PPS3 (bit 3) and GPCBW (bit 29) belong to FEAT_RME_GPC3, whose bypass windows need GPCBW_EL3:
# not modelled, so they are treated as the RES0 bits they are without GPC3.
_GPCCR_RES0: Final = ~((1 << 29) - 1) & _MASK64 | (1 << 3) | (1 << 4)


@dataclass(frozen=True, kw_only=True)
class Gpccr:
    """GPCCR_EL3, Granule Protection Check Control Register: a valid configuration (DDI0487 D24.2.56)."""

    pps: Pps
    pgs: Pgs = Pgs.KB_4
    l0gptsz: L0GptSz = L0GptSz.GB_1
    irgn: Cacheability = Cacheability.WB_RA_WA
    orgn: Cacheability = Cacheability.WB_RA_WA
    sh: Shareability = Shareability.INNER_SHAREABLE
    gpc: bool = True
    gpcp: bool = False
    tbgpcd: bool = False
    # FEAT_RME_GPC2
    nso: bool = False
    appsaa: bool = False
    spad: bool = False
    nspad: bool = False
    rlpad: bool = False
    # FEAT_RME_GDI
    sa: bool = False
    nsp: bool = False
    na6: bool = False
    na7: bool = False

    def __post_init__(self) -> None:
        # R_JWCSM: non-cacheable GPT fetches must be Outer Shareable.
        if (
            self.irgn is Cacheability.NC
            and self.orgn is Cacheability.NC
            and self.sh is not Shareability.OUTER_SHAREABLE
        ):
            raise GptConfigError(
                f"IRGN=ORGN=Non-cacheable requires SH=0b10 (outer shareable), not {self.sh.value:#04b}",
                where="GPCCR_EL3",
            )

    @classmethod
    def decode(cls, value: int) -> Gpccr:
        """Decode GPCCR_EL3; reserved encodings and RES0 bits raise GptConfigError (DDI0487 D24.2.56)."""
        where = f"GPCCR_EL3 {value:#x}"
        if not 0 <= value <= _MASK64:
            raise GptConfigError("not a 64-bit register value", where=where)
        if value & _GPCCR_RES0:
            raise GptConfigError(
                f"RES0 bits set: {value & _GPCCR_RES0:#x} (bit 3 PPS3 and bit 29 GPCBW need FEAT_RME_GPC3,"
                " which is not modelled)",
                where=where,
            )
        return cls(
            pps=_decode_field(Pps, value & 0b111, "PPS", 3, where),
            pgs=_decode_field(Pgs, (value >> 14) & 0b11, "PGS", 2, where),
            l0gptsz=_decode_field(L0GptSz, (value >> 20) & 0b1111, "L0GPTSZ", 4, where),
            irgn=Cacheability((value >> 8) & 0b11),
            orgn=Cacheability((value >> 10) & 0b11),
            sh=_decode_field(Shareability, (value >> 12) & 0b11, "SH", 2, where),
            **{name: bool(value >> bit & 1) for name, bit in _GPCCR_FLAGS.items()},
        )

    def encode(self) -> int:
        """The register value (DDI0487 D24.2.56)."""
        value = (
            self.pps.value
            | self.irgn.value << 8
            | self.orgn.value << 10
            | self.sh.value << 12
            | self.pgs.value << 14
            | self.l0gptsz.value << 20
        )
        for name, bit in _GPCCR_FLAGS.items():
            if getattr(self, name):
                value |= 1 << bit
        return value

    @property
    def geometry(self) -> GptGeometry:
        """Table sizes and PA bit fields this configuration implies (DDI0487 D9.7)."""
        return GptGeometry(pps_bits=self.pps.bits, l0gptsz_bits=self.l0gptsz.bits, pgs_bits=self.pgs.bits)


_GPTBR_BADDR_MASK: Final = (1 << 40) - 1


@dataclass(frozen=True)
class Gptbr:
    """GPTBR_EL3, the GPT Base Register: BADDR holds PA[51:12] of the level-0 table (DDI0487 D24.2.57)."""

    baddr: int

    def __post_init__(self) -> None:
        if not 0 <= self.baddr <= _GPTBR_BADDR_MASK:
            raise GptConfigError(
                f"BADDR={self.baddr:#x} does not fit in 40 bits",
                where="GPTBR_EL3",
                valid=["0 .. 0xffffffffff"],
            )

    @classmethod
    def decode(cls, value: int) -> Gptbr:
        """Decode a GPTBR_EL3 value; bits [63:40] are RES0 without FEAT_RME_GPC3 (DDI0487 D24.2.57)."""
        if not 0 <= value <= _MASK64:
            raise GptConfigError("not a 64-bit register value", where=f"GPTBR_EL3 {value:#x}")
        if value >> 40:
            raise GptConfigError(
                f"RES0 bits [63:40] set ({value >> 40:#x}); BADDR[43:40] needs FEAT_RME_GPC3, not modelled",
                where=f"GPTBR_EL3 {value:#x}",
            )
        return cls(value)

    @classmethod
    def for_table(cls, l0_address: int) -> Gptbr:
        """The GPTBR_EL3 value that points at a level-0 table at ``l0_address`` (4 KB aligned)."""
        if l0_address & 0xFFF:
            raise GptConfigError(
                f"level-0 table address {l0_address:#x} is not 4 KB aligned", where="GPTBR_EL3"
            )
        return cls(l0_address >> 12)

    def encode(self) -> int:
        """The register value (DDI0487 D24.2.57)."""
        return self.baddr

    @property
    def l0_address(self) -> int:
        """BADDR << 12, before the alignment the walk applies."""
        return self.baddr << 12

    def check_alignment(self, geometry: GptGeometry) -> None:
        """Raise GptConfigError unless BADDR is aligned to the L0 table (DDI0487 D24.2.57).

        The PE ignores the low bits (treats them as zero); a value with them set is
        still a mistake worth reporting when it comes from a user or a dump.
        """
        misaligned = self.l0_address & (geometry.l0_alignment - 1)
        if misaligned:
            raise GptConfigError(
                f"BADDR={self.baddr:#x} puts the level-0 table at {self.l0_address:#x}, not aligned to its"
                f" {geometry.l0_alignment:#x}-byte size",
                where="GPTBR_EL3",
                valid=[f"multiples of {geometry.l0_alignment >> 12:#x}"],
            )


@dataclass(frozen=True, kw_only=True)
class GptFeatures:
    """Implementation facts no register shows: FEAT_SEL2, FEAT_RME_GDI, the PA size (DDI0487 D9.6.5)."""

    sel2: bool = True
    """FEAT_SEL2: without it GPI Secure (0b1000) is reserved."""
    gdi: bool = False
    """FEAT_RME_GDI: an L1 lookup checks both entries of the aligned 16-byte pair (R_PGHWX)."""
    pa_bits: int = 52
    """ID_AA64MMFR0_EL1.PARange in bits; a PPS above it is an invalid configuration."""


# --------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True, kw_only=True)
class GptGeometry:
    """Sizes and index fields of a GPT: t (PPS), s (L0GPTSZ), p (PGS) in bits (DDI0487 D9.7, R_QNGFY)."""

    pps_bits: int
    l0gptsz_bits: int
    pgs_bits: int

    @property
    def protected_size(self) -> int:
        """Bytes of PA the GPT protects: 2^t."""
        return 1 << self.pps_bits

    @property
    def granule_size(self) -> int:
        """Bytes per granule: 2^p."""
        return 1 << self.pgs_bits

    @property
    def l0_region_size(self) -> int:
        """Bytes covered by one L0 entry: 2^s."""
        return 1 << self.l0gptsz_bits

    @property
    def l0_entries(self) -> int:
        """Entries in the L0 table: 2^(t-s), or 1 when t <= s."""
        return 1 << max(self.pps_bits - self.l0gptsz_bits, 0)

    @property
    def l0_table_size(self) -> int:
        """Bytes of the L0 table."""
        return 8 * self.l0_entries

    @property
    def l0_alignment(self) -> int:
        """Alignment of the L0 table: max(its size, 4 KB) (DDI0487 D24.2.57)."""
        return max(self.l0_table_size, 4096)

    @property
    def l1_entries(self) -> int:
        """Entries in one L1 table: 2^(s-p-4)."""
        return 1 << (self.l0gptsz_bits - self.pgs_bits - 4)

    @property
    def l1_table_size(self) -> int:
        """Bytes of one L1 table (also its alignment): 2^(s-p-1)."""
        return 8 * self.l1_entries

    @property
    def l1_entries_reachable(self) -> int:
        """L1 entries a walk can reach: fewer than :attr:`l1_entries` when t < s."""
        return min(self.l1_entries, self.protected_size // self.l1_descriptor_span)

    @property
    def l1_descriptor_span(self) -> int:
        """Bytes covered by one L1 descriptor: 16 granules, 2^(p+4)."""
        return 1 << (self.pgs_bits + 4)

    def l0_index(self, pa: int) -> int:
        """PA[t-1:s], the L0 index (0 when t <= s)."""
        return (pa & (self.protected_size - 1)) >> self.l0gptsz_bits

    def l1_index(self, pa: int) -> int:
        """PA[s-1:p+4], the L1 index."""
        return (pa & (self.l0_region_size - 1)) >> (self.pgs_bits + 4)

    def gpi_index(self, pa: int) -> int:
        """PA[p+3:p], the GPI field inside a Granules descriptor."""
        return (pa >> self.pgs_bits) & 0xF

    def to_json(self) -> dict[str, int]:
        """The derived figures, for ``gpt show`` and reports."""
        return {
            "pps_bits": self.pps_bits,
            "l0gptsz_bits": self.l0gptsz_bits,
            "pgs_bits": self.pgs_bits,
            "l0_entries": self.l0_entries,
            "l0_table_size": self.l0_table_size,
            "l1_entries": self.l1_entries,
            "l1_table_size": self.l1_table_size,
            "l1_descriptor_span": self.l1_descriptor_span,
        }


# --------------------------------------------------------------------------------------------------
# GPI


class Gpi(IntEnum):
    """Granule Protection Information encodings; absent values are reserved (DDI0487 D9.6.5)."""

    NO_ACCESS = 0b0000
    SYSTEM_AGENT = 0b0100
    NS_PROTECTED = 0b0101
    NA6 = 0b0110
    NA7 = 0b0111
    SECURE = 0b1000
    NONSECURE = 0b1001
    ROOT = 0b1010
    REALM = 0b1011
    NS_ONLY = 0b1101
    ANY = 0b1111

    @property
    def pas(self) -> Pas:
        """The PAS a PE may access the granule through (NS-only: Non-secure; the GDI encodings: none)."""
        return _GPI_PAS.get(self, Pas.NONE)

    @classmethod
    def for_pas(cls, pas: Pas) -> Gpi:
        """The GPI a table builder writes for a PAS (DDI0487 D9.6.5)."""
        return _PAS_GPI[pas]

    def allows(self, access: Pas, requester: Pas | None = None) -> bool:
        """GPICheck: may an access to PAS ``access`` from Security state ``requester`` pass (DDI0487 J1)."""
        if self is Gpi.ANY:
            return True
        if self is Gpi.NS_ONLY:
            # FEAT_RME_GPC2 NSO: Non-secure PAS, but only from Non-secure or Root state.
            state = access if requester is None else requester
            return access is Pas.NONSECURE and state in (Pas.NONSECURE, Pas.ROOT)
        pas = _GPI_PAS.get(self)
        return pas is not None and pas is access


_GPI_PAS: Final[dict[Gpi, Pas]] = {
    Gpi.NO_ACCESS: Pas.NONE,
    Gpi.SECURE: Pas.SECURE,
    Gpi.NONSECURE: Pas.NONSECURE,
    Gpi.ROOT: Pas.ROOT,
    Gpi.REALM: Pas.REALM,
    Gpi.NS_ONLY: Pas.NONSECURE,
    Gpi.ANY: Pas.ANY,
}
_PAS_GPI: Final[dict[Pas, Gpi]] = {
    Pas.NONE: Gpi.NO_ACCESS,
    Pas.SECURE: Gpi.SECURE,
    Pas.NONSECURE: Gpi.NONSECURE,
    Pas.ROOT: Gpi.ROOT,
    Pas.REALM: Gpi.REALM,
    Pas.ANY: Gpi.ANY,
}


def valid_gpis(gpccr: Gpccr, features: GptFeatures = GptFeatures()) -> frozenset[Gpi]:
    """The GPI encodings valid under this configuration; the others are reserved (DDI0487 J1 GPIValid)."""
    valid = {Gpi.NO_ACCESS, Gpi.NONSECURE, Gpi.ROOT, Gpi.REALM, Gpi.ANY}
    optional = (
        (features.sel2, Gpi.SECURE),
        (gpccr.nso, Gpi.NS_ONLY),
        (gpccr.sa, Gpi.SYSTEM_AGENT),
        (gpccr.nsp, Gpi.NS_PROTECTED),
        (gpccr.na6, Gpi.NA6),
        (gpccr.na7, Gpi.NA7),
    )
    valid.update(gpi for enabled, gpi in optional if enabled)
    return frozenset(valid)


def _gpi_or_error(raw: int, valid: frozenset[Gpi], *, level: int, value: int, where: str) -> Gpi:
    if raw in valid:
        return Gpi(raw)
    raise GptDescriptorError(
        f"{where} GPI {raw:#06b} is reserved here",
        level=level,
        value=value,
    )


# --------------------------------------------------------------------------------------------------
# Descriptors


class ContigSize(IntEnum):
    """Contiguous descriptor Contig field; 0b00 is reserved (DDI0487 D9.6.4)."""

    MB_2 = 0b01
    MB_32 = 0b10
    MB_512 = 0b11

    @property
    def size(self) -> int:
        """Bytes of the naturally aligned block."""
        return (0, 2 << 20, 32 << 20, 512 << 20)[self.value]


@dataclass(frozen=True)
class L0Block:
    """L0 Block descriptor: one GPI for the whole L0 region (DDI0487 D9.6.2)."""

    gpi: Gpi

    def encode(self) -> int:
        """Descriptor value: GPI in bits[7:4], type 0b0001."""
        return self.gpi.value << 4 | 0b0001


@dataclass(frozen=True)
class L0Table:
    """L0 Table descriptor: address of the L1 table for this L0 region (DDI0487 D9.6.2)."""

    l1_address: int

    def encode(self) -> int:
        """Descriptor value: address bits[51:12], type 0b0011."""
        return self.l1_address | 0b0011


@dataclass(frozen=True)
class L1Contiguous:
    """L1 Contiguous descriptor: one GPI for a naturally aligned 2/32/512 MB block (DDI0487 D9.6.4)."""

    gpi: Gpi
    contig: ContigSize

    def encode(self) -> int:
        """Descriptor value: Contig in bits[9:8], GPI in bits[7:4], 0b0001."""
        return self.contig.value << 8 | self.gpi.value << 4 | 0b0001


@dataclass(frozen=True)
class L1Granules:
    """L1 Granules descriptor: sixteen GPIs, field i for granule PA[p+3:p] = i (DDI0487 D9.6.3)."""

    gpis: tuple[Gpi, ...]

    def __post_init__(self) -> None:
        if len(self.gpis) != 16:
            raise ValueError(f"a Granules descriptor holds 16 GPIs, not {len(self.gpis)}")

    @classmethod
    def uniform(cls, gpi: Gpi) -> L1Granules:
        """All sixteen granules with the same GPI."""
        return cls((gpi,) * 16)

    def encode(self) -> int:
        """Descriptor value: GPI i in bits[4i+3:4i]."""
        value = 0
        for i, gpi in enumerate(self.gpis):
            value |= gpi.value << (4 * i)
        return value


L0Descriptor: TypeAlias = L0Block | L0Table
L1Descriptor: TypeAlias = L1Contiguous | L1Granules

_L0_TABLE_ADDR_MASK: Final = ((1 << 52) - 1) & ~0xFFF


def decode_l0(value: int, *, gpccr: Gpccr, features: GptFeatures = GptFeatures()) -> L0Block | L0Table:
    """Decode an L0 descriptor; an invalid one raises GptDescriptorError (DDI0487 D9.6.2, R_XNKFZ)."""
    kind = value & 0xF
    if kind == 0b0001:
        if value >> 8:
            raise GptDescriptorError("Block descriptor with RES0 bits [63:8] set", level=0, value=value)
        return L0Block(
            _gpi_or_error(
                value >> 4 & 0xF, valid_gpis(gpccr, features), level=0, value=value, where="Block descriptor"
            )
        )
    if kind == 0b0011:
        geometry = gpccr.geometry
        if value >> 52 or value & 0xFF0:
            raise GptDescriptorError(
                "Table descriptor with RES0 bits [63:52] or [11:4] set", level=0, value=value
            )
        address = value & _L0_TABLE_ADDR_MASK
        if address & (geometry.l1_table_size - 1):
            raise GptDescriptorError(
                f"Table descriptor address {address:#x} not aligned to the {geometry.l1_table_size:#x}-byte"
                " L1 table size",
                level=0,
                value=value,
            )
        return L0Table(address)
    raise GptDescriptorError(
        f"type {kind:#06b} is neither Block (0b0001) nor Table (0b0011)", level=0, value=value
    )


def decode_l1(
    value: int, *, gpccr: Gpccr, features: GptFeatures = GptFeatures()
) -> L1Contiguous | L1Granules:
    """Decode an L1 descriptor; an invalid one raises GptDescriptorError (DDI0487 D9.6.3, D9.6.4)."""
    valid = valid_gpis(gpccr, features)
    if value & 0xF == 0b0001:
        if value >> 10:
            raise GptDescriptorError("Contiguous descriptor with RES0 bits [63:10] set", level=1, value=value)
        contig = value >> 8 & 0b11
        if contig == 0:
            raise GptDescriptorError("Contiguous descriptor with reserved Contig=0b00", level=1, value=value)
        gpi = _gpi_or_error(value >> 4 & 0xF, valid, level=1, value=value, where="Contiguous descriptor")
        return L1Contiguous(gpi, ContigSize(contig))
    # J1 GPTGranulesDescriptorValid checks all sixteen fields, not only the one a walk needs.
    return L1Granules(
        tuple(
            _gpi_or_error(
                value >> (4 * i) & 0xF, valid, level=1, value=value, where=f"Granules descriptor field {i}"
            )
            for i in range(16)
        )
    )


# --------------------------------------------------------------------------------------------------
# The walk


class GptFaultKind(IntEnum):
    """Kinds of granule protection check fault; values are GPCSC[5:1] (DDI0487 D24.2.47, J1 EncodeGPCSC)."""

    ADDRESS_SIZE = 0b00000
    WALK = 0b00010
    GPF = 0b00110
    EXTERNAL_ABORT = 0b01010


@dataclass(frozen=True)
class GptFault:
    """A granule protection check fault and the GPT level it is reported at (DDI0487 Table D9-2)."""

    kind: GptFaultKind
    level: int

    def __post_init__(self) -> None:
        if self.level not in (0, 1):
            raise ValueError(f"a GPT has levels 0 and 1, not {self.level}")

    @property
    def gpcsc(self) -> int:
        """ESR_EL3.ISS.GPCSC for a GPC exception (DDI0487 D24.2.47)."""
        return self.kind.value << 1 | self.level

    def __str__(self) -> str:
        names = {
            GptFaultKind.ADDRESS_SIZE: "GPT address size fault",
            GptFaultKind.WALK: "GPT walk fault",
            GptFaultKind.GPF: "granule protection fault",
            GptFaultKind.EXTERNAL_ABORT: "external abort on GPT fetch",
        }
        return f"{names[self.kind]}, level {self.level}"


@dataclass(frozen=True, kw_only=True)
class WalkResult:
    """Outcome of a GPT walk for one PA: the GPI found and at which level, or the fault (DDI0487 D9.7)."""

    pa: int
    pas: MapPas
    """Who may access the PA: the GPI's PAS, ``"fault"`` when the walk faults."""
    level: int
    gpi: Gpi | None = None
    fault: GptFault | None = None
    above_pps: bool = False
    """PA >= 2^t: no lookup; Non-secure accesses pass, others GPF unless APPSAA (R_CPDSB, R_JFFHB)."""
    descriptor: int | None = None
    descriptor_address: int | None = None
    unpredictable: bool = False
    """The PA lies in a Contiguous block whose entries disagree: CONSTRAINED UNPREDICTABLE (R_RSPLJH)."""
    reason: str = ""


Read64: TypeAlias = Callable[[int], int]
"""Reads the 64-bit little-endian word at a Root-PAS PA; raises GptFetchAbort where there is no memory."""


def memory_reader(memory: BytesLike | Mapping[int, BytesLike], base: int = 0) -> Read64:
    """A ``read64`` over a dump (bytes at ``base``) or over ``{PA: bytes}`` chunks; other PAs abort."""
    chunks = _Chunks.of(memory, base)

    def read64(pa: int) -> int:
        found = chunks.find(pa, 8)
        if found is None:
            raise GptFetchAbort(pa)
        data, offset = found
        return int.from_bytes(data[offset : offset + 8], "little")

    return read64


def _as_config(gpccr: Gpccr | int, gptbr: Gptbr | int, features: GptFeatures) -> tuple[Gpccr, Gptbr]:
    config = gpccr if isinstance(gpccr, Gpccr) else Gpccr.decode(gpccr)
    base = gptbr if isinstance(gptbr, Gptbr) else Gptbr.decode(gptbr)
    if config.pps.bits > features.pa_bits:
        raise GptConfigError(
            f"PPS={config.pps.value:#05b} ({config.pps.bits} bits) exceeds the"
            f" {features.pa_bits}-bit PA size",
            where="GPCCR_EL3",
        )
    return config, base


def walk(
    pa: int,
    *,
    gpccr: Gpccr | int,
    gptbr: Gptbr | int,
    read64: Read64,
    features: GptFeatures = GptFeatures(),
    strict: bool = False,
) -> WalkResult:
    """Walk the GPT for ``pa`` in the order of DDI0487 Table D9-2 (J1 GPTWalk); never raises for bad tables.

    Accessor-independent steps only: GPCCR_EL3.GPC and the SPAD/NSPAD/RLPAD and
    GPICheck steps depend on the access and live in :func:`granule_protection_check`.
    ``strict`` also reads the whole Contiguous block the entry belongs to and
    flags it when its entries disagree (R_RSPLJH): the PE may then use any of them.
    """
    if not 0 <= pa < 1 << 56:
        raise ValueError(f"{pa:#x} is not a physical address")
    try:
        config, base = _as_config(gpccr, gptbr, features)
    except GptConfigError as err:
        return WalkResult(pa=pa, pas=FAULT, level=0, fault=GptFault(GptFaultKind.WALK, 0), reason=str(err))
    geometry = config.geometry
    if pa >> geometry.pps_bits:
        return WalkResult(
            pa=pa,
            pas=Pas.ANY if config.appsaa else Pas.NONSECURE,
            level=0,
            above_pps=True,
            reason=f"PA at or above the {geometry.pps_bits}-bit protected size",
        )

    def fault(
        kind: GptFaultKind,
        level: int,
        reason: str,
        *,
        descriptor: int | None = None,
        descriptor_address: int | None = None,
    ) -> WalkResult:
        return WalkResult(
            pa=pa,
            pas=FAULT,
            level=level,
            fault=GptFault(kind, level),
            reason=reason,
            descriptor=descriptor,
            descriptor_address=descriptor_address,
        )

    # The low BADDR bits below the table alignment are treated as zero, not faulted (DDI0487 D24.2.57).
    l0_base = base.l0_address & ~(geometry.l0_alignment - 1)
    if l0_base >> geometry.pps_bits:
        return fault(GptFaultKind.ADDRESS_SIZE, 0, f"GPTBR_EL3 level-0 table {l0_base:#x} above the PPS")
    l0_address = l0_base + 8 * geometry.l0_index(pa)
    try:
        l0_value = read64(l0_address)
    except GptFetchAbort as err:
        return fault(GptFaultKind.EXTERNAL_ABORT, 0, str(err), descriptor_address=l0_address)
    try:
        l0 = decode_l0(l0_value, gpccr=config, features=features)
    except GptDescriptorError as err:
        return fault(GptFaultKind.WALK, 0, str(err), descriptor=l0_value, descriptor_address=l0_address)
    if isinstance(l0, L0Block):
        return WalkResult(
            pa=pa, pas=l0.gpi.pas, level=0, gpi=l0.gpi, descriptor=l0_value, descriptor_address=l0_address
        )
    if l0.l1_address >> geometry.pps_bits:
        return fault(
            GptFaultKind.ADDRESS_SIZE,
            0,
            f"L1 table {l0.l1_address:#x} above the PPS",
            descriptor=l0_value,
            descriptor_address=l0_address,
        )

    l1_address = l0.l1_address + 8 * geometry.l1_index(pa)
    # With FEAT_RME_GDI the lookup reads the naturally aligned 16-byte pair and both must be valid (R_PGHWX).
    fetched = [l1_address & ~0xF, (l1_address & ~0xF) + 8] if features.gdi else [l1_address]
    values: dict[int, int] = {}
    for address in fetched:
        try:
            values[address] = read64(address)
        except GptFetchAbort as err:
            return fault(GptFaultKind.EXTERNAL_ABORT, 1, str(err), descriptor_address=address)
    decoded: dict[int, L1Descriptor] = {}
    for address, value in values.items():
        try:
            decoded[address] = decode_l1(value, gpccr=config, features=features)
        except GptDescriptorError as err:
            return fault(GptFaultKind.WALK, 1, str(err), descriptor=value, descriptor_address=address)
    l1 = decoded[l1_address]
    l1_value = values[l1_address]
    if isinstance(l1, L1Granules):
        gpi = l1.gpis[geometry.gpi_index(pa)]
        unpredictable = False
    else:
        # The walker uses the entry at the PA's own index, not the first entry of the block (D9.6.4).
        gpi = l1.gpi
        unpredictable = strict and not _contiguous_block_uniform(
            l1_address, l1_value, l1.contig, geometry, read64
        )
    return WalkResult(
        pa=pa,
        pas=gpi.pas,
        level=1,
        gpi=gpi,
        descriptor=l1_value,
        descriptor_address=l1_address,
        unpredictable=unpredictable,
        reason="Contiguous block entries disagree (CONSTRAINED UNPREDICTABLE)" if unpredictable else "",
    )


def _contiguous_block_uniform(
    address: int, value: int, contig: ContigSize, geometry: GptGeometry, read64: Read64
) -> bool:
    span = 8 * (contig.size // geometry.l1_descriptor_span)
    first = address & ~(span - 1)
    try:
        return all(read64(a) == value for a in range(first, first + span, 8))
    except GptFetchAbort:
        return False


def granule_protection_check(
    pa: int,
    *,
    access: Pas,
    gpccr: Gpccr | int,
    gptbr: Gptbr | int,
    read64: Read64,
    requester: Pas | None = None,
    features: GptFeatures = GptFeatures(),
) -> GptFault | None:
    """The granule protection check of an access to (``pa``, ``access``); None: it passes (DDI0487 D9.1).

    ``requester`` is the Security state making the access (named by its PAS;
    defaults to ``access``); only GPI NS-only looks at it.
    """
    if access not in (Pas.SECURE, Pas.NONSECURE, Pas.ROOT, Pas.REALM):
        raise ValueError(f"an access targets one of the four PAS, not {access.value!r}")
    enabled = gpccr.gpc if isinstance(gpccr, Gpccr) else bool(gpccr >> 16 & 1)
    if not enabled:
        return None  # R_BYRRZ
    try:
        config, _ = _as_config(gpccr, gptbr, features)
    except GptConfigError:
        return GptFault(GptFaultKind.WALK, 0)
    disabled = {Pas.SECURE: config.spad, Pas.NONSECURE: config.nspad, Pas.REALM: config.rlpad}
    if disabled.get(access, False):
        return GptFault(GptFaultKind.GPF, 0)
    result = walk(pa, gpccr=config, gptbr=gptbr, read64=read64, features=features)
    if result.above_pps:
        return None if access is Pas.NONSECURE or config.appsaa else GptFault(GptFaultKind.GPF, 0)
    if result.fault is not None:
        return result.fault
    assert result.gpi is not None
    return None if result.gpi.allows(access, requester) else GptFault(GptFaultKind.GPF, result.level)


# --------------------------------------------------------------------------------------------------
# Memory chunks


@dataclass(frozen=True)
class _Chunks:
    """Disjoint memory chunks sorted by PA, so a table can be found and viewed without copying."""

    bases: tuple[int, ...]
    datas: tuple[memoryview, ...]

    @classmethod
    def of(cls, memory: BytesLike | Mapping[int, BytesLike], base: int = 0) -> _Chunks:
        items = sorted(memory.items()) if isinstance(memory, Mapping) else [(base, memory)]
        views = [(pa, memoryview(data).cast("B")) for pa, data in items]
        for (pa, data), (next_pa, _) in itertools.pairwise(views):
            if pa + len(data) > next_pa:
                raise GptDumpError(f"memory chunks at {pa:#x} and {next_pa:#x} overlap")
        return cls(tuple(pa for pa, _ in views), tuple(data for _, data in views))

    def find(self, pa: int, size: int) -> tuple[memoryview, int] | None:
        """The chunk holding all of [pa, pa+size) and the offset of pa in it."""
        i = bisect.bisect_right(self.bases, pa) - 1
        if i < 0:
            return None
        offset = pa - self.bases[i]
        data = self.datas[i]
        return (data, offset) if offset + size <= len(data) else None

    def touches(self, pa: int, size: int) -> bool:
        """True when some chunk holds part of [pa, pa+size)."""
        i = bisect.bisect_right(self.bases, pa + size - 1) - 1
        return i >= 0 and self.bases[i] + len(self.datas[i]) > pa

    def describe(self) -> str:
        """The chunks as ranges, for error messages."""
        return ", ".join(f"[{b:#x}, {b + len(d):#x})" for b, d in zip(self.bases, self.datas, strict=True))


# --------------------------------------------------------------------------------------------------
# PAS maps


@dataclass(frozen=True)
class PasRun:
    """A maximal run of PAs [start, end) that the GPT gives the same PAS (or where the walk faults)."""

    start: int
    end: int
    """Exclusive."""
    pas: MapPas

    def to_json(self) -> dict[str, int | str]:
        """``{"start", "end", "pas"}`` with integer addresses."""
        return {"start": self.start, "end": self.end, "pas": str(self.pas)}


PAS_CODES: Final[tuple[MapPas, ...]] = (
    Pas.SECURE,
    Pas.NONSECURE,
    Pas.ROOT,
    Pas.REALM,
    Pas.ANY,
    Pas.NONE,
    FAULT,
)
"""The value of each run code in :attr:`PasMap.codes`."""


@dataclass(frozen=True, kw_only=True)
class PasMap:
    """The PAS map a GPT describes over [0, 2^t): maximal runs, plus misprogrammed Contiguous blocks.

    Describes the tables, not one access: GPCCR_EL3.GPC and the GPC2 PAS-disable
    bits are applied by :func:`granule_protection_check`. GPI NS-only maps to
    ``nonsecure`` and the GDI no-access encodings (SA, NSP, NA6, NA7) to ``none``.
    Stored compactly (run starts and one code byte per run) since a fragmented
    table can have millions of runs; :attr:`runs` builds objects on demand.
    """

    gpccr: Gpccr
    gptbr: Gptbr
    starts: array[int]
    """First PA of each run (typecode ``Q``)."""
    codes: bytes
    """Per run, an index into :data:`PAS_CODES`."""
    unpredictable: tuple[tuple[int, int], ...] = field(default=())
    """[start, end) of Contiguous blocks whose entries disagree (R_RSPLJH); each PA uses its own entry."""

    def __post_init__(self) -> None:
        if len(self.starts) != len(self.codes) or not self.starts or self.starts[0] != 0:
            raise ValueError("a PasMap needs one code per run and a first run starting at 0")

    @classmethod
    def from_runs(cls, runs: Iterable[tuple[int, int, MapPas]], *, gpccr: Gpccr, gptbr: Gptbr) -> PasMap:
        """A map from (start, end, pas) runs covering [0, 2^t) in order; adjacent equal runs merge."""
        starts = array("Q")
        codes = bytearray()
        expected = 0
        for start, end, pas in runs:
            if start != expected or end <= start:
                raise ValueError(
                    f"runs must tile [0, 2^t) in order: got [{start:#x}, {end:#x}) at {expected:#x}"
                )
            code = PAS_CODES.index(pas)
            if not codes or codes[-1] != code:
                starts.append(start)
                codes.append(code)
            expected = end
        if expected != gpccr.geometry.protected_size:
            raise ValueError(f"runs end at {expected:#x}, not at the protected size")
        return cls(gpccr=gpccr, gptbr=gptbr, starts=starts, codes=bytes(codes))

    @property
    def limit(self) -> int:
        """2^t: the end of the last run."""
        return self.gpccr.geometry.protected_size

    @cached_property
    def runs(self) -> tuple[PasRun, ...]:
        """The maximal runs, in PA order."""
        ends = (*self.starts[1:], self.limit)
        return tuple(map(PasRun, self.starts, ends, map(PAS_CODES.__getitem__, self.codes)))

    def pas_at(self, pa: int) -> MapPas:
        """What a walk for ``pa`` yields, as :attr:`WalkResult.pas` (above the PPS too)."""
        if pa < 0:
            raise ValueError(f"negative PA {pa}")
        if pa >= self.limit:
            return Pas.ANY if self.gpccr.appsaa else Pas.NONSECURE
        return PAS_CODES[self.codes[bisect.bisect_right(self.starts, pa) - 1]]

    def to_json(self) -> dict[str, object]:
        """``{"gpccr", "gptbr", "pps_bits", "pgs", "l0gptsz_bits", "regions"}``; ``pgs`` in bytes."""
        geometry = self.gpccr.geometry
        return {
            "gpccr": self.gpccr.encode(),
            "gptbr": self.gptbr.encode(),
            "pps_bits": geometry.pps_bits,
            "pgs": geometry.granule_size,
            "l0gptsz_bits": geometry.l0gptsz_bits,
            "regions": [run.to_json() for run in self.runs],
        }


# --------------------------------------------------------------------------------------------------
# Vectorised decoder

# Run codes of the vectorised decoder: indices into PAS_CODES, plus a marker for L0 Table entries.
_CODE_FAULT: Final = 6
_CODE_TABLE: Final = 7
# A Granules descriptor of reserved GPIs, written over the partner of an invalid entry under GDI.
_POISON: Final = 0x2222_2222_2222_2222
# Entries decoded per step: bounds the temporaries; a multiple of the largest Contiguous block (8192 entries).
_CHUNK_ENTRIES: Final = 1 << 18


def _lookup_tables(
    config: Gpccr, features: GptFeatures
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], npt.NDArray[np.uint16]]:
    """Per GPI nibble: its run code (FAULT when reserved) and validity; per byte: both nibbles' codes."""
    import numpy as np

    codes = np.full(16, _CODE_FAULT, dtype=np.uint8)
    valid = np.zeros(16, dtype=bool)
    for gpi in valid_gpis(config, features):
        codes[gpi.value] = PAS_CODES.index(gpi.pas)
        valid[gpi.value] = True
    byte = np.arange(256)
    # Little-endian pairs, so that viewing a looked-up row as bytes gives the nibbles in field order.
    pairs = (codes[byte & 0xF].astype("<u2") | codes[byte >> 4].astype("<u2") << 8).astype("<u2")
    return codes, valid, pairs


def decode_tables(
    gpccr: Gpccr | int,
    gptbr: Gptbr | int,
    memory: BytesLike | Mapping[int, BytesLike],
    base: int = 0,
    *,
    features: GptFeatures = GptFeatures(),
    missing_l1: Literal["error", "fault"] = "error",
) -> PasMap:
    """Decode a whole GPT into a PasMap, agreeing with :func:`walk` at every PA (DDI0487 D9.6, D9.7).

    ``memory`` is raw memory at PA ``base`` holding the L0 table and the L1 tables
    it points to, or ``{PA: bytes}`` chunks (what :func:`build_tables` returns).
    An L1 table wholly outside the memory is an error, or with
    ``missing_l1="fault"`` decodes as ``fault`` (the walk's External abort);
    one partly outside is always an error.
    """
    import numpy as np

    try:
        config, table_base = _as_config(gpccr, gptbr, features)
        table_base.check_alignment(config.geometry)
    except GptConfigError as err:
        raise GptDumpError(str(err)) from err
    if isinstance(memory, Mapping) and base:
        raise ValueError("base applies to a single buffer; {PA: bytes} chunks carry their own addresses")
    geometry = config.geometry
    chunks = _Chunks.of(memory, base)
    t, s = geometry.pps_bits, geometry.l0gptsz_bits

    l0_base = table_base.l0_address
    if l0_base >> t:
        # Every walk takes a GPT address size fault before reading anything (R_XVCKY).
        return PasMap(gpccr=config, gptbr=table_base, starts=array("Q", [0]), codes=bytes([_CODE_FAULT]))
    found = chunks.find(l0_base, geometry.l0_table_size)
    if found is None:
        raise GptDumpError(
            f"the level-0 table [{l0_base:#x}, {l0_base + geometry.l0_table_size:#x}) is not inside the dump"
            f" ({chunks.describe()})"
        )
    codes_lut, valid_lut, pair_lut = _lookup_tables(config, features)
    l0 = np.frombuffer(found[0], dtype="<u8", count=geometry.l0_entries, offset=found[1])

    kind = l0 & 0xF
    l0_gpi = ((l0 >> 4) & 0xF).astype(np.intp)
    block_ok = (kind == 0b0001) & ((l0 >> 8) == 0) & valid_lut[l0_gpi]
    l1_addresses = l0 & _L0_TABLE_ADDR_MASK
    table_ok = (
        (kind == 0b0011)
        & ((l0 >> 52) == 0)
        & ((l0 & 0xFF0) == 0)
        & ((l1_addresses & (geometry.l1_table_size - 1)) == 0)
        & ((l1_addresses >> t) == 0)  # a table above the PPS is an address size fault: FAULT below
    )
    l0_codes = np.where(block_ok, codes_lut[l0_gpi], np.uint8(_CODE_FAULT)).astype(np.uint8)
    l0_codes[table_ok] = _CODE_TABLE
    change = np.empty(l0_codes.shape[0], dtype=bool)
    change[0] = True
    np.not_equal(l0_codes[1:], l0_codes[:-1], out=change[1:])
    change |= table_ok
    firsts = np.flatnonzero(change & ~table_ok)
    l0_starts = firsts.astype(np.int64, copy=False) << s
    l0_piece_codes = l0_codes[firsts]
    # Parts are disjoint PA ranges, each sorted inside: ordering the parts orders everything.
    parts: list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.uint8]]] = []
    unpredictable: list[tuple[int, int]] = []

    table_bytes = 8 * geometry.l1_entries_reachable
    groups: list[tuple[int, memoryview, int, int]] = []  # (first L0 index, chunk, offset, tables)
    for index, address in zip(
        np.flatnonzero(table_ok).tolist(), l1_addresses[table_ok].tolist(), strict=True
    ):
        located = chunks.find(address, table_bytes)
        if located is None:
            where = (
                f"the L1 table of L0 entry {index} (PA {index << s:#x})"
                f" at [{address:#x}, {address + table_bytes:#x})"
            )
            if chunks.touches(address, table_bytes):
                raise GptDumpError(f"{where} is truncated by the end of the dump ({chunks.describe()})")
            if missing_l1 == "error":
                raise GptDumpError(f"{where} is not inside the dump ({chunks.describe()})")
            parts.append((index << s, np.array([index << s]), np.array([_CODE_FAULT], dtype=np.uint8)))
            continue
        data, offset = located
        if groups:
            g_index, g_data, g_offset, g_count = groups[-1]
            # Tables of consecutive L0 entries laid out back to back decode as one array, without copying.
            if g_index + g_count == index and g_data is data and g_offset + g_count * table_bytes == offset:
                groups[-1] = (g_index, g_data, g_offset, g_count + 1)
                continue
        groups.append((index, data, offset, 1))

    span = geometry.l1_descriptor_span
    for index, data, offset, count in groups:
        entries = np.frombuffer(data, dtype="<u8", count=count * table_bytes // 8, offset=offset)
        for step in range(0, entries.shape[0], _CHUNK_ENTRIES):
            run_starts, run_codes, bad = _decode_l1_entries(
                entries[step : step + _CHUNK_ENTRIES],
                (index << s) + step * span,
                geometry=geometry,
                codes_lut=codes_lut,
                valid_lut=valid_lut,
                pair_lut=pair_lut,
                gdi=features.gdi,
            )
            parts.append((int(run_starts[0]), run_starts, run_codes))
            unpredictable.extend(bad)

    # The L0 pieces between two table entries form one part each.
    bounds = np.searchsorted(l0_starts, [first for first, _, _ in parts]).tolist()
    for low, high in itertools.pairwise([0, *sorted(bounds), l0_starts.shape[0]]):
        if low < high:
            parts.append((int(l0_starts[low]), l0_starts[low:high], l0_piece_codes[low:high]))
    parts.sort(key=lambda part: part[0])
    all_starts = np.concatenate([part[1] for part in parts])
    all_codes = np.concatenate([part[2] for part in parts])
    keep = np.empty(all_codes.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(all_codes[1:], all_codes[:-1], out=keep[1:])
    starts_out = array("Q")
    starts_out.frombytes(all_starts[keep].view(np.uint64).tobytes())  # starts are non-negative
    return PasMap(
        gpccr=config,
        gptbr=table_base,
        starts=starts_out,
        codes=all_codes[keep].tobytes(),
        unpredictable=tuple(sorted(set(unpredictable))),
    )


def _decode_l1_entries(
    entries: npt.NDArray[np.uint64],
    pa0: int,
    *,
    geometry: GptGeometry,
    codes_lut: npt.NDArray[np.uint8],
    valid_lut: npt.NDArray[np.bool_],
    pair_lut: npt.NDArray[np.uint16],
    gdi: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], list[tuple[int, int]]]:
    """Runs of one slice of L1 entries starting at PA ``pa0``: (starts, codes), maybe not maximal.

    Work is per run of identical descriptors, not per granule: one pass finds where
    the descriptor value changes; only those values are classified, and only
    Granules descriptors mixing PAS values are expanded to their sixteen nibbles.
    """
    import numpy as np

    n = entries.shape[0]
    span = geometry.l1_descriptor_span
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(entries[1:], entries[:-1], out=change[1:])
    first = np.flatnonzero(change)
    lens = np.diff(first, append=n)
    values = entries[first]

    low = (values & 0xF).astype(np.intp)
    gpi = ((values >> 4) & 0xF).astype(np.intp)
    contig_field = ((values >> 8) & 0b11).astype(np.intp)
    contig = low == 0b0001
    contig_ok = contig & ((values >> 10) == 0) & (contig_field != 0) & valid_lut[gpi]
    uniform = ~contig & (values == low.astype(np.uint64) * np.uint64(_UNIFORM))
    run_codes = np.where(contig, np.where(contig_ok, codes_lut[gpi], np.uint8(_CODE_FAULT)), codes_lut[low])
    run_codes = run_codes.astype(np.uint8)
    invalid = (contig & ~contig_ok) | (uniform & ~valid_lut[low])

    mixed = np.flatnonzero(~contig & ~uniform)
    nibble_codes = np.empty((0, 16), dtype=np.uint8)
    if mixed.size:
        # GPI field i is nibble i of the little-endian word: one table lookup per byte yields two codes.
        raw = np.ascontiguousarray(values[mixed]).astype("<u8", copy=False).view(np.uint8)
        nibble_codes = np.take(pair_lut, raw).view(np.uint8).reshape(-1, 16)
        # Valid GPIs never map to FAULT, so a FAULT code marks a reserved field; eight codes per uint64 lane.
        lanes = (nibble_codes == _CODE_FAULT).view(np.uint64)
        bad_fields = (lanes[:, 0] | lanes[:, 1]) != 0
        invalid[mixed] = bad_fields
        nibble_codes[bad_fields] = (
            _CODE_FAULT  # J1 GPTGranulesDescriptorValid: one bad field spoils all sixteen
        )
        run_codes[mixed] = nibble_codes[:, 0]
        # Descriptors whose sixteen fields map to one code (e.g. SA and NA6: both "none") stay single runs.
        code_lanes = nibble_codes.view(np.uint64)
        repeated = nibble_codes[:, 0].astype(np.uint64) * np.uint64(0x0101_0101_0101_0101)
        spread = (code_lanes[:, 0] != repeated) | (code_lanes[:, 1] != repeated)
        mixed = mixed[spread]
        nibble_codes = nibble_codes[spread]

    if gdi and invalid.any():
        entry_invalid = np.repeat(invalid, lens)
        poisoned = np.repeat(entry_invalid.reshape(-1, 2).any(axis=1), 2) & ~entry_invalid
        if poisoned.any():
            patched = entries.copy()
            patched[poisoned] = _POISON
            return _decode_l1_entries(
                patched,
                pa0,
                geometry=geometry,
                codes_lut=codes_lut,
                valid_lut=valid_lut,
                pair_lut=pair_lut,
                gdi=False,
            )

    bad: list[tuple[int, int]] = []
    contig_runs = np.flatnonzero(contig_ok)
    if contig_runs.size:
        # A maximal run of one Contiguous descriptor must start and end on its block boundaries;
        # slices start on 512 MB boundaries, so slice-local indices have the same alignment.
        block_entries = np.array([1, (2 << 20) // span, (32 << 20) // span, (512 << 20) // span])[
            contig_field[contig_runs]
        ]
        run_first = first[contig_runs]
        run_end = run_first + lens[contig_runs]
        for edge, hit in (
            (run_first, run_first % block_entries != 0),
            (run_end - 1, run_end % block_entries != 0),
        ):
            for entry, size in zip(edge[hit].tolist(), block_entries[hit].tolist(), strict=True):
                block = pa0 + (entry - entry % size) * span
                bad.append((block, block + size * span))

    run_starts = first.astype(np.int64, copy=False) * span
    piece_codes = run_codes
    if mixed.size:
        # Expand only the descriptors mixing PAS values, and keep only the fields where the code changes.
        mixed_lens = lens[mixed]
        entry_first = first[mixed].astype(np.int64, copy=False)
        rows = nibble_codes
        if mixed_lens.max() > 1:
            rows = np.repeat(nibble_codes, mixed_lens, axis=0)
            offsets = np.arange(rows.shape[0], dtype=np.int64) - np.repeat(
                np.cumsum(mixed_lens) - mixed_lens, mixed_lens
            )
            entry_first = np.repeat(entry_first, mixed_lens) + offsets
        flat = rows.ravel()
        edges = np.empty(flat.shape[0], dtype=bool)
        edges[0] = True
        np.not_equal(flat[1:], flat[:-1], out=edges[1:])
        edges[::16] = True  # consecutive rows need not be neighbours in PA
        where = np.flatnonzero(edges)
        field_starts = entry_first[where >> 4] * span + (where & 0xF) * geometry.granule_size
        plain = np.ones(first.shape[0], dtype=bool)
        plain[mixed] = False
        if plain.any():
            run_starts = np.concatenate((run_starts[plain], field_starts))
            piece_codes = np.concatenate((run_codes[plain], flat[where]))
            # Two sorted runs: the stable sort (timsort) merges them in linear time.
            order = np.argsort(run_starts, kind="stable")
            run_starts = run_starts[order]
            piece_codes = piece_codes[order]
        else:
            run_starts = field_starts
            piece_codes = flat[where]

    keep = np.empty(piece_codes.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(piece_codes[1:], piece_codes[:-1], out=keep[1:])
    return run_starts[keep] + pa0, piece_codes[keep], bad


# --------------------------------------------------------------------------------------------------
# Table builder


@dataclass(frozen=True)
class PasRegion:
    """A PA range [start, end) and its PAS, as a platform's GPT layout lists it (TF-A ``pas_region_t``)."""

    start: int
    end: int
    pas: Pas
    _: KW_ONLY
    l1: bool = False
    """Map through L1 tables even where the region covers whole L0 regions (TF-A GPT_MAP_REGION_GRANULE):
    only granules under an L1 table can change PAS at run time."""

    @classmethod
    def of(cls, item: PasRegion | tuple[int, int, Pas | str]) -> PasRegion:
        """A region from itself or from a ``(start, end, pas)`` tuple."""
        if isinstance(item, PasRegion):
            return item
        start, end, pas = item
        return cls(start, end, pas if isinstance(pas, Pas) else Pas.parse(pas))


_SIZE_2MB: Final = 2 << 20


def build_tables(
    layout: Iterable[PasRegion | tuple[int, int, Pas | str]],
    *,
    gpccr: Gpccr | int,
    gptbr: Gptbr | int,
    l1_base: int | None = None,
) -> dict[int, bytes]:
    """Build the GPT for a layout as TF-A's GPT library does: ``{PA: table bytes}`` (DDI0487 D9.6).

    The L0 table starts as All-access blocks. A region covering whole L0 regions
    becomes L0 Block descriptors (unless ``l1``); elsewhere L1 tables, handed out
    from ``l1_base`` (default: right after the L0 table) in layout order, start as
    All-access and each region is filled as TF-A's ``fill_l1_tbl`` does: Granules
    descriptors up to a 2 MB boundary, then Contiguous blocks from the largest
    size that fits down (512, 32, 2 MB), then Granules descriptors for the tail.
    That is the fill the reference's FVP tables (§6.3) follow; some TF-A revisions
    place one block per size per pass instead — other bytes, the same PAS map.
    """
    config, base = _as_config(gpccr, gptbr, GptFeatures())
    geometry = config.geometry
    base.check_alignment(geometry)
    regions = [PasRegion.of(item) for item in layout]
    _check_layout(regions, geometry)

    l0_base = base.l0_address
    region_size = geometry.l0_region_size
    l1_size = geometry.l1_table_size
    next_table = -(-(l0_base + geometry.l0_table_size) // l1_size) * l1_size if l1_base is None else l1_base
    if next_table & (l1_size - 1):
        raise GptConfigError(f"L1 tables at {next_table:#x} are not aligned to their {l1_size:#x}-byte size")

    l0 = [L0Block(Gpi.ANY).encode()] * geometry.l0_entries
    tables: dict[int, tuple[int, bytearray]] = {}  # L0 index -> (PA, table)
    any_table = (_UNIFORM * Gpi.ANY.value).to_bytes(8, "little") * geometry.l1_entries
    for region in regions:
        gpi = Gpi.for_pas(region.pas)
        for index in range(
            region.start >> geometry.l0gptsz_bits, ((region.end - 1) >> geometry.l0gptsz_bits) + 1
        ):
            low = max(region.start, index * region_size)
            high = min(region.end, (index + 1) * region_size)
            whole = low == index * region_size and high == min(
                (index + 1) * region_size, geometry.protected_size
            )
            if whole and not region.l1:
                l0[index] = L0Block(gpi).encode()
                continue
            if index not in tables:
                tables[index] = (next_table, bytearray(any_table))
                l0[index] = L0Table(next_table).encode()
                next_table += l1_size
            _fill_l1(tables[index][1], low - index * region_size, high - index * region_size, gpi, geometry)

    result = {l0_base: b"".join(value.to_bytes(8, "little") for value in l0)}
    for address, table in tables.values():
        if address < l0_base + geometry.l0_table_size and l0_base < address + l1_size:
            raise GptConfigError(f"L1 table at {address:#x} overlaps the level-0 table at {l0_base:#x}")
        result[address] = bytes(table)
    return result


def _check_layout(regions: list[PasRegion], geometry: GptGeometry) -> None:
    granule = geometry.granule_size
    for region in regions:
        text = f"region [{region.start:#x}, {region.end:#x}) {region.pas.value}"
        if region.start < 0 or region.end <= region.start:
            raise GptConfigError(f"{text} is empty or negative")
        if (region.start | region.end) & (granule - 1):
            raise GptConfigError(f"{text} is not aligned to the {granule:#x}-byte granule")
        if region.end > geometry.protected_size:
            raise GptConfigError(f"{text} ends above the {geometry.pps_bits}-bit protected size")
    ordered = sorted(regions, key=lambda r: r.start)
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise GptConfigError(
                f"regions [{before.start:#x}, {before.end:#x}) and [{after.start:#x}, {after.end:#x}) overlap"
            )


def _fill_l1(table: bytearray, low: int, high: int, gpi: Gpi, geometry: GptGeometry) -> None:
    """Fill [low, high) (offsets inside the L0 region) of one L1 table, as TF-A's ``fill_l1_tbl``."""
    span = geometry.l1_descriptor_span
    position = low
    if position % _SIZE_2MB and high - position >= _SIZE_2MB:
        boundary = position - position % _SIZE_2MB + _SIZE_2MB
        _fill_granules(table, position, boundary, gpi, geometry)
        position = boundary
    if high - position >= _SIZE_2MB and position % _SIZE_2MB == 0:
        for contig in (ContigSize.MB_512, ContigSize.MB_32, ContigSize.MB_2):
            # Descending sizes, never back up: TF-A's fill_l1_cont_desc.
            while position % contig.size == 0 and high - position >= contig.size:
                count = contig.size // span
                first = position // span
                table[8 * first : 8 * (first + count)] = (
                    L1Contiguous(gpi, contig).encode().to_bytes(8, "little") * count
                )
                position += contig.size
    if position < high:
        _fill_granules(table, position, high, gpi, geometry)


def _fill_granules(table: bytearray, low: int, high: int, gpi: Gpi, geometry: GptGeometry) -> None:
    """Set the GPI fields of granules [low, high) in Granules descriptors, keeping the other fields."""
    pattern = _UNIFORM * gpi.value
    granule = low >> geometry.pgs_bits
    end = high >> geometry.pgs_bits
    while granule < end:
        entry, field_index = divmod(granule, 16)
        if field_index == 0 and end - granule >= 16:
            count = (end - granule) // 16
            table[8 * entry : 8 * (entry + count)] = pattern.to_bytes(8, "little") * count
            granule += 16 * count
            continue
        last = min(16, field_index + end - granule)
        mask = ((1 << (4 * (last - field_index))) - 1) << (4 * field_index)
        old = int.from_bytes(table[8 * entry : 8 * entry + 8], "little")
        table[8 * entry : 8 * entry + 8] = (old & ~mask | pattern & mask).to_bytes(8, "little")
        granule += last - field_index
