"""``check gpt``: granule protection as the architecture says it must be (DDI0487 D9, rme-gpt-mec.md §9).

Three sections, each case named after the rule it checks:

* **isolation** — every PAS of the memory map × every accessing Security state
  × every PAS that state can name × load/store: allowed, or a granule
  protection fault reported as DDI0487 D1.4.5.3 says (Data Abort with DFSC
  0x28 at the requester's EL, or with SCR_EL3.GPF=1 a GPC exception whose
  GPCSC names the fault); the PA above the PPS (R_CPDSB, R_JFFHB);
* **transitions** — RMI_GRANULE_DELEGATE/UNDELEGATE as seen from the host:
  the GPT entry, the fault on the delegated granule and none on its
  neighbours, no stale cached GPI after the SMC returns, TF-A's shatter and
  fuse in the table bytes, and the refusals of §6.5 leaving the GPT unchanged;
* expectations come from the memory map the target reports, and the GPT
  level of each fault from the target's own table bytes decoded by
  ``arch.gpt`` (where the target can read its GPT).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Final

from cca_hil.arch.esr import Esr, ExceptionClass, FaultStatus
from cca_hil.arch.gpt import Gpccr as GpccrReg
from cca_hil.arch.gpt import (
    GptFault,
    GptFaultKind,
    GptFeatures,
    L1Granules,
    decode_l1,
    granule_protection_check,
    memory_reader,
    walk,
)
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE, RmiStatus
from cca_hil.checks.cases import Case, Section, Verdict
from cca_hil.rmi_client import GranuleAllocator, RmiClient
from cca_hil.targets.base import AccessOp, AccessResult, Capability, Target, TargetInfo

WORLDS: Final = (Pas.NONSECURE, Pas.SECURE, Pas.REALM, Pas.ROOT)
"""Security states, named by their own PAS."""
NAMEABLE: Final = {
    Pas.NONSECURE: (Pas.NONSECURE,),
    Pas.SECURE: (Pas.SECURE, Pas.NONSECURE),
    Pas.REALM: (Pas.REALM, Pas.NONSECURE),
    Pas.ROOT: (Pas.ROOT, Pas.REALM, Pas.SECURE, Pas.NONSECURE),
}
"""The PAS each Security state's translation can output (DDI0487 D1.1, rme-gpt-mec.md §1.1)."""
RMM_GTSI_DELEGATE: Final = 0xC400_01B0
SMC_UNK: Final = (1 << 64) - 1

Oracle = Callable[[int, Pas, Pas], GptFault | None]


def gpt_oracle(target: Target) -> Oracle:
    """The GPC outcome the target's own GPT bytes give (pa, access PAS, world), by ``arch.gpt``."""
    gpccr, gptbr = target.gpt_registers()
    read64 = memory_reader(target.gpt_tables())
    features = GptFeatures(pa_bits=target.info().pa_bits)

    def outcome(pa: int, access: Pas, world: Pas) -> GptFault | None:
        return granule_protection_check(
            pa, access=access, requester=world, gpccr=gpccr, gptbr=gptbr, read64=read64, features=features
        )

    return outcome


def judge(result: AccessResult, expected: GptFault | None, *, write: bool) -> Verdict:
    """Does an access result match the GPC outcome ``expected``, syndrome included (§4.3–4.5)?"""
    fault = result.fault
    outputs: dict[str, object] = {}
    if fault is not None:
        outputs = {"esr": f"{fault.esr:#x}", "far": f"{fault.far:#x}", "fault": fault.description}
    if expected is None:
        if fault is None:
            return Verdict(True, "ok", outputs=outputs)
        esr = Esr(fault.esr)
        if not fault.gpf and esr.is_abort and esr.fault_status == FaultStatus.SYNC_EXTERNAL:
            return Verdict(True, "external abort", outputs=outputs)  # passed the GPC, nothing answered
        return Verdict(False, "fault", f"faulted ({fault.describe()}) where the GPT allows it", outputs)
    if fault is None:
        return Verdict(False, "ok", f"completed; expected {expected}", outputs)
    esr = Esr(fault.esr)
    if esr.is_gpc_exception:
        if esr.gpc_fault != expected:
            return Verdict(
                False, "gpc exception", f"GPCSC says {esr.gpc_fault}, expected {expected}", outputs
            )
        if esr.wnr != write:
            return Verdict(False, "gpc exception", f"WnR={int(esr.wnr)} for a {_op(write)}", outputs)
        return Verdict(True, "gpc exception", outputs=outputs)
    if not esr.is_abort:
        return Verdict(False, "fault", f"{esr.describe()}: neither an abort nor a GPC exception", outputs)
    if expected.kind is not GptFaultKind.GPF:
        return Verdict(
            False, "abort", f"{expected} must be a GPC exception to EL3, got {esr.describe()}", outputs
        )
    problems = []
    if esr.fault_status != FaultStatus.GPF:
        problems.append(f"DFSC {esr.fault_status:#04x}, expected 0x28")
    if esr.wnr != write:
        problems.append(f"WnR={int(esr.wnr)} for a {_op(write)}")
    if esr.exception_class is not ExceptionClass.DATA_ABORT_SAME:
        problems.append(f"EC {esr.ec:#04x}, expected 0x25 (Data Abort taken at the requester's EL)")
    if not fault.gpf:
        problems.append("not reported as a granule protection fault")
    return Verdict(not problems, "gpf", "; ".join(problems), outputs)


def _op(write: bool) -> str:
    return "store" if write else "load"


def _samples(info: TargetInfo) -> dict[Pas, int]:
    """One granule of each PAS in the memory map (DRAM or SRAM where there is a choice)."""
    out: dict[Pas, int] = {}
    names = info.platform
    for pas, key in (
        (Pas.SECURE, "secure_granule"),
        (Pas.REALM, "realm_granule"),
        (Pas.ROOT, "root_granule"),
    ):
        if key in names:
            out[pas] = names[key]
    if info.granule_pool:
        out[Pas.NONSECURE] = info.granule_pool[0][0]
    for region in info.regions:
        if region.pas is Pas.ANY and region.kind in ("dram", "sram") and Pas.ANY not in out:
            out[Pas.ANY] = region.base
    return out


def isolation_cases(target: Target) -> list[Case]:
    """PAS × world × nameable PAS × load/store on one granule of each PAS (R_DQPWS), and above the PPS."""
    info = target.info()
    oracle = gpt_oracle(target) if target.has(Capability.GPT_READ) else None
    cases: list[Case] = []
    for region_pas, pa in _samples(info).items():
        for world in WORLDS:
            for access in NAMEABLE[world]:
                for op in ("read", "write"):
                    allowed = region_pas is Pas.ANY or region_pas is access
                    cases.append(_matrix_case(target, oracle, pa, region_pas, world, access, op, allowed))
    if oracle is None:
        return cases  # the PPS is only known from GPCCR_EL3
    gpccr, _ = target.gpt_registers()
    above = 1 << GpccrReg.decode(gpccr).pps.bits
    if above < 1 << info.pa_bits:
        for world in WORLDS:
            rule = "R_CPDSB" if world is Pas.NONSECURE else "R_JFFHB"
            expected: GptFault | None = None if world is Pas.NONSECURE else GptFault(GptFaultKind.GPF, 0)
            cases.append(
                Case(
                    name=f"{rule} PA at 2^PPS, {world.value} world load",
                    command="gpc",
                    expected="not checked" if expected is None else str(expected),
                    args={"pa": f"{above:#x}", "world": world.value},
                    run=_access_run(
                        target, above, world, world, "read", functools.partial(_constant, expected)
                    ),
                )
            )
    return cases


def _matrix_case(  # noqa: PLR0917  (one value per axis of the matrix)
    target: Target,
    oracle: Oracle | None,
    pa: int,
    region_pas: Pas,
    world: Pas,
    access: Pas,
    op: AccessOp,
    allowed: bool,
) -> Case:
    def expectation() -> GptFault | None:
        if oracle is None:
            # Without the table bytes the level is unknown; TF-A maps all of these through L1 tables.
            return None if allowed else GptFault(GptFaultKind.GPF, 1)
        found = oracle(pa, access, world)
        if (found is None) != allowed:
            raise _Disagreement(
                f"the GPT bytes say {found or 'pass'} for a {region_pas.value} granule of the memory map"
            )
        return found

    return Case(
        name=(
            f"R_DQPWS {region_pas.value} granule, {world.value} world, {access.value} PAS,"
            f" {_op(op == 'write')}"
        ),
        command="gpc",
        expected="pass" if allowed else "GPF",
        args={"pa": f"{pa:#x}", "world": world.value, "pas": access.value, "op": op},
        run=_access_run(target, pa, world, access, op, expectation),
    )


def _constant(value: GptFault | None) -> GptFault | None:
    return value


class _Disagreement(Exception):
    """The table bytes and the memory map disagree: the case fails with this message."""


def _access_run(  # noqa: PLR0917
    target: Target, pa: int, world: Pas, access: Pas, op: AccessOp, expectation: Callable[[], GptFault | None]
) -> Callable[[], Verdict]:
    def run() -> Verdict:
        try:
            expected = expectation()
        except _Disagreement as exc:
            return Verdict(False, "gpt mismatch", str(exc))
        result = target.access_from(world, pa, op, pas=access)
        return judge(result, expected, write=op == "write")

    return run


# --------------------------------------------------------------------------------------------------
# Transitions


class _Transitions:
    """Delegate/undelegate cases sharing one granule from the host's pool (RMM 1.0 B4.3.5/6, §5.4)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = RmiClient(target)
        self.granule = GranuleAllocator.for_target(target).slot()
        self.before: dict[int, bytes] | None = None

    def _tables(self) -> dict[int, bytes] | None:
        return self.target.gpt_tables() if self.target.has(Capability.GPT_READ) else None

    def _expect_gpf(self, pa: int) -> GptFault:
        if self.target.has(Capability.GPT_READ):
            found = gpt_oracle(self.target)(pa, Pas.NONSECURE, Pas.NONSECURE)
            if found is not None:
                return found
        return GptFault(GptFaultKind.GPF, 1)

    def warm_then_delegate(self) -> Verdict:
        """D9.5: a GPI cached by earlier accesses is gone once the delegating SMC returns (TLBI RPALOS)."""
        g = self.granule
        for _ in range(2):
            warm = self.target.access(g, "read")
            if not warm.ok:
                return Verdict(False, "fault", f"the NS granule {g:#x} faulted before delegation")
        self.before = self._tables()
        result = self.client.granule_delegate(g)
        if not result.ok:
            return Verdict(
                False, result.status_name, f"RMI_GRANULE_DELEGATE({g:#x}) failed: {result.describe()}"
            )
        return judge(self.target.access(g, "read"), self._expect_gpf(g), write=False)

    def gpt_is_realm(self) -> Verdict:
        """RMM 1.0 B4.3.5 post-condition: the GPT entry of the delegated granule is Realm."""
        pas = self.target.gpt_pas(self.granule)
        return Verdict(pas is Pas.REALM, pas.value, f"GPT entry is {pas.value}, expected realm")

    def store_faults(self) -> Verdict:
        """Catalogue #4: an NS store to the delegated granule takes a GPF with WnR=1."""
        g = self.granule
        return judge(self.target.access(g, "write", 8, 0x5A5A), self._expect_gpf(g), write=True)

    def neighbours_pass(self) -> Verdict:
        """The other 15 granules of the same Granules descriptor, and granules 2 MB and 32 MB away."""
        g = self.granule
        span = 16 * GRANULE_SIZE
        base = g & ~(span - 1)
        others = [base + i * GRANULE_SIZE for i in range(16) if base + i * GRANULE_SIZE != g]
        others += [g ^ (2 << 20), g ^ (32 << 20)]
        pool = self.target.info().granule_pool
        inside = [pa for pa in others if any(b <= pa < b + s for b, s in pool)]
        faulted = [pa for pa in inside if not self.target.access(pa, "read").ok]
        if faulted:
            return Verdict(False, "gpf", "neighbours faulted: " + ", ".join(f"{pa:#x}" for pa in faulted))
        return Verdict(True, "ok", outputs={"checked": len(inside)})

    def shattered(self) -> Verdict:
        """§3.8: the L1 entry of the granule is now a Granules descriptor with its nibble Realm."""
        gpccr, gptbr = self.target.gpt_registers()
        read64 = memory_reader(self.target.gpt_tables())
        found = walk(self.granule, gpccr=gpccr, gptbr=gptbr, read64=read64)
        if found.level != 1 or found.descriptor is None:
            return Verdict(False, "no L1 entry", f"the walk ends at level {found.level}: {found.reason}")
        descriptor = decode_l1(found.descriptor, gpccr=GpccrReg.decode(gpccr))
        observed = f"{found.descriptor:#018x}"
        if not isinstance(descriptor, L1Granules):
            return Verdict(False, observed, "still a Contiguous descriptor")
        return Verdict(
            found.pas is Pas.REALM, observed, f"the walk gives {found.pas}", {"descriptor": observed}
        )

    def undelegate(self) -> Verdict:
        """RMM 1.0 B4.3.6: after undelegation the host's load passes the GPC again."""
        g = self.granule
        result = self.client.granule_undelegate(g)
        if not result.ok:
            return Verdict(
                False, result.status_name, f"RMI_GRANULE_UNDELEGATE({g:#x}) failed: {result.describe()}"
            )
        return judge(self.target.access(g, "read"), None, write=False)

    def gpt_is_ns(self) -> Verdict:
        """RMM 1.0 B4.3.6 post-condition: the GPT entry is Non-secure again."""
        pas = self.target.gpt_pas(self.granule)
        return Verdict(pas is Pas.NONSECURE, pas.value, f"GPT entry is {pas.value}, expected nonsecure")

    def fused(self) -> Verdict:
        """TF-A fuse_block (R_RNNHCF): the tables are byte for byte as before the delegation."""
        after = self.target.gpt_tables()
        if self.before is None:
            return Verdict(False, "no baseline", "the tables were not read before delegation")
        changed = [f"{pa:#x}" for pa in after if after[pa] != self.before.get(pa)]
        return Verdict(
            not changed, "fused" if not changed else "differs", "tables differ at " + ", ".join(changed)
        )

    def refused(self, pa: int) -> Callable[[], Verdict]:
        """A delegation the RMM must refuse (§6.5 via gran_gpt), leaving the table bytes unchanged."""

        def run() -> Verdict:
            before = self._tables()
            result = self.client.granule_delegate(pa)
            if result.status is not RmiStatus.ERROR_INPUT:
                return Verdict(False, result.status_name, f"expected error_input, got {result.describe()}")
            after = self._tables()
            if before is not None and after != before:
                return Verdict(False, "gpt changed", "the refused delegation changed the GPT")
            return Verdict(True, "error_input", registers=result.registers)

        return run

    def gtsi_from_ns(self) -> Verdict:
        """§6.4: the RMM-EL3 interface only answers Realm state; the Normal world gets SMC_UNK."""
        x0 = self.target.smc(RMM_GTSI_DELEGATE, self.granule)[0]
        return Verdict(x0 == SMC_UNK, f"{x0:#x}", "the RMM-EL3 interface answered the Normal world")


def transition_cases(target: Target) -> list[Case]:
    """Delegate/undelegate from the host: GPT entry, faults, TLB maintenance, TF-A's table surgery."""
    t = _Transitions(target)
    info = target.info()
    names = info.platform
    gpt = (Capability.GPT_READ,)
    cases = [
        Case(
            "D9.5 no stale GPI after RMI_GRANULE_DELEGATE returns (TLBI RPALOS)",
            "granule_delegate",
            "gpf",
            t.warm_then_delegate,
            args={"addr": f"{t.granule:#x}"},
        ),
        Case("B4.3.5 delegated granule's GPT entry is Realm", "gpt_pas", "realm", t.gpt_is_realm, gpt),
        Case("R_PYTGX NS store to a delegated granule: GPF with WnR=1", "access", "gpf", t.store_faults),
        Case("D9.6.3 neighbours of a delegated granule stay Non-secure", "access", "ok", t.neighbours_pass),
        Case(
            "§3.8 TF-A shatter: a Granules descriptor with the Realm nibble",
            "gpt_tables",
            "granules",
            t.shattered,
            gpt,
        ),
        Case(
            "§6.4 RMM_GTSI_DELEGATE from the Normal world is SMC_UNK",
            "smc",
            "0xffffffffffffffff",
            t.gtsi_from_ns,
            (Capability.RME,),
        ),
        Case("B4.3.6 undelegated granule is accessible again", "granule_undelegate", "ok", t.undelegate),
        Case(
            "B4.3.6 undelegated granule's GPT entry is Non-secure", "gpt_pas", "nonsecure", t.gpt_is_ns, gpt
        ),
        Case("R_RNNHCF TF-A fuse: the tables are back as they were", "gpt_tables", "fused", t.fused, gpt),
    ]
    refusals = [
        ("gran_align unaligned", t.granule + 8),
        ("gran_gpt Secure granule (§6.5 policy)", names.get("secure_granule")),
        ("gran_gpt Root granule (§6.5 policy)", names.get("root_granule")),
        ("gran_gpt Realm granule of the RMM (§6.5 policy)", names.get("realm_granule")),
    ]
    for label, pa in refusals:
        if pa is None:
            continue
        cases.append(
            Case(
                f"B4.3.5 {label}: ERROR_INPUT, GPT unchanged",
                "granule_delegate",
                "error_input",
                t.refused(pa),
                args={"addr": f"{pa:#x}"},
            )
        )
    return [
        Case(c.name, c.command, c.expected, c.run, (*c.requires, Capability.RME, Capability.ACCESS), c.args)
        for c in cases
    ]


def gpt_sections(target: Target) -> Sequence[Section]:
    """The sections of ``check gpt``."""
    return (
        Section(
            "gpt-isolation",
            "every PAS × accessing world × load/store: pass or GPF with the architectural syndrome",
            lambda: isolation_cases(target),
            requires=(Capability.ACCESS,),
        ),
        Section(
            "gpt-transitions",
            "delegate/undelegate: GPT entry, faults, TLB maintenance, TF-A's shatter and fuse, refusals",
            lambda: transition_cases(target),
            requires=(Capability.RME, Capability.ACCESS),
        ),
    )
