"""Differential runs: a shadow model that predicts every answer of a hardware target (docs/differential.md).

For a target other than the built-in model, the sequence runner builds a
:class:`~cca_hil.targets.model.ModelTarget` from the target's own facts — its
memory map, granule pool and ``platform.*`` values from ``info()``, its
RMI_VERSION and its RMI_FEATURES register 0 (S2SZ, LPA2, SVE, PMU, hash
algorithms, breakpoints and watchpoints) — and the quirk mode of the target's
profile (``model.compat``). The runner then feeds both the same steps with the
same addresses (the shadow replays the target side's granule allocations) and
compares each answer with the model's prediction.

This module holds what does not depend on the runner: reading the target's
RMM facts, deciding what a sequence's version/feature ``requires`` mean,
building the shadow, the allocator pair that keeps both sides on the same
granules, and the model's view of the granules a step touched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cca_hil.arch.rmi import GRANULE_SIZE, GranuleState, RmiStatus
from cca_hil.errors import TargetError
from cca_hil.model.platform import COMPAT_MODES, QUIRK_ROWS, PlatformConfig, RmmConfig
from cca_hil.model.rtt import Hipas, Rtt
from cca_hil.profiles import Profile
from cca_hil.rmi_client import GranuleAllocator
from cca_hil.targets.base import Capability, Target, TargetInfo
from cca_hil.targets.model import ModelTarget

RMI_VERSION_FID = 0xC400_0150
RMI_FEATURES_FID = 0xC400_0165
RMI_1_0 = 0x1_0000
MODEL_MAJOR = 1
"""The RMI major version the model implements (RMM 1.0)."""


SHADOW_PARAMS: dict[str, Any] = {"compat": str, "quirk_rows": list, "seed": int}
"""The ``model:`` section of a non-model profile: how its shadow model answers."""


class AbiMismatch(TargetError):
    """The target's RMM speaks an RMI the model does not implement: comparing it would only mislead."""


def default_compat(kind: str) -> str:
    """The shadow's compatibility mode for a target kind: TF-RMM's answers on an FVP, else the spec's."""
    return "tf-rmm-1.0" if kind == "fvp" else "spec"


def compat_rows(compat: str, *, where: str = "model.compat") -> frozenset[int]:
    """The rmm-abi.md §12 rows a ``model.compat`` value answers as TF-RMM does."""
    if compat not in COMPAT_MODES:
        from cca_hil.errors import InputError

        raise InputError(f"unknown compat mode {compat!r}", where=where, valid=tuple(COMPAT_MODES))
    return frozenset(QUIRK_ROWS) if COMPAT_MODES[compat] == "tf-rmm" else frozenset()


def expected_quirk_rows(profile: Profile) -> frozenset[int]:
    """The §12 rows on which a run on ``profile`` expects the reference implementation's answers.

    A ``model`` profile: the rows its own RMM answers as TF-RMM (``rmm.quirks``, ``rmm.quirk_rows``,
    ``model.compat``). Any other: the rows of the model that predicts it (its ``model:`` section,
    else :func:`default_compat` of its kind) — the target is expected to be the RMM it is said to run.
    """
    if profile.kind == "model":
        params = {k: v for k, v in profile.params.items() if k != "attestation"}
        return PlatformConfig.from_params({"name": profile.name, **params}).rmm.active_quirk_rows()
    section = profile.shadow
    compat = str(section.get("compat", default_compat(profile.kind)))
    rows = compat_rows(compat)
    if "quirk_rows" in section:
        config = RmmConfig(
            quirks=COMPAT_MODES[compat], quirk_rows=tuple(int(r) for r in section["quirk_rows"])
        )
        config.check()
        return config.active_quirk_rows()
    return rows


@dataclass(frozen=True)
class RmmFacts:
    """What a target's RMM reports about itself: RMI_VERSION's answer and feature register 0."""

    version_status: int
    lower: int
    higher: int
    features0: int

    @property
    def major(self) -> int:
        """Major revision of the highest interface the RMM supports (RMM 1.0 §1.5: bits 30:16)."""
        return (self.higher >> 16) & 0x7FFF

    @property
    def speaks_1_0(self) -> bool:
        """RMI_VERSION(1.0) succeeded: the RMM implements a 1.0-compatible revision."""
        return self.version_status & 0xFF == RmiStatus.SUCCESS

    def field(self, low: int, width: int) -> int:
        """Bits ``low``..``low + width - 1`` of feature register 0."""
        return (self.features0 >> low) & ((1 << width) - 1)

    def rmm_params(self) -> dict[str, Any]:
        """The ``model.rmm`` values that make the model report this feature register (rmm-abi.md §5.8)."""
        return {
            "version": RMI_1_0,
            "s2sz": self.field(0, 8),
            "lpa2": bool(self.field(8, 1)),
            "sve": bool(self.field(9, 1)),
            "sve_vl": self.field(10, 4),
            "num_bps": self.field(14, 6),
            "num_wps": self.field(20, 6),
            "pmu": bool(self.field(26, 1)),
            "pmu_num_ctrs": self.field(27, 5),
            "sha256": bool(self.field(32, 1)),
            "sha512": bool(self.field(33, 1)),
            "gicv3_num_lrs": self.field(34, 4),
            "max_recs_order": self.field(38, 4),
        }

    def provides(self, requirement: str) -> bool:
        """Whether the RMM has a ``requires:`` feature item (``seqformat.FEATURE_REQUIREMENTS``)."""
        checks = {
            "rmm-1.0": self.speaks_1_0,
            "lpa2": bool(self.field(8, 1)),
            "sve": bool(self.field(9, 1)),
            "pmu": bool(self.field(26, 1)),
            "sha512": bool(self.field(33, 1)),
        }
        return checks[requirement]

    def describe_version(self) -> str:
        """``1.0`` style text of the highest revision."""
        return f"{self.major}.{self.higher & 0xFFFF}"

    def check_abi(self, target: str) -> None:
        """AbiMismatch when the RMM cannot be spoken to as RMM 1.0 (e.g. a 2.0-only RMM)."""
        if self.speaks_1_0 and self.major == MODEL_MAJOR:
            return
        if self.speaks_1_0:
            # A newer RMM that still negotiates 1.0 (rmm-abi.md §14): 1.0 semantics were agreed.
            return
        raise AbiMismatch(
            f"target {target!r} speaks RMI {self.describe_version()} (RMI_VERSION(1.0) = "
            f"{self.version_status:#x}, lower {self.lower:#x}, higher {self.higher:#x}); "
            f"the model implements RMI {MODEL_MAJOR}.0 only, so its predictions would not apply"
        )


def read_rmm_facts(target: Target) -> RmmFacts:
    """Ask the target's RMM for its version (requesting 1.0) and its feature register 0."""
    status, lower, higher = (*target.smc(RMI_VERSION_FID, RMI_1_0), 0, 0, 0)[:3]
    features0 = 0
    if status & 0xFF == RmiStatus.SUCCESS:
        features0 = (*target.smc(RMI_FEATURES_FID, 0), 0, 0)[1]
    return RmmFacts(version_status=status, lower=lower, higher=higher, features0=features0)


def shadow_profile(target: Target, info: TargetInfo, facts: RmmFacts) -> Profile:
    """The ``model`` profile that predicts ``target``: the target's facts and its profile's compat."""
    section = target.profile.shadow
    compat = str(section.get("compat", default_compat(target.kind)))
    if compat not in COMPAT_MODES:
        from cca_hil.errors import ProfileError

        raise ProfileError(f"unknown model.compat {compat!r}", valid=tuple(COMPAT_MODES))
    rmm = facts.rmm_params()
    if "quirk_rows" in section:
        rmm["quirk_rows"] = list(section["quirk_rows"])
    params: dict[str, Any] = {
        "seed": int(section.get("seed", 0)),
        "compat": compat,
        "pa_bits": info.pa_bits,
        "regions": [
            {"name": r.name, "base": r.base, "size": r.size, "kind": r.kind, "pas": str(r.pas)}
            for r in info.regions
        ],
        "granule_pool": [{"base": base, "size": size} for base, size in info.granule_pool],
        "mec": Capability.MEC in info.capabilities,
        "rmm": rmm,
    }
    if "non_memory" in info.platform:
        params["non_memory"] = int(info.platform["non_memory"])
    return Profile(name=f"{target.name}-shadow", kind="model", params=params, source="<shadow>")


def build_shadow(target: Target, info: TargetInfo, facts: RmmFacts) -> ModelTarget:
    """A freshly booted model configured from the target's facts; same ``platform.*`` values checked."""
    shadow = ModelTarget(profile=shadow_profile(target, info, facts))
    theirs = dict(info.platform)
    ours = shadow.config.platform_names()
    differing = sorted(k for k in theirs if k in ours and ours[k] != theirs[k])
    if differing:
        raise TargetError(
            f"the shadow model cannot place {', '.join(differing)} where target {target.name!r} has "
            "them: its memory map does not say enough"
        )
    return shadow


class RecordingAllocator(GranuleAllocator):
    """The target side's allocator: every 64 KiB slot it hands out is logged for the shadow to replay."""

    def __init__(self, pool: Iterable[tuple[int, int]]) -> None:
        super().__init__(pool)
        self.log: deque[int] = deque()

    def slot(self) -> int:
        """A fresh slot, logged."""
        base = super().slot()
        self.log.append(base)
        return base

    def fresh(self) -> int:
        """A fresh slot that is not logged (for a shadow that asks for more than the target side did)."""
        return super().slot()


class ReplayAllocator(GranuleAllocator):
    """The shadow side's allocator: the same slots, in the same order, as the target side took."""

    def __init__(self, source: RecordingAllocator) -> None:
        super().__init__(source._ranges)
        self._source = source

    def slot(self) -> int:
        """The target side's next slot; a fresh one when the shadow took a path the target did not."""
        if self._source.log:
            return self._source.log.popleft()
        return self._source.fresh()


def granule_view(shadow: ModelTarget, addresses: Iterable[int]) -> list[dict[str, Any]]:
    """The shadow model's view of each distinct granule: RMM state, PAS in the GPT, owning RD.

    The owner is the RD of the Realm an RD, REC, REC auxiliary, RTT or DATA granule belongs to
    (None for granules no Realm holds).
    """
    rmm = shadow.machine.rmm
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for address in addresses:
        pa = address & ~(GRANULE_SIZE - 1)
        if pa in seen or not rmm.is_delegable(pa):
            continue
        seen.add(pa)
        state = rmm.granule_state(pa)
        owner: int | None = None
        if pa >> 12 in rmm.realms:
            owner = pa
        elif pa >> 12 in rmm.recs:
            owner = rmm.recs[pa >> 12].owner.rd
        elif state is GranuleState.REC_AUX:
            owner = next((rec.owner.rd for rec in rmm.recs.values() if pa in rec.aux), None)
        elif state in (GranuleState.RTT, GranuleState.DATA):
            owner = next((r.rd for r in rmm.realms.values() if any(_holds(t, pa) for t in r.starts)), None)
        out.append(
            {
                "pa": f"{pa:#x}",
                "state": state.name.lower(),
                "pas": str(shadow.machine.gpt.pas_of(pa)),
                "owner": f"{owner:#x}" if owner is not None else None,
            }
        )
    return out


def _holds(rtt: Rtt, pa: int) -> bool:
    """Whether ``pa`` is this RTT, a table below it, or a DATA granule one of them maps."""
    if rtt.addr == pa:
        return True
    for entry in rtt.entries:
        if entry.state is Hipas.TABLE and entry.table is not None:
            if _holds(entry.table, pa):
                return True
        elif entry.state is Hipas.ASSIGNED and entry.addr == pa:
            return True
    return False


def addresses_in(value: object) -> list[int]:
    """Every integer in a step's sent arguments (nested structures too): the candidate granules."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        try:
            return [int(value, 0)]
        except ValueError:
            return []
    if isinstance(value, Mapping):
        return [a for v in value.values() for a in addresses_in(v)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in addresses_in(v)]
    return []
