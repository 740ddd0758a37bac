"""The GTSI hot path against a plain reference of TF-A's transition, descriptor by descriptor.

The model edits the GPT through cached Root mappings, cast descriptor views and
shortcuts (a cheap refusal before a fuse, one write per fused block). The
reference here is the straightforward sequence on lists of descriptor ints —
shatter level by level, rewrite the GPI, fuse level by level — started from the
tables EL3 built at boot. After every RMI call the bytes in Root memory, the
RMI results and the TLBI count must be the reference's.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.arch.gpt import Gpi, granule_protection_check, valid_gpis
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE, RmiStatus
from cca_hil.model.machine import Machine
from cca_hil.model.memory import ROOT
from cca_hil.model.platform import PlatformConfig

DELEGATE = 0xC400_0151
UNDELEGATE = 0xC400_0152
POOL = 0x9000_0000
DRAM2 = 0x8_8000_0000
_UNIFORM = 0x1111_1111_1111_1111
_BLOCK_BYTES = (0, 2 << 20, 32 << 20, 512 << 20)
_SPAN = 16 * GRANULE_SIZE  # bytes one L1 descriptor covers (4 KB granules)
_TABLE_ADDRESS = ((1 << 52) - 1) & ~0xFFF


def _contiguous(contig: int, gpi: int) -> int:
    return contig << 8 | gpi << 4 | 0b0001


class _Reference:
    """TF-A's ``gpt_transition_pas`` of one granule, written out plainly over descriptor lists."""

    def __init__(self, machine: Machine) -> None:
        gpt = machine.gpt
        self.l0_base = gpt.gptbr.l0_address
        self.region_bits = gpt.gpccr.geometry.l0gptsz_bits
        self.valid = {gpi.value for gpi in valid_gpis(gpt.gpccr, gpt.features)}
        self.tables = {
            address: [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)]
            for address, data in gpt.tables().items()
        }
        self.tlbis = 0

    def as_bytes(self) -> dict[int, bytes]:
        return {address: self.table_bytes(address) for address in self.tables}

    def table_bytes(self, address: int) -> bytes:
        return b"".join(value.to_bytes(8, "little") for value in self.tables[address])

    def table_of(self, pa: int) -> int:
        return self.tables[self.l0_base][pa >> self.region_bits] & _TABLE_ADDRESS

    def transition(self, pa: int, target: int) -> None:
        entries = self.tables[self.table_of(pa)]
        index = (pa & ((1 << self.region_bits) - 1)) // _SPAN
        value = entries[index]
        if value & 0xF == 0b0001:  # shatter, one level at a time
            contig, gpi = value >> 8 & 0b11, value >> 4 & 0xF
            for level in range(contig, 0, -1):
                count = _BLOCK_BYTES[level] // _SPAN
                first = index - index % count
                smaller = _contiguous(level - 1, gpi) if level > 1 else gpi * _UNIFORM
                entries[first : first + count] = [smaller] * count
            self.tlbis += 1
        shift = 4 * (pa // GRANULE_SIZE % 16)
        steps = [target] if target == Gpi.REALM else [Gpi.NO_ACCESS, Gpi.NONSECURE]
        for gpi in steps:
            entries[index] = entries[index] & ~(0xF << shift) | int(gpi) << shift
            self.tlbis += 1
        # fuse, one level at a time
        gpi = entries[index] & 0xF
        count = _BLOCK_BYTES[1] // _SPAN
        first = index - index % count
        if gpi not in self.valid or any(e != gpi * _UNIFORM for e in entries[first : first + count]):
            return
        entries[first : first + count] = [_contiguous(1, gpi)] * count
        for level in (2, 3):
            count = _BLOCK_BYTES[level] // _SPAN
            first = index - index % count
            heads = entries[first : first + count : count // 16]
            if any(e != _contiguous(level - 1, gpi) for e in heads):
                return
            entries[first : first + count] = [_contiguous(level, gpi)] * count


def _run(machine: Machine, calls: list[tuple[bool, int]], delegated: set[int] | None = None) -> set[int]:
    """Make ``calls`` (delegate?, PA), checking each against the reference; the granules left delegated."""
    reference = _Reference(machine)
    reference.tlbis = machine.monitor.tlb_invalidations
    delegated = set() if delegated is None else delegated
    gpt = machine.gpt
    for delegate, pa in calls:
        status = machine.smc(DELEGATE if delegate else UNDELEGATE, pa)[0]
        expected_ok = (pa not in delegated) if delegate else (pa in delegated)
        assert (status == RmiStatus.SUCCESS) is expected_ok
        if expected_ok:
            reference.transition(pa, Gpi.REALM if delegate else Gpi.NONSECURE)
            (delegated.add if delegate else delegated.discard)(pa)
        # The table this call may have edited, every step; all of them at the end.
        table = reference.table_of(pa)
        assert machine.store.read(table, len(reference.tables[table]) * 8, ROOT) == reference.table_bytes(
            table
        )
        if not machine.config.el3_skip_tlbi:
            assert machine.monitor.tlb_invalidations == reference.tlbis
    assert gpt.tables() == reference.as_bytes()
    assert gpt.transitioned() == dict.fromkeys(sorted(delegated), Pas.REALM)
    return delegated


_GRANULES = st.one_of(
    st.integers(0, 15).map(lambda i: POOL + i * GRANULE_SIZE),  # one 64 KB descriptor
    st.integers(0, 1023).map(lambda i: POOL + i * GRANULE_SIZE),  # neighbouring 2 MB blocks
    st.integers(0, 11_000).map(lambda i: POOL + i * GRANULE_SIZE * 37),  # other 32 MB / 512 MB blocks
    st.integers(0, 127).map(lambda i: DRAM2 + i * GRANULE_SIZE * 4099),
)


@settings(max_examples=40, deadline=None)
@given(calls=st.lists(st.tuples(st.booleans(), _GRANULES), max_size=40), skip=st.booleans())
def test_tables_after_every_call_are_the_reference_sequences(
    calls: list[tuple[bool, int]], skip: bool
) -> None:
    _run(Machine(PlatformConfig(el3_skip_tlbi=skip)), calls)


def test_a_whole_2mb_block_fuses_to_realm_and_back() -> None:
    granules = [POOL + 0x20_0000 + i * GRANULE_SIZE for i in range(512)]
    machine = Machine()
    boot = machine.gpt.tables()
    delegated = _run(machine, [(True, pa) for pa in granules])
    entry = machine.gpt.l1_entry(POOL + 0x20_0000)
    assert entry is not None and entry[1] == _contiguous(1, Gpi.REALM)  # fused to a 2 MB Realm block
    _run(machine, [(False, pa) for pa in reversed(granules)], delegated)
    assert machine.gpt.tables() == boot


@settings(max_examples=30, deadline=None)
@given(
    calls=st.lists(st.tuples(st.booleans(), _GRANULES), max_size=20),
    probes=st.lists(_GRANULES, min_size=1, max_size=8),
)
def test_the_tlb_after_transitions_agrees_with_the_architectural_check(
    calls: list[tuple[bool, int]], probes: list[int]
) -> None:
    machine = Machine()
    for delegate, pa in calls:
        machine.smc(DELEGATE if delegate else UNDELEGATE, pa)
    gpt = machine.gpt
    for pa in probes:
        for access in (Pas.NONSECURE, Pas.REALM):
            expected = granule_protection_check(
                pa,
                access=access,
                requester=access,
                gpccr=gpt.gpccr,
                gptbr=gpt.gptbr,
                read64=gpt.read64,
                features=gpt.features,
            )
            assert gpt.fault(pa, access, access) == expected
