"""Memory encryption in the model: per-PAS and per-MECID AES-XTS contexts, scrubbing, sparse storage."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.model.crypto import EncryptionContext, MemoryEncryption
from cca_hil.model.machine import Machine
from cca_hil.model.memory import NONSECURE, REALM, MemoryStore
from cca_hil.model.platform import PlatformConfig
from cca_hil.profiles import build_target, load_profile
from cca_hil.rmi_client import GranuleAllocator, RealmBuilder, RmiClient

DELEGATE = 0xC400_0151
UNDELEGATE = 0xC400_0152
POOL = 0x9000_0000
PLAIN = bytes(range(256)) * (GRANULE_SIZE // 256)


def _xts(key: bytes, pa: int, data: bytes, *, decrypt: bool) -> bytes:
    """AES-XTS over one granule with the PA as the 16-byte little-endian tweak, straight from cryptography."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(key), modes.XTS(pa.to_bytes(16, "little")))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _hkdf(seed: int, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 64, b"cca-hil model memory encryption v1", info).derive(
        seed.to_bytes(-(-max(seed.bit_length(), 1) // 8) + 1, "little", signed=True)
    )


def encrypted(**fields: object) -> Machine:
    return Machine(replace(PlatformConfig(), encryption=True, **fields))  # type: ignore[arg-type]


def test_keys_are_hkdf_sha256_of_the_seed_per_context() -> None:
    engine = MemoryEncryption(7)
    assert engine.key(EncryptionContext(Pas.REALM, 3)) == _hkdf(7, b"memory key realm mecid 3 gen 0")
    assert engine.key(EncryptionContext(Pas.REALM, 3, 1)) != engine.key(EncryptionContext(Pas.REALM, 3))
    assert len({engine.key(c) for c in (NONSECURE, REALM, EncryptionContext(Pas.REALM, 1))}) == 3


def test_a_foreign_read_is_the_plaintext_encrypted_and_decrypted_with_two_keys() -> None:
    machine = encrypted(seed=5)
    machine.ns_write(POOL, PLAIN)
    engine = MemoryEncryption(5)
    ns_key = engine.key(NONSECURE)
    realm_key = engine.key(REALM)
    stored = _xts(ns_key, POOL, PLAIN, decrypt=False)
    assert machine.read_physical(POOL, GRANULE_SIZE, Pas.REALM) == _xts(realm_key, POOL, stored, decrypt=True)
    assert machine.read_physical(POOL, GRANULE_SIZE, Pas.NONSECURE) == PLAIN


def test_every_pas_sees_different_ciphertext_and_never_the_plaintext() -> None:
    machine = encrypted()
    machine.ns_write(POOL, PLAIN)
    views = [machine.read_physical(POOL, 64, pas) for pas in (Pas.SECURE, Pas.REALM, Pas.ROOT)]
    assert PLAIN[:64] not in views
    assert len(set(views)) == 3


def test_the_pa_tweaks_the_ciphertext_within_and_across_granules() -> None:
    machine = encrypted()
    machine.ns_write(POOL, PLAIN)
    machine.ns_write(POOL + GRANULE_SIZE, PLAIN)
    first = machine.read_physical(POOL, GRANULE_SIZE, Pas.ROOT)
    second = machine.read_physical(POOL + GRANULE_SIZE, GRANULE_SIZE, Pas.ROOT)
    assert first != second
    assert first[:16] != first[256:272]  # same plaintext block, another position in the data unit


def test_ciphertext_is_deterministic_from_the_seed() -> None:
    views = []
    for seed in (1, 1, 2):
        machine = encrypted(seed=seed)
        machine.ns_write(POOL, PLAIN)
        views.append(machine.read_physical(POOL, 64, Pas.REALM))
    assert views[0] == views[1] != views[2]


def test_undelegated_granule_shows_the_scrub_ciphertext_not_the_old_data() -> None:
    machine = encrypted(seed=3)
    machine.ns_write(POOL, PLAIN)
    machine.smc(DELEGATE, POOL)
    machine.smc(UNDELEGATE, POOL)
    engine = MemoryEncryption(3)
    scrub = _xts(engine.key(REALM), POOL, bytes(GRANULE_SIZE), decrypt=False)
    expected = _xts(engine.key(NONSECURE), POOL, scrub, decrypt=True)
    assert machine.ns_read(POOL, GRANULE_SIZE) == expected


def test_without_encryption_the_scrub_reads_as_zeros_as_tf_rmm_on_fvp() -> None:
    machine = Machine()
    machine.ns_write(POOL, PLAIN)
    machine.smc(DELEGATE, POOL)
    machine.smc(UNDELEGATE, POOL)
    assert machine.ns_read(POOL, GRANULE_SIZE) == bytes(GRANULE_SIZE)


def test_a_partial_write_through_another_context_corrupts_the_whole_data_unit() -> None:
    store = MemoryStore(MemoryEncryption(0))
    store.write(POOL, PLAIN, NONSECURE)
    store.write(POOL, b"\x01", REALM)
    assert store.read(POOL, 1, REALM) == b"\x01"
    assert store.read(POOL + 1, GRANULE_SIZE - 1, NONSECURE) != PLAIN[1:]


def test_delegation_stores_no_bytes_and_untouched_memory_costs_nothing() -> None:
    for machine in (Machine(), encrypted()):
        before = machine.store.granules_in_use
        for i in range(64):
            pa = POOL + (i << 12)
            machine.smc(DELEGATE, pa)
            machine.smc(UNDELEGATE, pa)
        assert machine.store.granules_in_use == before


def test_the_model_imports_cryptography_only_when_memory_is_observed_across_contexts() -> None:
    script = (
        "import sys\n"
        "from dataclasses import replace\n"
        "from cca_hil.model.machine import Machine\n"
        "from cca_hil.model.platform import PlatformConfig\n"
        "m = Machine(replace(PlatformConfig(), encryption=True))\n"
        "m.ns_write(0x90000000, b'x' * 64)\n"
        "for i in range(8):\n"
        "    m.smc(0xC4000151, 0x90010000); m.smc(0xC4000152, 0x90010000)\n"
        "assert 'cryptography' not in sys.modules, 'imported too early'\n"
        "m.ns_read(0x90010000, 8)\n"
        "assert 'cryptography' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_each_realm_gets_a_private_mecid_and_only_it_decrypts_the_realm_data() -> None:
    target = build_target(load_profile("model-mec"))
    allocator = GranuleAllocator.for_target(target)
    client = RmiClient(target)
    realms = [RealmBuilder(client, allocator, recs=0, vmid=v).build() for v in (1, 2)]
    mecids = [target.realm_mecid(r.rd) for r in realms]
    assert mecids == [2, 3]
    data = realms[0].data[0][1]
    assert target.read_physical(data, GRANULE_SIZE, Pas.REALM, 2) == PLAIN
    assert target.read_physical(data, GRANULE_SIZE, Pas.REALM, 3) != PLAIN
    assert target.read_physical(data, GRANULE_SIZE, Pas.REALM, 0) != PLAIN


def test_a_released_mecid_gets_a_fresh_key_for_the_next_realm() -> None:
    target = build_target(load_profile("model-mec"))
    allocator = GranuleAllocator.for_target(target)
    client = RmiClient(target)
    builder = RealmBuilder(client, allocator, recs=0, vmid=1)
    first = builder.build()
    data = first.data[0][1]
    assert target.realm_mecid(first.rd) == 2
    builder.destroy(first, undelegate=False)
    second = RealmBuilder(client, allocator, data_granules=0, recs=0, vmid=2).build()
    assert target.realm_mecid(second.rd) == 2
    # The old data granule's bytes (now the scrub) cannot decrypt to the old plaintext under MECID 2 any more.
    assert target.read_physical(data, GRANULE_SIZE, Pas.REALM, 2) != PLAIN


def test_the_encryption_capability_follows_the_platform_option() -> None:
    assert not build_target(load_profile("model")).has("encryption")
    assert build_target(load_profile("model-mec")).has("encryption")
    assert build_target(load_profile("model-mec")).has("mec")


def test_read_physical_needs_the_encryption_capability() -> None:
    from cca_hil.errors import CapabilityError

    with pytest.raises(CapabilityError, match="encryption"):
        build_target(load_profile("model")).read_physical(POOL, 8, Pas.REALM)


def test_a_physical_alias_through_another_pas_reads_ciphertext() -> None:
    machine = encrypted()
    shared = 0x0600_0000  # trusted DRAM: GPI All on FVP, so every PAS reaches it
    assert machine.access(shared, "write", world=Pas.SECURE, value=0x1122_3344_5566_7788).ok
    assert machine.access(shared, "read", world=Pas.SECURE).value == 0x1122_3344_5566_7788
    alias = machine.access(shared, "read", world=Pas.NONSECURE)
    assert alias.ok and alias.value != 0x1122_3344_5566_7788
