"""RMI_DATA_CREATE, RMI_DATA_CREATE_UNKNOWN, RMI_DATA_DESTROY on the model (RMM 1.0 B3.3.1–B3.3.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rmm_host import Host

from cca_hil.arch import measurement
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GranuleState, Ripas, RmiStatus, RttEntryState
from cca_hil.model.platform import PlatformConfig
from cca_hil.targets.base import MemoryRegion

INPUT = RmiStatus.ERROR_INPUT
REALM = RmiStatus.ERROR_REALM
RTT = RmiStatus.ERROR_RTT
L2 = 1 << 21


def test_data_create_copies_src_maps_ram_and_measures(host: Host) -> None:
    realm = host.realm()
    state = host.rmm.realm_at(realm.rd)
    rim = state.rim
    page = bytes(range(256)) * 16
    data = host.data(realm, 0x4000, page, measure=True)
    assert host.rmm.granule_state(data) is GranuleState.DATA
    assert host.machine.memory.read_granule(data) == page
    assert host.read_entry(realm, 0x4000, 3)[1:] == (3, RttEntryState.ASSIGNED, data, Ripas.RAM)
    assert state.rim == measurement.rim_extend_data(state.hash_algo, rim, ipa=0x4000, flags=1, data=page)


def test_unmeasured_data_create_hashes_no_content(host: Host) -> None:
    realm = host.realm()
    state = host.rmm.realm_at(realm.rd)
    host.rtts(realm, 0x0, 3)
    rim = state.rim
    host.data(realm, 0x0, b"\x01" * 4096, measure=False)
    assert state.rim == measurement.rim_extend_data(state.hash_algo, rim, ipa=0x0, flags=0, data=None)


def setup(host: Host) -> tuple[int, int, int]:
    """A NEW realm with a level-3 table at 0; returns (rd, fresh delegated data, fresh NS src)."""
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    return realm.rd, host.delegated(), host.ns()


@pytest.mark.parametrize("flags", [2, 3, 1 << 63])
def test_reserved_flags_is_flags_valid_first(host: Host, flags: int) -> None:
    rd, data, src = setup(host)
    regs = host.call("data_create", rd=rd + 1, data=data, ipa=0, src=src + 1, flags=flags)
    host.fails(regs, INPUT, "flags_valid")


def test_src_conditions(host: Host) -> None:
    rd, data, src = setup(host)
    host.fails(host.call("data_create", rd=rd, data=data, ipa=0, src=src + 8, flags=0), INPUT, "src_align")
    regs = host.call("data_create", rd=rd, data=data, ipa=0, src=host.names["non_memory"], flags=0)
    host.fails(regs, INPUT, "src_bound")
    host.fails(
        host.call("data_create", rd=rd, data=data, ipa=0, src=host.delegated(), flags=0), INPUT, "src_pas"
    )
    for name in ("secure_granule", "root_granule"):
        regs = host.call("data_create", rd=rd, data=data, ipa=0, src=host.names[name], flags=0)
        host.fails(regs, INPUT, "src_pas")


def test_data_and_rd_conditions(host: Host) -> None:
    rd, data, src = setup(host)
    host.fails(host.call("data_create", rd=rd, data=data + 1, ipa=0, src=src, flags=0), INPUT, "data_align")
    regs = host.call("data_create", rd=rd, data=host.names["pa_limit"], ipa=0, src=src, flags=0)
    host.fails(regs, INPUT, "data_bound")
    host.fails(host.call("data_create", rd=rd, data=host.ns(), ipa=0, src=src, flags=0), INPUT, "data_state")
    host.fails(host.call("data_create", rd=rd, data=rd, ipa=0, src=src, flags=0), INPUT, "data_state")
    host.fails(host.call("data_create", rd=rd + 1, data=data, ipa=0, src=src, flags=0), INPUT, "rd_align")
    regs = host.call("data_create", rd=host.names["non_memory"], data=data, ipa=0, src=src, flags=0)
    host.fails(regs, INPUT, "rd_bound")
    host.fails(host.call("data_create", rd=data, data=data, ipa=0, src=src, flags=0), INPUT, "rd_state")
    host.fails(
        host.call("data_create", rd=host.delegated(), data=data, ipa=0, src=src, flags=0), INPUT, "rd_state"
    )


def test_active_realm_is_realm_state_before_ipa_checks(any_host: Host) -> None:
    # rmm-abi.md §12 #3: both modes follow TF-RMM's (allowed) order.
    host = any_host
    rd, data, src = setup(host)
    host.ok("realm_activate", rd=rd)
    host.fails(host.call("data_create", rd=rd, data=data, ipa=0x800, src=src, flags=0), REALM, "realm_state")
    host.fails(
        host.call("data_create", rd=rd, data=data, ipa=1 << 39, src=src, flags=0), REALM, "realm_state"
    )


def test_ipa_and_pa_conditions(host: Host) -> None:
    rd, data, src = setup(host)
    host.fails(host.call("data_create", rd=rd, data=data, ipa=1 << 39, src=src, flags=0), INPUT, "ipa_bound")
    host.fails(host.call("data_create", rd=rd, data=data, ipa=0x10, src=src, flags=0), INPUT, "ipa_align")


def test_walk_conditions(host: Host) -> None:
    realm = host.realm()
    src = host.ns()
    regs = host.call("data_create", rd=realm.rd, data=host.delegated(), ipa=0, src=src, flags=0)
    host.fails(regs, RTT, "rtt_walk", 0)
    host.data(realm, 0x0)
    regs = host.call("data_create", rd=realm.rd, data=host.delegated(), ipa=0, src=src, flags=0)
    host.fails(regs, RTT, "rtte_state", 3)


def test_secure_src_is_read_last(any_host: Host) -> None:
    # rmm-abi.md §12 #4: both modes follow TF-RMM (src_pas of a Secure source after the RTT checks).
    host = any_host
    realm = host.realm()
    src = host.names["secure_granule"]
    regs = host.call("data_create", rd=realm.rd, data=host.delegated(), ipa=0, src=src, flags=0)
    host.fails(regs, RTT, "rtt_walk", 0)
    host.rtts(realm, 0x0, 3)
    regs = host.call("data_create", rd=realm.rd, data=host.delegated(), ipa=0, src=src, flags=0)
    host.fails(regs, INPUT, "src_pas")


def test_data_create_unknown_keeps_ripas_wipes_and_does_not_measure(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    state = host.rmm.realm_at(realm.rd)
    rim = state.rim
    data = host.delegated()
    host.ok("data_create_unknown", rd=realm.rd, data=data, ipa=0x1000)
    assert host.read_entry(realm, 0x1000, 3)[1:] == (3, RttEntryState.ASSIGNED, data, Ripas.EMPTY)
    assert host.machine.memory.is_zero(data)
    assert state.rim == rim


def test_data_create_unknown_works_in_an_active_realm(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("realm_activate", rd=realm.rd)
    host.ok("data_create_unknown", rd=realm.rd, data=host.delegated(), ipa=0x0)


def test_data_create_unknown_conditions(host: Host) -> None:
    realm = host.realm()
    rd = realm.rd
    data = host.delegated()
    host.fails(host.call("data_create_unknown", rd=rd, data=data + 1, ipa=0), INPUT, "data_align")
    host.fails(
        host.call("data_create_unknown", rd=rd, data=host.names["pa_limit"], ipa=0), INPUT, "data_bound"
    )
    host.fails(host.call("data_create_unknown", rd=rd, data=host.ns(), ipa=0), INPUT, "data_state")
    host.fails(host.call("data_create_unknown", rd=rd + 1, data=data, ipa=0), INPUT, "rd_align")
    host.fails(
        host.call("data_create_unknown", rd=host.names["non_memory"], data=data, ipa=0), INPUT, "rd_bound"
    )
    host.fails(host.call("data_create_unknown", rd=host.delegated(), data=data, ipa=0), INPUT, "rd_state")
    host.fails(host.call("data_create_unknown", rd=rd, data=data, ipa=1 << 39), INPUT, "ipa_bound")
    host.fails(host.call("data_create_unknown", rd=rd, data=data, ipa=0x8), INPUT, "ipa_align")
    host.fails(host.call("data_create_unknown", rd=rd, data=data, ipa=0), RTT, "rtt_walk", 0)
    host.data(realm, 0x0)
    host.fails(host.call("data_create_unknown", rd=rd, data=data, ipa=0), RTT, "rtte_state", 3)


def test_data_destroy_returns_the_granule_and_leaves_destroyed(host: Host) -> None:
    realm = host.realm()
    data = host.data(realm, 0x2000, b"\xff" * 4096)
    host.data(realm, 0x9000)
    regs = host.ok("data_destroy", rd=realm.rd, ipa=0x2000)
    assert regs[1:3] == (data, 0x9000)
    assert host.rmm.granule_state(data) is GranuleState.DELEGATED
    assert host.machine.memory.is_zero(data)
    assert host.read_entry(realm, 0x2000, 3)[1:] == (3, RttEntryState.UNASSIGNED, 0, Ripas.DESTROYED)


def test_data_destroy_of_empty_assigned_page_stays_empty(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    host.ok("data_create_unknown", rd=realm.rd, data=host.delegated(), ipa=0x0)
    host.ok("data_destroy", rd=realm.rd, ipa=0x0)
    assert host.read_entry(realm, 0x0, 3)[4] == Ripas.EMPTY


def test_data_destroy_conditions_and_top(host: Host) -> None:
    realm = host.realm()
    for args, cond in (
        ({"rd": realm.rd + 1, "ipa": 0}, "rd_align"),
        ({"rd": host.names["non_memory"], "ipa": 0}, "rd_bound"),
        ({"rd": host.ns(), "ipa": 0}, "rd_state"),
        ({"rd": realm.rd, "ipa": 0x10}, "ipa_align"),
        ({"rd": realm.rd, "ipa": 1 << 39}, "ipa_bound"),
    ):
        regs = host.call("data_destroy", **args)
        host.fails(regs, INPUT, cond)
        assert regs[1:3] == (0, 0)
    regs = host.call("data_destroy", rd=realm.rd, ipa=0x0)
    host.fails(regs, RTT, "rtt_walk", 0)
    assert regs[2] == 1 << 48
    host.rtts(realm, 0x0, 3)
    host.data(realm, 0x5000)
    regs = host.call("data_destroy", rd=realm.rd, ipa=0x1000)
    host.fails(regs, RTT, "rtte_state", 3)
    assert regs[1:3] == (0, 0x5000)


def test_data_destroy_under_a_block_is_rtt_walk_with_top_equal_to_ipa(host: Host) -> None:
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    pages = host.delegated(512, alignment=L2)
    src = host.ns()
    for i in range(512):
        host.ok("data_create", rd=realm.rd, data=pages + i * 0x1000, ipa=i * 0x1000, src=src, flags=0)
    host.ok("rtt_fold", rd=realm.rd, ipa=0x0, level=3)
    regs = host.call("data_destroy", rd=realm.rd, ipa=0x3000)
    host.fails(regs, RTT, "rtt_walk", 2)
    assert regs[2] == 0x3000


def high_dram_host() -> Host:
    """A 52-bit PA platform with delegable DRAM above 2^48 (``*_bound2`` become reachable)."""
    base = PlatformConfig()
    high = MemoryRegion("ns-dram-high", 1 << 48, 0x10_0000, "dram", Pas.NONSECURE)
    return Host(platform=replace(base, pa_bits=52, regions=(*base.regions, high)))


def test_data_above_48_bits_without_lpa2_is_data_bound2() -> None:
    host = high_dram_host()
    realm = host.realm()
    host.rtts(realm, 0x0, 3)
    high = 1 << 48
    host.ok("granule_delegate", addr=high)
    regs = host.call("data_create", rd=realm.rd, data=high, ipa=0, src=host.ns(), flags=0)
    host.fails(regs, INPUT, "data_bound2")
    host.fails(host.call("data_create_unknown", rd=realm.rd, data=high, ipa=0), INPUT, "data_bound2")


def test_rtt_above_48_bits_without_lpa2_is_rtt_bound2() -> None:
    host = high_dram_host()
    realm = host.realm()
    high = (1 << 48) + 0x1000
    host.ok("granule_delegate", addr=high)
    host.fails(host.call("rtt_create", rd=realm.rd, rtt=high, ipa=0, level=1), INPUT, "rtt_bound2")
