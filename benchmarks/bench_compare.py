"""Cost of differential runs: a board-sim conformance run with and without the shadow model.

Each run opens a fresh ``board-sim`` (a ``cca_hil.tools.sim_board`` process on a
local TCP port) and runs the whole conformance suite through the agent link; the
compared run also builds the shadow model from the board's facts and runs every
step on it in lockstep. The figure is the ratio of the two wall times, measured
in the same process one after the other.

    python benchmarks/bench_compare.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cca_hil.checks.conformance import conformance_sequences
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import RunResult
from cca_hil.sequences import Runner


def conformance_run(*, compare: bool) -> tuple[float, RunResult]:
    """Wall time (s) of one board-sim conformance run (target open to close) and its result."""
    sequences = conformance_sequences(None)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with build_target(load_profile("board-sim"), run_dir=Path(folder)) as target:
            result = Runner(target, compare=compare).run_all(sequences, command="conformance")
        return time.perf_counter() - start, result


def main() -> None:
    """Print the two wall times, the step count and the ratio compared / plain."""
    plain, plain_result = conformance_run(compare=False)
    compared, compared_result = conformance_run(compare=True)
    steps = sum(compared_result.counts().values())
    diverged = compared_result.counts()["diverged"]
    print(
        f"board-sim conformance, {steps} steps: {plain:.2f} s without --compare "
        f"(exit {plain_result.exit_code()})"
    )
    print(
        f"board-sim conformance, {steps} steps: {compared:.2f} s with --compare, {diverged} diverged "
        f"= {compared / plain:.2f}x without"
    )


if __name__ == "__main__":
    main()
