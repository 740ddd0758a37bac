"""Run every benchmark: ``python benchmarks/run.py`` (or name some: ``python benchmarks/run.py rmm gpt``).

Each ``bench_*.py`` module has a ``main()`` printing one line per figure with the
ratio against a baseline measured in the same run, since absolute timings on
shared machines are noisy.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    """Run the named benchmark modules (all of them without arguments)."""
    sys.path.insert(0, str(HERE))
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    wanted = argv or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(
            f"run.py: error: unknown benchmark {', '.join(unknown)} (valid: {', '.join(names)})",
            file=sys.stderr,
        )
        return 2
    for name in wanted:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench_{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
