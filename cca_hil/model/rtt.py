"""Realm Translation Tables of the modelled RMM: entries, tables, walk, fold, unfold and liveness.

RMM 1.0 A5.5 (RTT entries and their states), A5.5.6–A5.5.9 (liveness,
folding, unfolding, destruction) and the RttWalk and RttSkipNonLiveEntries
helpers of part B. An RTT here is the RMM's abstract view of one table
granule; entries are immutable values so that an unfolded table can share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from cca_hil.arch.rmi import Ripas, RttEntryState

PAGE_LEVEL = 3
MIN_BLOCK_LEVEL = 1
"""ASSIGNED and ASSIGNED_NS entries exist only at levels 1..3 (RMM 1.0 A5.5)."""

DESC_MEMATTR = 0b111 << 2
"""MemAttr[2:0] of an unprotected descriptor (FEAT_S2FWB: MemAttr[3] is RES0)."""
DESC_S2AP = 0b11 << 6
DESC_ATTR_MASK = DESC_MEMATTR | DESC_S2AP
DESC_OA_LPA2_HIGH = 0b11 << 8
"""OA[51:50] of an LPA2 descriptor."""
MEMATTR_RESERVED = 0b100 << 2
"""MemAttr 0b100 is reserved under FEAT_S2FWB; TF-RMM and the spec's attr_valid reject it."""


def level_shift(level: int) -> int:
    """log2 of the IPA span of one entry at ``level`` (4 KiB granule: 12 at level 3, 48 at level -1)."""
    return 12 + 9 * (PAGE_LEVEL - level)


def entry_size(level: int) -> int:
    """Bytes of IPA space one entry at ``level`` covers."""
    return 1 << level_shift(level)


def entries_per_table(level: int) -> int:
    """Entries of one RTT granule at ``level`` (16 at level -1, else 512)."""
    return 16 if level < 0 else 512


class Hipas(IntEnum):
    """The RMM's RTT entry states (RMM 1.0 A5.5): the Host IPA state plus TABLE."""

    UNASSIGNED = 0
    ASSIGNED = 1
    TABLE = 2
    UNASSIGNED_NS = 3
    ASSIGNED_NS = 4

    @property
    def reported(self) -> RttEntryState:
        """How RMI_RTT_READ_ENTRY encodes this state (RmiRttEntryState)."""
        return _REPORTED[self]


_REPORTED = {
    Hipas.UNASSIGNED: RttEntryState.UNASSIGNED,
    Hipas.UNASSIGNED_NS: RttEntryState.UNASSIGNED,
    Hipas.ASSIGNED: RttEntryState.ASSIGNED,
    Hipas.ASSIGNED_NS: RttEntryState.ASSIGNED,
    Hipas.TABLE: RttEntryState.TABLE,
}


@dataclass(frozen=True, slots=True)
class Rtte:
    """One RTT entry: state, RIPAS (protected entries), output address and Host attributes.

    ``addr`` is the DATA granule (or block base) of an ASSIGNED entry, the NS
    address of an ASSIGNED_NS entry and the next-level RTT of a TABLE entry,
    whose object is ``table``.
    """

    state: Hipas
    ripas: Ripas = Ripas.EMPTY
    addr: int = 0
    attr: int = 0
    table: Rtt | None = None

    @property
    def is_live(self) -> bool:
        """Live entries (A5.5.6) — what RttSkipNonLiveEntries stops at: ASSIGNED, ASSIGNED_NS, TABLE."""
        return self.state is Hipas.ASSIGNED or self.state is Hipas.ASSIGNED_NS or self.state is Hipas.TABLE

    @property
    def keeps_rtt_live(self) -> bool:
        """Entries that make their RTT live (A5.5.6): ASSIGNED or TABLE, not ASSIGNED_NS."""
        return self.state is Hipas.ASSIGNED or self.state is Hipas.TABLE

    def desc(self) -> int:
        """RMI_RTT_READ_ENTRY's X3 for this entry (RMM 1.0 B3.3): 0, the address, or address + attributes."""
        if self.state is Hipas.ASSIGNED or self.state is Hipas.TABLE:
            return self.addr
        if self.state is Hipas.ASSIGNED_NS:
            return self.addr | self.attr
        return 0

    def reported_ripas(self) -> Ripas:
        """RMI_RTT_READ_ENTRY's X4: the RIPAS of a protected leaf, else EMPTY (TF-RMM for TABLE)."""
        if self.state is Hipas.UNASSIGNED or self.state is Hipas.ASSIGNED:
            return self.ripas
        return Ripas.EMPTY


_LIVE_STATES = frozenset({Hipas.ASSIGNED, Hipas.ASSIGNED_NS, Hipas.TABLE})

UNASSIGNED_EMPTY = Rtte(Hipas.UNASSIGNED, Ripas.EMPTY)
UNASSIGNED_RAM = Rtte(Hipas.UNASSIGNED, Ripas.RAM)
UNASSIGNED_DESTROYED = Rtte(Hipas.UNASSIGNED, Ripas.DESTROYED)
UNASSIGNED_NS = Rtte(Hipas.UNASSIGNED_NS)

_UNASSIGNED_BY_RIPAS = {
    Ripas.EMPTY: UNASSIGNED_EMPTY,
    Ripas.RAM: UNASSIGNED_RAM,
    Ripas.DESTROYED: UNASSIGNED_DESTROYED,
}


def unassigned(ripas: Ripas) -> Rtte:
    """The (shared) UNASSIGNED entry with ``ripas``."""
    return _UNASSIGNED_BY_RIPAS[ripas]


class Rtt:
    """One RTT granule: its PA, level, the IPA of its first entry, and its entries."""

    __slots__ = ("addr", "base", "entries", "level")

    def __init__(self, *, addr: int, level: int, base: int, entries: list[Rtte]) -> None:
        self.addr = addr
        self.level = level
        self.base = base
        self.entries = entries

    @classmethod
    def filled(cls, *, addr: int, level: int, base: int, entry: Rtte) -> Rtt:
        """A table whose entries all equal ``entry``."""
        return cls(addr=addr, level=level, base=base, entries=[entry] * entries_per_table(level))

    @property
    def top(self) -> int:
        """The IPA just past the last entry of this table."""
        return self.base + len(self.entries) * entry_size(self.level)

    def index_of(self, ipa: int) -> int:
        """Index of the entry covering ``ipa`` (which must lie inside this table)."""
        return (ipa - self.base) >> level_shift(self.level)

    def ipa_of(self, index: int) -> int:
        """IPA of the first byte entry ``index`` covers."""
        return self.base + (index << level_shift(self.level))

    def is_live(self) -> bool:
        """A5.5.6: the table has an ASSIGNED or TABLE entry (ASSIGNED_NS alone does not count)."""
        return any(entry.keeps_rtt_live for entry in self.entries)

    def skip_non_live(self, ipa: int) -> int:
        """RttSkipNonLiveEntries: ``ipa`` if its entry is live, else the next live entry or end."""
        index = self.index_of(ipa)
        entries = self.entries
        if entries[index].state in _LIVE_STATES:
            return ipa
        # Hosts tear realms down entry by entry, so this scan runs once per DATA_DESTROY: keep it tight.
        for later in range(index + 1, len(entries)):
            if entries[later].state in _LIVE_STATES:
                return self.ipa_of(later)
        return self.top

    def unfold_into(self, *, addr: int, parent: Rtte, base: int) -> Rtt:
        """A new child table of this one at ``base``, every entry derived from ``parent`` (A5.5.8)."""
        level = self.level + 1
        if parent.state is Hipas.ASSIGNED or parent.state is Hipas.ASSIGNED_NS:
            step = entry_size(level)
            entries = [
                Rtte(parent.state, parent.ripas, parent.addr + i * step, parent.attr)
                for i in range(entries_per_table(level))
            ]
            return Rtt(addr=addr, level=level, base=base, entries=entries)
        return Rtt.filled(addr=addr, level=level, base=base, entry=parent)

    def fold(self) -> Rtte | None:
        """RttFold (A5.5.7): the parent entry replacing this table, or None if it is not homogeneous.

        Blocks of ASSIGNED / ASSIGNED_NS entries are only folded where the
        parent level can hold a block; :meth:`maps_block` tells callers when a
        table would fold but for that level rule.
        """
        first = self.entries[0]
        state = first.state
        if state is Hipas.UNASSIGNED:
            ripas = first.ripas
            if all(e.state is Hipas.UNASSIGNED and e.ripas is ripas for e in self.entries):
                return first
            return None
        if state is Hipas.UNASSIGNED_NS:
            return first if all(e.state is Hipas.UNASSIGNED_NS for e in self.entries) else None
        if self.level - 1 >= MIN_BLOCK_LEVEL and self.maps_block():
            return Rtte(state, first.ripas, first.addr, first.attr)
        return None

    def maps_block(self) -> bool:
        """All ASSIGNED (same RIPAS) or all ASSIGNED_NS (same attributes), contiguous and block-aligned."""
        first = self.entries[0]
        state = first.state
        if state is not Hipas.ASSIGNED and state is not Hipas.ASSIGNED_NS:
            return False
        step = entry_size(self.level)
        if first.addr % (step * len(self.entries)):
            return False
        expected = first.addr
        for entry in self.entries:
            if (
                entry.state is not state
                or entry.addr != expected
                or entry.ripas is not first.ripas
                or entry.attr != first.attr
            ):
                return False
            expected += step
        return True


@dataclass(frozen=True, slots=True)
class Walk:
    """Result of RttWalk (RMM 1.0): the level and table where the walk stopped, and the entry there."""

    level: int
    rtt: Rtt
    index: int
    entry: Rtte


def walk(starts: Sequence[Rtt], start_level: int, ipa: int, level: int) -> Walk:
    """RttWalk(rd, ipa, level): descend from the starting tables while the entry is TABLE and above ``level``.

    ``ipa`` must lie inside the starting tables (callers checked ``ipa_bound``).
    """
    shift = level_shift(start_level)
    global_index = ipa >> shift
    per_table = entries_per_table(start_level)
    rtt = starts[global_index // per_table]
    index = global_index % per_table
    entry = rtt.entries[index]
    current = start_level
    while current < level and entry.table is not None:
        rtt = entry.table
        current += 1
        index = (ipa >> level_shift(current)) & 511
        entry = rtt.entries[index]
    return Walk(current, rtt, index, entry)
