"""RIM / REM descriptors and hashing (RMM 1.0 A7.1, C1.17) against the derived vectors of rmm-abi.md §9.7."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch import measurement
from cca_hil.arch.measurement import (
    DESCRIPTOR_SIZE,
    MEASUREMENT_SIZE,
    data_descriptor,
    measure,
    realm_params_image,
    rec_descriptor,
    rec_params_image,
    ripas_descriptor,
)
from cca_hil.arch.rmi import GRANULE_SIZE, HashAlgorithm
from cca_hil.arch.structs import RealmParams, RecParams

# rmm-abi.md §9.7: REALM_CREATE(flags 0, s2sz 40, sve_vl 0, num_bps 1, num_wps 1, pmu_num_ctrs 0) →
# INIT_RIPAS [0x0, 0x1000) at level 3 → DATA_CREATE at 0x1000 of a zero page, measured →
# REC_CREATE runnable, pc 0x1000, gprs 0 → (separately) REM1 extended with 32 bytes 00..1f.
VECTORS = {
    HashAlgorithm.SHA256: {
        "realm_create": "045cb3602843a6845cb710fbbfbb92f0c7d611afe0106ac2953e46950a70c42b",
        "init_ripas": "5e99b1e6b2ebb03fe15c9e109929780b9becf1a9154e6f8b64cfd9b988cc1b5f",
        "data_create": "67766adbfcbc71ea5f41a8d35d9941be7515664cc54d3c95c00cd223db8019bc",
        "rec_create": "29add99f161169ba85af98b52d3ce55b5d70381a0cdb141dd74a836e394e3d58",
        "rem1_extend": "bb2275c49f28ad52cae6d55e34a974a58c7a3ba26f976e8ecbbe7a536918dc73",
    },
    HashAlgorithm.SHA512: {
        "realm_create": "066e19aa2c3418dadc20ef31b5595907c612991952553e1e99731a677b5797c9"
        "898dffb6e3963a20b8e1af6d136cd2fe6fe25f048577dc3d7e5bf3a79a4b1e81",
        "init_ripas": "bca30a6fd3e3f5fffb9421420b3b8f506558079f8129244555190bfae94d5a68"
        "02f98c111182f3652522ebe97682f24dac5ead632509aa9e1d0cf17b80d5817f",
        "data_create": "8ee6e0c06eec22529c76ddf6e3ab3335376cd508872a3de16f472f6796f52f73"
        "77b63a2d857cc6e6259d43f0267fdb5d03dfbfc7bbd14abaabb621ccbfd483a1",
        "rec_create": "25f961e641f6154ac1937af12de402dfc0eabe4e1f4d7d3d9e87dc98985d4875"
        "05b8b9773378dcbba2502eefabf1bc6696f2a4fce561858cd3df2e8e930ad62c",
        "rem1_extend": "1b3f258fc7df037a1324b4952aaf709dcfc46aaf1af751e62808b48ab70de5ab"
        "4a98f4738472bdf0b708229d955f592d1b8fbbe4d134c65a0b9c6fce562778aa",
    },
}


def padded(hex_digest: str) -> bytes:
    """A §9.7 digest in the 64-byte zero-padded measurement form."""
    return bytes.fromhex(hex_digest).ljust(MEASUREMENT_SIZE, b"\0")


@pytest.mark.parametrize("algo", list(HashAlgorithm), ids=lambda a: a.name.lower())
def test_rim_sequence_matches_the_derived_vectors(algo: HashAlgorithm) -> None:
    expected = VECTORS[algo]
    image = realm_params_image(
        flags=0, s2sz=40, sve_vl=0, num_bps=1, num_wps=1, pmu_num_ctrs=0, hash_algo=int(algo)
    )
    rim = measurement.rim_init(algo, image)
    assert rim == padded(expected["realm_create"])
    rim = measurement.rim_extend_ripas(algo, rim, base=0x0, top=0x1000)
    assert rim == padded(expected["init_ripas"])
    rim = measurement.rim_extend_data(algo, rim, ipa=0x1000, flags=1, data=bytes(GRANULE_SIZE))
    assert rim == padded(expected["data_create"])
    rim = measurement.rim_extend_rec(algo, rim, rec_image=rec_params_image(flags=1, pc=0x1000, gprs=[0] * 8))
    assert rim == padded(expected["rec_create"])


@pytest.mark.parametrize("algo", list(HashAlgorithm), ids=lambda a: a.name.lower())
def test_rem_extend_hashes_old_digest_and_exactly_size_bytes(algo: HashAlgorithm) -> None:
    rem = measurement.rem_extend(algo, measurement.ZERO_MEASUREMENT, bytes(range(64)), 32)
    assert rem == padded(VECTORS[algo]["rem1_extend"])


def test_realm_params_image_matches_the_structure_codec() -> None:
    params = RealmParams(
        flags=4, s2sz=44, sve_vl=3, num_bps=5, num_wps=2, pmu_num_ctrs=7, hash_algo=1, vmid=9
    )
    image = realm_params_image(flags=4, s2sz=44, sve_vl=3, num_bps=5, num_wps=2, pmu_num_ctrs=7, hash_algo=1)
    assert image == params.measured_image()


def test_rec_params_image_leaves_mpidr_and_aux_out() -> None:
    params = RecParams(
        flags=1, mpidr=0x103, pc=0x8000, gprs=tuple(range(1, 9)), num_aux=16, aux=(0x9000_0000,)
    )
    assert rec_params_image(flags=1, pc=0x8000, gprs=list(range(1, 9))) == params.measured_image()


def test_descriptor_layouts_follow_c1_17() -> None:
    rim = bytes(range(32))
    content = bytes([0xAA]) * 32
    data = data_descriptor(rim=rim, ipa=0x1234_5000, flags=1, content=content)
    rec = rec_descriptor(rim=rim, content=content)
    ripas = ripas_descriptor(rim=rim, base=0x2000, top=0x4000)
    for desc, desc_type in ((data, 0), (rec, 1), (ripas, 2)):
        assert len(desc) == DESCRIPTOR_SIZE
        assert desc[0] == desc_type
        assert desc[1:8] == bytes(7)
        assert struct.unpack_from("<Q", desc, 0x08)[0] == 0x100
        assert desc[0x10:0x50] == rim.ljust(64, b"\0")
    assert struct.unpack_from("<QQ", data, 0x50) == (0x1234_5000, 1)
    assert data[0x60:0xA0] == content.ljust(64, b"\0")
    assert data[0xA0:] == bytes(0x60)
    assert rec[0x50:0x90] == content.ljust(64, b"\0")
    assert rec[0x90:] == bytes(0x70)
    assert struct.unpack_from("<QQ", ripas, 0x50) == (0x2000, 0x4000)
    assert ripas[0x60:] == bytes(0xA0)


def test_unmeasured_data_descriptor_has_zero_content() -> None:
    algo = HashAlgorithm.SHA256
    rim = measure(algo, b"start")
    page = bytes([0x5A]) * GRANULE_SIZE
    unmeasured = measurement.rim_extend_data(algo, rim, ipa=0x3000, flags=0, data=None)
    expected = measure(algo, data_descriptor(rim=rim, ipa=0x3000, flags=0, content=bytes(64)))
    assert unmeasured == expected
    assert measurement.rim_extend_data(algo, rim, ipa=0x3000, flags=1, data=page) != unmeasured


@given(data=st.binary(max_size=512), algo=st.sampled_from(list(HashAlgorithm)))
def test_measure_is_the_digest_zero_padded_to_64_bytes(data: bytes, algo: HashAlgorithm) -> None:
    name = "sha256" if algo is HashAlgorithm.SHA256 else "sha512"
    digest = hashlib.new(name, data).digest()
    value = measure(algo, data)
    assert len(value) == MEASUREMENT_SIZE
    assert value[: len(digest)] == digest
    assert value[len(digest) :] == bytes(MEASUREMENT_SIZE - len(digest))


@pytest.mark.parametrize("size", [-1, 65])
def test_rem_extend_rejects_size_outside_0_to_64(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        measurement.rem_extend(HashAlgorithm.SHA256, bytes(64), bytes(64), size)
