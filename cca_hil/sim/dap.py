"""A simulated SWD debug port with MEM-APs; pyOCD drives it through the ``ccasim`` probe plugin.

The simulation sits below pyOCD's DAP layer: pyOCD's own ``DebugPort`` and
``MEM_AP`` code writes DP SELECT, CSW and TAR and streams DRW exactly as it does
with a CMSIS-DAP probe, and the simulated debug port answers like an ADIv5.2
DPv2 SW-DP (IHI0031 B2) with MEM-APs (IHI0031 C2): CSW size, auto-increment and
bus attributes, TAR auto-increment that wraps inside a 1 KiB block, sticky
errors after a FAULT acknowledge, cleared through ABORT.

Behind each system MEM-AP sits a :class:`~cca_hil.model.memory.PhysicalMemory`
(usually the model's). The access's PAS comes from the CSW bus attributes
(AxPROT[1] on an AXI-AP, HNONSEC on an AHB-AP), so a MEM-AP reaches the Secure or
the Non-secure PAS only; with a granule protection check attached (the model's
``gpt.check``) an access that the GPT does not allow ends in a FAULT, as a
granule protection fault on the interconnect would.

Probes are found the way pyOCD finds USB probes — by enumeration — so a
simulated probe must be *plugged in*: :func:`plugged` makes :class:`SimDap`
devices visible for a ``with`` block, and ``CCA_HIL_SIM_PROBES=ID[,ID…]`` makes
probes backed by a fresh model visible to any process (``pyocd list``, the CLI).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cca_hil.arch.pas import Pas
from cca_hil.model.memory import PhysicalMemory

if TYPE_CHECKING:
    from cca_hil.model.machine import Machine

PLUGIN_NAME = "ccasim"
"""pyOCD probe-type name; ``ccasim:ID`` selects a simulated probe explicitly."""
ENV_PROBES = "CCA_HIL_SIM_PROBES"
"""Comma-separated unique ids of model-backed simulated probes every process sees."""

# DP register addresses as the probe sees them (A[3:2]); 0x4 is banked by SELECT.DPBANKSEL.
DP_IDR_ABORT = 0x0
DP_CTRL_STAT = 0x4
DP_SELECT = 0x8
DP_RDBUFF = 0xC

DPIDR = 0x6BA0_2477
"""SW-DP, DPv2 (ADIv5.2), designer Arm (JEP106 0x23B)."""

ABORT_STKCMPCLR = 1 << 1
ABORT_STKERRCLR = 1 << 2
ABORT_WDERRCLR = 1 << 3
ABORT_ORUNERRCLR = 1 << 4
CTRL_STICKYORUN = 1 << 1
CTRL_STICKYCMP = 1 << 4
CTRL_STICKYERR = 1 << 5
CTRL_WDATAERR = 1 << 7
CTRL_CDBGPWRUPREQ = 1 << 28
CTRL_CDBGPWRUPACK = 1 << 29
CTRL_CSYSPWRUPREQ = 1 << 30
CTRL_CSYSPWRUPACK = 1 << 31

# MEM-AP registers (IHI0031 C2.6).
AP_CSW = 0x00
AP_TAR = 0x04
AP_TAR_HI = 0x08
AP_DRW = 0x0C
AP_BD0 = 0x10
AP_BD3 = 0x1C
AP_BASE_HI = 0xF0
AP_CFG = 0xF4
AP_BASE = 0xF8
AP_IDR = 0xFC

CSW_SIZE_MASK = 0x7
CSW_ADDRINC_MASK = 0x30
CSW_ADDRINC_SINGLE = 0x10
CSW_DEVICEEN = 1 << 6
CSW_DOMAIN_MASK = 0x6000
CSW_SDEVICEEN = 1 << 23
CSW_PROT_MASK = 0x7F00_0000
CSW_AXI_NS = 1 << 29
"""AXI-AP CSW.Prot[1] drives AxPROT[1]: set for a Non-secure transaction."""
CSW_AHB_HNONSEC = 1 << 30
CSW_DBGSWENABLE = 1 << 31

BASE_NOT_PRESENT = 0xFFFF_FFFF
"""Legacy BASE value meaning "no debug entry" — the sim has no ROM table."""

ApKind = Literal["axi", "ahb", "apb"]

# IDR: JEP106 Arm (0x23B) in [27:17], class MEM-AP (0x8) in [16:13], type in [3:0] (IHI0031 C2.6.7).
_IDR_BASE = (0x23B << 17) | (0x8 << 13)
_IDR_TYPE: dict[ApKind, int] = {"ahb": 0x1, "apb": 0x2, "axi": 0x4}
_WRITABLE_CSW: dict[ApKind, int] = {
    "axi": CSW_SIZE_MASK | CSW_ADDRINC_MASK | CSW_DOMAIN_MASK | CSW_PROT_MASK | CSW_DBGSWENABLE,
    "ahb": CSW_SIZE_MASK | CSW_ADDRINC_MASK | 0x0F00_0000 | CSW_AHB_HNONSEC | CSW_DBGSWENABLE,
    "apb": CSW_SIZE_MASK | CSW_ADDRINC_MASK | CSW_DBGSWENABLE,
}

GpcCheck = Callable[[int, Pas], bool]
"""``check(pa, access_pas)`` → True when the granule protection check passes (``Machine.gpt.check``)."""


@dataclass
class DapCounters:
    """DAP register transactions seen on the wire, one per register access (each DRW beat counts)."""

    dp_reads: int = 0
    dp_writes: int = 0
    ap_reads: int = 0
    ap_writes: int = 0
    faults: int = 0

    @property
    def total(self) -> int:
        """All DP and AP register transactions."""
        return self.dp_reads + self.dp_writes + self.ap_reads + self.ap_writes

    def reset(self) -> None:
        """Start counting from zero."""
        self.dp_reads = self.dp_writes = self.ap_reads = self.ap_writes = self.faults = 0


class DapNoAck(Exception):
    """No acknowledge at all: nothing answers on the wire (the target is unpowered or unplugged)."""


class DapFault(Exception):
    """A FAULT acknowledge on the wire; ``address`` is the bus error's address when one caused it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.address: int | None = None


class _MemFault(Exception):
    """A bus error at ``address``; becomes a FAULT acknowledge and a sticky error."""

    def __init__(self, address: int, *, beats: int = 0) -> None:
        super().__init__(f"bus error at {address:#x}")
        self.address = address
        self.beats = beats
        """Beats of a block transfer that completed before the faulting one."""


class SimMemAp:
    """One MEM-AP: CSW, TAR, DRW, BD0-3, CFG, BASE, IDR, in front of a physical memory."""

    def __init__(
        self,
        kind: ApKind,
        memory: PhysicalMemory,
        *,
        gpc: GpcCheck | None = None,
        secure_debug: bool = True,
        faults: Sequence[tuple[int, int]] = (),
        rom: Sequence[tuple[int, int]] = (),
        wrap: int = 0x400,
    ) -> None:
        self.kind: ApKind = kind
        self.memory = memory
        self.gpc = gpc
        self.secure_debug = secure_debug
        self.faults: list[tuple[int, int]] = list(faults)
        self.rom: list[tuple[int, int]] = list(rom)
        """Ranges that accept writes without error but keep their contents (ROM on an AXI port)."""
        self.wrap = wrap
        self.idr = _IDR_BASE | _IDR_TYPE[kind]
        self._writable = _WRITABLE_CSW[kind]
        # Reset value: word size, single increment; the bus attributes a debugger sees first.
        self.csw = 0x2 | CSW_ADDRINC_SINGLE
        self.tar = 0

    # -- registers ---------------------------------------------------------

    def read_csw(self) -> int:
        """CSW with its read-only status bits."""
        status = CSW_DEVICEEN | (CSW_SDEVICEEN if self.secure_debug else 0)
        return self.csw | status

    def write_csw(self, value: int) -> None:
        """Update the writable CSW fields; an unsupported size reads back as word (ADIv6 C2.6.2)."""
        value &= self._writable
        if value & CSW_SIZE_MASK > 2:
            value = (value & ~CSW_SIZE_MASK) | 2
        if value & CSW_ADDRINC_MASK > CSW_ADDRINC_SINGLE:
            # Packed transfers are not implemented: the field keeps single increment.
            value = (value & ~CSW_ADDRINC_MASK) | CSW_ADDRINC_SINGLE
        self.csw = value

    @property
    def transfer_bytes(self) -> int:
        """Bytes per DRW beat (CSW.Size)."""
        return 1 << (self.csw & CSW_SIZE_MASK)

    @property
    def increments(self) -> bool:
        """True when TAR auto-increments after each DRW beat."""
        return self.csw & CSW_ADDRINC_MASK == CSW_ADDRINC_SINGLE

    @property
    def pas(self) -> Pas | None:
        """The PAS of the next transaction from the CSW attributes (None: the debug APB, no PAS)."""
        if self.kind == "axi":
            return Pas.NONSECURE if self.csw & CSW_AXI_NS else Pas.SECURE
        if self.kind == "ahb":
            return Pas.NONSECURE if self.csw & CSW_AHB_HNONSEC else Pas.SECURE
        return None

    def advance(self, count: int) -> None:
        """Auto-increment TAR by ``count`` bytes; only the bits below the wrap size change."""
        low = self.wrap - 1
        self.tar = (self.tar & ~low) | ((self.tar + count) & low)

    # -- memory ---------------------------------------------------------------

    def first_fault(self, address: int, size: int) -> int | None:
        """The first address of ``[address, address+size)`` whose access would take a bus error."""
        first: int | None = None
        end = address + size
        for base, length in self.faults:
            if base < end and address < base + length:
                hit = max(base, address)
                first = hit if first is None else min(first, hit)
        pas = self.pas
        if pas is Pas.SECURE and not self.secure_debug:
            return address
        if pas is not None and self.gpc is not None:
            granule = address & ~0xFFF
            while granule < end and (first is None or granule < first):
                if not self.gpc(granule, pas):
                    hit = max(granule, address)
                    first = hit if first is None else min(first, hit)
                    break
                granule += 0x1000
        return first

    def store(self, address: int, data: bytes) -> None:
        """Write to memory, except the bytes that fall in ROM ranges."""
        if not self.rom:
            self.memory.write(address, data)
            return
        end = address + len(data)
        kept = {
            base: self.memory.read(base, size)
            for base, size in self.rom
            if base < end and address < base + size
        }
        self.memory.write(address, data)
        for base, content in kept.items():
            self.memory.write(base, content)

    def beat_write(self, value: int) -> None:
        """One DRW write at TAR with the CSW size, data on its byte lanes."""
        size = self.transfer_bytes
        address = self.tar & ~(size - 1)
        if (fault := self.first_fault(address, size)) is not None:
            raise _MemFault(fault)
        lane = address & 3 if size < 4 else 0
        self.store(address, ((value >> (8 * lane)) & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
        if self.increments:
            self.advance(size)

    def beat_read(self) -> int:
        """One DRW read at TAR with the CSW size, the data on its byte lanes."""
        size = self.transfer_bytes
        address = self.tar & ~(size - 1)
        if (fault := self.first_fault(address, size)) is not None:
            raise _MemFault(fault)
        lane = address & 3 if size < 4 else 0
        value = int.from_bytes(self.memory.read(address, size), "little") << (8 * lane)
        if self.increments:
            self.advance(size)
        return value

    def block_write(self, data: bytes) -> None:
        """A run of word beats with auto-increment, a wrap block at a time (the fast path)."""
        done = 0
        while done < len(data):
            address = self.tar & ~3
            chunk = min(len(data) - done, self.wrap - (address & (self.wrap - 1)))
            fault = self.first_fault(address, chunk)
            if fault is not None:
                good = (fault - address) & ~3
                self.store(address, data[done : done + good])
                self.advance(good)
                raise _MemFault(fault, beats=(done + good) // 4)
            self.store(address, data[done : done + chunk])
            self.advance(chunk)
            done += chunk

    def block_read(self, size: int) -> bytes:
        """Word beats with auto-increment totalling ``size`` bytes (the fast path)."""
        out = bytearray()
        while len(out) < size:
            address = self.tar & ~3
            chunk = min(size - len(out), self.wrap - (address & (self.wrap - 1)))
            fault = self.first_fault(address, chunk)
            if fault is not None:
                good = (fault - address) & ~3
                self.advance(good)
                raise _MemFault(fault, beats=(len(out) + good) // 4)
            out += self.memory.read(address, chunk)
            self.advance(chunk)
        return bytes(out)

    def read_reg(self, reg: int) -> int:
        """An AP register read (``reg`` = APBANKSEL | A[3:2])."""
        if reg == AP_CSW:
            return self.read_csw()
        if reg == AP_TAR:
            return self.tar
        if reg == AP_DRW:
            return self.beat_read()
        if AP_BD0 <= reg <= AP_BD3:
            address = (self.tar & ~0xF) + (reg - AP_BD0)
            if (fault := self.first_fault(address, 4)) is not None:
                raise _MemFault(fault)
            return int.from_bytes(self.memory.read(address, 4), "little")
        if reg == AP_BASE:
            return BASE_NOT_PRESENT
        if reg == AP_IDR:
            return self.idr
        # TAR_HI, BASE_HI, CFG (no large address or data extensions) and unimplemented registers.
        return 0

    def write_reg(self, reg: int, value: int) -> None:
        """An AP register write."""
        if reg == AP_CSW:
            self.write_csw(value)
        elif reg == AP_TAR:
            self.tar = value & 0xFFFF_FFFF
        elif reg == AP_DRW:
            self.beat_write(value)
        elif AP_BD0 <= reg <= AP_BD3:
            address = (self.tar & ~0xF) + (reg - AP_BD0)
            if (fault := self.first_fault(address, 4)) is not None:
                raise _MemFault(fault)
            self.store(address, (value & 0xFFFF_FFFF).to_bytes(4, "little"))


class SimDap:
    """The target side of a SW-DP: DP registers, MEM-APs by APSEL, reset line and transaction counters."""

    def __init__(
        self,
        unique_id: str,
        aps: Sequence[SimMemAp] | None = None,
        *,
        memory: PhysicalMemory | None = None,
        gpc: GpcCheck | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        if ":" in unique_id:
            raise ValueError(f"unique id {unique_id!r}: ':' separates pyOCD's probe type from the id")
        self.unique_id = unique_id
        if aps is None:
            # A typical A-profile debug system: system memory behind an AXI-AP, the debug APB behind AP1.
            system = memory if memory is not None else PhysicalMemory()
            aps = (SimMemAp("axi", system, gpc=gpc), SimMemAp("apb", PhysicalMemory()))
        self.aps: tuple[SimMemAp, ...] = tuple(aps)
        self.on_reset = on_reset
        self.counters = DapCounters()
        self.resets = 0
        self.reset_asserted = False
        self.powered = True
        """False: the target is unpowered and no DP answers (every access gets no ACK)."""
        self._select = 0
        self._ctrl_stat = 0
        self._rdbuff = 0
        self._lock = threading.Lock()

    @classmethod
    def for_machine(cls, unique_id: str, machine: Machine) -> SimDap:
        """A probe on the model: the AXI-AP reaches ``machine.memory`` through its GPT check.

        The check is looked up at each access: a reset of the machine builds its GPT anew.
        """

        def gpc(pa: int, pas: Pas) -> bool:
            return machine.gpt.check(pa, pas)  # not bound once: a reset builds a new GPT

        return cls(unique_id, memory=machine.memory, gpc=gpc)

    @property
    def memory(self) -> PhysicalMemory:
        """The memory behind AP0."""
        return self.aps[0].memory

    def add_fault(self, base: int, size: int, *, ap: int = 0) -> None:
        """Make every access to ``[base, base+size)`` through AP ``ap`` take a bus error."""
        self.aps[ap].faults.append((base, size))

    def add_rom(self, base: int, size: int, *, ap: int = 0) -> None:
        """Make ``[base, base+size)`` behind AP ``ap`` ignore writes (they complete, the contents stay)."""
        self.aps[ap].rom.append((base, size))

    # -- DP --------------------------------------------------------------------

    def _check_powered(self) -> None:
        if not self.powered:
            raise DapNoAck("no ACK from the target (not powered?)")

    def read_dp(self, addr: int) -> int:
        """A DP register read."""
        with self._lock:
            self.counters.dp_reads += 1
            self._check_powered()
            if addr == DP_IDR_ABORT:
                return DPIDR
            if addr == DP_CTRL_STAT:
                if self._select & 0xF:
                    return 0  # DLCR, TARGETID, DLPIDR, EVENTSTAT: nothing to report
                acks = (self._ctrl_stat & (CTRL_CDBGPWRUPREQ | CTRL_CSYSPWRUPREQ)) << 1
                return self._ctrl_stat | acks
            if addr == DP_RDBUFF:
                return self._rdbuff
            return 0

    def write_dp(self, addr: int, value: int) -> None:
        """A DP register write."""
        with self._lock:
            self.counters.dp_writes += 1
            self._check_powered()
            if addr == DP_IDR_ABORT:
                clear = 0
                if value & ABORT_STKERRCLR:
                    clear |= CTRL_STICKYERR
                if value & ABORT_STKCMPCLR:
                    clear |= CTRL_STICKYCMP
                if value & ABORT_ORUNERRCLR:
                    clear |= CTRL_STICKYORUN
                if value & ABORT_WDERRCLR:
                    clear |= CTRL_WDATAERR
                self._ctrl_stat &= ~clear
            elif addr == DP_CTRL_STAT and not self._select & 0xF:
                sticky = CTRL_STICKYERR | CTRL_STICKYCMP | CTRL_STICKYORUN | CTRL_WDATAERR
                self._ctrl_stat = (self._ctrl_stat & sticky) | (value & ~sticky & ~0xA000_0000)
            elif addr == DP_SELECT:
                self._select = value & 0xFFFF_FFFF

    # -- AP ----------------------------------------------------------------------

    def _ap(self) -> tuple[SimMemAp | None, int]:
        apsel = self._select >> 24
        reg = self._select & 0xF0
        return (self.aps[apsel] if apsel < len(self.aps) else None), reg

    def _fault_ack(self) -> DapFault:
        self.counters.faults += 1
        return DapFault("FAULT acknowledge (CTRL/STAT.STICKYERR set)")

    def _check_ap_access(self) -> None:
        self._check_powered()
        # Once STICKYERR is set every AP access is refused until ABORT clears it (IHI0031 B4.2.5).
        if self._ctrl_stat & CTRL_STICKYERR:
            raise self._fault_ack()

    def _bus_error(self, error: _MemFault) -> DapFault:
        self._ctrl_stat |= CTRL_STICKYERR
        fault = self._fault_ack()
        fault.address = error.address
        return fault

    def read_ap(self, addr: int) -> int:
        """An AP register read through the AP and bank DP SELECT names."""
        with self._lock:
            self.counters.ap_reads += 1
            self._check_ap_access()
            ap, bank = self._ap()
            if ap is None:
                self._rdbuff = 0
                return 0
            try:
                self._rdbuff = ap.read_reg(bank | (addr & 0xC))
            except _MemFault as error:
                raise self._bus_error(error) from None
            return self._rdbuff

    def write_ap(self, addr: int, value: int) -> None:
        """An AP register write."""
        with self._lock:
            self.counters.ap_writes += 1
            self._check_ap_access()
            ap, bank = self._ap()
            if ap is None:
                return
            try:
                ap.write_reg(bank | (addr & 0xC), value)
            except _MemFault as error:
                raise self._bus_error(error) from None

    def write_ap_multiple(self, addr: int, values: Sequence[int]) -> None:
        """Repeated writes of one AP register; a DRW word stream goes through the block path."""
        with self._lock:
            self._check_ap_access()
            ap, bank = self._ap()
            reg = bank | (addr & 0xC)
            if ap is not None and reg == AP_DRW and ap.transfer_bytes == 4 and ap.increments:
                data = struct.pack(f"<{len(values)}I", *values)
                try:
                    ap.block_write(data)
                except _MemFault as error:
                    # Beats up to the faulting one went on the wire; the probe stops at the FAULT.
                    self.counters.ap_writes += error.beats + 1
                    raise self._bus_error(error) from None
                self.counters.ap_writes += len(values)
                return
        for value in values:
            self.write_ap(addr, value)

    def read_ap_multiple(self, addr: int, count: int) -> list[int]:
        """Repeated reads of one AP register; a DRW word stream goes through the block path."""
        with self._lock:
            self._check_ap_access()
            ap, bank = self._ap()
            reg = bank | (addr & 0xC)
            if ap is not None and reg == AP_DRW and ap.transfer_bytes == 4 and ap.increments:
                try:
                    data = ap.block_read(4 * count)
                except _MemFault as error:
                    self.counters.ap_reads += error.beats + 1
                    raise self._bus_error(error) from None
                self.counters.ap_reads += count
                words = list(struct.unpack(f"<{count}I", data))
                if words:
                    self._rdbuff = words[-1]
                return words
        return [self.read_ap(addr) for _ in range(count)]

    # -- reset line ------------------------------------------------------------------

    def system_reset(self) -> None:
        """Pulse nRESET: the system resets, the debug port and memory contents stay."""
        self.resets += 1
        if self.on_reset is not None:
            self.on_reset()


# A simulated device must be discoverable through pyOCD's class-method enumeration, which
# takes no arguments; a context variable is the scoped "USB bus" the plugged devices sit on.
_PLUGGED: ContextVar[tuple[SimDap, ...]] = ContextVar("cca_hil_sim_plugged_daps", default=())


@contextmanager
def plugged(*daps: SimDap) -> Iterator[tuple[SimDap, ...]]:
    """Make ``daps`` visible to pyOCD's probe enumeration for the duration of the block."""
    token = _PLUGGED.set(_PLUGGED.get() + daps)
    try:
        yield daps
    finally:
        _PLUGGED.reset(token)


def _env_daps() -> list[SimDap]:
    ids = [part.strip() for part in os.environ.get(ENV_PROBES, "").split(",") if part.strip()]
    if not ids:
        return []
    from cca_hil.model.machine import Machine

    daps = []
    for uid in ids:
        machine = Machine()
        daps.append(SimDap.for_machine(uid, machine))
    return daps


def connected_daps() -> list[SimDap]:
    """Every simulated debug port currently visible: plugged ones, then those named by the environment."""
    plugged_now = list(_PLUGGED.get())
    seen = {dap.unique_id for dap in plugged_now}
    return plugged_now + [dap for dap in _env_daps() if dap.unique_id not in seen]
