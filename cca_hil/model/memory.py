"""Sparse physical memory: 4 KiB granules allocated when first written.

Untouched granules read as zero. Contents are kept per granule as a bytearray;
a wipe drops the granule (it reads as zero again), which is both the cheapest
scrub and what TF-RMM's zero-filling makes observable on an FVP.
"""

from __future__ import annotations

from cca_hil.arch.rmi import GRANULE_SIZE

_SHIFT = 12
_MASK = GRANULE_SIZE - 1
_ZERO_GRANULE = bytes(GRANULE_SIZE)


class PhysicalMemory:
    """Byte-addressed sparse memory; grows only with the granules that were written."""

    __slots__ = ("_granules",)

    def __init__(self) -> None:
        self._granules: dict[int, bytearray] = {}

    @property
    def granules_in_use(self) -> int:
        """How many granules hold data (the memory footprint, in granules)."""
        return len(self._granules)

    def read(self, pa: int, size: int) -> bytes:
        """Read ``size`` bytes at ``pa``; untouched memory reads as zero."""
        if size <= 0:
            return b""
        offset = pa & _MASK
        if offset + size <= GRANULE_SIZE:
            granule = self._granules.get(pa >> _SHIFT)
            if granule is None:
                return bytes(size)
            return bytes(granule[offset : offset + size])
        out = bytearray()
        while size:
            chunk = min(size, GRANULE_SIZE - (pa & _MASK))
            out += self.read(pa, chunk)
            pa += chunk
            size -= chunk
        return bytes(out)

    def read_granule(self, pa: int) -> bytes:
        """The whole 4 KiB granule containing ``pa``."""
        granule = self._granules.get(pa >> _SHIFT)
        return _ZERO_GRANULE if granule is None else bytes(granule)

    def write(self, pa: int, data: bytes) -> None:
        """Write ``data`` at ``pa``, allocating granules as needed."""
        view = memoryview(data)
        while view.nbytes:
            index = pa >> _SHIFT
            offset = pa & _MASK
            chunk = min(view.nbytes, GRANULE_SIZE - offset)
            granule = self._granules.get(index)
            if granule is None:
                granule = self._granules[index] = bytearray(GRANULE_SIZE)
            granule[offset : offset + chunk] = view[:chunk]
            pa += chunk
            view = view[chunk:]

    def wipe(self, pa: int) -> None:
        """Scrub the granule containing ``pa`` (it reads as zero afterwards)."""
        self._granules.pop(pa >> _SHIFT, None)

    def is_zero(self, pa: int) -> bool:
        """True when the granule containing ``pa`` holds only zero bytes."""
        granule = self._granules.get(pa >> _SHIFT)
        return granule is None or not any(granule)
