"""The model's granule protection: the PAS each granule belongs to, and the check on every access.

RME (DDI0487 D9): every physical access carries a PAS; the granule protection
check compares it with the GPT entry of the target granule and faults on a
mismatch. This module keeps the PAS per granule for the model's monitor and
memory; the table walk over architectural GPT bytes lives in ``arch/gpt.py``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from cca_hil.arch.pas import Pas
from cca_hil.targets.base import MemoryRegion

_SHIFT = 12


class GranuleProtection:
    """PAS of every granule: the platform's initial map plus the transitions made since."""

    __slots__ = ("_overrides", "_region_bases", "_regions")

    def __init__(self, regions: Iterable[MemoryRegion]) -> None:
        self._regions = sorted(regions, key=lambda r: r.base)
        self._region_bases = [r.base for r in self._regions]
        self._overrides: dict[int, Pas] = {}

    def initial_pas(self, pa: int) -> Pas:
        """PAS of ``pa`` as the platform booted (NONE where there is no memory: the walk faults)."""
        i = bisect.bisect_right(self._region_bases, pa) - 1
        if i >= 0:
            region = self._regions[i]
            if pa < region.end:
                return region.pas
        return Pas.NONE

    def pas_of(self, pa: int) -> Pas:
        """Current GPT entry value for the granule containing ``pa``."""
        pas = self._overrides.get(pa >> _SHIFT)
        return pas if pas is not None else self.initial_pas(pa)

    def set_pas(self, pa: int, pas: Pas) -> None:
        """Change the GPT entry of one granule (EL3's transition, after its maintenance)."""
        index = pa >> _SHIFT
        if pas is self.initial_pas(pa):
            self._overrides.pop(index, None)
        else:
            self._overrides[index] = pas

    def check(self, pa: int, access: Pas) -> bool:
        """The granule protection check: True when an access in PAS ``access`` may proceed."""
        pas = self._overrides.get(pa >> _SHIFT)
        if pas is None:
            pas = self.initial_pas(pa)
        return pas is Pas.ANY or pas is access

    def transitioned(self) -> dict[int, Pas]:
        """Granules whose PAS differs from the boot map, by granule address."""
        return {index << _SHIFT: pas for index, pas in self._overrides.items()}
