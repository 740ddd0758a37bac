"""Farm throughput: ``cca-hil farm run`` over N simulated boards against N single-board runs, N = 1, 2, 4, 8.

The baseline is one ``cca-hil --profile board-sim run`` of the same sequences,
timed in this run as a process from start to exit (interpreter, board program,
handshake, steps, shutdown). N boards run one after the other would take N times
that; the figure for each N is the farm's throughput in sequences per second and
its ratio to that baseline rate (its speed-up over running the N boards in turn).
Every board is a ``board-sim`` (its own simulated-board process), so a board
costs two processes: the speed-up is bounded by the machine's cores.

    python benchmarks/bench_farm.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQUENCES = ("realm-lifecycle", "rtt-fold", "unprotected-map")
BOARDS = (1, 2, 4, 8)
ENV = {**os.environ, "CCA_HIL_SET": ""}


def timed(argv: list[str]) -> float:
    """Wall time (s) of one cca-hil process; it must exit 0."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, check=False, timeout=1800)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"bench_farm: {' '.join(argv)} exited {done.returncode}: {done.stderr or done.stdout}"
        )
    return elapsed


def single(folder: Path) -> float:
    """Best of three single-board runs."""
    return min(
        timed(
            [
                sys.executable,
                "-m",
                "cca_hil",
                "--profile",
                "board-sim",
                "--run-dir",
                str(folder / f"single-{i}"),
                "-q",
                "run",
                *SEQUENCES,
            ]
        )
        for i in range(3)
    )


def farm(folder: Path, boards: int) -> float:
    """One farm run over ``boards`` board-sims (all at once)."""
    return timed(
        [
            sys.executable,
            "-m",
            "cca_hil",
            "--run-dir",
            str(folder / f"farm-{boards}"),
            "-q",
            "farm",
            "run",
            *SEQUENCES,
            "--profiles",
            f"board-sim*{boards}",
        ]
    )


def main() -> None:
    """Print the baseline rate and, per N, the farm's rate and its ratio to the baseline."""
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
        folder = Path(tmp)
        base = single(folder)
        rate = len(SEQUENCES) / base
        print(
            f"single board-sim run, {len(SEQUENCES)} sequences: {base:.2f} s = {rate:.2f} sequences/s "
            f"(baseline; {os.cpu_count()} CPUs)"
        )
        for boards in BOARDS:
            wall = farm(folder, boards)
            farm_rate = boards * len(SEQUENCES) / wall
            print(
                f"farm run over {boards} board-sims: {wall:.2f} s = {farm_rate:.2f} sequences/s "
                f"= {farm_rate / rate:.2f}x {boards} single runs in turn ({boards * base:.2f} s)"
            )


if __name__ == "__main__":
    main()
