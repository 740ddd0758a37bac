"""The RSI version a target's RMM negotiates, asked the only way there is: from inside a realm.

RSI_VERSION (RMM 1.0 B5.3.10, rmm-abi.md §1.5) is a call a realm makes; the host cannot ask it. The
probe builds the smallest realm that runs (RTTs to level 3 at IPA 0, one measured data granule that
holds the RsiHostCall page the realm exits through, one REC), has it call RSI_VERSION(1.0), and tears
the realm down again, undelegating every granule: the target is left as it was found. It runs as an
ordinary sequence, so the same code path serves the model, board-sim and hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from cca_hil.arch.rmi import decode_version
from cca_hil.results import Outcome
from cca_hil.sequences import Runner, load_sequence_text
from cca_hil.targets.base import Capability, Target

PROBE_VMID = 0xFE
"""VMID of the probe realm: one a bench sequence rarely picks (the conformance suite uses 1..512)."""

PROBE_SEQUENCE = f"""\
sequence: rsi-version-probe
description: Ask the RSI version from inside a realm, then remove the realm
requires: [realm_exec]
granules: [rd, rtt0, rtt1, rtt2, rtt3, data0, src0, rec0]
steps:
  - {{name: delegate_rd, rmi: granule_delegate, args: {{addr: rd}}}}
  - {{name: delegate_rtt0, rmi: granule_delegate, args: {{addr: rtt0}}}}
  - name: realm_create
    rmi: realm_create
    args: {{rd: rd, params: {{s2sz: 40, rtt_level_start: 0, rtt_base: rtt0, vmid: {PROBE_VMID}}}}}
  - {{name: delegate_rtt1, rmi: granule_delegate, args: {{addr: rtt1}}}}
  - {{name: rtt1, rmi: rtt_create, args: {{rd: rd, rtt: rtt1, ipa: 0, level: 1}}}}
  - {{name: delegate_rtt2, rmi: granule_delegate, args: {{addr: rtt2}}}}
  - {{name: rtt2, rmi: rtt_create, args: {{rd: rd, rtt: rtt2, ipa: 0, level: 2}}}}
  - {{name: delegate_rtt3, rmi: granule_delegate, args: {{addr: rtt3}}}}
  - {{name: rtt3, rmi: rtt_create, args: {{rd: rd, rtt: rtt3, ipa: 0, level: 3}}}}
  - {{name: delegate_data0, rmi: granule_delegate, args: {{addr: data0}}}}
  - {{name: data0, rmi: data_create, args: {{rd: rd, data: data0, ipa: 0x0, src: src0, flags: measure}}}}
  - {{name: delegate_rec0, rmi: granule_delegate, args: {{addr: rec0}}}}
  - name: rec0
    rmi: rec_create
    args: {{rd: rd, rec: rec0, params: {{flags: runnable, mpidr: 0, pc: 0x0}}}}
  - {{name: activate, rmi: realm_activate, args: {{rd: rd}}}}
  - {{name: rsi_version, rsi: version, rec: rec0, args: {{req: 0x10000}}}}
  - {{name: rec_destroy, rmi: rec_destroy, args: {{rec: rec0}}}}
  - {{name: data_destroy, rmi: data_destroy, args: {{rd: rd, ipa: 0x0}}}}
  - {{name: rtt3_destroy, rmi: rtt_destroy, args: {{rd: rd, ipa: 0, level: 3}}}}
  - {{name: rtt2_destroy, rmi: rtt_destroy, args: {{rd: rd, ipa: 0, level: 2}}}}
  - {{name: rtt1_destroy, rmi: rtt_destroy, args: {{rd: rd, ipa: 0, level: 1}}}}
  - {{name: realm_destroy, rmi: realm_destroy, args: {{rd: rd}}}}
  - {{name: undelegate_rec0, rmi: granule_undelegate, args: {{addr: rec0}}}}
  - {{name: undelegate_data0, rmi: granule_undelegate, args: {{addr: data0}}}}
  - {{name: undelegate_rtt3, rmi: granule_undelegate, args: {{addr: rtt3}}}}
  - {{name: undelegate_rtt2, rmi: granule_undelegate, args: {{addr: rtt2}}}}
  - {{name: undelegate_rtt1, rmi: granule_undelegate, args: {{addr: rtt1}}}}
  - {{name: undelegate_rtt0, rmi: granule_undelegate, args: {{addr: rtt0}}}}
  - {{name: undelegate_rd, rmi: granule_undelegate, args: {{addr: rd}}}}
"""


@dataclass(frozen=True)
class RsiVersion:
    """What RSI_VERSION(1.0) answered inside the probe realm, or why it could not be asked."""

    status: str | None = None
    """``success`` (1.0 is compatible) or ``error_input``; None when the probe did not get an answer."""
    lower: int | None = None
    higher: int | None = None
    reason: str = ""
    """Why there is no answer (no realm execution, the probe realm failed at a step …)."""

    @property
    def answered(self) -> bool:
        return self.status is not None

    def describe(self) -> str:
        """One line for ``info``."""
        if not self.answered or self.lower is None or self.higher is None:
            return f"RSI version: not asked ({self.reason})"
        lower = "{}.{}".format(*decode_version(self.lower))
        higher = "{}.{}".format(*decode_version(self.higher))
        said = f"RSI_VERSION(1.0) said {self.status}"
        return f"RSI version {higher} (lower {lower}; {said}, asked by a probe realm)"

    def to_json(self) -> dict[str, object]:
        if not self.answered or self.lower is None or self.higher is None:
            return {"status": None, "reason": self.reason}
        return {
            "status": self.status,
            "lower": "{}.{}".format(*decode_version(self.lower)),
            "higher": "{}.{}".format(*decode_version(self.higher)),
        }


def probe_rsi_version(target: Target) -> RsiVersion:
    """Ask ``target``'s RMM for its RSI version from a probe realm (removed again afterwards)."""
    if not target.has(Capability.REALM_EXEC):
        return RsiVersion(reason=f"{target.kind} target runs no realms")
    result = Runner(target).run(load_sequence_text(PROBE_SEQUENCE, source="<rsi-version-probe>"))
    if result.skipped_reason:
        return RsiVersion(reason=result.skipped_reason)
    steps = {step.name: step for step in result.steps}
    broken = next((s for s in result.steps if s.outcome is not Outcome.PASSED), None)
    answer = steps.get("rsi_version")
    if answer is None or answer.status is None or "lower" not in answer.outputs:
        where = f"at step {broken.name}: {broken.message}" if broken is not None else "no answer"
        return RsiVersion(reason=f"the probe realm failed {where}".strip())
    version = RsiVersion(
        status=answer.status, lower=int(answer.outputs["lower"]), higher=int(answer.outputs["higher"])
    )
    if broken is not None and broken.name != "rsi_version":
        # The answer stands; the target may keep some of the probe's granules: say so.
        return RsiVersion(
            status=version.status,
            lower=version.lower,
            higher=version.higher,
            reason=f"teardown failed at step {broken.name}: {broken.message}",
        )
    return version
