"""Offline RIM calculation (cca_hil.measure) against the spec vectors and the model running the same file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from cca_hil.arch.token import Expectations, verify
from cca_hil.errors import InputError
from cca_hil.measure import measure_sequence
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import SequenceResult
from cca_hil.sequences import Runner, load_sequence, load_sequence_text
from cca_hil.targets.model import ModelTarget

# rmm-abi.md §9.7, "RIM after REC_CREATE".
RIM_SHA256 = "29add99f161169ba85af98b52d3ce55b5d70381a0cdb141dd74a836e394e3d58"
RIM_SHA512 = (
    "25f961e641f6154ac1937af12de402dfc0eabe4e1f4d7d3d9e87dc98985d4875"
    "05b8b9773378dcbba2502eefabf1bc6696f2a4fce561858cd3df2e8e930ad62c"
)

BUILD = """
sequence: vectors
granules: [rd, rtt0, rtt1, rtt2, rtt3, data0, rec0]
steps:
  - {{rmi: granule_delegate, args: {{addr: rd}}}}
  - {{rmi: granule_delegate, args: {{addr: rtt0}}}}
  - rmi: realm_create
    args: {{rd: rd, params: {{s2sz: 40, hash_algo: {algo}, num_bps: 1, num_wps: 1, rtt_base: rtt0,
                             rtt_level_start: 0}}}}
  - {{rmi: granule_delegate, args: {{addr: rtt1}}}}
  - {{rmi: rtt_create, args: {{rd: rd, rtt: rtt1, ipa: 0, level: 1}}}}
  - {{rmi: granule_delegate, args: {{addr: rtt2}}}}
  - {{rmi: rtt_create, args: {{rd: rd, rtt: rtt2, ipa: 0, level: 2}}}}
{shape}
  - {{rmi: granule_delegate, args: {{addr: data0}}}}
  - {{rmi: data_create, args: {{rd: rd, data: data0, ipa: 0x1000, src: {{fill: 0}}, flags: measure}}}}
  - {{rmi: granule_delegate, args: {{addr: rec0}}}}
  - {{rmi: rec_create, args: {{rd: rd, rec: rec0, params: {{flags: runnable, pc: 0x1000}}}}}}
  - {{rmi: realm_activate, args: {{rd: rd}}}}
  - name: read_rim
    rsi: measurement_read
    rec: rec0
    args: {{index: 0}}
"""

LEVEL_3 = """
  - {rmi: granule_delegate, args: {addr: rtt3}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt3, ipa: 0, level: 3}}
  - {rmi: rtt_init_ripas, args: {rd: rd, base: 0, top: 0x1000}}
"""
# The same RIPAS over a whole 2 MiB block: one descriptor instead of 512 (rmm-abi.md §11.4 #11).
LEVEL_2_BLOCK = """
  - {rmi: rtt_init_ripas, args: {rd: rd, base: 0, top: 0x200000}}
  - {rmi: granule_delegate, args: {addr: rtt3}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt3, ipa: 0, level: 3}}
"""
LEVEL_3_WHOLE_TABLE = """
  - {rmi: granule_delegate, args: {addr: rtt3}}
  - {rmi: rtt_create, args: {rd: rd, rtt: rtt3, ipa: 0, level: 3}}
  - {rmi: rtt_init_ripas, args: {rd: rd, base: 0, top: 0x200000}}
"""


@pytest.fixture
def model() -> Iterator[ModelTarget]:
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    with target:
        yield target


def run(target: ModelTarget, text: str) -> SequenceResult:
    result = Runner(target).run(load_sequence_text(text))
    assert not result.error, result.error
    failed = [(s.name, s.message) for s in result.steps if s.outcome.value != "passed"]
    assert not failed
    return result


def rim_read_by_the_realm(result: SequenceResult) -> bytes:
    value = next(s for s in result.steps if s.name == "read_rim").outputs["value"]
    assert isinstance(value, bytes)
    return value


@pytest.mark.parametrize(("algo", "expected"), [("sha256", RIM_SHA256), ("sha512", RIM_SHA512)])
def test_offline_rim_equals_the_spec_vector(algo: str, expected: str) -> None:
    (realm,) = measure_sequence(load_sequence_text(BUILD.format(algo=algo, shape=LEVEL_3)))
    assert realm.activated
    assert realm.digest.hex() == expected
    assert realm.steps[0] == "realm_create#3"


@pytest.mark.parametrize(
    "shape", [LEVEL_3, LEVEL_2_BLOCK, LEVEL_3_WHOLE_TABLE], ids=["l3", "l2-block", "l3-x512"]
)
def test_offline_rim_equals_what_the_realm_reads_on_the_model(model: ModelTarget, shape: str) -> None:
    text = BUILD.format(algo="sha256", shape=shape)
    (realm,) = measure_sequence(load_sequence_text(text))
    assert rim_read_by_the_realm(run(model, text)) == realm.rim


def test_rtt_shape_at_init_ripas_changes_the_rim() -> None:
    rims = {
        measure_sequence(load_sequence_text(BUILD.format(algo="sha256", shape=s)))[0].digest
        for s in (LEVEL_2_BLOCK, LEVEL_3_WHOLE_TABLE)
    }
    assert len(rims) == 2


def test_steps_that_expect_failure_do_not_change_the_rim() -> None:
    failing = LEVEL_3 + (
        "  - {rmi: rtt_init_ripas, args: {rd: rd, base: 0x1000, top: 0x400000}, expect: error_rtt}\n"
        "  - {rmi: rec_create, args: {rd: rd, rec: rec0, params: {flags: runnable}}, expect: error_input}\n"
    )
    (plain,) = measure_sequence(load_sequence_text(BUILD.format(algo="sha256", shape=LEVEL_3)))
    (with_failures,) = measure_sequence(load_sequence_text(BUILD.format(algo="sha256", shape=failing)))
    assert with_failures.rim == plain.rim
    assert len(with_failures.steps) == len(plain.steps)


def test_measured_data_from_an_address_cannot_be_measured_offline() -> None:
    text = BUILD.format(algo="sha256", shape=LEVEL_3).replace("src: {fill: 0}", "src: rec0 + 0x1000")
    with pytest.raises(InputError, match="contents are not in the sequence"):
        measure_sequence(load_sequence_text(text))


@pytest.mark.parametrize("encryption", [False, True], ids=["plain", "encrypted-memory"])
def test_attestation_sequence_token_carries_the_offline_rim(encryption: bool) -> None:
    model = build_target(load_profile("model"))
    assert isinstance(model, ModelTarget)
    # Per-PAS/MECID memory encryption on: the token must be read through the realm's own context.
    model.config = replace(model.config, encryption=encryption)
    model.reset()
    spec = load_sequence("cca_hil/data/sequences/attestation.yaml")
    (realm,) = measure_sequence(spec)
    result = Runner(model).run(spec)
    assert all(s.outcome.value == "passed" for s in result.steps), [s.message for s in result.steps]
    assert rim_read_by_the_realm(result) == realm.rim
    enter = next(s for s in result.steps if s.name == "token_continue")
    delivered = next(s for s in result.steps if s.command == "rsi attestation_token_continue")
    data = model.read_realm(int(enter.args["rec"]), 0x2000, int(delivered.outputs["len"]))
    report = verify(data, iak=model.machine.rmm.attestation.iak, expect=Expectations(rim=realm.digest))
    assert report.ok, report.checks
    assert report.token is not None
    assert report.token.realm_claims.challenge[:3] == b"\xc0\xff\xee"
