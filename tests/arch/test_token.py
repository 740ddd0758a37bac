"""CCA token codec and verifier (RMM 1.0 A7.2, rmm-abi.md §10): layout, signatures, and every failed check."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.token import (
    CCA_TOKEN_TAG,
    COSE_SIGN1_TAG,
    CoseAlg,
    EcPublicKey,
    Expectations,
    PlatformClaim,
    RealmClaim,
    RealmClaims,
    Sign1,
    TokenError,
    encode_collection,
    encode_platform_claims,
    protected_header,
    verify,
)
from cca_hil.model.attestation import AttestationConfig, KeySource, PlatformAttestation

FVP_RAK_X = "76f988091be585ed41801aecfab858548c63057e16b0e676120bbd0d2f9c29e056c5d41a0130eb9c21517899dc23146b"
FVP_RAK_Y = "28e1b062bd3ea4b315fd219f1cbb528cb6e74ca49be16773734f61a1ca61031b2bbf3d918f2f94ffc4228e50919544ae"
FVP_RAK_CLAIM_SHA256 = "0d22e08a98469058486318283489bdb36f09dbefeb1864df433fa6e54ea2d711"


def attestation(keys: KeySource = "seed", seed: int = 0) -> PlatformAttestation:
    return PlatformAttestation.build(
        seed=seed, config=AttestationConfig(keys=keys), platform_config=b"\x01\x02"
    )


def realm_claims(platform: PlatformAttestation, challenge: bytes = b"\x11" * 64) -> RealmClaims:
    return RealmClaims(
        challenge=challenge,
        rpv=bytes(range(64)),
        public_key=platform.rak_claim(),
        hash_algo="sha-256",
        public_key_hash_algo="sha-256",
        rim=hashlib.sha256(b"rim").digest(),
        rems=tuple(hashlib.sha256(bytes([i])).digest() for i in range(4)),
    )


def token(platform: PlatformAttestation | None = None, claims: RealmClaims | None = None) -> bytes:
    platform = platform or attestation()
    claims = claims or realm_claims(platform)
    return platform.cca_token(platform.sign_realm_token(claims.encode()))


def independently_verified(key: EcPublicKey, sign1: list[object]) -> bool:
    """RFC 9052 Sig_structure and ECDSA P-384 verified with cbor2 and cryptography alone."""
    protected, _, payload, signature = sign1
    assert isinstance(protected, bytes) and isinstance(payload, bytes) and isinstance(signature, bytes)
    message = cbor2.dumps(["Signature1", protected, b"", payload])
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(key.x, "big"), int.from_bytes(key.y, "big"), ec.SECP384R1()
    ).public_key()
    der = encode_dss_signature(int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big"))
    try:
        public.verify(der, message, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


# -- layout -----------------------------------------------------------------------------------------------


def test_fvp_sample_rak_cose_key_matches_the_published_coordinates_and_hash() -> None:
    rak = attestation("fvp-sample")
    claim = rak.rak_claim()
    assert (rak.rak.x.hex(), rak.rak.y.hex()) == (FVP_RAK_X, FVP_RAK_Y)
    assert len(claim) == 107
    assert claim.startswith(bytes.fromhex("a401022002215830"))
    assert hashlib.sha256(claim).hexdigest() == FVP_RAK_CLAIM_SHA256


def test_realm_token_has_tf_rmm_layout_es384_header_and_590_bytes_with_sha256_measurements() -> None:
    data = token(attestation("fvp-sample"))
    outer = cbor2.loads(data)
    assert outer.tag == CCA_TOKEN_TAG
    assert list(outer.value) == [44234, 44241]
    realm = outer.value[44241]
    assert len(realm) == 590
    assert realm[:12] == bytes.fromhex("d28444a1013822a05901e1a8")
    assert data[:4] == bytes.fromhex("d9018fa2")


def test_realm_claims_come_in_tf_rmm_order() -> None:
    platform = attestation()
    payload = cbor2.loads(realm_claims(platform).encode())
    assert list(payload) == [int(k) for k in RealmClaim]


def test_platform_token_challenge_is_the_hash_of_the_rak_claim() -> None:
    platform = attestation()
    sign1 = cbor2.loads(platform.platform_token())
    assert sign1.tag == COSE_SIGN1_TAG
    claims = cbor2.loads(sign1.value[2])
    assert claims[PlatformClaim.CHALLENGE] == hashlib.sha256(platform.rak_claim()).digest()
    assert claims[PlatformClaim.INSTANCE_ID][0] == 0x01
    assert len(claims[PlatformClaim.IMPLEMENTATION_ID]) == 32


def test_both_signatures_verify_independently_of_the_codec() -> None:
    platform = attestation()
    outer = cbor2.loads(token(platform))
    realm_sign1 = cbor2.loads(outer.value[44241]).value
    platform_sign1 = cbor2.loads(outer.value[44234]).value
    rak = EcPublicKey.from_cose_key(cbor2.loads(realm_sign1[2])[44237])
    assert independently_verified(rak, list(realm_sign1))
    assert independently_verified(platform.iak, list(platform_sign1))


def test_model_tokens_are_reproducible_from_the_seed_and_differ_between_seeds() -> None:
    assert token(attestation(seed=7)) == token(attestation(seed=7))
    assert attestation(seed=7).rak != attestation(seed=8).rak
    assert attestation(seed=7).iak != attestation(seed=7).rak


@given(
    challenge=st.binary(min_size=64, max_size=64),
    rpv=st.binary(min_size=64, max_size=64),
    rim=st.binary(min_size=32, max_size=32) | st.binary(min_size=64, max_size=64),
    rems=st.lists(st.binary(min_size=32, max_size=32), min_size=4, max_size=4),
    profile=st.none() | st.just("tag:arm.com,2023:realm#1.0.0"),
)
def test_realm_claims_round_trip_through_cbor(
    challenge: bytes, rpv: bytes, rim: bytes, rems: list[bytes], profile: str | None
) -> None:
    claims = RealmClaims(
        challenge=challenge,
        rpv=rpv,
        public_key=b"\xa0",
        hash_algo="sha-512" if len(rim) == 64 else "sha-256",
        public_key_hash_algo="sha-256",
        rim=rim,
        rems=tuple(rems),
        profile=profile,
    )
    assert RealmClaims.from_map(cbor2.loads(claims.encode())) == claims


# -- verification ------------------------------------------------------------------------------------------


def test_a_well_formed_token_passes_every_check() -> None:
    platform = attestation()
    claims = realm_claims(platform)
    report = verify(
        token(platform, claims),
        iak=platform.iak,
        expect=Expectations(challenge=claims.challenge, rim=claims.rim, rems=claims.rems, rak=platform.rak),
    )
    assert report.ok, report.checks
    names = {c.name for c in report.checks}
    assert {
        "realm_alg",
        "realm_signature",
        "binding",
        "platform_signature",
        "challenge",
        "rim",
        "rak",
    } <= names


def _resign_realm(data: bytes, realm: bytes) -> bytes:
    outer = cbor2.loads(data)
    return encode_collection(outer.value[44234], realm)


def test_flipped_realm_signature_fails_realm_signature() -> None:
    data = bytearray(token())
    data[-1] ^= 0x01
    assert verify(bytes(data)).failed == ("realm_signature",)


def test_realm_token_signed_by_another_key_fails_realm_signature() -> None:
    platform = attestation()
    other = attestation(seed=99)
    claims = realm_claims(platform)
    forged = other.sign_realm_token(claims.encode())  # claim 44237 still names the platform's RAK
    assert verify(_resign_realm(token(platform), forged), iak=platform.iak).failed == ("realm_signature",)


def test_challenge_other_than_expected_fails_challenge() -> None:
    report = verify(token(), expect=Expectations(challenge=b"\x22" * 64))
    assert report.failed == ("challenge",)


def test_platform_token_bound_to_another_rak_fails_binding() -> None:
    platform = attestation()
    other = attestation(seed=5)
    realm = platform.sign_realm_token(realm_claims(platform).encode())
    data = encode_collection(other.platform_token(), realm)
    assert verify(data).failed == ("binding",)


def test_platform_token_not_signed_by_the_iak_fails_platform_signature() -> None:
    assert verify(token(), iak=attestation(seed=3).iak).failed == ("platform_signature",)


def test_truncated_token_fails_cbor() -> None:
    assert verify(token()[:-40]).failed == ("cbor",)


def test_wrong_outer_tag_fails_tag() -> None:
    outer = cbor2.loads(token())
    data = cbor2.dumps(cbor2.CBORTag(400, dict(outer.value)))
    assert verify(data).failed == ("tag",)


def test_collection_without_the_realm_token_fails_collection() -> None:
    outer = cbor2.loads(token())
    data = cbor2.dumps(cbor2.CBORTag(CCA_TOKEN_TAG, {44234: outer.value[44234]}))
    assert verify(data).failed == ("collection",)


def test_realm_token_without_the_rim_claim_fails_realm_claims() -> None:
    platform = attestation()
    claims = realm_claims(platform).to_map()
    del claims[int(RealmClaim.INITIAL_MEASUREMENT)]
    realm = platform.sign_realm_token(cbor2.dumps(claims))
    report = verify(_resign_realm(token(platform), realm))
    assert report.failed == ("realm_claims",)
    assert "44238" in report.checks[0].detail


def test_platform_token_without_lifecycle_fails_platform_claims() -> None:
    platform = attestation()
    claims = platform.platform_claims()
    del claims[PlatformClaim.LIFECYCLE]
    broken = Sign1.sign(encode_platform_claims(claims), platform.iak_private).encode()
    realm = platform.sign_realm_token(realm_claims(platform).encode())
    assert verify(encode_collection(broken, realm)).failed == ("platform_claims",)


def test_realm_token_with_an_es256_protected_header_fails_realm_alg() -> None:
    platform = attestation()
    genuine = Sign1.decode(platform.sign_realm_token(realm_claims(platform).encode()), "realm")
    relabelled = replace(genuine, protected=protected_header(CoseAlg.ES256)).encode()
    report = verify(_resign_realm(token(platform), relabelled))
    assert "realm_alg" in report.failed
    assert not report.ok


def test_a_bad_cose_key_is_a_token_error_naming_public_key() -> None:
    with pytest.raises(TokenError) as caught:
        EcPublicKey.from_cose_key(cbor2.dumps({1: 1}))
    assert caught.value.check == "public_key"
