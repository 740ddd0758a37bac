"""What a target holds right now, as data: realms with their RTT trees, granule states, the PAS map.

``cca-hil show …`` renders these; this module only gathers them, from one of
two sources, and every view says which one it came from:

- **model state** — the in-process model's RMM is read directly: realm state,
  VMID, RIM, RECs, every RTT entry with its RMM state (including the
  ``unassigned_ns``/``assigned_ns`` states RMI never reports as such), granule
  states and the GPT.
- **RTT_READ_ENTRY walk** — on a target that keeps its RMM to itself (a
  board, an FVP) the host learns what RMI tells it: the RTT tree of a realm
  whose RD it names, walked entry by entry with RMI_RTT_READ_ENTRY (RMM 1.0
  B4.3.18), and each granule's PAS from the GPT (where the target can read it)
  or from probing loads. Realm state, VMID, RIM and RECs live in Realm PAS
  memory in the RMM's own layout and are not visible to the host.

Leaf entries that follow each other with the same state and RIPAS, and
consecutive output addresses, are merged into one :class:`RttRun`, so a tree
of 512-entry tables stays readable.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cca_hil.arch.rmi import GRANULE_SIZE, Ripas, RttEntryState
from cca_hil.errors import InputError, TargetError
from cca_hil.targets.base import Capability, Target

if TYPE_CHECKING:
    from cca_hil.arch.gpt import PasMap
    from cca_hil.model.realm import Realm
    from cca_hil.model.rmm import Rmm
    from cca_hil.model.rtt import Rtt
    from cca_hil.rmi_client import RmiClient

SOURCE_MODEL: Final = "model state"
SOURCE_WALK: Final = "RTT_READ_ENTRY walk through the agent"
SOURCE_GPT: Final = "the target's GPT"
SOURCE_PROBE: Final = "probing loads through the agent"

MAX_PROBED_GRANULES: Final = 4096
"""Granules ``show granules`` probes one by one on a target whose GPT it cannot read (16 MiB)."""
PAGE_LEVEL: Final = 3
MIN_LEVEL: Final = -1
"""The lowest starting level (LPA2)."""
MIN_IPA_WIDTH: Final = 12
MAX_IPA_WIDTH: Final = 52
_OA_MASK: Final = ((1 << 48) - 1) & ~(GRANULE_SIZE - 1)
_OA_LPA2_HIGH: Final = 0b11 << 8

_DIGEST_SIZE: Final = {"sha256": 32, "sha512": 64}
"""Bytes of a measurement that hold the digest (the rest of the 64-byte slot is zero padding)."""

WalkProgress = Callable[[int], None]
"""Called with the number of RMI_RTT_READ_ENTRY calls made so far."""


def level_shift(level: int) -> int:
    """log2 of the IPA span of one entry at ``level`` (4 KiB granules; RMM 1.0 A5.5)."""
    return 12 + 9 * (PAGE_LEVEL - level)


def entries_per_table(level: int) -> int:
    """Entries of one RTT granule at ``level`` (16 at level -1, else 512)."""
    return 16 if level < 0 else 512


# -- the views -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RttRun:
    """One RTT entry, or a run of equal consecutive leaf entries, at one level of a realm's tree.

    ``state`` is the RMM's entry state in lower case (``unassigned``,
    ``assigned``, ``table``, ``unassigned_ns``, ``assigned_ns``); ``ripas`` is
    set for protected leaves; ``addr`` is the output address of the first
    entry (the DATA granule, the NS page or the next-level RTT), None when
    there is none.
    """

    level: int
    ipa: int
    count: int
    state: str
    ripas: str | None = None
    addr: int | None = None
    children: tuple[RttRun, ...] = ()

    @property
    def entry_size(self) -> int:
        """Bytes of IPA space one entry covers."""
        return 1 << level_shift(self.level)

    @property
    def top(self) -> int:
        """First IPA past the run."""
        return self.ipa + self.count * self.entry_size

    def to_json(self) -> dict[str, Any]:
        """JSON form (addresses in hex)."""
        data: dict[str, Any] = {
            "level": self.level,
            "ipa": f"{self.ipa:#x}",
            "top": f"{self.top:#x}",
            "entries": self.count,
            "state": self.state,
            "ripas": self.ripas,
            "addr": f"{self.addr:#x}" if self.addr is not None else None,
        }
        if self.state == "table":
            data["children"] = [child.to_json() for child in self.children]
        return data

    def walk(self) -> Iterator[RttRun]:
        """This run and every run below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class RecView:
    """A REC of a realm (model state only)."""

    addr: int
    mpidr: int
    state: str
    runnable: bool
    pc: int
    aux: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "addr": f"{self.addr:#x}",
            "mpidr": f"{self.mpidr:#x}",
            "state": self.state,
            "runnable": self.runnable,
            "pc": f"{self.pc:#x}",
            "aux": [f"{a:#x}" for a in self.aux],
        }


@dataclass(frozen=True, slots=True)
class RealmView:
    """A realm: its RD, IPA space, RTT tree and — from the model only — state, VMID, RIM and RECs."""

    rd: int
    ipa_width: int
    rtt_level_start: int
    rtt: tuple[RttRun, ...]
    state: str | None = None
    vmid: int | None = None
    hash_algo: str | None = None
    rim: bytes | None = None
    recs: tuple[RecView, ...] | None = None
    """None when the source cannot see them (an empty tuple: the realm has none)."""
    rtt_base: int | None = None
    """PA of the starting-level RTT (model state only)."""

    @property
    def protected_top(self) -> int:
        """First unprotected IPA: 2^(w-1)."""
        return 1 << (self.ipa_width - 1)

    def runs(self) -> Iterator[RttRun]:
        """Every run of the tree, depth first."""
        for run in self.rtt:
            yield from run.walk()

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rd": f"{self.rd:#x}",
            "state": self.state,
            "vmid": self.vmid,
            "hash_algo": self.hash_algo,
            "rim": self.rim.hex() if self.rim is not None else None,
            "ipa_width": self.ipa_width,
            "rtt_level_start": self.rtt_level_start,
            "rtt_base": f"{self.rtt_base:#x}" if self.rtt_base is not None else None,
            "recs": [rec.to_json() for rec in self.recs] if self.recs is not None else None,
            "rtt": [run.to_json() for run in self.rtt],
        }


@dataclass(frozen=True, slots=True)
class RealmsView:
    """The realms of a target, where they came from, and what that source cannot see."""

    source: str
    realms: tuple[RealmView, ...]
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"source": self.source, "note": self.note, "realms": [r.to_json() for r in self.realms]}


@dataclass(frozen=True, slots=True)
class GranuleRun:
    """Consecutive granules with the same RMM state and PAS; ``state`` None where it is not visible."""

    start: int
    end: int
    state: str | None
    pas: str

    @property
    def granules(self) -> int:
        """How many granules the run holds."""
        return (self.end - self.start) // GRANULE_SIZE

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "start": f"{self.start:#x}",
            "end": f"{self.end:#x}",
            "granules": self.granules,
            "state": self.state,
            "pas": self.pas,
        }


@dataclass(frozen=True, slots=True)
class GranulesView:
    """Granule runs over a range of physical addresses, with the sources of state and PAS."""

    start: int
    end: int
    runs: tuple[GranuleRun, ...]
    state_source: str | None
    pas_source: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "start": f"{self.start:#x}",
            "end": f"{self.end:#x}",
            "state_source": self.state_source,
            "pas_source": self.pas_source,
            "note": self.note,
            "runs": [run.to_json() for run in self.runs],
        }


# -- merging -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class EntryView:
    """One RTT entry as either source sees it."""

    state: str
    ripas: str | None
    addr: int | None
    children: tuple[RttRun, ...] = field(default=())


def merge_entries(level: int, base: int, entries: Iterable[EntryView]) -> tuple[RttRun, ...]:
    """Runs of one table's entries: equal consecutive leaves (contiguous output addresses) merged."""
    size = 1 << level_shift(level)
    runs: list[RttRun] = []
    ipa = base
    for entry in entries:
        last = runs[-1] if runs else None
        if (
            last is not None
            and entry.state != "table"
            and last.state == entry.state
            and last.ripas == entry.ripas
            and (
                (entry.addr is None and last.addr is None)
                or (
                    entry.addr is not None
                    and last.addr is not None
                    and entry.addr == last.addr + last.count * size
                )
            )
        ):
            runs[-1] = RttRun(
                level=level,
                ipa=last.ipa,
                count=last.count + 1,
                state=last.state,
                ripas=last.ripas,
                addr=last.addr,
            )
        else:
            runs.append(
                RttRun(
                    level=level,
                    ipa=ipa,
                    count=1,
                    state=entry.state,
                    ripas=entry.ripas,
                    addr=entry.addr,
                    children=entry.children,
                )
            )
        ipa += size
    return tuple(runs)


def merge_granules(runs: Iterable[GranuleRun]) -> tuple[GranuleRun, ...]:
    """Adjacent runs with the same state and PAS joined."""
    merged: list[GranuleRun] = []
    for run in runs:
        if run.end <= run.start:
            continue
        last = merged[-1] if merged else None
        if last is not None and last.end == run.start and last.state == run.state and last.pas == run.pas:
            merged[-1] = GranuleRun(last.start, run.end, last.state, last.pas)
        else:
            merged.append(run)
    return tuple(merged)


# -- from the model's state ----------------------------------------------------------------------------


def model_rmm(target: Target) -> Rmm | None:
    """The RMM of an in-process model behind ``target`` (a bench session's journal wraps it), or None."""
    from cca_hil.session import JournaledTarget
    from cca_hil.targets.model import ModelTarget

    inner = target.inner if isinstance(target, JournaledTarget) else target
    return inner.machine.rmm if isinstance(inner, ModelTarget) else None


def _model_table(table: Rtt, top: int | None = None) -> tuple[RttRun, ...]:
    """Runs of one table's entries; starting-table entries at and past ``top`` lie outside the IPA space."""
    from cca_hil.model.rtt import Hipas

    shown = table.entries
    if top is not None:
        shown = shown[: max(0, (top - table.base) >> level_shift(table.level))]
    entries: list[EntryView] = []
    for entry in shown:
        state = entry.state
        if state is Hipas.TABLE:
            assert entry.table is not None
            children = _model_table(entry.table)
            entries.append(EntryView("table", None, entry.addr, children))
        elif state is Hipas.ASSIGNED or state is Hipas.UNASSIGNED:
            addr = entry.addr if state is Hipas.ASSIGNED else None
            entries.append(EntryView(state.name.lower(), entry.ripas.name.lower(), addr))
        else:
            addr = entry.addr if state is Hipas.ASSIGNED_NS else None
            entries.append(EntryView(state.name.lower(), None, addr))
    return merge_entries(table.level, table.base, entries)


def _model_realm(rmm: Rmm, realm: Realm) -> RealmView:
    runs: list[RttRun] = []
    for table in realm.starts:
        runs.extend(_model_table(table, realm.ipa_top))
    recs = tuple(
        RecView(
            addr=rec.addr,
            mpidr=rec.mpidr,
            state=rec.state.name.lower(),
            runnable=rec.runnable,
            pc=rec.pc,
            aux=tuple(rec.aux),
        )
        for rec in sorted(rmm.recs.values(), key=lambda r: r.addr)
        if rec.owner is realm
    )
    return RealmView(
        rd=realm.rd,
        ipa_width=realm.ipa_width,
        rtt_level_start=realm.rtt_level_start,
        rtt=tuple(runs),
        state=realm.state.name.lower(),
        vmid=realm.vmid,
        hash_algo=realm.hash_algo.name.lower(),
        rim=realm.rim[: _DIGEST_SIZE.get(realm.hash_algo.name.lower(), len(realm.rim))],
        recs=recs,
        rtt_base=realm.rtt_base,
    )


def model_realms(rmm: Rmm, rds: Sequence[int] = ()) -> RealmsView:
    """Every realm of the model's RMM (or those whose RD is in ``rds``), from its state."""
    realms = sorted(rmm.realms.values(), key=lambda r: r.rd)
    if rds:
        known = {r.rd: r for r in realms}
        missing = [f"{rd:#x}" for rd in rds if rd not in known]
        if missing:
            raise InputError(
                f"no realm has its RD at {', '.join(missing)}",
                where="--rd",
                valid=[f"{r.rd:#x}" for r in realms],
            )
        realms = [known[rd] for rd in rds]
    return RealmsView(source=SOURCE_MODEL, realms=tuple(_model_realm(rmm, r) for r in realms))


def model_granules(rmm: Rmm, pas_map: PasMap, start: int, end: int) -> GranulesView:
    """RMM granule states and GPT PAS for every granule in [start, end), as merged runs."""
    from cca_hil.arch.rmi import GranuleState

    states = sorted((index, state) for index, state in rmm.granules.items())
    indices = [index for index, _ in states]
    undelegated = GranuleState.UNDELEGATED.name.lower()
    runs: list[GranuleRun] = []
    for pas_run in pas_map.runs:
        lo, hi = max(pas_run.start, start), min(pas_run.end, end)
        if lo >= hi:
            continue
        pas = str(pas_run.pas)
        position = lo
        first = bisect.bisect_left(indices, lo // GRANULE_SIZE)
        last = bisect.bisect_left(indices, -(-hi // GRANULE_SIZE))
        for index, state in states[first:last]:
            pa = index * GRANULE_SIZE
            runs.append(GranuleRun(position, pa, undelegated, pas))
            runs.append(GranuleRun(pa, pa + GRANULE_SIZE, state.name.lower(), pas))
            position = pa + GRANULE_SIZE
        runs.append(GranuleRun(position, hi, undelegated, pas))
    return GranulesView(
        start=start,
        end=end,
        runs=merge_granules(runs),
        state_source=SOURCE_MODEL,
        pas_source=f"{SOURCE_MODEL} (GPT)",
    )


# -- from RMI_RTT_READ_ENTRY walks --------------------------------------------------------------------


class RttWalker:
    """Walks a realm's RTT tree with RMI_RTT_READ_ENTRY, as any host can (RMM 1.0 B4.3.18).

    The starting level and the IPA width are found from the command's own
    failure conditions: ``level_bound`` below the starting level, ``ipa_bound``
    at and above 2^w.
    """

    def __init__(self, client: RmiClient, *, progress: WalkProgress | None = None) -> None:
        self.client = client
        self.calls = 0
        self._progress = progress

    def read(self, rd: int, ipa: int, level: int) -> tuple[int, ...] | None:
        """RTT_READ_ENTRY's outputs (walk_level, state, desc, ripas), or None when it fails."""
        result = self.client.rtt_read_entry(rd, ipa, level)
        self.calls += 1
        if self._progress is not None:
            self._progress(self.calls)
        if not result.ok:
            return None
        registers = result.registers
        return registers[1], registers[2] & 0xFF, registers[3], registers[4] & 0xFF

    def start_level(self, rd: int) -> int:
        """The realm's starting RTT level (TargetError when ``rd`` is no RD)."""
        first = self.client.rtt_read_entry(rd, 0, PAGE_LEVEL)
        self.calls += 1
        if not first.ok:
            raise InputError(
                f"{rd:#x} is not the RD of a realm: RMI_RTT_READ_ENTRY answered {first.status_name}"
                + (f" ({first.condition})" if first.condition else ""),
                where="--rd",
            )
        for level in range(MIN_LEVEL, PAGE_LEVEL + 1):
            if self.read(rd, 0, level) is not None:
                return level
        return PAGE_LEVEL

    def ipa_width(self, rd: int) -> int:
        """The realm's IPA width w: the smallest b with IPA 2^b out of bounds."""
        lo, hi = MIN_IPA_WIDTH, MAX_IPA_WIDTH + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.read(rd, 1 << mid, PAGE_LEVEL) is None:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def realm(self, rd: int) -> RealmView:
        """The RTT tree of the realm whose RD is ``rd``."""
        start = self.start_level(rd)
        width = self.ipa_width(rd)
        count = (1 << width) >> level_shift(start)
        runs = self._table(rd, start, 0, count, protected_top=1 << (width - 1))
        return RealmView(rd=rd, ipa_width=width, rtt_level_start=start, rtt=runs)

    def _table(self, rd: int, level: int, base: int, count: int, *, protected_top: int) -> tuple[RttRun, ...]:
        size = 1 << level_shift(level)
        entries: list[EntryView] = []
        for index in range(count):
            ipa = base + index * size
            answer = self.read(rd, ipa, level)
            if answer is None:
                raise TargetError(f"RMI_RTT_READ_ENTRY({rd:#x}, {ipa:#x}, {level}) failed during the walk")
            walk_level, state, desc, ripas = answer
            if walk_level != level:
                raise TargetError(
                    f"RMI_RTT_READ_ENTRY({rd:#x}, {ipa:#x}, {level}) stopped at level {walk_level}: "
                    "the tables changed during the walk"
                )
            protected = ipa < protected_top
            if state == RttEntryState.TABLE:
                children = self._table(
                    rd, level + 1, ipa, entries_per_table(level + 1), protected_top=protected_top
                )
                entries.append(EntryView("table", None, desc, children))
            elif state == RttEntryState.ASSIGNED and protected:
                entries.append(EntryView("assigned", _ripas(ripas), desc))
            elif state == RttEntryState.ASSIGNED:
                entries.append(EntryView("assigned_ns", None, _ns_output_address(desc)))
            elif state == RttEntryState.UNASSIGNED:
                entries.append(
                    EntryView("unassigned", _ripas(ripas), None)
                    if protected
                    else EntryView("unassigned_ns", None, None)
                )
            else:
                raise TargetError(
                    f"RMI_RTT_READ_ENTRY({rd:#x}, {ipa:#x}, {level}) reported an unknown state {state}"
                )
        return merge_entries(level, base, entries)


def _ns_output_address(desc: int) -> int:
    """The output address in an ASSIGNED_NS entry's desc: bits 47:12, with LPA2 OA[51:50] in bits 9:8."""
    return (desc & _OA_MASK) | (((desc & _OA_LPA2_HIGH) >> 8) << 50)


def _ripas(value: int) -> str:
    try:
        return Ripas(value).name.lower()
    except ValueError:
        return f"ripas {value}"


def walked_realms(target: Target, rds: Sequence[int], *, progress: WalkProgress | None = None) -> RealmsView:
    """The RTT trees of the realms whose RDs are ``rds``, walked through the target's RMI."""
    from cca_hil.rmi_client import RmiClient

    walker = RttWalker(RmiClient(target), progress=progress)
    realms = tuple(walker.realm(rd) for rd in rds)
    return RealmsView(
        source=SOURCE_WALK,
        realms=realms,
        note="realm state, VMID, RIM and RECs live in Realm PAS memory in the RMM's own layout; "
        "the host sees only what RMI_RTT_READ_ENTRY reports",
    )


# -- the PAS map and granules on any target ------------------------------------------------------------


def read_pas_map(target: Target) -> PasMap:
    """The target's PAS map from its GPC registers and tables (CapabilityError where it cannot read them)."""
    from cca_hil.arch.gpt import GptFeatures, decode_tables

    inner = _unwrapped(target)
    inner.require(Capability.GPT_READ)
    gpccr, gptbr = inner.gpt_registers()
    tables = inner.gpt_tables()
    return decode_tables(gpccr, gptbr, tables, features=GptFeatures(pa_bits=inner.info().pa_bits))


def _unwrapped(target: Target) -> Target:
    from cca_hil.session import JournaledTarget

    return target.inner if isinstance(target, JournaledTarget) else target


def probed_granules(
    target: Target, start: int, end: int, *, progress: WalkProgress | None = None
) -> GranulesView:
    """PAS of each granule in [start, end) as the host observes it: a probing load, GPF or not."""
    count = (end - start) // GRANULE_SIZE
    if count > MAX_PROBED_GRANULES:
        raise InputError(
            f"{count} granules to probe one by one through the agent (the target's GPT is not readable)",
            where="--range",
            valid=[f"a range of at most {MAX_PROBED_GRANULES} granules ({MAX_PROBED_GRANULES // 256} MiB)"],
        )
    target.require(Capability.ACCESS)
    runs: list[GranuleRun] = []
    for index in range(count):
        pa = start + index * GRANULE_SIZE
        result = target.access(pa, "read")
        if result.ok:
            pas = "nonsecure"
        elif result.fault is not None and result.fault.gpf:
            pas = "not nonsecure (GPF)"
        else:
            pas = "fault"
        runs.append(GranuleRun(pa, pa + GRANULE_SIZE, None, pas))
        if progress is not None:
            progress(index + 1)
    return GranulesView(
        start=start,
        end=end,
        runs=merge_granules(runs),
        state_source=None,
        pas_source=SOURCE_PROBE,
        note="granule states are the RMM's and not visible to the host",
    )


def gpt_granules(pas_map: PasMap, start: int, end: int) -> GranulesView:
    """PAS runs of [start, end) from a target's GPT, without RMM granule states."""
    runs = [
        GranuleRun(max(run.start, start), min(run.end, end), None, str(run.pas))
        for run in pas_map.runs
        if run.end > start and run.start < end
    ]
    return GranulesView(
        start=start,
        end=end,
        runs=merge_granules(runs),
        state_source=None,
        pas_source=SOURCE_GPT,
        note="granule states are the RMM's and not visible to the host",
    )
