"""Attestation data of the modelled platform: seed-derived keys, the fvp-sample option, target facts."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.errors import ProfileError
from cca_hil.model.attestation import (
    FVP_SAMPLE_RAK,
    P384_ORDER,
    AttestationConfig,
    PlatformAttestation,
    derive_private_value,
)
from cca_hil.profiles import build_target, load_profile
from cca_hil.targets.base import Capability
from cca_hil.targets.model import ModelTarget

FVP_RAK_CLAIM_SHA256 = "0d22e08a98469058486318283489bdb36f09dbefeb1864df433fa6e54ea2d711"


@given(seed=st.integers(min_value=0, max_value=2**64 - 1), label=st.binary(max_size=16))
def test_derived_private_values_are_valid_p384_scalars(seed: int, label: bytes) -> None:
    value = derive_private_value(seed, label)
    assert 1 <= value < P384_ORDER
    assert value == derive_private_value(seed, label)


def test_derivation_follows_the_documented_sha512_construction() -> None:
    digest = hashlib.sha512(b"cca-hil model attestation key" + b"RAK" + (7).to_bytes(8, "little")).digest()
    assert derive_private_value(7, b"RAK") == 1 + int.from_bytes(digest, "big") % (P384_ORDER - 1)
    assert derive_private_value(7, b"RAK") != derive_private_value(7, b"IAK")
    assert derive_private_value(7, b"RAK") != derive_private_value(8, b"RAK")


def model(*overrides: str) -> ModelTarget:
    target = build_target(load_profile("model", overrides))
    assert isinstance(target, ModelTarget)
    return target


def test_fvp_sample_keys_give_the_rak_tf_a_hands_the_rmm_on_fvp() -> None:
    target = model("model.attestation.keys=fvp-sample")
    attestation = target.machine.rmm.attestation
    assert attestation.rak_private == FVP_SAMPLE_RAK
    assert hashlib.sha256(attestation.rak_claim()).hexdigest() == FVP_RAK_CLAIM_SHA256


def test_the_default_keys_come_from_the_seed_and_survive_a_reset() -> None:
    first = model("model.seed=3")
    rak = first.machine.rmm.attestation.rak_private
    assert rak == derive_private_value(3, b"RAK")
    first.reset()
    assert first.machine.rmm.attestation.rak_private == rak
    assert model("model.seed=4").machine.rmm.attestation.rak_private != rak


def test_a_platform_token_file_is_used_verbatim(tmp_path: Path) -> None:
    token = tmp_path / "platform.cbor"
    token.write_bytes(b"\xd2\x84\x40\xa0\x40\x40")
    target = model(f"model.attestation.platform_token={token}")
    assert target.machine.rmm.attestation.platform_token() == token.read_bytes()


def test_unknown_key_source_is_a_profile_error_listing_the_valid_ones() -> None:
    with pytest.raises(ProfileError, match="fvp-sample"):
        AttestationConfig.from_params({"keys": "hsm"})


def test_the_model_reports_attestation_and_its_public_keys() -> None:
    target = model()
    assert target.has(Capability.ATTESTATION) and target.has(Capability.REALM_EXEC)
    facts = target.info().facts
    iak = target.machine.rmm.attestation.iak
    assert facts["IAK public key (P-384, x‖y)"] == (iak.x + iak.y).hex()
    assert facts["attestation keys"] == "seed"


def test_building_the_model_does_not_import_cryptography_or_cbor2() -> None:
    code = (
        "import sys\n"
        "from cca_hil.profiles import build_target, load_profile\n"
        "build_target(load_profile('model'))\n"
        "assert 'cryptography' not in sys.modules and 'cbor2' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_platform_attestation_keys_differ_between_iak_and_rak() -> None:
    attestation = PlatformAttestation.build(seed=0, config=AttestationConfig(), platform_config=b"")
    assert attestation.iak != attestation.rak
