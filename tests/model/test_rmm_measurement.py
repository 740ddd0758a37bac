"""The RIM as the model's RMI commands build it, against the derived vectors of rmm-abi.md §9.7."""

from __future__ import annotations

import pytest
from rmm_host import Host

from cca_hil.arch.rmi import HashAlgorithm

RIM_VECTORS = {
    HashAlgorithm.SHA256: "29add99f161169ba85af98b52d3ce55b5d70381a0cdb141dd74a836e394e3d58",
    HashAlgorithm.SHA512: "25f961e641f6154ac1937af12de402dfc0eabe4e1f4d7d3d9e87dc98985d4875"
    "05b8b9773378dcbba2502eefabf1bc6696f2a4fce561858cd3df2e8e930ad62c",
}
INIT_VECTORS = {
    HashAlgorithm.SHA256: "045cb3602843a6845cb710fbbfbb92f0c7d611afe0106ac2953e46950a70c42b",
    HashAlgorithm.SHA512: "066e19aa2c3418dadc20ef31b5595907c612991952553e1e99731a677b5797c9"
    "898dffb6e3963a20b8e1af6d136cd2fe6fe25f048577dc3d7e5bf3a79a4b1e81",
}


def padded(hex_digest: str) -> bytes:
    return bytes.fromhex(hex_digest).ljust(64, b"\0")


@pytest.mark.parametrize("algo", list(HashAlgorithm), ids=lambda a: a.name.lower())
def test_realm_built_through_rmi_has_the_derived_rim(any_host: Host, algo: HashAlgorithm) -> None:
    host = any_host
    realm = host.realm(s2sz=40, hash_algo=int(algo))
    state = host.rmm.realm_at(realm.rd)
    assert state.measurements[0] == padded(INIT_VECTORS[algo])
    host.rtts(realm, 0x0, 3)
    host.ok("rtt_init_ripas", rd=realm.rd, base=0x0, top=0x1000)
    host.data(realm, 0x1000, bytes(4096), measure=True)
    host.rec(realm, pc=0x1000)
    host.ok("realm_activate", rd=realm.rd)
    assert state.measurements[0] == padded(RIM_VECTORS[algo])
    assert state.measurements[1:] == [bytes(64)] * 4


def test_rim_depends_on_the_rtt_shape_of_init_ripas(host: Host) -> None:
    block = host.realm()
    host.rtts(block, 0x0, 2)
    host.ok("rtt_init_ripas", rd=block.rd, base=0x0, top=1 << 21)
    pages = host.realm()
    host.rtts(pages, 0x0, 3)
    host.ok("rtt_init_ripas", rd=pages.rd, base=0x0, top=1 << 21)
    assert host.rmm.realm_at(block.rd).rim != host.rmm.realm_at(pages.rd).rim


def test_nothing_but_the_measured_commands_changes_the_rim(host: Host) -> None:
    realm = host.realm()
    state = host.rmm.realm_at(realm.rd)
    rim = state.rim
    host.rtts(realm, 0x0, 3)
    host.rtts(realm, 1 << 39, 3)
    host.ok("rtt_map_unprotected", rd=realm.rd, ipa=1 << 39, level=3, desc=0x8800_0000)
    host.ok("data_create_unknown", rd=realm.rd, data=host.delegated(), ipa=0x0)
    host.ok("data_destroy", rd=realm.rd, ipa=0x0)
    host.rec(realm, runnable=False)
    host.ok("rtt_destroy", rd=realm.rd, ipa=0x0, level=3)
    assert state.rim == rim
