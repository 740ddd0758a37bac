"""Small timing helpers shared by the benchmarks: best-of-N rates, measured in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(
    fn: Callable[[int], object], *, unit_per_call: int = 1, min_seconds: float = 0.3, repeats: int = 5
) -> float:
    """Best observed rate (units per second) of ``fn(n)``, which performs ``n`` iterations."""
    n = 1
    while True:
        start = time.perf_counter()
        fn(n)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds / 10 or n >= 1 << 30:
            break
        n *= 4
    n = max(1, int(n * (min_seconds / max(elapsed, 1e-9)) / 2))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        elapsed = time.perf_counter() - start
        best = max(best, n * unit_per_call / elapsed)
    return best


def wall(fn: Callable[[], object], *, repeats: int = 3) -> float:
    """Best wall time in seconds of ``fn()`` over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
