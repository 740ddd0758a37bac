"""The CCA attestation token: CBOR/COSE codec, claim keys, ECDSA signing and verification helpers.

RMM 1.0 A7.2 (CCA attestation token; rmm-abi.md §10): a CBOR tag 399
collection of two COSE_Sign1 (RFC 9052) tokens — the CCA platform token (key
44234, signed with the platform's IAK) and the Realm token (key 44241, ES384,
signed with the RAK whose COSE_Key is its claim 44237). The platform token's
challenge binds the two: it is the hash of the RAK claim's bytes.

CBOR is cbor2's and ECDSA is ``cryptography``'s; both are imported only inside
the functions that need them, so that importing this module stays cheap.
Integers and lengths come out in their shortest form, which is the
deterministic encoding QCBOR (TF-RMM's encoder) produces, and maps keep the
order they are built in (the Realm claims in TF-RMM's order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cca_hil.arch.rmi import HashAlgorithm
from cca_hil.errors import InputError

CCA_TOKEN_TAG = 399
COSE_SIGN1_TAG = 18
REALM_PROFILE = "tag:arm.com,2023:realm#1.0.0"
PLATFORM_PROFILE = "tag:arm.com,2023:cca_platform#1.0.0"
CHALLENGE_SIZE = 64
RPV_SIZE = 64
REM_COUNT = 4


class CollectionKey(IntEnum):
    """Keys of the CCA token collection map (RMM 1.0 A7.2.2)."""

    PLATFORM = 44234
    REALM = 44241


class RealmClaim(IntEnum):
    """Realm token claim keys, in the order TF-RMM emits them (RMM 1.0 A7.2.3.1)."""

    CHALLENGE = 10
    PERSONALIZATION_VALUE = 44235
    PUBLIC_KEY = 44237
    HASH_ALGO_ID = 44236
    PUBLIC_KEY_HASH_ALGO_ID = 44240
    PROFILE = 265
    INITIAL_MEASUREMENT = 44238
    EXTENSIBLE_MEASUREMENTS = 44239


class PlatformClaim(IntEnum):
    """CCA platform token claim keys (RMM 1.0 A7.2.3.2)."""

    PROFILE = 265
    CHALLENGE = 10
    IMPLEMENTATION_ID = 2396
    INSTANCE_ID = 256
    CONFIG = 2401
    LIFECYCLE = 2395
    SW_COMPONENTS = 2399
    VERIFICATION_SERVICE = 2400
    HASH_ALGO_ID = 2402


REQUIRED_PLATFORM_CLAIMS = (
    PlatformClaim.PROFILE,
    PlatformClaim.CHALLENGE,
    PlatformClaim.IMPLEMENTATION_ID,
    PlatformClaim.INSTANCE_ID,
    PlatformClaim.CONFIG,
    PlatformClaim.LIFECYCLE,
    PlatformClaim.SW_COMPONENTS,
    PlatformClaim.HASH_ALGO_ID,
)
"""Platform claims a verifier insists on (verification service is optional)."""


class CoseAlg(IntEnum):
    """COSE algorithm identifiers of the ECDSA signatures CCA tokens use (RFC 9053 2.1)."""

    ES256 = -7
    ES384 = -35
    ES512 = -36


_CURVES = {CoseAlg.ES256: ("P-256", 32), CoseAlg.ES384: ("P-384", 48), CoseAlg.ES512: ("P-521", 66)}
_COSE_CRV = {"P-256": 1, "P-384": 2, "P-521": 3}
_COSE_KTY_EC2 = 2
HASH_ALGO_IDS = {HashAlgorithm.SHA256: "sha-256", HashAlgorithm.SHA512: "sha-512"}
"""IANA Named Information hash names of the Realm hash algorithms (claims 44236, 44240)."""
_HASHLIB = {"sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}


class TokenError(InputError):
    """A token is malformed or fails a check; ``check`` names the check (``realm_signature`` …)."""

    def __init__(self, check: str, what: str) -> None:
        self.check = check
        super().__init__(f"{check}: {what}")


def named_hash(name: str, data: bytes) -> bytes:
    """``data`` hashed with the algorithm a token names (``sha-256`` …)."""
    try:
        return hashlib.new(_HASHLIB[name], data).digest()
    except KeyError:
        raise TokenError("hash_algo", f"unknown hash algorithm {name!r}") from None


# ---------------------------------------------------------------------------
# Keys and ECDSA
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EcPublicKey:
    """An EC2 public key: curve name and the big-endian affine coordinates."""

    curve: str
    x: bytes
    y: bytes

    def cose_key(self) -> bytes:
        """COSE_Key {1: 2 (EC2), -1: crv, -2: x, -3: y}: claim 44237 as TF-RMM encodes it (RFC 9053 7.1.1)."""
        import cbor2

        return bytes(cbor2.dumps({1: _COSE_KTY_EC2, -1: _COSE_CRV[self.curve], -2: self.x, -3: self.y}))

    @classmethod
    def from_cose_key(cls, data: bytes) -> EcPublicKey:
        """Decode a COSE_Key (TokenError ``public_key`` if it is not an EC2 key on a known curve)."""
        decoded = _loads(data, "public_key")
        if not isinstance(decoded, Mapping) or decoded.get(1) != _COSE_KTY_EC2:
            raise TokenError("public_key", "claim 44237 is not an EC2 COSE_Key")
        curves = {v: k for k, v in _COSE_CRV.items()}
        curve = curves.get(decoded.get(-1))  # type: ignore[arg-type]
        x, y = decoded.get(-2), decoded.get(-3)
        if curve is None or not isinstance(x, bytes) or not isinstance(y, bytes):
            raise TokenError("public_key", "COSE_Key lacks a known curve or its coordinates")
        return cls(curve, x, y)

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM of the key (how verifiers such as Veraison take an IAK)."""
        from cryptography.hazmat.primitives import serialization

        pem: bytes = self.to_cryptography().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    @classmethod
    def from_pem(cls, data: bytes) -> EcPublicKey:
        """Decode a SubjectPublicKeyInfo PEM EC key (TokenError ``public_key`` otherwise)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise TokenError("public_key", f"not a PEM public key ({exc})") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TokenError("public_key", "the PEM key is not an elliptic-curve key")
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        curve = names.get(key.curve.name)
        if curve is None:
            raise TokenError("public_key", f"unsupported curve {key.curve.name}")
        numbers = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        return cls(curve, numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))

    def to_cryptography(self) -> Any:
        """The key as a ``cryptography`` EllipticCurvePublicKey (TokenError if it is not on the curve)."""
        from cryptography.hazmat.primitives.asymmetric import ec

        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[self.curve]
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(self.x, "big"), int.from_bytes(self.y, "big"), curve
        )
        try:
            return numbers.public_key()
        except ValueError as exc:
            raise TokenError("public_key", f"not a point on {self.curve}") from exc


def _curve_for(alg: CoseAlg) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return {
        CoseAlg.ES256: (ec.SECP256R1(), hashes.SHA256()),
        CoseAlg.ES384: (ec.SECP384R1(), hashes.SHA384()),
        CoseAlg.ES512: (ec.SECP521R1(), hashes.SHA512()),
    }[alg]


def public_key_of(private_value: int, alg: CoseAlg = CoseAlg.ES384) -> EcPublicKey:
    """The public key of an ECDSA private scalar on the curve of ``alg``."""
    from cryptography.hazmat.primitives.asymmetric import ec

    curve, _ = _curve_for(alg)
    numbers = ec.derive_private_key(private_value, curve).public_key().public_numbers()
    name, size = _CURVES[alg]
    return EcPublicKey(name, numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))


def sign_ecdsa(private_value: int, message: bytes, alg: CoseAlg = CoseAlg.ES384) -> bytes:
    """A COSE ECDSA signature (r ‖ s, big-endian) over ``message``; RFC 6979 deterministic nonces."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    curve, digest = _curve_for(alg)
    key = ec.derive_private_key(private_value, curve)
    # Deterministic signing keeps every model token reproducible from the seed.
    der = key.sign(message, ec.ECDSA(digest, deterministic_signing=True))
    r, s = decode_dss_signature(der)
    size = _CURVES[alg][1]
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify_ecdsa(key: EcPublicKey, message: bytes, signature: bytes, alg: CoseAlg) -> bool:
    """True when ``signature`` (r ‖ s) is a valid ECDSA signature of ``message`` by ``key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    name, size = _CURVES[alg]
    if key.curve != name or len(signature) != 2 * size:
        return False
    _, digest = _curve_for(alg)
    der = encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    try:
        key.to_cryptography().verify(der, message, ec.ECDSA(digest))
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------
# COSE_Sign1
# ---------------------------------------------------------------------------


def _loads(data: bytes, check: str) -> Any:
    import cbor2

    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise TokenError(check, f"not well-formed CBOR ({exc})") from exc


def protected_header(alg: CoseAlg) -> bytes:
    """The serialized protected header {1: alg} (ES384: ``a1 01 38 22``)."""
    import cbor2

    return bytes(cbor2.dumps({1: int(alg)}))


@dataclass(frozen=True, slots=True)
class Sign1:
    """A COSE_Sign1 message: serialized protected header, unprotected map, payload, signature."""

    protected: bytes
    unprotected: Mapping[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> int | None:
        """The algorithm the protected header names (None if it names none)."""
        header = _loads(self.protected, "protected_header") if self.protected else {}
        value = header.get(1) if isinstance(header, Mapping) else None
        return value if isinstance(value, int) else None

    def to_be_signed(self) -> bytes:
        """Sig_structure ["Signature1", protected, h'', payload] (RFC 9052 4.4)."""
        import cbor2

        return bytes(cbor2.dumps(["Signature1", self.protected, b"", self.payload]))

    def encode(self) -> bytes:
        """Tag 18 [protected, unprotected, payload, signature]."""
        import cbor2

        body = [self.protected, dict(self.unprotected), self.payload, self.signature]
        return bytes(cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body)))

    @classmethod
    def sign(cls, payload: bytes, private_value: int, alg: CoseAlg = CoseAlg.ES384) -> Sign1:
        """Sign ``payload`` with an empty unprotected header, as TF-RMM does for the Realm token."""
        unsigned = cls(protected_header(alg), {}, payload, b"")
        return cls(unsigned.protected, {}, payload, sign_ecdsa(private_value, unsigned.to_be_signed(), alg))

    @classmethod
    def decode(cls, data: bytes, which: str) -> Sign1:
        """Parse a tagged COSE_Sign1; TokenError ``<which>_sign1`` names what is wrong."""
        import cbor2

        check = f"{which}_sign1"
        item = _loads(data, check)
        if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
            raise TokenError(check, f"the {which} token is not a tag-18 COSE_Sign1")
        body = item.value
        if not (
            isinstance(body, (list, tuple))
            and len(body) == 4
            and isinstance(body[0], bytes)
            and isinstance(body[1], Mapping)
            and isinstance(body[2], bytes)
            and isinstance(body[3], bytes)
        ):
            raise TokenError(check, f"the {which} COSE_Sign1 is not [bstr, map, bstr, bstr]")
        return cls(body[0], body[1], body[2], body[3])


# ---------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RealmClaims:
    """The Realm token's claims (RMM 1.0 A7.2.3.1): measurements are digests, not the 64-byte storage form."""

    challenge: bytes
    rpv: bytes
    public_key: bytes
    """The RAK as a serialized COSE_Key (the bytes the platform challenge hashes)."""
    hash_algo: str
    public_key_hash_algo: str
    rim: bytes
    rems: tuple[bytes, ...]
    profile: str | None = REALM_PROFILE

    def to_map(self) -> dict[int, Any]:
        """The claims map, keys in TF-RMM's order."""
        claims: dict[int, Any] = {
            RealmClaim.CHALLENGE: self.challenge,
            RealmClaim.PERSONALIZATION_VALUE: self.rpv,
            RealmClaim.PUBLIC_KEY: self.public_key,
            RealmClaim.HASH_ALGO_ID: self.hash_algo,
            RealmClaim.PUBLIC_KEY_HASH_ALGO_ID: self.public_key_hash_algo,
        }
        if self.profile is not None:
            claims[RealmClaim.PROFILE] = self.profile
        claims[RealmClaim.INITIAL_MEASUREMENT] = self.rim
        claims[RealmClaim.EXTENSIBLE_MEASUREMENTS] = list(self.rems)
        return {int(k): v for k, v in claims.items()}

    def encode(self) -> bytes:
        """The serialized claims map (the Realm token's payload)."""
        import cbor2

        return bytes(cbor2.dumps(self.to_map()))

    @classmethod
    def from_map(cls, claims: Mapping[Any, Any]) -> RealmClaims:
        """Check and convert a decoded claims map (TokenError ``realm_claims`` names the bad claim)."""
        for key in RealmClaim:
            if key is not RealmClaim.PROFILE and key not in claims:
                raise TokenError("realm_claims", f"claim {int(key)} ({key.name.lower()}) is missing")
        sizes = {RealmClaim.CHALLENGE: CHALLENGE_SIZE, RealmClaim.PERSONALIZATION_VALUE: RPV_SIZE}
        for key, size in sizes.items():
            value = claims[key]
            if not isinstance(value, bytes) or len(value) != size:
                raise TokenError("realm_claims", f"claim {int(key)} is not a {size}-byte bstr")
        for key in (RealmClaim.HASH_ALGO_ID, RealmClaim.PUBLIC_KEY_HASH_ALGO_ID):
            if not isinstance(claims[key], str):
                raise TokenError("realm_claims", f"claim {int(key)} is not a text string")
        rim = claims[RealmClaim.INITIAL_MEASUREMENT]
        rems = claims[RealmClaim.EXTENSIBLE_MEASUREMENTS]
        if not isinstance(rim, bytes) or len(rim) not in (32, 48, 64):
            raise TokenError("realm_claims", "claim 44238 (RIM) is not a 32/48/64-byte bstr")
        # cbor2 decodes arrays inside tags as tuples.
        array = isinstance(rems, (list, tuple)) and len(rems) == REM_COUNT
        if not (array and all(isinstance(r, bytes) for r in rems)):
            raise TokenError("realm_claims", "claim 44239 is not an array of 4 bstr")
        if not isinstance(claims[RealmClaim.PUBLIC_KEY], bytes):
            raise TokenError("realm_claims", "claim 44237 is not a bstr")
        profile = claims.get(RealmClaim.PROFILE)
        if profile is not None and not isinstance(profile, str):
            raise TokenError("realm_claims", "claim 265 is not a text string")
        return cls(
            challenge=claims[RealmClaim.CHALLENGE],
            rpv=claims[RealmClaim.PERSONALIZATION_VALUE],
            public_key=claims[RealmClaim.PUBLIC_KEY],
            hash_algo=claims[RealmClaim.HASH_ALGO_ID],
            public_key_hash_algo=claims[RealmClaim.PUBLIC_KEY_HASH_ALGO_ID],
            rim=rim,
            rems=tuple(rems),
            profile=profile,
        )


def encode_platform_claims(claims: Mapping[int, Any]) -> bytes:
    """A serialized platform claims map (keys in the order given)."""
    import cbor2

    return bytes(cbor2.dumps({int(k): v for k, v in claims.items()}))


def encode_collection(platform_token: bytes, realm_token: bytes) -> bytes:
    """The CCA token: tag 399 {44234: platform token, 44241: realm token}, platform first (as TF-RMM)."""
    import cbor2

    collection = {int(CollectionKey.PLATFORM): platform_token, int(CollectionKey.REALM): realm_token}
    return bytes(cbor2.dumps(cbor2.CBORTag(CCA_TOKEN_TAG, collection)))


@dataclass(frozen=True)
class CcaToken:
    """A decoded CCA token: both COSE_Sign1 messages and their claims."""

    platform_token: bytes
    realm_token: bytes
    platform: Sign1
    realm: Sign1
    platform_claims: Mapping[int, Any]
    realm_claims: RealmClaims

    @property
    def rak(self) -> EcPublicKey:
        """The RAK the Realm token names (claim 44237)."""
        return EcPublicKey.from_cose_key(self.realm_claims.public_key)


def decode(data: bytes) -> CcaToken:
    """Parse a CCA token; TokenError's ``check`` says which structural check failed.

    Checks, in order: ``cbor``, ``tag``, ``collection``, ``platform_sign1``,
    ``realm_sign1``, ``platform_claims``, ``realm_claims``.
    """
    import cbor2

    item = _loads(data, "cbor")
    if not isinstance(item, cbor2.CBORTag) or item.tag != CCA_TOKEN_TAG:
        raise TokenError("tag", f"not a CBOR tag {CCA_TOKEN_TAG} CCA token collection")
    collection = item.value
    if not (
        isinstance(collection, Mapping)
        and isinstance(collection.get(CollectionKey.PLATFORM), bytes)
        and isinstance(collection.get(CollectionKey.REALM), bytes)
    ):
        raise TokenError("collection", "the collection needs bstr entries 44234 (platform) and 44241 (realm)")
    platform_bytes = collection[CollectionKey.PLATFORM]
    realm_bytes = collection[CollectionKey.REALM]
    platform = Sign1.decode(platform_bytes, "platform")
    realm = Sign1.decode(realm_bytes, "realm")
    platform_claims = _loads(platform.payload, "platform_claims")
    if not isinstance(platform_claims, Mapping):
        raise TokenError("platform_claims", "the platform payload is not a map")
    for key in REQUIRED_PLATFORM_CLAIMS:
        if key not in platform_claims:
            raise TokenError("platform_claims", f"claim {int(key)} ({key.name.lower()}) is missing")
    if not isinstance(platform_claims[PlatformClaim.CHALLENGE], bytes):
        raise TokenError("platform_claims", "claim 10 (challenge) is not a bstr")
    realm_map = _loads(realm.payload, "realm_claims")
    if not isinstance(realm_map, Mapping):
        raise TokenError("realm_claims", "the realm payload is not a map")
    return CcaToken(
        platform_token=platform_bytes,
        realm_token=realm_bytes,
        platform=platform,
        realm=realm,
        platform_claims=platform_claims,
        realm_claims=RealmClaims.from_map(realm_map),
    )


@dataclass(frozen=True, slots=True)
class Check:
    """One verification check: name, outcome, and what was found."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`: every check that ran, and the token when it could be parsed."""

    checks: tuple[Check, ...]
    token: CcaToken | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the checks that failed."""
        return tuple(c.name for c in self.checks if not c.ok)


@dataclass(frozen=True)
class Expectations:
    """What a verifier compares the claims with (RMM 1.0 A7.2.3; None: not compared)."""

    challenge: bytes | None = None
    rim: bytes | None = None
    rems: Sequence[bytes] | None = None
    rpv: bytes | None = None
    rak: EcPublicKey | None = None
    """The RAK the platform is known to use (from the target's facts)."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def verify(
    data: bytes, *, iak: EcPublicKey | None = None, expect: Expectations | None = None
) -> Verification:
    """Verify a CCA token as a relying party would (rmm-abi.md §10.3), naming every check.

    Structure (see :func:`decode`), then ``realm_alg`` (ES384 in the protected
    header), ``realm_signature`` (with the RAK of claim 44237), ``binding``
    (platform challenge = hash of the RAK claim), ``platform_signature`` (only
    with an ``iak``), and the comparisons ``rak``, ``challenge``, ``rim``,
    ``rems``, ``rpv`` that ``expect`` asks for.
    """
    try:
        token = decode(data)
    except TokenError as exc:
        return Verification((Check(exc.check, False, exc.what),))
    checks: list[Check] = []
    claims = token.realm_claims
    alg = token.realm.alg
    checks.append(Check("realm_alg", alg == CoseAlg.ES384, f"alg {alg} (ES384 is {int(CoseAlg.ES384)})"))
    try:
        rak = token.rak
        good = alg == CoseAlg.ES384 and verify_ecdsa(
            rak, token.realm.to_be_signed(), token.realm.signature, CoseAlg.ES384
        )
        checks.append(Check("realm_signature", good, "signature by the RAK of claim 44237"))
    except TokenError as exc:
        checks.append(Check("realm_signature", False, exc.what))
    try:
        want = named_hash(claims.public_key_hash_algo, claims.public_key)
        got = token.platform_claims[PlatformClaim.CHALLENGE]
        checks.append(
            Check("binding", got == want, f"platform challenge {got.hex()[:16]}…, H(RAK) {want.hex()[:16]}…")
        )
    except TokenError as exc:
        checks.append(Check("binding", False, exc.what))
    if iak is not None:
        platform_alg = token.platform.alg
        ok = platform_alg in set(CoseAlg) and verify_ecdsa(
            iak, token.platform.to_be_signed(), token.platform.signature, CoseAlg(platform_alg)
        )
        checks.append(Check("platform_signature", ok, f"signature by the IAK (alg {platform_alg})"))
    if expect is not None:
        if expect.rak is not None:
            checks.append(Check("rak", token.rak == expect.rak, "claim 44237 is the platform's RAK"))
        for name, want_value, got_value in (
            ("challenge", expect.challenge, claims.challenge),
            ("rim", expect.rim, claims.rim),
            ("rpv", expect.rpv, claims.rpv),
        ):
            if want_value is not None:
                checks.append(Check(name, got_value == want_value, f"{got_value.hex()[:32]}…"))
        if expect.rems is not None:
            checks.append(Check("rems", tuple(expect.rems) == claims.rems, "extensible measurements"))
    return Verification(tuple(checks), token)
