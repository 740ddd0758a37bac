"""RMM model throughput: delegate+undelegate pairs, full realm lifecycles, the conformance suite.

Baseline, measured in the same run: a pair of calls to a trivial Python method
taking the same arguments — the floor of any Python dispatch, so the ratio says
how many "bare calls" one RMI call costs on this machine.
"""

from __future__ import annotations

from _timing import rate

from cca_hil.model.machine import Machine

DELEGATE = 0xC400_0151
UNDELEGATE = 0xC400_0152
POOL = 0x9000_0000


class _Bare:
    def smc(self, fid: int, *args: int) -> tuple[int, int, int, int, int]:
        return (0, 0, 0, 0, 0)


def _pairs(target: object, n: int) -> None:
    smc = target.smc  # type: ignore[attr-defined]
    for i in range(n):
        pa = POOL + ((i & 0xFFF) << 12)
        smc(DELEGATE, pa)
        smc(UNDELEGATE, pa)


def bench_delegate_pairs() -> None:
    """Delegate+undelegate pairs per second through Machine.smc (goal ≥ 50,000/s)."""
    machine = Machine()
    bare = _Bare()
    baseline = rate(lambda n: _pairs(bare, n))
    pairs = rate(lambda n: _pairs(machine, n))
    print(
        f"rmm.delegate_undelegate: {pairs:,.0f} pairs/s "
        f"(baseline bare call pair {baseline:,.0f}/s; one pair costs {baseline / pairs:.1f}x a bare pair; "
        f"goal >= 50,000/s: {'met' if pairs >= 50_000 else 'NOT met'})"
    )


def main() -> None:
    """Print every RMM figure."""
    bench_delegate_pairs()


if __name__ == "__main__":
    main()
