"""RMI vocabulary shared by every RMM version: status codes, return-code packing, command descriptions.

RMM 1.0 (DEN0137 1.0-rel0) B4.4 (return codes), B4.3 (commands). The per-version
tables live beside this module (``rmi_1_0``); everything here is version-neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

GRANULE_SIZE = 0x1000
"""RMM granule size in bytes (4 KiB)."""

SMCCC_NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF
"""X0 for an SMC whose function identifier nobody implements (SMCCC -1)."""

MASK64 = 0xFFFF_FFFF_FFFF_FFFF


class RmiStatus(IntEnum):
    """RmiStatusCode (RMM 1.0 B4.4.2): the low byte of X0 after an RMI call."""

    SUCCESS = 0
    ERROR_INPUT = 1
    ERROR_REALM = 2
    ERROR_REC = 3
    ERROR_RTT = 4


def pack_return(status: int, index: int = 0) -> int:
    """X0 for an RMI return code: ``status | index << 8`` (index is an 8-bit field)."""
    return (status & 0xFF) | ((index & 0xFF) << 8)


def unpack_return(x0: int) -> tuple[int, int]:
    """Split an RMI X0 into (status, index)."""
    return x0 & 0xFF, (x0 >> 8) & 0xFF


def status_name(x0: int) -> str:
    """Readable name of an RMI X0 (``error_rtt`` …, or ``not_supported`` for SMCCC -1)."""
    if x0 == SMCCC_NOT_SUPPORTED:
        return "not_supported"
    status, _ = unpack_return(x0)
    if x0 >> 16 == 0:
        try:
            return RmiStatus(status).name.lower()
        except ValueError:
            pass
    return f"unknown({x0:#x})"


def encode_version(major: int, minor: int) -> int:
    """RmiInterfaceVersion: minor in bits 15:0, major in bits 30:16."""
    return ((major & 0x7FFF) << 16) | (minor & 0xFFFF)


def decode_version(value: int) -> tuple[int, int]:
    """(major, minor) of an RmiInterfaceVersion."""
    return (value >> 16) & 0x7FFF, value & 0xFFFF


IndexRule = int | Literal["walk_level", "level", "level_minus_1"]
TopRule = int | Literal["walk_top", "ipa"] | None


@dataclass(frozen=True, slots=True)
class Condition:
    """One failure condition of a command: spec label, status, and how its index is formed."""

    id: str
    status: RmiStatus
    index: IndexRule = 0
    top: TopRule = None
    quirk: int | None = None
    """Row of the spec-vs-TF-RMM table when the condition only exists in TF-RMM's behaviour."""
    spec_label: str | None = None
    """The spec's label when ``id`` names TF-RMM's split of a spec condition."""

    @property
    def label(self) -> str:
        """The name shown in results: the spec's label where there is one."""
        return self.spec_label or self.id


@dataclass(frozen=True, slots=True)
class Param:
    """An input register of a command: spec name (lower_snake_case), register number, spec type."""

    name: str
    reg: int
    type: str

    @property
    def is_address(self) -> bool:
        """True for inputs the spec types as a physical address."""
        return self.type == "Address"

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other accepted spellings: ``params`` for ``params_ptr`` and so on."""
        if self.name.endswith("_ptr"):
            return (self.name[: -len("_ptr")],)
        return ()


@dataclass(frozen=True, slots=True)
class Output:
    """An output register of a command and when the spec defines it."""

    name: str
    reg: int
    type: str
    valid: str = "success"
    """``success``, or ``success_or_rtt_error`` for the ``top`` outputs of the destroy commands."""


@dataclass(frozen=True, slots=True)
class RmiCommand:
    """An RMI command: FID, inputs, outputs and failure conditions in evaluation order."""

    name: str
    spec_name: str
    fid: int
    inputs: tuple[Param, ...]
    outputs: tuple[Output, ...]
    conditions: tuple[Condition, ...]
    spec_order: tuple[str, ...] = ()
    spec_precedes: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    walk_to: int | str | None = None

    def condition(self, cond_id: str) -> Condition:
        """The condition named ``cond_id`` (KeyError if the command has none)."""
        for cond in self.conditions:
            if cond.id == cond_id or cond.spec_label == cond_id:
                return cond
        raise KeyError(f"{self.spec_name} has no failure condition {cond_id!r}")

    def input(self, name: str) -> Param:
        """The input called ``name`` or one of its aliases (KeyError otherwise)."""
        for param in self.inputs:
            if param.name == name or name in param.aliases:
                return param
        raise KeyError(name)


@dataclass(frozen=True)
class RmiInterface:
    """All commands of one RMI version, looked up by name or FID."""

    version: int
    commands: tuple[RmiCommand, ...]
    by_name: dict[str, RmiCommand] = field(init=False, repr=False, compare=False)
    by_fid: dict[int, RmiCommand] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.commands})
        object.__setattr__(self, "by_fid", {c.fid: c for c in self.commands})

    def __getitem__(self, name: str) -> RmiCommand:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name


class GranuleState(IntEnum):
    """Abstract granule states (RMM 1.0 A2.2)."""

    UNDELEGATED = 0
    DELEGATED = 1
    RD = 2
    REC = 3
    REC_AUX = 4
    DATA = 5
    RTT = 6


class RealmState(IntEnum):
    """Realm states (RMM 1.0 A2.1.5)."""

    NEW = 0
    ACTIVE = 1
    SYSTEM_OFF = 2


class RecState(IntEnum):
    """REC states (RMM 1.0 A2.3.3)."""

    READY = 0
    RUNNING = 1


class RttEntryState(IntEnum):
    """RmiRttEntryState as reported by RMI_RTT_READ_ENTRY (RMM 1.0 B4.4.15)."""

    UNASSIGNED = 0
    ASSIGNED = 1
    TABLE = 2


class Ripas(IntEnum):
    """RmiRipas / RsiRipas encodings (RMM 1.0 B4.4.13, B5.4.7)."""

    EMPTY = 0
    RAM = 1
    DESTROYED = 2
    DEV = 3


class HashAlgorithm(IntEnum):
    """RmiHashAlgorithm (RMM 1.0 B4.4.6)."""

    SHA256 = 0
    SHA512 = 1


class RecExitReason(IntEnum):
    """RmiRecExitReason (RMM 1.0 B4.4.11)."""

    SYNC = 0
    IRQ = 1
    FIQ = 2
    PSCI = 3
    RIPAS_CHANGE = 4
    HOST_CALL = 5
    SERROR = 6


# Entry coverage per RTT level with a 4 KiB translation granule (VMSAv8-64).
RTT_ENTRY_SIZE: dict[int, int] = {
    -1: 1 << 48,
    0: 1 << 39,
    1: 1 << 30,
    2: 1 << 21,
    3: 1 << 12,
}
RTT_ENTRIES = 512
RTT_ENTRIES_LEVEL_MINUS_1 = 16


def rtt_entry_size(level: int) -> int:
    """Bytes of IPA space covered by one RTT entry at ``level``."""
    return RTT_ENTRY_SIZE[level]


def to_signed64(value: int) -> int:
    """Interpret a 64-bit register as Int64 (levels are signed: -1 is 0xFFFF…FFFF)."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value
