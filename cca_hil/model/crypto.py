"""The modelled memory protection engine: one AES-XTS key per encryption context, from the model seed.

RME system architecture (DEN0129 RMLFBL, via rme-gpt-mec.md §7.1/§7.3): memory
holding Secure, Realm or Root data is encrypted with a different context per
PAS, and with FEAT_MEC per (Realm PAS, MECID); each encryption data block
gets an address tweak. The model's choices, deterministic from the seed:

* AES-256-XTS (``cryptography``), keys derived with HKDF-SHA256 from the
  model seed and the context (PAS, MECID) — never hand-written crypto;
* one **granule** (4 KiB) is one XTS data unit, tweaked by its PA (little
  endian, 16 bytes), as the FVP's MPE with ``bp.mpe.block_size_in_bytes=4096``.
  XTS still gives every 16-byte block inside the unit its own tweak (the
  sequence α^j), so equal plaintext at PA and PA+16 encrypts differently;
* the Non-secure PAS is encrypted too, as in the FVP MEC recipe
  (``bp.mpe.non_secure_pas_enc_key``); RVSMPS lets a platform choose either.

``cryptography`` is imported on first use only: a model that never observes
memory through a foreign context never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.errors import TargetError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.modes import XTS

_SALT: Final = b"cca-hil model memory encryption v1"
_KEY_BYTES: Final = 64  # AES-256-XTS: two 256-bit keys


@dataclass(frozen=True, slots=True)
class EncryptionContext:
    """A memory encryption context: a PAS and, in the Realm PAS, a MECID (DDI0487 D7.4.1)."""

    pas: Pas
    mecid: int = 0
    generation: int = 0
    """How many times EL3 refreshed this MECID's key (RMM_MEC_REFRESH): a refresh makes a new context."""

    def __str__(self) -> str:
        return f"{self.pas.value}/mecid {self.mecid}" if self.pas is Pas.REALM else self.pas.value


class MemoryEncryption:
    """AES-XTS per context and per granule data unit; keys by HKDF-SHA256 from ``seed`` (DEN0129 RMLFBL)."""

    __slots__ = ("_ciphers", "seed")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._ciphers: dict[EncryptionContext, Cipher[XTS]] = {}

    def key(self, context: EncryptionContext) -> bytes:
        """The 64-byte XTS key of ``context`` (HKDF-SHA256, RFC 5869, over the seed)."""
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        except ImportError as exc:
            raise TargetError(
                "the model's memory encryption needs the 'cryptography' package"
                " (pip install 'cca-hil[attest]'), or set model.encryption=false"
            ) from exc
        seed = self.seed.to_bytes(-(-max(self.seed.bit_length(), 1) // 8) + 1, "little", signed=True)
        info = f"memory key {context.pas.value} mecid {context.mecid} gen {context.generation}".encode()
        return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=_SALT, info=info).derive(seed)

    def _cipher(self, context: EncryptionContext, pa: int) -> Cipher[XTS]:
        # One Cipher object per context, re-moded per data unit: the key schedule is the costly part.
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        tweak = (pa & ~(GRANULE_SIZE - 1)).to_bytes(16, "little")
        cipher = self._ciphers.get(context)
        if cipher is None:
            cipher = Cipher(algorithms.AES(self.key(context)), modes.XTS(tweak))
            self._ciphers[context] = cipher
            return cipher
        return Cipher(cipher.algorithm, modes.XTS(tweak))

    def encrypt(
        self, context: EncryptionContext, pa: int, plaintext: bytes | bytearray | memoryview
    ) -> bytes:
        """Ciphertext of the granule at ``pa`` holding ``plaintext`` under ``context``."""
        encryptor = self._cipher(context, pa).encryptor()
        return encryptor.update(bytes(plaintext)) + encryptor.finalize()

    def decrypt(self, context: EncryptionContext, pa: int, ciphertext: bytes | bytearray) -> bytes:
        """What a read under ``context`` returns for the granule at ``pa`` storing ``ciphertext``."""
        decryptor = self._cipher(context, pa).decryptor()
        return decryptor.update(bytes(ciphertext)) + decryptor.finalize()

    def observe(
        self,
        written: EncryptionContext,
        seen: EncryptionContext,
        pa: int,
        plaintext: bytes | bytearray | memoryview,
    ) -> bytes:
        """A granule written as ``plaintext`` under ``written`` read under ``seen``: Dec(Enc(plaintext))."""
        if written == seen:
            return bytes(plaintext)
        return self.decrypt(seen, pa, self.encrypt(written, pa, plaintext))
