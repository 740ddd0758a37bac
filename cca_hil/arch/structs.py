"""RMM 1.0 in-memory structures packed to the exact bytes of the specification.

RmiRealmParams (B4.4.9), RmiRecParams (B4.4.10), RmiRecRun = RmiRecEnter +
RmiRecExit (B4.4.11..13). All little-endian; a field narrower than its slot sits
at the low-address end of the slot; unused bytes are zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields
from typing import ClassVar, Self

from cca_hil.arch.rmi import GRANULE_SIZE, MASK64

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


def _put(buf: bytearray, offset: int, size: int, value: int) -> None:
    buf[offset : offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _get(buf: bytes, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset : offset + size], "little")


@dataclass(frozen=True, slots=True)
class FieldLayout:
    """Where one field lives: byte offset, bytes the spec gives its value, element count and stride."""

    offset: int
    size: int
    count: int = 1
    stride: int = 8
    signed: bool = False


class Structure:
    """Base of the spec structures: a dataclass plus a LAYOUT table drives pack() and unpack()."""

    SIZE: ClassVar[int] = GRANULE_SIZE
    LAYOUT: ClassVar[dict[str, FieldLayout]] = {}

    def pack(self) -> bytes:
        """The structure as the exact bytes the RMM reads or writes."""
        buf = bytearray(self.SIZE)
        for name, lay in self.LAYOUT.items():
            value = getattr(self, name)
            if lay.count == 1:
                if isinstance(value, bytes):
                    buf[lay.offset : lay.offset + lay.size] = value.ljust(lay.size, b"\0")[: lay.size]
                else:
                    _put(buf, lay.offset, lay.size, int(value))
            else:
                items = list(value)
                if len(items) > lay.count:
                    raise ValueError(f"{type(self).__name__}.{name}: at most {lay.count} elements")
                for i, item in enumerate(items):
                    _put(buf, lay.offset + i * lay.stride, lay.size, int(item))
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        """Decode a structure from its bytes (at least SIZE of them)."""
        if len(data) < cls.SIZE:
            raise ValueError(f"{cls.__name__} needs {cls.SIZE} bytes, got {len(data)}")
        kwargs: dict[str, object] = {}
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for name, lay in cls.LAYOUT.items():
            if name not in names:
                continue
            if lay.count == 1:
                raw = data[lay.offset : lay.offset + lay.size]
                if lay.size > 8:
                    kwargs[name] = bytes(raw)
                else:
                    value = int.from_bytes(raw, "little")
                    if lay.signed and value >> (8 * lay.size - 1):
                        value -= 1 << (8 * lay.size)
                    kwargs[name] = value
            else:
                kwargs[name] = tuple(
                    _get(data, lay.offset + i * lay.stride, lay.size) for i in range(lay.count)
                )
        return cls(**kwargs)


class RealmFlags:
    """RmiRealmFlags bits (B4.4.8)."""

    LPA2 = 1 << 0
    SVE = 1 << 1
    PMU = 1 << 2


@dataclass(frozen=True)
class RealmParams(Structure):
    """RmiRealmParams: the Host's description of a Realm for RMI_REALM_CREATE."""

    flags: int = 0
    s2sz: int = 40
    sve_vl: int = 0
    num_bps: int = 1
    num_wps: int = 1
    pmu_num_ctrs: int = 0
    hash_algo: int = 0
    rpv: bytes = b"\0" * 64
    vmid: int = 0
    rtt_base: int = 0
    rtt_level_start: int = 0
    rtt_num_start: int = 1

    # Slots are 8 bytes; the spec's value widths are those below. The RMM reads
    # the spec width (TF-RMM reads 32 bits of the UInt8 fields; pack() writes
    # the full slot so both readers agree on in-range values).
    LAYOUT: ClassVar[dict[str, FieldLayout]] = {
        "flags": FieldLayout(0x000, 8),
        "s2sz": FieldLayout(0x008, 8),
        "sve_vl": FieldLayout(0x010, 8),
        "num_bps": FieldLayout(0x018, 8),
        "num_wps": FieldLayout(0x020, 8),
        "pmu_num_ctrs": FieldLayout(0x028, 8),
        "hash_algo": FieldLayout(0x030, 8),
        "rpv": FieldLayout(0x400, 64),
        "vmid": FieldLayout(0x800, 8),
        "rtt_base": FieldLayout(0x808, 8),
        "rtt_level_start": FieldLayout(0x810, 8, signed=True),
        "rtt_num_start": FieldLayout(0x818, 8),
    }

    MEASURED_FIELDS: ClassVar[tuple[str, ...]] = (
        "flags",
        "s2sz",
        "sve_vl",
        "num_bps",
        "num_wps",
        "pmu_num_ctrs",
        "hash_algo",
    )

    def measured_image(self) -> bytes:
        """The 4 KiB image hashed into the RIM by REALM_CREATE (RMM 1.0 A7.1.1 RimInit)."""
        buf = bytearray(self.SIZE)
        _put(buf, 0x000, 8, self.flags)
        _put(buf, 0x008, 1, self.s2sz)
        _put(buf, 0x010, 1, self.sve_vl)
        _put(buf, 0x018, 1, self.num_bps)
        _put(buf, 0x020, 1, self.num_wps)
        _put(buf, 0x028, 1, self.pmu_num_ctrs)
        _put(buf, 0x030, 1, self.hash_algo)
        return bytes(buf)


def rec_mpidr_index(mpidr: int) -> int:
    """REC index of an RmiRecMpidr value (RMM 1.0 A2.3.3)."""
    aff0 = mpidr & 0xF
    aff1 = (mpidr >> 8) & 0xFF
    aff2 = (mpidr >> 16) & 0xFF
    aff3 = (mpidr >> 24) & 0xFF
    return aff0 + 16 * aff1 + 16 * 256 * aff2 + 16 * 256 * 256 * aff3


def rec_mpidr_for_index(index: int) -> int:
    """The RmiRecMpidr value of the REC with this index (inverse of rec_mpidr_index)."""
    aff0 = index % 16
    rest = index // 16
    aff1 = rest % 256
    rest //= 256
    aff2 = rest % 256
    aff3 = rest // 256
    return aff0 | aff1 << 8 | aff2 << 16 | aff3 << 24


RMI_MPIDR_VALID_MASK = 0xFFFF_FF0F
"""Bits of RmiRecMpidr that may be set (Aff0[3:0], Aff1, Aff2, Aff3)."""


class RecCreateFlags:
    """RmiRecCreateFlags bits (B4.4.10)."""

    RUNNABLE = 1 << 0


MAX_REC_AUX = 16


@dataclass(frozen=True)
class RecParams(Structure):
    """RmiRecParams: the Host's description of a REC for RMI_REC_CREATE."""

    flags: int = RecCreateFlags.RUNNABLE
    mpidr: int = 0
    pc: int = 0
    gprs: tuple[int, ...] = (0,) * 8
    num_aux: int = 0
    aux: tuple[int, ...] = ()

    LAYOUT: ClassVar[dict[str, FieldLayout]] = {
        "flags": FieldLayout(0x000, 8),
        "mpidr": FieldLayout(0x100, 8),
        "pc": FieldLayout(0x200, 8),
        "gprs": FieldLayout(0x300, 8, count=8),
        "num_aux": FieldLayout(0x800, 8),
        "aux": FieldLayout(0x808, 8, count=MAX_REC_AUX),
    }

    def measured_image(self) -> bytes:
        """The 4 KiB image whose hash is the REC descriptor's content (RMM 1.0 A7.1.3)."""
        buf = bytearray(self.SIZE)
        _put(buf, 0x000, 8, self.flags)
        _put(buf, 0x200, 8, self.pc)
        for i, value in enumerate(self.gprs[:8]):
            _put(buf, 0x300 + 8 * i, 8, value)
        return bytes(buf)


class RecEnterFlags:
    """RmiRecEnterFlags bits (B4.4.12)."""

    EMUL_MMIO = 1 << 0
    INJECT_SEA = 1 << 1
    TRAP_WFI = 1 << 2
    TRAP_WFE = 1 << 3
    RIPAS_RESPONSE = 1 << 4  # 0 accept, 1 reject

    NAMES: ClassVar[dict[str, int]] = {
        "emul_mmio": EMUL_MMIO,
        "inject_sea": INJECT_SEA,
        "trap_wfi": TRAP_WFI,
        "trap_wfe": TRAP_WFE,
        "ripas_response": RIPAS_RESPONSE,
    }


REC_RUN_EXIT_OFFSET = 0x800


@dataclass(frozen=True)
class RecEnter(Structure):
    """RmiRecEnter: the Host's half of RmiRecRun (offset 0x000)."""

    SIZE: ClassVar[int] = 0x800

    flags: int = 0
    gprs: tuple[int, ...] = (0,) * 31
    gicv3_hcr: int = 0
    gicv3_lrs: tuple[int, ...] = (0,) * 16

    LAYOUT: ClassVar[dict[str, FieldLayout]] = {
        "flags": FieldLayout(0x000, 8),
        "gprs": FieldLayout(0x200, 8, count=31),
        "gicv3_hcr": FieldLayout(0x300, 8),
        "gicv3_lrs": FieldLayout(0x308, 8, count=16),
    }


@dataclass(frozen=True)
class RecExit(Structure):
    """RmiRecExit: the RMM's half of RmiRecRun (offset 0x800)."""

    SIZE: ClassVar[int] = 0x800

    exit_reason: int = 0
    esr: int = 0
    far: int = 0
    hpfar: int = 0
    gprs: tuple[int, ...] = (0,) * 31
    gicv3_hcr: int = 0
    gicv3_lrs: tuple[int, ...] = (0,) * 16
    gicv3_misr: int = 0
    gicv3_vmcr: int = 0
    cntp_ctl: int = 0
    cntp_cval: int = 0
    cntv_ctl: int = 0
    cntv_cval: int = 0
    ripas_base: int = 0
    ripas_top: int = 0
    ripas_value: int = 0
    imm: int = 0
    pmu_ovf_status: int = 0

    LAYOUT: ClassVar[dict[str, FieldLayout]] = {
        "exit_reason": FieldLayout(0x000, 1),
        "esr": FieldLayout(0x100, 8),
        "far": FieldLayout(0x108, 8),
        "hpfar": FieldLayout(0x110, 8),
        "gprs": FieldLayout(0x200, 8, count=31),
        "gicv3_hcr": FieldLayout(0x300, 8),
        "gicv3_lrs": FieldLayout(0x308, 8, count=16),
        "gicv3_misr": FieldLayout(0x388, 8),
        "gicv3_vmcr": FieldLayout(0x390, 8),
        "cntp_ctl": FieldLayout(0x400, 8),
        "cntp_cval": FieldLayout(0x408, 8),
        "cntv_ctl": FieldLayout(0x410, 8),
        "cntv_cval": FieldLayout(0x418, 8),
        "ripas_base": FieldLayout(0x500, 8),
        "ripas_top": FieldLayout(0x508, 8),
        "ripas_value": FieldLayout(0x510, 1),
        "imm": FieldLayout(0x600, 2),
        "pmu_ovf_status": FieldLayout(0x700, 1),
    }


@dataclass(frozen=True)
class RecRun:
    """RmiRecRun: enter (Host → RMM) at 0x000 and exit (RMM → Host) at 0x800, one 4 KiB granule."""

    SIZE: ClassVar[int] = GRANULE_SIZE

    enter: RecEnter = field(default_factory=RecEnter)
    exit: RecExit = field(default_factory=RecExit)

    def pack(self) -> bytes:
        """The 4 KiB RecRun image."""
        return self.enter.pack() + self.exit.pack()

    @classmethod
    def unpack(cls, data: bytes) -> RecRun:
        """Decode both halves of a RecRun image."""
        if len(data) < cls.SIZE:
            raise ValueError(f"RecRun needs {cls.SIZE} bytes, got {len(data)}")
        return cls(
            enter=RecEnter.unpack(data[:REC_RUN_EXIT_OFFSET]),
            exit=RecExit.unpack(data[REC_RUN_EXIT_OFFSET:]),
        )


def u64(value: int) -> bytes:
    """Little-endian bytes of a 64-bit register value."""
    return _U64.pack(value & MASK64)


def i64(value: int) -> bytes:
    """Little-endian bytes of a signed 64-bit value."""
    return _I64.pack(value)
