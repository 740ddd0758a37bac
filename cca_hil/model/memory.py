"""Sparse physical memory behind a memory protection engine: per-PAS and per-MECID encryption contexts.

DEN0129 RMLFBL and DDI0487 D7.4 (rme-gpt-mec.md §7): what reaches memory is
encrypted with the context of the access — its PAS and, in the Realm PAS, its
MECID — and an address tweak. A read under another context decrypts that
ciphertext with the wrong key: the reader gets pseudo-random bytes, never the
plaintext (§7.2).

How the model stores it, so that the common path costs no cryptography:

* each 4 KiB granule holds the plaintext of its latest write **tagged with the
  context that wrote it**, as PAS- and MECID-tagged cache lines hold plaintext
  up to the PoPA/PoE (DDI0487 D7.5, RWFQKD); the ciphertext in DRAM is
  ``Enc_context(plaintext, PA)`` and is computed when — and only when —
  someone looks through another context (:meth:`MemoryEncryption.observe`);
* a write through another context re-encrypts the whole granule (the data
  unit) under the writer's context, the rest of it being what that writer
  would read: bytes of other contexts in the same data unit are corrupted,
  as D7.4 warns for mixed MECIDs in one granule;
* a granule never written costs nothing and reads as zero through every
  context (boot-time initialisation, RZQQSQ);
* a wipe records "zero-filled through context C" without storing bytes:
  through C it reads as zero, through any other context as ``Dec(Enc_C(0))``.
  Without encryption a wipe simply drops the granule.
"""

from __future__ import annotations

from typing import Final

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.model.crypto import EncryptionContext, MemoryEncryption

_SHIFT: Final = 12
_MASK: Final = GRANULE_SIZE - 1
_ZERO_GRANULE: Final = bytes(GRANULE_SIZE)

NONSECURE: Final = EncryptionContext(Pas.NONSECURE)
SECURE: Final = EncryptionContext(Pas.SECURE)
ROOT: Final = EncryptionContext(Pas.ROOT)
REALM: Final = EncryptionContext(Pas.REALM)
"""The default context of each PAS (MECID 0)."""


class _Line:
    """A granule's latest plaintext and the context it was written under."""

    __slots__ = ("context", "data")

    def __init__(self, context: EncryptionContext, data: bytearray | memoryview) -> None:
        self.context = context
        self.data = data


class MemoryStore:
    """Byte-addressed sparse memory; every access names its encryption context (DEN0129 RMLFBL)."""

    __slots__ = ("_granules", "_mapped", "_mappings", "encryption", "map_epoch")

    def __init__(self, encryption: MemoryEncryption | None = None) -> None:
        self.encryption = encryption
        """The engine, or None for a platform whose memory is not encrypted (every context sees plaintext)."""
        self._granules: dict[int, _Line | EncryptionContext] = {}
        self._mappings: dict[int, tuple[int, EncryptionContext, memoryview]] = {}
        self._mapped: dict[int, int] = {}
        self.map_epoch = 0
        """Changes whenever a view returned by :meth:`map` stops being valid."""

    def map(self, base: int, size: int, context: EncryptionContext) -> memoryview:
        """A contiguous writable view of [base, base+size) through ``context``: how EL3 edits its tables.

        The view shares bytes with the granules it covers, so reads and writes
        through :meth:`read`/:meth:`write` under the same context see the same
        data. It stays valid until one of those granules is replaced (wiped, or
        written through another context); the next call then maps afresh.
        """
        mapping = self._mappings.get(base)
        if mapping is not None and mapping[0] == size and mapping[1] is context:
            return mapping[2]
        if base & _MASK or size & _MASK or size <= 0:
            raise ValueError(f"a mapping covers whole granules, not [{base:#x}, {base + size:#x})")
        view = memoryview(bytearray(self.read(base, size, context)))
        for offset in range(0, size, GRANULE_SIZE):
            index = (base + offset) >> _SHIFT
            self._unmap(index)
            self._granules[index] = _Line(context, view[offset : offset + GRANULE_SIZE])
            self._mapped[index] = base
        self._mappings[base] = (size, context, view)
        return view

    def _unmap(self, index: int) -> None:
        base = self._mapped.pop(index, None)
        if base is not None:
            self._mappings.pop(base, None)
            self.map_epoch += 1

    def _replace(self, index: int, cell: _Line | EncryptionContext) -> None:
        if self._mapped:
            self._unmap(index)
        self._granules[index] = cell

    @property
    def granules_in_use(self) -> int:
        """How many granules hold bytes (the memory footprint, in granules)."""
        return sum(1 for cell in self._granules.values() if type(cell) is _Line)

    def _same(self, a: EncryptionContext, b: EncryptionContext) -> bool:
        return a is b or a == b or self.encryption is None

    def _seen(self, index: int, context: EncryptionContext) -> bytes:
        """The whole granule as a read under ``context`` returns it."""
        cell = self._granules.get(index)
        if cell is None:
            return _ZERO_GRANULE
        if type(cell) is _Line:
            if self._same(cell.context, context):
                return bytes(cell.data)
            written, plaintext = cell.context, cell.data
        else:
            assert isinstance(cell, EncryptionContext)
            if self._same(cell, context):
                return _ZERO_GRANULE
            written, plaintext = cell, bytearray(_ZERO_GRANULE)
        assert self.encryption is not None
        return self.encryption.observe(written, context, index << _SHIFT, plaintext)

    def read(self, pa: int, size: int, context: EncryptionContext) -> bytes:
        """Read ``size`` bytes at ``pa`` through ``context``; untouched memory reads as zero."""
        if size <= 0:
            return b""
        offset = pa & _MASK
        if offset + size <= GRANULE_SIZE:
            cell = self._granules.get(pa >> _SHIFT)
            if cell is None:
                return bytes(size)
            if type(cell) is _Line and self._same(cell.context, context):
                return bytes(cell.data[offset : offset + size])
            return self._seen(pa >> _SHIFT, context)[offset : offset + size]
        out = bytearray()
        while size:
            chunk = min(size, GRANULE_SIZE - (pa & _MASK))
            out += self.read(pa, chunk, context)
            pa += chunk
            size -= chunk
        return bytes(out)

    def read_granule(self, pa: int, context: EncryptionContext) -> bytes:
        """The whole 4 KiB granule containing ``pa``, through ``context``."""
        return self._seen(pa >> _SHIFT, context)

    def write(self, pa: int, data: bytes | bytearray | memoryview, context: EncryptionContext) -> None:
        """Write ``data`` at ``pa`` through ``context``, allocating granules as needed."""
        view = memoryview(data).cast("B")
        granules = self._granules
        while view.nbytes:
            index = pa >> _SHIFT
            offset = pa & _MASK
            chunk = min(view.nbytes, GRANULE_SIZE - offset)
            cell = granules.get(index)
            if type(cell) is _Line and self._same(cell.context, context):
                cell.data[offset : offset + chunk] = view[:chunk]
            elif chunk == GRANULE_SIZE:
                self._replace(index, _Line(context, bytearray(view[:chunk])))
            else:
                # Read-modify-write of the whole data unit under the writer's context.
                line = _Line(context, bytearray(self._seen(index, context)))
                line.data[offset : offset + chunk] = view[:chunk]
                self._replace(index, line)
            pa += chunk
            view = view[chunk:]

    def wipe(self, pa: int, context: EncryptionContext) -> None:
        """Zero-fill the granule containing ``pa`` through ``context`` (the RMM's scrub, RMM 1.0 A2.2.4)."""
        index = pa >> _SHIFT
        if index in self._mapped:
            self._unmap(index)
        if self.encryption is None:
            self._granules.pop(index, None)
        else:
            self._granules[index] = context

    def is_zero(self, pa: int, context: EncryptionContext) -> bool:
        """True when the granule containing ``pa`` reads as zero bytes through ``context``."""
        cell = self._granules.get(pa >> _SHIFT)
        if cell is None:
            return True
        if type(cell) is _Line and self._same(cell.context, context):
            return not any(cell.data)
        return self._seen(pa >> _SHIFT, context) == _ZERO_GRANULE

    def written_under(self, pa: int) -> EncryptionContext | None:
        """The context the granule containing ``pa`` was last written or wiped through (None: never)."""
        cell = self._granules.get(pa >> _SHIFT)
        if cell is None:
            return None
        return cell.context if type(cell) is _Line else cell  # type: ignore[return-value]


class PhysicalMemory:
    """Physical memory as one requester sees it: every access through one encryption context.

    The whole of a simple platform's memory when built bare (its own store, no
    encryption); on the modelled RME platform, the view of one PAS and MECID.
    """

    __slots__ = ("context", "store")

    def __init__(self, store: MemoryStore | None = None, context: EncryptionContext = NONSECURE) -> None:
        self.store = store if store is not None else MemoryStore()
        self.context = context

    @property
    def granules_in_use(self) -> int:
        """How many granules of the store hold bytes."""
        return self.store.granules_in_use

    def read(self, pa: int, size: int) -> bytes:
        """Read ``size`` bytes at ``pa``; untouched memory reads as zero."""
        return self.store.read(pa, size, self.context)

    def read_granule(self, pa: int) -> bytes:
        """The whole 4 KiB granule containing ``pa``."""
        return self.store.read_granule(pa, self.context)

    def write(self, pa: int, data: bytes) -> None:
        """Write ``data`` at ``pa``."""
        self.store.write(pa, data, self.context)

    def wipe(self, pa: int) -> None:
        """Zero-fill the granule containing ``pa`` (RMM 1.0 A2.2.4)."""
        self.store.wipe(pa, self.context)

    def is_zero(self, pa: int) -> bool:
        """True when the granule containing ``pa`` reads as zero."""
        return self.store.is_zero(pa, self.context)
