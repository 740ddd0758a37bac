"""RMI_RTT_FOLD on the model (RMM 1.0 B3.3.19): homogeneous tables fold, the rest are rtt_homo."""

from __future__ import annotations

from rmm_host import Host

from cca_hil.arch.rmi import GranuleState, Ripas, RmiStatus, RttEntryState

INPUT = RmiStatus.ERROR_INPUT
RTT = RmiStatus.ERROR_RTT
L1 = 1 << 30
L2 = 1 << 21
UNPROTECTED = 1 << 39


def test_fold_of_uniform_unassigned_table_restores_parent_ripas(host: Host) -> None:
    realm = host.realm()
    _, _, rtt3 = host.rtts(realm, 0x0, 3)
    assert host.ok("rtt_init_ripas", rd=realm.rd, base=0x0, top=L2)[1] == L2
    regs = host.ok("rtt_fold", rd=realm.rd, ipa=0x0, level=3)
    assert regs[1] == rtt3
    assert host.rmm.granule_state(rtt3) is GranuleState.DELEGATED
    assert host.read_entry(realm, 0x0, 3)[1:] == (2, RttEntryState.UNASSIGNED, 0, Ripas.RAM)


def test_fold_of_contiguous_assigned_pages_makes_a_block(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    pages = host.delegated(512, alignment=L2)
    src = host.ns()
    for i in range(512):
        host.ok("data_create", rd=realm.rd, data=pages + i * 0x1000, ipa=i * 0x1000, src=src, flags=0)
    host.ok("rtt_fold", rd=realm.rd, ipa=0x0, level=3)
    assert host.read_entry(realm, 0x0, 3)[1:] == (2, RttEntryState.ASSIGNED, pages, Ripas.RAM)


def test_fold_of_contiguous_assigned_ns_pages_makes_a_block(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, UNPROTECTED, 3)
    for i in range(512):
        desc = (0x8800_0000 + i * 0x1000) | 0xC4
        host.ok("rtt_map_unprotected", rd=realm.rd, ipa=UNPROTECTED + i * 0x1000, level=3, desc=desc)
    host.ok("rtt_fold", rd=realm.rd, ipa=UNPROTECTED, level=3)
    assert host.read_entry(realm, UNPROTECTED, 3)[1:] == (2, RttEntryState.ASSIGNED, 0x8800_0000 | 0xC4, 0)


def test_mixed_table_is_rtt_homo_at_its_level(host: Host) -> None:
    realm = host.realm()
    host.data(realm, 0x5000)
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=0x0, level=3), RTT, "rtt_homo", index=3)


def test_assigned_ns_with_different_attributes_is_rtt_homo(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, UNPROTECTED, 3)
    for i in range(512):
        desc = (0x8800_0000 + i * 0x1000) | (0xC4 if i else 0x44)
        host.ok("rtt_map_unprotected", rd=realm.rd, ipa=UNPROTECTED + i * 0x1000, level=3, desc=desc)
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=UNPROTECTED, level=3), RTT, "rtt_homo", index=3)


def map_level1_ns_blocks(host: Host) -> int:
    realm = host.realm()
    host.rtts(realm, UNPROTECTED, 1)
    for i in range(512):
        desc = (i * L1) | 0xC4
        host.ok("rtt_map_unprotected", rd=realm.rd, ipa=UNPROTECTED + i * L1, level=1, desc=desc)
    return realm.rd


def test_level_1_table_of_assigned_ns_blocks_is_rtt_homo_at_1_in_spec_mode(host: Host) -> None:
    rd = map_level1_ns_blocks(host)
    host.fails(host.call("rtt_fold", rd=rd, ipa=UNPROTECTED, level=1), RTT, "rtt_homo", index=1)


def test_level_1_table_of_assigned_ns_blocks_is_rtt_homo_at_0_in_tf_rmm_mode(tf_host: Host) -> None:
    # rmm-abi.md §12 #5
    rd = map_level1_ns_blocks(tf_host)
    tf_host.fails(tf_host.call("rtt_fold", rd=rd, ipa=UNPROTECTED, level=1), RTT, "rtt_homo", index=0)


def test_input_conditions(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_fold", rd=realm.rd + 1, ipa=0, level=3), INPUT, "rd_align")
    host.fails(host.call("rtt_fold", rd=host.names["non_memory"], ipa=0, level=3), INPUT, "rd_bound")
    host.fails(host.call("rtt_fold", rd=host.ns(), ipa=0, level=3), INPUT, "rd_state")
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=0, level=0), INPUT, "level_bound")
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=0x1000, level=3), INPUT, "ipa_align")
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=1 << 40, level=3), INPUT, "ipa_bound")


def test_walk_conditions(host: Host) -> None:
    realm = host.realm()
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=0, level=3), RTT, "rtt_walk", index=0)
    host.rtts(realm, 0x0, 2)
    host.fails(host.call("rtt_fold", rd=realm.rd, ipa=0, level=3), RTT, "rtte_state", index=2)
