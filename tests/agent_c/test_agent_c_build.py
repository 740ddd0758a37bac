"""The cross build: warnings are errors, and each image is linked where its platform loads it."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from agent_c_support import AGENT_DIR, CROSS_GCC, make, require_tools

ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
PT_LOAD = 1


def _elf(path: Path) -> tuple[int, int, int]:
    """(machine, entry point, lowest load address) of a little-endian ELF64 file."""
    data = path.read_bytes()
    ident, _type, machine, _version, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum, *_ = (
        ELF_HEADER.unpack_from(data)
    )
    assert ident[:4] == b"\x7fELF" and ident[4] == 2 and ident[5] == 1
    loads = []
    for index in range(phnum):
        kind, _flags, _offset, vaddr, *_ = PROGRAM_HEADER.unpack_from(data, phoff + index * phentsize)
        if kind == PT_LOAD:
            loads.append(vaddr)
    return machine, entry, min(loads)


@pytest.mark.parametrize(
    ("platform", "load", "uart"), [("qemu", 0x4008_0000, "0x09000000"), ("fvp", 0x8800_0000, "0x1c090000")]
)
def test_cross_build_with_warnings_as_errors_links_each_image_where_it_is_loaded(
    platform: str, load: int, uart: str
) -> None:
    require_tools(CROSS_GCC, "make")
    make(f"PLATFORM={platform}")
    commands = subprocess.run(
        ["make", "-C", str(AGENT_DIR), "-B", "-n", f"PLATFORM={platform}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    compiles = [
        line for line in commands.splitlines() if " -c " in line and line.endswith(".o") and ".c " in line
    ]
    assert compiles
    for line in compiles:
        for flag in (
            "-Wall",
            "-Wextra",
            "-Werror",
            "-ffreestanding",
            "-nostdlib",
            "-std=c11",
            "-mgeneral-regs-only",
        ):
            assert flag in line.split(), (flag, line)
        assert f"-DUART_BASE={uart}" in line
    out = AGENT_DIR / "build" / platform
    aarch64 = 183
    assert _elf(out / "agent.elf") == (aarch64, load, load)
    assert _elf(out / "realm-payload.elf")[::2] == (aarch64, 0)
    binary = (out / "agent.bin").read_bytes()
    # The flat image starts with the entry code (`msr daifset, #0xf`), as a BL33 loaded at its address must.
    assert binary[:4] == bytes.fromhex("df4f03d5")
    assert (out / "realm-payload.bin").stat().st_size > 0
