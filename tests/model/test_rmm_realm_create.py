"""RMI_REALM_CREATE on the model (RMM 1.0 B3.3.6): every failure condition in order, success and RIM."""

from __future__ import annotations

import pytest
from rmm_host import Host

from cca_hil.arch import measurement
from cca_hil.arch.rmi import GRANULE_SIZE, GranuleState, HashAlgorithm, RealmState, RmiStatus
from cca_hil.arch.structs import RealmParams
from cca_hil.model.rmm import rtt_num_start_for

INPUT = RmiStatus.ERROR_INPUT


def test_realm_create_makes_rd_and_starting_rtts_and_a_new_realm(host: Host) -> None:
    rtt = host.delegated(2, alignment=0x2000)
    params = host.realm_params(s2sz=40, rtt_level_start=1, rtt_num_start=2, rtt_base=rtt, vmid=77)
    rd = host.delegated()
    host.ok("realm_create", rd=rd, params=params)
    assert host.rmm.granule_state(rd) is GranuleState.RD
    assert host.rmm.granule_state(rtt) is GranuleState.RTT
    assert host.rmm.granule_state(rtt + GRANULE_SIZE) is GranuleState.RTT
    realm = host.rmm.realm_at(rd)
    assert realm.state is RealmState.NEW
    assert (realm.ipa_width, realm.vmid, realm.rtt_level_start, realm.rtt_num_start) == (40, 77, 1, 2)
    assert realm.measurements[1:] == [bytes(64)] * 4


def test_realm_create_initialises_the_rim_from_the_measured_params(host: Host) -> None:
    params = host.realm_params(s2sz=44, hash_algo=1, num_bps=3, num_wps=2, flags=8)
    rd = host.delegated()
    host.ok("realm_create", rd=rd, params=params)
    image = measurement.realm_params_image(
        flags=8, s2sz=44, sve_vl=0, num_bps=3, num_wps=2, pmu_num_ctrs=0, hash_algo=1
    )
    assert host.rmm.realm_at(rd).rim == measurement.rim_init(HashAlgorithm.SHA512, image)


def test_protected_entries_start_unassigned_empty_and_unprotected_unassigned_ns(host: Host) -> None:
    realm = host.realm(s2sz=40)
    assert host.read_entry(realm, 0x0, 0)[1:] == (0, 0, 0, 0)
    regs = host.read_entry(realm, 1 << 39, 0)
    assert regs[1:] == (0, 0, 0, 0)
    assert host.rmm.realm_at(realm.rd).starts[0].entries[1].state.name == "UNASSIGNED_NS"


@pytest.mark.parametrize("offset", [1, 8, 0x800])
def test_unaligned_params_is_params_align(host: Host, offset: int) -> None:
    regs = host.call("realm_create", rd=host.delegated(), params=host.realm_params() + offset)
    host.fails(regs, INPUT, "params_align")


def test_params_outside_dram_is_params_bound(host: Host) -> None:
    for addr in (host.names["non_memory"], host.names["pa_limit"]):
        host.fails(host.call("realm_create", rd=host.delegated(), params=addr), INPUT, "params_bound")


def test_params_not_ns_is_params_pas(host: Host) -> None:
    for addr in (host.delegated(), host.names["secure_granule"], host.names["realm_granule"]):
        host.fails(host.call("realm_create", rd=host.delegated(), params=addr), INPUT, "params_pas")


@pytest.mark.parametrize("hash_algo", [2, 0xFF])
def test_reserved_hash_algo_is_params_valid(host: Host, hash_algo: int) -> None:
    regs = host.call("realm_create", rd=host.delegated(), params=host.realm_params(hash_algo=hash_algo))
    host.fails(regs, INPUT, "params_valid")


@pytest.mark.parametrize(
    "fields",
    [
        {"s2sz": 31},
        {"s2sz": 49},
        {"num_bps": 0},
        {"num_wps": 0},
        {"num_bps": 64},
        {"flags": 1, "s2sz": 52},
        {"flags": 2, "sve_vl": 1},
        {"flags": 4, "pmu_num_ctrs": 32},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_unsupported_feature_is_params_supp(host: Host, fields: dict[str, int]) -> None:
    regs = host.call("realm_create", rd=host.delegated(), params=host.realm_params(**fields))
    host.fails(regs, INPUT, "params_supp")


@pytest.mark.parametrize(
    ("s2sz", "level", "num"),
    [(40, 1, 1), (40, 0, 2), (40, 2, 1), (40, 3, 1), (40, -1, 1), (39, 0, 1), (40, 1, 17), (40, 0, 0)],
)
def test_inconsistent_geometry_is_rtt_num_level(host: Host, s2sz: int, level: int, num: int) -> None:
    params = host.realm_params(s2sz=s2sz, rtt_level_start=level, rtt_num_start=num, rtt_base=host.delegated())
    host.fails(host.call("realm_create", rd=host.delegated(), params=params), INPUT, "rtt_num_level")


@pytest.mark.parametrize(
    ("s2sz", "level", "expected"),
    [
        (48, 0, 1),
        (40, 0, 1),
        (39, 1, 1),
        (32, 1, 1),
        (40, 1, 2),
        (43, 1, 16),
        (32, 2, 4),
        (34, 2, 16),
        (31, 2, 2),
    ],
)
def test_valid_geometries_follow_the_vmsa_concatenation_table(s2sz: int, level: int, expected: int) -> None:
    assert rtt_num_start_for(s2sz=s2sz, level=level, lpa2=False) == expected


def test_lpa2_geometries_include_level_minus_1_and_deep_concatenation() -> None:
    assert rtt_num_start_for(s2sz=52, level=-1, lpa2=True) == 1
    assert rtt_num_start_for(s2sz=52, level=0, lpa2=True) == 16
    assert rtt_num_start_for(s2sz=48, level=-1, lpa2=True) is None
    assert rtt_num_start_for(s2sz=52, level=-1, lpa2=False) is None


def test_vmid_in_use_is_vmid_valid_until_its_realm_is_destroyed(host: Host) -> None:
    first = host.realm(vmid=500)
    host.fails(
        host.call("realm_create", rd=host.delegated(), params=host.realm_params(vmid=500)),
        INPUT,
        "vmid_valid",
    )
    host.ok("realm_destroy", rd=first.rd)
    host.ok("realm_create", rd=host.delegated(), params=host.realm_params(vmid=500))


def test_vmid_beyond_platform_width_is_vmid_valid() -> None:
    host = Host(vmid_bits=8)
    host.fails(
        host.call("realm_create", rd=host.delegated(), params=host.realm_params(vmid=256)),
        INPUT,
        "vmid_valid",
    )


def test_rd_inside_starting_rtts_is_alias(host: Host) -> None:
    rtt = host.delegated(2, alignment=0x2000)
    params = host.realm_params(rtt_level_start=1, rtt_num_start=2, rtt_base=rtt)
    host.fails(host.call("realm_create", rd=rtt + GRANULE_SIZE, params=params), INPUT, "alias")
    host.fails(host.call("realm_create", rd=rtt, params=params), INPUT, "alias")


def test_rd_checks_are_rd_align_rd_bound_rd_state(host: Host) -> None:
    params = host.realm_params()
    host.fails(host.call("realm_create", rd=host.delegated() + 1, params=params), INPUT, "rd_align")
    host.fails(host.call("realm_create", rd=host.names["non_memory"], params=params), INPUT, "rd_bound")
    host.fails(host.call("realm_create", rd=host.ns(), params=params), INPUT, "rd_state")
    other = host.realm()
    host.fails(host.call("realm_create", rd=other.rd, params=params), INPUT, "rd_state")


def test_unaligned_rtt_base_is_rtt_align(host: Host) -> None:
    params = host.realm_params(rtt_base=host.delegated() + 0x10)
    host.fails(host.call("realm_create", rd=host.delegated(), params=params), INPUT, "rtt_align")


def test_concatenated_rtt_base_not_aligned_to_their_size_is_rtt_align_in_spec_mode(host: Host) -> None:
    rtt = host.delegated(3, alignment=0x4000) + GRANULE_SIZE
    params = host.realm_params(rtt_level_start=1, rtt_num_start=2, rtt_base=rtt)
    host.fails(host.call("realm_create", rd=host.delegated(), params=params), INPUT, "rtt_align")


def test_concatenated_rtt_base_aligned_to_4k_is_accepted_in_tf_rmm_mode(tf_host: Host) -> None:
    # rmm-abi.md §12 #1
    rtt = tf_host.delegated(3, alignment=0x4000) + GRANULE_SIZE
    params = tf_host.realm_params(rtt_level_start=1, rtt_num_start=2, rtt_base=rtt)
    tf_host.ok("realm_create", rd=tf_host.delegated(), params=params)


def test_starting_rtt_not_delegated_is_rtt_state(host: Host) -> None:
    rtt = host.delegated(alignment=0x2000)
    params = host.realm_params(rtt_level_start=1, rtt_num_start=2, rtt_base=rtt)
    host.fails(host.call("realm_create", rd=host.delegated(), params=params), INPUT, "rtt_state")
    params = host.realm_params(rtt_base=host.ns())
    host.fails(host.call("realm_create", rd=host.delegated(), params=params), INPUT, "rtt_state")


def test_params_checks_come_before_rd_checks(host: Host) -> None:
    regs = host.call("realm_create", rd=host.ns() + 1, params=host.realm_params(hash_algo=7))
    host.fails(regs, INPUT, "params_valid")


def test_failed_create_changes_nothing(host: Host) -> None:
    rd = host.delegated()
    params = host.realm_params(num_bps=0)
    base = RealmParams.unpack(host.machine.memory.read_granule(params)).rtt_base
    host.call("realm_create", rd=rd, params=params)
    assert host.rmm.granule_state(rd) is GranuleState.DELEGATED
    assert host.rmm.granule_state(base) is GranuleState.DELEGATED
    assert not host.rmm.realms
