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

from cca_hil.arch.gpt import Gpccr, Gptbr, GptConfigError, GptFeatures, L0GptSz, Pps
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

FVP_GPT_L0_BASE = 0x0405_E000
"""TF-A on FVP: the L0 GPT in the top 8 KB of Trusted SRAM (GPTBR_EL3 = 0x405E, rme-gpt-mec.md §6.1)."""
FVP_GPT_L1_BASE = 0xFFF0_0000
"""TF-A on FVP: ARM_L1_GPT_BASE, the 1 MB Root carve-out the L1 tables are handed out from."""

GpfRouting = Literal["abort", "el3"]
GPF_ROUTINGS: tuple[GpfRouting, ...] = ("abort", "el3")

QuirkMode = Literal["spec", "tf-rmm"]
QUIRK_MODES: tuple[QuirkMode, ...] = ("spec", "tf-rmm")
QUIRK_ROWS: tuple[int, ...] = (1, 5, 6, 8, 9, 12, 13, 17, 19, 22)
"""Rows of rmm-abi.md §12 where TF-RMM departs from the spec and the model offers both answers.

The other rows either need concurrency or a rel0-only tag (#15, #20, #21) or are places where the
spec allows a choice or is silent (#2, #3, #4, #7, #10, #11, #14, #16, #18): there the model
always answers as TF-RMM does, in every mode.
"""
COMPAT_MODES: dict[str, QuirkMode] = {"spec": "spec", "tf-rmm-1.0": "tf-rmm"}
"""Values of the profile key ``model.compat`` and the quirk mode each selects."""
FAULT_STATUSES = ("error_input", "error_realm", "error_rec", "error_rtt")


@dataclass(frozen=True)
class RmmFault:
    """Test-only fault switch: one failure condition of one command answers with the wrong status.

    ``rmm.fault: {command: granule_delegate, condition: gran_state, status: error_rec}`` makes the
    modelled RMM report ``error_rec`` (index 0) wherever the spec says ``gran_state`` holds. It
    exists so that the differential runner's own detection can be tested on a board-sim.
    """

    command: str
    condition: str
    status: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RmmFault:
        """From a profile's ``rmm.fault`` mapping (ProfileError on a missing key or unknown status)."""
        missing = [k for k in ("command", "condition", "status") if not isinstance(params.get(k), str)]
        extra = sorted(set(params) - {"command", "condition", "status"})
        if missing or extra:
            raise ProfileError(
                f"rmm.fault needs command, condition and status (missing {missing}, unknown {extra})"
            )
        fault = cls(str(params["command"]), str(params["condition"]), str(params["status"]))
        if fault.status not in FAULT_STATUSES:
            raise ProfileError(f"unknown rmm.fault.status {fault.status!r}", valid=FAULT_STATUSES)
        return fault


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
    quirk_rows: tuple[int, ...] | None = None
    """The §12 rows answered as TF-RMM does; None: every row of :data:`QUIRK_ROWS` under ``tf-rmm``,
    none under ``spec``. ``[5, 6]`` switches exactly rows 5 and 6 (in either mode)."""
    fault: RmmFault | None = None
    """Test-only: one failure condition answered with a wrong status (see :class:`RmmFault`)."""
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
        for row in self.quirk_rows or ():
            if row not in QUIRK_ROWS:
                raise ProfileError(
                    f"rmm.quirk_rows: {row} is not a switchable §12 row", valid=[str(r) for r in QUIRK_ROWS]
                )
        if self.vmid_bits not in (8, 16):
            raise ProfileError(f"rmm.vmid_bits {self.vmid_bits} is not a VMID width", valid=("8", "16"))
        for name, low, high in _RMM_RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ProfileError(f"rmm.{name} {value} outside {low}..{high}")

    def active_quirk_rows(self) -> frozenset[int]:
        """The §12 rows answered as TF-RMM does."""
        if self.quirk_rows is not None:
            return frozenset(self.quirk_rows)
        return frozenset(QUIRK_ROWS) if self.quirks == "tf-rmm" else frozenset()

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


@dataclass(frozen=True, kw_only=True)
class GptPlacement:
    """How EL3 configures the GPC: register values, where the L1 tables go, a carve-out it adds."""

    gpccr: Gpccr
    gptbr: Gptbr
    l1_base: int
    carveout: MemoryRegion | None = None
    """Root memory for the tables when the platform map has no room for them (not in ``regions``)."""


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
    """FEAT_MEC: each realm's memory is encrypted under its own MECID (rme-gpt-mec.md §7.3, §7.7)."""
    mecid_bits: int = 16
    """MECIDR_EL2.MECIDWidthm1 + 1: the common MECID width."""
    encryption: bool = False
    """Memory is encrypted per PAS (and per MECID with ``mec``): a read through a foreign context sees
    ciphertext (DEN0129 RMLFBL). Off by default, as on an FVP run without its MPE (TF-A's RME recipe):
    TF-RMM's scrubbing is then observable as zeros (rmm-abi.md §3.1, §11 #21) and bytes stay
    comparable with such a target; ``model-mec`` and ``--set model.encryption=true`` turn it on."""
    gpf_routing: GpfRouting = "abort"
    """SCR_EL3.GPF: ``abort`` (0, TF-A's choice) reports a GPF at EL2/EL1 as an Instruction/Data Abort
    there; ``el3`` (1) takes it to EL3 as a GPC exception (DDI0487 D1.4.5.3, rme-gpt-mec.md §4.3)."""
    gpt_pps_bits: int | None = None
    """Protected PA size t of GPCCR_EL3.PPS; default: the smallest size of at least 40 bits (TF-A on FVP:
    1 TB) that covers every region."""
    gpt_l0gptsz_bits: int | None = None
    """L0GPTSZ (fixed by the implementation): 30 (FVP) unless the PPS is above 44 bits, then 34."""
    gpt_l0_base: int | None = None
    """Where EL3 puts the L0 GPT (GPTBR_EL3.BADDR << 12); default: TF-A's FVP address when it fits,
    else a Root carve-out of its own at the top of the protected range."""
    gpt_l1_base: int | None = None
    """Where EL3 hands out L1 GPTs from; default as ``gpt_l0_base`` (FVP: the 1 MB L1-GPT carve-out)."""
    el3_skip_tlbi: bool = False
    """Negative testing: EL3 leaves out the TLBI after each GPT write, so cached GPIs go stale (§5.5)."""
    rmm: RmmConfig = field(default_factory=RmmConfig)

    def check(self) -> None:
        """Reject values no platform can have (ProfileError naming the parameter and what is valid)."""
        self.rmm.check()
        if not 1 <= self.mecid_bits <= 16:
            raise ProfileError(f"mecid_bits {self.mecid_bits} outside 1..16")
        if self.gpf_routing not in GPF_ROUTINGS:
            raise ProfileError(f"unknown gpf_routing {self.gpf_routing!r}", valid=GPF_ROUTINGS)
        pps = [p.bits for p in Pps]
        if self.gpt_pps_bits is not None and (
            self.gpt_pps_bits not in pps or self.gpt_pps_bits > self.pa_bits
        ):
            raise ProfileError(
                f"gpt_pps_bits {self.gpt_pps_bits} is not a GPCCR_EL3.PPS size up to pa_bits {self.pa_bits}",
                valid=[str(b) for b in pps if b <= self.pa_bits],
            )
        if self.gpt_l0gptsz_bits is not None and self.gpt_l0gptsz_bits not in (30, 34, 36, 39):
            raise ProfileError(f"gpt_l0gptsz_bits {self.gpt_l0gptsz_bits}", valid=("30", "34", "36", "39"))
        try:
            placement = self.gpt_placement()
            placement.gptbr.check_alignment(placement.gpccr.geometry)
        except GptConfigError as exc:
            raise ProfileError(f"GPT placement: {exc.what}", where="model.gpt_l0_base") from exc

    def gpt_placement(self) -> GptPlacement:
        """GPCCR_EL3/GPTBR_EL3 as TF-A programs them and where the tables go (rme-gpt-mec.md §6.1)."""
        top = max((r.end for r in self.regions if r.pas is not Pas.ANY), default=1)
        need = max(min(40, self.pa_bits), (top - 1).bit_length())
        if self.gpt_pps_bits is not None:
            t = self.gpt_pps_bits
        else:
            fitting = sorted(p.bits for p in Pps if need <= p.bits <= self.pa_bits)
            if not fitting:
                raise GptConfigError(
                    f"no PPS covers the memory map up to {top:#x} within pa_bits {self.pa_bits}"
                )
            t = fitting[0]
        s = self.gpt_l0gptsz_bits if self.gpt_l0gptsz_bits is not None else (30 if t <= 44 else 34)
        # TF-A's GPCCR_EL3: PPS, PGS 4 KB, IRGN=ORGN=WB-RA-WA, SH=IS, GPC=1 (0x13502 on FVP).
        gpccr = Gpccr(
            pps=next(p for p in Pps if p.bits == t), l0gptsz=next(z for z in L0GptSz if z.bits == s)
        )
        geometry = gpccr.geometry
        names = {r.name for r in self.regions}
        fvp_fits = geometry.l0_table_size <= 0x2000 and {"trusted-sram", "l1-gpt"} <= names
        l0 = self.gpt_l0_base
        l1 = self.gpt_l1_base
        carveout = None
        if l0 is None or l1 is None:
            if fvp_fits:
                l0 = FVP_GPT_L0_BASE if l0 is None else l0
                l1 = FVP_GPT_L1_BASE if l1 is None else l1
            else:
                # A Root carve-out of one whole L0 region at the top of the protected range (an L0 Block,
                # so it needs no L1 table itself): L0 table first, then the L1 tables.
                base = geometry.protected_size - geometry.l0_region_size
                if any(r.base < base + geometry.l0_region_size and base < r.end for r in self.regions):
                    raise GptConfigError("no room for the GPT: set gpt_l0_base and gpt_l1_base")
                carveout = MemoryRegion("gpt", base, geometry.l0_region_size, "sram", Pas.ROOT)
                l0 = base if l0 is None else l0
                l1_size = geometry.l1_table_size
                l1 = -(-(base + geometry.l0_table_size) // l1_size) * l1_size if l1 is None else l1
        return GptPlacement(gpccr=gpccr, gptbr=Gptbr.for_table(l0), l1_base=l1, carveout=carveout)

    def gpt_features(self) -> GptFeatures:
        """What the PE implements for the GPC: FEAT_SEL2, no GDI, this PA size."""
        return GptFeatures(pa_bits=self.pa_bits)

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
        if "compat" in params:
            compat = params["compat"]
            if compat not in COMPAT_MODES:
                raise ProfileError(f"unknown model.compat {compat!r}", valid=tuple(COMPAT_MODES))
            rmm_params["quirks"] = COMPAT_MODES[compat]  # the profile-level switch wins over rmm.quirks
        if "quirk_rows" in rmm_params:
            rmm_params["quirk_rows"] = tuple(int(r) for r in rmm_params["quirk_rows"])
        if "fault" in rmm_params:
            rmm_params["fault"] = RmmFault.from_params(rmm_params["fault"])
        rmm = replace(base.rmm, **rmm_params) if rmm_params else base.rmm
        rmm.check()
        top = {k: v for k, v in params.items() if k not in ("rmm", "regions", "granule_pool", "compat")}
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
        config.check()
        return config
