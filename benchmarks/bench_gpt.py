"""GPT table decoding throughput: a 1 TiB PPS described entirely at level 1 (128 MiB of L1 tables).

The table set is built deterministically by ``build_tables`` from a seeded
layout of regions with random PAS: coarse zones (mostly 512/32/2 MB Contiguous
descriptors) and fine zones (Granules descriptors, mixing PAS at region edges
and in runs of single granules, as after many delegations). Baseline, measured in the same run: a numpy
copy of the same L1 bytes — the floor of any pass over the data.
"""

from __future__ import annotations

import random
import resource
import sys
import tracemalloc

from _timing import wall

from cca_hil.arch.gpt import Gpccr, Gptbr, L0GptSz, PasRegion, Pgs, Pps, build_tables, decode_tables
from cca_hil.arch.pas import Pas

SEED = 2026
TIB = 1 << 40
GIB = 1 << 30
GRANULE = 1 << 12
L0_BASE = 0x8000_0000
L1_BASE = L0_BASE + (128 << 10)
PAS_CHOICES = (Pas.SECURE, Pas.NONSECURE, Pas.ROOT, Pas.REALM, Pas.ANY)
GOAL_MB_S = 1000.0
GOAL_RATIO = 5.0


def layout(seed: int = SEED) -> list[PasRegion]:
    """Regions tiling [0, 1 TiB), every one mapped through L1 tables.

    Each GiB is a coarse zone (regions of 2 MB to 1 GB: mostly Contiguous
    descriptors) or, one in four, a fine zone (regions of 4 KB to 4 MB at
    granule alignment: Granules descriptors, many mixing PAS at region edges);
    a few fine zones hold runs of single granules with random PAS.
    """
    rng = random.Random(seed)
    regions: list[PasRegion] = []
    for zone in range(0, TIB, GIB):
        fine = rng.random() < 0.25
        position = zone
        while position < zone + GIB:
            if fine and rng.random() < 0.002:
                count = min(rng.randrange(16, 256), (zone + GIB - position) // GRANULE)
                for _ in range(count):
                    regions.append(PasRegion(position, position + GRANULE, rng.choice(PAS_CHOICES), l1=True))
                    position += GRANULE
                continue
            low, high = (12, 22) if fine else (21, 30)
            size = max(GRANULE, int(2 ** rng.uniform(low, high)) & ~(GRANULE - 1))
            end = min(zone + GIB, position + size)
            regions.append(PasRegion(position, end, rng.choice(PAS_CHOICES), l1=True))
            position = end
    return regions


def dump(gpccr: Gpccr, gptbr: Gptbr) -> tuple[bytearray, int]:
    """The L0 table and all L1 tables as one memory dump starting at L0_BASE, and the L1 byte count."""
    tables = build_tables(layout(), gpccr=gpccr, gptbr=gptbr, l1_base=L1_BASE)
    end = max(pa + len(data) for pa, data in tables.items())
    memory = bytearray(end - L0_BASE)
    for pa, data in tables.items():
        memory[pa - L0_BASE : pa - L0_BASE + len(data)] = data
    return memory, sum(len(data) for pa, data in tables.items() if pa != L0_BASE)


def descriptor_mix(memory: bytearray, l1_bytes: int) -> str:
    """Share of Contiguous, uniform Granules and mixed Granules descriptors in the L1 tables."""
    import numpy as np

    entries = np.frombuffer(memory, dtype="<u8", count=l1_bytes // 8, offset=L1_BASE - L0_BASE)
    contiguous = (entries & 0xF) == 1
    uniform = ~contiguous & (entries == (entries & 0xF) * np.uint64(0x1111_1111_1111_1111))
    total = entries.shape[0]
    return (
        f"{total:,} L1 descriptors: {contiguous.sum() / total:.1%} contiguous, "
        f"{uniform.sum() / total:.1%} uniform granules, "
        f"{(~contiguous & ~uniform).sum() / total:.2%} mixed granules"
    )


def bench_decode_l1() -> None:
    """Decode throughput over L1 bytes vs a numpy copy (goals: >= 1 GB/s, ratio <= 5x)."""
    import numpy as np

    gpccr = Gpccr(pps=Pps.TB_1, pgs=Pgs.KB_4, l0gptsz=L0GptSz.GB_1)
    gptbr = Gptbr.for_table(L0_BASE)
    memory, l1_bytes = dump(gpccr, gptbr)
    print(f"gpt.tables: {descriptor_mix(memory, l1_bytes)}")
    l1 = np.frombuffer(memory, dtype=np.uint8, count=l1_bytes, offset=L1_BASE - L0_BASE)

    pas_map = decode_tables(gpccr, gptbr, memory, L0_BASE)
    copy_s = wall(l1.copy, repeats=5)
    decode_s = wall(lambda: decode_tables(gpccr, gptbr, memory, L0_BASE), repeats=5)
    mb_s = l1_bytes / decode_s / 1e6
    ratio = decode_s / copy_s
    met = "met" if mb_s >= GOAL_MB_S and ratio <= GOAL_RATIO else "NOT met"
    print(f"gpt.decode_l1: {mb_s:.1f} MB/s (ratio vs numpy copy {ratio:.1f}x)")
    print(f"gpt.numpy_copy: {l1_bytes / copy_s / 1e6:.1f} MB/s ({l1_bytes / (1 << 20):.0f} MiB of L1 tables)")
    print(
        f"gpt.decode_runs: {len(pas_map.starts):,} PAS runs in {decode_s * 1e3:.1f} ms"
        f" (goals >= 1 GB/s, <= 5x: {met})"
    )
    tracemalloc.start()
    decode_tables(gpccr, gptbr, memory, L0_BASE)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"gpt.decode_peak_alloc: {traced / (1 << 20):.1f} MiB ({traced / l1_bytes:.2f}x the L1 bytes)")


def bench_decode_fragmented() -> None:
    """Worst case: 8 MiB of L1 (64 GB PPS) where every descriptor mixes PAS granule by granule."""
    import numpy as np

    gpccr = Gpccr(pps=Pps.GB_64, pgs=Pgs.KB_4, l0gptsz=L0GptSz.GB_1)
    geometry = gpccr.geometry
    gptbr = Gptbr.for_table(L0_BASE)
    count = geometry.l0_entries * geometry.l1_entries
    gpis = np.array([0x8, 0x9, 0xA, 0xB, 0xF], dtype=np.uint64)
    fields = gpis[np.random.default_rng(SEED).integers(0, gpis.shape[0], size=(count, 16))]
    descriptors = (fields << (np.arange(16, dtype=np.uint64) * np.uint64(4))).sum(axis=1, dtype=np.uint64)
    tables = L1_BASE + np.arange(geometry.l0_entries, dtype=np.uint64) * np.uint64(geometry.l1_table_size)
    memory = bytearray(L1_BASE - L0_BASE + count * 8)
    memory[: geometry.l0_table_size] = (tables | np.uint64(0b0011)).astype("<u8").tobytes()
    memory[L1_BASE - L0_BASE :] = descriptors.astype("<u8").tobytes()
    runs = len(decode_tables(gpccr, gptbr, memory, L0_BASE).starts)
    seconds = wall(lambda: decode_tables(gpccr, gptbr, memory, L0_BASE), repeats=3)
    print(
        f"gpt.decode_l1_fragmented: {count * 8 / seconds / 1e6:.1f} MB/s"
        f" ({runs:,} runs from {count:,} mixed descriptors, {seconds / runs * 1e9:.0f} ns per run)"
    )


def main() -> None:
    """Print every GPT figure."""
    bench_decode_l1()
    bench_decode_fragmented()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1024 if sys.platform != "darwin" else 1 << 20
    )
    print(f"gpt.peak_rss: {peak:.1f} MiB (whole run, including the table dumps it builds)")


if __name__ == "__main__":
    main()
