"""Loading through pyOCD into the simulated SW-DP: throughput, and DAP transactions per KiB.

The load goes the whole way a hardware load goes — ``ProbeSession.write`` →
pyOCD's MEM-AP block transfers → the ``ccasim`` probe's DAP register accesses →
the model's physical memory. Baseline for throughput, measured in the same run:
writing the same bytes straight into ``PhysicalMemory`` (the floor of any load).

The minimum an auto-increment MEM-AP needs per KiB with a 1 KiB TAR wrap is one
TAR write and 256 DRW beats (CSW and DP SELECT once per transfer, not per KiB):
257 register transactions. Goal: at most 1.05x that.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from _timing import wall

from cca_hil.model.memory import PhysicalMemory
from cca_hil.probe import ProbeConfig, ProbeSession
from cca_hil.sim.dap import SimDap, plugged

SIZE = 16 << 20
BASE = 0x8000_0000
KIB = 1024
MIN_PER_KIB = 1 + KIB // 4
GOAL_RATIO = 1.05


def _transactions(dap: SimDap, action: Callable[[], object]) -> int:
    dap.counters.reset()
    action()
    return dap.counters.total


def main() -> None:
    """Print the probe load figures."""
    data = random.Random(2026).randbytes(SIZE)
    memory = PhysicalMemory()
    dap = SimDap("CCASIM-BENCH", memory=memory)
    with plugged(dap), ProbeSession(ProbeConfig("CCASIM-BENCH")) as probe:
        floor_s = wall(lambda: PhysicalMemory().write(BASE, data), repeats=3)
        load_s = wall(lambda: probe.write(BASE, data), repeats=3)
        read_s = wall(lambda: probe.read(BASE, SIZE), repeats=3)
        mib = SIZE / (1 << 20)
        print(
            f"probe.load: {SIZE / load_s / 1e6:.1f} MB/s, {mib:.0f} MiB in {load_s:.2f} s "
            f"(ratio vs PhysicalMemory.write {load_s / floor_s:.1f}x)"
        )
        ratio = read_s / floor_s
        print(f"probe.read: {SIZE / read_s / 1e6:.1f} MB/s (ratio vs PhysicalMemory.write {ratio:.1f}x)")
        figures = {
            "write": _transactions(dap, lambda: probe.write(BASE, data)),
            "read": _transactions(dap, lambda: probe.read(BASE, SIZE)),
            "write_unaligned": _transactions(dap, lambda: probe.write(BASE + 1, data[: SIZE - 2])),
        }
        assert memory.read(BASE + 1, 16) == data[:16]
    for name, total in figures.items():
        per_kib = total / (SIZE / KIB)
        ratio = per_kib / MIN_PER_KIB
        met = "met" if ratio <= GOAL_RATIO else "NOT met"
        print(
            f"probe.dap_per_kib.{name}: {per_kib:.2f} transactions/KiB "
            f"(ratio vs minimum {MIN_PER_KIB} {ratio:.4f}x; goal <= {GOAL_RATIO}x: {met})"
        )


if __name__ == "__main__":
    main()
