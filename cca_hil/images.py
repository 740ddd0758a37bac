"""Firmware images as address-tagged segments: ELF (loadable segments by physical address), HEX, BIN.

Every problem with an image is an :class:`~cca_hil.errors.InputError` (exit 2)
naming the file and what is wrong, raised before anything touches a target.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cca_hil.arch.pas import Pas
from cca_hil.errors import InputError
from cca_hil.targets.base import MemoryRegion

ImageFormat = Literal["elf", "hex", "bin"]
FORMATS: tuple[ImageFormat, ...] = ("elf", "hex", "bin")
LOADABLE_KINDS = frozenset({"dram", "sram"})
"""Region kinds a debugger can write; ROM and device space are not load targets."""

_ELF_MAGIC = b"\x7fELF"
_HEX_SUFFIXES = (".hex", ".ihex", ".ihx")


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes that go to one physical address."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        """First address past the segment."""
        return self.address + len(self.data)

    def describe(self) -> str:
        """``0x…-0x… (N bytes)`` for messages."""
        return f"{self.address:#x}-{self.end - 1:#x} ({len(self.data)} bytes)"


@dataclass(frozen=True)
class Image:
    """A parsed image: its segments in address order, and the ELF entry point if it has one."""

    source: str
    format: ImageFormat
    segments: tuple[Segment, ...]
    entry: int | None = None

    @property
    def size(self) -> int:
        """Total bytes to load."""
        return sum(len(s.data) for s in self.segments)

    @property
    def span(self) -> tuple[int, int]:
        """(lowest address, first address past the highest segment)."""
        return self.segments[0].address, max(s.end for s in self.segments)


def detect_format(path: Path, head: bytes) -> ImageFormat:
    """ELF by its magic, Intel HEX by suffix or a leading ':' record, anything else raw binary."""
    if head.startswith(_ELF_MAGIC):
        return "elf"
    if path.suffix.lower() in _HEX_SUFFIXES or head.lstrip()[:1] == b":":
        return "hex"
    return "bin"


def load_image(path: Path | str, *, address: int | None = None, format: ImageFormat | None = None) -> Image:
    """Read and parse an image; ``address`` places a BIN (and only a BIN) image."""
    path = Path(path)
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read image: {error.strerror or error}", where=where) from None
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown image format {format!r}", where=where, valid=FORMATS)
    kind = format or detect_format(path, raw[:64])
    if kind == "bin":
        if address is None:
            raise InputError("a raw binary image needs a load address (--address PA)", where=where)
        if address < 0:
            raise InputError(f"load address {address:#x} is negative", where=where)
        if not raw:
            raise InputError("image is empty", where=where)
        return Image(where, "bin", (Segment(address, raw),))
    if address is not None:
        raise InputError(
            f"--address applies to raw binaries only; a {kind.upper()} image carries its addresses",
            where=where,
        )
    segments = _parse_elf(raw, where) if kind == "elf" else _parse_hex(raw, where)
    entry = _elf_entry(raw) if kind == "elf" else None
    segments = sorted(segments, key=lambda s: s.address)
    if not segments:
        raise InputError("image has nothing to load (no loadable segments with file data)", where=where)
    for before, after in itertools.pairwise(segments):
        if after.address < before.end:
            raise InputError(f"segments overlap: {before.describe()} and {after.describe()}", where=where)
    return Image(where, kind, tuple(segments), entry)


def _parse_elf(raw: bytes, where: str) -> list[Segment]:
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(raw))
        segments = []
        for segment in elf.iter_segments():
            # Only file-backed bytes are loaded; p_memsz beyond p_filesz (.bss) is the program's to clear.
            if segment["p_type"] != "PT_LOAD" or segment["p_filesz"] == 0:
                continue
            data = segment.data()
            if len(data) != segment["p_filesz"]:
                address, expected = segment["p_paddr"], segment["p_filesz"]
                raise InputError(
                    f"segment at {address:#x} is truncated ({len(data)} of {expected} bytes)", where=where
                )
            segments.append(Segment(int(segment["p_paddr"]), bytes(data)))
    except ELFError as error:
        raise InputError(f"not a valid ELF file: {error}", where=where) from None
    except (ValueError, EOFError, OSError) as error:
        # pyelftools reports structures that run past the end of the file as stream errors.
        raise InputError(f"truncated or malformed ELF file: {error}", where=where) from None
    return segments


def _elf_entry(raw: bytes) -> int:
    import io

    from elftools.elf.elffile import ELFFile

    return int(ELFFile(io.BytesIO(raw))["e_entry"])


def _parse_hex(raw: bytes, where: str) -> list[Segment]:
    import io

    from intelhex import HexReaderError, IntelHex

    hexfile = IntelHex()
    try:
        hexfile.loadhex(io.StringIO(raw.decode("ascii")))
    except UnicodeDecodeError:
        raise InputError("not an Intel HEX file (non-ASCII bytes)", where=where) from None
    except HexReaderError as error:
        raise InputError(f"bad Intel HEX: {error}", where=where) from None
    return [Segment(start, hexfile.tobinstr(start, end - 1)) for start, end in hexfile.segments()]


def _fmt_region(region: MemoryRegion) -> str:
    return f"{region.name} {region.base:#x}-{region.end - 1:#x}"


def _covered(start: int, end: int, regions: Sequence[MemoryRegion]) -> bool:
    """True when adjacent ``regions`` cover ``[start, end)`` with no gap."""
    for region in sorted(regions, key=lambda r: r.base):
        if region.base <= start < region.end:
            start = region.end
        if start >= end:
            return True
    return start >= end


def check_fits(image: Image, regions: Iterable[MemoryRegion], *, pas: Pas | None = None) -> None:
    """Raise InputError unless every segment lies in loadable memory (reachable from ``pas``, when given).

    ``pas`` is the PAS the loader's accesses use. A region whose initial GPT
    entry neither equals it nor is ``any`` is refused: a Non-secure or Secure
    MEM-AP cannot reach Realm or Root memory. The GPT can change at run time;
    this check is about the memory map, not a statement of isolation.
    """
    loadable = [r for r in regions if r.kind in LOADABLE_KINDS]
    reachable = [r for r in loadable if pas is None or r.pas.allows(pas)]
    for segment in image.segments:
        if _covered(segment.address, segment.end, reachable):
            continue
        if pas is not None and _covered(segment.address, segment.end, loadable):
            names = sorted({r.name for r in loadable if r.base < segment.end and segment.address < r.end})
            raise InputError(
                f"segment {segment.describe()} lies in {', '.join(names)}, which a {pas} access cannot reach",
                where=image.source,
                valid=[_fmt_region(r) for r in reachable],
            )
        raise InputError(
            f"segment {segment.describe()} is outside loadable memory",
            where=image.source,
            valid=[_fmt_region(r) for r in reachable],
        )
