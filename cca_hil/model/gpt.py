"""The model's Granule Protection Table: architectural bytes in Root memory, checked on every access.

DDI0487 D9. At boot EL3 builds the GPT in model memory with
:func:`cca_hil.arch.gpt.build_tables` — the layout TF-A's GPT library produces
(rme-gpt-mec.md §6.1–6.3: L0 table where GPTBR_EL3 points, L1 tables handed
out from the Root L1-GPT carve-out, DRAM regions mapped through L1 tables so
they can change PAS) — and programs GPCCR_EL3/GPTBR_EL3 to match. Every check
is decided by :func:`cca_hil.arch.gpt.granule_protection_check` over those
bytes, read through the Root PAS (GPT fetches are Root accesses, R_THJVJ).

Like a TLB (DDI0487 D9.5, §4.8), the model keeps what a walk found per granule
and reuses it until a TLBI by PA covering that granule (or TLBI PAALLOS)
throws it away; a GPT write without its TLBI is therefore observable, as on
hardware. Walk faults are not kept (only valid, reachable entries may be
cached, I_JMYRB).

The table surgery EL3 performs on a transition (shatter a Contiguous
descriptor, rewrite one GPI, fuse back) lives here as mechanisms; the order in
which TF-A applies them, with its maintenance, is the monitor's
(``model/monitor.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Final

from cca_hil.arch.gpt import (
    Gpccr,
    Gpi,
    Gptbr,
    GptConfigError,
    GptFault,
    GptFaultKind,
    GptFeatures,
    GptFetchAbort,
    PasMap,
    PasRegion,
    WalkResult,
    build_tables,
    decode_tables,
    granule_protection_check,
    valid_gpis,
    walk,
)
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.model.memory import ROOT, MemoryStore
from cca_hil.targets.base import MemoryRegion

_SHIFT: Final = 12
_GPI_ACCESS: Final = {
    Gpi.NONSECURE: Pas.NONSECURE,
    Gpi.REALM: Pas.REALM,
    Gpi.SECURE: Pas.SECURE,
    Gpi.ROOT: Pas.ROOT,
}
"""GPIs that admit exactly one PAS, whatever the requester (J1 GPICheck)."""
_GPI_BY_VALUE: Final = tuple(Gpi(v) if v in Gpi._value2member_map_ else None for v in range(16))
_L0_TABLE_ADDRESS: Final = ((1 << 52) - 1) & ~0xFFF
_UNIFORM: Final = 0x1111_1111_1111_1111
_CONTIG_BYTES: Final = (0, 2 << 20, 32 << 20, 512 << 20)
"""Bytes of a Contiguous block by its Contig field (0b00 is reserved)."""

_Blocks = tuple[tuple[bytes, ...], tuple[bytes, ...]]
L1Slot = tuple[memoryview, memoryview, int]
"""Where EL3 edits one L1 entry: the table as bytes, the same table as 64-bit descriptors, the index."""


def gpt_layout(regions: Iterable[MemoryRegion]) -> list[PasRegion]:
    """The PAS layout EL3 programs: every region that is not All-access, mapped through L1 tables.

    TF-A maps its DRAM and carve-outs with GPT_MAP_REGION_GRANULE (fvp_pas_def.h),
    so that any granule may later change PAS; address space left out stays GPI
    All-access, as TF-A's L0 defaults.
    """
    return [PasRegion(r.base, r.end, r.pas, l1=True) for r in regions if r.pas is not Pas.ANY]


class GranuleProtection:
    """GPCCR_EL3, GPTBR_EL3 and the GPT in model memory; the granule protection check (DDI0487 D9)."""

    __slots__ = (
        "_block_entries",
        "_blocks_by_gpi",
        "_boot",
        "_cache",
        "_disabled",
        "_geometry",
        "_l0_base",
        "_l0_entry_shift",
        "_l0_index_mask",
        "_l0_map",
        "_l1_index_mask",
        "_l1_set",
        "_l1_size",
        "_memory",
        "_pgs",
        "_pps_bits",
        "_region_bases",
        "_regions",
        "_tables",
        "_usual",
        "_valid",
        "_valid_descriptors",
        "_views_epoch",
        "features",
        "gpccr",
        "gptbr",
        "l1_tables",
        "walks",
    )

    def __init__(
        self,
        *,
        memory: MemoryStore,
        regions: Iterable[MemoryRegion],
        gpccr: Gpccr,
        gptbr: Gptbr,
        l1_base: int,
        features: GptFeatures | None = None,
    ) -> None:
        features = features if features is not None else GptFeatures()
        self._memory = memory
        self._regions = sorted(regions, key=lambda r: r.base)
        self._region_bases = [r.base for r in self._regions]
        self.gpccr = gpccr
        self.gptbr = gptbr
        self.features = features
        self._geometry = geometry = gpccr.geometry
        self._l0_base = gptbr.l0_address
        # Index arithmetic as plain ints: these run on every TLB miss and every transition.
        self._pgs = geometry.pgs_bits
        self._l0_entry_shift = geometry.l0gptsz_bits
        self._l0_index_mask = geometry.protected_size - 1
        self._l1_index_mask = geometry.l0_region_size - 1
        self._l1_size = geometry.l1_table_size
        self._pps_bits = geometry.pps_bits
        tables = build_tables(gpt_layout(self._regions), gpccr=gpccr, gptbr=gptbr, l1_base=l1_base)
        for address, data in tables.items():
            if not self._in_memory(address, len(data)):
                raise GptConfigError(
                    f"GPT table [{address:#x}, {address + len(data):#x}) lies outside the platform's memory",
                    where="model GPT layout",
                )
            memory.write(address, data, ROOT)
        self._boot = {a: bytes(d) for a, d in tables.items() if a != self._l0_base}
        self.l1_tables: tuple[int, ...] = tuple(sorted(self._boot))
        """PAs of the L1 tables EL3 built, in PA order."""
        self._l1_set = frozenset(self.l1_tables)
        self._l0_map = -(-self._geometry.l0_table_size // GRANULE_SIZE) * GRANULE_SIZE
        # GPC2 PAS-disable bits: accesses to these PAS fault at level 0 whatever the tables say.
        self._disabled = frozenset(
            pas
            for pas, bit in ((Pas.SECURE, gpccr.spad), (Pas.NONSECURE, gpccr.nspad), (Pas.REALM, gpccr.rlpad))
            if bit
        )
        self._valid = frozenset(gpi.value for gpi in valid_gpis(gpccr, features))
        # The configuration _fill handles: GPC on, no GDI pairs, a well-placed L0 table.
        self._usual = (
            gpccr.gpc
            and not features.gdi
            and not self._l0_base >> geometry.pps_bits
            and not self._l0_base & (geometry.l0_alignment - 1)
        )
        self._valid_descriptors: dict[int, bool] = {}
        self._block_entries = tuple(size >> (self._pgs + 4) for size in _CONTIG_BYTES)
        """L1 descriptors in a block, by Contig field (2 MB: 32 with 4 KB granules)."""
        self._blocks_by_gpi: dict[int, _Blocks] = {}
        self._cache: dict[int, tuple[Gpi, int]] = {}
        self._tables: dict[int, tuple[memoryview, memoryview]] = {}
        self._views_epoch = -1
        self.walks = 0
        """GPT walks performed (TLB misses)."""

    # -- memory ----------------------------------------------------------------------

    def _in_memory(self, pa: int, size: int = 1) -> bool:
        i = bisect.bisect_right(self._region_bases, pa) - 1
        return i >= 0 and pa + size <= self._regions[i].end

    def region_of(self, pa: int) -> MemoryRegion | None:
        """The platform region holding ``pa`` (None: no memory or device answers there)."""
        i = bisect.bisect_right(self._region_bases, pa) - 1
        if i >= 0 and pa < self._regions[i].end:
            return self._regions[i]
        return None

    def _table(self, base: int, size: int) -> tuple[memoryview, memoryview]:
        """EL3's Root mapping of one table, as bytes and as 64-bit descriptors; kept while the store says
        its mappings hold.

        The descriptor view is the same memory cast to ``Q`` (native order: hosts are little-endian, as
        the table bytes), so reading or writing one descriptor is a single indexing operation.
        """
        if self._views_epoch != self._memory.map_epoch:
            # Some table granule was replaced since: map every table afresh.
            self._tables.clear()
            self._views_epoch = self._memory.map_epoch
        found = self._tables.get(base)
        if found is None:
            view = self._memory.map(base, size, ROOT)
            found = self._tables[base] = (view, view.cast("Q"))
            self._views_epoch = self._memory.map_epoch
        return found

    def _view(self, base: int, size: int) -> memoryview:
        """EL3's Root mapping of one table (bytes)."""
        return self._table(base, size)[0]

    def _table_view(self, pa: int) -> tuple[memoryview, int] | None:
        """EL3's mapping of the table holding ``pa`` and the offset of ``pa`` in it (None: not a table)."""
        l0 = self._l0_base
        if l0 <= pa < l0 + self._l0_map:
            return self._view(l0, self._l0_map), pa - l0
        size = self._l1_size
        base = pa & ~(size - 1)
        if base in self._l1_set:
            return self._view(base, size), pa - base
        return None

    def read64(self, pa: int) -> int:
        """A GPT fetch: 64 bits at ``pa`` through the Root PAS, not itself checked (R_THJVJ)."""
        found = self._table_view(pa) if not pa & 7 else None
        if found is not None:
            view, offset = found
            return int.from_bytes(view[offset : offset + 8], "little")
        if not self._in_memory(pa, 8):
            raise GptFetchAbort(pa)
        return int.from_bytes(self._memory.read(pa, 8, ROOT), "little")

    # -- the check ---------------------------------------------------------------------

    def walk(self, pa: int) -> WalkResult:
        """An uncached walk of the tables as they are in memory now (DDI0487 J1 GPTWalk)."""
        return walk(pa, gpccr=self.gpccr, gptbr=self.gptbr, read64=self.read64, features=self.features)

    def _fill(self, pa: int) -> tuple[Gpi, int] | None:
        """The TLB fill for ``pa`` when the walk takes its usual path; None for anything else.

        Mirrors :func:`cca_hil.arch.gpt.walk` for GPC on, a PA below the PPS and valid
        descriptors, without building descriptor objects; everything else (faults,
        GDI pairs, reserved encodings) is left to the architectural walk.
        Property-tested against it (tests/model/test_gpt_model.py).
        """
        if not self._usual or pa >> self._pps_bits:
            return None
        # _table() inlined for the mappings already made (this runs on every TLB miss).
        tables = self._tables if self._views_epoch == self._memory.map_epoch else None
        found = tables.get(self._l0_base) if tables is not None else None
        if found is None:
            found = self._table(self._l0_base, self._l0_map)
        l0 = found[1][(pa & self._l0_index_mask) >> self._l0_entry_shift]
        kind = l0 & 0xF
        if kind == 0b0001:
            gpi = _GPI_BY_VALUE[l0 >> 4 & 0xF]
            if l0 >> 8 or gpi is None or gpi not in self._valid:
                return None
            return gpi, 0
        table = l0 & _L0_TABLE_ADDRESS
        if kind != 0b0011 or l0 >> 52 or l0 & 0xFF0 or table not in self._l1_set:
            return None  # the tables EL3 built are aligned and below the PPS
        found = tables.get(table) if tables is not None else None
        if found is None:
            found = self._table(table, self._l1_size)
        value = found[1][(pa & self._l1_index_mask) >> (self._pgs + 4)]
        if value & 0xF == 0b0001:
            gpi = _GPI_BY_VALUE[value >> 4 & 0xF]
            if value >> 10 or not value >> 8 & 0b11 or gpi is None or gpi not in self._valid:
                return None
            return gpi, 1
        valid = self._valid_descriptors.get(value)
        if valid is None:
            if len(self._valid_descriptors) >= 4096:
                self._valid_descriptors.clear()
            valid = all(value >> (4 * i) & 0xF in self._valid for i in range(16))
            self._valid_descriptors[value] = valid
        if not valid:
            return None
        gpi = _GPI_BY_VALUE[value >> (4 * (pa >> self._pgs & 0xF)) & 0xF]
        assert gpi is not None  # every field was checked valid
        return gpi, 1

    def fault(self, pa: int, access: Pas, requester: Pas | None = None) -> GptFault | None:
        """The granule protection check of an access to (``pa``, ``access``); None when it passes (D9.1)."""
        cached = self._cache.get(pa >> _SHIFT)
        if cached is None:
            self.walks += 1
            cached = self._fill(pa)
            if cached is None:
                # The unusual cases are decided by the architecture's own check, walk and all.
                result = self.walk(pa)
                if result.gpi is not None:
                    self._cache[pa >> _SHIFT] = (result.gpi, result.level)
                return granule_protection_check(
                    pa,
                    access=access,
                    requester=requester,
                    gpccr=self.gpccr,
                    gptbr=self.gptbr,
                    read64=self.read64,
                    features=self.features,
                )
            self._cache[pa >> _SHIFT] = cached
        if not self.gpccr.gpc:
            return None
        if self._disabled and access in self._disabled:
            return GptFault(GptFaultKind.GPF, 0)
        gpi, level = cached
        if _GPI_ACCESS.get(gpi) is access or gpi.allows(access, requester):
            return None
        return GptFault(GptFaultKind.GPF, level)

    def check(self, pa: int, access: Pas, requester: Pas | None = None) -> bool:
        """True when an access in PAS ``access`` to ``pa`` passes the granule protection check."""
        cached = self._cache.get(pa >> _SHIFT)
        if cached is not None and _GPI_ACCESS.get(cached[0]) is access and not self._disabled:
            return True  # the common case, decided as fault() would
        return self.fault(pa, access, requester) is None

    def pas_of(self, pa: int) -> Pas:
        """What the GPT gives the granule containing ``pa`` (as the PE sees it, cached entries included)."""
        cached = self._cache.get(pa >> _SHIFT)
        if cached is None:
            cached = self._fill(pa)
            if cached is None:
                result = self.walk(pa)
                return Pas.NONE if result.pas == "fault" else Pas(result.pas)
            self._cache[pa >> _SHIFT] = cached
        return cached[0].pas

    def initial_pas(self, pa: int) -> Pas:
        """PAS of ``pa`` as the platform booted (NONE where there is no memory)."""
        region = self.region_of(pa)
        return region.pas if region is not None else Pas.NONE

    def transitioned(self) -> dict[int, Pas]:
        """Granules whose GPI differs from the one EL3 built at boot, by address (read from the tables)."""
        geometry = self._geometry
        span = geometry.l1_descriptor_span
        l0 = self._memory.read(self._l0_base, geometry.l0_table_size, ROOT)
        out: dict[int, Pas] = {}
        for index in range(geometry.l0_entries):
            value = int.from_bytes(l0[8 * index : 8 * index + 8], "little")
            table = value & _L0_TABLE_ADDRESS
            boot = self._boot.get(table)
            if value & 0xF != 0b0011 or boot is None:
                continue
            current = self._memory.read(table, geometry.l1_table_size, ROOT)
            if current == boot:
                continue
            for offset in range(0, len(boot), 8):
                if current[offset : offset + 8] == boot[offset : offset + 8]:
                    continue
                now = int.from_bytes(current[offset : offset + 8], "little")
                was = int.from_bytes(boot[offset : offset + 8], "little")
                first = (index << geometry.l0gptsz_bits) + (offset // 8) * span
                for pa in range(first, first + span, geometry.granule_size):
                    gpi = self.entry_gpi(now, pa)
                    if gpi != self.entry_gpi(was, pa):
                        found = _GPI_BY_VALUE[gpi]
                        out[pa] = found.pas if found is not None else Pas.NONE
        return out

    def cached(self, pa: int) -> Gpi | None:
        """The GPI a TLB holds for the granule containing ``pa`` (None: the next access walks)."""
        cached = self._cache.get(pa >> _SHIFT)
        return cached[0] if cached is not None else None

    # -- reading the whole table ---------------------------------------------------------

    def tables(self) -> dict[int, bytes]:
        """The L0 table and every L1 table as they are in Root memory now: ``{PA: bytes}``."""
        geometry = self._geometry
        out = {self._l0_base: self._memory.read(self._l0_base, geometry.l0_table_size, ROOT)}
        for address in self.l1_tables:
            out[address] = self._memory.read(address, geometry.l1_table_size, ROOT)
        return out

    def pas_map(self) -> PasMap:
        """The PAS map the tables in memory describe (decoded with ``arch.gpt.decode_tables``)."""
        return decode_tables(self.gpccr, self.gptbr, self.tables(), features=self.features)

    # -- EL3's table surgery -------------------------------------------------------------

    def l1_slot(self, pa: int) -> L1Slot | None:
        """EL3's mapping of the L1 table covering ``pa`` and the index of its entry (None: L0 Block).

        The slot is (bytes view, descriptor view, descriptor index) of the table the L0 entry
        names now; it stays valid until the store remaps a table granule (it is taken afresh
        on every transition).
        """
        # _table() inlined for the mappings already made (this runs on every transition).
        tables = self._tables if self._views_epoch == self._memory.map_epoch else None
        found = tables.get(self._l0_base) if tables is not None else None
        if found is None:
            found = self._table(self._l0_base, self._l0_map)
        l0 = found[1][(pa & self._l0_index_mask) >> self._l0_entry_shift]
        if l0 & 0xF != 0b0011:
            return None
        table = l0 & _L0_TABLE_ADDRESS
        if table in self._l1_set:
            found = tables.get(table) if tables is not None else None
            view, entries = found if found is not None else self._table(table, self._l1_size)
        else:
            view = self._memory.map(table, self._l1_size, ROOT)
            entries = view.cast("Q")
        return view, entries, (pa & self._l1_index_mask) >> (self._pgs + 4)

    def l1_entry(self, pa: int) -> tuple[int, int] | None:
        """(address, value) of the L1 entry covering ``pa``; None when its L0 entry is not a Table."""
        geometry = self._geometry
        l0 = self.read64(self._l0_base + 8 * geometry.l0_index(pa))
        if l0 & 0xF != 0b0011:
            return None
        address = (l0 & _L0_TABLE_ADDRESS) + 8 * geometry.l1_index(pa)
        return address, self.read64(address)

    def entry_gpi(self, value: int, pa: int) -> int:
        """The GPI encoding an L1 descriptor ``value`` gives ``pa`` (Contiguous or Granules)."""
        if value & 0xF == 0b0001:
            return value >> 4 & 0xF
        return value >> (4 * (pa >> self._pgs & 0xF)) & 0xF

    def _slot(self, pa: int, slot: L1Slot | None) -> L1Slot:
        found = slot if slot is not None else self.l1_slot(pa)
        if found is None:
            raise ValueError(f"{pa:#x} is not under an L1 table: its PAS cannot change")
        return found

    def _blocks(self, gpi: int) -> _Blocks:
        """The descriptor runs EL3 writes for GPI ``gpi``, by Contig field (index 0 unused).

        ``smaller[c]``: a block of size ``c`` as blocks of the next size down (Granules descriptors
        below 2 MB) — what a shatter writes; ``whole[c]``: the same block as one Contiguous
        descriptor — what a fuse writes. Built once per GPI (at most 16, 140 KB each).
        """
        blocks = self._blocks_by_gpi.get(gpi)
        if blocks is None:

            def run(descriptor: int, contig: int) -> bytes:
                return descriptor.to_bytes(8, "little") * self._block_entries[contig]

            smaller = tuple(
                run((c - 1) << 8 | gpi << 4 | 0b0001 if c > 1 else gpi * _UNIFORM, c) for c in range(1, 4)
            )
            whole = tuple(run(c << 8 | gpi << 4 | 0b0001, c) for c in range(1, 4))
            blocks = self._blocks_by_gpi[gpi] = ((b"", *smaller), (b"", *whole))
        return blocks

    def shatter(self, pa: int, slot: L1Slot | None = None) -> int:
        """Split the Contiguous descriptor covering ``pa`` as TF-A's ``shatter_block``; the old block size.

        A 512 MB block becomes 32 MB blocks, the one holding ``pa`` 2 MB blocks,
        the one holding ``pa`` Granules descriptors (rme-gpt-mec.md §3.8). Returns 0
        when the entry already is a Granules descriptor. The caller owes a TLBI
        RPALOS over the returned size (R_RSSKBB).
        """
        view, entries, index = slot if slot is not None else self._slot(pa, None)
        value = entries[index]
        if value & 0xF != 0b0001:
            return 0
        # Descriptors as ints (D9.6.3/4): Contiguous = Contig << 8 | GPI << 4 | 1; Granules = GPI × 16.
        contig = value >> 8 & 0b11
        if not contig:
            return 0  # a reserved Contig field: no block to split
        smaller = self._blocks(value >> 4 & 0xF)[0]
        counts = self._block_entries
        old = contig
        while contig:
            # The whole block as blocks of the next size down; the one holding ``pa`` is split in turn.
            # Each block is written whole, as TF-A does, so the bytes after every level are TF-A's.
            count = counts[contig]
            first = 8 * (index & -count)
            view[first : first + 8 * count] = smaller[contig]
            contig -= 1
        return _CONTIG_BYTES[old]

    def set_gpi(self, pa: int, gpi: int, slot: L1Slot | None = None) -> None:
        """Rewrite the GPI field of the granule ``pa`` in its (shattered) Granules descriptor."""
        _, entries, index = slot if slot is not None else self._slot(pa, None)
        value = entries[index]
        if value & 0xF == 0b0001:
            raise ValueError(f"the L1 entry of {pa:#x} is Contiguous: shatter it first")
        shift = 4 * (pa >> self._pgs & 0xF)
        entries[index] = value & ~(0xF << shift) | gpi << shift

    def fuse(self, pa: int, slot: L1Slot | None = None) -> None:
        """Fold the blocks around ``pa`` back into Contiguous descriptors, as TF-A's ``fuse_block``.

        2 MB: all 32 Granules descriptors hold one GPI in every field; 32 MB and
        512 MB: the first descriptor of each of the 16 smaller blocks is that
        block's Contiguous descriptor with the same GPI. Replacing descriptors
        that encode the same GPIs needs no TLBI (R_RNNHCF).
        """
        view, entries, index = slot if slot is not None else self._slot(pa, None)
        # TF-A checks the 2 MB block against its first descriptor. ``pa``'s own descriptor is one of
        # them, so it must be that same uniform Granules descriptor: checking it first refuses the
        # usual case (one Realm field among Non-secure ones, right after a delegation) at once, and
        # gives the GPI the whole block must hold.
        own = entries[index]
        gpi = own & 0xF
        if own != gpi * _UNIFORM or gpi == 0b0001 or gpi not in self._valid:
            return
        smaller, whole = self._blocks(gpi)
        counts = self._block_entries
        count = counts[1]
        first = index & -count
        # A memoryview compares with bytes by value, without a copy.
        if view[8 * first : 8 * (first + count)] != smaller[1]:
            return
        # Find the largest block that fuses, then write it once (TF-A's fuse_contig).
        contig = 1
        while contig < 3:
            larger = counts[contig + 1]
            larger_first = index & -larger
            # The block being fused still holds Granules descriptors (or smaller blocks), never this one.
            heads = entries[larger_first : larger_first + larger : larger >> 4].tolist()
            if heads.count(contig << 8 | gpi << 4 | 0b0001) != 15:
                break
            contig += 1
            count, first = larger, larger_first
        view[8 * first : 8 * (first + count)] = whole[contig]

    # -- TLB maintenance (EL3 only) --------------------------------------------------------

    def tlbi_rpalos(self, base: int, size: int) -> None:
        """TLBI RPALOS: drop cached GPT information for [base, base+size) (DDI0487 C5.5.27)."""
        cache = self._cache
        first = base >> _SHIFT
        if size <= GRANULE_SIZE:
            cache.pop(first, None)
            return
        count = size >> _SHIFT
        if count <= len(cache):
            for index in range(first, first + count):
                cache.pop(index, None)
        else:
            for index in [i for i in cache if first <= i < first + count]:
                del cache[index]

    def tlbi_paallos(self) -> None:
        """TLBI PAALLOS: drop all cached GPT information (DDI0487 C5.5.20)."""
        self._cache.clear()
