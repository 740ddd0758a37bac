"""RMM model throughput: delegate+undelegate pairs, full realm lifecycles, the conformance suite.

Baseline, measured in the same run: a pair of calls to a trivial Python method
taking the same arguments — the floor of any Python dispatch, so the ratio says
how many "bare calls" one RMI call costs on this machine.
"""

from __future__ import annotations

from _timing import rate, wall

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


def bench_realm_lifecycle() -> None:
    """Full realm lifecycles (64 measured data granules, one REC) per second, through the RMI client."""
    from cca_hil.profiles import build_target, load_profile
    from cca_hil.rmi_client import GranuleAllocator, RealmBuilder, RmiClient

    target = build_target(load_profile("model"))
    rmm = target.machine.rmm  # type: ignore[attr-defined]

    def once() -> None:
        # A fresh allocator hands out the same granules again: destroy() returned them all.
        client = RmiClient(target)
        builder = RealmBuilder(client, GranuleAllocator.for_target(target), data_granules=64)
        builder.destroy(builder.build())

    before = rmm.calls
    once()
    calls = rmm.calls - before
    seconds = wall(once, repeats=5)
    pair = 1 / rate(lambda n: _pairs(Machine(), n))
    print(
        f"rmm.realm_lifecycle_64: {1 / seconds:,.1f} lifecycles/s ({seconds * 1e3:.1f} ms, "
        f"{calls} RMI calls; = {seconds / pair:,.0f} delegate+undelegate pairs of the same run)"
    )


def bench_conformance() -> None:
    """Wall time of the whole bundled conformance suite on the model (goal < 1 s)."""
    from cca_hil.checks.conformance import conformance_sequences
    from cca_hil.profiles import build_target, load_profile
    from cca_hil.sequences import Runner

    sequences = conformance_sequences()
    steps = sum(len(seq.steps) for seq in sequences)

    def once() -> None:
        Runner(build_target(load_profile("model"))).run_all(sequences, command="conformance")

    seconds = wall(once, repeats=3)
    pair = 1 / rate(lambda n: _pairs(Machine(), n))
    print(
        f"rmm.conformance: {seconds:.3f} s for {len(sequences)} files / {steps} steps "
        f"({seconds / steps * 1e6:.1f} us per step = {seconds / steps / pair:.1f} delegate pairs; "
        f"goal < 1 s: {'met' if seconds < 1 else 'NOT met'})"
    )


def main() -> None:
    """Print every RMM figure."""
    bench_delegate_pairs()
    bench_realm_lifecycle()
    bench_conformance()


if __name__ == "__main__":
    main()
