"""The realm payload on an emulated Arm CPU: QEMU has no RME here, so the `realm-selftest` image runs
it at EL1 under a stand-in for the RMM (tools/agent/src/selftest/: SMCs from EL1 trapped to EL2,
RSI_VERSION answered, RSI_HOST_CALL ending the entry). Everything else is the real code: the
agent's REALM_RUN and shared page, the payload's decoding, begun counts and observation records.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_c_support import build_realm_selftest_image, qemu_agent

from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.protocol import AgentCaps, RealmAction, RealmActionKind, RealmObservation
from cca_hil.arch.rsi_1_0 import RSI_1_0

RSI_VERSION = RSI_1_0.by_name["version"].fid
RMI_VERSION = 0xC400_0150
REC, RUN = 0x4800_0000, 0x4800_1000
ABI_1_0 = 0x1_0000
NOT_SUPPORTED = (1 << 64) - 1
TIMEOUTS = LinkTimeouts(boot=60.0, handshake=1.0, request=10.0, bulk=20.0)
DOC_REALM_RUN_REPLY = bytes.fromhex("00 02 01 01 04 03 00 80 80 08 80 80 08")
"""The payload of docs/agent-protocol.md §13's REALM_RUN_REPLY example (the emulator's answer)."""


@pytest.fixture(scope="module")
def image() -> Path:
    return build_realm_selftest_image()


def test_payload_runs_the_staged_actions_and_reports_what_the_realm_observed(
    process_guard: str, image: Path
) -> None:
    version = RealmAction(RealmActionKind.RSI, fid=RSI_VERSION, args=(ABI_1_0,))
    host_call = RealmAction(RealmActionKind.HOST_CALL, imm=0x33, args=(5,))
    with qemu_agent(image) as port, AgentLink(port, timeouts=TIMEOUTS) as link:
        assert link.hello().caps & AgentCaps.REALM
        # §13's example: RSI_VERSION is observed at once, the Host call exits (begun, not observed),
        # the WFI stays queued.
        first = link.realm_run(REC, RUN, [version, host_call, RealmAction(RealmActionKind.WFI)])
        assert first.encode() == DOC_REALM_RUN_REPLY
        # The next entry: the Host call's result arrives as index 0 (X0 and its 31 gprs), then the
        # new actions; a call loads only the registers it names, so X1, X2 keep their values.
        unknown = RealmAction(RealmActionKind.SMC, fid=RMI_VERSION)
        second = link.realm_run(REC, RUN, [version, unknown])
        assert second.regs == (0,) * 5
        assert second.started == 2
        assert second.observations == (
            RealmObservation(0, (0, 5) + (0,) * 30),
            RealmObservation(1, (0, ABI_1_0, ABI_1_0, 0)),
            RealmObservation(2, (NOT_SUPPORTED, ABI_1_0, ABI_1_0, 0)),
        )
        # A refused entry runs nothing, and the agent goes on answering.
        refused = link.realm_run(0, RUN, [version])
        assert refused.regs[0] != 0 and refused.started == 0 and refused.observations == ()
        assert link.smc(0x8400_0000)[0] >> 16 == 1
