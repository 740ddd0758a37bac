"""``check mec``: scrubbing and memory encryption as the host and a debugger can observe them.

RMM 1.0 A2.2.4 (wiping on the way through DELEGATED), DEN0129 RMLFBL (a
different encryption context per PAS, per MECID with FEAT_MEC, and an address
tweak), rme-gpt-mec.md §7.2 and §7.8. Sections:

* **scrub** — what the host reads after undelegating a granule it filled, and
  after a realm's data granule is destroyed: never the old plaintext. What it
  does read is reported: zeros on a platform that does not encrypt Realm
  memory (TF-RMM scrub method 0), pseudo-random bytes where it does (§7.2);
* **encryption** — the host's plaintext seen through every other PAS (a
  debugger's view past the GPC) is never the plaintext, differs per PAS, and
  the same plaintext at PA and PA+16 gives different ciphertext (tweak);
* **realms** — with FEAT_MEC each realm has its own MECID: another realm's
  MECID, or MECID 0, never sees its data; distinct MECIDs give distinct
  ciphertext; destroying the data scrubs it under every view.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.checks.cases import Case, Section, Verdict, hexdump
from cca_hil.rmi_client import GranuleAllocator, Realm, RealmBuilder, RmiClient
from cca_hil.targets.base import Capability, Target

PATTERN: Final = bytes(range(256)) * (GRANULE_SIZE // 256)
"""The plaintext the cases write; RealmBuilder's data content is the same pattern."""
FOREIGN: Final = (Pas.SECURE, Pas.REALM, Pas.ROOT)
"""The PAS whose view of a Non-secure granule must not be its plaintext."""


def _observed(data: bytes) -> str:
    if data == PATTERN[: len(data)]:
        return "plaintext"
    return "zeros" if not any(data) else "pseudo-random"


class _Scrub:
    """RMM 1.0 A2.2.4 from the host's side."""

    def __init__(self, target: Target, allocator: GranuleAllocator) -> None:
        self.target = target
        self.allocator = allocator
        self.client = RmiClient(target)

    def undelegate(self) -> Verdict:
        """Fill a granule, delegate and undelegate it: the host must not read its data back."""
        g = self.allocator.granule()
        self.target.write(g, PATTERN)
        for command in ("granule_delegate", "granule_undelegate"):
            result = self.client.call(command, addr=g)
            if not result.ok:
                return Verdict(False, result.status_name, f"{command}({g:#x}): {result.describe()}")
        seen = self.target.read(g, GRANULE_SIZE)
        kind = _observed(seen)
        return Verdict(
            kind != "plaintext", kind, "the host reads its old data back", {"first_bytes": hexdump(seen)}
        )

    def destroy(self) -> Verdict:
        """Build and destroy a realm with one data granule: the host must not read the realm's data."""
        builder = RealmBuilder(self.client, self.allocator, data_granules=1, recs=0, vmid=3)
        realm = builder.build()
        data = realm.data[0][1]
        builder.destroy(realm)
        seen = self.target.read(data, GRANULE_SIZE)
        kind = _observed(seen)
        return Verdict(
            kind != "plaintext",
            kind,
            "the realm's data survived its destruction",
            {"first_bytes": hexdump(seen)},
        )


class _Encryption:
    """DEN0129 RMLFBL through a debugger's view of one Non-secure granule the host filled."""

    def __init__(self, target: Target, allocator: GranuleAllocator) -> None:
        self.target = target
        self.granule = allocator.granule()
        self.target.write(self.granule, PATTERN)

    def own_view(self) -> Verdict:
        """Positive control: the Non-secure view of the host's granule is its plaintext."""
        seen = self.target.read_physical(self.granule, 64, Pas.NONSECURE)
        return Verdict(seen == PATTERN[:64], _observed(seen), "the Non-secure view lost the plaintext")

    def foreign(self, pas: Pas) -> Verdict:
        """The view through ``pas`` of the host's granule is ciphertext."""
        seen = self.target.read_physical(self.granule, GRANULE_SIZE, pas)
        kind = _observed(seen)
        return Verdict(
            kind == "pseudo-random",
            kind,
            f"the {pas.value} view shows {kind}",
            {"first_bytes": hexdump(seen)},
        )

    def distinct(self) -> Verdict:
        """The three foreign views of one granule differ from each other (a context per PAS)."""
        views = {pas: self.target.read_physical(self.granule, 64, pas) for pas in FOREIGN}
        same = [f"{a.value}={b.value}" for a in FOREIGN for b in FOREIGN if a < b and views[a] == views[b]]
        return Verdict(not same, "distinct" if not same else "equal", "equal ciphertext: " + ", ".join(same))

    def alias(self) -> Verdict:
        """§7.2: on a granule every PAS reaches (GPI All), Non-secure reads Secure data as ciphertext."""
        shared = next(
            (r.base for r in self.target.info().regions if r.pas is Pas.ANY and r.kind in ("dram", "sram")),
            None,
        )
        if shared is None:
            return Verdict(True, "no alias", "the memory map has no All-access memory")
        value = int.from_bytes(PATTERN[:8], "little")
        stored = self.target.access_from(Pas.SECURE, shared, "write", 8, value)
        if not stored.ok:
            return Verdict(False, "fault", f"the Secure store to {shared:#x} faulted: {stored.fault}")
        seen = self.target.access_from(Pas.NONSECURE, shared, "read", 8)
        if not seen.ok or seen.value is None:
            return Verdict(False, "fault", f"the Non-secure load from {shared:#x} faulted: {seen.fault}")
        own = self.target.access_from(Pas.SECURE, shared, "read", 8)
        observed = "plaintext" if seen.value == value else "ciphertext"
        if own.value != value:
            return Verdict(False, observed, "the Secure world does not read back its own store")
        return Verdict(seen.value != value, observed, "the Non-secure alias reads the Secure plaintext")

    def tweak(self) -> Verdict:
        """Equal plaintext blocks at different PAs encrypt differently (address tweak)."""
        # PATTERN repeats every 256 bytes: blocks at PA and PA+256 hold the same plaintext.
        seen = self.target.read_physical(self.granule, 512, Pas.REALM)
        return Verdict(
            seen[:16] != seen[256:272], "distinct", "same ciphertext for the same plaintext at PA+256"
        )


class _Realms:
    """FEAT_MEC: two realms with data built from the same plaintext (rme-gpt-mec.md §7.7, §7.8)."""

    def __init__(self, target: Target, allocator: GranuleAllocator) -> None:
        self.target = target
        client = RmiClient(target)
        self.builders = [
            RealmBuilder(client, allocator, data_granules=1, recs=0, vmid=vmid) for vmid in (4, 5)
        ]
        self.realms: list[Realm] = [builder.build() for builder in self.builders]
        self.mecids = [target.realm_mecid(realm.rd) for realm in self.realms]

    def _data(self, index: int) -> int:
        return self.realms[index].data[0][1]

    def private(self) -> Verdict:
        """Two live realms hold two distinct private MECIDs (neither the RMM's MECID 0)."""
        a, b = self.mecids
        ok = a is not None and b is not None and a != b and 0 not in (a, b)
        return Verdict(ok, f"{a}, {b}", "realms do not have distinct private MECIDs", {"mecids": [a, b]})

    def own_mecid(self) -> Verdict:
        """Positive control: realm A's MECID decrypts realm A's data."""
        mecid = self.mecids[0] or 0
        seen = self.target.read_physical(self._data(0), 64, Pas.REALM, mecid)
        return Verdict(
            seen == PATTERN[:64], _observed(seen), "the realm's own context does not decrypt its data"
        )

    def other_mecid(self) -> Verdict:
        """Realm B's MECID sees ciphertext of realm A's data."""
        mecid = self.mecids[1] or 0
        seen = self.target.read_physical(self._data(0), GRANULE_SIZE, Pas.REALM, mecid)
        kind = _observed(seen)
        return Verdict(kind == "pseudo-random", kind, f"realm B's MECID sees {kind} of realm A's data")

    def default_mecid(self) -> Verdict:
        """MECID 0 (the RMM's context) sees ciphertext of realm A's data."""
        seen = self.target.read_physical(self._data(0), GRANULE_SIZE, Pas.REALM, 0)
        kind = _observed(seen)
        return Verdict(kind == "pseudo-random", kind, f"MECID 0 sees {kind} of realm A's data")

    def distinct(self) -> Verdict:
        """One PA read under two MECIDs gives two different results (a context per MECID)."""
        # The same plaintext in both realms' data, at different PAs: compare one PA under both MECIDs.
        a, b = (self.target.read_physical(self._data(1), 64, Pas.REALM, m or 0) for m in self.mecids)
        return Verdict(a != b, "distinct" if a != b else "equal", "two MECIDs give one ciphertext")

    def destroyed(self) -> Verdict:
        """After DATA_DESTROY the granule no longer decrypts to the data under the realm's MECID."""
        data = self._data(0)
        mecid = self.mecids[0] or 0
        self.builders[0].destroy(self.realms[0], undelegate=False)
        seen = self.target.read_physical(data, GRANULE_SIZE, Pas.REALM, mecid)
        kind = _observed(seen)
        self.builders[1].destroy(self.realms[1])
        for pa in self.realms[0].granules():
            RmiClient(self.target).granule_undelegate(pa)
        return Verdict(kind != "plaintext", kind, "destroyed data still decrypts under the realm's MECID")


def mec_sections(target: Target) -> Sequence[Section]:
    """The sections of ``check mec``."""
    allocator = GranuleAllocator.for_target(target)

    def scrub() -> list[Case]:
        s = _Scrub(target, allocator)
        needs = (Capability.RME, Capability.MEMORY)
        return [
            Case(
                "A2.2.4 undelegate: the host never reads its old data back",
                "granule_undelegate",
                "not the plaintext",
                s.undelegate,
                needs,
            ),
            Case(
                "A2.2.4 destroy: a realm's data never reaches the host",
                "data_destroy",
                "not the plaintext",
                s.destroy,
                needs,
            ),
        ]

    def encryption() -> list[Case]:
        e = _Encryption(target, allocator)
        cases = [
            Case(
                "RMLFBL the Non-secure view of the host's data is its plaintext",
                "read_physical",
                "plaintext",
                e.own_view,
            )
        ]
        cases += [
            Case(
                f"RMLFBL the {pas.value} view of Non-secure data is ciphertext",
                "read_physical",
                "pseudo-random",
                functools.partial(e.foreign, pas),
                args={"pas": pas.value},
            )
            for pas in FOREIGN
        ]
        cases += [
            Case("RMLFBL distinct ciphertext per PAS", "read_physical", "distinct", e.distinct),
            Case(
                "§7.2 physical alias: Secure data is ciphertext to the Non-secure PAS",
                "access",
                "ciphertext",
                e.alias,
            ),
            Case(
                "RMLFBL address tweak: same plaintext, different ciphertext",
                "read_physical",
                "distinct",
                e.tweak,
            ),
        ]
        return cases

    def realms() -> list[Case]:
        r = _Realms(target, allocator)
        return [
            Case("§7.7 each realm gets its own private MECID", "realm_mecid", "distinct", r.private),
            Case("D7.4 a realm's MECID decrypts its own data", "read_physical", "plaintext", r.own_mecid),
            Case(
                "D7.4 another realm's MECID sees ciphertext", "read_physical", "pseudo-random", r.other_mecid
            ),
            Case(
                "D7.4 MECID 0 sees a realm's data as ciphertext",
                "read_physical",
                "pseudo-random",
                r.default_mecid,
            ),
            Case("RMLFBL distinct ciphertext per MECID", "read_physical", "distinct", r.distinct),
            Case(
                "A2.2.4 destroyed data no longer decrypts under its MECID",
                "data_destroy",
                "not the plaintext",
                r.destroyed,
            ),
        ]

    return (
        Section(
            "mec-scrub",
            "wiping on undelegate and destroy, as the host sees it",
            scrub,
            requires=(Capability.RME, Capability.MEMORY),
        ),
        Section(
            "mec-encryption",
            "per-PAS contexts and address tweak, through a debugger's view",
            encryption,
            requires=(Capability.MEMORY, Capability.ENCRYPTION),
        ),
        Section(
            "mec-realms",
            "per-realm MECIDs: isolation between realms and from MECID 0",
            realms,
            requires=(Capability.RME, Capability.MEC, Capability.ENCRYPTION),
        ),
    )
