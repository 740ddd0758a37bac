"""Description of a modelled RME platform: memory map, PA size, granule pool, RMM features.

The default follows the FVP Base RevC RME layout that TF-A builds
(targets-transports §2.3), so an address means the same thing on the model and
on an FVP: NS DRAM at 0x8000_0000, the Secure/Realm/Root carve-outs at the top
of DRAM1, and DRAM2 at 0x8_8000_0000.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cca_hil.arch.pas import Pas
from cca_hil.errors import ProfileError
from cca_hil.targets.base import MemoryRegion

GiB = 1 << 30
MiB = 1 << 20

FVP_BASE_RME_REGIONS: tuple[MemoryRegion, ...] = (
    MemoryRegion("trusted-rom", 0x0000_0000, 0x0400_0000, "rom", Pas.ANY),
    MemoryRegion("trusted-sram", 0x0400_0000, 0x0008_0000, "sram", Pas.ANY),
    MemoryRegion("trusted-dram", 0x0600_0000, 0x0200_0000, "dram", Pas.ANY),
    MemoryRegion("io", 0x0800_0000, 0x7800_0000, "device", Pas.ANY),
    MemoryRegion("ns-dram1", 0x8000_0000, 0x7C00_0000, "dram", Pas.NONSECURE),
    MemoryRegion("secure-tzc-dram", 0xFC00_0000, 0x01C0_0000, "dram", Pas.SECURE),
    MemoryRegion("rmm", 0xFDC0_0000, 0x0200_0000, "dram", Pas.REALM),
    MemoryRegion("el3-tzc-dram", 0xFFC0_0000, 0x0030_0000, "dram", Pas.ROOT),
    MemoryRegion("l1-gpt", 0xFFF0_0000, 0x0010_0000, "dram", Pas.ROOT),
    MemoryRegion("ns-dram2", 0x8_8000_0000, 0x8000_0000, "dram", Pas.NONSECURE),
)
"""FVP Base RevC with ENABLE_RMM=1 (TF-A fvp_pas_def.h); device space is GPI ANY (not protected)."""

QuirkMode = Literal["spec", "tf-rmm"]
QUIRK_MODES: tuple[QuirkMode, ...] = ("spec", "tf-rmm")
_RMM_RANGES = (
    ("aux_count", 0, 16),
    ("max_recs_order", 1, 15),
    ("gicv3_num_lrs", 0, 15),
    ("gicv3_priority_bits", 5, 8),
    ("gicv3_id_bits", 16, 24),
    ("s2sz", 32, 52),
)
"""Fields of RmmConfig with the range RMM 1.0 (and the GICv3 architecture) allows."""


@dataclass(frozen=True)
class RmmConfig:
    """What the modelled RMM implements and reports in RMI_FEATURES register 0 (RMM 1.0 B4.4.5)."""

    version: int = 0x10000
    quirks: QuirkMode = "spec"
    """``spec``: the specification's answer wherever TF-RMM departs from it; ``tf-rmm``: TF-RMM's."""
    s2sz: int = 48
    lpa2: bool = False
    sve: bool = False
    sve_vl: int = 0
    num_bps: int = 6
    """Breakpoints minus one, as in the feature register."""
    num_wps: int = 4
    """Watchpoints minus one, as in the feature register."""
    pmu: bool = True
    pmu_num_ctrs: int = 31
    sha256: bool = True
    sha512: bool = True
    gicv3_num_lrs: int = 15
    """List registers minus one."""
    gicv3_priority_bits: int = 5
    """Virtual priority bits (ICH_VTR_EL2.PRIbits + 1); the LR priority bits below them are RES0."""
    gicv3_id_bits: int = 16
    """Virtual INTID bits (ICH_VTR_EL2.IDbits): LPIs above this are invalid in a list register."""
    max_recs_order: int = 10
    aux_count: int = 16
    vmid_bits: int = 16
    pa_bits_for_start_level_0: int = 44

    def check(self) -> None:
        """Reject values RMM 1.0 cannot report (ProfileError naming the field and its valid range)."""
        if self.quirks not in QUIRK_MODES:
            raise ProfileError(f"unknown rmm.quirks {self.quirks!r}", valid=QUIRK_MODES)
        if self.vmid_bits not in (8, 16):
            raise ProfileError(f"rmm.vmid_bits {self.vmid_bits} is not a VMID width", valid=("8", "16"))
        for name, low, high in _RMM_RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ProfileError(f"rmm.{name} {value} outside {low}..{high}")

    def feature_register_0(self) -> int:
        """RmiFeatureRegister0 in the 1.0-rel0 layout."""
        value = self.s2sz & 0xFF
        value |= int(self.lpa2) << 8
        value |= int(self.sve) << 9
        value |= (self.sve_vl & 0xF) << 10
        value |= (self.num_bps & 0x3F) << 14
        value |= (self.num_wps & 0x3F) << 20
        value |= int(self.pmu) << 26
        value |= (self.pmu_num_ctrs & 0x1F) << 27
        value |= int(self.sha256) << 32
        value |= int(self.sha512) << 33
        value |= (self.gicv3_num_lrs & 0xF) << 34
        value |= (self.max_recs_order & 0xF) << 38
        return value


@dataclass(frozen=True)
class PlatformConfig:
    """Everything needed to build a modelled platform; deterministic from ``seed``."""

    name: str = "fvp-base-rme"
    pa_bits: int = 48
    regions: tuple[MemoryRegion, ...] = FVP_BASE_RME_REGIONS
    granule_pool: tuple[tuple[int, int], ...] = ((0x9000_0000, 0x6C00_0000),)
    """NS DRAM the host-side agent may use for granules (past BL33 at 0x8800_0000)."""
    non_memory: int = 0x1_0000_0000
    """An address in no memory (between DRAM1 and DRAM2 on FVP)."""
    seed: int = 0
    mec: bool = False
    mecid_bits: int = 16
    rmm: RmmConfig = field(default_factory=RmmConfig)

    @property
    def pa_limit(self) -> int:
        """First address past the physical address range."""
        return 1 << self.pa_bits

    def delegable_ranges(self) -> tuple[tuple[int, int], ...]:
        """(base, end) of the DRAM the RMM tracks (TF-RMM: every DRAM bank EL3 reports)."""
        banks: list[tuple[int, int]] = []
        for region in sorted(self.regions, key=lambda r: r.base):
            if region.kind != "dram" or region.pas is Pas.ANY:
                continue
            if banks and banks[-1][1] == region.base:
                banks[-1] = (banks[-1][0], region.end)
            else:
                banks.append((region.base, region.end))
        return tuple(banks)

    def first_granule(self, pas: Pas) -> int:
        """Address of the first DRAM granule whose initial PAS is ``pas``."""
        for region in self.regions:
            if region.kind == "dram" and region.pas is pas:
                return region.base
        raise LookupError(f"platform {self.name} has no {pas} DRAM")

    def platform_names(self) -> dict[str, int]:
        """Values of the sequence format's ``platform.*`` names."""
        ns = [r for r in self.regions if r.kind == "dram" and r.pas is Pas.NONSECURE]
        return {
            "pa_limit": self.pa_limit,
            "ns_dram_base": min(r.base for r in ns),
            "non_memory": self.non_memory,
            "secure_granule": self.first_granule(Pas.SECURE),
            "root_granule": self.first_granule(Pas.ROOT),
            "realm_granule": self.first_granule(Pas.REALM),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PlatformConfig:
        """Build from a profile's validated ``model`` section (unknown keys were rejected earlier)."""
        base = cls()
        rmm_params = dict(params.get("rmm", {}))
        rmm = replace(base.rmm, **rmm_params) if rmm_params else base.rmm
        rmm.check()
        top = {k: v for k, v in params.items() if k not in ("rmm", "regions", "granule_pool")}
        config = replace(base, rmm=rmm, **top)
        if "regions" in params:
            regions = tuple(
                MemoryRegion(r["name"], int(r["base"]), int(r["size"]), r["kind"], Pas.parse(r["pas"]))
                for r in params["regions"]
            )
            config = replace(config, regions=regions)
        if "granule_pool" in params:
            pool = tuple((int(p["base"]), int(p["size"])) for p in params["granule_pool"])
            config = replace(config, granule_pool=pool)
        return config
