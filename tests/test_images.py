"""Images: ELF loadable segments at physical addresses, Intel HEX, raw BIN, and memory-map checks."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from intelhex import IntelHex

from cca_hil.arch.pas import Pas
from cca_hil.errors import EXIT_BAD_INPUT, InputError
from cca_hil.images import Image, Segment, check_fits, load_image
from cca_hil.model.platform import PlatformConfig

PT_LOAD = 1
PT_NOTE = 4
EM_AARCH64 = 183


def elf64(
    loads: Sequence[tuple[int, int, bytes, int]],
    *,
    entry: int = 0,
    extra: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """A minimal little-endian ELF64 executable for AArch64.

    ``loads`` are (p_vaddr, p_paddr, file bytes, p_memsz) PT_LOAD segments; ``extra``
    are (p_type, bytes) segments of other types. Layout: ELF header (64 bytes),
    program headers (56 bytes each), then the segment contents.
    """
    headers = [(PT_LOAD, vaddr, paddr, data, memsz) for vaddr, paddr, data, memsz in loads]
    headers += [(ptype, 0, 0, data, len(data)) for ptype, data in extra]
    phoff = 64
    offset = phoff + 56 * len(headers)
    phdrs = b""
    body = b""
    for ptype, vaddr, paddr, data, memsz in headers:
        phdrs += struct.pack("<IIQQQQQQ", ptype, 5, offset + len(body), vaddr, paddr, len(data), memsz, 8)
        body += data
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, ELFDATA2LSB, EV_CURRENT
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, EM_AARCH64, 1, entry, phoff, 0, 0, 64, 56, len(headers), 64, 0, 0
    )
    return header + phdrs + body


REGIONS = PlatformConfig().regions


def test_elf_loads_file_bytes_of_pt_load_segments_at_their_physical_addresses(tmp_path: Path) -> None:
    path = tmp_path / "agent.elf"
    path.write_bytes(
        elf64(
            [
                (0xFFFF_0000_0000_0000, 0x8800_0000, b"code" * 8, 32),
                (0xFFFF_0000_0001_0000, 0x8801_0000, b"data!", 0x2000),
                (0xFFFF_0000_0002_0000, 0x8802_0000, b"", 0x1000),  # .bss: nothing in the file
            ],
            entry=0x8800_0000,
            extra=[(PT_NOTE, b"note")],
        )
    )
    image = load_image(path)
    assert image.format == "elf"
    assert image.entry == 0x8800_0000
    assert image.segments == (Segment(0x8800_0000, b"code" * 8), Segment(0x8801_0000, b"data!"))
    assert image.size == 37


def test_hex_segments_keep_their_addresses(tmp_path: Path) -> None:
    hexfile = IntelHex()
    hexfile.frombytes(b"\x01\x02\x03", offset=0x8000_1001)
    hexfile.frombytes(bytes(range(200)), offset=0x8010_0000)
    path = tmp_path / "fw.hex"
    hexfile.write_hex_file(str(path))
    image = load_image(path)
    assert image.format == "hex"
    assert image.segments == (Segment(0x8000_1001, b"\x01\x02\x03"), Segment(0x8010_0000, bytes(range(200))))


def test_hex_is_recognised_by_content_without_suffix(tmp_path: Path) -> None:
    hexfile = IntelHex()
    hexfile.frombytes(b"abc", offset=0x100)
    path = tmp_path / "firmware.img"
    hexfile.write_hex_file(str(path))
    assert load_image(path).format == "hex"


def test_bin_needs_an_address(tmp_path: Path) -> None:
    path = tmp_path / "raw.bin"
    path.write_bytes(b"\x00\x11")
    with pytest.raises(InputError, match=r"raw\.bin: a raw binary image needs a load address") as info:
        load_image(path)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert load_image(path, address=0x8000_0000).segments == (Segment(0x8000_0000, b"\x00\x11"),)


def test_address_with_an_elf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.elf"
    path.write_bytes(elf64([(0, 0x8000_0000, b"x", 1)]))
    with pytest.raises(InputError, match="--address applies to raw binaries only"):
        load_image(path, address=0x8000_0000)


def test_truncated_elf_is_one_line_input_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.elf"
    path.write_bytes(elf64([(0, 0x8000_0000, b"payload" * 10, 70)])[:100])
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_elf_without_loadable_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.elf"
    path.write_bytes(elf64([(0, 0x8000_0000, b"", 0x1000)], extra=[(PT_NOTE, b"n")]))
    with pytest.raises(InputError, match="nothing to load"):
        load_image(path)


def test_overlapping_segments_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "overlap.elf"
    path.write_bytes(elf64([(0, 0x8000_0000, b"a" * 16, 16), (0, 0x8000_0008, b"b" * 16, 16)]))
    with pytest.raises(InputError, match="segments overlap: 0x80000000-0x8000000f"):
        load_image(path)


def test_bad_hex_checksum_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.hex"
    path.write_text(":0100000041BF\n:00000001FF\n")
    with pytest.raises(InputError, match=r"bad\.hex: bad Intel HEX") as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read image"):
        load_image(tmp_path / "nope.bin", address=0)


def test_image_in_non_secure_dram_fits() -> None:
    segments = (Segment(0x8000_0000, bytes(64)), Segment(0x8_8000_0000, bytes(64)))
    check_fits(Image("x.bin", "bin", segments), REGIONS, pas=Pas.NONSECURE)


def test_image_in_device_space_does_not_fit() -> None:
    image = Image("fw.bin", "bin", (Segment(0x1C09_0000, b"\x00" * 4),))
    with pytest.raises(InputError) as info:
        check_fits(image, REGIONS)
    message = str(info.value)
    assert message.startswith("fw.bin: segment 0x1c090000-0x1c090003 (4 bytes) is outside loadable memory")
    assert "ns-dram1 0x80000000-0xfbffffff" in message
    assert "\n" not in message
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_image_running_past_the_end_of_dram_does_not_fit() -> None:
    image = Image("fw.bin", "bin", (Segment(0x8_8000_0000 + 0x8000_0000 - 2, b"\x00" * 4),))
    with pytest.raises(InputError, match="outside loadable memory"):
        check_fits(image, REGIONS)


def test_realm_memory_is_unreachable_for_a_probe_load() -> None:
    image = Image("rmm.bin", "bin", (Segment(0xFDC0_0000, b"\x00" * 16),))
    with pytest.raises(InputError, match="lies in rmm, which a nonsecure access cannot reach"):
        check_fits(image, REGIONS, pas=Pas.NONSECURE)
    with pytest.raises(InputError, match="lies in rmm, which a secure access cannot reach"):
        check_fits(image, REGIONS, pas=Pas.SECURE)


def test_secure_dram_is_reachable_with_the_secure_pas_only() -> None:
    image = Image("bl32.bin", "bin", (Segment(0xFC00_0000, b"\x00" * 16),))
    check_fits(image, REGIONS, pas=Pas.SECURE)
    with pytest.raises(InputError, match="secure-tzc-dram, which a nonsecure access cannot reach"):
        check_fits(image, REGIONS, pas=Pas.NONSECURE)


def test_segment_spanning_adjacent_regions_fits() -> None:
    # trusted-sram ends where nothing starts; ns-dram1 ends where secure-tzc-dram starts.
    image = Image("span.bin", "bin", (Segment(0xFBFF_FFF0, b"\x00" * 32),))
    check_fits(image, REGIONS)
    with pytest.raises(InputError, match="secure-tzc-dram"):
        check_fits(image, REGIONS, pas=Pas.NONSECURE)
