"""RmiFeatureRegister0 (RMI_FEATURES index 0) as data: field positions and how to read them.

RMM 1.0-rel0 B4.4.5 (layout of the 1.0-rel0 release; the EAC5 drafts placed
NUM_BPS and the fields above it elsewhere, so decode with this table only after
RMI_VERSION reported 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldMeaning = Literal["value", "flag", "minus_one", "vl", "order"]


@dataclass(frozen=True, slots=True)
class FeatureField:
    """One field of RmiFeatureRegister0: spec name, bit position and width, and how its value reads."""

    name: str
    lsb: int
    width: int
    meaning: FieldMeaning
    description: str

    @property
    def msb(self) -> int:
        """Highest bit of the field."""
        return self.lsb + self.width - 1

    def extract(self, register: int) -> int:
        """The field's raw value in ``register``."""
        return (register >> self.lsb) & ((1 << self.width) - 1)

    def explain(self, raw: int) -> str:
        """The raw value in words (``6 breakpoints`` rather than ``5``)."""
        if self.meaning == "flag":
            return "supported" if raw else "not supported"
        if self.meaning == "minus_one":
            return str(raw + 1)
        if self.meaning == "vl":
            return f"{(raw + 1) * 128} bits"
        if self.meaning == "order":
            return f"{(1 << raw) - 1} RECs"
        return str(raw)


FEATURE_REGISTER_0: tuple[FeatureField, ...] = (
    FeatureField("S2SZ", 0, 8, "value", "maximum IPA width in bits"),
    FeatureField("LPA2", 8, 1, "flag", "LPA2 (52-bit addresses with 4 KiB granules)"),
    FeatureField("SVE_EN", 9, 1, "flag", "SVE for realms"),
    FeatureField("SVE_VL", 10, 4, "vl", "maximum SVE vector length"),
    FeatureField("NUM_BPS", 14, 6, "minus_one", "breakpoints"),
    FeatureField("NUM_WPS", 20, 6, "minus_one", "watchpoints"),
    FeatureField("PMU_EN", 26, 1, "flag", "PMU for realms"),
    FeatureField("PMU_NUM_CTRS", 27, 5, "value", "PMU event counters"),
    FeatureField("HASH_SHA_256", 32, 1, "flag", "SHA-256 measurements"),
    FeatureField("HASH_SHA_512", 33, 1, "flag", "SHA-512 measurements"),
    FeatureField("GICV3_NUM_LRS", 34, 4, "minus_one", "GICv3 list registers"),
    FeatureField("MAX_RECS_ORDER", 38, 4, "order", "maximum RECs per realm"),
)
"""Fields of RmiFeatureRegister0 in bit order; bits 63:42 are reserved (zero in 1.0)."""

RESERVED_MASK = ~((1 << 42) - 1) & 0xFFFF_FFFF_FFFF_FFFF
"""Bits 63:42, which an RMM 1.0 reports as zero."""


def decode_feature_register_0(register: int) -> list[tuple[FeatureField, int]]:
    """Each field of RmiFeatureRegister0 with its raw value in ``register``."""
    return [(f, f.extract(register)) for f in FEATURE_REGISTER_0]
