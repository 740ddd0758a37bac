"""Properties of the model RMM under arbitrary RMI call sequences (RMM 1.0 A2.2, B4.4)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rmm_host import POOL, Host

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED, GranuleState, RmiCommand, RmiStatus
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import RealmParams, RecParams

GRANULES = [POOL + i * 0x1000 for i in range(10)]
"""A small pool so that random calls collide: the interesting states need shared granules."""
PARAMS = POOL + 0x10_0000
REC_PARAMS = POOL + 0x10_1000
RUN = POOL + 0x10_2000
SRC = POOL + 0x10_3000
COMMANDS = [c for c in RMI_1_0.commands if c.name not in ("version", "features")]
ODD = st.sampled_from([0, 7, 1 << 48, (1 << 64) - 1])

INPUTS: dict[str, st.SearchStrategy[int]] = {
    "rd": st.sampled_from([GRANULES[0], GRANULES[0], GRANULES[0], GRANULES[2]]),
    "params_ptr": st.sampled_from([PARAMS, REC_PARAMS, GRANULES[0]]),
    "run_ptr": st.sampled_from([RUN, GRANULES[0]]),
    "src": st.sampled_from([SRC, GRANULES[0]]),
    "ipa": st.sampled_from([0x0, 0x0, 0x1000, 1 << 21, 1 << 39, 0x800]),
    "base": st.sampled_from([0x0, 0x1000, 1 << 21]),
    "top": st.sampled_from([0x1000, 0x2000, 1 << 21, 1 << 22]),
    "level": st.sampled_from([-1, 0, 1, 2, 3, 3]),
    "desc": st.sampled_from([0x8800_0000 | 0xC4, 0x8820_0000, 0x4000_0000, 0x8800_0001]),
    "flags": st.sampled_from([0, 1, 2]),
    "status": st.sampled_from([0, (1 << 64) - 3, 1]),
}
GRANULE = st.one_of(st.sampled_from(GRANULES), st.sampled_from(GRANULES), ODD)


@st.composite
def call(draw: st.DrawFn) -> tuple[RmiCommand, list[int]]:
    """One RMI call with arguments mostly drawn from values that can succeed."""
    command = draw(st.sampled_from(COMMANDS))
    args = [0] * 5
    for param in command.inputs:
        likely = INPUTS.get(param.name, GRANULE)
        args[param.reg - 1] = draw(st.one_of(likely, likely, likely, ODD))
    return command, args


def fresh() -> Host:
    """A NEW Realm with RTTs down to level 3 at IPA 0, all from a small pool; RECs need 2 aux granules."""
    host = Host(aux_count=2)
    host.write(PARAMS, RealmParams(s2sz=40, rtt_base=GRANULES[1], vmid=3).pack())
    host.write(REC_PARAMS, RecParams(num_aux=2, aux=(GRANULES[6], GRANULES[7])).pack())
    for addr in GRANULES[:8]:
        host.ok("granule_delegate", addr=addr)
    host.ok("realm_create", rd=GRANULES[0], params=PARAMS)
    for level, rtt in ((1, GRANULES[2]), (2, GRANULES[3]), (3, GRANULES[4])):
        host.ok("rtt_create", rd=GRANULES[0], rtt=rtt, ipa=0x0, level=level)
    return host


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(call(), max_size=40))
def test_granule_state_and_gpt_agree_and_status_is_always_rmi_1_0(
    calls: list[tuple[RmiCommand, list[int]]],
) -> None:
    host = fresh()
    for command, args in calls:
        regs = host.machine.smc(command.fid, *args)
        x0 = regs[0]
        assert x0 != SMCCC_NOT_SUPPORTED
        assert x0 >> 16 == 0
        assert x0 & 0xFF in set(RmiStatus)
        if x0 == RmiStatus.SUCCESS:
            assert host.rmm.last_condition is None
        else:
            assert host.rmm.last_condition is not None
            assert command.condition(host.rmm.last_condition).status == x0 & 0xFF
        for addr in GRANULES:
            delegated = host.rmm.granule_state(addr) is not GranuleState.UNDELEGATED
            assert (host.machine.gpt.pas_of(addr) is Pas.REALM) == delegated
            if host.rmm.granule_state(addr) is GranuleState.DELEGATED:
                assert host.machine.memory.is_zero(addr)
    realms = list(host.rmm.realms.values())
    assert {r.vmid for r in realms} == host.rmm.vmids
    for realm in realms:
        assert realm.num_recs == sum(1 for rec in host.rmm.recs.values() if rec.owner is realm)


@settings(max_examples=100, deadline=None)
@given(calls=st.lists(call(), max_size=30))
def test_a_failed_call_changes_no_granule_state(calls: list[tuple[RmiCommand, list[int]]]) -> None:
    host = fresh()
    for command, args in calls:
        before = dict(host.rmm.granules)
        regs = host.machine.smc(command.fid, *args)
        if regs[0] != RmiStatus.SUCCESS and command.name != "psci_complete":
            assert host.rmm.granules == before
