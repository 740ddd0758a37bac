"""RSI 1.0 commands and the PSCI functions a Realm may call, as data: FIDs, registers, failure conditions.

RMM 1.0 (DEN0137 1.0-rel0) B5 (RSI) and B5.3 PSCI in a Realm (PSCI 1.1,
DEN0022). The ``conditions`` of each command are in the order the model
evaluates them, which is TF-RMM's (rmm-abi.md §7.1); the RSI commands define no
orderings of their own, so that order is one the specification allows.
Conditions only TF-RMM has carry the §12 row they come from and an id that
starts with ``tf_rmm_``, as in :mod:`cca_hil.arch.rmi_1_0`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from cca_hil.arch.rmi import MASK64


class RsiStatus(IntEnum):
    """RsiCommandReturnCode (RMM 1.0 B5.4.4)."""

    SUCCESS = 0
    ERROR_INPUT = 1
    ERROR_STATE = 2
    INCOMPLETE = 3
    ERROR_UNKNOWN = 4


class RsiResponse(IntEnum):
    """RsiResponse: the Host's answer to a RIPAS change, as the Realm sees it (RMM 1.0 B5.4.7)."""

    ACCEPT = 0
    REJECT = 1


class PsciStatus(IntEnum):
    """PsciReturnCode (PSCI 1.1, DEN0022 5.2.2); X0 carries the two's complement of negative values."""

    SUCCESS = 0
    OFF = 1
    NOT_SUPPORTED = -1
    INVALID_PARAMETERS = -2
    DENIED = -3
    ALREADY_ON = -4
    ON_PENDING = -5
    INTERNAL_FAILURE = -6
    NOT_PRESENT = -7
    DISABLED = -8
    INVALID_ADDRESS = -9

    @property
    def x0(self) -> int:
        """The 64-bit register value of this status."""
        return int(self) & MASK64


RSI_VERSION_1_0 = 0x10000
"""RsiInterfaceVersion 1.0 (minor 15:0, major 30:16)."""
PSCI_VERSION_1_1 = 0x10001
"""What PSCI_VERSION answers inside a Realm (RMM 1.0 B5.3)."""
SMCCC_VERSION_FID = 0x8000_0000
SMCCC_VERSION_1_2 = 0x10002
"""What a Realm's SMCCC_VERSION returns on TF-RMM (rmm-abi.md §1.1)."""
RIPAS_CHANGE_DESTROYED = 1 << 0
"""RsiRipasChangeFlags bit 0: the change may turn DESTROYED into the requested RIPAS."""
HOST_CALL_SIZE = 0x100
"""RsiHostCall: imm at 0x00, gprs[0..30] at 0x08 (RMM 1.0 B5.4.5); 256-byte aligned."""
HOST_CALL_GPRS = 31
REALM_CONFIG_RPV_OFFSET = 0x200
"""RsiRealmConfig: ipa_width at 0x000 (8 bytes), hash_algo at 0x008 (1 byte), rpv at 0x200 (64 bytes)."""
WIDE_REGISTERS = 8
"""Registers a 64-byte value spans (measurements, challenges)."""


@dataclass(frozen=True, slots=True)
class RsiCondition:
    """One failure condition of an RSI command: spec label, status and the §12 row of TF-RMM-only ones."""

    id: str
    status: RsiStatus
    quirk: int | None = None


@dataclass(frozen=True, slots=True)
class RsiParam:
    """A register input or output: name, first register, and how many registers a wide value spans."""

    name: str
    reg: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class RsiCommand:
    """An RSI 1.0 command: FID, inputs and outputs by register, failure conditions in evaluation order."""

    name: str
    spec_name: str
    fid: int
    inputs: tuple[RsiParam, ...]
    outputs: tuple[RsiParam, ...]
    conditions: tuple[RsiCondition, ...] = ()
    exits: str | None = None
    """The REC exit reason a success causes (RIPAS_CHANGE, HOST_CALL), None if the RMM completes it."""

    def condition(self, cond_id: str) -> RsiCondition:
        """The condition with this id (KeyError if the command has none)."""
        for cond in self.conditions:
            if cond.id == cond_id:
                return cond
        raise KeyError(f"{self.spec_name} has no failure condition {cond_id!r}")


@dataclass(frozen=True)
class RsiInterface:
    """A version of RSI: its commands by name and by FID."""

    version: int
    commands: tuple[RsiCommand, ...]
    by_name: dict[str, RsiCommand] = field(init=False, repr=False)
    by_fid: dict[int, RsiCommand] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.commands})
        object.__setattr__(self, "by_fid", {c.fid: c for c in self.commands})


_IN = RsiStatus.ERROR_INPUT


def _p(name: str, reg: int, count: int = 1) -> RsiParam:
    return RsiParam(name, reg, count)


def _c(*ids: str) -> tuple[RsiCondition, ...]:
    return tuple(RsiCondition(i, _IN) for i in ids)


_EMPTY_PAGE = RsiCondition("tf_rmm_ripas_empty", _IN, quirk=16)
"""rmm-abi.md §12 #16: the page RSI must write has RIPAS EMPTY (the spec is silent; TF-RMM: INPUT)."""

VERSION = RsiCommand("version", "RSI_VERSION", 0xC4000190, (_p("req", 1),), (_p("lower", 1), _p("higher", 2)))
FEATURES = RsiCommand("features", "RSI_FEATURES", 0xC4000191, (_p("index", 1),), (_p("value", 1),))
MEASUREMENT_READ = RsiCommand(
    "measurement_read",
    "RSI_MEASUREMENT_READ",
    0xC4000192,
    (_p("index", 1),),
    (_p("value", 1, WIDE_REGISTERS),),
    _c("index_bound"),
)
MEASUREMENT_EXTEND = RsiCommand(
    "measurement_extend",
    "RSI_MEASUREMENT_EXTEND",
    0xC4000193,
    (_p("index", 1), _p("size", 2), _p("value", 3, WIDE_REGISTERS)),
    (),
    _c("index_bound", "size_bound"),
)
ATTESTATION_TOKEN_INIT = RsiCommand(
    "attestation_token_init",
    "RSI_ATTESTATION_TOKEN_INIT",
    0xC4000194,
    (_p("challenge", 1, WIDE_REGISTERS),),
    (_p("max_size", 1),),
)
ATTESTATION_TOKEN_CONTINUE = RsiCommand(
    "attestation_token_continue",
    "RSI_ATTESTATION_TOKEN_CONTINUE",
    0xC4000195,
    (_p("addr", 1), _p("offset", 2), _p("size", 3)),
    (_p("len", 1),),
    (
        *_c("addr_align", "offset_bound", "size_overflow", "size_bound", "addr_bound"),
        RsiCondition("state", RsiStatus.ERROR_STATE),
        _EMPTY_PAGE,
        RsiCondition("unknown", RsiStatus.ERROR_UNKNOWN),
    ),
)
REALM_CONFIG = RsiCommand(
    "realm_config",
    "RSI_REALM_CONFIG",
    0xC4000196,
    (_p("addr", 1),),
    (),
    (*_c("addr_align", "addr_bound"), _EMPTY_PAGE),
)
IPA_STATE_SET = RsiCommand(
    "ipa_state_set",
    "RSI_IPA_STATE_SET",
    0xC4000197,
    (_p("base", 1), _p("top", 2), _p("ripas", 3), _p("flags", 4)),
    (_p("new_base", 1), _p("response", 2)),
    _c("ripas_valid", "base_align", "top_align", "size_valid", "rgn_bound"),
    exits="ripas_change",
)
IPA_STATE_GET = RsiCommand(
    "ipa_state_get",
    "RSI_IPA_STATE_GET",
    0xC4000198,
    (_p("base", 1), _p("top", 2)),
    (_p("out_top", 1), _p("ripas", 2)),
    _c("base_align", "end_align", "size_valid", "rgn_bound"),
)
HOST_CALL = RsiCommand(
    "host_call",
    "RSI_HOST_CALL",
    0xC4000199,
    (_p("addr", 1),),
    (),
    (*_c("addr_align", "addr_bound"), _EMPTY_PAGE),
    exits="host_call",
)

RSI_1_0 = RsiInterface(
    version=RSI_VERSION_1_0,
    commands=(
        VERSION,
        FEATURES,
        MEASUREMENT_READ,
        MEASUREMENT_EXTEND,
        ATTESTATION_TOKEN_INIT,
        ATTESTATION_TOKEN_CONTINUE,
        REALM_CONFIG,
        IPA_STATE_SET,
        IPA_STATE_GET,
        HOST_CALL,
    ),
)
"""RSI 1.0 (RMM 1.0 B5.3): FIDs 0xC4000190..0xC4000199."""


@dataclass(frozen=True, slots=True)
class PsciCondition:
    """A PSCI failure the RMM detects itself, before any REC exit (rmm-abi.md §8)."""

    id: str
    result: PsciStatus


@dataclass(frozen=True, slots=True)
class PsciFunction:
    """A PSCI function as a Realm sees it: FIDs, inputs, whether it exits and needs RMI_PSCI_COMPLETE."""

    name: str
    fid: int
    fid32: int | None = None
    inputs: tuple[str, ...] = ()
    exits: bool = False
    needs_complete: bool = False
    conditions: tuple[PsciCondition, ...] = ()

    @property
    def fids(self) -> tuple[int, ...]:
        """Every FID of the function (SMC64 and, where it has one, SMC32)."""
        return (self.fid,) if self.fid32 is None else (self.fid, self.fid32)


PSCI_1_1: tuple[PsciFunction, ...] = (
    PsciFunction("version", 0x84000000),
    PsciFunction(
        "cpu_suspend", 0xC4000001, 0x84000001, ("power_state", "entry_point_address", "context_id"), True
    ),
    PsciFunction("cpu_off", 0x84000002, exits=True),
    PsciFunction(
        "cpu_on",
        0xC4000003,
        0x84000003,
        ("target_cpu", "entry_point_address", "context_id"),
        exits=True,
        needs_complete=True,
        conditions=(
            PsciCondition("entry", PsciStatus.INVALID_ADDRESS),
            PsciCondition("mpidr", PsciStatus.INVALID_PARAMETERS),
            PsciCondition("runnable", PsciStatus.ALREADY_ON),
        ),
    ),
    PsciFunction(
        "affinity_info",
        0xC4000004,
        0x84000004,
        ("target_affinity", "lowest_affinity_level"),
        exits=True,
        needs_complete=True,
        conditions=(
            PsciCondition("target_bound", PsciStatus.INVALID_PARAMETERS),
            PsciCondition("target_match", PsciStatus.INVALID_PARAMETERS),
        ),
    ),
    PsciFunction("system_off", 0x84000008, exits=True),
    PsciFunction("system_reset", 0x84000009, exits=True),
    PsciFunction("features", 0x8400000A, inputs=("psci_func_id",)),
)
"""PSCI 1.1 functions the RMM implements for Realms (rmm-abi.md §8, SMC conduit only)."""

PSCI_RANGES = ((0x8400_0000, 0x8400_001F), (0xC400_0000, 0xC400_001F))
"""SMC32 and SMC64 PSCI function numbers 0x00..0x1F (SMCCC Standard Secure Service, PSCI range)."""


def psci_function(fid: int) -> PsciFunction | None:
    """The PSCI function with this FID (either width), None for one the RMM does not implement."""
    for function in PSCI_1_1:
        if fid in function.fids:
            return function
    return None


def is_psci(fid: int) -> bool:
    """True when ``fid`` lies in the PSCI range (implemented or not)."""
    return any(low <= fid <= high for low, high in PSCI_RANGES)


def psci_features_supported() -> frozenset[int]:
    """FIDs PSCI_FEATURES reports as implemented (TF-RMM's list: not PSCI_VERSION itself; §8)."""
    fids: set[int] = {SMCCC_VERSION_FID}
    for function in PSCI_1_1:
        if function.name != "version":
            fids.update(function.fids)
    return frozenset(fids)


def wide_to_registers(value: bytes, count: int = WIDE_REGISTERS) -> tuple[int, ...]:
    """A byte string as little-endian doublewords over ``count`` registers, zero-padded (RMM 1.0 B5.3)."""
    if len(value) > 8 * count:
        raise ValueError(f"{len(value)} bytes do not fit {count} registers")
    padded = value.ljust(8 * count, b"\0")
    return tuple(int.from_bytes(padded[8 * i : 8 * i + 8], "little") for i in range(count))


def registers_to_wide(registers: Iterable[int]) -> bytes:
    """The byte string a run of registers holds, as little-endian doublewords (inverse of the above)."""
    return b"".join((r & MASK64).to_bytes(8, "little") for r in registers)


def output_registers(command: RsiCommand, registers: Sequence[int]) -> dict[str, int | bytes]:
    """The outputs of ``command`` from X0.. (wide outputs as bytes)."""
    out: dict[str, int | bytes] = {}
    for param in command.outputs:
        regs = registers[param.reg : param.reg + param.count]
        out[param.name] = registers_to_wide(regs) if param.count > 1 else regs[0]
    return out
