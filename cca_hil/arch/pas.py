"""Physical address spaces (DDI0487 D9.1) and the names cca-hil uses for them."""

from __future__ import annotations

from enum import StrEnum


class Pas(StrEnum):
    """A physical address space, or what a GPT entry allows (``any``: all four; ``none``: none)."""

    SECURE = "secure"
    NONSECURE = "nonsecure"
    ROOT = "root"
    REALM = "realm"
    ANY = "any"
    NONE = "none"

    @classmethod
    def parse(cls, text: str) -> Pas:
        """Parse a PAS name; accepts the usual short forms (``ns``, ``s``, ``nonsecure``)."""
        key = text.strip().lower().replace("-", "").replace("_", "")
        aliases = {
            "ns": cls.NONSECURE,
            "nonsecure": cls.NONSECURE,
            "s": cls.SECURE,
            "secure": cls.SECURE,
            "root": cls.ROOT,
            "realm": cls.REALM,
            "rl": cls.REALM,
            "any": cls.ANY,
            "none": cls.NONE,
            "noaccess": cls.NONE,
        }
        try:
            return aliases[key]
        except KeyError:
            raise ValueError(f"unknown PAS {text!r}") from None

    def allows(self, access: Pas) -> bool:
        """True when an access made in PAS ``access`` passes a GPT entry of this value."""
        if self is Pas.ANY:
            return True
        if self is Pas.NONE:
            return False
        return self is access
