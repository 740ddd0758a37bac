"""RMI_VERSION and RMI_FEATURES on the model (RMM 1.0 B3.3.21, B3.3.9)."""

from __future__ import annotations

import pytest
from rmm_host import Host

from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED, RmiStatus


def test_version_1_0_is_success_with_lower_and_higher(host: Host) -> None:
    assert host.call("version", req=0x10000)[:3] == (RmiStatus.SUCCESS, 0x10000, 0x10000)


@pytest.mark.parametrize("req", [0x10001, 0x20000, 0x0, 0x8001_0000, 0xFFFF_FFFF_FFFF_FFFF])
def test_version_other_than_1_0_is_error_input_reporting_1_0(host: Host, req: int) -> None:
    assert host.call("version", req=req)[:3] == (RmiStatus.ERROR_INPUT, 0x10000, 0x10000)


def test_features_register_0_describes_the_configuration(host: Host) -> None:
    regs = host.ok("features", index=0)
    value = regs[1]
    assert value & 0xFF == host.rmm.config.s2sz
    assert (value >> 32) & 0b11 == 0b11
    assert (value >> 38) & 0xF == host.rmm.config.max_recs_order


def test_features_other_registers_read_as_zero(host: Host) -> None:
    assert host.ok("features", index=1)[1] == 0


@pytest.mark.parametrize("fid", [0xC400_0156, 0xC400_0160, 0xC400_0163, 0xC400_016A, 0xC400_018F])
def test_unallocated_rmi_function_is_not_supported(host: Host, fid: int) -> None:
    assert host.machine.smc(fid, 0)[0] == SMCCC_NOT_SUPPORTED


def test_tf_rmm_mode_preserves_x4_where_the_command_has_no_x4_output(tf_host: Host) -> None:
    assert tf_host.machine.smc(0xC400_0150, 0x10000, 0, 0, 0xDEAD)[4] == 0xDEAD


def test_spec_mode_returns_zero_in_x4_when_it_is_not_an_output(host: Host) -> None:
    assert host.machine.smc(0xC400_0150, 0x10000, 0, 0, 0xDEAD)[4] == 0
