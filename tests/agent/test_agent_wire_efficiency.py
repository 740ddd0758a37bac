"""The link's wire budget (DESIGN.md "wire efficiency is measured"): the benchmark meets the targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_agent_link.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_agent_link", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_bulk_memory_transfers_are_at_least_90_percent_payload() -> None:
    figures = _bench().measure(calls=32, kib=16, batch=64)
    assert 1024 / figures.write_wire_per_kib >= 0.90
    assert 1024 / figures.read_wire_per_kib >= 0.90


def test_batching_carries_at_least_five_times_the_calls_at_115200_baud() -> None:
    figures = _bench().measure(calls=32, kib=1, batch=64)
    assert figures.rate(figures.batch_sequential_wire) >= 5 * figures.rate(figures.call_wire)
    assert figures.rate(figures.batch_alternating_wire) >= 5 * figures.rate(figures.call_wire)


def test_benchmark_main_prints_one_line_per_figure(capsys: object) -> None:
    _bench().main()
    out = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert len(out) == 6
    assert all("raw" in line for line in out[1:])
