"""The built-in model as a target: no hardware, same operations (profile ``model``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import RmiStatus
from cca_hil.model.machine import Machine
from cca_hil.model.platform import PlatformConfig
from cca_hil.targets.base import (
    AccessOp,
    AccessResult,
    Capability,
    Target,
    TargetInfo,
)

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

RMI_VERSION_FID = 0xC400_0150
RMI_FEATURES_FID = 0xC400_0165

_REGION_SCHEMA = {"name": str, "base": int, "size": int, "kind": str, "pas": str}


class ModelTarget(Target):
    """The in-process RME platform model: an RMM that follows RMM 1.0, deterministic from a seed."""

    kind: ClassVar[str] = "model"

    PARAMS: ClassVar[dict[str, Any]] = {
        "seed": int,
        "pa_bits": int,
        "non_memory": int,
        "mec": bool,
        "mecid_bits": int,
        "regions": list,
        "granule_pool": list,
        "rmm": {
            "version": int,
            "quirks": str,
            "s2sz": int,
            "lpa2": bool,
            "sve": bool,
            "sve_vl": int,
            "num_bps": int,
            "num_wps": int,
            "pmu": bool,
            "pmu_num_ctrs": int,
            "sha256": bool,
            "sha512": bool,
            "gicv3_num_lrs": int,
            "max_recs_order": int,
            "aux_count": int,
            "vmid_bits": int,
            "gicv3_priority_bits": int,
            "gicv3_id_bits": int,
            "pa_bits_for_start_level_0": int,
        },
    }

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        self.config = PlatformConfig.from_params({"name": profile.name, **profile.params})
        self.machine = Machine(self.config)

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {Capability.RME, Capability.ACCESS, Capability.MEMORY, Capability.GPT_READ}
        if self.config.mec:
            caps.add(Capability.MEC)
        return frozenset(caps)

    def info(self) -> TargetInfo:
        version = self.machine.smc(RMI_VERSION_FID, 0x10000)
        features = self.machine.smc(RMI_FEATURES_FID, 0)
        rmm = self.config.rmm
        facts = {
            "model seed": str(self.config.seed),
            "RMM quirks": rmm.quirks,
            "RMI_FEATURES[0]": f"{features[1]:#x}",
            "REC aux granules": str(rmm.aux_count),
        }
        return TargetInfo(
            name=self.name,
            kind=self.kind,
            pa_bits=self.config.pa_bits,
            regions=self.config.regions,
            granule_pool=self.config.granule_pool,
            rmm_version=version[2]
            if (version[0] & 0xFF) in (RmiStatus.SUCCESS, RmiStatus.ERROR_INPUT)
            else None,
            capabilities=self.capabilities,
            platform=self.config.platform_names(),
            facts=facts,
        )

    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        return self.machine.monitor.smc(fid, args)

    def read(self, pa: int, size: int) -> bytes:
        return self.machine.ns_read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        self.machine.ns_write(pa, data)

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        return self.machine.ns_access(pa, op, size, value)

    def gpt_pas(self, pa: int) -> Pas:
        return self.machine.gpt.pas_of(pa)

    @property
    def rmi_condition(self) -> str | None:
        return self.machine.rmm.last_condition

    def reset(self) -> None:
        """A fresh boot: a new machine from the same configuration and seed."""
        self.machine = Machine(self.config)
