"""MECID management of the modelled RMM: which memory encryption context each realm's memory uses.

rme-gpt-mec.md §7.7 (RMM 1.1 MECID semantics as TF-RMM implements them): MECID
0 is the RMM's own context (its scrubbing included, scrub method 0), MECID 1
is the shared MECID, and every realm with the PRIVATE policy owns one MECID of
``2..2^width-1`` for its data, RTTs and RECs (TF-RMM maps them through AMEC
slots with MECID_A1_EL2 = the realm's MECID). RMM 1.0's ABI carries no MEC
policy, so the model gives every realm a private MECID — the lowest free one,
deterministically — and falls back to the shared MECID when none is left
(where TF-RMM would refuse RMI_REALM_CREATE). Allocating and releasing a MECID
calls RMM_MEC_REFRESH; the model's EL3 then changes that MECID's key, so a
later realm reusing the MECID cannot decrypt an earlier realm's data.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Final

from cca_hil.arch.pas import Pas
from cca_hil.model.crypto import EncryptionContext

RMM_MECID: Final = 0
SHARED_MECID: Final = 1
FIRST_PRIVATE: Final = 2


class MecidAllocator:
    """Private MECIDs for live realms, keyed by RD, with a key generation per MECID (§7.7)."""

    __slots__ = ("_by_rd", "_free", "_generations", "_next", "limit", "refreshes")

    def __init__(self, width: int) -> None:
        if not 1 <= width <= 16:
            raise ValueError(f"MECID width {width} outside 1..16")
        self.limit = 1 << width
        """One past the largest MECID (MECIDR_EL2.MECIDWidthm1 + 1 bits)."""
        self._by_rd: dict[int, tuple[object, int]] = {}
        self._free: list[int] = []
        self._next = FIRST_PRIVATE
        self._generations: dict[int, int] = {}
        self.refreshes = 0
        """RMM_MEC_REFRESH calls made."""

    @property
    def private_count(self) -> int:
        """MECIDs available to realms with the PRIVATE policy: 2^w − RESERVED_IDS − 1 (TF-RMM)."""
        return max(self.limit - FIRST_PRIVATE, 0)

    def mecid_of(self, rd: int, realm: object, live: Mapping[int, object]) -> int:
        """The MECID of the realm whose RD is at granule index ``rd``; allocated on first use."""
        held = self._by_rd.get(rd)
        if held is not None and held[0] is realm:
            return held[1]
        self._release_dead(live)
        if self._free:
            mecid = heapq.heappop(self._free)
        elif self._next < self.limit:
            mecid = self._next
            self._next += 1
        else:
            return SHARED_MECID
        self._by_rd[rd] = (realm, mecid)
        self._refresh(mecid)
        return mecid

    def _release_dead(self, live: Mapping[int, object]) -> None:
        for rd, (realm, mecid) in list(self._by_rd.items()):
            if live.get(rd) is not realm:
                del self._by_rd[rd]
                heapq.heappush(self._free, mecid)
                self._refresh(mecid)

    def _refresh(self, mecid: int) -> None:
        """RMM_MEC_REFRESH: EL3 gives ``mecid`` a fresh key (reason create or destroy)."""
        self._generations[mecid] = self._generations.get(mecid, 0) + 1
        self.refreshes += 1

    def context(self, mecid: int) -> EncryptionContext:
        """The Realm-PAS encryption context of ``mecid`` with its current key."""
        return EncryptionContext(Pas.REALM, mecid, self._generations.get(mecid, 0))
