"""Fault injection, and the at-most-once guarantee through a noisy line."""

from __future__ import annotations

import pytest
from agent_support import Bench, BenchFactory

from cca_hil.agent.link import LinkTimeouts
from cca_hil.agent.noise import NoiseSpec, NoisyStream
from cca_hil.agent.streams import stream_pair
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.errors import InputError

DELEGATE = RMI_1_0["granule_delegate"].fid
UNDELEGATE = RMI_1_0["granule_undelegate"].fid
POOL = 0x9000_0000
NOISE = "ber=1e-4,drop=1e-3,dup=1e-3"
NOISY_TIMEOUTS = LinkTimeouts(boot=10.0, handshake=0.2, request=0.25, bulk=1.0, gap=0.02)


def test_noise_spec_parses_the_documented_form() -> None:
    spec = NoiseSpec.parse(NOISE)
    assert (spec.ber, spec.drop, spec.dup, spec.delay) == (1e-4, 1e-3, 1e-3, 0.0)
    assert NoiseSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("bad", ["ber=2", "jitter=1", "drop", "dup=lots"])
def test_noise_spec_rejects_bad_input_and_names_the_valid_keys(bad: str) -> None:
    with pytest.raises(InputError) as err:
        NoiseSpec.parse(bad)
    if "jitter" in bad:
        assert "valid: ber, drop, dup, delay" in str(err.value)


def _through(spec: str, seed: int, data: bytes, chunk: int) -> tuple[bytes, tuple[int, int, int]]:
    left, right = stream_pair()
    noisy = NoisyStream(left, spec, seed=seed)
    try:
        received = bytearray()
        for start in range(0, len(data), chunk):
            noisy.write(data[start : start + chunk])
            while right.in_waiting:
                received += right.read(right.in_waiting)
        while piece := right.read(65536):
            received += piece
        return bytes(received), (noisy.tx.flipped, noisy.tx.dropped, noisy.tx.duplicated)
    finally:
        left.close()
        right.close()


def test_noise_is_deterministic_from_the_seed_whatever_the_chunking() -> None:
    data = bytes(range(256)) * 200
    first, counts = _through("ber=1e-3,drop=1e-3,dup=1e-3", 7, data, 100)
    again, _ = _through("ber=1e-3,drop=1e-3,dup=1e-3", 7, data, 4096)
    other, _ = _through("ber=1e-3,drop=1e-3,dup=1e-3", 8, data, 100)
    assert first == again
    assert first != other and first != data
    assert all(count > 0 for count in counts)


def test_ten_thousand_calls_through_noise_run_exactly_once_with_right_results(
    bench_factory: BenchFactory,
) -> None:
    bench: Bench = bench_factory()
    noisy = NoisyStream(bench.host, NOISE, seed=2024)
    link = bench.link(noisy, timeouts=NOISY_TIMEOUTS)
    granules = [POOL + i * 0x1000 for i in range(16)]
    wrong = []
    with link:
        for call in range(10_000):
            # Delegate then undelegate each granule: a call run twice fails the second time, and a
            # lost call makes the next one fail, so every wrong count shows up as a wrong result.
            granule = granules[(call // 2) % len(granules)]
            fid = DELEGATE if call % 2 == 0 else UNDELEGATE
            if link.smc(fid, granule)[0] != 0:
                wrong.append(call)
    emulator = bench.emulator
    assert wrong == []
    assert emulator.duplicates() == {}
    assert emulator.executed == 10_000
    # The line really was noisy: damaged frames were seen, resent and replayed.
    assert link.stats.resends > 100 and emulator.replays > 0 and emulator.naks_sent > 0
    assert noisy.tx.flipped and noisy.tx.dropped and noisy.tx.duplicated


def test_bulk_transfer_through_noise_shrinks_frames_and_arrives_intact(bench_factory: BenchFactory) -> None:
    bench: Bench = bench_factory()
    link = bench.link(NoisyStream(bench.host, NOISE, seed=99), timeouts=NOISY_TIMEOUTS)
    data = bytes((i * 7 + i // 256) & 0xFF for i in range(48 * 1024))
    with link:
        link.write(POOL, data)
        assert link.read(POOL, len(data)) == data
    assert bench.emulator.machine.ns_read(POOL, len(data)) == data
