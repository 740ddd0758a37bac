"""The platform's attestation service as the modelled RMM uses it: the RAK and the CCA platform token.

On a real platform EL3 hands the RMM a Realm Attestation Key and a platform
token signed by the Initial Attestation Key, whose challenge is the hash of
the RAK (rmm-abi.md §10.1, §10.3). Both are platform data chosen by the
profile (``model.attestation.keys``):

``seed`` (default)
    IAK and RAK are P-384 keys derived from the model seed: the private value
    is ``1 + (int(K) mod (n - 1))`` where ``K`` is the first 64 bytes of
    ``SHA-512("cca-hil model attestation key" ‖ label ‖ seed as 8 LE bytes)``
    and ``n`` the P-384 group order (FIPS 186-5 A.2.1, "extra random bits":
    512 bits reduced mod an order below 2^384 leave a negligible bias). The
    platform token is built by the model and signed with the IAK.
``fvp-sample``
    The sample RAK TF-A gives the RMM on an FVP (rmm-abi.md §10.4). FVP's
    sample platform token is TF-A data that cca-hil does not ship: a profile
    may name the file holding it (``model.attestation.platform_token``);
    without one the model builds a platform token of FVP's shape bound to the
    sample RAK and signs it with the seed's IAK.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cca_hil.arch.token import (
    PLATFORM_PROFILE,
    CoseAlg,
    EcPublicKey,
    PlatformClaim,
    Sign1,
    encode_collection,
    encode_platform_claims,
    public_key_of,
)
from cca_hil.errors import ProfileError

KeySource = Literal["seed", "fvp-sample"]
KEY_SOURCES: tuple[KeySource, ...] = ("seed", "fvp-sample")

P384_ORDER = (
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
)
"""The order n of the NIST P-384 base point (FIPS 186-5 / SP 800-186 3.2.1.4)."""
FVP_SAMPLE_RAK = (
    0x2011C7F03CEE4325176E524F033C0CE1E21A76E6C1A4F0B839AA1DF61E0E8A5C8A05740F9B69EFA7EB1A4185BD117F68
)
"""TF-A's fixed sample RAK private scalar for FVP (plat/arm/board/fvp/fvp_realm_attest_key.c)."""
LIFECYCLE_SECURED = 0x3000
"""PSA lifecycle "secured" (state 0x30 in bits 15:8), the state a production platform attests."""
_KDF_LABEL = b"cca-hil model attestation key"


def derive_private_value(seed: int, label: bytes, order: int = P384_ORDER) -> int:
    """An ECDSA private value in [1, n-1] derived from the model seed (see the module docstring)."""
    material = hashlib.sha512(_KDF_LABEL + label + (seed & (2**64 - 1)).to_bytes(8, "little")).digest()
    return 1 + int.from_bytes(material, "big") % (order - 1)


@dataclass(frozen=True)
class AttestationConfig:
    """The profile's ``model.attestation`` section."""

    keys: KeySource = "seed"
    platform_token: Path | None = None
    """A file with the platform token to use verbatim (e.g. TF-A's FVP sample token)."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AttestationConfig:
        """Validate the section (ProfileError naming the bad value)."""
        keys = params.get("keys", "seed")
        if keys not in KEY_SOURCES:
            raise ProfileError(f"unknown model.attestation.keys {keys!r}", valid=KEY_SOURCES)
        token = params.get("platform_token")
        return cls(keys=keys, platform_token=Path(token) if token else None)


@dataclass
class PlatformAttestation:
    """EL3's attestation data: RAK, IAK and the platform token bound to the RAK (RMM 1.0 A7.2)."""

    rak_private: int
    iak_private: int
    platform_config: bytes
    """Platform configuration claim (2401): the modelled RMM's feature register 0, 8 bytes LE."""
    seed: int = 0
    platform_token_override: bytes | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, *, seed: int, config: AttestationConfig, platform_config: bytes) -> PlatformAttestation:
        """The attestation data a profile asks for."""
        rak = FVP_SAMPLE_RAK if config.keys == "fvp-sample" else derive_private_value(seed, b"RAK")
        override = None
        if config.platform_token is not None:
            try:
                override = config.platform_token.read_bytes()
            except OSError as exc:
                raise ProfileError(f"cannot read model.attestation.platform_token: {exc}") from exc
        return cls(
            rak_private=rak,
            iak_private=derive_private_value(seed, b"IAK"),
            platform_config=platform_config,
            seed=seed,
            platform_token_override=override,
        )

    @property
    def rak(self) -> EcPublicKey:
        """The RAK's public key."""
        if "rak" not in self._cache:
            self._cache["rak"] = public_key_of(self.rak_private, CoseAlg.ES384)
        key: EcPublicKey = self._cache["rak"]
        return key

    @property
    def iak(self) -> EcPublicKey:
        """The IAK's public key (what a verifier gets from the platform's endorsements)."""
        if "iak" not in self._cache:
            self._cache["iak"] = public_key_of(self.iak_private, CoseAlg.ES384)
        key: EcPublicKey = self._cache["iak"]
        return key

    def rak_claim(self) -> bytes:
        """The RAK as the Realm token's claim 44237 (serialized COSE_Key)."""
        if "rak_claim" not in self._cache:
            self._cache["rak_claim"] = self.rak.cose_key()
        claim: bytes = self._cache["rak_claim"]
        return claim

    def platform_token(self) -> bytes:
        """The CCA platform token; fetched once and reused for every CCA token, as TF-RMM does (§10.1)."""
        if self.platform_token_override is not None:
            return self.platform_token_override
        if "platform" not in self._cache:
            self._cache["platform"] = Sign1.sign(
                encode_platform_claims(self.platform_claims()), self.iak_private, CoseAlg.ES384
            ).encode()
        token: bytes = self._cache["platform"]
        return token

    def platform_claims(self) -> dict[int, Any]:
        """The model's platform claims (RMM 1.0 A7.2.3.2), every value derived from the seed and keys."""
        iak = self.iak.cose_key()
        seed = (self.seed & (2**64 - 1)).to_bytes(8, "little")
        return {
            PlatformClaim.PROFILE: PLATFORM_PROFILE,
            PlatformClaim.CHALLENGE: hashlib.sha256(self.rak_claim()).digest(),
            PlatformClaim.IMPLEMENTATION_ID: hashlib.sha256(b"cca-hil model implementation" + seed).digest(),
            # PSA instance ID: 0x01 followed by the hash of the IAK public key.
            PlatformClaim.INSTANCE_ID: b"\x01" + hashlib.sha256(iak).digest(),
            PlatformClaim.CONFIG: self.platform_config,
            PlatformClaim.LIFECYCLE: LIFECYCLE_SECURED,
            PlatformClaim.SW_COMPONENTS: [
                {
                    1: "RMM",
                    2: hashlib.sha256(b"cca-hil model RMM" + self.platform_config).digest(),
                    5: hashlib.sha256(iak).digest(),
                    6: "sha-256",
                }
            ],
            PlatformClaim.HASH_ALGO_ID: "sha-256",
        }

    def sign_realm_token(self, payload: bytes) -> bytes:
        """The Realm token: COSE_Sign1 over ``payload`` with the RAK, ES384 (RMM 1.0 A7.2.3.1)."""
        return Sign1.sign(payload, self.rak_private, CoseAlg.ES384).encode()

    def cca_token(self, realm_token: bytes) -> bytes:
        """The CCA token collection around a Realm token."""
        return encode_collection(self.platform_token(), realm_token)
