"""The RMI client over the model target: decoding, typed calls, granule allocation, realm building."""

from __future__ import annotations

import pytest

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED, Ripas, RmiStatus, RttEntryState, pack_return
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.errors import CapabilityError, InputError
from cca_hil.profiles import build_target, load_profile
from cca_hil.rmi_client import (
    SLOT_SIZE,
    GranuleAllocator,
    GranulePoolExhausted,
    RealmBuilder,
    RmiCallError,
    RmiClient,
)
from cca_hil.targets.base import Capability, Target
from cca_hil.targets.model import ModelTarget


@pytest.fixture
def target() -> ModelTarget:
    built = build_target(load_profile("model"))
    assert isinstance(built, ModelTarget)
    return built


@pytest.fixture
def client(target: ModelTarget) -> RmiClient:
    return RmiClient(target)


@pytest.fixture
def allocator(target: ModelTarget) -> GranuleAllocator:
    return GranuleAllocator.for_target(target)


def test_decode_success_keeps_only_success_outputs() -> None:
    command = RMI_1_0["rtt_read_entry"]
    result = RmiClient.decode(command, (0, 3, 1, 0x9000_0000, 1))
    assert result.ok
    assert result.status is RmiStatus.SUCCESS
    assert result.outputs == {
        "walk_level": 3,
        "state": RttEntryState.ASSIGNED,
        "desc": 0x9000_0000,
        "ripas": Ripas.RAM,
    }
    assert isinstance(result.outputs["state"], RttEntryState)


def test_decode_failure_drops_outputs_the_spec_leaves_undefined() -> None:
    result = RmiClient.decode(RMI_1_0["rtt_read_entry"], (pack_return(RmiStatus.ERROR_INPUT), 3, 1, 5, 1))
    assert result.status is RmiStatus.ERROR_INPUT
    assert result.outputs == {}


def test_decode_rtt_error_keeps_top_of_destroy_commands() -> None:
    x0 = pack_return(RmiStatus.ERROR_RTT, 2)
    result = RmiClient.decode(RMI_1_0["rtt_destroy"], (x0, 0x1234, 0x4000_0000), condition="rtt_walk")
    assert (result.status_name, result.index) == ("error_rtt", 2)
    assert result.outputs == {"top": 0x4000_0000}
    assert result.condition == "rtt_walk"
    assert result.describe() == "rtt_destroy: error_rtt index 2 (rtt_walk)"


def test_decode_version_outputs_are_defined_on_error_too() -> None:
    result = RmiClient.decode(RMI_1_0["version"], (RmiStatus.ERROR_INPUT, 0x10000, 0x10000))
    assert result.outputs == {"lower": 0x10000, "higher": 0x10000}


def test_decode_smccc_not_supported_has_no_status() -> None:
    result = RmiClient.decode(RMI_1_0["version"], (SMCCC_NOT_SUPPORTED, 0, 0))
    assert result.status is None
    assert result.status_name == "not_supported"
    assert result.outputs == {}


def test_decode_keeps_unknown_enumeration_values_as_numbers() -> None:
    result = RmiClient.decode(RMI_1_0["rtt_read_entry"], (0, 3, 7, 0, 9))
    assert result.outputs["state"] == 7
    assert not isinstance(result.outputs["state"], RttEntryState)


def test_version_on_the_model_reports_1_0(client: RmiClient) -> None:
    result = client.version()
    assert result.ok
    assert result.outputs == {"lower": 0x10000, "higher": 0x10000}


def test_delegate_changes_the_pas_and_a_second_delegate_names_gran_state(
    client: RmiClient, allocator: GranuleAllocator, target: ModelTarget
) -> None:
    pa = allocator.granule()
    assert client.granule_delegate(pa).ok
    assert target.gpt_pas(pa) is Pas.REALM
    again = client.granule_delegate(pa)
    assert again.status is RmiStatus.ERROR_INPUT
    assert again.condition == "gran_state"
    assert client.granule_undelegate(pa).ok
    assert target.gpt_pas(pa) is Pas.NONSECURE


def test_call_accepts_the_ptr_alias_and_spec_name(client: RmiClient) -> None:
    command = RMI_1_0["realm_create"]
    assert client.registers_for(command, {"rd": 1, "params": 2}) == (1, 2)
    assert client.registers_for(command, {"rd": 1, "params_ptr": 2}) == (1, 2)


def test_call_masks_negative_levels_to_64_bits(client: RmiClient) -> None:
    regs = client.registers_for(RMI_1_0["rtt_read_entry"], {"rd": 0, "ipa": 0, "level": -1})
    assert regs == (0, 0, 0xFFFF_FFFF_FFFF_FFFF)


def test_call_with_an_unknown_input_lists_the_valid_ones(client: RmiClient) -> None:
    with pytest.raises(InputError, match=r"granule_delegate has no input 'adr' \(valid: addr\)"):
        client.call("granule_delegate", adr=0)


def test_call_with_a_missing_input_names_it(client: RmiClient) -> None:
    with pytest.raises(InputError, match=r"rtt_create needs input 'level'"):
        client.call("rtt_create", rd=0, rtt=0, ipa=0)


def test_call_of_an_unknown_command_lists_the_commands(client: RmiClient) -> None:
    with pytest.raises(
        InputError, match=r"unknown RMI command 'granule_delegat' \(valid: .*granule_delegate"
    ):
        client.call("granule_delegat", addr=0)


def test_raw_returns_the_registers_undecoded(client: RmiClient) -> None:
    assert client.raw(0xC400_0150, 0x10000)[:3] == (0, 0x10000, 0x10000)
    assert client.raw(0xC400_01FF)[0] == SMCCC_NOT_SUPPORTED


def test_allocator_slots_are_64k_aligned_distinct_and_inside_the_pool() -> None:
    allocator = GranuleAllocator([(0x9000_1000, 0x40000)])
    slots = [allocator.slot() for _ in range(3)]
    assert slots == [0x9001_0000, 0x9002_0000, 0x9003_0000]
    assert allocator.slots_left == 0
    with pytest.raises(GranulePoolExhausted, match="after 3 slots"):
        allocator.slot()


def test_allocator_scratch_granules_share_a_slot_then_take_the_next() -> None:
    allocator = GranuleAllocator([(0x9000_0000, 0x10_0000)])
    granules = [allocator.granule() for _ in range(17)]
    assert granules[:16] == [0x9000_0000 + i * 0x1000 for i in range(16)]
    assert granules[16] == 0x9001_0000
    assert allocator.slot() == 0x9002_0000


def test_allocator_moves_on_to_the_next_pool_range() -> None:
    allocator = GranuleAllocator([(0x9000_0000, SLOT_SIZE), (0x8_8000_0000, 2 * SLOT_SIZE)])
    assert [allocator.slot() for _ in range(3)] == [0x9000_0000, 0x8_8000_0000, 0x8_8001_0000]


def test_allocator_without_a_whole_slot_is_refused() -> None:
    with pytest.raises(GranulePoolExhausted):
        GranuleAllocator([(0x9000_1000, 0x8000)])


def test_realm_builder_builds_and_destroys_a_realm_with_64_data_granules(
    client: RmiClient, allocator: GranuleAllocator, target: ModelTarget
) -> None:
    builder = RealmBuilder(client, allocator, data_granules=64, recs=2, vmid=7)
    realm = builder.build()
    assert len(realm.data) == 64
    assert [level for level, _, _ in realm.rtts] == [0, 1, 2, 3]
    assert len(realm.recs) == 2
    assert all(len(aux) == 16 for aux in realm.aux)
    last_ipa, last_pa = realm.data[-1]
    entry = client.rtt_read_entry(realm.rd, last_ipa, 3)
    assert entry.outputs == {
        "walk_level": 3,
        "state": RttEntryState.ASSIGNED,
        "desc": last_pa,
        "ripas": Ripas.RAM,
    }
    assert all(target.gpt_pas(pa) is Pas.REALM for pa in realm.granules())

    builder.destroy(realm)
    assert all(target.gpt_pas(pa) is Pas.NONSECURE for pa in realm.granules())


def test_realm_builder_spans_several_level_3_tables() -> None:
    target = build_target(load_profile("model"))
    client = RmiClient(target)
    realm = RealmBuilder(client, GranuleAllocator.for_target(target), data_granules=513, recs=0).build()
    assert [(level, ipa) for level, ipa, _ in realm.rtts][-2:] == [(3, 0), (3, 0x20_0000)]
    assert client.rtt_read_entry(realm.rd, 512 * 0x1000, 3).outputs["state"] is RttEntryState.ASSIGNED


def test_realm_builder_reports_the_call_that_failed(client: RmiClient, allocator: GranuleAllocator) -> None:
    RealmBuilder(client, allocator, data_granules=0, recs=0, vmid=3).build()
    with pytest.raises(
        RmiCallError, match=r"realm_create\(rd=0x[0-9a-f]+, params_ptr=0x[0-9a-f]+\) failed: .*vmid_valid"
    ):
        RealmBuilder(client, allocator, data_granules=0, recs=0, vmid=3).build()


def test_rec_enter_of_an_active_realm_exits_on_a_target_without_realm_execution(
    client: RmiClient, allocator: GranuleAllocator
) -> None:
    realm = RealmBuilder(client, allocator, data_granules=1, recs=1, vmid=9).build()
    run = allocator.granule()
    result = client.call("rec_enter", rec=realm.recs[0], run=run)
    assert result.ok
    assert client.read_rec_exit(run).exit_reason == 1  # IRQ: the model's RMM returns at once


class _NoRealmModel(ModelTarget):
    """A model that, like a target without a realm payload, cannot run realms."""

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities - {Capability.REALM_EXEC}

    realm_enter = Target.realm_enter


def test_rec_enter_with_realm_actions_needs_realm_execution() -> None:
    target = _NoRealmModel(profile=load_profile("model"))
    client = RmiClient(target)
    allocator = GranuleAllocator.for_target(target)
    with pytest.raises(CapabilityError, match="realm_exec"):
        client.rec_enter(allocator.granule(), allocator.granule(), actions=["wfi"])
