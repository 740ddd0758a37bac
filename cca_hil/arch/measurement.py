"""Realm measurements: the RIM and REM update rules and their 256-byte descriptors, as pure functions.

RMM 1.0 A7.1 (Realm measurements), B4.4.9 / B4.4.10 (the measured parts of
RmiRealmParams and RmiRecParams), and the RmmMeasurementDescriptorData / Rec / Ripas
structures. Every measurement is kept in its 64-byte form: a SHA-256 digest occupies
bytes 0..31 and the rest is zero, which is also how descriptors embed the
current RIM.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from cca_hil.arch.rmi import GRANULE_SIZE, MASK64, HashAlgorithm

MEASUREMENT_SIZE = 64
"""Bytes of storage per measurement (512 bits), whatever the hash algorithm."""
MEASUREMENT_SLOTS = 5
"""Index 0 is the RIM, 1..4 the REMs (RMM 1.0 A7.1.1)."""
DESCRIPTOR_SIZE = 0x100

DESC_TYPE_DATA = 0
DESC_TYPE_REC = 1
DESC_TYPE_RIPAS = 2

ZERO_MEASUREMENT = bytes(MEASUREMENT_SIZE)

_HASHLIB_NAMES = {HashAlgorithm.SHA256: "sha256", HashAlgorithm.SHA512: "sha512"}
_Q = struct.Struct("<Q")


def digest_size(algo: HashAlgorithm) -> int:
    """Bytes of a digest of ``algo`` (32 for SHA-256, 64 for SHA-512)."""
    return 32 if algo is HashAlgorithm.SHA256 else 64


def measure(algo: HashAlgorithm, data: bytes) -> bytes:
    """The Realm hash algorithm over ``data``, zero-padded to the 64-byte measurement form."""
    return hashlib.new(_HASHLIB_NAMES[algo], data).digest().ljust(MEASUREMENT_SIZE, b"\0")


def realm_params_image(
    *,
    flags: int,
    s2sz: int,
    sve_vl: int,
    num_bps: int,
    num_wps: int,
    pmu_num_ctrs: int,
    hash_algo: int,
) -> bytes:
    """The measured RmiRealmParams: only these fields at their offsets, the rest zero (RMM 1.0 A7.1.1)."""
    image = bytearray(GRANULE_SIZE)
    for offset, value in (
        (0x000, flags),
        (0x008, s2sz),
        (0x010, sve_vl),
        (0x018, num_bps),
        (0x020, num_wps),
        (0x028, pmu_num_ctrs),
        (0x030, hash_algo),
    ):
        _Q.pack_into(image, offset, value & MASK64)
    return bytes(image)


def rec_params_image(*, flags: int, pc: int, gprs: Sequence[int]) -> bytes:
    """The measured RmiRecParams: flags, pc and gprs[0..7] only (RMM 1.0 A7.1.3)."""
    image = bytearray(GRANULE_SIZE)
    _Q.pack_into(image, 0x000, flags & MASK64)
    _Q.pack_into(image, 0x200, pc & MASK64)
    for i, value in enumerate(gprs[:8]):
        _Q.pack_into(image, 0x300 + 8 * i, value & MASK64)
    return bytes(image)


def _descriptor(desc_type: int, rim: bytes) -> bytearray:
    desc = bytearray(DESCRIPTOR_SIZE)
    desc[0] = desc_type
    _Q.pack_into(desc, 0x08, DESCRIPTOR_SIZE)
    desc[0x10 : 0x10 + MEASUREMENT_SIZE] = rim.ljust(MEASUREMENT_SIZE, b"\0")
    return desc


def data_descriptor(*, rim: bytes, ipa: int, flags: int, content: bytes) -> bytes:
    """RmmMeasurementDescriptorData (type 0): current RIM, IPA, the Host's flags, content hash or zero."""
    desc = _descriptor(DESC_TYPE_DATA, rim)
    _Q.pack_into(desc, 0x50, ipa & MASK64)
    _Q.pack_into(desc, 0x58, flags & MASK64)
    desc[0x60 : 0x60 + MEASUREMENT_SIZE] = content.ljust(MEASUREMENT_SIZE, b"\0")
    return bytes(desc)


def rec_descriptor(*, rim: bytes, content: bytes) -> bytes:
    """RmmMeasurementDescriptorRec (type 1): current RIM and the hash of the measured RmiRecParams."""
    desc = _descriptor(DESC_TYPE_REC, rim)
    desc[0x50 : 0x50 + MEASUREMENT_SIZE] = content.ljust(MEASUREMENT_SIZE, b"\0")
    return bytes(desc)


def ripas_descriptor(*, rim: bytes, base: int, top: int) -> bytes:
    """RmmMeasurementDescriptorRipas (type 2): current RIM and the [base, top) of one RTT entry."""
    desc = _descriptor(DESC_TYPE_RIPAS, rim)
    _Q.pack_into(desc, 0x50, base & MASK64)
    _Q.pack_into(desc, 0x58, top & MASK64)
    return bytes(desc)


def rim_init(algo: HashAlgorithm, params_image: bytes) -> bytes:
    """RIM after RMI_REALM_CREATE: the hash of the measured RmiRealmParams (RMM 1.0 A7.1.1)."""
    return measure(algo, params_image)


def rim_extend_data(algo: HashAlgorithm, rim: bytes, *, ipa: int, flags: int, data: bytes | None) -> bytes:
    """RIM after RMI_DATA_CREATE; ``data`` is the page when its content is measured, else None (A7.1)."""
    content = measure(algo, data) if data is not None else ZERO_MEASUREMENT
    return measure(algo, data_descriptor(rim=rim, ipa=ipa, flags=flags, content=content))


def rim_extend_rec(algo: HashAlgorithm, rim: bytes, *, rec_image: bytes) -> bytes:
    """RIM after RMI_REC_CREATE of a runnable REC; ``rec_image`` from :func:`rec_params_image` (A7.1.3)."""
    return measure(algo, rec_descriptor(rim=rim, content=measure(algo, rec_image)))


def rim_extend_ripas(algo: HashAlgorithm, rim: bytes, *, base: int, top: int) -> bytes:
    """RIM after RMI_RTT_INIT_RIPAS processed the RTT entry [base, top) (RMM 1.0 A7.1)."""
    return measure(algo, ripas_descriptor(rim=rim, base=base, top=top))


def rem_extend(algo: HashAlgorithm, rem: bytes, value: bytes, size: int) -> bytes:
    """REM after RSI_MEASUREMENT_EXTEND: H(old digest ‖ first ``size`` bytes of value) (TF-RMM form)."""
    if not 0 <= size <= MEASUREMENT_SIZE:
        raise ValueError(f"measurement extension size {size} outside 0..{MEASUREMENT_SIZE}")
    return measure(algo, rem[: digest_size(algo)] + value[:size])
